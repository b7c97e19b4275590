//! tpm2-pkcs11 on a software TPM, started privately under a test's temporary
//! directory: `swtpm` (TPM 2.0, state and unix sockets under the directory),
//! a private D-Bus bus (`dbus-daemon` with its own configuration), and
//! `tpm2-abrmd` on that bus in front of the TPM; then a tpm2-pkcs11 store made
//! with `tpm2_ptool` holding two tokens, `trellis-online` and `trellis-root`.
//! Processes that load the module reach the TPM through
//! `TPM2_PKCS11_TCTI=tabrmd:bus_type=session` and the private bus's
//! `DBUS_SESSION_BUS_ADDRESS`. Every daemon is killed and reaped when the
//! environment is dropped.
//!
//! Two settings differ from a stock install, both for tests: the TPM's
//! dictionary-attack protection is switched off (a stock swtpm locks every
//! token for 1000 s after 3 wrong PINs, TPM-wide), and `tpm2-abrmd` allows
//! 100 loaded objects per connection (its maximum; the default of 27 lets one
//! process use only ~27 keys, or generate ~13 key pairs, per login).

use super::HsmEnv;
use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long one daemon may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// The TCTI every client (the module, tpm2-tools, tpm2_ptool) uses.
const TCTI: &str = "tabrmd:bus_type=session";
/// tpm2-abrmd's default well-known name.
const TABRMD_NAME: &str = "com.intel.tss2.Tabrmd";
/// Token label, user PIN; the SO PIN is "so-" + the user PIN.
const TOKENS: [(&str, &str); 2] = [
    ("trellis-online", "online-4711"),
    ("trellis-root", "root-4711"),
];

/// The module's path on Debian/Ubuntu (multiarch) and on other layouts.
fn module_path() -> PathBuf {
    [
        "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
        "/usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
        "/usr/lib/pkcs11/libtpm2_pkcs11.so",
        "/usr/lib64/pkcs11/libtpm2_pkcs11.so",
        "/usr/local/lib/libtpm2_pkcs11.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .unwrap_or_else(|| {
        panic!(
            "libtpm2_pkcs11.so is not installed (Debian: libtpm2-pkcs11-1 libtpm2-pkcs11-tools \
             libtss2-tcti-tabrmd0 tpm2-abrmd tpm2-tools swtpm swtpm-tools dbus)"
        )
    })
}

/// One daemon this environment started.
struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// The environment's daemons; dropping kills and reaps them, last started
/// first (tpm2-abrmd, then dbus-daemon, then swtpm). None of them forks, so
/// the child itself is the whole daemon.
pub(crate) struct Daemons {
    procs: Vec<Daemon>,
}

