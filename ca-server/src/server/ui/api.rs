//! `GET /v1/log/{log_id}/search?name=…&serial=…&spki=…&key=…&class=…&decision=…&expiring_before=…&cursor=…&limit=…`:
//! the inventory as JSON (`inventory::fetch::SearchPage`), a page of at
//! most `limit` (≤ 100) results and `[log] page_bytes` of result bytes,
//! with an opaque `next` cursor.
//!
//! Who may search: whoever may see the console on this connection
//! (`access.rs`; otherwise 403 `forbidden_scope` and no result), and then
//! the log's `entries` rule: a native signature of any valid auth key
//! unless `[log] public_reads`. The search runs on the log's reader threads
//! (bounded queue, low priority, CPU share), like `entries`; a full queue
//! is 503 `busy` with Retry-After. Errors name no path.

use super::access::Rule;
use super::Console;
use crate::inventory::query::Query;
use crate::inventory::search::DEFAULT_BUDGET;
use crate::inventory::SearchLimits;
use crate::log::reads::ReadRefused;
use crate::server::app::App;
use crate::server::respond::{text, ApiError, Body};
use ca_proto::ErrorCode;
use hyper::{header, Response, StatusCode};
use std::sync::Arc;

#[allow(clippy::too_many_arguments)]
pub async fn search(
    app: &App,
    console: Option<&Arc<Console>>,
    rule: Rule,
    verified_client_cert: bool,
    log_id: &str,
    query: &str,
    auth: Option<&str>,
    path_and_query: &str,
) -> Result<Response<Body>, ApiError> {
    if app.log.as_ref().is_none_or(|l| l.log_id() != log_id) {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "no such log on this server",
        ));
    }
    let Some(console) = console.filter(|_| rule.allows(verified_client_cert)) else {
        return Err(ApiError::new(
            ErrorCode::ForbiddenScope,
            "searching the log is off on this listener, or needs a client certificate of a console class ([ui] client_classes)",
        ));
    };
    if !console.log.read_limits().public {
        app.authenticate_native(auth, "GET", path_and_query, b"")?;
    }
    let q = Query::parse(query)
        .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.to_string()))?;
    let c = console.clone();
    let read = console
        .log
        .read(move |reader| {
            let limits = SearchLimits {
                now: super::now(),
                tree_size: reader.sth().tree_size,
                max_bytes: c.log.read_limits().page_bytes,
                budget: DEFAULT_BUDGET,
            };
            c.inventory
                .search(&q, limits)
                .map(|page| serde_json::to_vec(&page))
        })
        .await;
    match read {
        Ok(Ok(Ok(body))) => Ok(text(StatusCode::OK, "application/json", body)),
        Ok(Ok(Err(_))) => Err(ApiError::new(
            ErrorCode::Internal,
            "response encoding failed",
        )),
        Ok(Err(e)) => {
            tracing::error!(event = "log_search_failed", log_id, "{e}");
            Err(ApiError::new(
                ErrorCode::LogUnavailable,
                "the issuance log cannot be searched right now; try again",
            ))
        }
        Err(refused) => {
            let e = match refused {
                ReadRefused::Busy => ApiError::new(
                    ErrorCode::Busy,
                    "too many log reads are waiting; retry shortly",
                ),
                ReadRefused::Stopped => ApiError::new(
                    ErrorCode::LogUnavailable,
                    "the issuance log cannot be read right now; try again",
                ),
            };
            let mut response = e.to_native();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            Ok(response)
        }
    }
}
