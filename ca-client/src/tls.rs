//! Hot-reloading rustls configurations for Rust services (library API).
//!
//! - [`Identity`]: the service's current key and certificate chain, read
//!   from the files the sidecar (or [`crate::agent::Agent`]) maintains and
//!   kept in memory behind a lock. It reads `combined.pem` (key + full chain
//!   in one file, so never a mismatched pair) or, failing that, `key.pem` +
//!   `fullchain.pem` (retrying if a renewal switched them between the two
//!   reads). A reload that finds broken files keeps the previous identity.
//!   It is a [`ResolvesServerCert`] and a [`ResolvesClientCert`].
//! - [`PeerTrust`]: the roots of exactly the configured peer classes
//!   (`trust/<class>.pem`), with verifiers for both directions that follow
//!   the files. A certificate of any other class fails the handshake itself.
//!   On the client side, [`NameCheck::Verify`] also checks the server name
//!   (the default, as in WebPKI); [`NameCheck::ClassOnly`] accepts any
//!   certificate of the trusted classes (the per-class trust model: the
//!   class *is* the authorisation).
//! - [`server_config`] / [`client_config`]: rustls configs (ring, TLS 1.3 and
//!   1.2) built on those; they never need rebuilding.
//! - [`watch`]: a background thread that calls `reload` on a period, so
//!   renewals, bundle and CRL changes show up in new handshakes without a
//!   restart. (Call `reload` yourself from the reload action instead, if
//!   you prefer.)
//!
//! # Revocation
//!
//! [`PeerTrust::for_classes`] also reads each class's CRLs from
//! `trust/<class>.crl.pem`, which the sidecar keeps current
//! ([`crate::revocation`]); [`PeerTrust::from_files_with_crls`] takes CRL
//! files by path. Both verifiers enforce them (rustls/webpki, the same
//! CRLs for the server and the client side):
//!
//! - **a listed serial is always refused**: a peer certificate that a CRL
//!   of its issuer lists fails the handshake (`CertificateError::Revoked`);
//! - **end-entity revocation**: webpki checks the peer's own certificate.
//!   Intermediates are checked here against the class root's CRL (the
//!   root-signed CRL of revoked intermediates, verified against the trusted
//!   roots when the files are loaded): a peer that presents a listed
//!   intermediate is refused too;
//! - **unknown status is allowed**: a certificate whose issuer has no CRL
//!   in the file (an intermediate activated since the sidecar's last
//!   refresh, a CA that publishes no CRLs, a class without a CRL file yet)
//!   is accepted, so that an intermediate rotation never makes every peer
//!   fail at once; the sidecar fetches the new intermediate's CRL within
//!   `crl_refresh`;
//! - **expired CRLs are not enforced**: a CRL past its nextUpdate still
//!   refuses what it lists and nothing else (revocations are final), so a
//!   CA or sidecar outage does not turn into refused handshakes; staleness
//!   shows in the sidecar's `trellis_client_crl_next_update_timestamp_seconds`;
//! - a CRL file that is missing means no CRL for that class; one that
//!   cannot be parsed (or a CRL rustls refuses) fails the load: at start an
//!   error, on `reload` the previous trust (bundles and CRLs) stays;
//! - the files are trusted as the sidecar wrote them: it installs only CRLs
//!   whose signature it verified against the class's CA certificates. (A
//!   CRL carrying an intermediate's name but signed by another key would
//!   make every handshake with that intermediate's leaves fail, since
//!   webpki checks the signature of the CRL it finds by name.)

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use thiserror::Error;

use crate::crl::Crl;
use crate::pem::parse_certs;

/// Why an identity or trust store could not be (re)loaded.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {err}", path = .0.display(), err = .1)]
    Read(PathBuf, std::io::Error),
    /// A file's content is unusable.
    #[error("{path}: {msg}", path = .0.display(), msg = .1)]
    Content(PathBuf, String),
    /// The key does not belong to the certificate.
    #[error("{path}: the private key does not match the certificate", path = .0.display())]
    Mismatch(PathBuf),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

fn provider() -> Arc<CryptoProvider> {
    crate::api::provider()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read(path.to_path_buf(), e))
}

#[derive(Debug, Clone)]
enum Source {
    Combined(PathBuf),
    Pair { key: PathBuf, chain: PathBuf },
}

