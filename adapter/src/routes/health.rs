//! `GET /webhook/calendly/health`: the adapter's status, the meeting service's gRPC health, and
//! a configuration summary that never includes a secret. 503 while the meeting service is not
//! serving, so a load balancer can route around this adapter.

use axum::{Extension, Json, extract::State, http::StatusCode};
use serde::Serialize;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    AppState, Config,
    config::{MAX_BODY_BYTES, RateLimit},
    tracking::TrackingId,
};

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// healthy, or degraded while the meeting service is not serving.
    #[schema(value_type = String)]
    status: &'static str,
    #[schema(value_type = String)]
    service: &'static str,
    #[schema(value_type = String)]
    version: &'static str,
    #[schema(value_type = String)]
    environment: &'static str,
    uptime_seconds: u64,
    timestamp: String,
    tracking_id: String,
    meeting_service: MeetingServiceHealth,
    configuration: Summary,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeetingServiceHealth {
    status: String,
    url: String,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    webhook_secret_configured: bool,
    signing_keys: usize,
    api_token_configured: bool,
    internal_api_token_configured: bool,
    signature_tolerance_seconds: u64,
    test_endpoint_enabled: bool,
    max_body_bytes: usize,
    webhook_rate_limit: RateLimitSummary,
    test_rate_limit: RateLimitSummary,
    trusted_proxies: usize,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSummary {
    limit: u32,
    window_seconds: u64,
}

#[utoipa::path(
    get,
    operation_id = "health",
    path = "/webhook/calendly/health",
    tag = "health",
    summary = "Service status and configuration summary (never a secret)",
    responses(
        (status = 200, description = "The adapter and the meeting service are serving", body = Health,
            headers(("x-tracking-id" = String, description = "This request's tracking id"))),
        (status = 503, description = "The meeting service is not serving", body = Health,
            headers(("x-tracking-id" = String, description = "This request's tracking id"))),
    )
)]
pub async fn report(
    State(state): State<AppState>,
    Extension(tracking_id): Extension<TrackingId>,
) -> (StatusCode, Json<Health>) {
    let upstream = state.meeting_client.health(&tracking_id.0).await;
    let serving = matches!(upstream, Ok(ServingStatus::Serving));
    let config = &state.config;
    let health = Health {
        status: if serving { "healthy" } else { "degraded" },
        service: "calendly-webhook-adapter",
        version: env!("CARGO_PKG_VERSION"),
        environment: config.environment.as_str(),
        uptime_seconds: state.started.elapsed().as_secs(),
        timestamp: crate::now_rfc3339(),
        tracking_id: tracking_id.0,
        meeting_service: MeetingServiceHealth {
            status: match upstream {
                Ok(status) => status.as_str_name().to_owned(),
                Err(unreachable) => unreachable.to_string(),
            },
            url: config.meeting_service_url.clone(),
        },
        configuration: Summary::of(config),
    };
    let status = if serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health))
}

impl Summary {
    /// What an operator may see of the configuration: whether things are set, never their values.
    pub fn of(config: &Config) -> Self {
        Self {
            webhook_secret_configured: !config.signing_keys.is_empty(),
            signing_keys: config.signing_keys.len(),
            api_token_configured: config.calendly_api_token.is_some(),
            internal_api_token_configured: config.internal_api_token.is_some(),
            signature_tolerance_seconds: config.signature_tolerance.as_secs(),
            test_endpoint_enabled: config.test_endpoint_enabled,
            max_body_bytes: MAX_BODY_BYTES,
            webhook_rate_limit: RateLimitSummary::of(config.webhook_rate_limit),
            test_rate_limit: RateLimitSummary::of(config.test_rate_limit),
            trusted_proxies: config.trusted_proxies.len(),
        }
    }
}

impl RateLimitSummary {
    fn of(rate: RateLimit) -> Self {
        Self {
            limit: rate.limit,
            window_seconds: rate.window.as_secs(),
        }
    }
}
