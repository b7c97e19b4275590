//! Responses: JSON bodies, the native error envelope, and `ApiError`, the one
//! error type handlers return. Messages never carry tokens or secrets.

use bytes::Bytes;
use ca_proto::{ErrorCode, ErrorEnvelope, ReasonBody};
use http_body_util::Full;
use hyper::{header, Response, StatusCode};

pub type Body = Full<Bytes>;

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub reasons: Vec<ReasonBody>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            reasons: Vec::new(),
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn to_native(&self) -> Response<Body> {
        let envelope =
            ErrorEnvelope::with_reasons(self.code, self.message.clone(), self.reasons.clone());
        json(self.status(), &envelope)
    }
}

pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => with_type(status, "application/json", body),
        Err(_) => with_type(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            br#"{"error":{"code":"internal","message":"response encoding failed"}}"#.to_vec(),
        ),
    }
}

pub fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    with_type(status, content_type, body)
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        "x-content-type-options",
        header::HeaderValue::from_static("nosniff"),
    );
    response
}
