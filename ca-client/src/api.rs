//! The HTTPS client of the CA's native API.
//!
//! - `POST /v1/sign` with the `TRELLIS-HMAC-SHA256` `Authorization` header
//!   (fresh timestamp and nonce per attempt; the secret file is re-read for
//!   every request so that it can be rotated in place);
//! - `GET /v1/classes/{class}/bundle` and `/chain` (unauthenticated PEM,
//!   refused above [`crate::verify::MAX_BUNDLE_ROOTS`] /
//!   [`crate::verify::MAX_CHAIN_CERTS`] certificates before parsing);
//! - `GET /v1/classes` (profiles: extended key usages and default TTLs);
//! - `GET /v1/classes/{class}/crl?format=pem` (unauthenticated; every
//!   current CRL of the class, with `If-None-Match` so that an unchanged
//!   set costs a 304) and `POST /v1/revoke` (self-revocation: the holder's
//!   signature in the body, no `Authorization` header);
//! - servers are tried in order: a transient failure (connection, TLS,
//!   timeout, 429, 5xx, unreadable answer) moves on to the next one; a
//!   permanent one (401, 403, 400, 404, 413) is returned at once, since
//!   every replica would say the same;
//! - errors keep the server's [`ca_proto::ErrorEnvelope`] (stable code,
//!   message, every policy reason) and `Retry-After`.
//!
//! HTTP/1.1 over one connection kept between the requests of one operation
//! ([`crate::conn`]: a start's requests share one TLS handshake), closed
//! when idle for [`crate::conn::KEEP_IDLE`]. TLS is rustls with ring,
//! verified against the `ca` class root ([`tls_config`]);
//! [`fetch_pinned_root`] is the one exception, for first contact with only
//! a pinned fingerprint (the fingerprint, not the connection, authenticates
//! what it returns).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ca_proto::native::{
    class_bundle_path, class_chain_path, ClassList, SignRequest, SignResponse, PATH_CLASSES,
    PATH_SIGN,
};
use ca_proto::revocation::{class_crl_path, RevokeRequest, RevokeResponse, PATH_REVOKE};
use ca_proto::{ErrorCode, ErrorEnvelope, ReasonBody};
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{
    HeaderValue, ACCEPT, AUTHORIZATION, CONNECTION, CONTENT_TYPE, ETAG, HOST, IF_NONE_MATCH,
    RETRY_AFTER, USER_AGENT,
};
use hyper::{Method, Request, Uri};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use thiserror::Error;

use crate::conn::Link;
use crate::renew::FailureKind;

/// Time allowed to open the TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a whole request (connect, TLS, send, receive).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// A CA base URL: `https://host[:port]` (no path, query or user info).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// As configured.
    pub url: String,
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// Port (443 by default).
    pub port: u16,
    /// `host:port` as sent in the `Host` header.
    pub authority: String,
}

/// Why a CA base URL was refused ([`ServerUrl::parse`]). `Display` names
/// the URL as given, in one line.
#[derive(Debug, Error)]
pub enum UrlError {
    /// Not URL syntax.
    #[error("'{url}' is not a URL: {source}")]
    Syntax {
        /// As given.
        url: String,
        /// The parser's complaint.
        #[source]
        source: hyper::http::uri::InvalidUri,
    },
    /// A scheme other than `https`.
    #[error("'{0}': only https:// URLs are accepted")]
    NotHttps(String),
    /// No host (or an empty one).
    #[error("'{0}': no host")]
    NoHost(String),
    /// `user@` before the host.
    #[error("'{0}': user info is not allowed")]
    UserInfo(String),
    /// A path other than `/`, or a query.
    #[error("'{0}': give the base URL only (no path or query)")]
    NotBase(String),
}

impl ServerUrl {
    /// Parses and checks a base URL.
    pub fn parse(s: &str) -> Result<ServerUrl, UrlError> {
        let uri: Uri = s.parse().map_err(|source| UrlError::Syntax {
            url: s.to_owned(),
            source,
        })?;
        if uri.scheme_str() != Some("https") {
            return Err(UrlError::NotHttps(s.to_owned()));
        }
        let auth = uri
            .authority()
            .ok_or_else(|| UrlError::NoHost(s.to_owned()))?;
        if auth.as_str().contains('@') {
            return Err(UrlError::UserInfo(s.to_owned()));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(UrlError::NotBase(s.to_owned()));
        }
        let host = auth
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(UrlError::NoHost(s.to_owned()));
        }
        Ok(ServerUrl {
            url: s.trim_end_matches('/').to_owned(),
            port: auth.port_u16().unwrap_or(443),
            authority: auth.as_str().to_owned(),
            host,
        })
    }

    pub(crate) fn server_name(&self) -> Result<ServerName<'static>, ApiError> {
        ServerName::try_from(self.host.clone()).map_err(|_| ApiError::Connect {
            url: self.url.clone(),
            detail: "host is not a valid TLS server name".into(),
        })
    }
}

