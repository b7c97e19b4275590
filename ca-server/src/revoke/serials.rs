//! The serial index's table: serial → what revocation needs of the
//! certificate ([`Fact`]), kept on disk, so that the server's memory does
//! not grow with the number of live certificates (a soak at 2,000
//! certificates a second grew an in-memory map by ~150 bytes an entry).
//!
//! The table is a redb database in a file without a name (`O_TMPFILE` in
//! the state directory, made by `tempfile`): derived data, private to this
//! process (mode 0600, nothing another process can open), gone when the
//! process ends, whatever way it ends. Commits are not synced (the data is
//! rebuilt from the logs at every start) except one every
//! [`DURABLE_EVERY`], which lets redb reuse the pages that pruning and
//! overwrites freed. redb's page cache is [`CACHE_BYTES`]; the rest is the
//! kernel's page cache, which is not this process's memory.
//!
//! Two tables: `serials` (serial bytes → 52-byte fact) and `expiry`
//! (notAfter, serial → ()), so that dropping expired certificates reads
//! only those.

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SERIALS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("serials");
const EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("expiry");

/// redb's own page cache.
pub const CACHE_BYTES: usize = 4 << 20;
/// Facts buffered before they are written in one transaction.
pub const FLUSH_EVERY: usize = 4096;
/// At most this long between synced commits (see the module header).
pub const DURABLE_EVERY: Duration = Duration::from_secs(10);
/// Longest serial kept (RFC 5280: at most 20 octets).
pub const MAX_SERIAL: usize = 20;

