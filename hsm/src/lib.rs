//! PKCS#11 access for Trellis: loading a module, finding and logging in to a
//! token, generating CA keys *inside* the token, and signing with them through
//! a pool of per-thread sessions.
//!
//! CA private keys never leave the token: they are generated with
//! `CKA_SENSITIVE=true`, `CKA_EXTRACTABLE=false` (read back and checked),
//! and the only thing this crate ever asks of them is a signature. What a
//! token can do is read from its mechanism list and the way each key signs
//! is chosen from it, so one code path serves SoftHSM2, tpm2-pkcs11,
//! opencryptoki, NSS softoken and hardware HSMs. Everything that talks PKCS#11 runs on the
//! caller's thread (admin commands) or on the pool's own threads (the server),
//! never on an async executor.

pub mod affinity;
mod der;
mod error;
mod keys;
mod mechanisms;
mod module;
mod pin;
mod pool;
mod raw;
mod signer;
pub mod softhsm;

pub use der::{ecdsa_raw_to_der, rsa_public_key_der};
pub use error::{HsmError, HsmResult};
pub use keys::{KeyAlgorithm, KeyInfo, PrivateKeyAttributes, UnknownAlgorithm};
pub use mechanisms::{Capabilities, Missing, SignMechanism};
pub use module::{
    HsmSession, Module, ModuleOptions, Token, TokenSelector, TOKEN_REDISCOVERY_INTERVAL,
};
pub use pin::Pin;
pub use pool::{Placement, PoolSession, SigningPool, KEY_RECHECK};
pub use raw::{TokenInfo, TokenInfoError};
pub use signer::HsmSigningKey;
