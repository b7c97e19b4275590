//! The reload action that tells the service its files changed: a shell
//! command (with the file paths in its environment) or a signal to the PID
//! read from a pidfile, bounded by a timeout.
//!
//! The action runs after every successful write (new certificate, changed
//! trust bundle, changed CRL file). Its failure is reported but never
//! undoes the write.
//!
//! A command runs as `sh -c CMD` in its own process group, with standard
//! input closed and standard output/error inherited, and these variables:
//!
//! | variable | value |
//! |---|---|
//! | `TRELLIS_KEY`, `CA_CLIENT_KEY` | `DIR/key.pem` |
//! | `TRELLIS_CERT`, `CA_CLIENT_CERT` | `DIR/cert.pem` |
//! | `TRELLIS_CHAIN`, `CA_CLIENT_CHAIN` | `DIR/chain.pem` (intermediates) |
//! | `TRELLIS_FULLCHAIN` | `DIR/fullchain.pem` |
//! | `TRELLIS_COMBINED` | `DIR/combined.pem` (key + full chain) |
//! | `TRELLIS_TRUST_DIR` | the trust bundle directory |
//! | `TRELLIS_EVENT` | `renewed`, `trust-changed` (a trust bundle) or `crl-changed` (a `trust/<class>.crl.pem`) |
//!
//! On timeout the whole process group is killed (SIGKILL), so a command
//! that started children does not linger.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

use crate::store::{FileKind, Layout};

/// Default time a reload command may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A signal that may be sent as the reload action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP (the usual "reload configuration").
    Hup,
    /// SIGUSR1.
    Usr1,
    /// SIGUSR2.
    Usr2,
    /// SIGINT.
    Int,
    /// SIGTERM.
    Term,
    /// SIGQUIT.
    Quit,
    /// SIGWINCH.
    Winch,
}

impl Signal {
    /// The signal number.
    pub fn number(self) -> i32 {
        match self {
            Signal::Hup => libc::SIGHUP,
            Signal::Usr1 => libc::SIGUSR1,
            Signal::Usr2 => libc::SIGUSR2,
            Signal::Int => libc::SIGINT,
            Signal::Term => libc::SIGTERM,
            Signal::Quit => libc::SIGQUIT,
            Signal::Winch => libc::SIGWINCH,
        }
    }

    /// The name without `SIG`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hup => "HUP",
            Signal::Usr1 => "USR1",
            Signal::Usr2 => "USR2",
            Signal::Int => "INT",
            Signal::Term => "TERM",
            Signal::Quit => "QUIT",
            Signal::Winch => "WINCH",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIG{}", self.name())
    }
}

/// The signal name was not one of the supported ones.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown signal '{0}' (use HUP, USR1, USR2, INT, TERM, QUIT or WINCH)")]
pub struct UnknownSignal(pub String);

impl FromStr for Signal {
    type Err = UnknownSignal;
    fn from_str(s: &str) -> Result<Signal, UnknownSignal> {
        let upper = s.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        [
            Signal::Hup,
            Signal::Usr1,
            Signal::Usr2,
            Signal::Int,
            Signal::Term,
            Signal::Quit,
            Signal::Winch,
        ]
        .into_iter()
        .find(|sig| sig.name() == name)
        .ok_or_else(|| UnknownSignal(s.to_owned()))
    }
}

/// What to do after a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadAction {
    /// Run `sh -c` with this command line.
    Command(String),
    /// Send a signal to the PID in a pidfile.
    Signal {
        /// The signal.
        signal: Signal,
        /// File holding the decimal PID.
        pidfile: PathBuf,
    },
}

/// Why the reload action failed.
#[derive(Debug, Error)]
pub enum ReloadError {
    /// The command could not be started.
    #[error("starting reload command: {0}")]
    Spawn(std::io::Error),
    /// The command exited unsuccessfully.
    #[error("reload command failed: {0}")]
    Exit(ExitStatus),
    /// The command did not finish in time (its process group was killed).
    #[error("reload command timed out after {0:?} and was killed")]
    Timeout(Duration),
    /// The pidfile could not be read.
    #[error("reading pidfile {path}: {err}", path = .0.display(), err = .1)]
    Pidfile(PathBuf, std::io::Error),
    /// The pidfile does not hold a usable PID.
    #[error("pidfile {} does not hold a process id greater than 1", .0.display())]
    BadPid(PathBuf),
    /// kill(2) failed.
    #[error("sending {0} to pid {1}: {2}")]
    Kill(Signal, i32, std::io::Error),
}

