//! The in-memory index over one log's entries: per entry a 32-byte [`Row`]
//! (where its record is in `log.dat`, time, notAfter, decision, class,
//! profile and auth key as interned ids, where its names start), and
//! postings from each searchable key to entry numbers:
//! - names (DNS/IP/URI SANs and the common name, [`super::names`]) by
//!   name id, serials and SPKI hashes by a 64-bit key ([`Postings`]);
//! - one ascending list of entry numbers per auth key and per (class,
//!   decision);
//! - issued, unrevoked certificates by notAfter (`expiring`), pruned of
//!   the expired ones.
//!
//! Entries must come in order (`seq` = [`Index::len`]); a batch the
//! writer cut away and wrote again is handled by [`Index::truncate`]. An
//! index may start at an entry other than 0 ([`Index::starting_at`]: the
//! inventory's window over the newest entries, `mod.rs`); postings and
//! lists hold entry numbers, and an entry number below the start has no
//! row, so searches skip it.

use super::names::{self, NameTable};
use super::postings::Postings;
use super::InventoryError;
use ca_proto::logentry::{LogDecision, LogEntry, Outcome};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Names indexed per entry at most (a denial records what was asked for,
/// which may be many names); the entry itself keeps them all.
pub const MAX_NAMES_PER_ENTRY: usize = 256;

/// What the index keeps of one entry (32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// File offset of the entry's record in `log.dat`.
    pub offset: u64,
    /// Decision time, Unix seconds (clamped to `u32`).
    pub time: u32,
    /// Issued and revoked entries: the certificate's notAfter, Unix
    /// seconds; 0 for denials.
    pub not_after: u32,
    pub key: u32,
    /// Index of the entry's first name id in the flat name-id list.
    pub names_start: u32,
    pub class: u16,
    pub profile: u16,
    pub decision: LogDecision,
}

/// Distinct strings with dense ids (classes, profiles, auth keys).
#[derive(Default)]
pub struct Interner {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl Interner {
    fn intern(&mut self, s: &str, max: u32) -> Option<u32> {
        if let Some(id) = self.ids.get(s) {
            return Some(*id);
        }
        let id = u32::try_from(self.names.len())
            .ok()
            .filter(|id| *id < max)?;
        let shared: Arc<str> = Arc::from(s);
        self.ids.insert(shared.clone(), id);
        self.names.push(shared);
        Some(id)
    }

