//! The `ca-client` command line: flags and/or a TOML file (flags win), then
//! `--once`, the daemon, or `ca-client revoke`. Everything else lives in the
//! library.
//!
//! Exit status: 0 when the files are in place and valid (`revoke`: when the
//! certificate was revoked); 1 with one line on standard error when they are
//! not (or the daemon could not start, or the CA refused the revocation); 2
//! for configuration errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use ca_client::agent::Agent;
use ca_client::config::{ModeValue, OneOrMany, RawConfig, Settings};
use ca_client::metrics::Metrics;
use ca_client::store;
use ca_proto::revocation::RevocationReason;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Trellis sidecar: generates the key locally, gets a certificate from the
/// CA, keeps it fresh (and the trust classes' bundles and CRLs), and tells
/// the service when files change.
#[derive(Debug, Parser)]
#[command(
    name = "ca-client",
    version,
    after_help = "Revocation: the daemon fetches the CRLs of its own and trust classes every \
--crl-refresh (default 60s) into trust/<class>.crl.pem; when its own certificate is revoked it \
enrols at once with a new key. `ca-client revoke --reason keyCompromise [options]` revokes the \
installed certificate with its own key (see `ca-client revoke --help`)."
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    /// Get the files once and exit (init containers).
    #[arg(long)]
    once: bool,
    /// With --once: make no request while the present certificate is valid
    /// and before its renewal point.
    #[arg(long, requires = "once")]
    if_needed: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Revoke the installed certificate with its own key (no HMAC key with
    /// a revoke permission needed) and print one line. Takes the same
    /// configuration as the daemon; it runs beside a running daemon, which
    /// then enrols at once with a new key (unless --no-reenrol).
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
struct RevokeArgs {
    /// RFC 5280 reason: unspecified, keyCompromise, cACompromise,
    /// affiliationChanged, superseded, cessationOfOperation,
    /// privilegeWithdrawn.
    #[arg(long, value_name = "REASON", value_parser = parse_reason)]
    reason: RevocationReason,
    /// Do not enrol again: the daemon stops renewing (healthz says
    /// revoked) until `ca-client --once` is run.
    #[arg(long)]
    no_reenrol: bool,
}

fn parse_reason(s: &str) -> Result<RevocationReason, String> {
    RevocationReason::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = RevocationReason::ALL.iter().map(|r| r.name()).collect();
        format!("unknown reason '{s}' (one of {})", names.join(", "))
    })
}

