//! Configuration: a TOML file and/or command-line flags, merged (flags win)
//! and validated into [`Settings`].
//!
//! Every key of the file (unknown keys are errors; relative paths are
//! relative to the file's directory):
//!
//! ```toml
//! ca = ["https://ca-1:8443", "https://ca-2:8443"]  # tried in order (failover)
//! ca_root = "/etc/trellis/ca-root.pem"    # the `ca` class root (TLS trust)
//! ca_root_sha256 = "ab12…"                # or/and: pin of that root for first contact
//! class = "db"
//! profile = "server"                      # optional: the class default
//! key_id = "db"
//! key_secret_file = "/run/secrets/trellis-db.hex"
//! dns = ["a.db.internal"]                 # names → CSR SANs and `hosts`
//! ip = ["10.1.2.3"]
//! uri = ["spiffe://trellis.internal/db/a"]
//! common_name = "a.db.internal"           # optional; default the first DNS name, "" for none
//! ttl = "24h"                             # optional: the profile default
//! key_algorithm = "ec-p256"               # ec-p256 | ec-p384 | ed25519 | rsa (pre-provisioned only)
//! rotate_key = true                       # a new key on every renewal
//! out = "/var/run/trellis"                # key.pem, cert.pem, chain.pem, fullchain.pem, combined.pem
//! key_file = "/etc/svc/tls.key"           # optional extra links to the files
//! cert_file = "/etc/svc/tls.crt"          #   (also chain_file, fullchain_file, combined_file)
//! trust = ["api"]                         # peer classes: DIR/trust/<class>.pem (+ <class>.crl.pem)
//! trust_dir = "/var/run/trellis/trust"    # optional
//! owner = "svc"                           # name or numeric id (needs privileges)
//! group = "svc"
//! key_mode = 0o600                        # or "0600"
//! cert_mode = 0o644
//! renew_fraction = 0.6667                 # 0.05 ..= 0.95
//! crl_refresh = "60s"                     # CRL refresh interval (>= 1s; see below)
//! on_renew = "systemctl reload svc"       # reload command, or:
//! reload_signal = "HUP"                   #   a signal …
//! reload_pidfile = "/run/svc.pid"         #   … to the PID in this file
//! reload_timeout = "30s"
//! metrics_listen = "127.0.0.1:9901"
//! require_inclusion_proof = true          # default: refuse certificates without verified log evidence
//! log_public_key = "/etc/trellis/log-key.pem"  # optional pin; else fetched from the CA over TLS
//! secret_file_mode = "strict"             # or "group-readable" (0640/0440 secret mounts)
//! state_dir = "/var/run/trellis/.state"   # pinned class roots (default OUT/.state)
//! [class_root_sha256]                     # optional: pins for first contact, per class
//! db = ["ab12…"]                          #   (own class and trust classes)
//! ```
//!
//! `crl_refresh` is how often the CRLs of the trust classes (written to
//! `trust/<class>.crl.pem`) and of the own class (to notice its own
//! certificate's revocation) are fetched: the default of 60 s means a
//! revoked peer is refused within about a minute of the revocation, plus
//! however long the service takes to reload (the reload action runs when a
//! CRL file changed; [`crate::tls::watch`] re-reads on its own period). An
//! unchanged set costs one conditional request (`If-None-Match`) per class.
//!
//! With `ca_root_sha256` and no readable `ca_root`, the client fetches
//! `GET /v1/classes/ca/bundle` over an unauthenticated TLS connection on
//! first contact, keeps the root whose SHA-256 matches the pin, and saves it
//! at `ca_root` (default `DIR/ca-root.pem`); from then on every connection
//! is verified against it. With both, an existing `ca_root` file must match
//! the pin.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ca_proto::secret::{ResolveError, SecretFileMode};
use serde::Deserialize;
use thiserror::Error;

use crate::api::ServerUrl;
use crate::keys::{KeyAlgorithm, Names};
use crate::reload::{ReloadAction, Reloader, Signal};
use crate::renew::DEFAULT_FRACTION;
use crate::store::{FileAttrs, FileKind, Layout};

/// A configuration problem. `Display` is one line naming the key.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {err}", path = .0.display(), err = .1)]
    Read(PathBuf, String),
    /// The file is not valid TOML or has unknown/mistyped keys.
    #[error("{path}: {msg}", path = .0.display(), msg = .1)]
    Parse(PathBuf, String),
    /// A required setting is absent.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A setting has a bad value.
    #[error("{key}: {message}")]
    Invalid {
        /// The setting (TOML key).
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// A file mode: an integer (`0o600` in TOML) or an octal string (`"0600"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ModeValue {
    /// As an integer.
    Int(u32),
    /// As octal text.
    Text(String),
}

