//! The load generator. C workers (tokio tasks), each with its own keep-alive
//! HTTP/1.1 connection (plain or TLS), send sign requests for the CSR set in
//! turn for a warm-up and then D measured seconds, either closed-loop (next
//! request as soon as the last one answered: peak throughput) or open-loop at
//! a fixed total rate (latency under a given load: send slots are due at
//! fixed times, released on time by [`crate::pacer::Pacer`], a free worker
//! takes the next one, and latency is measured from the slot's due time so
//! that queueing is not hidden).
//!
//! Each worker keeps its own latency vector and counters (no locks in the
//! hot path; the open loop shares one atomic slot counter); they are merged
//! after the run. About 1% of successful
//! responses are kept for validation after the run.
//!
//! [`soak`] is the long open loop: the same slots and connections, but each
//! answer is counted in the fixed-length window in which it completed
//! (shared counters; a lock per answer is nothing at soak rates), and at
//! every window boundary a caller's probe runs (the server's resident set).

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use ca_proto::auth::{new_nonce, sign_request, Credentials};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{handshake, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::csrs::Csr;
use crate::pacer::Pacer;

/// Keep one response in this many for validation.
const SAMPLE_EVERY: u64 = 100;
/// At most this many kept responses per worker.
const SAMPLE_CAP: usize = 400;
/// A request (or connect) that takes longer than this is an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Which API the requests speak.
#[derive(Clone)]
pub enum Protocol {
    /// Trellis `POST /v1/sign` with a `TRELLIS-HMAC-SHA256` header.
    Native {
        creds: Credentials,
        class: String,
        profile: String,
    },
    /// CFSSL `POST /api/v1/cfssl/authsign` (HMAC token over the inner request).
    Cfssl {
        secret: Vec<u8>,
        label: String,
        profile: String,
    },
}

impl Protocol {
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Native { .. } => "native /v1/sign",
            Protocol::Cfssl { .. } => "cfssl authsign",
        }
    }

    /// The part of each request that does not depend on time: the native
    /// JSON body, or the CFSSL inner request that the token covers.
    pub(crate) fn prepare(&self, csr: &Csr) -> Bytes {
        let value = match self {
            Protocol::Native { class, profile, .. } => serde_json::json!({
                "class": class, "profile": profile, "csr": csr.pem,
            }),
            Protocol::Cfssl { label, profile, .. } => serde_json::json!({
                "certificate_request": csr.pem, "label": label,
                "profile": profile, "hosts": [csr.name],
            }),
        };
        Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
    }

    fn request(&self, prepared: &Bytes) -> Result<Request<Full<Bytes>>> {
        let now = unix_now();
        let builder = Request::post(match self {
            Protocol::Native { .. } => ca_proto::native::PATH_SIGN,
            Protocol::Cfssl { .. } => ca_proto::cfssl::PATH_AUTHSIGN,
        })
        .header(HOST, "localhost")
        .header(CONTENT_TYPE, "application/json");
        let request = match self {
            Protocol::Native { creds, .. } => {
                let auth = sign_request(
                    creds,
                    "POST",
                    ca_proto::native::PATH_SIGN,
                    prepared,
                    now,
                    &new_nonce(),
                );
                builder
                    .header(AUTHORIZATION, auth)
                    .body(Full::new(prepared.clone()))?
            }
            Protocol::Cfssl { secret, .. } => {
                let body = ca_proto::cfssl::make_authsign(secret, prepared, now);
                builder.body(Full::new(Bytes::from(body)))?
            }
        };
        Ok(request)
    }

    /// Whether a 200 response body reports success (CFSSL can say
    /// `"success":false` in a 200; Go and serde both emit no spaces).
    fn succeeded(&self, body: &[u8]) -> bool {
        match self {
            Protocol::Native { .. } => true,
            Protocol::Cfssl { .. } => {
                const NEEDLE: &[u8] = b"\"success\":true";
                body.windows(NEEDLE.len()).any(|w| w == NEEDLE)
            }
        }
    }

    /// The leaf certificate PEM from a successful response body.
    pub fn certificate(&self, body: &[u8]) -> Result<String> {
        let value: serde_json::Value = serde_json::from_slice(body)?;
        let cert = match self {
            Protocol::Native { .. } => &value["certificate"],
            Protocol::Cfssl { .. } => &value["result"]["certificate"],
        };
        cert.as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no certificate in the response"))
    }
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Where to send the requests.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// TLS with this client configuration (server name `localhost`), or
    /// plain HTTP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub protocol: Protocol,
}

