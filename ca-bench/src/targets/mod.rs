//! The servers under test, each set up by the harness in a temporary
//! directory and run as a child process on 127.0.0.1: Trellis (`trellis.rs`:
//! native and CFSSL-compatible APIs, HTTPS or plain HTTP) and CFSSL
//! (`cfssl.rs`: `cfssl serve` and `multirootca`, plain HTTP). A running
//! server is a [`Server`]; dropping it kills the child, also on error paths.

pub mod cfssl;
pub mod trellis;

use crate::load::Protocol;
use crate::validate::Trust;
use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Child;
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

/// A file for a child's stderr.
pub fn log_file(path: &std::path::Path) -> Result<std::fs::File> {
    std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))
}

/// The last `n` lines of a child's log, for failure messages (the log goes
/// away with the temporary directory).
pub fn log_tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}
