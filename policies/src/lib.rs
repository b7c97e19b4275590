//! Trellis policy engine: parses class policies (`policies/classes/*.toml`)
//! and decides signing requests against them, returning a [`Grant`] holding
//! exactly what may be certified or a denial with every reason.
//!
//! Pure: no filesystem, network or clock access, except [`load_dir`].

mod decide;
mod detail;
mod error;
mod file;
mod load;
mod names;
mod policy;
mod set;
mod types;
mod uris;

pub use decide::HostKind;
pub use error::PolicyError;
pub use load::load_dir;
pub use names::{normalize_dns_name, DnsPattern, NameError};
pub use policy::{ClassPolicy, CommonNameRule, KeyKind, Profile, MAX_PROFILE_TTL, MIN_TTL};
pub use set::PolicySet;
pub use types::{
    CsrFacts, Decision, ExtKeyUsage, Grant, KeyAlgorithm, KeyUsage, Reason, ReasonCode, Request,
    SignatureAlgorithm,
};
pub use uris::{normalize_uri, UriError, UriPattern};

/// The class policies shipped with Trellis, as `(class, TOML text)`, for
/// writing into a development deployment.
pub const SHIPPED: &[(&str, &str)] = &[
    ("api", include_str!("../classes/api.toml")),
    ("ca", include_str!("../classes/ca.toml")),
    ("db", include_str!("../classes/db.toml")),
    ("web", include_str!("../classes/web.toml")),
];
