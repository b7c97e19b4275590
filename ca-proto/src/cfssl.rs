//! CFSSL-compatible wire format (`/api/v1/cfssl/authsign`, `/api/v1/cfssl/info`).
//!
//! Matches what CFSSL's `api/client` and `auth` packages send and expect
//! (Debian's `golang-cfssl` 1.2.0 and later):
//!
//! - **authsign envelope** (`auth.AuthenticatedRequest`):
//!   `{"timestamp": <int, optional>, "remote_address": "<base64, optional>",
//!   "token": "<base64>", "request": "<base64>"}`. Go marshals `[]byte` as
//!   standard padded base64. `token = HMAC-SHA256(key, request_bytes)` over
//!   the exact decoded `request` bytes (CFSSL's `auth.Standard` with no
//!   additional data). The token covers neither the timestamp nor anything
//!   else, so this endpoint cannot detect replays.
//! - **inner sign request** (`signer.SignRequest`): `hosts`,
//!   `certificate_request`, `profile`, `label` (our class), and fields we
//!   ignore (`crl_override`, `subject`, `serial_sequence`, `NotBefore`,
//!   `NotAfter`, `ReturnPrecert`, `metadata`, `bundle`, ...). Client-chosen
//!   validity is never honoured.
//! - **info request** (`info.Req`): `{"label", "profile"}`; the result is
//!   `{"certificate": "<PEM>", "usages": [...], "expiry": "<Go duration>"}`.
//!   The 1.2.0 client type-asserts all three, so `usages` must be an array
//!   (never `null`) and `expiry` a string.
//! - **response** (`api.Response`): `{"success", "result", "errors":
//!   [{"code", "message"}], "messages"}`. The client reads
//!   `result.certificate` on success and `errors[0].message` on failure.
//!
//! Error codes follow CFSSL's scheme: four-digit `category + reason` codes
//! from its `errors` package where one fits (9003 CSR parse failure, 9300 CSR
//! signature, 5200 unknown policy, 5300 policy violation, 2500 key
//! unavailable), otherwise the HTTP status as the code, as CFSSL's own
//! `HTTPError` does. Messages start with our stable string code
//! (`"policy_denied: ..."`).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::Sha256;
use thiserror::Error;

use crate::error::ErrorCode;
use crate::looks_like_json_object;

/// Path of the authenticated sign endpoint.
pub const PATH_AUTHSIGN: &str = "/api/v1/cfssl/authsign";
/// Path of the info endpoint.
pub const PATH_INFO: &str = "/api/v1/cfssl/info";

type HmacSha256 = Hmac<Sha256>;

/// Why a CFSSL request was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CfsslError {
    /// The envelope is not the expected JSON object.
    #[error("malformed authsign envelope")]
    MalformedEnvelope,
    /// An envelope field is not standard base64.
    #[error("envelope field '{0}' is not valid base64")]
    InvalidBase64(&'static str),
    /// The token does not match the request under any secret.
    #[error("invalid token")]
    BadToken,
    /// The inner request is not the expected JSON object.
    #[error("malformed request")]
    MalformedRequest,
}

impl CfsslError {
    /// The stable error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            CfsslError::BadToken => ErrorCode::Unauthenticated,
            _ => ErrorCode::MalformedRequest,
        }
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// The authsign envelope. `Debug` does not show the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthSignEnvelope {
    /// Client time, Unix seconds (not covered by the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Client-chosen address bytes, base64 (not covered by the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<String>,
    /// HMAC token, base64.
    pub token: String,
    /// Inner request JSON, base64.
    pub request: String,
}

impl fmt::Debug for AuthSignEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSignEnvelope")
            .field("timestamp", &self.timestamp)
            .field("remote_address", &self.remote_address)
            .field("token", &format_args!("<redacted>"))
            .field(
                "request",
                &format_args!("<{} base64 chars>", self.request.len()),
            )
            .finish()
    }
}

