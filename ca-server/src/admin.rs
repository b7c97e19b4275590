//! Admin operations shared by the commands: opening the HSM from the
//! configuration, initialising every class, building the issuing authority,
//! and keeping the server's own TLS certificate current.

use crate::config::Config;
use crate::hierarchy::{self, AdminTokens, CaShape, ClassState};
use crate::issue::{Authority, IssueRequest};
use crate::state::{write_atomic, StateDir};
use anyhow::{bail, Context, Result};
use hsm::{softhsm, Module, SigningPool, Token};
use policies::PolicySet;
use std::sync::Arc;
use time::OffsetDateTime;

/// Load the PKCS#11 module named by the configuration. For SoftHSM2 this
/// first points it at the deployment's own configuration file.
pub fn open_module(config: &Config) -> Result<Module> {
    if let Some(conf) = &config.hsm.softhsm2_conf {
        softhsm::use_config(conf);
    }
    Module::load_with(&config.hsm.module, &config.hsm.module_options())
        .with_context(|| "opening the HSM")
}

pub fn online_token(config: &Config, module: &Module) -> Result<Token> {
    let pin = config.read_online_pin().context("online token PIN")?;
    Ok(module.token(config.hsm.online_selector(), pin)?)
}

pub fn admin_tokens(config: &Config, module: &Module) -> Result<AdminTokens> {
    let pin = config.read_root_pin().context("root token PIN")?;
    Ok(AdminTokens {
        root: module.token(config.hsm.root_selector(), pin)?,
        online: online_token(config, module)?,
    })
}

pub fn load_policies(config: &Config) -> Result<PolicySet> {
    let set = policies::load_dir(&config.policies_dir)?;
    if set.get("ca").is_none() {
        bail!(
            "{}: no 'ca' class policy (the class that issues the server's own TLS certificate)",
            config.policies_dir.display()
        );
    }
    Ok(set)
}

/// Create every class that does not exist yet (idempotent). Returns the
/// classes created.
/// How new CA certificates are shaped, from the configuration.
pub fn ca_shape(config: &Config) -> Result<CaShape> {
    Ok(CaShape {
        algorithm: config.ca_key_algorithm().map_err(anyhow::Error::msg)?,
        organization: config.ca.organization.clone(),
        root_days: config.ca.root_validity_days,
        intermediate_days: config.ca.intermediate_validity_days,
    })
}

pub fn init_classes(config: &Config, module: &Module, policies: &PolicySet) -> Result<Vec<String>> {
    let state = StateDir::new(&config.state_dir);
    let shape = ca_shape(config)?;
    let missing: Vec<&str> = policies
        .names()
        .filter(|c| !ClassState::exists(&state, c))
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let tokens = admin_tokens(config, module)?;
    let mut created = Vec::new();
    for class in missing {
        if hierarchy::init_class(&state, class, &tokens, &shape)? {
            created.push(class.to_string());
        }
    }
    Ok(created)
}

/// Create this replica's log key in the online token unless it exists, and
/// keep its public key beside the log for offline `log verify`.
pub fn ensure_log_key(config: &Config, module: &Module) -> Result<bool> {
    let token = online_token(config, module)?;
    let label = crate::log::key_label(&config.log.log_id);
    let (key, created) = match token.public_key(&label) {
        Ok(key) => (key, false),
        Err(hsm::HsmError::KeyNotFound { .. }) => {
            let algorithm = config.log_key_algorithm().map_err(anyhow::Error::msg)?;
            (token.generate_key(&label, algorithm)?, true)
        }
        Err(e) => return Err(e.into()),
    };
    let pem = crate::log::public_key_of(&key)?.to_pem();
    let paths = crate::log::LogPaths::new(&config.state_dir, &config.log.log_id);
    let path = paths.public_key();
    if std::fs::read_to_string(&path).ok().as_deref() != Some(pem.as_str()) {
        write_atomic(&path, pem.as_bytes(), 0o644)
            .with_context(|| format!("writing the log public key {}", path.display()))?;
    }
    Ok(created)
}

/// Open this replica's issuance log (recovering it) on the online token.
pub fn open_log(config: &Config, module: &Module) -> Result<crate::log::IssuanceLog> {
    let token = online_token(config, module)?;
    crate::log::IssuanceLog::open(&config.state_dir, &config.log.log_id, token)
        .with_context(|| format!("opening the issuance log '{}'", config.log.log_id))
}

/// The issuing authority over the online token: every class with a policy
/// must have been initialised.
pub fn open_authority(
    config: &Config,
    module: &Module,
    policies: PolicySet,
) -> Result<Arc<Authority>> {
    let state = StateDir::new(&config.state_dir);
    let online = online_token(config, module)?;
    let mut classes = Vec::new();
    for class in policies.names() {
        classes.push(hierarchy::load_class(&state, class, &online)?);
    }
    let pool = SigningPool::new(online, config.signing_sessions())?;
    Ok(Arc::new(Authority::new(policies, classes, pool)))
}

/// Issue the server's TLS certificate from the `ca` class when it is
/// missing, unreadable, or past two thirds of its lifetime. The key is made
/// here, in software, and written 0600: it is a leaf key like any service's.
/// Like every other certificate, it is recorded in the issuance log (when
/// one is open) before it is written.
pub fn ensure_server_tls(
    config: &Config,
    authority: &Arc<Authority>,
    log: Option<&crate::log::IssuanceLog>,
) -> Result<bool> {
    let state = StateDir::new(&config.state_dir);
    if tls_is_current(&state, authority) {
        return Ok(false);
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    let issued = authority
        .issue_blocking(IssueRequest {
            class: "ca".into(),
            profile: Some("server".into()),
            csr: csr.der().to_vec(),
            hosts: Some(config.server.tls_names.clone()),
            ttl: None,
        })
        .context("issuing the server's TLS certificate from class 'ca'")?;
    if let Some(log) = log {
        log.append_blocking(crate::log::issued_entry(&issued, "ca-server"))
            .context("recording the server's TLS certificate in the issuance log")?;
    }
    write_atomic(&state.tls_key(), key.serialize_pem().as_bytes(), 0o600)
        .with_context(|| format!("writing {}", state.tls_key().display()))?;
    write_atomic(&state.tls_chain(), issued.chain_pem.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", state.tls_chain().display()))?;
    Ok(true)
}

fn tls_is_current(state: &StateDir, authority: &Authority) -> bool {
    let Ok(chain) = hierarchy::read_pem_cert(&state.tls_chain()) else {
        return false;
    };
    if !state.tls_key().exists() {
        return false;
    }
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&chain) else {
        return false;
    };
    let Some(ca) = authority.class("ca") else {
        return false;
    };
    // Re-issue when the `ca` intermediate changed (rotation) or 2/3 of the
    // lifetime has passed.
    let issued_by_active = cert.issuer().as_raw()
        == x509_parser::parse_x509_certificate(&ca.active.cert_der)
            .map(|(_, i)| i.subject().as_raw().to_vec())
            .unwrap_or_default();
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    let renew_at = nb + (na - nb) * 2 / 3;
    issued_by_active && OffsetDateTime::now_utc().unix_timestamp() < renew_at
}
