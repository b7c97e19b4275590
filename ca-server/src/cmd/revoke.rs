//! `ca-server revoke …` (a leaf by serial, every live leaf of one public
//! key, or a retired intermediate) and `ca-server root-crl` (re-sign the
//! root-signed CRL of a class). A leaf revocation goes to the class's list
//! in the shared state; running replicas adopt it within a second (SIGHUP
//! is sent to a server running from this state directory), record it in
//! their logs and re-sign their CRLs. An intermediate revocation needs the
//! root token: it also writes the class's root-signed CRL.

use crate::admin;
use crate::config::Config;
use crate::hierarchy::{fingerprint, read_pem_cert, ClassState, IntermediateStatus};
use crate::revoke::{
    self, crl, index::SerialIndex, leaf_record, store, LeafRevocation, RevokeError,
};
use crate::state::{write_atomic, StateDir};
use anyhow::{anyhow, Result};
use ca_proto::revocation::RevocationReason;
use time::OffsetDateTime;

/// Validity of a root-signed CRL, in days. The root key is offline, so
/// the CRL is long-lived; verifiers that check every CA of a chain
/// (PostgreSQL's `ssl_crl_file`, `openssl verify -crl_check_all`) refuse
/// every leaf of the class once it lapses, so it is re-signed well before
/// (`ca-server root-crl`; `trellis_crl_next_update_timestamp_seconds` of the
/// root's key label tells when).
pub const DEFAULT_ROOT_CRL_DAYS: u32 = 365;

/// Sign the root CRL of every class that has none (at `init`): verifiers
/// that check the whole chain need one per root even when no intermediate
/// was revoked. A failure is reported, not fatal (the root token may be
/// elsewhere): `ca-server root-crl --class C` makes it later.
pub fn ensure_root_crls(config: &Config, classes: &[String]) -> Vec<String> {
    let state = StateDir::new(&config.state_dir);
    let mut made = Vec::new();
    for class in classes {
        if revoke::root_crl_path(&state, class).exists() || !ClassState::exists(&state, class) {
            continue;
        }
        match sign_root_crl(config, &state, class, DEFAULT_ROOT_CRL_DAYS) {
            Ok(()) => made.push(class.clone()),
            Err(e) => eprintln!(
                "class '{class}': no root-signed CRL yet ({e:#}); run `ca-server root-crl --class {class}` with the root token"
            ),
        }
    }
    made
}

/// What to revoke.
pub enum Target {
    Serial(String),
    Key(String),
    Intermediate(String),
}

pub struct Revoke {
    pub class: String,
    pub target: Target,
    pub reason: RevocationReason,
    /// Validity of the root-signed CRL (intermediate revocations).
    pub root_crl_days: u32,
}

/// A refusal as the command prints it: the stable code, then why.
fn refused(e: RevokeError) -> anyhow::Error {
    anyhow!("{}: {e}", e.code())
}

pub fn run(config: &Config, args: &Revoke) -> Result<()> {
    let state = StateDir::new(&config.state_dir);
    if admin::load_policies(config)?.get(&args.class).is_none()
        || !ClassState::exists(&state, &args.class)
    {
        return Err(refused(RevokeError::UnknownClass(args.class.clone())));
    }
    match &args.target {
        Target::Serial(serial) => {
            let index = read_index(&state)?;
            let serial = serial.to_ascii_lowercase();
            let record = leaf_record(
                &state,
                &args.class,
                &serial,
                index.get(&serial),
                &request(args, &serial),
            )
            .map_err(refused)?;
            store::add(&state, &args.class, store::Kind::Leaf, record.clone())
                .map_err(|e| refused(e.into()))?;
            println!(
                "revoked {} of class '{}' ({}); replicas publish it within a second",
                record.serial, args.class, record.reason
            );
        }
        Target::Key(spki) => {
            let index = read_index(&state)?;
            let wanted: [u8; 32] = hex::decode(spki.to_ascii_lowercase())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| anyhow!("malformed_request: --spki-sha256 must be 64 hex digits"))?;
            let found = index.by_key(&args.class, &wanted)?;
            if found.is_empty() {
                return Err(refused(RevokeError::UnknownKey {
                    class: args.class.clone(),
                    spki: spki.clone(),
                }));
            }
            let mut revoked = 0;
            for (serial, known) in found {
                let record = leaf_record(
                    &state,
                    &args.class,
                    &serial,
                    Some(known),
                    &request(args, &serial),
                )
                .map_err(refused)?;
                match store::add(&state, &args.class, store::Kind::Leaf, record) {
                    Ok(_) => {
                        revoked += 1;
                        println!(
                            "revoked {serial} of class '{}' ({})",
                            args.class, args.reason
                        );
                    }
                    Err(store::StoreError::AlreadyRevoked { .. }) => {
                        println!("{serial} of class '{}' was already revoked", args.class);
                    }
                    Err(e) => return Err(refused(e.into())),
                }
            }
            println!("{revoked} certificate(s) of that key revoked");
        }
        Target::Intermediate(label) => {
            revoke_intermediate(config, &state, args, label)?;
        }
    }
    super::rotate::signal_server(&state);
    Ok(())
}

