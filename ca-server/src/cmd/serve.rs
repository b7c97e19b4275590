//! `ca-server serve`: load everything that can fail before the first
//! connection (HSM, policies, classes, log, TLS, auth keys), write the pid
//! file, then serve until SIGTERM/SIGINT and drain.

use crate::admin;
use crate::config::Config;
use crate::issue::Recorder;
use crate::server::{self, app::App, keys::AuthKeys, reload::Reloader, tls};
use crate::state::{write_atomic, StateDir};
use anyhow::{Context, Result};
use std::sync::Arc;

/// How to listen (`serve` and `dev`).
#[derive(Debug, Clone, Default)]
pub struct Listen {
    /// Overrides `[server] listen`.
    pub address: Option<String>,
    /// Plain HTTP; refused unless the address is loopback.
    pub insecure_http: bool,
    /// No issuance log (benchmarks only); refused unless loopback.
    pub no_log: bool,
}

pub fn run(config: &Config, listen: &Listen) -> Result<()> {
    let address = listen
        .address
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
                .with_read_limits(crate::log::reads::ReadLimits::from_config(&config.log)),
        )
    };
    // Every decision from here on is recorded in this log (or, with
    // --no-log on loopback, nowhere).
    authority.set_recorder(match &log {
        Some(log) => Recorder::Log(log.clone()),
        None => Recorder::Nothing,
    });
    crate::server_cert::ensure(config, &authority)?;
    let state = StateDir::new(&config.state_dir);
    let cert = if listen.insecure_http {
        None
    } else {
        Some(Arc::new(tls::ReloadableCert::from_files(
            &state.tls_chain(),
            &state.tls_key(),
        )?))
    };
    // With `[ui] client_classes`, client certificates of those classes are
    // asked for (not required): they open the console off loopback.
    let client_roots = server::ui::access::client_roots(&config.ui, &authority)?;
    let tls = cert
        .clone()
        .map(|cert| tls::server_config(cert, client_roots))
        .transpose()?;
    let keys = AuthKeys::load_with(&config.server.auth_keys, config.server.secret_file_mode)?;
    let app = Arc::new(App::new(
        authority.clone(),
        keys,
        log,
        config.server.max_body_bytes,
        config.server.max_skew_secs,
        config.server.replay_cache_entries,
    ));
    let online = admin::online_token(config, &module)?;
    let revocations = Arc::new(crate::revoke::Revocations::new(
        &config.state_dir,
        online.clone(),
        config.revocation.crl_times(),
    ));
    let _ = app.revocations.set(revocations.clone());
    // CRLs exist before the first request: the first refresh reads every
    // log (the serial index) and signs each class's CRLs.
    if let Err(e) = revocations.refresh(&app.authority, app.log.as_ref()) {
        tracing::error!(
            event = "revocation_start_failed",
            "{e}; retried every second"
        );
    }
    start_metrics(config, &app);
    let mut options = config.server.serve_options();
    // The console and its inventory (which starts indexing the log now).
    options.console = server::ui::Console::start(config, &app)?;
    let reloader = Reloader {
        app: app.clone(),
        config: config.clone(),
        online,
        revocations,
        tls: cert,
        failed: Default::default(),
    };
    let pidfile = state.pid_file();
    write_atomic(
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
        server::serve(app, listener, tls, options, shutdown_signal()).await;
        Ok::<_, anyhow::Error>(())
    })?;
    authority.pool().shutdown();
    // Replicas sharing a state directory share the pid file: remove it only
    // when it still names this process.
    if std::fs::read_to_string(&pidfile)
        .is_ok_and(|text| text.trim() == std::process::id().to_string())
    {
        let _ = std::fs::remove_file(&pidfile);
    }
    tracing::info!(event = "stopped", "server stopped");
    Ok(())
}

/// The metrics the alert rules need from the first scrape on: every
/// class's CA certificate expiry (as `status` reads them), none suspended,
/// the log healthy, no CRL refresh failed yet.
fn start_metrics(config: &Config, app: &App) {
    let policies = app.authority.policies();
    crate::metrics::export_ca_certificates(config, policies, policies.names());
    let metrics = crate::metrics::metrics();
    metrics.set_suspended(policies.names(), &app.authority.suspended());
    metrics.log_healthy.set(i64::from(
        app.log.as_ref().is_none_or(|log| log.is_healthy()),
    ));
    for class in policies.names() {
        metrics.crl_failures.with_label_values(&[class]);
    }
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