/// Decodes an authsign body into the envelope, the exact inner request
/// bytes and the token bytes. Verify the token with [`verify_token`] before
/// parsing the request bytes.
pub fn decode_authsign(body: &[u8]) -> Result<(AuthSignEnvelope, Vec<u8>, Vec<u8>), CfsslError> {
    if !looks_like_json_object(body) {
        return Err(CfsslError::MalformedEnvelope);
    }
    let env: AuthSignEnvelope =
        serde_json::from_slice(body).map_err(|_| CfsslError::MalformedEnvelope)?;
    let request = STANDARD
        .decode(&env.request)
        .map_err(|_| CfsslError::InvalidBase64("request"))?;
    let token = STANDARD
        .decode(&env.token)
        .map_err(|_| CfsslError::InvalidBase64("token"))?;
    Ok((env, request, token))
}

fn token_mac(secret: &[u8]) -> Option<HmacSha256> {
    // HMAC accepts keys of any length; this never fails in practice.
    <HmacSha256 as Mac>::new_from_slice(secret).ok()
}

/// Checks `token == HMAC-SHA256(secret, request_bytes)` for any of the
/// secrets (current, then previous; empty secrets are ignored), in constant
/// time.
pub fn verify_token(
    secrets: &[&[u8]],
    request_bytes: &[u8],
    token: &[u8],
) -> Result<(), CfsslError> {
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let Some(mut mac) = token_mac(secret) else {
            continue;
        };
        mac.update(request_bytes);
        if mac.verify_slice(token).is_ok() {
            return Ok(());
        }
    }
    Err(CfsslError::BadToken)
}

/// Builds an authsign body as CFSSL's client does (for tests and benchmarks).
pub fn make_authsign(secret: &[u8], request_json: &[u8], now_unix: i64) -> Vec<u8> {
    let token: Vec<u8> = match token_mac(secret) {
        Some(mut mac) => {
            mac.update(request_json);
            mac.finalize().into_bytes().to_vec()
        }
        // Unreachable; an empty token is rejected by the server.
        None => Vec::new(),
    };
    // Base64 needs no JSON escaping; field order as Go marshals it.
    format!(
        r#"{{"timestamp":{now_unix},"token":"{}","request":"{}"}}"#,
        STANDARD.encode(token),
        STANDARD.encode(request_json)
    )
    .into_bytes()
}

/// The inner sign request. Unknown fields are ignored, as CFSSL does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CfsslSignRequest {
    /// SANs override: absent/`null` keeps the CSR's SANs, `[]` clears them.
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// Comma-separated SANs (CFSSL's `/sign` form); wins over `hosts` when
    /// non-empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The CSR, PEM.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub certificate_request: String,
    /// Profile name.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub profile: String,
    /// Label: our class name.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub label: String,
}

impl CfsslSignRequest {
    /// Parses the inner request bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, CfsslError> {
        if !looks_like_json_object(bytes) {
            return Err(CfsslError::MalformedRequest);
        }
        serde_json::from_slice(bytes).map_err(|_| CfsslError::MalformedRequest)
    }

    /// The SANs the client asks for. A non-empty `hostname` wins: it is
    /// split on commas, each part trimmed, empty parts dropped (so `" , "`
    /// yields `Some([])`). Otherwise `hosts` as given: `None` keeps the
    /// CSR's SANs, `Some([])` asks for none.
    pub fn effective_hosts(&self) -> Option<Vec<String>> {
        match self.hostname.as_deref() {
            Some(h) if !h.is_empty() => Some(
                h.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            _ => self.hosts.clone(),
        }
    }
}

/// The info request. Unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CfsslInfoRequest {
    /// Label: our class name.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub label: String,
    /// Profile name.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub profile: String,
}

impl CfsslInfoRequest {
    /// Parses an info request body.
    pub fn from_json(bytes: &[u8]) -> Result<Self, CfsslError> {
        if !looks_like_json_object(bytes) {
            return Err(CfsslError::MalformedRequest);
        }
        serde_json::from_slice(bytes).map_err(|_| CfsslError::MalformedRequest)
    }
}

