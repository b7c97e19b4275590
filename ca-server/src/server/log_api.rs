//! The issuance log over HTTP (unauthenticated, read-only):
//! `GET /v1/log/{log_id}/sth`, `…/proof?seq=N`, `…/entries?start=A&end=B`
//! (at most 1000 per call) and `…/key` (the log's public key, PEM).

use super::app::App;
use super::respond::{json, text, ApiError, Body};
use ca_proto::ErrorCode;
use hyper::{Response, StatusCode};

const MAX_ENTRIES: u64 = 1000;

pub fn get(app: &App, log_id: &str, what: &str, query: &str) -> Result<Response<Body>, ApiError> {
    let log = app
        .log
        .as_ref()
        .filter(|l| l.log_id() == log_id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such log on this server"))?;
    let param = |name: &str| -> Result<Option<u64>, ApiError> {
        for pair in query.split('&') {
            if let Some(v) = pair.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
                return v.parse().map(Some).map_err(|_| {
                    ApiError::new(
                        ErrorCode::MalformedRequest,
                        format!("{name} must be a non-negative integer"),
                    )
                });
            }
        }
        Ok(None)
    };
    let unavailable = |e: crate::log::LogError| ApiError::new(e.code(), e.to_string());
    match what {
        "sth" => Ok(json(StatusCode::OK, &log.sth())),
        "key" => Ok(text(
            StatusCode::OK,
            "application/x-pem-file",
            log.public_key().to_pem(),
        )),
        "proof" => {
            let seq = param("seq")?
                .ok_or_else(|| ApiError::new(ErrorCode::MalformedRequest, "seq is required"))?;
            let (sth, proof) = log.proof(seq).map_err(unavailable)?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({
                    "index": seq,
                    "tree_size": sth.tree_size,
                    "inclusion_proof": proof.iter().map(hex::encode).collect::<Vec<_>>(),
                    "sth": sth,
                }),
            ))
        }
        "entries" => {
            use base64::Engine;
            let start = param("start")?.unwrap_or(0);
            let end = param("end")?
                .unwrap_or(start + MAX_ENTRIES)
                .min(start.saturating_add(MAX_ENTRIES));
            let entries = log.entries(start, end).map_err(unavailable)?;
            let list: Vec<_> = entries
                .into_iter()
                .map(|(seq, bytes)| serde_json::json!({"seq": seq, "entry": base64::engine::general_purpose::STANDARD.encode(bytes)}))
                .collect();
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "entries": list }),
            ))
        }
        _ => Err(ApiError::new(ErrorCode::NotFound, "no such resource")),
    }
}
