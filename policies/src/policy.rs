//! A validated class policy and its profiles: the in-memory form that
//! decisions are made against (built only by [`ClassPolicy::parse`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::names::DnsPattern;
use crate::types::{ExtKeyUsage, KeyAlgorithm, KeyUsage, SignatureAlgorithm};
use crate::uris::UriPattern;
use crate::{decide, file, Decision, PolicyError, Request};

/// Shortest lifetime a profile may set or a request may ask for.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// Longest lifetime a profile may set (398 days, the public-web ceiling).
pub const MAX_PROFILE_TTL: Duration = Duration::from_secs(398 * 86_400);

/// A key algorithm family a class may allow (`keys.allowed` in TOML).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    EcP256,
    EcP384,
    Ed25519,
    /// Any RSA modulus of at least `keys.rsa_min_bits`.
    Rsa,
}

impl KeyKind {
    /// The family of a CSR key; `None` for [`KeyAlgorithm::Other`].
    pub fn of(key: &KeyAlgorithm) -> Option<KeyKind> {
        match key {
            KeyAlgorithm::EcP256 => Some(KeyKind::EcP256),
            KeyAlgorithm::EcP384 => Some(KeyKind::EcP384),
            KeyAlgorithm::Ed25519 => Some(KeyKind::Ed25519),
            KeyAlgorithm::Rsa { .. } => Some(KeyKind::Rsa),
            KeyAlgorithm::Other(_) => None,
        }
    }

    /// The policy-file name.
    pub fn name(&self) -> &'static str {
        match self {
            KeyKind::EcP256 => "ec-p256",
            KeyKind::EcP384 => "ec-p384",
            KeyKind::Ed25519 => "ed25519",
            KeyKind::Rsa => "rsa",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a class allows in the subject common name (`names.common_name`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommonNameRule {
    /// A CN, if present, must equal one of the requested SANs (after normalisation).
    #[default]
    MustBeSan,
    /// Any CN is denied.
    Forbidden,
    /// The CN is checked like a requested name (DNS or IP) and added to the
    /// SANs if missing.
    AnyAllowedName,
}

/// One named profile: what a certificate is for and how long it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub key_usages: Vec<KeyUsage>,
    pub ext_key_usages: Vec<ExtKeyUsage>,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
}

/// The validated policy of one class (one `<class>.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassPolicy {
    pub name: String,
    pub(crate) description: String,
    /// Public base URL of the class's CRLs; leaves then carry the CRL
    /// distribution point `<crl_url>/<intermediate key label>`.
    pub(crate) crl_url: Option<String>,
    pub(crate) dns: Vec<DnsPattern>,
    pub(crate) allow_wildcard_certs: bool,
    pub(crate) ip_cidrs: Vec<IpNet>,
    pub(crate) uris: Vec<UriPattern>,
    pub(crate) common_name: CommonNameRule,
    pub(crate) max_sans: usize,
    pub(crate) keys: Vec<KeyKind>,
    pub(crate) rsa_min_bits: u32,
    pub(crate) signature_algorithms: Vec<SignatureAlgorithm>,
    pub(crate) default_profile: String,
    pub(crate) profiles: BTreeMap<String, Profile>,
}

impl ClassPolicy {
    /// Parses and validates one policy file. `class_name` must match
    /// `[a-z0-9-]{1,32}`; `file_name` is used only in error messages.
    pub fn parse(
        class_name: &str,
        file_name: &str,
        toml_text: &str,
    ) -> Result<ClassPolicy, PolicyError> {
        file::parse(class_name, file_name, toml_text)
    }

    /// Decides a request against this class. Every broken rule is reported.
    pub fn decide(&self, req: &Request<'_>) -> Decision {
        decide::decide(self, req)
    }

    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    pub fn default_profile(&self) -> &str {
        &self.default_profile
    }

    /// Profiles in name order.
    pub fn profiles(&self) -> impl Iterator<Item = (&str, &Profile)> {
        self.profiles.iter().map(|(n, p)| (n.as_str(), p))
    }

    /// The longest `max_ttl` of any profile.
    pub fn max_ttl(&self) -> Duration {
        self.profiles
            .values()
            .map(|p| p.max_ttl)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// Public base URL of the class's CRLs (`crl_url`), if named.
    pub fn crl_url(&self) -> Option<&str> {
        self.crl_url.as_deref()
    }

    pub fn dns_patterns(&self) -> &[DnsPattern] {
        &self.dns
    }

    pub fn allow_wildcard_certs(&self) -> bool {
        self.allow_wildcard_certs
    }

    pub fn ip_cidrs(&self) -> &[IpNet] {
        &self.ip_cidrs
    }

    pub fn uri_patterns(&self) -> &[UriPattern] {
        &self.uris
    }

    pub fn common_name_rule(&self) -> CommonNameRule {
        self.common_name
    }

    pub fn max_sans(&self) -> usize {
        self.max_sans
    }

    pub fn allowed_keys(&self) -> &[KeyKind] {
        &self.keys
    }

    pub fn rsa_min_bits(&self) -> u32 {
        self.rsa_min_bits
    }

    pub fn signature_algorithms(&self) -> &[SignatureAlgorithm] {
        &self.signature_algorithms
    }
}

/// Whether `name` is an acceptable class or profile name: `[a-z0-9-]{1,32}`.
pub fn valid_identifier(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
