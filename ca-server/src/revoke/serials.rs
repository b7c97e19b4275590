//! The serial index's table: serial → what revocation needs of the
//! certificate ([`Known`]), kept mostly on disk, so that the server's
//! memory does not grow with the number of live certificates (a soak at
//! 2,000 certificates a second grew an in-memory map by ~150 bytes an
//! entry).
//!
//! A small log-structured merge table. New facts go to an in-memory sorted
//! buffer of at most [`RUN_ENTRIES`]; a full buffer is written out, in one
//! sequential write, as a *run*: fixed-size 80-byte records sorted by
//! serial in a file without a name (`O_TMPFILE` in the state directory,
//! made by `tempfile`: private to this process, mode 0600, gone when the
//! process ends however it ends; the table is rebuilt from the logs at
//! every start, so nothing is ever synced). Each run keeps in memory only
//! the first serial of each 4 KiB block (0.4 bytes a certificate), so a
//! lookup reads one block per run. Runs are merged [`FANOUT`] at a time
//! into a run one level up (a binary counter in base [`FANOUT`]): each fact
//! is rewritten about once per level, sequentially, and a lookup reads at
//! most (levels × ([`FANOUT`] − 1) + 1) blocks, from the kernel's page
//! cache when warm. Merges drop facts that expired before the pruning
//! cut-off, and a newer fact for a serial replaces an older one. A merge
//! runs on a thread of its own at the lowest CPU priority (one at a time;
//! lookups use the runs being merged until the merged run replaces them):
//! merged inline, on the revocation tick's thread, a merge of a million
//! facts took a core for a third of a second, and at half of peak load
//! that queued requests behind it (soak p99 128 ms).
//!
//! Runs go to the disk as they are made, a chunk at a time
//! (`crate::writeback`), so that their megabytes never reach the disk in
//! one burst that the issuance log's fdatasync would wait behind. Merges
//! and prunes write back inline (waiting for the disk is fine there); a
//! run flushed from the buffer is written back by a thread of its own, so
//! the index's lock is not held for it.
//!
//! redb, a B-tree, was tried first: random serials make every insert dirty
//! its own 4 KiB page, ~17 KiB written per certificate in a soak, and the
//! write-back queued ahead of the issuance log's fdatasync (soak p99 20-400
//! ms). Sorted runs write each fact a few times, in order.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

/// Facts held in memory before they are written out as a run.
pub const RUN_ENTRIES: usize = 65_536;
/// Runs of one level merged into one of the next.
pub const FANOUT: usize = 4;
/// Longest serial kept (RFC 5280: at most 20 octets).
pub const MAX_SERIAL: usize = 20;

/// Key bytes: the serial's length, then the serial, zero-padded.
const KEY_LEN: usize = 1 + MAX_SERIAL;
const FACT_LEN: usize = 52;
/// A record: key, fact, padding.
const RECORD: usize = 80;
/// Records per 4 KiB block (the unit a lookup reads).
const BLOCK_RECORDS: usize = 4096 / RECORD;

type Key = [u8; KEY_LEN];

/// What went wrong with the table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("the serial index's files in {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the serial index holds as many distinct {0} as it can number")]
    Full(&'static str),
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

impl Fact {
    fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.class.to_be_bytes());
        out[4..8].copy_from_slice(&self.issuer.to_be_bytes());
        out[8..12].copy_from_slice(&self.profile.to_be_bytes());
        out[12..20].copy_from_slice(&self.not_after.to_be_bytes());
        out[20..52].copy_from_slice(&self.spki_sha256);
    }

    fn decode(bytes: &[u8]) -> Fact {
        let mut u32s = [[0u8; 4]; 3];
        for (i, v) in u32s.iter_mut().enumerate() {
            v.copy_from_slice(&bytes[i * 4..i * 4 + 4]);
        }
        let mut not_after = [0u8; 8];
        not_after.copy_from_slice(&bytes[12..20]);
        let mut spki_sha256 = [0u8; 32];
        spki_sha256.copy_from_slice(&bytes[20..52]);
        Fact {
            class: u32::from_be_bytes(u32s[0]),
            issuer: u32::from_be_bytes(u32s[1]),
            profile: u32::from_be_bytes(u32s[2]),
            not_after: i64::from_be_bytes(not_after),
            spki_sha256,
        }
    }
}

