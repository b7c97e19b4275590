//! Loading a PKCS#11 module once per process, finding a token by its label,
//! and opening logged-in sessions on it.

use crate::error::{HsmError, HsmResult};
use crate::pin::Pin;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// A loaded and initialised PKCS#11 module. `C_Initialize` may run only once
/// per process and module, so modules are shared through a process-wide cache.
#[derive(Clone)]
pub struct Module {
    ctx: Arc<Pkcs11>,
    path: PathBuf,
}

impl Module {
    pub fn load(path: &Path) -> HsmResult<Module> {
        static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<Pkcs11>>>> = OnceLock::new();
        let cache = LOADED.get_or_init(|| Mutex::new(HashMap::new()));
        let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ctx) = cache.get(path) {
            return Ok(Module {
                ctx: ctx.clone(),
                path: path.to_path_buf(),
            });
        }
        let load_err = |source| HsmError::ModuleLoad {
            path: path.display().to_string(),
            source,
        };
        let ctx = Pkcs11::new(path).map_err(load_err)?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(load_err(e)),
        }
        let ctx = Arc::new(ctx);
        cache.insert(path.to_path_buf(), ctx.clone());
        Ok(Module {
            ctx,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn ctx(&self) -> &Pkcs11 {
        &self.ctx
    }

    /// The slot holding the initialised token with this label. Looked up
    /// afresh each time: a token re-inserted (or re-created) may move slots.
    pub fn find_slot(&self, label: &str) -> HsmResult<Slot> {
        let slots = self.ctx.get_slots_with_initialized_token().map_err(|e| {
            HsmError::pkcs11(
                format!("listing slots of module '{}'", self.path.display()),
                e,
            )
        })?;
        for slot in slots {
            match self.ctx.get_token_info(slot) {
                Ok(info) if info.label().trim_end() == label => return Ok(slot),
                _ => continue,
            }
        }
        Err(HsmError::TokenNotFound(label.to_string()))
    }

    /// A token by label, with the PIN to log in with.
    pub fn token(&self, label: &str, pin: Pin) -> HsmResult<Token> {
        self.find_slot(label)?;
        Ok(Token {
            module: self.clone(),
            label: label.to_string(),
            pin,
        })
    }
}

/// A token known by label plus the user PIN; opens logged-in sessions.
#[derive(Clone)]
pub struct Token {
    module: Module,
    label: String,
    pin: Pin,
}

impl Token {
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn module(&self) -> &Module {
        &self.module
    }

    /// Open a read-write session and log the user in. Login state is shared
    /// by all sessions of a process on a token, so "already logged in" is
    /// success, not an error.
    pub fn open_session(&self) -> HsmResult<Session> {
        let slot = self.module.find_slot(&self.label)?;
        let session = self.module.ctx().open_rw_session(slot).map_err(|e| {
            HsmError::pkcs11(format!("opening a session on token '{}'", self.label), e)
        })?;
        match session.login(UserType::User, Some(&self.pin.auth_pin())) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => Err(HsmError::pkcs11(
                format!("logging in to token '{}'", self.label),
                e,
            )),
        }
    }
}

impl Token {
    /// Log the user out of the token. Every session of this process loses
    /// its login with it; pool sessions log in again on their next job.
    pub fn logout(&self) -> HsmResult<()> {
        let session = self.open_session()?;
        session
            .logout()
            .map_err(|e| HsmError::pkcs11(format!("logging out of token '{}'", self.label), e))
    }
}
