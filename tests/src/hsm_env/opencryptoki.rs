//! opencryptoki's software token (`swtok`) behind its own `pkcsslotd`, in
//! private namespaces. opencryptoki 3.8 hard-codes its paths
//! (`/etc/opencryptoki`, `/var/lib/opencryptoki`, `/var/lock/opencryptoki`,
//! `/var/log/opencryptoki`, `/var/run/pkcsslotd.{socket,pid}`), keeps its
//! slot table in SysV shared memory keyed by `ftok("/usr/sbin/pkcsslotd")`
//! and the token's object table in POSIX shared memory (`/dev/shm`). A holder
//! (`unshare --mount --ipc --pid --fork`) bind-mounts directories under the
//! test's directory over the first three, lays throw-away overlays (upper
//! layer on a namespace-private tmpfs) over `/var/run` and `/var/log`, mounts
//! a private `/dev/shm`, starts `pkcsslotd` and then waits for its stdin to
//! close; every later program enters the mount and IPC namespaces through
//! `nsenter` ([`HsmEnv::prefix`]). The holder's shell is PID 1 of its own PID
//! namespace, so when it ends (on drop, or when the test process dies and
//! the pipe closes) the kernel kills and reaps the daemon with it. The host's
//! files, shared memory and any host `pkcsslotd` are never touched. If the
//! host has no `pkcs11` group, the namespace gets a private `/etc/group`.

use super::HsmEnv;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The one token, used for both roles.
const LABEL: &str = "trellis-hsm";
/// opencryptoki's swtok accepts PINs of 4 to 8 characters.
const USER_PIN: &str = "ock-4711";
const SO_PIN: &str = "so-ock47";
/// The SO PIN of a fresh swtok.
const DEFAULT_SO_PIN: &str = "87654321";
const READY_WITHIN: Duration = Duration::from_secs(15);
const STOP_WITHIN: Duration = Duration::from_secs(5);

/// What the holder runs inside the new namespaces, as their PID 1: `$1` is
/// the environment's directory, `$2…` the (canonical) directories that get
/// an overlay. It ends when its stdin (the guard's lifeline) closes.
const HOLDER_SCRIPT: &str = r#"set -eu
D="$1"; shift
if [ -f "$D/group" ]; then mount --bind "$D/group" /etc/group; fi
mount -t tmpfs -o mode=0700 trellis-ock "$D/ns"
for r in "$@"; do
  n=$(printf %s "$r" | tr / _)
  mkdir "$D/ns/$n.upper" "$D/ns/$n.work"
  mount -t overlay overlay -o "lowerdir=$r,upperdir=$D/ns/$n.upper,workdir=$D/ns/$n.work" "$r"
done
mkdir -p /var/lock/opencryptoki
mount --bind "$D/etc" /etc/opencryptoki
mount --bind "$D/lib" /var/lib/opencryptoki
mount --bind "$D/lock" /var/lock/opencryptoki
mount -t tmpfs -o mode=1777 trellis-ock-shm /dev/shm
chgrp -R pkcs11 "$D/lib" "$D/lock"
chmod -R u=rwX,g=rwX,o= "$D/lib" "$D/lock"
pkcsslotd
: > "$D/ready"
read -r _ || :
"#;