/// What went wrong talking to the CA. `Display` is one line.
#[derive(Debug, Clone, Error)]
pub enum ApiError {
    /// TCP, TLS or HTTP transport failure.
    #[error("{url}: {detail}")]
    Connect {
        /// Server.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The request took longer than [`REQUEST_TIMEOUT`].
    #[error("{url}: timed out")]
    Timeout {
        /// Server.
        url: String,
    },
    /// The server answered with an error status.
    #[error("{url}: {}", status_line(*.status, *.code, .message, .reasons))]
    Status {
        /// Server.
        url: String,
        /// HTTP status.
        status: u16,
        /// The stable error code, when the body was an error envelope.
        code: Option<ErrorCode>,
        /// The server's message (or a sanitised start of the body).
        message: String,
        /// Policy reasons.
        reasons: Vec<ReasonBody>,
        /// `Retry-After`, in seconds.
        retry_after: Option<Duration>,
    },
    /// A success status with a body we cannot use.
    #[error("{url}: unusable response: {detail}")]
    BadResponse {
        /// Server.
        url: String,
        /// What is wrong.
        detail: String,
    },
    /// The request could not be authenticated: the secret file could not
    /// be read or parsed, or the signed request could not be made.
    #[error("credentials: {0}")]
    Credentials(CredentialsError),
    /// No root in the `ca` bundle matches the pinned fingerprint.
    #[error("{url}: no root in the ca bundle matches ca_root_sha256")]
    PinMismatch {
        /// Server.
        url: String,
    },
}

/// Why a request could not be signed (the part of [`ApiError::Credentials`]
/// after `credentials: `). Never holds the secret.
#[derive(Debug, Clone, Error)]
pub enum CredentialsError {
    /// What [`crate::config::read_secret`] refused.
    #[error("{0}")]
    Secret(Arc<crate::config::SecretFileError>),
    /// The `Authorization` value is not a valid header value.
    #[error("header value is not ASCII")]
    HeaderNotAscii,
    /// The request body could not be serialized.
    #[error("encoding request: {0}")]
    Encoding(Arc<serde_json::Error>),
    /// The operating system gave no randomness for the nonce.
    #[error("no randomness: {0}")]
    NoRandomness(getrandom::Error),
    /// The bootstrap TLS configuration could not be made.
    #[error("TLS: {0}")]
    Tls(TlsConfigError),
}

fn status_line(
    status: u16,
    code: Option<ErrorCode>,
    message: &str,
    reasons: &[ReasonBody],
) -> String {
    let mut s = format!("HTTP {status}");
    if let Some(code) = code {
        s.push(' ');
        s.push_str(code.as_str());
    }
    if !message.is_empty() {
        s.push_str(": ");
        s.push_str(message);
    }
    if !reasons.is_empty() {
        let list: Vec<String> = reasons
            .iter()
            .map(|r| format!("{}: {}", r.code, r.detail))
            .collect();
        s.push_str(" (");
        s.push_str(&list.join("; "));
        s.push(')');
    }
    s
}

impl ApiError {
    /// How to retry.
    pub fn kind(&self) -> FailureKind {
        match self {
            ApiError::Connect { .. } | ApiError::Timeout { .. } | ApiError::BadResponse { .. } => {
                FailureKind::Transient
            }
            ApiError::Credentials(_) | ApiError::PinMismatch { .. } => FailureKind::Permanent,
            ApiError::Status { status, .. } => match status {
                429 | 408 | 500..=599 => FailureKind::Transient,
                _ => FailureKind::Permanent,
            },
        }
    }

    /// A short stable label for metrics (`policy_denied`, `connect`, …).
    pub fn reason(&self) -> String {
        match self {
            ApiError::Connect { .. } => "connect".into(),
            ApiError::Timeout { .. } => "timeout".into(),
            ApiError::BadResponse { .. } => "bad_response".into(),
            ApiError::Credentials(_) => "credentials".into(),
            ApiError::PinMismatch { .. } => "pin_mismatch".into(),
            ApiError::Status { code: Some(c), .. } => c.as_str().into(),
            ApiError::Status { status, .. } => format!("http_{status}"),
        }
    }

