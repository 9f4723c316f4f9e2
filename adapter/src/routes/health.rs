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
    reconcile: ReconcileSummary,
}

/// The last `calendly reconcile` run, as the meeting service recorded it.
#[derive(Serialize, utoipa::ToSchema, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileSummary {
    /// The webhook subscription's state as the last run saw it (active, disabled, missing,
    /// unknown); never_run before the first; unavailable when the meeting service did not say.
    subscription_state: String,
    last_run_at: Option<String>,
    last_run_age_seconds: Option<u64>,
    last_run_succeeded: Option<bool>,
    /// Events the last run applied whose webhooks had not arrived.
    last_run_events_missed: Option<u64>,
    last_success_at: Option<String>,
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
    let (upstream, sync) = tokio::join!(
        state.meeting_client.health(&tracking_id.0),
        state.meeting_client.sync_status(&tracking_id.0)
    );
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
        reconcile: ReconcileSummary::of(sync.ok().as_ref(), std::time::SystemTime::now()),
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

impl ReconcileSummary {
    /// From the meeting service's answer (`None`: it gave none), ages as of `now`.
    pub fn of(status: Option<&proto::v1::SyncStatus>, now: std::time::SystemTime) -> Self {
        let time = |t: &prost_types::Timestamp| {
            chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or_default())
        };
        let rfc3339 = |t: Option<&prost_types::Timestamp>| {
            t.and_then(time)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        };
        let Some(status) = status else {
            return Self::without("unavailable");
        };
        let Some(last) = &status.last_run else {
            return Self::without("never_run");
        };
        let now = chrono::DateTime::<chrono::Utc>::from(now);
        let finished = last.finished_at.as_ref().and_then(time);
        Self {
            subscription_state: last.subscription_state().label().to_owned(),
            last_run_at: rfc3339(last.finished_at.as_ref()),
            last_run_age_seconds: finished.map(|t| u64::try_from((now - t).num_seconds()).unwrap_or(0)),
            last_run_succeeded: Some(last.succeeded),
            last_run_events_missed: Some(last.events_missed),
            last_success_at: rfc3339(status.last_success.as_ref().and_then(|s| s.finished_at.as_ref())),
        }
    }

    fn without(state: &str) -> Self {
        Self {
            subscription_state: state.to_owned(),
            last_run_at: None,
            last_run_age_seconds: None,
            last_run_succeeded: None,
            last_run_events_missed: None,
            last_success_at: None,
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use proto::v1::{SubscriptionState, SyncRun, SyncStatus};

    use super::*;

    fn at(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    #[test]
    fn the_reconcile_summary_says_what_the_last_run_saw_and_how_long_ago() {
        let now = UNIX_EPOCH + Duration::from_secs(1_900_000_600);
        assert_eq!(ReconcileSummary::of(None, now).subscription_state, "unavailable");
        let never = ReconcileSummary::of(Some(&SyncStatus::default()), now);
        assert_eq!(
            (never.subscription_state.as_str(), never.last_run_at),
            ("never_run", None)
        );

        let success = SyncRun {
            finished_at: at(1_900_000_000),
            subscription_state: SubscriptionState::Active as i32,
            succeeded: true,
            ..Default::default()
        };
        let failed = SyncRun {
            finished_at: at(1_900_000_300),
            subscription_state: SubscriptionState::Disabled as i32,
            events_missed: 4,
            ..Default::default()
        };
        let summary = ReconcileSummary::of(
            Some(&SyncStatus {
                last_run: Some(failed),
                last_success: Some(success),
            }),
            now,
        );
        assert_eq!(
            summary,
            ReconcileSummary {
                subscription_state: "disabled".into(),
                last_run_at: Some("2030-03-17T17:51:40Z".into()),
                last_run_age_seconds: Some(300),
                last_run_succeeded: Some(false),
                last_run_events_missed: Some(4),
                last_success_at: Some("2030-03-17T17:46:40Z".into()),
            }
        );
        // A clock behind the record's never makes an age negative.
        let early = ReconcileSummary::of(
            Some(&SyncStatus {
                last_run: Some(SyncRun {
                    finished_at: at(1_900_000_900),
                    ..Default::default()
                }),
                last_success: None,
            }),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_600),
        );
        assert_eq!(early.last_run_age_seconds, Some(0));
    }
}