fn request(args: &Revoke, serial: &str) -> LeafRevocation {
    LeafRevocation {
        class: args.class.clone(),
        serial: serial.to_string(),
        reason: args.reason,
        by: "admin".into(),
    }
}

/// Every log of the state directory, read once.
fn read_index(state: &StateDir) -> Result<SerialIndex> {
    let mut index = SerialIndex::new(StateDir::new(state.root()));
    index.poll(revoke::now_unix())?;
    Ok(index)
}

fn revoke_intermediate(
    config: &Config,
    state: &StateDir,
    args: &Revoke,
    label: &str,
) -> Result<()> {
    let class = &args.class;
    let record = ClassState::read(state, class)?;
    let int = record
        .intermediates
        .iter()
        .find(|i| i.key == label)
        .ok_or_else(|| anyhow!("unknown_serial: class '{class}' has no intermediate '{label}'"))?;
    if int.status != IntermediateStatus::Retired {
        anyhow::bail!(
            "malformed_request: intermediate '{label}' is {:?}; activate a successor first (`ca-server rotate prepare`, `rotate activate`), then revoke it",
            int.status
        );
    }
    let der = read_pem_cert(&state.intermediate_by_label(class, label))?;
    let root_der = read_pem_cert(&state.root_cert(class))?;
    let (serial, spki, not_after) = {
        use x509_parser::prelude::*;
        let (_, cert) =
            X509Certificate::from_der(&der).map_err(|e| anyhow!("intermediate '{label}': {e}"))?;
        use sha2::{Digest, Sha256};
        (
            hex::encode(cert.raw_serial()),
            hex::encode(Sha256::digest(cert.public_key().raw)),
            cert.validity().not_after.timestamp(),
        )
    };
    let rec = store::RevocationRecord {
        serial,
        spki_sha256: spki,
        issuer: fingerprint(&root_der),
        issuer_key: record.root_key.clone(),
        not_after: revoke::rfc3339_of_unix(not_after),
        reason: args.reason,
        revoked_at: revoke::rfc3339_of_unix(revoke::now_unix()),
        by: "admin".into(),
        key: Some(label.to_string()),
    };
    store::add(state, class, store::Kind::Intermediate, rec.clone())
        .map_err(|e| refused(e.into()))?;
    sign_root_crl(config, state, class, args.root_crl_days)?;
    println!(
        "revoked intermediate '{label}' ({}) of class '{class}'; the root-signed CRL is {}",
        rec.reason,
        revoke::root_crl_path(state, class).display()
    );
    Ok(())
}

/// Sign (again) the class's root-signed CRL of revoked intermediates with
/// the root key, valid for `days`.
pub fn sign_root_crl(config: &Config, state: &StateDir, class: &str, days: u32) -> Result<()> {
    let module = admin::open_module(config)?;
    let tokens = admin::admin_tokens(config, &module)?;
    let record = ClassState::read(state, class)?;
    let root_key = tokens.root.public_key(&record.root_key)?;
    let root_der = read_pem_cert(&state.root_cert(class))?;
    let list = store::read(state, class)?;
    let refs: Vec<&store::RevocationRecord> = list.intermediates.iter().collect();
    let now = OffsetDateTime::now_utc();
    let policies = admin::load_policies(config)?;
    let url = policies
        .get(class)
        .and_then(|p| p.crl_url())
        .map(|base| revoke::distribution_point(base, &record.root_key));
    let mut session = hsm::PoolSession::new(tokens.root.clone());
    let signed = crl::sign(
        &mut session,
        &root_der,
        &root_key,
        &refs,
        now,
        now + time::Duration::days(i64::from(days.max(1))),
        crl::Scope::CaCertificates,
        url.as_deref(),
    )?;
    write_atomic(&revoke::root_crl_path(state, class), &signed.der, 0o644)?;
    Ok(())
}

/// `ca-server root-crl --class C`: re-sign before the root CRL lapses.
pub fn resign_root_crl(config: &Config, class: &str, days: u32) -> Result<()> {
    let state = StateDir::new(&config.state_dir);
    sign_root_crl(config, &state, class, days)?;
    println!(
        "signed the root CRL of class '{class}' ({}), valid {days} days",
        revoke::root_crl_path(&state, class).display()
    );
    super::rotate::signal_server(&state);
    Ok(())
}
