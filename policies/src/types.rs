//! The vocabulary shared by the policy engine and its callers: key and
//! signature algorithms, key usages, the facts taken from a CSR, a request,
//! and the decision (grant or denial with reasons).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

/// The public-key algorithm of a CSR's subject public key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256.
    EcP256,
    /// ECDSA on NIST P-384.
    EcP384,
    /// Ed25519.
    Ed25519,
    /// RSA with a modulus of `bits` bits.
    Rsa { bits: u32 },
    /// Anything else, described for humans (e.g. `"EC secp192r1"`). Never allowed.
    Other(String),
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAlgorithm::EcP256 => f.write_str("ec-p256"),
            KeyAlgorithm::EcP384 => f.write_str("ec-p384"),
            KeyAlgorithm::Ed25519 => f.write_str("ed25519"),
            KeyAlgorithm::Rsa { bits } => write!(f, "rsa-{bits}"),
            KeyAlgorithm::Other(s) => f.write_str(s),
        }
    }
}

impl Serialize for KeyAlgorithm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The algorithm of the CSR's self-signature.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    EcdsaSha256,
    EcdsaSha384,
    EcdsaSha512,
    Ed25519,
    RsaPkcs1Sha256,
    RsaPkcs1Sha384,
    RsaPkcs1Sha512,
    RsaPssSha256,
    RsaPssSha384,
    RsaPssSha512,
    /// Anything else, described for humans (e.g. `"sha1WithRSAEncryption"`). Never allowed.
    Other(String),
}

impl SignatureAlgorithm {
    /// Every algorithm a policy may allow; the default list (no SHA-1, ever).
    pub const KNOWN: [SignatureAlgorithm; 10] = [
        SignatureAlgorithm::EcdsaSha256,
        SignatureAlgorithm::EcdsaSha384,
        SignatureAlgorithm::EcdsaSha512,
        SignatureAlgorithm::Ed25519,
        SignatureAlgorithm::RsaPkcs1Sha256,
        SignatureAlgorithm::RsaPkcs1Sha384,
        SignatureAlgorithm::RsaPkcs1Sha512,
        SignatureAlgorithm::RsaPssSha256,
        SignatureAlgorithm::RsaPssSha384,
        SignatureAlgorithm::RsaPssSha512,
    ];

    /// The policy-file name (`"ecdsa-sha256"`, …); `Other` gives its description.
    pub fn name(&self) -> &str {
        match self {
            SignatureAlgorithm::EcdsaSha256 => "ecdsa-sha256",
            SignatureAlgorithm::EcdsaSha384 => "ecdsa-sha384",
            SignatureAlgorithm::EcdsaSha512 => "ecdsa-sha512",
            SignatureAlgorithm::Ed25519 => "ed25519",
            SignatureAlgorithm::RsaPkcs1Sha256 => "rsa-pkcs1-sha256",
            SignatureAlgorithm::RsaPkcs1Sha384 => "rsa-pkcs1-sha384",
            SignatureAlgorithm::RsaPkcs1Sha512 => "rsa-pkcs1-sha512",
            SignatureAlgorithm::RsaPssSha256 => "rsa-pss-sha256",
            SignatureAlgorithm::RsaPssSha384 => "rsa-pss-sha384",
            SignatureAlgorithm::RsaPssSha512 => "rsa-pss-sha512",
            SignatureAlgorithm::Other(s) => s,
        }
    }

    /// Parses a policy-file name; `None` for anything not in [`Self::KNOWN`].
    pub fn from_name(name: &str) -> Option<SignatureAlgorithm> {
        Self::KNOWN.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for SignatureAlgorithm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for SignatureAlgorithm {
    /// Only the names in [`SignatureAlgorithm::KNOWN`]; `Other` is never
    /// read from a policy.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Known;
        impl serde::de::Visitor<'_> for Known {
            type Value = SignatureAlgorithm;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a signature algorithm name")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<SignatureAlgorithm, E> {
                SignatureAlgorithm::from_name(s).ok_or_else(|| {
                    let known: Vec<&str> =
                        SignatureAlgorithm::KNOWN.iter().map(|a| a.name()).collect();
                    E::custom(format!(
                        "unknown signature algorithm `{s}`, expected one of {}",
                        known.join(", ")
                    ))
                })
            }
        }
        d.deserialize_str(Known)
    }
}

/// Key usages a leaf profile may grant. There is deliberately no keyCertSign
/// or cRLSign: a leaf is never a CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyUsage {
    DigitalSignature,
    KeyEncipherment,
    KeyAgreement,
    ContentCommitment,
    DataEncipherment,
}

impl KeyUsage {
    /// The policy-file name (`"digital_signature"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            KeyUsage::DigitalSignature => "digital_signature",
            KeyUsage::KeyEncipherment => "key_encipherment",
            KeyUsage::KeyAgreement => "key_agreement",
            KeyUsage::ContentCommitment => "content_commitment",
            KeyUsage::DataEncipherment => "data_encipherment",
        }
    }
}

