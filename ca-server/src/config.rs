//! The server's configuration file (`config.toml`): where state lives, which
//! PKCS#11 module and tokens hold the CA keys, how many signing sessions to
//! run, and how the CA certificates are shaped. Relative paths are resolved
//! against the directory holding the file, so a deployment directory can move.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where classes/, tls/ and log/ live.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Directory of `<class>.toml` policies.
    #[serde(default = "default_policies_dir")]
    pub policies_dir: PathBuf,
    pub hsm: HsmConfig,
    #[serde(default)]
    pub ca: CaConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Set when the file was read; paths below are already absolute.
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmConfig {
    /// Path of the PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// For SoftHSM2 only: the `SOFTHSM2_CONF` to use.
    #[serde(default)]
    pub softhsm2_conf: Option<PathBuf>,
    /// Token holding the intermediates (and the log key); used while serving.
    #[serde(default = "default_online_token")]
    pub online_token: String,
    /// `file:PATH` or `env:NAME`.
    pub online_pin: String,
    /// Token holding the class roots; used only by admin commands.
    #[serde(default = "default_root_token")]
    pub root_token: String,
    pub root_pin: String,
    /// Signing sessions (= threads) in the pool. 0 = one per CPU.
    #[serde(default)]
    pub signing_sessions: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// Key algorithm for new roots and intermediates.
    #[serde(default = "default_ca_key")]
    pub key_algorithm: String,
    #[serde(default = "default_organization")]
    pub organization: String,
    #[serde(default = "default_root_days")]
    pub root_validity_days: u32,
    #[serde(default = "default_intermediate_days")]
    pub intermediate_validity_days: u32,
}

impl Default for CaConfig {
    fn default() -> Self {
        CaConfig {
            key_algorithm: default_ca_key(),
            organization: default_organization(),
            root_validity_days: default_root_days(),
            intermediate_validity_days: default_intermediate_days(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Names and addresses on the server's own TLS certificate.
    #[serde(default = "default_tls_names")]
    pub tls_names: Vec<String>,
    /// Who may ask for what (see `deploy/config/auth-keys.toml`).
    #[serde(default = "default_auth_keys")]
    pub auth_keys: PathBuf,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_secs: u64,
    /// Accepted clock difference for signed native requests.
    #[serde(default = "default_skew")]
    pub max_skew_secs: i64,
    /// Nonces remembered for replay protection (each until its timestamp
    /// leaves the skew window). Sustained signed requests per second this
    /// replica can take are about replay_cache_entries / max_skew_secs;
    /// beyond, requests are refused (fail closed). About 70 bytes per entry,
    /// reserved at start.
    #[serde(default = "default_replay_entries")]
    pub replay_cache_entries: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            tls_names: default_tls_names(),
            auth_keys: default_auth_keys(),
            max_body_bytes: default_max_body(),
            max_connections: default_max_connections(),
            header_read_timeout_secs: default_header_timeout(),
            max_skew_secs: default_skew(),
            replay_cache_entries: default_replay_entries(),
        }
    }
}

fn default_auth_keys() -> PathBuf {
    PathBuf::from("auth-keys.toml")
}
fn default_max_body() -> usize {
    64 * 1024
}
fn default_max_connections() -> usize {
    4096
}
fn default_header_timeout() -> u64 {
    10
}
fn default_replay_entries() -> usize {
    ca_proto::replay::DEFAULT_CAPACITY
}
fn default_skew() -> i64 {
    300
}
/// The issuance log of this replica.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Names this replica's log; unique per replica (e.g. the host name).
    #[serde(default = "default_log_id")]
    pub log_id: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            log_id: default_log_id(),
        }
    }
}

fn default_log_id() -> String {
    "trellis-1".into()
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(".")
}
fn default_policies_dir() -> PathBuf {
    PathBuf::from("policies")
}
fn default_online_token() -> String {
    "trellis-online".into()
}
fn default_root_token() -> String {
    "trellis-root".into()
}
fn default_ca_key() -> String {
    "ec-p256".into()
}
fn default_organization() -> String {
    "Trellis".into()
}
fn default_root_days() -> u32 {
    3650
}
fn default_intermediate_days() -> u32 {
    365
}
pub fn default_listen() -> String {
    "127.0.0.1:8443".into()
}
fn default_tls_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = std::fs::canonicalize(&base).unwrap_or(base);
        config.path = base.join(path.file_name().unwrap_or_default());
        config.state_dir = clean(base.join(&config.state_dir));
        config.policies_dir = clean(base.join(&config.policies_dir));
        config.hsm.module = base.join(&config.hsm.module);
        config.server.auth_keys = clean(base.join(&config.server.auth_keys));
        config.hsm.softhsm2_conf = config.hsm.softhsm2_conf.map(|p| base.join(p));
        config.hsm.online_pin = resolve_file_ref(&base, &config.hsm.online_pin);
        config.hsm.root_pin = resolve_file_ref(&base, &config.hsm.root_pin);
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: self.path.display().to_string(),
            message,
        };
        self.ca_key_algorithm().map_err(invalid)?;
        if !ca_proto::auth::valid_key_id(&self.log.log_id) {
            return Err(invalid(
                "log.log_id must be 1-64 characters of [A-Za-z0-9._-]".into(),
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.server.max_body_bytes) {
            return Err(invalid(
                "server.max_body_bytes must be between 1 KiB and 16 MiB".into(),
            ));
        }
        if !(1..=600).contains(&self.server.max_skew_secs) {
            return Err(invalid(
                "server.max_skew_secs must be between 1 and 600".into(),
            ));
        }
        if self.ca.intermediate_validity_days == 0
            || self.ca.root_validity_days <= self.ca.intermediate_validity_days
        {
            return Err(invalid(
                "ca.root_validity_days must exceed ca.intermediate_validity_days (> 0)".into(),
            ));
        }
        Ok(())
    }

    pub fn ca_key_algorithm(&self) -> Result<hsm::KeyAlgorithm, String> {
        self.ca.key_algorithm.parse()
    }

    pub fn signing_sessions(&self) -> usize {
        match self.hsm.signing_sessions {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

/// `base/./x` → `base/x`, so paths in messages read naturally.
fn clean(path: PathBuf) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

/// `file:relative/path` is relative to the config file's directory.
fn resolve_file_ref(base: &Path, reference: &str) -> String {
    match reference.strip_prefix("file:") {
        Some(p) if !Path::new(p).is_absolute() => format!("file:{}", clean(base.join(p)).display()),
        _ => reference.to_string(),
    }
}
