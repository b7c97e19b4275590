//! JSON types of the native API (`/v1/...`).
//!
//! - `POST /v1/sign`: [`SignRequest`] → [`SignResponse`];
//! - `GET /v1/classes`: → [`ClassList`];
//! - `GET /v1/classes/{class}/bundle` and `.../chain`: PEM text.
//!
//! Requests reject unknown fields (a typo must not silently change what is
//! issued); responses accept them (newer servers may add fields).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::error::ErrorCode;
use crate::looks_like_json_object;
use crate::sth::LogEvidence;

pub use crate::duration::{format_duration, parse_duration, DurationError};

pub use crate::routes::{class_bundle_path, class_chain_path, PATH_CLASSES, PATH_SIGN};
pub use crate::time::Rfc3339;

/// Body of `POST /v1/sign`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// Certificate class (trust domain), e.g. `"db"`.
    pub class: String,
    /// Profile within the class (`"server"`, `"client"`, ...); the class
    /// default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The PKCS#10 CSR, PEM.
    pub csr: String,
    /// SANs to issue. Absent or `null`: take the CSR's SANs. `[]`: no SANs
    /// beyond what the policy adds. Either way the policy decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// Requested lifetime (`"24h"`, `"90m"`, `"3600s"`); the profile default
    /// when absent. Capped by the profile maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// Why a request body could not be decoded. The message names the problem
/// (e.g. a missing or unknown field) but never echoes field values.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct DecodeError {
    message: String,
}

impl DecodeError {
    /// The human message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Always [`ErrorCode::MalformedRequest`].
    pub fn code(&self) -> ErrorCode {
        ErrorCode::MalformedRequest
    }

    pub(crate) fn new(message: &str) -> Self {
        DecodeError {
            message: message.to_owned(),
        }
    }

    pub(crate) fn from_serde(e: &serde_json::Error) -> Self {
        let message = match e.classify() {
            // serde's data messages name fields (`missing field `csr``,
            // `unknown field `x``); value-echoing ones are replaced.
            serde_json::error::Category::Data => {
                let full = e.to_string();
                if full.starts_with("missing field")
                    || full.starts_with("unknown field")
                    || full.starts_with("duplicate field")
                {
                    truncate(&full, 200)
                } else {
                    format!(
                        "invalid value or type at line {} column {}",
                        e.line(),
                        e.column()
                    )
                }
            }
            _ => format!("invalid JSON at line {} column {}", e.line(), e.column()),
        };
        DecodeError { message }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

impl SignRequest {
    /// Decodes a `POST /v1/sign` body: a JSON object with the fields above
    /// and no others.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DecodeError> {
        if !looks_like_json_object(bytes) {
            return Err(DecodeError {
                message: "request body must be a JSON object".to_owned(),
            });
        }
        serde_json::from_slice(bytes).map_err(|e| DecodeError::from_serde(&e))
    }

    /// The requested TTL, parsed. `Ok(None)` when absent.
    pub fn ttl_duration(&self) -> Result<Option<Duration>, DurationError> {
        self.ttl.as_deref().map(parse_duration).transpose()
    }
}

/// Body of a successful `POST /v1/sign`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignResponse {
    /// The leaf certificate, PEM.
    pub certificate: String,
    /// Leaf followed by the issuing intermediate, PEM.
    pub chain: String,
    /// Serial number, lowercase hex without separators.
    pub serial: String,
    /// Start of validity; a string that is not RFC 3339 refuses the
    /// response.
    pub not_before: Rfc3339,
    /// End of validity, RFC 3339 likewise.
    pub not_after: Rfc3339,
    /// Issuance log evidence (entry index, tree head, inclusion proof);
    /// absent when the server runs without a log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogEvidence>,
}

/// A profile of a class, as published by `GET /v1/classes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileInfo {
    /// Profile name.
    pub name: String,
    /// Default TTL (wire duration, e.g. `"24h"`).
    pub default_ttl: String,
    /// Maximum TTL (wire duration).
    pub max_ttl: String,
    /// Key usages (e.g. `"digital_signature"`).
    pub key_usages: Vec<String>,
    /// Extended key usages (e.g. `"server_auth"`).
    pub ext_key_usages: Vec<String>,
}

/// A certificate class, as published by `GET /v1/classes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassInfo {
    /// Class name.
    pub name: String,
    /// Human description.
    pub description: String,
    /// Profiles of the class.
    pub profiles: Vec<ProfileInfo>,
    /// SHA-256 fingerprints (lowercase hex of the DER) of the class roots.
    pub root_fingerprints_sha256: Vec<String>,
    /// SHA-256 fingerprint of the active intermediate.
    pub active_intermediate: String,
    /// SHA-256 fingerprint of the prepared (next) intermediate, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepared_intermediate: Option<String>,
}