struct Loaded {
    raw: Vec<u8>,
    key: Arc<CertifiedKey>,
}

fn certified(
    key_pem: &[u8],
    chain_pem: &[u8],
    origin: &Path,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::Content(origin.to_path_buf(), format!("private key: {e}")))?;
    let chain = parse_certs(chain_pem)
        .map_err(|e| TlsError::Content(origin.to_path_buf(), e.to_string()))?;
    match CertifiedKey::from_der(chain, key, &provider()) {
        Ok(ck) => Ok(Arc::new(ck)),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch(origin.to_path_buf())),
        Err(e) => Err(TlsError::Content(origin.to_path_buf(), e.to_string())),
    }
}

fn load(source: &Source) -> Result<Loaded, TlsError> {
    match source {
        Source::Combined(path) => {
            let raw = read(path)?;
            let key = certified(&raw, &raw, path)?;
            Ok(Loaded { raw, key })
        }
        Source::Pair { key, chain } => {
            // A renewal may switch the files between our two reads: retry.
            let mut last = None;
            for attempt in 0..3 {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let key_pem = read(key)?;
                let chain_pem = read(chain)?;
                match certified(&key_pem, &chain_pem, chain) {
                    Ok(ck) => {
                        let mut raw = key_pem;
                        raw.extend_from_slice(&chain_pem);
                        return Ok(Loaded { raw, key: ck });
                    }
                    Err(e @ TlsError::Mismatch(_)) => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
            Err(last.unwrap_or_else(|| TlsError::Mismatch(chain.clone())))
        }
    }
}

/// The service's current key and certificate chain (see the module
/// documentation).
pub struct Identity {
    source: Source,
    state: RwLock<(Vec<u8>, Arc<CertifiedKey>)>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("source", &self.source)
            .finish()
    }
}

impl Identity {
    fn new(source: Source) -> Result<Arc<Identity>, TlsError> {
        let loaded = load(&source)?;
        Ok(Arc::new(Identity {
            source,
            state: RwLock::new((loaded.raw, loaded.key)),
        }))
    }

    /// The identity in the sidecar's output directory: `DIR/combined.pem`.
    pub fn from_dir(dir: &Path) -> Result<Arc<Identity>, TlsError> {
        Identity::from_combined(&dir.join(crate::store::FileKind::Combined.file_name()))
    }

    /// From one PEM file holding the private key and the full chain.
    pub fn from_combined(path: &Path) -> Result<Arc<Identity>, TlsError> {
        Identity::new(Source::Combined(path.to_path_buf()))
    }

    /// From a key file and a full-chain file.
    pub fn from_files(key: &Path, fullchain: &Path) -> Result<Arc<Identity>, TlsError> {
        Identity::new(Source::Pair {
            key: key.to_path_buf(),
            chain: fullchain.to_path_buf(),
        })
    }

    /// The key and chain for the next handshake.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        match self.state.read() {
            Ok(g) => g.1.clone(),
            Err(p) => p.into_inner().1.clone(),
        }
    }

    /// The current leaf certificate.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.certified_key().cert.first().cloned()
    }

    /// Re-reads the files. `Ok(true)` if the identity changed; on error the
    /// previous identity stays in use.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let loaded = load(&self.source)?;
        let mut guard = match self.state.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if guard.0 == loaded.raw {
            return Ok(false);
        }
        *guard = (loaded.raw, loaded.key);
        Ok(true)
    }
}

impl ResolvesServerCert for Identity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }
}

impl ResolvesClientCert for Identity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Whether a client checks the server's name as well as its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameCheck {
    /// Chain to a trusted class root *and* a SAN matching the name dialled.
    #[default]
    Verify,
    /// Chain to a trusted class root only.
    ClassOnly,
}

/// The bytes of the files a trust state was built from (bundles, then CRL
/// files; `None` for a CRL file that does not exist).
type RawFiles = (Vec<Vec<u8>>, Vec<Option<Vec<u8>>>);

struct TrustState {
    raw: RawFiles,
    server: Arc<WebPkiServerVerifier>,
    client: Arc<dyn ClientCertVerifier>,
    /// CRLs signed by a trusted root: they list revoked intermediates.
    root_crls: Vec<Crl>,
}

