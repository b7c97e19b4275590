//! `ca-client`: the Trellis sidecar and a library for Rust services.
//!
//! The binary (`src/main.rs`) generates keys on the host, enrolls with the
//! CA's native API, keeps the files fresh and tells the service when they
//! changed. The library offers the same pieces to Rust programs, most
//! usefully [`tls`]: rustls server and client configurations that follow
//! renewals and trust-bundle changes without a restart.
//!
//! One module, one job:
//!
//! | module | job |
//! |---|---|
//! | [`config`] | TOML file + flags → validated [`config::Settings`] |
//! | [`keys`] | local key generation, CSR, key/certificate matching |
//! | [`pem`] | PEM/DER helpers and certificate facts (validity, chain checks) |
//! | [`store`] | atomic files; the generation directory that keeps key and certificate consistent |
//! | [`inspect`] | what is on disk now, and whether it is usable |
//! | [`api`] | HTTPS client of the CA (failover, HMAC auth, error envelopes, root pinning) |
//! | [`conn`] | the connection to a CA server kept between the requests of one operation |
//! | [`pins`] | pinned class roots (state file), judging a bundle against them |
//! | [`verify`] | checks of an issued certificate and its chain (bounded path building) |
//! | [`inclusion`] | issuance-log evidence: proof, and the entry consistent with the certificate |
//! | [`renew`] | pure schedule math: renewal point, backoff, `--if-needed` decision, CRL refresh delay |
//! | [`crl`] | CRLs: PEM, facts, verification against a class's CA certificates, merging a served set |
//! | [`revocation`] | the sidecar's CRL refresh: fetch (ETag), verify, write `trust/<class>.crl.pem`, own certificate revoked? |
//! | [`revoke`] | `ca-client revoke`: holder-signed `POST /v1/revoke`, and the marker it leaves for the daemon |
//! | [`reload`] | the reload action: command with environment, or signal to a PID |
//! | [`metrics`] | Prometheus metrics and `/healthz` |
//! | [`agent`] | one renewal, and the daemon loop that ties the others together |
//! | [`tls`] | hot-reloading rustls configs for Rust services (CRLs enforced) |

pub mod agent;
pub mod api;
pub mod config;
pub mod conn;
pub mod crl;
pub mod inclusion;
pub mod inspect;
pub mod keys;
pub mod metrics;
pub mod pem;
pub mod pins;
pub mod reload;
pub mod renew;
pub mod revocation;
pub mod revoke;
pub mod store;
pub mod tls;
pub mod verify;

/// Current time as Unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// A uniformly distributed number in `[0, 1)` from the OS random generator
/// (0.5 if it fails: jitter is not a security property).
pub fn random_unit() -> f64 {
    let mut buf = [0u8; 8];
    if getrandom::getrandom(&mut buf).is_err() {
        return 0.5;
    }
    // 53 random bits → [0, 1).
    (u64::from_le_bytes(buf) >> 11) as f64 / (1u64 << 53) as f64
}
