//! The server's own TLS certificate, in one place: issued from the `ca`
//! class through the authority's one issuing call (so it is decided,
//! signed and recorded in the issuance log like any service's), kept
//! current (re-issued when the `ca` intermediate changed or two thirds of
//! its lifetime have passed), written to the state directory (key 0600: a
//! software leaf key like any service's), and swapped into the running
//! rustls configuration (`server::tls::ReloadableCert`) after a rotation.

use crate::config::Config;
use crate::hierarchy;
use crate::issue::{Authority, Caller, IssueRequest, Operator};
use crate::server::tls::ReloadableCert;
use crate::state::{write_atomic, StateDir};
use anyhow::{Context, Result};
use std::sync::Arc;
use time::OffsetDateTime;

/// The caller the server's own certificate is issued for (recorded as the
/// entry's key id).
const SERVER: Caller<'static> = Caller {
    key_id: "ca-server",
    scope: &Operator,
};

/// Issue the server's TLS certificate from the `ca` class when it is
/// missing, unreadable, or past two thirds of its lifetime. The key is made
/// here, in software, and written 0600: it is a leaf key like any service's.
/// Like every other certificate, it is recorded in the issuance log (when
/// one is open) before it is written.
pub fn ensure(config: &Config, authority: &Arc<Authority>) -> Result<bool> {
    let state = StateDir::new(&config.state_dir);
    if tls_is_current(&state, authority) {
        return Ok(false);
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    // Recorded like every other certificate, by the same call (with the
    // recorder the authority was given; none means no certificate).
    let issued = authority
        .issue_blocking(
            IssueRequest {
                class: "ca".into(),
                profile: Some("server".into()),
                csr: csr.der().to_vec(),
                hosts: Some(config.server.tls_names.clone()),
                ttl: None,
            },
            &SERVER,
        )
        .context("issuing the server's TLS certificate from class 'ca'")?;
    write_atomic(&state.tls_key(), key.serialize_pem().as_bytes(), 0o600)
        .with_context(|| format!("writing {}", state.tls_key().display()))?;
    write_atomic(&state.tls_chain(), issued.chain_pem.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", state.tls_chain().display()))?;
    Ok(true)
}

fn tls_is_current(state: &StateDir, authority: &Authority) -> bool {
    let Ok(chain) = hierarchy::read_pem_cert(&state.tls_chain()) else {
        return false;
    };
    if !state.tls_key().exists() {
        return false;
    }
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&chain) else {
        return false;
    };
    let Some(ca) = authority.class("ca") else {
        return false;
    };
    // Re-issue when the `ca` intermediate changed (rotation) or 2/3 of the
    // lifetime has passed.
    let issued_by_active = cert.issuer().as_raw()
        == x509_parser::parse_x509_certificate(&ca.active.cert_der)
            .map(|(_, i)| i.subject().as_raw().to_vec())
            .unwrap_or_default();
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    let renew_at = nb + (na - nb) * 2 / 3;
    issued_by_active && OffsetDateTime::now_utc().unix_timestamp() < renew_at
}

/// After a `ca` rotation: re-issue and swap the certificate into the
/// running TLS configuration; failures are reported, and the old
/// certificate keeps serving.
pub fn renew_and_reload(config: &Config, authority: &Arc<Authority>, tls: &ReloadableCert) {
    let state = StateDir::new(&config.state_dir);
    let result =
        ensure(config, authority).and_then(|_| tls.load(&state.tls_chain(), &state.tls_key()));
    match result {
        Ok(()) => tracing::info!(
            event = "tls_reloaded",
            "server TLS certificate re-issued from the new ca intermediate"
        ),
        Err(e) => tracing::error!(event = "tls_reload_failed", "{e:#}"),
    }
}