impl TrustState {
    /// Refuses a presented intermediate that a root's CRL lists.
    fn check_intermediates(
        &self,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if self.root_crls.is_empty() {
            return Ok(());
        }
        for der in intermediates {
            if crate::crl::revoking(&self.root_crls, der).is_some() {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
            }
        }
        Ok(())
    }
}

/// The roots of the configured peer classes, following their files.
pub struct PeerTrust {
    files: Vec<PathBuf>,
    crl_files: Vec<PathBuf>,
    names: NameCheck,
    state: RwLock<Arc<TrustState>>,
}

impl fmt::Debug for PeerTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTrust")
            .field("files", &self.files)
            .field("crl_files", &self.crl_files)
            .field("names", &self.names)
            .finish()
    }
}

/// A file's bytes, `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, TlsError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TlsError::Read(path.to_path_buf(), e)),
    }
}

fn read_all(files: &[PathBuf], crl_files: &[PathBuf]) -> Result<RawFiles, TlsError> {
    let bundles = files.iter().map(|f| read(f)).collect::<Result<_, _>>()?;
    let crls = crl_files
        .iter()
        .map(|f| read_optional(f))
        .collect::<Result<_, _>>()?;
    Ok((bundles, crls))
}

fn build_trust(files: &[PathBuf], crl_files: &[PathBuf]) -> Result<TrustState, TlsError> {
    let raw = read_all(files, crl_files)?;
    let mut roots = RootCertStore::empty();
    let mut root_ders = Vec::new();
    for (path, bytes) in files.iter().zip(&raw.0) {
        for cert in
            parse_certs(bytes).map_err(|e| TlsError::Content(path.clone(), e.to_string()))?
        {
            roots
                .add(cert.clone())
                .map_err(|e| TlsError::Content(path.clone(), e.to_string()))?;
            root_ders.push(cert);
        }
    }
    let mut crls = Vec::new();
    let mut root_crls = Vec::new();
    for (path, bytes) in crl_files.iter().zip(&raw.1) {
        let Some(bytes) = bytes else { continue };
        for crl in crate::crl::decode_pem(bytes)
            .map_err(|e| TlsError::Content(path.clone(), e.to_string()))?
        {
            if root_ders.iter().any(|r| crl.signed_by(r).is_ok()) {
                root_crls.push(crl.clone());
            }
            crls.push(crl.der().clone());
        }
    }
    let roots = Arc::new(roots);
    let server = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
        .with_crls(crls.clone())
        .only_check_end_entity_revocation()
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let client = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .with_crls(crls)
        .only_check_end_entity_revocation()
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(TrustState {
        raw,
        server,
        client,
        root_crls,
    })
}

impl PeerTrust {
    /// Trust exactly the roots in `files` (PEM bundles), without CRLs.
    pub fn from_files(files: Vec<PathBuf>, names: NameCheck) -> Result<Arc<PeerTrust>, TlsError> {
        PeerTrust::from_files_with_crls(files, Vec::new(), names)
    }

    /// Trust exactly the roots in `files` (PEM bundles) and enforce the CRLs
    /// in `crl_files` (PEM `X509 CRL` blocks; a file that does not exist
    /// counts as none), as the module documentation says.
    pub fn from_files_with_crls(
        files: Vec<PathBuf>,
        crl_files: Vec<PathBuf>,
        names: NameCheck,
    ) -> Result<Arc<PeerTrust>, TlsError> {
        if files.is_empty() {
            return Err(TlsError::Rustls("no trust bundle given".into()));
        }
        let state = build_trust(&files, &crl_files)?;
        Ok(Arc::new(PeerTrust {
            files,
            crl_files,
            names,
            state: RwLock::new(Arc::new(state)),
        }))
    }

    /// Trust the classes `classes`, from `trust_dir/<class>.pem`, and
    /// enforce their CRLs from `trust_dir/<class>.crl.pem` (the sidecar's
    /// layout).
    pub fn for_classes(
        trust_dir: &Path,
        classes: &[&str],
        names: NameCheck,
    ) -> Result<Arc<PeerTrust>, TlsError> {
        PeerTrust::from_files_with_crls(
            classes
                .iter()
                .map(|c| trust_dir.join(format!("{c}.pem")))
                .collect(),
            classes
                .iter()
                .map(|c| trust_dir.join(format!("{c}.crl.pem")))
                .collect(),
            names,
        )
    }

