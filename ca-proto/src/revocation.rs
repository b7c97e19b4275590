//! Revocation on the wire: RFC 5280 reason codes, the body of
//! `POST /v1/revoke` and its answer, and the message a certificate holder
//! signs to revoke its own certificate without an HMAC key.
//!
//! Two ways to be allowed to revoke:
//! - an auth key with the `revoke` permission for the class signs the request
//!   with the native `TRELLIS-HMAC-SHA256` header;
//! - the holder of the certificate's private key sends the certificate and a
//!   signature over [`holder_message`] (no `Authorization` header), as ACME
//!   lets a holder revoke with its own key. The message binds class, serial,
//!   reason and a timestamp that the server judges against its clock skew.

use serde::{Deserialize, Serialize};

use crate::looks_like_json_object;
use crate::native::DecodeError;
use crate::sth::LogEvidence;
use crate::time::Rfc3339;

pub use crate::routes::{class_crl_path, ocsp_path, PATH_REVOKE};

/// An RFC 5280 CRLReason that Trellis accepts. `certificateHold` and
/// `removeFromCRL` are not offered: a revocation here is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RevocationReason {
    /// `unspecified` (0).
    #[serde(rename = "unspecified")]
    Unspecified,
    /// `keyCompromise` (1): the key is never certified again, in any class.
    #[serde(rename = "keyCompromise")]
    KeyCompromise,
    /// `cACompromise` (2): for intermediates (root-signed CRL).
    #[serde(rename = "cACompromise")]
    CaCompromise,
    /// `affiliationChanged` (3).
    #[serde(rename = "affiliationChanged")]
    AffiliationChanged,
    /// `superseded` (4).
    #[serde(rename = "superseded")]
    Superseded,
    /// `cessationOfOperation` (5).
    #[serde(rename = "cessationOfOperation")]
    CessationOfOperation,
    /// `privilegeWithdrawn` (9).
    #[serde(rename = "privilegeWithdrawn")]
    PrivilegeWithdrawn,
}

impl RevocationReason {
    /// Every accepted reason.
    pub const ALL: [RevocationReason; 7] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn,
    ];

    /// The RFC 5280 name (`keyCompromise`), which is also the wire form.
    pub const fn name(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::CaCompromise => "cACompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
        }
    }

    /// The CRLReason code (ENUMERATED value).
    pub const fn code(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::CaCompromise => 2,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
            RevocationReason::PrivilegeWithdrawn => 9,
        }
    }

    /// The reason named `name` (RFC 5280 spelling; also accepts the
    /// snake_case and all-lowercase spellings operators type).
    pub fn from_name(name: &str) -> Option<RevocationReason> {
        let folded: String = name
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .collect::<String>()
            .to_ascii_lowercase();
        RevocationReason::ALL
            .into_iter()
            .find(|r| r.name().to_ascii_lowercase() == folded)
    }

    /// The reason of a CRLReason code.
    pub fn from_code(code: u8) -> Option<RevocationReason> {
        RevocationReason::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl std::fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Body of `POST /v1/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// The class that issued the certificate.
    pub class: String,
    /// Serial number, lowercase hex (as in sign responses and the log).
    pub serial: String,
    /// Why.
    pub reason: RevocationReason,
    /// Present for self-revocation (no `Authorization` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<HolderProof>,
}

/// Proof that the requester holds the certificate's private key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HolderProof {
    /// The certificate being revoked, PEM.
    pub certificate: String,
    /// Unix seconds; must be within the server's clock skew.
    pub timestamp: i64,
    /// Base64 (standard) signature over [`holder_message`] with the
    /// certificate's key: ECDSA (DER, SHA-256 for P-256, SHA-384 for
    /// P-384), RSA PKCS#1 v1.5 with SHA-256, or Ed25519.
    pub signature: String,
}

/// The bytes a holder signs to revoke its certificate.
pub fn holder_message(
    class: &str,
    serial: &str,
    reason: RevocationReason,
    timestamp: i64,
) -> Vec<u8> {
    format!(
        "TRELLIS-REVOKE-V1\n{class}\n{serial}\n{}\n{timestamp}",
        reason.name()
    )
    .into_bytes()
}

impl RevokeRequest {
    /// Decodes a `POST /v1/revoke` body: a JSON object with the fields above
    /// and no others.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DecodeError> {
        if !looks_like_json_object(bytes) {
            return Err(DecodeError::new("request body must be a JSON object"));
        }
        serde_json::from_slice(bytes).map_err(|e| DecodeError::from_serde(&e))
    }
}

/// Body of a successful `POST /v1/revoke`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevokeResponse {
    /// Class of the certificate.
    pub class: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Reason recorded.
    pub reason: RevocationReason,
    /// When it was revoked.
    pub revoked_at: Rfc3339,
    /// SHA-256 fingerprint of the issuing intermediate.
    pub issuer: String,
    /// The revocation's entry in this replica's issuance log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogEvidence>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_names_codes_and_serde() {
        for r in RevocationReason::ALL {
            assert_eq!(RevocationReason::from_name(r.name()), Some(r));
            assert_eq!(RevocationReason::from_code(r.code()), Some(r));
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.name())
            );
        }
        assert_eq!(
            RevocationReason::from_name("key_compromise"),
            Some(RevocationReason::KeyCompromise)
        );
        assert_eq!(
            RevocationReason::from_name("CACOMPROMISE"),
            Some(RevocationReason::CaCompromise)
        );
        assert_eq!(RevocationReason::from_name("certificateHold"), None);
        assert_eq!(RevocationReason::from_code(6), None);
    }

    #[test]
    fn request_is_strict() {
        let ok =
            RevokeRequest::from_json(br#"{"class":"db","serial":"0a","reason":"keyCompromise"}"#)
                .unwrap();
        assert_eq!(ok.reason, RevocationReason::KeyCompromise);
        assert!(ok.holder.is_none());
        for bad in [
            &br#"{"class":"db","serial":"0a","reason":"certificateHold"}"#[..],
            br#"{"class":"db","serial":"0a"}"#,
            br#"{"class":"db","serial":"0a","reason":"superseded","x":1}"#,
            br#"["db"]"#,
        ] {
            assert!(RevokeRequest::from_json(bad).is_err());
        }
        let with_holder = RevokeRequest::from_json(
            br#"{"class":"db","serial":"0a","reason":"superseded","holder":{"certificate":"P","timestamp":5,"signature":"AA=="}}"#,
        )
        .unwrap();
        assert_eq!(with_holder.holder.unwrap().timestamp, 5);
    }

    #[test]
    fn holder_message_binds_every_field() {
        let m = holder_message("db", "0a", RevocationReason::Superseded, 7);
        assert_eq!(m, b"TRELLIS-REVOKE-V1\ndb\n0a\nsuperseded\n7");
    }
}
