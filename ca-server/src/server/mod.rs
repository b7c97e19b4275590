//! The HTTPS server: accept loop with a connection cap, TLS handshake
//! timeout, HTTP/1.1 and HTTP/2 (ALPN), header read timeout, request body
//! limit, routing, and graceful shutdown that drains in-flight requests.

pub mod app;
pub mod budget;
pub mod cfssl;
pub mod conn;
pub mod keys;
pub mod linger;
pub mod log_api;
pub mod native;
pub mod ratelimit;
pub mod reload;
pub mod respond;
pub mod revocation;
pub mod throttle;
pub mod tls;
pub mod ui;

use crate::metrics::metrics;
use app::App;
use bytes::Bytes;
use ca_proto::routes::{self, NoRoute, Route};
use ca_proto::ErrorCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use respond::{ApiError, Body};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub struct ServeOptions {
    pub admission: conn::Admission,
    pub deadlines: conn::Deadlines,
    pub budgets: budget::BudgetLimits,
    /// HTTP/1.1 header read timeout (hyper's own, per request).
    pub header_read_timeout: Duration,
    pub drain_timeout: Duration,
    /// The web console and inventory search (`None`: off).
    pub console: Option<Arc<ui::Console>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            admission: conn::Admission {
                max_connections: 4096,
                max_connections_per_ip: 0,
            },
            deadlines: conn::Deadlines::default(),
            budgets: budget::BudgetLimits::default(),
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            console: None,
        }
    }
}

/// HTTP/2 settings chosen for this API: small JSON requests and responses,
/// so few concurrent streams and windows the size of the largest body.
/// What a peer can make one connection buffer is bounded by these; what all
/// of them together can is bounded by the budgets.
const H2_MAX_CONCURRENT_STREAMS: u32 = 32;
const H2_CONNECTION_WINDOW: u32 = 256 * 1024;
const H2_MAX_HEADER_LIST: u32 = 16 * 1024;
const H2_MAX_SEND_BUF: usize = 64 * 1024;

/// What every request handler shares besides the `App`.
struct Shared {
    deadlines: conn::Deadlines,
    budgets: Arc<budget::Budgets>,
    ready: ReadyCache,
    console: Option<Arc<ui::Console>>,
    /// Who may see the console on this listener.
    ui_rule: ui::access::Rule,
}

