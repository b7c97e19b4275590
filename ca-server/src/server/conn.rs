//! Connections: admission at the cap, and a deadline on every phase.
//!
//! Every accepted TCP connection is registered with its age and what it is
//! doing (requests running, requests still receiving their body, requests
//! completed). At the connection cap a new connection is always admitted:
//! the server closes, oldest first, a connection that has not completed a
//! request and is not past a body (in its TLS handshake, silent, sending
//! headers, or trickling a body) — and, when there is none, the oldest idle
//! keep-alive connection. Only when every connection is busy with an
//! authenticated request is the new one turned away. An optional
//! per-source-address limit stops one address from holding the whole cap.
//!
//! Deadlines (see `Deadlines`): the TLS handshake; the first request's
//! headers (which covers the first byte and HTTP/1-vs-2 detection); the
//! keep-alive idle time between requests (which also bounds how long a
//! response may wait for its reader); and, in `read_body`, the body at a
//! minimum rate and within a total. A watchdog per connection closes it when
//! no request is running and its idle deadline passed, whatever the
//! protocol.

use crate::metrics::metrics;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The deadlines of a connection's phases.
#[derive(Clone, Debug)]
pub struct Deadlines {
    /// TCP accept → TLS handshake complete.
    pub handshake: Duration,
    /// Handshake complete (or accept, without TLS) → the first request's
    /// headers are in.
    pub first_request: Duration,
    /// A response produced → the next request's headers are in (keep-alive
    /// idle; the response must also be read within it).
    pub idle: Duration,
    /// A request body must be whole within this.
    pub body_total: Duration,
    /// …and arrive at this rate at least, after the first second.
    pub body_min_bytes_per_sec: u64,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            handshake: Duration::from_secs(10),
            first_request: Duration::from_secs(10),
            idle: Duration::from_secs(30),
            body_total: Duration::from_secs(10),
            body_min_bytes_per_sec: 1024,
        }
    }
}

impl Deadlines {
    /// When the next body frame must have arrived, given the body started at
    /// `start` and `received` bytes came so far: the earlier of the total
    /// deadline and the minimum-rate line (one second of grace, then
    /// `received / rate` seconds).
    pub fn body_frame_deadline(&self, start: Instant, received: u64) -> Instant {
        let rate = self.body_min_bytes_per_sec.max(1);
        let by_rate =
            Duration::from_secs(1) + Duration::from_secs_f64((received as f64 + 1.0) / rate as f64);
        start + by_rate.min(self.body_total)
    }
}

/// What the registry and the watchdog know about one connection.
pub struct ConnState {
    id: u64,
    ip: IpAddr,
    /// Handlers running (requests whose headers are in, response not yet
    /// produced).
    active: AtomicUsize,
    /// Of those, the ones still receiving their body.
    receiving: AtomicUsize,
    completed: AtomicU64,
    /// Milliseconds since `epoch` when the connection last became idle.
    idle_since_ms: AtomicU64,
    epoch: Instant,
    kill: Notify,
    killed: AtomicBool,
    /// Body bytes this connection's requests hold (budget share).
    pub body_held: Arc<AtomicUsize>,
    /// Response bytes this connection has queued (budget share).
    pub response_queued: Arc<AtomicUsize>,
}

impl ConnState {
    fn new(id: u64, ip: IpAddr) -> ConnState {
        ConnState {
            id,
            ip,
            active: AtomicUsize::new(0),
            receiving: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            kill: Notify::new(),
            killed: AtomicBool::new(false),
            body_held: Arc::new(AtomicUsize::new(0)),
            response_queued: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The idle clock restarts now (handshake done).
    pub fn mark_idle_now(&self) {
        self.idle_since_ms.store(self.now_ms(), Ordering::Release);
    }

    /// A request's headers are in: it runs until the guard drops.
    pub fn request(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.receiving.fetch_add(1, Ordering::AcqRel);
        RequestGuard {
            conn: self.clone(),
            receiving: true,
        }
    }

    fn evictable(&self) -> Evictable {
        let active = self.active.load(Ordering::Acquire);
        let receiving = self.receiving.load(Ordering::Acquire);
        if self.completed.load(Ordering::Acquire) == 0 && active == receiving {
            Evictable::NothingDone
        } else if active == 0 {
            Evictable::IdleKeepAlive
        } else {
            Evictable::Busy
        }
    }

    /// When the watchdog should look again, or close now (`None`).
    fn idle_check(&self, deadlines: &Deadlines) -> Option<Duration> {
        let allowed = if self.completed.load(Ordering::Acquire) == 0 {
            deadlines.first_request
        } else {
            deadlines.idle
        };
        if self.active.load(Ordering::Acquire) > 0 {
            return Some(allowed);
        }
        let idle_for = Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.idle_since_ms.load(Ordering::Acquire)),
        );
        allowed.checked_sub(idle_for).filter(|d| !d.is_zero())
    }

