//! A misbehaving CA for the sidecar's tests: a small real HTTPS server
//! (rustls, one thread per connection, HTTP/1.1 with `Connection: close`)
//! whose every answer the test chooses through a handler, and an issuance
//! log that produces genuine evidence (Merkle tree, signed tree head,
//! inclusion proof, exactly as `ca-server` builds them with `ca-proto`) for
//! whatever entry the test wants logged.
//!
//! Certificates are made by the tests themselves (rcgen is a dev-dependency
//! of this package, so the hierarchy lives in the test file); this module
//! needs only rustls and ca-proto.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ca_proto::logentry::LogEntry;
use ca_proto::merkle::{inclusion_proof, leaf_hash, CompactRange, MemoryNodeStore};
use ca_proto::sth::{LogEvidence, LogPublicKey, SignedTreeHead};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// One request as the handler sees it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query (without `?`), or empty.
    pub query: String,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// The handler's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// 200 with a JSON body.
    pub fn json(value: &serde_json::Value) -> Reply {
        Reply {
            status: 200,
            content_type: "application/json".into(),
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    /// 200 with PEM text.
    pub fn pem(text: impl Into<String>) -> Reply {
        Reply {
            status: 200,
            content_type: "application/x-pem-file".into(),
            body: text.into().into_bytes(),
        }
    }

    /// An error in the native envelope (`{"error":{"code","message"}}`).
    pub fn error(status: u16, code: &str, message: &str) -> Reply {
        Reply {
            status,
            content_type: "application/json".into(),
            body: serde_json::to_vec(&serde_json::json!({
                "error": {"code": code, "message": message}
            }))
            .unwrap_or_default(),
        }
    }
}

/// What answers requests.
pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// A request that reached the server: when, method, path.
#[derive(Debug, Clone)]
pub struct Hit {
    /// When the request was read.
    pub at: Instant,
    /// The method.
    pub method: String,
    /// The path.
    pub path: String,
}

/// The running server; stopped when dropped.
pub struct FakeCa {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    stop: Arc<AtomicBool>,
}

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 1 << 20;

impl FakeCa {
    /// Serves HTTPS on a loopback port with the TLS certificate `chain`
    /// (leaf first) and `key`, answering every request with `handler`.
    pub fn start(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        handler: Handler,
    ) -> FakeCa {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("TLS versions: {e}"))
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap_or_else(|e| panic!("TLS certificate: {e}"));
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local addr: {e}"));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, st) = (hits.clone(), stop.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(tcp) = tcp else { continue };
                let (config, handler, hits) = (config.clone(), handler.clone(), h.clone());
                std::thread::spawn(move || serve(tcp, config, handler, hits));
            }
        });
        FakeCa { addr, hits, stop }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The base URL (`https://localhost:PORT`; the TLS certificate must name
    /// `localhost`).
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port())
    }

    /// Every request so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// How many requests had this method and path.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.hits()
            .iter()
            .filter(|h| h.method == method && h.path == path)
            .count()
    }
}

impl Drop for FakeCa {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    handler: Handler,
    hits: Arc<Mutex<Vec<Hit>>>,
) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(10)));
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let Some(request) = read_request(&mut tls) else {
        return;
    };
    if let Ok(mut h) = hits.lock() {
        h.push(Hit {
            at: Instant::now(),
            method: request.method.clone(),
            path: request.path.clone(),
        });
    }
    let reply = handler(&request);
    let head = format!(
        "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    let _ = tls
        .write_all(head.as_bytes())
        .and_then(|()| tls.write_all(&reply.body))
        .and_then(|()| tls.flush());
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

fn read_request(stream: &mut impl Read) -> Option<Request> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if raw.len() > MAX_HEAD {
            return None;
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    if length > MAX_BODY {
        return None;
    }
    let mut body = raw[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&buf[..n]);
    }
    body.truncate(length);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    Some(Request {
        method,
        path,
        query,
        headers,
        body,
    })
}

/// Signs the bytes of a tree head (ECDSA P-256, ASN.1 DER signature).
pub type TreeSigner = Box<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

/// An issuance log of our own: every appended entry gets evidence that
/// verifies with [`FakeLog::public_key`], as the real log's does.
pub struct FakeLog {
    /// The log id.
    pub log_id: String,
    /// Its public key.
    pub public_key: LogPublicKey,
    sign: TreeSigner,
    entries: Mutex<Vec<Vec<u8>>>,
}

impl FakeLog {
    /// A log `log_id` whose tree heads `sign` signs; `point` is the
    /// uncompressed P-256 public key.
    pub fn new(log_id: &str, point: Vec<u8>, sign: TreeSigner) -> FakeLog {
        FakeLog {
            log_id: log_id.to_string(),
            public_key: LogPublicKey::from_point(point)
                .unwrap_or_else(|e| panic!("log public key: {e}")),
            sign,
            entries: Mutex::new(Vec::new()),
        }
    }

    /// The public key, PEM (what `GET /v1/log/{id}/key` serves).
    pub fn key_pem(&self) -> String {
        self.public_key.to_pem()
    }

    /// Appends `entry` (its `seq` and `log_id` are set here) and returns
    /// the evidence a sign response carries for it.
    pub fn append(&self, mut entry: LogEntry) -> serde_json::Value {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entry.seq = entries.len() as u64;
        entry.log_id = self.log_id.clone();
        let bytes = entry.to_bytes();
        entries.push(bytes.clone());
        let mut range = CompactRange::new();
        let mut store = MemoryNodeStore::new();
        for e in entries.iter() {
            store
                .add(&range.append(leaf_hash(e)))
                .unwrap_or_else(|e| panic!("node store: {e:?}"));
        }
        let size = range.size();
        let root = range.root();
        let timestamp_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let message = SignedTreeHead::signed_bytes(&self.log_id, size, &root, timestamp_ms);
        let signature = (self.sign)(&message);
        let sth = SignedTreeHead::new(&self.log_id, size, &root, timestamp_ms, &signature);
        let index = size - 1;
        let proof = inclusion_proof(&store, index, size)
            .unwrap_or_else(|e| panic!("inclusion proof: {e:?}"));
        serde_json::to_value(LogEvidence::new(index, &bytes, sth, &proof))
            .unwrap_or(serde_json::Value::Null)
    }
}