impl ModeValue {
    fn resolve(&self, key: &'static str) -> Result<u32, ConfigError> {
        let mode = match self {
            ModeValue::Int(m) => *m,
            ModeValue::Text(t) => u32::from_str_radix(t.trim().trim_start_matches("0o"), 8)
                .map_err(|_| invalid(key, format!("'{t}' is not an octal mode")))?,
        };
        if mode > 0o777 {
            return Err(invalid(
                key,
                format!("{mode:o} is not a permission mode (<= 777)"),
            ));
        }
        Ok(mode)
    }
}

/// One fingerprint or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Settings as written: every key optional. The file and the flags each
/// produce one; [`RawConfig::merge`] combines them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawConfig {
    pub ca: Option<Vec<String>>,
    pub ca_root: Option<PathBuf>,
    pub ca_root_sha256: Option<String>,
    pub class: Option<String>,
    pub profile: Option<String>,
    pub key_id: Option<String>,
    pub key_secret_file: Option<PathBuf>,
    pub dns: Option<Vec<String>>,
    pub ip: Option<Vec<String>>,
    pub uri: Option<Vec<String>>,
    pub common_name: Option<String>,
    pub ttl: Option<String>,
    pub key_algorithm: Option<String>,
    pub rotate_key: Option<bool>,
    pub out: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub chain_file: Option<PathBuf>,
    pub fullchain_file: Option<PathBuf>,
    pub combined_file: Option<PathBuf>,
    pub trust: Option<Vec<String>>,
    pub trust_dir: Option<PathBuf>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub key_mode: Option<ModeValue>,
    pub cert_mode: Option<ModeValue>,
    pub renew_fraction: Option<f64>,
    pub crl_refresh: Option<String>,
    pub on_renew: Option<String>,
    pub reload_signal: Option<String>,
    pub reload_pidfile: Option<PathBuf>,
    pub reload_timeout: Option<String>,
    pub metrics_listen: Option<String>,
    pub require_inclusion_proof: Option<bool>,
    pub log_public_key: Option<PathBuf>,
    pub secret_file_mode: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub class_root_sha256: Option<std::collections::BTreeMap<String, OneOrMany>>,
}

