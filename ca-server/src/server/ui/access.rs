//! Who may see the console and the inventory search:
//! - nobody when `[ui] enabled = false`;
//! - anyone who can reach a *loopback* listener (the operator on the host,
//!   or through an SSH tunnel);
//! - on any other listener, only a TLS peer whose client certificate
//!   chains to a root of a `[ui] client_classes` class (rustls verified it
//!   during the handshake; see `server::tls`); without `client_classes`
//!   the console is off there.
//!
//! The rule looks at the listener's address, not the peer's: a server
//! bound to `0.0.0.0` is not a loopback listener even for a peer on
//! 127.0.0.1 (a proxy on the host would otherwise open the console to
//! everyone it serves).

use crate::config::UiConfig;
use crate::issue::Authority;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Why the console's client roots could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("[ui] client_classes names '{0}', which is not a class of this server")]
    UnknownClass(String),
    #[error("the trust bundle of class '{class}' does not load: {detail}")]
    Bundle { class: String, detail: String },
}

/// The console's access rule for one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub enabled: bool,
    pub listener_loopback: bool,
    pub client_classes: bool,
}

impl Rule {
    pub fn new(config: &UiConfig, listener: std::net::SocketAddr) -> Rule {
        Rule {
            enabled: config.enabled,
            listener_loopback: listener.ip().is_loopback(),
            client_classes: !config.client_classes.is_empty(),
        }
    }

    /// Whether a request on a connection whose peer did (or did not)
    /// present a verified client certificate may see the console.
    pub fn allows(&self, verified_client_cert: bool) -> bool {
        self.enabled && (self.listener_loopback || (self.client_classes && verified_client_cert))
    }

    /// What the overview says about access.
    pub fn describe(&self) -> &'static str {
        match (self.listener_loopback, self.client_classes) {
            (true, _) => "loopback listener: open to local clients",
            (false, true) => "client certificate of a console class required",
            (false, false) => "off on this listener",
        }
    }
}

/// The roots client certificates must chain to (every published root of
/// each `[ui] client_classes` class), or `None` without console classes.
pub fn client_roots(
    config: &UiConfig,
    authority: &Authority,
) -> Result<Option<rustls::RootCertStore>, AccessError> {
    if config.client_classes.is_empty() || !config.enabled {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    for class in &config.client_classes {
        let loaded = authority
            .class(class)
            .ok_or_else(|| AccessError::UnknownClass(class.clone()))?;
        let bundle_error = |detail: String| AccessError::Bundle {
            class: class.clone(),
            detail,
        };
        for cert in CertificateDer::pem_slice_iter(loaded.bundle_pem.as_bytes()) {
            let cert = cert.map_err(|e| bundle_error(e.to_string()))?;
            roots.add(cert).map_err(|e| bundle_error(e.to_string()))?;
        }
    }
    Ok(Some(roots))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_opens_on_loopback_or_with_a_console_certificate_only() {
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        let on = UiConfig::default();
        let ops = UiConfig {
            client_classes: vec!["ops".into()],
            ..UiConfig::default()
        };
        let off = UiConfig {
            enabled: false,
            ..UiConfig::default()
        };
        for (config, listen, cert, allowed) in [
            (&on, "127.0.0.1:8443", false, true),
            (&on, "[::1]:8443", false, true),
            (&on, "0.0.0.0:8443", false, false),
            (&on, "0.0.0.0:8443", true, false),
            (&on, "10.1.2.3:8443", false, false),
            (&ops, "0.0.0.0:8443", false, false),
            (&ops, "0.0.0.0:8443", true, true),
            (&ops, "127.0.0.1:8443", false, true),
            (&off, "127.0.0.1:8443", true, false),
        ] {
            assert_eq!(
                Rule::new(config, addr(listen)).allows(cert),
                allowed,
                "{listen} cert={cert} classes={:?} enabled={}",
                config.client_classes,
                config.enabled
            );
        }
    }
}
