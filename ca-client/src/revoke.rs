//! Self-revocation (`ca-client revoke`): the installed certificate is
//! revoked with its own key, and a marker tells the daemon what to do next.
//!
//! 1. the installed generation is read as [`crate::inspect`] judges it (key,
//!    certificate and chain agree);
//! 2. the key signs [`ca_proto::revocation::holder_message`] (class, serial,
//!    reason, now): the holder proof of `POST /v1/revoke`, sent without an
//!    `Authorization` header, so no HMAC key with a revoke permission is
//!    needed;
//! 3. the CA's answer must name the same class and serial;
//! 4. the marker [`MARKER_FILE`] is written in the state directory
//!    (`OUT/.state/revoked.json`, atomically, the certificate files' mode):
//!    the serial and whether to enrol again.
//!
//! The daemon reads the marker on every pass (and learns the same from its
//! class's CRL, [`crate::revocation`]): when it names the installed
//! certificate it enrols at once with a **new** key (also with
//! `rotate_key = false`; the revoked key is never used again), unless the
//! marker says `reenrol: false` (`ca-client revoke --no-reenrol`, e.g. when
//! a host is retired): then it enrols no more, `/healthz` says
//! `certificate revoked`, and only an explicit `ca-client --once` (or
//! removing the marker) enrols again. A marker that names another serial
//! than the installed certificate's is stale and removed after the next
//! installation.
//!
//! The command needs no lock: it runs beside a daemon that holds the output
//! directory and writes nothing but the marker.

use std::path::{Path, PathBuf};

use base64::Engine;
use ca_proto::pem::{encode, Label};
use ca_proto::revocation::{holder_message, HolderProof, RevocationReason, RevokeRequest};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::api::{ApiClient, ApiError};
use crate::config::Settings;
use crate::inspect::{Installed, Unusable};
use crate::keys::KeyError;
use crate::store::{FileAttrs, StoreError};

/// The marker's name inside the state directory.
pub const MARKER_FILE: &str = "revoked.json";
/// Largest marker read.
const MAX_MARKER_BYTES: u64 = 64 << 10;
const MARKER_VERSION: u32 = 1;

/// What `ca-client revoke` left for the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    /// Format version (1).
    pub version: u32,
    /// The class of the revoked certificate.
    pub class: String,
    /// Its serial, lowercase hex.
    pub serial: String,
    /// The RFC 5280 reason given.
    pub reason: RevocationReason,
    /// When the CA revoked it (RFC 3339, as the CA said).
    pub revoked_at: String,
    /// Whether the daemon enrols again with a new key.
    pub reenrol: bool,
}

