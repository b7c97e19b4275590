//! The HTTPS side: accept loop (connection cap, TLS handshake timeout,
//! HTTP/1.1 and HTTP/2, header read timeout, graceful drain on shutdown),
//! the caller's identity from its verified client certificate, and routing.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::Database;

type Body = Full<Bytes>;

/// Limits of the accept loop.
pub struct Options {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub query_timeout: Duration,
    pub drain_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(15),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Serve until `shutdown` completes, then stop accepting and let in-flight
/// requests finish (up to the drain timeout).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    db: Arc<Database>,
    options: Options,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
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
        .max_concurrent_streams(64)
        .max_header_list_size(32 * 1024);
    let builder = Arc::new(builder);
    let query_timeout = options.query_timeout;
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
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let db = db.clone();
        let watcher = graceful.watcher();
        let handshake_timeout = options.handshake_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    // Wrong-class and missing client certificates end here.
                    tracing::info!(%peer, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            // The verifier accepted the chain, so this is a caller of a
            // permitted class; its name is the certificate's CN.
            let caller: Option<Arc<str>> = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|leaf| caller_name(leaf))
                .map(Arc::from);
            let service = hyper::service::service_fn(move |req| {
                let db = db.clone();
                let caller = caller.clone();
                async move {
                    Ok::<_, Infallible>(
                        handle(req, &db, caller.as_deref(), peer, query_timeout).await,
                    )
                }
            });
            let conn = builder
                .serve_connection(TokioIo::new(tls), service)
                .into_owned();
            let _ = watcher.watch(conn).await;
        });
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "stopped accepting; draining"
    );
    if tokio::time::timeout(options.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout");
    }
}

/// The subject CN of a certificate, or its first DNS name if it has no CN.
fn caller_name(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    if let Some(cn) = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
    {
        return Some(cn.to_string());
    }
    let san = cert.subject_alternative_name().ok().flatten()?;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::DNSName(d) => Some((*d).to_string()),
        _ => None,
    })
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

/// Route one request. Never fails: every problem becomes an error response.
async fn handle(
    req: Request<Incoming>,
    db: &Database,
    caller: Option<&str>,
    peer: SocketAddr,
    query_timeout: Duration,
) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/v1/whoami") => {
            match tokio::time::timeout(query_timeout, db.current_user()).await {
                Ok(Ok(db_user)) => {
                    tracing::info!(%peer, caller, db_user, "whoami");
                    json(
                        StatusCode::OK,
                        &serde_json::json!({ "caller": caller, "db_user": db_user }),
                    )
                }
                Ok(Err(e)) => {
                    // Details for the operator, not for the caller.
                    tracing::warn!(%peer, caller, error = %e, "database query failed");
                    error(StatusCode::BAD_GATEWAY, "database unavailable")
                }
                Err(_) => {
                    tracing::warn!(%peer, caller, "database query timed out");
                    error(StatusCode::GATEWAY_TIMEOUT, "database timed out")
                }
            }
        }
        (_, "/v1/whoami") => {
            let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
            response
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}
