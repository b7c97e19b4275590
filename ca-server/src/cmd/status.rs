//! `ca-server status`: per class, the root (fingerprint, expiry) and every
//! intermediate with its state and expiry, plus warnings an operator should
//! act on: an intermediate that expires sooner than twice the longest leaf
//! lifetime (rotate now), a root that expires within a year.
//! [`report`] gathers the facts and warnings (the console's overview shows
//! the same); [`print`] writes them for the terminal.

use crate::admin::load_policies;
use crate::config::Config;
use crate::hierarchy::{fingerprint, read_pem_cert, ClassState, IntermediateStatus};
use crate::state::StateDir;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// A root expiring sooner than this is warned about.
pub const ROOT_WARNING: Duration = Duration::days(365);

/// What needs an operator's attention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The class has a policy but no state (`ca-server init` not run).
    NotInitialised,
    RootExpiresWithinYear,
    /// The active intermediate expires in less than twice the class's
    /// longest leaf lifetime.
    RotateNow {
        max_ttl: std::time::Duration,
    },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::NotInitialised => write!(f, "not initialised (run `ca-server init`)"),
            Warning::RootExpiresWithinYear => write!(
                f,
                "the root expires within a year: plan a cross-signed root rotation (deploy/ROTATION.md)"
            ),
            Warning::RotateNow { max_ttl } => write!(
                f,
                "the active intermediate expires in less than twice the longest leaf lifetime ({}): rotate now",
                ca_proto::native::format_duration(*max_ttl)
            ),
        }
    }
}

/// One intermediate of a class.
#[derive(Debug, Clone)]
pub struct IntermediateReport {
    pub status: IntermediateStatus,
    pub fingerprint: String,
    pub not_after: OffsetDateTime,
    pub key: String,
    /// Set on the active intermediate when it is due for rotation.
    pub warning: Option<Warning>,
}

/// One class: its root and intermediates, or `None` when not initialised.
#[derive(Debug, Clone)]
pub struct ClassReport {
    pub class: String,
    pub hierarchy: Option<Hierarchy>,
}

#[derive(Debug, Clone)]
pub struct Hierarchy {
    /// Key label of the current root in the root token.
    pub root_key: String,
    pub root_fingerprint: String,
    pub root_not_after: OffsetDateTime,
    pub root_warning: Option<Warning>,
    pub intermediates: Vec<IntermediateReport>,
}

impl ClassReport {
    /// Every warning of the class, in the order `status` prints them.
    pub fn warnings(&self) -> Vec<&Warning> {
        match &self.hierarchy {
            None => vec![&Warning::NotInitialised],
            Some(h) => h
                .root_warning
                .iter()
                .chain(h.intermediates.iter().filter_map(|i| i.warning.as_ref()))
                .collect(),
        }
    }
}

/// The facts and warnings of every class with a policy, as of `now`.
pub fn report(config: &Config, now: OffsetDateTime) -> anyhow::Result<Vec<ClassReport>> {
    let policies = load_policies(config)?;
    let state = StateDir::new(&config.state_dir);
    let mut out = Vec::new();
    for (class, policy) in policies.iter() {
        let Ok(record) = ClassState::read(&state, class) else {
            out.push(ClassReport {
                class: class.to_string(),
                hierarchy: None,
            });
            continue;
        };
        let root = read_pem_cert(&state.root_cert(class))?;
        let root_not_after = not_after(&root)?;
        let max_ttl = Duration::try_from(policy.max_ttl()).unwrap_or(Duration::MAX);
        let mut intermediates = Vec::new();
        for int in &record.intermediates {
            let der = read_pem_cert(&state.intermediate_by_label(class, &int.key))?;
            let expiry = not_after(&der)?;
            let due = int.status == IntermediateStatus::Active && expiry - now < max_ttl * 2;
            intermediates.push(IntermediateReport {
                status: int.status,
                fingerprint: fingerprint(&der),
                not_after: expiry,
                key: int.key.clone(),
                warning: due.then(|| Warning::RotateNow {
                    max_ttl: policy.max_ttl(),
                }),
            });
        }
        out.push(ClassReport {
            class: class.to_string(),
            hierarchy: Some(Hierarchy {
                root_key: record.root_key.clone(),
                root_fingerprint: fingerprint(&root),
                root_not_after,
                root_warning: (root_not_after - now < ROOT_WARNING)
                    .then_some(Warning::RootExpiresWithinYear),
                intermediates,
            }),
        });
    }
    Ok(out)
}

