//! Revocation: the second defence after short lifetimes.
//!
//! A revocation's first home is the class's list in the shared state
//! directory (`store.rs`, `classes/<class>/revocations.json`), written
//! under a lock by whoever revokes (`ca-server revoke`, `POST /v1/revoke`
//! on any replica). Every replica serving the class then *adopts* it the
//! way it picks up a rotation (one-second state poll, SIGHUP): it records
//! the revocation in its own issuance log (a `revoked` entry, covered by
//! the Merkle tree and signed tree heads) and only then publishes CRLs and
//! OCSP answers that include it — so a replica never serves a CRL or OCSP
//! answer that omits a revocation it has adopted, and nothing it publishes
//! is missing from its log.
//!
//! Per class the replica holds a [`ClassView`]: the revoked serials, one
//! CRL per intermediate named in the class state (prepared, active,
//! retired: `crl.rs`, signed in the HSM by that intermediate), and the
//! root-signed CRL of revoked intermediates that `ca-server revoke
//! --intermediate` wrote. CRLs are re-signed on every change and every
//! `refresh` (default 1 h, nextUpdate = thisUpdate + 6 h). Which serials
//! exist is known from `index.rs`, built from every replica's log.
//! Certificates' public keys revoked for keyCompromise are handed to the
//! authority, which refuses to certify them again in any class
//! (`key_revoked`).

pub mod crl;
pub mod holder;
pub mod index;
pub mod serials;
pub mod store;

use crate::hierarchy::{fingerprint, read_pem_cert, ClassState, IntermediateStatus};
use crate::issue::Authority;
use crate::log::{IssuanceLog, LogError};
use crate::state::StateDir;
use ca_proto::logentry::{LogEntry, Outcome, RevokedEntry};
use ca_proto::revocation::RevocationReason;
use ca_proto::sth::LogEvidence;
use ca_proto::time::Rfc3339;
use ca_proto::ErrorCode;
use hsm::{KeyInfo, Token};
use index::SerialIndex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use store::RevocationRecord;
use time::OffsetDateTime;

/// How often CRLs are re-signed, and how long each is valid.
#[derive(Clone, Copy, Debug)]
pub struct CrlTimes {
    pub refresh: Duration,
    pub validity: Duration,
}

impl Default for CrlTimes {
    fn default() -> CrlTimes {
        CrlTimes {
            refresh: Duration::from_secs(3600),
            validity: Duration::from_secs(6 * 3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("no certificate with serial {serial} was issued")]
    UnknownSerial { serial: String },
    #[error("certificate {serial} belongs to class '{owner}', not '{class}'")]
    OtherClass {
        serial: String,
        class: String,
        owner: String,
    },
    #[error("no live certificate of class '{class}' has the key {spki}")]
    UnknownKey { class: String, spki: String },
    #[error("unknown class '{0}'")]
    UnknownClass(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("recording the revocation: {0}")]
    Log(#[from] LogError),
    #[error("signing the CRL: {0}")]
    Crl(#[from] crl::CrlError),
    #[error("class '{class}': {message}")]
    State { class: String, message: String },
    #[error("the certificate index is still being built; retry shortly")]
    NotReady,
}

impl RevokeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RevokeError::UnknownSerial { .. } | RevokeError::UnknownKey { .. } => {
                ErrorCode::UnknownSerial
            }
            RevokeError::OtherClass { .. } => ErrorCode::SerialOfOtherClass,
            RevokeError::UnknownClass(_) => ErrorCode::UnknownClass,
            RevokeError::Store(e) => e.code(),
            RevokeError::Log(e) => e.code(),
            RevokeError::Crl(crl::CrlError::Hsm(e)) if e.is_unavailable() => {
                ErrorCode::HsmUnavailable
            }
            RevokeError::NotReady => ErrorCode::Busy,
            RevokeError::Crl(_) | RevokeError::State { .. } => ErrorCode::Internal,
        }
    }
}

/// One CA's current CRL, as served.
pub struct PublishedCrl {
    /// Key label of the signing CA (an intermediate, or the root for the
    /// root-signed CRL).
    pub key: String,
    /// SHA-256 fingerprint of the signing CA's certificate.
    pub issuer_fingerprint: String,
    /// The signing CA's certificate.
    pub issuer_der: Vec<u8>,
    /// Its OCSP CertID hashes (name and key, SHA-1 and SHA-256).
    pub issuer_hashes: ca_proto::ocsp::IssuerHashes,
    /// The issuing intermediate that is currently active.
    pub active: bool,
    /// Signed by the class root (lists intermediates).
    pub root: bool,
    /// The CRL, shared by every response that serves it.
    pub der: bytes::Bytes,
    pub this_update: OffsetDateTime,
    pub next_update: OffsetDateTime,
    pub number: u128,
}

/// What a replica publishes for one class.
#[derive(Default)]
pub struct ClassView {
    /// Revoked leaves by serial (lowercase hex).
    pub leaves: HashMap<String, RevocationRecord>,
    /// Revoked intermediates by serial.
    pub intermediates: HashMap<String, RevocationRecord>,
    /// Active intermediate's CRL first, then the other intermediates', then
    /// the root-signed one.
    pub crls: Vec<PublishedCrl>,
    /// Signing keys of the intermediates (for OCSP), by label.
    pub keys: HashMap<String, KeyInfo>,
    /// Every CRL of the class as one PEM text, made once per view and shared
    /// by every response (a class with 100,000 revocations has ~6 MiB).
    pub pem_all: bytes::Bytes,
    /// What the CRLs were made from: the list, state and root-CRL files.
    stamp: Vec<Option<(SystemTime, u64)>>,
}

impl ClassView {
    /// The CRL signed by the intermediate `key`.
    pub fn crl_of(&self, key: &str) -> Option<&PublishedCrl> {
        self.crls.iter().find(|c| c.key == key && !c.root)
    }

