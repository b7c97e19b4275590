//! The decision: a request against one class policy gives a [`Grant`] that
//! holds exactly what may be certified, or every reason it may not.
//! Profile-independent rules (names, keys, CA bit) run even when the profile
//! is unknown, so one answer tells the client everything that is wrong.

use std::net::IpAddr;

use ca_proto::duration::format_duration;

use crate::detail::quoted;
use crate::names::{is_wildcard, normalize_dns_name};
use crate::policy::{CommonNameRule, KeyKind, MIN_TTL};
use crate::types::{
    Decision, Grant, GrantParts, KeyAlgorithm, KeyUsage, Reason, ReasonCode, Request,
};
use crate::uris::normalize_uri;
use crate::{ClassPolicy, Profile};

/// What a client-supplied `hosts` entry asks for: an IP address SAN, a URI
/// SAN (it has a scheme), or else a DNS name. The one place that decides,
/// used by [`ClassPolicy::decide`] and by whoever records what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    Ip(IpAddr),
    Uri,
    Dns,
}

impl HostKind {
    pub fn of(host: &str) -> HostKind {
        if let Ok(ip) = host.parse::<IpAddr>() {
            HostKind::Ip(ip)
        } else if host.contains("://") {
            HostKind::Uri
        } else {
            HostKind::Dns
        }
    }
}

/// The SANs a request asks for, before any checks.
struct Requested<'a> {
    dns: Vec<&'a str>,
    ips: Vec<IpAddr>,
    uris: Vec<&'a str>,
}