pub fn print(config: &Config) -> anyhow::Result<()> {
    let mut warnings = 0;
    for class in report(config, OffsetDateTime::now_utc())? {
        let name = &class.class;
        let Some(h) = &class.hierarchy else {
            println!("class {name}: not initialised (run `ca-server init`)");
            warnings += 1;
            continue;
        };
        println!("class {name}");
        println!(
            "  root          {}  expires {}",
            &h.root_fingerprint[..16],
            fmt(h.root_not_after)
        );
        if let Some(w) = &h.root_warning {
            println!("  WARNING: {w}");
            warnings += 1;
        }
        for int in &h.intermediates {
            println!(
                "  {:<13} {}  expires {}  key {}",
                format!("{:?}", int.status).to_lowercase(),
                &int.fingerprint[..16],
                fmt(int.not_after),
                int.key
            );
            if let Some(w) = &int.warning {
                println!("  WARNING: {w}");
                warnings += 1;
            }
        }
    }
    println!("{warnings} warning(s)");
    Ok(())
}

/// Publish the notAfter of every root and intermediate that the state of
/// each of `classes` names (`trellis_ca_certificate_expiry_timestamp_seconds`,
/// labels role, status and key) and each class's longest leaf lifetime
/// (`trellis_class_max_ttl_seconds`), read as [`report`] reads them, for
/// the alert rules. A class whose state cannot be read keeps its series.
pub fn export_expiry<'a>(
    state: &StateDir,
    policies: &policies::PolicySet,
    classes: impl IntoIterator<Item = &'a str>,
) {
    let metrics = crate::metrics::metrics();
    for class in classes {
        let Some(policy) = policies.get(class) else {
            continue;
        };
        metrics
            .class_max_ttl
            .with_label_values(&[class])
            .set(policy.max_ttl().as_secs_f64());
        let Ok(record) = ClassState::read(state, class) else {
            continue;
        };
        let expiry = |path: &std::path::Path| {
            read_pem_cert(path)
                .ok()
                .and_then(|der| not_after(&der).ok())
                .map(|t| t.unix_timestamp())
        };
        let mut certificates: Vec<([String; 3], i64)> = Vec::new();
        if let Some(t) = expiry(&state.root_cert(class)) {
            certificates.push((["root".into(), "active".into(), record.root_key.clone()], t));
        }
        for label in &record.published_roots {
            // The previous root (until retired) cross-signed the current
            // one; any other published root is the next one.
            let status = if record.cross_signed_by.as_deref() == Some(label.as_str()) {
                "retired"
            } else {
                "prepared"
            };
            if let Some(t) = expiry(&state.root_by_label(class, label)) {
                certificates.push((["root".into(), status.into(), label.clone()], t));
            }
        }
        for int in &record.intermediates {
            if let Some(t) = expiry(&state.intermediate_by_label(class, &int.key)) {
                let status = format!("{:?}", int.status).to_lowercase();
                certificates.push((["intermediate".into(), status, int.key.clone()], t));
            }
        }
        let borrowed: Vec<([&str; 3], i64)> = certificates
            .iter()
            .map(|([r, s, k], t)| ([r.as_str(), s.as_str(), k.as_str()], *t))
            .collect();
        metrics.set_ca_certificates(class, &borrowed);
    }
}

fn not_after(der: &[u8]) -> anyhow::Result<OffsetDateTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(cert.validity().not_after.to_datetime())
}

fn fmt(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}
