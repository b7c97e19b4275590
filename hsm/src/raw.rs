//! The raw PKCS#11 calls Trellis makes past the `cryptoki` crate, so that
//! odd tokens neither fail nor flood the log: `C_GetTokenInfo`, read field by
//! field without failing on optional fields, and `C_GetMechanismList` as
//! plain numbers (cryptoki logs an error for every vendor mechanism it does
//! not know, dozens per token).
//!
//! cryptoki parses a token's `utcTime` strictly whenever the token sets
//! `CKF_CLOCK_ON_TOKEN`, so a token whose clock string is not
//! `YYYYMMDDhhmmss00` (opencryptoki's software token) makes its whole info,
//! and with it cryptoki's slot listing, fail. Here the module's own function
//! list is fetched once, through the same loaded library (a second `dlopen`
//! of one path returns the same handle), and only the fields Trellis uses are
//! decoded: label, serial, manufacturer, model and flags. The clock is kept
//! as text for display and never parsed.

use crate::error::{HsmError, HsmResult};
use cryptoki_sys::{
    CK_FUNCTION_LIST, CK_MECHANISM_TYPE, CK_RV, CK_SLOT_ID, CK_TOKEN_INFO, CK_ULONG,
};
use std::path::Path;

/// `CKF_TOKEN_INITIALIZED`, `CKF_LOGIN_REQUIRED`, `CKF_CLOCK_ON_TOKEN`.
const CKF_LOGIN_REQUIRED: u64 = 0x0000_0004;
const CKF_TOKEN_INITIALIZED: u64 = 0x0000_0400;
const CKF_CLOCK_ON_TOKEN: u64 = 0x0000_0040;

/// What Trellis needs to know of a token, read leniently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    pub label: String,
    pub serial: String,
    pub manufacturer: String,
    pub model: String,
    pub initialized: bool,
    pub login_required: bool,
    /// The token's clock as it reported it (printable bytes only), when it
    /// claims to have one. Informational: never parsed.
    pub clock: Option<String>,
}

/// `C_GetTokenInfo` failed for one slot (the slot is listed as unreadable,
/// the others still are).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("C_GetTokenInfo: {rv_name}")]
pub struct TokenInfoError {
    /// The `CKR_…` name of the return value.
    pub rv_name: String,
}

/// The module's function list, for the calls cryptoki cannot make leniently.
pub(crate) struct RawFunctions {
    /// Keeps the library mapped while `list` is used.
    _library: cryptoki_sys::Pkcs11,
    list: *const CK_FUNCTION_LIST,
}

// SAFETY: the function list is a static table inside the loaded module that
// the PKCS#11 standard requires to stay valid and immutable while the
// library is loaded (which `_library` guarantees); the module's functions are
// themselves thread-safe because the module is initialised with
// `CKF_OS_LOCKING_OK`.
unsafe impl Send for RawFunctions {}
unsafe impl Sync for RawFunctions {}

impl RawFunctions {
    /// Map the module at `path` (already loaded by cryptoki, so this only
    /// adds a reference) and fetch its function list.
    pub(crate) fn load(path: &Path) -> HsmResult<RawFunctions> {
        // SAFETY: loading a shared library runs its initialisers; this is the
        // same library cryptoki has already loaded from the same path, so its
        // initialisers have run and a second load only takes a reference.
        let library =
            unsafe { cryptoki_sys::Pkcs11::new(path) }.map_err(|e| HsmError::RawLoad {
                path: path.display().to_string(),
                source: Box::new(e),
            })?;
        let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        // SAFETY: C_GetFunctionList writes one pointer to `list`.
        let rv = unsafe { library.C_GetFunctionList(&mut list) };
        if rv != 0 || list.is_null() {
            return Err(HsmError::FunctionList { rv });
        }
        Ok(RawFunctions {
            _library: library,
            list,
        })
    }

