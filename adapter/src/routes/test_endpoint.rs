//! `POST /webhook/calendly/test`: the seed's unsigned test endpoint. Takes the seed's
//! `{"eventData": …}` shape or the real one, and goes through the same pipeline as real
//! deliveries. Every request counts against the client's allowance. Off in production unless
//! `ENABLE_TEST_ENDPOINT=true`.

use std::net::SocketAddr;

use axum::{
    Extension, Json,
    body::Body,
    extract::{ConnectInfo, State},
    http::HeaderMap,
};
use proto::v1::Source;

use super::{Accepted, ingest, read_body, require_json};
use crate::{AppState, calendly, client_ip::client_ip, error::ApiError, tracking::TrackingId};

pub async fn receive(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(tracking_id): Extension<TrackingId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, ApiError> {
    if !state.config.test_endpoint_enabled {
        return Err(ApiError::TestEndpointDisabled);
    }
    let client = client_ip(peer, &headers, &state.config.trusted_proxies);
    if !state.is_exempt(client)
        && let Err(throttled) = state.test_limiter.check(client)
    {
        tracing::warn!(%client, security = true, "test endpoint traffic throttled");
        return Err(ApiError::RateLimited {
            retry_after: throttled.retry_after,
        });
    }
    tracing::info!(%client, "manual Calendly event processing test initiated");
    require_json(&headers)?;
    let body = read_body(&headers, body).await?;
    let event = calendly::parse_delivery(&body)?;
    ingest(&state, &tracking_id, event, body, Source::TestEndpoint).await
}
