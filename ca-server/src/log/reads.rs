//! Log reads for the HTTP API (`entries`, `proof`), kept from starving
//! signing:
//! - they run on a few dedicated threads (never on the async workers) at
//!   nice 19, so a signing thread that wakes wins the CPU over a reader;
//! - together they use at most a set share of one CPU (`read_cpu_percent`,
//!   default 5%): each job's thread CPU time is charged to a shared clock,
//!   and readers wait while it runs ahead. Priority alone is not enough
//!   where "idle" CPU is not free (a VM whose host caps it, a cgroup quota
//!   or autogroup share that signing shares with the readers);
//! - jobs wait in a bounded queue; a full queue is refused at once (503
//!   `busy`), not buffered;
//! - an `entries` page is bounded in bytes as well as in entries, so one read
//!   costs bounded CPU and memory.
//!
//! Not `SCHED_IDLE`: a reader preempted while it holds something signing
//! needs (an allocator arena, the kernel's mm lock during munmap, the
//! published-state lock) would then wait for a truly idle CPU, which a busy
//! server never has; nice 19 bounds that wait.

use super::record::{self, KIND_ENTRY};
use super::LogError;
use crate::config::LogConfig;
use std::io::Read;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most entries in one `entries` page, whatever their size.
pub const MAX_PAGE_ENTRIES: u64 = 1000;

/// How the log's read API is served (`[log]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadLimits {
    /// `entries` and `proof` without authentication.
    pub public: bool,
    /// Reads running at once (= reader threads).
    pub threads: usize,
    /// Reads waiting for a thread; more are refused (503 `busy`).
    pub queue: usize,
    /// Entry bytes in one `entries` page (at least one entry is always sent).
    pub page_bytes: usize,
    /// Percent of one CPU that all reads together may use on average.
    pub cpu_percent: u32,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits::from_config(&LogConfig::default())
    }
}

impl ReadLimits {
    pub fn from_config(config: &LogConfig) -> ReadLimits {
        ReadLimits {
            public: config.public_reads,
            threads: config.read_threads.max(1),
            queue: config.read_queue,
            page_bytes: config.page_bytes,
            cpu_percent: config.read_cpu_percent.max(1),
        }
    }
}

/// Why a read did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadRefused {
    /// The queue is full: try again later.
    Busy,
    /// The reader threads could not be started or have gone.
    Stopped,
}

type Job = Box<dyn FnOnce() + Send>;

/// The reader threads and their queue, started at the first read.
pub(crate) struct ReadPool {
    pub limits: ReadLimits,
    sender: Mutex<Option<SyncSender<Job>>>,
}

/// The readers' CPU budget as a clock: every job pushes `free_at` forward
/// by its CPU time divided by the share, and no job starts before
/// `free_at`. Idle time earns no credit, so the share holds over any window
/// longer than a few jobs (each job is bounded: one page or one proof).
pub(crate) struct CpuBudget {
    /// CPUs the readers may use on average (0.25 = a quarter of one).
    share: f64,
    free_at: Mutex<Instant>,
}

impl CpuBudget {
    pub fn new(percent: u32) -> CpuBudget {
        CpuBudget {
            share: f64::from(percent.max(1)) / 100.0,
            free_at: Mutex::new(Instant::now()),
        }
    }

    /// How long a job must wait before it may start.
    fn wait(&self, now: Instant) -> Duration {
        self.free_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .saturating_duration_since(now)
    }

    /// Charge a job that started at `started` and used `cpu` of CPU time.
    fn charge(&self, started: Instant, cpu: Duration) {
        let mut free_at = self.free_at.lock().unwrap_or_else(|p| p.into_inner());
        let from = (*free_at).max(started);
        *free_at = from + cpu.div_f64(self.share);
    }
}

impl ReadPool {
    pub fn new(limits: ReadLimits) -> ReadPool {
        ReadPool {
            limits,
            sender: Mutex::new(None),
        }
    }

