//! The server's configuration file (`config.toml`): where state lives, which
//! PKCS#11 module and tokens hold the CA keys, how many signing sessions to
//! run, and how the CA certificates are shaped. Relative paths are resolved
//! against the directory holding the file, so a deployment directory can move.

use ca_proto::secret::{
    describe_parse_error, read_regular_file, ResolveError, SecretFileMode, SecretRef,
    MAX_CONFIG_BYTES,
};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not a readable regular file of at most `MAX_CONFIG_BYTES`.
    #[error("config: {0}")]
    Read(ResolveError),
    /// Not TOML or not the schema: `path:line:column: what was expected`
    /// (never the offending text).
    #[error("{0}")]
    Parse(String),
    /// A setting is out of range or names an unknown algorithm.
    #[error("{path}: {error}")]
    Invalid { path: String, error: SettingError },
}

/// What is wrong with one setting of a parsed config file. The text names
/// the TOML key and what it allows; never the value of a secret.
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    /// A number outside what `key` allows (`allowed` reads "between 1 and
    /// 600", "at least 1", …).
    #[error("{key} must be {allowed}")]
    OutOfRange {
        key: &'static str,
        allowed: &'static str,
    },
    /// The response budgets are not ordered `64 KiB <= per connection <=
    /// queued`.
    #[error(
        "server: 64 KiB <= max_connection_response_bytes <= max_queued_response_bytes is required"
    )]
    ResponseBudgets,
    /// The root would not outlive the intermediates it signs.
    #[error("ca.root_validity_days must exceed ca.intermediate_validity_days (> 0)")]
    Validity,
    /// `log.log_id` is not a valid key id.
    #[error("log.log_id must be 1-64 characters of [A-Za-z0-9._-]")]
    LogId,
    /// `ca.key_algorithm` names no algorithm the HSM layer knows.
    #[error("{0}")]
    CaKeyAlgorithm(hsm::UnknownAlgorithm),
    /// `log.key_algorithm` names no algorithm the HSM layer knows.
    #[error("log.key_algorithm: {0}")]
    LogKeyAlgorithm(hsm::UnknownAlgorithm),
    /// A PIN setting is not a `file:`/`env:` reference.
    #[error("{key}: {error}")]
    PinReference {
        key: &'static str,
        error: ResolveError,
    },
}

/// `key` must be `allowed`.
fn out_of_range(key: &'static str, allowed: &'static str) -> SettingError {
    SettingError::OutOfRange { key, allowed }
}

impl From<ResolveError> for ConfigError {
    fn from(e: ResolveError) -> Self {
        ConfigError::Read(e)
    }
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
    #[serde(default)]
    pub revocation: RevocationConfig,
    #[serde(default)]
    pub ui: UiConfig,
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
    /// Bind each signing thread to a CPU of its own while the pool is
    /// saturated, when it has a thread for every CPU the server may use
    /// (`hsm::affinity`).
    #[serde(default = "default_true")]
    pub pin_signing_threads: bool,
    /// Library parameters passed to `C_Initialize` (NSS softoken needs them).
    #[serde(default)]
    pub init_params: Option<String>,
    /// Match the online token's serial number as well as its label.
    #[serde(default)]
    pub online_token_serial: Option<String>,
    /// Match the root token's serial number as well as its label.
    #[serde(default)]
    pub root_token_serial: Option<String>,
    /// Match the online token's slot id as well (for modules whose slot ids
    /// are stable, e.g. an HA group's virtual slot).
    #[serde(default)]
    pub online_token_slot: Option<u64>,
    #[serde(default)]
    pub root_token_slot: Option<u64>,
}

impl HsmConfig {
    /// How the module is started.
    pub fn module_options(&self) -> hsm::ModuleOptions {
        hsm::ModuleOptions {
            init_params: self.init_params.clone(),
        }
    }

    pub fn online_selector(&self) -> hsm::TokenSelector {
        hsm::TokenSelector {
            label: self.online_token.clone(),
            serial: self.online_token_serial.clone(),
            slot: self.online_token_slot,
        }
    }