    /// The active intermediate's CRL.
    pub fn active_crl(&self) -> Option<&PublishedCrl> {
        self.crls.iter().find(|c| c.active)
    }

    /// Every CRL of the class, PEM.
    fn pem(&self) -> String {
        self.crls
            .iter()
            .map(|c| ca_proto::pem::encode(ca_proto::pem::Label::Crl, &c.der))
            .collect()
    }

    /// Oldest thisUpdate among the CRLs this replica signs (the
    /// root-signed one is signed by `ca-server revoke`/`root-crl`, not here).
    fn oldest(&self) -> Option<OffsetDateTime> {
        self.crls
            .iter()
            .filter(|c| !c.root)
            .map(|c| c.this_update)
            .min()
    }

    /// The revocation of the intermediate with key label `key`, if revoked.
    pub fn intermediate_revoked(&self, key: &str) -> Option<&RevocationRecord> {
        self.intermediates
            .values()
            .find(|r| r.key.as_deref() == Some(key))
    }
}

/// A leaf revocation asked for by someone allowed to.
pub struct LeafRevocation {
    pub class: String,
    pub serial: String,
    pub reason: RevocationReason,
    /// `admin`, the auth key id, or `holder`.
    pub by: String,
}

/// A revocation done: the record and, when this replica has a log, its
/// entry's evidence.
pub struct Revoked {
    pub record: RevocationRecord,
    pub evidence: Option<LogEvidence>,
}

/// The replica's revocation state (see the module documentation).
pub struct Revocations {
    state: StateDir,
    online: Token,
    times: CrlTimes,
    views: RwLock<BTreeMap<String, Arc<ClassView>>>,
    index: Mutex<SerialIndex>,
    /// Becomes true after the first complete index build.
    ready: std::sync::atomic::AtomicBool,
    /// One adoption or revocation at a time.
    work: Mutex<()>,
    /// Evidence of entries appended by this replica, handed to the API
    /// caller that caused them (taken once).
    evidence: Mutex<HashMap<String, LogEvidence>>,
}

impl Revocations {
    pub fn new(state_dir: impl Into<PathBuf>, online: Token, times: CrlTimes) -> Revocations {
        let state = StateDir::new(state_dir.into());
        Revocations {
            index: Mutex::new(SerialIndex::new(StateDir::new(state.root()))),
            state,
            online,
            times,
            views: RwLock::new(BTreeMap::new()),
            ready: std::sync::atomic::AtomicBool::new(false),
            work: Mutex::new(()),
            evidence: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn times(&self) -> CrlTimes {
        self.times
    }

    /// What this replica publishes for `class` (None before the first
    /// refresh, or for an unknown class).
    pub fn view(&self, class: &str) -> Option<Arc<ClassView>> {
        self.views
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(class)
            .cloned()
    }

    /// Look a serial up in the index (read from every log just now).
    pub fn known(&self, serial: &str) -> Option<index::Known> {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let _ = index.poll(now_unix());
        index.get(serial)
    }

    /// Whether `serial` (big-endian bytes) was issued, with its facts. On
    /// a miss, the index first reads what this replica's log (`own`)
    /// committed since it last looked, so a certificate this replica just
    /// returned is known at once; other replicas' logs are read on the
    /// one-second tick.
    pub fn known_bytes(&self, serial: &[u8], own: Option<&IssuanceLog>) -> Option<index::Known> {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = index.get_bytes(serial) {
            return Some(found);
        }
        let log = own?;
        if log.sth().tree_size > index.entries_of(log.log_id()) {
            let _ = index.poll_log(log.log_id(), now_unix());
            return index.get_bytes(serial);
        }
        None
    }

    /// Blocking: read the logs, adopt new revocations of every class into
    /// this replica's log, and re-sign CRLs that changed or are due.
    /// Classes that fail keep what they published; the first error is
    /// returned.
    pub fn refresh(
        &self,
        authority: &Authority,
        log: Option<&IssuanceLog>,
    ) -> Result<(), RevokeError> {
        let _work = self.work.lock().unwrap_or_else(|p| p.into_inner());
        self.poll_index();
        let mut first = None;
        let classes: Vec<String> = authority.policies().names().map(str::to_string).collect();
        for class in &classes {
            if let Err(e) = self.refresh_class(authority, log, class, false) {
                tracing::error!(event = "revocation_refresh_failed", class = %class, "{e}");
                crate::metrics::metrics()
                    .crl_failures
                    .with_label_values(&[class.as_str()])
                    .inc();
                first.get_or_insert(e);
            }
        }
        self.publish_blocked(authority);
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn poll_index(&self) {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let _ = index.poll(now_unix());
        self.ready.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Revoke one leaf: checked against the index (unknown serial, other
    /// class), added to the class list (already revoked), then adopted here
    /// at once (logged, CRL re-signed).
    pub fn revoke_leaf(
        &self,
        authority: &Authority,
        log: Option<&IssuanceLog>,
        request: &LeafRevocation,
    ) -> Result<Revoked, RevokeError> {
        if !self.is_ready() {
            return Err(RevokeError::NotReady);
        }
        let _work = self.work.lock().unwrap_or_else(|p| p.into_inner());
        let serial = request.serial.to_ascii_lowercase();
        let known = {
            let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
            let _ = index.poll(now_unix());
            index.get(&serial)
        };
        let record = leaf_record(&self.state, &request.class, &serial, known, request)?;
        store::add(
            &self.state,
            &request.class,
            store::Kind::Leaf,
            record.clone(),
        )?;
        self.refresh_class(authority, log, &request.class, true)?;
        self.publish_blocked(authority);
        let evidence = self
            .evidence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&serial);
        Ok(Revoked { record, evidence })
    }

    /// Adopt and re-sign one class when its files changed, its CRLs are
    /// due, or `force`.
    fn refresh_class(
        &self,
        authority: &Authority,
        log: Option<&IssuanceLog>,
        class: &str,
        force: bool,
    ) -> Result<(), RevokeError> {
        if !ClassState::exists(&self.state, class) {
            return Ok(());
        }
        let stamp = self.stamp(class);
        let now = OffsetDateTime::now_utc();
        let old = self.view(class);
        let due = match &old {
            None => true,
            Some(view) => {
                view.stamp != stamp || view.oldest().is_none_or(|t| now - t >= self.times.refresh)
            }
        };
        if !due && !force {
            return Ok(());
        }
        let list = store::read(&self.state, class)?;
        self.adopt(log, class, &list)?;
        let view = self.build_view(authority, class, &list, stamp, now)?;
        let metrics = crate::metrics::metrics();
        for crl in &view.crls {
            metrics
                .crl_next_update
                .with_label_values(&[class, crl.key.as_str()])
                .set(crl.next_update.unix_timestamp() as f64);
            metrics
                .crl_this_update
                .with_label_values(&[class, crl.key.as_str()])
                .set(crl.this_update.unix_timestamp() as f64);
        }
        metrics
            .revoked_certificates
            .with_label_values(&[class])
            .set(view.leaves.len() as f64);
        // Keys revoked for keyCompromise are refused before any CRL or OCSP
        // answer says they are revoked.
        authority.block_keys(
            list.revocations
                .iter()
                .chain(&list.intermediates)
                .filter(|r| r.reason == RevocationReason::KeyCompromise)
                .map(|r| r.spki_sha256.clone()),
        );
        self.views
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(class.to_string(), Arc::new(view));
        Ok(())
    }

    /// Record in this replica's log every revocation of the list it has not
    /// recorded yet (before anything that includes it is published).
    fn adopt(
        &self,
        log: Option<&IssuanceLog>,
        class: &str,
        list: &store::RevocationList,
    ) -> Result<(), RevokeError> {
        let Some(log) = log else {
            return Ok(());
        };
        let log_id = log.log_id().to_string();
        let new: Vec<&RevocationRecord> = {
            let index = self.index.lock().unwrap_or_else(|p| p.into_inner());
            list.revocations
                .iter()
                .chain(&list.intermediates)
                .filter(|r| !index.recorded(&log_id, &r.serial))
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        let entries = new
            .iter()
            .map(|r| revoked_entry(class, r, self.profile_of(&r.serial)))
            .collect::<Result<Vec<_>, _>>()?;
        // All at once: they share group commits (a bulk revocation, or a
        // replica starting on a long list, is not one fsync per entry).
        let appended = log.append_many_blocking(entries);
        for (record, logged) in new.into_iter().zip(appended) {
            let evidence = logged.and_then(|logged| logged.evidence())?;
            self.index
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .note_recorded(&log_id, &record.serial);
            crate::metrics::metrics()
                .revocations
                .with_label_values(&[class, record.reason.name()])
                .inc();
            tracing::info!(event = "revocation_recorded", class, serial = %record.serial, reason = %record.reason, by = %record.by, seq = evidence.index, "revocation recorded in the log");
            let mut held = self.evidence.lock().unwrap_or_else(|p| p.into_inner());
            // Bounded: only the latest few are kept for API callers.
            if held.len() > 1024 {
                held.clear();
            }
            held.insert(record.serial.clone(), evidence);
        }
        Ok(())
    }

    fn profile_of(&self, serial: &str) -> String {
        self.index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(serial)
            .map(|k| k.profile.to_string())
            .unwrap_or_default()
    }

    fn build_view(
        &self,
        authority: &Authority,
        class: &str,
        list: &store::RevocationList,
        stamp: Vec<Option<(SystemTime, u64)>>,
        now: OffsetDateTime,
    ) -> Result<ClassView, RevokeError> {
        let record = ClassState::read(&self.state, class).map_err(|e| RevokeError::State {
            class: class.into(),
            message: e.to_string(),
        })?;
        let next = now + self.times.validity;
        let url_base = authority.policies().get(class).and_then(|p| p.crl_url());
        let mut view = ClassView {
            leaves: list
                .revocations
                .iter()
                .map(|r| (r.serial.clone(), r.clone()))
                .collect(),
            intermediates: list
                .intermediates
                .iter()
                .map(|r| (r.serial.clone(), r.clone()))
                .collect(),
            stamp,
            ..ClassView::default()
        };
        let mut ordered: Vec<_> = record.intermediates.iter().collect();
        ordered.sort_by_key(|i| i.status != IntermediateStatus::Active);
        for int in ordered {
            let cert_der = read_pem_cert(&self.state.intermediate_by_label(class, &int.key))
                .map_err(|e| RevokeError::State {
                    class: class.into(),
                    message: e.to_string(),
                })?;
            let key = match self.online.public_key(&int.key) {
                Ok(k) => k,
                Err(e) if int.status == IntermediateStatus::Active => {
                    return Err(RevokeError::Crl(crl::CrlError::Hsm(e)))
                }
                Err(e) => {
                    tracing::warn!(event = "crl_key_missing", class, key = %int.key, "{e}; no CRL for it");
                    continue;
                }
            };
            let records: Vec<RevocationRecord> = list
                .revocations
                .iter()
                .filter(|r| r.issuer_key == int.key)
                .cloned()
                .collect();
            let url = url_base.map(|base| distribution_point(base, &int.key));
            let signed = {
                let key = key.clone();
                let cert = cert_der.clone();
                authority
                    .pool()
                    .run(move |session| {
                        let refs: Vec<&RevocationRecord> = records.iter().collect();
                        crl::sign(
                            session,
                            &cert,
                            &key,
                            &refs,
                            now,
                            next,
                            crl::Scope::Leaves,
                            url.as_deref(),
                        )
                    })
                    .map_err(|e| RevokeError::Crl(crl::CrlError::Hsm(e)))??
            };
            let issuer_hashes =
                ca_proto::ocsp::IssuerHashes::of_certificate(&cert_der).map_err(|e| {
                    RevokeError::State {
                        class: class.into(),
                        message: format!("intermediate '{}': {e}", int.key),
                    }
                })?;
            view.crls.push(PublishedCrl {
                key: int.key.clone(),
                issuer_hashes,
                issuer_fingerprint: fingerprint(&cert_der),
                issuer_der: cert_der,
                active: int.status == IntermediateStatus::Active,
                root: false,
                der: signed.der.into(),
                this_update: signed.this_update,
                next_update: signed.next_update,
                number: signed.number,
            });
            view.keys.insert(int.key.clone(), key);
        }
        if let Some(root_crl) = self.root_crl(class)? {
            view.crls.push(root_crl);
        }
        view.pem_all = view.pem().into();
        Ok(view)
    }

    /// The root-signed CRL that `ca-server revoke --intermediate` wrote.
    fn root_crl(&self, class: &str) -> Result<Option<PublishedCrl>, RevokeError> {
        let path = root_crl_path(&self.state, class);
        let der = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(RevokeError::State {
                    class: class.into(),
                    message: format!("{}: {e}", path.display()),
                })
            }
        };
        use x509_parser::prelude::*;
        let (_, parsed) =
            CertificateRevocationList::from_der(&der).map_err(|e| RevokeError::State {
                class: class.into(),
                message: format!("{}: not a CRL: {e}", path.display()),
            })?;
        let time = |t: ASN1Time| t.to_datetime();
        let root_der =
            read_pem_cert(&self.state.root_cert(class)).map_err(|e| RevokeError::State {
                class: class.into(),
                message: e.to_string(),
            })?;
        let number = parsed
            .crl_number()
            .map(|n| {
                n.to_bytes_be()
                    .iter()
                    .fold(0u128, |acc, b| acc.wrapping_shl(8) | u128::from(*b))
            })
            .unwrap_or_default();
        let issuer_hashes =
            ca_proto::ocsp::IssuerHashes::of_certificate(&root_der).map_err(|e| {
                RevokeError::State {
                    class: class.into(),
                    message: format!("root: {e}"),
                }
            })?;
        Ok(Some(PublishedCrl {
            issuer_hashes,
            key: ClassState::read(&self.state, class)
                .map(|r| r.root_key)
                .unwrap_or_default(),
            issuer_fingerprint: fingerprint(&root_der),
            issuer_der: root_der,
            active: false,
            root: true,
            this_update: time(parsed.last_update()),
            next_update: parsed
                .next_update()
                .map(time)
                .unwrap_or_else(OffsetDateTime::now_utc),
            number,
            der: der.into(),
        }))
    }

    /// The files a class view is made from, by modification time and size.
    fn stamp(&self, class: &str) -> Vec<Option<(SystemTime, u64)>> {
        [
            store::list_path(&self.state, class),
            self.state.class_state(class),
            root_crl_path(&self.state, class),
        ]
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
    }

    /// Keys revoked for keyCompromise in any class go to the authority.
    fn publish_blocked(&self, authority: &Authority) {
        let views = self.views.read().unwrap_or_else(|p| p.into_inner());
        let blocked: HashSet<String> = views
            .values()
            .flat_map(|v| v.leaves.values().chain(v.intermediates.values()))
            .filter(|r| r.reason == RevocationReason::KeyCompromise)
            .map(|r| r.spki_sha256.clone())
            .collect();
        authority.set_blocked_keys(blocked);
    }
}

/// `classes/<class>/root-crl.der`: the root-signed CRL of intermediates.
pub fn root_crl_path(state: &StateDir, class: &str) -> PathBuf {
    state.class_dir(class).join("root-crl.der")
}

pub use crate::issue::build::distribution_point;

/// The record of a leaf revocation, after the index checks.
pub fn leaf_record(
    state: &StateDir,
    class: &str,
    serial: &str,
    known: Option<index::Known>,
    request: &LeafRevocation,
) -> Result<RevocationRecord, RevokeError> {
    let known = known.ok_or_else(|| RevokeError::UnknownSerial {
        serial: crate::issue::printable(serial),
    })?;
    if &*known.class != class {
        return Err(RevokeError::OtherClass {
            serial: serial.to_string(),
            class: crate::issue::printable(class),
            owner: known.class.to_string(),
        });
    }
    let issuer_key = issuer_label(state, class, &known.issuer)?;
    Ok(RevocationRecord {
        serial: serial.to_string(),
        spki_sha256: hex::encode(known.spki_sha256),
        issuer: known.issuer.to_string(),
        issuer_key,
        not_after: rfc3339_of_unix(known.not_after),
        reason: request.reason,
        revoked_at: rfc3339_of_unix(now_unix()),
        by: request.by.clone(),
        key: None,
    })
}

/// The key label of the intermediate of `class` whose certificate has this
/// fingerprint.
fn issuer_label(state: &StateDir, class: &str, fp: &str) -> Result<String, RevokeError> {
    let record = ClassState::read(state, class).map_err(|e| RevokeError::State {
        class: class.into(),
        message: e.to_string(),
    })?;
    for int in &record.intermediates {
        if let Ok(der) = read_pem_cert(&state.intermediate_by_label(class, &int.key)) {
            if fingerprint(&der) == fp {
                return Ok(int.key.clone());
            }
        }
    }
    Err(RevokeError::State {
        class: class.into(),
        message: format!("no intermediate of the class state has fingerprint {fp} (forgotten by `rotate retire`?)"),
    })
}

/// The log entry of an adopted revocation.
pub fn revoked_entry(
    class: &str,
    record: &RevocationRecord,
    profile: String,
) -> Result<LogEntry, RevokeError> {
    let parse = |what: &str, text: &str| {
        Rfc3339::parse(text).map_err(|e| RevokeError::State {
            class: class.into(),
            message: format!("revocation {}: {what}: {e}", record.serial),
        })
    };
    Ok(LogEntry {
        seq: 0,
        time: Rfc3339::from_unix_timestamp(now_unix()).map_err(|e| RevokeError::State {
            class: class.into(),
            message: e.to_string(),
        })?,
        log_id: String::new(),
        class: class.to_string(),
        profile,
        key_id: record.by.clone(),
        outcome: Outcome::Revoked(RevokedEntry {
            serial: record.serial.clone(),
            spki_sha256: record.spki_sha256.clone(),
            issuer: record.issuer.clone(),
            not_after: parse("not_after", &record.not_after)?,
            reason: record.reason.name().to_string(),
            revoked_at: parse("revoked_at", &record.revoked_at)?,
        }),
    })
}

pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

pub fn rfc3339_of_unix(t: i64) -> String {
    Rfc3339::from_unix_timestamp(t)
        .map(String::from)
        .unwrap_or_default()
}
