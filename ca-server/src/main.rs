//! The `ca-server` command line. Each subcommand is a thin wrapper over the
//! library; see ARCHITECTURE.md for the map.

use anyhow::{Context, Result};
use ca_server::config::{default_listen, Config};
use ca_server::{admin, dev, state::StateDir};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ca-server",
    version,
    about = "Trellis: an online internal CA for service-to-service mTLS"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// How to listen (serve and dev).
#[derive(Args, Clone)]
struct Listen {
    /// Address to listen on (overrides the config file).
    #[arg(long)]
    listen: Option<String>,
    /// Serve plain HTTP instead of HTTPS. Refused unless the address is loopback.
    #[arg(long)]
    insecure_http: bool,
    /// Do not keep the issuance log (for benchmarks only; refused unless the
    /// address is loopback).
    #[arg(long)]
    no_log: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Create every class hierarchy (roots in the root token, intermediates in
    /// the online token) and the server's TLS certificate. Idempotent.
    Init {
        #[command(flatten)]
        target: Target,
    },
    /// Create (or reuse) a complete development deployment in DIR with
    /// SoftHSM2 tokens, initialise it, and serve it.
    Dev {
        #[arg(long, default_value = "./var")]
        dir: PathBuf,
        #[command(flatten)]
        listen: Listen,
        /// Initialise only; do not serve.
        #[arg(long)]
        init_only: bool,
    },
    /// Serve the signing API.
    Serve {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        listen: Listen,
    },
    /// Intermediate rotation: prepare, activate, retire.
    Rotate {
        #[command(subcommand)]
        command: RotateCommand,
    },
    /// Per class: root and intermediates with expiries, and warnings.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Issuance log tools.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// HSM tools.
    Hsm {
        #[command(subcommand)]
        command: HsmCommand,
    },
}

#[derive(Subcommand)]
enum HsmCommand {
    /// What the configured tokens offer, the mechanism chosen per key, and
    /// each key's security attributes. Exit 1 when anything is unfit.
    Check {
        #[command(flatten)]
        target: Target,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RotateCommand {
    /// New intermediate key in the online token, certificate signed by the
    /// class root (needs the root token PIN), stored as prepared.
    Prepare {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        class: String,
    },
    /// Issue from the prepared intermediate; the active one is retired. A
    /// running server picks this up by itself (SIGHUP is sent if it runs here).
    Activate {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        class: String,
    },
    /// Root rotation, step 1: a new root, cross-signed by the current one,
    /// published in the bundle next to it (needs the root token PIN).
    RootPrepare {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        class: String,
    },
    /// Root rotation, step 2: the new root signs new intermediates; their
    /// chains carry the cross certificate for peers that trust the old root.
    RootActivate {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        class: String,
    },
    /// Root rotation, step 3: drop the previous root from the bundle (refused
    /// while a live intermediate is signed by it).
    RootRetire {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        class: String,
    },
    /// Forget retired intermediates whose leaves have all expired.
    Retire {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        class: String,
        /// Also destroy their keys in the online token.
        #[arg(long)]
        destroy_keys: bool,
    },
}

#[derive(Subcommand)]
enum LogCommand {
    /// Check every checksum, entry number, signed tree head and root.
    Verify {
        #[command(flatten)]
        target: Target,
    },
    /// Print entries, optionally filtered.
    Show {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        class: Option<String>,
        /// A DNS name, IP address or URI the certificate names.
        #[arg(long)]
        san: Option<String>,
        #[arg(long)]
        serial: Option<String>,
        /// Only denials.
        #[arg(long)]
        denied: bool,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-check issued entries against current policy; report IP SANs and
    /// certificates from unknown intermediates. Exit 3 on any failure.
    Monitor {
        #[command(flatten)]
        target: Target,
        /// Keep watching for new entries (until SIGTERM).
        #[arg(long)]
        follow: bool,
        /// Write Prometheus text-format counts here (node_exporter textfile).
        #[arg(long)]
        metrics_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print the decision policy would take on a CSR, without signing.
    Check {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        class: String,
        #[arg(long)]
        profile: Option<String>,
        /// Names that replace the CSR's SANs (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
        #[arg(long)]
        ttl: Option<String>,
        /// CSR file (PEM or DER).
        csr: PathBuf,
    },
}

/// Which deployment an admin command acts on.
#[derive(Args)]
struct Target {
    /// The server's configuration file.
    #[arg(long, conflicts_with = "dir")]
    config: Option<PathBuf>,
    /// A development deployment made by `ca-server dev` (uses DIR/config.toml).
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl Target {
    fn config(&self) -> Result<Config> {
        let path = match (&self.config, &self.dir) {
            (Some(c), _) => c.clone(),
            (None, Some(d)) => d.join("config.toml"),
            (None, None) => anyhow::bail!("give --config FILE or --dir DIR"),
        };
        Ok(Config::load(&path)?)
    }
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if let Err(e) = run(cli) {
        eprintln!("ca-server: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init { target } => {
            let config = target.config()?;
            init(&config)
        }
        Command::Dev {
            dir,
            listen,
            init_only,
        } => {
            let default_listen = listen.listen.clone().unwrap_or_else(default_listen);
            let paths = dev::prepare(&dir, &default_listen)?;
            let config = Config::load(&paths.config)?;
            let module = admin::open_module(&config)?;
            for token in dev::ensure_tokens(&paths, &module)? {
                println!(
                    "created SoftHSM2 token '{token}' in {}",
                    paths.dir.join("hsm").display()
                );
            }
            init(&config)?;
            if init_only {
                return Ok(());
            }
            let port =
                port_of(listen.listen.as_deref().unwrap_or(&config.server.listen)).to_string();
            println!(
                "next, in another shell:\n  ./target/release/ca-client --once --ca https://localhost:{port} --ca-root {d}/classes/ca/root.pem \\\n    --class db --key-id db --key-secret-file {d}/secrets/auth-db.hex --dns pg-0.db.internal --trust api --out /tmp/db-cert",
                d = paths.dir.display()
            );
            serve(&config, &listen)
        }
        Command::Serve { target, listen } => serve(&target.config()?, &listen),
        Command::Log { command } => log_command(command),
        Command::Rotate { command } => rotate_command(command),
        Command::Status { target } => ca_server::status::print(&target.config()?),
        Command::Hsm {
            command: HsmCommand::Check { target, json },
        } => {
            if !ca_server::hsm_check::run(&target.config()?, json)? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Policy {
            command:
                PolicyCommand::Check {
                    target,
                    class,
                    profile,
                    hosts,
                    ttl,
                    csr,
                },
        } => {
            let config = target.config()?;
            let policies = admin::load_policies(&config)?;
            let input =
                std::fs::read(&csr).with_context(|| format!("reading {}", csr.display()))?;
            let ttl = ttl
                .map(|t| ca_proto::native::parse_duration(&t))
                .transpose()?;
            let hosts = (!hosts.is_empty()).then_some(hosts);
            let (text, granted) = ca_server::issue::explain(
                &policies,
                &class,
                profile.as_deref(),
                &input,
                hosts.as_deref(),
                ttl,
            );
            println!("{text}");
            if !granted {
                std::process::exit(2);
            }
            Ok(())
        }
    }
}

fn rotate_command(command: RotateCommand) -> Result<()> {
    use ca_server::hierarchy::rotate;
    match command {
        RotateCommand::Prepare { target, class } => {
            let config = target.config()?;
            let (state, module, _) = admin_context(&config, &class)?;
            let tokens = admin::admin_tokens(&config, &module)?;
            let label = rotate::prepare(&state, &class, &tokens, &admin::ca_shape(&config)?)?;
            println!("prepared intermediate '{label}' for class '{class}'; then: ca-server rotate activate --class {class}");
            signal_server(&state);
            Ok(())
        }
        RotateCommand::Activate { target, class } => {
            let config = target.config()?;
            let (state, _, _) = admin_context(&config, &class)?;
            let (active, retired) = rotate::activate(&state, &class)?;
            println!(
                "class '{class}' now issues from '{active}'{}",
                retired
                    .map(|r| format!("; '{r}' is retired"))
                    .unwrap_or_default()
            );
            signal_server(&state);
            Ok(())
        }
        RotateCommand::RootPrepare { target, class } => {
            let config = target.config()?;
            let (state, module, _) = admin_context(&config, &class)?;
            let tokens = admin::admin_tokens(&config, &module)?;
            let label = ca_server::hierarchy::roots::prepare(
                &state,
                &class,
                &tokens,
                &admin::ca_shape(&config)?,
            )?;
            println!("prepared root '{label}' for class '{class}', cross-signed by the current root and published in the bundle;");
            println!("wait until every peer refreshed its bundle, then: ca-server rotate root-activate --class {class}");
            signal_server(&state);
            Ok(())
        }
        RotateCommand::RootActivate { target, class } => {
            let config = target.config()?;
            let (state, _, _) = admin_context(&config, &class)?;
            let (new, previous) = ca_server::hierarchy::roots::activate(&state, &class)?;
            println!("class '{class}' root is now '{new}' ('{previous}' stays in the bundle);");
            println!("next: ca-server rotate prepare/activate --class {class} to move issuance under the new root");
            signal_server(&state);
            Ok(())
        }
        RotateCommand::RootRetire { target, class } => {
            let config = target.config()?;
            let (state, _, _) = admin_context(&config, &class)?;
            let previous = ca_server::hierarchy::roots::retire(&state, &class)?;
            println!("root '{previous}' left the bundle of class '{class}'");
            signal_server(&state);
            Ok(())
        }
        RotateCommand::Retire {
            target,
            class,
            destroy_keys,
        } => {
            let config = target.config()?;
            let (state, module, max_ttl) = admin_context(&config, &class)?;
            let record = ca_server::hierarchy::ClassState::read(&state, &class)?;
            let expired =
                rotate::expired_retirees(&record, max_ttl, time::OffsetDateTime::now_utc());
            if expired.is_empty() {
                println!("class '{class}': no retired intermediate whose leaves have all expired");
                return Ok(());
            }
            rotate::forget(&state, &class, &expired)?;
            for label in &expired {
                if destroy_keys {
                    admin::online_token(&config, &module)?.destroy_key(label)?;
                    println!("forgot '{label}' and destroyed its key");
                } else {
                    println!("forgot '{label}' (key kept in the token; --destroy-keys removes it)");
                }
            }
            signal_server(&state);
            Ok(())
        }
    }
}

/// The state dir, the HSM module and the class's longest leaf TTL.
fn admin_context(
    config: &Config,
    class: &str,
) -> Result<(StateDir, hsm::Module, std::time::Duration)> {
    let policies = admin::load_policies(config)?;
    let policy = policies
        .get(class)
        .ok_or_else(|| anyhow::anyhow!("unknown class '{class}'"))?;
    let ttl = policy.max_ttl();
    Ok((
        StateDir::new(&config.state_dir),
        admin::open_module(config)?,
        ttl,
    ))
}

/// Nudge a server running from this state dir (it also polls every second).
fn signal_server(state: &StateDir) {
    let Ok(pid) = std::fs::read_to_string(state.root().join("ca-server.pid")) else {
        return;
    };
    let pid = pid.trim();
    if pid.parse::<u32>().is_ok() {
        let _ = std::process::Command::new("kill")
            .args(["-HUP", pid])
            .status();
    }
}

fn log_command(command: LogCommand) -> Result<()> {
    use ca_server::log::{monitor, show, verify};
    match command {
        LogCommand::Verify { target } => {
            let config = target.config()?;
            let report = verify::verify(&config.state_dir, &config.log.log_id)?;
            println!(
                "log {}: {} entries ({} issued, {} denied), {} signed tree heads, root {}",
                config.log.log_id,
                report.entries,
                report.issued,
                report.denied,
                report.heads,
                report.root_hash
            );
            for problem in &report.problems {
                println!("PROBLEM: {problem}");
            }
            if !report.ok() {
                anyhow::bail!(
                    "log verification failed with {} problem(s)",
                    report.problems.len()
                );
            }
            println!("OK");
            Ok(())
        }
        LogCommand::Show {
            target,
            class,
            san,
            serial,
            denied,
            json,
        } => {
            let config = target.config()?;
            let filter = show::Filter {
                class,
                san,
                serial,
                denied_only: denied,
            };
            for entry in show::read_entries(&config.state_dir, &config.log.log_id)? {
                if filter.matches(&entry) {
                    if json {
                        println!("{}", String::from_utf8_lossy(&entry.to_bytes()));
                    } else {
                        println!("{}", show::line(&entry));
                    }
                }
            }
            Ok(())
        }
        LogCommand::Monitor {
            target,
            follow,
            metrics_file,
        } => {
            let config = target.config()?;
            let policies = admin::load_policies(&config)?;
            let state = StateDir::new(&config.state_dir);
            let mut checked = 0usize;
            let mut counts: std::collections::BTreeMap<&'static str, u64> = Default::default();
            let mut failures = 0u64;
            loop {
                let known = monitor::known_intermediates(&state, &policies);
                let entries = show::read_entries(&config.state_dir, &config.log.log_id)?;
                for entry in entries.iter().skip(checked) {
                    for finding in monitor::check(entry, &policies, &known) {
                        *counts.entry(finding.kind).or_default() += 1;
                        failures += u64::from(finding.is_failure());
                        println!("{}", serde_json::to_string(&finding)?);
                    }
                }
                checked = entries.len();
                if let Some(path) = &metrics_file {
                    let mut text = String::from("# HELP trellis_monitor_findings Findings of the issuance-log monitor by kind\n# TYPE trellis_monitor_findings gauge\n");
                    for kind in ["policy_violation", "ip_san", "unknown_issuer", "bad_entry"] {
                        text.push_str(&format!(
                            "trellis_monitor_findings{{kind=\"{kind}\"}} {}\n",
                            counts.get(kind).copied().unwrap_or(0)
                        ));
                    }
                    text.push_str(&format!("trellis_monitor_entries_checked {checked}\n"));
                    ca_server::state::write_atomic(path, text.as_bytes(), 0o644)?;
                }
                if !follow {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            eprintln!(
                "checked {checked} entries: {failures} failure(s), {} IP SAN(s)",
                counts.get("ip_san").copied().unwrap_or(0)
            );
            if failures > 0 {
                std::process::exit(3);
            }
            Ok(())
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn port_of(listen: &str) -> &str {
    listen.rsplit(':').next().unwrap_or("8443")
}

/// Load everything that can fail before the first connection, then serve
/// until SIGTERM/SIGINT and drain.
fn serve(config: &Config, listen: &Listen) -> Result<()> {
    let address = listen
        .listen
        .clone()
        .unwrap_or_else(|| config.server.listen.clone());
    let address: std::net::SocketAddr = address
        .parse()
        .with_context(|| format!("listen address '{address}' is not IP:PORT"))?;
    if (listen.insecure_http || listen.no_log) && !address.ip().is_loopback() {
        anyhow::bail!(
            "--insecure-http and --no-log are allowed only on a loopback address, not {address}"
        );
    }
    let module = admin::open_module(config)?;
    let policies = admin::load_policies(config)?;
    let authority = admin::open_authority(config, &module, policies)?;
    let log = if listen.no_log {
        tracing::warn!(
            event = "log_disabled",
            "--no-log: issuances are NOT logged (benchmarking only)"
        );
        None
    } else {
        admin::ensure_log_key(config, &module)?;
        // Takes the log's exclusive lock (refused when another process
        // writes this log) and serves reads with the [log] limits.
        Some(
            admin::open_log(config, &module)?
                .with_read_limits(ca_server::log::reads::ReadLimits::from_config(&config.log)),
        )
    };
    admin::ensure_server_tls(config, &authority, log.as_ref())?;
    let state = StateDir::new(&config.state_dir);
    let cert = if listen.insecure_http {
        None
    } else {
        Some(std::sync::Arc::new(
            ca_server::server::tls::ReloadableCert::from_files(
                &state.tls_chain(),
                &state.tls_key(),
            )?,
        ))
    };
    let tls = cert
        .clone()
        .map(ca_server::server::tls::server_config)
        .transpose()?;
    let keys = ca_server::server::keys::AuthKeys::load_with(
        &config.server.auth_keys,
        config.server.secret_file_mode,
    )?;
    let app = std::sync::Arc::new(ca_server::server::app::App::new(
        authority.clone(),
        keys,
        log,
        config.server.max_body_bytes,
        config.server.max_skew_secs,
        config.server.replay_cache_entries,
    ));
    let options = config.server.serve_options();
    let reloader = ca_server::server::reload::Reloader {
        app: app.clone(),
        config: config.clone(),
        online: admin::online_token(config, &module)?,
        tls: cert,
        failed: Default::default(),
    };
    let pidfile = state.root().join("ca-server.pid");
    ca_server::state::write_atomic(
        &pidfile,
        format!("{}\n", std::process::id()).as_bytes(),
        0o644,
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("trellis-http")
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let bound = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        println!("listening on {scheme}://{bound}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tracing::info!(event = "listening", address = %bound, scheme, "serving");
        tokio::spawn(reloader.run());
        ca_server::server::serve(app, listener, tls, options, shutdown_signal()).await;
        Ok::<_, anyhow::Error>(())
    })?;
    authority.pool().shutdown();
    let _ = std::fs::remove_file(&pidfile);
    tracing::info!(event = "stopped", "server stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(event = "signal", "SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!(event = "signal", "SIGINT: shutting down"),
    }
}

fn init(config: &Config) -> Result<()> {
    let module = admin::open_module(config)?;
    let policies = admin::load_policies(config)?;
    let created = admin::init_classes(config, &module, &policies)?;
    for class in &created {
        println!("created class '{class}': root and active intermediate");
    }
    if admin::ensure_log_key(config, &module)? {
        println!(
            "created the issuance log key for log '{}'",
            config.log.log_id
        );
    }
    let authority = admin::open_authority(config, &module, policies)?;
    // Takes the log's exclusive lock: init refuses to touch a log that a
    // running server writes.
    let log = admin::open_log(config, &module)?;
    if admin::ensure_server_tls(config, &authority, Some(&log))? {
        println!("issued the server's TLS certificate from class 'ca'");
    }
    let state = StateDir::new(&config.state_dir);
    for class in authority.classes() {
        println!(
            "class {:<6} root {}  bundle {}",
            class.name,
            &class.root_fingerprint[..16],
            state.root_cert(&class.name).display()
        );
    }
    authority.pool().shutdown();
    Ok(())
}
