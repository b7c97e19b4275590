//! Real PKCS#11 modules for the HSM conformance suite, each started by the
//! test itself from Debian's packages in a private temporary directory:
//! SoftHSM2, tpm2-pkcs11 on swtpm with tpm2-abrmd, opencryptoki's software
//! token behind its own `pkcsslotd`, and NSS softoken. Nothing here touches
//! the machine's own token stores; dropping an [`HsmEnv`] stops every daemon
//! it started, and the caller's temporary directory holds all its files.

pub mod nss;
pub mod opencryptoki;
pub mod tpm2;

use std::path::{Path, PathBuf};
use std::process::Command;

/// One module, ready to use: the tokens exist, with their PINs set.
pub struct HsmEnv {
    /// Short name for messages: "softhsm2", "tpm2-pkcs11", "opencryptoki", "nss".
    pub name: &'static str,
    /// The PKCS#11 module to load.
    pub module: PathBuf,
    /// Environment every process that loads the module needs
    /// (`SOFTHSM2_CONF`, `TPM2_PKCS11_STORE`, `TPM2_PKCS11_TCTI`, …).
    pub env: Vec<(String, String)>,
    /// A command prefix that runs a program where the module works (for
    /// opencryptoki: inside the private mount namespace that holds its
    /// daemon's paths); empty when none is needed.
    pub prefix: Vec<String>,
    /// Library parameters for `C_Initialize` (NSS softoken), if any.
    pub init_params: Option<String>,
    /// Token for the intermediates and the log key, and its user PIN.
    pub online_token: String,
    pub online_pin: String,
    /// Token for the roots (may be the same token as `online_token`).
    pub root_token: String,
    pub root_pin: String,
    /// The environment's own directory (kept until drop).
    pub dir: PathBuf,
    /// Stops the daemons when dropped (held for its `Drop` only; the
    /// caller's temporary directory removes the files).
    #[allow(dead_code)]
    pub(crate) guard: Vec<Box<dyn std::any::Any + Send>>,
}

impl HsmEnv {
    /// A command for `program` with the module's prefix and environment.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }
}

/// SoftHSM2 with its own `SOFTHSM2_CONF` and token directory under `dir`,
/// and two tokens (`trellis-online`, `trellis-root`) initialised through
/// `softhsm2-util`.
pub fn softhsm2(dir: &Path) -> HsmEnv {
    let module = [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .unwrap_or_else(|| panic!("SoftHSM2 is not installed (make test installs it)"));
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap_or_else(|e| panic!("{}: {e}", tokens.display()));
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
    let env = vec![("SOFTHSM2_CONF".to_string(), conf.display().to_string())];
    for (label, pin) in [
        ("trellis-online", "online-4711"),
        ("trellis-root", "root-4711"),
    ] {
        let out = crate::run(
            Command::new("softhsm2-util")
                .args(["--init-token", "--free", "--label", label, "--so-pin"])
                .arg(format!("so-{pin}"))
                .args(["--pin", pin])
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        );
        assert!(
            out.status.success(),
            "softhsm2-util --init-token {label}: {}",
            crate::text(&out)
        );
    }
    HsmEnv {
        name: "softhsm2",
        module,
        env,
        prefix: Vec::new(),
        init_params: None,
        online_token: "trellis-online".into(),
        online_pin: "online-4711".into(),
        root_token: "trellis-root".into(),
        root_pin: "root-4711".into(),
        dir: dir.to_path_buf(),
        guard: Vec::new(),
    }
}