    /// The server's `Retry-After`, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The crypto provider of the workspace: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a client TLS configuration could not be made. `Display` is one line.
#[derive(Debug, Clone, Error)]
pub enum TlsConfigError {
    /// A CA root that rustls cannot use as a trust anchor.
    #[error("unusable CA root: {0}")]
    UnusableRoot(#[source] rustls::Error),
    /// No CA root at all.
    #[error("no CA root")]
    NoRoot,
    /// The crypto provider does not support the default protocol versions.
    #[error("{0}")]
    Provider(#[source] rustls::Error),
}

/// A client TLS configuration trusting exactly `roots` (TLS 1.3 and 1.2).
pub fn tls_config(roots: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store
            .add(root.clone())
            .map_err(TlsConfigError::UnusableRoot)?;
    }
    if store.is_empty() {
        return Err(TlsConfigError::NoRoot);
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsConfigError::Provider)?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts any server certificate but still checks handshake signatures;
/// used only by [`fetch_pinned_root`].
#[derive(Debug)]
struct PinBootstrapVerifier(Arc<CryptoProvider>);

impl ServerCertVerifier for PinBootstrapVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn bootstrap_tls_config() -> Result<Arc<ClientConfig>, TlsConfigError> {
    let p = provider();
    let config = ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsConfigError::Provider)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinBootstrapVerifier(p)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    etag: Option<String>,
    body: Bytes,
}

/// What `GET /v1/classes/{class}/crl?format=pem` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrlAnswer {
    /// 304: the set named by the `ETag` sent is still current.
    NotModified,
    /// 200: the PEM text (not yet parsed) and its `ETag`.
    Fresh {
        /// The body.
        pem: Vec<u8>,
        /// The `ETag`, when the server sent a usable one.
        etag: Option<String>,
    },
}

pub(crate) fn connect_err(url: &str, detail: impl fmt::Display) -> ApiError {
    ApiError::Connect {
        url: url.to_owned(),
        detail: one_line(&detail.to_string()),
    }
}

fn one_line(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}

/// Makes the `Authorization` header of one attempt (a fresh timestamp and
/// nonce each time it is called).
type Authorize<'a> = &'a (dyn Fn() -> Result<String, ApiError> + Send + Sync);

/// One request (see [`exchange_with`]).
async fn exchange(
    link: &Link,
    server: &ServerUrl,
    method: Method,
    path: &str,
    authorization: Option<Authorize<'_>>,
    body: Vec<u8>,
) -> Result<Answer, ApiError> {
    exchange_with(link, server, method, path, authorization, None, body).await
}

/// One request, over [`Link::send`] (the kept connection, or a new one),
/// the `Authorization` made for each attempt; the connection is kept again
/// unless the answer closes it. Sends `if_none_match` as `If-None-Match`
/// (the `ETag` of the answer comes back in [`Answer`] either way).
async fn exchange_with(
    link: &Link,
    server: &ServerUrl,
    method: Method,
    path: &str,
    authorization: Option<Authorize<'_>>,
    if_none_match: Option<&str>,
    body: Vec<u8>,
) -> Result<Answer, ApiError> {
    let url = server.url.as_str();
    let body = Bytes::from(body);
    let request = || -> Result<Request<Full<Bytes>>, ApiError> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, server.authority.as_str())
            .header(USER_AGENT, concat!("ca-client/", env!("CARGO_PKG_VERSION")))
            .header(ACCEPT, "application/json, application/x-pem-file, */*");
        if !body.is_empty() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        if let Some(authorize) = authorization {
            let value = HeaderValue::from_str(&authorize()?)
                .map_err(|_| ApiError::Credentials(CredentialsError::HeaderNotAscii))?;
            req = req.header(AUTHORIZATION, value);
        }
        if let Some(tag) = if_none_match.and_then(|t| HeaderValue::from_str(t).ok()) {
            req = req.header(IF_NONE_MATCH, tag);
        }
        req.body(Full::new(body.clone()))
            .map_err(|e| connect_err(url, e))
    };
    let work = async {
        let (sender, resp) = link.send(server, request).await?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Kept only when it can be sent back as a header value.
        let etag = resp
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 256)
            .map(str::to_owned);
        let closing = resp
            .headers()
            .get(CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| connect_err(url, format!("reading response: {e}")))?
            .to_bytes();
        if !closing {
            link.keep(url, sender);
        }
        Ok(Answer {
            status,
            retry_after,
            etag,
            body,
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .map_err(|_| ApiError::Timeout {
            url: url.to_owned(),
        })?
}

/// Turns a non-2xx answer into [`ApiError::Status`].
fn status_error(url: &str, answer: &Answer) -> ApiError {
    let (code, message, reasons) = match serde_json::from_slice::<ErrorEnvelope>(&answer.body) {
        Ok(env) => (
            Some(env.error.code),
            one_line(&env.error.message),
            env.error.reasons,
        ),
        Err(_) => {
            let text = String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)]);
            (None, one_line(&text), Vec::new())
        }
    };
    ApiError::Status {
        url: url.to_owned(),
        status: answer.status,
        code,
        message,
        reasons,
        retry_after: answer.retry_after,
    }
}

