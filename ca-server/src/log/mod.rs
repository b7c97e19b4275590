//! The issuance log: an append-only file of entries and signed tree heads
//! per server replica, a Certificate-Transparency-style Merkle tree over the
//! entries, and group commit — one writer thread takes every pending entry,
//! appends the batch, signs one tree head with the log key in the HSM,
//! fsyncs once, and only then releases the requests, each with a
//! [`Logged`] from which its evidence (inclusion proof) is assembled on the
//! requester's own thread. A response with a certificate is never sent
//! before its entry is durable. One process writes a log: the writer holds
//! an exclusive lock on the log's directory (`lock.rs`); reads for the HTTP
//! API run on their own bounded, low-priority threads (`reads.rs`).

pub mod lock;
pub mod nodes;
pub mod reads;
pub mod record;
mod writer;

pub use writer::{Promise, DEFAULT_COMMIT_GATHER};

use ca_proto::logentry::LogEntry;
use ca_proto::merkle::{inclusion_proof, Hash, ProofError};
use ca_proto::sth::{LogEvidence, LogPublicKey, SignedTreeHead};
use hsm::Token;
use nodes::NodeFiles;
use reads::{Page, ReadLimits, ReadPool, ReadRefused};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("issuance log I/O at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("signing the tree head: {0}")]
    Hsm(#[from] hsm::HsmError),
    #[error("issuance log is corrupt: {0}")]
    Corrupt(String),
    #[error("issuance log writer has stopped")]
    Stopped,
    /// Another process (or another handle in this one) writes this log.
    #[error("issuance log {dir} is in use by {holder}; each replica needs its own log_id")]
    InUse { dir: String, holder: lock::Holder },
    #[error("no such entry")]
    OutOfRange,
    /// A batch could not be made durable; every request in it gets this.
    #[error("{message}")]
    BatchFailed { message: String, hsm: bool },
}

impl LogError {
    pub fn code(&self) -> ca_proto::ErrorCode {
        match self {
            LogError::Hsm(e) if e.is_unavailable() => ca_proto::ErrorCode::HsmUnavailable,
            LogError::BatchFailed { hsm: true, .. } => ca_proto::ErrorCode::HsmUnavailable,
            LogError::OutOfRange => ca_proto::ErrorCode::NotFound,
            _ => ca_proto::ErrorCode::LogUnavailable,
        }
    }
}

/// File names inside `<state>/log/<log_id>/`.
pub struct LogPaths {
    pub dir: PathBuf,
}

impl LogPaths {
    pub fn new(state_dir: &Path, log_id: &str) -> LogPaths {
        LogPaths {
            dir: crate::state::StateDir::new(state_dir).log_dir(log_id),
        }
    }
    pub fn data(&self) -> PathBuf {
        self.dir.join("log.dat")
    }
    pub fn nodes(&self) -> PathBuf {
        self.dir.join("nodes")
    }
    pub fn public_key(&self) -> PathBuf {
        self.dir.join("log-key.pem")
    }
}

/// The label of a replica's log key in the online token.
pub fn key_label(log_id: &str) -> String {
    format!("trellis-log-{log_id}")
}

/// The log's public key as readers verify tree heads with it, from the
/// token key (EC point or RSA PKCS#1).
pub fn public_key_of(key: &hsm::KeyInfo) -> Result<LogPublicKey, LogError> {
    let made = match key.algorithm {
        hsm::KeyAlgorithm::EcP256 | hsm::KeyAlgorithm::EcP384 => {
            LogPublicKey::from_point(key.public_key.clone())
        }
        _ => LogPublicKey::from_rsa_public_key(key.public_key.clone()),
    };
    made.map_err(|e| LogError::Corrupt(format!("log key '{}': {e}", key.label)))
}

/// What readers may see: the last durable, signed state.
pub(crate) struct Published {
    pub sth: SignedTreeHead,
    /// File offset of every `CHECKPOINT_STRIDE`th entry record: a sparse
    /// index (8 bytes per 64 entries: 1.25 MiB for ten million) from which
    /// reads walk forward, so a read skips at most 63 entries before its
    /// first.
    pub checkpoints: Vec<u64>,
}

/// Entries between two remembered file offsets.
pub(crate) const CHECKPOINT_STRIDE: u64 = 64;

pub(crate) struct Shared {
    pub log_id: String,
    pub paths: LogPaths,
    pub nodes: NodeFiles,
    pub published: RwLock<Published>,
    pub healthy: AtomicBool,
    pub public_key: LogPublicKey,
    /// Entries being made right now that will be appended soon (see
    /// [`IssuanceLog::promise`]): the writer gathers them into the batch
    /// it is about to commit.
    pub coming: Arc<writer::Coming>,
}

/// An entry the log made durable, under a signed tree head that covers it.
///
/// The client's evidence (the entry's bytes in base64, the tree head, the
/// inclusion proof) is assembled by [`evidence`](Self::evidence) on the
/// thread that asks for it, not on the writer thread: every request of a
/// batch waits while the writer replies to the batch one by one, and a
/// response that carries no evidence (CFSSL's `authsign`) never pays for
/// one. The proof is read from the node files, which only grow while the
/// tree head here stays valid (a failed batch cuts only its own nodes).
#[derive(Clone)]
pub struct Logged {
    seq: u64,
    entry: Vec<u8>,
    sth: Arc<SignedTreeHead>,
    shared: Arc<Shared>,
}

impl Logged {
    /// The entry's number in the log.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The signed tree head the entry was committed under.
    pub fn sth(&self) -> &SignedTreeHead {
        &self.sth
    }

    /// The entry's exact bytes (its Merkle leaf).
    pub fn entry_bytes(&self) -> &[u8] {
        &self.entry
    }

    /// The client's evidence for this entry under [`sth`](Self::sth).
    pub fn evidence(&self) -> Result<LogEvidence, LogError> {
        let proof = inclusion_proof(&self.shared.nodes, self.seq, self.sth.tree_size)
            .map_err(|e| LogError::Corrupt(format!("proof for {}: {e:?}", self.seq)))?;
        Ok(LogEvidence::new(
            self.seq,
            &self.entry,
            (*self.sth).clone(),
            &proof,
        ))
    }
}

impl std::fmt::Debug for Logged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logged")
            .field("log_id", &self.shared.log_id)
            .field("seq", &self.seq)
            .field("tree_size", &self.sth.tree_size)
            .finish()
    }
}

