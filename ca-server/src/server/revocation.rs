//! The revocation endpoints: `POST /v1/revoke` (an auth key with the
//! `revoke` permission for the class, or the certificate's holder),
//! `GET /v1/classes/{class}/crl[/{key}]` (CRLs, public) and the OCSP
//! responder `/ocsp/{class}` (public; RFC 6960, GET and POST).
//!
//! Fairness as for signing: with an `Authorization` header the MAC, the
//! key's rate limit and its nonce come before the body is decoded; a
//! holder's request passes a server-wide rate limit before its two
//! signature checks; OCSP requests pass a per-class rate limit before any
//! HSM signature (then `tryLater`).

use super::app::{now_unix, printable, App};
use super::respond::{json, ApiError, Body};
use crate::revoke::{LeafRevocation, Revocations};
use ca_proto::revocation::{RevokeRequest, RevokeResponse};
use ca_proto::time::Rfc3339;
use ca_proto::ErrorCode;
use hyper::{header, Response, StatusCode};
use std::sync::Arc;

/// Holder revocations, server-wide (each costs two signature checks).
const HOLDER_RATE: f64 = 20.0;
const HOLDER_BURST: f64 = 40.0;
/// OCSP answers signed per second and class.
const OCSP_RATE: f64 = 2000.0;
const OCSP_BURST: f64 = 500.0;

fn revocations(app: &App) -> Result<&Arc<Revocations>, ApiError> {
    app.revocations.get().ok_or_else(|| {
        ApiError::new(
            ErrorCode::HsmUnavailable,
            "revocation is not available on this server",
        )
    })
}

pub async fn revoke(
    app: &Arc<App>,
    auth: Option<&str>,
    path_and_query: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let revs = revocations(app)?.clone();
    let by = match auth {
        Some(_) => {
            let key = app.authenticate_native(auth, "POST", path_and_query, body)?;
            let request = decode(body)?;
            if !key.may_revoke(&request.class) {
                return Err(ApiError::new(
                    ErrorCode::ForbiddenScope,
                    format!(
                        "key '{}' may not revoke certificates of class '{}'",
                        key.id,
                        printable(&request.class)
                    ),
                ));
            }
            (request, key.id.clone())
        }
        None => {
            let request = decode(body)?;
            let Some(proof) = &request.holder else {
                return Err(ApiError::new(
                    ErrorCode::Unauthenticated,
                    "authentication failed",
                ));
            };
            if !app.limiter.allow(" holder", HOLDER_RATE, HOLDER_BURST) {
                return Err(ApiError::new(
                    ErrorCode::RateLimited,
                    "too many self-revocations; retry shortly",
                ));
            }
            let view = revs.view(&request.class);
            let intermediates: Vec<&[u8]> = view
                .as_ref()
                .map(|v| {
                    v.crls
                        .iter()
                        .filter(|c| !c.root)
                        .map(|c| c.issuer_der.as_slice())
                        .collect()
                })
                .unwrap_or_default();
            if let Err(e) = crate::revoke::holder::verify(
                proof,
                &request.class,
                &request.serial,
                request.reason,
                &intermediates,
                now_unix(),
                app.max_skew_secs,
            ) {
                tracing::warn!(event = "holder_revoke_refused", class = %printable(&request.class), "{e}");
                metrics_auth_failure();
                return Err(ApiError::new(
                    ErrorCode::Unauthenticated,
                    "authentication failed",
                ));
            }
            (request.clone(), "holder".to_string())
        }
    };
    let (request, by) = by;
    if app.authority.policies().get(&request.class).is_none() {
        return Err(ApiError::new(
            ErrorCode::UnknownClass,
            format!("unknown class '{}'", printable(&request.class)),
        ));
    }
    let app2 = app.clone();
    let job = LeafRevocation {
        class: request.class.clone(),
        serial: request.serial.clone(),
        reason: request.reason,
        by,
    };
    let done = tokio::task::spawn_blocking(move || {
        revs.revoke_leaf(&app2.authority, app2.log.as_ref(), &job)
    })
    .await
    .map_err(|_| ApiError::new(ErrorCode::Internal, "revocation task failed"))?
    .map_err(|e| {
        tracing::warn!(event = "revoke_refused", class = %printable(&request.class), code = e.code().as_str(), "{e}");
        ApiError::new(e.code(), e.to_string())
    })?;
    tracing::info!(event = "revoked", class = %done.record.issuer_key, serial = %done.record.serial, reason = %done.record.reason, by = %done.record.by, "certificate revoked");
    let revoked_at = Rfc3339::parse(&done.record.revoked_at)
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("revocation time: {e}")))?;
    Ok(json(
        StatusCode::OK,
        &RevokeResponse {
            class: request.class,
            serial: done.record.serial,
            reason: done.record.reason,
            revoked_at,
            issuer: done.record.issuer,
            log: done.evidence,
        },
    ))
}

