//! Trellis wire contract, shared by the server and the client.
//!
//! - [`error`]: stable error codes and the JSON error body;
//! - [`native`]: JSON types of the native `/v1` API; [`duration`]: the one
//!   duration grammar (`"24h"`), wire rules and the strict policy-file rules;
//! - [`auth`]: the `TRELLIS-HMAC-SHA256` request signature: build, parse,
//!   verify;
//! - [`replay`]: the bounded nonce cache that rejects replays;
//! - [`revocation`]: RFC 5280 reasons, `POST /v1/revoke` bodies and the
//!   message a holder signs to revoke its own certificate;
//! - [`cfssl`]: the CFSSL-compatible `authsign`/`info` wire format;
//! - [`merkle`]: the issuance log's RFC 6962/9162 Merkle tree: hashing, the
//!   compact range, inclusion and consistency proofs and their verification;
//! - [`sth`]: signed tree heads, the log public key, and the check of the
//!   log evidence a sign response carries;
//! - [`pem`]: the one PEM encoder and strict decoder (certificates, CSRs,
//!   public keys);
//! - [`secret`]: `file:`/`env:` secret references and the checked, capped
//!   reading of secret files; parse errors that never echo a secret;
//! - [`routes`]: every API path, and the [`routes::Route`] matcher the
//!   server routes with;
//! - [`logapi`]: bodies of the issuance log's read API (`proof`, `entries`);
//! - [`ocsp`]: the OCSP (RFC 6960) request parser and response builder;
//! - [`time`]: [`time::Rfc3339`], RFC 3339 times on the wire.
//!
//! The crate reads no clock (callers pass `now_unix`) and does no I/O,
//! except [`secret`]: the one place ca-proto reads files (secret files, and
//! configuration files that may hold secrets) and the environment.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod cfssl;
pub mod duration;
pub mod error;
pub mod logapi;
pub mod logentry;
pub mod merkle;
pub mod native;
pub mod ocsp;
pub mod pem;
pub mod replay;
pub mod revocation;
pub mod routes;
pub mod secret;
pub mod sth;
pub mod time;

pub use error::{ErrorBody, ErrorCode, ErrorEnvelope, ReasonBody};

/// Whether `bytes` is, at first glance, a JSON object. serde's derived
/// `Deserialize` also accepts a struct as a positional JSON array; the wire
/// contract allows objects only.
pub(crate) fn looks_like_json_object(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|&b| b == b'{')
}