/// The configuration flags every command takes (before or after `revoke`).
#[derive(Debug, Args)]
struct Common {
    /// TOML configuration file (the flags below override it).
    #[arg(
        long,
        short = 'c',
        env = "CA_CLIENT_CONFIG",
        value_name = "FILE",
        global = true
    )]
    config: Option<PathBuf>,
    /// CA base URL (repeatable; tried in order).
    #[arg(long = "ca", value_name = "URL", global = true)]
    ca: Vec<String>,
    /// PEM file with the CA's TLS root (the `ca` class root).
    #[arg(long, value_name = "FILE", global = true)]
    ca_root: Option<PathBuf>,
    /// SHA-256 of the `ca` class root, for first contact without --ca-root.
    #[arg(long, value_name = "HEX", global = true)]
    ca_root_sha256: Option<String>,
    /// Certificate class (trust domain).
    #[arg(long, global = true)]
    class: Option<String>,
    /// Profile within the class (default: the class default).
    #[arg(long, global = true)]
    profile: Option<String>,
    /// HMAC key id.
    #[arg(long, value_name = "ID", global = true)]
    key_id: Option<String>,
    /// File holding the HMAC secret in hex.
    #[arg(long, value_name = "FILE", global = true)]
    key_secret_file: Option<PathBuf>,
    /// DNS name to request (repeatable).
    #[arg(long, value_name = "NAME", global = true)]
    dns: Vec<String>,
    /// IP address to request (repeatable).
    #[arg(long, value_name = "IP", global = true)]
    ip: Vec<String>,
    /// URI to request, e.g. a SPIFFE ID (repeatable).
    #[arg(long, value_name = "URI", global = true)]
    uri: Vec<String>,
    /// CSR common name (default: the first DNS name; "" for none).
    #[arg(long, value_name = "CN", global = true)]
    common_name: Option<String>,
    /// Requested lifetime (e.g. 24h, 90m, 60s; default: the profile's).
    #[arg(long, value_name = "DURATION", global = true)]
    ttl: Option<String>,
    /// ec-p256 (default), ec-p384, ed25519, or rsa (pre-provisioned key only).
    #[arg(long, value_name = "ALG", global = true)]
    key_algorithm: Option<String>,
    /// Keep the current key across renewals instead of making a new one.
    #[arg(long, global = true)]
    no_rotate_key: bool,
    /// Output directory (key.pem, cert.pem, chain.pem, fullchain.pem, combined.pem, trust/).
    #[arg(long, value_name = "DIR", global = true)]
    out: Option<PathBuf>,
    /// Extra link to the key (e.g. where the service expects it).
    #[arg(long, value_name = "PATH", global = true)]
    key_file: Option<PathBuf>,
    /// Extra link to the certificate.
    #[arg(long, value_name = "PATH", global = true)]
    cert_file: Option<PathBuf>,
    /// Extra link to the intermediates.
    #[arg(long, value_name = "PATH", global = true)]
    chain_file: Option<PathBuf>,
    /// Extra link to the full chain.
    #[arg(long, value_name = "PATH", global = true)]
    fullchain_file: Option<PathBuf>,
    /// Extra link to key + full chain.
    #[arg(long, value_name = "PATH", global = true)]
    combined_file: Option<PathBuf>,
    /// Peer class whose trust bundle to write (repeatable).
    #[arg(long, value_name = "CLASS", global = true)]
    trust: Vec<String>,
    /// Directory for trust bundles (default: OUT/trust).
    #[arg(long, value_name = "DIR", global = true)]
    trust_dir: Option<PathBuf>,
    /// Owner of the written files (name or uid).
    #[arg(long, global = true)]
    owner: Option<String>,
    /// Group of the written files (name or gid).
    #[arg(long, global = true)]
    group: Option<String>,
    /// Mode of key.pem and combined.pem (octal, default 0600).
    #[arg(long, value_name = "OCTAL", global = true)]
    key_mode: Option<String>,
    /// Mode of the certificate files (octal, default 0644).
    #[arg(long, value_name = "OCTAL", global = true)]
    cert_mode: Option<String>,
    /// Fraction of the lifetime at which to renew (default 0.6667).
    #[arg(long, value_name = "F", global = true)]
    renew_fraction: Option<f64>,
    /// Command (sh -c) to run after each write.
    #[arg(long, value_name = "CMD", global = true)]
    on_renew: Option<String>,
    /// Signal to send after each write (with --reload-pidfile).
    #[arg(long, value_name = "SIGNAL", global = true)]
    reload_signal: Option<String>,
    /// File holding the PID to signal.
    #[arg(long, value_name = "FILE", global = true)]
    reload_pidfile: Option<PathBuf>,
    /// Time limit of the reload command (default 30s).
    #[arg(long, value_name = "DURATION", global = true)]
    reload_timeout: Option<String>,
    /// Serve /metrics and /healthz on this address.
    #[arg(long, value_name = "ADDR", global = true)]
    metrics_listen: Option<String>,
    /// Accept certificates without verified issuance-log evidence (default:
    /// refuse them).
    #[arg(long, global = true)]
    no_require_inclusion_proof: bool,
    /// Pinned issuance-log public key (PEM); default: fetched from the CA.
    #[arg(long, value_name = "FILE", global = true)]
    log_public_key: Option<PathBuf>,
    /// How strictly the secret file's mode is checked: strict (0600/0400,
    /// default) or group-readable (also 0640/0440, e.g. Kubernetes secret
    /// volumes with defaultMode 0440).
    #[arg(long, value_name = "MODE", global = true)]
    secret_file_mode: Option<String>,
    /// Directory of the pinned class roots (default: OUT/.state).
    #[arg(long, value_name = "DIR", global = true)]
    state_dir: Option<PathBuf>,
    /// Pin for the roots of a class at first contact, CLASS=SHA256
    /// (repeatable; default: trust on first use).
    #[arg(long, value_name = "CLASS=HEX", global = true)]
    class_root_sha256: Vec<String>,
    /// How often the CRLs of the own and trust classes are fetched
    /// (default 60s: revoked peers are refused within about a minute).
    #[arg(long, value_name = "DURATION", global = true)]
    crl_refresh: Option<String>,
    /// Log format (logs go to standard error).
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
}

impl Common {
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
            crl_refresh: self.crl_refresh.clone(),
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

fn init_logging(format: LogFormat, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    // --once and revoke speak through their exit status and one line; logs
    // only on request.
    let default = if quiet { "off" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The settings from `common` (the file, then its flags).
fn settings(common: &Common) -> Result<Settings, ExitCode> {
    let file = match &common.config {
        Some(path) => match RawConfig::load(path) {
            Ok(raw) => raw,
            Err(e) => return Err(fail(2, &format!("config: {e}"))),
        },
        None => RawConfig::default(),
    };
    let flags = match common.raw() {
        Ok(raw) => raw,
        Err(e) => return Err(fail(2, &format!("config: {e}"))),
    };
    Settings::from_raw(file.merge(flags)).map_err(|e| fail(2, &format!("config: {e}")))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.once && cli.command.is_some() {
        use clap::CommandFactory;
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--once cannot be used with `revoke`",
            )
            .exit();
    }
    let common = &cli.common;
    init_logging(common.log_format, cli.once || cli.command.is_some());
    let settings = match settings(common) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, &format!("starting the runtime: {e}")),
    };
    match cli.command {
        Some(Command::Revoke(args)) => {
            runtime.block_on(revoke(settings, args.reason, !args.no_reenrol))
        }
        None => runtime.block_on(run(settings, cli.once, cli.if_needed)),
    }
}

/// `ca-client revoke`: no lock (a daemon may hold it), one line.
async fn revoke(settings: Settings, reason: RevocationReason, reenrol: bool) -> ExitCode {
    let metrics = match Metrics::new() {
        Ok(m) => Arc::new(m),
        Err(e) => return fail(1, &format!("metrics: {e}")),
    };
    let mut agent = Agent::beside_daemon(settings, metrics);
    match agent.revoke(reason, reenrol).await {
        Ok(done) => {
            println!("{}", one_line(&done.to_string()));
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &format!("revoke: {e}")),
    }
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
