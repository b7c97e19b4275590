//! The inventory: an index over one issuance log that answers "what did we
//! issue, to whom, and what expires next" without scanning the log —
//! searches by name (DNS/IP/URI SANs and the common name, exact or
//! `*.suffix`), serial, SPKI SHA-256, auth key, class, decision and
//! notAfter, newest first (or soonest expiry first), with a cursor.
//!
//! Derived data, like the Merkle node files: built from `log.dat` when the
//! server starts, kept only in memory, never trusted over the log (every
//! result is read back from `log.dat` and checked against the query,
//! `fetch.rs`). It follows the log file through `audit::follow::Follower`
//! (committed batches only: entries a signed tree head covers; a batch the
//! writer cut away is read again), from its own thread
//! ([`Inventory::spawn`]), not from the log writer's hot path.
//!
//! Memory is bounded by a window: at most `[ui] inventory_entries` of the
//! newest entries are held ([`Inventory::with_max_entries`]). When a new
//! entry would pass the cap, the newest half is indexed again from the log
//! into a fresh index, which replaces the old one ([`Inventory::window`]),
//! so the index holds between half the cap and the cap, and older entries
//! (and older live certificates in "expiring next") are found with
//! `ca-server log show`, which reads the whole log. Pages say which entry
//! the index starts at.
//!
//! Lookups cost O(results): the in-memory postings give the entry numbers
//! of a search and each row keeps its record's file offset, so a page of
//! n results reads n records. Memory: ~32 bytes of row per entry, 16 per
//! posting (one per name, serial and SPKI), 8 per auth-key and
//! class/decision list entry, ~40 per live certificate in the expiry set,
//! plus each distinct name once; `ca-bench inventory` measures
//! 1,000,000 entries (ARCHITECTURE.md, "Console and inventory").
//!
//! Modules: `names` (name keys, reversed DNS labels for suffix ranges),
//! `postings` (key → entry numbers), `index` (rows and postings),
//! `query` (the URL query and cursor), `search` (which entries match, from
//! the index), `fetch` (reading and checking them, the page),
//! `activity` (counts over the last day for the console).

pub mod activity;
pub mod fetch;
pub mod index;
pub mod names;
pub mod postings;
pub mod query;
pub mod search;

