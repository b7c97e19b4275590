//! Which certificates exist: an index from serial to the facts revocation
//! needs (class, issuer, notAfter, key), built from every replica's
//! issuance log in the state directory (`log/*/log.dat`) and kept current
//! by following them (`audit::follow::Follower`, committed batches only).
//! Derived data, like the Merkle node files: rebuilt at start.
//!
//! It answers "was this serial issued, by which class and intermediate" for
//! `revoke` (unknown serial, serial of another class) and OCSP (good versus
//! unknown). The facts live on disk, in [`SerialTable`] (sorted runs in
//! unnamed files in the state directory, `serials.rs`), so memory does not
//! grow with the number of certificates; certificates that expired more than a day ago
//! are dropped, so the file's size follows the number of live certificates
//! (about 100 bytes each). It also notes which revocations each log has
//! recorded (in memory: one per revocation, like the CRLs), so a replica
//! records each revocation in its own log exactly once.

use super::serials::{SerialTable, TableError};
use crate::audit::follow::{Follower, Until};
use crate::audit::AuditError;
use crate::state::StateDir;
use ca_proto::logentry::Outcome;
use std::collections::{BTreeMap, HashMap, HashSet};

pub use super::serials::Known;

/// How long after notAfter a certificate stays in the index.
const KEEP_AFTER_EXPIRY_SECS: i64 = 24 * 3600;

/// Why the index could not be read or updated.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Log(#[from] AuditError),
    #[error(transparent)]
    Table(#[from] TableError),
}

/// The index over every log of a state directory.
pub struct SerialIndex {
    state: StateDir,
    followers: BTreeMap<String, Follower>,
    /// Created at the first poll (so that an index nobody reads makes no
    /// file).
    table: Option<SerialTable>,
    /// Serials whose revocation each log has recorded, by log id.
    recorded: HashMap<String, HashSet<String>>,
    /// Entries read per log id.
    counts: HashMap<String, u64>,
    last_prune: i64,
}

impl SerialIndex {
    pub fn new(state: StateDir) -> SerialIndex {
        SerialIndex {
            state,
            followers: BTreeMap::new(),
            table: None,
            recorded: HashMap::new(),
            counts: HashMap::new(),
            last_prune: 0,
        }
    }

    /// Entries read so far from log `log_id`.
    pub fn entries_of(&self, log_id: &str) -> u64 {
        self.counts.get(log_id).copied().unwrap_or(0)
    }

    fn table(&mut self) -> Result<&mut SerialTable, TableError> {
        let table = match self.table.take() {
            Some(table) => table,
            None => SerialTable::create_in(self.state.root())?,
        };
        Ok(self.table.insert(table))
    }

    /// Read what log `log_id` gained since the last look (only that log).
    pub fn poll_log(&mut self, log_id: &str, now: i64) -> Result<u64, IndexError> {
        let Some(mut follower) = self.followers.remove(log_id) else {
            return self.poll(now);
        };
        let polled = self.follow(log_id, &mut follower);
        self.followers.insert(log_id.to_string(), follower);
        polled
    }

    /// Read one log's new committed entries into the table.
    fn follow(&mut self, log_id: &str, follower: &mut Follower) -> Result<u64, IndexError> {
        self.table()?;
        let polled = follower.poll(Until::SignedHead, |entry| -> Result<(), IndexError> {
            self.add(log_id, entry)
        })?;
        Ok(polled.entries)
    }