    pub fn root_selector(&self) -> hsm::TokenSelector {
        hsm::TokenSelector {
            label: self.root_token.clone(),
            serial: self.root_token_serial.clone(),
            slot: self.root_token_slot,
        }
    }
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
    /// How private secret files (PINs, auth secrets, `auth-keys.toml`)
    /// must be: `strict` (owner only) or `group-readable` (0640/0440, for
    /// secrets mounted group-readable in containers).
    #[serde(default)]
    pub secret_file_mode: SecretFileMode,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_secs: u64,
    /// Accepted clock difference for signed native requests.
    #[serde(default = "default_skew")]
    pub max_skew_secs: i64,
    /// Nonces remembered for replay protection, at most, per auth key (each
    /// key has its own share: what its rate limit can use within the window,
    /// capped by this). See deploy/config/ca-server.toml.
    #[serde(default = "default_replay_entries")]
    pub replay_cache_entries: usize,
    /// Open connections from one source address at most; 0 = no limit.
    #[serde(default)]
    pub max_connections_per_ip: usize,
    /// TCP accept → TLS handshake complete.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    /// Handshake → the first request's headers (first byte, protocol
    /// detection and headers).
    #[serde(default = "default_first_request_timeout")]
    pub first_request_timeout_secs: u64,
    /// Keep-alive idle: a response produced → the next request's headers
    /// (a response must also be read within it).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// A request body must be whole within this…
    #[serde(default = "default_body_timeout")]
    pub body_timeout_secs: u64,
    /// …and arrive at this many bytes per second at least, after 1 s.
    #[serde(default = "default_body_min_rate")]
    pub body_min_bytes_per_sec: u64,
    /// Request body bytes buffered at once, server-wide.
    #[serde(default = "default_buffered_body_bytes")]
    pub max_buffered_body_bytes: usize,
    /// Request body bytes buffered at once by one connection.
    #[serde(default = "default_connection_body_bytes")]
    pub max_connection_body_bytes: usize,
    /// Response bytes queued for slow readers, server-wide.
    #[serde(default = "default_queued_response_bytes")]
    pub max_queued_response_bytes: usize,
    /// Response bytes queued by one connection.
    #[serde(default = "default_connection_response_bytes")]
    pub max_connection_response_bytes: usize,
}

fn default_handshake_timeout() -> u64 {
    10
}
fn default_first_request_timeout() -> u64 {
    10
}
fn default_idle_timeout() -> u64 {
    30
}
fn default_body_timeout() -> u64 {
    10
}
fn default_body_min_rate() -> u64 {
    1024
}
fn default_buffered_body_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_connection_body_bytes() -> usize {
    256 * 1024
}
fn default_queued_response_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_connection_response_bytes() -> usize {
    4 * 1024 * 1024
}

impl ServerConfig {
    /// The connection limits, deadlines and budgets are in range.
    pub fn check_limits(&self) -> Result<(), SettingError> {
        let secs = [
            ("server.handshake_timeout_secs", self.handshake_timeout_secs),
            (
                "server.first_request_timeout_secs",
                self.first_request_timeout_secs,
            ),
            ("server.idle_timeout_secs", self.idle_timeout_secs),
            ("server.body_timeout_secs", self.body_timeout_secs),
            (
                "server.header_read_timeout_secs",
                self.header_read_timeout_secs,
            ),
        ];
        for (key, v) in secs {
            if !(1..=3600).contains(&v) {
                return Err(out_of_range(key, "between 1 and 3600"));
            }
        }
        if self.max_connections == 0 {
            return Err(out_of_range("server.max_connections", "at least 1"));
        }
        if self.body_min_bytes_per_sec == 0 {
            return Err(out_of_range("server.body_min_bytes_per_sec", "at least 1"));
        }
        if self.max_connection_response_bytes < 64 * 1024
            || self.max_queued_response_bytes < self.max_connection_response_bytes
        {
            return Err(SettingError::ResponseBudgets);
        }
        Ok(())
    }

