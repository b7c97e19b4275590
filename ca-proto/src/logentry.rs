//! One issuance-log entry: what was decided, for whom, and (when issued) the
//! certificate itself. The entry's exact JSON bytes are the Merkle leaf, so
//! the server and every verifier share this one definition.
//!
//! The type is shaped so that impossible entries cannot be built: an issued
//! entry always carries its certificate facts and no reasons, a denial
//! carries reasons and no certificate facts ([`Outcome`]). On the wire the
//! entry is the flat object it has always been (a private `Wire` struct with
//! the historical field order and skip rules), so stored bytes do not
//! change; a stored entry that breaks the invariants fails to parse.

use crate::time::Rfc3339;
use serde::{Deserialize, Serialize};

/// Whether the request was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogDecision {
    /// A certificate was signed and returned.
    Issued,
    /// Nothing was signed; `reasons` say why.
    Denied,
    /// A certificate issued earlier was revoked.
    Revoked,
}

/// A decision reason, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogReason {
    /// Stable reason or error code.
    pub code: String,
    /// Human detail naming the offending value.
    pub detail: String,
}

/// An issuance-log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Wire", into = "Wire")]
pub struct LogEntry {
    /// Position in the log, from 0.
    pub seq: u64,
    /// Decision time, RFC 3339 UTC.
    pub time: Rfc3339,
    /// The log (server replica) that recorded it.
    pub log_id: String,
    /// Class requested.
    pub class: String,
    /// Profile requested (or the class default).
    pub profile: String,
    /// Auth key that made the request.
    pub key_id: String,
    /// What was decided, with the facts that belong to that decision.
    pub outcome: Outcome,
}

/// What was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A certificate was signed.
    Issued(IssuedEntry),
    /// Nothing was signed.
    Denied(DeniedEntry),
    /// A certificate was revoked (by an operator, an auth key with the
    /// `revoke` permission, or its holder; `key_id` says who).
    Revoked(RevokedEntry),
}

/// The facts of a revocation: which certificate, why, since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    /// Serial number of the revoked certificate, lowercase hex.
    pub serial: String,
    /// SHA-256 of its subject public key info, hex.
    pub spki_sha256: String,
    /// SHA-256 fingerprint of its issuer (an intermediate, or for a revoked
    /// intermediate the class root), hex.
    pub issuer: String,
    /// End of the revoked certificate's validity (until when the CRL lists
    /// it).
    pub not_after: Rfc3339,
    /// RFC 5280 reason name (`keyCompromise`, …).
    pub reason: String,
    /// Revocation time, RFC 3339.
    pub revoked_at: Rfc3339,
}

/// The facts of a signed certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedEntry {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Subject common name, when the certificate has one.
    pub subject: Option<String>,
    /// Granted DNS SANs.
    pub dns: Vec<String>,
    /// Granted IP SANs.
    pub ips: Vec<String>,
    /// Granted URI SANs.
    pub uris: Vec<String>,
    /// Validity start, RFC 3339.
    pub not_before: Rfc3339,
    /// Validity end, RFC 3339.
    pub not_after: Rfc3339,
    /// SHA-256 of the subject public key info, hex.
    pub spki_sha256: String,
    /// SHA-256 fingerprint of the issuing intermediate, hex.
    pub issuer: String,
    /// The certificate, base64 DER.
    pub certificate: String,
}

/// A refusal: what was asked for and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedEntry {
    /// Requested subject common name, when known.
    pub subject: Option<String>,
    /// Requested DNS SANs.
    pub dns: Vec<String>,
    /// Requested IP SANs.
    pub ips: Vec<String>,
    /// Requested URI SANs.
    pub uris: Vec<String>,
    /// Why it was denied. The server always gives at least one reason; an
    /// empty list still parses, so that every value of this type reads back
    /// (a log whose entry could not be read back would not recover).
    pub reasons: Vec<LogReason>,
}

