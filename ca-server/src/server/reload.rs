//! Picking up rotations without a restart: on SIGHUP, and on a one-second
//! poll of every `classes/<class>/state.toml`, classes whose active or
//! prepared intermediate changed are reloaded and swapped in. Requests
//! already running keep the intermediate they started with (they hold an
//! `Arc` to it). When the `ca` class changed, the server's own TLS
//! certificate is re-issued and swapped into the TLS config.
//!
//! A reload that fails is tried again on every tick until it succeeds (the
//! key lookup behind it re-initialises the module at most every
//! `KEY_REDISCOVERY_INTERVAL`, for modules that show only the objects that
//! existed when they were initialised). While it fails, a class whose state
//! no longer names the loaded intermediate as active is suspended: the
//! server never issues from an intermediate that the state has retired.
//!
//! The same tick adopts new revocations of the shared state and re-signs
//! CRLs that are due (`revoke::Revocations::refresh`).

use super::app::App;
use super::tls::ReloadableCert;
use crate::config::Config;
use crate::hierarchy::{self, ClassState};
use crate::state::StateDir;
use hsm::Token;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub struct Reloader {
    pub app: Arc<App>,
    pub config: Config,
    pub online: Token,
    pub tls: Option<Arc<ReloadableCert>>,
    /// Revocations are adopted (logged, CRLs re-signed) on the same tick.
    pub revocations: Arc<crate::revoke::Revocations>,
    /// Classes whose last reload failed: tried again on every tick.
    pub failed: Mutex<BTreeSet<String>>,
}

impl Reloader {
    /// Run until the process ends.
    pub async fn run(self) {
        let this = Arc::new(self);
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut seen = this.mtimes();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let by_signal = tokio::select! {
                _ = tick.tick() => false,
                Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            let now = this.mtimes();
            let retry = this
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let changed: Vec<String> = now
                .iter()
                .filter(|(class, mtime)| {
                    by_signal || seen.get(*class) != Some(*mtime) || retry.contains(*class)
                })
                .map(|(class, _)| class.clone())
                .collect();
            seen = now;
            let this = this.clone();
            // Loading and CRL signing talk to the HSM: off the async threads.
            let _ = tokio::task::spawn_blocking(move || {
                if !changed.is_empty() {
                    this.reload(&changed);
                }
                // Errors are traced and counted inside; retried next tick.
                let _ = this
                    .revocations
                    .refresh(&this.app.authority, this.app.log.as_ref());
            })
            .await;
        }
    }

    fn mtimes(&self) -> HashMap<String, Option<SystemTime>> {
        let state = StateDir::new(&self.config.state_dir);
        self.app
            .authority
            .policies()
            .names()
            .map(|c| {
                let mtime = std::fs::metadata(state.class_state(c))
                    .and_then(|m| m.modified())
                    .ok();
                (c.to_string(), mtime)
            })
            .collect()
    }

    /// Reload the named classes (their state changed, or SIGHUP), and
    /// refresh their expiry and suspension metrics.
    pub fn reload(&self, classes: &[String]) {
        let state = StateDir::new(&self.config.state_dir);
        crate::metrics::export_ca_certificates(
            &self.config,
            self.app.authority.policies(),
            classes.iter().map(String::as_str),
        );
        for class in self
            .app
            .authority
            .classes()
            .into_iter()
            .filter(|c| classes.contains(&c.name))
        {
            let Ok(record) = ClassState::read(&state, &class.name) else {
                tracing::warn!(event = "reload_failed", class = %class.name, "state.toml unreadable; keeping the loaded class");
                self.failed_now(&class.name, true);
                continue;
            };
            let active_changed =
                record.active().map(|a| a.key.as_str()) != Some(class.active.key.label.as_str());
            match hierarchy::load_class(&state, &class.name, &self.online) {
                Ok(loaded) => {
                    tracing::info!(
                        event = "class_reloaded",
                        class = %class.name,
                        active = %loaded.active.key.label,
                        prepared = loaded.prepared_pem.is_some(),
                        "intermediates reloaded"
                    );
                    self.app.authority.replace_class(loaded);
                    self.failed_now(&class.name, false);
                    if active_changed && class.name == "ca" {
                        self.renew_tls();
                    }
                }
                Err(e) if active_changed => {
                    let reason = format!(
                        "the class state retired intermediate '{}' and its successor '{}' cannot be loaded ({e})",
                        class.active.key.label,
                        record.active().map_or("none", |a| a.key.as_str()),
                    );
                    let first = !self.app.authority.suspended().contains_key(&class.name);
                    if first {
                        tracing::error!(event = "class_suspended", class = %class.name, "{reason}; not issuing until it loads");
                    }
                    self.app.authority.suspend_class(&class.name, reason);
                    self.failed_now(&class.name, true);
                }
                Err(e) => {
                    if !self.failed_now(&class.name, true) {
                        tracing::error!(event = "reload_failed", class = %class.name, "{e}; keeping the loaded class");
                    }
                }
            }
        }
        crate::metrics::metrics().set_suspended(
            classes.iter().map(String::as_str),
            &self.app.authority.suspended(),
        );
    }

    /// Record whether the class's last reload failed; returns whether it had
    /// already failed before (so a failure is reported once, not every tick).
    fn failed_now(&self, class: &str, failed: bool) -> bool {
        let mut set = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if failed {
            !set.insert(class.to_string())
        } else {
            set.remove(class)
        }
    }

    fn renew_tls(&self) {
        if let Some(tls) = &self.tls {
            crate::server_cert::renew_and_reload(&self.config, &self.app.authority, tls);
        }
    }
}