/// A handle on the running log (cheap to clone).
#[derive(Clone)]
pub struct IssuanceLog {
    shared: Arc<Shared>,
    writer: Arc<WriterHandle>,
    reads: Arc<ReadPool>,
}

/// The writer thread's queue and the thread itself. When the last handle
/// goes, the queue closes and the thread is waited for: it finishes its
/// batch and lets go of the log's lock before `drop` returns, so the same
/// process can open the log again at once (`dev` runs init, then serve).
struct WriterHandle {
    sender: Option<tokio::sync::mpsc::UnboundedSender<writer::Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl IssuanceLog {
    /// Take the log's lock (refused with [`LogError::InUse`] when another
    /// writer has it), open it (recovering a torn tail) and start the writer
    /// thread. `token` is the online token holding the log key.
    pub fn open(state_dir: &Path, log_id: &str, token: Token) -> Result<IssuanceLog, LogError> {
        let key = token.public_key(&key_label(log_id))?;
        let (shared, state) = writer::recover(state_dir, log_id, &token, &key)?;
        let shared = Arc::new(shared);
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let thread = writer::start(shared.clone(), state, token, key, receiver)?;
        Ok(IssuanceLog {
            shared,
            writer: Arc::new(WriterHandle {
                sender: Some(sender),
                thread: Some(thread),
            }),
            reads: Arc::new(ReadPool::new(ReadLimits::default())),
        })
    }

    /// Serve reads with these limits (instead of the defaults).
    pub fn with_read_limits(mut self, limits: ReadLimits) -> IssuanceLog {
        self.reads = Arc::new(ReadPool::new(limits));
        self
    }

    pub fn read_limits(&self) -> &ReadLimits {
        &self.reads.limits
    }

    /// Run `f` on a log reader thread (bounded queue, lowest CPU priority)
    /// and wait for it without holding an async worker.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LogReader) -> T + Send + 'static,
    ) -> Result<T, ReadRefused> {
        let reader = LogReader {
            shared: self.shared.clone(),
        };
        self.reads.run(move || f(&reader)).await
    }