fn key_of(serial: &[u8]) -> Option<Key> {
    if serial.is_empty() || serial.len() > MAX_SERIAL {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    key[0] = serial.len() as u8;
    key[1..=serial.len()].copy_from_slice(serial);
    Some(key)
}

fn serial_of(key: &Key) -> &[u8] {
    &key[1..=usize::from(key[0]).min(MAX_SERIAL)]
}

fn encode_record(key: &Key, fact: &Fact) -> [u8; RECORD] {
    let mut out = [0u8; RECORD];
    out[..KEY_LEN].copy_from_slice(key);
    fact.encode(&mut out[KEY_LEN..KEY_LEN + FACT_LEN]);
    out
}

fn decode_record(bytes: &[u8]) -> (Key, Fact) {
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&bytes[..KEY_LEN]);
    (key, Fact::decode(&bytes[KEY_LEN..KEY_LEN + FACT_LEN]))
}

/// Class, issuer and profile strings, each once, with dense ids. They come
/// from the logs' entries: a handful of classes and profiles, and an
/// issuer per intermediate ever used.
#[derive(Default)]
struct Names {
    ids: std::collections::HashMap<Arc<str>, u32>,
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

/// One sorted run on disk.
struct Run {
    file: File,
    records: u64,
    /// The first key of each block.
    fences: Vec<Key>,
    level: u32,
    /// The earliest notAfter in the run (pruning rewrites it when due).
    min_not_after: i64,
}

impl Run {
    /// The fact for `key` in this run.
    fn find(&self, key: &Key) -> std::io::Result<Option<Fact>> {
        let block = self.fences.partition_point(|f| f <= key);
        if block == 0 {
            return Ok(None);
        }
        let block = block - 1;
        let first = (block * BLOCK_RECORDS) as u64;
        let count = (self.records - first).min(BLOCK_RECORDS as u64) as usize;
        let mut buf = vec![0u8; count * RECORD];
        self.file.read_exact_at(&mut buf, first * RECORD as u64)?;
        let found = buf
            .chunks_exact(RECORD)
            .map(decode_record)
            .collect::<Vec<_>>();
        Ok(found
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|i| found[i].1))
    }

    /// Every record, in key order.
    fn reader(&self) -> std::io::Result<RunReader> {
        let mut file = self.file.try_clone()?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))?;
        Ok(RunReader {
            reader: BufReader::with_capacity(64 * 1024, file),
            left: self.records,
        })
    }
}

struct RunReader {
    reader: BufReader<File>,
    left: u64,
}

impl RunReader {
    fn next_record(&mut self) -> std::io::Result<Option<(Key, Fact)>> {
        if self.left == 0 {
            return Ok(None);
        }
        let mut buf = [0u8; RECORD];
        self.reader.read_exact(&mut buf)?;
        self.left -= 1;
        Ok(Some(decode_record(&buf)))
    }
}

/// Writes records in key order into a new unnamed file.
struct RunWriter {
    writer: BufWriter<File>,
    /// Write each chunk back as it is written (`crate::writeback::paced`).
    paced: bool,
    /// Where the write-back stands (acted on when paced).
    trail: crate::writeback::Trail,
    records: u64,
    fences: Vec<Key>,
    min_not_after: i64,
}

impl RunWriter {
    fn create(dir: &Path, paced: bool) -> std::io::Result<RunWriter> {
        Ok(RunWriter {
            writer: BufWriter::with_capacity(64 * 1024, tempfile::tempfile_in(dir)?),
            paced,
            trail: crate::writeback::Trail::at(0),
            records: 0,
            fences: Vec::new(),
            min_not_after: i64::MAX,
        })
    }

    fn push(&mut self, key: &Key, fact: &Fact) -> std::io::Result<()> {
        if self.records % BLOCK_RECORDS as u64 == 0 {
            self.fences.push(*key);
        }
        self.writer.write_all(&encode_record(key, fact))?;
        self.records += 1;
        self.min_not_after = self.min_not_after.min(fact.not_after);
        if self.trail.grew(RECORD as u64) && self.paced {
            self.writer.flush()?;
            self.trail.write_back(self.writer.get_ref(), true)?;
        }
        Ok(())
    }