impl ReloadError {
    /// A short stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ReloadError::Spawn(_) | ReloadError::Exit(_) => "reload_command",
            ReloadError::Timeout(_) => "reload_timeout",
            ReloadError::Pidfile(..) | ReloadError::BadPid(_) | ReloadError::Kill(..) => {
                "reload_signal"
            }
        }
    }
}

/// Why the action runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A new certificate was installed.
    Renewed,
    /// Only trust bundles changed.
    TrustChanged,
    /// Only CRL files of the trust classes changed.
    CrlChanged,
}

impl Event {
    fn as_str(self) -> &'static str {
        match self {
            Event::Renewed => "renewed",
            Event::TrustChanged => "trust-changed",
            Event::CrlChanged => "crl-changed",
        }
    }
}

/// The environment given to a reload command for `layout`.
pub fn environment(layout: &Layout, event: Event) -> Vec<(String, OsString)> {
    let p = |k: FileKind| layout.path(k).into_os_string();
    vec![
        ("TRELLIS_KEY".into(), p(FileKind::Key)),
        ("TRELLIS_CERT".into(), p(FileKind::Cert)),
        ("TRELLIS_CHAIN".into(), p(FileKind::Chain)),
        ("TRELLIS_FULLCHAIN".into(), p(FileKind::Fullchain)),
        ("TRELLIS_COMBINED".into(), p(FileKind::Combined)),
        (
            "TRELLIS_TRUST_DIR".into(),
            layout.trust_dir.clone().into_os_string(),
        ),
        ("TRELLIS_EVENT".into(), event.as_str().into()),
        ("CA_CLIENT_KEY".into(), p(FileKind::Key)),
        ("CA_CLIENT_CERT".into(), p(FileKind::Cert)),
        ("CA_CLIENT_CHAIN".into(), p(FileKind::Chain)),
    ]
}

/// A configured reload action with its timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloader {
    /// The action.
    pub action: ReloadAction,
    /// How long a command may run.
    pub timeout: Duration,
}

impl Reloader {
    /// Runs the action once.
    pub async fn run(&self, env: &[(String, OsString)]) -> Result<(), ReloadError> {
        match &self.action {
            ReloadAction::Command(cmd) => run_command(cmd, env, self.timeout).await,
            ReloadAction::Signal { signal, pidfile } => send_signal(*signal, pidfile),
        }
    }
}

async fn run_command(
    cmd: &str,
    env: &[(String, OsString)],
    timeout: Duration,
) -> Result<(), ReloadError> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(ReloadError::Spawn)?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(ReloadError::Exit(status)),
        Ok(Err(e)) => Err(ReloadError::Spawn(e)),
        Err(_) => {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) has no memory effects; the negative pid
                // names the process group the child leads (process_group(0)).
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            let _ = child.kill().await;
            Err(ReloadError::Timeout(timeout))
        }
    }
}

/// Reads a PID (> 1) from the first line of `pidfile` (PostgreSQL's
/// `postmaster.pid`, for one, has more lines after it).
pub fn read_pidfile(pidfile: &Path) -> Result<i32, ReloadError> {
    let text =
        std::fs::read_to_string(pidfile).map_err(|e| ReloadError::Pidfile(pidfile.into(), e))?;
    match text.lines().next().unwrap_or("").trim().parse::<i32>() {
        // 0, 1 and negative values would signal our own group, init, or
        // every process: never.
        Ok(pid) if pid > 1 => Ok(pid),
        _ => Err(ReloadError::BadPid(pidfile.into())),
    }
}

