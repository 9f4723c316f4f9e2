//! `POST /webhook/calendly/test`: the seed's unsigned test endpoint. Takes the seed's
//! `{"eventData": …}` shape or the real one, and goes through the same pipeline as real
//! deliveries. Every request counts against the client's allowance, so the limit is a tower layer
//! in front of the handler (`rate_limit::test_endpoint_layer`, tower_governor). Off in production
//! unless `ENABLE_TEST_ENDPOINT=true`.

use axum::{Extension, Json, extract::State};
use proto::v1::Source;

use super::{Accepted, CheckedBody, ingest};
use crate::{
    AppState, calendly,
    error::{ApiError, ErrorBody},
    tracking::TrackingId,
};

#[utoipa::path(
    post,
    operation_id = "receive_test_delivery",
    path = "/webhook/calendly/test",
    tag = "webhooks",
    summary = "An unsigned test delivery (the seed's eventData shape or the real one)",
    request_body(content = crate::routes::schema::TestDelivery, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored (or a duplicate); a body missing meeting data is stored as failed",
            body = Accepted, headers(("x-tracking-id" = String), ("ratelimit-limit" = String), ("ratelimit-remaining" = String))),
        (status = 400, description = "Not UTF-8, not JSON, a key named twice in one object (DUPLICATE_KEY), or a \
            header that must appear once appearing more than once (AMBIGUOUS_HEADER)", body = ErrorBody,
            headers(("x-tracking-id" = String))),
        (status = 404, description = "The test endpoint is disabled", body = ErrorBody, headers(("x-tracking-id" = String))),
        (status = 422, description = "A required field is missing or has the wrong type; `error` names it", body = ErrorBody,
            headers(("x-tracking-id" = String))),
        crate::routes::schema::SharedRefusals,
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    Extension(tracking_id): Extension<TrackingId>,
    CheckedBody(body): CheckedBody,
) -> Result<Json<Accepted>, ApiError> {
    tracing::info!("manual Calendly event processing test initiated");
    let event = calendly::parse_delivery(&body)?;
    ingest(&state, &tracking_id, event, body, Source::TestEndpoint).await
}

/// The route while the test endpoint is off (production, unless `ENABLE_TEST_ENDPOINT=true`):
/// refused before anything else is looked at.
pub async fn disabled() -> ApiError {
    ApiError::TestEndpointDisabled
}