#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Each worker sends its next request when the last one answered.
    Closed,
    /// This many requests per second in total, evenly spread.
    Open { rate: f64 },
}

#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub clients: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub pace: Pace,
    /// Worker threads of the generator's runtime.
    pub threads: usize,
}

/// A kept response: the CSR it was for and the body.
pub struct Sample {
    pub csr: usize,
    pub body: Bytes,
}

pub struct Outcome {
    /// Successful requests that started and finished in the window.
    pub ok: u64,
    /// Failed requests that started in the window.
    pub errors: u64,
    pub first_error: Option<String>,
    pub window: Duration,
    /// Sorted, microseconds.
    pub latencies_us: Vec<u32>,
    pub samples: Vec<Sample>,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }
}

#[derive(Default)]
struct WorkerOut {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
    samples: Vec<Sample>,
}

enum Failure {
    /// The connection is unusable; open a new one.
    Connection(String),
    /// The server answered, but not with a certificate.
    Answer(String),
}

/// Drive `endpoint` with `csrs` as `spec` says. Blocks; builds its own runtime.
pub fn run(endpoint: &Endpoint, csrs: &[Csr], spec: Spec) -> Result<Outcome> {
    if csrs.is_empty() || spec.clients == 0 {
        return Err(anyhow!("need at least one CSR and one client"));
    }
    let prepared: Arc<Vec<Bytes>> =
        Arc::new(csrs.iter().map(|c| endpoint.protocol.prepare(c)).collect());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(spec.threads.max(1))
        .enable_all()
        .build()?;
    let outs = runtime.block_on(async {
        let t0 = Instant::now();
        let pacer = match spec.pace {
            Pace::Open { rate } => Some(Pacer::start(
                t0.into_std(),
                Duration::from_secs_f64(1.0 / rate.max(0.001)),
                (t0 + spec.warmup + spec.measure).into_std(),
            )?),
            Pace::Closed => None,
        };
        let next_slot = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..spec.clients)
            .map(|id| {
                let (endpoint, prepared) = (endpoint.clone(), prepared.clone());
                let (next_slot, pacer) = (next_slot.clone(), pacer.clone());
                tokio::spawn(async move {
                    worker(
                        id,
                        &endpoint,
                        &prepared,
                        spec,
                        t0,
                        &next_slot,
                        pacer.as_deref(),
                    )
                    .await
                })
            })
            .collect();
        let mut outs = Vec::new();
        for task in tasks {
            outs.push(task.await.context("load worker panicked")?);
        }
        Ok::<_, anyhow::Error>(outs)
    })?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    let mut outcome = Outcome {
        ok: 0,
        errors: 0,
        first_error: None,
        window: spec.measure,
        latencies_us: Vec::new(),
        samples: Vec::new(),
    };
    for out in outs {
        outcome.ok += out.ok;
        outcome.errors += out.errors;
        if outcome.first_error.is_none() {
            outcome.first_error = out.first_error;
        }
        outcome.latencies_us.extend(out.latencies_us);
        outcome.samples.extend(out.samples);
    }
    outcome.latencies_us.sort_unstable();
    Ok(outcome)
}

/// One request to check that a target works before it is measured.
pub fn probe(endpoint: &Endpoint, csr: &Csr) -> Result<Bytes> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut sender = connect(endpoint).await?;
        let prepared = endpoint.protocol.prepare(csr);
        match send(&mut sender, &endpoint.protocol, &prepared).await {
            Ok(body) => Ok(body),
            Err(Failure::Connection(e) | Failure::Answer(e)) => Err(anyhow!(e)),
        }
    })
}

