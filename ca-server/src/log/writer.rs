//! Recovery at start and the group-commit writer thread. Recovery first
//! takes the log's exclusive lock, and the writer thread keeps it.

use super::lock::LogLock;
use super::nodes::NodeFiles;
use super::record::{self, KIND_ENTRY, KIND_TREE_HEAD};
use super::{LogError, LogPaths, Logged, Published, Shared, CHECKPOINT_STRIDE};
use ca_proto::logentry::LogEntry;
use ca_proto::merkle::{leaf_hash, CompactRange};
use ca_proto::sth::SignedTreeHead;
use hsm::{KeyInfo, PoolSession, Token};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Most entries one batch takes; more wait for the next fsync.
const MAX_BATCH: usize = 4096;

/// How long a batch waits, by default, for entries promised but not yet
/// appended ([`Coming`]) before it is committed without them (`[log]
/// commit_gather_us`). A batch's fsync and tree-head signature cost the
/// writer about 0.3 ms of CPU however many entries share them; gathering
/// the certificates that the signing pool is finishing while the batch
/// formed shares those costs among more entries when the server is busy
/// (measured at 16 keep-alive connections: 2.7 entries a batch without,
/// 8.5 with 1 ms, and the log's CPU per certificate from 78 to 36 µs), and
/// costs nothing when it is idle: nothing is promised then, so nothing is
/// waited for. Only the certificates being signed when the batch formed
/// are waited for, so under load a batch usually goes well before this.
pub const DEFAULT_COMMIT_GATHER: std::time::Duration = std::time::Duration::from_millis(1);

/// Entries promised to the writer: certificates being built and signed
/// right now, whose entries will be appended within moments.
///
/// Promises are counted on two sides. New ones go to the current side; a
/// batch that forms turns the sides over and waits only for the side that
/// was current, the certificates being signed when it formed. Those made
/// while it waits are the next batch's to wait for: under a steady load a
/// pool thread promises its next certificate as soon as it has queued the
/// last one, so waiting until nothing is promised at all would wait for
/// the whole window every time.
pub(crate) struct Coming {
    counts: [std::sync::atomic::AtomicUsize; 2],
    /// The side new promises go to (0 or 1, in the lowest bit).
    side: std::sync::atomic::AtomicUsize,
    /// The writer thread, woken when the last promise it waits for was
    /// kept or will not be.
    writer: std::sync::OnceLock<std::thread::Thread>,
    /// How long a batch waits for them at most, in microseconds.
    gather_us: std::sync::atomic::AtomicU64,
}

impl Default for Coming {
    fn default() -> Coming {
        Coming {
            counts: Default::default(),
            side: Default::default(),
            writer: Default::default(),
            gather_us: std::sync::atomic::AtomicU64::new(DEFAULT_COMMIT_GATHER.as_micros() as u64),
        }
    }
}

impl Coming {
    pub(crate) fn promise(self: &Arc<Self>) -> Promise {
        // A batch may turn the sides over between these two lines: then
        // this promise counts on the side it waits for, as one being
        // signed when it formed, which it is.
        let side = self.side.load(Ordering::SeqCst) & 1;
        self.counts[side].fetch_add(1, Ordering::SeqCst);
        Promise {
            coming: self.clone(),
            side,
        }
    }

    /// A batch forms: new promises go to the other side from now on; the
    /// side returned holds those it waits for.
    fn turn(&self) -> usize {
        self.side.fetch_xor(1, Ordering::SeqCst) & 1
    }

    fn pending_on(&self, side: usize) -> usize {
        self.counts[side].load(Ordering::SeqCst)
    }

    #[cfg(test)]
    fn pending(&self) -> usize {
        self.pending_on(0) + self.pending_on(1)
    }

    /// At most a second (`[log] commit_gather_us`'s bound).
    pub(crate) fn set_gather(&self, gather: std::time::Duration) {
        let gather = gather.min(std::time::Duration::from_secs(1));
        let us = u64::try_from(gather.as_micros()).unwrap_or(1_000_000);
        self.gather_us.store(us, Ordering::Relaxed);
    }

