//! Responses: JSON bodies, the native error envelope, and `ApiError`, the one
//! error type handlers return. Messages never carry tokens or secrets.

use super::budget::ResponseBytes;
use bytes::Bytes;
use ca_proto::{ErrorCode, ErrorEnvelope, ReasonBody};
use hyper::body::Frame;
use hyper::{header, Response, StatusCode};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A response body: bytes already in memory, handed to hyper in frames of
/// at most `FRAME` bytes, so that hyper asks for the next frame only once
/// the peer has taken the previous one (HTTP/2 send windows included). While
/// the body lives it may hold room in the response budget, given back when
/// hyper drops it (sent, reset, or connection gone).
pub struct Body {
    data: Bytes,
    hold: Option<ResponseBytes>,
    /// A view of a buffer the server keeps anyway (a class's CRLs): it costs
    /// no memory per reader, so it takes no room in the response budget.
    shared: bool,
}

const FRAME: usize = 16 * 1024;

impl Body {
    pub fn new(data: impl Into<Bytes>) -> Body {
        Body {
            data: data.into(),
            hold: None,
            shared: false,
        }
    }

    /// Whether the body only references a buffer the server keeps anyway.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Keep `hold` until the body is dropped.
    pub fn hold(&mut self, hold: ResponseBytes) {
        self.hold = Some(hold);
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.data.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.data.len().min(FRAME);
        let chunk = self.data.split_to(n);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.data.len() as u64)
    }
}

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

/// A response whose body references `body`, a buffer the server keeps
/// anyway (a class's CRLs): it takes no room in the response budget, since
/// any number of readers share it.
pub fn shared(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = with_type(status, content_type, body);
    response.body_mut().shared = true;
    response
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Body::new(body));
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
