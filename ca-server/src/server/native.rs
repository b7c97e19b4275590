//! The native API (`/v1/…`): sign, classes, bundles and chains.

use super::app::{printable, App};
use super::respond::{json, text, ApiError, Body};
use crate::issue::IssueRequest;
use ca_proto::native::{
    format_duration, ClassInfo, ClassList, ProfileInfo, SignRequest, SignResponse,
};
use ca_proto::time::Rfc3339;
use ca_proto::ErrorCode;
use hyper::{Response, StatusCode};

pub async fn sign(
    app: &App,
    auth: Option<&str>,
    path_and_query: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let key = app.authenticate_native(auth, "POST", path_and_query, body)?;
    let request = SignRequest::from_json(body)
        .map_err(|e| ApiError::new(e.code(), e.message().to_string()))?;
    let ttl = request
        .ttl_duration()
        .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, format!("ttl: {e}")))?;
    let issued = app
        .issue(
            IssueRequest {
                class: request.class,
                profile: request.profile,
                csr: request.csr.into_bytes(),
                hosts: request.hosts,
                ttl,
            },
            key,
            "native_sign",
        )
        .await?;
    // Assembled here, on this request's thread (not the log writer's). The
    // entry is durable either way; without its proof the certificate is
    // not handed out and the client asks again.
    let evidence = issued.evidence().map_err(|e| {
        tracing::error!(event = "log_evidence_failed", serial = %issued.serial_hex, "{e}");
        ApiError::new(
            e.code(),
            "the certificate was logged but its inclusion proof could not be read; try again",
        )
    })?;
    // Certificate times are years 0000-9999 in UTC, so they always fit.
    let rfc3339 = |t: time::OffsetDateTime| {
        Rfc3339::try_from(t)
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("validity time: {e}")))
    };
    Ok(json(
        StatusCode::OK,
        &SignResponse {
            certificate: issued.pem,
            chain: issued.chain_pem,
            serial: issued.serial_hex,
            not_before: rfc3339(issued.not_before)?,
            not_after: rfc3339(issued.not_after)?,
            log: evidence,
        },
    ))
}

pub fn classes(app: &App) -> Response<Body> {
    let mut list = Vec::new();
    for class in app.authority.classes() {
        let Some(policy) = app.authority.policies().get(&class.name) else {
            continue;
        };
        list.push(ClassInfo {
            name: class.name.clone(),
            description: policy.description().to_string(),
            profiles: policy
                .profiles()
                .map(|(name, p)| ProfileInfo {
                    name: name.to_string(),
                    default_ttl: format_duration(p.default_ttl),
                    max_ttl: format_duration(p.max_ttl),
                    key_usages: p.key_usages.iter().map(|u| u.name().to_string()).collect(),
                    ext_key_usages: p
                        .ext_key_usages
                        .iter()
                        .map(|u| u.name().to_string())
                        .collect(),
                })
                .collect(),
            root_fingerprints_sha256: pem_fingerprints(&class.bundle_pem),
            active_intermediate: class.active.fingerprint.clone(),
            prepared_intermediate: class
                .prepared_pem
                .as_deref()
                .and_then(crate::hierarchy::pem_to_der)
                .map(|der| crate::hierarchy::fingerprint(&der)),
        });
    }
    json(StatusCode::OK, &ClassList { classes: list })
}

fn pem_fingerprints(bundle: &str) -> Vec<String> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(bundle.as_bytes())
        .flatten()
        .map(|der| crate::hierarchy::fingerprint(&der))
        .collect()
}

/// `GET /v1/classes/{class}/bundle` (roots: the trust anchors) and
/// `GET /v1/classes/{class}/chain` (active intermediate, then root).
pub fn class_pem(
    app: &App,
    class: &str,
    what: &str,
    query: &str,
) -> Result<Response<Body>, ApiError> {
    let loaded = app.authority.class(class).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnknownClass,
            format!("unknown class '{}'", printable(class)),
        )
    })?;
    let body = match what {
        "bundle" => loaded.bundle_pem.clone(),
        "chain" => match query {
            "" | "which=active" => format!(
                "{}{}{}",
                loaded.active.cert_pem, loaded.active.chain_extra_pem, loaded.root_pem
            ),
            // Every intermediate the class state still names (those whose
            // CRLs are served: active first), then the root.
            "which=all" => {
                let mut pem = String::new();
                if let Some(view) = app.revocations.get().and_then(|r| r.view(class)) {
                    for crl in view.crls.iter().filter(|c| !c.root) {
                        pem.push_str(&crate::hierarchy::to_pem(&crl.issuer_der));
                    }
                }
                if pem.is_empty() {
                    pem.push_str(&loaded.active.cert_pem);
                }
                format!("{pem}{}{}", loaded.active.chain_extra_pem, loaded.root_pem)
            }
            "which=prepared" => match &loaded.prepared_pem {
                Some(pem) => format!("{pem}{}", loaded.root_pem),
                None => {
                    return Err(ApiError::new(
                        ErrorCode::NotFound,
                        "no prepared intermediate",
                    ))
                }
            },
            _ => {
                return Err(ApiError::new(
                    ErrorCode::MalformedRequest,
                    "which must be 'active', 'prepared' or 'all'",
                ))
            }
        },
        _ => return Err(ApiError::new(ErrorCode::NotFound, "no such resource")),
    };
    Ok(text(StatusCode::OK, "application/x-pem-file", body))
}
