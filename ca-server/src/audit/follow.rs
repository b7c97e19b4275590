//! Reading a log as it grows, for `log monitor --follow` (and, read once
//! to the end, for `show` and the one-shot monitor). A [`Follower`]
//! remembers the offset after the last record it consumed and continues
//! from there: every poll reads only what was appended since, one record
//! at a time.
//!
//! The writer appends a batch as one write (its entries, then the tree
//! head signed over them) and fsyncs it. With [`Until::SignedHead`] a
//! poll hands out only entries that a tree head after them covers, and
//! stops at a batch boundary: a batch still being written (a torn record
//! at the end) is left for the next poll. A batch the writer could not
//! make durable is cut away again (`set_len` back to where it began) and
//! the next batch is written in its place; a poll first checks that the
//! tree head it stopped after is still there, byte for byte, and when it
//! is not, reads again from where that batch began.

use super::AuditError;
use crate::log::record::{self, Next, KIND_ENTRY};
use ca_proto::logentry::LogEntry;
use std::path::{Path, PathBuf};

/// Records read between two `yield_now`s.
pub(crate) const YIELD_EVERY: u32 = 8;

/// How far a poll reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Up to the last signed tree head: entries the log has committed. A
    /// batch not yet completely written waits for the next poll.
    SignedHead,
    /// Every complete entry record, up to the end of the valid prefix (a
    /// torn tail is not an error): for reading a log once.
    End,
}

/// What one poll did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Polled {
    /// Entries handed out.
    pub entries: u64,
    /// The file has bytes after what was consumed: a record being
    /// written, entries waiting for their tree head, or a torn tail.
    pub pending: bool,
    /// The batch read last had been cut away by the writer, and was read
    /// again from where it began.
    pub rewound: bool,
}

/// A position in one log file; see the module documentation.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    /// After the last record consumed (with [`Until::SignedHead`] always a
    /// tree head: a batch boundary).
    offset: u64,
    /// The tree head record that ends at `offset`: its offset and payload.
    last_head: Option<(u64, Vec<u8>)>,
    /// Where the batch that `last_head` closes began.
    batch_start: u64,
}

impl Follower {
    /// A follower at the start of the log file `path` (usually
    /// `LogPaths::data()`).
    pub fn new(path: impl Into<PathBuf>) -> Follower {
        Follower {
            path: path.into(),
            offset: 0,
            last_head: None,
            batch_start: 0,
        }
    }

    /// The file offset the next poll continues from.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Hand every entry appended since the last poll to `visit`, in order.
    /// An error from `visit` stops the poll; the entries of an unfinished
    /// batch are then handed out again by the next poll.
    pub fn poll<E: From<AuditError>>(
        &mut self,
        until: Until,
        mut visit: impl FnMut(LogEntry) -> Result<(), E>,
    ) -> Result<Polled, E> {
        self.poll_located(until, |_, entry| visit(entry))
    }