    fn finish(mut self, level: u32) -> std::io::Result<Option<Run>> {
        let file = self.writer.into_inner().map_err(|e| e.into_error())?;
        if self.paced {
            self.trail.write_back(&file, true)?;
        }
        Ok((self.records > 0).then_some(Run {
            file,
            records: self.records,
            fences: self.fences,
            level,
            min_not_after: self.min_not_after,
        }))
    }
}

/// Merge `runs` (oldest first; newer ones win) into one run of `level` in
/// a new file in `dir`, leaving out facts that expired before `cutoff`.
fn merge(runs: &[Arc<Run>], dir: &Path, cutoff: i64, level: u32) -> std::io::Result<Option<Run>> {
    let mut readers = runs
        .iter()
        .map(|r| r.reader())
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut heads = readers
        .iter_mut()
        .map(RunReader::next_record)
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut writer = RunWriter::create(dir, true)?;
    loop {
        // The smallest key; among equal keys the newest run's fact.
        let mut best: Option<(usize, Key)> = None;
        for (i, head) in heads.iter().enumerate() {
            if let Some((key, _)) = head {
                if best.is_none_or(|(_, b)| *key <= b) {
                    best = Some((i, *key));
                }
            }
        }
        let Some((newest, key)) = best else {
            break;
        };
        let fact = heads[newest].map(|(_, f)| f);
        for i in 0..heads.len() {
            if heads[i].is_some_and(|(k, _)| k == key) {
                heads[i] = readers[i].next_record()?;
            }
        }
        if let Some(fact) = fact.filter(|f| f.not_after >= cutoff) {
            writer.push(&key, &fact)?;
        }
    }
    writer.finish(level)
}

/// A merge running on its own thread: it replaces `runs[first..first +
/// count]` when done.
struct Merging {
    first: usize,
    count: usize,
    done: Receiver<std::io::Result<Option<Run>>>,
}

/// The table of issued certificates (see the module header).
pub struct SerialTable {
    dir: PathBuf,
    names: Names,
    pending: BTreeMap<Key, Fact>,
    /// Oldest first; levels never increase from one run to the next.
    runs: Vec<Arc<Run>>,
    merging: Option<Merging>,
    /// The thread writing the newest flushed run back.
    writing_back: Option<std::thread::JoinHandle<()>>,
    /// Facts that expired before this are dropped when runs are rewritten.
    cutoff: i64,
    /// Facts held in memory before they are written out as a run
    /// ([`RUN_ENTRIES`]; smaller in tests).
    run_entries: usize,
}

impl SerialTable {
    /// A new, empty table whose runs go in unnamed files in `dir`.
    pub fn create_in(dir: &Path) -> Result<SerialTable, TableError> {
        // Fail now, not at the first run, when no file can be made there.
        let probe = tempfile::tempfile_in(dir);
        let table = SerialTable {
            dir: dir.to_path_buf(),
            names: Names::default(),
            pending: BTreeMap::new(),
            runs: Vec::new(),
            merging: None,
            writing_back: None,
            cutoff: i64::MIN,
            run_entries: RUN_ENTRIES,
        };
        probe.map_err(|source| table.io(source))?;
        Ok(table)
    }

    fn io(&self, source: std::io::Error) -> TableError {
        TableError::Io {
            dir: self.dir.display().to_string(),
            source,
        }
    }

    /// Note an issued certificate. A later fact for the same serial
    /// replaces the earlier one. Serials longer than [`MAX_SERIAL`] octets
    /// are not kept.
    pub fn insert(&mut self, serial: &[u8], known: &Known) -> Result<(), TableError> {
        let Some(key) = key_of(serial) else {
            return Ok(());
        };
        let fact = Fact {
            class: self.names.id(&known.class)?,
            issuer: self.names.id(&known.issuer)?,
            profile: self.names.id(&known.profile)?,
            not_after: known.not_after,
            spki_sha256: known.spki_sha256,
        };
        self.pending.insert(key, fact);
        if self.pending.len() >= self.run_entries {
            self.flush()?;
        }
        Ok(())
    }