    /// Run `f` on a reader thread and wait for its result (without holding
    /// an async worker). A caller that goes away while its job waits costs
    /// nothing: the job is skipped.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ReadRefused> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if !tx.is_closed() {
                let _ = tx.send(f());
            }
        });
        self.submit(job)?;
        rx.await.map_err(|_| ReadRefused::Stopped)
    }

    fn submit(&self, job: Job) -> Result<(), ReadRefused> {
        let mut sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        if sender.is_none() {
            *sender = Some(self.start().map_err(|e| {
                tracing::error!(
                    event = "log_readers_failed",
                    "starting log reader threads: {e}"
                );
                ReadRefused::Stopped
            })?);
        }
        let Some(queue) = sender.as_ref() else {
            return Err(ReadRefused::Stopped);
        };
        match queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(ReadRefused::Busy),
            Err(TrySendError::Disconnected(_)) => {
                *sender = None;
                Err(ReadRefused::Stopped)
            }
        }
    }

    fn start(&self) -> std::io::Result<SyncSender<Job>> {
        let (sender, receiver) = sync_channel::<Job>(self.limits.queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let budget = Arc::new(CpuBudget::new(self.limits.cpu_percent));
        for i in 0..self.limits.threads {
            let (receiver, budget) = (receiver.clone(), budget.clone());
            std::thread::Builder::new()
                .name(format!("log-reader-{i}"))
                .spawn(move || reader_thread(&receiver, &budget))?;
        }
        Ok(sender)
    }
}

/// Take jobs until the pool is dropped, within the CPU budget, at the
/// lowest CPU priority: reads use only what signing leaves idle, and not
/// all of that.
fn reader_thread(receiver: &Mutex<Receiver<Job>>, budget: &CpuBudget) {
    crate::priority::nice("log-reader");
    loop {
        let job = receiver.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(job) = job else { return };
        let wait = budget.wait(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        let started = Instant::now();
        let cpu_before = thread_cpu_time();
        job();
        budget.charge(started, thread_cpu_time().saturating_sub(cpu_before));
    }
}

/// CPU time used by the calling thread so far.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// One `entries` page.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    /// `(seq, exact entry bytes)` in order.
    pub entries: Vec<(u64, Vec<u8>)>,
    /// The first entry not sent, when the page stopped (count or byte budget)
    /// before the end of what was asked; `None` when the range is complete.
    pub next: Option<u64>,
    /// The signed tree size the page was read against.
    pub tree_size: u64,
}

