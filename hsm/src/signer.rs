//! rcgen's `SigningKey` for a key that lives in the token: rcgen builds the
//! TBS certificate, the token signs it.

use crate::error::HsmError;
use crate::keys::KeyInfo;
use crate::pool::PoolSession;
use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};
use std::cell::RefCell;

/// A token key bound to a session for the duration of one signing job.
/// rcgen's error type cannot carry ours, so the HSM error is kept here and
/// taken back with [`HsmSigningKey::take_error`].
pub struct HsmSigningKey<'s> {
    session: RefCell<&'s mut PoolSession>,
    key: &'s KeyInfo,
    error: RefCell<Option<HsmError>>,
}

impl<'s> HsmSigningKey<'s> {
    pub fn new(session: &'s mut PoolSession, key: &'s KeyInfo) -> Self {
        HsmSigningKey {
            session: RefCell::new(session),
            key,
            error: RefCell::new(None),
        }
    }

    /// The HSM error behind the last `rcgen::Error::RemoteKeyError`.
    pub fn take_error(&self) -> Option<HsmError> {
        self.error.borrow_mut().take()
    }
}

impl PublicKeyData for HsmSigningKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.key.public_key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.key.algorithm.rcgen_algorithm()
    }
}

impl SigningKey for HsmSigningKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let result = self.session.borrow_mut().sign(self.key, msg);
        result.map_err(|e| {
            *self.error.borrow_mut() = Some(e);
            rcgen::Error::RemoteKeyError
        })
    }
}