    /// The accept loop's options from this section.
    pub fn serve_options(&self) -> crate::server::ServeOptions {
        use crate::server::{budget::BudgetLimits, conn, ServeOptions};
        use std::time::Duration;
        ServeOptions {
            admission: conn::Admission {
                max_connections: self.max_connections,
                max_connections_per_ip: self.max_connections_per_ip,
            },
            deadlines: conn::Deadlines {
                handshake: Duration::from_secs(self.handshake_timeout_secs),
                first_request: Duration::from_secs(self.first_request_timeout_secs),
                idle: Duration::from_secs(self.idle_timeout_secs),
                body_total: Duration::from_secs(self.body_timeout_secs),
                body_min_bytes_per_sec: self.body_min_bytes_per_sec,
            },
            // A connection can always hold one largest body, and the server
            // one connection's share.
            budgets: BudgetLimits {
                body_bytes: self
                    .max_buffered_body_bytes
                    .max(self.max_connection_body_bytes.max(self.max_body_bytes)),
                connection_body_bytes: self.max_connection_body_bytes.max(self.max_body_bytes),
                response_bytes: self.max_queued_response_bytes,
                connection_response_bytes: self.max_connection_response_bytes,
                ..BudgetLimits::default()
            },
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            ..ServeOptions::default()
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            tls_names: default_tls_names(),
            auth_keys: default_auth_keys(),
            secret_file_mode: SecretFileMode::default(),
            max_body_bytes: default_max_body(),
            max_connections: default_max_connections(),
            header_read_timeout_secs: default_header_timeout(),
            max_skew_secs: default_skew(),
            replay_cache_entries: default_replay_entries(),
            max_connections_per_ip: 0,
            handshake_timeout_secs: default_handshake_timeout(),
            first_request_timeout_secs: default_first_request_timeout(),
            idle_timeout_secs: default_idle_timeout(),
            body_timeout_secs: default_body_timeout(),
            body_min_bytes_per_sec: default_body_min_rate(),
            max_buffered_body_bytes: default_buffered_body_bytes(),
            max_connection_body_bytes: default_connection_body_bytes(),
            max_queued_response_bytes: default_queued_response_bytes(),
            max_connection_response_bytes: default_connection_response_bytes(),
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
/// CRLs and OCSP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationConfig {
    /// Re-sign every CRL at least this often, in seconds (60 ..= 86400;
    /// default 3600). A revocation re-signs its class's CRLs at once.
    #[serde(default = "default_crl_refresh")]
    pub crl_refresh_secs: u64,
    /// nextUpdate = thisUpdate + this, in seconds (more than the refresh,
    /// at most 7 days; default 21600). OCSP answers use the same times.
    #[serde(default = "default_crl_validity")]
    pub crl_validity_secs: u64,
}

fn default_crl_refresh() -> u64 {
    3600
}
fn default_crl_validity() -> u64 {
    6 * 3600
}

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            crl_refresh_secs: default_crl_refresh(),
            crl_validity_secs: default_crl_validity(),
        }
    }
}

impl RevocationConfig {
    pub fn crl_times(&self) -> crate::revoke::CrlTimes {
        crate::revoke::CrlTimes {
            refresh: std::time::Duration::from_secs(self.crl_refresh_secs),
            validity: std::time::Duration::from_secs(self.crl_validity_secs),
        }
    }

    fn check(&self) -> Result<(), SettingError> {
        if !(60..=86400).contains(&self.crl_refresh_secs) {
            return Err(SettingError::OutOfRange {
                key: "revocation.crl_refresh_secs",
                allowed: "between 60 and 86400",
            });
        }
        if self.crl_validity_secs <= self.crl_refresh_secs || self.crl_validity_secs > 7 * 86400 {
            return Err(SettingError::OutOfRange {
                key: "revocation.crl_validity_secs",
                allowed: "more than crl_refresh_secs and at most 604800",
            });
        }
        Ok(())
    }
}