    pub fn id(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    pub fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |n| &**n)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn heap_bytes(&self) -> usize {
        self.names.iter().map(|n| n.len() + 16 + 40).sum()
    }
}

/// The 64-bit posting key of a serial number (hex, any case, colons and a
/// `0x` prefix allowed; leading zeros do not count). `None` when it is not
/// hex.
pub fn serial_key(serial: &str) -> Option<u64> {
    let canonical = canonical_serial(serial)?;
    let digest = Sha256::digest(canonical.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    Some(u64::from_be_bytes(first))
}

/// A serial as lowercase hex without separators or leading zeros.
pub fn canonical_serial(serial: &str) -> Option<String> {
    let s = serial.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.is_empty() || hex.len() > 128 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let trimmed = hex.trim_start_matches('0').to_ascii_lowercase();
    Some(if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed
    })
}

/// The 64-bit posting key of an SPKI SHA-256 (64 hex digits, any case,
/// colons allowed): its first 8 bytes. `None` when it is not one.
pub fn spki_key(spki: &str) -> Option<u64> {
    let hex = canonical_spki(spki)?;
    u64::from_str_radix(&hex[..16], 16).ok()
}

/// An SPKI SHA-256 as 64 lowercase hex digits.
pub fn canonical_spki(spki: &str) -> Option<String> {
    let hex: String = spki.trim().chars().filter(|c| *c != ':').collect();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

fn clamp_secs(secs: i64) -> u32 {
    u32::try_from(secs.max(0)).unwrap_or(u32::MAX)
}

/// The decisions, in list order.
pub const DECISIONS: [LogDecision; 3] = [
    LogDecision::Issued,
    LogDecision::Denied,
    LogDecision::Revoked,
];

pub fn decision_index(d: LogDecision) -> usize {
    match d {
        LogDecision::Issued => 0,
        LogDecision::Denied => 1,
        LogDecision::Revoked => 2,
    }
}

#[derive(Default)]
pub struct Index {
    /// The entry number of `rows[0]`.
    pub(super) base: u64,
    pub(super) rows: Vec<Row>,
    pub(super) name_ids: Vec<u32>,
    pub(super) names: NameTable,
    pub(super) by_name: Postings,
    pub(super) by_serial: Postings,
    pub(super) by_spki: Postings,
    pub(super) classes: Interner,
    pub(super) profiles: Interner,
    pub(super) keys: Interner,
    /// Per auth key id: its entries, ascending.
    pub(super) by_key: Vec<Vec<u64>>,
    /// Per class id, per decision: the entries, ascending.
    pub(super) by_class: Vec<[Vec<u64>; 3]>,
    /// (notAfter, seq) of issued certificates not revoked and not expired
    /// at the last prune.
    pub(super) expiring: BTreeSet<(u32, u64)>,
}

impl Index {
    /// An empty index whose first entry will be number `base`.
    pub fn starting_at(base: u64) -> Index {
        Index {
            base,
            ..Index::default()
        }
    }

    /// Entries read so far: the next entry must be this one.
    pub fn len(&self) -> u64 {
        self.base + self.rows.len() as u64
    }

    /// The first entry held (entries before it are not indexed).
    pub fn first(&self) -> u64 {
        self.base
    }

    /// Entries held.
    pub fn held(&self) -> u64 {
        self.rows.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn slot(&self, seq: u64) -> Option<usize> {
        seq.checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < self.rows.len())
    }

    pub fn row(&self, seq: u64) -> Option<&Row> {
        self.slot(seq).map(|i| &self.rows[i])
    }

    /// Name ids of entry `seq`.
    pub fn names_of(&self, seq: u64) -> &[u32] {
        let Some(i) = self.slot(seq) else {
            return &[];
        };
        let start = self.rows[i].names_start as usize;
        let end = self
            .rows
            .get(i + 1)
            .map_or(self.name_ids.len(), |r| r.names_start as usize);
        self.name_ids.get(start..end).unwrap_or_default()
    }

    pub fn class_name(&self, id: u16) -> &str {
        self.classes.name(u32::from(id))
    }

    pub fn key_name(&self, id: u32) -> &str {
        self.keys.name(id)
    }

    /// Every class seen, by name.
    pub fn class_names(&self) -> Vec<String> {
        let mut names: Vec<String> = (0..self.classes.len() as u32)
            .map(|i| self.classes.name(i).to_string())
            .collect();
        names.sort();
        names
    }

    /// Add the entry whose record starts at `offset`. It must be entry
    /// number [`len`](Self::len).
    pub fn add(&mut self, offset: u64, entry: &LogEntry) -> Result<(), InventoryError> {
        let seq = entry.seq;
        if seq != self.len() {
            return Err(InventoryError::OutOfOrder {
                seq,
                expected: self.len(),
            });
        }
        let full = |what| InventoryError::Full(what);
        let class = self
            .classes
            .intern(&entry.class, u32::from(u16::MAX))
            .ok_or(full("classes"))?;
        let profile = self
            .profiles
            .intern(&entry.profile, u32::from(u16::MAX))
            .ok_or(full("profiles"))?;
        let key = self
            .keys
            .intern(&entry.key_id, u32::MAX)
            .ok_or(full("auth keys"))?;
        let names_start = u32::try_from(self.name_ids.len()).map_err(|_| full("names"))?;
        let decision = entry.decision();
        let not_after = match &entry.outcome {
            Outcome::Issued(i) => clamp_secs(i.not_after.unix_timestamp()),
            Outcome::Revoked(r) => clamp_secs(r.not_after.unix_timestamp()),
            Outcome::Denied(_) => 0,
        };
        // Names: SANs, then the common name, each once.
        let mut keys: Vec<String> = entry
            .dns()
            .iter()
            .chain(entry.ips())
            .chain(entry.uris())
            .map(String::as_str)
            .chain(entry.subject())
            .filter_map(names::key)
            .collect();
        keys.sort();
        keys.dedup();
        keys.truncate(MAX_NAMES_PER_ENTRY);
        for k in &keys {
            let id = self.names.intern(k).ok_or(full("names"))?;
            self.name_ids.push(id);
            self.by_name.add(u64::from(id), seq);
        }
        if let Some(serial) = entry.serial().and_then(serial_key) {
            self.by_serial.add(serial, seq);
        }
        let spki = match &entry.outcome {
            Outcome::Issued(i) => Some(i.spki_sha256.as_str()),
            Outcome::Revoked(r) => Some(r.spki_sha256.as_str()),
            Outcome::Denied(_) => None,
        };
        if let Some(spki) = spki.and_then(spki_key) {
            self.by_spki.add(spki, seq);
        }
        let key_lists = &mut self.by_key;
        if key_lists.len() <= key as usize {
            key_lists.resize_with(key as usize + 1, Vec::new);
        }
        key_lists[key as usize].push(seq);
        if self.by_class.len() <= class as usize {
            self.by_class
                .resize_with(class as usize + 1, Default::default);
        }
        self.by_class[class as usize][decision_index(decision)].push(seq);
        match &entry.outcome {
            Outcome::Issued(_) => {
                self.expiring.insert((not_after, seq));
            }
            Outcome::Revoked(r) => {
                // The certificate is no longer "expiring": it is revoked.
                if let Some(serial) = serial_key(&r.serial) {
                    let issued: Vec<u64> = self
                        .by_serial
                        .newest_first(serial, seq)
                        .filter(|s| {
                            self.row(*s)
                                .is_some_and(|row| row.decision == LogDecision::Issued)
                        })
                        .collect();
                    for s in issued {
                        if let Some(row) = self.row(s) {
                            self.expiring.remove(&(row.not_after, s));
                        }
                    }
                }
            }
            Outcome::Denied(_) => {}
        }
        self.rows.push(Row {
            offset,
            time: clamp_secs(entry.time.unix_timestamp()),
            not_after,
            key,
            names_start,
            class: u16::try_from(class).map_err(|_| full("classes"))?,
            profile: u16::try_from(profile).map_err(|_| full("profiles"))?,
            decision,
        });
        Ok(())
    }

    /// Forget entries `from` and later (a batch the writer cut away is read
    /// again). Interned names stay (harmless: they just match nothing).
    pub fn truncate(&mut self, from: u64) {
        if from <= self.base {
            // Everything held goes; the index starts again at `from`.
            self.name_ids.clear();
            self.rows.clear();
            self.base = from;
        } else {
            let Some(start) = self.slot(from) else {
                return;
            };
            self.name_ids
                .truncate(self.rows[start].names_start as usize);
            self.rows.truncate(start);
        }
        self.by_name.truncate(from);
        self.by_serial.truncate(from);
        self.by_spki.truncate(from);
        for list in &mut self.by_key {
            let keep = list.partition_point(|s| *s < from);
            list.truncate(keep);
        }
        for lists in &mut self.by_class {
            for list in lists.iter_mut() {
                let keep = list.partition_point(|s| *s < from);
                list.truncate(keep);
            }
        }
        self.rebuild_expiring();
    }

    /// The expiry set from scratch: every issued certificate whose serial
    /// has no revocation entry (after a truncation, which may have cut a
    /// revocation away). O(entries), and only after a cut batch.
    fn rebuild_expiring(&mut self) {
        let all = self.by_serial.all();
        self.expiring.clear();
        for group in all.chunk_by(|a, b| a.0 == b.0) {
            let rows = || {
                group
                    .iter()
                    .filter_map(|(_, s)| self.row(*s).map(|r| (*s, r)))
            };
            if rows().any(|(_, r)| r.decision == LogDecision::Revoked) {
                continue;
            }
            let issued: Vec<(u32, u64)> = rows()
                .filter(|(_, r)| r.decision == LogDecision::Issued)
                .map(|(s, r)| (r.not_after, s))
                .collect();
            self.expiring.extend(issued);
        }
    }

    /// Whether a serial (posting key) has a revocation entry.
    pub fn revoked(&self, serial: u64) -> bool {
        self.by_serial.newest_first(serial, u64::MAX).any(|s| {
            self.row(s)
                .is_some_and(|r| r.decision == LogDecision::Revoked)
        })
    }

    /// Drop certificates that expired before `now` from the expiry set.
    pub fn prune_expired(&mut self, now: i64) {
        let now = clamp_secs(now);
        self.expiring = self.expiring.split_off(&(now, 0));
    }

    /// Heap bytes held, estimated from capacities (the bench measures the
    /// allocator's figure).
    pub fn heap_bytes(&self) -> usize {
        let lists: usize = self
            .by_key
            .iter()
            .map(|l| l.capacity() * 8 + 24)
            .sum::<usize>()
            + self
                .by_class
                .iter()
                .flat_map(|ls| ls.iter())
                .map(|l| l.capacity() * 8 + 24)
                .sum::<usize>();
        self.rows.capacity() * std::mem::size_of::<Row>()
            + self.name_ids.capacity() * 4
            + self.names.heap_bytes()
            + self.by_name.heap_bytes()
            + self.by_serial.heap_bytes()
            + self.by_spki.heap_bytes()
            + self.classes.heap_bytes()
            + self.profiles.heap_bytes()
            + self.keys.heap_bytes()
            + lists
            + self.expiring.len() * 24
    }

    /// Give back spare capacity (after the first build).
    pub fn shrink(&mut self) {
        self.rows.shrink_to_fit();
        self.name_ids.shrink_to_fit();
        for l in &mut self.by_key {
            l.shrink_to_fit();
        }
        for ls in &mut self.by_class {
            for l in ls.iter_mut() {
                l.shrink_to_fit();
            }
        }
    }
}