impl<'a> Requested<'a> {
    /// The CSR's SANs, or the client's `hosts` that replace them.
    fn of(req: &Request<'a>) -> Requested<'a> {
        match req.hosts {
            None => Requested {
                dns: req.csr.dns_names.iter().map(String::as_str).collect(),
                ips: req.csr.ip_addrs.clone(),
                uris: req.csr.uris.iter().map(String::as_str).collect(),
            },
            Some(hosts) => {
                let mut r = Requested {
                    dns: Vec::new(),
                    ips: Vec::new(),
                    uris: Vec::new(),
                };
                for h in hosts {
                    match HostKind::of(h) {
                        HostKind::Ip(ip) => r.ips.push(ip),
                        HostKind::Uri => r.uris.push(h),
                        HostKind::Dns => r.dns.push(h),
                    }
                }
                r
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.ips.is_empty() && self.uris.is_empty()
    }
}

/// Accumulates the names to grant and the reasons to deny.
struct Checker<'p> {
    policy: &'p ClassPolicy,
    reasons: Vec<Reason>,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
    uris: Vec<String>,
    /// Distinct unparseable names, counted toward max_sans.
    invalid: Vec<String>,
}

impl Checker<'_> {
    fn deny(&mut self, code: ReasonCode, detail: String) {
        self.reasons.push(Reason::new(code, detail));
    }

    /// Checks one DNS name (`what` says where it came from) and records it.
    /// Returns the normalised name if it is well-formed.
    fn dns_name(&mut self, raw: &str, what: &str) -> Option<String> {
        let class = &self.policy.name;
        let n = match normalize_dns_name(raw) {
            Ok(n) => n,
            Err(e) => {
                self.deny(
                    ReasonCode::InvalidName,
                    format!("{what} {}: {e}", quoted(raw)),
                );
                if !self.invalid.iter().any(|i| i == raw) {
                    self.invalid.push(raw.to_owned());
                }
                return None;
            }
        };
        if self.dns.contains(&n) {
            return Some(n);
        }
        if is_wildcard(&n) && !self.policy.allow_wildcard_certs {
            self.deny(
                ReasonCode::WildcardNotAllowed,
                format!("{what} \"{n}\" is a wildcard; class {class} does not issue wildcard certificates"),
            );
        } else if !self.policy.dns.iter().any(|p| p.matches(&n)) {
            self.deny(
                ReasonCode::NameNotAllowed,
                format!("{what} \"{n}\" is not allowed in class {class}"),
            );
        }
        self.dns.push(n.clone());
        Some(n)
    }

    fn ip(&mut self, ip: IpAddr, what: &str) {
        if self.ips.contains(&ip) {
            return;
        }
        if !self.policy.ip_cidrs.iter().any(|net| net.contains(&ip)) {
            let class = &self.policy.name;
            self.deny(
                ReasonCode::IpNotAllowed,
                format!("{what} {ip} is not in an allowed range of class {class}"),
            );
        }
        self.ips.push(ip);
    }

    fn uri(&mut self, raw: &str) {
        let n = match normalize_uri(raw) {
            Ok(n) => n,
            Err(e) => {
                self.deny(ReasonCode::InvalidName, format!("URI {}: {e}", quoted(raw)));
                if !self.invalid.iter().any(|i| i == raw) {
                    self.invalid.push(raw.to_owned());
                }
                return;
            }
        };
        if self.uris.contains(&n) {
            return;
        }
        if !self.policy.uris.iter().any(|p| p.matches(&n)) {
            let class = &self.policy.name;
            self.deny(
                ReasonCode::UriNotAllowed,
                format!("URI {} is not allowed in class {class}", quoted(&n)),
            );
        }
        self.uris.push(n);
    }

    /// Applies the class's CN rule; returns the CN to put in the certificate.
    fn common_name(&mut self, cn: Option<&str>) -> Option<String> {
        let cn = cn?;
        let class = self.policy.name.clone();
        match self.policy.common_name {
            CommonNameRule::Forbidden => {
                self.deny(
                    ReasonCode::CommonNameNotAllowed,
                    format!(
                        "class {class} forbids a subject common name; got {}",
                        quoted(cn)
                    ),
                );
                None
            }
            CommonNameRule::MustBeSan => {
                let as_san = match cn.parse::<IpAddr>() {
                    Ok(ip) => self.ips.contains(&ip).then(|| ip.to_string()),
                    Err(_) => normalize_dns_name(cn).ok().filter(|n| self.dns.contains(n)),
                };
                if as_san.is_none() {
                    self.deny(
                        ReasonCode::CommonNameNotAllowed,
                        format!(
                            "common name {} is not one of the requested SANs; class {class} requires the CN to be a SAN",
                            quoted(cn)
                        ),
                    );
                }
                as_san
            }
            CommonNameRule::AnyAllowedName => match cn.parse::<IpAddr>() {
                Ok(ip) => {
                    self.ip(ip, "common name IP");
                    Some(ip.to_string())
                }
                Err(_) => self.dns_name(cn, "common name"),
            },
        }
    }
}

/// Key usages the key type can actually perform: keyEncipherment and
/// dataEncipherment need RSA (RFC 8813 forbids them on EC keys);
/// keyAgreement needs an EC (ECDH) key.
fn usable_by(key: &KeyAlgorithm, usage: KeyUsage) -> bool {
    match usage {
        KeyUsage::KeyEncipherment | KeyUsage::DataEncipherment => {
            matches!(key, KeyAlgorithm::Rsa { .. } | KeyAlgorithm::Other(_))
        }
        KeyUsage::KeyAgreement => !matches!(key, KeyAlgorithm::Rsa { .. } | KeyAlgorithm::Ed25519),
        KeyUsage::DigitalSignature | KeyUsage::ContentCommitment => true,
    }
}

fn check_key(policy: &ClassPolicy, key: &KeyAlgorithm, reasons: &mut Vec<Reason>) {
    let class = &policy.name;
    let allowed = || {
        policy
            .keys
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match KeyKind::of(key) {
        Some(kind) if policy.keys.contains(&kind) => {
            if let KeyAlgorithm::Rsa { bits } = key {
                if *bits < policy.rsa_min_bits {
                    reasons.push(Reason::new(
                        ReasonCode::KeyTooSmall,
                        format!(
                            "RSA key of {bits} bits is below the minimum of {} bits in class {class}",
                            policy.rsa_min_bits
                        ),
                    ));
                }
            }
        }
        _ => reasons.push(Reason::new(
            ReasonCode::KeyAlgorithmNotAllowed,
            format!(
                "key algorithm {} is not allowed in class {class} (allowed: {})",
                quoted(&key.to_string()),
                allowed()
            ),
        )),
    }
}

fn check_ttl(
    req: &Request<'_>,
    name: &str,
    profile: &Profile,
    reasons: &mut Vec<Reason>,
) -> std::time::Duration {
    let ttl = req.ttl.unwrap_or(profile.default_ttl);
    if ttl > profile.max_ttl {
        reasons.push(Reason::new(
            ReasonCode::TtlTooLong,
            format!(
                "requested ttl {} exceeds max_ttl {} of profile {name}",
                format_duration(ttl),
                format_duration(profile.max_ttl)
            ),
        ));
    }
    if ttl < MIN_TTL {
        reasons.push(Reason::new(
            ReasonCode::TtlTooShort,
            format!(
                "requested ttl {} is below the minimum of {}",
                format_duration(ttl),
                format_duration(MIN_TTL)
            ),
        ));
    }
    ttl
}

pub(crate) fn decide(policy: &ClassPolicy, req: &Request<'_>) -> Decision {
    let csr = req.csr;
    let class = &policy.name;
    let mut reasons = Vec::new();

    let profile_name = match req.profile {
        None | Some("") => policy.default_profile.as_str(),
        Some(p) => p,
    };
    let profile = policy.profile(profile_name);
    if profile.is_none() {
        let known: Vec<&str> = policy.profiles().map(|(n, _)| n).collect();
        reasons.push(Reason::new(
            ReasonCode::UnknownProfile,
            format!(
                "profile {} is not defined in class {class} (defined: {})",
                quoted(profile_name),
                known.join(", ")
            ),
        ));
    }

    if csr.requests_ca {
        reasons.push(Reason::new(
            ReasonCode::CaRequested,
            format!("the CSR asks for basicConstraints CA:TRUE; class {class} issues leaf certificates only"),
        ));
    }

    check_key(policy, &csr.key, &mut reasons);
    if !policy.signature_algorithms.contains(&csr.signature) {
        reasons.push(Reason::new(
            ReasonCode::SignatureAlgorithmNotAllowed,
            format!(
                "CSR signature algorithm {} is not allowed in class {class}",
                quoted(csr.signature.name())
            ),
        ));
    }

    let requested = Requested::of(req);
    let cn = csr.common_name.as_deref().filter(|s| !s.is_empty());
    if requested.is_empty() && cn.is_none() {
        reasons.push(Reason::new(
            ReasonCode::NoNames,
            "the request names nothing: no SANs and no common name".to_owned(),
        ));
    }

    let mut c = Checker {
        policy,
        reasons,
        dns: Vec::new(),
        ips: Vec::new(),
        uris: Vec::new(),
        invalid: Vec::new(),
    };
    for raw in &requested.dns {
        c.dns_name(raw, "DNS name");
    }
    for ip in &requested.ips {
        c.ip(*ip, "IP address");
    }
    for raw in &requested.uris {
        c.uri(raw);
    }
    let common_name = c.common_name(cn);

    let san_count = c.dns.len() + c.ips.len() + c.uris.len() + c.invalid.len();
    if san_count > policy.max_sans {
        c.deny(
            ReasonCode::TooManySans,
            format!(
                "{san_count} SANs requested; class {class} allows at most {}",
                policy.max_sans
            ),
        );
    }

    let mut reasons = c.reasons;
    let ttl = profile.map(|p| check_ttl(req, profile_name, p, &mut reasons));

    match (profile, ttl) {
        (Some(profile), Some(ttl)) if reasons.is_empty() => {
            Decision::Grant(Grant::from_parts(GrantParts {
                class: class.clone(),
                profile: profile_name.to_owned(),
                common_name,
                dns_names: c.dns,
                ip_addrs: c.ips,
                uris: c.uris,
                key_usages: profile
                    .key_usages
                    .iter()
                    .copied()
                    .filter(|u| usable_by(&csr.key, *u))
                    .collect(),
                ext_key_usages: profile.ext_key_usages.clone(),
                ttl,
                crl_url: policy.crl_url.clone(),
            }))
        }
        _ => Decision::Deny(reasons),
    }
}
