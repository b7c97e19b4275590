//! The issuance log over HTTP (read-only):
//! `GET /v1/log/{log_id}/sth` and `…/key` (the log's public key, PEM) are
//! public; `…/proof?seq=N` and `…/entries?start=A&end=B` name every
//! certificate, host, key id and denial, so they need a valid native
//! signature of any auth key unless `[log] public_reads = true`.
//!
//! `proof` and `entries` read files: they run on the log's reader threads
//! (bounded queue, nice 19, a share of one CPU; see `log::reads`), never on
//! the async workers; a full queue answers 503 `busy` with Retry-After. An
//! `entries` page holds at most 1000 entries and at most `[log] page_bytes`
//! of entry bytes; `next` says where to continue. Bad ranges are a 400.
//! Errors never carry file-system paths: details go to the server's log.
//! The bodies are `ca_proto`'s types: the tree head, `logapi::ProofResponse`
//! and `logapi::EntriesPage`, serialised on the reader thread.

use super::app::App;
use super::respond::{json, text, ApiError, Body};
use crate::log::reads::{ReadRefused, MAX_PAGE_ENTRIES};
use crate::log::{IssuanceLog, LogError};
use ca_proto::logapi::{EntriesPage, PageEntry, ProofResponse};
use ca_proto::routes::LogResource;
use ca_proto::ErrorCode;
use hyper::{header, Response, StatusCode};

/// Seconds a refused reader is asked to wait.
const RETRY_AFTER_SECS: &str = "1";

pub async fn get(
    app: &App,
    log_id: &str,
    resource: LogResource,
    query: &str,
    auth: Option<&str>,
    path_and_query: &str,
) -> Result<Response<Body>, ApiError> {
    let log = app
        .log
        .as_ref()
        .filter(|l| l.log_id() == log_id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such log on this server"))?;
    match resource {
        LogResource::Sth => Ok(json(StatusCode::OK, &log.sth())),
        LogResource::Key => Ok(text(
            StatusCode::OK,
            "application/x-pem-file",
            log.public_key().to_pem(),
        )),
        LogResource::Proof | LogResource::Entries => {
            if !log.read_limits().public {
                app.authenticate_native(auth, "GET", path_and_query, b"")?;
            }
            if resource == LogResource::Proof {
                proof(log, query).await
            } else {
                entries(log, query).await
            }
        }
    }
}

async fn proof(log: &IssuanceLog, query: &str) -> Result<Response<Body>, ApiError> {
    let seq = param(query, "seq")?
        .ok_or_else(|| ApiError::new(ErrorCode::MalformedRequest, "seq is required"))?;
    if seq >= log.sth().tree_size {
        return Err(no_such_entry());
    }
    let read = log
        .read(move |reader| {
            reader
                .proof(seq)
                .map(|(sth, proof)| serde_json::to_vec(&ProofResponse::new(seq, sth, &proof)))
        })
        .await;
    match read {
        Ok(Ok(body)) => Ok(json_bytes(body)),
        Ok(Err(e)) => Err(public_error(log.log_id(), "proof", e)),
        Err(refused) => refusal(refused),
    }
}

async fn entries(log: &IssuanceLog, query: &str) -> Result<Response<Body>, ApiError> {
    let start = param(query, "start")?.unwrap_or(0);
    let end = param(query, "end")?;
    if let Some(end) = end {
        if end < start {
            return Err(ApiError::new(
                ErrorCode::MalformedRequest,
                format!("end ({end}) is less than start ({start})"),
            ));
        }
    }
    let tree_size = log.sth().tree_size;
    if start > tree_size {
        return Err(ApiError::new(
            ErrorCode::MalformedRequest,
            format!("start ({start}) is beyond the tree size ({tree_size})"),
        ));
    }
    let page_bytes = log.read_limits().page_bytes;
    let read = log
        .read(move |reader| {
            reader
                .entries_page(start, end, MAX_PAGE_ENTRIES, page_bytes)
                .map(|page| serde_json::to_vec(&page_body(page)))
        })
        .await;
    match read {
        Ok(Ok(body)) => Ok(json_bytes(body)),
        Ok(Err(e)) => Err(public_error(log.log_id(), "entries", e)),
        Err(refused) => refusal(refused),
    }
}

/// The page as its wire body; the entry bytes are moved, not copied, and
/// encoded once.
fn page_body(page: crate::log::reads::Page) -> EntriesPage {
    EntriesPage {
        entries: page
            .entries
            .into_iter()
            .map(|(seq, bytes)| PageEntry::new(seq, &bytes))
            .collect(),
        tree_size: page.tree_size,
        next: page.next,
    }
}

/// The first `name=value` of the query as a u64; `None` when absent.
fn param(query: &str, name: &str) -> Result<Option<u64>, ApiError> {
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == name {
            return value.parse().map(Some).map_err(|_| {
                ApiError::new(
                    ErrorCode::MalformedRequest,
                    format!("{name} must be an integer from 0 to {}", u64::MAX),
                )
            });
        }
    }
    Ok(None)
}

fn no_such_entry() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such entry")
}