/// `result` of a successful sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CfsslSignResult {
    /// The leaf certificate, PEM.
    pub certificate: String,
}

/// `result` of a successful info request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CfsslInfoResult {
    /// The issuing CA certificate(s), PEM.
    pub certificate: String,
    /// CFSSL usage names of the profile (e.g. `"signing"`, `"server auth"`).
    pub usages: Vec<String>,
    /// Default lifetime as a Go duration (e.g. `"24h"`).
    pub expiry: String,
}

/// One entry of `errors` / `messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseMessage {
    /// CFSSL numeric code.
    pub code: i64,
    /// Message.
    pub message: String,
}

/// The CFSSL response envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CfsslResponse {
    /// Whether the request succeeded.
    pub success: bool,
    /// The result object, `null` on failure.
    pub result: serde_json::Value,
    /// Errors (one on failure, none on success).
    #[serde(default)]
    pub errors: Vec<ResponseMessage>,
    /// Always empty; present for compatibility.
    #[serde(default)]
    pub messages: Vec<ResponseMessage>,
}

impl CfsslResponse {
    /// A success carrying `result`.
    pub fn ok(result: serde_json::Value) -> Self {
        CfsslResponse {
            success: true,
            result,
            errors: Vec::new(),
            messages: Vec::new(),
        }
    }

    /// A successful sign: `{"certificate": "<PEM>"}`.
    pub fn sign_ok(certificate_pem: impl Into<String>) -> Self {
        Self::ok(serde_json::json!({ "certificate": certificate_pem.into() }))
    }

    /// A successful info response.
    pub fn info_ok(info: &CfsslInfoResult) -> Self {
        Self::ok(serde_json::json!({
            "certificate": info.certificate,
            "usages": info.usages,
            "expiry": info.expiry,
        }))
    }

    /// A failure with one error.
    pub fn err(code: i64, message: impl Into<String>) -> Self {
        CfsslResponse {
            success: false,
            result: serde_json::Value::Null,
            errors: vec![ResponseMessage {
                code,
                message: message.into(),
            }],
            messages: Vec::new(),
        }
    }

    /// A failure for one of our error codes: CFSSL numeric code from
    /// [`cfssl_code`], message `"<code>: <detail>"`.
    pub fn from_error(code: ErrorCode, detail: &str) -> Self {
        Self::err(cfssl_code(code), format!("{}: {detail}", code.as_str()))
    }
}