impl RawConfig {
    /// Parses TOML text; relative paths are resolved against `base`.
    /// Errors give the file, line and column and never a value from the
    /// file ([`ca_proto::secret::describe_parse_error`]); an unknown key is
    /// named (keys are not secrets, and a typo is easiest fixed by name).
    pub fn from_toml(text: &str, origin: &Path, base: &Path) -> Result<RawConfig, ConfigError> {
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| {
            let message = e.message();
            let described = if message.starts_with("unknown field `") {
                let (line, col) = e
                    .span()
                    .map_or((0, 0), |s| ca_proto::secret::line_column(text, s.start));
                format!("{}:{line}:{col}: {}", origin.display(), one_line(message))
            } else {
                ca_proto::secret::describe_parse_error(origin, text, e.span(), message)
            };
            ConfigError::Parse(origin.to_path_buf(), one_line(&described))
        })?;
        raw.resolve_paths(base);
        Ok(raw)
    }

    /// Reads and parses a config file (a regular file of at most
    /// [`ca_proto::secret::MAX_CONFIG_BYTES`]).
    pub fn load(path: &Path) -> Result<RawConfig, ConfigError> {
        let bytes = ca_proto::secret::read_regular_file(path, ca_proto::secret::MAX_CONFIG_BYTES)
            .map_err(|e| ConfigError::Read(path.to_path_buf(), e.to_string()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ConfigError::Read(path.to_path_buf(), "not UTF-8 text".into()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        RawConfig::from_toml(&text, path, base)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
        };
        for p in [
            &mut self.ca_root,
            &mut self.key_secret_file,
            &mut self.out,
            &mut self.key_file,
            &mut self.cert_file,
            &mut self.chain_file,
            &mut self.fullchain_file,
            &mut self.combined_file,
            &mut self.trust_dir,
            &mut self.reload_pidfile,
            &mut self.log_public_key,
            &mut self.state_dir,
        ] {
            fix(p);
        }
    }

    /// `over` wins wherever it sets something (lists are replaced, not
    /// appended).
    pub fn merge(self, over: RawConfig) -> RawConfig {
        macro_rules! pick {
            ($($f:ident),* $(,)?) => {
                RawConfig { $($f: over.$f.or(self.$f)),* }
            };
        }
        pick!(
            ca,
            ca_root,
            ca_root_sha256,
            class,
            profile,
            key_id,
            key_secret_file,
            dns,
            ip,
            uri,
            common_name,
            ttl,
            key_algorithm,
            rotate_key,
            out,
            key_file,
            cert_file,
            chain_file,
            fullchain_file,
            combined_file,
            trust,
            trust_dir,
            owner,
            group,
            key_mode,
            cert_mode,
            renew_fraction,
            crl_refresh,
            on_renew,
            reload_signal,
            reload_pidfile,
            reload_timeout,
            metrics_listen,
            require_inclusion_proof,
            log_public_key,
            secret_file_mode,
            state_dir,
            class_root_sha256,
        )
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// How the client trusts the CA's TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaTrust {
    /// The `ca` class root(s) in this PEM file.
    File(PathBuf),
    /// A pinned SHA-256 of the `ca` class root; the root is fetched on first
    /// contact and saved at `save_to`.
    Pinned {
        /// The pin.
        sha256: [u8; 32],
        /// Where the root is (or will be) stored.
        save_to: PathBuf,
    },
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// CA base URLs, tried in order.
    pub servers: Vec<ServerUrl>,
    /// TLS trust in the CA.
    pub ca_trust: CaTrust,
    /// Certificate class.
    pub class: String,
    /// Profile (class default when `None`).
    pub profile: Option<String>,
    /// HMAC key id.
    pub key_id: String,
    /// File holding the hex secret (re-read for every request, so that it
    /// can be rotated in place).
    pub key_secret_file: PathBuf,
    /// Requested names.
    pub names: Names,
    /// CSR common name override (`Some("")` = none).
    pub common_name: Option<String>,
    /// Requested lifetime.
    pub ttl: Option<Duration>,
    /// Key algorithm.
    pub key_algorithm: KeyAlgorithm,
    /// A new key on every renewal.
    pub rotate_key: bool,
    /// Output files.
    pub layout: Layout,
    /// Peer classes whose bundles are written.
    pub trust: Vec<String>,
    /// Fraction of the lifetime at which to renew.
    pub renew_fraction: f64,
    /// Interval of the CRL refresh ([`crate::renew::crl_refresh_delay`]).
    pub crl_refresh: Duration,
    /// Reload action.
    pub reload: Option<Reloader>,
    /// Metrics/health listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether an issuance-log inclusion proof must verify before install.
    pub require_inclusion_proof: bool,
    /// A pinned issuance-log public key (PEM); else fetched from the CA.
    pub log_public_key: Option<PathBuf>,
    /// How strictly the secret file's mode is checked.
    pub secret_file_mode: SecretFileMode,
    /// Where the pinned class roots are kept ([`crate::pins::STATE_FILE`]).
    pub state_dir: PathBuf,
    /// Configured root pins per class (lowercase hex SHA-256 of the DER,
    /// sorted); a class without an entry is pinned on first use.
    pub class_root_sha256: std::collections::BTreeMap<String, Vec<String>>,
}

impl Settings {
    /// The configured root pins of `class` (empty: trust on first use).
    pub fn root_pins(&self, class: &str) -> &[String] {
        self.class_root_sha256
            .get(class)
            .map_or(&[][..], Vec::as_slice)
    }
}

/// Reads and parses the HMAC secret file with the server's rules for secret
/// files ([`ca_proto::secret::read_secret_file`]: a regular file, owned by
/// this user or root, not accessible by group or others unless `mode`
/// allows group read, small). The error is one line and never holds the
/// secret.
pub fn read_secret(path: &Path, mode: SecretFileMode) -> Result<Vec<u8>, SecretFileError> {
    let secret = ca_proto::secret::read_secret_file(path, mode, ca_proto::secret::MAX_SECRET_BYTES)
        .map_err(SecretFileError::Read)?;
    let text = secret
        .as_text(&path.display().to_string())
        .map_err(SecretFileError::NotText)?;
    ca_proto::auth::parse_secret(text).map_err(|error| SecretFileError::Parse {
        path: path.to_path_buf(),
        error,
    })
}

/// Why [`read_secret`] refused the HMAC secret file. One line; never holds
/// the secret.
#[derive(Debug, Error)]
pub enum SecretFileError {
    /// Not a regular file of the right owner, mode and size; a mode that is
    /// too open comes with the setting that allows group read.
    #[error("{0}{hint}", hint = mode_hint(.0))]
    Read(ResolveError),
    /// The file is not UTF-8 text.
    #[error("{0}")]
    NotText(ResolveError),
    /// The text is not a hex secret of at least
    /// [`ca_proto::auth::MIN_SECRET_LEN`] bytes.
    #[error("{}: {error}", .path.display())]
    Parse {
        path: PathBuf,
        error: ca_proto::auth::SecretError,
    },
}

/// For a mode refusal: how ca-client allows `0640`/`0440`.
fn mode_hint(e: &ResolveError) -> &'static str {
    if matches!(e, ResolveError::Mode { .. }) {
        " — for ca-client: secret_file_mode = \"group-readable\" \
         (--secret-file-mode group-readable) allows 0640/0440"
    } else {
        ""
    }
}

/// Class names as the server spells them: `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn valid_class_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_'))
}

