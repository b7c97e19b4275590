//! Signing sessions and the pool of threads that own them.
//!
//! **Placement.** While the pool is saturated, each thread runs on a CPU of
//! its own when the pool has one for every CPU the process may use, and
//! anywhere once it finds nothing to do ([`crate::affinity`],
//! [`Placement`]).
//!
//! A PKCS#11 `Session` is `Send` but not `Sync`, and a shared session
//! serialises every signature, so each pool thread owns one session and jobs
//! are closures run on that thread. Sessions are opened lazily and re-opened
//! after the token went away (device removed, session invalid, logged out),
//! so service resumes by itself when the token is back.
//!
//! **Session copies.** Where the module allows it (`C_CopyObject` with
//! `CKA_TOKEN=false`; the key's `CKA_COPYABLE` decides), a session signs
//! with a copy of the private key made in that session: a session object,
//! still inside the token, still sensitive and never extractable (PKCS#11
//! forbids a copy to weaken either), gone when the session closes. Some
//! modules check their object store on every operation on a token object
//! (SoftHSM2 opens and locks the object's files): with the copy a P-256
//! signature on SoftHSM2 took 58 µs instead of 95 µs here. The copy never
//! outlives the token key by more than [`KEY_RECHECK`]: a cached copy
//! older than that is used only after the token object is seen again (its
//! label read through its handle; a failed read looks the label up anew),
//! and is destroyed when it is gone; a new key under the same label is
//! copied anew. A key whose copy the module refuses, or cannot sign with
//! while the token object can, is signed through the token object as
//! before.

use crate::der::ecdsa_raw_to_der;
use crate::error::{HsmError, HsmResult};
use crate::keys::{find_private, KeyAlgorithm, KeyInfo};
use crate::mechanisms::{SignMechanism, SHA256_DIGEST_INFO_PREFIX};
use crate::module::{HsmSession, Token};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectHandle};
use sha2::{Digest, Sha256, Sha384};
use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a session copy of a key is used without finding the token key
/// again: the longest a key destroyed in the token can still sign here.
pub const KEY_RECHECK: Duration = Duration::from_secs(1);

/// How a session reaches one key.
#[derive(Clone, Copy)]
struct KeyHandle {
    /// What `C_Sign` is given: the session copy, or the token object.
    sign: ObjectHandle,
    /// The token object.
    object: ObjectHandle,
    /// Whether `sign` is a session copy (destroyed when dropped from here).
    copy: bool,
    /// When the token key was last found.
    found_at: Instant,
}

/// One session on one token, with the key handles found through it.
pub struct PoolSession {
    token: Token,
    session: Option<HsmSession>,
    handles: HashMap<String, KeyHandle>,
    /// The module does not copy objects (`CKR_FUNCTION_NOT_SUPPORTED`).
    copies_refused: bool,
    /// Keys whose copy was refused, or could not sign when the token
    /// object could: signed through the token object. Both outlive a
    /// session reset; both hold what the server's key labels name.
    no_copy: HashSet<String>,
}

impl PoolSession {
    pub fn new(token: Token) -> PoolSession {
        PoolSession {
            token,
            session: None,
            handles: HashMap::new(),
            copies_refused: false,
            no_copy: HashSet::new(),
        }
    }

    pub fn token(&self) -> &Token {
        &self.token
    }

    /// Sign `message` with `key`, returning the signature as X.509 carries
    /// it (DER ECDSA-Sig-Value, or PKCS#1 v1.5). Retries once on a fresh
    /// session when the old one was lost.
    pub fn sign(&mut self, key: &KeyInfo, message: &[u8]) -> HsmResult<Vec<u8>> {
        match self.try_sign(key, message) {
            Err(e) if e.is_session_lost() => {
                self.reset();
                let retried = self.try_sign(key, message);
                if retried.as_ref().is_err_and(|e| e.is_unavailable()) {
                    self.reset();
                }
                retried
            }
            other => other,
        }
    }

    /// Whether this session signs `label` through a session copy (after
    /// at least one signature or probe with it).
    pub fn signs_with_copy(&self, label: &str) -> bool {
        self.handles.get(label).is_some_and(|h| h.copy)
    }