/// The CFSSL numeric code for one of our error codes (see module docs).
pub fn cfssl_code(code: ErrorCode) -> i64 {
    match code {
        // CSRError (9000) + ParseFailed (3).
        ErrorCode::MalformedCsr => 9003,
        // CSRError (9000) + KeyMismatch (300): CFSSL's CSR signature failure.
        ErrorCode::BadCsrSignature => 9300,
        // PolicyError (5000) + InvalidPolicy (200): invalid or unknown policy.
        ErrorCode::UnknownClass => 5200,
        // PolicyError (5000) + InvalidRequest (300): policy violation.
        ErrorCode::PolicyDenied => 5300,
        // PrivateKeyError (2000) + Unavailable (500).
        ErrorCode::HsmUnavailable => 2500,
        // HTTP-level failures: CFSSL's HTTPError uses the status as the code.
        other => i64::from(other.http_status()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_HEX: &str = "000102030405060708090a0b0c0d0e0f";

    fn secret() -> Vec<u8> {
        hex::decode(SECRET_HEX).expect("hex")
    }

    // What Debian's cfssl 1.2.0 `sign` sends to an auth_remote: the JSON of
    // signer.SignRequest (hosts nil → null), base64'd in the envelope. Built
    // and tokened independently with Python's json/base64/hmac.
    const INNER: &str = "{\"hosts\":null,\"certificate_request\":\"-----BEGIN CERTIFICATE REQUEST-----\\nMIHLMHMCAQAwETEPMA0GA1UEAxMGZGIuaW50MFkwEwYHKoZIzj0CAQYIKoZIzj0D\\nAQcDQgAE\\n-----END CERTIFICATE REQUEST-----\\n\",\"profile\":\"server\",\"crl_override\":\"\",\"label\":\"db\"}";
    const GO_BODY: &str = "{\"timestamp\":1700000000,\"token\":\"CyZLQSAg1CclvdTsT2i9DJbX0TK2uR+e1vDlvIXibJE=\",\"request\":\"eyJob3N0cyI6bnVsbCwiY2VydGlmaWNhdGVfcmVxdWVzdCI6Ii0tLS0tQkVHSU4gQ0VSVElGSUNBVEUgUkVRVUVTVC0tLS0tXG5NSUhMTUhNQ0FRQXdFVEVQTUEwR0ExVUVBeE1HWkdJdWFXNTBNRmt3RXdZSEtvWkl6ajBDQVFZSUtvWkl6ajBEXG5BUWNEUWdBRVxuLS0tLS1FTkQgQ0VSVElGSUNBVEUgUkVRVUVTVC0tLS0tXG4iLCJwcm9maWxlIjoic2VydmVyIiwiY3JsX292ZXJyaWRlIjoiIiwibGFiZWwiOiJkYiJ9\"}";

    #[test]
    fn decodes_real_looking_authsign() {
        let (env, req, token) = decode_authsign(GO_BODY.as_bytes()).expect("decode");
        assert_eq!(env.timestamp, Some(1_700_000_000));
        assert_eq!(env.remote_address, None);
        assert_eq!(req, INNER.as_bytes());
        assert_eq!(token.len(), 32);
        assert_eq!(verify_token(&[&secret()], &req, &token), Ok(()));
        let r = CfsslSignRequest::from_json(&req).expect("inner");
        assert_eq!(r.label, "db");
        assert_eq!(r.profile, "server");
        assert!(r
            .certificate_request
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----\nMIHL"));
        assert_eq!(r.hosts, None);
        assert_eq!(r.effective_hosts(), None);
        // Our builder produces the same bytes as the Go-style body.
        assert_eq!(
            make_authsign(&secret(), INNER.as_bytes(), 1_700_000_000),
            GO_BODY.as_bytes()
        );
    }

    #[test]
    fn token_covers_exact_bytes_only() {
        let (_, req, token) = decode_authsign(GO_BODY.as_bytes()).expect("decode");
        // Same JSON value, re-serialised (different key order/whitespace).
        let value: serde_json::Value = serde_json::from_slice(&req).expect("json");
        let compact = serde_json::to_vec(&value).expect("ser");
        let pretty = serde_json::to_vec_pretty(&value).expect("ser");
        assert_ne!(compact, req);
        assert_eq!(
            verify_token(&[&secret()], &compact, &token),
            Err(CfsslError::BadToken)
        );
        assert_eq!(
            verify_token(&[&secret()], &pretty, &token),
            Err(CfsslError::BadToken)
        );
        let mut spaced = req.clone();
        spaced.push(b' ');
        assert_eq!(
            verify_token(&[&secret()], &spaced, &token),
            Err(CfsslError::BadToken)
        );
        assert_eq!(verify_token(&[&secret()], &req, &token), Ok(()));
    }

    #[test]
    fn token_secrets_and_lengths() {
        let req = br#"{"label":"db"}"#;
        let body = make_authsign(&secret(), req, 5);
        let (_, r, t) = decode_authsign(&body).expect("decode");
        let wrong = b"another-secret-0123".as_slice();
        assert_eq!(verify_token(&[wrong], &r, &t), Err(CfsslError::BadToken));
        // Previous secret still accepted.
        assert_eq!(verify_token(&[wrong, &secret()], &r, &t), Ok(()));
        assert_eq!(verify_token(&[], &r, &t), Err(CfsslError::BadToken));
        assert_eq!(
            verify_token(&[&secret()], &r, &t[..31]),
            Err(CfsslError::BadToken)
        );
        assert_eq!(
            verify_token(&[&secret()], &r, &[]),
            Err(CfsslError::BadToken)
        );
        // Empty keys are never used, even if the token was made with one.
        let body = make_authsign(b"", req, 5);
        let (_, r, t) = decode_authsign(&body).expect("decode");
        assert_eq!(
            verify_token(&[b"".as_slice()], &r, &t),
            Err(CfsslError::BadToken)
        );
        assert_eq!(CfsslError::BadToken.code(), ErrorCode::Unauthenticated);
    }

    #[test]
    fn decode_rejects_bad_envelopes() {
        for (body, err) in [
            (&b""[..], CfsslError::MalformedEnvelope),
            (b"[]", CfsslError::MalformedEnvelope),
            (
                br#"[null,null,"AAAA","AAAA"]"#,
                CfsslError::MalformedEnvelope,
            ),
            (b"{}", CfsslError::MalformedEnvelope),
            (br#"{"token":"AAAA"}"#, CfsslError::MalformedEnvelope),
            (
                br#"{"token":null,"request":"AAAA"}"#,
                CfsslError::MalformedEnvelope,
            ),
            (
                br#"{"token":"AAAA","request":"AAAA","request":"AAAA"}"#,
                CfsslError::MalformedEnvelope,
            ),
            (
                br#"{"timestamp":"1","token":"AAAA","request":"AAAA"}"#,
                CfsslError::MalformedEnvelope,
            ),
            (
                br#"{"token":"AAAA","request":"not base64!"}"#,
                CfsslError::InvalidBase64("request"),
            ),
            (
                br#"{"token":"AAA","request":"AAAA"}"#,
                CfsslError::InvalidBase64("token"),
            ),
            (
                br#"{"token":"AA-_","request":"AAAA"}"#,
                CfsslError::InvalidBase64("token"),
            ),
        ] {
            assert_eq!(
                decode_authsign(body).map(|_| ()),
                Err(err),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(err.code(), ErrorCode::MalformedRequest);
        }
        // Unknown envelope fields are ignored, remote_address kept.
        let (env, _, _) = decode_authsign(
            br#"{"remote_address":"MTI3LjAuMC4x","token":"AAAA","request":"e30=","x":1}"#,
        )
        .expect("decode");
        assert_eq!(env.timestamp, None);
        assert_eq!(env.remote_address.as_deref(), Some("MTI3LjAuMC4x"));
        let dbg = format!("{env:?}");
        assert!(!dbg.contains("AAAA"), "{dbg}");
    }

    #[test]
    fn hosts_null_vs_empty_vs_hostname() {
        let parse = |s: &str| CfsslSignRequest::from_json(s.as_bytes()).expect("parse");
        assert_eq!(parse(r#"{"hosts":null}"#).effective_hosts(), None);
        assert_eq!(parse(r#"{}"#).effective_hosts(), None);
        assert_eq!(parse(r#"{"hosts":[]}"#).effective_hosts(), Some(vec![]));
        assert_eq!(
            parse(r#"{"hosts":["a.db","10.0.0.1"]}"#).effective_hosts(),
            Some(vec!["a.db".to_owned(), "10.0.0.1".to_owned()])
        );
        assert_eq!(
            parse(r#"{"hosts":["x"],"hostname":" a.db , b.db,,"}"#).effective_hosts(),
            Some(vec!["a.db".to_owned(), "b.db".to_owned()])
        );
        assert_eq!(
            parse(r#"{"hosts":["x"],"hostname":""}"#).effective_hosts(),
            Some(vec!["x".to_owned()])
        );
        assert_eq!(parse(r#"{"hostname":""}"#).effective_hosts(), None);
        assert_eq!(
            parse(r#"{"hostname":" , "}"#).effective_hosts(),
            Some(vec![])
        );
    }

    #[test]
    fn inner_request_ignores_unknown_fields() {
        let r = CfsslSignRequest::from_json(
            br#"{"hosts":["a.db"],"certificate_request":"PEM","profile":"client","crl_override":"",
                "label":"api","NotBefore":"2020-01-01T00:00:00Z","NotAfter":"2099-01-01T00:00:00Z",
                "ReturnPrecert":false,"metadata":{"k":1},"subject":{"CN":"root"},
                "serial_sequence":"01","bundle":true}"#,
        )
        .expect("parse");
        assert_eq!(r.label, "api");
        assert_eq!(r.profile, "client");
        assert_eq!(r.certificate_request, "PEM");
        let nulls = CfsslSignRequest::from_json(
            br#"{"certificate_request":null,"profile":null,"label":null}"#,
        )
        .expect("parse");
        assert_eq!(nulls, CfsslSignRequest::default());
        for bad in [
            &b"[]"[..],
            b"[null,null,\"PEM\",\"p\",\"db\"]",
            b"",
            b"{\"hosts\":\"a.db\"}",
            b"{\"label\":1}",
        ] {
            assert_eq!(
                CfsslSignRequest::from_json(bad),
                Err(CfsslError::MalformedRequest)
            );
        }
        let info = CfsslInfoRequest::from_json(br#"{"label":"db","profile":"server","x":0}"#)
            .expect("info");
        assert_eq!(info.label, "db");
        assert_eq!(info.profile, "server");
        assert_eq!(
            CfsslInfoRequest::from_json(br#"["db","server"]"#),
            Err(CfsslError::MalformedRequest)
        );
        assert_eq!(
            CfsslInfoRequest::from_json(b" {}").expect("empty"),
            CfsslInfoRequest::default()
        );
    }

    #[test]
    fn response_shapes() {
        let ok = CfsslResponse::sign_ok("-----BEGIN CERTIFICATE-----\n");
        assert_eq!(
            serde_json::to_string(&ok).expect("ser"),
            r#"{"success":true,"result":{"certificate":"-----BEGIN CERTIFICATE-----\n"},"errors":[],"messages":[]}"#
        );
        let info = CfsslResponse::info_ok(&CfsslInfoResult {
            certificate: "PEM".into(),
            usages: vec![],
            expiry: "24h".into(),
        });
        assert_eq!(
            serde_json::to_string(&info).expect("ser"),
            r#"{"success":true,"result":{"certificate":"PEM","expiry":"24h","usages":[]},"errors":[],"messages":[]}"#
        );
        let err = CfsslResponse::from_error(ErrorCode::PolicyDenied, "name 'x' not allowed");
        assert_eq!(
            serde_json::to_string(&err).expect("ser"),
            r#"{"success":false,"result":null,"errors":[{"code":5300,"message":"policy_denied: name 'x' not allowed"}],"messages":[]}"#
        );
        let back: CfsslResponse =
            serde_json::from_str(&serde_json::to_string(&err).expect("ser")).expect("de");
        assert_eq!(back, err);
        assert_eq!(CfsslResponse::err(400, "bad").errors[0].code, 400);
    }

    #[test]
    fn cfssl_codes() {
        assert_eq!(cfssl_code(ErrorCode::MalformedCsr), 9003);
        assert_eq!(cfssl_code(ErrorCode::BadCsrSignature), 9300);
        assert_eq!(cfssl_code(ErrorCode::UnknownClass), 5200);
        assert_eq!(cfssl_code(ErrorCode::PolicyDenied), 5300);
        assert_eq!(cfssl_code(ErrorCode::HsmUnavailable), 2500);
        assert_eq!(cfssl_code(ErrorCode::Unauthenticated), 401);
        assert_eq!(cfssl_code(ErrorCode::ForbiddenScope), 403);
        assert_eq!(cfssl_code(ErrorCode::MalformedRequest), 400);
        assert_eq!(cfssl_code(ErrorCode::Internal), 500);
        assert_eq!(cfssl_code(ErrorCode::LogUnavailable), 503);
    }
}
