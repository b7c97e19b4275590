//! Loading a PKCS#11 module once per process, finding a token by its label
//! (and optionally its serial or slot), opening logged-in sessions on it, and
//! re-initialising the module in a controlled way when it must be made to
//! see objects created by another process.
//!
//! Every PKCS#11 call goes through the module's *gate*: a read lock held
//! for the length of one call, carrying the module's generation. A
//! re-initialisation takes the gate for writing, so it waits for calls in
//! flight and no call starts until it is done; it then bumps the
//! generation, which turns every session of the old generation into
//! [`HsmError::Reinitialized`] on its next use (their owners open a new one)
//! and keeps their handles from ever being closed against the new
//! initialisation, where the same numbers may name other sessions.

use crate::error::{HsmError, HsmResult};
use crate::mechanisms::Capabilities;
use crate::pin::Pin;
use crate::raw::{RawFunctions, TokenInfo, TokenInfoError};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use std::collections::HashMap;
use std::ffi::CString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

/// How a module is started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleOptions {
    /// Library parameters passed to `C_Initialize` (`pReserved`), as NSS
    /// softoken needs (`configdir='sql:/path' certPrefix='' …`).
    pub init_params: Option<String>,
}

/// A loaded and initialised PKCS#11 module. `C_Initialize` may run only once
/// per process and module, so modules are shared through a process-wide cache.
#[derive(Clone)]
pub struct Module {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    ctx: Pkcs11,
    raw: RawFunctions,
    /// Kept alive for as long as the module may read it.
    init_params: Option<CString>,
    options: ModuleOptions,
    /// The generation: read for every call, written by re-initialisation.
    gate: RwLock<u64>,
    last_reinit: Mutex<Option<Instant>>,
    /// One login at a time per module: tpm2-pkcs11 unseals the token's
    /// wrapping key through one ESYS context, and concurrent logins (every
    /// pool thread re-logging in after a re-initialisation) make it fail
    /// with "Esys called in bad sequence" (`CKR_GENERAL_ERROR`). Logins are
    /// rare (start, token back, re-initialisation), so this costs nothing.
    login: Mutex<()>,
    /// Set when a re-initialisation could not initialise the module again;
    /// the next call tries again (at most every [`INIT_RETRY`]).
    uninitialised: AtomicBool,
}

/// How long a failed `C_Initialize` (tpm2-pkcs11 answers one while another
/// process writes its store) keeps the module down before the next call
/// tries again.
const INIT_RETRY: Duration = Duration::from_millis(200);

/// Attempts of `C_Initialize` within one re-initialisation.
const INIT_ATTEMPTS: u32 = 10;

/// Retries of a login the module failed with a general error.
const LOGIN_RETRIES: u32 = 5;

/// Listings repeated while some token's info cannot be read and none
/// matches (in all under a second).
const UNREADABLE_RETRIES: u32 = 5;

/// How often a token that cannot be found may get the module
/// re-initialised ([`Token::open_session`]).
pub const TOKEN_REDISCOVERY_INTERVAL: Duration = Duration::from_secs(5);

/// Pauses before each further re-initialisation while a token is still not
/// listed ([`Module::look_again`]).
const REDISCOVERY_PAUSES: [Duration; 3] = [
    Duration::from_millis(20),
    Duration::from_millis(60),
    Duration::from_millis(180),
];

/// A read hold on the module: the generation cannot change while it lives.
pub(crate) struct Gate<'m> {
    guard: RwLockReadGuard<'m, u64>,
}

impl Gate<'_> {
    pub(crate) fn generation(&self) -> u64 {
        *self.guard
    }
}

impl Module {
    /// Load and initialise the module at `path` with no library parameters.
    pub fn load(path: &Path) -> HsmResult<Module> {
        Module::load_with(path, &ModuleOptions::default())
    }