    /// Check that this session can still reach the token and find the key.
    pub fn probe(&mut self, key_label: &str) -> HsmResult<()> {
        // Look the key up in the token again (a real call), rather than
        // trusting the cached handle: a session whose token went away still
        // holds one, and readiness must see the token, not the cache.
        // Like `sign`: a session lost (or voided by a re-initialisation of
        // the module) is replaced once before the probe says no.
        let result = match self.find_again(key_label).map(|_| ()) {
            Err(e) if e.is_session_lost() => {
                self.reset();
                self.find_again(key_label).map(|_| ())
            }
            other => other,
        };
        if result.as_ref().is_err_and(|e| e.is_unavailable()) {
            self.reset();
        }
        result
    }

    fn reset(&mut self) {
        // Closing the session destroys its copies.
        self.session = None;
        self.handles.clear();
    }

    fn session(&mut self) -> HsmResult<&HsmSession> {
        if self.session.is_none() {
            self.session = Some(self.token.open_session()?);
        }
        self.session.as_ref().ok_or(HsmError::PoolClosed)
    }

    /// Forget `label`'s cached handle, destroying its session copy.
    fn forget(&mut self, label: &str) {
        if let Some(old) = self.handles.remove(label) {
            if old.copy {
                if let Some(session) = &self.session {
                    let _ = session.call(
                        || format!("destroying the session copy of key '{label}'"),
                        |s| s.destroy_object(old.sign),
                    );
                }
            }
        }
    }

    /// Find the token key `label` again (a real call): refreshes a cached
    /// copy, or makes the handle anew.
    fn find_again(&mut self, label: &str) -> HsmResult<ObjectHandle> {
        let found = find_private(self.session()?, label)?;
        match (found, self.handles.get_mut(label)) {
            // The same token object: the copy is still of the right key
            // (a new key under the old label is copied anew below).
            (Some(object), Some(cached)) if cached.copy && cached.object == object => {
                cached.found_at = Instant::now();
                Ok(cached.sign)
            }
            (Some(object), _) => {
                self.forget(label);
                Ok(self.insert(label, object))
            }
            (None, _) => {
                self.forget(label);
                Err(HsmError::KeyNotFound {
                    label: label.into(),
                    token: self.token.label().to_string(),
                })
            }
        }
    }

    /// Cache the token key `object` for `label`, as a session copy when the
    /// module makes one. A refused copy is no error: the token object signs.
    fn insert(&mut self, label: &str, object: ObjectHandle) -> ObjectHandle {
        let mut handle = KeyHandle {
            sign: object,
            copy: false,
            object,
            found_at: Instant::now(),
        };
        if !self.copies_refused && !self.no_copy.contains(label) {
            if let Some(session) = &self.session {
                let copied = session.call(
                    || format!("copying key '{label}' into the session"),
                    |s| s.copy_object(object, &[Attribute::Token(false)]),
                );
                match copied {
                    Ok(copy) => {
                        handle.sign = copy;
                        handle.copy = true;
                    }
                    Err(e) if e.rv() == Some(RvError::FunctionNotSupported) => {
                        self.copies_refused = true;
                    }
                    Err(_) => {
                        self.no_copy.insert(label.to_string());
                    }
                }
            }
        }
        self.handles.insert(label.to_string(), handle);
        handle.sign
    }

    fn handle(&mut self, label: &str) -> HsmResult<ObjectHandle> {
        match self.handles.get(label).copied() {
            Some(h) if !h.copy || h.found_at.elapsed() < KEY_RECHECK => Ok(h.sign),
            Some(h) if self.token_object_exists(h.object, label) => {
                if let Some(cached) = self.handles.get_mut(label) {
                    cached.found_at = Instant::now();
                }
                Ok(h.sign)
            }
            _ => self.find_again(label),
        }
    }

    /// Whether the token object behind a copy is still there: one attribute
    /// read on its handle (a search of the token costs far more on some
    /// modules, and would stall a signing thread once a second).
    /// The handle must still name a key labelled `label`.
    fn token_object_exists(&self, object: ObjectHandle, label: &str) -> bool {
        self.session.as_ref().is_some_and(|session| {
            session
                .call(
                    || format!("checking that key '{label}' is still in the token"),
                    |s| s.get_attributes(object, &[cryptoki::object::AttributeType::Label]),
                )
                .is_ok_and(|attrs| {
                    attrs
                        .iter()
                        .any(|a| matches!(a, Attribute::Label(l) if l == label.as_bytes()))
                })
        })
    }

