//! `api-service`: the example "api" tier of a Trellis deployment.
//!
//! It shows the per-class trust model from a Rust service that uses the
//! `ca-client` library instead of reading files itself:
//!
//! - **Server for its callers**: HTTPS (HTTP/1.1 and HTTP/2 by ALPN) with
//!   its own `api` certificate from a `ca-client` output directory, and
//!   client certificates *required*, of the `web` class only (by default):
//!   a certificate of any other class, or none, fails the TLS handshake.
//! - **Client of the database**: for each `GET /v1/whoami` it opens a
//!   PostgreSQL connection over mutual TLS with the *same* `api` identity,
//!   trusting only the `db` class root (and checking the server's name),
//!   runs `SELECT current_user` and answers
//!   `{"caller": "<CN of the caller's certificate>", "db_user": "<role>"}`.
//! - **Renewals without a restart**: [`ca_client::tls::watch`] re-reads the
//!   identity and both trust bundles on a period; new handshakes (with
//!   callers and with the database) use what is on disk now.
//!
//! It prints `listening on https://ADDR` on standard output when it accepts
//! connections, logs to standard error, and stops on SIGTERM or SIGINT
//! after letting in-flight requests finish.
//!
//! A new database connection per request keeps the example short and makes
//! every query show the certificates in force; a real service would keep a
//! pool (and recycle connections after a renewal).

mod server;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use ca_client::tls::{client_config, server_config, watch, Identity, NameCheck, PeerTrust};
use clap::Parser;
use tokio_postgres::config::{Host, SslMode};

/// The example Trellis "api" service (see the crate documentation).
#[derive(Debug, Parser)]
#[command(name = "api-service", version)]
struct Cli {
    /// Address to serve HTTPS on (port 0: any free port; the one chosen is
    /// printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// The `ca-client` output directory of this service's `api` certificate
    /// (combined.pem and trust/).
    #[arg(long, value_name = "DIR")]
    tls_dir: PathBuf,
    /// Directory of the peer trust bundles (`<class>.pem`); default
    /// TLS_DIR/trust.
    #[arg(long, value_name = "DIR")]
    trust_dir: Option<PathBuf>,
    /// Class whose client certificates may call this service (repeatable).
    #[arg(long = "caller-class", value_name = "CLASS", default_values_t = vec!["web".to_string()])]
    caller_classes: Vec<String>,
    /// Class whose server certificates the database may present (repeatable).
    #[arg(long = "db-class", value_name = "CLASS", default_values_t = vec!["db".to_string()])]
    db_classes: Vec<String>,
    /// PostgreSQL connection string (libpq key=value or URL form), e.g.
    /// "host=pg.db.internal hostaddr=127.0.0.1 port=5432 user=api
    /// dbname=postgres". `host` is the name the database's certificate must
    /// carry; TLS is always required, whatever `sslmode` says.
    #[arg(
        long,
        value_name = "CONNINFO",
        env = "API_SERVICE_DB",
        hide_env_values = true
    )]
    db: String,
    /// How often to re-read the certificate and trust bundles, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    reload_interval: u64,
}

/// The database side: connection settings and the TLS client config.
pub struct Database {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl Database {
    /// `SELECT current_user` over a fresh mutual-TLS connection.
    pub async fn current_user(&self) -> Result<String, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(self.tls.clone()).await?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "database connection ended with an error");
            }
        });
        let user = client
            .query_one("SELECT current_user", &[])
            .await
            .and_then(|row| row.try_get::<_, String>(0));
        drop(client);
        let _ = driver.await;
        user
    }
}

fn database(conninfo: &str, tls: rustls::ClientConfig) -> anyhow::Result<Database> {
    let mut config =
        tokio_postgres::Config::from_str(conninfo).context("parsing the --db connection string")?;
    if config.get_hosts().is_empty() {
        bail!("--db needs host=NAME: the name the database's certificate is checked against");
    }
    if config
        .get_hosts()
        .iter()
        .any(|h| !matches!(h, Host::Tcp(_)))
    {
        bail!("--db: Unix-socket hosts cannot use TLS; give a host name (and hostaddr)");
    }
    config.ssl_mode(SslMode::Require);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    if config.get_application_name().is_none() {
        config.application_name("api-service");
    }
    Ok(Database {
        config,
        tls: tokio_postgres_rustls::MakeRustlsConnect::new(tls),
    })
}

fn classes(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let trust_dir = cli
        .trust_dir
        .clone()
        .unwrap_or_else(|| cli.tls_dir.join("trust"));
    let identity = Identity::from_dir(&cli.tls_dir).context("loading the service's identity")?;
    let callers =
        PeerTrust::for_classes(&trust_dir, &classes(&cli.caller_classes), NameCheck::Verify)
            .context("loading the callers' trust bundles")?;
    let db_trust = PeerTrust::for_classes(&trust_dir, &classes(&cli.db_classes), NameCheck::Verify)
        .context("loading the database's trust bundles")?;

    let mut tls = server_config(identity.clone(), Some(&callers))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let db = database(&cli.db, client_config(Some(identity.clone()), &db_trust)?)?;

    // Renewals and bundle changes show up in new handshakes on both sides.
    let _watcher = watch(
        Some(identity),
        vec![callers, db_trust],
        Duration::from_secs(cli.reload_interval.max(1)),
    );

    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let addr = listener.local_addr().context("local address")?;
    println!("listening on https://{addr}");
    tracing::info!(%addr, callers = ?cli.caller_classes, db = ?cli.db_classes, "serving");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
    };
    server::serve(
        listener,
        Arc::new(tls),
        Arc::new(db),
        server::Options::default(),
        shutdown,
    )
    .await;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("api-service: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