/// A stored entry that is well-formed JSON but not a possible entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryShapeError {
    /// An issued entry lacks a certificate fact.
    #[error("issued entry without `{0}`")]
    IssuedMissing(&'static str),
    /// An issued entry carries denial reasons.
    #[error("issued entry with `reasons`")]
    IssuedWithReasons,
    /// A denial carries a certificate fact.
    #[error("denied entry with `{0}`")]
    DeniedWith(&'static str),
    /// A revocation lacks one of its facts.
    #[error("revoked entry without `{0}`")]
    RevokedMissing(&'static str),
    /// A revocation carries a fact that belongs to another kind of entry.
    #[error("revoked entry with `{0}`")]
    RevokedWith(&'static str),
    /// Revocation facts on an issued or denied entry.
    #[error("{0} entry with `revocation_reason` or `revoked_at`")]
    RevocationFactsOn(&'static str),
}

/// The flat wire form. Field order is the serialisation order; these
/// attributes define the leaf bytes of every existing log.
#[derive(Serialize, Deserialize)]
struct Wire {
    seq: u64,
    time: Rfc3339,
    log_id: String,
    class: String,
    profile: String,
    key_id: String,
    decision: LogDecision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(default)]
    dns: Vec<String>,
    #[serde(default)]
    ips: Vec<String>,
    #[serde(default)]
    uris: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_before: Option<Rfc3339>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_after: Option<Rfc3339>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spki_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    reasons: Vec<LogReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revocation_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_at: Option<Rfc3339>,
}

impl TryFrom<Wire> for LogEntry {
    type Error = EntryShapeError;

    fn try_from(w: Wire) -> Result<LogEntry, EntryShapeError> {
        if w.decision != LogDecision::Revoked
            && (w.revocation_reason.is_some() || w.revoked_at.is_some())
        {
            return Err(EntryShapeError::RevocationFactsOn(match w.decision {
                LogDecision::Issued => "issued",
                _ => "denied",
            }));
        }
        let outcome = match w.decision {
            LogDecision::Revoked => {
                fn need<T>(v: Option<T>, name: &'static str) -> Result<T, EntryShapeError> {
                    v.ok_or(EntryShapeError::RevokedMissing(name))
                }
                let foreign = [
                    ("subject", w.subject.is_some()),
                    ("dns", !w.dns.is_empty()),
                    ("ips", !w.ips.is_empty()),
                    ("uris", !w.uris.is_empty()),
                    ("not_before", w.not_before.is_some()),
                    ("certificate", w.certificate.is_some()),
                    ("reasons", !w.reasons.is_empty()),
                ];
                if let Some((name, _)) = foreign.iter().find(|(_, present)| *present) {
                    return Err(EntryShapeError::RevokedWith(name));
                }
                Outcome::Revoked(RevokedEntry {
                    serial: need(w.serial, "serial")?,
                    spki_sha256: need(w.spki_sha256, "spki_sha256")?,
                    issuer: need(w.issuer, "issuer")?,
                    not_after: need(w.not_after, "not_after")?,
                    reason: need(w.revocation_reason, "revocation_reason")?,
                    revoked_at: need(w.revoked_at, "revoked_at")?,
                })
            }
            LogDecision::Issued => {
                fn need<T>(v: Option<T>, name: &'static str) -> Result<T, EntryShapeError> {
                    v.ok_or(EntryShapeError::IssuedMissing(name))
                }
                if !w.reasons.is_empty() {
                    return Err(EntryShapeError::IssuedWithReasons);
                }
                Outcome::Issued(IssuedEntry {
                    serial: need(w.serial, "serial")?,
                    subject: w.subject,
                    dns: w.dns,
                    ips: w.ips,
                    uris: w.uris,
                    not_before: need(w.not_before, "not_before")?,
                    not_after: need(w.not_after, "not_after")?,
                    spki_sha256: need(w.spki_sha256, "spki_sha256")?,
                    issuer: need(w.issuer, "issuer")?,
                    certificate: need(w.certificate, "certificate")?,
                })
            }
            LogDecision::Denied => {
                let facts = [
                    ("serial", w.serial.is_some()),
                    ("not_before", w.not_before.is_some()),
                    ("not_after", w.not_after.is_some()),
                    ("spki_sha256", w.spki_sha256.is_some()),
                    ("issuer", w.issuer.is_some()),
                    ("certificate", w.certificate.is_some()),
                ];
                if let Some((name, _)) = facts.iter().find(|(_, present)| *present) {
                    return Err(EntryShapeError::DeniedWith(name));
                }
                Outcome::Denied(DeniedEntry {
                    subject: w.subject,
                    dns: w.dns,
                    ips: w.ips,
                    uris: w.uris,
                    reasons: w.reasons,
                })
            }
        };
        Ok(LogEntry {
            seq: w.seq,
            time: w.time,
            log_id: w.log_id,
            class: w.class,
            profile: w.profile,
            key_id: w.key_id,
            outcome,
        })
    }
}

impl From<LogEntry> for Wire {
    fn from(e: LogEntry) -> Wire {
        let mut w = Wire {
            seq: e.seq,
            time: e.time,
            log_id: e.log_id,
            class: e.class,
            profile: e.profile,
            key_id: e.key_id,
            decision: LogDecision::Issued,
            serial: None,
            subject: None,
            dns: Vec::new(),
            ips: Vec::new(),
            uris: Vec::new(),
            not_before: None,
            not_after: None,
            spki_sha256: None,
            issuer: None,
            certificate: None,
            reasons: Vec::new(),
            revocation_reason: None,
            revoked_at: None,
        };
        match e.outcome {
            Outcome::Issued(i) => {
                w.serial = Some(i.serial);
                w.subject = i.subject;
                w.dns = i.dns;
                w.ips = i.ips;
                w.uris = i.uris;
                w.not_before = Some(i.not_before);
                w.not_after = Some(i.not_after);
                w.spki_sha256 = Some(i.spki_sha256);
                w.issuer = Some(i.issuer);
                w.certificate = Some(i.certificate);
            }
            Outcome::Denied(d) => {
                w.decision = LogDecision::Denied;
                w.subject = d.subject;
                w.dns = d.dns;
                w.ips = d.ips;
                w.uris = d.uris;
                w.reasons = d.reasons;
            }
            Outcome::Revoked(r) => {
                w.decision = LogDecision::Revoked;
                w.serial = Some(r.serial);
                w.spki_sha256 = Some(r.spki_sha256);
                w.issuer = Some(r.issuer);
                w.not_after = Some(r.not_after);
                w.revocation_reason = Some(r.reason);
                w.revoked_at = Some(r.revoked_at);
            }
        }
        w
    }
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
        let b64 = self.certificate()?;
        base64::engine::general_purpose::STANDARD.decode(b64).ok()
    }

    /// Issued, denied or revoked.
    pub fn decision(&self) -> LogDecision {
        match self.outcome {
            Outcome::Issued(_) => LogDecision::Issued,
            Outcome::Denied(_) => LogDecision::Denied,
            Outcome::Revoked(_) => LogDecision::Revoked,
        }
    }

    /// The certificate facts, when issued.
    pub fn issued(&self) -> Option<&IssuedEntry> {
        match &self.outcome {
            Outcome::Issued(i) => Some(i),
            _ => None,
        }
    }

    /// The refusal, when denied.
    pub fn denied(&self) -> Option<&DeniedEntry> {
        match &self.outcome {
            Outcome::Denied(d) => Some(d),
            _ => None,
        }
    }

    /// The revocation, when this entry records one.
    pub fn revoked(&self) -> Option<&RevokedEntry> {
        match &self.outcome {
            Outcome::Revoked(r) => Some(r),
            _ => None,
        }
    }

    /// Serial number, lowercase hex (issued: the new certificate's;
    /// revoked: the revoked certificate's).
    pub fn serial(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Issued(i) => Some(i.serial.as_str()),
            Outcome::Revoked(r) => Some(r.serial.as_str()),
            Outcome::Denied(_) => None,
        }
    }

    /// The certificate, base64 DER (issued only).
    pub fn certificate(&self) -> Option<&str> {
        self.issued().map(|i| i.certificate.as_str())
    }

    /// Why it was denied (empty when issued).
    pub fn reasons(&self) -> &[LogReason] {
        self.denied().map_or(&[], |d| d.reasons.as_slice())
    }

    /// Subject common name (granted, or requested when denied; none for a
    /// revocation).
    pub fn subject(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Issued(i) => i.subject.as_deref(),
            Outcome::Denied(d) => d.subject.as_deref(),
            Outcome::Revoked(_) => None,
        }
    }

    /// DNS SANs (granted, or requested when denied).
    pub fn dns(&self) -> &[String] {
        match &self.outcome {
            Outcome::Issued(i) => &i.dns,
            Outcome::Denied(d) => &d.dns,
            Outcome::Revoked(_) => &[],
        }
    }

    /// IP SANs (granted, or requested when denied).
    pub fn ips(&self) -> &[String] {
        match &self.outcome {
            Outcome::Issued(i) => &i.ips,
            Outcome::Denied(d) => &d.ips,
            Outcome::Revoked(_) => &[],
        }
    }

    /// URI SANs (granted, or requested when denied).
    pub fn uris(&self) -> &[String] {
        match &self.outcome {
            Outcome::Issued(i) => &i.uris,
            Outcome::Denied(d) => &d.uris,
            Outcome::Revoked(_) => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_exactly() {
        let entry = LogEntry {
            seq: 7,
            time: "2026-11-28T10:00:00Z".parse().unwrap(),
            log_id: "dev-1".into(),
            class: "db".into(),
            profile: "server".into(),
            key_id: "db".into(),
            outcome: Outcome::Denied(DeniedEntry {
                subject: Some("x.db.internal".into()),
                dns: vec!["x.db.internal".into()],
                ips: vec!["1.1.1.1".into()],
                uris: vec![],
                reasons: vec![LogReason {
                    code: "ip_not_allowed".into(),
                    detail: "1.1.1.1".into(),
                }],
            }),
        };
        let bytes = entry.to_bytes();
        assert_eq!(LogEntry::from_bytes(&bytes).unwrap(), entry);
        assert_eq!(LogEntry::from_bytes(&bytes).unwrap().to_bytes(), bytes);
        assert_eq!(String::from_utf8(bytes).unwrap(), DENIED);
    }

    // Serialised by the flat struct this type replaced, before the change:
    // the leaves of existing logs.
    const ISSUED: &str = r#"{"seq":1,"time":"2026-11-28T10:00:00Z","log_id":"dev-1","class":"db","profile":"server","key_id":"db","decision":"issued","serial":"0a1b","subject":"x.db.internal","dns":["x.db.internal"],"ips":["10.0.0.1"],"uris":[],"not_before":"2026-11-28T09:55:00Z","not_after":"2026-11-29T10:00:00Z","spki_sha256":"ab12","issuer":"cd34","certificate":"AAEC"}"#;
    const DENIED: &str = r#"{"seq":7,"time":"2026-11-28T10:00:00Z","log_id":"dev-1","class":"db","profile":"server","key_id":"db","decision":"denied","subject":"x.db.internal","dns":["x.db.internal"],"ips":["1.1.1.1"],"uris":[],"reasons":[{"code":"ip_not_allowed","detail":"1.1.1.1"}]}"#;
    const DENIED_BARE: &str = r#"{"seq":8,"time":"2026-11-28T10:00:00Z","log_id":"dev-1","class":"db","profile":"server","key_id":"db","decision":"denied","dns":[],"ips":[],"uris":[],"reasons":[{"code":"bad_csr","detail":"x"}]}"#;

    #[test]
    fn fixed_bytes_round_trip() {
        for text in [ISSUED, DENIED, DENIED_BARE] {
            let entry = LogEntry::from_bytes(text.as_bytes()).unwrap();
            assert_eq!(String::from_utf8(entry.to_bytes()).unwrap(), text);
        }
    }

    const REVOKED: &str = r#"{"seq":9,"time":"2026-12-05T10:00:00Z","log_id":"dev-1","class":"db","profile":"server","key_id":"admin","decision":"revoked","serial":"0a1b","dns":[],"ips":[],"uris":[],"not_after":"2026-12-06T10:00:00Z","spki_sha256":"ab12","issuer":"cd34","revocation_reason":"keyCompromise","revoked_at":"2026-12-05T10:00:00Z"}"#;

    #[test]
    fn revocations_round_trip_and_refuse_foreign_facts() {
        let entry = LogEntry::from_bytes(REVOKED.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(entry.to_bytes()).unwrap(), REVOKED);
        assert_eq!(entry.decision(), LogDecision::Revoked);
        assert_eq!(entry.serial(), Some("0a1b"));
        assert_eq!(entry.revoked().unwrap().reason, "keyCompromise");
        assert!(entry.certificate_der().is_none());
        let with_cert = REVOKED.replace(
            r#""issuer":"cd34""#,
            r#""issuer":"cd34","certificate":"AA""#,
        );
        assert!(refusal(&with_cert).contains("revoked entry with `certificate`"));
        let no_reason = REVOKED.replace(r#","revocation_reason":"keyCompromise""#, "");
        assert!(refusal(&no_reason).contains("revoked entry without `revocation_reason`"));
        let issued_with = ISSUED.replace(
            r#""certificate":"AAEC""#,
            r#""certificate":"AAEC","revocation_reason":"x""#,
        );
        assert!(refusal(&issued_with).contains("issued entry with `revocation_reason`"));
    }

    #[test]
    fn accessors_follow_the_outcome() {
        let issued = LogEntry::from_bytes(ISSUED.as_bytes()).unwrap();
        assert_eq!(issued.decision(), LogDecision::Issued);
        assert_eq!(issued.serial(), Some("0a1b"));
        assert_eq!(issued.certificate_der(), Some(vec![0, 1, 2]));
        assert!(issued.reasons().is_empty());
        assert_eq!(issued.ips(), ["10.0.0.1"]);
        let denied = LogEntry::from_bytes(DENIED.as_bytes()).unwrap();
        assert_eq!(denied.decision(), LogDecision::Denied);
        assert_eq!(denied.serial(), None);
        assert_eq!(denied.certificate_der(), None);
        assert_eq!(denied.reasons()[0].code, "ip_not_allowed");
        assert_eq!(denied.subject(), Some("x.db.internal"));
    }

    fn refusal(text: &str) -> String {
        LogEntry::from_bytes(text.as_bytes())
            .expect_err("an impossible entry parsed")
            .to_string()
    }

    #[test]
    fn every_value_reads_back() {
        let bare = LogEntry::from_bytes(DENIED_BARE.as_bytes()).unwrap();
        let mut empty = bare.clone();
        if let Outcome::Denied(d) = &mut empty.outcome {
            d.reasons.clear();
        }
        assert_eq!(LogEntry::from_bytes(&empty.to_bytes()).unwrap(), empty);
    }

    #[test]
    fn refuses_impossible_entries() {
        let no_cert = ISSUED.replace(r#","certificate":"AAEC""#, "");
        assert!(refusal(&no_cert).contains("issued entry without `certificate`"));
        let with_reasons = ISSUED.replace(
            r#""certificate":"AAEC""#,
            r#""certificate":"AAEC","reasons":[{"code":"x","detail":"y"}]"#,
        );
        assert!(refusal(&with_reasons).contains("issued entry with `reasons`"));
        let with_serial = DENIED.replace(r#""subject""#, r#""serial":"0a1b","subject""#);
        assert!(refusal(&with_serial).contains("denied entry with `serial`"));
    }
}