fn send_signal(signal: Signal, pidfile: &Path) -> Result<(), ReloadError> {
    let pid = read_pidfile(pidfile)?;
    // SAFETY: kill(2) has no memory effects; pid > 1 was checked.
    let rc = unsafe { libc::kill(pid, signal.number()) };
    if rc != 0 {
        return Err(ReloadError::Kill(
            signal,
            pid,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn layout(dir: &Path) -> Layout {
        Layout::new(dir.join("out"))
    }

    #[tokio::test]
    async fn command_sees_paths_in_environment() {
        let tmp = tempfile::tempdir().expect("tmp");
        let l = layout(tmp.path());
        let record = tmp.path().join("env.txt");
        let r = Reloader {
            action: ReloadAction::Command(format!(
                "printf '%s\\n' \"$TRELLIS_CERT\" \"$TRELLIS_KEY\" \"$TRELLIS_CHAIN\" \
                 \"$CA_CLIENT_CERT\" \"$TRELLIS_EVENT\" > '{}'",
                record.display()
            )),
            timeout: Duration::from_secs(10),
        };
        r.run(&environment(&l, Event::Renewed)).await.expect("run");
        let text = std::fs::read_to_string(&record).expect("record");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                l.path(FileKind::Cert).to_str().expect("utf8"),
                l.path(FileKind::Key).to_str().expect("utf8"),
                l.path(FileKind::Chain).to_str().expect("utf8"),
                l.path(FileKind::Cert).to_str().expect("utf8"),
                "renewed",
            ]
        );
    }

    #[tokio::test]
    async fn failing_command_is_an_error() {
        let r = Reloader {
            action: ReloadAction::Command("exit 3".into()),
            timeout: Duration::from_secs(10),
        };
        let err = r.run(&[]).await.unwrap_err();
        assert!(
            matches!(&err, ReloadError::Exit(s) if s.code() == Some(3)),
            "{err}"
        );
        assert_eq!(err.reason(), "reload_command");
    }

    #[tokio::test]
    async fn slow_command_times_out_and_its_group_is_killed() {
        let tmp = tempfile::tempdir().expect("tmp");
        let marker = tmp.path().join("late");
        let r = Reloader {
            // The child of sh would write the marker after 2 s if it
            // survived the timeout.
            action: ReloadAction::Command(format!(
                "(sleep 2; touch '{}') & wait",
                marker.display()
            )),
            timeout: Duration::from_millis(300),
        };
        let start = Instant::now();
        let err = r.run(&[]).await.unwrap_err();
        assert!(matches!(err, ReloadError::Timeout(_)), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!marker.exists(), "a child outlived the timeout");
    }

    #[tokio::test]
    async fn signal_goes_to_pid_from_pidfile() {
        let tmp = tempfile::tempdir().expect("tmp");
        let ready = tmp.path().join("ready");
        let got = tmp.path().join("got-hup");
        let mut command = tokio::process::Command::new("sh");
        command.arg("-c").arg(format!(
            "trap 'touch {}; exit 0' HUP; touch {}; while :; do sleep 0.05; done",
            got.display(),
            ready.display()
        ));
        // A shell cannot trap a signal that was ignored when it started
        // (POSIX), and a suite run under `nohup` ignores SIGHUP: the
        // script starts with the default disposition, whatever the runner's.
        // SAFETY: signal(2) is async-signal-safe; nothing else runs here.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = command.spawn().expect("spawn");
        let pid = child.id().expect("pid");
        let pidfile = tmp.path().join("svc.pid");
        std::fs::write(&pidfile, format!("{pid}\n")).expect("pidfile");
        // The script installs its trap before it makes `ready`.
        let until = |path: std::path::PathBuf| async move {
            for _ in 0..500 {
                if path.exists() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            path.exists()
        };
        assert!(until(ready.clone()).await, "the script did not start");
        let r = Reloader {
            action: ReloadAction::Signal {
                signal: Signal::Hup,
                pidfile: pidfile.clone(),
            },
            timeout: Duration::from_secs(5),
        };
        r.run(&[]).await.expect("signal");
        // The trap's mark shows the signal arrived.
        let got_it = until(got.clone()).await;
        let _ = child.kill().await;
        assert!(got_it, "the process named by the pidfile got no HUP");
    }

    #[test]
    fn pidfile_validation() {
        let tmp = tempfile::tempdir().expect("tmp");
        let p = tmp.path().join("pid");
        for bad in ["", "0", "1", "-1", "abc", "12 13"] {
            std::fs::write(&p, bad).expect("write");
            assert!(
                matches!(read_pidfile(&p), Err(ReloadError::BadPid(_))),
                "{bad:?}"
            );
        }
        std::fs::write(&p, " 4242\n").expect("write");
        assert_eq!(read_pidfile(&p).expect("pid"), 4242);
        // PostgreSQL's postmaster.pid: the PID, then data dir, start time, port…
        std::fs::write(&p, "4243\n/var/lib/postgresql/15/main\n1764320000\n5432\n").expect("write");
        assert_eq!(read_pidfile(&p).expect("pid"), 4243);
        assert!(matches!(
            read_pidfile(&tmp.path().join("none")),
            Err(ReloadError::Pidfile(..))
        ));
    }

    #[test]
    fn signal_names() {
        assert_eq!("hup".parse::<Signal>(), Ok(Signal::Hup));
        assert_eq!("SIGUSR1".parse::<Signal>(), Ok(Signal::Usr1));
        assert_eq!(Signal::Term.to_string(), "SIGTERM");
        assert!("KILL".parse::<Signal>().is_err());
    }
}