use crate::audit::follow::{Follower, Until, YIELD_EVERY};
use crate::audit::AuditError;
use crate::log::record::{self, Next, KIND_ENTRY};
use ca_proto::logentry::LogEntry;
use fetch::{PageContext, SearchPage};
use index::Index;
use query::Query;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Why the inventory could not be built or searched.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Log(#[from] AuditError),
    /// An entry came out of order (the log's numbering is broken).
    #[error("log entry {seq} came where entry {expected} was expected")]
    OutOfOrder { seq: u64, expected: u64 },
    /// More distinct values of one kind than the index can number.
    #[error("the inventory holds as many {0} as it can number")]
    Full(&'static str),
    /// The log file does not hold what the index says.
    #[error("the log does not match the inventory: {0}")]
    Corrupt(String),
}

/// Something that wants every entry the inventory indexes (the console's
/// findings), in order; after a cut batch, `truncated(seq)` comes first
/// and entries from `seq` on come again.
pub trait Observer: Send {
    fn entry(&mut self, entry: &LogEntry);
    fn truncated(&mut self, _from_seq: u64) {}
}

/// No observer.
pub struct Nobody;
impl Observer for Nobody {
    fn entry(&mut self, _entry: &LogEntry) {}
}

/// How a search runs (see [`Inventory::search`]).
#[derive(Debug, Clone, Copy)]
pub struct SearchLimits {
    /// Unix seconds (`expiring_before` counts from here).
    pub now: i64,
    /// Search only entries below this (the signed tree size).
    pub tree_size: u64,
    /// Result bytes per page at most.
    pub max_bytes: usize,
    /// Candidates examined at most.
    pub budget: usize,
}

/// The index of one log, shared between the thread that follows the log
/// and the searches.
pub struct Inventory {
    log_id: String,
    path: PathBuf,
    /// Entries held at most (see the module header).
    max_entries: u64,
    index: RwLock<Index>,
    activity: Mutex<activity::Activity>,
    follower: Mutex<Follower>,
}

impl Inventory {
    /// An empty inventory of the log file `path` (`log/<log_id>/log.dat`).
    pub fn new(log_id: &str, path: impl Into<PathBuf>) -> Inventory {
        let path = path.into();
        Inventory {
            log_id: log_id.to_string(),
            follower: Mutex::new(Follower::new(&path)),
            path,
            max_entries: u64::MAX,
            index: RwLock::new(Index::default()),
            activity: Mutex::new(activity::Activity::default()),
        }
    }

    /// Hold at most `max` of the newest entries (at least 2).
    pub fn with_max_entries(mut self, max: u64) -> Inventory {
        self.max_entries = max.max(2);
        self
    }

    /// Build the inventory of a log file once, to the end of what is
    /// committed (offline `log search`).
    pub fn build(log_id: &str, path: &Path) -> Result<Inventory, InventoryError> {
        let inventory = Inventory::new(log_id, path);
        inventory.refresh(&mut Nobody, now_unix())?;
        Ok(inventory)
    }

    pub fn log_id(&self) -> &str {
        &self.log_id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries read: the number after the newest entry indexed.
    pub fn len(&self) -> u64 {
        self.read_index().len()
    }

    /// The oldest entry held (0 until the window first moves).
    pub fn first(&self) -> u64 {
        self.read_index().first()
    }

    /// Entries held (at most the cap).
    pub fn held(&self) -> u64 {
        self.read_index().held()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Estimated heap bytes of the index.
    pub fn heap_bytes(&self) -> usize {
        self.read_index().heap_bytes()
    }

    /// Every class the log has entries of.
    pub fn class_names(&self) -> Vec<String> {
        self.read_index().class_names()
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Index what the log committed since the last call; returns the
    /// number of entries added. Each entry is added under a short write
    /// lock, so searches go on (and see a growing prefix) during a long
    /// first build.
    pub fn refresh(&self, observer: &mut dyn Observer, now: i64) -> Result<u64, InventoryError> {
        let mut follower = self.follower.lock().unwrap_or_else(|p| p.into_inner());
        let first = self.is_empty();
        let polled = follower.poll_located(Until::SignedHead, |offset, entry| {
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            if entry.seq < index.len() {
                // The writer cut a batch away and wrote another in its place.
                index.truncate(entry.seq);
                observer.truncated(entry.seq);
            }
            index.add(offset, &entry)?;
            let full = index.held() > self.max_entries;
            drop(index);
            if full {
                self.window(now)?;
            }
            self.activity
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .add(&entry, now);
            observer.entry(&entry);
            Ok::<_, InventoryError>(())
        })?;
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        index.prune_expired(now);
        if first && polled.entries > 0 {
            index.shrink();
        }
        drop(index);
        self.activity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .prune(now);
        Ok(polled.entries)
    }

    /// Move the window: index the newest half of the cap again, from the
    /// log, into a fresh index that then replaces the old one (searches go
    /// on against the old one meanwhile). Called from `refresh` only, so
    /// no entry is added while it runs.
    fn window(&self, now: i64) -> Result<(), InventoryError> {
        let (base, end, offset) = {
            let index = self.read_index();
            let keep = (self.max_entries / 2).max(1).min(index.held());
            let base = index.len() - keep;
            (base, index.len(), index.row(base).map(|r| r.offset))
        };
        let Some(offset) = offset else {
            return Ok(());
        };
        let io = |source| InventoryError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let mut fresh = Index::starting_at(base);
        let mut reader = record::open_at(&self.path, offset).map_err(io)?;
        let mut read = 0u32;
        while fresh.len() < end {
            read = read.wrapping_add(1);
            if read % YIELD_EVERY == 0 {
                std::thread::yield_now();
            }
            match reader.next_record().map_err(io)? {
                Next::Record(found) if found.kind == KIND_ENTRY => {
                    let entry = LogEntry::from_bytes(found.payload).map_err(|source| {
                        AuditError::Entry {
                            path: self.path.clone(),
                            offset: found.offset,
                            source,
                        }
                    })?;
                    fresh.add(found.offset, &entry)?;
                }
                Next::Record(_) => {}
                Next::End | Next::Torn(_) => {
                    return Err(InventoryError::Corrupt(format!(
                        "the log ends before entry {}, which the index holds",
                        fresh.len()
                    )))
                }
            }
        }
        fresh.prune_expired(now);
        fresh.shrink();
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Follow the log from a thread of its own (lowest CPU priority),
    /// looking for new batches every `interval`, until the process ends.
    pub fn spawn(
        self: &Arc<Self>,
        interval: Duration,
        mut observer: Box<dyn Observer>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let this = self.clone();
        std::thread::Builder::new()
            .name("inventory".into())
            .spawn(move || {
                crate::priority::nice("inventory");
                let mut failing = false;
                loop {
                    let started = std::time::Instant::now();
                    match this.refresh(observer.as_mut(), now_unix()) {
                        Ok(n) => {
                            if failing || (n > 0 && started.elapsed() > Duration::from_secs(1)) {
                                tracing::info!(
                                    event = "inventory_indexed",
                                    log_id = %this.log_id,
                                    entries = this.len(),
                                    "inventory is current"
                                );
                            }
                            failing = false;
                        }
                        Err(e) => {
                            if !failing {
                                tracing::error!(event = "inventory_failed", log_id = %this.log_id, "{e}; retrying every {interval:?}");
                            }
                            failing = true;
                            // Start over: the index is derived data.
                            this.reset();
                        }
                    }
                    std::thread::sleep(interval.saturating_sub(started.elapsed()));
                }
            })
    }

    /// Forget everything and read the log again from its start.
    fn reset(&self) {
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = Index::default();
        *self.follower.lock().unwrap_or_else(|p| p.into_inner()) = Follower::new(&self.path);
        *self.activity.lock().unwrap_or_else(|p| p.into_inner()) = Default::default();
    }

    /// One page of results for `q` (reads the hits' entries from the log:
    /// blocking; run it on a log reader thread).
    pub fn search(&self, q: &Query, limits: SearchLimits) -> Result<SearchPage, InventoryError> {
        let (hits, indexed, first) = {
            let index = self.read_index();
            (
                search::find(&index, q, limits.now, limits.tree_size, limits.budget),
                index.len(),
                index.first(),
            )
        };
        let is_revoked = |serial: u64| self.read_index().revoked(serial);
        fetch::page(
            hits,
            &PageContext {
                path: &self.path,
                query: q,
                now: limits.now,
                max_bytes: limits.max_bytes,
                indexed,
                tree_size: limits.tree_size.min(indexed),
                first,
                is_revoked: &is_revoked,
            },
        )
    }

    /// The activity counters summed as of `now`.
    pub fn activity(&self, now: i64) -> activity::Summary {
        self.activity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .summary(now)
    }
}

pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests;
