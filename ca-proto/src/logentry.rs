//! One issuance-log entry: what was decided, for whom, and (when issued) the
//! certificate itself. The entry's exact JSON bytes are the Merkle leaf, so
//! the server and every verifier share this one definition.

use serde::{Deserialize, Serialize};

/// Whether the request was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogDecision {
    /// A certificate was signed and returned.
    Issued,
    /// Nothing was signed; `reasons` say why.
    Denied,
}

/// A decision reason, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogReason {
    /// Stable reason or error code.
    pub code: String,
    /// Human detail naming the offending value.
    pub detail: String,
}

/// An issuance-log entry. Field order is the serialisation order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Position in the log, from 0.
    pub seq: u64,
    /// Decision time, RFC 3339 UTC.
    pub time: String,
    /// The log (server replica) that recorded it.
    pub log_id: String,
    /// Class requested.
    pub class: String,
    /// Profile requested (or the class default).
    pub profile: String,
    /// Auth key that made the request.
    pub key_id: String,
    /// Issued or denied.
    pub decision: LogDecision,
    /// Serial number, lowercase hex (issued only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Subject common name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// DNS SANs (granted, or requested when denied).
    #[serde(default)]
    pub dns: Vec<String>,
    /// IP SANs.
    #[serde(default)]
    pub ips: Vec<String>,
    /// URI SANs.
    #[serde(default)]
    pub uris: Vec<String>,
    /// Validity start, RFC 3339 (issued only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// Validity end, RFC 3339 (issued only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// SHA-256 of the subject public key info, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spki_sha256: Option<String>,
    /// SHA-256 fingerprint of the issuing intermediate, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The certificate, base64 DER (issued only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// Why it was denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<LogReason>,
}

impl LogEntry {
    /// The exact bytes that are stored and hashed as the Merkle leaf.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parse stored bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<LogEntry, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The certificate DER, when the entry carries one.
    pub fn certificate_der(&self) -> Option<Vec<u8>> {
        use base64::Engine;
        let b64 = self.certificate.as_deref()?;
        base64::engine::general_purpose::STANDARD.decode(b64).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_exactly() {
        let entry = LogEntry {
            seq: 7,
            time: "2026-11-28T10:00:00Z".into(),
            log_id: "dev-1".into(),
            class: "db".into(),
            profile: "server".into(),
            key_id: "db".into(),
            decision: LogDecision::Denied,
            serial: None,
            subject: Some("x.db.internal".into()),
            dns: vec!["x.db.internal".into()],
            ips: vec!["1.1.1.1".into()],
            uris: vec![],
            not_before: None,
            not_after: None,
            spki_sha256: None,
            issuer: None,
            certificate: None,
            reasons: vec![LogReason {
                code: "ip_not_allowed".into(),
                detail: "1.1.1.1".into(),
            }],
        };
        let bytes = entry.to_bytes();
        assert_eq!(LogEntry::from_bytes(&bytes).unwrap(), entry);
        assert_eq!(LogEntry::from_bytes(&bytes).unwrap().to_bytes(), bytes);
        assert!(String::from_utf8(bytes)
            .unwrap()
            .starts_with(r#"{"seq":7,"time":"#));
    }
}
