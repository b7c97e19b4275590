//! PKCS#11 access for Trellis: loading a module, finding and logging in to a
//! token, generating CA keys *inside* the token, and signing with them through
//! a pool of per-thread sessions.
//!
//! CA private keys never leave the token: they are generated with
//! `CKA_SENSITIVE=true`, `CKA_EXTRACTABLE=false`, and the only thing this crate
//! ever asks of them is a signature. Everything that talks PKCS#11 runs on the
//! caller's thread (admin commands) or on the pool's own threads (the server),
//! never on an async executor.

mod der;
mod error;
mod keys;
mod module;
mod pin;
mod pool;
mod signer;
pub mod softhsm;

pub use der::{ecdsa_raw_to_der, rsa_public_key_der};
pub use error::{HsmError, HsmResult};
pub use keys::{KeyAlgorithm, KeyInfo, PrivateKeyAttributes};
pub use module::{Module, Token};
pub use pin::Pin;
pub use pool::{PoolSession, SigningPool};
pub use signer::HsmSigningKey;