    fn sender(&self) -> Result<&tokio::sync::mpsc::UnboundedSender<writer::Job>, LogError> {
        self.writer.sender.as_ref().ok_or(LogError::Stopped)
    }

    pub fn log_id(&self) -> &str {
        &self.shared.log_id
    }

    /// False after a batch failed to reach the disk (until one succeeds).
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    pub fn public_key(&self) -> &LogPublicKey {
        &self.shared.public_key
    }

    /// Queue `entry` (stamped with this log's id) with `reply`; the reply
    /// comes back when the writer has stopped.
    fn submit(&self, mut entry: LogEntry, reply: writer::Reply) -> Result<(), writer::Reply> {
        entry.log_id = self.shared.log_id.clone();
        let job = writer::Job { entry, reply };
        match self.sender() {
            Ok(sender) => sender.send(job).map_err(|refused| refused.0.reply),
            Err(_) => Err(job.reply),
        }
    }

    /// Queue `entry`; the receiver gets its outcome.
    fn submit_waiting(
        &self,
        entry: LogEntry,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Logged, LogError>>, LogError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.submit(entry, writer::Reply::Channel(reply))
            .map_err(|_| LogError::Stopped)?;
        Ok(rx)
    }

    /// Append an entry (its `seq` is assigned here) and wait until it is
    /// durable; returns where it was logged, from which the client's
    /// evidence is made.
    pub async fn append(&self, entry: LogEntry) -> Result<Logged, LogError> {
        self.submit_waiting(entry)?
            .await
            .unwrap_or(Err(LogError::Stopped))
    }

    /// Append without waiting: `then` gets the outcome, exactly once, on
    /// the writer thread (or here, at once, when the writer has stopped).
    /// `then` must be quick: send the outcome on, do nothing heavy.
    pub fn append_then(
        &self,
        entry: LogEntry,
        then: impl FnOnce(Result<Logged, LogError>) + Send + 'static,
    ) {
        if let Err(reply) = self.submit(entry, writer::Reply::Then(Box::new(then))) {
            reply.send(Err(LogError::Stopped));
        }
    }

    /// Say that an entry for this log is being made on this thread right
    /// now (a certificate being signed) and will be appended within
    /// moments: a batch about to be committed waits for it, briefly (see
    /// `[log] commit_gather_us`), so that it shares the batch's fsync and tree-head
    /// signature instead of paying for its own. Drop the promise after the
    /// entry was appended, or when there will be none.
    pub fn promise(&self) -> Promise {
        self.shared.coming.promise()
    }

    /// Let a batch wait up to `gather` for promised entries (`[log]
    /// commit_gather_us`; zero: never wait).
    pub fn with_commit_gather(self, gather: std::time::Duration) -> IssuanceLog {
        self.shared.coming.set_gather(gather);
        self
    }

    /// `append` for non-async callers (admin commands, blocking threads).
    pub fn append_blocking(&self, entry: LogEntry) -> Result<Logged, LogError> {
        self.submit_waiting(entry)?
            .blocking_recv()
            .unwrap_or(Err(LogError::Stopped))
    }

    /// Append many entries at once (they share group commits) and wait for
    /// every one; results in the entries' order.
    pub fn append_many_blocking(&self, entries: Vec<LogEntry>) -> Vec<Result<Logged, LogError>> {
        let waiting: Vec<_> = entries
            .into_iter()
            .map(|entry| self.submit_waiting(entry))
            .collect();
        waiting
            .into_iter()
            .map(|rx| rx?.blocking_recv().unwrap_or(Err(LogError::Stopped)))
            .collect()
    }