/// Walk `reader`, positioned at the record of entry `from_seq`, and collect
/// entries `start..stop`, stopping early once `max_bytes` of entry bytes are
/// collected (the first entry is always taken). Returns the entries and
/// whether `stop` was reached.
pub(crate) fn walk_range(
    path: &std::path::Path,
    reader: impl Read,
    from_seq: u64,
    start: u64,
    stop: u64,
    max_bytes: usize,
) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
    let mut out = Vec::with_capacity(stop.saturating_sub(start).min(1024) as usize);
    if start >= stop {
        return Ok(out);
    }
    let mut seq = from_seq;
    let mut bytes = 0usize;
    // `Visit(true)`: stop reached; `Visit(false)`: the byte budget is spent.
    let walked = record::for_each(std::io::BufReader::new(reader), |kind, _, payload| {
        if kind != KIND_ENTRY {
            return Ok(());
        }
        if seq >= start {
            if !out.is_empty() && bytes.saturating_add(payload.len()) > max_bytes {
                return Err(false);
            }
            bytes = bytes.saturating_add(payload.len());
            out.push((seq, payload.to_vec()));
        }
        seq += 1;
        // Stop as soon as `stop` is reached: what follows may be a batch
        // that is still being written.
        if seq >= stop {
            return Err(true);
        }
        Ok(())
    });
    match walked {
        Err(record::WalkError::Visit(_)) => Ok(out),
        Err(record::WalkError::Io(source)) => Err(LogError::Io {
            path: path.display().to_string(),
            source,
        }),
        Ok(_) => Err(LogError::Corrupt(format!(
            "entries {start}..{stop} end early in the file"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::{encode, KIND_TREE_HEAD};

    /// A file of `n` entries of `size` bytes each, a tree head after every
    /// third; returns it and the offset of entry 4's record.
    fn file(n: u64, size: usize) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut at4 = 0;
        for seq in 0..n {
            if seq == 4 {
                at4 = out.len();
            }
            let mut payload = format!("{seq:08}").into_bytes();
            payload.resize(size, b'x');
            encode(KIND_ENTRY, &payload, &mut out);
            if seq % 3 == 2 {
                encode(KIND_TREE_HEAD, b"{}", &mut out);
            }
        }
        (out, at4)
    }

    fn seqs(page: &[(u64, Vec<u8>)]) -> Vec<u64> {
        page.iter().map(|(s, _)| *s).collect()
    }

    #[test]
    fn pages_stop_at_the_range_or_the_byte_budget_whichever_comes_first() {
        let (bytes, at4) = file(20, 100);
        let p = std::path::Path::new("log.dat");
        // the whole range fits
        let all = walk_range(p, &bytes[..], 0, 2, 9, usize::MAX).unwrap();
        assert_eq!(seqs(&all), (2..9).collect::<Vec<_>>());
        assert!(all[0].1.starts_with(b"00000002"));
        // the budget cuts it: 350 bytes hold three 100-byte entries
        assert_eq!(
            seqs(&walk_range(p, &bytes[..], 0, 2, 20, 350).unwrap()),
            vec![2, 3, 4]
        );
        // an entry larger than the budget still comes alone: progress
        assert_eq!(
            seqs(&walk_range(p, &bytes[..], 0, 5, 20, 10).unwrap()),
            vec![5]
        );
        // starting from a later record (a checkpoint)
        assert_eq!(
            seqs(&walk_range(p, &bytes[at4..], 4, 6, 8, usize::MAX).unwrap()),
            vec![6, 7]
        );
        // empty and inverted ranges read nothing
        assert!(walk_range(p, &bytes[..], 0, 7, 7, 10).unwrap().is_empty());
        assert!(walk_range(p, &bytes[..], 0, 9, 3, 10).unwrap().is_empty());
        // a file that ends before the range did is an error, not a short page
        assert!(matches!(
            walk_range(p, &bytes[..], 0, 15, 25, usize::MAX),
            Err(LogError::Corrupt(_))
        ));
    }

    #[test]
    fn a_full_queue_is_refused_and_every_accepted_read_runs() {
        let pool = ReadPool::new(ReadLimits {
            public: false,
            threads: 1,
            queue: 1,
            page_bytes: 1,
            cpu_percent: 100,
        });
        let (done, finished) = std::sync::mpsc::channel::<u32>();
        // hold the one thread until released
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let first = done.clone();
        pool.submit(Box::new(move || {
            let _ = started_tx.send(());
            let _ = wait.recv();
            let _ = first.send(1);
        }))
        .unwrap();
        started.recv().unwrap();
        // one may wait in the queue; the next is refused at once
        let second = done.clone();
        pool.submit(Box::new(move || {
            let _ = second.send(2);
        }))
        .unwrap();
        let refused = pool.submit(Box::new(|| {}));
        assert_eq!(refused, Err(ReadRefused::Busy));
        release.send(()).unwrap();
        assert_eq!(finished.recv().unwrap(), 1);
        assert_eq!(finished.recv().unwrap(), 2);
        // and the async face waits for its result
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(runtime.block_on(pool.run(|| 4)), Ok(4));
    }

    #[test]
    fn the_cpu_budget_spaces_jobs_by_their_cost_over_the_share() {
        let budget = CpuBudget::new(25);
        let t0 = Instant::now();
        assert_eq!(budget.wait(t0), Duration::ZERO);
        // a 10 ms job at a quarter CPU: the next may start 40 ms after it began
        budget.charge(t0, Duration::from_millis(10));
        assert_eq!(budget.wait(t0), Duration::from_millis(40));
        // a second job charged meanwhile (another thread) queues behind it
        budget.charge(t0, Duration::from_millis(5));
        assert_eq!(budget.wait(t0), Duration::from_millis(60));
        // idle time earns no credit: after a long pause the clock restarts
        let later = t0 + Duration::from_secs(10);
        assert_eq!(budget.wait(later), Duration::ZERO);
        budget.charge(later, Duration::from_millis(1));
        assert_eq!(budget.wait(later), Duration::from_millis(4));
        assert!(thread_cpu_time() > Duration::ZERO);
    }
}
