//! Checks of what the CA returns, before anything is installed: the issued
//! certificate as a careful verifier would judge it, and a bounded path
//! builder from it to a pinned root of its class.
//!
//! # The leaf ([`check_issued`])
//!
//! - it carries our public key;
//! - it is not a CA: no `CA:TRUE`, no keyCertSign or cRLSign;
//! - its names are exactly the requested ones after the server's
//!   normalisation (DNS lowercased, one trailing dot dropped, IDNA A-labels;
//!   URI scheme and authority lowercased; IPs as addresses), plus at most the
//!   requested common name (a class may add the CN as a SAN), and nothing
//!   else; the subject holds only that common name;
//! - its extended key usage is exactly the profile's (from `GET /v1/classes`);
//!   with no profile configured, it must be exactly some profile's;
//! - its lifetime is at most the requested TTL (or the profile's default)
//!   plus [`CA_BACKDATE`] (the server backdates notBefore) plus
//!   [`LIFETIME_SLACK`], and never more than [`MAX_LEAF_LIFETIME`]; it ends no
//!   later than now + TTL + [`MAX_CLOCK_SKEW`] + slack;
//! - it is not valid only in the future: a notBefore more than
//!   [`MAX_CLOCK_SKEW`] ahead is refused, naming the CA's apparent clock
//!   offset (notBefore + backdate − now).
//!
//! # The chain ([`build_path`])
//!
//! From the leaf through the returned intermediates to one of the accepted
//! roots of the class: each intermediate is `CA:TRUE` with keyCertSign, valid
//! now (notBefore with [`MAX_CLOCK_SKEW`] of tolerance), and every CA on the
//! path respects its path length (self-issued certificates, such as a root
//! rotation's cross certificate, are not counted, RFC 5280 §6.1.4).
//!
//! The work is bounded however the answer is shaped: at most
//! [`MAX_CHAIN_CERTS`] certificates in a chain and [`MAX_BUNDLE_ROOTS`] in a
//! bundle (counted before anything is parsed), every certificate parsed once,
//! candidates indexed by subject, every signature (child, issuer) checked at
//! most once, and at most [`MAX_PATH_STEPS`] steps of search. A chain of a
//! thousand same-subject intermediates is refused by its count in
//! microseconds instead of costing a quadratic number of signature checks.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use ca_proto::native::ProfileInfo;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use thiserror::Error;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::keys::Names;
use crate::pem::{facts, CertFacts};

/// Most certificates accepted in a returned chain (leaf included).
pub const MAX_CHAIN_CERTS: usize = 8;
/// Most roots accepted in a class bundle.
pub const MAX_BUNDLE_ROOTS: usize = 64;
/// Most bytes of PEM accepted for a chain or a bundle.
pub const MAX_PEM_BYTES: usize = 1 << 20;
/// How far the CA's clock may be ahead of ours: a notBefore up to this far
/// in the future is accepted (the certificate is installed and renewed on
/// schedule from its notBefore). The same window as the server's request
/// timestamps (±300 s).
pub const MAX_CLOCK_SKEW: i64 = 300;
/// The server starts leaves this long before it signs them
/// (`ca-server::issue::build::BACKDATE`).
pub const CA_BACKDATE: i64 = 300;
/// Rounding room on top of the requested lifetime.
pub const LIFETIME_SLACK: i64 = 60;
/// No leaf lives longer than this (the policy engine's `MAX_PROFILE_TTL`).
pub const MAX_LEAF_LIFETIME: i64 = policies::MAX_PROFILE_TTL.as_secs() as i64;
/// Search steps allowed to the path builder (each a cached lookup).
pub const MAX_PATH_STEPS: usize = 4096;

