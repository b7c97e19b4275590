//! `ca-server log monitor`: check every issued entry against the
//! certificate it carries and against the class policy as it stands now.
//! Everything is judged from the certificate's own DER, not from what the
//! entry says about it: its SANs and subject go to the policy, its IP SANs
//! are reported, its signature must come from an intermediate of the
//! entry's class that this state directory knows, and any difference
//! between the entry's claims (names, serial, subject, issuer) and the
//! certificate is itself a finding. Findings are printed as JSON lines.

use crate::hierarchy::{fingerprint, read_pem_cert};
use crate::issue::decode;
use crate::state::StateDir;
use ca_proto::logentry::{LogDecision, LogEntry};
use policies::{CsrFacts, Decision, PolicySet, Request, SignatureAlgorithm};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The class policy, as it stands now, would deny the certificate.
    PolicyViolation,
    /// The certificate names an IP address: reported for review.
    IpSan,
    /// Not signed by a known intermediate of the entry's class.
    UnknownIssuer,
    /// The entry cannot be checked: no certificate, or one that does not
    /// parse.
    BadEntry,
    /// The entry claims other names, serial, subject or issuer than the
    /// certificate it carries.
    EntryMismatch,
}

impl FindingKind {
    pub const ALL: [FindingKind; 5] = [
        FindingKind::PolicyViolation,
        FindingKind::IpSan,
        FindingKind::UnknownIssuer,
        FindingKind::BadEntry,
        FindingKind::EntryMismatch,
    ];

    /// The name in findings and metrics (`policy_violation`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::PolicyViolation => "policy_violation",
            FindingKind::IpSan => "ip_san",
            FindingKind::UnknownIssuer => "unknown_issuer",
            FindingKind::BadEntry => "bad_entry",
            FindingKind::EntryMismatch => "entry_mismatch",
        }
    }

    /// IP SANs are reported for review; every other kind is a failure.
    pub fn is_failure(self) -> bool {
        self != FindingKind::IpSan
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    pub seq: u64,
    pub class: String,
    pub serial: Option<String>,
    pub detail: String,
}

impl Finding {
    pub fn is_failure(&self) -> bool {
        self.kind.is_failure()
    }
}

/// Entries checked and findings by kind, since the monitor started.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub checked: u64,
    counts: BTreeMap<FindingKind, u64>,
}

impl Tally {
    pub fn add(&mut self, finding: &Finding) {
        *self.counts.entry(finding.kind).or_default() += 1;
    }
    pub fn count(&self, kind: FindingKind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }
    pub fn failures(&self) -> u64 {
        self.counts
            .iter()
            .filter(|(kind, _)| kind.is_failure())
            .map(|(_, n)| n)
            .sum()
    }
}

/// Fingerprint → every intermediate any class ever had.
pub type KnownIntermediates = HashMap<String, KnownIntermediate>;

/// An intermediate as the checks need it, read from its DER once (the
/// checks run for every issued entry).
#[derive(Debug, Clone)]
pub struct KnownIntermediate {
    pub class: String,
    pub der: Vec<u8>,
    /// The subject name's DER, and the subject key identifier.
    subject: Vec<u8>,
    key_id: Option<Vec<u8>>,
}

impl KnownIntermediate {
    pub fn new(class: impl Into<String>, der: Vec<u8>) -> KnownIntermediate {
        let (subject, key_id) = match x509_parser::parse_x509_certificate(&der) {
            Ok((_, cert)) => (
                cert.subject().as_raw().to_vec(),
                subject_key_id(&cert).map(<[u8]>::to_vec),
            ),
            Err(_) => (Vec::new(), None),
        };
        KnownIntermediate {
            class: class.into(),
            der,
            subject,
            key_id,
        }
    }
}

/// Every intermediate kept in the state directory, for the classes of
/// `policies`.
pub fn known_intermediates(state: &StateDir, policies: &PolicySet) -> KnownIntermediates {
    let mut known = HashMap::new();
    for class in policies.names() {
        let Ok(entries) = std::fs::read_dir(state.intermediates_dir(class)) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Ok(der) = read_pem_cert(&entry.path()) {
                known.insert(fingerprint(&der), KnownIntermediate::new(class, der));
            }
        }
    }
    known
}

