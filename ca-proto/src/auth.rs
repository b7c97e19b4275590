//! HMAC-SHA256 request authentication of the native API.
//!
//! # Header
//!
//! ```text
//! Authorization: TRELLIS-HMAC-SHA256 keyid=<id>, ts=<unix seconds>, nonce=<nonce>, sig=<hex>
//! ```
//!
//! - the scheme is exactly `TRELLIS-HMAC-SHA256`, followed by one space;
//! - fields are separated by `,` with optional spaces around it, may come in
//!   any order, and each of the four must appear exactly once (no others);
//! - `keyid`: `[A-Za-z0-9._-]{1,64}`;
//! - `ts`: decimal `i64` in canonical form (no sign other than a leading `-`,
//!   no leading zeros, no `-0`): the MAC covers this exact text;
//! - `nonce`: `[A-Za-z0-9_-]{16,64}`; [`new_nonce`] makes 16 random bytes in
//!   unpadded base64url (22 characters);
//! - `sig`: 64 lowercase hex digits;
//! - the whole header value is at most [`MAX_AUTH_HEADER_LEN`] bytes.
//!
//! # String to sign
//!
//! ```text
//! "TRELLIS-HMAC-SHA256" LF
//! METHOD LF              (the request method exactly as sent, e.g. "POST")
//! PATH_AND_QUERY LF      (the raw request target, e.g. "/v1/sign?x=1"; no normalisation)
//! TS LF                  (decimal, as in the header)
//! NONCE LF
//! HEX(SHA-256(BODY))     (lowercase; the body exactly as sent, empty for GET)
//! ```
//!
//! No trailing newline. `sig = HEX(HMAC-SHA256(secret, string_to_sign))`.
//! See [`string_to_sign`].
//!
//! # Verification
//!
//! [`verify`] checks the MAC against each configured secret of the key
//! (current, then previous) in constant time, and only then the timestamp
//! skew: a caller without the secret always gets [`AuthError::BadSignature`],
//! so a stale timestamp cannot tell a known key id from an unknown one (the
//! server verifies unknown key ids against a dummy secret). Nonce replay is
//! checked afterwards by the caller with [`crate::replay::ReplayCache`], so
//! that unauthenticated requests cannot fill the cache.
//!
//! Errors never contain secrets, signatures or header values.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::error::ErrorCode;

/// The authorization scheme name, also the first line of the string to sign.
pub const AUTH_SCHEME: &str = "TRELLIS-HMAC-SHA256";
/// Maximum accepted length of the `Authorization` header value, in bytes.
pub const MAX_AUTH_HEADER_LEN: usize = 1024;
/// Default accepted clock skew, in seconds.
pub const DEFAULT_MAX_SKEW_SECS: i64 = 300;
/// Minimum length of a shared secret, in bytes.
pub const MIN_SECRET_LEN: usize = 16;
/// Maximum length of a key id.
pub const MAX_KEY_ID_LEN: usize = 64;
/// Minimum length of a nonce.
pub const MIN_NONCE_LEN: usize = 16;
/// Maximum length of a nonce.
pub const MAX_NONCE_LEN: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// A client's key id and shared secret. `Debug` never shows the secret.
/// (No `PartialEq`: comparing secrets must not be done with `==`.)
#[derive(Clone)]
pub struct Credentials {
    /// The key id sent in the header.
    pub key_id: String,
    secret: Vec<u8>,
}

impl Credentials {
    /// Credentials from a key id and the raw secret bytes.
    pub fn new(key_id: impl Into<String>, secret: Vec<u8>) -> Self {
        Credentials {
            key_id: key_id.into(),
            secret,
        }
    }

    /// The raw secret.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("key_id", &self.key_id)
            .field("secret", &format_args!("<redacted>"))
            .finish()
    }
}

/// A parsed `Authorization` header. Not yet verified.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthHeader {
    /// Key id.
    pub key_id: String,
    /// Client timestamp, Unix seconds.
    pub ts: i64,
    /// Nonce.
    pub nonce: String,
    /// The MAC.
    pub sig: [u8; 32],
}

