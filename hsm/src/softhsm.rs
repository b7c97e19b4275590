//! SoftHSM2 for development and tests: a self-contained token directory with
//! its own `SOFTHSM2_CONF`, and token initialisation through PKCS#11 itself.
//! Nothing here touches the machine's default token store.

use crate::error::{HsmError, HsmResult};
use crate::module::{Module, Token, TokenSelector};
use crate::pin::Pin;
use cryptoki::session::UserType;
use std::path::{Path, PathBuf};

/// Where Debian, Fedora and Homebrew put the SoftHSM2 module.
const MODULE_CANDIDATES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
];

/// The installed SoftHSM2 module, if any.
pub fn find_module() -> Option<PathBuf> {
    MODULE_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Create `dir/softhsm2.conf` and `dir/tokens/` (mode 0700) if missing and
/// return the config path. Idempotent.
pub fn write_config(dir: &Path) -> HsmResult<PathBuf> {
    let tokens = dir.join("tokens");
    create_private_dir(dir)?;
    create_private_dir(&tokens)?;
    let conf = dir.join("softhsm2.conf");
    if !conf.exists() {
        let text = format!(
            "# SoftHSM2 configuration for one Trellis development deployment.\n\
             directories.tokendir = {}\n\
             objectstore.backend = file\n\
             log.level = ERROR\n\
             slots.removable = false\n",
            tokens.display()
        );
        std::fs::write(&conf, text)
            .map_err(|e| HsmError::SoftHsm(format!("writing {}: {e}", conf.display())))?;
    }
    Ok(conf)
}

/// Point SoftHSM2 at `conf`. Must run before the module is loaded, while the
/// process is still single-threaded (start of `main`, or a test fixture).
pub fn use_config(conf: &Path) {
    std::env::set_var("SOFTHSM2_CONF", conf);
}

/// Initialise a token with this label on a free slot unless one exists, and
/// set its user PIN. Returns whether a token was created.
pub fn ensure_token(module: &Module, label: &str, so_pin: &Pin, user_pin: &Pin) -> HsmResult<bool> {
    let selector = TokenSelector::label(label);
    match module.find_slot(&selector) {
        Ok(_) => return Ok(false),
        Err(HsmError::TokenNotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    {
        let _gate = module.enter();
        let free = module
            .tokens_locked()?
            .into_iter()
            .find(|(_, info)| info.as_ref().is_ok_and(|i| !i.initialized))
            .map(|(slot, _)| slot)
            .ok_or_else(|| HsmError::SoftHsm("no free slot to initialise a token in".into()))?;
        module
            .ctx()
            .init_token(free, &so_pin.auth_pin(), label)
            .map_err(|e| HsmError::pkcs11(format!("initialising token '{label}'"), e))?;
    }
    // SoftHSM2 renumbers slots once a token is initialised: the SO session
    // looks it up again.
    let so = Token::new(module.clone(), selector, so_pin.clone());
    let session = so.open_session_as(UserType::So)?;
    session.call(
        || format!("setting the user PIN of '{label}'"),
        |s| s.init_pin(&user_pin.auth_pin()),
    )?;
    let _ = session.call(String::new, |s| s.logout());
    Ok(true)
}

fn create_private_dir(dir: &Path) -> HsmResult<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| HsmError::SoftHsm(format!("creating {}: {e}", dir.display())))
}