/// The CA's native API, for one client identity.
#[derive(Clone)]
pub struct ApiClient {
    servers: Vec<ServerUrl>,
    link: Link,
    key_id: String,
    secret_file: std::path::PathBuf,
    secret_mode: ca_proto::secret::SecretFileMode,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("servers", &self.servers)
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl ApiClient {
    /// A client for `servers` trusting `ca_roots`, authenticating as
    /// `key_id` with the hex secret in `secret_file` (checked as
    /// [`crate::config::read_secret`] says, with `secret_mode`).
    pub fn new(
        servers: Vec<ServerUrl>,
        ca_roots: &[CertificateDer<'static>],
        key_id: String,
        secret_file: std::path::PathBuf,
        secret_mode: ca_proto::secret::SecretFileMode,
    ) -> Result<ApiClient, TlsConfigError> {
        Ok(ApiClient {
            servers,
            link: Link::new(tls_config(ca_roots)?),
            key_id,
            secret_file,
            secret_mode,
        })
    }

    fn credentials(&self) -> Result<ca_proto::auth::Credentials, ApiError> {
        let secret = crate::config::read_secret(&self.secret_file, self.secret_mode)
            .map_err(|e| ApiError::Credentials(CredentialsError::Secret(Arc::new(e))))?;
        Ok(ca_proto::auth::Credentials::new(
            self.key_id.clone(),
            secret,
        ))
    }

    /// Tries each server in order (see the module documentation).
    async fn with_failover<T, F, Fut>(&self, mut attempt: F) -> Result<T, ApiError>
    where
        F: FnMut(ServerUrl) -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut last = None;
        for server in &self.servers {
            match attempt(server.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if e.kind() == FailureKind::Transient => {
                    tracing::debug!(error = %e, "trying the next CA server");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ApiError::Connect {
            url: String::new(),
            detail: "no CA server configured".into(),
        }))
    }

    /// `POST /v1/sign`.
    pub async fn sign(&self, request: &SignRequest) -> Result<SignResponse, ApiError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| ApiError::Credentials(CredentialsError::Encoding(Arc::new(e))))?;
        let creds = self.credentials()?;
        let authorize = |body: &[u8]| -> Result<String, ApiError> {
            let nonce = ca_proto::auth::try_new_nonce()
                .map_err(|e| ApiError::Credentials(CredentialsError::NoRandomness(e)))?;
            Ok(ca_proto::auth::sign_request(
                &creds,
                "POST",
                PATH_SIGN,
                body,
                crate::unix_now(),
                &nonce,
            ))
        };
        self.with_failover(|server| {
            let body = body.clone();
            async move {
                let answer = exchange(
                    &self.link,
                    &server,
                    Method::POST,
                    PATH_SIGN,
                    Some(&|| authorize(&body)),
                    body.clone(),
                )
                .await?;
                if answer.status != 200 {
                    return Err(status_error(&server.url, &answer));
                }
                serde_json::from_slice::<SignResponse>(&answer.body).map_err(|e| {
                    ApiError::BadResponse {
                        url: server.url.clone(),
                        detail: format!("sign response: {e}"),
                    }
                })
            }
        })
        .await
    }

    /// The public key of issuance log `log_id` (served by its replica).
    pub async fn log_key(&self, log_id: &str) -> Result<String, ApiError> {
        if !ca_proto::auth::valid_key_id(log_id) {
            return Err(ApiError::BadResponse {
                url: String::new(),
                detail: "log id in the evidence is not a valid name".into(),
            });
        }
        let link = self.link.clone();
        self.with_failover(|server| get_log_key(link.clone(), server, log_id.to_owned()))
            .await
    }