impl fmt::Debug for AuthHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthHeader")
            .field("key_id", &self.key_id)
            .field("ts", &self.ts)
            .field("nonce", &self.nonce)
            .field("sig", &format_args!("<redacted>"))
            .finish()
    }
}

/// What went wrong with authentication. `Display` is for logs; send
/// [`AuthError::public_message`] to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AuthError {
    /// No `Authorization` header (for the caller's use).
    #[error("missing Authorization header")]
    Missing,
    /// The header value is longer than [`MAX_AUTH_HEADER_LEN`].
    #[error("Authorization header too long")]
    TooLong,
    /// The header does not start with `TRELLIS-HMAC-SHA256 `.
    #[error("Authorization scheme is not TRELLIS-HMAC-SHA256")]
    BadScheme,
    /// A field is not `name=value`, or there is an empty field.
    #[error("malformed Authorization header")]
    Malformed,
    /// A field appears more than once.
    #[error("Authorization field '{0}' appears more than once")]
    DuplicateField(&'static str),
    /// A required field is absent.
    #[error("Authorization field '{0}' is missing")]
    MissingField(&'static str),
    /// A field other than keyid, ts, nonce, sig.
    #[error("unknown Authorization field")]
    UnknownField,
    /// The key id has a bad length or character.
    #[error("invalid key id")]
    InvalidKeyId,
    /// The timestamp is not a canonical decimal i64.
    #[error("invalid timestamp")]
    InvalidTimestamp,
    /// The nonce has a bad length or character.
    #[error("invalid nonce")]
    InvalidNonce,
    /// The signature is not 64 lowercase hex digits.
    #[error("invalid signature encoding")]
    InvalidSignatureEncoding,
    /// No secret is configured for the key id (for the caller's use).
    #[error("unknown key id")]
    UnknownKey,
    /// The timestamp is outside the accepted skew.
    #[error("timestamp outside the accepted clock skew")]
    StaleTimestamp,
    /// The MAC matches none of the key's secrets.
    #[error("signature does not verify")]
    BadSignature,
}

impl AuthError {
    /// The stable error code: [`ErrorCode::StaleTimestamp`] for a stale
    /// timestamp, [`ErrorCode::Unauthenticated`] for everything else.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::StaleTimestamp => ErrorCode::StaleTimestamp,
            _ => ErrorCode::Unauthenticated,
        }
    }

    /// A message safe to send to the client: it does not reveal whether the
    /// key exists or which check failed.
    pub fn public_message(&self) -> &'static str {
        match self {
            AuthError::StaleTimestamp => "request timestamp outside the accepted clock skew",
            _ => "authentication failed",
        }
    }
}

/// Why a configured secret was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SecretError {
    /// Not an even number of hex digits.
    #[error("secret is not hex")]
    NotHex,
    /// Fewer than [`MIN_SECRET_LEN`] bytes.
    #[error("secret is shorter than {MIN_SECRET_LEN} bytes")]
    TooShort,
}

/// Parses a hex-encoded secret (either case; surrounding whitespace, such as
/// a file's trailing newline, is ignored). At least [`MIN_SECRET_LEN`] bytes.
pub fn parse_secret(s: &str) -> Result<Vec<u8>, SecretError> {
    let bytes = hex::decode(s.trim()).map_err(|_| SecretError::NotHex)?;
    if bytes.len() < MIN_SECRET_LEN {
        return Err(SecretError::TooShort);
    }
    Ok(bytes)
}

/// The exact string covered by the MAC (see the module documentation).
pub fn string_to_sign(
    method: &str,
    path_and_query: &str,
    ts: i64,
    nonce: &str,
    body: &[u8],
) -> String {
    let body_hash = hex::encode(Sha256::digest(body));
    format!("{AUTH_SCHEME}\n{method}\n{path_and_query}\n{ts}\n{nonce}\n{body_hash}")
}

fn mac_for(secret: &[u8]) -> Option<HmacSha256> {
    // HMAC accepts keys of any length; this never fails in practice.
    <HmacSha256 as Mac>::new_from_slice(secret).ok()
}

