//! `ca-server log monitor`: re-check every issued entry against the class
//! policy as it stands now, report every IP SAN, and every certificate not
//! signed by an intermediate this server knows. Findings are JSON lines.

use crate::hierarchy::{fingerprint, read_pem_cert};
use crate::issue::decode;
use crate::state::StateDir;
use ca_proto::logentry::{LogDecision, LogEntry};
use policies::{CsrFacts, Decision, PolicySet, Request, SignatureAlgorithm};
use serde::Serialize;
use std::collections::HashMap;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    /// `policy_violation`, `ip_san`, `unknown_issuer`, `bad_entry`.
    pub kind: &'static str,
    pub seq: u64,
    pub class: String,
    pub serial: Option<String>,
    pub detail: String,
}

impl Finding {
    /// IP SANs are reported for review; the others are failures.
    pub fn is_failure(&self) -> bool {
        self.kind != "ip_san"
    }
}

/// Fingerprint → (class, DER) of every intermediate any class ever had.
pub fn known_intermediates(
    state: &StateDir,
    policies: &PolicySet,
) -> HashMap<String, (String, Vec<u8>)> {
    let mut known = HashMap::new();
    for class in policies.names() {
        let dir = state.class_dir(class).join("intermediates");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Ok(der) = read_pem_cert(&entry.path()) {
                known.insert(fingerprint(&der), (class.to_string(), der));
            }
        }
    }
    known
}

pub fn check(
    entry: &LogEntry,
    policies: &PolicySet,
    known: &HashMap<String, (String, Vec<u8>)>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let finding = |kind, detail: String| Finding {
        kind,
        seq: entry.seq,
        class: entry.class.clone(),
        serial: entry.serial.clone(),
        detail,
    };
    if entry.decision != LogDecision::Issued {
        return findings;
    }
    for ip in &entry.ips {
        findings.push(finding(
            "ip_san",
            format!("certificate names IP address {ip}"),
        ));
    }
    let Some(der) = entry.certificate_der() else {
        findings.push(finding(
            "bad_entry",
            "issued entry without a certificate".into(),
        ));
        return findings;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        findings.push(finding("bad_entry", "certificate does not parse".into()));
        return findings;
    };
    // Issued by an intermediate we know, of the class the entry claims?
    let issuer = entry.issuer.as_deref().and_then(|fp| known.get(fp));
    let signed_by_it = issuer.is_some_and(|(class, int_der)| {
        class == &entry.class
            && x509_parser::parse_x509_certificate(int_der)
                .is_ok_and(|(_, int)| cert.verify_signature(Some(int.public_key())).is_ok())
    });
    if !signed_by_it {
        findings.push(finding(
            "unknown_issuer",
            format!(
                "not signed by a known '{}' intermediate (issuer {})",
                entry.class,
                cert.issuer()
            ),
        ));
    }
    let Some(policy) = policies.get(&entry.class) else {
        findings.push(finding(
            "policy_violation",
            "class no longer has a policy".into(),
        ));
        return findings;
    };
    let facts = CsrFacts {
        common_name: cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string),
        dns_names: entry.dns.clone(),
        ip_addrs: entry.ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
        uris: entry.uris.clone(),
        key: decode::key_algorithm(cert.public_key()),
        // The CSR's signature algorithm is not kept; it was checked at issuance.
        signature: SignatureAlgorithm::EcdsaSha256,
        requests_ca: false,
    };
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    let ttl = (lifetime - crate::issue::build::BACKDATE.whole_seconds()).max(0) as u64;
    let decision = policy.decide(&Request {
        profile: Some(&entry.profile),
        csr: &facts,
        hosts: None,
        ttl: Some(std::time::Duration::from_secs(ttl)),
    });
    if let Decision::Deny(reasons) = decision {
        for r in reasons {
            findings.push(finding(
                "policy_violation",
                format!("{}: {}", r.code.as_str(), r.detail),
            ));
        }
    }
    findings
}
