//! The HTTPS connection to a CA server, kept open between the requests of
//! one operation.
//!
//! A start asks for the class list, the bundle, the chain, the certificate
//! and the log key within milliseconds of each other. Over one kept TLS
//! connection that is one TCP and TLS handshake (one key exchange, one
//! certificate check) instead of five, on the host and on the CA. A
//! connection idle for [`KEEP_IDLE`] is closed, so a sidecar that talks to
//! the CA a few times a day holds no socket between renewals. One
//! connection at most is kept per [`Link`]; a request that finds it taken
//! (two at once) opens its own, and the last to finish is kept.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::api::{connect_err, ApiError, ServerUrl, CONNECT_TIMEOUT};

/// How long a connection stays open after its last answer, waiting for the
/// next request of the same operation.
pub const KEEP_IDLE: Duration = Duration::from_secs(2);

/// Time a kept connection has to be ready for the next request (its task
/// has seen the last answer end) before a new one is opened instead.
const KEPT_READY: Duration = Duration::from_secs(1);

/// The sending half of an HTTP/1.1 connection.
pub(crate) type Sender = SendRequest<Full<Bytes>>;

/// A TLS configuration and the one connection kept for it.
#[derive(Clone)]
pub(crate) struct Link {
    tls: Arc<ClientConfig>,
    kept: Arc<Mutex<Kept>>,
}

#[derive(Default)]
struct Kept {
    /// The server's URL as configured, and the connection to it.
    conn: Option<(String, Sender)>,
    /// Bumped at every [`Link::keep`], so that a closing timer only closes
    /// the connection it was started for.
    generation: u64,
}

fn lock(kept: &Mutex<Kept>) -> MutexGuard<'_, Kept> {
    kept.lock().unwrap_or_else(|p| p.into_inner())
}

impl Link {
    pub(crate) fn new(tls: Arc<ClientConfig>) -> Link {
        Link {
            tls,
            kept: Arc::new(Mutex::new(Kept::default())),
        }
    }

    /// The kept connection to `url`, if it is still open. A connection kept
    /// for another server is closed (dropping the sender ends it).
    fn take(&self, url: &str) -> Option<Sender> {
        match lock(&self.kept).conn.take() {
            Some((kept_url, sender)) if kept_url == url && !sender.is_closed() => Some(sender),
            _ => None,
        }
    }

    /// Keeps `sender` for the next request to `url`; it is closed after
    /// [`KEEP_IDLE`] unless a request takes it first.
    pub(crate) fn keep(&self, url: &str, sender: Sender) {
        let generation = {
            let mut kept = lock(&self.kept);
            kept.generation = kept.generation.wrapping_add(1);
            kept.conn = Some((url.to_owned(), sender));
            kept.generation
        };
        let kept: Weak<Mutex<Kept>> = Arc::downgrade(&self.kept);
        tokio::spawn(async move {
            tokio::time::sleep(KEEP_IDLE).await;
            if let Some(kept) = kept.upgrade() {
                let mut kept = lock(&kept);
                if kept.generation == generation {
                    kept.conn = None;
                }
            }
        });
    }

    /// Sends the request `request` makes, on the connection kept for
    /// `server` when it is still open, else on a new one. A kept connection
    /// that fails before an answer (the server closed it meanwhile) is
    /// replaced once by a new one, with the request made anew (so an
    /// `Authorization` nonce is never sent twice). The answer, and the
    /// connection to [`keep`](Self::keep) once it is read.
    pub(crate) async fn send(
        &self,
        server: &ServerUrl,
        request: impl Fn() -> Result<Request<Full<Bytes>>, ApiError>,
    ) -> Result<(Sender, Response<Incoming>), ApiError> {
        if let Some(mut kept) = self.take(&server.url) {
            match send_on(&mut kept, request()?).await {
                Ok(resp) => return Ok((kept, resp)),
                Err(why) => {
                    tracing::debug!(error = %why, "the kept connection failed: opening a new one");
                }
            }
        }
        let mut fresh = self.open(server).await?;
        let resp = fresh
            .send_request(request()?)
            .await
            .map_err(|e| connect_err(&server.url, e))?;
        Ok((fresh, resp))
    }