async fn worker(
    id: usize,
    endpoint: &Endpoint,
    prepared: &[Bytes],
    spec: Spec,
    t0: Instant,
    next_slot: &AtomicU64,
    pacer: Option<&Pacer>,
) -> WorkerOut {
    let warm_end = t0 + spec.warmup;
    let end = warm_end + spec.measure;
    let mut out = WorkerOut {
        latencies_us: Vec::with_capacity(1 << 14),
        ..Default::default()
    };
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let mut k = 0usize;
    loop {
        // Open loop: send slot k is due at t0 + k/rate; a free worker takes
        // the next slot, so a slow answer on one connection does not hold
        // back the schedule while other connections are idle.
        let (start, index) = match pacer {
            None => {
                k += 1;
                (
                    Instant::now(),
                    (id + (k - 1) * spec.clients) % prepared.len(),
                )
            }
            Some(pacer) => {
                let slot = next_slot.fetch_add(1, Ordering::Relaxed);
                let due = Instant::from_std(pacer.due(slot));
                if due >= end {
                    break;
                }
                pacer.wait(slot).await;
                (due, slot as usize % prepared.len())
            }
        };
        if start >= end {
            break;
        }
        let in_window = start >= warm_end;
        let result = match &mut sender {
            Some(s) => send(s, &endpoint.protocol, &prepared[index]).await,
            None => match connect(endpoint).await {
                Ok(s) => send(sender.insert(s), &endpoint.protocol, &prepared[index]).await,
                Err(e) => Err(Failure::Connection(format!("connect: {e:#}"))),
            },
        };
        let done = Instant::now();
        match result {
            Ok(body) => {
                if in_window && done <= end {
                    out.ok += 1;
                    let us = done.saturating_duration_since(start).as_micros();
                    out.latencies_us.push(us.min(u32::MAX as u128) as u32);
                    if out.ok % SAMPLE_EVERY == 1 && out.samples.len() < SAMPLE_CAP {
                        out.samples.push(Sample { csr: index, body });
                    }
                }
            }
            Err(failure) => {
                let message = match failure {
                    Failure::Connection(m) => {
                        sender = None;
                        // Do not spin on a refused connection.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        m
                    }
                    Failure::Answer(m) => m,
                };
                if in_window {
                    out.errors += 1;
                    out.first_error.get_or_insert(message);
                }
            }
        }
    }
    out
}

async fn connect(endpoint: &Endpoint) -> Result<SendRequest<Full<Bytes>>> {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let tcp = TcpStream::connect(endpoint.addr).await?;
        tcp.set_nodelay(true)?;
        let sender = match &endpoint.tls {
            Some(config) => {
                let name = rustls_pki_types::ServerName::try_from("localhost")?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await?;
                let (sender, conn) = handshake(TokioIo::new(tls)).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender
            }
            None => {
                let (sender, conn) = handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender
            }
        };
        Ok(sender)
    })
    .await
    .map_err(|_| anyhow!("connect timed out"))?
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    protocol: &Protocol,
    prepared: &Bytes,
) -> Result<Bytes, Failure> {
    let request = protocol
        .request(prepared)
        .map_err(|e| Failure::Answer(format!("building the request: {e}")))?;
    let exchange = async {
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    };
    let (status, body) = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Err(_) => return Err(Failure::Connection("request timed out".into())),
        Ok(Err(e)) => return Err(Failure::Connection(format!("HTTP: {e}"))),
        Ok(Ok(answer)) => answer,
    };
    if status != StatusCode::OK || !protocol.succeeded(&body) {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).to_string();
        return Err(Failure::Answer(format!("HTTP {}: {text}", status.as_u16())));
    }
    Ok(body)
}

/// A soak: open loop at `rate` for `warmup` and then `windows` windows of
/// `window` each, sending at most `max_requests` requests in all.
#[derive(Clone, Copy, Debug)]
pub struct SoakSpec {
    pub clients: usize,
    pub rate: f64,
    pub warmup: Duration,
    pub window: Duration,
    pub windows: usize,
    pub max_requests: u64,
    pub threads: usize,
}

