//! Every way a request can fail, the HTTP status and stable `code` each maps to, and the one
//! error body: `{error, code, trackingId, timestamp}`.
//!
//! An [`ApiError`] turned into a response carries no body yet: it rides in the response's
//! extensions, and the tracking middleware (which knows the tracking id) renders it. So errors
//! raised anywhere — handlers, fallbacks, the panic catcher — come out the same way.

use std::time::Duration;

use axum::{
    Json,
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{calendly::ParseError, signature};

/// Over the limit: when the next request would be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub limit: u32,
    pub retry_after: Duration,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// A header that must appear once came more than once: two readings of one request.
    #[error("the {0} header appears more than once")]
    AmbiguousHeader(&'static str),
    #[error("the request body did not arrive within {} s", .0.as_secs())]
    RequestTimeout(Duration),
    /// The body stream failed (the client reset the connection, bad chunked framing).
    #[error("the request body could not be read")]
    BodyUnreadable,
    #[error("{0}")]
    Signature(signature::Error),
    #[error("webhook signing secret is not configured")]
    SecretNotConfigured,
    #[error("{0}")]
    Parse(ParseError),
    #[error("too many requests; retry after {} s", whole_seconds(.0.retry_after))]
    RateLimited(Throttled),
    #[error("the test endpoint is disabled (set ENABLE_TEST_ENDPOINT=true to enable it)")]
    TestEndpointDisabled,
    #[error("no such endpoint")]
    NotFound,
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    #[error("the meeting service is unavailable; retry later")]
    MeetingServiceUnavailable,
    #[error("the meeting service rejected the event: {0}")]
    Rejected(Refusal),
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::AmbiguousHeader(_) => StatusCode::BAD_REQUEST,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::BodyUnreadable => StatusCode::BAD_REQUEST,
            Self::Signature(_) => StatusCode::UNAUTHORIZED,
            Self::Parse(
                ParseError::InvalidUtf8 | ParseError::InvalidJson(_) | ParseError::DuplicateKey { .. },
            ) => StatusCode::BAD_REQUEST,
            Self::Parse(ParseError::InvalidField { .. }) | Self::Rejected(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::TestEndpointDisabled | Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::MeetingServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::SecretNotConfigured | Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable, documented machine-readable cause (docs/http-api.md, "Error codes").
    pub fn code(&self) -> &'static str {
        match self {
            Self::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::AmbiguousHeader(_) => "AMBIGUOUS_HEADER",
            Self::RequestTimeout(_) => "REQUEST_TIMEOUT",
            Self::BodyUnreadable => "BODY_UNREADABLE",
            Self::Signature(signature::Error::MissingHeader) => "MISSING_SIGNATURE",
            Self::Signature(signature::Error::MalformedHeader) => "MALFORMED_SIGNATURE_HEADER",
            Self::Signature(signature::Error::MalformedSignature) => "MALFORMED_SIGNATURE",
            Self::Signature(signature::Error::TimestampOutOfTolerance { .. }) => {
                "SIGNATURE_TIMESTAMP_OUT_OF_TOLERANCE"
            }
            Self::Signature(signature::Error::SignatureMismatch) => "INVALID_SIGNATURE",
            Self::SecretNotConfigured => "WEBHOOK_SECRET_NOT_CONFIGURED",
            Self::Parse(ParseError::InvalidUtf8) => "INVALID_UTF8",
            Self::Parse(ParseError::InvalidJson(_)) => "INVALID_JSON",
            Self::Parse(ParseError::DuplicateKey { .. }) => "DUPLICATE_KEY",
            Self::Parse(ParseError::InvalidField { .. }) => "INVALID_PAYLOAD",
            Self::RateLimited(_) => "RATE_LIMITED",
            Self::TestEndpointDisabled => "TEST_ENDPOINT_DISABLED",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::MeetingServiceUnavailable => "MEETING_SERVICE_UNAVAILABLE",
            Self::Rejected(_) => "EVENT_REJECTED",
            Self::Internal => "INTERNAL_ERROR",
        }
    }

    /// The metric label for a rejection: few values, never input.
    pub fn reason_label(&self) -> &'static str {
        match self {
            Self::PayloadTooLarge { .. } => "size",
            Self::UnsupportedMediaType => "content_type",
            Self::AmbiguousHeader(_) => "ambiguous_header",
            Self::RequestTimeout(_) => "timeout",
            Self::BodyUnreadable => "malformed",
            Self::Signature(signature::Error::TimestampOutOfTolerance { .. }) => "stale",
            Self::Signature(_) | Self::SecretNotConfigured => "signature",
            Self::Parse(_) | Self::Rejected(_) => "malformed",
            Self::RateLimited(_) => "rate_limited",
            Self::TestEndpointDisabled | Self::NotFound | Self::MethodNotAllowed => "route",
            Self::MeetingServiceUnavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

/// `Retry-After` on a 503: nothing was stored and the meeting service is expected back soon.
pub const UNAVAILABLE_RETRY_AFTER_SECS: &str = "5";

/// Seconds for `Retry-After`, rounded up: a client that waits that long is let in.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

impl From<signature::Error> for ApiError {
    fn from(error: signature::Error) -> Self {
        Self::Signature(error)
    }
}

impl From<ParseError> for ApiError {
    fn from(error: ParseError) -> Self {
        Self::Parse(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status().into_response();
        if let Self::MeetingServiceUnavailable = &self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(UNAVAILABLE_RETRY_AFTER_SECS),
            );
        }
        if let Self::RateLimited(throttled) = &self {
            let seconds = whole_seconds(throttled.retry_after).to_string();
            let headers = response.headers_mut();
            for (name, value) in [
                (header::RETRY_AFTER.as_str(), seconds.as_str()),
                ("ratelimit-limit", &throttled.limit.to_string()),
                ("ratelimit-remaining", "0"),
                ("ratelimit-reset", seconds.as_str()),
            ] {
                if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_str(value)) {
                    headers.insert(name, value);
                }
            }
        }
        response.extensions_mut().insert(self);
        response
    }
}

/// The meeting service's refusal of a request: its code and message (which names the field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: tonic::Code,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Every error answer's body.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody<'a> {
    /// What went wrong, for people.
    error: String,
    /// Stable machine-readable cause, e.g. INVALID_SIGNATURE (docs/http-api.md, "Error codes").
    #[schema(value_type = String, example = "INVALID_SIGNATURE")]
    code: &'a str,
    #[schema(value_type = String)]
    tracking_id: &'a str,
    /// RFC 3339, UTC.
    timestamp: String,
}

