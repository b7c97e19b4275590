//! The TOML schema of a class policy file (`policies/classes/<class>.toml`),
//! parsing it, and validating it into a [`ClassPolicy`], with every error
//! naming the file and line.
//!
//! ```toml
//! description = "Database tier"           # optional
//! crl_url = "https://ca.internal:8443/v1/classes/db/crl"  # optional: leaves carry
//!                                         # the CRL distribution point <crl_url>/<intermediate>
//! default_profile = "server"              # required; must name a profile below
//! [names]                                 # optional table; everything defaults to "deny"
//! dns = ["*.db.internal", "db.internal"]  # exact names and "*.suffix" (exactly one extra label)
//! allow_wildcard_certs = false            # may a requested name itself be "*.suffix"? (default false)
//! ip_cidrs = []                           # allowed IP SAN ranges (default none: every IP SAN denied)
//! uris = ["spiffe://trellis.internal/db/*"]  # exact URIs or "prefix/*"
//! common_name = "must_be_san"             # or "forbidden", "any_allowed_name" (default must_be_san)
//! max_sans = 10                           # 1..=100 (default 10)
//! [keys]                                  # optional table
//! allowed = ["ec-p256", "ec-p384", "ed25519", "rsa"]   # default: all four
//! rsa_min_bits = 2048                     # 2048..=16384 (default 2048)
//! signature_algorithms = ["ecdsa-sha256", ...]         # default: every known one (never SHA-1)
//! [profiles.server]                       # at least one profile; names [a-z0-9-]{1,32}
//! key_usages = ["digital_signature"]      # non-empty; leaf usages only
//! ext_key_usages = ["server_auth"]        # non-empty
//! default_ttl = "24h"                     # "<n>s|m|h|d", 60s ..= max_ttl
//! max_ttl = "72h"                         # ..= 398d
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt::Display;
use std::hash::Hash;
use std::ops::Range;
use std::time::Duration;

use ca_proto::duration::{format_duration, parse_duration_strict};
use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::error::line_col;
use crate::names::DnsPattern;
use crate::policy::{valid_identifier, CommonNameRule, KeyKind, MAX_PROFILE_TTL, MIN_TTL};
use crate::types::{ExtKeyUsage, KeyUsage, SignatureAlgorithm};
use crate::uris::UriPattern;
use crate::{ClassPolicy, PolicyError, Profile};

const DEFAULT_MAX_SANS: u32 = 10;
const MAX_MAX_SANS: u32 = 100;
const DEFAULT_RSA_MIN_BITS: u32 = 2048;
const MAX_RSA_MIN_BITS: u32 = 16384;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    #[serde(default)]
    description: String,
    #[serde(default)]
    crl_url: Option<Spanned<String>>,
    default_profile: Spanned<String>,
    #[serde(default)]
    names: RawNames,
    #[serde(default)]
    keys: RawKeys,
    profiles: BTreeMap<String, Spanned<RawProfile>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNames {
    #[serde(default)]
    dns: Vec<Spanned<String>>,
    #[serde(default)]
    allow_wildcard_certs: bool,
    #[serde(default)]
    ip_cidrs: Vec<Spanned<String>>,
    #[serde(default)]
    uris: Vec<Spanned<String>>,
    #[serde(default)]
    common_name: CommonNameRule,
    max_sans: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    allowed: Option<Spanned<Vec<Spanned<KeyKind>>>>,
    rsa_min_bits: Option<Spanned<u32>>,
    signature_algorithms: Option<Spanned<Vec<Spanned<SignatureAlgorithm>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    key_usages: Spanned<Vec<Spanned<KeyUsage>>>,
    ext_key_usages: Spanned<Vec<Spanned<ExtKeyUsage>>>,
    default_ttl: Spanned<String>,
    max_ttl: Spanned<String>,
}

/// Where errors point: the file's name and text (for byte offset -> line).
struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn invalid(&self, span: Option<Range<usize>>, message: impl Into<String>) -> PolicyError {
        PolicyError::Invalid {
            file: self.file.to_owned(),
            line: span.map(|s| line_col(self.text, s.start).0),
            message: message.into(),
        }
    }

    fn at(&self, span: Range<usize>, message: impl Into<String>) -> PolicyError {
        self.invalid(Some(span), message)
    }
}

