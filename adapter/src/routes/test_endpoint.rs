//! `POST /webhook/calendly/test`: the seed's unsigned test endpoint. Takes the seed's
//! `{"eventData": …}` shape or the real one, and goes through the same pipeline as real
//! deliveries. Every request counts against the client's allowance. Off in production unless
//! `ENABLE_TEST_ENDPOINT=true`.

use std::net::SocketAddr;

use axum::{
    Extension,
    body::Body,
    extract::{ConnectInfo, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use proto::v1::Source;

use super::{Accepted, ingest, read_body, reject_declared_oversize, reject_repeated_headers, require_json};
use crate::{
    AppState, calendly,
    client_ip::client_ip,
    error::{ApiError, ErrorBody},
    tracking::TrackingId,
};

#[utoipa::path(
    post,
    operation_id = "receive_test_delivery",
    path = "/webhook/calendly/test",
    tag = "webhooks",
    summary = "An unsigned test delivery (the seed's eventData shape or the real one)",
    request_body(content = crate::openapi::TestDelivery, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored (or a duplicate); a body missing meeting data is stored as failed",
            body = Accepted, headers(("x-tracking-id" = String), ("ratelimit-limit" = String), ("ratelimit-remaining" = String))),
        (status = 400, description = "Not UTF-8, not JSON, a key named twice in one object (DUPLICATE_KEY), or a \
            header that must appear once appearing more than once (AMBIGUOUS_HEADER)", body = ErrorBody,
            headers(("x-tracking-id" = String))),
        (status = 404, description = "The test endpoint is disabled", body = ErrorBody, headers(("x-tracking-id" = String))),
        (status = 422, description = "A required field is missing or has the wrong type; `error` names it", body = ErrorBody,
            headers(("x-tracking-id" = String))),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody, headers(("x-tracking-id" = String))),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody, headers(("x-tracking-id" = String))),
        (status = 415, description = "Content-Type is not application/json", body = ErrorBody, headers(("x-tracking-id" = String))),
        (status = 429, description = "Too many requests from this client", body = ErrorBody,
            headers(("x-tracking-id" = String), ("retry-after" = String), ("ratelimit-limit" = String),
                ("ratelimit-remaining" = String), ("ratelimit-reset" = String))),
        (status = 500, description = "Internal error; nothing was stored", body = ErrorBody, headers(("x-tracking-id" = String))),
        (status = 503, description = "The meeting service is unavailable; nothing was stored, retry later", body = ErrorBody,
            headers(("x-tracking-id" = String))),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(tracking_id): Extension<TrackingId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !state.config.test_endpoint_enabled {
        return Err(ApiError::TestEndpointDisabled);
    }
    let client = client_ip(peer, &headers, &state.config.trusted_proxies);
    let allowance = state.take_allowance(&state.test_limiter, client)?;
    tracing::Span::current().record("client", tracing::field::display(client));
    tracing::info!("manual Calendly event processing test initiated");
    reject_repeated_headers(&headers)?;
    reject_declared_oversize(&headers)?;
    require_json(&headers)?;
    let body = read_body(&headers, body, state.config.request_read_timeout).await?;
    let event = calendly::parse_delivery(&body)?;
    let mut response = ingest(&state, &tracking_id, event, body, Source::TestEndpoint)
        .await?
        .into_response();
    if let Some(allowance) = allowance {
        allowance.write_headers(response.headers_mut());
    }
    Ok(response)
}