/// What a caller may learn of a failed read: the code and a fixed message.
/// The error itself (with paths) goes to the server's log.
fn public_error(log_id: &str, what: &str, e: LogError) -> ApiError {
    match e {
        LogError::OutOfRange => no_such_entry(),
        e => {
            tracing::error!(event = "log_read_failed", log_id, what, "{e}");
            ApiError::new(
                ErrorCode::LogUnavailable,
                "the issuance log cannot be read right now; try again",
            )
        }
    }
}

fn refusal(refused: ReadRefused) -> Result<Response<Body>, ApiError> {
    let error = match refused {
        ReadRefused::Busy => {
            tracing::debug!(event = "log_read_busy", "log read queue is full");
            ApiError::new(
                ErrorCode::Busy,
                "too many log reads are waiting; retry shortly",
            )
        }
        ReadRefused::Stopped => ApiError::new(
            ErrorCode::LogUnavailable,
            "the issuance log cannot be read right now; try again",
        ),
    };
    let mut response = error.to_native();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    Ok(response)
}

fn json_bytes(body: serde_json::Result<Vec<u8>>) -> Response<Body> {
    match body {
        Ok(body) => text(StatusCode::OK, "application/json", body),
        Err(_) => ApiError::new(ErrorCode::Internal, "response encoding failed").to_native(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_whole_u64s_or_a_clear_400() {
        assert_eq!(param("start=5&end=9", "end").unwrap(), Some(9));
        assert_eq!(param("end=9", "start").unwrap(), None);
        // a longer name is not the parameter
        assert_eq!(param("starts=4&start=1", "start").unwrap(), Some(1));
        assert_eq!(
            param("start=18446744073709551615", "start").unwrap(),
            Some(u64::MAX)
        );
        for bad in [
            "start=18446744073709551616",
            "start=-1",
            "start=",
            "start",
            "start=1e3",
            "start=%31",
            "start=abc",
        ] {
            let e = param(bad, "start").unwrap_err();
            assert_eq!(e.code, ErrorCode::MalformedRequest, "{bad}");
            assert!(e.message.starts_with("start must be"), "{bad}");
        }
    }

    #[test]
    fn read_failures_name_no_path() {
        for e in [
            LogError::Io {
                path: "/var/lib/trellis/log/ca-1/log.dat".into(),
                source: std::io::Error::other("boom at /var/lib/trellis"),
            },
            LogError::Corrupt("entry at offset 7 of /var/lib/trellis".into()),
            LogError::InUse {
                dir: "/var/lib/trellis/log/ca-1".into(),
                holder: crate::log::lock::Holder {
                    pid: Some(1),
                    started: None,
                },
            },
        ] {
            let api = public_error("ca-1", "entries", e);
            assert_eq!(api.code, ErrorCode::LogUnavailable);
            assert!(!api.message.contains('/'), "{}", api.message);
        }
        assert_eq!(
            public_error("ca-1", "proof", LogError::OutOfRange).code,
            ErrorCode::NotFound
        );
        let busy = refusal(ReadRefused::Busy).unwrap();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            busy.headers().get(header::RETRY_AFTER).unwrap(),
            RETRY_AFTER_SECS
        );
    }

    /// How pages were written by hand before they were `EntriesPage`s;
    /// the typed body must keep these bytes.
    fn hand_rendered(page: &crate::log::reads::Page) -> Vec<u8> {
        use base64::Engine;
        use std::fmt::Write;
        let mut out = String::from("{\"entries\":[");
        for (i, (seq, bytes)) in page.entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{{\"seq\":{seq},\"entry\":\"");
            base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut out);
            out.push_str("\"}");
        }
        let _ = write!(out, "],\"tree_size\":{},\"next\":", page.tree_size);
        match page.next {
            Some(next) => {
                let _ = write!(out, "{next}");
            }
            None => out.push_str("null"),
        }
        out.push('}');
        out.into_bytes()
    }

    #[test]
    fn a_page_body_is_the_json_it_always_was() {
        let pages = [
            crate::log::reads::Page {
                entries: vec![(7, b"{\"a\":1}".to_vec()), (8, vec![0, 255, 34, 92])],
                next: Some(9),
                tree_size: 12,
            },
            crate::log::reads::Page {
                entries: vec![],
                next: None,
                tree_size: 0,
            },
            crate::log::reads::Page {
                entries: (0..50u8)
                    .map(|i| (u64::from(i) + 1000, (0..i).collect()))
                    .collect(),
                next: None,
                tree_size: u64::MAX,
            },
        ];
        for page in pages {
            let old = hand_rendered(&page);
            let new = serde_json::to_vec(&page_body(page)).unwrap();
            assert_eq!(
                String::from_utf8(new).unwrap(),
                String::from_utf8(old).unwrap()
            );
        }
        let page = crate::log::reads::Page {
            entries: vec![(8, vec![0, 255, 34, 92])],
            next: Some(9),
            tree_size: 12,
        };
        let body: EntriesPage =
            serde_json::from_slice(&serde_json::to_vec(&page_body(page)).unwrap()).unwrap();
        assert_eq!(body.entries[0].seq, 8);
        assert_eq!(body.entries[0].bytes().unwrap(), vec![0, 255, 34, 92]);
        assert_eq!((body.tree_size, body.next), (12, Some(9)));
    }
}