    fn close(&self) {
        self.killed.store(true, Ordering::Release);
        self.kill.notify_one();
    }

    /// Resolves when the registry asks this connection to close.
    pub async fn killed(&self) {
        if self.killed.load(Ordering::Acquire) {
            return;
        }
        self.kill.notified().await;
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Evictable {
    NothingDone,
    IdleKeepAlive,
    Busy,
}

/// One request's share of its connection's state.
pub struct RequestGuard {
    conn: Arc<ConnState>,
    receiving: bool,
}

impl RequestGuard {
    /// The body is in (or was never read): the request is past the phase in
    /// which the connection may be evicted.
    pub fn body_done(&mut self) {
        if self.receiving {
            self.receiving = false;
            self.conn.receiving.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub fn conn(&self) -> &Arc<ConnState> {
        &self.conn
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.body_done();
        self.conn.completed.fetch_add(1, Ordering::AcqRel);
        self.conn.mark_idle_now();
        self.conn.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Limits on the number of connections.
#[derive(Clone, Debug)]
pub struct Admission {
    pub max_connections: usize,
    /// 0 = no per-source limit.
    pub max_connections_per_ip: usize,
}

/// Every open connection, oldest first.
pub struct Registry {
    admission: Admission,
    next_id: AtomicU64,
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    conns: BTreeMap<u64, Arc<ConnState>>,
    /// Connections not asked to close (what the cap counts).
    live: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a new connection was turned away.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    PerSource,
    AllBusy,
}

impl Registry {
    pub fn new(admission: Admission) -> Registry {
        Registry {
            admission,
            next_id: AtomicU64::new(0),
            inner: Mutex::new(RegistryInner::default()),
        }
    }

    /// Admit a connection from `peer`, closing another one if the cap is
    /// reached (see the module documentation).
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<Registered, Refused> {
        let ip = peer.ip();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let from_ip = inner.per_ip.get(&ip).copied().unwrap_or(0);
        if self.admission.max_connections_per_ip > 0
            && from_ip >= self.admission.max_connections_per_ip
        {
            metrics()
                .connections_closed
                .with_label_values(&["per_source_limit"])
                .inc();
            return Err(Refused::PerSource);
        }
        if inner.live >= self.admission.max_connections.max(1) {
            let victim = inner
                .conns
                .values()
                .filter(|c| !c.killed.load(Ordering::Acquire))
                .map(|c| (c.evictable(), c))
                .filter(|(e, _)| *e != Evictable::Busy)
                .min_by_key(|(e, c)| (*e, c.id))
                .map(|(e, c)| (e, c.clone()));
            match victim {
                Some((kind, c)) => {
                    c.close();
                    inner.live -= 1;
                    let reason = match kind {
                        Evictable::NothingDone => "evicted_no_request",
                        _ => "evicted_idle",
                    };
                    metrics()
                        .connections_closed
                        .with_label_values(&[reason])
                        .inc();
                }
                None => {
                    metrics()
                        .connections_closed
                        .with_label_values(&["cap_all_busy"])
                        .inc();
                    return Err(Refused::AllBusy);
                }
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new(id, ip));
        inner.conns.insert(id, state.clone());
        inner.live += 1;
        *inner.per_ip.entry(ip).or_insert(0) += 1;
        metrics().connections.inc();
        Ok(Registered {
            registry: self.clone(),
            state,
        })
    }

    fn remove(&self, state: &ConnState) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.conns.remove(&state.id).is_some() {
            if !state.killed.load(Ordering::Acquire) {
                inner.live -= 1;
            }
            if let Some(n) = inner.per_ip.get_mut(&state.ip) {
                *n -= 1;
                if *n == 0 {
                    inner.per_ip.remove(&state.ip);
                }
            }
            metrics().connections.dec();
        }
    }

    /// Open connections (including ones asked to close that have not yet).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .conns
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A registered connection; dropping it unregisters.
pub struct Registered {
    registry: Arc<Registry>,
    pub state: Arc<ConnState>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        // Once the registry let go of the state, a late kill is harmless.
        self.registry.remove(&self.state);
    }
}

/// Run `conn` (a connection future) until it ends, the registry asks it to
/// close, or its idle deadline passes with no request running. Returns the
/// reason it was cut, if it was.
pub async fn supervise<F: std::future::Future>(
    state: &ConnState,
    deadlines: &Deadlines,
    conn: F,
) -> Option<&'static str> {
    tokio::pin!(conn);
    loop {
        let Some(wait) = state.idle_check(deadlines) else {
            let reason = if state.completed.load(Ordering::Acquire) == 0 {
                "first_request_timeout"
            } else {
                "idle_timeout"
            };
            return Some(reason);
        };
        tokio::select! {
            _ = &mut conn => return None,
            _ = state.killed() => return Some("evicted"),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Raise the soft open-file limit to the hard limit, and say how many
/// connections the process can hold: the cap must stay below it, or at the
/// cap `accept` fails and no new client — not even a fresh, well-behaved
/// one — gets in.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read a plain struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 1000))
    }

    #[test]
    fn at_the_cap_the_oldest_connection_without_a_request_goes_first() {
        let reg = Arc::new(Registry::new(Admission {
            max_connections: 3,
            max_connections_per_ip: 0,
        }));
        let a = reg.admit(addr(1)).unwrap();
        let b = reg.admit(addr(1)).unwrap();
        let c = reg.admit(addr(1)).unwrap();
        // a completed a request and is idle; b is mid-request past its body;
        // c is silent.
        drop(a.state.request());
        let mut running = b.state.request();
        running.body_done();
        let d = reg.admit(addr(2)).unwrap();
        assert!(
            c.state.killed.load(Ordering::Acquire),
            "silent c goes first"
        );
        assert!(!a.state.killed.load(Ordering::Acquire));
        // d completes a request: no connection without one is left, so the
        // oldest idle keep-alive (a, older than d) goes next.
        drop(d.state.request());
        let e = reg.admit(addr(2)).unwrap();
        assert!(a.state.killed.load(Ordering::Acquire));
        assert!(!d.state.killed.load(Ordering::Acquire));
        // e (silent, the newest) goes before the idle d; b, busy, never.
        let _f = reg.admit(addr(2)).unwrap();
        assert!(e.state.killed.load(Ordering::Acquire));
        assert!(!d.state.killed.load(Ordering::Acquire));
        assert!(!b.state.killed.load(Ordering::Acquire));
        assert_eq!(reg.len(), 6);
        drop((c, e, a));
        assert_eq!(reg.len(), 3);
        drop(running);
        drop((b, d));
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn a_body_in_progress_is_evictable_but_an_authenticated_request_is_not() {
        let reg = Arc::new(Registry::new(Admission {
            max_connections: 1,
            max_connections_per_ip: 0,
        }));
        let a = reg.admit(addr(1)).unwrap();
        let trickling = a.state.request();
        let b = reg.admit(addr(1)).unwrap();
        assert!(a.state.killed.load(Ordering::Acquire));
        let mut working = b.state.request();
        working.body_done();
        assert_eq!(reg.admit(addr(1)).err(), Some(Refused::AllBusy));
        drop((trickling, working));
    }

    #[test]
    fn per_source_limit() {
        let reg = Arc::new(Registry::new(Admission {
            max_connections: 100,
            max_connections_per_ip: 2,
        }));
        let _a = reg.admit(addr(1)).unwrap();
        let b = reg.admit(addr(1)).unwrap();
        assert_eq!(reg.admit(addr(1)).err(), Some(Refused::PerSource));
        let _c = reg.admit(addr(2)).unwrap();
        drop(b);
        assert!(reg.admit(addr(1)).is_ok());
    }

    #[test]
    fn idle_deadline_counts_from_the_last_response() {
        let d = Deadlines {
            first_request: Duration::from_millis(50),
            idle: Duration::from_secs(100),
            ..Deadlines::default()
        };
        let s = Arc::new(ConnState::new(0, addr(1).ip()));
        s.mark_idle_now();
        assert!(s.idle_check(&d).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.idle_check(&d).is_none(), "first request deadline passed");
        drop(s.request());
        assert!(s.idle_check(&d).unwrap() > Duration::from_secs(99));
    }

    #[test]
    fn body_deadline_follows_the_rate_and_the_total() {
        let d = Deadlines {
            body_total: Duration::from_secs(10),
            body_min_bytes_per_sec: 1000,
            ..Deadlines::default()
        };
        let t0 = Instant::now();
        assert_eq!(
            d.body_frame_deadline(t0, 0),
            t0 + Duration::from_millis(1001)
        );
        assert_eq!(d.body_frame_deadline(t0, 1999), t0 + Duration::from_secs(3));
        assert_eq!(
            d.body_frame_deadline(t0, 1_000_000),
            t0 + Duration::from_secs(10)
        );
    }
}