/// Why an answer of the CA was refused. `Display` is one line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckError {
    /// More certificates than accepted.
    #[error("{what}: {count} certificates, more than the {max} accepted")]
    TooManyCertificates {
        /// Which input.
        what: String,
        /// How many it holds (counted, not parsed).
        count: usize,
        /// The cap.
        max: usize,
    },
    /// More bytes than accepted.
    #[error("{what}: {bytes} bytes, more than the {max} accepted")]
    TooLarge {
        /// Which input.
        what: String,
        /// Its size.
        bytes: usize,
        /// The cap.
        max: usize,
    },
    /// Unparseable input.
    #[error("{what}: {detail}")]
    Malformed {
        /// Which input.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// Not our key.
    #[error("the issued certificate does not carry our public key")]
    WrongKey,
    /// A CA certificate where a leaf was asked for.
    #[error("the issued certificate is a CA certificate (basicConstraints CA:TRUE)")]
    LeafIsCa,
    /// keyCertSign or cRLSign in a leaf.
    #[error("the issued certificate may sign {0} (keyUsage), which a leaf must not")]
    LeafSigns(&'static str),
    /// Names other than the requested ones.
    #[error("the issued certificate names {got}, but {wanted} was requested")]
    Names {
        /// What the certificate names.
        got: String,
        /// What was requested.
        wanted: String,
    },
    /// A subject other than the requested common name.
    #[error("the issued certificate's subject is {got}, but {wanted} was requested")]
    Subject {
        /// The certificate's subject.
        got: String,
        /// The requested one.
        wanted: String,
    },
    /// The profile is unknown to the CA's class list.
    #[error("{0}")]
    Profile(String),
    /// Not the profile's extended key usage.
    #[error("the issued certificate's extended key usage is [{got}], but {wanted}")]
    KeyUsage {
        /// The certificate's EKU.
        got: String,
        /// What the profile(s) have.
        wanted: String,
    },
    /// Longer-lived than requested.
    #[error(
        "the issued certificate lives {lifetime} ({not_before} to {not_after}), more than the \
         {allowed} allowed ({basis})"
    )]
    Lifetime {
        /// Its lifetime.
        lifetime: String,
        /// notBefore, RFC 3339.
        not_before: String,
        /// notAfter, RFC 3339.
        not_after: String,
        /// The allowed lifetime.
        allowed: String,
        /// Where the allowance comes from.
        basis: String,
    },
    /// Valid until later than requested.
    #[error(
        "the issued certificate is valid until {not_after}, later than now + the requested {ttl} \
         (+{skew} s of clock skew)"
    )]
    EndsTooLate {
        /// notAfter, RFC 3339.
        not_after: String,
        /// The requested lifetime.
        ttl: String,
        /// The allowed skew.
        skew: i64,
    },
    /// notBefore beyond the allowed skew.
    #[error(
        "the issued certificate is not valid before {not_before}, {ahead} s from now: the CA's \
         clock appears to be {offset} s ahead of ours (at most {skew} s accepted)"
    )]
    NotYetValid {
        /// notBefore, RFC 3339.
        not_before: String,
        /// Seconds from now to notBefore.
        ahead: i64,
        /// The CA's apparent clock offset (notBefore + backdate − now).
        offset: i64,
        /// The allowed skew.
        skew: i64,
    },
    /// Already expired.
    #[error("the issued certificate expired at {0}")]
    Expired(String),
    /// The response's own fields disagree with the certificate.
    #[error("the response's {field} is {got}, but the certificate's is {cert}")]
    Response {
        /// Which field (`serial`, `not_before`, `not_after`).
        field: &'static str,
        /// The response's value.
        got: String,
        /// The certificate's.
        cert: String,
    },
    /// No acceptable path to a pinned root.
    #[error("the issued certificate does not chain to a pinned root of class '{class}': {reason}")]
    Untrusted {
        /// The class.
        class: String,
        /// Why not (the first problem found, nearest the leaf).
        reason: PathError,
    },
}

/// Why a certificate cannot act as a CA ([`usable_ca`]), or why no path
/// leads from a leaf to a pinned root ([`build_path`]). Certificates are
/// named by their subject. `Display` is one line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathError {
    /// More certificates in the chain than [`MAX_CHAIN_CERTS`].
    #[error("{count} certificates in the chain, more than {}", MAX_CHAIN_CERTS)]
    ChainTooLong {
        /// Leaf and intermediates.
        count: usize,
    },
    /// More roots than [`MAX_BUNDLE_ROOTS`].
    #[error("{count} roots, more than {}", MAX_BUNDLE_ROOTS)]
    TooManyRoots {
        /// How many were given.
        count: usize,
    },
    /// No root to build a path to.
    #[error("no pinned root")]
    NoRoot,
    /// The leaf does not parse.
    #[error("the leaf is not an X.509 certificate")]
    LeafMalformed,
    /// An intermediate does not parse.
    #[error("certificate {position} of the chain is not an X.509 certificate")]
    IntermediateMalformed {
        /// Its position in the chain, the leaf being 1.
        position: usize,
    },
    /// A pinned root does not parse.
    #[error("a pinned root is not an X.509 certificate")]
    RootMalformed,
    /// The certificate judged by [`usable_ca`] does not parse.
    #[error("not an X.509 certificate")]
    Malformed,
    /// `CA:FALSE` (or no basicConstraints).
    #[error("'{subject}' is not a CA (CA:FALSE)")]
    NotCa {
        /// The certificate's subject.
        subject: String,
    },
    /// No keyCertSign in keyUsage.
    #[error("'{subject}' may not sign certificates (no keyCertSign)")]
    NoCertSign {
        /// The certificate's subject.
        subject: String,
    },
    /// A CA certificate past its notAfter.
    #[error("'{subject}' expired at {}", rfc3339(*.not_after))]
    Expired {
        /// The certificate's subject.
        subject: String,
        /// Its notAfter, Unix seconds.
        not_after: i64,
    },
    /// A CA certificate whose notBefore is beyond [`MAX_CLOCK_SKEW`].
    #[error("'{subject}' is not valid before {}", rfc3339(*.not_before))]
    NotYetValid {
        /// The certificate's subject.
        subject: String,
        /// Its notBefore, Unix seconds.
        not_before: i64,
    },
    /// Nothing in the chain or the roots carries the issuer's name.
    #[error("no certificate in the chain or the pinned roots is '{subject}''s issuer '{issuer}'")]
    NoIssuer {
        /// The child's subject.
        subject: String,
        /// The issuer it names.
        issuer: String,
    },
    /// A CA whose path length constraint the path exceeds.
    #[error("'{subject}' allows {max} intermediate(s) below it, the path has {below}")]
    PathLength {
        /// The CA's subject.
        subject: String,
        /// Its pathLenConstraint.
        max: u32,
        /// Non-self-issued intermediates below it on the path.
        below: usize,
    },
    /// The child's signature does not verify with the candidate issuer's key.
    #[error("the signature on '{subject}' does not verify with the key of '{issuer}'")]
    BadSignature {
        /// The child's subject.
        subject: String,
        /// The candidate issuer's subject.
        issuer: String,
    },
    /// The path would hold more than [`MAX_CHAIN_CERTS`] certificates.
    #[error("the path is longer than {}", MAX_CHAIN_CERTS)]
    TooDeep,
    /// The search took more than [`MAX_PATH_STEPS`] steps.
    #[error("gave up after {} path-building steps", MAX_PATH_STEPS)]
    TooManySteps,
    /// No path, and no particular problem found on the way.
    #[error("no path")]
    NoPath,
}

