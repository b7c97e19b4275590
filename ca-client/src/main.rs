//! The `ca-client` command line: flags and/or a TOML file (flags win), then
//! `--once` or the daemon. Everything else lives in the library.
//!
//! Exit status: 0 when the files are in place and valid; 1 with one line on
//! standard error when they are not (or the daemon could not start); 2 for
//! configuration errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use ca_client::agent::Agent;
use ca_client::config::{ModeValue, OneOrMany, RawConfig, Settings};
use ca_client::metrics::Metrics;
use ca_client::store;
use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Trellis sidecar: generates the key locally, gets a certificate from the
/// CA, keeps it fresh, and tells the service when files change.
#[derive(Debug, Parser)]
#[command(name = "ca-client", version)]
struct Cli {
    /// TOML configuration file (the flags below override it).
    #[arg(long, short = 'c', env = "CA_CLIENT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// CA base URL (repeatable; tried in order).
    #[arg(long = "ca", value_name = "URL")]
    ca: Vec<String>,
    /// PEM file with the CA's TLS root (the `ca` class root).
    #[arg(long, value_name = "FILE")]
    ca_root: Option<PathBuf>,
    /// SHA-256 of the `ca` class root, for first contact without --ca-root.
    #[arg(long, value_name = "HEX")]
    ca_root_sha256: Option<String>,
    /// Certificate class (trust domain).
    #[arg(long)]
    class: Option<String>,
    /// Profile within the class (default: the class default).
    #[arg(long)]
    profile: Option<String>,
    /// HMAC key id.
    #[arg(long, value_name = "ID")]
    key_id: Option<String>,
    /// File holding the HMAC secret in hex.
    #[arg(long, value_name = "FILE")]
    key_secret_file: Option<PathBuf>,
    /// DNS name to request (repeatable).
    #[arg(long, value_name = "NAME")]
    dns: Vec<String>,
    /// IP address to request (repeatable).
    #[arg(long, value_name = "IP")]
    ip: Vec<String>,
    /// URI to request, e.g. a SPIFFE ID (repeatable).
    #[arg(long, value_name = "URI")]
    uri: Vec<String>,
    /// CSR common name (default: the first DNS name; "" for none).
    #[arg(long, value_name = "CN")]
    common_name: Option<String>,
    /// Requested lifetime (e.g. 24h, 90m, 60s; default: the profile's).
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
    /// ec-p256 (default), ec-p384, ed25519, or rsa (pre-provisioned key only).
    #[arg(long, value_name = "ALG")]
    key_algorithm: Option<String>,
    /// Keep the current key across renewals instead of making a new one.
    #[arg(long)]
    no_rotate_key: bool,
    /// Output directory (key.pem, cert.pem, chain.pem, fullchain.pem, combined.pem, trust/).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Extra link to the key (e.g. where the service expects it).
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// Extra link to the certificate.
    #[arg(long, value_name = "PATH")]
    cert_file: Option<PathBuf>,
    /// Extra link to the intermediates.
    #[arg(long, value_name = "PATH")]
    chain_file: Option<PathBuf>,
    /// Extra link to the full chain.
    #[arg(long, value_name = "PATH")]
    fullchain_file: Option<PathBuf>,
    /// Extra link to key + full chain.
    #[arg(long, value_name = "PATH")]
    combined_file: Option<PathBuf>,
    /// Peer class whose trust bundle to write (repeatable).
    #[arg(long, value_name = "CLASS")]
    trust: Vec<String>,
    /// Directory for trust bundles (default: OUT/trust).
    #[arg(long, value_name = "DIR")]
    trust_dir: Option<PathBuf>,
    /// Owner of the written files (name or uid).
    #[arg(long)]
    owner: Option<String>,
    /// Group of the written files (name or gid).
    #[arg(long)]
    group: Option<String>,
    /// Mode of key.pem and combined.pem (octal, default 0600).
    #[arg(long, value_name = "OCTAL")]
    key_mode: Option<String>,
    /// Mode of the certificate files (octal, default 0644).
    #[arg(long, value_name = "OCTAL")]
    cert_mode: Option<String>,
    /// Fraction of the lifetime at which to renew (default 0.6667).
    #[arg(long, value_name = "F")]
    renew_fraction: Option<f64>,
    /// Command (sh -c) to run after each write.
    #[arg(long, value_name = "CMD")]
    on_renew: Option<String>,
    /// Signal to send after each write (with --reload-pidfile).
    #[arg(long, value_name = "SIGNAL")]
    reload_signal: Option<String>,
    /// File holding the PID to signal.
    #[arg(long, value_name = "FILE")]
    reload_pidfile: Option<PathBuf>,
    /// Time limit of the reload command (default 30s).
    #[arg(long, value_name = "DURATION")]
    reload_timeout: Option<String>,
    /// Serve /metrics and /healthz on this address.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Accept certificates without verified issuance-log evidence (default:
    /// refuse them).
    #[arg(long)]
    no_require_inclusion_proof: bool,
    /// Pinned issuance-log public key (PEM); default: fetched from the CA.
    #[arg(long, value_name = "FILE")]
    log_public_key: Option<PathBuf>,
    /// How strictly the secret file's mode is checked: strict (0600/0400,
    /// default) or group-readable (also 0640/0440, e.g. Kubernetes secret
    /// volumes with defaultMode 0440).
    #[arg(long, value_name = "MODE")]
    secret_file_mode: Option<String>,
    /// Directory of the pinned class roots (default: OUT/.state).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Pin for the roots of a class at first contact, CLASS=SHA256
    /// (repeatable; default: trust on first use).
    #[arg(long, value_name = "CLASS=HEX")]
    class_root_sha256: Vec<String>,
    /// Get the files once and exit (init containers).
    #[arg(long)]
    once: bool,
    /// With --once: make no request while the present certificate is valid
    /// and before its renewal point.
    #[arg(long, requires = "once")]
    if_needed: bool,
    /// Log format (logs go to standard error).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

impl Cli {
    fn raw(&self) -> Result<RawConfig, String> {
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        Ok(RawConfig {
            ca: list(&self.ca),
            ca_root: self.ca_root.clone(),
            ca_root_sha256: self.ca_root_sha256.clone(),
            class: self.class.clone(),
            profile: self.profile.clone(),
            key_id: self.key_id.clone(),
            key_secret_file: self.key_secret_file.clone(),
            dns: list(&self.dns),
            ip: list(&self.ip),
            uri: list(&self.uri),
            common_name: self.common_name.clone(),
            ttl: self.ttl.clone(),
            key_algorithm: self.key_algorithm.clone(),
            rotate_key: self.no_rotate_key.then_some(false),
            out: self.out.clone(),
            key_file: self.key_file.clone(),
            cert_file: self.cert_file.clone(),
            chain_file: self.chain_file.clone(),
            fullchain_file: self.fullchain_file.clone(),
            combined_file: self.combined_file.clone(),
            trust: list(&self.trust),
            trust_dir: self.trust_dir.clone(),
            owner: self.owner.clone(),
            group: self.group.clone(),
            key_mode: self.key_mode.clone().map(ModeValue::Text),
            cert_mode: self.cert_mode.clone().map(ModeValue::Text),
            renew_fraction: self.renew_fraction,
            on_renew: self.on_renew.clone(),
            reload_signal: self.reload_signal.clone(),
            reload_pidfile: self.reload_pidfile.clone(),
            reload_timeout: self.reload_timeout.clone(),
            metrics_listen: self.metrics_listen.clone(),
            require_inclusion_proof: self.no_require_inclusion_proof.then_some(false),
            log_public_key: self.log_public_key.clone(),
            secret_file_mode: self.secret_file_mode.clone(),
            state_dir: self.state_dir.clone(),
            class_root_sha256: self.class_root_pins()?,
        })
    }