    fn try_sign(&mut self, key: &KeyInfo, message: &[u8]) -> HsmResult<Vec<u8>> {
        let handle = self.handle(&key.label)?;
        if !self.signs_with_copy(&key.label) {
            return self.sign_with(handle, key, message);
        }
        match self.sign_with(handle, key, message) {
            Err(with_copy) => {
                // Whatever went wrong, the token object decides: when it
                // signs, the copy was the problem and is not made again.
                self.forget(&key.label);
                let Some(object) = find_private(self.session()?, &key.label)? else {
                    return Err(with_copy);
                };
                let signed = self.sign_with(object, key, message);
                if signed.is_ok() {
                    self.no_copy.insert(key.label.clone());
                }
                signed
            }
            ok => ok,
        }
    }

    fn sign_with(
        &mut self,
        handle: ObjectHandle,
        key: &KeyInfo,
        message: &[u8],
    ) -> HsmResult<Vec<u8>> {
        let token_label = self.token.label().to_string();
        let session = self.session()?;
        let context = || {
            format!(
                "signing with key '{}' on token '{}'",
                key.label, token_label
            )
        };
        let sign = |mechanism: &Mechanism, data: &[u8]| {
            session.call(context, |s| s.sign(mechanism, handle, data))
        };
        match key.mechanism {
            SignMechanism::Ecdsa | SignMechanism::EcdsaWithHash => {
                let raw = match (key.mechanism, key.algorithm) {
                    (SignMechanism::EcdsaWithHash, KeyAlgorithm::EcP384) => {
                        sign(&Mechanism::EcdsaSha384, message)?
                    }
                    (SignMechanism::EcdsaWithHash, _) => sign(&Mechanism::EcdsaSha256, message)?,
                    (_, KeyAlgorithm::EcP384) => sign(&Mechanism::Ecdsa, &Sha384::digest(message))?,
                    _ => sign(&Mechanism::Ecdsa, &Sha256::digest(message))?,
                };
                ecdsa_raw_to_der(&raw).ok_or_else(|| HsmError::BadKey {
                    label: key.label.clone(),
                    message: format!("token returned a {}-byte ECDSA signature", raw.len()),
                })
            }
            SignMechanism::Sha256RsaPkcs => sign(&Mechanism::Sha256RsaPkcs, message),
            SignMechanism::RsaPkcsDigestInfo => {
                let mut digest_info = Vec::with_capacity(SHA256_DIGEST_INFO_PREFIX.len() + 32);
                digest_info.extend_from_slice(&SHA256_DIGEST_INFO_PREFIX);
                digest_info.extend_from_slice(&Sha256::digest(message));
                sign(&Mechanism::RsaPkcs, &digest_info)
            }
        }
    }
}

type Job = Box<dyn FnOnce(&mut PoolSession) + Send>;

/// Whether a pool binds its threads to CPUs ([`crate::affinity`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// One CPU per thread while the pool is saturated, when it has a thread for
    /// every CPU the process may use; otherwise as [`Placement::Free`].
    Auto,
    /// Wherever the scheduler puts them.
    Free,
}

/// A fixed set of threads, each owning a `PoolSession` on the same token.
/// Jobs are closures so that a whole certificate can be built and signed on
/// the session's thread without hopping threads per signature.
pub struct SigningPool {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    size: usize,
    /// The CPU each thread binds to while the pool is saturated, if any.
    cpus: Vec<Option<usize>>,
    /// Jobs queued and not yet taken by a thread.
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

impl SigningPool {
    /// `size` threads, placed as [`Placement::Auto`] says.
    pub fn new(token: Token, size: usize) -> HsmResult<SigningPool> {
        SigningPool::with_placement(token, size, Placement::Auto)
    }

