//! `ca-server policy check`: the decision policy would take on a CSR,
//! printed as JSON, without building or signing anything.

use super::Exit;
use crate::admin;
use crate::config::Config;
use anyhow::{Context, Result};
use std::path::PathBuf;

/// What to decide on.
#[derive(Debug, Clone)]
pub struct Check {
    pub class: String,
    pub profile: Option<String>,
    /// Names that replace the CSR's SANs (none: the CSR's own).
    pub hosts: Vec<String>,
    /// Requested lifetime, as a duration string.
    pub ttl: Option<String>,
    /// The CSR file (PEM or DER).
    pub csr: PathBuf,
}

/// Print the decision; [`Exit::Denied`] when policy would deny.
pub fn check(config: &Config, check: &Check) -> Result<Exit> {
    let policies = admin::load_policies(config)?;
    let input =
        std::fs::read(&check.csr).with_context(|| format!("reading {}", check.csr.display()))?;
    let ttl = check
        .ttl
        .as_deref()
        .map(ca_proto::native::parse_duration)
        .transpose()?;
    let hosts = (!check.hosts.is_empty()).then_some(check.hosts.as_slice());
    let (text, granted) = crate::issue::explain(
        &policies,
        &check.class,
        check.profile.as_deref(),
        &input,
        hosts,
        ttl,
    );
    println!("{text}");
    Ok(if granted { Exit::Success } else { Exit::Denied })
}