    /// Write the in-memory facts out as a run (then merge runs as due).
    pub fn flush(&mut self) -> Result<(), TableError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let run = (|| {
            let mut writer = RunWriter::create(&self.dir, false)?;
            for (key, fact) in &pending {
                writer.push(key, fact)?;
            }
            writer.finish(0)
        })()
        .map_err(|e| self.io(e))?;
        if let Some(run) = run {
            let run = Arc::new(run);
            self.write_back_later(run.clone());
            self.runs.push(run);
        }
        self.compact()
    }

    /// Write `run` back on a thread of its own, after the previous one's:
    /// the index's lock is not held meanwhile.
    fn write_back_later(&mut self, run: Arc<Run>) {
        if let Some(previous) = self.writing_back.take() {
            let _ = previous.join();
        }
        let spawned = std::thread::Builder::new()
            .name("serial-writeback".into())
            .spawn(move || {
                // A hint only: a failure leaves the data to the kernel. Not
                // niced: it hardly uses the CPU, and at the lowest priority
                // under load it ran too late, after the kernel's burst.
                let _ = crate::writeback::paced(&run.file, 0, run.records * RECORD as u64);
            });
        self.writing_back = spawned.ok();
    }

    /// Take a finished merge's run in place of its inputs; then, when
    /// [`FANOUT`] consecutive runs share a level and no merge is running,
    /// start merging them into one run of the next level (the newest such
    /// group first). Any group, not only the newest runs: a flush adds a
    /// level-0 run after every merge, so the newest runs rarely share the
    /// level of the runs a merge made, and those would pile up unmerged.
    fn compact(&mut self) -> Result<(), TableError> {
        if !self.take_merge(false)? {
            return Ok(());
        }
        let n = self.runs.len();
        if n < FANOUT {
            return Ok(());
        }
        let same_level = |i: usize| {
            let level = self.runs[i].level;
            self.runs[i..i + FANOUT].iter().all(|r| r.level == level)
        };
        let Some(first) = (0..=n - FANOUT).rev().find(|&i| same_level(i)) else {
            return Ok(());
        };
        let level = self.runs[first].level;
        let inputs: Vec<Arc<Run>> = self.runs[first..first + FANOUT].to_vec();
        let (dir, cutoff) = (self.dir.clone(), self.cutoff);
        let (send, done) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("serial-merge".into())
            .spawn(move || {
                crate::priority::nice("serial-merge");
                let _ = send.send(merge(&inputs, &dir, cutoff, level + 1));
            })
            .map_err(|e| self.io(e))?;
        self.merging = Some(Merging {
            first,
            count: FANOUT,
            done,
        });
        Ok(())
    }

    /// Take a merge's run in place of its inputs: now if it is done, or,
    /// with `wait`, when it is. Returns false while it still runs (and true
    /// when no merge was running).
    fn take_merge(&mut self, wait: bool) -> Result<bool, TableError> {
        let Some(m) = &self.merging else {
            return Ok(true);
        };
        let stopped = || Err(std::io::Error::other("the merge thread stopped"));
        let result = if wait {
            m.done.recv().unwrap_or_else(|_| stopped())
        } else {
            match m.done.try_recv() {
                Ok(result) => result,
                Err(TryRecvError::Empty) => return Ok(false),
                Err(TryRecvError::Disconnected) => stopped(),
            }
        };
        let (first, count) = (m.first, m.count);
        self.merging = None;
        let run = result.map_err(|e| self.io(e))?;
        self.runs.splice(first..first + count, run.map(Arc::new));
        Ok(true)
    }

    /// Wait for running merges (and those they make due) and take their
    /// runs (tests; pruning).
    fn finish_merging(&mut self) -> Result<(), TableError> {
        while self.merging.is_some() {
            self.take_merge(true)?;
            self.compact()?;
        }
        Ok(())
    }

    /// The certificate with this serial (big-endian bytes).
    pub fn get(&self, serial: &[u8]) -> Result<Option<Known>, TableError> {
        let Some(key) = key_of(serial) else {
            return Ok(None);
        };
        if let Some(fact) = self.pending.get(&key) {
            return Ok(Some(self.known(fact)));
        }
        for run in self.runs.iter().rev() {
            if let Some(fact) = run.find(&key).map_err(|e| self.io(e))? {
                return Ok(Some(self.known(&fact)));
            }
        }
        Ok(None)
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
    /// (reads every run: for the administrator's revocation by key, not for
    /// a request path).
    pub fn by_key(
        &self,
        class: &str,
        spki_sha256: &[u8; 32],
    ) -> Result<Vec<(Vec<u8>, Known)>, TableError> {
        let Some(class_id) = self.names.ids.get(class).copied() else {
            return Ok(Vec::new());
        };
        // Newest fact per serial: pending, then runs newest first.
        let mut seen: BTreeMap<Key, Fact> = BTreeMap::new();
        for (key, fact) in &self.pending {
            seen.insert(*key, *fact);
        }
        for run in self.runs.iter().rev() {
            let mut reader = run.reader().map_err(|e| self.io(e))?;
            while let Some((key, fact)) = reader.next_record().map_err(|e| self.io(e))? {
                if fact.spki_sha256 == *spki_sha256 {
                    seen.entry(key).or_insert(fact);
                }
            }
        }
        Ok(seen
            .into_iter()
            .filter(|(_, f)| f.class == class_id && f.spki_sha256 == *spki_sha256)
            .map(|(k, f)| (serial_of(&k).to_vec(), self.known(&f)))
            .collect())
    }

    /// Drop every certificate whose notAfter is before `cutoff`: from
    /// memory now, from each run that holds one by rewriting it, and from
    /// every run merged later. Returns how many facts were dropped.
    pub fn prune_before(&mut self, cutoff: i64) -> Result<u64, TableError> {
        self.finish_merging()?;
        self.cutoff = self.cutoff.max(cutoff);
        let before = self.len();
        self.pending.retain(|_, f| f.not_after >= cutoff);
        let mut kept = Vec::with_capacity(self.runs.len());
        for i in 0..self.runs.len() {
            if self.runs[i].min_not_after >= self.cutoff {
                kept.push(self.runs[i].clone());
            } else if let Some(run) = self.rewrite(i)? {
                kept.push(Arc::new(run));
            }
        }
        self.runs = kept;
        Ok(before.saturating_sub(self.len()))
    }

    /// Run `i` again without the facts that expired before the cut-off.
    fn rewrite(&self, i: usize) -> Result<Option<Run>, TableError> {
        (|| {
            let run = &self.runs[i];
            let mut reader = run.reader()?;
            let mut writer = RunWriter::create(&self.dir, true)?;
            while let Some((key, fact)) = reader.next_record()? {
                if fact.not_after >= self.cutoff {
                    writer.push(&key, &fact)?;
                }
            }
            writer.finish(run.level)
        })()
        .map_err(|e| self.io(e))
    }

    /// Facts held, in memory and in runs (a serial written again is counted
    /// once per run holding it until the runs are merged).
    pub fn len(&self) -> u64 {
        self.pending.len() as u64 + self.runs.iter().map(|r| r.records).sum::<u64>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs on disk (for tests and the bench).
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Bytes of memory the table holds, estimated: the buffer and the
    /// runs' fences.
    pub fn memory_bytes(&self) -> usize {
        self.pending.len() * (KEY_LEN + std::mem::size_of::<Fact>() + 16)
            + self
                .runs
                .iter()
                .map(|r| r.fences.capacity() * KEY_LEN)
                .sum::<usize>()
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
        assert_eq!(t.get(&[1, 2, 3]).unwrap(), Some(known("db", 1_000, 7)));
        t.flush().unwrap();
        assert_eq!(t.get(&[1, 2, 3]).unwrap(), Some(known("db", 1_000, 7)));
        assert_eq!(t.get(&[1, 2]).unwrap(), None);
        assert_eq!(
            t.get(&[0, 1, 2, 3]).unwrap(),
            None,
            "length is part of the key"
        );
        t.insert(&[1, 2, 3], &known("web", 5_000, 8)).unwrap();
        assert_eq!(t.get(&[1, 2, 3]).unwrap(), Some(known("web", 5_000, 8)));
        t.flush().unwrap();
        assert_eq!(t.get(&[1, 2, 3]).unwrap(), Some(known("web", 5_000, 8)));
        // The old fact's notAfter no longer matters.
        t.prune_before(2_000).unwrap();
        assert_eq!(t.get(&[1, 2, 3]).unwrap(), Some(known("web", 5_000, 8)));
    }

    #[test]
    fn pruning_drops_exactly_the_expired_ones_negative_times_included() {
        let (_dir, mut t) = table();
        for (i, not_after) in [-5i64, 10, 99, 100, 101, 10_000].iter().enumerate() {
            t.insert(&[i as u8 + 1], &known("db", *not_after, 1))
                .unwrap();
            if i % 2 == 0 {
                t.flush().unwrap();
            }
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
        t.flush().unwrap();
        t.insert(&[3], &known("web", 100, 7)).unwrap();
        t.insert(&[4], &known("db", 200, 7)).unwrap();
        // Serial 2 now has key 7: found; serial 1 moved to key 9: not.
        t.insert(&[2], &known("db", 100, 7)).unwrap();
        t.insert(&[1], &known("db", 100, 9)).unwrap();
        let serials: Vec<Vec<u8>> = t
            .by_key("db", &[7; 32])
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(serials, vec![vec![2], vec![4]]);
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

    /// 300,000 certificates (random 16-byte serials, as issued): every one
    /// is found, runs are merged so that few remain, memory holds at most
    /// one buffer and the fences, and no file has a name.
    #[test]
    fn merged_runs_are_merged_again_as_the_table_grows() {
        // Small runs; each merge finishes before the next flush, as it
        // mostly does in a server (no `finish_merging`, which would merge
        // everything due at once).
        let (_dir, mut t) = table();
        t.run_entries = 8;
        let mut i = 0u64;
        for _ in 0..FANOUT * FANOUT * FANOUT {
            for _ in 0..t.run_entries {
                t.insert(&i.to_be_bytes(), &known("db", 1_000_000, 1))
                    .unwrap();
                i += 1;
            }
            t.take_merge(true).unwrap();
        }
        let levels: Vec<u32> = t.runs.iter().map(|r| r.level).collect();
        // At most FANOUT - 1 runs wait at each level, and one just made.
        assert!(
            levels.len() <= 3 * (FANOUT - 1) + 1,
            "{} runs, levels {levels:?}",
            levels.len()
        );
        assert!(levels.windows(2).all(|w| w[0] >= w[1]), "{levels:?}");
        assert!(levels[0] >= 2, "{levels:?}");
        assert_eq!(t.len(), i);
        for j in (0..i).step_by(37) {
            assert!(t.get(&j.to_be_bytes()).unwrap().is_some(), "serial {j}");
        }
    }

    #[test]
    fn many_certificates_live_in_merged_runs_in_unnamed_files() {
        let (dir, mut t) = table();
        let serial = |i: u64| {
            let mut s = [0u8; 16];
            s[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
            s[8..].copy_from_slice(&i.to_be_bytes());
            s
        };
        let n = 300_000u64;
        for i in 0..n {
            let mut k = known("db", 1_000_000 + (i % 1000) as i64, (i % 251) as u8);
            k.spki_sha256[..8].copy_from_slice(&i.to_be_bytes());
            t.insert(&serial(i), &k).unwrap();
        }
        // Lookups work while a merge runs, and after it is taken in.
        assert!(t.get(&serial(7)).unwrap().is_some());
        t.finish_merging().unwrap();
        assert!(t.merging.is_none());
        assert_eq!(t.len(), n);
        assert!(t.runs() <= 2 * (FANOUT - 1) + 1, "{} runs", t.runs());
        assert!(t.pending.len() < RUN_ENTRIES);
        assert!(
            t.memory_bytes() < RUN_ENTRIES * 100,
            "{} bytes",
            t.memory_bytes()
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        for i in (0..n).step_by(997) {
            let got = t.get(&serial(i)).unwrap().unwrap();
            assert_eq!(&got.spki_sha256[..8], &i.to_be_bytes(), "serial {i}");
        }
        assert_eq!(t.get(&serial(n)).unwrap(), None);
        // Pruning everything older than most of them.
        let dropped = t.prune_before(1_000_000 + 900).unwrap();
        assert_eq!(dropped, n * 900 / 1000);
        assert!(t.get(&serial(950)).unwrap().is_some());
        assert!(t.get(&serial(10)).unwrap().is_none());
    }
}