/// Why the marker could not be read or written. `Display` is one line.
#[derive(Debug, Error)]
pub enum MarkerError {
    /// Unreadable, not JSON, or of another version.
    #[error("revocation marker {}: {detail}", .path.display())]
    Unreadable {
        /// The marker.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Writing failed.
    #[error("writing the revocation marker: {0}")]
    Write(#[from] StoreError),
}

/// The marker's path in `state_dir`.
pub fn marker_path(state_dir: &Path) -> PathBuf {
    state_dir.join(MARKER_FILE)
}

/// The marker in `state_dir`, if any (never following a symbolic link).
pub fn read_marker(state_dir: &Path) -> Result<Option<Marker>, MarkerError> {
    let path = marker_path(state_dir);
    let bad = |detail: String| MarkerError::Unreadable {
        path: path.clone(),
        detail,
    };
    let Some(bytes) =
        crate::pins::read_no_follow(&path, MAX_MARKER_BYTES).map_err(|e| bad(e.to_string()))?
    else {
        return Ok(None);
    };
    let marker: Marker = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if marker.version != MARKER_VERSION {
        return Err(bad(format!("unknown version {}", marker.version)));
    }
    Ok(Some(marker))
}

/// Writes `marker` atomically into `state_dir` (its directory made below
/// `base` without following links, [`crate::store::ensure_dir`]).
pub fn write_marker(
    base: &Path,
    state_dir: &Path,
    marker: &Marker,
    attrs: FileAttrs,
) -> Result<(), MarkerError> {
    let mut text = serde_json::to_string_pretty(marker).map_err(|e| MarkerError::Unreadable {
        path: marker_path(state_dir),
        detail: e.to_string(),
    })?;
    text.push('\n');
    crate::store::write_atomic_in(base, &marker_path(state_dir), text.as_bytes(), attrs)?;
    Ok(())
}

/// Removes the marker (absent is fine).
pub fn remove_marker(state_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(marker_path(state_dir)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Why `ca-client revoke` did not revoke. `Display` is one line.
#[derive(Debug, Error)]
pub enum RevokeError {
    /// No usable certificate is installed.
    #[error("no installed certificate to revoke: {0}")]
    NotInstalled(#[source] Unusable),
    /// The CA client could not be set up (the CA's root).
    #[error("{0}")]
    Client(String),
    /// The key could not sign the holder proof.
    #[error("{0}")]
    Sign(#[source] KeyError),
    /// The CA could not be asked, or refused (`already_revoked`,
    /// `unknown_serial`, `unauthenticated`, …).
    #[error("{0}")]
    Api(ApiError),
    /// The CA answered for another certificate.
    #[error("the CA answered for class '{class}' serial {serial}, not the one asked for")]
    Mismatch {
        /// The class answered.
        class: String,
        /// The serial answered.
        serial: String,
    },
    /// Revoked, but the marker for the daemon could not be written.
    #[error("certificate {serial} revoked, but {source}")]
    Marker {
        /// The revoked serial.
        serial: String,
        /// Why the marker was not written.
        source: MarkerError,
    },
}

impl RevokeError {
    /// Whether the CA said the certificate was revoked already.
    pub fn already_revoked(&self) -> bool {
        matches!(
            self,
            RevokeError::Api(ApiError::Status {
                code: Some(ca_proto::ErrorCode::AlreadyRevoked),
                ..
            })
        )
    }
}

/// A revocation done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The marker written (class, serial, reason, time, re-enrolment).
    pub marker: Marker,
}

impl std::fmt::Display for Revoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.marker;
        write!(
            f,
            "revoked certificate {} of class '{}' ({}) at {}; ",
            m.serial, m.class, m.reason, m.revoked_at
        )?;
        if m.reenrol {
            f.write_str("the daemon enrols with a new key on its next pass")
        } else {
            f.write_str("not enrolling again (--no-reenrol): run ca-client --once to enrol")
        }
    }
}

/// The `POST /v1/revoke` body revoking `installed` of `class` with its own
/// key at Unix time `now`.
pub fn holder_request(
    class: &str,
    installed: &Installed,
    reason: RevocationReason,
    now: i64,
) -> Result<RevokeRequest, KeyError> {
    let serial = installed.facts.serial.clone();
    let message = holder_message(class, &serial, reason, now);
    let signature = installed.key.sign(&message)?;
    Ok(RevokeRequest {
        class: class.to_owned(),
        serial,
        reason,
        holder: Some(HolderProof {
            certificate: encode(Label::Certificate, &installed.leaf),
            timestamp: now,
            signature: base64::engine::general_purpose::STANDARD.encode(signature),
        }),
    })
}

/// Revokes the certificate installed for `settings` through `api`, then
/// writes the marker (see the module documentation). The CA's
/// `already_revoked` still writes the marker (the certificate is revoked
/// either way) and is returned as the error.
pub async fn revoke_installed(
    settings: &Settings,
    api: &ApiClient,
    reason: RevocationReason,
    reenrol: bool,
) -> Result<Revoked, RevokeError> {
    let installed =
        crate::inspect::inspect(&settings.layout, None).map_err(RevokeError::NotInstalled)?;
    let request = holder_request(&settings.class, &installed, reason, crate::unix_now())
        .map_err(RevokeError::Sign)?;
    let serial = request.serial.clone();
    let (revoked_at, result) = match api.revoke(&request).await {
        Ok(answer) => {
            let answered = answer.serial.trim_start_matches("00");
            if answer.class != settings.class || !answered.eq_ignore_ascii_case(&serial) {
                return Err(RevokeError::Mismatch {
                    class: answer.class,
                    serial: answer.serial,
                });
            }
            (answer.revoked_at.to_string(), Ok(()))
        }
        Err(e) => {
            let e = RevokeError::Api(e);
            if !e.already_revoked() {
                return Err(e);
            }
            (crate::verify::rfc3339(crate::unix_now()), Err(e))
        }
    };
    let marker = Marker {
        version: MARKER_VERSION,
        class: settings.class.clone(),
        serial: serial.clone(),
        reason,
        revoked_at,
        reenrol,
    };
    write_marker(
        &settings.layout.dir,
        &settings.state_dir,
        &marker,
        settings.layout.cert_attrs,
    )
    .map_err(|source| RevokeError::Marker {
        serial: serial.clone(),
        source,
    })?;
    result.map(|()| Revoked { marker })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyAlgorithm, LocalKey};
    use crate::pem::testca::TestCa;
    use crate::store::{install, Layout, Material};
    use ca_proto::pem::encode_all;

    #[test]
    fn the_holder_proof_verifies_with_the_certificate_key() {
        let tmp = tempfile::tempdir().expect("tmp");
        let layout = Layout::new(tmp.path());
        let ca = TestCa::new("db");
        for alg in [
            KeyAlgorithm::EcP256,
            KeyAlgorithm::EcP384,
            KeyAlgorithm::Ed25519,
        ] {
            let key = LocalKey::generate(alg).expect("key");
            let pair = rcgen::KeyPair::from_pem(key.pem()).expect("pair");
            let now = crate::unix_now();
            let leaf = ca.leaf(&pair, &["a.db.internal"], now - 60, now + 3600);
            install(
                &layout,
                &Material {
                    key_pem: key.pem().to_owned(),
                    cert_pem: encode(Label::Certificate, &leaf),
                    chain_pem: encode_all(Label::Certificate, [&ca.int_der]),
                },
            )
            .expect("install");
            let installed = crate::inspect::inspect(&layout, None).expect("installed");
            let req = holder_request("db", &installed, RevocationReason::KeyCompromise, now)
                .expect("request");
            assert_eq!(req.serial, installed.facts.serial);
            let proof = req.holder.expect("holder");
            assert_eq!(proof.timestamp, now);
            let pem_leaf = crate::pem::parse_certs(proof.certificate.as_bytes()).expect("pem");
            assert_eq!(pem_leaf, vec![leaf.clone()]);
            let sig = base64::engine::general_purpose::STANDARD
                .decode(&proof.signature)
                .expect("base64");
            let message = holder_message("db", &req.serial, RevocationReason::KeyCompromise, now);
            use ring::signature::{
                UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1, ED25519,
            };
            let alg: &dyn ring::signature::VerificationAlgorithm = match alg {
                KeyAlgorithm::EcP256 => &ECDSA_P256_SHA256_ASN1,
                KeyAlgorithm::EcP384 => &ECDSA_P384_SHA384_ASN1,
                _ => &ED25519,
            };
            let facts = crate::pem::facts(&leaf).expect("facts");
            UnparsedPublicKey::new(alg, &facts.public_key)
                .verify(&message, &sig)
                .expect("the proof verifies with the certificate's key");
            // JSON as the server decodes it.
            let body = serde_json::to_vec(&RevokeRequest {
                holder: Some(proof),
                ..req
            })
            .expect("json");
            RevokeRequest::from_json(&body).expect("server-side decode");
        }
    }

    #[test]
    fn marker_round_trip() {
        let tmp = tempfile::tempdir().expect("tmp");
        let state = tmp.path().join(".state");
        assert!(read_marker(&state).expect("none").is_none());
        let marker = Marker {
            version: MARKER_VERSION,
            class: "api".into(),
            serial: "0a1b".into(),
            reason: RevocationReason::Superseded,
            revoked_at: "2026-01-01T00:00:00Z".into(),
            reenrol: false,
        };
        write_marker(tmp.path(), &state, &marker, FileAttrs::CERT_DEFAULT).expect("write");
        assert_eq!(read_marker(&state).expect("read"), Some(marker.clone()));
        let text = std::fs::read_to_string(marker_path(&state)).expect("text");
        assert!(text.contains("\"reason\": \"superseded\""), "{text}");
        std::fs::write(
            marker_path(&state),
            text.replace("\"version\": 1", "\"version\": 9"),
        )
        .expect("w");
        assert!(read_marker(&state)
            .unwrap_err()
            .to_string()
            .contains("unknown version 9"));
        std::fs::write(marker_path(&state), b"{").expect("w");
        assert!(read_marker(&state).is_err());
        remove_marker(&state).expect("remove");
        remove_marker(&state).expect("absent is fine");
        assert!(read_marker(&state).expect("none").is_none());
        let line = Revoked { marker }.to_string();
        assert!(
            line.contains("revoked certificate 0a1b of class 'api' (superseded)")
                && line.contains("--no-reenrol")
                && !line.contains('\n'),
            "{line}"
        );
    }
}
