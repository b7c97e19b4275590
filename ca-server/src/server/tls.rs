//! The server's rustls configuration: its `ca`-class certificate chain and
//! key from the state directory (swappable at run time, for rotations), TLS
//! 1.3 and 1.2, ALPN h2 and http/1.1. With `[ui] client_classes`, client
//! certificates are requested, not required: API clients without one go on
//! as before, and one that chains to a console class root opens the console
//! on a non-loopback listener (a presented certificate that does not chain
//! fails the handshake).

use rustls::crypto::ring as provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::{Arc, RwLock};

/// The current certificate and key; `load` replaces them for new handshakes.
#[derive(Debug)]
pub struct ReloadableCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    pub fn from_files(chain_path: &Path, key_path: &Path) -> anyhow::Result<ReloadableCert> {
        Ok(ReloadableCert {
            current: RwLock::new(Arc::new(read(chain_path, key_path)?)),
        })
    }

    pub fn load(&self, chain_path: &Path, key_path: &Path) -> anyhow::Result<()> {
        let fresh = Arc::new(read(chain_path, key_path)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn read(chain_path: &Path, key_path: &Path) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(chain_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", chain_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", key_path.display()))?;
    let signing_key = provider::sign::any_supported_type(&key)?;
    Ok(CertifiedKey::new(chain, signing_key))
}

/// `client_roots`: ask clients for a certificate chaining to one of these
/// (optional); `None`: ask for none.
pub fn server_config(
    cert: Arc<ReloadableCert>,
    client_roots: Option<rustls::RootCertStore>,
) -> anyhow::Result<Arc<ServerConfig>> {
    // TLS 1.3 with AES-128-GCM/SHA-256 first, and the server's order wins:
    // SHA-256 runs on the CPU's SHA extensions where SHA-384 does not, and
    // AES-128 costs less than AES-256 per record (a profile under wrk showed
    // ring's software SHA-512 on every handshake of clients preferring
    // AES-256-GCM-SHA384). Every suite of the default provider stays.
    let mut provider = provider::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| match suite.suite() {
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 1,
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 2,
            _ => 3,
        });
    let provider = Arc::new(provider);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_roots {
        Some(roots) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()?,
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    // Stateless resumption tickets (keys rotated by rustls every 6 h): a
    // returning client (the sidecar renewing, a load balancer's pool)
    // skips the certificate signature and verification, and the server
    // keeps no per-client session state however many clients there are.
    config.ticketer = provider::Ticketer::new()?;
    Ok(Arc::new(config))
}