fn metrics_auth_failure() {
    crate::metrics::metrics()
        .auth_failures
        .with_label_values(&[ErrorCode::Unauthenticated.as_str()])
        .inc();
}

fn decode(body: &[u8]) -> Result<RevokeRequest, ApiError> {
    RevokeRequest::from_json(body).map_err(|e| ApiError::new(e.code(), e.message().to_string()))
}

/// `GET /v1/classes/{class}/crl` (the active intermediate's CRL, DER;
/// `?format=pem`: every CRL of the class) and `.../crl/{key}` (DER).
pub fn crl(
    app: &App,
    class: &str,
    key: Option<&str>,
    query: &str,
    if_none_match: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let revs = revocations(app)?;
    if app.authority.policies().get(class).is_none() {
        return Err(ApiError::new(
            ErrorCode::UnknownClass,
            format!("unknown class '{}'", printable(class)),
        ));
    }
    let view = revs.view(class).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Busy,
            "the class's CRLs are not signed yet; retry shortly",
        )
    })?;
    let pem = match query {
        "" | "format=der" => false,
        "format=pem" => true,
        _ => {
            return Err(ApiError::new(
                ErrorCode::MalformedRequest,
                "format must be 'der' or 'pem'",
            ))
        }
    };
    let max_age = revs.times().refresh.as_secs().min(300);
    let (body, content_type, etag) = if pem && key.is_none() {
        let tag = view
            .crls
            .iter()
            .map(|c| format!("{:x}", c.number))
            .collect::<Vec<_>>()
            .join("-");
        (view.pem_all.clone(), "application/x-pem-file", tag)
    } else {
        let found = match key {
            Some(k) => view.crl_of(k),
            None => view.active_crl(),
        }
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no CRL for this intermediate"))?;
        let (body, ct) = if pem {
            (
                bytes::Bytes::from(ca_proto::pem::encode(ca_proto::pem::Label::Crl, &found.der)),
                "application/x-pem-file",
            )
        } else {
            (found.der.clone(), "application/pkix-crl")
        };
        (body, ct, format!("{:x}", found.number))
    };
    let quoted = format!("\"{etag}\"");
    let unchanged = if_none_match.is_some_and(|tags| {
        tags.split(',')
            .map(str::trim)
            .any(|t| t == quoted || t.trim_start_matches("W/") == quoted || t == "*")
    });
    let (status, body) = if unchanged {
        (StatusCode::NOT_MODIFIED, bytes::Bytes::new())
    } else {
        (StatusCode::OK, body)
    };
    let mut response = super::respond::shared(status, content_type, body);
    let headers = response.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(&format!("max-age={max_age}")) {
        headers.insert(header::CACHE_CONTROL, v);
    }
    if let Ok(v) = header::HeaderValue::from_str(&quoted) {
        headers.insert(header::ETAG, v);
    }
    Ok(response)
}

/// The DER request of a GET (`/ocsp/{class}/{url-encoded base64}`).
pub fn ocsp_get_request(segment: &str) -> Option<Vec<u8>> {
    ca_proto::ocsp::decode_get_path_segment(segment).ok()
}