/// The read-only web console under `/ui/` and the inventory search
/// (`GET /v1/log/{log_id}/search`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiConfig {
    /// Serve the console at all (default true). Off: `/ui/` is 404 and
    /// search finds nothing, on every listener.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// On a listener that is not loopback, the console and search need a
    /// client certificate chaining to a root of one of these classes
    /// (mTLS on the same listener; the server asks for, but does not
    /// require, a client certificate). Empty (default): off unless the
    /// listener is loopback.
    #[serde(default)]
    pub client_classes: Vec<String>,
    /// How many of the newest entries the findings page re-checks at start
    /// (1 ..= 1000000; every later entry is checked as it is logged).
    #[serde(default = "default_findings_entries")]
    pub findings_entries: u64,
    /// The inventory (console search, "expiring next") holds at most this
    /// many of the newest entries, ~150 bytes of memory each (1000 ..=
    /// 100000000); older ones are read with `ca-server log show`.
    #[serde(default = "default_inventory_entries")]
    pub inventory_entries: u64,
}

fn default_true() -> bool {
    true
}
fn default_findings_entries() -> u64 {
    10_000
}
fn default_inventory_entries() -> u64 {
    100_000
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            enabled: true,
            client_classes: Vec::new(),
            findings_entries: default_findings_entries(),
            inventory_entries: default_inventory_entries(),
        }
    }
}

impl UiConfig {
    fn check(&self) -> Result<(), SettingError> {
        if !(1..=1_000_000).contains(&self.findings_entries) {
            return Err(out_of_range("ui.findings_entries", "between 1 and 1000000"));
        }
        if !(1_000..=100_000_000).contains(&self.inventory_entries) {
            return Err(out_of_range(
                "ui.inventory_entries",
                "between 1000 and 100000000",
            ));
        }
        if self
            .client_classes
            .iter()
            .any(|c| c.is_empty() || c.len() > 64)
        {
            return Err(out_of_range(
                "ui.client_classes",
                "class names of 1 to 64 characters",
            ));
        }
        Ok(())
    }
}

/// The issuance log of this replica.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Names this replica's log; unique per replica (e.g. the host name).
    /// One process writes a log (an exclusive lock on its directory), so
    /// replicas sharing a state directory need distinct log ids.
    #[serde(default = "default_log_id")]
    pub log_id: String,
    /// Serve `entries` and `proof` without authentication (`sth` and `key`
    /// are always public). Default: any valid auth key.
    #[serde(default)]
    pub public_reads: bool,
    /// Log reads (`entries`, `proof`) running at once, on their own
    /// lowest-priority threads (1 ..= 64).
    #[serde(default = "default_read_threads")]
    pub read_threads: usize,
    /// Log reads waiting for a thread; beyond this, 503 `busy` with
    /// Retry-After (0 ..= 65536).
    #[serde(default = "default_read_queue")]
    pub read_queue: usize,
    /// Entry bytes in one `entries` page (4 KiB ..= 16 MiB; a page holds at
    /// most 1000 entries, and at least one).
    #[serde(default = "default_page_bytes")]
    pub page_bytes: usize,
    /// Percent of one CPU that log reads together may use on average
    /// (1 ..= 6400), on top of running at the lowest priority.
    #[serde(default = "default_read_cpu_percent")]
    pub read_cpu_percent: u32,
    /// Algorithm of the log signing key when it is created (as
    /// `[ca] key_algorithm`, which is the default).
    #[serde(default)]
    pub key_algorithm: Option<String>,
    /// Longest a group commit waits, in microseconds, for the certificates
    /// being signed at that moment, so that they share its fsync and
    /// tree-head signature (0 ..= 1000000; 0: never wait).
    #[serde(default = "default_commit_gather_us")]
    pub commit_gather_us: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            log_id: default_log_id(),
            public_reads: false,
            read_threads: default_read_threads(),
            read_queue: default_read_queue(),
            page_bytes: default_page_bytes(),
            read_cpu_percent: default_read_cpu_percent(),
            key_algorithm: None,
            commit_gather_us: default_commit_gather_us(),
        }
    }
}