/// opencryptoki's software token with one token `trellis-hsm` (user PIN set,
/// SO PIN changed from the default), its daemon running in a private
/// namespace whose state lives under `dir`.
pub fn opencryptoki(dir: &Path) -> HsmEnv {
    let module = [
        "/usr/lib/x86_64-linux-gnu/opencryptoki/libopencryptoki.so.0",
        "/usr/lib/aarch64-linux-gnu/opencryptoki/libopencryptoki.so.0",
        "/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so",
        "/usr/lib/aarch64-linux-gnu/pkcs11/libopencryptoki.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .unwrap_or_else(|| panic!("opencryptoki is not installed (make test installs it)"));
    for tool in ["/usr/sbin/pkcsslotd", "/usr/sbin/pkcsconf"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: install opencryptoki"
        );
    }
    // Mount points that must already exist on the host (the package ships them).
    for p in ["/etc/opencryptoki", "/var/lib/opencryptoki"] {
        assert!(
            Path::new(p).is_dir(),
            "{p} is missing: install opencryptoki"
        );
    }
    let dir_text = dir.display().to_string();
    assert!(
        dir.is_absolute() && !dir_text.contains([',', ':', ' ', '\n', '\t']),
        "{dir_text}: opencryptoki's directory must be absolute and usable in mount options"
    );

    let mkdir =
        |p: &Path| std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    for sub in ["etc", "lib/swtok/TOK_OBJ", "lock/swtok", "ns"] {
        mkdir(&dir.join(sub));
    }
    let conf = dir.join("etc/opencryptoki.conf");
    std::fs::write(
        &conf,
        "version opencryptoki-3.1\n\nslot 0\n{\nstdll = libpkcs11_sw.so\ntokname = swtok\n}\n",
    )
    .unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
    private_group_file(dir);

    let holder_log = dir.join("holder.log");
    let log = std::fs::File::create(&holder_log)
        .unwrap_or_else(|e| panic!("{}: {e}", holder_log.display()));
    let log2 = log
        .try_clone()
        .unwrap_or_else(|e| panic!("{}: {e}", holder_log.display()));
    let run_dir = canonical("/var/run");
    let child = Command::new("unshare")
        .args([
            "--mount",
            "--ipc",
            "--pid",
            "--fork",
            "--kill-child",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            HOLDER_SCRIPT,
            "sh",
        ])
        .arg(dir)
        .args(overlay_dirs())
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting unshare (util-linux) for opencryptoki: {e}"));
    let pid = child.id();
    let mut guard = Guard {
        lifeline: None,
        holder: child,
        mnt_ns: None,
    };
    guard.lifeline = guard.holder.stdin.take();

    // Ready: the script got past `pkcsslotd` and the daemon's socket and pid
    // file exist inside the namespace.
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let socket = root
        .join(run_dir.strip_prefix("/").unwrap_or(&run_dir))
        .join("pkcsslotd.socket");
    let pid_file = socket.with_file_name("pkcsslotd.pid");
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Ok(Some(status)) = guard.holder.try_wait() {
            panic!(
                "opencryptoki's namespace holder exited ({status}): {}",
                std::fs::read_to_string(&holder_log).unwrap_or_default()
            );
        }
        if dir.join("ready").exists() && socket.exists() && pid_file.exists() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pkcsslotd not ready within {READY_WITHIN:?}: {}",
            std::fs::read_to_string(&holder_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    guard.mnt_ns = guard.namespace();
    assert!(
        guard.mnt_ns.is_some(),
        "opencryptoki's holder {pid} is not in its own mount namespace"
    );

    let env = HsmEnv {
        name: "opencryptoki",
        module,
        env: Vec::new(),
        prefix: vec![
            "nsenter".into(),
            "-t".into(),
            pid.to_string(),
            "-m".into(),
            "-i".into(),
            // nsenter would otherwise start in the namespace's `/`.
            "--wd=.".into(),
            "--".into(),
        ],
        init_params: None,
        online_token: LABEL.into(),
        online_pin: USER_PIN.into(),
        root_token: LABEL.into(),
        root_pin: USER_PIN.into(),
        dir: dir.to_path_buf(),
        guard: vec![Box::new(guard)],
    };

    // `-I` asks for the label on stdin; the PIN steps take everything as flags.
    let pkcsconf = Path::new("/usr/sbin/pkcsconf");
    pkcsconf_ok(
        &env,
        &["-I", "-c", "0", "-S", DEFAULT_SO_PIN],
        &format!("{LABEL}\n"),
    );
    pkcsconf_ok(
        &env,
        &["-P", "-c", "0", "-S", DEFAULT_SO_PIN, "-n", SO_PIN],
        "",
    );
    pkcsconf_ok(&env, &["-u", "-c", "0", "-S", SO_PIN, "-n", USER_PIN], "");
    let out = crate::run(
        env.command(pkcsconf)
            .args(["-t", "-c", "0"])
            .stdin(Stdio::null()),
    );
    let info = crate::text(&out);
    assert!(
        out.status.success() && info.contains("USER_PIN_INITIALIZED") && info.contains(LABEL),
        "opencryptoki token not initialised: {info}"
    );
    env
}

/// Run `pkcsconf ARGS` in the namespace with `input` on stdin; panics on failure.
fn pkcsconf_ok(env: &HsmEnv, args: &[&str], input: &str) {
    let mut child = env
        .command(Path::new("/usr/sbin/pkcsconf"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting pkcsconf {args:?}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("pkcsconf {args:?} stdin: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("pkcsconf {args:?}: {e}"));
    assert!(
        out.status.success(),
        "pkcsconf {args:?}: {}",
        crate::text(&out)
    );
}

fn canonical(p: &str) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// The host directories that get a throw-away overlay in the namespace:
/// where the daemon writes its socket and pid file, where it creates
/// `/var/log/opencryptoki`, and where `/var/lock/opencryptoki` is created
/// if the host has none (unless that is already covered).
fn overlay_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![canonical("/var/run"), canonical("/var/log")];
    let lock = canonical("/var/lock");
    if !dirs.iter().any(|d| lock.starts_with(d)) {
        dirs.push(lock);
    }
    dirs
}

/// `pkcsslotd` and the library need a group `pkcs11`. If the host has none,
/// write `dir/group` (the host's `/etc/group` plus `pkcs11`), which the
/// holder bind-mounts over `/etc/group` inside the namespace only.
fn private_group_file(dir: &Path) {
    let exists = Command::new("getent")
        .args(["group", "pkcs11"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if exists {
        return;
    }
    let host = std::fs::read_to_string("/etc/group").unwrap_or_else(|e| panic!("/etc/group: {e}"));
    let used: Vec<u32> = host
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect();
    let gid = (900..60000)
        .find(|g| !used.contains(g))
        .unwrap_or_else(|| panic!("no free gid for a private pkcs11 group"));
    let mut text = host;
    if !text.ends_with('\n') && !text.is_empty() {
        text.push('\n');
    }
    text.push_str(&format!("pkcs11:x:{gid}:root\n"));
    let path = dir.join("group");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The mount namespace of a process (`mnt:[…]`), if readable.
fn mount_ns(pid: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|p| p.display().to_string())
}

/// Processes (other than zombies) in the mount namespace `ns`.
fn pids_in(ns: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| mount_ns(&pid.to_string()).as_deref() == Some(ns) && !is_zombie(*pid))
        .collect()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

fn signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// Ends the holder's PID namespace (and with it `pkcsslotd`), waits for the
/// holder, then kills whatever else is still in the mount namespace (programs
/// a test started through the prefix and left behind).
struct Guard {
    /// The holder's stdin: closing it ends the namespace's PID 1.
    lifeline: Option<std::process::ChildStdin>,
    /// `unshare`, in the new mount and IPC namespaces; its child is the shell.
    holder: Child,
    /// The holder's mount namespace, once it is known to differ from ours.
    mnt_ns: Option<String>,
}

impl Guard {
    /// The holder's mount namespace if it is not ours (never act on our own).
    fn namespace(&self) -> Option<String> {
        let theirs = mount_ns(&self.holder.id().to_string())?;
        (Some(&theirs) != mount_ns("self").as_ref()).then_some(theirs)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let ns = self.mnt_ns.clone().or_else(|| self.namespace());
        drop(self.lifeline.take());
        let deadline = Instant::now() + STOP_WITHIN;
        while matches!(self.holder.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // With `--kill-child`, SIGKILL to unshare reaches the namespace's PID 1.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        if let Some(ns) = ns {
            for sig in ["TERM", "KILL"] {
                signal(sig, &pids_in(&ns));
                let deadline = Instant::now() + STOP_WITHIN;
                while !pids_in(&ns).is_empty() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names, sizes and modification times under the host's opencryptoki paths.
    fn host_state() -> Vec<String> {
        fn walk(p: &Path, depth: u32, out: &mut Vec<String>) {
            let Ok(meta) = std::fs::symlink_metadata(p) else {
                out.push(format!("{} absent", p.display()));
                return;
            };
            out.push(format!(
                "{} {} {:?}",
                p.display(),
                meta.len(),
                meta.modified().ok()
            ));
            if meta.is_dir() && depth < 4 {
                let mut names: Vec<PathBuf> = std::fs::read_dir(p)
                    .map(|d| d.flatten().map(|e| e.path()).collect())
                    .unwrap_or_default();
                names.sort();
                for n in names {
                    walk(&n, depth + 1, out);
                }
            }
        }
        let mut out = Vec::new();
        for p in [
            "/etc/opencryptoki",
            "/var/lib/opencryptoki",
            "/var/lock/opencryptoki",
            "/var/log/opencryptoki",
            "/var/run/pkcsslotd.socket",
            "/var/run/pkcsslotd.pid",
        ] {
            walk(Path::new(p), 0, &mut out);
        }
        out
    }

    /// A process's start time (field 22 of `/proc/PID/stat`), to tell it
    /// from a later process with the same pid.
    fn start_time(pid: u32) -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some(
            stat.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(19)?
                .to_string(),
        )
    }

    #[test]
    fn smoke_token_listed_and_nothing_left() {
        let before = host_state();
        let tmp = tempfile::tempdir().expect("tempdir");
        let env = opencryptoki(tmp.path());
        let out = crate::run(env.command(Path::new("pkcsconf")).arg("-t"));
        let text = crate::text(&out);
        assert!(out.status.success(), "pkcsconf -t: {text}");
        assert!(
            text.contains(&format!("Label: {LABEL}")),
            "pkcsconf -t: {text}"
        );

        let guard = env.guard[0]
            .downcast_ref::<Guard>()
            .expect("opencryptoki guard");
        let ns = guard.mnt_ns.clone().expect("namespace");
        let pids: Vec<(u32, String)> = pids_in(&ns)
            .into_iter()
            .map(|p| (p, start_time(p).expect("start time")))
            .collect();
        assert!(
            pids.len() >= 3,
            "unshare, its shell and pkcsslotd expected in {ns}: {pids:?}"
        );
        drop(env);
        // Gone, zombies included (the PID namespace reaps its own).
        let left: Vec<u32> = pids
            .into_iter()
            .filter(|(p, t)| start_time(*p).as_ref() == Some(t))
            .map(|(p, _)| p)
            .collect();
        assert!(
            left.is_empty(),
            "left running in opencryptoki's namespace: {left:?}"
        );
        assert_eq!(
            before,
            host_state(),
            "the host's opencryptoki paths changed"
        );
    }
}
