//! Which certificates exist: an in-memory index from serial to the facts
//! revocation needs (class, issuer, notAfter, key), built from every
//! replica's issuance log in the state directory (`log/*/log.dat`) and
//! kept current by following them (`audit::follow::Follower`, committed
//! batches only). Derived data, like the Merkle node files: rebuilt at
//! start, never written anywhere.
//!
//! It answers "was this serial issued, by which class and intermediate" for
//! `revoke` (unknown serial, serial of another class) and OCSP (good versus
//! unknown). Certificates that expired more than a day ago are dropped, so
//! its size follows the number of live certificates (about 80 bytes each).
//! It also notes which revocations each log has recorded, so a replica
//! records each revocation in its own log exactly once.

use crate::audit::follow::{Follower, Until};
use crate::audit::AuditError;
use crate::state::StateDir;
use ca_proto::logentry::Outcome;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// How long after notAfter a certificate stays in the index.
const KEEP_AFTER_EXPIRY_SECS: i64 = 24 * 3600;

/// What the index knows of one issued certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    pub class: Arc<str>,
    /// SHA-256 fingerprint of the issuing intermediate, hex.
    pub issuer: Arc<str>,
    /// Unix seconds.
    pub not_after: i64,
    pub spki_sha256: [u8; 32],
    pub profile: Arc<str>,
}

/// The index over every log of a state directory.
pub struct SerialIndex {
    state: StateDir,
    followers: BTreeMap<String, Follower>,
    by_serial: HashMap<Vec<u8>, Known>,
    /// Serials whose revocation each log has recorded, by log id.
    recorded: HashMap<String, HashSet<String>>,
    /// Entries read per log id.
    counts: HashMap<String, u64>,
    /// Interned class, issuer and profile strings.
    names: HashSet<Arc<str>>,
    last_prune: i64,
}

impl SerialIndex {
    pub fn new(state: StateDir) -> SerialIndex {
        SerialIndex {
            state,
            followers: BTreeMap::new(),
            by_serial: HashMap::new(),
            recorded: HashMap::new(),
            counts: HashMap::new(),
            names: HashSet::new(),
            last_prune: 0,
        }
    }

    /// Entries read so far from log `log_id`.
    pub fn entries_of(&self, log_id: &str) -> u64 {
        self.counts.get(log_id).copied().unwrap_or(0)
    }

    /// Read what log `log_id` gained since the last look (only that log).
    pub fn poll_log(&mut self, log_id: &str, now: i64) -> Result<u64, AuditError> {
        let _ = now;
        let Some(mut follower) = self.followers.remove(log_id) else {
            return self.poll(now);
        };
        let polled = follower.poll(Until::SignedHead, |entry| -> Result<(), AuditError> {
            self.add(log_id, entry);
            Ok(())
        });
        self.followers.insert(log_id.to_string(), follower);
        polled.map(|p| p.entries)
    }

    /// Read what every log gained since the last call (and any new log).
    /// A log that cannot be read is reported and skipped (the others are
    /// still read); the error of the first such log is returned.
    pub fn poll(&mut self, now: i64) -> Result<u64, AuditError> {
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
            let polled = follower.poll(Until::SignedHead, |entry| -> Result<(), AuditError> {
                self.add(&id, entry);
                Ok(())
            });
            self.followers.insert(id.clone(), follower);
            match polled {
                Ok(p) => seen += p.entries,
                Err(e) => {
                    tracing::warn!(event = "serial_index_read_failed", log_id = %id, "{e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        if now - self.last_prune > 3600 {
            self.prune(now);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(seen),
        }
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.names.get(s) {
            return found.clone();
        }
        let new: Arc<str> = Arc::from(s);
        self.names.insert(new.clone());
        new
    }

    fn add(&mut self, log_id: &str, entry: ca_proto::logentry::LogEntry) {
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
                    return;
                };
                let Ok(spki_sha256) = <[u8; 32]>::try_from(spki.as_slice()) else {
                    return;
                };
                let not_after = i.not_after.clone();
                let known = Known {
                    class: self.intern(&entry.class),
                    issuer: self.intern(&i.issuer),
                    profile: self.intern(&entry.profile),
                    not_after: not_after.unix_timestamp(),
                    spki_sha256,
                };
                self.by_serial.insert(serial, known);
            }
            Outcome::Revoked(r) => {
                self.recorded
                    .entry(log_id.to_string())
                    .or_default()
                    .insert(r.serial.clone());
            }
            Outcome::Denied(_) => {}
        }
    }

    fn prune(&mut self, now: i64) {
        self.by_serial
            .retain(|_, k| k.not_after + KEEP_AFTER_EXPIRY_SECS > now);
        self.last_prune = now;
    }

    /// The certificate with this serial (lowercase or uppercase hex).
    pub fn get(&self, serial_hex: &str) -> Option<&Known> {
        self.by_serial.get(&hex::decode(serial_hex).ok()?)
    }

    /// The certificate with this serial (big-endian bytes).
    pub fn get_bytes(&self, serial: &[u8]) -> Option<&Known> {
        self.by_serial.get(serial)
    }

    /// Every live certificate of `class` whose key has this SPKI hash.
    pub fn by_key(&self, class: &str, spki_sha256: &[u8; 32]) -> Vec<(String, Known)> {
        let mut found: Vec<(String, Known)> = self
            .by_serial
            .iter()
            .filter(|(_, k)| &*k.class == class && &k.spki_sha256 == spki_sha256)
            .map(|(s, k)| (hex::encode(s), k.clone()))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
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
    pub fn len(&self) -> usize {
        self.by_serial.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_serial.is_empty()
    }
}