/// The names a certificate carries in its subjectAltName extension.
#[derive(Debug, Default)]
struct CertNames {
    dns: Vec<String>,
    ips: Vec<IpAddr>,
    uris: Vec<String>,
    /// Names of kinds Trellis never issues (e-mail, directory name, …).
    other: Vec<String>,
}

/// Why a certificate's names cannot be read.
#[derive(Debug, thiserror::Error)]
enum NamesError {
    #[error("subjectAltName does not parse: {0}")]
    San(x509_parser::error::X509Error),
    /// An iPAddress SAN of neither 4 nor 16 bytes.
    #[error("IP address SAN of {0} bytes")]
    IpLength(usize),
}

fn names_of(cert: &X509Certificate<'_>) -> Result<CertNames, NamesError> {
    let mut names = CertNames::default();
    let san = cert.subject_alternative_name().map_err(NamesError::San)?;
    for name in san.iter().flat_map(|san| &san.value.general_names) {
        match name {
            GeneralName::DNSName(dns) => names.dns.push(dns.to_string()),
            GeneralName::URI(uri) => names.uris.push(uri.to_string()),
            GeneralName::IPAddress(bytes) => {
                let ip = match bytes.len() {
                    4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                    _ => None,
                };
                let ip = ip.ok_or(NamesError::IpLength(bytes.len()))?;
                names.ips.push(ip);
            }
            other => names.other.push(other.to_string()),
        }
    }
    Ok(names)
}

/// How [`check_with`] tells which intermediate signed a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerCheck {
    /// Verify the signature under each candidate intermediate's key (one
    /// ECDSA or RSA verification, about as costly as issuing's own CSR
    /// check).
    Verify,
    /// Match the certificate's issuer name and authority key identifier
    /// against each candidate's subject and subject key identifier. Cheap;
    /// it does not catch a certificate that names an intermediate but
    /// carries a signature that intermediate did not make.
    ByKeyId,
}

/// Every finding for `entry`, verifying the certificate's signature.
pub fn check(entry: &LogEntry, policies: &PolicySet, known: &KnownIntermediates) -> Vec<Finding> {
    check_with(entry, policies, known, SignerCheck::Verify)
}

/// Every finding for `entry`, telling the signer as `how` says.
pub fn check_with(
    entry: &LogEntry,
    policies: &PolicySet,
    known: &KnownIntermediates,
    how: SignerCheck,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    if entry.decision() != LogDecision::Issued {
        return findings;
    }
    let mut found = |kind, detail: String| {
        findings.push(Finding {
            kind,
            seq: entry.seq,
            class: entry.class.clone(),
            serial: entry.serial().map(str::to_string),
            detail,
        })
    };
    let Some(der) = entry.certificate_der() else {
        found(
            FindingKind::BadEntry,
            "issued entry whose certificate is not base64".into(),
        );
        return findings;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        found(FindingKind::BadEntry, "certificate does not parse".into());
        return findings;
    };
    let names = match names_of(&cert) {
        Ok(names) => names,
        Err(why) => {
            found(FindingKind::BadEntry, format!("certificate: {why}"));
            return findings;
        }
    };
    for ip in &names.ips {
        found(
            FindingKind::IpSan,
            format!("certificate names IP address {ip}"),
        );
    }
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    for detail in mismatches(entry, &cert, &names, common_name.as_deref()) {
        found(FindingKind::EntryMismatch, detail);
    }
    match signer(entry, &cert, known, how) {
        Signer::Claimed => {}
        Signer::Other(fp) => found(
            FindingKind::EntryMismatch,
            format!(
                "entry names issuer {}, but the certificate is signed by '{}' intermediate {fp}",
                entry.issued().map_or("-", |i| i.issuer.as_str()),
                entry.class
            ),
        ),
        Signer::Unknown => found(
            FindingKind::UnknownIssuer,
            format!(
                "not signed by a known '{}' intermediate (issuer {})",
                entry.class,
                cert.issuer()
            ),
        ),
    }
    let Some(policy) = policies.get(&entry.class) else {
        found(
            FindingKind::PolicyViolation,
            "class no longer has a policy".into(),
        );
        return findings;
    };
    let facts = CsrFacts {
        common_name,
        dns_names: names.dns,
        ip_addrs: names.ips,
        uris: names.uris,
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
            found(
                FindingKind::PolicyViolation,
                format!("{}: {}", r.code.as_str(), r.detail),
            );
        }
    }
    findings
}

