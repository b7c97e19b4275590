//! The `ca-server` command line: clap definitions and dispatch only. Each
//! command's body is in `ca_server::cmd`; see ARCHITECTURE.md for the map.

use anyhow::Result;
use ca_server::cmd::{self, Exit};
use ca_server::config::Config;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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

impl Listen {
    fn options(&self) -> cmd::serve::Listen {
        cmd::serve::Listen {
            address: self.listen.clone(),
            insecure_http: self.insecure_http,
            no_log: self.no_log,
        }
    }
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
    /// Revoke a leaf (by serial, or every live leaf of one public key) or a
    /// retired intermediate (needs the root token PIN; writes the class's
    /// root-signed CRL). Running servers publish it within a second.
    Revoke {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        class: String,
        /// Serial number (hex) of the certificate to revoke.
        #[arg(long, required_unless_present_any = ["spki_sha256", "intermediate"], conflicts_with_all = ["spki_sha256", "intermediate"])]
        serial: Option<String>,
        /// Revoke every live certificate of the class with this key
        /// (SHA-256 of the SubjectPublicKeyInfo, hex).
        #[arg(long, conflicts_with = "intermediate")]
        spki_sha256: Option<String>,
        /// Key label of a retired intermediate to revoke.
        #[arg(long)]
        intermediate: Option<String>,
        /// RFC 5280 reason: unspecified, keyCompromise, cACompromise,
        /// affiliationChanged, superseded, cessationOfOperation,
        /// privilegeWithdrawn. keyCompromise also blocks the key for good.
        #[arg(long, value_parser = parse_reason)]
        reason: ca_proto::revocation::RevocationReason,
        /// Days the root-signed CRL is valid (intermediate revocations).
        #[arg(long, default_value_t = cmd::revoke::DEFAULT_ROOT_CRL_DAYS)]
        root_crl_days: u32,
    },
    /// Re-sign the root-signed CRL of a class (needs the root token PIN);
    /// run it before the previous one lapses.
    RootCrl {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        class: String,
        #[arg(long, default_value_t = cmd::revoke::DEFAULT_ROOT_CRL_DAYS)]
        days: u32,
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
    /// Search the log through its inventory (built from the file first):
    /// every matching entry, newest first (soonest expiry first with
    /// --expiring-before).
    Search {
        #[command(flatten)]
        target: Target,
        /// A DNS name, IP address or URI (or a common name); `*.suffix`
        /// matches every DNS name under the suffix.
        #[arg(long)]
        name: Option<String>,
        /// Serial number, hex.
        #[arg(long)]
        serial: Option<String>,
        /// SHA-256 of the SubjectPublicKeyInfo, hex.
        #[arg(long)]
        spki: Option<String>,
        /// The auth key that asked.
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        class: Option<String>,
        /// issued, denied or revoked.
        #[arg(long)]
        decision: Option<String>,
        /// Certificates valid now that expire before this RFC 3339 time.
        #[arg(long)]
        expiring_before: Option<String>,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
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

/// See `Cargo.toml`: the allocator is a measured choice for the server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let diagnostics = cmd::init_logging(matches!(cli.log_format, LogFormat::Json));
    let result = run(cli);
    // Every tracing line is out before the error below.
    drop(diagnostics);
    match result {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => {
            eprintln!("ca-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<Exit> {
    let done = |()| Exit::Success;
    match cli.command {
        Command::Init { target } => cmd::init::run(&target.config()?).map(done),
        Command::Dev {
            dir,
            listen,
            init_only,
        } => cmd::dev::run(&dir, &listen.options(), init_only).map(done),
        Command::Serve { target, listen } => {
            cmd::serve::run(&target.config()?, &listen.options()).map(done)
        }
        Command::Rotate { command } => rotate(command).map(done),
        Command::Status { target } => cmd::status::print(&target.config()?).map(done),
        Command::Revoke {
            target,
            class,
            serial,
            spki_sha256,
            intermediate,
            reason,
            root_crl_days,
        } => {
            use cmd::revoke::{Revoke, Target as What};
            let what = match (serial, spki_sha256, intermediate) {
                (Some(s), _, _) => What::Serial(s),
                (_, Some(k), _) => What::Key(k),
                (_, _, Some(i)) => What::Intermediate(i),
                _ => anyhow::bail!("give --serial, --spki-sha256 or --intermediate"),
            };
            cmd::revoke::run(
                &target.config()?,
                &Revoke {
                    class,
                    target: what,
                    reason,
                    root_crl_days,
                },
            )
            .map(done)
        }
        Command::RootCrl {
            target,
            class,
            days,
        } => cmd::revoke::resign_root_crl(&target.config()?, &class, days).map(done),
        Command::Log { command } => log(command),
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
        } => cmd::policy::check(
            &target.config()?,
            &cmd::policy::Check {
                class,
                profile,
                hosts,
                ttl,
                csr,
            },
        ),
        Command::Hsm {
            command: HsmCommand::Check { target, json },
        } => cmd::hsm::check(&target.config()?, json),
    }
}

fn parse_reason(text: &str) -> Result<ca_proto::revocation::RevocationReason, String> {
    ca_proto::revocation::RevocationReason::from_name(text).ok_or_else(|| {
        format!(
            "not a reason Trellis accepts; one of: {}",
            ca_proto::revocation::RevocationReason::ALL
                .map(|r| r.name())
                .join(", ")
        )
    })
}

fn rotate(command: RotateCommand) -> Result<()> {
    use cmd::rotate;
    match command {
        RotateCommand::Prepare { target, class } => rotate::prepare(&target.config()?, &class),
        RotateCommand::Activate { target, class } => rotate::activate(&target.config()?, &class),
        RotateCommand::RootPrepare { target, class } => {
            rotate::root_prepare(&target.config()?, &class)
        }
        RotateCommand::RootActivate { target, class } => {
            rotate::root_activate(&target.config()?, &class)
        }
        RotateCommand::RootRetire { target, class } => {
            rotate::root_retire(&target.config()?, &class)
        }
        RotateCommand::Retire {
            target,
            class,
            destroy_keys,
        } => rotate::retire(&target.config()?, &class, destroy_keys),
    }
}

fn log(command: LogCommand) -> Result<Exit> {
    match command {
        LogCommand::Verify { target } => {
            cmd::log::verify(&target.config()?).map(|()| Exit::Success)
        }
        LogCommand::Show {
            target,
            class,
            san,
            serial,
            denied,
            json,
        } => {
            let filter = ca_server::audit::show::Filter {
                class,
                san,
                serial,
                denied_only: denied,
            };
            cmd::log::show(&target.config()?, &filter, json).map(|()| Exit::Success)
        }
        LogCommand::Search {
            target,
            name,
            serial,
            spki,
            key,
            class,
            decision,
            expiring_before,
            json,
        } => {
            let filters = [
                ("name", name),
                ("serial", serial),
                ("spki", spki),
                ("key", key),
                ("class", class),
                ("decision", decision),
                ("expiring_before", expiring_before),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?)))
            .collect();
            cmd::log::search(&target.config()?, filters, json)
        }
        LogCommand::Monitor {
            target,
            follow,
            metrics_file,
        } => cmd::log::monitor(
            &target.config()?,
            &cmd::log::MonitorOptions {
                follow,
                metrics_file,
            },
        ),
    }
}