    /// `C_GetTokenInfo` for `slot`, decoded leniently. `Err` carries the
    /// `CK_RV` when the call itself failed.
    pub(crate) fn token_info(&self, slot: CK_SLOT_ID) -> Result<TokenInfo, CK_RV> {
        // SAFETY: `list` points at the module's function table (see the
        // `Send`/`Sync` note); the entry may be absent, which is checked.
        let get = unsafe { (*self.list).C_GetTokenInfo }.ok_or(0x54 as CK_RV)?; // CKR_FUNCTION_NOT_SUPPORTED
                                                                                // SAFETY: CK_TOKEN_INFO is plain old data; all-zero is a valid value.
        let mut info: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
        // SAFETY: the module fills the struct it is given.
        let rv = unsafe { get(slot, &mut info) };
        if rv != 0 {
            return Err(rv);
        }
        Ok(decode(&info))
    }
}

impl RawFunctions {
    /// `C_GetMechanismList` for `slot`: every mechanism number the token
    /// lists (at most 4096, more than any token has).
    pub(crate) fn mechanism_list(&self, slot: CK_SLOT_ID) -> Result<Vec<CK_MECHANISM_TYPE>, CK_RV> {
        const MAX: usize = 4096;
        // SAFETY: as in `token_info`.
        let get = unsafe { (*self.list).C_GetMechanismList }.ok_or(0x54 as CK_RV)?;
        let mut count: CK_ULONG = 0;
        // SAFETY: a NULL list asks for the count only.
        let rv = unsafe { get(slot, std::ptr::null_mut(), &mut count) };
        if rv != 0 {
            return Err(rv);
        }
        let mut list: Vec<CK_MECHANISM_TYPE> = vec![0; (count as usize).min(MAX)];
        let mut filled = list.len() as CK_ULONG;
        // SAFETY: the buffer holds `filled` entries, which the module is
        // told; it writes at most that many and updates the count.
        let rv = unsafe { get(slot, list.as_mut_ptr(), &mut filled) };
        if rv != 0 {
            return Err(rv);
        }
        list.truncate((filled as usize).min(MAX));
        Ok(list)
    }
}

fn decode(info: &CK_TOKEN_INFO) -> TokenInfo {
    let flags = info.flags;
    TokenInfo {
        label: padded(&info.label),
        serial: padded(&info.serialNumber),
        manufacturer: padded(&info.manufacturerID),
        model: padded(&info.model),
        initialized: flags & CKF_TOKEN_INITIALIZED != 0,
        login_required: flags & CKF_LOGIN_REQUIRED != 0,
        clock: (flags & CKF_CLOCK_ON_TOKEN != 0).then(|| {
            info.utcTime
                .iter()
                .map(|&b| {
                    if b.is_ascii_graphic() || b == b' ' {
                        b as char
                    } else {
                        '?'
                    }
                })
                .collect()
        }),
    }
}

/// A blank-padded PKCS#11 text field: UTF-8 where it is, trailing blanks
/// and NULs removed (some modules pad with NUL despite the standard).
fn padded(field: &[u8]) -> String {
    String::from_utf8_lossy(field)
        .trim_end_matches([' ', '\0'])
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<const N: usize>(text: &str) -> [u8; N] {
        let mut out = [b' '; N];
        out[..text.len()].copy_from_slice(text.as_bytes());
        out
    }

    #[test]
    fn a_malformed_clock_does_not_hide_the_label() {
        // SAFETY: plain old data.
        let mut info: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
        info.label = field("trellis-hsm");
        info.serialNumber = field("123");
        info.flags = CKF_TOKEN_INITIALIZED | CKF_CLOCK_ON_TOKEN | CKF_LOGIN_REQUIRED;
        info.utcTime = *b"Mon Dec  1 12:0\0";
        let got = decode(&info);
        assert_eq!(got.label, "trellis-hsm");
        assert_eq!(got.serial, "123");
        assert!(got.initialized && got.login_required);
        assert_eq!(got.clock.as_deref(), Some("Mon Dec  1 12:0?"));
    }

    #[test]
    fn token_info_errors_name_the_return_value() {
        let e = TokenInfoError {
            rv_name: "CKR_TOKEN_NOT_RECOGNIZED".into(),
        };
        assert_eq!(e.to_string(), "C_GetTokenInfo: CKR_TOKEN_NOT_RECOGNIZED");
    }

    #[test]
    fn nul_padding_is_trimmed() {
        let mut label = [0u8; 32];
        label[..4].copy_from_slice(b"nss ");
        assert_eq!(padded(&label), "nss");
    }
}