impl fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Extended key usages a profile may grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtKeyUsage {
    ServerAuth,
    ClientAuth,
    CodeSigning,
    EmailProtection,
}

impl ExtKeyUsage {
    /// The policy-file name (`"server_auth"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            ExtKeyUsage::ServerAuth => "server_auth",
            ExtKeyUsage::ClientAuth => "client_auth",
            ExtKeyUsage::CodeSigning => "code_signing",
            ExtKeyUsage::EmailProtection => "email_protection",
        }
    }
}

impl fmt::Display for ExtKeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the server extracted from a CSR whose self-signature already verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrFacts {
    /// The subject common name, if any (`Some("")` counts as absent).
    pub common_name: Option<String>,
    /// Raw, un-normalised DNS names from the CSR's requested SAN extension.
    pub dns_names: Vec<String>,
    pub ip_addrs: Vec<IpAddr>,
    pub uris: Vec<String>,
    pub key: KeyAlgorithm,
    pub signature: SignatureAlgorithm,
    /// The CSR asked for basicConstraints CA:TRUE. Such a request is denied
    /// (reason `ca_requested`) rather than silently downgraded, so that a
    /// client learns it cannot get a CA certificate from a leaf class.
    pub requests_ca: bool,
}

/// One signing request, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `None` or `Some("")` = the class's default profile.
    pub profile: Option<&'a str>,
    pub csr: &'a CsrFacts,
    /// Client-supplied hosts that REPLACE the CSR's SANs (CFSSL semantics).
    /// `None` = keep the CSR's SANs; `Some(empty)` = no SANs. Each string is
    /// classified: parses as an IP -> IP SAN; contains `"://"` -> URI SAN;
    /// else a DNS name.
    pub hosts: Option<&'a [String]>,
    /// Requested lifetime; `None` = the profile's default.
    pub ttl: Option<Duration>,
}

/// The outcome of [`crate::ClassPolicy::decide`].
// A Decision lives for one request and is matched at once; boxing the grant
// would add an allocation per issuance to save stack bytes nobody keeps.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Grant(Grant),
    /// Every rule the request broke (never empty).
    Deny(Vec<Reason>),
}

/// Exactly what may go into the certificate; the builder copies nothing else
/// from the CSR except its public key.
///
/// Sealed: its fields are private and only the policy engine
/// ([`crate::ClassPolicy::decide`]) makes one, so a `Grant` anywhere is a
/// decision this crate took. Code outside cannot forge one:
///
/// ```compile_fail
/// let forged = policies::Grant {
///     class: "db".into(),
///     profile: "server".into(),
///     common_name: None,
///     dns_names: vec!["anything.example".into()],
///     ip_addrs: vec![],
///     uris: vec![],
///     key_usages: vec![],
///     ext_key_usages: vec![],
///     ttl: std::time::Duration::from_secs(3600),
/// };
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    class: String,
    profile: String,
    /// Normalised; present only when the class's CN rule allows it.
    common_name: Option<String>,
    /// Normalised (lowercase, no trailing dot, A-labels), deduplicated, order preserved.
    dns_names: Vec<String>,
    ip_addrs: Vec<IpAddr>,
    /// Scheme and authority lowercased, deduplicated, order preserved.
    uris: Vec<String>,
    /// The profile's key usages that the key type can perform (RFC 8813:
    /// no keyEncipherment on EC keys).
    key_usages: Vec<KeyUsage>,
    ext_key_usages: Vec<ExtKeyUsage>,
    /// Serialised as whole seconds.
    #[serde(serialize_with = "serialize_secs")]
    ttl: Duration,
    /// The class's public CRL base URL (policy `crl_url`): the leaf's CRL
    /// distribution point is this plus the issuing intermediate's label.
    #[serde(skip_serializing_if = "Option::is_none")]
    crl_url: Option<String>,
}

/// The parts of a [`Grant`], for the one place that makes grants (and, with
/// the `testing` feature, for other crates' tests).
pub(crate) struct GrantParts {
    pub class: String,
    pub profile: String,
    pub common_name: Option<String>,
    pub dns_names: Vec<String>,
    pub ip_addrs: Vec<IpAddr>,
    pub uris: Vec<String>,
    pub key_usages: Vec<KeyUsage>,
    pub ext_key_usages: Vec<ExtKeyUsage>,
    pub ttl: Duration,
    pub crl_url: Option<String>,
}

impl Grant {
    pub(crate) fn from_parts(p: GrantParts) -> Grant {
        Grant {
            class: p.class,
            profile: p.profile,
            common_name: p.common_name,
            dns_names: p.dns_names,
            ip_addrs: p.ip_addrs,
            uris: p.uris,
            key_usages: p.key_usages,
            ext_key_usages: p.ext_key_usages,
            ttl: p.ttl,
            crl_url: p.crl_url,
        }
    }