    /// [`poll`](Self::poll), also handing out the file offset of each
    /// entry's record (for indexes that read entries back by offset).
    pub fn poll_located<E: From<AuditError>>(
        &mut self,
        until: Until,
        mut visit: impl FnMut(u64, LogEntry) -> Result<(), E>,
    ) -> Result<Polled, E> {
        let mut polled = Polled::default();
        if !self.last_head_is_there()? {
            tracing::warn!(
                event = "log_batch_cut",
                offset = self.batch_start,
                "the log's last batch was cut away by its writer; reading again from where it began"
            );
            self.offset = self.batch_start;
            self.last_head = None;
            polled.rewound = true;
        }
        if self.file_len()? < self.offset {
            // Shorter than anything a writer cuts back to: start over.
            self.offset = 0;
            self.batch_start = 0;
            self.last_head = None;
            polled.rewound = true;
        }
        let stop = match until {
            Until::SignedHead => self.end_of_last_head()?,
            Until::End => u64::MAX,
        };
        let mut reader = record::open_at(&self.path, self.offset).map_err(|e| self.io(e))?;
        let mut read = 0u32;
        while reader.offset() < stop {
            // Followers run beside signing (the inventory, the revocation
            // index): give the core up now and then, so that a second's
            // worth of entries read at once does not hold it while a
            // signing thread waits (p99 at half load: see ARCHITECTURE.md).
            read = read.wrapping_add(1);
            if read % YIELD_EVERY == 0 {
                std::thread::yield_now();
            }
            let next = reader.next_record().map_err(|e| self.io(e))?;
            let Next::Record(found) = next else {
                break;
            };
            if found.kind == KIND_ENTRY {
                let entry =
                    LogEntry::from_bytes(found.payload).map_err(|source| AuditError::Entry {
                        path: self.path.clone(),
                        offset: found.offset,
                        source,
                    })?;
                visit(found.offset, entry)?;
                polled.entries += 1;
                if until == Until::End {
                    self.offset = reader.offset();
                }
            } else {
                self.batch_start = self.offset;
                self.last_head = Some((found.offset, found.payload.to_vec()));
                self.offset = reader.offset();
            }
        }
        polled.pending = self.file_len()? > self.offset;
        Ok(polled)
    }

    /// Whether the tree head consumed last is still where it was.
    fn last_head_is_there(&self) -> Result<bool, AuditError> {
        let Some((at, payload)) = &self.last_head else {
            return Ok(true);
        };
        let mut reader = record::open_at(&self.path, *at).map_err(|e| self.io(e))?;
        let same = matches!(
            reader.next_record().map_err(|e| self.io(e))?,
            Next::Record(r) if r.kind == record::KIND_TREE_HEAD && r.payload == payload.as_slice()
        );
        Ok(same && reader.offset() == self.offset)
    }

    /// The offset after the last tree head record from `offset` on (or
    /// `offset` when none follows yet). Reads, but keeps, one record at a
    /// time.
    fn end_of_last_head(&self) -> Result<u64, AuditError> {
        let mut reader = record::open_at(&self.path, self.offset).map_err(|e| self.io(e))?;
        let mut end = self.offset;
        while let Next::Record(found) = reader.next_record().map_err(|e| self.io(e))? {
            if found.kind != KIND_ENTRY {
                end = reader.offset();
            }
        }
        Ok(end)
    }

