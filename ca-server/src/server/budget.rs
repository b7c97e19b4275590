//! Memory budgets for what peers make the server hold: request body bytes
//! buffered before the request is handled to completion, and response bytes
//! queued for clients that do not read them.
//!
//! Both are byte-counting semaphores with a global size and a per-connection
//! share (the connection's own counter lives in `conn::ConnState`). A body
//! that cannot get room evicts the oldest *incomplete* bodies of other
//! requests (a slow body is the one an attacker holds; a fresh client's body
//! arrives in one flight and is the newest), then waits a bounded time, then
//! is refused with `busy`. A response that cannot get room is replaced by a
//! small `busy` error before anything is queued.

use crate::metrics::metrics;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Sizes of the budgets.
#[derive(Clone, Debug)]
pub struct BudgetLimits {
    /// All request body bytes buffered at once, server-wide.
    pub body_bytes: usize,
    /// Request body bytes buffered at once by one connection (HTTP/2 can
    /// carry several bodies).
    pub connection_body_bytes: usize,
    /// All response bytes queued for slow readers, server-wide.
    pub response_bytes: usize,
    /// Response bytes queued by one connection.
    pub connection_response_bytes: usize,
    /// How long a body waits for room after evicting older bodies.
    pub body_wait: Duration,
}

impl Default for BudgetLimits {
    fn default() -> Self {
        BudgetLimits {
            body_bytes: 16 * 1024 * 1024,
            connection_body_bytes: 256 * 1024,
            response_bytes: 64 * 1024 * 1024,
            connection_response_bytes: 4 * 1024 * 1024,
            body_wait: Duration::from_secs(1),
        }
    }
}

/// One body being received, as the eviction list sees it.
struct Incoming {
    held: AtomicUsize,
    evict: Notify,
    evicted: AtomicBool,
}

pub struct Budgets {
    pub limits: BudgetLimits,
    body: Arc<Semaphore>,
    response: Arc<Semaphore>,
    next_body: AtomicU64,
    /// Bodies still being received, oldest first.
    incoming: Mutex<BTreeMap<u64, Arc<Incoming>>>,
}

/// Why a body could not get room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRefusal {
    /// The connection's own share is spent.
    Connection,
    /// The global budget stayed spent for the whole wait.
    Global,
    /// This body was evicted to make room for a newer one.
    Evicted,
}

impl Budgets {
    pub fn new(limits: BudgetLimits) -> Budgets {
        Budgets {
            body: Arc::new(Semaphore::new(clamp(limits.body_bytes) as usize)),
            response: Arc::new(Semaphore::new(clamp(limits.response_bytes) as usize)),
            limits,
            next_body: AtomicU64::new(0),
            incoming: Mutex::new(BTreeMap::new()),
        }
    }

    /// Start receiving one body for a connection whose body counter is
    /// `conn_held`.
    pub fn body(self: &Arc<Self>, conn_held: Arc<AtomicUsize>) -> BodyReservation {
        let id = self.next_body.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Incoming {
            held: AtomicUsize::new(0),
            evict: Notify::new(),
            evicted: AtomicBool::new(false),
        });
        self.incoming
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, entry.clone());
        BodyReservation {
            budgets: self.clone(),
            id,
            entry,
            permits: None,
            conn_held,
            conn_bytes: 0,
            listed: true,
        }
    }

    /// Room for a response of `len` bytes, or None when the global budget or
    /// the connection's share (`conn_queued`) is spent.
    pub fn response(&self, len: usize, conn_queued: &Arc<AtomicUsize>) -> Option<ResponseBytes> {
        if len == 0 {
            return Some(ResponseBytes {
                permit: None,
                conn_queued: conn_queued.clone(),
                len: 0,
            });
        }
        let before = conn_queued.fetch_add(len, Ordering::AcqRel);
        if before + len > self.limits.connection_response_bytes {
            conn_queued.fetch_sub(len, Ordering::AcqRel);
            metrics()
                .budget_refusals
                .with_label_values(&["connection_response_bytes"])
                .inc();
            return None;
        }
        match self.response.clone().try_acquire_many_owned(clamp(len)) {
            Ok(permit) => {
                metrics().response_bytes_queued.add(len as i64);
                Some(ResponseBytes {
                    permit: Some(permit),
                    conn_queued: conn_queued.clone(),
                    len,
                })
            }
            Err(_) => {
                conn_queued.fetch_sub(len, Ordering::AcqRel);
                metrics()
                    .budget_refusals
                    .with_label_values(&["response_bytes"])
                    .inc();
                None
            }
        }
    }

    /// Ask the oldest incomplete bodies other than `me` to give up, until
    /// at least `needed` bytes are being released.
    fn evict_for(&self, me: u64, needed: usize) {
        let list = self.incoming.lock().unwrap_or_else(|p| p.into_inner());
        let mut freed = 0usize;
        for (id, entry) in list.iter() {
            if freed >= needed {
                break;
            }
            if *id == me || entry.evicted.load(Ordering::Acquire) {
                continue;
            }
            let held = entry.held.load(Ordering::Acquire);
            if held == 0 {
                continue;
            }
            entry.evicted.store(true, Ordering::Release);
            entry.evict.notify_one();
            freed += held;
        }
    }

    pub fn body_available(&self) -> usize {
        self.body.available_permits()
    }
}

fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The room one body holds while it is received and handled. Dropping it
/// gives the room back.
pub struct BodyReservation {
    budgets: Arc<Budgets>,
    id: u64,
    entry: Arc<Incoming>,
    permits: Option<OwnedSemaphorePermit>,
    conn_held: Arc<AtomicUsize>,
    conn_bytes: usize,
    listed: bool,
}

