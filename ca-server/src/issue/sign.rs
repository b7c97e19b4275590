//! Step *sign*: the HSM signs the built certificate with the class's active
//! intermediate. Runs on a signing-pool thread, which owns the session.
//!
//! Only the authority (`issue`) can sign, and only what [`Built`] holds,
//! which only `build::leaf_params` makes from a `policies::Grant`; neither
//! the signer nor the builder is reachable from outside:
//!
//! ```compile_fail
//! use ca_server::issue::sign::sign_leaf;
//! ```
//!
//! ```compile_fail
//! use ca_server::issue::build::leaf_params;
//! ```

use super::build::Built;
use crate::hierarchy::IssuingCa;
use hsm::{HsmError, HsmSigningKey, PoolSession};
use rcgen::{Issuer, SubjectPublicKeyInfo};
use rustls_pki_types::CertificateDer;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Hsm(#[from] HsmError),
    #[error("certificate could not be encoded: {0}")]
    Encode(String),
}

/// A signed leaf, not yet recorded: its bytes stay inside the issuing
/// module until the log append succeeded.
pub(crate) struct Signed {
    der: Vec<u8>,
}

impl Signed {
    pub(super) fn der(&self) -> &[u8] {
        &self.der
    }

    pub(super) fn into_der(self) -> Vec<u8> {
        self.der
    }
}

/// Sign what [`Built`] holds (made only from a grant) for `subject_key`.
pub(super) fn sign_leaf(
    class: &str,
    session: &mut PoolSession,
    issuer: &IssuingCa,
    built: &Built,
    subject_key: &SubjectPublicKeyInfo,
) -> Result<Signed, SignError> {
    let params = &built.params;
    let signer = HsmSigningKey::new(session, &issuer.key);
    // rcgen 0.14 has no owned issuer description without a key, so the
    // issuer fields are read from the intermediate's DER on each signature.
    let rcgen_issuer =
        Issuer::from_ca_cert_der(&CertificateDer::from(issuer.cert_der.as_slice()), &signer)
            .map_err(|e| SignError::Encode(e.to_string()))?;
    let started = std::time::Instant::now();
    let signed = params.signed_by(subject_key, &rcgen_issuer);
    let metrics = crate::metrics::metrics();
    match signed {
        Ok(cert) => {
            metrics
                .hsm_sign_seconds
                .with_label_values(&[class])
                .observe(started.elapsed().as_secs_f64());
            Ok(Signed {
                der: cert.der().to_vec(),
            })
        }
        Err(e) => Err(match signer.take_error() {
            Some(hsm) => {
                let kind = hsm.rv_name();
                metrics.hsm_errors.with_label_values(&[kind.as_str()]).inc();
                metrics
                    .hsm_failure_epoch
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                SignError::Hsm(hsm)
            }
            None => SignError::Encode(e.to_string()),
        }),
    }
}
