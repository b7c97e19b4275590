//! Errors that name the PKCS#11 return value and what was being done, e.g.
//! `signing with key 'db-int-2026' on token 'trellis-online': CKR_DEVICE_REMOVED`.

use cryptoki::error::{Error as CkError, RvError};

pub type HsmResult<T> = Result<T, HsmError>;

#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// A PKCS#11 call failed; `rv` is the `CKR_…` name.
    #[error("{context}: {rv}")]
    Pkcs11 {
        context: String,
        rv: String,
        #[source]
        source: CkError,
    },
    #[error("loading PKCS#11 module '{path}': {source}")]
    ModuleLoad {
        path: String,
        #[source]
        source: CkError,
    },
    #[error(
        "no initialised token {token} (is the module right and the token initialised? {seen})"
    )]
    TokenNotFound { token: String, seen: String },
    #[error("more than one token matches {token} (slots {slots}): set the token's serial in the configuration")]
    AmbiguousToken { token: String, slots: String },
    /// The token cannot generate or sign with the key as configured.
    #[error("{0}")]
    Unsupported(crate::mechanisms::Missing),
    /// The token made a key weaker than asked (and it was destroyed).
    #[error("token '{token}' made key '{label}' weaker than asked: {weakness}; the key was destroyed and this token cannot hold CA keys")]
    WeakKey {
        label: String,
        token: String,
        weakness: String,
    },
    /// The module was re-initialised since this session was opened.
    #[error("the PKCS#11 module was re-initialised; the session on token '{token}' is void")]
    Reinitialized { token: String },
    #[error("PKCS#11 module '{0}' is already loaded with other options in this process")]
    ModuleOptions(String),
    #[error("{0}")]
    ModuleParams(String),
    /// The module could not be mapped a second time for the raw calls
    /// (`C_GetTokenInfo`, `C_GetMechanismList`).
    #[error("loading {path}: {source}")]
    RawLoad {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The module's `C_GetFunctionList` failed or returned no table.
    #[error("C_GetFunctionList returned {rv:#x}")]
    FunctionList { rv: cryptoki_sys::CK_RV },
    #[error("no key labelled '{label}' on token '{token}'")]
    KeyNotFound { label: String, token: String },
    #[error("a key labelled '{label}' already exists on token '{token}'")]
    KeyExists { label: String, token: String },
    #[error("PIN: {0}")]
    Pin(String),
    #[error("key '{label}': {message}")]
    BadKey { label: String, message: String },
    #[error("signing pool is shut down")]
    PoolClosed,
    #[error("SoftHSM2 setup: {0}")]
    SoftHsm(String),
}

impl HsmError {
    pub(crate) fn pkcs11(context: impl Into<String>, source: CkError) -> Self {
        let rv = match &source {
            CkError::Pkcs11(rv, _) => ckr_name(*rv),
            other => other.to_string(),
        };
        HsmError::Pkcs11 {
            context: context.into(),
            rv,
            source,
        }
    }

    /// The PKCS#11 return value, when this error came from a PKCS#11 call.
    pub fn rv(&self) -> Option<RvError> {
        match self {
            HsmError::Pkcs11 {
                source: CkError::Pkcs11(rv, _),
                ..
            } => Some(*rv),
            _ => None,
        }
    }

    /// The `CKR_…` name of the return value, or "other".
    pub fn rv_name(&self) -> String {
        self.rv().map_or_else(|| "other".to_string(), ckr_name)
    }

    /// True when the session this error came from must be thrown away and
    /// a new one opened (the token went away, or the module was
    /// re-initialised).
    pub fn is_session_lost(&self) -> bool {
        matches!(self, HsmError::Reinitialized { .. }) || self.rv().is_some_and(is_session_lost)
    }

    /// True when the token or session went away (device removed, session
    /// invalid, logged out): the caller should treat the HSM as unavailable,
    /// not the request as bad.
    pub fn is_unavailable(&self) -> bool {
        match self {
            HsmError::Pkcs11 { .. } => self.rv().is_none_or(is_session_lost),
            HsmError::TokenNotFound { .. }
            | HsmError::PoolClosed
            | HsmError::ModuleLoad { .. }
            | HsmError::Reinitialized { .. } => true,
            _ => false,
        }
    }
}

/// Return values after which a session must be thrown away and re-opened.
pub(crate) fn is_session_lost(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::UserNotLoggedIn
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SlotIdInvalid
            | RvError::CryptokiNotInitialized
            | RvError::GeneralError
            | RvError::FunctionFailed
            | RvError::KeyHandleInvalid
            | RvError::ObjectHandleInvalid
    )
}

/// `RvError::DeviceRemoved` → `CKR_DEVICE_REMOVED`.
pub(crate) fn ckr_name(rv: RvError) -> String {
    let camel = format!("{rv:?}");
    let mut out = String::from("CKR_");
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_value_names_match_the_standard() {
        assert_eq!(ckr_name(RvError::DeviceRemoved), "CKR_DEVICE_REMOVED");
        assert_eq!(ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            ckr_name(RvError::SessionHandleInvalid),
            "CKR_SESSION_HANDLE_INVALID"
        );
    }
}
