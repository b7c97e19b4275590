//! Stable error codes and the JSON error body of the native API.
//!
//! Every error the server returns carries one [`ErrorCode`]: a snake_case
//! string that clients may match on and that never changes meaning, plus the
//! HTTP status it is sent with. The body is
//! `{"error": {"code": "...", "message": "...", "reasons": [...]}}`, where
//! `reasons` (present only when non-empty) lists every policy reason of a
//! denial. Messages are for humans; they never carry secrets, tokens or
//! signatures.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request body or parameters could not be decoded (400).
    MalformedRequest,
    /// The CSR is not valid PEM/DER or not a PKCS#10 request (400).
    MalformedCsr,
    /// The CSR's self-signature does not verify: no proof of possession (400).
    BadCsrSignature,
    /// Missing or malformed credentials, unknown key, or bad signature (401).
    /// One code for all of these so that a caller learns nothing about which.
    Unauthenticated,
    /// The request timestamp is outside the accepted clock skew (401).
    StaleTimestamp,
    /// The request nonce was already used within the skew window (401).
    ReplayedRequest,
    /// The key may not use this class, profile or endpoint (403).
    ForbiddenScope,
    /// The class policy denied the request; see `reasons` (403).
    PolicyDenied,
    /// No such certificate class (404).
    UnknownClass,
    /// No such resource (404).
    NotFound,
    /// The endpoint does not accept this HTTP method (405).
    MethodNotAllowed,
    /// The request body exceeds the size limit (413).
    BodyTooLarge,
    /// The request body is not of an accepted media type (415).
    UnsupportedMediaType,
    /// Too many requests, or the replay cache is full; retry later (429).
    RateLimited,
    /// The request body arrived too slowly (below the minimum rate, or not
    /// whole within the body deadline) (408).
    RequestTimeout,
    /// A server-wide budget (buffered request bytes, queued response bytes,
    /// concurrent log reads) is spent right now; retry shortly (503).
    Busy,
    /// The HSM is not usable right now (503).
    HsmUnavailable,
    /// The issuance log cannot be written right now (503).
    LogUnavailable,
    /// An unexpected server-side failure (500).
    Internal,
    /// No certificate with this serial was issued (by any log this server
    /// reads) (404).
    UnknownSerial,
    /// The serial belongs to a certificate of another class (409).
    SerialOfOtherClass,
    /// The certificate is already revoked (409).
    AlreadyRevoked,
    /// The public key was revoked for key compromise: it is never certified
    /// again, in any class (403).
    KeyRevoked,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 23] = [
        ErrorCode::MalformedRequest,
        ErrorCode::MalformedCsr,
        ErrorCode::BadCsrSignature,
        ErrorCode::Unauthenticated,
        ErrorCode::StaleTimestamp,
        ErrorCode::ReplayedRequest,
        ErrorCode::ForbiddenScope,
        ErrorCode::PolicyDenied,
        ErrorCode::UnknownClass,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::BodyTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::RateLimited,
        ErrorCode::RequestTimeout,
        ErrorCode::Busy,
        ErrorCode::HsmUnavailable,
        ErrorCode::LogUnavailable,
        ErrorCode::Internal,
        ErrorCode::UnknownSerial,
        ErrorCode::SerialOfOtherClass,
        ErrorCode::AlreadyRevoked,
        ErrorCode::KeyRevoked,
    ];

    /// The stable wire string, identical to the serde representation.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedRequest => "malformed_request",
            ErrorCode::MalformedCsr => "malformed_csr",
            ErrorCode::BadCsrSignature => "bad_csr_signature",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::StaleTimestamp => "stale_timestamp",
            ErrorCode::ReplayedRequest => "replayed_request",
            ErrorCode::ForbiddenScope => "forbidden_scope",
            ErrorCode::PolicyDenied => "policy_denied",
            ErrorCode::UnknownClass => "unknown_class",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::Busy => "busy",
            ErrorCode::HsmUnavailable => "hsm_unavailable",
            ErrorCode::LogUnavailable => "log_unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::UnknownSerial => "unknown_serial",
            ErrorCode::SerialOfOtherClass => "serial_of_other_class",
            ErrorCode::AlreadyRevoked => "already_revoked",
            ErrorCode::KeyRevoked => "key_revoked",
        }
    }

    /// The HTTP status code this error is sent with.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::MalformedRequest | ErrorCode::MalformedCsr | ErrorCode::BadCsrSignature => {
                400
            }
            ErrorCode::Unauthenticated | ErrorCode::StaleTimestamp | ErrorCode::ReplayedRequest => {
                401
            }
            ErrorCode::ForbiddenScope | ErrorCode::PolicyDenied | ErrorCode::KeyRevoked => 403,
            ErrorCode::UnknownClass | ErrorCode::NotFound | ErrorCode::UnknownSerial => 404,
            ErrorCode::SerialOfOtherClass | ErrorCode::AlreadyRevoked => 409,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::BodyTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::RateLimited => 429,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::Internal => 500,
            ErrorCode::HsmUnavailable | ErrorCode::LogUnavailable | ErrorCode::Busy => 503,
        }
    }

    /// Parses a wire string; `None` for unknown codes.
    pub fn from_wire(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason of a policy denial: a stable reason code and a human detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonBody {
    /// Stable reason code from the policy engine (e.g. `dns_name_not_allowed`).
    pub code: String,
    /// Human-readable detail (e.g. which name).
    pub detail: String,
}

/// The inner error object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable message. Never contains secrets, tokens or signatures.
    pub message: String,
    /// Every reason of a policy denial; omitted when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<ReasonBody>,
}