impl CheckError {
    /// A stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            CheckError::Untrusted { .. } => "untrusted_chain",
            CheckError::NotYetValid { .. } => "not_yet_valid",
            CheckError::TooManyCertificates { .. } | CheckError::TooLarge { .. } => "oversized",
            _ => "bad_certificate",
        }
    }
}

/// RFC 3339 text of a Unix time (the number itself if out of range).
pub fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// Unix seconds of RFC 3339 text.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// `1d6m`, `20s`, `18250d`: a duration for people.
pub fn human(secs: i64) -> String {
    if secs <= 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = secs;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

/// Every `CERTIFICATE` of `pem`, refusing more than `max` of them or more
/// than [`MAX_PEM_BYTES`] before parsing any.
pub fn parse_certs_capped(
    pem: &[u8],
    max: usize,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, CheckError> {
    if pem.len() > MAX_PEM_BYTES {
        return Err(CheckError::TooLarge {
            what: what.to_owned(),
            bytes: pem.len(),
            max: MAX_PEM_BYTES,
        });
    }
    let marker = b"-----BEGIN CERTIFICATE-----";
    let count = pem.windows(marker.len()).filter(|w| w == marker).count();
    if count > max {
        return Err(CheckError::TooManyCertificates {
            what: what.to_owned(),
            count,
            max,
        });
    }
    crate::pem::parse_certs(pem).map_err(|e| CheckError::Malformed {
        what: what.to_owned(),
        detail: e.to_string(),
    })
}

fn parse(der: &[u8]) -> Option<X509Certificate<'_>> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Some(cert),
        _ => None,
    }
}

/// What the certificate was requested as.
#[derive(Debug, Clone)]
pub struct Expectation {
    /// Class.
    pub class: String,
    /// Profile, when configured (else the class default, unknown here).
    pub profile: Option<String>,
    /// Requested names.
    pub names: Names,
    /// The CSR common name override (`Some("")` = none; `None` = the first
    /// DNS name).
    pub common_name: Option<String>,
    /// Requested lifetime, when configured (else the profile's default).
    pub ttl: Option<Duration>,
    /// The class's profiles as `GET /v1/classes` lists them.
    pub profiles: Vec<ProfileInfo>,
}

/// The names a certificate carries (or should carry), normalised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameSet {
    /// DNS names.
    pub dns: BTreeSet<String>,
    /// IP addresses.
    pub ips: BTreeSet<IpAddr>,
    /// URIs.
    pub uris: BTreeSet<String>,
}

impl NameSet {
    fn is_subset(&self, other: &NameSet) -> bool {
        self.dns.is_subset(&other.dns)
            && self.ips.is_subset(&other.ips)
            && self.uris.is_subset(&other.uris)
    }

    fn describe(&self) -> String {
        let all: Vec<String> = self
            .dns
            .iter()
            .cloned()
            .chain(self.ips.iter().map(|i| i.to_string()))
            .chain(self.uris.iter().cloned())
            .collect();
        if all.is_empty() {
            "no names".into()
        } else {
            format!("[{}]", all.join(", "))
        }
    }
}

fn normalize_dns(s: &str) -> String {
    policies::normalize_dns_name(s)
        .unwrap_or_else(|_| s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase())
}

impl Expectation {
    /// The requested names as the server normalises them (hosts are
    /// classified as the server does, [`policies::HostKind`]), and the
    /// common name the server would put in the subject.
    pub fn requested_names(&self) -> (NameSet, Option<String>) {
        let mut set = NameSet::default();
        for host in self.names.hosts() {
            match policies::HostKind::of(&host) {
                policies::HostKind::Ip(ip) => {
                    set.ips.insert(ip);
                }
                policies::HostKind::Uri => {
                    set.uris
                        .insert(policies::normalize_uri(&host).unwrap_or(host));
                }
                policies::HostKind::Dns => {
                    set.dns.insert(normalize_dns(&host));
                }
            }
        }
        let cn = match &self.common_name {
            Some(cn) => (!cn.is_empty()).then(|| cn.clone()),
            None => self.names.dns.first().cloned(),
        };
        let cn = cn.map(|cn| match cn.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => normalize_dns(&cn),
        });
        (set, cn)
    }
}

/// What the checks established about an issued certificate.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Validity, serial, key.
    pub facts: CertFacts,
    /// Its names.
    pub names: NameSet,
    /// The profiles (of the class) whose extended key usage it has.
    pub profiles: Vec<String>,
    /// SHA-256 of its subjectPublicKeyInfo, lowercase hex.
    pub spki_sha256: String,
}