pub(crate) fn parse(
    class_name: &str,
    file_name: &str,
    text: &str,
) -> Result<ClassPolicy, PolicyError> {
    let ctx = Ctx {
        file: file_name,
        text,
    };
    if !valid_identifier(class_name) {
        return Err(ctx.invalid(
            None,
            format!("class name {class_name:?} must match [a-z0-9-]{{1,32}}"),
        ));
    }
    let raw: RawClass = toml::from_str(text).map_err(|e| match e.span() {
        Some(span) => {
            let (line, column) = line_col(text, span.start);
            PolicyError::Syntax {
                file: file_name.to_owned(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        }
        None => ctx.invalid(None, e.message().trim().to_owned()),
    })?;
    build(&ctx, class_name, raw)
}

fn build(ctx: &Ctx<'_>, class_name: &str, raw: RawClass) -> Result<ClassPolicy, PolicyError> {
    let names = raw.names;

    let mut dns = Vec::new();
    for p in &names.dns {
        let pattern = DnsPattern::parse(p.get_ref()).map_err(|e| {
            ctx.at(
                p.span(),
                format!("invalid DNS pattern {:?}: {e}", p.get_ref()),
            )
        })?;
        dns.push(pattern);
    }
    no_duplicates(
        ctx,
        "names.dns",
        names.dns.iter().zip(&dns).map(|(s, v)| (s.span(), v)),
    )?;

    let mut ip_cidrs = Vec::new();
    for c in &names.ip_cidrs {
        let net: IpNet = c.get_ref().parse().map_err(|_| {
            ctx.at(
                c.span(),
                format!(
                    "invalid CIDR {:?}: expected e.g. \"10.1.0.0/16\" or \"fd00::/8\"",
                    c.get_ref()
                ),
            )
        })?;
        if net.trunc() != net {
            return Err(ctx.at(
                c.span(),
                format!(
                    "CIDR {:?} has host bits set; did you mean \"{}\"?",
                    c.get_ref(),
                    net.trunc()
                ),
            ));
        }
        ip_cidrs.push(net);
    }
    no_duplicates(
        ctx,
        "names.ip_cidrs",
        names
            .ip_cidrs
            .iter()
            .zip(&ip_cidrs)
            .map(|(s, v)| (s.span(), v)),
    )?;

    let mut uris = Vec::new();
    for u in &names.uris {
        let pattern = UriPattern::parse(u.get_ref()).map_err(|e| {
            ctx.at(
                u.span(),
                format!("invalid URI pattern {:?}: {e}", u.get_ref()),
            )
        })?;
        uris.push(pattern);
    }
    no_duplicates(
        ctx,
        "names.uris",
        names.uris.iter().zip(&uris).map(|(s, v)| (s.span(), v)),
    )?;

    let max_sans = match &names.max_sans {
        None => DEFAULT_MAX_SANS,
        Some(m) if (1..=MAX_MAX_SANS).contains(m.get_ref()) => *m.get_ref(),
        Some(m) => {
            return Err(ctx.at(
                m.span(),
                format!("max_sans must be between 1 and {MAX_MAX_SANS}"),
            ));
        }
    };

    let keys = match raw.keys.allowed {
        None => vec![
            KeyKind::EcP256,
            KeyKind::EcP384,
            KeyKind::Ed25519,
            KeyKind::Rsa,
        ],
        Some(list) => non_empty_unique(ctx, "keys.allowed", list)?,
    };
    let rsa_min_bits = match &raw.keys.rsa_min_bits {
        None => DEFAULT_RSA_MIN_BITS,
        Some(b) if (DEFAULT_RSA_MIN_BITS..=MAX_RSA_MIN_BITS).contains(b.get_ref()) => *b.get_ref(),
        Some(b) => {
            return Err(ctx.at(
                b.span(),
                format!(
                    "rsa_min_bits must be between {DEFAULT_RSA_MIN_BITS} and {MAX_RSA_MIN_BITS}"
                ),
            ));
        }
    };
    let signature_algorithms = match raw.keys.signature_algorithms {
        None => SignatureAlgorithm::KNOWN.to_vec(),
        Some(list) => non_empty_unique(ctx, "keys.signature_algorithms", list)?,
    };

    let mut profiles = BTreeMap::new();
    for (name, p) in raw.profiles {
        let span = p.span();
        if !valid_identifier(&name) {
            return Err(ctx.at(
                span,
                format!("profile name {name:?} must match [a-z0-9-]{{1,32}}"),
            ));
        }
        let profile = build_profile(ctx, &name, p.into_inner())?;
        profiles.insert(name, profile);
    }
    if profiles.is_empty() {
        return Err(ctx.invalid(
            None,
            "at least one profile must be defined under [profiles]",
        ));
    }
    let default_profile = raw.default_profile.get_ref().clone();
    if !profiles.contains_key(&default_profile) {
        return Err(ctx.at(
            raw.default_profile.span(),
            format!("default_profile {default_profile:?} is not defined under [profiles]"),
        ));
    }

    let crl_url = match &raw.crl_url {
        None => None,
        Some(url) => {
            let text = url.get_ref();
            let ok = (text.starts_with("http://") || text.starts_with("https://"))
                && text.len() <= 512
                && text.is_ascii()
                && !text
                    .chars()
                    .any(|c| c.is_ascii_whitespace() || c.is_ascii_control());
            if !ok {
                return Err(ctx.at(
                    url.span(),
                    "crl_url must be an http:// or https:// URL of at most 512 printable ASCII characters",
                ));
            }
            Some(text.trim_end_matches('/').to_owned())
        }
    };
    Ok(ClassPolicy {
        name: class_name.to_owned(),
        description: raw.description,
        crl_url,
        dns,
        allow_wildcard_certs: names.allow_wildcard_certs,
        ip_cidrs,
        uris,
        common_name: names.common_name,
        max_sans: max_sans as usize,
        keys,
        rsa_min_bits,
        signature_algorithms,
        default_profile,
        profiles,
    })
}

fn build_profile(ctx: &Ctx<'_>, name: &str, raw: RawProfile) -> Result<Profile, PolicyError> {
    let key_usages = non_empty_unique(ctx, &format!("profiles.{name}.key_usages"), raw.key_usages)?;
    let ext_key_usages = non_empty_unique(
        ctx,
        &format!("profiles.{name}.ext_key_usages"),
        raw.ext_key_usages,
    )?;
    let ttl = |s: &Spanned<String>, field: &str| -> Result<Duration, PolicyError> {
        let d = parse_duration_strict(s.get_ref()).map_err(|e| {
            let shown = s.get_ref();
            ctx.at(
                s.span(),
                format!("profiles.{name}.{field}: invalid duration {shown:?}: {e}"),
            )
        })?;
        if d < MIN_TTL {
            return Err(ctx.at(
                s.span(),
                format!(
                    "profiles.{name}.{field} must be at least {}",
                    format_duration(MIN_TTL)
                ),
            ));
        }
        if d > MAX_PROFILE_TTL {
            return Err(ctx.at(
                s.span(),
                format!(
                    "profiles.{name}.{field} must be at most {}",
                    format_duration(MAX_PROFILE_TTL)
                ),
            ));
        }
        Ok(d)
    };
    let default_ttl = ttl(&raw.default_ttl, "default_ttl")?;
    let max_ttl = ttl(&raw.max_ttl, "max_ttl")?;
    if default_ttl > max_ttl {
        return Err(ctx.at(
            raw.default_ttl.span(),
            format!(
                "profiles.{name}.default_ttl ({}) is longer than max_ttl ({})",
                format_duration(default_ttl),
                format_duration(max_ttl)
            ),
        ));
    }
    Ok(Profile {
        key_usages,
        ext_key_usages,
        default_ttl,
        max_ttl,
    })
}

/// A list that must be non-empty and free of repeats.
fn non_empty_unique<T: Eq + Hash + Clone + Display>(
    ctx: &Ctx<'_>,
    field: &str,
    list: Spanned<Vec<Spanned<T>>>,
) -> Result<Vec<T>, PolicyError> {
    if list.get_ref().is_empty() {
        return Err(ctx.at(list.span(), format!("{field} must not be empty")));
    }
    no_duplicates(
        ctx,
        field,
        list.get_ref().iter().map(|v| (v.span(), v.get_ref())),
    )?;
    Ok(list
        .into_inner()
        .into_iter()
        .map(Spanned::into_inner)
        .collect())
}

fn no_duplicates<'v, T: Eq + Hash + Display + 'v>(
    ctx: &Ctx<'_>,
    field: &str,
    items: impl Iterator<Item = (Range<usize>, &'v T)>,
) -> Result<(), PolicyError> {
    let mut seen = HashSet::new();
    for (span, v) in items {
        if !seen.insert(v) {
            return Err(ctx.at(span, format!("{field}: duplicate entry \"{v}\"")));
        }
    }
    Ok(())
}
