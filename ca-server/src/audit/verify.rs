//! `ca-server log verify`: read a log offline and check every record's
//! checksum, that entries are numbered without gaps, every signed tree
//! head's signature (with the log's public key) and root (recomputed from
//! the entries), and that heads only grow. Streams the file: memory holds
//! one record, the compact Merkle range and the roots since the last head.

use super::{log_paths, AuditError};
use crate::log::record::{self, Next, KIND_ENTRY};
use crate::state::StateDir;
use ca_proto::logentry::{LogDecision, LogEntry};
use ca_proto::merkle::{leaf_hash, CompactRange, Hash};
use ca_proto::sth::{LogPublicKey, SignedTreeHead};
use std::collections::VecDeque;
use std::path::Path;

/// Roots kept for heads of earlier sizes than the tree read so far. The
/// writer signs a head after every batch (at most 4096 entries), for the
/// whole tree; more roots than this are needed only by a log without
/// heads for that long, which is reported anyway.
const MAX_ROOTS: usize = 1 << 16;

#[derive(Debug, Default)]
pub struct Report {
    pub entries: u64,
    pub issued: u64,
    pub denied: u64,
    pub revoked: u64,
    pub heads: u64,
    pub root_hash: String,
    pub problems: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verify log `log_id` of the state directory `state_dir`.
pub fn verify(state_dir: &Path, log_id: &str) -> Result<Report, AuditError> {
    let paths = log_paths(&StateDir::new(state_dir), log_id);
    let key_path = paths.public_key();
    let key_pem = std::fs::read_to_string(&key_path).map_err(|source| AuditError::Io {
        path: key_path.clone(),
        source,
    })?;
    let key = LogPublicKey::from_pem(&key_pem).map_err(|source| AuditError::Key {
        path: key_path.clone(),
        source,
    })?;
    let data = paths.data();
    let io = |source| AuditError::Io {
        path: data.clone(),
        source,
    };
    let file_len = std::fs::metadata(&data).map_err(io)?.len();
    let reader = record::open_at(&data, 0).map_err(io)?;
    verify_records(reader, file_len, log_id, &key).map_err(io)
}

/// Verify a whole log held in memory.
pub fn verify_bytes(bytes: &[u8], log_id: &str, key: &LogPublicKey) -> Report {
    let reader = record::Reader::new(bytes, 0);
    verify_records(reader, bytes.len() as u64, log_id, key).unwrap_or_else(|e| Report {
        problems: vec![format!("reading: {e}")],
        ..Report::default()
    })
}

/// Verify the records of a log file of `file_len` bytes, read from its
/// start.
pub fn verify_records<R: std::io::Read>(
    mut reader: record::Reader<R>,
    file_len: u64,
    log_id: &str,
    key: &LogPublicKey,
) -> std::io::Result<Report> {
    let mut report = Report::default();
    let mut range = CompactRange::new();
    let mut roots = Roots::new(range.root());
    let mut last_head: Option<SignedTreeHead> = None;
    let torn = loop {
        let located = match reader.next_record()? {
            Next::Record(r) => r,
            Next::End => break None,
            Next::Torn(why) => break Some(why),
        };
        if located.kind == KIND_ENTRY {
            match LogEntry::from_bytes(located.payload) {
                Ok(entry) => {
                    if entry.seq != range.size() {
                        report.problems.push(format!(
                            "entry at offset {} has seq {}, expected {}",
                            located.offset,
                            entry.seq,
                            range.size()
                        ));
                    }
                    match entry.decision() {
                        LogDecision::Issued => report.issued += 1,
                        LogDecision::Denied => report.denied += 1,
                        LogDecision::Revoked => report.revoked += 1,
                    }
                }
                Err(e) => report.problems.push(format!(
                    "entry at offset {} is not valid JSON: {e}",
                    located.offset
                )),
            }
            range.append(leaf_hash(located.payload));
            roots.push(range.root());
            continue;
        }
        report.heads += 1;
        let head: SignedTreeHead = match serde_json::from_slice(located.payload) {
            Ok(h) => h,
            Err(e) => {
                report
                    .problems
                    .push(format!("tree head at offset {}: {e}", located.offset));
                continue;
            }
        };
        if head.log_id != log_id {
            report.problems.push(format!(
                "tree head at offset {} names log '{}'",
                located.offset, head.log_id
            ));
        }
        if head.verify(key).is_err() {
            report.problems.push(format!(
                "tree head at offset {} (size {}): bad signature",
                located.offset, head.tree_size
            ));
        }
        match roots.at(head.tree_size) {
            Root::Known(root) if hex::encode(root) == head.root_hash => {}
            Root::Known(_) => report.problems.push(format!(
                "tree head at offset {} (size {}): root does not match the entries",
                located.offset, head.tree_size
            )),
            Root::Beyond => report.problems.push(format!(
                "tree head at offset {} claims size {} beyond the {} entries before it",
                located.offset,
                head.tree_size,
                range.size()
            )),
            // A head for a size before the last head's: "goes backwards" below.
            Root::Forgotten
                if last_head
                    .as_ref()
                    .is_some_and(|prev| head.tree_size < prev.tree_size) => {}
            Root::Forgotten => report.problems.push(format!(
                "tree head at offset {} (size {}): root not checked, more than {MAX_ROOTS} entries before it without a head",
                located.offset, head.tree_size
            )),
        }
        if let Some(prev) = &last_head {
            if head.tree_size < prev.tree_size || head.timestamp_ms < prev.timestamp_ms {
                report.problems.push(format!(
                    "tree head at offset {} goes backwards (size {} after {})",
                    located.offset, head.tree_size, prev.tree_size
                ));
            }
        }
        // Heads only grow: earlier roots are needed no more.
        roots.forget_before(head.tree_size);
        last_head = Some(head);
    };
    if let Some(why) = torn {
        report.problems.insert(
            0,
            format!(
                "records end at byte {} of {file_len}: {why} (the server cuts this tail on its next start)",
                reader.offset()
            ),
        );
    }
    report.entries = range.size();
    report.root_hash = hex::encode(range.root());
    match &last_head {
        Some(h) if h.tree_size == range.size() => {}
        Some(h) => report.problems.push(format!(
            "the last signed head covers {} of {} entries",
            h.tree_size,
            range.size()
        )),
        None if range.size() > 0 => report.problems.push("no signed tree head".into()),
        None => {}
    }
    Ok(report)
}

/// The tree's root after each size from `first` to the current size.
struct Roots {
    first: u64,
    roots: VecDeque<Hash>,
}

enum Root {
    Known(Hash),
    /// Larger than the tree read so far.
    Beyond,
    /// Dropped (older than the last head, or past [`MAX_ROOTS`]).
    Forgotten,
}

impl Roots {
    fn new(empty_root: Hash) -> Roots {
        Roots {
            first: 0,
            roots: VecDeque::from([empty_root]),
        }
    }

    fn push(&mut self, root: Hash) {
        self.roots.push_back(root);
        if self.roots.len() > MAX_ROOTS {
            self.roots.pop_front();
            self.first += 1;
        }
    }

    fn at(&self, size: u64) -> Root {
        if size < self.first {
            return Root::Forgotten;
        }
        usize::try_from(size - self.first)
            .ok()
            .and_then(|i| self.roots.get(i))
            .map_or(Root::Beyond, |root| Root::Known(*root))
    }

    fn forget_before(&mut self, size: u64) {
        while self.first < size && self.roots.len() > 1 {
            self.roots.pop_front();
            self.first += 1;
        }
    }
}