    /// `--class-root-sha256 CLASS=HEX` flags as the file's table.
    #[allow(clippy::type_complexity)]
    fn class_root_pins(
        &self,
    ) -> Result<Option<std::collections::BTreeMap<String, OneOrMany>>, String> {
        if self.class_root_sha256.is_empty() {
            return Ok(None);
        }
        let mut map: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for flag in &self.class_root_sha256 {
            let (class, pin) = flag
                .split_once('=')
                .ok_or_else(|| format!("--class-root-sha256 '{flag}': expected CLASS=SHA256"))?;
            map.entry(class.to_owned())
                .or_default()
                .push(pin.to_owned());
        }
        Ok(Some(
            map.into_iter()
                .map(|(k, v)| (k, OneOrMany::Many(v)))
                .collect(),
        ))
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("ca-client: {}", one_line(msg));
    ExitCode::from(code)
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    // --once speaks through its exit status and one line; logs only on request.
    let default = if cli.once { "off" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let file = match &cli.config {
        Some(path) => match RawConfig::load(path) {
            Ok(raw) => raw,
            Err(e) => return fail(2, &format!("config: {e}")),
        },
        None => RawConfig::default(),
    };
    let flags = match cli.raw() {
        Ok(raw) => raw,
        Err(e) => return fail(2, &format!("config: {e}")),
    };
    let settings = match Settings::from_raw(file.merge(flags)) {
        Ok(s) => s,
        Err(e) => return fail(2, &format!("config: {e}")),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, &format!("starting the runtime: {e}")),
    };
    runtime.block_on(run(settings, cli.once, cli.if_needed))
}

async fn run(settings: Settings, once: bool, if_needed: bool) -> ExitCode {
    let _lock = match store::lock(&settings.layout.dir) {
        Ok(l) => l,
        Err(e) => return fail(1, &e.to_string()),
    };
    let metrics = match Metrics::new() {
        Ok(m) => Arc::new(m),
        Err(e) => return fail(1, &format!("metrics: {e}")),
    };
    let listen = settings.metrics_listen;
    let mut agent = Agent::new(settings, metrics.clone());

    if once {
        return match agent.run_once(if_needed).await {
            Ok(outcome) => {
                println!("{}", one_line(&outcome.message));
                if let Some(w) = outcome.warning {
                    eprintln!("ca-client: {}", one_line(&w));
                }
                ExitCode::SUCCESS
            }
            Err(reason) => fail(1, &reason.to_string()),
        };
    }

    let _server = match listen {
        Some(addr) => match ca_client::metrics::serve(addr, metrics).await {
            Ok((bound, task)) => {
                tracing::info!(%bound, "serving /metrics and /healthz");
                Some(task)
            }
            Err(e) => return fail(1, &format!("metrics listener {addr}: {e}")),
        },
        None => None,
    };
    let shutdown = match shutdown_signal() {
        Ok(s) => s,
        Err(e) => return fail(1, &format!("installing signal handlers: {e}")),
    };
    tracing::info!(
        class = %agent.settings().class,
        out = %agent.settings().layout.dir.display(),
        "ca-client running"
    );
    agent.run(shutdown).await;
    tracing::info!("stopping");
    ExitCode::SUCCESS
}

/// Completes on SIGTERM or SIGINT.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