fn valid_key_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses a SHA-256 fingerprint: 64 hex digits, optionally `:`-separated,
/// either case.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let clean: String = s.trim().chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(clean, &mut out).ok()?;
    Some(out)
}

/// Looks a user or group up in a colon-separated database file
/// (`/etc/passwd`, `/etc/group`): numeric ids are taken as they are.
fn resolve_id(spec: &str, db: &Path, key: &'static str) -> Result<u32, ConfigError> {
    if let Ok(id) = spec.parse::<u32>() {
        return Ok(id);
    }
    let text = std::fs::read_to_string(db)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", db.display())))?;
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id = fields.nth(1)?.parse::<u32>().ok()?;
            (name == spec).then_some(id)
        })
        .next()
        .ok_or_else(|| {
            invalid(
                key,
                format!("'{spec}' not found in {} (use a numeric id)", db.display()),
            )
        })
}

impl Settings {
    /// Validates merged settings. Checks what can be checked without the
    /// network: required keys, URLs, names, modes, owner/group, the secret
    /// file, and RSA (which needs a provisioned key).
    pub fn from_raw(raw: RawConfig) -> Result<Settings, ConfigError> {
        let urls = raw.ca.unwrap_or_default();
        if urls.is_empty() {
            return Err(ConfigError::Missing("ca (at least one CA URL)"));
        }
        let servers = urls
            .iter()
            .map(|u| ServerUrl::parse(u).map_err(|e| invalid("ca", e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;

        let out = raw.out.ok_or(ConfigError::Missing("out"))?;

        let ca_trust = match (raw.ca_root, raw.ca_root_sha256) {
            (None, None) => return Err(ConfigError::Missing("ca_root or ca_root_sha256")),
            (Some(path), None) => CaTrust::File(path),
            (path, Some(pin)) => CaTrust::Pinned {
                sha256: parse_fingerprint(&pin).ok_or_else(|| {
                    invalid(
                        "ca_root_sha256",
                        "expected 64 hex digits (SHA-256 of the root's DER)",
                    )
                })?,
                save_to: path.unwrap_or_else(|| out.join("ca-root.pem")),
            },
        };

        let class = raw.class.ok_or(ConfigError::Missing("class"))?;
        if !valid_class_name(&class) {
            return Err(invalid("class", format!("'{class}' is not a class name")));
        }
        if let Some(p) = &raw.profile {
            if !valid_class_name(p) {
                return Err(invalid("profile", format!("'{p}' is not a profile name")));
            }
        }
        let key_id = raw.key_id.ok_or(ConfigError::Missing("key_id"))?;
        if !valid_key_id(&key_id) {
            return Err(invalid("key_id", "1-64 characters of [A-Za-z0-9._-]"));
        }
        let key_secret_file = raw
            .key_secret_file
            .ok_or(ConfigError::Missing("key_secret_file"))?;
        let secret_file_mode = match raw.secret_file_mode.as_deref() {
            None | Some("strict") => SecretFileMode::Strict,
            Some("group-readable") => SecretFileMode::GroupReadable,
            Some(other) => {
                return Err(invalid(
                    "secret_file_mode",
                    format!("'{other}': expected \"strict\" or \"group-readable\""),
                ))
            }
        };
        read_secret(&key_secret_file, secret_file_mode)
            .map_err(|e| invalid("key_secret_file", e.to_string()))?;

        let mut names = Names {
            dns: raw.dns.unwrap_or_default(),
            ip: Vec::new(),
            uri: raw.uri.unwrap_or_default(),
        };
        for ip in raw.ip.unwrap_or_default() {
            let addr: IpAddr = ip
                .parse()
                .map_err(|_| invalid("ip", format!("'{ip}' is not an IP address")))?;
            names.ip.push(addr);
        }
        for d in &names.dns {
            if d.is_empty() || !d.is_ascii() || d.chars().any(|c| c.is_whitespace()) {
                return Err(invalid(
                    "dns",
                    format!("'{d}' is not a DNS name (ASCII, A-labels)"),
                ));
            }
        }
        for u in &names.uri {
            if !u.contains(':') || !u.is_ascii() || u.chars().any(|c| c.is_whitespace()) {
                return Err(invalid("uri", format!("'{u}' is not a URI")));
            }
        }
        if names.is_empty() {
            return Err(ConfigError::Missing("a name (dns, ip or uri)"));
        }

        let ttl = raw
            .ttl
            .map(|t| {
                ca_proto::native::parse_duration(&t)
                    .map_err(|e| invalid("ttl", format!("'{t}': {e}")))
            })
            .transpose()?;
        if ttl == Some(Duration::ZERO) {
            return Err(invalid("ttl", "must be positive"));
        }

        let key_algorithm = match raw.key_algorithm {
            None => KeyAlgorithm::default(),
            Some(a) => a
                .parse()
                .map_err(|e: crate::keys::KeyError| invalid("key_algorithm", e.to_string()))?,
        };
        let rotate_key = raw.rotate_key.unwrap_or(true);
        if !key_algorithm.can_generate() && rotate_key {
            return Err(invalid(
                "key_algorithm",
                crate::keys::KeyError::RsaGenerationUnsupported.to_string(),
            ));
        }

        let uid = raw
            .owner
            .map(|o| resolve_id(&o, Path::new("/etc/passwd"), "owner"))
            .transpose()?;
        let gid = raw
            .group
            .map(|g| resolve_id(&g, Path::new("/etc/group"), "group"))
            .transpose()?;
        let key_mode = match raw.key_mode {
            Some(m) => m.resolve("key_mode")?,
            None => FileAttrs::KEY_DEFAULT.mode,
        };
        if key_mode & 0o007 != 0 {
            return Err(invalid(
                "key_mode",
                format!("{key_mode:04o} gives other users access to the private key"),
            ));
        }
        let cert_mode = match raw.cert_mode {
            Some(m) => m.resolve("cert_mode")?,
            None => FileAttrs::CERT_DEFAULT.mode,
        };

        let mut trust = raw.trust.unwrap_or_default();
        for t in &trust {
            if !valid_class_name(t) {
                return Err(invalid("trust", format!("'{t}' is not a class name")));
            }
        }
        trust.sort();
        trust.dedup();

        let mut class_root_sha256 = std::collections::BTreeMap::new();
        for (pinned_class, pins) in raw.class_root_sha256.unwrap_or_default() {
            if pinned_class != class && !trust.contains(&pinned_class) {
                return Err(invalid(
                    "class_root_sha256",
                    format!("'{pinned_class}' is neither `class` nor one of `trust`"),
                ));
            }
            let mut hex_pins = Vec::new();
            for pin in pins.into_vec() {
                let fp = parse_fingerprint(&pin).ok_or_else(|| {
                    invalid(
                        "class_root_sha256",
                        format!(
                            "{pinned_class}: expected 64 hex digits (SHA-256 of the root's DER)"
                        ),
                    )
                })?;
                hex_pins.push(hex::encode(fp));
            }
            hex_pins.sort();
            hex_pins.dedup();
            if hex_pins.is_empty() {
                return Err(invalid(
                    "class_root_sha256",
                    format!("{pinned_class}: no fingerprint"),
                ));
            }
            class_root_sha256.insert(pinned_class, hex_pins);
        }
        let state_dir = raw.state_dir.unwrap_or_else(|| out.join(".state"));

        let mut layout = Layout::new(&out);
        if let Some(dir) = raw.trust_dir {
            layout.trust_dir = dir;
        }
        layout.key_attrs = FileAttrs {
            mode: key_mode,
            uid,
            gid,
        };
        layout.cert_attrs = FileAttrs {
            mode: cert_mode,
            uid,
            gid,
        };
        for (kind, path) in [
            (FileKind::Key, raw.key_file),
            (FileKind::Cert, raw.cert_file),
            (FileKind::Chain, raw.chain_file),
            (FileKind::Fullchain, raw.fullchain_file),
            (FileKind::Combined, raw.combined_file),
        ] {
            if let Some(path) = path {
                if path != layout.path(kind) {
                    layout.extra_links.push((kind, path));
                }
            }
        }

        let renew_fraction = raw.renew_fraction.unwrap_or(DEFAULT_FRACTION);
        if !(0.05..=0.95).contains(&renew_fraction) {
            return Err(invalid("renew_fraction", "must be between 0.05 and 0.95"));
        }

        let crl_refresh = match raw.crl_refresh {
            Some(t) => ca_proto::native::parse_duration(&t)
                .map_err(|e| invalid("crl_refresh", format!("'{t}': {e}")))?,
            None => crate::renew::DEFAULT_CRL_REFRESH,
        };
        if crl_refresh < Duration::from_secs(1) {
            return Err(invalid("crl_refresh", "must be at least 1s"));
        }

        let timeout = match raw.reload_timeout {
            Some(t) => ca_proto::native::parse_duration(&t)
                .map_err(|e| invalid("reload_timeout", format!("'{t}': {e}")))?,
            None => crate::reload::DEFAULT_TIMEOUT,
        };
        if timeout.is_zero() {
            return Err(invalid("reload_timeout", "must be positive"));
        }
        let action = match (raw.on_renew, raw.reload_signal, raw.reload_pidfile) {
            (None, None, None) => None,
            (Some(cmd), None, None) => {
                if cmd.trim().is_empty() {
                    return Err(invalid("on_renew", "empty command"));
                }
                Some(ReloadAction::Command(cmd))
            }
            (None, Some(sig), Some(pidfile)) => Some(ReloadAction::Signal {
                signal: sig
                    .parse::<Signal>()
                    .map_err(|e| invalid("reload_signal", e.to_string()))?,
                pidfile,
            }),
            (None, Some(_), None) => {
                return Err(ConfigError::Missing("reload_pidfile (with reload_signal)"))
            }
            (None, None, Some(_)) => {
                return Err(ConfigError::Missing("reload_signal (with reload_pidfile)"))
            }
            (Some(_), _, _) => {
                return Err(invalid(
                    "on_renew",
                    "give either on_renew or reload_signal + reload_pidfile, not both",
                ))
            }
        };
        let reload = action.map(|action| Reloader { action, timeout });

        let metrics_listen = raw
            .metrics_listen
            .map(|a| {
                a.parse::<SocketAddr>()
                    .map_err(|_| invalid("metrics_listen", format!("'{a}' is not ADDRESS:PORT")))
            })
            .transpose()?;

        Ok(Settings {
            servers,
            ca_trust,
            class,
            profile: raw.profile,
            key_id,
            key_secret_file,
            names,
            common_name: raw.common_name,
            ttl,
            key_algorithm,
            rotate_key,
            layout,
            trust,
            renew_fraction,
            crl_refresh,
            reload,
            metrics_listen,
            require_inclusion_proof: raw.require_inclusion_proof.unwrap_or(true),
            log_public_key: raw.log_public_key,
            secret_file_mode,
            state_dir,
            class_root_sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().to_path_buf();
        std::fs::write(dir.join("secret.hex"), format!("{}\n", "ab".repeat(32))).expect("secret");
        // Secret files must not be readable by group or others.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("secret.hex"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("mode");
        Fixture { _tmp: tmp, dir }
    }

    fn minimal(f: &Fixture) -> String {
        format!(
            r#"
ca = ["https://localhost:8443"]
ca_root = "root.pem"
class = "db"
key_id = "db"
key_secret_file = "secret.hex"
dns = ["a.db.internal"]
out = "{}"
"#,
            f.dir.join("out").display()
        )
    }

    fn parse(f: &Fixture, text: &str) -> Result<Settings, ConfigError> {
        let raw = RawConfig::from_toml(text, Path::new("test.toml"), &f.dir)?;
        Settings::from_raw(raw)
    }

    fn err(f: &Fixture, text: &str) -> String {
        match parse(f, text) {
            Ok(s) => panic!("accepted: {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let f = fixture();
        let s = parse(&f, &minimal(&f)).expect("valid");
        assert_eq!(s.servers.len(), 1);
        assert_eq!(s.ca_trust, CaTrust::File(f.dir.join("root.pem")));
        assert_eq!(s.key_secret_file, f.dir.join("secret.hex"));
        assert_eq!(s.key_algorithm, KeyAlgorithm::EcP256);
        assert!(s.rotate_key);
        assert!((s.renew_fraction - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.layout.key_attrs.mode, 0o600);
        assert_eq!(s.layout.cert_attrs.mode, 0o644);
        assert_eq!(s.layout.trust_dir, f.dir.join("out/trust"));
        assert!(s.reload.is_none());
        assert!(s.require_inclusion_proof, "proofs are required by default");
        assert_eq!(s.crl_refresh, Duration::from_secs(60));
    }

    #[test]
    fn full_config() {
        let f = fixture();
        let text = format!(
            r#"{}
profile = "peer"
ip = ["10.0.0.1", "::1"]
uri = ["spiffe://trellis.internal/db/a"]
ttl = "90m"
key_algorithm = "ed25519"
trust = ["api", "web", "api"]
key_mode = 0o640
cert_mode = "0644"
owner = "0"
group = "root"
renew_fraction = 0.5
crl_refresh = "5m"
on_renew = "true"
reload_timeout = "5s"
metrics_listen = "127.0.0.1:9901"
cert_file = "/tmp/x/cert.pem"
ca_root_sha256 = "{}"
"#,
            minimal(&f),
            "AB:".repeat(31) + "AB"
        );
        let s = parse(&f, &text).expect("valid");
        assert_eq!(s.profile.as_deref(), Some("peer"));
        assert_eq!(s.names.ip.len(), 2);
        assert_eq!(s.ttl, Some(Duration::from_secs(5400)));
        assert_eq!(s.crl_refresh, Duration::from_secs(300));
        assert_eq!(s.key_algorithm, KeyAlgorithm::Ed25519);
        assert_eq!(s.trust, vec!["api".to_string(), "web".to_string()]);
        assert_eq!(s.layout.key_attrs.mode, 0o640);
        assert_eq!(s.layout.key_attrs.uid, Some(0));
        assert_eq!(s.layout.key_attrs.gid, Some(0));
        assert_eq!(
            s.layout.extra_links,
            vec![(FileKind::Cert, PathBuf::from("/tmp/x/cert.pem"))]
        );
        assert_eq!(
            s.ca_trust,
            CaTrust::Pinned {
                sha256: [0xab; 32],
                save_to: f.dir.join("root.pem")
            }
        );
        let r = s.reload.expect("reload");
        assert_eq!(r.action, ReloadAction::Command("true".into()));
        assert_eq!(r.timeout, Duration::from_secs(5));
        assert_eq!(
            s.metrics_listen,
            Some("127.0.0.1:9901".parse().expect("addr"))
        );
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let f = fixture();
        let e = err(&f, &format!("{}\nbogus = 1\n", minimal(&f)));
        assert!(
            e.contains("unknown field `bogus`") && e.contains("test.toml"),
            "{e}"
        );
        assert!(!e.contains('\n'), "one line: {e}");
        let e = err(&f, "ca = \"https://x\"\n");
        assert!(e.contains("invalid type"), "{e}");
        let e = err(&f, "ca = [\n");
        assert!(e.contains("test.toml"), "{e}");
    }

    #[test]
    fn invalid_values_are_rejected() {
        let f = fixture();
        let base = minimal(&f);
        let with = |extra: &str| format!("{base}\n{extra}\n");
        let cases: &[(&str, &str)] = &[
            ("renew_fraction = 1.0", "renew_fraction"),
            ("renew_fraction = 0.0", "renew_fraction"),
            ("key_mode = 0o644", "key_mode"),
            ("key_mode = \"999\"", "key_mode"),
            ("cert_mode = 0o1777", "cert_mode"),
            ("ttl = \"1y\"", "ttl"),
            ("ttl = \"0s\"", "ttl"),
            ("crl_refresh = \"0s\"", "crl_refresh"),
            ("crl_refresh = \"soon\"", "crl_refresh"),
            ("key_algorithm = \"dsa\"", "key_algorithm"),
            ("key_algorithm = \"rsa\"", "ring"),
            ("ip = [\"10.0.0.300\"]", "ip"),
            ("trust = [\"Bad Class\"]", "trust"),
            ("reload_signal = \"HUP\"", "reload_pidfile"),
            ("reload_pidfile = \"x.pid\"", "reload_signal"),
            (
                "reload_signal = \"KILL\"\nreload_pidfile = \"x.pid\"",
                "reload_signal",
            ),
            ("on_renew = \"x\"\nreload_signal = \"HUP\"", "not both"),
            ("metrics_listen = \"localhost\"", "metrics_listen"),
            ("owner = \"no-such-user-here\"", "owner"),
            ("ca_root_sha256 = \"abcd\"", "ca_root_sha256"),
            ("profile = \"Server!\"", "profile"),
        ];
        for (extra, needle) in cases {
            let e = err(&f, &with(extra));
            assert!(e.contains(needle), "{extra}: {e}");
        }
        // RSA is fine with a provisioned key.
        parse(&f, &with("key_algorithm = \"rsa\"\nrotate_key = false")).expect("rsa");
    }

    #[test]
    fn required_keys_and_urls() {
        let f = fixture();
        let base = minimal(&f);
        for (drop, needle) in [
            ("ca =", "ca"),
            ("ca_root =", "ca_root"),
            ("class =", "class"),
            ("key_id =", "key_id"),
            ("key_secret_file =", "key_secret_file"),
            ("dns =", "name"),
            ("out =", "out"),
        ] {
            let text: String = base
                .lines()
                .filter(|l| !l.starts_with(drop))
                .map(|l| format!("{l}\n"))
                .collect();
            let e = err(&f, &text);
            assert!(e.contains(needle) && e.contains("required"), "{drop}: {e}");
        }
        for url in [
            "http://localhost:8443",
            "https://",
            "https://host/v1",
            "localhost:8443",
            "https://host:8443?x=1",
        ] {
            let e = err(&f, &base.replace("https://localhost:8443", url));
            assert!(e.starts_with("ca:"), "{url}: {e}");
        }
        std::fs::write(f.dir.join("secret.hex"), "not hex").expect("w");
        assert!(err(&f, &base).contains("key_secret_file"));
    }

    #[test]
    fn the_secret_file_must_be_private_unless_relaxed() {
        use std::os::unix::fs::PermissionsExt;
        let f = fixture();
        let secret = f.dir.join("secret.hex");
        let chmod = |mode| {
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).expect("chmod")
        };
        let relaxed = format!("{}\nsecret_file_mode = \"group-readable\"\n", minimal(&f));
        chmod(0o640);
        let e = err(&f, &minimal(&f));
        assert!(
            e.starts_with("key_secret_file:")
                && e.contains("mode 0640")
                && e.contains("secret_file_mode = \"group-readable\"")
                && !e.contains(&"ab".repeat(32)),
            "{e}"
        );
        let s = parse(&f, &relaxed).expect("0640 with group-readable");
        assert_eq!(s.secret_file_mode, SecretFileMode::GroupReadable);
        chmod(0o644);
        assert!(err(&f, &relaxed).contains("mode 0644"));
        chmod(0o600);
        assert_eq!(
            parse(&f, &minimal(&f)).expect("0600").secret_file_mode,
            SecretFileMode::Strict
        );
        let e = err(
            &f,
            &format!("{}\nsecret_file_mode = \"lax\"\n", minimal(&f)),
        );
        assert!(e.contains("secret_file_mode"), "{e}");
    }

    #[test]
    fn class_root_pins_and_state_dir() {
        let f = fixture();
        let pin = "AB:".repeat(31) + "AB";
        let text = format!(
            "{}\ntrust = [\"api\"]\nstate_dir = \"st\"\n[class_root_sha256]\ndb = \"{pin}\"\napi = [\"{}\", \"{}\"]\n",
            minimal(&f),
            "01".repeat(32),
            "00".repeat(32)
        );
        let s = parse(&f, &text).expect("valid");
        assert_eq!(s.state_dir, f.dir.join("st"));
        assert_eq!(s.root_pins("db"), &["ab".repeat(32)]);
        assert_eq!(s.root_pins("api"), &["00".repeat(32), "01".repeat(32)]);
        assert!(s.root_pins("web").is_empty());
        assert_eq!(
            parse(&f, &minimal(&f)).expect("default").state_dir,
            f.dir.join("out/.state")
        );
        let e = err(
            &f,
            &format!("{}\n[class_root_sha256]\nweb = \"{pin}\"\n", minimal(&f)),
        );
        assert!(e.contains("neither `class` nor one of `trust`"), "{e}");
        let e = err(
            &f,
            &format!("{}\n[class_root_sha256]\ndb = \"xyz\"\n", minimal(&f)),
        );
        assert!(
            e.contains("class_root_sha256") && e.contains("64 hex"),
            "{e}"
        );
    }

    #[test]
    fn parse_errors_do_not_repeat_values() {
        let f = fixture();
        let value = "s3cr3t-looking-value";
        let e = err(&f, &format!("{}\nkey_id = [\"{value}\"]\n", minimal(&f)));
        assert!(!e.contains(value) && e.contains("test.toml:"), "{e}");
        let e = err(&f, &format!("dns = \"{value}\n"));
        assert!(!e.contains(value) && e.contains("test.toml:1:"), "{e}");
    }

    #[test]
    fn flags_override_file() {
        let f = fixture();
        let file = RawConfig::from_toml(&minimal(&f), Path::new("t"), &f.dir).expect("file");
        let flags = RawConfig {
            class: Some("api".into()),
            dns: Some(vec!["x.api.internal".into()]),
            ..RawConfig::default()
        };
        let merged = file.clone().merge(flags);
        assert_eq!(merged.class.as_deref(), Some("api"));
        assert_eq!(merged.dns, Some(vec!["x.api.internal".to_string()]));
        assert_eq!(merged.key_id, file.key_id);
    }

    #[test]
    fn fingerprints() {
        assert_eq!(parse_fingerprint(&"00".repeat(32)), Some([0; 32]));
        assert_eq!(
            parse_fingerprint(&"Ff:".repeat(31).add_ff()),
            Some([0xff; 32])
        );
        assert_eq!(parse_fingerprint("00"), None);
        assert_eq!(parse_fingerprint(&"zz".repeat(32)), None);
    }

    trait AddFf {
        fn add_ff(self) -> String;
    }
    impl AddFf for String {
        fn add_ff(mut self) -> String {
            self.push_str("ff");
            self
        }
    }
}