/// Body of `GET /v1/classes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassList {
    /// All classes the server serves.
    pub classes: Vec<ClassInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_request_minimal_and_full() {
        let r: SignRequest =
            serde_json::from_str(r#"{"class":"db","csr":"PEM"}"#).expect("minimal");
        assert_eq!(r.class, "db");
        assert_eq!(r.profile, None);
        assert_eq!(r.hosts, None);
        assert_eq!(r.ttl_duration(), Ok(None));
        assert_eq!(
            serde_json::to_string(&r).expect("serialize"),
            r#"{"class":"db","csr":"PEM"}"#
        );

        let r: SignRequest = serde_json::from_str(
            r#"{"class":"db","profile":"server","csr":"PEM","hosts":["a.db"],"ttl":"90m"}"#,
        )
        .expect("full");
        assert_eq!(r.profile.as_deref(), Some("server"));
        assert_eq!(r.hosts, Some(vec!["a.db".to_owned()]));
        assert_eq!(r.ttl_duration(), Ok(Some(Duration::from_secs(5400))));
        let back: SignRequest =
            serde_json::from_str(&serde_json::to_string(&r).expect("ser")).expect("de");
        assert_eq!(back, r);
    }

    #[test]
    fn sign_request_hosts_null_vs_empty() {
        let null: SignRequest =
            serde_json::from_str(r#"{"class":"db","csr":"P","hosts":null}"#).expect("null");
        assert_eq!(null.hosts, None);
        let empty: SignRequest =
            serde_json::from_str(r#"{"class":"db","csr":"P","hosts":[]}"#).expect("empty");
        assert_eq!(empty.hosts, Some(vec![]));
        assert_eq!(
            serde_json::to_string(&empty).expect("ser"),
            r#"{"class":"db","csr":"P","hosts":[]}"#
        );
    }

    #[test]
    fn sign_request_rejects_unknown_and_missing_fields() {
        assert!(
            serde_json::from_str::<SignRequest>(r#"{"class":"db","csr":"P","is_ca":true}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<SignRequest>(r#"{"class":"db"}"#).is_err());
        assert!(serde_json::from_str::<SignRequest>(r#"{"csr":"P"}"#).is_err());
        assert!(
            serde_json::from_str::<SignRequest>(r#"{"class":"db","class":"api","csr":"P"}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<SignRequest>(r#"{"class":1,"csr":"P"}"#).is_err());
        let bad_ttl: SignRequest =
            serde_json::from_str(r#"{"class":"db","csr":"P","ttl":"-1h"}"#).expect("parse");
        assert_eq!(bad_ttl.ttl_duration(), Err(DurationError::Negative));
    }

    #[test]
    fn from_json_errors_are_useful_and_do_not_echo_values() {
        let ok = SignRequest::from_json(br#" {"class":"db","csr":"P"}"#).expect("ok");
        assert_eq!(ok.class, "db");
        let msg = |b: &[u8]| SignRequest::from_json(b).unwrap_err().message().to_owned();
        assert_eq!(msg(br#"["db","P"]"#), "request body must be a JSON object");
        assert_eq!(msg(b""), "request body must be a JSON object");
        assert!(msg(br#"{"class":"db"}"#).contains("missing field `csr`"));
        assert!(msg(br#"{"class":"db","csr":"P","x":1}"#).contains("unknown field `x`"));
        assert!(msg(br#"{"class":"db","class":"d","csr":"P"}"#).contains("duplicate field"));
        let m = msg(br#"{"class":"db","csr":"P","hosts":"SENSITIVE-VALUE"}"#);
        assert!(!m.contains("SENSITIVE"), "{m}");
        assert!(msg(br#"{"class":"#).starts_with("invalid JSON at line 1"));
        let long = format!(r#"{{"class":"db","csr":"P","{}":1}}"#, "é".repeat(300));
        assert!(msg(long.as_bytes()).len() <= 203);
        let e = SignRequest::from_json(b"[]").unwrap_err();
        assert_eq!(e.code(), ErrorCode::MalformedRequest);
    }

    #[test]
    fn sign_response_log_optional() {
        let r = SignResponse {
            certificate: "C".into(),
            chain: "CH".into(),
            serial: "0a1b".into(),
            not_before: "2024-01-01T00:00:00Z".parse().expect("time"),
            not_after: "2024-01-02T00:00:00Z".parse().expect("time"),
            log: None,
        };
        let json = serde_json::to_string(&r).expect("ser");
        assert_eq!(
            json,
            r#"{"certificate":"C","chain":"CH","serial":"0a1b","not_before":"2024-01-01T00:00:00Z","not_after":"2024-01-02T00:00:00Z"}"#
        );
        let sth = crate::sth::SignedTreeHead::new("log-1", 4, &[7; 32], 1_700_000_000_000, &[1]);
        let evidence = LogEvidence::new(3, b"entry", sth, &[[9; 32], [8; 32]]);
        let mut json = serde_json::to_value(&r).expect("ser");
        json["log"] = serde_json::to_value(&evidence).expect("ser");
        json["future"] = 1.into();
        let with_log: SignResponse = serde_json::from_value(json.clone()).expect("de");
        assert_eq!(with_log.log, Some(evidence));
        // Evidence that is not in its wire shape refuses the response.
        let mut bad_log = json.clone();
        bad_log["log"] = serde_json::json!({"index": 3});
        assert!(serde_json::from_value::<SignResponse>(bad_log).is_err());
        // So does a validity time that is not RFC 3339.
        for bad in ["2024-01-02", "", "1704153600"] {
            let mut bad_time = json.clone();
            bad_time["not_after"] = bad.into();
            assert!(
                serde_json::from_value::<SignResponse>(bad_time).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn class_list_round_trip() {
        let list = ClassList {
            classes: vec![ClassInfo {
                name: "db".into(),
                description: "database tier".into(),
                profiles: vec![ProfileInfo {
                    name: "server".into(),
                    default_ttl: "24h".into(),
                    max_ttl: "72h".into(),
                    key_usages: vec!["digital_signature".into()],
                    ext_key_usages: vec!["server_auth".into()],
                }],
                root_fingerprints_sha256: vec!["ab".repeat(32)],
                active_intermediate: "cd".repeat(32),
                prepared_intermediate: None,
            }],
        };
        let json = serde_json::to_string(&list).expect("ser");
        let back: ClassList = serde_json::from_str(&json).expect("de");
        assert_eq!(back, list);
        assert_eq!(class_bundle_path("db"), "/v1/classes/db/bundle");
        assert_eq!(class_chain_path("db"), "/v1/classes/db/chain");
    }
}