    fn current(&self) -> Arc<TrustState> {
        match self.state.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Re-reads the bundles and CRL files. `Ok(true)` if they changed; on
    /// error the previous roots and CRLs stay in use.
    pub fn reload(&self) -> Result<bool, TlsError> {
        if read_all(&self.files, &self.crl_files)? == self.current().raw {
            return Ok(false);
        }
        let state = build_trust(&self.files, &self.crl_files)?;
        let mut guard = match self.state.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *guard = Arc::new(state);
        Ok(true)
    }

    /// A verifier of server certificates (for [`client_config`]).
    pub fn server_verifier(self: &Arc<Self>) -> Arc<dyn ServerCertVerifier> {
        Arc::new(PeerServerVerifier(self.clone(), provider()))
    }

    /// A verifier of client certificates (for [`server_config`]); client
    /// certificates are mandatory.
    pub fn client_verifier(self: &Arc<Self>) -> Arc<dyn ClientCertVerifier> {
        Arc::new(PeerClientVerifier(self.clone(), provider()))
    }
}

#[derive(Debug)]
struct PeerServerVerifier(Arc<PeerTrust>, Arc<CryptoProvider>);

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let state = self.0.current();
        state.check_intermediates(intermediates)?;
        match state.server.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // WebPkiServerVerifier checks the chain first and the name last,
            // so a name error means the chain is good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.0.names == NameCheck::ClassOnly => Ok(ServerCertVerified::assertion()),
            other => other,
        }
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
            &self.1.signature_verification_algorithms,
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
            &self.1.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}

#[derive(Debug)]
struct PeerClientVerifier(Arc<PeerTrust>, Arc<CryptoProvider>);

impl ClientCertVerifier for PeerClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints would have to outlive a reload; clients built with this
        // crate send their certificate without them.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let state = self.0.current();
        state.check_intermediates(intermediates)?;
        state
            .client
            .verify_client_cert(end_entity, intermediates, now)
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
            &self.1.signature_verification_algorithms,
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
            &self.1.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}

/// A server config presenting `identity`; with `clients`, client
/// certificates of those classes are required (mutual TLS).
pub fn server_config(
    identity: Arc<Identity>,
    clients: Option<&Arc<PeerTrust>>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match clients {
        Some(trust) => builder.with_client_cert_verifier(trust.client_verifier()),
        None => builder.with_no_client_auth(),
    };
    Ok(builder.with_cert_resolver(identity))
}

/// A client config trusting `servers`' classes; with `identity`, it
/// presents that client certificate.
pub fn client_config(
    identity: Option<Arc<Identity>>,
    servers: &Arc<PeerTrust>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(servers.server_verifier());
    Ok(match identity {
        Some(id) => builder.with_client_cert_resolver(id),
        None => builder.with_no_client_auth(),
    })
}

