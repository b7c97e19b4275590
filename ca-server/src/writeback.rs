//! Writing derived files back to the disk a little at a time, so that
//! their data never reaches the disk in one burst that the issuance log's
//! fdatasync then waits behind.
//!
//! The server writes files it never syncs: the Merkle node files
//! (`log/nodes.rs`, 32 bytes a certificate at the leaf level) and the
//! serial index's runs (`revoke/serials.rs`, megabytes at a time). Left to
//! the kernel, their dirty pages went out together once they were 30
//! seconds old, 13-80 MB at once, and the log's next fdatasync took 30-200
//! ms instead of under one (the `log_commit_slow` warnings of a
//! 16-connection run, each next to such a burst in `/proc/diskstats`).
//! These calls start or finish that write-back early, in small pieces. No
//! cache flush, no metadata: they only move when the data is written.

use std::fs::File;

/// Bytes written back at a time by [`paced`].
pub const CHUNK: u64 = 256 * 1024;

/// Start writing bytes `offset..offset + len` of `file` to the disk and
/// return without waiting for it.
pub fn start(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    sync_file_range(file, offset, len, false)
}

/// Write bytes `from..to` of `file` to the disk now, [`CHUNK`] at a time,
/// waiting for each chunk before the next (for threads where waiting for
/// the disk is fine).
pub fn paced(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let mut at = from;
    while at < to {
        let len = (to - at).min(CHUNK);
        sync_file_range(file, at, len, true)?;
        at += len;
    }
    Ok(())
}

/// Where an appended-to file's write-back stands: its length, and how much
/// of it was written back. Every [`CHUNK`] appended, [`Trail::grew`] says
/// so, and [`Trail::write_back`] writes back what is behind.
#[derive(Debug, Default, Clone, Copy)]
pub struct Trail {
    len: u64,
    written_back: u64,
}

impl Trail {
    /// A file of `len` bytes, none of them to write back.
    pub fn at(len: u64) -> Trail {
        Trail {
            len,
            written_back: len,
        }
    }

    /// `n` more bytes were appended; true when a [`CHUNK`] or more is not
    /// written back.
    pub fn grew(&mut self, n: u64) -> bool {
        self.len += n;
        self.len - self.written_back >= CHUNK
    }

    /// Write back what is behind: [`start`] it, or with `wait` write it
    /// back now ([`paced`]). Counted as done either way (a failure leaves
    /// those bytes to the kernel).
    pub fn write_back(&mut self, file: &File, wait: bool) -> std::io::Result<()> {
        let (from, to) = (self.written_back, self.len);
        self.written_back = to;
        if wait {
            paced(file, from, to)
        } else {
            start(file, from, to - from)
        }
    }

    /// The file was cut to `len` bytes.
    pub fn truncated(&mut self, len: u64) {
        self.len = len;
        self.written_back = self.written_back.min(len);
    }
}

#[cfg(target_os = "linux")]
fn sync_file_range(file: &File, offset: u64, len: u64, wait: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Ok(());
    };
    let flags = if wait {
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER
    } else {
        libc::SYNC_FILE_RANGE_WRITE
    };
    // SAFETY: a system call on an open descriptor this function borrows.
    let done = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn sync_file_range(_file: &File, _offset: u64, _len: u64, _wait: bool) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn ranges_are_written_back_and_the_data_stays_as_written() {
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..(3 * CHUNK + 4321)).map(|i| (i % 251) as u8).collect();
        file.write_all(&data).unwrap();
        start(&file, 0, 4096).unwrap();
        paced(&file, 0, data.len() as u64).unwrap();
        // past the end and empty ranges are no error
        paced(&file, data.len() as u64, data.len() as u64 + CHUNK).unwrap();
        start(&file, 10 * CHUNK, 0).unwrap();
        // a trail says when a chunk is behind, and writes back just that
        let mut trail = Trail::at(0);
        assert!(!trail.grew(CHUNK - 1));
        assert!(trail.grew(1));
        trail.write_back(&file, false).unwrap();
        assert!(!trail.grew(CHUNK - 1));
        trail.truncated(10);
        assert!(!trail.grew(CHUNK - 1));
        assert!(trail.grew(10));
        trail.write_back(&file, true).unwrap();
        let mut back = vec![0u8; data.len()];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut back, 0).unwrap();
        assert_eq!(back, data);
    }
}
