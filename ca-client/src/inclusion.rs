//! The issuance-log inclusion proof hook (pending).
//!
//! The server will return, in `SignResponse.log`, evidence that the
//! certificate was appended to its Merkle-tree issuance log (entry index,
//! signed tree head, audit path). Verifying it needs the log's public key
//! and the proof format, which arrive with the issuance-log issue.
//!
//! Until then this hook does **not** pretend to verify anything:
//! - with `require_inclusion_proof = false` (today's default) it passes
//!   every response through (and says at debug level whether evidence was
//!   present);
//! - with `require_inclusion_proof = true` it refuses every certificate
//!   ([`InclusionError::NotImplemented`], or [`InclusionError::Missing`]
//!   when the server sent no evidence), so that a deployment that demands
//!   proofs fails closed rather than trusting an unchecked one.
//!
//! The default becomes `true` once verification is implemented.

use ca_proto::native::SignResponse;
use thiserror::Error;

/// Why a certificate was not accepted for lack of a verified proof.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InclusionError {
    /// A proof is required and the response carries none.
    #[error("inclusion proof required but the server sent none")]
    Missing,
    /// A proof is required and cannot be verified by this version.
    #[error("inclusion proof required but verification is not implemented yet (set require_inclusion_proof = false)")]
    NotImplemented,
}

/// Checks the issuance-log evidence of `response` for the certificate
/// `leaf_der` (see the module documentation: a pass-through for now).
pub fn verify_inclusion(
    response: &SignResponse,
    leaf_der: &[u8],
    required: bool,
) -> Result<(), InclusionError> {
    let _ = leaf_der;
    match (&response.log, required) {
        (_, false) => {
            tracing::debug!(
                evidence = response.log.is_some(),
                "inclusion proof not verified (not required)"
            );
            Ok(())
        }
        (None, true) => Err(InclusionError::Missing),
        (Some(_), true) => Err(InclusionError::NotImplemented),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(log: Option<serde_json::Value>) -> SignResponse {
        SignResponse {
            certificate: String::new(),
            chain: String::new(),
            serial: "01".into(),
            not_before: String::new(),
            not_after: String::new(),
            log,
        }
    }

    #[test]
    fn pass_through_unless_required_and_never_fake() {
        assert_eq!(verify_inclusion(&response(None), b"", false), Ok(()));
        assert_eq!(
            verify_inclusion(&response(Some(serde_json::json!({"index": 1}))), b"", false),
            Ok(())
        );
        assert_eq!(
            verify_inclusion(&response(None), b"", true),
            Err(InclusionError::Missing)
        );
        assert_eq!(
            verify_inclusion(&response(Some(serde_json::json!({"index": 1}))), b"", true),
            Err(InclusionError::NotImplemented)
        );
    }
}