/// Answer an OCSP request for `class`. Always an OCSP response (errors are
/// OCSP error statuses, not JSON): good for a serial the class's
/// intermediate issued (known from the logs) and not revoked, revoked with
/// time and reason, unknown otherwise; signed in the HSM by the issuing
/// intermediate, nonce echoed, thisUpdate/nextUpdate those of its CRL.
pub async fn ocsp(app: &Arc<App>, class: &str, request: Option<Vec<u8>>) -> Response<Body> {
    use ca_proto::ocsp::ResponseStatus;
    let (label, der) = match answer(app, class, request).await {
        Ok((label, der)) => (label, der),
        Err(status) => {
            let label = match status {
                ResponseStatus::MalformedRequest => "malformed_request",
                ResponseStatus::InternalError => "internal_error",
                ResponseStatus::TryLater => "try_later",
                ResponseStatus::Unauthorized => "unauthorized",
            };
            (label, ca_proto::ocsp::error_response(status))
        }
    };
    let metric_class = if app.authority.policies().get(class).is_some() {
        class
    } else {
        "unknown"
    };
    crate::metrics::metrics()
        .ocsp_responses
        .with_label_values(&[metric_class, label])
        .inc();
    let mut response = super::respond::text(StatusCode::OK, "application/ocsp-response", der);
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

async fn answer(
    app: &Arc<App>,
    class: &str,
    request: Option<Vec<u8>>,
) -> Result<(&'static str, Vec<u8>), ca_proto::ocsp::ResponseStatus> {
    use ca_proto::ocsp::{
        build_response, parse_request, CertStatus, ResponseParams, ResponseStatus,
        SignatureAlgorithm,
    };
    let der = request.ok_or(ResponseStatus::MalformedRequest)?;
    let parsed = parse_request(&der).map_err(|_| ResponseStatus::MalformedRequest)?;
    let revs = app.revocations.get().ok_or(ResponseStatus::TryLater)?;
    if app.authority.policies().get(class).is_none() {
        return Err(ResponseStatus::Unauthorized);
    }
    let view = revs.view(class).ok_or(ResponseStatus::TryLater)?;
    if !revs.is_ready() {
        return Err(ResponseStatus::TryLater);
    }
    // The responder is the intermediate the first CertID names; CertIDs
    // naming another CA are answered unknown.
    let first = parsed
        .certs
        .first()
        .ok_or(ResponseStatus::MalformedRequest)?;
    let crl = view
        .crls
        .iter()
        .filter(|c| !c.root)
        .find(|c| first.matches(&c.issuer_hashes))
        .ok_or(ResponseStatus::Unauthorized)?;
    let hashes = &crl.issuer_hashes;
    let key = view
        .keys
        .get(&crl.key)
        .cloned()
        .ok_or(ResponseStatus::TryLater)?;
    let mut answers = Vec::with_capacity(parsed.certs.len());
    let mut label = "good";
    for id in &parsed.certs {
        let status = if !id.matches(hashes) {
            CertStatus::Unknown
        } else if let Some(r) = view
            .leaves
            .get(&id.serial_hex())
            .filter(|r| r.issuer_key == crl.key)
        {
            CertStatus::Revoked {
                time: Rfc3339::parse(&r.revoked_at)
                    .map(|t| t.unix_timestamp())
                    .map_err(|_| ResponseStatus::InternalError)?,
                reason: Some(r.reason.code()),
            }
        } else if let Some(r) = view.intermediate_revoked(&crl.key) {
            // Every leaf of a revoked intermediate is revoked with it.
            CertStatus::Revoked {
                time: Rfc3339::parse(&r.revoked_at)
                    .map(|t| t.unix_timestamp())
                    .map_err(|_| ResponseStatus::InternalError)?,
                reason: Some(r.reason.code()),
            }
        } else if revs
            .known_bytes(&id.serial, app.log.as_ref())
            .is_some_and(|k| *k.issuer == *crl.issuer_fingerprint)
        {
            CertStatus::Good
        } else {
            CertStatus::Unknown
        };
        label = match (label, status) {
            (_, CertStatus::Revoked { .. }) | ("revoked", _) => "revoked",
            (_, CertStatus::Unknown) | ("unknown", _) => "unknown",
            _ => "good",
        };
        answers.push((id.clone(), status));
    }
    if !app
        .limiter
        .allow(&format!(" ocsp:{class}"), OCSP_RATE, OCSP_BURST)
    {
        return Err(ResponseStatus::TryLater);
    }
    let alg = match key.algorithm {
        hsm::KeyAlgorithm::EcP256 => SignatureAlgorithm::EcdsaSha256,
        hsm::KeyAlgorithm::EcP384 => SignatureAlgorithm::EcdsaSha384,
        _ => SignatureAlgorithm::RsaPkcs1Sha256,
    };
    let this_update = crl.this_update.unix_timestamp();
    let next_update = crl.next_update.unix_timestamp();
    let nonce = parsed.nonce.clone();
    let key_hash = hashes.key_sha1;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let submitted = app.authority.pool().execute(move |session| {
        let params = ResponseParams {
            responder_key_hash: &key_hash,
            answers: &answers,
            produced_at: now_unix(),
            this_update,
            next_update,
            nonce: nonce.as_deref(),
        };
        let _ = tx.send(build_response(&params, alg, |tbs| session.sign(&key, tbs)));
    });
    if submitted.is_err() {
        return Err(ResponseStatus::TryLater);
    }
    match rx.await {
        Ok(Ok(der)) => Ok((label, der)),
        Ok(Err(e)) => {
            tracing::error!(event = "ocsp_sign_failed", class, "{e}");
            Err(ResponseStatus::InternalError)
        }
        Err(_) => Err(ResponseStatus::TryLater),
    }
}
