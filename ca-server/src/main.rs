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
    #[command(subcommand)]
    command: Command,
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
    /// SoftHSM2 tokens, then initialise it.
    Dev {
        #[arg(long, default_value = "./var")]
        dir: PathBuf,
        #[arg(long, default_value_t = default_listen())]
        listen: String,
        /// Initialise only; do not serve.
        #[arg(long)]
        init_only: bool,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
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
            let paths = dev::prepare(&dir, &listen)?;
            let config = Config::load(&paths.config)?;
            let module = admin::open_module(&config)?;
            for token in dev::ensure_tokens(&paths, &module)? {
                println!(
                    "created SoftHSM2 token '{token}' in {}",
                    paths.dir.join("hsm").display()
                );
            }
            init(&config)?;
            if !init_only {
                println!(
                    "serving arrives with the signing API; deployment ready in {}",
                    paths.dir.display()
                );
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

fn init(config: &Config) -> Result<()> {
    let module = admin::open_module(config)?;
    let policies = admin::load_policies(config)?;
    let created = admin::init_classes(config, &module, &policies)?;
    for class in &created {
        println!("created class '{class}': root and active intermediate");
    }
    let authority = admin::open_authority(config, &module, policies)?;
    if admin::ensure_server_tls(config, &authority)? {
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
