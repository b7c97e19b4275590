//! One writer per log: an exclusive `flock(2)` on `<state>/log/<log_id>/lock`,
//! taken before recovery touches `log.dat` and held by the writer until it
//! stops (for `serve`: the life of the process). The file names its holder
//! (pid and the time it took the lock) so that a refused second writer can
//! say who has it.
//!
//! A `flock` lock belongs to the open file: the kernel drops it when the
//! holder exits, however it exits, so a crash never leaves a stale lock.
//! Offline readers (`log verify`, `show`, `monitor`) never take it; they read
//! the valid prefix of `log.dat` as it is.

use super::LogError;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// The lock file's name inside the log directory.
pub const LOCK_FILE: &str = "lock";

/// What a holder writes into the lock file is small; read no more than this.
const MAX_HOLDER_TEXT: usize = 256;

/// An exclusive lock on a log directory; released when dropped.
#[derive(Debug)]
pub struct LogLock {
    _file: File,
}

/// Who holds a log's lock, as its lock file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    pub started: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.pid, &self.started) {
            (Some(pid), Some(started)) => write!(f, "pid {pid} (started {started})"),
            (Some(pid), None) => write!(f, "pid {pid}"),
            // Between another process's flock and its write of the file.
            (None, _) => f.write_str("another process (which one is not recorded yet)"),
        }
    }
}

/// Open (creating, never truncating) a file to `flock`: the one way lock
/// files of the state directory are opened (the log's, a class's
/// revocation list's).
pub(crate) fn open_lock_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
}

impl LogLock {
    /// Take the lock on `dir` (which must exist) without waiting: a log that
    /// is already locked is [`LogError::InUse`], naming the holder.
    pub fn acquire(dir: &Path) -> Result<LogLock, LogError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LogError::Io {
            path: path.display().to_string(),
            source,
        };
        // No truncation before the lock is ours: the file names the holder.
        let file = open_lock_file(&path).map_err(io)?;
        loop {
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) => {
                    return Err(LogError::InUse {
                        dir: dir.display().to_string(),
                        holder: read_holder(&file),
                    })
                }
                _ => return Err(io(err)),
            }
        }
        let started = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let text = format!("pid={}\nstarted={started}\n", std::process::id());
        file.set_len(0).map_err(io)?;
        file.write_all_at(text.as_bytes(), 0).map_err(io)?;
        Ok(LogLock { _file: file })
    }
}

fn read_holder(file: &File) -> Holder {
    let mut buf = [0u8; MAX_HOLDER_TEXT];
    let n = file.read_at(&mut buf, 0).unwrap_or(0);
    parse_holder(&String::from_utf8_lossy(&buf[..n]))
}

fn parse_holder(text: &str) -> Holder {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .map(str::trim)
    };
    Holder {
        pid: field("pid").and_then(|p| p.parse().ok()),
        // It is only shown; keep it to a timestamp's characters.
        started: field("started")
            .filter(|s| {
                !s.is_empty()
                    && s.len() <= 40
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-:.+Z".contains(c))
            })
            .map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = LogLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file: a second open in the same
        // process conflicts like another process would.
        let refused = LogLock::acquire(dir.path()).unwrap_err();
        let message = refused.to_string();
        assert!(
            message.contains(&format!("in use by pid {} (started ", std::process::id()))
                && message.contains("each replica needs its own log_id")
                && message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message:?}");
        drop(first);
        let again = LogLock::acquire(dir.path()).unwrap();
        drop(again);
    }

    #[test]
    fn holder_text_is_parsed_defensively() {
        assert_eq!(
            parse_holder("pid=42\nstarted=2026-01-02T03:04:05Z\n"),
            Holder {
                pid: Some(42),
                started: Some("2026-01-02T03:04:05Z".into())
            }
        );
        let junk = parse_holder("pid=x\nstarted=\u{1b}[31mred\n");
        assert_eq!(
            junk,
            Holder {
                pid: None,
                started: None
            }
        );
        assert!(junk.to_string().starts_with("another process"));
        assert_eq!(parse_holder("").pid, None);
    }
}
