//! `ca-server status`: per class, the root (fingerprint, expiry) and every
//! intermediate with its state and expiry, plus warnings an operator should
//! act on: an intermediate that expires sooner than twice the longest leaf
//! lifetime (rotate now), a root that expires within a year.

use crate::admin::load_policies;
use crate::config::Config;
use crate::hierarchy::{fingerprint, read_pem_cert, ClassState};
use crate::state::StateDir;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

pub fn print(config: &Config) -> anyhow::Result<()> {
    let policies = load_policies(config)?;
    let state = StateDir::new(&config.state_dir);
    let now = OffsetDateTime::now_utc();
    let mut warnings = 0;
    for (class, policy) in policies.iter() {
        let Ok(record) = ClassState::read(&state, class) else {
            println!("class {class}: not initialised (run `ca-server init`)");
            warnings += 1;
            continue;
        };
        let root = read_pem_cert(&state.root_cert(class))?;
        let root_expiry = not_after(&root)?;
        println!("class {class}");
        println!(
            "  root          {}  expires {}",
            &fingerprint(&root)[..16],
            fmt(root_expiry)
        );
        if root_expiry - now < Duration::days(365) {
            println!("  WARNING: the root expires within a year: plan a cross-signed root rotation (deploy/ROTATION.md)");
            warnings += 1;
        }
        let max_ttl = Duration::try_from(policy.max_ttl()).unwrap_or(Duration::MAX);
        for int in &record.intermediates {
            let der = read_pem_cert(&state.intermediate_by_label(class, &int.key))?;
            let expiry = not_after(&der)?;
            println!(
                "  {:<13} {}  expires {}  key {}",
                format!("{:?}", int.status).to_lowercase(),
                &fingerprint(&der)[..16],
                fmt(expiry),
                int.key
            );
            if int.status == crate::hierarchy::IntermediateStatus::Active
                && expiry - now < max_ttl * 2
            {
                println!(
                    "  WARNING: the active intermediate expires in less than twice the longest leaf lifetime ({}): rotate now",
                    ca_proto::native::format_duration(policy.max_ttl())
                );
                warnings += 1;
            }
        }
    }
    println!("{warnings} warning(s)");
    Ok(())
}

fn not_after(der: &[u8]) -> anyhow::Result<OffsetDateTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(cert.validity().not_after.to_datetime())
}

fn fmt(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}