    /// `GET /v1/classes/{class}/bundle`: the class root(s), at most
    /// [`crate::verify::MAX_BUNDLE_ROOTS`].
    pub async fn bundle(&self, class: &str) -> Result<Vec<CertificateDer<'static>>, ApiError> {
        let link = self.link.clone();
        self.with_failover(|server| get_bundle(link.clone(), server, class.to_owned()))
            .await
    }

    /// `GET /v1/classes/{class}/chain`: the active intermediate, any cross
    /// certificate, the root (at most [`crate::verify::MAX_CHAIN_CERTS`]).
    pub async fn chain(&self, class: &str) -> Result<Vec<CertificateDer<'static>>, ApiError> {
        self.chain_of(class, "").await
    }

    /// `GET /v1/classes/{class}/chain?which=all`: every intermediate the
    /// class still names (whose CRLs the CA serves), any cross certificate,
    /// the root — the signers a class's CRLs are verified against.
    pub async fn chain_all(&self, class: &str) -> Result<Vec<CertificateDer<'static>>, ApiError> {
        self.chain_of(class, "?which=all").await
    }

    async fn chain_of(
        &self,
        class: &str,
        query: &'static str,
    ) -> Result<Vec<CertificateDer<'static>>, ApiError> {
        let link = self.link.clone();
        self.with_failover(|server| {
            let link = link.clone();
            let class = class.to_owned();
            async move {
                let path = format!("{}{query}", class_chain_path(&class));
                let answer = exchange(&link, &server, Method::GET, &path, None, Vec::new()).await?;
                if answer.status != 200 {
                    return Err(status_error(&server.url, &answer));
                }
                crate::verify::parse_certs_capped(
                    &answer.body,
                    crate::verify::MAX_CHAIN_CERTS,
                    &format!("chain of class '{class}'"),
                )
                .map_err(|e| ApiError::BadResponse {
                    url: server.url.clone(),
                    detail: e.to_string(),
                })
            }
        })
        .await
    }

    /// `GET /v1/classes`: the classes and their profiles.
    pub async fn classes(&self) -> Result<ClassList, ApiError> {
        let link = self.link.clone();
        self.with_failover(|server| {
            let link = link.clone();
            async move {
                let answer =
                    exchange(&link, &server, Method::GET, PATH_CLASSES, None, Vec::new()).await?;
                if answer.status != 200 {
                    return Err(status_error(&server.url, &answer));
                }
                serde_json::from_slice::<ClassList>(&answer.body).map_err(|e| {
                    ApiError::BadResponse {
                        url: server.url.clone(),
                        detail: format!("class list: {e}"),
                    }
                })
            }
        })
        .await
    }
}

impl ApiClient {
    /// `GET /v1/classes/{class}/crl?format=pem` (unauthenticated), with
    /// `If-None-Match: etag` when given. The body is capped at
    /// [`MAX_RESPONSE_BYTES`] and parsed by the caller ([`crate::crl`]).
    pub async fn crl_pem(&self, class: &str, etag: Option<&str>) -> Result<CrlAnswer, ApiError> {
        let link = self.link.clone();
        let path = format!("{}?format=pem", class_crl_path(class));
        self.with_failover(|server| {
            let link = link.clone();
            let path = path.clone();
            async move {
                let answer =
                    exchange_with(&link, &server, Method::GET, &path, None, etag, Vec::new())
                        .await?;
                match answer.status {
                    304 if etag.is_some() => Ok(CrlAnswer::NotModified),
                    200 => Ok(CrlAnswer::Fresh {
                        pem: answer.body.to_vec(),
                        etag: answer.etag,
                    }),
                    _ => Err(status_error(&server.url, &answer)),
                }
            }
        })
        .await
    }

    /// `POST /v1/revoke` without an `Authorization` header: the request
    /// carries the holder's proof ([`ca_proto::revocation::HolderProof`]).
    pub async fn revoke(&self, request: &RevokeRequest) -> Result<RevokeResponse, ApiError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| ApiError::Credentials(CredentialsError::Encoding(Arc::new(e))))?;
        let link = self.link.clone();
        self.with_failover(|server| {
            let link = link.clone();
            let body = body.clone();
            async move {
                let answer =
                    exchange(&link, &server, Method::POST, PATH_REVOKE, None, body).await?;
                if answer.status != 200 {
                    return Err(status_error(&server.url, &answer));
                }
                serde_json::from_slice::<RevokeResponse>(&answer.body).map_err(|e| {
                    ApiError::BadResponse {
                        url: server.url.clone(),
                        detail: format!("revoke response: {e}"),
                    }
                })
            }
        })
        .await
    }
}