/// Gives an error response its JSON body. Called by the tracking middleware.
pub fn render(error: &ApiError, tracking_id: &str, response: Response) -> Response {
    let (mut parts, _) = response.into_parts();
    let body = ErrorBody {
        error: error.to_string(),
        code: error.code(),
        tracking_id,
        timestamp: crate::now_rfc3339(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    let rendered = Json(body).into_response();
    let (rendered_parts, body) = rendered.into_parts();
    parts.headers.extend(rendered_parts.headers);
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signature_failure_is_a_401_with_its_own_code() {
        let errors = [
            signature::Error::MissingHeader,
            signature::Error::MalformedHeader,
            signature::Error::MalformedSignature,
            signature::Error::TimestampOutOfTolerance {
                age_secs: 500,
                tolerance_secs: 180,
                signature_matches: true,
            },
            signature::Error::SignatureMismatch,
        ];
        let codes: std::collections::HashSet<_> =
            errors.iter().map(|e| ApiError::from(e.clone()).code()).collect();
        assert_eq!(codes.len(), errors.len(), "one code per reason: {codes:?}");
        for error in errors {
            assert_eq!(ApiError::from(error).status(), StatusCode::UNAUTHORIZED);
        }
    }

    #[test]
    fn syntax_errors_are_400_and_shape_errors_422() {
        assert_eq!(
            ApiError::from(ParseError::InvalidJson("x".into())).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ApiError::from(ParseError::InvalidField {
                path: "payload.uri".into(),
                message: "missing".into()
            })
            .status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