    pub fn sth(&self) -> SignedTreeHead {
        self.shared.sth()
    }

    /// Inclusion proof of entry `seq` in the current signed tree (reads
    /// node files: blocking).
    pub fn proof(&self, seq: u64) -> Result<(SignedTreeHead, Vec<Hash>), LogError> {
        LogReader {
            shared: self.shared.clone(),
        }
        .proof(seq)
    }

    /// Raw entry bytes for `start..end` (bounded by the signed tree size;
    /// reads `log.dat`: blocking).
    pub fn entries(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
        let count = end.saturating_sub(start);
        let page = LogReader {
            shared: self.shared.clone(),
        }
        .entries_page(start, Some(end), count, usize::MAX)?;
        Ok(page.entries)
    }
}

impl Shared {
    fn sth(&self) -> SignedTreeHead {
        self.published
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .sth
            .clone()
    }
}

/// What a read job sees of the log: its published (durable, signed) state.
pub struct LogReader {
    shared: Arc<Shared>,
}

impl LogReader {
    pub fn sth(&self) -> SignedTreeHead {
        self.shared.sth()
    }

    /// Inclusion proof of entry `seq` in the current signed tree.
    pub fn proof(&self, seq: u64) -> Result<(SignedTreeHead, Vec<Hash>), LogError> {
        let sth = self.sth();
        if seq >= sth.tree_size {
            return Err(LogError::OutOfRange);
        }
        let proof =
            inclusion_proof(&self.shared.nodes, seq, sth.tree_size).map_err(|e| match e {
                ProofError::OutOfRange => LogError::OutOfRange,
                ProofError::Store(source) => LogError::Io {
                    path: self.shared.paths.nodes().display().to_string(),
                    source,
                },
            })?;
        Ok((sth, proof))
    }

    /// Entries from `start` up to `end` (or the end of the signed tree),
    /// at most `max_entries` of them and, after the first, at most
    /// `max_bytes` of entry bytes. Never reads past the signed tree: what
    /// follows may be a batch that is still being written.
    pub fn entries_page(
        &self,
        start: u64,
        end: Option<u64>,
        max_entries: u64,
        max_bytes: usize,
    ) -> Result<Page, LogError> {
        let (tree_size, from_seq, from_offset) = {
            let published = self
                .shared
                .published
                .read()
                .unwrap_or_else(|p| p.into_inner());
            let tree_size = published.sth.tree_size;
            if start >= tree_size {
                return Ok(Page {
                    entries: Vec::new(),
                    next: None,
                    tree_size,
                });
            }
            let checkpoint = start / CHECKPOINT_STRIDE;
            let offset = usize::try_from(checkpoint)
                .ok()
                .and_then(|c| published.checkpoints.get(c).copied())
                .ok_or_else(|| LogError::Corrupt(format!("no index for entry {start}")))?;
            (tree_size, checkpoint * CHECKPOINT_STRIDE, offset)
        };
        let wanted_end = end.unwrap_or(tree_size).min(tree_size);
        let stop = wanted_end.min(start.saturating_add(max_entries));
        if start >= stop {
            return Ok(Page {
                entries: Vec::new(),
                next: None,
                tree_size,
            });
        }
        let path = self.shared.paths.data();
        let io = |source| LogError::Io {
            path: path.display().to_string(),
            source,
        };
        use std::io::Seek;
        let mut file = std::fs::File::open(&path).map_err(io)?;
        file.seek(std::io::SeekFrom::Start(from_offset))
            .map_err(io)?;
        let entries = reads::walk_range(&path, file, from_seq, start, stop, max_bytes)?;
        let next = entries
            .last()
            .map(|(seq, _)| seq + 1)
            .filter(|next| *next < wanted_end);
        Ok(Page {
            entries,
            next,
            tree_size,
        })
    }
}