/// The names of an EKU extension (absent = empty).
fn eku_names(cert: &X509Certificate<'_>) -> Result<BTreeSet<String>, CheckError> {
    let malformed = |e: x509_parser::error::X509Error| CheckError::Malformed {
        what: "the issued certificate's extended key usage".into(),
        detail: e.to_string(),
    };
    let mut out = BTreeSet::new();
    if let Some(ext) = cert.extended_key_usage().map_err(malformed)? {
        let e = ext.value;
        for (on, name) in [
            (e.any, "any"),
            (e.server_auth, "server_auth"),
            (e.client_auth, "client_auth"),
            (e.code_signing, "code_signing"),
            (e.email_protection, "email_protection"),
            (e.time_stamping, "time_stamping"),
            (e.ocsp_signing, "ocsp_signing"),
        ] {
            if on {
                out.insert(name.to_owned());
            }
        }
        for oid in &e.other {
            out.insert(oid.to_id_string());
        }
    }
    Ok(out)
}

fn cert_names(cert: &X509Certificate<'_>) -> Result<NameSet, CheckError> {
    let malformed = |detail: String| CheckError::Malformed {
        what: "the issued certificate's subjectAltName".into(),
        detail,
    };
    let mut set = NameSet::default();
    let Some(san) = cert
        .subject_alternative_name()
        .map_err(|e| malformed(e.to_string()))?
    else {
        return Ok(set);
    };
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => {
                set.dns.insert((*d).to_owned());
            }
            GeneralName::URI(u) => {
                set.uris.insert((*u).to_owned());
            }
            GeneralName::IPAddress(b) => {
                let ip = match b.len() {
                    4 => <[u8; 4]>::try_from(*b).map(IpAddr::from).ok(),
                    16 => <[u8; 16]>::try_from(*b).map(IpAddr::from).ok(),
                    _ => None,
                };
                let ip =
                    ip.ok_or_else(|| malformed(format!("an IP address of {} bytes", b.len())))?;
                set.ips.insert(ip);
            }
            other => return Err(malformed(format!("an unexpected name {other:?}"))),
        }
    }
    Ok(set)
}

/// The subject as (attribute OID, text) pairs.
fn subject_attributes(cert: &X509Certificate<'_>) -> Vec<(String, String)> {
    cert.subject()
        .iter_attributes()
        .map(|a| {
            (
                a.attr_type().to_id_string(),
                a.as_str().unwrap_or("<not text>").to_owned(),
            )
        })
        .collect()
}

const OID_CN: &str = "2.5.4.3";