/// Builds the `Authorization` header value for a request.
///
/// `path_and_query` must be the request target exactly as it will be sent,
/// and `nonce` fresh for every request (see [`new_nonce`]). A key id or nonce
/// that breaks the header grammar yields a header the server will reject.
pub fn sign_request(
    creds: &Credentials,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    now_unix: i64,
    nonce: &str,
) -> String {
    let sts = string_to_sign(method, path_and_query, now_unix, nonce, body);
    let sig: [u8; 32] = match mac_for(&creds.secret) {
        Some(mut mac) => {
            mac.update(sts.as_bytes());
            mac.finalize().into_bytes().into()
        }
        // Unreachable (HMAC takes any key length); an all-zero MAC is
        // simply rejected by the server.
        None => [0u8; 32],
    };
    format!(
        "{AUTH_SCHEME} keyid={}, ts={now_unix}, nonce={nonce}, sig={}",
        creds.key_id,
        hex::encode(sig)
    )
}

/// A fresh nonce: 16 bytes from the OS CSPRNG, unpadded base64url.
pub fn try_new_nonce() -> Result<String, getrandom::Error> {
    let mut buf = [0u8; 16];
    getrandom::getrandom(&mut buf)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// A fresh nonce: 16 bytes from the OS CSPRNG, unpadded base64url.
///
/// # Panics
///
/// If the operating system's random number generator fails, which leaves
/// no safe way to continue. Use [`try_new_nonce`] to handle that instead.
pub fn new_nonce() -> String {
    match try_new_nonce() {
        Ok(n) => n,
        Err(e) => panic!("OS random number generator failed: {e}"),
    }
}

/// Key ids are 1-64 characters of `[A-Za-z0-9._-]`.
pub fn valid_key_id(s: &str) -> bool {
    (1..=MAX_KEY_ID_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn valid_nonce(s: &str) -> bool {
    (MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

fn parse_ts(s: &str) -> Result<i64, AuthError> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" && digits.len() == s.len() || !digits.starts_with('0'));
    if !canonical {
        return Err(AuthError::InvalidTimestamp);
    }
    s.parse::<i64>().map_err(|_| AuthError::InvalidTimestamp)
}

fn parse_sig(s: &str) -> Result<[u8; 32], AuthError> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(AuthError::InvalidSignatureEncoding);
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| AuthError::InvalidSignatureEncoding)?;
    Ok(out)
}

fn set_once<'a>(
    slot: &mut Option<&'a str>,
    name: &'static str,
    value: &'a str,
) -> Result<(), AuthError> {
    if slot.is_some() {
        return Err(AuthError::DuplicateField(name));
    }
    *slot = Some(value);
    Ok(())
}

/// Parses an `Authorization` header value strictly (see the module
/// documentation for the grammar). Does not verify anything cryptographic.
pub fn parse_authorization(header: &str) -> Result<AuthHeader, AuthError> {
    if header.len() > MAX_AUTH_HEADER_LEN {
        return Err(AuthError::TooLong);
    }
    let params = header
        .strip_prefix(AUTH_SCHEME)
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or(AuthError::BadScheme)?;

    let (mut key_id, mut ts, mut nonce, mut sig) = (None, None, None, None);
    for field in params.split(',') {
        let field = field.trim_matches(' ');
        let (name, value) = field.split_once('=').ok_or(AuthError::Malformed)?;
        if value.is_empty() {
            return Err(AuthError::Malformed);
        }
        match name {
            "keyid" => set_once(&mut key_id, "keyid", value)?,
            "ts" => set_once(&mut ts, "ts", value)?,
            "nonce" => set_once(&mut nonce, "nonce", value)?,
            "sig" => set_once(&mut sig, "sig", value)?,
            _ => return Err(AuthError::UnknownField),
        }
    }

    let key_id = key_id.ok_or(AuthError::MissingField("keyid"))?;
    let ts = ts.ok_or(AuthError::MissingField("ts"))?;
    let nonce = nonce.ok_or(AuthError::MissingField("nonce"))?;
    let sig = sig.ok_or(AuthError::MissingField("sig"))?;

    if !valid_key_id(key_id) {
        return Err(AuthError::InvalidKeyId);
    }
    let ts = parse_ts(ts)?;
    if !valid_nonce(nonce) {
        return Err(AuthError::InvalidNonce);
    }
    let sig = parse_sig(sig)?;
    Ok(AuthHeader {
        key_id: key_id.to_owned(),
        ts,
        nonce: nonce.to_owned(),
        sig,
    })
}

/// Verifies a parsed header against the request and the key's secrets
/// (current first, then previous; empty secrets are ignored).
///
/// Checks the MAC in constant time against every secret
/// ([`AuthError::BadSignature`] when none matches), then
/// `|now_unix - ts| <= max_skew_secs` ([`AuthError::StaleTimestamp`], only
/// for a caller that holds the secret). Does not check the nonce for replay.
pub fn verify(
    header: &AuthHeader,
    secrets: &[&[u8]],
    method: &str,
    path_and_query: &str,
    body: &[u8],
    now_unix: i64,
    max_skew_secs: i64,
) -> Result<(), AuthError> {
    // The MAC first: only a caller holding the secret learns that its clock
    // is off, so a stale timestamp under an unknown (or guessed) key id answers
    // exactly like a bad signature.
    let sts = string_to_sign(method, path_and_query, header.ts, &header.nonce, body);
    let mut matched = false;
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let Some(mut mac) = mac_for(secret) else {
            continue;
        };
        mac.update(sts.as_bytes());
        // Every secret is tried (no early exit), so the time taken does not
        // say which one matched.
        matched |= mac.verify_slice(&header.sig).is_ok();
    }
    if !matched {
        return Err(AuthError::BadSignature);
    }
    let skew = (i128::from(now_unix) - i128::from(header.ts)).abs();
    if skew > i128::from(max_skew_secs.max(0)) {
        return Err(AuthError::StaleTimestamp);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;
    const NONCE: &str = "AAECAwQFBgcICQoLDA0ODw";
    const BODY: &[u8] = br#"{"class":"db","csr":"PEM"}"#;

    fn creds() -> Credentials {
        Credentials::new("client-1", b"0123456789abcdef0123456789abcdef".to_vec())
    }

    fn signed(method: &str, path: &str, body: &[u8], ts: i64, nonce: &str) -> AuthHeader {
        let h = sign_request(&creds(), method, path, body, ts, nonce);
        parse_authorization(&h).expect("own header parses")
    }

    fn check(h: &AuthHeader, method: &str, path: &str, body: &[u8]) -> Result<(), AuthError> {
        verify(h, &[creds().secret()], method, path, body, NOW, 300)
    }

    #[test]
    fn golden_vector() {
        // Independently computed with Python's hmac/hashlib.
        let sts = string_to_sign("POST", "/v1/sign", NOW, NONCE, BODY);
        assert_eq!(
            sts,
            "TRELLIS-HMAC-SHA256\nPOST\n/v1/sign\n1700000000\nAAECAwQFBgcICQoLDA0ODw\n\
             6b6822f0b22a94767b91cd11c4a21290afd25420127745a932bfdb8511f20d98"
        );
        let h = sign_request(&creds(), "POST", "/v1/sign", BODY, NOW, NONCE);
        assert_eq!(
            h,
            "TRELLIS-HMAC-SHA256 keyid=client-1, ts=1700000000, nonce=AAECAwQFBgcICQoLDA0ODw, \
             sig=8dde2663a84657f42d8e54632c54b09061e812ce059f0a510934ba7863dbd81a"
        );
    }

    #[test]
    fn round_trip_ok() {
        let h = signed("POST", "/v1/sign", BODY, NOW, NONCE);
        assert_eq!(h.key_id, "client-1");
        assert_eq!(h.ts, NOW);
        assert_eq!(h.nonce, NONCE);
        assert_eq!(check(&h, "POST", "/v1/sign", BODY), Ok(()));
        let g = signed("GET", "/v1/classes?x=1", b"", NOW, NONCE);
        assert_eq!(check(&g, "GET", "/v1/classes?x=1", b""), Ok(()));
    }

    #[test]
    fn tampering_fails() {
        let h = signed("POST", "/v1/sign", BODY, NOW, NONCE);
        let bad = Err(AuthError::BadSignature);
        assert_eq!(check(&h, "PUT", "/v1/sign", BODY), bad);
        assert_eq!(check(&h, "post", "/v1/sign", BODY), bad);
        assert_eq!(check(&h, "POST", "/v1/sign/", BODY), bad);
        assert_eq!(check(&h, "POST", "/v1/sign?a=1", BODY), bad);
        assert_eq!(check(&h, "POST", "/v1/sign", b"{}"), bad);
        assert_eq!(check(&h, "POST", "/v1/sign", b""), bad);
        let mut t = h.clone();
        t.ts += 1;
        assert_eq!(check(&t, "POST", "/v1/sign", BODY), bad);
        let mut n = h.clone();
        n.nonce = "AAECAwQFBgcICQoLDA0ODx".into();
        assert_eq!(check(&n, "POST", "/v1/sign", BODY), bad);
        let mut s = h.clone();
        s.sig[31] ^= 1;
        assert_eq!(check(&s, "POST", "/v1/sign", BODY), bad);
    }

    #[test]
    fn wrong_secret_fails_previous_secret_accepted() {
        let h = signed("POST", "/v1/sign", BODY, NOW, NONCE);
        let other = b"fedcba9876543210fedcba9876543210".as_slice();
        let current = creds().secret().to_vec();
        assert_eq!(
            verify(&h, &[other], "POST", "/v1/sign", BODY, NOW, 300),
            Err(AuthError::BadSignature)
        );
        // The client still signs with what is now the previous secret.
        assert_eq!(
            verify(&h, &[other, &current], "POST", "/v1/sign", BODY, NOW, 300),
            Ok(())
        );
        assert_eq!(
            verify(&h, &[], "POST", "/v1/sign", BODY, NOW, 300),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(&h, &[b"".as_slice()], "POST", "/v1/sign", BODY, NOW, 300),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn empty_key_never_verifies() {
        let empty = Credentials::new("k", Vec::new());
        let h = parse_authorization(&sign_request(&empty, "GET", "/", b"", NOW, NONCE))
            .expect("parses");
        assert_eq!(
            verify(&h, &[b"".as_slice()], "GET", "/", b"", NOW, 300),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn skew_window() {
        for (delta, ok) in [
            (0, true),
            (299, true),
            (-299, true),
            (300, true),
            (-300, true),
            (301, false),
            (-301, false),
        ] {
            let h = signed("POST", "/v1/sign", BODY, NOW + delta, NONCE);
            let r = check(&h, "POST", "/v1/sign", BODY);
            if ok {
                assert_eq!(r, Ok(()), "delta {delta}");
            } else {
                assert_eq!(r, Err(AuthError::StaleTimestamp), "delta {delta}");
                assert_eq!(r.unwrap_err().code(), ErrorCode::StaleTimestamp);
            }
        }
        // The MAC is checked before the skew: a stale forged request says
        // nothing about the clock (or about whether the key exists).
        let mut h = signed("POST", "/v1/sign", BODY, NOW - 1000, NONCE);
        h.sig = [0; 32];
        assert_eq!(
            check(&h, "POST", "/v1/sign", BODY),
            Err(AuthError::BadSignature)
        );
        // Extreme timestamps do not overflow.
        for ts in [i64::MIN, i64::MAX] {
            let h = signed("POST", "/v1/sign", BODY, ts, NONCE);
            assert_eq!(
                check(&h, "POST", "/v1/sign", BODY),
                Err(AuthError::StaleTimestamp)
            );
        }
    }

    fn hdr(fields: &str) -> String {
        format!("TRELLIS-HMAC-SHA256 {fields}")
    }

    const SIG: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parser_accepts_any_order_and_spacing() {
        let h = parse_authorization(&hdr(&format!(
            "sig={SIG},nonce={NONCE} ,  ts=-5, keyid=a.B_c-9"
        )))
        .expect("parses");
        assert_eq!(h.key_id, "a.B_c-9");
        assert_eq!(h.ts, -5);
        assert_eq!(h.nonce, NONCE);
        assert_eq!(hex::encode(h.sig), SIG);
        assert!(
            parse_authorization(&hdr(&format!("keyid=k, ts=0, nonce={NONCE}, sig={SIG}"))).is_ok()
        );
    }

    #[test]
    fn parser_rejects_duplicates_and_missing() {
        let dup = hdr(&format!("keyid=k, ts=1, nonce={NONCE}, sig={SIG}, keyid=k"));
        assert_eq!(
            parse_authorization(&dup),
            Err(AuthError::DuplicateField("keyid"))
        );
        let dup_ts = hdr(&format!("keyid=k, ts=1, ts=1, nonce={NONCE}, sig={SIG}"));
        assert_eq!(
            parse_authorization(&dup_ts),
            Err(AuthError::DuplicateField("ts"))
        );
        for (missing, fields) in [
            ("keyid", format!("ts=1, nonce={NONCE}, sig={SIG}")),
            ("ts", format!("keyid=k, nonce={NONCE}, sig={SIG}")),
            ("nonce", format!("keyid=k, ts=1, sig={SIG}")),
            ("sig", format!("keyid=k, ts=1, nonce={NONCE}")),
        ] {
            assert_eq!(
                parse_authorization(&hdr(&fields)),
                Err(AuthError::MissingField(missing))
            );
        }
    }

    #[test]
    fn parser_rejects_oversize() {
        let long = hdr(&format!(
            "keyid=k, ts=1, nonce={NONCE}, sig={SIG}{}",
            " ".repeat(MAX_AUTH_HEADER_LEN)
        ));
        assert_eq!(parse_authorization(&long), Err(AuthError::TooLong));
        assert_eq!(
            parse_authorization(&"x".repeat(100_000)),
            Err(AuthError::TooLong)
        );
    }

    #[test]
    fn parser_rejects_garbage() {
        let ok_rest = format!("keyid=k, ts=1, nonce={NONCE}, sig={SIG}");
        for (input, err) in [
            (String::new(), AuthError::BadScheme),
            ("garbage".to_owned(), AuthError::BadScheme),
            (format!("Bearer {ok_rest}"), AuthError::BadScheme),
            (
                format!("trellis-hmac-sha256 {ok_rest}"),
                AuthError::BadScheme,
            ),
            (
                format!("TRELLIS-HMAC-SHA256{ok_rest}"),
                AuthError::BadScheme,
            ),
            ("TRELLIS-HMAC-SHA256".to_owned(), AuthError::BadScheme),
            (hdr(""), AuthError::Malformed),
            (hdr(&format!("{ok_rest},")), AuthError::Malformed),
            (hdr(&format!("{ok_rest}, x")), AuthError::Malformed),
            (hdr(&format!("{ok_rest}, extra=1")), AuthError::UnknownField),
            (hdr(&format!("{ok_rest}, KEYID=k")), AuthError::UnknownField),
            (
                hdr(&ok_rest.replace("keyid=k", "keyid=")),
                AuthError::Malformed,
            ),
            (
                hdr(&ok_rest.replace("keyid=k", "keyid=\"k\"")),
                AuthError::InvalidKeyId,
            ),
            (
                hdr(&ok_rest.replace("keyid=k", "keyid=a b")),
                AuthError::InvalidKeyId,
            ),
            (
                hdr(&ok_rest.replace("keyid=k", &format!("keyid={}", "k".repeat(65)))),
                AuthError::InvalidKeyId,
            ),
            (
                hdr(&ok_rest.replace("keyid=k", "keyid=ké")),
                AuthError::InvalidKeyId,
            ),
            (
                hdr(&ok_rest.replace("ts=1", "ts=01")),
                AuthError::InvalidTimestamp,
            ),
            (
                hdr(&ok_rest.replace("ts=1", "ts=+1")),
                AuthError::InvalidTimestamp,
            ),
            (
                hdr(&ok_rest.replace("ts=1", "ts=-0")),
                AuthError::InvalidTimestamp,
            ),
            (
                hdr(&ok_rest.replace("ts=1", "ts=-")),
                AuthError::InvalidTimestamp,
            ),
            (
                hdr(&ok_rest.replace("ts=1", "ts=1.5")),
                AuthError::InvalidTimestamp,
            ),
            (
                hdr(&ok_rest.replace("ts=1", "ts=1e9")),
                AuthError::InvalidTimestamp,
            ),
            (
                hdr(&ok_rest.replace("ts=1", "ts=9223372036854775808")),
                AuthError::InvalidTimestamp,
            ),
            (
                hdr(&ok_rest.replace(NONCE, "short")),
                AuthError::InvalidNonce,
            ),
            (
                hdr(&ok_rest.replace(NONCE, &"n".repeat(65))),
                AuthError::InvalidNonce,
            ),
            (
                hdr(&ok_rest.replace(NONCE, "AAECAwQFBgcICQoLDA0OD+")),
                AuthError::InvalidNonce,
            ),
            (
                hdr(&ok_rest.replace(NONCE, "AAECAwQFBgcICQoLDA0OD=")),
                AuthError::InvalidNonce,
            ),
            (
                hdr(&ok_rest.replace(SIG, &SIG.to_uppercase())),
                AuthError::InvalidSignatureEncoding,
            ),
            (
                hdr(&ok_rest.replace(SIG, &SIG[..62])),
                AuthError::InvalidSignatureEncoding,
            ),
            (
                hdr(&ok_rest.replace(SIG, &format!("{SIG}00"))),
                AuthError::InvalidSignatureEncoding,
            ),
            (
                hdr(&ok_rest.replace(SIG, &SIG.replace('a', "g"))),
                AuthError::InvalidSignatureEncoding,
            ),
        ] {
            assert_eq!(parse_authorization(&input), Err(err), "input: {input:?}");
        }
        assert!(parse_authorization(&hdr(&ok_rest)).is_ok());
    }

    #[test]
    fn errors_map_to_codes_without_leaking() {
        let all = [
            AuthError::Missing,
            AuthError::TooLong,
            AuthError::BadScheme,
            AuthError::Malformed,
            AuthError::DuplicateField("ts"),
            AuthError::MissingField("sig"),
            AuthError::UnknownField,
            AuthError::InvalidKeyId,
            AuthError::InvalidTimestamp,
            AuthError::InvalidNonce,
            AuthError::InvalidSignatureEncoding,
            AuthError::UnknownKey,
            AuthError::BadSignature,
        ];
        for e in all {
            assert_eq!(e.code(), ErrorCode::Unauthenticated);
            assert_eq!(e.public_message(), "authentication failed");
        }
        assert_eq!(AuthError::StaleTimestamp.code(), ErrorCode::StaleTimestamp);
    }

    #[test]
    fn debug_redacts_secret_and_sig() {
        let c = Credentials::new("client-1", b"supersecretvalue-0123456789".to_vec());
        let dbg = format!("{c:?}");
        assert_eq!(
            dbg,
            r#"Credentials { key_id: "client-1", secret: <redacted> }"#
        );
        assert!(!dbg.contains("supersecret"));
        assert!(!dbg.contains(&hex::encode(c.secret())));
        let h = signed("POST", "/v1/sign", BODY, NOW, NONCE);
        let dbg = format!("{h:?}");
        assert!(!dbg.contains(&hex::encode(h.sig)));
        assert!(dbg.contains("client-1"));
    }

    #[test]
    fn secrets_parse() {
        let hex32 = "00112233445566778899aabbccddeeff";
        assert_eq!(parse_secret(hex32).map(|s| s.len()), Ok(16));
        assert_eq!(
            parse_secret(&format!("{}\n", hex32.to_uppercase())).map(|s| s.len()),
            Ok(16)
        );
        assert_eq!(parse_secret(&hex32[..30]), Err(SecretError::TooShort));
        assert_eq!(parse_secret(""), Err(SecretError::TooShort));
        assert_eq!(parse_secret(&hex32[..31]), Err(SecretError::NotHex));
        assert_eq!(
            parse_secret("zz112233445566778899aabbccddeeff"),
            Err(SecretError::NotHex)
        );
        // The error message does not echo the input.
        let e = parse_secret("zz112233445566778899aabbccddeeff").unwrap_err();
        assert!(!e.to_string().contains("zz11"));
    }

    #[test]
    fn nonces_are_valid_and_distinct() {
        let a = new_nonce();
        let b = new_nonce();
        assert_eq!(a.len(), 22);
        assert!(valid_nonce(&a));
        assert_ne!(a, b);
        let h = signed("POST", "/v1/sign", BODY, NOW, &a);
        assert_eq!(check(&h, "POST", "/v1/sign", BODY), Ok(()));
    }
}
