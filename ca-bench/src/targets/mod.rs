//! The servers under test, each set up by the harness in a temporary
//! directory and run as a child process on 127.0.0.1: Trellis (`trellis.rs`:
//! native and CFSSL-compatible APIs, HTTPS or plain HTTP) and CFSSL
//! (`cfssl.rs`: `cfssl serve` and `multirootca`, HTTPS with a certificate
//! from their own CA). A running server is a [`Server`]; dropping it kills
//! the child, also on error paths.

pub mod cfssl;
pub mod trellis;

use crate::load::Protocol;
use crate::validate::Trust;
use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A child process that is killed and reaped when dropped.
pub struct ChildGuard {
    name: String,
    child: Child,
}

impl ChildGuard {
    pub fn new(name: impl Into<String>, child: Child) -> ChildGuard {
        ChildGuard {
            name: name.into(),
            child,
        }
    }

    /// Fails if the child has already exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status})", self.name);
        }
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child exited, without waiting.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// SIGTERM (with `kill(1)`, as the end-to-end tests do), then wait up to
    /// `timeout` for the child to exit. Ok(status) when it exited by
    /// itself; an error (after SIGKILL) when it did not.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} had already exited ({status})", self.name);
        }
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill")?;
        if !sent.success() {
            bail!("kill -TERM {} failed ({sent})", self.child.id());
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!(
            "{} did not exit within {timeout:?} of SIGTERM (killed)",
            self.name
        )
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A running target: where it listens, how to reach it, what its
/// certificates chain to, and the process (killed on drop).
pub struct Server {
    pub label: String,
    pub addr: SocketAddr,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub trust: Arc<Trust>,
    pub protocols: Vec<Protocol>,
    /// Where the child's log goes.
    pub log: std::path::PathBuf,
    pub _guard: ChildGuard,
}

/// A loopback port the kernel says is free now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Wait until something accepts connections on `addr`, failing early if the
/// child exits.
pub fn wait_for_port(addr: SocketAddr, guard: &mut ChildGuard, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        guard.check_alive()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("nothing listens on {addr} after {timeout:?}")
}

/// A `kB` field (`VmRSS`, `VmHWM`, …) of `/proc/<pid>/status`, in KiB;
/// None when the process is gone or the field is missing.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// KiB as MiB, for reports.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A file for a child's stderr.
///
/// The child writes into a pipe, and a thread of this harness copies it
/// into the file, starting the file's write-back every 256 KiB: a server
/// logging every request at info level writes megabytes a second, and
/// left to the kernel those pages went to the disk 30 seconds' worth at
/// once, where the server's own log fdatasync waited behind them (a
/// harness artefact: a deployed server's stderr goes to journald).
pub fn log_file(path: &std::path::Path) -> Result<std::process::Stdio> {
    use std::io::{Read, Write};
    let mut file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let (mut from_child, to_child) = pipe().context("a pipe for a child's log")?;
    std::thread::Builder::new()
        .name("child-log".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut trail = ca_server::writeback::Trail::default();
            // Ends when every copy of the pipe's write end is closed.
            while let Ok(n) = from_child.read(&mut buf) {
                if n == 0 || file.write_all(&buf[..n]).is_err() {
                    break;
                }
                if trail.grew(n as u64) {
                    let _ = trail.write_back(&file, false);
                }
            }
        })
        .context("starting a log copier thread")?;
    Ok(std::process::Stdio::from(to_child))
}

/// A pipe (read end, write end), both close-on-exec (the child gets its
/// own copy of the write end as its stdout or stderr).
fn pipe() -> std::io::Result<(std::fs::File, std::os::fd::OwnedFd)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two descriptors on success; each is owned once.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((
            std::fs::File::from(OwnedFd::from_raw_fd(fds[0])),
            OwnedFd::from_raw_fd(fds[1]),
        ))
    }
}

/// The last `n` lines of a child's log, for failure messages (the log goes
/// away with the temporary directory).
pub fn log_tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}