    fn gather(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.gather_us.load(Ordering::Relaxed))
    }
}

/// One promised entry; kept while its certificate is made and appended.
pub struct Promise {
    coming: Arc<Coming>,
    side: usize,
}

impl Drop for Promise {
    fn drop(&mut self) {
        let coming = &self.coming;
        // The last of a side a batch waits for (not the current side) wakes
        // the writer; a wake-up it does not need costs it one more look.
        if coming.counts[self.side].fetch_sub(1, Ordering::SeqCst) == 1
            && coming.side.load(Ordering::SeqCst) & 1 != self.side
        {
            if let Some(writer) = coming.writer.get() {
                writer.unpark();
            }
        }
    }
}

/// A commit at least this long is logged with its phases (a disk or a
/// token that stalls shows up there first), at most once per
/// [`SLOW_COMMIT_EVERY`] with the count of the others.
const SLOW_COMMIT: std::time::Duration = std::time::Duration::from_millis(20);
const SLOW_COMMIT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Slow commits seen since the last warning.
#[derive(Default)]
struct SlowCommits {
    warned: Option<std::time::Instant>,
    unreported: u64,
}

impl SlowCommits {
    fn note(&mut self, took: std::time::Duration, entries: usize, laps: &[(&'static str, f64)]) {
        let now = std::time::Instant::now();
        if self
            .warned
            .is_some_and(|at| now.duration_since(at) < SLOW_COMMIT_EVERY)
        {
            self.unreported += 1;
            return;
        }
        let by_phase: Vec<String> = laps
            .iter()
            .map(|(name, secs)| format!("{name} {:.1} ms", secs * 1e3))
            .collect();
        let ms = took.as_secs_f64() * 1e3;
        tracing::warn!(
            event = "log_commit_slow",
            entries,
            ms,
            others = self.unreported,
            "a group commit took {ms:.1} ms ({}): every request in it waited that long; {} other commits over {} ms since the last warning",
            by_phase.join(", "),
            self.unreported,
            SLOW_COMMIT.as_millis()
        );
        self.warned = Some(now);
        self.unreported = 0;
    }
}

/// Zeroed space kept allocated past the last record. A group commit that
/// writes into space already allocated (and synced) changes no file size
/// or extent, so its fdatasync flushes data only and commits no journal
/// transaction: measured here 0.26 ms instead of 0.46 ms per small commit
/// in isolation (under full load the wait is mostly CPU contention).
/// Readers stop at the zero kind byte (`record::KIND_FREE`); recovery cuts
/// the space and the writer allocates it again.
pub(crate) const PREALLOCATE: u64 = 1 << 20;

pub(crate) struct Job {
    pub entry: LogEntry,
    pub reply: Reply,
}

/// Where a job's outcome goes.
pub(crate) enum Reply {
    /// To a waiting task or thread.
    Channel(tokio::sync::oneshot::Sender<Result<Logged, LogError>>),
    /// Into a callback, run on the writer thread (it must be quick): lets a
    /// signing-pool thread hand its entry to the writer and the writer hand
    /// the outcome straight to the request's task, one thread hop fewer.
    Then(Box<dyn FnOnce(Result<Logged, LogError>) + Send>),
}

impl Reply {
    pub(crate) fn send(self, outcome: Result<Logged, LogError>) {
        match self {
            Reply::Channel(tx) => {
                let _ = tx.send(outcome);
            }
            Reply::Then(then) => then(outcome),
        }
    }
}

/// fdatasync of `log.dat` on a thread of its own ("log-sync"), so that the
/// writer signs the batch's tree head while the batch's entries are made
/// durable (the signature took 0.17 ms of a 0.77 ms commit).
struct Syncer {
    start: std::sync::mpsc::SyncSender<()>,
    done: std::sync::mpsc::Receiver<std::io::Result<()>>,
}

impl Syncer {
    fn spawn(file: &File) -> std::io::Result<Syncer> {
        let file = file.try_clone()?;
        let (start, started) = std::sync::mpsc::sync_channel::<()>(1);
        let (finished, done) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("log-sync".into())
            .spawn(move || {
                while started.recv().is_ok() {
                    if finished.send(file.sync_data()).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Syncer { start, done })
    }

    /// Start an fdatasync of what was written so far; [`wait`](Self::wait)
    /// for it exactly once after each call.
    fn begin(&self) {
        let _ = self.start.send(());
    }

    fn wait(&self) -> std::io::Result<()> {
        self.done
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the log's sync thread stopped")))
    }
}

/// Room kept for a tree head record after a batch's entries (a head
/// signed with RSA-4096 is about 800 bytes).
const HEAD_ROOM: u64 = 2048;

/// What only the writer thread touches.
pub(crate) struct WriterState {
    file: File,
    /// End of the last record.
    len: u64,
    /// The file's length: `len` plus zeroed space.
    allocated: u64,
    range: CompactRange,
    slow: SlowCommits,
    /// Held while this state lives: one writer per log.
    _lock: LogLock,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Take the log's lock, then scan the log, cut a torn tail, rebuild the
/// tree and node files, and make sure the last record is a signed head for
/// the whole tree.
pub(crate) fn recover(
    state_dir: &Path,
    log_id: &str,
    token: &Token,
    key: &KeyInfo,
) -> Result<(Shared, WriterState), LogError> {
    let paths = LogPaths::new(state_dir, log_id);
    let data_path = paths.data();
    std::fs::create_dir_all(&paths.dir).map_err(io(&paths.dir))?;
    // Before anything touches log.dat or the node files.
    let lock = LogLock::acquire(&paths.dir)?;
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(&data_path)
        .map_err(io(&data_path))?;
    let nodes = NodeFiles::create_empty(&paths.nodes()).map_err(io(&paths.nodes()))?;
    let mut range = CompactRange::new();
    let mut checkpoints = Vec::new();
    let mut last_sth: Option<SignedTreeHead> = None;
    // Stream the file: recovery memory does not grow with the log.
    let reader =
        std::io::BufReader::with_capacity(1 << 20, file.try_clone().map_err(io(&data_path))?);
    let walked = record::for_each(reader, |kind, offset, payload| {
        if kind != KIND_ENTRY {
            last_sth = serde_json::from_slice(payload).ok();
            return Ok(());
        }
        let entry = LogEntry::from_bytes(payload)
            .map_err(|e| LogError::Corrupt(format!("entry at offset {offset}: {e}")))?;
        if entry.seq != range.size() {
            return Err(LogError::Corrupt(format!(
                "entry at offset {offset} has seq {} where {} was expected",
                entry.seq,
                range.size()
            )));
        }
        if range.size() % CHECKPOINT_STRIDE == 0 {
            checkpoints.push(offset);
        }
        let completed = range.append(leaf_hash(payload));
        nodes.append(&completed).map_err(io(&paths.nodes()))
    })
    .map_err(|e| match e {
        record::WalkError::Io(source) => LogError::Io {
            path: data_path.display().to_string(),
            source,
        },
        record::WalkError::Visit(e) => e,
    })?;
    let file_len = file.metadata().map_err(io(&data_path))?.len();
    if let Some(why) = walked.torn {
        tracing::warn!(
            event = "log_torn_tail",
            log_id,
            kept_records = walked.records,
            cut_bytes = file_len - walked.valid_len,
            reason = why,
            "cutting a torn tail from the issuance log"
        );
    }
    if file_len > walked.valid_len {
        // A torn tail, or zeroed space (which may hide bytes of a batch
        // that never completed): cut, allocated again on the next write.
        file.set_len(walked.valid_len).map_err(io(&data_path))?;
        file.sync_all().map_err(io(&data_path))?;
    }
    let public_key = super::public_key_of(key)?;
    let mut state = WriterState {
        file,
        len: walked.valid_len,
        allocated: walked.valid_len,
        range,
        slow: SlowCommits::default(),
        _lock: lock,
    };
    let sth = match last_sth {
        Some(sth)
            if sth.tree_size == state.range.size()
                && sth.root_hash == hex::encode(state.range.root()) =>
        {
            sth
        }
        _ => {
            let mut session = PoolSession::new(token.clone());
            let sth = sign_head(&mut session, key, log_id, &state.range)?;
            let mut buf = Vec::new();
            record::encode(
                KIND_TREE_HEAD,
                &serde_json::to_vec(&sth).unwrap_or_default(),
                &mut buf,
            );
            state
                .file
                .write_all_at(&buf, state.len)
                .map_err(io(&data_path))?;
            state.len += buf.len() as u64;
            state.allocated = state.len;
            state.file.sync_data().map_err(io(&data_path))?;
            sth
        }
    };
    tracing::info!(
        event = "log_opened",
        log_id,
        entries = state.range.size(),
        "issuance log ready"
    );
    let shared = Shared {
        log_id: log_id.to_string(),
        paths,
        nodes,
        published: std::sync::RwLock::new(Published { sth, checkpoints }),
        healthy: std::sync::atomic::AtomicBool::new(true),
        public_key,
        coming: Arc::default(),
    };
    Ok((shared, state))
}

fn sign_head(
    session: &mut PoolSession,
    key: &KeyInfo,
    log_id: &str,
    range: &CompactRange,
) -> Result<SignedTreeHead, LogError> {
    use base64::Engine;
    let root = range.root();
    let timestamp_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let message = SignedTreeHead::signed_bytes(log_id, range.size(), &root, timestamp_ms);
    let signature = session.sign(key, &message)?;
    Ok(SignedTreeHead {
        log_id: log_id.to_string(),
        tree_size: range.size(),
        root_hash: hex::encode(root),
        timestamp_ms,
        signature: base64::engine::general_purpose::STANDARD.encode(signature),
    })
}

pub(crate) fn start(
    shared: Arc<Shared>,
    state: WriterState,
    token: Token,
    key: KeyInfo,
    receiver: tokio::sync::mpsc::UnboundedReceiver<Job>,
) -> Result<std::thread::JoinHandle<()>, LogError> {
    let thread_error = |source| LogError::Io {
        path: "log-writer thread".into(),
        source,
    };
    let syncer = Syncer::spawn(&state.file).map_err(thread_error)?;
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || {
            run(
                shared,
                state,
                syncer,
                PoolSession::new(token),
                key,
                receiver,
            )
        })
        .map_err(thread_error)
}

fn run(
    shared: Arc<Shared>,
    mut state: WriterState,
    syncer: Syncer,
    mut session: PoolSession,
    key: KeyInfo,
    mut receiver: tokio::sync::mpsc::UnboundedReceiver<Job>,
) {
    let _ = shared.coming.writer.set(std::thread::current());
    while let Some(first) = receiver.blocking_recv() {
        let metrics = crate::metrics::metrics();
        let mut batch = vec![first];
        let gathering = std::time::Instant::now();
        gather(
            &shared.coming,
            &mut receiver,
            &mut batch,
            gathering + shared.coming.gather(),
        );
        metrics
            .log_commit_phase_seconds
            .with_label_values(&["gather"])
            .inc_by(gathering.elapsed().as_secs_f64());
        let before = (state.len, state.range.clone());
        let started = std::time::Instant::now();
        metrics.log_batch_entries.observe(batch.len() as f64);
        let committed = commit(&shared, &mut state, &syncer, &mut session, &key, &mut batch);
        metrics
            .log_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        match committed {
            Ok((sth, first_seq, new_offsets, entry_bytes)) => {
                {
                    let mut published = shared.published.write().unwrap_or_else(|p| p.into_inner());
                    for (i, offset) in new_offsets.into_iter().enumerate() {
                        if (first_seq + i as u64) % CHECKPOINT_STRIDE == 0 {
                            published.checkpoints.push(offset);
                        }
                    }
                    published.sth = sth.clone();
                }
                shared.healthy.store(true, Ordering::Relaxed);
                let replying = std::time::Instant::now();
                let sth = Arc::new(sth);
                for ((i, job), entry) in batch.into_iter().enumerate().zip(entry_bytes) {
                    job.reply.send(Ok(Logged {
                        seq: first_seq + i as u64,
                        entry,
                        sth: sth.clone(),
                        shared: shared.clone(),
                    }));
                }
                metrics
                    .log_commit_phase_seconds
                    .with_label_values(&["reply"])
                    .inc_by(replying.elapsed().as_secs_f64());
            }
            Err(e) => {
                tracing::error!(event = "log_write_failed", entries = batch.len(), "{e}");
                shared.healthy.store(false, Ordering::Relaxed);
                // Put the files back as they were: nothing of this batch was
                // acknowledged, so nothing of it may remain.
                // (The zeroed space goes too; it is allocated again.)
                let _ = state.file.set_len(before.0);
                let _ = shared.nodes.truncate_to(before.1.size());
                state.len = before.0;
                state.range = before.1;
                state.allocated = before.0;
                let message = e.to_string();
                let hsm = matches!(&e, LogError::Hsm(h) if h.is_unavailable());
                for job in batch {
                    job.reply.send(Err(LogError::BatchFailed {
                        message: message.clone(),
                        hsm,
                    }));
                }
            }
        }
    }
    // Stopping: the file ends at its last record again (zeroed space is
    // only for a running writer), so a copy of a stopped log has no tail.
    if state.allocated > state.len && state.file.set_len(state.len).is_ok() {
        let _ = state.file.sync_all();
    }
}

/// Take what is queued into `batch`, and while certificates that were
/// being signed when the batch formed are still promised ([`Coming`]),
/// wait for them until `deadline`.
fn gather(
    coming: &Coming,
    receiver: &mut tokio::sync::mpsc::UnboundedReceiver<Job>,
    batch: &mut Vec<Job>,
    deadline: std::time::Instant,
) {
    let awaited = coming.turn();
    loop {
        // Read first: a promise is kept until its entry is queued, so when
        // none is left, what they promised is in the queue now.
        let waiting_for = coming.pending_on(awaited);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let now = std::time::Instant::now();
        if waiting_for == 0 || batch.len() >= MAX_BATCH || now >= deadline {
            return;
        }
        // Woken by the last awaited promise to go, or at the deadline.
        std::thread::park_timeout(deadline - now);
    }
}

/// What a committed batch hands back: the signed head, the first entry's
/// seq, each entry's file offset and its exact bytes (the Merkle leaves).
type Committed = (SignedTreeHead, u64, Vec<u64>, Vec<Vec<u8>>);

/// Write the batch's entries, fsync them while one head is signed over
/// them, then write the head.
///
/// The head's record is written after the fdatasync and becomes durable
/// with the next batch's: a crash before that loses no entry (recovery
/// keeps every whole entry record and signs a new head over the same tree,
/// with the same root), only this head's record, which the clients of this
/// batch hold as a valid signature over that root.
fn commit(
    shared: &Shared,
    state: &mut WriterState,
    syncer: &Syncer,
    session: &mut PoolSession,
    key: &KeyInfo,
    batch: &mut [Job],
) -> Result<Committed, LogError> {
    let data_path = shared.paths.data();
    let phases = &crate::metrics::metrics().log_commit_phase_seconds;
    let began = std::time::Instant::now();
    let mut lap = began;
    let mut laps: Vec<(&'static str, f64)> = Vec::with_capacity(6);
    let mut phase = |name: &'static str| {
        let now = std::time::Instant::now();
        let secs = (now - lap).as_secs_f64();
        phases.with_label_values(&[name]).inc_by(secs);
        laps.push((name, secs));
        lap = now;
    };
    let first_seq = state.range.size();
    let mut buf = Vec::with_capacity(batch.len() * 1024);
    let mut offsets = Vec::with_capacity(batch.len());
    let mut completed = Vec::new();
    let mut entry_bytes = Vec::with_capacity(batch.len());
    for job in batch.iter_mut() {
        job.entry.seq = state.range.size();
        let bytes = job.entry.to_bytes();
        offsets.push(state.len + buf.len() as u64);
        record::encode(KIND_ENTRY, &bytes, &mut buf);
        completed.extend(state.range.append(leaf_hash(&bytes)));
        entry_bytes.push(bytes);
    }
    phase("encode");
    let end = state.len + buf.len() as u64 + HEAD_ROOM;
    if end > state.allocated {
        // Zero the space first: the batch is written over it, and this
        // commit's fdatasync makes the new length durable with it. No room
        // for the space (a nearly full disk) is no error: the batch is then
        // written as a plain append, as long as it fits itself.
        let to = end + PREALLOCATE;
        match write_zeros(&state.file, end.max(state.allocated), to) {
            Ok(()) => state.allocated = to,
            Err(_) => {
                let _ = state.file.set_len(state.allocated);
            }
        }
    }
    state
        .file
        .write_all_at(&buf, state.len)
        .map_err(io(&data_path))?;
    shared
        .nodes
        .append(&completed)
        .map_err(io(&shared.paths.nodes()))?;
    phase("write");
    syncer.begin();
    let signed = sign_head(session, key, &shared.log_id, &state.range);
    phase("sign");
    let synced = syncer.wait();
    phase("sync");
    synced.map_err(io(&data_path))?;
    let sth = signed?;
    let entries_end = state.len + buf.len() as u64;
    let mut head = Vec::with_capacity(512);
    record::encode(
        KIND_TREE_HEAD,
        &serde_json::to_vec(&sth).unwrap_or_default(),
        &mut head,
    );
    state
        .file
        .write_all_at(&head, entries_end)
        .map_err(io(&data_path))?;
    state.len = entries_end + head.len() as u64;
    state.allocated = state.allocated.max(state.len);
    phase("head");
    let took = began.elapsed();
    if took >= SLOW_COMMIT {
        state.slow.note(took, batch.len(), &laps);
    }
    Ok((sth, first_seq, offsets, entry_bytes))
}

/// Write zeros over `from..to` of `file`.
fn write_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    const CHUNK: usize = 64 * 1024;
    let zeros = [0u8; CHUNK];
    let mut at = from;
    while at < to {
        let n = usize::try_from(to - at).map_or(CHUNK, |left| left.min(CHUNK));
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn job(seq: u64) -> Job {
        let entry = serde_json::from_value(serde_json::json!({
            "seq": seq, "time": "2026-12-06T00:00:00Z", "log_id": "t", "class": "db",
            "profile": "server", "key_id": "k", "decision": "denied",
            "reasons": [{"code": "name_not_allowed", "detail": "x"}],
        }))
        .expect("entry");
        Job {
            entry,
            reply: Reply::Then(Box::new(|_| {})),
        }
    }

    fn setup() -> (
        Arc<Coming>,
        tokio::sync::mpsc::UnboundedSender<Job>,
        tokio::sync::mpsc::UnboundedReceiver<Job>,
    ) {
        let coming = Arc::new(Coming::default());
        let _ = coming.writer.set(std::thread::current());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (coming, tx, rx)
    }

    /// Gather into `batch` with a deadline `within` from now; how long it took.
    fn gather_within(
        coming: &Coming,
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<Job>,
        batch: &mut Vec<Job>,
        within: Duration,
    ) -> Duration {
        let started = Instant::now();
        gather(coming, rx, batch, started + within);
        started.elapsed()
    }

    #[test]
    fn a_batch_waits_for_the_entry_being_signed_and_not_for_the_deadline() {
        let (coming, tx, mut rx) = setup();
        let promise = coming.promise();
        let signer = std::thread::spawn(move || {
            // The certificate takes a while; its entry comes, then the
            // promise goes.
            std::thread::sleep(Duration::from_millis(30));
            tx.send(job(1)).map_err(|_| ()).expect("send");
            drop(promise);
        });
        let mut batch = vec![job(0)];
        let took = gather_within(&coming, &mut rx, &mut batch, Duration::from_secs(30));
        assert_eq!(batch.len(), 2, "the promised entry joined the batch");
        assert!(
            took < Duration::from_secs(10),
            "woken by the promise, not the deadline"
        );
        signer.join().expect("signer");
        assert_eq!(coming.pending(), 0);
    }

    /// Wait (bounded) until a batch has turned the sides so that new
    /// promises go to `side`.
    fn until_side(coming: &Coming, side: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while coming.side.load(Ordering::SeqCst) & 1 != side {
            assert!(Instant::now() < deadline, "no batch formed");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_batch_does_not_wait_for_certificates_begun_after_it_formed() {
        let (coming, tx, mut rx) = setup();
        let being_signed = coming.promise();
        let first_side = being_signed.side;
        let pool = {
            let coming = coming.clone();
            std::thread::spawn(move || {
                // The batch has formed when the next certificate is begun;
                // then the first one is done.
                until_side(&coming, 1 - first_side);
                let next = coming.promise();
                tx.send(job(1)).map_err(|_| ()).expect("send");
                drop(being_signed);
                next
            })
        };
        let mut batch = vec![job(0)];
        let took = gather_within(&coming, &mut rx, &mut batch, Duration::from_secs(30));
        assert!(
            took < Duration::from_secs(10),
            "the promise made after the batch formed was waited for"
        );
        assert_eq!(batch.len(), 2, "the awaited entry joined the batch");
        let next = pool.join().expect("pool");
        assert_eq!(coming.pending(), 1);
        // The next batch waits for it.
        let keeper = {
            let coming = coming.clone();
            std::thread::spawn(move || {
                until_side(&coming, first_side);
                std::thread::sleep(Duration::from_millis(20));
                drop(next);
            })
        };
        let mut batch = vec![job(2)];
        let took = gather_within(&coming, &mut rx, &mut batch, Duration::from_secs(30));
        keeper.join().expect("keeper");
        assert!(
            took >= Duration::from_millis(20),
            "the next batch waited for it"
        );
        assert!(took < Duration::from_secs(10));
    }

    #[test]
    fn a_promise_never_kept_delays_the_batch_only_until_the_deadline() {
        let (coming, tx, mut rx) = setup();
        let _held = coming.promise();
        tx.send(job(1)).map_err(|_| ()).expect("send");
        let mut batch = vec![job(0)];
        let took = gather_within(&coming, &mut rx, &mut batch, Duration::from_millis(50));
        assert!(took >= Duration::from_millis(50));
        assert_eq!(batch.len(), 2, "what was queued is taken");
    }

    #[test]
    fn with_nothing_promised_the_batch_goes_at_once() {
        let (coming, tx, mut rx) = setup();
        tx.send(job(1)).map_err(|_| ()).expect("send");
        let mut batch = vec![job(0)];
        let took = gather_within(&coming, &mut rx, &mut batch, Duration::from_secs(30));
        assert_eq!(batch.len(), 2);
        assert!(took < Duration::from_secs(10));
        // A promise made and dropped leaves nothing to wait for.
        drop(coming.promise());
        let took = gather_within(&coming, &mut rx, &mut batch, Duration::from_secs(30));
        assert!(took < Duration::from_secs(10));
    }

    #[test]
    fn slow_commits_are_warned_of_at_most_once_in_a_while_and_counted() {
        let mut slow = SlowCommits::default();
        let laps = [("sync", 0.05)];
        slow.note(Duration::from_millis(50), 3, &laps);
        let first = slow.warned.expect("the first one is warned of");
        slow.note(Duration::from_millis(60), 3, &laps);
        slow.note(Duration::from_millis(70), 3, &laps);
        assert_eq!(slow.warned, Some(first));
        assert_eq!(slow.unreported, 2);
        // after the quiet time the next one is warned of, with the count
        slow.warned = Some(first.checked_sub(SLOW_COMMIT_EVERY).unwrap_or(first));
        if slow.warned == Some(first) {
            return; // the clock started under 10 s ago: nothing to go back to
        }
        slow.note(Duration::from_millis(80), 3, &laps);
        assert!(slow.warned.is_some_and(|at| at > first));
        assert_eq!(slow.unreported, 0);
    }

    #[test]
    fn a_full_batch_waits_for_nothing() {
        let (coming, _tx, mut rx) = setup();
        let _held = coming.promise();
        let mut batch: Vec<Job> = (0..MAX_BATCH as u64).map(job).collect();
        let took = gather_within(&coming, &mut rx, &mut batch, Duration::from_secs(30));
        assert!(took < Duration::from_secs(10));
        assert_eq!(batch.len(), MAX_BATCH);
    }
}
