//! Signing sessions and the pool of threads that own them.
//!
//! A PKCS#11 `Session` is `Send` but not `Sync`, and a shared session
//! serialises every signature, so each pool thread owns one session and jobs
//! are closures run on that thread. Sessions are opened lazily and re-opened
//! after the token went away (device removed, session invalid, logged out),
//! so service resumes by itself when the token is back.

use crate::der::ecdsa_raw_to_der;
use crate::error::{HsmError, HsmResult};
use crate::keys::{find_private, KeyAlgorithm, KeyInfo};
use crate::mechanisms::{SignMechanism, SHA256_DIGEST_INFO_PREFIX};
use crate::module::{HsmSession, Token};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use sha2::{Digest, Sha256, Sha384};
use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One session on one token, with the key handles found through it.
pub struct PoolSession {
    token: Token,
    session: Option<HsmSession>,
    handles: HashMap<String, ObjectHandle>,
}

impl PoolSession {
    pub fn new(token: Token) -> PoolSession {
        PoolSession {
            token,
            session: None,
            handles: HashMap::new(),
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

    /// Check that this session can still reach the token and find the key.
    pub fn probe(&mut self, key_label: &str) -> HsmResult<()> {
        // Look the key up in the token again (a real call), rather than
        // trusting the cached handle: a session whose token went away still
        // holds one, and readiness must see the token, not the cache.
        self.handles.remove(key_label);
        // Like `sign`: a session lost (or voided by a re-initialisation of
        // the module) is replaced once before the probe says no.
        let result = match self.handle(key_label).map(|_| ()) {
            Err(e) if e.is_session_lost() => {
                self.reset();
                self.handle(key_label).map(|_| ())
            }
            other => other,
        };
        if result.as_ref().is_err_and(|e| e.is_unavailable()) {
            self.reset();
        }
        result
    }

    fn reset(&mut self) {
        self.session = None;
        self.handles.clear();
    }

    fn session(&mut self) -> HsmResult<&HsmSession> {
        if self.session.is_none() {
            self.session = Some(self.token.open_session()?);
        }
        self.session.as_ref().ok_or(HsmError::PoolClosed)
    }

    fn handle(&mut self, label: &str) -> HsmResult<ObjectHandle> {
        if let Some(h) = self.handles.get(label) {
            return Ok(*h);
        }
        let token_label = self.token.label().to_string();
        let session = self.session()?;
        let handle = find_private(session, label)?.ok_or_else(|| HsmError::KeyNotFound {
            label: label.into(),
            token: token_label,
        })?;
        self.handles.insert(label.to_string(), handle);
        Ok(handle)
    }

    fn try_sign(&mut self, key: &KeyInfo, message: &[u8]) -> HsmResult<Vec<u8>> {
        let handle = self.handle(&key.label)?;
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

/// A fixed set of threads, each owning a `PoolSession` on the same token.
/// Jobs are closures so that a whole certificate can be built and signed on
/// the session's thread without hopping threads per signature.
pub struct SigningPool {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    size: usize,
}

impl SigningPool {
    pub fn new(token: Token, size: usize) -> HsmResult<SigningPool> {
        let size = size.max(1);
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut workers = Vec::with_capacity(size);
        for i in 0..size {
            let receiver = receiver.clone();
            let mut session = PoolSession::new(token.clone());
            let worker = std::thread::Builder::new()
                .name(format!("hsm-{i}"))
                .spawn(move || loop {
                    let job = {
                        let guard = receiver.lock().unwrap_or_else(|p| p.into_inner());
                        guard.recv()
                    };
                    match job {
                        Ok(job) => job(&mut session),
                        Err(_) => break,
                    }
                })
                .map_err(|e| HsmError::SoftHsm(format!("starting signing thread: {e}")))?;
            workers.push(worker);
        }
        Ok(SigningPool {
            sender: Mutex::new(Some(sender)),
            workers: Mutex::new(workers),
            size,
        })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Queue a job; it runs on one of the pool's threads with its session.
    pub fn execute(&self, job: impl FnOnce(&mut PoolSession) + Send + 'static) -> HsmResult<()> {
        let guard = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        let sender = guard.as_ref().ok_or(HsmError::PoolClosed)?;
        sender.send(Box::new(job)).map_err(|_| HsmError::PoolClosed)
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