impl Drop for Daemons {
    fn drop(&mut self) {
        while let Some(mut d) = self.procs.pop() {
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
    }
}

impl Daemons {
    /// Process ids of the running daemons (for tests of this module).
    #[cfg(test)]
    fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|d| d.child.id()).collect()
    }

    /// Starts `cmd` with stdout and stderr in `log` (unless the daemon
    /// writes its own log there).
    fn spawn(&mut self, name: &'static str, cmd: &mut Command, log: PathBuf) {
        let out = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        self.procs.push(Daemon { name, child, log });
    }

    /// Polls `ready` until it holds, failing if any daemon exits first or
    /// the deadline passes.
    fn wait_until(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if ready() {
                return;
            }
            for d in &mut self.procs {
                if let Ok(Some(status)) = d.child.try_wait() {
                    panic!(
                        "{} exited ({status}) while waiting for {what}:\n{}",
                        d.name,
                        std::fs::read_to_string(&d.log).unwrap_or_default()
                    );
                }
            }
            if Instant::now() >= deadline {
                panic!("{what}: not ready within {READY_WITHIN:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every daemon's log, for failure messages.
    fn logs(&self) -> String {
        self.procs
            .iter()
            .map(|d| {
                format!(
                    "--- {} ({}):\n{}",
                    d.name,
                    d.log.display(),
                    std::fs::read_to_string(&d.log).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs a setup command with the environment's variables; panics with its
/// output (and the daemons' logs) if it fails.
fn setup(daemons: &Daemons, env: &[(String, String)], program: &str, args: &[&str]) -> Output {
    let out = crate::run(
        Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    );
    if !out.status.success() {
        let text = crate::text(&out);
        let hint = if text.contains("Could not load tcti") {
            "\n(hint: the client-side TCTI libtss2-tcti-tabrmd.so.0 comes from Debian's \
             libtss2-tcti-tabrmd0, which tpm2-abrmd does not pull in)"
        } else {
            ""
        };
        panic!(
            "{program} {}: {}\n{text}{hint}\n{}",
            args.join(" "),
            out.status,
            daemons.logs()
        );
    }
    out
}

/// tpm2-pkcs11 on swtpm behind tpm2-abrmd on a private D-Bus bus, all under
/// `dir`, with the tokens `trellis-online` and `trellis-root` in a store at
/// `dir/store`.
pub fn tpm2(dir: &Path) -> HsmEnv {
    let module = module_path();
    let dir = std::path::absolute(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let shown = dir.display().to_string();
    // The path goes unescaped into swtpm's and the TCTI's comma-separated
    // options, a D-Bus address and an XML file, and names unix sockets.
    assert!(
        shown
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b)),
        "tpm2 environment: {shown} must contain only [A-Za-z0-9/._-]"
    );
    let sock = dir.join("swtpm.sock");
    let ctrl = dir.join("swtpm.sock.ctrl"); // the swtpm TCTI's name for it
    assert!(
        ctrl.as_os_str().len() < 100,
        "tpm2 environment: {} is too long for a unix socket path",
        ctrl.display()
    );
    let state = dir.join("tpm-state");
    let store = dir.join("store");
    for d in [&state, &store] {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    }
    let mut daemons = Daemons { procs: Vec::new() };

    // The TPM. `startup-clear` sends TPM2_Startup itself, `not-need-init`
    // spares clients the control channel's INIT.
    daemons.spawn(
        "swtpm",
        Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", sock.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", ctrl.display()))
            .args(["--flags", "not-need-init,startup-clear", "--log"])
            .arg(format!("file={},level=1", dir.join("swtpm.log").display())),
        dir.join("swtpm.out"),
    );
    daemons.wait_until("swtpm's sockets", || {
        UnixStream::connect(&sock).is_ok() && UnixStream::connect(&ctrl).is_ok()
    });

    // A private bus: no service directories (nothing is auto-started), only
    // this unix socket.
    let bus = dir.join("bus");
    let bus_address = format!("unix:path={}", bus.display());
    let bus_conf = dir.join("dbus.conf");
    std::fs::write(
        &bus_conf,
        format!(
            "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n \
             \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
             <busconfig>\n  <type>session</type>\n  <listen>{bus_address}</listen>\n  \
             <auth>EXTERNAL</auth>\n  <policy context=\"default\">\n    \
             <allow send_destination=\"*\" eavesdrop=\"true\"/>\n    \
             <allow eavesdrop=\"true\"/>\n    <allow own=\"*\"/>\n  </policy>\n</busconfig>\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", bus_conf.display()));
    daemons.spawn(
        "dbus-daemon",
        Command::new("dbus-daemon")
            .arg(format!("--config-file={}", bus_conf.display()))
            .args(["--nofork", "--nopidfile", "--nosyslog"]),
        dir.join("dbus.log"),
    );
    daemons.wait_until("the D-Bus socket", || UnixStream::connect(&bus).is_ok());

    // The resource manager; it connects to swtpm when it starts and then
    // takes its name on the bus.
    daemons.spawn(
        "tpm2-abrmd",
        Command::new("tpm2-abrmd")
            .args(["--session", "--allow-root", "--max-transients=100"])
            .arg(format!("--tcti=swtpm:path={}", sock.display()))
            .env("DBUS_SESSION_BUS_ADDRESS", &bus_address),
        dir.join("tpm2-abrmd.log"),
    );
    daemons.wait_until("tpm2-abrmd on the bus", || {
        Command::new("dbus-send")
            .arg(format!("--bus={bus_address}"))
            .args([
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
            ])
            .arg(format!("string:{TABRMD_NAME}"))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("true"))
            .unwrap_or(false)
    });

    let env: Vec<(String, String)> = vec![
        ("TPM2_PKCS11_STORE".into(), store.display().to_string()),
        ("TPM2_PKCS11_TCTI".into(), TCTI.into()),
        // tpm2_ptool and tpm2-tools read this one.
        ("TPM2TOOLS_TCTI".into(), TCTI.into()),
        ("DBUS_SESSION_BUS_ADDRESS".into(), bus_address.clone()),
    ];
    // Wrong-PIN tests must not lock the whole TPM (and so every token).
    setup(
        &daemons,
        &env,
        "tpm2_dictionarylockout",
        &[
            "--setup-parameters",
            "--max-tries=4294967295",
            "--recovery-time=0",
            "--lockout-recovery-time=0",
        ],
    );
    let path = format!("--path={}", store.display());
    setup(&daemons, &env, "tpm2_ptool", &["init", &path]);
    for (label, pin) in TOKENS {
        setup(
            &daemons,
            &env,
            "tpm2_ptool",
            &[
                "addtoken",
                "--pid=1",
                &format!("--label={label}"),
                &format!("--sopin=so-{pin}"),
                &format!("--userpin={pin}"),
                &path,
            ],
        );
    }

    HsmEnv {
        name: "tpm2-pkcs11",
        module,
        env,
        prefix: Vec::new(),
        init_params: None,
        online_token: TOKENS[0].0.into(),
        online_pin: TOKENS[0].1.into(),
        root_token: TOKENS[1].0.into(),
        root_pin: TOKENS[1].1.into(),
        dir,
        guard: vec![Box::new(daemons)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brings the environment up, lists its tokens through `tpm2_ptool`, and
    /// checks that dropping it leaves none of its daemons running.
    #[test]
    fn tpm2_env_has_both_tokens_and_stops_its_daemons() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let started = Instant::now();
        let env = tpm2(tmp.path());
        eprintln!("tpm2-pkcs11 environment up in {:?}", started.elapsed());
        assert!(env.module.exists(), "{}", env.module.display());

        let store = env.dir.join("store");
        let out = crate::run(
            env.command(Path::new("tpm2_ptool"))
                .args(["listtokens", "--pid=1"])
                .arg(format!("--path={}", store.display())),
        );
        let listed = crate::text(&out);
        assert!(out.status.success(), "tpm2_ptool listtokens: {listed}");
        for label in [&env.online_token, &env.root_token] {
            assert!(
                listed.contains(&format!("label: {label}")),
                "{label} missing from:\n{listed}"
            );
        }

        let pids = env.guard[0]
            .downcast_ref::<Daemons>()
            .expect("the guard holds the daemons")
            .pids();
        assert_eq!(pids.len(), 3, "swtpm, dbus-daemon, tpm2-abrmd");
        for pid in &pids {
            assert!(
                Path::new(&format!("/proc/{pid}")).exists(),
                "{pid} not running"
            );
        }
        drop(env);
        for pid in &pids {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "daemon {pid} still present after drop"
            );
        }
    }
}
