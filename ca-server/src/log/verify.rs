//! `ca-server log verify`: read a log offline and check every record's
//! checksum, that entries are numbered without gaps, every signed tree head's
//! signature (with the log's public key) and root (recomputed from the
//! entries), and that heads only grow.

use super::record::{self, KIND_ENTRY};
use super::LogPaths;
use ca_proto::logentry::{LogDecision, LogEntry};
use ca_proto::merkle::{leaf_hash, CompactRange};
use ca_proto::sth::{LogPublicKey, SignedTreeHead};
use std::path::Path;

#[derive(Debug, Default)]
pub struct Report {
    pub entries: u64,
    pub issued: u64,
    pub denied: u64,
    pub heads: u64,
    pub root_hash: String,
    pub problems: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

pub fn verify(state_dir: &Path, log_id: &str) -> anyhow::Result<Report> {
    let paths = LogPaths::new(state_dir, log_id);
    let key_pem = std::fs::read_to_string(paths.public_key())
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", paths.public_key().display()))?;
    let key =
        LogPublicKey::from_pem(&key_pem).map_err(|e| anyhow::anyhow!("log public key: {e:?}"))?;
    let bytes = std::fs::read(paths.data())
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", paths.data().display()))?;
    Ok(verify_bytes(&bytes, log_id, &key))
}

pub fn verify_bytes(bytes: &[u8], log_id: &str, key: &LogPublicKey) -> Report {
    let scan = record::scan(bytes);
    let mut report = Report::default();
    if let Some(why) = scan.torn {
        report.problems.push(format!(
            "records end at byte {} of {}: {why} (the server cuts this tail on its next start)",
            scan.valid_len,
            bytes.len()
        ));
    }
    let mut range = CompactRange::new();
    // Root after every size, to check heads for earlier sizes too.
    let mut roots = vec![range.root()];
    let mut last_head: Option<SignedTreeHead> = None;
    for located in &scan.records {
        let payload = record::payload(bytes, located);
        if located.kind == KIND_ENTRY {
            match LogEntry::from_bytes(payload) {
                Ok(entry) => {
                    if entry.seq != range.size() {
                        report.problems.push(format!(
                            "entry at offset {} has seq {}, expected {}",
                            located.offset,
                            entry.seq,
                            range.size()
                        ));
                    }
                    match entry.decision {
                        LogDecision::Issued => report.issued += 1,
                        LogDecision::Denied => report.denied += 1,
                    }
                }
                Err(e) => report.problems.push(format!(
                    "entry at offset {} is not valid JSON: {e}",
                    located.offset
                )),
            }
            range.append(leaf_hash(payload));
            roots.push(range.root());
            continue;
        }
        report.heads += 1;
        let head: SignedTreeHead = match serde_json::from_slice(payload) {
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
        match roots.get(head.tree_size as usize) {
            Some(root) if hex::encode(root) == head.root_hash => {}
            Some(_) => report.problems.push(format!(
                "tree head at offset {} (size {}): root does not match the entries",
                located.offset, head.tree_size
            )),
            None => report.problems.push(format!(
                "tree head at offset {} claims size {} beyond the {} entries before it",
                located.offset,
                head.tree_size,
                range.size()
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
        last_head = Some(head);
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
    report
}