/// Stops the watcher thread when dropped.
#[derive(Debug)]
pub struct Watcher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reloads `identity` and `trust` every `period` on a background thread
/// (errors are logged; the previous state stays in use).
pub fn watch(
    identity: Option<Arc<Identity>>,
    trust: Vec<Arc<PeerTrust>>,
    period: Duration,
) -> Watcher {
    let (tx, rx) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("trellis-tls-watch".into())
        .spawn(move || loop {
            match rx.recv_timeout(period) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            if let Some(id) = &identity {
                match id.reload() {
                    Ok(true) => tracing::info!("TLS identity reloaded"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "TLS identity reload failed"),
                }
            }
            for t in &trust {
                match t.reload() {
                    Ok(true) => tracing::info!("TLS trust bundles or CRLs reloaded"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "TLS trust reload failed"),
                }
            }
        })
        .ok();
    Watcher {
        stop: Some(tx),
        thread,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyAlgorithm, LocalKey};
    use crate::pem::testca::TestCa;
    use crate::store::{install, write_atomic, FileAttrs, Layout, Material};
    use ca_proto::pem::{encode, encode_all, Label};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    fn issue(ca: &TestCa, layout: &Layout, name: &str) -> CertificateDer<'static> {
        let key = LocalKey::generate(KeyAlgorithm::EcP256).expect("key");
        let pair = rcgen::KeyPair::from_pem(key.pem()).expect("pair");
        let now = crate::unix_now();
        let leaf = ca.leaf(&pair, &[name], now - 60, now + 3600);
        install(
            layout,
            &Material {
                key_pem: key.pem().to_owned(),
                cert_pem: encode(Label::Certificate, &leaf),
                chain_pem: encode_all(Label::Certificate, [&ca.int_der]),
            },
        )
        .expect("install");
        leaf
    }

    fn bundle(dir: &Path, class: &str, ca: &TestCa) {
        write_atomic(
            &dir.join(format!("{class}.pem")),
            encode(Label::Certificate, &ca.root_der).as_bytes(),
            FileAttrs::CERT_DEFAULT,
        )
        .expect("bundle");
    }

    /// An mTLS echo server on loopback; returns its port.
    async fn serve(config: ServerConfig) -> u16 {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let mut buf = [0u8; 4];
                        if tls.read_exact(&mut buf).await.is_ok() {
                            let _ = tls.write_all(&buf).await;
                            let _ = tls.shutdown().await;
                        }
                    }
                });
            }
        });
        port
    }

    /// A client config without session resumption, so that every dial is a
    /// full handshake and shows the certificate presented now.
    fn fresh(cfg: ClientConfig) -> Arc<ClientConfig> {
        let mut cfg = cfg;
        cfg.resumption = rustls::client::Resumption::disabled();
        Arc::new(cfg)
    }

    /// Why [`dial`] did not get the server's leaf.
    #[derive(Debug, thiserror::Error)]
    enum DialError {
        /// TCP connect, the TLS handshake (a refused certificate) or the
        /// echo's read/write.
        #[error("{0}")]
        Io(#[from] std::io::Error),
        #[error("{0}")]
        ServerName(#[from] rustls_pki_types::InvalidDnsNameError),
        #[error("bad echo")]
        BadEcho,
        #[error("no server certificate")]
        NoCertificate,
    }

    /// One handshake + echo; returns the server's leaf.
    async fn dial(
        config: &Arc<ClientConfig>,
        port: u16,
        name: &str,
    ) -> Result<CertificateDer<'static>, DialError> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let sn = ServerName::try_from(name.to_owned())?;
        let mut tls = connector.connect(sn, tcp).await?;
        tls.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        if &buf != b"ping" {
            return Err(DialError::BadEcho);
        }
        let (_, conn) = tls.get_ref();
        conn.peer_certificates()
            .and_then(|c| c.first().cloned())
            .map(|c| c.into_owned())
            .ok_or(DialError::NoCertificate)
    }

    #[tokio::test]
    async fn server_keeps_handshaking_across_renewals_and_refuses_other_classes() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = TestCa::new("db");
        let api = TestCa::new("api");
        let web = TestCa::new("web");
        let trust = tmp.path().join("trust");
        bundle(&trust, "api", &api);
        bundle(&trust, "db", &db);

        // The db server: identity from its sidecar dir, trusts only api clients.
        let server_dir = Layout::new(tmp.path().join("db"));
        let first = issue(&db, &server_dir, "a.db.internal");
        let server_id = Identity::from_dir(&server_dir.dir).expect("identity");
        let api_trust = PeerTrust::for_classes(&trust, &["api"], NameCheck::Verify).expect("t");
        let port = serve(server_config(server_id.clone(), Some(&api_trust)).expect("cfg")).await;

        // An api client trusting only db servers.
        let client_dir = Layout::new(tmp.path().join("api"));
        issue(&api, &client_dir, "x.api.internal");
        let client_id = Identity::from_dir(&client_dir.dir).expect("client identity");
        let db_trust = PeerTrust::for_classes(&trust, &["db"], NameCheck::Verify).expect("t");
        let client = fresh(client_config(Some(client_id), &db_trust).expect("client cfg"));

        assert_eq!(
            dial(&client, port, "a.db.internal").await.expect("1"),
            first
        );
        let mut seen = vec![first];
        for i in 0..3 {
            let next = issue(&db, &server_dir, "a.db.internal");
            assert!(server_id.reload().expect("reload"), "renewal {i} noticed");
            assert!(!server_id.reload().expect("reload"), "no change");
            let got = dial(&client, port, "a.db.internal")
                .await
                .expect("after renewal");
            assert_eq!(got, next, "renewal {i}: the new certificate is presented");
            assert!(!seen.contains(&got));
            seen.push(got);
        }

        // Name checking: wrong name refused with Verify, accepted ClassOnly.
        assert!(dial(&client, port, "b.db.internal").await.is_err());
        let class_only = PeerTrust::for_classes(&trust, &["db"], NameCheck::ClassOnly).expect("t");
        let client_id = Identity::from_dir(&client_dir.dir).expect("id");
        let lax = fresh(client_config(Some(client_id), &class_only).expect("cfg"));
        dial(&lax, port, "b.db.internal").await.expect("class-only");

        // A web client (other class) is refused by the handshake.
        let web_dir = Layout::new(tmp.path().join("web"));
        issue(&web, &web_dir, "w.web.internal");
        let web_id = Identity::from_dir(&web_dir.dir).expect("web id");
        let web_client = fresh(client_config(Some(web_id), &db_trust).expect("cfg"));
        assert!(dial(&web_client, port, "a.db.internal").await.is_err());

        // A client that does not trust db refuses the server.
        let api_only = fresh(client_config(None, &api_trust).expect("cfg"));
        assert!(dial(&api_only, port, "a.db.internal").await.is_err());

        // Trust follows the bundle file: let web in.
        std::fs::write(
            trust.join("api.pem"),
            encode_all(Label::Certificate, [&api.root_der, &web.root_der]),
        )
        .expect("w");
        assert!(api_trust.reload().expect("reload"));
        dial(&web_client, port, "a.db.internal")
            .await
            .expect("web now trusted");
    }

    /// An api client identity under `dir`; returns it with its leaf.
    fn api_client(ca: &TestCa, dir: &Path) -> (Arc<Identity>, CertificateDer<'static>) {
        let layout = Layout::new(dir);
        let leaf = issue(ca, &layout, "x.api.internal");
        (Identity::from_dir(dir).expect("identity"), leaf)
    }

    fn serial(der: &[u8]) -> Vec<u8> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        X509Certificate::from_der(der)
            .expect("cert")
            .1
            .raw_serial()
            .to_vec()
    }

    fn write_crls(path: &Path, ders: &[Vec<u8>]) {
        let crls: Vec<crate::crl::Crl> = ders
            .iter()
            .map(|d| crate::crl::Crl::parse(d.clone(), 1).expect("crl"))
            .collect();
        write_atomic(
            path,
            crate::crl::encode_pem(&crls).as_bytes(),
            FileAttrs::CERT_DEFAULT,
        )
        .expect("crl file");
    }

    #[tokio::test]
    async fn revoked_peers_are_refused_and_new_crls_apply_without_rebuilding() {
        use crate::crl::testcrl::crl;
        let tmp = tempfile::tempdir().expect("tmp");
        let db = TestCa::new("db");
        let api = TestCa::new("api");
        let trust = tmp.path().join("trust");
        bundle(&trust, "api", &api);
        bundle(&trust, "db", &db);
        let api_crl = trust.join("api.crl.pem");
        let now = crate::unix_now();

        // The db server requires api clients, with the api CRLs.
        let server_dir = Layout::new(tmp.path().join("db"));
        let db_leaf = issue(&db, &server_dir, "a.db.internal");
        let server_id = Identity::from_dir(&server_dir.dir).expect("identity");
        let api_trust = PeerTrust::for_classes(&trust, &["api"], NameCheck::Verify).expect("t");
        let port = serve(server_config(server_id.clone(), Some(&api_trust)).expect("cfg")).await;
        let db_trust = PeerTrust::for_classes(&trust, &["db"], NameCheck::Verify).expect("t");

        let (revoked_id, revoked_leaf) = api_client(&api, &tmp.path().join("api-1"));
        let (good_id, _) = api_client(&api, &tmp.path().join("api-2"));
        let revoked = fresh(client_config(Some(revoked_id), &db_trust).expect("cfg"));
        let good = fresh(client_config(Some(good_id), &db_trust).expect("cfg"));

        // No CRL file yet: unknown status is allowed.
        dial(&revoked, port, "a.db.internal")
            .await
            .expect("no CRL yet");

        // The api intermediate's CRL lists one client: it is refused, the
        // other is not, and the server config was never rebuilt.
        write_crls(
            &api_crl,
            &[crl(
                api.int_issuer(),
                &[&serial(&revoked_leaf)],
                now,
                now + 600,
                1,
            )],
        );
        assert!(api_trust.reload().expect("reload"));
        assert!(!api_trust.reload().expect("reload"), "unchanged");
        assert!(dial(&revoked, port, "a.db.internal").await.is_err());
        dial(&good, port, "a.db.internal").await.expect("unrevoked");

        // A CRL past its nextUpdate still refuses what it lists (expiry is
        // not enforced), and nothing else.
        write_crls(
            &api_crl,
            &[crl(
                api.int_issuer(),
                &[&serial(&revoked_leaf)],
                now - 900,
                now - 300,
                2,
            )],
        );
        assert!(api_trust.reload().expect("reload"));
        assert!(dial(&revoked, port, "a.db.internal").await.is_err());
        dial(&good, port, "a.db.internal").await.expect("unrevoked");

        // A broken CRL file: the reload fails, the previous CRLs stay.
        std::fs::write(
            &api_crl,
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        )
        .expect("w");
        assert!(api_trust.reload().is_err());
        assert!(dial(&revoked, port, "a.db.internal").await.is_err());
        dial(&good, port, "a.db.internal").await.expect("unrevoked");
        assert!(
            PeerTrust::for_classes(&trust, &["api"], NameCheck::Verify).is_err(),
            "a broken CRL file fails a fresh load"
        );

        // The root's CRL lists the api intermediate: every api client is
        // refused, although webpki checks only the end entity.
        write_crls(
            &api_crl,
            &[
                crl(api.int_issuer(), &[], now, now + 600, 3),
                crl(
                    api.root_issuer(),
                    &[&serial(&api.int_der)],
                    now,
                    now + 600,
                    1,
                ),
            ],
        );
        assert!(api_trust.reload().expect("reload"));
        assert!(dial(&good, port, "a.db.internal").await.is_err());
        // A root CRL that does not list it changes nothing.
        write_crls(
            &api_crl,
            &[
                crl(api.int_issuer(), &[], now, now + 600, 4),
                crl(api.root_issuer(), &[&[0x42]], now, now + 600, 2),
            ],
        );
        assert!(api_trust.reload().expect("reload"));
        dial(&good, port, "a.db.internal")
            .await
            .expect("intermediate not revoked");
        dial(&revoked, port, "a.db.internal")
            .await
            .expect("no longer listed");

        // The client side: a revoked db server is refused; after its
        // renewal the new certificate is accepted.
        write_crls(
            &trust.join("db.crl.pem"),
            &[crl(
                db.int_issuer(),
                &[&serial(&db_leaf)],
                now,
                now + 600,
                1,
            )],
        );
        assert!(db_trust.reload().expect("reload"));
        assert!(dial(&good, port, "a.db.internal").await.is_err());
        let renewed = issue(&db, &server_dir, "a.db.internal");
        assert!(server_id.reload().expect("reload"));
        assert_eq!(
            dial(&good, port, "a.db.internal").await.expect("renewed"),
            renewed
        );
        // Name checks and revocation together: ClassOnly still refuses a
        // revoked server.
        let class_only = PeerTrust::for_classes(&trust, &["db"], NameCheck::ClassOnly).expect("t");
        write_crls(
            &trust.join("db.crl.pem"),
            &[crl(
                db.int_issuer(),
                &[&serial(&renewed)],
                now,
                now + 600,
                2,
            )],
        );
        assert!(class_only.reload().expect("reload"));
        let (id, _) = api_client(&api, &tmp.path().join("api-3"));
        let lax = fresh(client_config(Some(id), &class_only).expect("cfg"));
        assert!(dial(&lax, port, "b.db.internal").await.is_err());
    }

    #[test]
    fn only_the_issuers_own_crl_speaks_for_a_leaf() {
        use crate::crl::testcrl::crl;
        let tmp = tempfile::tempdir().expect("tmp");
        let api = TestCa::new("api");
        let other = TestCa::new("other");
        let trust = tmp.path().join("trust");
        bundle(&trust, "api", &api);
        let layout = Layout::new(tmp.path().join("api"));
        let leaf = issue(&api, &layout, "x.api.internal");
        let now = crate::unix_now();
        let verify = |t: &Arc<PeerTrust>| {
            t.client_verifier().verify_client_cert(
                &leaf,
                std::slice::from_ref(&api.int_der),
                UnixTime::now(),
            )
        };
        // Another issuer's CRL does not speak for this leaf.
        write_crls(
            &trust.join("api.crl.pem"),
            &[crl(
                other.int_issuer(),
                &[&serial(&leaf)],
                now,
                now + 600,
                1,
            )],
        );
        let t = PeerTrust::for_classes(&trust, &["api"], NameCheck::Verify).expect("t");
        verify(&t).expect("unknown status allowed");
        // The right issuer lists it.
        write_crls(
            &trust.join("api.crl.pem"),
            &[crl(api.int_issuer(), &[&serial(&leaf)], now, now + 600, 1)],
        );
        assert!(t.reload().expect("reload"));
        let err = verify(&t).unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::Revoked)
        );
        // A CRL with the issuer's name and another key fails every
        // handshake of that issuer's leaves: why the sidecar installs only
        // CRLs it verified (crate::crl::verify).
        let forged = TestCa::shaped("api", |_| {});
        write_crls(
            &trust.join("api.crl.pem"),
            &[crl(forged.int_issuer(), &[], now, now + 600, 1)],
        );
        assert!(t.reload().expect("reload"));
        assert!(verify(&t).is_err());
    }

    #[test]
    fn the_watcher_picks_up_a_changed_crl_file() {
        use crate::crl::testcrl::crl;
        let tmp = tempfile::tempdir().expect("tmp");
        let api = TestCa::new("api");
        let trust = tmp.path().join("trust");
        bundle(&trust, "api", &api);
        let leaf = issue(&api, &Layout::new(tmp.path().join("api")), "x.api.internal");
        let t = PeerTrust::for_classes(&trust, &["api"], NameCheck::Verify).expect("t");
        let verifier = t.client_verifier();
        let check = || {
            verifier.verify_client_cert(&leaf, std::slice::from_ref(&api.int_der), UnixTime::now())
        };
        check().expect("accepted");
        let w = watch(None, vec![t.clone()], Duration::from_millis(20));
        let now = crate::unix_now();
        write_crls(
            &trust.join("api.crl.pem"),
            &[crl(api.int_issuer(), &[&serial(&leaf)], now, now + 600, 1)],
        );
        let mut refused = false;
        for _ in 0..200 {
            if check().is_err() {
                refused = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(w);
        assert!(refused, "the watcher applied the new CRL file");
    }

    #[test]
    fn broken_files_keep_the_previous_identity() {
        let tmp = tempfile::tempdir().expect("tmp");
        let ca = TestCa::new("db");
        let layout = Layout::new(tmp.path());
        let leaf = issue(&ca, &layout, "a.db.internal");
        let id = Identity::from_dir(tmp.path()).expect("id");
        std::fs::write(tmp.path().join(".current/combined.pem"), b"junk").expect("w");
        assert!(id.reload().is_err());
        assert_eq!(id.leaf(), Some(leaf));

        // A mismatched pair is detected.
        let other = LocalKey::generate(KeyAlgorithm::EcP256).expect("k");
        let key_path = tmp.path().join("other.key");
        std::fs::write(&key_path, other.pem()).expect("w");
        let err = Identity::from_files(&key_path, &tmp.path().join("fullchain.pem")).unwrap_err();
        assert!(matches!(err, TlsError::Mismatch(_)), "{err}");
        Identity::from_files(
            &tmp.path().join("key.pem"),
            &tmp.path().join("fullchain.pem"),
        )
        .expect("pair");
    }

    #[test]
    fn watcher_picks_up_renewals() {
        let tmp = tempfile::tempdir().expect("tmp");
        let ca = TestCa::new("db");
        let layout = Layout::new(tmp.path());
        issue(&ca, &layout, "a.db.internal");
        let id = Identity::from_dir(tmp.path()).expect("id");
        let w = watch(Some(id.clone()), Vec::new(), Duration::from_millis(20));
        let next = issue(&ca, &layout, "a.db.internal");
        let mut ok = false;
        for _ in 0..200 {
            if id.leaf().as_ref() == Some(&next) {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(w);
        assert!(ok, "watcher reloaded the identity");
    }
}