    /// The same grant with the class's public CRL base URL, for other
    /// crates' unit tests only.
    #[cfg(feature = "testing")]
    pub fn with_crl_url_for_tests(mut self, url: &str) -> Grant {
        self.crl_url = Some(url.to_string());
        self
    }

    /// A grant made by hand, for other crates' unit tests only (the
    /// `testing` feature is enabled by dev-dependencies, never in a build
    /// that ships).
    #[cfg(feature = "testing")]
    #[allow(clippy::too_many_arguments)]
    pub fn for_tests(
        class: &str,
        profile: &str,
        common_name: Option<&str>,
        dns_names: &[&str],
        ip_addrs: &[IpAddr],
        uris: &[&str],
        key_usages: &[KeyUsage],
        ext_key_usages: &[ExtKeyUsage],
        ttl: Duration,
    ) -> Grant {
        Grant::from_parts(GrantParts {
            class: class.into(),
            profile: profile.into(),
            common_name: common_name.map(Into::into),
            dns_names: dns_names.iter().map(|s| s.to_string()).collect(),
            ip_addrs: ip_addrs.to_vec(),
            uris: uris.iter().map(|s| s.to_string()).collect(),
            key_usages: key_usages.to_vec(),
            ext_key_usages: ext_key_usages.to_vec(),
            ttl,
            crl_url: None,
        })
    }

    pub fn class(&self) -> &str {
        &self.class
    }
    /// The class's public CRL base URL, when its policy names one.
    pub fn crl_url(&self) -> Option<&str> {
        self.crl_url.as_deref()
    }
    pub fn profile(&self) -> &str {
        &self.profile
    }
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
    }
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }
    pub fn ip_addrs(&self) -> &[IpAddr] {
        &self.ip_addrs
    }
    pub fn uris(&self) -> &[String] {
        &self.uris
    }
    pub fn key_usages(&self) -> &[KeyUsage] {
        &self.key_usages
    }
    pub fn ext_key_usages(&self) -> &[ExtKeyUsage] {
        &self.ext_key_usages
    }
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

fn serialize_secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// One broken rule: a stable code and a human detail naming the offending value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub code: ReasonCode,
    pub detail: String,
}

impl Reason {
    pub(crate) fn new(code: ReasonCode, detail: impl Into<String>) -> Reason {
        Reason {
            code,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

/// Stable machine-readable denial codes (snake_case on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    UnknownProfile,
    NameNotAllowed,
    WildcardNotAllowed,
    InvalidName,
    IpNotAllowed,
    UriNotAllowed,
    CommonNameNotAllowed,
    TooManySans,
    NoNames,
    KeyAlgorithmNotAllowed,
    KeyTooSmall,
    SignatureAlgorithmNotAllowed,
    TtlTooLong,
    TtlTooShort,
    CaRequested,
}

impl ReasonCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ReasonCode; 15] = [
        ReasonCode::UnknownProfile,
        ReasonCode::NameNotAllowed,
        ReasonCode::WildcardNotAllowed,
        ReasonCode::InvalidName,
        ReasonCode::IpNotAllowed,
        ReasonCode::UriNotAllowed,
        ReasonCode::CommonNameNotAllowed,
        ReasonCode::TooManySans,
        ReasonCode::NoNames,
        ReasonCode::KeyAlgorithmNotAllowed,
        ReasonCode::KeyTooSmall,
        ReasonCode::SignatureAlgorithmNotAllowed,
        ReasonCode::TtlTooLong,
        ReasonCode::TtlTooShort,
        ReasonCode::CaRequested,
    ];

    /// The stable snake_case code, e.g. `"name_not_allowed"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReasonCode::UnknownProfile => "unknown_profile",
            ReasonCode::NameNotAllowed => "name_not_allowed",
            ReasonCode::WildcardNotAllowed => "wildcard_not_allowed",
            ReasonCode::InvalidName => "invalid_name",
            ReasonCode::IpNotAllowed => "ip_not_allowed",
            ReasonCode::UriNotAllowed => "uri_not_allowed",
            ReasonCode::CommonNameNotAllowed => "common_name_not_allowed",
            ReasonCode::TooManySans => "too_many_sans",
            ReasonCode::NoNames => "no_names",
            ReasonCode::KeyAlgorithmNotAllowed => "key_algorithm_not_allowed",
            ReasonCode::KeyTooSmall => "key_too_small",
            ReasonCode::SignatureAlgorithmNotAllowed => "signature_algorithm_not_allowed",
            ReasonCode::TtlTooLong => "ttl_too_long",
            ReasonCode::TtlTooShort => "ttl_too_short",
            ReasonCode::CaRequested => "ca_requested",
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