    fn file_len(&self) -> Result<u64, AuditError> {
        std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|e| self.io(e))
    }

    fn io(&self, source: std::io::Error) -> AuditError {
        AuditError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// Every entry of the log file at `path`, in order, up to the end of its
/// valid prefix.
pub fn for_each_entry<E: From<AuditError>>(
    path: &Path,
    visit: impl FnMut(LogEntry) -> Result<(), E>,
) -> Result<u64, E> {
    Ok(Follower::new(path).poll(Until::End, visit)?.entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::KIND_TREE_HEAD;
    use std::io::Write;

    fn entry_bytes(seq: u64, name: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "seq": seq, "time": "2026-01-01T00:00:00Z", "log_id": "t",
            "class": "db", "profile": "server", "key_id": "db",
            "decision": "denied", "dns": [name],
        }))
        .expect("json")
    }

    /// A batch as the writer writes it: entries, then a tree head.
    fn batch(first_seq: u64, names: &[&str], head: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate() {
            record::encode(
                KIND_ENTRY,
                &entry_bytes(first_seq + i as u64, name),
                &mut out,
            );
        }
        record::encode(KIND_TREE_HEAD, head.as_bytes(), &mut out);
        out
    }

    fn append(path: &Path, bytes: &[u8]) {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .expect("open log");
        file.write_all(bytes).expect("append");
    }

    fn names(follower: &mut Follower, until: Until) -> (Vec<String>, Polled) {
        let mut seen = Vec::new();
        let polled = follower
            .poll(until, |e| {
                seen.push(e.dns().join(","));
                Ok::<_, AuditError>(())
            })
            .expect("poll");
        (seen, polled)
    }

    #[test]
    fn a_follower_reads_only_new_entries_and_waits_for_a_torn_tail() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log.dat");
        let first = batch(0, &["a", "b"], "head-2");
        std::fs::write(&path, &first).expect("write");
        let mut follower = Follower::new(&path);
        let (seen, polled) = names(&mut follower, Until::SignedHead);
        assert_eq!(seen, ["a", "b"]);
        assert!(!polled.pending);
        assert_eq!(follower.offset(), first.len() as u64);

        // Nothing new: nothing handed out.
        assert_eq!(
            names(&mut follower, Until::SignedHead).0,
            Vec::<String>::new()
        );

        // The next batch, written in pieces: a complete entry, then half of
        // the second, then half of the head. Nothing is handed out before
        // the head is whole.
        let second = batch(2, &["c", "d"], "head-4");
        let c_len = {
            let mut one = Vec::new();
            record::encode(KIND_ENTRY, &entry_bytes(2, "c"), &mut one);
            one.len()
        };
        let cuts = [c_len, c_len + 7, second.len() - 3];
        let mut written = 0;
        for cut in cuts {
            append(&path, &second[written..cut]);
            written = cut;
            let (seen, polled) = names(&mut follower, Until::SignedHead);
            assert!(seen.is_empty(), "handed out {seen:?} at cut {cut}");
            assert!(polled.pending, "cut {cut}");
            assert_eq!(follower.offset(), first.len() as u64);
        }

        // Bytes already consumed are never read again: spoil the first
        // batch's entries in place (its head, which the follower checks,
        // stays) and the follower goes on from its offset all the same.
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[5] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        append(&path, &second[written..]);
        let (seen, polled) = names(&mut follower, Until::SignedHead);
        assert_eq!(seen, ["c", "d"]);
        assert!(!polled.pending && !polled.rewound);
        assert_eq!(follower.offset(), (first.len() + second.len()) as u64);
    }

    #[test]
    fn a_batch_cut_away_by_the_writer_is_read_again_from_its_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log.dat");
        let first = batch(0, &["a"], "head-1");
        let failed = batch(1, &["x", "y"], "head-3 (not durable)");
        std::fs::write(&path, [first.clone(), failed].concat()).expect("write");
        let mut follower = Follower::new(&path);
        assert_eq!(names(&mut follower, Until::SignedHead).0, ["a", "x", "y"]);
        // The fsync failed: the writer cuts the batch away and writes the
        // next one in its place, longer than before.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        file.set_len(first.len() as u64).expect("truncate");
        append(&path, &batch(1, &["p", "q", "r"], "head-4"));
        let (seen, polled) = names(&mut follower, Until::SignedHead);
        assert_eq!(seen, ["p", "q", "r"]);
        assert!(polled.rewound);
    }

    #[test]
    fn read_to_the_end_entries_without_their_head_count_too() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log.dat");
        let mut bytes = batch(0, &["a"], "head-1");
        record::encode(KIND_ENTRY, &entry_bytes(1, "b"), &mut bytes);
        bytes.extend_from_slice(&[KIND_ENTRY, 0, 0]); // a torn tail
        std::fs::write(&path, &bytes).expect("write");
        let mut seen = Vec::new();
        let count = for_each_entry(&path, |e| {
            seen.push(e.seq);
            Ok::<_, AuditError>(())
        })
        .expect("read");
        assert_eq!((count, seen), (2, vec![0, 1]));
        let mut follower = Follower::new(&path);
        assert_eq!(names(&mut follower, Until::SignedHead).0, ["a"]);
    }

    #[test]
    fn a_missing_log_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log.dat");
        let err = for_each_entry(&path, |_| Ok::<_, AuditError>(())).expect_err("no log");
        assert!(err.to_string().contains("log.dat"), "{err}");
    }
}
