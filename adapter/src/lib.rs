//! The adapter: Calendly's HTTP front door. It checks size, content type and signature, turns
//! Calendly's JSON (the real v2 shape or the seed's test shape) into protobuf, and hands each
//! event to the meeting service over gRPC, answering 2xx only once it is stored. It is stateless
//! apart from per-process rate-limit buckets and never touches the database.
//!
//! Layout, each module depending only on those listed before it: `json_keys` (one reading of
//! every body), `calendly` (payload types, JSON → protobuf), `signature`, `client_ip`, `config`,
//! `error` (every refusal, its status and code), `rate_limit`, `upstream` (fail-fast while the
//! meeting service is down), `meeting_client` (gRPC), `metrics`, `tracking` (tracking id
//! middleware, error rendering), `routes/` (the checks both webhook routes share, one file per
//! webhook and health endpoint, the OpenAPI-only types), `openapi` (the document and its
//! endpoint), `startup` (router, layers, serving).

pub mod calendly;
pub mod client_ip;
pub mod config;
pub mod error;
pub mod json_keys;
pub mod meeting_client;
pub mod metrics;
pub mod openapi;
pub mod rate_limit;
pub mod routes;
pub mod signature;
pub mod startup;
pub mod tracking;
pub mod upstream;

use std::{net::IpAddr, sync::Arc, time::Instant};

pub use config::Config;
pub use startup::run;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub meeting_client: meeting_client::MeetingClient,
    pub webhook_limiter: Arc<rate_limit::ClientLimiter>,
    pub test_limiter: rate_limit::TestLimiter,
    pub started: Instant,
}

impl AppState {
    /// Clients in `RATE_LIMIT_EXEMPT_CIDRS` are never throttled.
    pub fn is_exempt(&self, client: IpAddr) -> bool {
        self.config
            .rate_limit_exempt
            .iter()
            .any(|net| net.contains(&client))
    }

    /// Takes one request from `client`'s allowance in `limiter`: `None` for an exempt client,
    /// 429 (logged as a security event) when none is left.
    pub fn take_allowance(
        &self,
        limiter: &rate_limit::ClientLimiter,
        client: IpAddr,
    ) -> Result<Option<rate_limit::Allowance>, error::ApiError> {
        if self.is_exempt(client) {
            return Ok(None);
        }
        limiter.check(client).map(Some).map_err(|throttled| {
            tracing::warn!(%client, security = true, "request throttled");
            error::ApiError::RateLimited(throttled)
        })
    }
}

/// Timestamps in answers: RFC 3339, UTC, milliseconds, as the seed shows them.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
