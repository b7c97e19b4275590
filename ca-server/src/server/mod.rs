//! The HTTPS server: accept loop with a connection cap, TLS handshake
//! timeout, HTTP/1.1 and HTTP/2 (ALPN), header read timeout, request body
//! limit, routing, and graceful shutdown that drains in-flight requests.

pub mod app;
pub mod cfssl;
pub mod keys;
pub mod log_api;
pub mod native;
pub mod ratelimit;
pub mod reload;
pub mod respond;
pub mod tls;

use crate::metrics::metrics;
use app::App;
use bytes::Bytes;
use ca_proto::ErrorCode;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use respond::{ApiError, Body};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub struct ServeOptions {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub drain_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Serve until `shutdown` completes, then stop accepting and let in-flight
/// requests finish (up to the drain timeout). `tls = None` is plain HTTP,
/// which the caller allows only on loopback.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(options.max_connections));
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
        .max_concurrent_streams(256)
        .max_pending_accept_reset_streams(Some(64))
        .max_header_list_size(32 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
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
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        let handshake_timeout = options.handshake_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&app, req, peer).await) }
            });
            match acceptor {
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(event = "tls_handshake_failed", %peer, "{e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(event = "tls_handshake_timeout", %peer);
                            return;
                        }
                    };
                    let conn = builder
                        .serve_connection(TokioIo::new(tls), service)
                        .into_owned();
                    let _ = watcher.watch(conn).await;
                }
                None => {
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    let _ = watcher.watch(conn).await;
                }
            }
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
async fn handle(app: &App, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
    let _in_flight = InFlight::enter();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(path.clone(), |p| p.as_str().to_string());
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let is_cfssl = path.starts_with("/api/v1/cfssl/");
    let (endpoint, result): (&'static str, Result<Response<Body>, ApiError>) =
        match (&parts.method, segments.as_slice()) {
            (&Method::POST, ["v1", "sign"]) => (
                "native_sign",
                async {
                    let body = read_body(app, &parts, body).await?;
                    let auth = parts
                        .headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok());
                    native::sign(app, auth, &path_and_query, &body).await
                }
                .await,
            ),
            (&Method::GET, ["v1", "classes"]) => ("classes", Ok(native::classes(app))),
            (&Method::GET, ["v1", "classes", class, what @ ("bundle" | "chain")]) => (
                "class_pem",
                native::class_pem(app, class, what, parts.uri.query().unwrap_or("")),
            ),
            (&Method::GET, ["v1", "log", log_id, what @ ("sth" | "proof" | "entries" | "key")]) => {
                (
                    "log",
                    log_api::get(app, log_id, what, parts.uri.query().unwrap_or("")),
                )
            }
            (&Method::POST, ["api", "v1", "cfssl", "authsign"]) => (
                "cfssl_authsign",
                async {
                    let body = read_body(app, &parts, body).await?;
                    cfssl::authsign(app, &body).await
                }
                .await,
            ),
            (&Method::POST, ["api", "v1", "cfssl", "info"]) => (
                "cfssl_info",
                async {
                    let body = read_body(app, &parts, body).await?;
                    cfssl::info(app, &body)
                }
                .await,
            ),
            (&Method::GET, ["metrics"]) => (
                "metrics",
                Ok(respond::text(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    metrics().render(),
                )),
            ),
            (&Method::GET, ["healthz"]) => (
                "healthz",
                Ok(respond::text(StatusCode::OK, "text/plain", "ok\n")),
            ),
            (&Method::GET, ["readyz"]) => ("readyz", Ok(readyz(app).await)),
            (
                _,
                ["v1", "sign"]
                | ["v1", "classes", ..]
                | ["api", "v1", "cfssl", ..]
                | ["metrics"]
                | ["healthz"]
                | ["readyz"],
            ) => (
                "other",
                Err(ApiError::new(
                    ErrorCode::MethodNotAllowed,
                    "method not allowed here",
                )),
            ),
            _ => (
                "other",
                Err(ApiError::new(ErrorCode::NotFound, "no such endpoint")),
            ),
        };
    let response = match result {
        Ok(r) => r,
        Err(e) if is_cfssl => cfssl::error_response(&e),
        Err(e) => e.to_native(),
    };
    metrics()
        .requests
        .with_label_values(&[endpoint, response.status().as_str()])
        .inc();
    response
}

/// Read the body up to the limit; larger bodies are refused with 413 without
/// reading them whole.
async fn read_body(
    app: &App,
    parts: &hyper::http::request::Parts,
    body: Incoming,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("request body is larger than {} bytes", app.max_body_bytes),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.max_body_bytes as u64) {
        return Err(too_large());
    }
    match Limited::new(body, app.max_body_bytes).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(_) => Err(ApiError::new(
            ErrorCode::MalformedRequest,
            "request body could not be read",
        )),
    }
}

/// Ready when the issuance log is writable and a pool session can reach the
/// token and find the active intermediate key of every class.
async fn readyz(app: &App) -> Response<Body> {
    if app.log.as_ref().is_some_and(|log| !log.is_healthy()) {
        return respond::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "log: last write failed\n",
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
            return respond::text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "hsm: signing pool closed\n",
            )
        }
    };
    match outcome {
        Ok(Ok(Ok(()))) => respond::text(StatusCode::OK, "text/plain", "ready\n"),
        Ok(Ok(Err(e))) => respond::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("hsm: {}\n", e.rv_name()),
        ),
        _ => respond::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "hsm: no answer\n",
        ),
    }
}
