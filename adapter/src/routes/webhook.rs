//! `POST /webhook/calendly`: real, signed Calendly deliveries.
//!
//! Order: one reading of the headers → size → content type → signature (over the raw bytes) →
//! parse → meeting service.
//! Once the signature verifies, the delivery is stored whatever its content (see below).
//! A delivery whose signature verifies is never rate limited: Calendly sends from few addresses
//! and a throttled delivery is a lost booking. Only traffic that fails before or at the signature
//! check counts against the client's allowance.

use std::net::SocketAddr;

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{ConnectInfo, State},
    http::HeaderMap,
};
use proto::v1::Source;

use super::{Accepted, CheckedBody, ingest};
use crate::{
    AppState, calendly,
    client_ip::client_ip,
    error::{ApiError, ErrorBody},
    signature,
    tracking::TrackingId,
};

pub const SIGNATURE_HEADER: &str = "calendly-webhook-signature";

#[utoipa::path(
    post,
    operation_id = "receive_webhook",
    path = "/webhook/calendly",
    tag = "webhooks",
    summary = "A signed Calendly delivery",
    description = "Verified with Calendly-Webhook-Signature over the raw body. A verified delivery is stored \
        whatever its content (one Calendly cannot parse is kept as failed) and never rate limited.",
    params(("calendly-webhook-signature" = Option<String>, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256>")),
    request_body(content = crate::routes::schema::CalendlyEnvelope, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored (or a duplicate of a stored event)", body = Accepted,
            headers(("x-tracking-id" = String))),
        (status = 400, description = "A header that must appear once appears more than once (AMBIGUOUS_HEADER)",
            body = ErrorBody, headers(("x-tracking-id" = String))),
        (status = 401, description = "Signature missing, malformed, stale or wrong", body = ErrorBody,
            headers(("x-tracking-id" = String))),
        crate::routes::schema::SharedRefusals,
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(tracking_id): Extension<TrackingId>,
    headers: HeaderMap,
    body: Result<CheckedBody, ApiError>,
) -> Result<Json<Accepted>, ApiError> {
    let client = client_ip(peer, &headers, &state.config.trusted_proxies);
    // One line per delivery at info ("delivery processed", or the rejection); this one is detail.
    tracing::Span::current().record("client", tracing::field::display(client));
    tracing::debug!("webhook delivery received");
    let verified = match body.and_then(|CheckedBody(body)| verify(&state, &headers, body)) {
        Ok(body) => body,
        Err(error) => {
            state.take_allowance(&state.webhook_limiter, client)?;
            log_signature_rejection(&error, client);
            return Err(error);
        }
    };
    // A genuine delivery is never refused for its content: Calendly would retry it for a day and
    // then disable the subscription. It is stored as failed, with the reason, instead.
    let event = calendly::parse_delivery(&verified).unwrap_or_else(|error| {
        tracing::warn!(%error, "a verified delivery could not be translated; storing it as failed");
        calendly::untranslatable(&verified, &error)
    });
    ingest(&state, &tracking_id, event, verified, Source::Webhook).await
}

/// The body, when a signing key is configured and the signature verifies over its raw bytes.
fn verify(state: &AppState, headers: &HeaderMap, body: Bytes) -> Result<Bytes, ApiError> {
    if state.config.signing_keys.is_empty() {
        return Err(ApiError::SecretNotConfigured);
    }
    let header = headers
        .get(SIGNATURE_HEADER)
        .map(|value| value.to_str().unwrap_or(""));
    signature::verify(
        header,
        &body,
        &state.config.signing_keys,
        chrono::Utc::now().timestamp(),
        state.config.signature_tolerance.as_secs(),
    )?;
    Ok(body)
}

fn log_signature_rejection(error: &ApiError, client: std::net::IpAddr) {
    match error {
        ApiError::Signature(signature::Error::TimestampOutOfTolerance {
            age_secs,
            tolerance_secs,
            signature_matches,
        }) => {
            // A genuine signature outside the window may be a Calendly retry that kept its first
            // timestamp; operators widen SIGNATURE_TOLERANCE_SECS if these show up (docs/configuration.md).
            tracing::warn!(
                %client,
                security = true,
                age_secs,
                tolerance_secs,
                signature_matches,
                "signature timestamp outside the tolerance window"
            );
            if *signature_matches {
                metrics::counter!("calendly_stale_genuine_signatures_total").increment(1);
            }
        }
        ApiError::Signature(reason) => {
            tracing::warn!(%client, security = true, %reason, "unauthorized webhook delivery");
        }
        _ => {}
    }
}