/// Serve until `shutdown` completes, then stop accepting and let in-flight
/// requests finish (up to the drain timeout). `tls = None` is plain HTTP,
/// which the caller allows only on loopback.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let fd_limit = conn::raise_fd_limit();
    // Room for the log, the HSM module, the listener and the files a
    // request opens; beyond, accept would fail with EMFILE at the cap.
    let reserve = 256u64;
    let fit = usize::try_from(fd_limit.saturating_sub(reserve)).unwrap_or(usize::MAX);
    if options.admission.max_connections > fit {
        tracing::warn!(
            event = "connection_cap_lowered",
            configured = options.admission.max_connections,
            open_file_limit = fd_limit,
            "max_connections is above what the open-file limit allows; using {fit}"
        );
        options.admission.max_connections = fit.max(1);
    }
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let registry = Arc::new(conn::Registry::new(options.admission.clone()));
    let body_window = u32::try_from(app.max_body_bytes).unwrap_or(u32::MAX);
    let shared = Arc::new(Shared {
        deadlines: options.deadlines.clone(),
        budgets: Arc::new(budget::Budgets::new(options.budgets.clone())),
        ready: ReadyCache::default(),
        ui_rule: match (&options.console, listener.local_addr()) {
            (Some(console), Ok(addr)) => ui::access::Rule::new(&console.config.ui, addr),
            _ => ui::access::Rule {
                enabled: false,
                listener_loopback: false,
                client_classes: false,
            },
        },
        console: options.console.clone(),
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .initial_stream_window_size(body_window)
        .initial_connection_window_size(H2_CONNECTION_WINDOW.max(body_window))
        .max_send_buf_size(H2_MAX_SEND_BUF)
        .max_pending_accept_reset_streams(Some(64))
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(event = "accept_failed", "accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let registered = match registry.admit(peer) {
            Ok(r) => r,
            Err(refused) => {
                tracing::debug!(event = "connection_refused", %peer, ?refused);
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let shared = shared.clone();
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        let handshake_timeout = options.deadlines.handshake;
        tokio::spawn(async move {
            let state = registered.state.clone();
            // Set once the TLS handshake verified a client certificate
            // (only requested with `[ui] client_classes`).
            let verified = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let service = {
                let state = state.clone();
                let shared = shared.clone();
                let verified = verified.clone();
                hyper::service::service_fn(move |req| {
                    let app = app.clone();
                    let shared = shared.clone();
                    let guard = state.request();
                    let verified = verified.load(std::sync::atomic::Ordering::Relaxed);
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            handle(&app, &shared, req, guard, verified).await,
                        )
                    }
                })
            };
            let cut = match acceptor {
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(handshake_timeout, acceptor.accept(stream));
                    let tls = tokio::select! {
                        r = handshake => r,
                        _ = state.killed() => {
                            tracing::debug!(event = "connection_evicted", %peer, phase = "handshake");
                            return;
                        }
                    };
                    let tls = match tls {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(event = "tls_handshake_failed", %peer, "{e}");
                            return;
                        }
                        Err(_) => {
                            metrics()
                                .connections_closed
                                .with_label_values(&["handshake_timeout"])
                                .inc();
                            tracing::debug!(event = "tls_handshake_timeout", %peer);
                            return;
                        }
                    };
                    state.mark_idle_now();
                    verified.store(
                        tls.get_ref()
                            .1
                            .peer_certificates()
                            .is_some_and(|c| !c.is_empty()),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    let conn = builder
                        .serve_connection(TokioIo::new(linger::Lingering::new(tls)), service)
                        .into_owned();
                    conn::supervise(&state, &shared.deadlines, watcher.watch(conn)).await
                }
                None => {
                    state.mark_idle_now();
                    let conn = builder
                        .serve_connection(TokioIo::new(linger::Lingering::new(stream)), service)
                        .into_owned();
                    conn::supervise(&state, &shared.deadlines, watcher.watch(conn)).await
                }
            };
            if let Some(reason) = cut {
                metrics()
                    .connections_closed
                    .with_label_values(&[reason])
                    .inc();
                tracing::debug!(event = "connection_closed", %peer, reason);
            }
            drop(registered);
        });
    }
    drop(listener);
    tracing::info!(
        event = "draining",
        connections = graceful.count(),
        "stopped accepting; draining"
    );
    if tokio::time::timeout(options.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            event = "drain_timeout",
            "connections still open after the drain timeout"
        );
    }
}

struct InFlight;
impl InFlight {
    fn enter() -> InFlight {
        metrics().in_flight.inc();
        InFlight
    }
}
impl Drop for InFlight {
    fn drop(&mut self) {
        metrics().in_flight.dec();
    }
}