/// `GET /v1/log/{log_id}/key`: the issuance log's public key, PEM.
async fn get_log_key(link: Link, server: ServerUrl, log_id: String) -> Result<String, ApiError> {
    let path = format!("/v1/log/{log_id}/key");
    let answer = exchange(&link, &server, Method::GET, &path, None, Vec::new()).await?;
    if answer.status != 200 {
        return Err(status_error(&server.url, &answer));
    }
    String::from_utf8(answer.body.to_vec()).map_err(|_| ApiError::BadResponse {
        url: server.url.clone(),
        detail: format!("log key of '{log_id}' is not text"),
    })
}

async fn get_bundle(
    link: Link,
    server: ServerUrl,
    class: String,
) -> Result<Vec<CertificateDer<'static>>, ApiError> {
    let path = class_bundle_path(&class);
    let answer = exchange(&link, &server, Method::GET, &path, None, Vec::new()).await?;
    if answer.status != 200 {
        return Err(status_error(&server.url, &answer));
    }
    crate::verify::parse_certs_capped(
        &answer.body,
        crate::verify::MAX_BUNDLE_ROOTS,
        &format!("bundle of class '{class}'"),
    )
    .map_err(|e| ApiError::BadResponse {
        url: server.url.clone(),
        detail: e.to_string(),
    })
}