    /// Read what every log gained since the last call (and any new log).
    /// A log that cannot be read is reported and skipped (the others are
    /// still read); the error of the first such log is returned.
    pub fn poll(&mut self, now: i64) -> Result<u64, IndexError> {
        let logs_dir = self.state.root().join("log");
        if let Ok(dir) = std::fs::read_dir(&logs_dir) {
            for entry in dir.flatten() {
                let data = entry.path().join("log.dat");
                let id = entry.file_name().to_string_lossy().into_owned();
                if data.is_file() && !self.followers.contains_key(&id) {
                    self.followers.insert(id, Follower::new(data));
                }
            }
        }
        let mut seen = 0;
        let mut first_error = None;
        let ids: Vec<String> = self.followers.keys().cloned().collect();
        for id in ids {
            let Some(mut follower) = self.followers.remove(&id) else {
                continue;
            };
            let polled = self.follow(&id, &mut follower);
            self.followers.insert(id.clone(), follower);
            match polled {
                Ok(n) => seen += n,
                Err(e) => {
                    tracing::warn!(event = "serial_index_read_failed", log_id = %id, "{e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        if now - self.last_prune > 3600 {
            if let Err(e) = self.prune(now) {
                tracing::warn!(event = "serial_index_prune_failed", "{e}");
                first_error.get_or_insert(e.into());
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(seen),
        }
    }

    fn add(&mut self, log_id: &str, entry: ca_proto::logentry::LogEntry) -> Result<(), IndexError> {
        match self.counts.get_mut(log_id) {
            Some(n) => *n += 1,
            None => {
                self.counts.insert(log_id.to_string(), 1);
            }
        }
        match &entry.outcome {
            Outcome::Issued(i) => {
                let (Ok(serial), Ok(spki)) = (hex::decode(&i.serial), hex::decode(&i.spki_sha256))
                else {
                    return Ok(());
                };
                let Ok(spki_sha256) = <[u8; 32]>::try_from(spki.as_slice()) else {
                    return Ok(());
                };
                let known = Known {
                    class: entry.class.as_str().into(),
                    issuer: i.issuer.as_str().into(),
                    profile: entry.profile.as_str().into(),
                    not_after: i.not_after.unix_timestamp(),
                    spki_sha256,
                };
                self.table()?.insert(&serial, &known)?;
            }
            Outcome::Revoked(r) => {
                self.recorded
                    .entry(log_id.to_string())
                    .or_default()
                    .insert(r.serial.clone());
            }
            Outcome::Denied(_) => {}
        }
        Ok(())
    }

    fn prune(&mut self, now: i64) -> Result<(), TableError> {
        self.last_prune = now;
        if let Some(table) = &mut self.table {
            table.prune_before(now - KEEP_AFTER_EXPIRY_SECS)?;
        }
        Ok(())
    }

    /// The certificate with this serial (lowercase or uppercase hex). A
    /// table that cannot be read is reported and answers "not known".
    pub fn get(&self, serial_hex: &str) -> Option<Known> {
        self.get_bytes(&hex::decode(serial_hex).ok()?)
    }

    /// The certificate with this serial (big-endian bytes).
    pub fn get_bytes(&self, serial: &[u8]) -> Option<Known> {
        match self.table.as_ref()?.get(serial) {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(event = "serial_index_read_failed", "{e}");
                None
            }
        }
    }

    /// Every live certificate of `class` whose key has this SPKI hash,
    /// sorted by serial (hex).
    pub fn by_key(
        &self,
        class: &str,
        spki_sha256: &[u8; 32],
    ) -> Result<Vec<(String, Known)>, IndexError> {
        let Some(table) = &self.table else {
            return Ok(Vec::new());
        };
        let mut found: Vec<(String, Known)> = table
            .by_key(class, spki_sha256)?
            .into_iter()
            .map(|(s, k)| (hex::encode(s), k))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    /// Whether log `log_id` has recorded the revocation of `serial`.
    pub fn recorded(&self, log_id: &str, serial: &str) -> bool {
        self.recorded
            .get(log_id)
            .is_some_and(|set| set.contains(serial))
    }

    /// Note that log `log_id` recorded the revocation of `serial` (before
    /// its follower reads it back).
    pub fn note_recorded(&mut self, log_id: &str, serial: &str) {
        self.recorded
            .entry(log_id.to_string())
            .or_default()
            .insert(serial.to_string());
    }

    /// Certificates indexed.
    pub fn len(&self) -> u64 {
        self.table.as_ref().map_or(0, SerialTable::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