/// Route one request. Never fails: every problem becomes an error response.
/// The response then takes room in the response budget (or becomes `busy`).
async fn handle(
    app: &Arc<App>,
    shared: &Shared,
    req: Request<Incoming>,
    mut guard: conn::RequestGuard,
    verified_client_cert: bool,
) -> Response<Body> {
    let _in_flight = InFlight::enter();
    let (parts, body) = req.into_parts();
    if parts.method != Method::POST {
        guard.body_done();
    }
    let mut body = BodyReader {
        app,
        shared,
        guard: &mut guard,
        body: Some(body),
    };
    let path = parts.uri.path().to_string();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(path.clone(), |p| p.as_str().to_string());
    let is_cfssl = path.starts_with(routes::CFSSL_PREFIX);
    let (endpoint, result): (&'static str, Result<Response<Body>, ApiError>) =
        match Route::resolve(parts.method.as_str(), &path) {
            Ok(Route::Sign) => (
                "native_sign",
                async {
                    let auth = parts
                        .headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok());
                    // Cheap, key-independent refusals before any body byte
                    // is read: a declared length over the limit, then a
                    // header that does not even parse.
                    body.check_declared(&parts)?;
                    app.precheck_native(auth, &path_and_query)?;
                    let (body, _room) = body.read(&parts).await?;
                    native::sign(app, auth, &path_and_query, &body).await
                }
                .await,
            ),
            Ok(Route::Classes) => ("classes", Ok(native::classes(app))),
            Ok(Route::ClassBundle { class }) => (
                "class_pem",
                native::class_pem(app, class, "bundle", parts.uri.query().unwrap_or("")),
            ),
            Ok(Route::ClassChain { class }) => (
                "class_pem",
                native::class_pem(app, class, "chain", parts.uri.query().unwrap_or("")),
            ),
            Ok(Route::Revoke) => (
                "revoke",
                async {
                    let auth = parts
                        .headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok());
                    body.check_declared(&parts)?;
                    if auth.is_some() {
                        app.precheck_native(auth, &path_and_query)?;
                    }
                    let (body, _room) = body.read(&parts).await?;
                    revocation::revoke(app, auth, &path_and_query, &body).await
                }
                .await,
            ),
            Ok(Route::ClassCrl { class }) => (
                "crl",
                revocation::crl(
                    app,
                    class,
                    None,
                    parts.uri.query().unwrap_or(""),
                    parts
                        .headers
                        .get(header::IF_NONE_MATCH)
                        .and_then(|v| v.to_str().ok()),
                ),
            ),
            Ok(Route::ClassCrlOf { class, key }) => (
                "crl",
                revocation::crl(
                    app,
                    class,
                    Some(key),
                    parts.uri.query().unwrap_or(""),
                    parts
                        .headers
                        .get(header::IF_NONE_MATCH)
                        .and_then(|v| v.to_str().ok()),
                ),
            ),
            Ok(Route::OcspPost { class }) => (
                "ocsp",
                async {
                    body.check_declared(&parts)?;
                    let (body, _room) = body.read(&parts).await?;
                    Ok(revocation::ocsp(app, class, Some(body.to_vec())).await)
                }
                .await,
            ),
            Ok(Route::OcspGet { class, request }) => (
                "ocsp",
                Ok(revocation::ocsp(app, class, revocation::ocsp_get_request(request)).await),
            ),
            Ok(Route::Log { log_id, resource }) => {
                let auth = parts
                    .headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                (
                    "log",
                    log_api::get(
                        app,
                        log_id,
                        resource,
                        parts.uri.query().unwrap_or(""),
                        auth,
                        &path_and_query,
                    )
                    .await,
                )
            }
            Ok(Route::LogSearch { log_id }) => (
                "log_search",
                ui::api::search(
                    app,
                    shared.console.as_ref(),
                    shared.ui_rule,
                    verified_client_cert,
                    log_id,
                    parts.uri.query().unwrap_or(""),
                    parts
                        .headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok()),
                    &path_and_query,
                )
                .await,
            ),
            Ok(Route::Ui { page }) => (
                "ui",
                Ok(ui::handle(
                    app,
                    shared.console.as_ref(),
                    &shared.ready,
                    shared.ui_rule,
                    verified_client_cert,
                    page,
                    parts.uri.query().unwrap_or(""),
                )
                .await),
            ),
            Ok(Route::CfsslAuthsign) => (
                "cfssl_authsign",
                async {
                    let (body, _room) = body.read(&parts).await?;
                    cfssl::authsign(app, &body).await
                }
                .await,
            ),
            Ok(Route::CfsslInfo) => (
                "cfssl_info",
                async {
                    let (body, _room) = body.read(&parts).await?;
                    cfssl::info(app, &body)
                }
                .await,
            ),
            Ok(Route::Metrics) => (
                "metrics",
                // `trellis_ready` as of this scrape, from the same cached
                // probe as `/readyz` (one pool job per second at most).
                Ok({
                    let _ = shared.ready.get(app).await;
                    respond::text(
                        StatusCode::OK,
                        "text/plain; version=0.0.4",
                        metrics().render(),
                    )
                }),
            ),
            Ok(Route::Healthz) => (
                "healthz",
                Ok(respond::text(StatusCode::OK, "text/plain", "ok\n")),
            ),
            Ok(Route::Readyz) => ("readyz", Ok(shared.ready.get(app).await)),
            Err(NoRoute::MethodNotAllowed) => (
                "other",
                Err(ApiError::new(
                    ErrorCode::MethodNotAllowed,
                    "method not allowed here",
                )),
            ),
            Err(NoRoute::NotFound) => (
                "other",
                Err(ApiError::new(ErrorCode::NotFound, "no such endpoint")),
            ),
        };
    let response = match result {
        Ok(r) => r,
        Err(e) => error_response(&e, is_cfssl),
    };
    let response = budgeted(shared, guard.conn(), response, is_cfssl);
    metrics()
        .requests
        .with_label_values(&[endpoint, response.status().as_str()])
        .inc();
    response
}

