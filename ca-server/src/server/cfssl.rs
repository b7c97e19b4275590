//! The CFSSL-compatible API (`/api/v1/cfssl/authsign`, `/api/v1/cfssl/info`)
//! so that the real `cfssl` client and CFSSL-speaking tools work unchanged.
//! `label` is the class, `profile` the profile. The token is an HMAC over the
//! exact decoded request bytes; it does not cover a timestamp, so this
//! endpoint cannot stop replays and each auth key opts in to it.

use super::app::App;
use super::respond::{json, ApiError, Body};
use crate::issue::IssueRequest;
use ca_proto::cfssl::{
    decode_authsign, CfsslInfoRequest, CfsslInfoResult, CfsslResponse, CfsslSignRequest,
};
use ca_proto::native::format_duration;
use ca_proto::ErrorCode;
use hyper::{Response, StatusCode};

/// CFSSL clients read the envelope, so errors use its shape too.
pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut body = CfsslResponse::from_error(e.code, &e.message);
    for reason in &e.reasons {
        body.messages.push(ca_proto::cfssl::ResponseMessage {
            code: ca_proto::cfssl::cfssl_code(e.code),
            message: format!("{}: {}", reason.code, reason.detail),
        });
    }
    if let Some(first) = body.errors.first_mut() {
        if !e.reasons.is_empty() {
            let reasons: Vec<String> = e
                .reasons
                .iter()
                .map(|r| format!("{}: {}", r.code, r.detail))
                .collect();
            first.message = format!("{} ({})", first.message, reasons.join("; "));
        }
    }
    json(e.status(), &body)
}

pub async fn authsign(app: &App, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let (_envelope, request_bytes, token) =
        decode_authsign(body).map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    // The token names no key: every key allowed to use this endpoint is
    // tried, each comparison in constant time (secrets are distinct across
    // keys, so one secret can only ever act as its own key). Then the key's
    // rate limit; only then is the inner request decoded and its scope
    // checked: a valid key asking for another class gets `forbidden_scope`.
    let key = app.authenticate_cfssl(&request_bytes, &token)?;
    let request = CfsslSignRequest::from_json(&request_bytes)
        .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    if request.label.is_empty() {
        return Err(ApiError::new(
            ErrorCode::UnknownClass,
            "label (the class) is required",
        ));
    }
    let hosts = request.effective_hosts();
    let issued = app
        .issue(
            IssueRequest {
                class: request.label,
                profile: Some(request.profile),
                csr: request.certificate_request.into_bytes(),
                hosts,
                ttl: None,
            },
            key,
            "cfssl_authsign",
        )
        .await?;
    Ok(json(StatusCode::OK, &CfsslResponse::sign_ok(issued.pem)))
}

pub fn info(app: &App, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let request =
        CfsslInfoRequest::from_json(body).map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    let profile_name = app.resolve_profile(&request.label, Some(&request.profile))?;
    let (Some(class), Some(policy)) = (
        app.authority.class(&request.label),
        app.authority.policies().get(&request.label),
    ) else {
        return Err(ApiError::new(ErrorCode::UnknownClass, "unknown label"));
    };
    let profile = policy
        .profile(&profile_name)
        .ok_or_else(|| ApiError::new(ErrorCode::PolicyDenied, "unknown profile"))?;
    let usages = profile
        .key_usages
        .iter()
        .map(|u| cfssl_usage(u.name()))
        .chain(profile.ext_key_usages.iter().map(|u| cfssl_usage(u.name())))
        .collect();
    let info = CfsslInfoResult {
        // CFSSL answers with the signer's certificate: our active intermediate.
        certificate: class.active.cert_pem.trim_end().to_string(),
        usages,
        expiry: format_duration(profile.default_ttl),
    };
    Ok(json(StatusCode::OK, &CfsslResponse::info_ok(&info)))
}

/// CFSSL's usage names ("digital signature", "server auth", …).
fn cfssl_usage(name: &str) -> String {
    name.replace('_', " ")
}