    /// A new connection: TCP (within [`CONNECT_TIMEOUT`]), TLS verified
    /// with this link's configuration, HTTP/1.1. Its driver runs as a task
    /// that ends when the server closes or every sender is dropped.
    async fn open(&self, server: &ServerUrl) -> Result<Sender, ApiError> {
        let url = server.url.as_str();
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((server.host.as_str(), server.port)),
        )
        .await
        .map_err(|_| connect_err(url, "connect timed out"))?
        .map_err(|e| connect_err(url, e))?;
        let _ = tcp.set_nodelay(true);
        let tls_stream = TlsConnector::from(self.tls.clone())
            .connect(server.server_name()?, tcp)
            .await
            .map_err(|e| connect_err(url, format!("TLS: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls_stream))
            .await
            .map_err(|e| connect_err(url, e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        tracing::debug!(url, "connected to the CA");
        Ok(sender)
    }
}

/// Sends `req` on a kept connection; why it could not carry it otherwise
/// (closed by the server meanwhile, not ready in time, or closed before an
/// answer came).
async fn send_on(
    kept: &mut Sender,
    req: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, String> {
    match tokio::time::timeout(KEPT_READY, kept.ready()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("not ready".to_owned()),
    }
    kept.send_request(req).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    //! Reuse and closing against a local TLS server that counts the
    //! connections it accepted.

    use super::*;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A server answering 200 "ok" on keep-alive connections; returns its
    /// URL, root, the number of connections accepted and of those closed.
    async fn serve() -> (
        ServerUrl,
        rustls_pki_types::CertificateDer<'static>,
        Arc<AtomicUsize>,
        Arc<AtomicUsize>,
    ) {
        let (listener, acceptor, url, der) = crate::api::local_tls_listener().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (a, c) = (accepted.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let c = c.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    }
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (ServerUrl::parse(&url).unwrap(), der, accepted, closed)
    }

    async fn get(sender: &mut Sender, server: &ServerUrl) -> u16 {
        sender.ready().await.unwrap();
        let req = Request::builder()
            .uri("/")
            .header(hyper::header::HOST, server.authority.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap();
        status
    }

    #[tokio::test]
    async fn a_kept_connection_serves_the_next_request_and_is_closed_when_idle() {
        let (server, root, accepted, closed) = serve().await;
        let link = Link::new(crate::api::tls_config(&[root]).unwrap());
        for _ in 0..5 {
            let mut sender = match link.take(&server.url) {
                Some(s) => s,
                None => link.open(&server).await.unwrap(),
            };
            assert_eq!(get(&mut sender, &server).await, 200);
            link.keep(&server.url, sender);
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "five requests, one connection"
        );
        assert_eq!(closed.load(Ordering::SeqCst), 0);
        // Idle past KEEP_IDLE: the client closes it (the server sees the end).
        let deadline = tokio::time::Instant::now() + KEEP_IDLE * 5;
        while closed.load(Ordering::SeqCst) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the kept connection was not closed after {KEEP_IDLE:?} idle"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(link.take(&server.url).is_none());
    }

    #[tokio::test]
    async fn a_connection_kept_for_another_server_is_not_used() {
        let (one, root_one, accepted_one, closed_one) = serve().await;
        let (two, root_two, accepted_two, _) = serve().await;
        let link = Link::new(crate::api::tls_config(&[root_one, root_two]).unwrap());
        let mut sender = link.open(&one).await.unwrap();
        assert_eq!(get(&mut sender, &one).await, 200);
        link.keep(&one.url, sender);
        assert!(link.take(&two.url).is_none());
        // Taking for another server closed the first one's connection.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while closed_one.load(Ordering::SeqCst) == 0 {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut sender = link.open(&two).await.unwrap();
        assert_eq!(get(&mut sender, &two).await, 200);
        assert_eq!(accepted_one.load(Ordering::SeqCst), 1);
        assert_eq!(accepted_two.load(Ordering::SeqCst), 1);
    }
}