/// An error in the envelope the endpoint's clients read.
fn error_response(e: &ApiError, is_cfssl: bool) -> Response<Body> {
    if is_cfssl {
        cfssl::error_response(e)
    } else {
        e.to_native()
    }
}

/// Give the response room in the response budget, or answer `busy`.
fn budgeted(
    shared: &Shared,
    conn: &conn::ConnState,
    mut response: Response<Body>,
    is_cfssl: bool,
) -> Response<Body> {
    if response.body().is_shared() {
        return response;
    }
    let len = response.body().len();
    match shared.budgets.response(len, &conn.response_queued) {
        Some(room) => {
            response.body_mut().hold(room);
            response
        }
        None => {
            let e = ApiError::new(
                ErrorCode::Busy,
                "too many response bytes are waiting for slow readers; retry shortly",
            );
            let mut busy = error_response(&e, is_cfssl);
            busy.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            busy
        }
    }
}

/// A request's body, read at most once, under the body deadlines and the
/// body budget.
struct BodyReader<'a> {
    app: &'a App,
    shared: &'a Shared,
    guard: &'a mut conn::RequestGuard,
    body: Option<Incoming>,
}

impl BodyReader<'_> {
    /// Read the body up to the limit (larger bodies are refused with 413
    /// without reading them whole), each frame within the minimum-rate
    /// deadline and the whole within the total, taking room in the body
    /// budget as bytes arrive. The room is held until the returned
    /// reservation drops (the end of the handler).
    async fn read(
        &mut self,
        parts: &hyper::http::request::Parts,
    ) -> Result<(Bytes, budget::BodyReservation), ApiError> {
        let result = self.read_inner(parts).await;
        self.guard.body_done();
        result
    }

    fn too_large(&self) -> ApiError {
        ApiError::new(
            ErrorCode::BodyTooLarge,
            format!(
                "request body is larger than {} bytes",
                self.app.max_body_bytes
            ),
        )
    }

    /// A declared `Content-Length` over the limit is refused (413) without
    /// reading anything.
    fn check_declared(&self, parts: &hyper::http::request::Parts) -> Result<(), ApiError> {
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.app.max_body_bytes as u64) {
            return Err(self.too_large());
        }
        Ok(())
    }

    async fn read_inner(
        &mut self,
        parts: &hyper::http::request::Parts,
    ) -> Result<(Bytes, budget::BodyReservation), ApiError> {
        let max = self.app.max_body_bytes;
        self.check_declared(parts)?;
        let Some(mut body) = self.body.take() else {
            return Err(ApiError::new(ErrorCode::Internal, "body already read"));
        };
        let mut room = self
            .shared
            .budgets
            .body(self.guard.conn().body_held.clone());
        let deadlines = &self.shared.deadlines;
        let start = tokio::time::Instant::now();
        let mut buf = bytes::BytesMut::new();
        let slow = || {
            ApiError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "request body too slow: it must arrive within {} s at {} bytes/s or more",
                    deadlines.body_total.as_secs(),
                    deadlines.body_min_bytes_per_sec
                ),
            )
        };
        let busy = || {
            ApiError::new(
                ErrorCode::Busy,
                "too many request bytes are buffered right now; retry shortly",
            )
        };
        loop {
            let deadline = deadlines.body_frame_deadline(start.into_std(), buf.len() as u64);
            let frame = tokio::select! {
                f = body.frame() => f,
                _ = tokio::time::sleep_until(deadline.into()) => {
                    metrics().connections_closed.with_label_values(&["body_too_slow"]).inc();
                    return Err(slow());
                }
                _ = room.evicted() => return Err(busy()),
            };
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|_| {
                ApiError::new(
                    ErrorCode::MalformedRequest,
                    "request body could not be read",
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            if buf.len() + data.len() > max {
                return Err(self.too_large());
            }
            room.grow(data.len()).await.map_err(|_| busy())?;
            buf.extend_from_slice(&data);
        }
        room.complete();
        Ok((buf.freeze(), room))
    }
}