/// The JSON error document: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

impl ErrorEnvelope {
    /// An error without reasons.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorEnvelope {
            error: ErrorBody {
                code,
                message: message.into(),
                reasons: Vec::new(),
            },
        }
    }

    /// An error with denial reasons.
    pub fn with_reasons(
        code: ErrorCode,
        message: impl Into<String>,
        reasons: Vec<ReasonBody>,
    ) -> Self {
        ErrorEnvelope {
            error: ErrorBody {
                code,
                message: message.into(),
                reasons,
            },
        }
    }

    /// The HTTP status of this error.
    pub fn http_status(&self) -> u16 {
        self.error.code.http_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_matches_serde_and_from_wire() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).expect("serialize");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, code);
            assert_eq!(ErrorCode::from_wire(code.as_str()), Some(code));
            assert_eq!(code.to_string(), code.as_str());
        }
        assert_eq!(ErrorCode::from_wire("nope"), None);
        assert!(serde_json::from_str::<ErrorCode>("\"nope\"").is_err());
    }

    #[test]
    fn http_statuses() {
        let expected = [
            ("malformed_request", 400),
            ("malformed_csr", 400),
            ("bad_csr_signature", 400),
            ("unauthenticated", 401),
            ("stale_timestamp", 401),
            ("replayed_request", 401),
            ("forbidden_scope", 403),
            ("policy_denied", 403),
            ("unknown_class", 404),
            ("not_found", 404),
            ("method_not_allowed", 405),
            ("body_too_large", 413),
            ("unsupported_media_type", 415),
            ("rate_limited", 429),
            ("request_timeout", 408),
            ("busy", 503),
            ("hsm_unavailable", 503),
            ("log_unavailable", 503),
            ("internal", 500),
            ("unknown_serial", 404),
            ("serial_of_other_class", 409),
            ("already_revoked", 409),
            ("key_revoked", 403),
        ];
        assert_eq!(expected.len(), ErrorCode::ALL.len());
        for (s, status) in expected {
            let code = ErrorCode::from_wire(s).expect("known code");
            assert_eq!(code.http_status(), status, "{s}");
        }
    }

    #[test]
    fn envelope_json_snapshot_without_reasons() {
        let env = ErrorEnvelope::new(ErrorCode::Unauthenticated, "authentication failed");
        assert_eq!(
            serde_json::to_string(&env).expect("serialize"),
            r#"{"error":{"code":"unauthenticated","message":"authentication failed"}}"#
        );
        assert_eq!(env.http_status(), 401);
    }

    #[test]
    fn envelope_json_snapshot_with_reasons() {
        let env = ErrorEnvelope::with_reasons(
            ErrorCode::PolicyDenied,
            "request denied by policy of class 'db'",
            vec![
                ReasonBody {
                    code: "dns_name_not_allowed".into(),
                    detail: "evil.example.com".into(),
                },
                ReasonBody {
                    code: "ip_san_not_allowed".into(),
                    detail: "10.0.0.1".into(),
                },
            ],
        );
        let json = serde_json::to_string(&env).expect("serialize");
        assert_eq!(
            json,
            concat!(
                r#"{"error":{"code":"policy_denied","message":"request denied by policy of class 'db'","#,
                r#""reasons":[{"code":"dns_name_not_allowed","detail":"evil.example.com"},"#,
                r#"{"code":"ip_san_not_allowed","detail":"10.0.0.1"}]}}"#
            )
        );
        let back: ErrorEnvelope = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, env);
        // `reasons` is optional on input.
        let no_reasons: ErrorEnvelope =
            serde_json::from_str(r#"{"error":{"code":"internal","message":"x"}}"#)
                .expect("deserialize");
        assert!(no_reasons.error.reasons.is_empty());
    }
}