/// What went wrong with the table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("creating the serial index's file in {dir}: {source}")]
    Create {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the serial index's table: {0}")]
    Db(#[from] redb::Error),
    #[error("the serial index holds as many distinct {0} as it can number")]
    Full(&'static str),
}

fn db_error(e: impl Into<redb::Error>) -> TableError {
    TableError::Db(e.into())
}

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

/// A [`Known`] as stored: names as ids into the [`Names`] table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fact {
    class: u32,
    issuer: u32,
    profile: u32,
    not_after: i64,
    spki_sha256: [u8; 32],
}

const FACT_LEN: usize = 52;

impl Fact {
    fn encode(&self) -> [u8; FACT_LEN] {
        let mut out = [0u8; FACT_LEN];
        out[0..4].copy_from_slice(&self.class.to_be_bytes());
        out[4..8].copy_from_slice(&self.issuer.to_be_bytes());
        out[8..12].copy_from_slice(&self.profile.to_be_bytes());
        out[12..20].copy_from_slice(&self.not_after.to_be_bytes());
        out[20..52].copy_from_slice(&self.spki_sha256);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Fact> {
        let bytes: &[u8; FACT_LEN] = bytes.try_into().ok()?;
        let u32_at =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let mut not_after = [0u8; 8];
        not_after.copy_from_slice(&bytes[12..20]);
        let mut spki_sha256 = [0u8; 32];
        spki_sha256.copy_from_slice(&bytes[20..52]);
        Some(Fact {
            class: u32_at(0),
            issuer: u32_at(4),
            profile: u32_at(8),
            not_after: i64::from_be_bytes(not_after),
            spki_sha256,
        })
    }
}

/// `expiry` key: notAfter in an order-preserving encoding, then the serial.
fn expiry_key(not_after: i64, serial: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + serial.len());
    key.extend_from_slice(&((not_after as u64) ^ (1 << 63)).to_be_bytes());
    key.extend_from_slice(serial);
    key
}

/// Class, issuer and profile strings, each once, with dense ids. They come
/// from the logs' entries: a handful of classes and profiles, and an
/// issuer per intermediate ever used.
#[derive(Default)]
struct Names {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl Names {
    fn id(&mut self, s: &str) -> Result<u32, TableError> {
        if let Some(id) = self.ids.get(s) {
            return Ok(*id);
        }
        let id = u32::try_from(self.names.len()).map_err(|_| TableError::Full("names"))?;
        let shared: Arc<str> = Arc::from(s);
        self.ids.insert(shared.clone(), id);
        self.names.push(shared);
        Ok(id)
    }

    fn name(&self, id: u32) -> Arc<str> {
        self.names
            .get(id as usize)
            .cloned()
            .unwrap_or_else(|| Arc::from(""))
    }
}

/// The on-disk table of issued certificates (see the module header).
pub struct SerialTable {
    db: Database,
    names: Names,
    pending: Vec<(Vec<u8>, Fact)>,
    last_durable: Instant,
    len: u64,
}

impl SerialTable {
    /// A new, empty table in an unnamed file in `dir`.
    pub fn create_in(dir: &Path) -> Result<SerialTable, TableError> {
        let file = tempfile::tempfile_in(dir).map_err(|source| TableError::Create {
            dir: dir.display().to_string(),
            source,
        })?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(redb::backends::FileBackend::new(file))
            .map_err(db_error)?;
        let txn = db.begin_write().map_err(db_error)?;
        txn.open_table(SERIALS).map_err(db_error)?;
        txn.open_table(EXPIRY).map_err(db_error)?;
        txn.commit().map_err(db_error)?;
        Ok(SerialTable {
            db,
            names: Names::default(),
            pending: Vec::new(),
            last_durable: Instant::now(),
            len: 0,
        })
    }

    /// Note an issued certificate (written at the next [`flush`](Self::flush),
    /// or once [`FLUSH_EVERY`] are waiting). A later fact for the same
    /// serial replaces the earlier one. Serials longer than
    /// [`MAX_SERIAL`] octets are not kept.
    pub fn insert(&mut self, serial: &[u8], known: &Known) -> Result<(), TableError> {
        if serial.is_empty() || serial.len() > MAX_SERIAL {
            return Ok(());
        }
        let fact = Fact {
            class: self.names.id(&known.class)?,
            issuer: self.names.id(&known.issuer)?,
            profile: self.names.id(&known.profile)?,
            not_after: known.not_after,
            spki_sha256: known.spki_sha256,
        };
        self.pending.push((serial.to_vec(), fact));
        if self.pending.len() >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    /// Write what [`insert`](Self::insert) buffered, in one transaction.
    pub fn flush(&mut self) -> Result<(), TableError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let mut added = 0u64;
        self.write(|serials, expiry| {
            for (serial, fact) in &pending {
                let old = serials
                    .insert(serial.as_slice(), fact.encode().as_slice())?
                    .and_then(|g| Fact::decode(g.value()));
                match old {
                    Some(old) if old.not_after != fact.not_after => {
                        expiry.remove(expiry_key(old.not_after, serial).as_slice())?;
                    }
                    Some(_) => {}
                    None => added += 1,
                }
                expiry.insert(expiry_key(fact.not_after, serial).as_slice(), ())?;
            }
            Ok(())
        })?;
        self.len += added;
        Ok(())
    }

    fn write(
        &mut self,
        work: impl FnOnce(
            &mut redb::Table<&[u8], &[u8]>,
            &mut redb::Table<&[u8], ()>,
        ) -> Result<(), redb::StorageError>,
    ) -> Result<(), TableError> {
        let mut txn = self.db.begin_write().map_err(db_error)?;
        let durable = self.last_durable.elapsed() >= DURABLE_EVERY;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })
        .map_err(db_error)?;
        {
            let mut serials = txn.open_table(SERIALS).map_err(db_error)?;
            let mut expiry = txn.open_table(EXPIRY).map_err(db_error)?;
            work(&mut serials, &mut expiry).map_err(db_error)?;
        }
        txn.commit().map_err(db_error)?;
        if durable {
            self.last_durable = Instant::now();
        }
        Ok(())
    }

    /// The certificate with this serial (big-endian bytes), among those
    /// flushed.
    pub fn get(&self, serial: &[u8]) -> Result<Option<Known>, TableError> {
        if serial.is_empty() || serial.len() > MAX_SERIAL {
            return Ok(None);
        }
        let txn = self.db.begin_read().map_err(db_error)?;
        let serials = txn.open_table(SERIALS).map_err(db_error)?;
        let found = serials.get(serial).map_err(db_error)?;
        Ok(found
            .and_then(|g| Fact::decode(g.value()))
            .map(|f| self.known(&f)))
    }

    fn known(&self, fact: &Fact) -> Known {
        Known {
            class: self.names.name(fact.class),
            issuer: self.names.name(fact.issuer),
            profile: self.names.name(fact.profile),
            not_after: fact.not_after,
            spki_sha256: fact.spki_sha256,
        }
    }

    /// Every certificate of `class` whose key has this SPKI hash, by serial
    /// (a scan of the whole table: for the administrator's revocation by
    /// key, not for a request path).
    pub fn by_key(
        &self,
        class: &str,
        spki_sha256: &[u8; 32],
    ) -> Result<Vec<(Vec<u8>, Known)>, TableError> {
        let Some(class_id) = self.names.ids.get(class).copied() else {
            return Ok(Vec::new());
        };
        let txn = self.db.begin_read().map_err(db_error)?;
        let serials = txn.open_table(SERIALS).map_err(db_error)?;
        let mut found = Vec::new();
        for row in serials.iter().map_err(db_error)? {
            let (serial, fact) = row.map_err(db_error)?;
            let Some(fact) = Fact::decode(fact.value()) else {
                continue;
            };
            if fact.class == class_id && &fact.spki_sha256 == spki_sha256 {
                found.push((serial.value().to_vec(), self.known(&fact)));
            }
        }
        Ok(found)
    }

    /// Drop every certificate whose notAfter is before `cutoff`; returns
    /// how many.
    pub fn prune_before(&mut self, cutoff: i64) -> Result<u64, TableError> {
        self.flush()?;
        let end = expiry_key(cutoff, &[]);
        let mut dropped = 0u64;
        self.write(|serials, expiry| {
            let gone = expiry.extract_if(..end.as_slice(), |_, _| true)?;
            for row in gone {
                let (key, _) = row?;
                let serial = &key.value()[8..];
                serials.remove(serial)?;
                dropped += 1;
            }
            Ok(())
        })?;
        self.len = self.len.saturating_sub(dropped);
        Ok(dropped)
    }

    /// Certificates in the table (flushed ones).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(class: &str, not_after: i64, key: u8) -> Known {
        Known {
            class: class.into(),
            issuer: "ab".repeat(32).into(),
            not_after,
            spki_sha256: [key; 32],
            profile: "server".into(),
        }
    }

    fn table() -> (tempfile::TempDir, SerialTable) {
        let dir = tempfile::tempdir().unwrap();
        let t = SerialTable::create_in(dir.path()).unwrap();
        (dir, t)
    }

    #[test]
    fn facts_round_trip_and_a_later_fact_replaces_an_earlier_one() {
        let (_dir, mut t) = table();
        t.insert(&[1, 2, 3], &known("db", 1_000, 7)).unwrap();
        assert_eq!(t.get(&[1, 2, 3]).unwrap(), None, "not flushed yet");
        t.flush().unwrap();
        assert_eq!(t.get(&[1, 2, 3]).unwrap(), Some(known("db", 1_000, 7)));
        assert_eq!(t.get(&[1, 2]).unwrap(), None);
        t.insert(&[1, 2, 3], &known("web", 5_000, 8)).unwrap();
        t.flush().unwrap();
        assert_eq!(t.get(&[1, 2, 3]).unwrap(), Some(known("web", 5_000, 8)));
        assert_eq!(t.len(), 1);
        // The old notAfter no longer prunes the replaced fact.
        assert_eq!(t.prune_before(2_000).unwrap(), 0);
        assert_eq!(t.get(&[1, 2, 3]).unwrap(), Some(known("web", 5_000, 8)));
    }

    #[test]
    fn pruning_drops_exactly_the_expired_ones_negative_times_included() {
        let (_dir, mut t) = table();
        for (i, not_after) in [-5i64, 10, 99, 100, 101, 10_000].iter().enumerate() {
            t.insert(&[i as u8 + 1], &known("db", *not_after, 1))
                .unwrap();
        }
        assert_eq!(t.prune_before(100).unwrap(), 3);
        let left: Vec<u8> = (1..=6)
            .filter(|s| t.get(&[*s]).unwrap().is_some())
            .collect();
        assert_eq!(left, vec![4, 5, 6]);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn by_key_finds_the_class_s_certificates_of_that_key_only() {
        let (_dir, mut t) = table();
        t.insert(&[1], &known("db", 100, 7)).unwrap();
        t.insert(&[2], &known("db", 100, 8)).unwrap();
        t.insert(&[3], &known("web", 100, 7)).unwrap();
        t.insert(&[4], &known("db", 200, 7)).unwrap();
        t.flush().unwrap();
        let serials: Vec<Vec<u8>> = t
            .by_key("db", &[7; 32])
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(serials, vec![vec![1], vec![4]]);
        assert!(t.by_key("nope", &[7; 32]).unwrap().is_empty());
    }

    #[test]
    fn empty_and_overlong_serials_are_not_kept() {
        let (_dir, mut t) = table();
        t.insert(&[], &known("db", 1, 1)).unwrap();
        t.insert(&[9; MAX_SERIAL + 1], &known("db", 1, 1)).unwrap();
        t.insert(&[9; MAX_SERIAL], &known("db", 1, 1)).unwrap();
        t.flush().unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&[9; MAX_SERIAL + 1]).unwrap(), None);
        assert!(t.get(&[9; MAX_SERIAL]).unwrap().is_some());
    }

    /// The table leaves no file behind in its directory, and the memory it
    /// holds does not grow with what it holds: 100,000 certificates add no
    /// per-certificate structure to the process (redb's cache is bounded
    /// by CACHE_BYTES; the rows are in the file).
    #[test]
    fn the_table_lives_in_an_unnamed_file() {
        let (dir, mut t) = table();
        for i in 0u32..100_000 {
            let mut k = known("db", 1_000_000 + i64::from(i % 1000), (i % 251) as u8);
            k.spki_sha256[..4].copy_from_slice(&i.to_be_bytes());
            t.insert(&i.to_be_bytes(), &k).unwrap();
        }
        t.flush().unwrap();
        assert_eq!(t.len(), 100_000);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(t.pending.capacity() <= FLUSH_EVERY);
        assert_eq!(t.names.names.len(), 3);
        let cache = t.db.cache_stats().used_bytes();
        assert!(cache <= CACHE_BYTES + (1 << 20), "redb cache {cache} bytes");
        let got = t.get(&73_456u32.to_be_bytes()).unwrap().unwrap();
        assert_eq!(&got.spki_sha256[..4], &73_456u32.to_be_bytes());
    }
}