    pub fn with_placement(
        token: Token,
        size: usize,
        placement: Placement,
    ) -> HsmResult<SigningPool> {
        let size = size.max(1);
        let allowed = crate::affinity::allowed_cpus();
        let planned = match placement {
            Placement::Auto => crate::affinity::placement(size, &allowed),
            Placement::Free => vec![None; size],
        };
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let (placed_tx, placed_rx) = mpsc::channel::<(usize, Option<usize>)>();
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut workers = Vec::with_capacity(size);
        for (i, cpu) in planned.into_iter().enumerate() {
            let receiver = receiver.clone();
            let placed = placed_tx.clone();
            let queued = queued.clone();
            let allowed = allowed.clone();
            let mut session = PoolSession::new(token.clone());
            let worker = std::thread::Builder::new()
                .name(format!("hsm-{i}"))
                .spawn(move || {
                    // Bound to its CPU only while the pool is saturated
                    // (as many jobs waiting as threads); free again when it
                    // finds nothing to do, so that light and bursty load is
                    // placed by the scheduler. A thread that cannot be
                    // bound (a sandbox may forbid it) runs free: slower on
                    // a busy machine, not wrong.
                    let home = cpu.filter(|&cpu| {
                        crate::affinity::bind_current_thread(cpu)
                            .and_then(|()| crate::affinity::bind_current_thread_to(&allowed))
                            .inspect_err(|e| {
                                tracing::warn!(
                                    event = "signing_thread_unbound",
                                    thread = i,
                                    cpu,
                                    "binding the signing thread to its CPU failed: {e}"
                                )
                            })
                            .is_ok()
                    });
                    let _ = placed.send((i, home));
                    drop(placed);
                    let mut bound = false;
                    loop {
                        let job = {
                            let guard = receiver.lock().unwrap_or_else(|p| p.into_inner());
                            match guard.try_recv() {
                                Ok(job) => Ok(job),
                                Err(mpsc::TryRecvError::Disconnected) => break,
                                Err(mpsc::TryRecvError::Empty) => {
                                    if bound {
                                        bound = crate::affinity::bind_current_thread_to(&allowed)
                                            .is_err();
                                    }
                                    guard.recv()
                                }
                            }
                        };
                        match job {
                            Ok(job) => {
                                // Saturated: every thread has another job
                                // waiting behind this one.
                                let saturated = queued
                                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed)
                                    > size;
                                if let (Some(cpu), false, true) = (home, bound, saturated) {
                                    bound = crate::affinity::bind_current_thread(cpu).is_ok();
                                }
                                job(&mut session)
                            }
                            Err(_) => break,
                        }
                    }
                })
                .map_err(|e| HsmError::SoftHsm(format!("starting signing thread: {e}")))?;
            workers.push(worker);
        }
        drop(placed_tx);
        let mut cpus = vec![None; size];
        for (i, bound) in placed_rx.iter() {
            if let Some(slot) = cpus.get_mut(i) {
                *slot = bound;
            }
        }
        Ok(SigningPool {
            sender: Mutex::new(Some(sender)),
            workers: Mutex::new(workers),
            size,
            cpus,
            queued,
        })
    }

    /// The CPU each thread binds to while the pool is saturated (`None`: never bound).
    pub fn cpus(&self) -> &[Option<usize>] {
        &self.cpus
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Queue a job; it runs on one of the pool's threads with its session.
    pub fn execute(&self, job: impl FnOnce(&mut PoolSession) + Send + 'static) -> HsmResult<()> {
        let guard = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        let sender = guard.as_ref().ok_or(HsmError::PoolClosed)?;
        self.queued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        sender.send(Box::new(job)).map_err(|_| {
            self.queued
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            HsmError::PoolClosed
        })
    }

    /// Run a job and wait for its result on the calling (non-async) thread.
    pub fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut PoolSession) -> R + Send + 'static,
    ) -> HsmResult<R> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.execute(move |session| {
            let _ = tx.send(job(session));
        })?;
        rx.recv().map_err(|_| HsmError::PoolClosed)
    }

    /// Stop accepting jobs, let queued ones finish, join the threads.
    pub fn shutdown(&self) {
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        for worker in workers {
            let _ = worker.join();
        }
    }
}

impl Drop for SigningPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}
