//! The read-only web console under `/ui/`, and the inventory search API
//! (`GET /v1/log/{log_id}/search`, `api.rs`).
//!
//! Pages are rendered on the server as plain HTML that works without
//! JavaScript (charts are inline SVG): `overview.rs` (classes, roots and
//! intermediates with expiry warnings as `ca-server status` gives them,
//! readiness, the log and its latest signed tree head), `activity.rs`
//! (rates per class, denials by reason, top auth keys), `search.rs` (the
//! inventory), `entry.rs` (one entry: the decoded certificate, the entry,
//! its inclusion proof verified against the signed tree head),
//! `findings.rs` (what `log monitor` reports, checked as entries arrive).
//! The one stylesheet is embedded (`assets/console.css`); every page is
//! sent with a Content-Security-Policy that allows nothing else (no
//! scripts, no inline styles, no other origin), no caching and no
//! referrer. No page shows a secret: only what the log, the public
//! certificates and the state's public files hold.
//!
//! Who may look: `access.rs`. Pages that read files or the log run on the
//! log's reader threads (bounded queue, low priority, CPU share), like the
//! log API.

pub mod access;
mod activity;
pub mod api;
mod cert;
mod charts;
mod entry;
pub mod findings;
pub mod html;
mod overview;
mod search;

use super::app::App;
use super::respond::{self, Body};
use super::ReadyCache;
use crate::config::Config;
use crate::inventory::Inventory;
use crate::log::reads::ReadRefused;
use crate::log::IssuanceLog;
use hyper::{header, Response, StatusCode};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The console's Content-Security-Policy: nothing but this origin's
/// stylesheet and `data:` images; no scripts, frames, forms elsewhere.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("../../../assets/console.css");

/// Why the console could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("{0}")]
    Access(#[from] access::AccessError),
    #[error("starting the inventory thread: {0}")]
    Thread(std::io::Error),
}

/// Everything the console's pages read.
pub struct Console {
    pub config: Config,
    pub log: IssuanceLog,
    pub inventory: Arc<Inventory>,
    pub findings: Arc<Mutex<findings::Findings>>,
}

impl Console {
    /// The console of this server, with its inventory following `log` from
    /// a thread of its own (and the findings checked as entries arrive).
    /// `None` when `[ui] enabled = false`.
    pub fn start(config: &Config, app: &App) -> Result<Option<Arc<Console>>, ConsoleError> {
        let Some(log) = app.log.clone().filter(|_| config.ui.enabled) else {
            return Ok(None);
        };
        let state = crate::state::StateDir::new(&config.state_dir);
        let path = crate::audit::log_paths(&state, log.log_id()).data();
        let inventory = Arc::new(
            Inventory::new(log.log_id(), path).with_max_entries(config.ui.inventory_entries),
        );
        let from = log
            .sth()
            .tree_size
            .saturating_sub(config.ui.findings_entries);
        let findings = Arc::new(Mutex::new(findings::Findings::new(from)));
        let checker =
            findings::Checker::new(findings.clone(), app.authority.policies().clone(), state);
        inventory
            .spawn(Duration::from_secs(1), Box::new(checker))
            .map_err(ConsoleError::Thread)?;
        Ok(Some(Arc::new(Console {
            config: config.clone(),
            log,
            inventory,
            findings,
        })))
    }
}

/// `k=v&…` for a link, encoded.
pub fn query_link(pairs: &[(&str, &str)]) -> String {
    crate::inventory::query::encode_pairs(pairs.iter().map(|(k, v)| (*k, v.to_string())))
}

/// Unix seconds now.
pub fn now() -> i64 {
    crate::inventory::now_unix()
}

/// An HTML response with the console's headers.
pub fn html_response(status: StatusCode, body: String) -> Response<Body> {
    let mut response = respond::text(status, "text/html; charset=utf-8", body);
    secure(&mut response);
    response
}

/// The console's security headers on any response.
pub fn secure(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
}

/// What a refused request gets: no console page at all.
fn not_found() -> Response<Body> {
    let mut r = respond::text(StatusCode::NOT_FOUND, "text/plain", "not found\n");
    secure(&mut r);
    r
}

fn message_page(console: &Console, status: StatusCode, title: &str, text: &str) -> Response<Body> {
    let body = format!("<p class=\"notice\">{}</p>", html::esc(text));
    html_response(
        status,
        html::page(title, html::Nav::Overview, console.log.log_id(), &body),
    )
}

/// Run `render` on a log reader thread; a full queue is a 503 page.
async fn on_reader(
    console: &Arc<Console>,
    render: impl FnOnce(&Console, &crate::log::LogReader) -> (StatusCode, String) + Send + 'static,
) -> Response<Body> {
    let c = console.clone();
    match console.log.read(move |reader| render(&c, reader)).await {
        Ok((status, body)) => html_response(status, body),
        Err(ReadRefused::Busy) => {
            let mut r = message_page(
                console,
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                "Too many log reads are waiting; reload in a moment.",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            r
        }
        Err(ReadRefused::Stopped) => message_page(
            console,
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "The issuance log cannot be read right now.",
        ),
    }
}

/// `GET /ui{page}`: the page, or 404 when the caller may not see the
/// console (`rule`, `verified_client_cert`).
pub(in crate::server) async fn handle(
    app: &App,
    console: Option<&Arc<Console>>,
    ready: &ReadyCache,
    rule: access::Rule,
    verified_client_cert: bool,
    page: &str,
    query: &str,
) -> Response<Body> {
    let Some(console) = console.filter(|_| rule.allows(verified_client_cert)) else {
        return not_found();
    };
    let segments: Vec<&str> = page.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] => {
            let facts = overview::Live::gather(app, ready, rule).await;
            on_reader(console, move |c, reader| {
                overview::render(c, reader, &facts)
            })
            .await
        }
        ["activity"] => html_response(StatusCode::OK, activity::render(console)),
        ["search"] => {
            let query = query.to_string();
            on_reader(console, move |c, reader| search::render(c, reader, &query)).await
        }
        ["findings"] => html_response(StatusCode::OK, findings::render(console)),
        ["entry", log_id, seq] => {
            let (log_id, seq) = (log_id.to_string(), seq.to_string());
            on_reader(console, move |c, reader| {
                entry::render(c, reader, &log_id, &seq)
            })
            .await
        }
        ["assets", "console.css"] => {
            let mut r = respond::text(StatusCode::OK, "text/css; charset=utf-8", CSS);
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("max-age=300"),
            );
            secure(&mut r);
            r
        }
        _ => message_page(
            console,
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such page in the console.",
        ),
    }
}
