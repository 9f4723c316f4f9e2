//! The outermost middleware: gives every request its tracking id and span, renders error bodies,
//! sets `X-Tracking-Id`, and records the request's latency.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};
use tracing::Instrument;

use crate::error::{self, ApiError};

pub static TRACKING_ID_HEADER: HeaderName = HeaderName::from_static("x-tracking-id");
static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The delivery's tracking id, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct TrackingId(pub String);

/// Keeps a caller's `X-Request-Id` when it is a sane token (so ids from an ingress carry through);
/// otherwise a new UUID.
fn tracking_id_for(request: &Request) -> String {
    request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

pub async fn track(mut request: Request, next: Next) -> Response {
    let tracking_id = tracking_id_for(&request);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().clone();
    request.extensions_mut().insert(TrackingId(tracking_id.clone()));
    // `client` is filled in by the handlers that work out the client's address.
    let span = tracing::info_span!(
        "http",
        tracking_id = %tracking_id,
        %method,
        route = %route,
        client = tracing::field::Empty
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;

    if let Some(error) = response.extensions().get::<ApiError>().cloned() {
        span.in_scope(|| log_rejection(&error));
        metrics::counter!("calendly_http_rejections_total", "reason" => error.reason_label()).increment(1);
        response = error::render(&error, &tracking_id, response);
    }
    if let Ok(value) = HeaderValue::from_str(&tracking_id) {
        response.headers_mut().insert(TRACKING_ID_HEADER.clone(), value);
    }
    metrics::histogram!(
        "calendly_http_request_duration_seconds",
        "route" => route,
        "method" => method_label(&method),
        "status" => response.status().as_u16().to_string()
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// Clients may send any method name; only the standard ones become label values.
fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

fn log_rejection(error: &ApiError) {
    let status = error.status().as_u16();
    match error {
        ApiError::Internal | ApiError::SecretNotConfigured | ApiError::MeetingServiceUnavailable => {
            tracing::error!(status, code = error.code(), "request failed: {error}");
        }
        // Unauthorized and throttled requests are security events; the client IP is logged by the
        // handler that decided.
        _ => tracing::warn!(status, code = error.code(), "request rejected: {error}"),
    }
}