/// Where the entry's claims and its certificate differ, one line each.
fn mismatches(
    entry: &LogEntry,
    cert: &X509Certificate<'_>,
    names: &CertNames,
    common_name: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut compare = |what: &str, claimed: Vec<String>, carried: Vec<String>| {
        let (mut claimed_sorted, mut carried_sorted) = (claimed.clone(), carried.clone());
        claimed_sorted.sort();
        carried_sorted.sort();
        if claimed_sorted != carried_sorted {
            out.push(format!(
                "entry names {what} [{}], the certificate [{}]",
                claimed.join(", "),
                carried.join(", ")
            ));
        }
    };
    let lower = |names: &[String]| names.iter().map(|n| n.to_lowercase()).collect();
    compare("DNS", lower(entry.dns()), lower(&names.dns));
    // The entry's IPs in their canonical text form, when they parse.
    let entry_ips = entry
        .ips()
        .iter()
        .map(|ip| ip.parse::<IpAddr>().map_or(ip.clone(), |ip| ip.to_string()))
        .collect();
    compare(
        "IP",
        entry_ips,
        names.ips.iter().map(IpAddr::to_string).collect(),
    );
    compare("URI", entry.uris().to_vec(), names.uris.clone());
    if !names.other.is_empty() {
        out.push(format!(
            "the certificate also names [{}], which no entry lists",
            names.other.join(", ")
        ));
    }
    let serial = hex::encode(cert.raw_serial());
    if entry.serial().map(str::to_lowercase) != Some(serial.clone()) {
        out.push(format!(
            "entry names serial {}, the certificate {serial}",
            entry.serial().unwrap_or("-")
        ));
    }
    if entry.subject() != common_name {
        out.push(format!(
            "entry names subject {}, the certificate {}",
            entry.subject().unwrap_or("-"),
            common_name.unwrap_or("-")
        ));
    }
    out
}

enum Signer {
    /// The intermediate the entry names, of the entry's class.
    Claimed,
    /// Another known intermediate of the entry's class (its fingerprint).
    Other(String),
    Unknown,
}

/// Which known intermediate of the entry's class signed the certificate.
fn signer(
    entry: &LogEntry,
    cert: &X509Certificate<'_>,
    known: &KnownIntermediates,
    how: SignerCheck,
) -> Signer {
    let signed_by = |int: &KnownIntermediate| match how {
        SignerCheck::Verify => x509_parser::parse_x509_certificate(&int.der)
            .is_ok_and(|(_, int)| cert.verify_signature(Some(int.public_key())).is_ok()),
        SignerCheck::ByKeyId => {
            !int.subject.is_empty()
                && cert.issuer().as_raw() == int.subject.as_slice()
                && authority_key_id(cert).is_some_and(|aki| Some(aki) == int.key_id.as_deref())
        }
    };
    let claimed = entry.issued().and_then(|i| known.get(i.issuer.as_str()));
    if claimed.is_some_and(|int| int.class == entry.class && signed_by(int)) {
        return Signer::Claimed;
    }
    known
        .iter()
        .find(|(_, int)| int.class == entry.class && signed_by(int))
        .map_or(Signer::Unknown, |(fp, _)| Signer::Other(fp.clone()))
}

fn authority_key_id<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
            _ => None,
        })
        .map(|id| id.0)
}

fn subject_key_id<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0),
            _ => None,
        })
}