/// One window of a soak: answers that completed in it.
pub struct Window {
    pub ok: u64,
    pub errors: u64,
    /// Sorted, microseconds (from each request's due time).
    pub latencies_us: Vec<u32>,
    /// What the boundary probe returned at the window's end.
    pub probe: u64,
}

pub struct SoakOutcome {
    pub warmup_ok: u64,
    pub warmup_errors: u64,
    /// The probe at the end of the warm-up.
    pub start_probe: u64,
    /// Complete windows (fewer than asked when the run was stopped).
    pub windows: Vec<Window>,
    /// Requests sent (slots taken), warm-up included.
    pub sent: u64,
    pub first_error: Option<String>,
    /// Why the run stopped early (the probe failed), if it did.
    pub stopped: Option<String>,
    pub samples: Vec<Sample>,
}

/// Keep one soak answer in this many for validation, at most this many.
const SOAK_SAMPLE_EVERY: u64 = 1000;
const SOAK_SAMPLE_CAP: usize = 200;

#[derive(Default)]
struct Acc {
    ok: AtomicU64,
    errors: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

impl Acc {
    fn take(&self) -> (u64, u64, Vec<u32>) {
        let mut latencies = lock(&self.latencies_us).clone();
        latencies.sort_unstable();
        (
            self.ok.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            latencies,
        )
    }
}

struct Shared {
    measure_start: Instant,
    end: Instant,
    pacer: Arc<Pacer>,
    spec: SoakSpec,
    warm: Acc,
    windows: Vec<Acc>,
    next_slot: AtomicU64,
    stop: AtomicBool,
    answered: AtomicU64,
    first_error: Mutex<Option<String>>,
    samples: Mutex<Vec<Sample>>,
}

impl Shared {
    /// The accumulator for an answer that completed at `done` (answers to
    /// requests due before the end but completing after it count in the
    /// last window).
    fn acc(&self, done: Instant) -> &Acc {
        if done < self.measure_start {
            return &self.warm;
        }
        let since = done.duration_since(self.measure_start).as_nanos();
        let index = (since / self.spec.window.as_nanos().max(1)) as usize;
        &self.windows[index.min(self.windows.len() - 1)]
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run a soak. `probe` runs at the end of the warm-up and of every window
/// (its value is kept; an error stops the run, e.g. the server is gone);
/// `progress` is told about each finished window. Blocks; builds its own
/// runtime.
pub fn soak(
    endpoint: &Endpoint,
    csrs: &[Csr],
    spec: SoakSpec,
    mut probe: impl FnMut() -> Result<u64>,
    mut progress: impl FnMut(usize, &Window),
) -> Result<SoakOutcome> {
    if csrs.is_empty()
        || spec.clients == 0
        || spec.windows == 0
        || spec.rate.is_nan()
        || spec.rate <= 0.0
    {
        return Err(anyhow!(
            "need a CSR, a client, a window and a positive rate"
        ));
    }
    let prepared: Arc<Vec<Bytes>> =
        Arc::new(csrs.iter().map(|c| endpoint.protocol.prepare(c)).collect());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(spec.threads.max(1))
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        let t0 = Instant::now();
        let measure_start = t0 + spec.warmup;
        let end = measure_start + spec.window * spec.windows as u32;
        let shared = Arc::new(Shared {
            measure_start,
            end,
            pacer: Pacer::start(
                t0.into_std(),
                Duration::from_secs_f64(1.0 / spec.rate),
                end.into_std(),
            )?,
            spec,
            warm: Acc::default(),
            windows: (0..spec.windows).map(|_| Acc::default()).collect(),
            next_slot: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            answered: AtomicU64::new(0),
            first_error: Mutex::new(None),
            samples: Mutex::new(Vec::new()),
        });
        let tasks: Vec<_> = (0..spec.clients)
            .map(|_| {
                let (endpoint, prepared, shared) =
                    (endpoint.clone(), prepared.clone(), shared.clone());
                tokio::spawn(async move { soak_worker(&endpoint, &prepared, &shared).await })
            })
            .collect();
        let mut start_probe = 0;
        let mut windows = Vec::new();
        let mut stopped = None;
        for i in 0..=spec.windows {
            tokio::time::sleep_until(measure_start + spec.window * i as u32).await;
            let value = match probe() {
                Ok(v) => v,
                Err(e) => {
                    stopped = Some(format!("{e:#}"));
                    shared.stop.store(true, Ordering::Relaxed);
                    shared.pacer.stop();
                    break;
                }
            };
            if i == 0 {
                start_probe = value;
                continue;
            }
            // `progress` sees the window as it is at its boundary; the
            // outcome re-reads every window after the run.
            let (ok, errors, latencies_us) = shared.windows[i - 1].take();
            let window = Window {
                ok,
                errors,
                latencies_us,
                probe: value,
            };
            progress(i - 1, &window);
            windows.push(window);
        }
        for task in tasks {
            task.await.context("soak worker panicked")?;
        }
        for (window, acc) in windows.iter_mut().zip(&shared.windows) {
            let (ok, errors, latencies_us) = acc.take();
            (window.ok, window.errors, window.latencies_us) = (ok, errors, latencies_us);
        }
        // Errors after an early stop (in windows never reported) still count.
        let unreported: u64 = shared.windows[windows.len()..]
            .iter()
            .map(|a| a.errors.load(Ordering::Relaxed))
            .sum();
        if let Some(last) = windows.last_mut() {
            last.errors += unreported;
        }
        let (warmup_ok, mut warmup_errors, _) = shared.warm.take();
        if windows.is_empty() {
            warmup_errors += unreported;
        }
        let first_error = lock(&shared.first_error).take();
        let samples = std::mem::take(&mut *lock(&shared.samples));
        Ok::<_, anyhow::Error>(SoakOutcome {
            warmup_ok,
            warmup_errors,
            start_probe,
            windows,
            sent: shared
                .next_slot
                .load(Ordering::Relaxed)
                .min(spec.max_requests),
            first_error,
            stopped,
            samples,
        })
    })?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(outcome)
}

async fn soak_worker(endpoint: &Endpoint, prepared: &[Bytes], shared: &Shared) {
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let slot = shared.next_slot.fetch_add(1, Ordering::Relaxed);
        if slot >= shared.spec.max_requests {
            break;
        }
        let due = Instant::from_std(shared.pacer.due(slot));
        if due >= shared.end {
            break;
        }
        shared.pacer.wait(slot).await;
        let index = slot as usize % prepared.len();
        let result = match &mut sender {
            Some(s) => send(s, &endpoint.protocol, &prepared[index]).await,
            None => match connect(endpoint).await {
                Ok(s) => send(sender.insert(s), &endpoint.protocol, &prepared[index]).await,
                Err(e) => Err(Failure::Connection(format!("connect: {e:#}"))),
            },
        };
        let done = Instant::now();
        let acc = shared.acc(done);
        match result {
            Ok(body) => {
                acc.ok.fetch_add(1, Ordering::Relaxed);
                let us = done.saturating_duration_since(due).as_micros();
                lock(&acc.latencies_us).push(us.min(u32::MAX as u128) as u32);
                let n = shared.answered.fetch_add(1, Ordering::Relaxed);
                if n % SOAK_SAMPLE_EVERY == 0 {
                    let mut samples = lock(&shared.samples);
                    if samples.len() < SOAK_SAMPLE_CAP {
                        samples.push(Sample { csr: index, body });
                    }
                }
            }
            Err(failure) => {
                let message = match failure {
                    Failure::Connection(m) => {
                        sender = None;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        m
                    }
                    Failure::Answer(m) => m,
                };
                acc.errors.fetch_add(1, Ordering::Relaxed);
                lock(&shared.first_error).get_or_insert(message);
            }
        }
    }
}