    /// Load and initialise the module at `path`. A module already loaded by
    /// this process is shared; asking for it with other options is an error
    /// rather than a silent reuse.
    pub fn load_with(path: &Path, options: &ModuleOptions) -> HsmResult<Module> {
        static LOADED: OnceLock<Mutex<HashMap<PathBuf, Module>>> = OnceLock::new();
        let cache = LOADED.get_or_init(|| Mutex::new(HashMap::new()));
        let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(module) = cache.get(path) {
            if module.inner.options != *options {
                return Err(HsmError::ModuleOptions(path.display().to_string()));
            }
            return Ok(module.clone());
        }
        let load_err = |source| HsmError::ModuleLoad {
            path: path.display().to_string(),
            source,
        };
        let ctx = Pkcs11::new(path).map_err(load_err)?;
        let init_params = match &options.init_params {
            Some(p) => Some(CString::new(p.as_str()).map_err(|_| {
                HsmError::ModuleParams("init_params must not contain a NUL byte".into())
            })?),
            None => None,
        };
        match initialize(&ctx, init_params.as_ref()) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(init_failed(path, options, e)),
        }
        let raw = RawFunctions::load(path)?;
        let module = Module {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                ctx,
                raw,
                init_params,
                options: options.clone(),
                gate: RwLock::new(0),
                last_reinit: Mutex::new(None),
                login: Mutex::new(()),
                uninitialised: AtomicBool::new(false),
            }),
        };
        cache.insert(path.to_path_buf(), module.clone());
        Ok(module)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Hold the gate for one call (or a short sequence of calls that must
    /// see one initialisation). Never nest: a writer waiting between two
    /// read holds of one thread would deadlock it.
    pub(crate) fn enter(&self) -> Gate<'_> {
        if self.inner.uninitialised.load(Ordering::Acquire) {
            self.retry_initialize();
        }
        Gate {
            guard: self.inner.gate.read().unwrap_or_else(|p| p.into_inner()),
        }
    }

    pub(crate) fn ctx(&self) -> &Pkcs11 {
        &self.inner.ctx
    }

    /// The current generation (bumped by every re-initialisation).
    pub fn generation(&self) -> u64 {
        *self.enter().guard
    }

    /// `C_Finalize` then `C_Initialize`, with calls in flight finished first
    /// and new ones held back. Sessions of the old generation are void
    /// afterwards; their owners open new ones (and log in again). Used when
    /// a key that the shared class state names is not visible: some modules
    /// (tpm2-pkcs11) read a token's objects only when initialised.
    pub fn reinitialize(&self) -> HsmResult<()> {
        let mut generation = self.inner.gate.write().unwrap_or_else(|p| p.into_inner());
        if self.inner.uninitialised.load(Ordering::Acquire) {
            // Already down: only the initialisation is left to do.
            return self.initialize_locked(&mut generation, Instant::now(), 1);
        }
        let started = Instant::now();
        // Finalize through a clone: `finalize` consumes its receiver, and the
        // library stays loaded through `inner.ctx`.
        let finalized = self.inner.ctx.clone().finalize();
        if let Err(e) = &finalized {
            tracing::warn!(module = %self.inner.path.display(), "C_Finalize: {e}");
        }
        // Whatever C_Finalize said, the old sessions are gone or must be
        // treated so: a new generation starts now.
        *generation += 1;
        *self
            .inner
            .last_reinit
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.initialize_locked(&mut generation, started, INIT_ATTEMPTS)
    }

    /// `C_Initialize` under the write hold, up to `attempts` times with a
    /// growing pause (bounded: under two seconds in all). On failure the
    /// module stays down and a later call tries again.
    fn initialize_locked(
        &self,
        generation: &mut u64,
        started: Instant,
        attempts: u32,
    ) -> HsmResult<()> {
        let mut last = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(40 * u64::from(attempt)));
            }
            match initialize(&self.inner.ctx, self.inner.init_params.as_ref()) {
                Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
                    self.inner.uninitialised.store(false, Ordering::Release);
                    tracing::info!(
                        event = "hsm_reinitialized",
                        module = %self.inner.path.display(),
                        generation = *generation,
                        attempts = attempt + 1,
                        millis = started.elapsed().as_millis() as u64,
                        "PKCS#11 module re-initialised to see objects made by another process"
                    );
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        self.inner.uninitialised.store(true, Ordering::Release);
        *self
            .inner
            .last_reinit
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let err = match last {
            Some(e) => HsmError::pkcs11(
                format!("re-initialising module '{}'", self.inner.path.display()),
                e,
            ),
            None => HsmError::PoolClosed,
        };
        tracing::error!(event = "hsm_reinit_failed", module = %self.inner.path.display(), "{err}");
        Err(err)
    }

    /// The module is down after a failed re-initialisation: try again,
    /// at most every [`INIT_RETRY`]. Calls made meanwhile fail with the
    /// module's own `CKR_CRYPTOKI_NOT_INITIALIZED` (the HSM is unavailable).
    fn retry_initialize(&self) {
        let due = self
            .inner
            .last_reinit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|at| at.elapsed() >= INIT_RETRY);
        if !due {
            return;
        }
        let mut generation = self.inner.gate.write().unwrap_or_else(|p| p.into_inner());
        if self.inner.uninitialised.load(Ordering::Acquire) {
            let _ = self.initialize_locked(&mut generation, Instant::now(), 1);
        }
    }

    /// [`Module::reinitialize`] unless the module was re-initialised less
    /// than `interval` ago. Returns whether it ran. Bounds how often a
    /// missing key (an operator's mistake, or a state file naming a key on
    /// another token) can pause signing.
    pub fn reinitialize_at_most_every(&self, interval: Duration) -> HsmResult<bool> {
        let recent = self
            .inner
            .last_reinit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < interval);
        if recent {
            return Ok(false);
        }
        self.reinitialize().map(|()| true)
    }

    /// Every slot with a token, with what its token says of itself. A token
    /// whose info cannot be read is listed with the reason and does not
    /// hide the others.
    pub fn tokens(&self) -> HsmResult<Vec<(Slot, Result<TokenInfo, TokenInfoError>)>> {
        let _gate = self.enter();
        self.tokens_locked()
    }

    pub(crate) fn tokens_locked(
        &self,
    ) -> HsmResult<Vec<(Slot, Result<TokenInfo, TokenInfoError>)>> {
        let slots = self.ctx().get_slots_with_token().map_err(|e| {
            HsmError::pkcs11(
                format!("listing slots of module '{}'", self.inner.path.display()),
                e,
            )
        })?;
        Ok(slots
            .into_iter()
            .map(|slot| {
                let info = self.inner.raw.token_info(slot.id()).map_err(|rv| {
                    let rv_name = match cryptoki::error::Rv::from(rv) {
                        cryptoki::error::Rv::Error(e) => crate::error::ckr_name(e),
                        cryptoki::error::Rv::Ok => "CKR_OK".to_string(),
                    };
                    TokenInfoError { rv_name }
                });
                (slot, info)
            })
            .collect())
    }

    /// The slot holding the initialised token `selector` names. Looked up
    /// afresh each time: a token re-inserted (or re-created) may move slots.
    pub fn find_slot(&self, selector: &TokenSelector) -> HsmResult<Slot> {
        let _gate = self.enter();
        self.find_slot_locked(selector)
    }

    pub(crate) fn find_slot_locked(&self, selector: &TokenSelector) -> HsmResult<Slot> {
        // A token whose info could not be read may be the one asked for,
        // mid-update by another process (SoftHSM2 rewrites its token files
        // when a second process starts): look again, a few times, before
        // saying it is not there.
        let mut tokens = self.tokens_locked()?;
        for attempt in 1..=UNREADABLE_RETRIES {
            let found = tokens
                .iter()
                .any(|(slot, info)| info.as_ref().is_ok_and(|i| selector.matches(*slot, i)));
            if found || tokens.iter().all(|(_, info)| info.is_ok()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(25 * u64::from(attempt)));
            tokens = self.tokens_locked()?;
        }
        let matching: Vec<Slot> = tokens
            .iter()
            .filter_map(|(slot, info)| {
                let info = info.as_ref().ok()?;
                selector.matches(*slot, info).then_some(*slot)
            })
            .collect();
        match matching.as_slice() {
            [slot] => Ok(*slot),
            [] => Err(HsmError::TokenNotFound {
                token: selector.to_string(),
                seen: describe(&tokens),
            }),
            many => Err(HsmError::AmbiguousToken {
                token: selector.to_string(),
                slots: many
                    .iter()
                    .map(|s| s.id().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// A token chosen by label (or a fuller selector), with the PIN to log
    /// in with. Fails when no initialised token, or more than one, matches.
    pub fn token(&self, selector: impl Into<TokenSelector>, pin: Pin) -> HsmResult<Token> {
        let selector = selector.into();
        match self.find_slot(&selector) {
            Ok(_) => {}
            Err(HsmError::TokenNotFound { .. }) => {
                // Not listed at this initialisation: it may be unreadable
                // for now (see `look_again`), or really not there.
                self.reinitialize()?;
                self.look_again(&selector)?;
            }
            Err(e) => return Err(e),
        }
        Ok(Token::new(self.clone(), selector, pin))
    }

    /// `selector`'s slot, after a re-initialisation made because it was not
    /// found (reported here, once: `hsm_token_rediscovery`): if the token is
    /// still not listed, the module is re-initialised again after each of
    /// [`REDISCOVERY_PAUSES`] until it is (SoftHSM2 that reads a token's
    /// files while another process writes them cannot read that token until
    /// it is initialised again, and servers started at once can keep it so
    /// for several initialisations in a row). Bounded: under 0.3 s of
    /// pauses.
    pub(crate) fn look_again(&self, selector: &TokenSelector) -> HsmResult<Slot> {
        tracing::warn!(event = "hsm_token_rediscovery", token = %selector.label, "the token was not found; re-initialised the module to look again");
        let mut found = self.find_slot(selector);
        for pause in REDISCOVERY_PAUSES {
            if !matches!(found, Err(HsmError::TokenNotFound { .. })) {
                break;
            }
            std::thread::sleep(pause);
            self.reinitialize()?;
            found = self.find_slot(selector);
        }
        found
    }
}

fn initialize(ctx: &Pkcs11, params: Option<&CString>) -> Result<(), CkError> {
    let flags = CInitializeFlags::OS_LOCKING_OK;
    let args = match params.and_then(|p| std::ptr::NonNull::new(p.as_ptr() as *mut _)) {
        // SAFETY: the pointer is a NUL-terminated string owned by the
        // module's `Inner` for as long as the module is loaded, which is what
        // `pReserved` library parameters (NSS softoken) require.
        Some(ptr) => unsafe { CInitializeArgs::new_with_reserved(flags, ptr) },
        None => CInitializeArgs::new(flags),
    };
    ctx.initialize(args)
}

fn init_failed(path: &Path, options: &ModuleOptions, source: CkError) -> HsmError {
    if options.init_params.is_none() && matches!(source, CkError::Pkcs11(RvError::ArgumentsBad, _))
    {
        return HsmError::ModuleParams(format!(
            "C_Initialize of module '{}' answered CKR_ARGUMENTS_BAD: this module needs \
             library parameters; set [hsm] init_params (NSS softoken: \
             \"configdir='sql:/path/to/nssdb' certPrefix='' keyPrefix='' secmod='secmod.db'\")",
            path.display()
        ));
    }
    HsmError::ModuleLoad {
        path: path.display().to_string(),
        source,
    }
}

fn describe(tokens: &[(Slot, Result<TokenInfo, TokenInfoError>)]) -> String {
    if tokens.is_empty() {
        return "no slot has a token".into();
    }
    tokens
        .iter()
        .map(|(slot, info)| match info {
            Ok(i) if i.initialized => {
                format!("slot {}: '{}' serial '{}'", slot.id(), i.label, i.serial)
            }
            Ok(_) => format!("slot {}: uninitialised token", slot.id()),
            Err(e) => format!("slot {}: unreadable ({e})", slot.id()),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Which token: by label, and optionally by serial number and slot id, for
/// modules where labels repeat (HA groups, several devices).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSelector {
    pub label: String,
    pub serial: Option<String>,
    pub slot: Option<u64>,
}

impl TokenSelector {
    pub fn label(label: &str) -> TokenSelector {
        TokenSelector {
            label: label.to_string(),
            serial: None,
            slot: None,
        }
    }

    fn matches(&self, slot: Slot, info: &TokenInfo) -> bool {
        info.initialized
            && info.label == self.label
            && self.serial.as_ref().is_none_or(|s| *s == info.serial)
            && self.slot.is_none_or(|id| id == slot.id())
    }
}

impl From<&str> for TokenSelector {
    fn from(label: &str) -> Self {
        TokenSelector::label(label)
    }
}

impl From<&String> for TokenSelector {
    fn from(label: &String) -> Self {
        TokenSelector::label(label)
    }
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}'", self.label)?;
        if let Some(serial) = &self.serial {
            write!(f, " serial '{serial}'")?;
        }
        if let Some(slot) = self.slot {
            write!(f, " in slot {slot}")?;
        }
        Ok(())
    }
}

/// A token known by selector plus the user PIN; opens logged-in sessions.
#[derive(Clone)]
pub struct Token {
    module: Module,
    selector: TokenSelector,
    pin: Pin,
    capabilities: Arc<OnceLock<Capabilities>>,
}

impl Token {
    pub(crate) fn new(module: Module, selector: TokenSelector, pin: Pin) -> Token {
        Token {
            module,
            selector,
            pin,
            capabilities: Arc::new(OnceLock::new()),
        }
    }

    pub fn label(&self) -> &str {
        &self.selector.label
    }

    pub fn selector(&self) -> &TokenSelector {
        &self.selector
    }

    pub fn module(&self) -> &Module {
        &self.module
    }

    /// What this token can do, read once from its mechanism list.
    pub fn capabilities(&self) -> HsmResult<&Capabilities> {
        if let Some(c) = self.capabilities.get() {
            return Ok(c);
        }
        let caps = {
            let _gate = self.module.enter();
            let slot = self.module.find_slot_locked(&self.selector)?;
            Capabilities::read(
                self.module.ctx(),
                &self.module.inner.raw,
                slot,
                self.label(),
            )?
        };
        Ok(self.capabilities.get_or_init(|| caps))
    }

    /// Open a read-write session and log the user in. Login state is shared
    /// by all sessions of a process on a token, so "already logged in" is
    /// success, not an error.
    ///
    /// A token the module no longer lists (or whose info it cannot read)
    /// gets the module re-initialised, at most every
    /// [`TOKEN_REDISCOVERY_INTERVAL`], and is looked for again
    /// ([`Module::look_again`]): a
    /// module can lose a token at a re-initialisation (SoftHSM2 that reads
    /// the token's files while another process writes them answers
    /// `CKR_GENERAL_ERROR` for it until it is initialised again), and a
    /// token can come back (plugged in again).
    pub fn open_session(&self) -> HsmResult<HsmSession> {
        let first = self.open_session_as(UserType::User);
        if !matches!(first, Err(HsmError::TokenNotFound { .. }))
            || !self
                .module
                .reinitialize_at_most_every(TOKEN_REDISCOVERY_INTERVAL)?
        {
            return first;
        }
        self.module.look_again(&self.selector)?;
        self.open_session_as(UserType::User)
    }

    /// As [`Token::open_session`], logged in as `user` (the SO, to set up a
    /// token).
    pub(crate) fn open_session_as(&self, user: UserType) -> HsmResult<HsmSession> {
        let gate = self.module.enter();
        let slot = self.module.find_slot_locked(&self.selector)?;
        let session = self
            .module
            .ctx()
            .open_rw_session_no_drop(slot)
            .map_err(|e| {
                HsmError::pkcs11(format!("opening a session on token '{}'", self.label()), e)
            })?;
        let session = HsmSession {
            session: Some(session),
            module: self.module.clone(),
            generation: gate.generation(),
            token: self.label().to_string(),
        };
        let login = {
            let _one_at_a_time = self
                .module
                .inner
                .login
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // tpm2-pkcs11 also fails a login that overlaps another session's
            // call on the same token ("Esys called in bad sequence",
            // CKR_GENERAL_ERROR): a few short retries, bounded (under half
            // a second in all), before the error stands.
            let mut attempt = 0;
            loop {
                let result = session.raw().login(user, Some(&self.pin.auth_pin()));
                match result {
                    Err(CkError::Pkcs11(RvError::GeneralError | RvError::FunctionFailed, _))
                        if attempt < LOGIN_RETRIES =>
                    {
                        attempt += 1;
                        std::thread::sleep(Duration::from_millis(20 * u64::from(attempt)));
                    }
                    other => break other,
                }
            }
        };
        match login {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => {
                let err = HsmError::pkcs11(format!("logging in to token '{}'", self.label()), e);
                session.close_locked(&gate);
                return Err(err);
            }
        }
        drop(gate);
        Ok(session)
    }

    /// Log the user out of the token. Every session of this process loses
    /// its login with it; pool sessions log in again on their next job.
    pub fn logout(&self) -> HsmResult<()> {
        let session = self.open_session()?;
        session.call(
            || format!("logging out of token '{}'", self.label()),
            |s| s.logout(),
        )
    }
}

/// A session of one module generation. Every call holds the module's gate;
/// a call on a session of an earlier generation fails with
/// [`HsmError::Reinitialized`] without reaching the module.
pub struct HsmSession {
    /// `None` only while being closed.
    session: Option<Session>,
    module: Module,
    generation: u64,
    token: String,
}

impl HsmSession {
    /// Run one PKCS#11 call on this session, under the gate.
    pub(crate) fn call<R>(
        &self,
        context: impl FnOnce() -> String,
        f: impl FnOnce(&Session) -> Result<R, CkError>,
    ) -> HsmResult<R> {
        let gate = self.module.enter();
        if gate.generation() != self.generation {
            return Err(HsmError::Reinitialized {
                token: self.token.clone(),
            });
        }
        f(self.raw()).map_err(|e| HsmError::pkcs11(context(), e))
    }

    fn raw(&self) -> &Session {
        // Invariant: `session` is `Some` until `close_locked`/`drop`.
        self.session
            .as_ref()
            .unwrap_or_else(|| unreachable!("session used after close"))
    }

    pub fn token_label(&self) -> &str {
        &self.token
    }

    fn close_locked(mut self, gate: &Gate<'_>) {
        if let Some(session) = self.session.take() {
            if gate.generation() == self.generation {
                let _ = session.close();
            }
        }
    }
}

impl Drop for HsmSession {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let gate = self.module.enter();
        // A handle of an earlier generation is not ours to close any more:
        // the number may now belong to another session.
        if gate.generation() == self.generation {
            let _ = session.close();
        }
    }
}