/// Checks an issued certificate (see the module documentation) and its
/// path to one of `roots`, the accepted roots of the class, at `now`.
pub fn check_issued(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &[CertificateDer<'_>],
    public_key: &[u8],
    expected: &Expectation,
    now: i64,
) -> Result<Checked, CheckError> {
    if intermediates.len() + 1 > MAX_CHAIN_CERTS {
        return Err(CheckError::TooManyCertificates {
            what: "chain".into(),
            count: intermediates.len() + 1,
            max: MAX_CHAIN_CERTS,
        });
    }
    let bad = |detail: String| CheckError::Malformed {
        what: "the issued certificate".into(),
        detail,
    };
    let f = facts(leaf).map_err(|e| bad(e.to_string()))?;
    let cert = parse(leaf).ok_or_else(|| bad("not one X.509 certificate".into()))?;
    if f.public_key != public_key {
        return Err(CheckError::WrongKey);
    }

    // Not a CA.
    let bc = cert.basic_constraints().map_err(|e| bad(e.to_string()))?;
    if bc.is_some_and(|b| b.value.ca) {
        return Err(CheckError::LeafIsCa);
    }
    if let Some(ku) = cert.key_usage().map_err(|e| bad(e.to_string()))? {
        if ku.value.key_cert_sign() {
            return Err(CheckError::LeafSigns("certificates"));
        }
        if ku.value.crl_sign() {
            return Err(CheckError::LeafSigns("CRLs"));
        }
    }

    // Exactly the requested names.
    let (wanted, cn) = expected.requested_names();
    let got = cert_names(&cert)?;
    let mut with_cn = wanted.clone();
    if let Some(cn) = &cn {
        match cn.parse::<IpAddr>() {
            Ok(ip) => with_cn.ips.insert(ip),
            Err(_) => with_cn.dns.insert(cn.clone()),
        };
    }
    if !wanted.is_subset(&got) || !got.is_subset(&with_cn) {
        return Err(CheckError::Names {
            got: got.describe(),
            wanted: wanted.describe(),
        });
    }
    let subject = subject_attributes(&cert);
    let subject_ok = match &cn {
        Some(cn) => subject.len() == 1 && subject[0] == (OID_CN.to_owned(), cn.clone()),
        None => subject.is_empty(),
    };
    if !subject_ok {
        return Err(CheckError::Subject {
            got: if subject.is_empty() {
                "empty".into()
            } else {
                format!("'{}'", cert.subject())
            },
            wanted: cn.map_or("no subject".into(), |cn| format!("CN={cn}")),
        });
    }

    // The profile's extended key usage.
    let candidates: Vec<&ProfileInfo> = match &expected.profile {
        Some(p) => {
            let found = expected.profiles.iter().find(|i| &i.name == p);
            vec![found.ok_or_else(|| {
                CheckError::Profile(format!(
                    "class '{}' has no profile '{p}' (GET /v1/classes)",
                    expected.class
                ))
            })?]
        }
        None => expected.profiles.iter().collect(),
    };
    if candidates.is_empty() {
        return Err(CheckError::Profile(format!(
            "class '{}' lists no profiles (GET /v1/classes)",
            expected.class
        )));
    }
    let ekus = eku_names(&cert)?;
    let fits: Vec<&ProfileInfo> = candidates
        .iter()
        .copied()
        .filter(|p| p.ext_key_usages.iter().cloned().collect::<BTreeSet<_>>() == ekus)
        .collect();
    if fits.is_empty() {
        let wanted = match &expected.profile {
            Some(p) => format!(
                "profile '{p}' of class '{}' has [{}]",
                expected.class,
                candidates[0].ext_key_usages.join(", ")
            ),
            None => format!(
                "no profile of class '{}' has that (profiles: {})",
                expected.class,
                candidates
                    .iter()
                    .map(|p| format!("{} [{}]", p.name, p.ext_key_usages.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
        return Err(CheckError::KeyUsage {
            got: ekus.into_iter().collect::<Vec<_>>().join(", "),
            wanted,
        });
    }

    // Validity.
    let (ttl, basis) = match expected.ttl {
        Some(ttl) => (
            i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
            format!("the requested ttl {}", human(ttl.as_secs() as i64)),
        ),
        None => {
            let longest = fits
                .iter()
                .filter_map(|p| ca_proto::native::parse_duration(&p.default_ttl).ok())
                .max()
                .ok_or_else(|| {
                    CheckError::Profile(format!(
                        "profile '{}' of class '{}' has no readable default_ttl",
                        fits[0].name, expected.class
                    ))
                })?;
            (
                i64::try_from(longest.as_secs()).unwrap_or(i64::MAX),
                format!(
                    "the profile's default ttl {}",
                    human(longest.as_secs() as i64)
                ),
            )
        }
    };
    let ttl = ttl.min(MAX_LEAF_LIFETIME);
    let allowed = ttl
        .saturating_add(CA_BACKDATE)
        .saturating_add(LIFETIME_SLACK);
    let lifetime = f.not_after.saturating_sub(f.not_before);
    if lifetime > allowed {
        return Err(CheckError::Lifetime {
            lifetime: human(lifetime),
            not_before: rfc3339(f.not_before),
            not_after: rfc3339(f.not_after),
            allowed: human(allowed),
            basis: format!("{basis} + {CA_BACKDATE} s backdating + {LIFETIME_SLACK} s"),
        });
    }
    if f.not_before > now + MAX_CLOCK_SKEW {
        return Err(CheckError::NotYetValid {
            not_before: rfc3339(f.not_before),
            ahead: f.not_before - now,
            offset: f.not_before + CA_BACKDATE - now,
            skew: MAX_CLOCK_SKEW,
        });
    }
    if now >= f.not_after {
        return Err(CheckError::Expired(rfc3339(f.not_after)));
    }
    if f.not_after > now + ttl + MAX_CLOCK_SKEW + LIFETIME_SLACK {
        return Err(CheckError::EndsTooLate {
            not_after: rfc3339(f.not_after),
            ttl: human(ttl),
            skew: MAX_CLOCK_SKEW + LIFETIME_SLACK,
        });
    }

    build_path(leaf, intermediates, roots, Some(now)).map_err(|reason| CheckError::Untrusted {
        class: expected.class.clone(),
        reason,
    })?;

    Ok(Checked {
        spki_sha256: hex::encode(Sha256::digest(cert.public_key().raw)),
        names: got,
        profiles: fits.iter().map(|p| p.name.clone()).collect(),
        facts: f,
    })
}

/// The response's serial and validity must be the certificate's.
pub fn check_response_fields(
    response: &ca_proto::native::SignResponse,
    facts: &CertFacts,
) -> Result<(), CheckError> {
    let serial = response.serial.trim().to_ascii_lowercase();
    let serial = serial
        .strip_prefix("00")
        .filter(|s| !s.is_empty())
        .unwrap_or(&serial);
    if serial != facts.serial {
        return Err(CheckError::Response {
            field: "serial",
            got: response.serial.clone(),
            cert: facts.serial.clone(),
        });
    }
    for (field, text, cert) in [
        ("not_before", &response.not_before, facts.not_before),
        ("not_after", &response.not_after, facts.not_after),
    ] {
        if parse_rfc3339(text) != Some(cert) {
            return Err(CheckError::Response {
                field,
                got: text.to_string(),
                cert: rfc3339(cert),
            });
        }
    }
    Ok(())
}

/// A CA certificate's shape, as the path needs it.
struct CaFacts {
    ca: bool,
    path_len: Option<u32>,
    cert_sign: bool,
    self_issued: bool,
}

fn ca_facts(cert: &X509Certificate<'_>) -> CaFacts {
    let bc = cert.basic_constraints().ok().flatten();
    let ku = cert.key_usage().ok().flatten();
    CaFacts {
        ca: bc.as_ref().is_some_and(|b| b.value.ca),
        path_len: bc.as_ref().and_then(|b| b.value.path_len_constraint),
        cert_sign: ku.is_some_and(|k| k.value.key_cert_sign()),
        self_issued: cert.subject().as_raw() == cert.issuer().as_raw(),
    }
}

fn subject(cert: &X509Certificate<'_>) -> String {
    cert.subject().to_string()
}

/// Whether `cert` may act as a CA at `now` (`None`: time not judged).
/// `Err` says why not.
pub fn usable_ca(der: &[u8], now: Option<i64>) -> Result<(), PathError> {
    let cert = parse(der).ok_or(PathError::Malformed)?;
    usable_ca_parsed(&cert, &ca_facts(&cert), now)
}

fn usable_ca_parsed(
    cert: &X509Certificate<'_>,
    f: &CaFacts,
    now: Option<i64>,
) -> Result<(), PathError> {
    if !f.ca {
        return Err(PathError::NotCa {
            subject: subject(cert),
        });
    }
    if !f.cert_sign {
        return Err(PathError::NoCertSign {
            subject: subject(cert),
        });
    }
    if let Some(now) = now {
        let not_before = cert.validity().not_before.timestamp();
        let not_after = cert.validity().not_after.timestamp();
        if now >= not_after {
            return Err(PathError::Expired {
                subject: subject(cert),
                not_after,
            });
        }
        if not_before > now + MAX_CLOCK_SKEW {
            return Err(PathError::NotYetValid {
                subject: subject(cert),
                not_before,
            });
        }
    }
    Ok(())
}

struct PathSearch<'a> {
    certs: Vec<X509Certificate<'a>>,
    shape: Vec<CaFacts>,
    /// Index of the first root in `certs`.
    first_root: usize,
    by_subject: HashMap<Vec<u8>, Vec<usize>>,
    signatures: HashMap<(usize, usize), bool>,
    now: Option<i64>,
    steps: usize,
    problems: Vec<PathError>,
}

impl PathSearch<'_> {
    fn signed(&mut self, child: usize, issuer: usize) -> bool {
        if let Some(known) = self.signatures.get(&(child, issuer)) {
            return *known;
        }
        let ok = self.certs[child]
            .verify_signature(Some(self.certs[issuer].public_key()))
            .is_ok();
        self.signatures.insert((child, issuer), ok);
        ok
    }

    fn note(&mut self, problem: PathError) {
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }

    /// Extends `path` (leaf first) to a root; `Ok(true)` when found.
    fn extend(&mut self, path: &mut Vec<usize>) -> Result<bool, PathError> {
        let child = *path.last().unwrap_or(&0);
        let issuer = self.certs[child].issuer().as_raw();
        let candidates = self.by_subject.get(issuer).cloned().unwrap_or_default();
        if candidates.is_empty() {
            self.note(PathError::NoIssuer {
                subject: subject(&self.certs[child]),
                issuer: self.certs[child].issuer().to_string(),
            });
        }
        for cand in candidates {
            self.steps += 1;
            if self.steps > MAX_PATH_STEPS {
                return Err(PathError::TooManySteps);
            }
            if path.contains(&cand) {
                continue;
            }
            let is_root = cand >= self.first_root;
            // Roots are trust anchors: their validity is not judged.
            let now = if is_root { None } else { self.now };
            if let Err(why) = usable_ca_parsed(&self.certs[cand], &self.shape[cand], now) {
                self.note(why);
                continue;
            }
            let below = path[1..]
                .iter()
                .filter(|i| !self.shape[**i].self_issued)
                .count();
            if let Some(max) = self.shape[cand].path_len {
                if below > max as usize {
                    self.note(PathError::PathLength {
                        subject: subject(&self.certs[cand]),
                        max,
                        below,
                    });
                    continue;
                }
            }
            if !self.signed(child, cand) {
                self.note(PathError::BadSignature {
                    subject: subject(&self.certs[child]),
                    issuer: subject(&self.certs[cand]),
                });
                continue;
            }
            if is_root {
                path.push(cand);
                return Ok(true);
            }
            if path.len() >= MAX_CHAIN_CERTS {
                self.note(PathError::TooDeep);
                continue;
            }
            path.push(cand);
            if self.extend(path)? {
                return Ok(true);
            }
            path.pop();
        }
        Ok(false)
    }
}

/// A path from `leaf` through `intermediates` to one of `roots`, checked
/// as the module documentation says (time at `now`, or not at all with
/// `None`). Returns the path as indices: 0 is the leaf, 1..=n the
/// intermediates in the given order, n+1.. the roots. `Err` says why there
/// is none (the first problem found, nearest the leaf).
pub fn build_path(
    leaf: &[u8],
    intermediates: &[CertificateDer<'_>],
    roots: &[CertificateDer<'_>],
    now: Option<i64>,
) -> Result<Vec<usize>, PathError> {
    if intermediates.len() + 1 > MAX_CHAIN_CERTS {
        return Err(PathError::ChainTooLong {
            count: intermediates.len() + 1,
        });
    }
    if roots.len() > MAX_BUNDLE_ROOTS {
        return Err(PathError::TooManyRoots { count: roots.len() });
    }
    if roots.is_empty() {
        return Err(PathError::NoRoot);
    }
    let mut certs = Vec::with_capacity(1 + intermediates.len() + roots.len());
    certs.push(parse(leaf).ok_or(PathError::LeafMalformed)?);
    for (i, der) in intermediates.iter().enumerate() {
        certs.push(parse(der).ok_or(PathError::IntermediateMalformed { position: i + 2 })?);
    }
    let first_root = certs.len();
    for der in roots {
        certs.push(parse(der).ok_or(PathError::RootMalformed)?);
    }
    let shape = certs.iter().map(ca_facts).collect();
    let mut by_subject: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for (i, c) in certs.iter().enumerate().skip(1) {
        by_subject
            .entry(c.subject().as_raw().to_vec())
            .or_default()
            .push(i);
    }
    let mut search = PathSearch {
        certs,
        shape,
        first_root,
        by_subject,
        signatures: HashMap::new(),
        now,
        steps: 0,
        problems: Vec::new(),
    };
    let mut path = vec![0];
    if search.extend(&mut path)? {
        return Ok(path);
    }
    Err(search
        .problems
        .into_iter()
        .next()
        .unwrap_or(PathError::NoPath))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyAlgorithm, LocalKey};
    use crate::pem::testca::TestCa;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    fn profiles() -> Vec<ProfileInfo> {
        let p = |name: &str, eku: &[&str]| ProfileInfo {
            name: name.into(),
            default_ttl: "24h".into(),
            max_ttl: "72h".into(),
            key_usages: vec!["digital_signature".into()],
            ext_key_usages: eku.iter().map(|s| s.to_string()).collect(),
        };
        vec![
            p("server", &["server_auth"]),
            p("client", &["client_auth"]),
            p("peer", &["server_auth", "client_auth"]),
        ]
    }

    fn expectation(dns: &[&str], profile: Option<&str>, ttl: Option<u64>) -> Expectation {
        Expectation {
            class: "db".into(),
            profile: profile.map(str::to_owned),
            names: Names {
                dns: dns.iter().map(|s| s.to_string()).collect(),
                ..Names::default()
            },
            common_name: None,
            ttl: ttl.map(Duration::from_secs),
            profiles: profiles(),
        }
    }

    /// A leaf issued by `ca`'s intermediate, shaped by `shape`.
    fn leaf_with(
        ca: &TestCa,
        key: &LocalKey,
        shape: impl FnOnce(&mut CertificateParams),
    ) -> CertificateDer<'static> {
        let pair = KeyPair::from_pem(key.pem()).expect("pair");
        let now = crate::unix_now();
        let mut p = CertificateParams::new(vec!["a.db.internal".to_string()]).expect("p");
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, "a.db.internal");
        p.not_before = time::OffsetDateTime::from_unix_timestamp(now - 300).expect("nb");
        p.not_after = time::OffsetDateTime::from_unix_timestamp(now + 3600).expect("na");
        p.is_ca = IsCa::ExplicitNoCa;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        shape(&mut p);
        ca.sign(&pair, p)
    }

    fn check(
        ca: &TestCa,
        key: &LocalKey,
        leaf: &CertificateDer<'static>,
        e: &Expectation,
    ) -> Result<Checked, CheckError> {
        check_issued(
            leaf,
            std::slice::from_ref(&ca.int_der),
            std::slice::from_ref(&ca.root_der),
            key.public_key_bits(),
            e,
            crate::unix_now(),
        )
    }

    #[test]
    fn a_proper_leaf_passes_and_each_deviation_is_refused() {
        let ca = TestCa::new("db");
        let key = LocalKey::generate(KeyAlgorithm::EcP256).expect("key");
        let e = expectation(&["A.db.internal."], Some("server"), Some(3600));
        let ok = check(&ca, &key, &leaf_with(&ca, &key, |_| {}), &e).expect("good leaf");
        assert_eq!(ok.profiles, vec!["server".to_string()]);
        assert!(ok.names.dns.contains("a.db.internal"));
        // no profile configured: the one whose EKU it has
        let any = expectation(&["a.db.internal"], None, Some(3600));
        let got = check(&ca, &key, &leaf_with(&ca, &key, |_| {}), &any).expect("ok");
        assert_eq!(got.profiles, vec!["server".to_string()]);

        let other = LocalKey::generate(KeyAlgorithm::EcP256).expect("key");
        type Shape = Box<dyn FnOnce(&mut CertificateParams)>;
        let cases: Vec<(Shape, &str)> = vec![
            (
                Box::new(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)),
                "CA:TRUE",
            ),
            (
                Box::new(|p| p.key_usages = vec![KeyUsagePurpose::KeyCertSign]),
                "may sign certificates",
            ),
            (
                Box::new(|p| p.key_usages = vec![KeyUsagePurpose::CrlSign]),
                "may sign CRLs",
            ),
            (
                Box::new(|p| {
                    p.subject_alt_names.push(rcgen::SanType::DnsName(
                        "evil.example".try_into().expect("ia5"),
                    ))
                }),
                "evil.example",
            ),
            (
                Box::new(|p| {
                    p.subject_alt_names = vec![rcgen::SanType::DnsName(
                        "*.api.internal".try_into().expect("ia5"),
                    )]
                }),
                "*.api.internal",
            ),
            (
                Box::new(|p| {
                    p.distinguished_name.push(DnType::OrganizationName, "Evil");
                }),
                "subject",
            ),
            (
                Box::new(|p| {
                    p.extended_key_usages
                        .push(ExtendedKeyUsagePurpose::ClientAuth)
                }),
                "extended key usage",
            ),
            (
                Box::new(|p| {
                    p.not_after = p.not_before + time::Duration::days(365 * 50);
                }),
                "more than the",
            ),
            (
                Box::new(|p| {
                    let now = crate::unix_now();
                    p.not_before =
                        time::OffsetDateTime::from_unix_timestamp(now + 3600).expect("t");
                    p.not_after = time::OffsetDateTime::from_unix_timestamp(now + 3700).expect("t");
                }),
                "appears to be 3900 s ahead",
            ),
        ];
        for (shape, needle) in cases {
            let leaf = leaf_with(&ca, &key, shape);
            let err = check(&ca, &key, &leaf, &e).expect_err(needle).to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        let err = check(&ca, &other, &leaf_with(&ca, &key, |_| {}), &e).unwrap_err();
        assert_eq!(err, CheckError::WrongKey);
        // within the skew: fine
        let soon = leaf_with(&ca, &key, |p| {
            let now = crate::unix_now();
            p.not_before = time::OffsetDateTime::from_unix_timestamp(now + 120).expect("t");
            p.not_after = time::OffsetDateTime::from_unix_timestamp(now + 1800).expect("t");
        });
        check(&ca, &key, &soon, &e).expect("within the skew");
        // lifetime: TTL + backdating is fine, one more hour is not
        let short = expectation(&["a.db.internal"], Some("server"), Some(60));
        let exact = leaf_with(&ca, &key, |p| {
            p.not_after = p.not_before + time::Duration::seconds(60 + CA_BACKDATE);
        });
        check(&ca, &key, &exact, &short).expect("ttl + backdate");
        let err = check(&ca, &key, &leaf_with(&ca, &key, |_| {}), &short).unwrap_err();
        assert!(matches!(err, CheckError::Lifetime { .. }), "{err}");
    }

    #[test]
    fn intermediates_must_be_valid_cas_and_path_lengths_hold() {
        let key = LocalKey::generate(KeyAlgorithm::EcP256).expect("key");
        let now = crate::unix_now();
        for (shape, needle) in [
            (
                Box::new(|p: &mut CertificateParams| p.is_ca = IsCa::ExplicitNoCa)
                    as Box<dyn Fn(&mut CertificateParams)>,
                "is not a CA",
            ),
            (
                Box::new(|p: &mut CertificateParams| {
                    p.key_usages = vec![KeyUsagePurpose::DigitalSignature]
                }),
                "no keyCertSign",
            ),
            (
                Box::new(move |p: &mut CertificateParams| {
                    p.not_before =
                        time::OffsetDateTime::from_unix_timestamp(now - 7200).expect("t");
                    p.not_after = time::OffsetDateTime::from_unix_timestamp(now - 3600).expect("t");
                }),
                "expired at",
            ),
        ] {
            let ca = TestCa::shaped("db", shape);
            let leaf = leaf_with(&ca, &key, |_| {});
            let e = expectation(&["a.db.internal"], Some("server"), Some(3600));
            let err = check(&ca, &key, &leaf, &e).unwrap_err();
            assert!(
                matches!(err, CheckError::Untrusted { .. }) && err.to_string().contains(needle),
                "{needle}: {err}"
            );
        }
    }

    /// A chain of `n` CAs that all carry the same name and key: every one
    /// verifies every other, the worst case for a naive path builder.
    #[test]
    fn same_subject_chains_are_bounded() {
        let ca = TestCa::new("db");
        let key = LocalKey::generate(KeyAlgorithm::EcP256).expect("key");
        let pair = KeyPair::generate().expect("k");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("p");
        p.distinguished_name.push(DnType::CommonName, "loop");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let issuer = Issuer::new(
            p.clone(),
            KeyPair::from_pem(&pair.serialize_pem()).expect("k"),
        );
        let loops: Vec<CertificateDer<'static>> = (0..7)
            .map(|_| {
                p.clone()
                    .signed_by(&pair, &issuer)
                    .expect("c")
                    .der()
                    .clone()
            })
            .collect();
        let leaf_pair = KeyPair::from_pem(key.pem()).expect("pair");
        let mut lp = CertificateParams::new(vec!["a.db.internal".to_string()]).expect("p");
        lp.is_ca = IsCa::ExplicitNoCa;
        let leaf = lp
            .signed_by(&leaf_pair, &issuer)
            .expect("leaf")
            .der()
            .clone();
        let roots: Vec<CertificateDer<'static>> = vec![ca.root_der.clone(); 64];
        let started = std::time::Instant::now();
        let err = build_path(&leaf, &loops, &roots, None).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // 7 interchangeable CAs: the search runs out of steps, not time.
        assert_eq!(err, PathError::TooManySteps, "{err}");
        let many: Vec<CertificateDer<'static>> = vec![loops[0].clone(); 1000];
        let pem = ca_proto::pem::encode_all(ca_proto::pem::Label::Certificate, &many);
        let err = parse_certs_capped(pem.as_bytes(), MAX_CHAIN_CERTS, "chain").unwrap_err();
        assert!(
            matches!(err, CheckError::TooManyCertificates { count: 1000, .. }),
            "{err}"
        );
        assert_eq!(
            build_path(&leaf, &many, &roots, None),
            Err(PathError::ChainTooLong { count: 1001 })
        );
    }

    #[test]
    fn response_fields_must_be_the_certificates() {
        let ca = TestCa::new("db");
        let key = LocalKey::generate(KeyAlgorithm::EcP256).expect("key");
        let leaf = leaf_with(&ca, &key, |_| {});
        let f = facts(&leaf).expect("facts");
        let mut r = ca_proto::native::SignResponse {
            certificate: String::new(),
            chain: String::new(),
            serial: f.serial.clone(),
            not_before: rfc3339(f.not_before).parse().expect("time"),
            not_after: rfc3339(f.not_after).parse().expect("time"),
            log: None,
        };
        check_response_fields(&r, &f).expect("same");
        r.serial = "0102".into();
        assert!(check_response_fields(&r, &f)
            .unwrap_err()
            .to_string()
            .contains("serial"));
    }
}