/// `/readyz`. The log's health is read on every call (a flag); the HSM
/// probe needs a signing-pool job, so one probe runs at a time and a
/// successful probe is reused for a second: an unauthenticated caller can
/// never have more than one pool job queued for readiness, and a failing
/// HSM is re-probed (one at a time) until it answers again.
/// (An HSM error seen by signing since the last good probe voids it.)
/// Every answer sets `trellis_ready` and `trellis_log_healthy`; each
/// `/metrics` scrape asks it too, so the gauges are never older than the
/// scrape even where nothing polls `/readyz`.
#[derive(Default)]
struct ReadyCache {
    last_ok: tokio::sync::Mutex<Option<(tokio::time::Instant, u64)>>,
}

impl ReadyCache {
    const FRESH: Duration = Duration::from_secs(1);

    async fn get(&self, app: &App) -> Response<Body> {
        let response = self.answer(app).await;
        let m = metrics();
        m.ready.set(i64::from(response.status() == StatusCode::OK));
        m.log_healthy.set(i64::from(
            app.log.as_ref().is_none_or(|log| log.is_healthy()),
        ));
        response
    }

    async fn answer(&self, app: &App) -> Response<Body> {
        if app.log.as_ref().is_some_and(|log| !log.is_healthy()) {
            return respond::text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "log: last write failed\n",
            );
        }
        // A suspended class (its state retired the loaded intermediate and
        // the new one cannot be loaded here) makes this replica unready, so
        // that a balancer sends the class's requests elsewhere.
        if let Some(class) = app.authority.suspended().keys().next() {
            return respond::text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("class {class}: not issuing (its active intermediate cannot be loaded)\n"),
            );
        }
        let epoch = || {
            metrics()
                .hsm_failure_epoch
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let mut last_ok = self.last_ok.lock().await;
        if last_ok.is_some_and(|(at, seen)| at.elapsed() < Self::FRESH && seen == epoch()) {
            return respond::text(StatusCode::OK, "text/plain", "ready\n");
        }
        let before = epoch();
        let (status, text) = readyz(app).await;
        *last_ok = (status == StatusCode::OK).then(|| (tokio::time::Instant::now(), before));
        respond::text(status, "text/plain", text)
    }
}

/// Ready when the issuance log is writable and a pool session can reach the
/// token and find the active intermediate key of every class.
async fn readyz(app: &App) -> (StatusCode, String) {
    if app.log.as_ref().is_some_and(|log| !log.is_healthy()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "log: last write failed\n".into(),
        );
    }
    let labels: Vec<String> = app
        .authority
        .classes()
        .iter()
        .map(|c| c.active.key.label.clone())
        .collect();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let submitted = app.authority.pool().execute(move |session| {
        let result = labels.iter().try_for_each(|l| session.probe(l));
        let _ = tx.send(result);
    });
    let outcome = match submitted {
        Ok(()) => tokio::time::timeout(Duration::from_secs(5), rx).await,
        Err(_) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "hsm: signing pool closed\n".into(),
            )
        }
    };
    match outcome {
        Ok(Ok(Ok(()))) => (StatusCode::OK, "ready\n".into()),
        Ok(Ok(Err(e))) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("hsm: {}\n", e.rv_name()),
        ),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "hsm: no answer\n".into()),
    }
}