impl BodyReservation {
    /// Take room for `n` more bytes.
    pub async fn grow(&mut self, n: usize) -> Result<(), BodyRefusal> {
        if n == 0 {
            return Ok(());
        }
        if self.entry.evicted.load(Ordering::Acquire) {
            return Err(BodyRefusal::Evicted);
        }
        let before = self.conn_held.fetch_add(n, Ordering::AcqRel);
        if before + n > self.budgets.limits.connection_body_bytes {
            self.conn_held.fetch_sub(n, Ordering::AcqRel);
            metrics()
                .budget_refusals
                .with_label_values(&["connection_body_bytes"])
                .inc();
            return Err(BodyRefusal::Connection);
        }
        self.conn_bytes += n;
        let permit = match self.budgets.body.clone().try_acquire_many_owned(clamp(n)) {
            Ok(p) => p,
            Err(_) => {
                self.budgets.evict_for(self.id, n);
                let waited = tokio::time::timeout(
                    self.budgets.limits.body_wait,
                    self.budgets.body.clone().acquire_many_owned(clamp(n)),
                )
                .await;
                match waited {
                    Ok(Ok(p)) => p,
                    _ => {
                        metrics()
                            .budget_refusals
                            .with_label_values(&["body_bytes"])
                            .inc();
                        return Err(BodyRefusal::Global);
                    }
                }
            }
        };
        metrics().body_bytes_buffered.add(n as i64);
        match &mut self.permits {
            Some(p) => p.merge(permit),
            None => self.permits = Some(permit),
        }
        self.entry.held.fetch_add(n, Ordering::AcqRel);
        Ok(())
    }

    /// Resolves when this body is asked to give up its room.
    pub async fn evicted(&self) {
        if self.entry.evicted.load(Ordering::Acquire) {
            return;
        }
        self.entry.evict.notified().await;
    }

    /// The body is complete: it keeps its room until dropped but is no
    /// longer a candidate for eviction.
    pub fn complete(&mut self) {
        self.unlist();
    }

    fn unlist(&mut self) {
        if self.listed {
            self.listed = false;
            self.budgets
                .incoming
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.id);
        }
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        self.unlist();
        self.conn_held.fetch_sub(self.conn_bytes, Ordering::AcqRel);
        if let Some(p) = &self.permits {
            metrics().body_bytes_buffered.sub(p.num_permits() as i64);
        }
    }
}

/// Room held by one queued response until its body is dropped (sent, or
/// the stream or connection went away).
pub struct ResponseBytes {
    permit: Option<OwnedSemaphorePermit>,
    conn_queued: Arc<AtomicUsize>,
    len: usize,
}

impl Drop for ResponseBytes {
    fn drop(&mut self) {
        self.conn_queued.fetch_sub(self.len, Ordering::AcqRel);
        if self.permit.is_some() {
            metrics().response_bytes_queued.sub(self.len as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Arc<Budgets> {
        Arc::new(Budgets::new(BudgetLimits {
            body_bytes: 1000,
            connection_body_bytes: 600,
            response_bytes: 1000,
            connection_response_bytes: 600,
            body_wait: Duration::from_millis(200),
        }))
    }

    #[tokio::test]
    async fn connection_share_then_global_with_eviction_of_the_oldest() {
        let b = small();
        let c1 = Arc::new(AtomicUsize::new(0));
        let c2 = Arc::new(AtomicUsize::new(0));
        let mut old = b.body(c1.clone());
        old.grow(500).await.unwrap();
        // The connection's share is 600.
        let mut same_conn = b.body(c1.clone());
        assert_eq!(same_conn.grow(200).await, Err(BodyRefusal::Connection));
        drop(same_conn);
        assert_eq!(c1.load(Ordering::Acquire), 500);
        let mut mid = b.body(c2.clone());
        mid.grow(400).await.unwrap();
        // 100 left; a new body needing 300 evicts the oldest (`old`).
        let c3 = Arc::new(AtomicUsize::new(0));
        let mut fresh = b.body(c3.clone());
        let evictor = tokio::spawn(async move {
            let r = fresh.grow(300).await;
            (r, fresh)
        });
        tokio::time::timeout(Duration::from_secs(1), old.evicted())
            .await
            .expect("the oldest incomplete body is evicted");
        assert_eq!(old.grow(1).await, Err(BodyRefusal::Evicted));
        drop(old);
        let (r, fresh) = evictor.await.unwrap();
        assert_eq!(r, Ok(()));
        assert_eq!(b.body_available(), 300);
        drop(fresh);
        drop(mid);
        assert_eq!(b.body_available(), 1000);
        assert_eq!(c1.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn completed_bodies_are_not_evicted_and_the_wait_is_bounded() {
        let b = small();
        let c1 = Arc::new(AtomicUsize::new(0));
        let mut done = b.body(c1.clone());
        done.grow(600).await.unwrap();
        done.complete();
        let c2 = Arc::new(AtomicUsize::new(0));
        let mut other = b.body(c2.clone());
        other.grow(400).await.unwrap();
        other.complete();
        let mut late = b.body(Arc::new(AtomicUsize::new(0)));
        let started = std::time::Instant::now();
        assert_eq!(late.grow(10).await, Err(BodyRefusal::Global));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn responses_share_then_global() {
        let b = small();
        let c1 = Arc::new(AtomicUsize::new(0));
        let r1 = b.response(500, &c1).unwrap();
        assert!(b.response(200, &c1).is_none(), "connection share");
        let c2 = Arc::new(AtomicUsize::new(0));
        let r2 = b.response(500, &c2).unwrap();
        assert!(b.response(1, &Arc::new(AtomicUsize::new(0))).is_none());
        drop(r1);
        assert_eq!(c1.load(Ordering::Acquire), 0);
        assert!(b.response(400, &c1).is_some());
        drop(r2);
    }
}