#[cfg(test)]
pub(crate) mod testing {
    //! Intermediates, leaves and entries for the checks' tests.
    use super::*;
    use ca_proto::logentry::{IssuedEntry, Outcome};
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType, SerialNumber,
    };

    pub(crate) struct World {
        pub policies: PolicySet,
        pub known: KnownIntermediates,
        pub int_fp: String,
        pub issuer: Issuer<'static, KeyPair>,
    }

    pub(crate) fn intermediate_params() -> CertificateParams {
        let mut params = CertificateParams::new(Vec::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "test db intermediate");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![7; 20]);
        params
    }

    pub(crate) fn world() -> World {
        let key = KeyPair::generate().expect("intermediate key");
        let params = intermediate_params();
        let der = params
            .self_signed(&key)
            .expect("intermediate")
            .der()
            .to_vec();
        let int_fp = fingerprint(&der);
        let known = HashMap::from([(int_fp.clone(), KnownIntermediate::new("db", der))]);
        World {
            policies: PolicySet::shipped().expect("shipped policies"),
            known,
            int_fp,
            issuer: Issuer::new(params, key),
        }
    }

    pub(crate) const SERIAL: [u8; 16] = [0x42; 16];

    /// A one-hour `db` leaf naming `sans` (CN: the first), signed by the
    /// world's intermediate.
    pub(crate) fn leaf(world: &World, sans: Vec<SanType>) -> Vec<u8> {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::default();
        if let Some(SanType::DnsName(first)) = sans.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.subject_alt_names = sans;
        params.serial_number = Some(SerialNumber::from_slice(&SERIAL));
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - crate::issue::build::BACKDATE;
        params.not_after = now + time::Duration::hours(1);
        params
            .signed_by(&key, &world.issuer)
            .expect("leaf")
            .der()
            .to_vec()
    }

    pub(crate) fn dns(name: &str) -> SanType {
        SanType::DnsName(name.try_into().expect("DNS name"))
    }

    /// The entry an honest server would log for `der`, claiming `names`.
    pub(crate) fn entry(world: &World, der: &[u8], names: &[&str]) -> LogEntry {
        use base64::Engine;
        LogEntry {
            seq: 9,
            time: "2026-01-01T00:00:00Z".parse().unwrap(),
            log_id: "t".into(),
            class: "db".into(),
            profile: "server".into(),
            key_id: "db".into(),
            outcome: Outcome::Issued(IssuedEntry {
                serial: hex::encode(SERIAL),
                subject: names.first().map(|n| n.to_string()),
                dns: names.iter().map(|n| n.to_string()).collect(),
                ips: Vec::new(),
                uris: Vec::new(),
                not_before: "2026-01-01T00:00:00Z".parse().unwrap(),
                not_after: "2026-01-02T00:00:00Z".parse().unwrap(),
                spki_sha256: String::new(),
                issuer: world.int_fp.clone(),
                certificate: base64::engine::general_purpose::STANDARD.encode(der),
            }),
        }
    }

    pub(crate) fn issued_mut(entry: &mut LogEntry) -> &mut IssuedEntry {
        match &mut entry.outcome {
            Outcome::Issued(issued) => issued,
            _ => panic!("the test entry is an issued one"),
        }
    }

    /// A world whose only intermediate has the test intermediate's name but
    /// its own key and key identifier.
    pub(crate) fn stranger() -> World {
        let mut stranger = world();
        let mut params = intermediate_params();
        params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![8; 20]);
        let key = KeyPair::generate().expect("stranger key");
        let der = params.self_signed(&key).expect("stranger").der().to_vec();
        stranger.known = HashMap::from([(fingerprint(&der), KnownIntermediate::new("db", der))]);
        stranger
    }

    pub(crate) fn kinds(findings: &[Finding]) -> Vec<FindingKind> {
        findings.iter().map(|f| f.kind).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use rcgen::{Issuer, KeyPair, SanType};

    #[test]
    fn an_honest_entry_has_no_findings() {
        let world = world();
        let der = leaf(&world, vec![dns("a.db.internal")]);
        let findings = check(
            &entry(&world, &der, &["a.db.internal"]),
            &world.policies,
            &world.known,
        );
        assert!(findings.is_empty(), "{findings:?}");
    }

    #[test]
    fn an_entry_claiming_other_names_than_its_certificate_is_a_finding() {
        let world = world();
        // The certificate names a host outside the class; the entry claims
        // an allowed one. Judged by the entry, this would pass.
        let der = leaf(&world, vec![dns("evil.example.com")]);
        let claimed = entry(&world, &der, &["a.db.internal"]);
        let findings = check(&claimed, &world.policies, &world.known);
        let found = kinds(&findings);
        assert!(found.contains(&FindingKind::EntryMismatch), "{findings:?}");
        assert!(
            found.contains(&FindingKind::PolicyViolation),
            "{findings:?}"
        );
        let mismatch = findings
            .iter()
            .find(|f| f.kind == FindingKind::EntryMismatch && f.detail.contains("DNS"))
            .expect("a DNS mismatch");
        assert!(
            mismatch.detail.contains("a.db.internal")
                && mismatch.detail.contains("evil.example.com"),
            "{mismatch:?}"
        );
        assert!(findings.iter().all(Finding::is_failure));
        let json = serde_json::to_string(mismatch).expect("json");
        assert!(
            json.starts_with(r#"{"kind":"entry_mismatch","seq":9,"#),
            "{json}"
        );
    }

    #[test]
    fn ip_sans_come_from_the_certificate() {
        let world = world();
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        let der = leaf(&world, vec![dns("a.db.internal"), SanType::IpAddress(ip)]);
        // The entry leaves the IP out: reported from the DER all the same.
        let findings = check(
            &entry(&world, &der, &["a.db.internal"]),
            &world.policies,
            &world.known,
        );
        let found = kinds(&findings);
        assert!(found.contains(&FindingKind::IpSan), "{findings:?}");
        assert!(found.contains(&FindingKind::EntryMismatch), "{findings:?}");
    }

    #[test]
    fn a_forged_serial_or_issuer_claim_is_a_finding() {
        for how in [SignerCheck::Verify, SignerCheck::ByKeyId] {
            let world = world();
            let der = leaf(&world, vec![dns("a.db.internal")]);
            let honest = entry(&world, &der, &["a.db.internal"]);
            assert!(
                check_with(&honest, &world.policies, &world.known, how).is_empty(),
                "{how:?}"
            );
            let mut claimed = honest.clone();
            issued_mut(&mut claimed).serial = "00".repeat(16);
            let findings = check_with(&claimed, &world.policies, &world.known, how);
            assert_eq!(
                kinds(&findings),
                [FindingKind::EntryMismatch],
                "{how:?} {findings:?}"
            );

            let mut claimed = honest.clone();
            issued_mut(&mut claimed).issuer = "ab".repeat(32);
            let findings = check_with(&claimed, &world.policies, &world.known, how);
            assert_eq!(
                kinds(&findings),
                [FindingKind::EntryMismatch],
                "{how:?} {findings:?}"
            );

            // Another intermediate of the same name, another key identifier.
            let stranger = stranger();
            let findings = check_with(&honest, &stranger.policies, &stranger.known, how);
            assert_eq!(
                kinds(&findings),
                [FindingKind::UnknownIssuer],
                "{how:?} {findings:?}"
            );
        }
    }

    /// What the cheap signer check gives up: a certificate that names the
    /// intermediate (issuer, key identifier) but was signed by another key
    /// is caught only by verifying the signature.
    #[test]
    fn only_verification_catches_a_signature_the_named_intermediate_did_not_make() {
        let world = world();
        let forger = World {
            issuer: Issuer::new(
                intermediate_params(),
                KeyPair::generate().expect("forger key"),
            ),
            ..self::world()
        };
        let der = leaf(&forger, vec![dns("a.db.internal")]);
        let forged = entry(&world, &der, &["a.db.internal"]);
        let verified = check_with(&forged, &world.policies, &world.known, SignerCheck::Verify);
        assert_eq!(
            kinds(&verified),
            [FindingKind::UnknownIssuer],
            "{verified:?}"
        );
        let matched = check_with(&forged, &world.policies, &world.known, SignerCheck::ByKeyId);
        assert!(matched.is_empty(), "{matched:?}");
    }
}
