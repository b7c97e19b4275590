//! Admin operations shared by the commands: opening the HSM from the
//! configuration, initialising every class, building the issuing authority,
//! and keeping the server's own TLS certificate current.

use crate::config::Config;
use crate::hierarchy::{self, AdminTokens, CaShape, ClassState};
use crate::issue::Authority;
use crate::state::{write_atomic, StateDir};
use anyhow::{bail, Context, Result};
use hsm::{softhsm, Module, SigningPool, Token};
use policies::PolicySet;
use std::sync::Arc;

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
        algorithm: config.ca_key_algorithm()?,
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
            let algorithm = config.log_key_algorithm()?;
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
        .map(|log| log.with_commit_gather(config.log.commit_gather()))
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
    let pool = SigningPool::with_placement(
        online,
        config.signing_sessions(),
        config.signing_placement(),
    )?;
    let cpus: Vec<String> = pool
        .cpus()
        .iter()
        .map(|cpu| cpu.map_or_else(|| "any".to_string(), |c| c.to_string()))
        .collect();
    tracing::info!(event = "signing_pool", threads = pool.size(), cpus = %cpus.join(","), "signing threads started (the CPU each binds to while busy)");
    Ok(Arc::new(Authority::new(policies, classes, pool)))
}