/// First contact with only a pinned fingerprint: fetch the `ca` class bundle
/// from each server in turn (without verifying the TLS certificate) and
/// return the root whose SHA-256 equals `pin`.
pub async fn fetch_pinned_root(
    servers: &[ServerUrl],
    pin: &[u8; 32],
) -> Result<CertificateDer<'static>, ApiError> {
    let link = Link::new(
        bootstrap_tls_config().map_err(|e| ApiError::Credentials(CredentialsError::Tls(e)))?,
    );
    let mut last = None;
    for server in servers {
        match get_bundle(link.clone(), server.clone(), "ca".into()).await {
            Ok(roots) => {
                let pin_hex = hex::encode(pin);
                if let Some(root) = roots
                    .into_iter()
                    .find(|r| crate::pem::sha256_hex(r.as_ref()) == pin_hex)
                {
                    return Ok(root);
                }
                last = Some(ApiError::PinMismatch {
                    url: server.url.clone(),
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| ApiError::Connect {
        url: String::new(),
        detail: "no CA server configured".into(),
    }))
}

/// The unit tests' local TLS servers: a listener on 127.0.0.1 (port picked
/// by the kernel), a TLS acceptor with a throwaway self-signed certificate
/// for `localhost`, the `https://localhost:PORT` URL and that certificate
/// (the root to trust).
#[cfg(test)]
pub(crate) async fn local_tls_listener() -> (
    tokio::net::TcpListener,
    tokio_rustls::TlsAcceptor,
    String,
    CertificateDer<'static>,
) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let der = params.self_signed(&key).expect("cert").der().clone();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    (listener, acceptor, format!("https://localhost:{port}"), der)
}

#[cfg(test)]
mod tests {
    //! Error shapes against a tiny local TLS server that answers canned
    //! responses; issuance itself is tested end to end against the real
    //! ca-server (tests/tests/client_e2e.rs).

    use super::*;
    use hyper::service::service_fn;
    use hyper::Response;
    use hyper_util::rt::TokioIo;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;

    struct Canned {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: String,
    }

    /// Serves `canned` to every request; returns (url, root DER, hits).
    async fn serve(canned: Canned) -> (String, CertificateDer<'static>, Arc<AtomicUsize>) {
        let (listener, acceptor, url, der) = local_tls_listener().await;
        let hits = Arc::new(AtomicUsize::new(0));
        let canned = Arc::new(canned);
        let h = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let canned = canned.clone();
                let hits = h.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let canned = canned.clone();
                        let hits = hits.clone();
                        async move {
                            hits.fetch_add(1, Ordering::SeqCst);
                            assert!(req.headers().contains_key(HOST));
                            let mut resp = Response::builder().status(canned.status);
                            for (k, v) in &canned.headers {
                                resp = resp.header(*k, *v);
                            }
                            resp.body(Full::new(Bytes::from(canned.body.clone())))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        (url, der, hits)
    }

    fn client(urls: &[String], root: &CertificateDer<'static>, dir: &std::path::Path) -> ApiClient {
        let secret = dir.join("secret.hex");
        std::fs::write(&secret, "00112233445566778899aabbccddeeff\n").expect("secret");
        // The client refuses secret files others can read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("mode");
        ApiClient::new(
            urls.iter()
                .map(|u| ServerUrl::parse(u).expect("url"))
                .collect(),
            std::slice::from_ref(root),
            "db".into(),
            secret,
            ca_proto::secret::SecretFileMode::Strict,
        )
        .expect("client")
    }

    fn sign_request() -> SignRequest {
        SignRequest {
            class: "db".into(),
            profile: None,
            csr: "PEM".into(),
            hosts: Some(vec!["a.db.internal".into()]),
            ttl: None,
        }
    }

    /// A port with nothing listening (bound, then released).
    async fn closed_port_url() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        drop(l);
        format!("https://127.0.0.1:{port}")
    }

    #[tokio::test]
    async fn policy_denial_keeps_code_message_and_reasons_and_is_not_failed_over() {
        let body = serde_json::to_string(&ErrorEnvelope::with_reasons(
            ErrorCode::PolicyDenied,
            "request denied by policy of class 'db'",
            vec![ReasonBody {
                code: "dns_name_not_allowed".into(),
                detail: "evil.example.com".into(),
            }],
        ))
        .expect("json");
        let (url, root, hits) = serve(Canned {
            status: 403,
            headers: vec![("content-type", "application/json")],
            body,
        })
        .await;
        let (url2, _, hits2) = serve(Canned {
            status: 200,
            headers: vec![],
            body: String::new(),
        })
        .await;
        let tmp = tempfile::tempdir().expect("tmp");
        let c = client(&[url.clone(), url2], &root, tmp.path());
        let err = c.sign(&sign_request()).await.unwrap_err();
        match &err {
            ApiError::Status {
                status,
                code,
                reasons,
                ..
            } => {
                assert_eq!(*status, 403);
                assert_eq!(*code, Some(ErrorCode::PolicyDenied));
                assert_eq!(reasons.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(err.kind(), FailureKind::Permanent);
        assert_eq!(err.reason(), "policy_denied");
        let line = err.to_string();
        assert!(!line.contains('\n'));
        assert!(
            line.contains("HTTP 403 policy_denied")
                && line.contains("dns_name_not_allowed: evil.example.com"),
            "{line}"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(hits2.load(Ordering::SeqCst), 0, "no failover on 403");
    }

    /// A server that answers the first request of each connection and
    /// closes the connection, without an answer, when a second one comes on
    /// it (a server that dropped an idle connection just as the client
    /// reused it). Returns (url, root, connections accepted, requests left
    /// without an answer).
    async fn serve_one_answer_per_connection() -> (
        String,
        CertificateDer<'static>,
        Arc<AtomicUsize>,
        Arc<AtomicUsize>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (listener, acceptor, url, der) = local_tls_listener().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let unanswered = Arc::new(AtomicUsize::new(0));
        let (a, u) = (accepted.clone(), unanswered.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let u = u.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    // Reads one request head (GET: no body); false at EOF.
                    async fn request_head(
                        tls: &mut tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
                    ) -> bool {
                        let mut seen = Vec::new();
                        let mut byte = [0u8; 1];
                        while !seen.ends_with(b"\r\n\r\n") {
                            match tls.read(&mut byte).await {
                                Ok(1) => seen.push(byte[0]),
                                _ => return false,
                            }
                        }
                        true
                    }
                    if !request_head(&mut tls).await {
                        return;
                    }
                    let body = "-----BEGIN PUBLIC KEY-----\n";
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tls.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    let _ = tls.flush().await;
                    // A second request on this connection: no answer.
                    if request_head(&mut tls).await {
                        u.fetch_add(1, Ordering::SeqCst);
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        (url, der, accepted, unanswered)
    }

    #[tokio::test]
    async fn a_kept_connection_closed_without_an_answer_is_replaced_by_a_new_one() {
        let (url, root, accepted, unanswered) = serve_one_answer_per_connection().await;
        let dir = tempfile::tempdir().expect("tmp");
        let c = client(std::slice::from_ref(&url), &root, dir.path());
        for round in 1..=3 {
            let key = c.log_key("dev-1").await.expect("log key");
            assert!(key.starts_with("-----BEGIN PUBLIC KEY-----"), "{key}");
            // Each request after the first went out on the kept connection,
            // found no answer there and was sent again on a new one.
            assert_eq!(accepted.load(Ordering::SeqCst), round);
            assert_eq!(unanswered.load(Ordering::SeqCst), round - 1);
        }
    }

    #[tokio::test]
    async fn unavailable_fails_over_and_keeps_retry_after() {
        let (closed, (url, root, hits)) = (
            closed_port_url().await,
            serve(Canned {
                status: 503,
                headers: vec![("retry-after", "7")],
                body: r#"{"error":{"code":"hsm_unavailable","message":"HSM unavailable"}}"#.into(),
            })
            .await,
        );
        let tmp = tempfile::tempdir().expect("tmp");
        let c = client(&[closed, url], &root, tmp.path());
        let err = c.sign(&sign_request()).await.unwrap_err();
        assert_eq!(hits.load(Ordering::SeqCst), 1, "second server was tried");
        assert_eq!(err.kind(), FailureKind::Transient);
        assert_eq!(err.reason(), "hsm_unavailable");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    }

    #[tokio::test]
    async fn non_json_error_and_bad_success_bodies() {
        let (url, root, _) = serve(Canned {
            status: 502,
            headers: vec![],
            body: "<html>\nbad gateway\n</html>".into(),
        })
        .await;
        let tmp = tempfile::tempdir().expect("tmp");
        let err = client(&[url], &root, tmp.path())
            .sign(&sign_request())
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "http_502");
        assert!(
            err.to_string().contains("<html> bad gateway </html>"),
            "{err}"
        );

        let (url, root, _) = serve(Canned {
            status: 200,
            headers: vec![],
            body: "{\"certificate\":1}".into(),
        })
        .await;
        let err = client(&[url], &root, tmp.path())
            .sign(&sign_request())
            .await
            .unwrap_err();
        assert!(matches!(err, ApiError::BadResponse { .. }), "{err}");
        assert_eq!(err.kind(), FailureKind::Transient);
    }

    #[tokio::test]
    async fn untrusted_server_is_a_tls_error_and_connection_refused_is_transient() {
        let (url, _root, hits) = serve(Canned {
            status: 200,
            headers: vec![],
            body: String::new(),
        })
        .await;
        let other = rcgen::KeyPair::generate().expect("k");
        let other_root = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("p")
            .self_signed(&other)
            .expect("c")
            .der()
            .clone();
        let tmp = tempfile::tempdir().expect("tmp");
        let err = client(&[url], &other_root, tmp.path())
            .bundle("db")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("TLS"), "{err}");
        assert_eq!(err.reason(), "connect");
        assert_eq!(hits.load(Ordering::SeqCst), 0);

        let closed = closed_port_url().await;
        let err = client(&[closed], &other_root, tmp.path())
            .bundle("db")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), FailureKind::Transient);
    }

    #[tokio::test]
    async fn pinned_root_bootstrap_checks_the_fingerprint() {
        let ca = crate::pem::testca::TestCa::new("ca");
        let other = crate::pem::testca::TestCa::new("other");
        let bundle = ca_proto::pem::encode_all(
            ca_proto::pem::Label::Certificate,
            [&other.root_der, &ca.root_der],
        );
        let (url, _, _) = serve(Canned {
            status: 200,
            headers: vec![("content-type", "application/x-pem-file")],
            body: bundle,
        })
        .await;
        let servers = vec![ServerUrl::parse(&url).expect("url")];
        let mut pin = [0u8; 32];
        hex::decode_to_slice(crate::pem::sha256_hex(&ca.root_der), &mut pin).expect("hex");
        let got = fetch_pinned_root(&servers, &pin).await.expect("pinned");
        assert_eq!(got, ca.root_der);
        let err = fetch_pinned_root(&servers, &[7u8; 32]).await.unwrap_err();
        assert!(matches!(err, ApiError::PinMismatch { .. }), "{err}");
        assert_eq!(err.kind(), FailureKind::Permanent);
    }

    #[test]
    fn server_urls() {
        let u = ServerUrl::parse("https://localhost:8443").expect("ok");
        assert_eq!((u.host.as_str(), u.port), ("localhost", 8443));
        let u = ServerUrl::parse("https://[::1]:9/").expect("ok");
        assert_eq!(
            (u.host.as_str(), u.port, u.authority.as_str()),
            ("::1", 9, "[::1]:9")
        );
        assert_eq!(u.url, "https://[::1]:9");
        assert_eq!(
            ServerUrl::parse("https://ca.internal").expect("ok").port,
            443
        );
        for bad in [
            "http://x",
            "https://u@x",
            "https://x/path",
            "x:1",
            "",
            "https://x?q",
        ] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad}");
        }
        let refused = |s: &str| ServerUrl::parse(s).expect_err(s);
        assert!(matches!(refused("http://x"), UrlError::NotHttps(_)));
        assert!(matches!(refused("https://u@x"), UrlError::UserInfo(_)));
        assert!(matches!(refused("https://x/path"), UrlError::NotBase(_)));
        assert!(matches!(refused(""), UrlError::Syntax { .. }));
        assert_eq!(
            refused("https://x?q").to_string(),
            "'https://x?q': give the base URL only (no path or query)"
        );
    }
}