impl LogConfig {
    /// The read limits are in range.
    pub fn check(&self) -> Result<(), SettingError> {
        if !(1..=64).contains(&self.read_threads) {
            return Err(out_of_range("log.read_threads", "between 1 and 64"));
        }
        if self.read_queue > 65536 {
            return Err(out_of_range("log.read_queue", "at most 65536"));
        }
        if !(4096..=16 * 1024 * 1024).contains(&self.page_bytes) {
            return Err(out_of_range("log.page_bytes", "between 4 KiB and 16 MiB"));
        }
        if !(1..=6400).contains(&self.read_cpu_percent) {
            return Err(out_of_range("log.read_cpu_percent", "between 1 and 6400"));
        }
        if self.commit_gather_us > 1_000_000 {
            return Err(out_of_range("log.commit_gather_us", "at most 1000000"));
        }
        Ok(())
    }

    /// [`Self::commit_gather_us`] as a duration.
    pub fn commit_gather(&self) -> std::time::Duration {
        std::time::Duration::from_micros(u64::from(self.commit_gather_us))
    }
}

fn default_log_id() -> String {
    "trellis-1".into()
}
fn default_read_threads() -> usize {
    2
}
fn default_read_queue() -> usize {
    64
}
fn default_page_bytes() -> usize {
    256 * 1024
}
fn default_read_cpu_percent() -> u32 {
    5
}
fn default_commit_gather_us() -> u32 {
    crate::log::DEFAULT_COMMIT_GATHER.as_micros() as u32
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
        // Capped and regular-file only: `--config /dev/zero` must not eat
        // memory, and a secret file named by mistake is never echoed.
        let bytes = read_regular_file(path, MAX_CONFIG_BYTES)?;
        let text = String::from_utf8(bytes).map_err(|_| ResolveError::NotText(shown.clone()))?;
        let mut config: Config = toml::from_str(&text).map_err(|e| {
            ConfigError::Parse(describe_parse_error(path, &text, e.span(), e.message()))
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
        for (key, pin) in [
            ("hsm.online_pin", &mut config.hsm.online_pin),
            ("hsm.root_pin", &mut config.hsm.root_pin),
        ] {
            *pin = pin_reference(&base, pin).map_err(|error| ConfigError::Invalid {
                path: shown.clone(),
                error: SettingError::PinReference { key, error },
            })?;
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.check_settings().map_err(|error| ConfigError::Invalid {
            path: self.path.display().to_string(),
            error,
        })
    }

    /// Every setting is in range, in the order the errors are reported.
    fn check_settings(&self) -> Result<(), SettingError> {
        self.ca_key_algorithm()?;
        self.log_key_algorithm()?;
        if !ca_proto::auth::valid_key_id(&self.log.log_id) {
            return Err(SettingError::LogId);
        }
        self.log.check()?;
        self.revocation.check()?;
        self.ui.check()?;
        self.server.check_limits()?;
        if !(1024..=16 * 1024 * 1024).contains(&self.server.max_body_bytes) {
            return Err(out_of_range(
                "server.max_body_bytes",
                "between 1 KiB and 16 MiB",
            ));
        }
        if !(1..=600).contains(&self.server.max_skew_secs) {
            return Err(out_of_range("server.max_skew_secs", "between 1 and 600"));
        }
        if self.ca.intermediate_validity_days == 0
            || self.ca.root_validity_days <= self.ca.intermediate_validity_days
        {
            return Err(SettingError::Validity);
        }
        Ok(())
    }

    pub fn ca_key_algorithm(&self) -> Result<hsm::KeyAlgorithm, SettingError> {
        self.ca
            .key_algorithm
            .parse::<hsm::KeyAlgorithm>()
            .map_err(SettingError::CaKeyAlgorithm)
    }

    /// The log key's algorithm: `[log] key_algorithm`, else the CA keys'.
    pub fn log_key_algorithm(&self) -> Result<hsm::KeyAlgorithm, SettingError> {
        match &self.log.key_algorithm {
            Some(a) => a.parse().map_err(SettingError::LogKeyAlgorithm),
            None => self.ca_key_algorithm(),
        }
    }

    pub fn signing_placement(&self) -> hsm::Placement {
        if self.hsm.pin_signing_threads {
            hsm::Placement::Auto
        } else {
            hsm::Placement::Free
        }
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

/// A PIN reference (`file:`/`env:` only, never a value) with a relative
/// `file:` path resolved against the config file's directory.
fn pin_reference(base: &Path, reference: &str) -> Result<String, ResolveError> {
    SecretRef::parse(reference, base).map(|r| r.to_string())
}

impl Config {
    /// The online token's PIN, read with `[server] secret_file_mode`.
    pub fn read_online_pin(&self) -> hsm::HsmResult<hsm::Pin> {
        hsm::Pin::resolve_with(&self.hsm.online_pin, self.server.secret_file_mode)
    }

    /// The root token's PIN, read with `[server] secret_file_mode`.
    pub fn read_root_pin(&self) -> hsm::HsmResult<hsm::Pin> {
        hsm::Pin::resolve_with(&self.hsm.root_pin, self.server.secret_file_mode)
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    const PIN: &str = "pin-online-7f3e9d2c";

    fn write_config(dir: &Path, hsm_extra: &str, server: &str) -> PathBuf {
        let path = dir.join("config.toml");
        let text = format!(
            "[hsm]\nmodule = \"x.so\"\nonline_pin = \"file:secrets/online.pin\"\n\
             root_pin = \"env:ROOT_PIN\"\n{hsm_extra}\n[server]\n{server}\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn pin_references_resolve_against_the_config_directory() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::load(&write_config(dir.path(), "", "")).unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(
            config.hsm.online_pin,
            format!("file:{}", base.join("secrets/online.pin").display())
        );
        assert_eq!(config.hsm.root_pin, "env:ROOT_PIN");
        assert_eq!(config.server.secret_file_mode, SecretFileMode::Strict);
        let relaxed = write_config(dir.path(), "", "secret_file_mode = \"group-readable\"");
        let config = Config::load(&relaxed).unwrap();
        assert_eq!(
            config.server.secret_file_mode,
            SecretFileMode::GroupReadable
        );
    }

    #[test]
    fn signing_threads_are_placed_unless_told_not_to() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::load(&write_config(dir.path(), "", "")).unwrap();
        assert_eq!(config.signing_placement(), hsm::Placement::Auto);
        let free = write_config(dir.path(), "pin_signing_threads = false", "");
        let config = Config::load(&free).unwrap();
        assert_eq!(config.signing_placement(), hsm::Placement::Free);
    }

    #[test]
    fn the_commit_gather_defaults_to_a_millisecond_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), "", "");
        let config = Config::load(&path).unwrap();
        assert_eq!(
            config.log.commit_gather(),
            crate::log::DEFAULT_COMMIT_GATHER
        );
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("[log]\ncommit_gather_us = 0\n");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(
            Config::load(&path).unwrap().log.commit_gather(),
            std::time::Duration::ZERO
        );
        std::fs::write(&path, text.replace("= 0\n", "= 1000001\n")).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("log.commit_gather_us"), "{e}");
    }

    #[test]
    fn errors_name_the_position_never_the_value() {
        let dir = tempfile::tempdir().unwrap();
        // a bare PIN where a reference belongs
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            format!("[hsm]\nmodule = \"x.so\"\nonline_pin = \"{PIN}\"\nroot_pin = \"env:R\"\n"),
        )
        .unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("hsm.online_pin") && !e.contains(PIN), "{e}");
        // a syntax error on the PIN line
        std::fs::write(
            &path,
            format!("[hsm]\nmodule = \"x.so\"\nonline_pin = \"{PIN}\nroot_pin = \"env:R\"\n"),
        )
        .unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("config.toml:3:") && !e.contains(PIN), "{e}");
        // an unknown mode value
        let bad = write_config(dir.path(), "", &format!("secret_file_mode = \"{PIN}\""));
        let e = Config::load(&bad).unwrap_err().to_string();
        assert!(e.contains("expected `strict` or `group-readable`"), "{e}");
        assert!(!e.contains(PIN), "{e}");
        // a PIN file given as the config
        let pin = dir.path().join("online.pin");
        std::fs::write(&pin, format!("{PIN}\n")).unwrap();
        let e = Config::load(&pin).unwrap_err().to_string();
        assert!(e.contains("online.pin:1:") && !e.contains(PIN), "{e}");
        let e = Config::load(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
