//! Per-client-IP request allowances (GCRA, via governor).
//!
//! `limit` requests per `window` is a bucket of `limit` tokens with one token coming back every
//! `window / limit`: bursts up to the limit, then a steady rate. That differs from the seed's
//! fixed window at the edges, never in the long-run rate. State is per process: N adapter replicas
//! allow N times the quota.
//!
//! Two forms. On `/webhook/calendly` only traffic that turns out not to be a verified Calendly
//! delivery counts, which no layer in front of the handler can know yet: the handler calls
//! [`ClientLimiter::check`] itself on that path (governor's keyed limiter). On `/test` every request
//! counts, so the limit is a tower layer ([`test_endpoint_layer`], tower_governor) with the same
//! quota arithmetic, the same client address rule and the same answers.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::ConnectInfo,
    http::{HeaderName, Request},
    response::{IntoResponse, Response},
};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};
use ipnet::IpNet;
use tower_governor::{
    GovernorError, GovernorLayer,
    governor::{GovernorConfig, GovernorConfigBuilder},
    key_extractor::KeyExtractor,
};

use crate::{
    client_ip::client_ip,
    config::RateLimit,
    error::{ApiError, Throttled},
};

type Limiter = RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock, StateInformationMiddleware>;

pub struct ClientLimiter {
    limiter: Limiter,
    clock: DefaultClock,
    limit: u32,
}

/// What the client has left, for the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    pub limit: u32,
    pub remaining: u32,
}

impl Allowance {
    /// `RateLimit-Limit` and `RateLimit-Remaining`, as express-rate-limit's standard headers.
    pub fn write_headers(&self, headers: &mut axum::http::HeaderMap) {
        headers.insert("ratelimit-limit", self.limit.into());
        headers.insert("ratelimit-remaining", self.remaining.into());
    }
}

/// `limit` per `window`: the bucket's size, and the time one token takes to come back.
fn quota_of(rate: RateLimit) -> (NonZeroU32, Duration) {
    let limit = NonZeroU32::new(rate.limit).unwrap_or(NonZeroU32::MIN);
    (limit, (rate.window / limit.get()).max(Duration::from_nanos(1)))
}

impl ClientLimiter {
    pub fn new(rate: RateLimit) -> Self {
        let (limit, period) = quota_of(rate);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(limit))
            .allow_burst(limit);
        let clock = DefaultClock::default();
        let limiter: Limiter = DefaultKeyedRateLimiter::dashmap_with_clock(quota, clock.clone())
            .with_middleware::<StateInformationMiddleware>();
        Self {
            limiter,
            clock,
            limit: limit.get(),
        }
    }

    /// Takes one token from `client`'s bucket.
    pub fn check(&self, client: IpAddr) -> Result<Allowance, Throttled> {
        match self.limiter.check_key(&client) {
            Ok(snapshot) => Ok(Allowance {
                limit: self.limit,
                remaining: snapshot.remaining_burst_capacity(),
            }),
            Err(not_until) => Err(Throttled {
                limit: self.limit,
                retry_after: not_until.wait_time_from(self.clock.now()),
            }),
        }
    }

    /// Forgets clients whose buckets are full again, so memory follows recent clients only.
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Clients currently tracked.
    pub fn tracked_clients(&self) -> usize {
        self.limiter.len()
    }
}

/// The client address of a request, as [`client_ip`] gives it (forwarding headers believed only
/// from trusted proxies), for tower_governor. It also names the client in the request's span.
#[derive(Debug, Clone)]
pub struct ClientKey {
    trusted_proxies: Arc<Vec<IpNet>>,
}

impl ClientKey {
    pub fn of<T>(&self, request: &Request<T>) -> Option<IpAddr> {
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>()?.0;
        let client = client_ip(peer, request.headers(), &self.trusted_proxies);
        tracing::Span::current().record("client", tracing::field::display(client));
        Some(client)
    }
}

impl KeyExtractor for ClientKey {
    type Key = IpAddr;

    fn extract<T>(&self, request: &Request<T>) -> Result<IpAddr, GovernorError> {
        self.of(request).ok_or(GovernorError::UnableToExtractKey)
    }
}

/// The test endpoint's limiter: tower_governor's configuration, shared by its layer and the
/// pruning task, and the bucket's size for the answers.
#[derive(Clone)]
pub struct TestLimiter {
    pub config: Arc<GovernorConfig<ClientKey, StateInformationMiddleware>>,
    pub limit: u32,
    key: ClientKey,
}

impl TestLimiter {
    /// The client the request comes from, by the same rule the limit keys on.
    pub fn client<T>(&self, request: &Request<T>) -> Option<IpAddr> {
        self.key.of(request)
    }

    pub fn new(rate: RateLimit, trusted_proxies: Vec<IpNet>) -> Self {
        let (limit, period) = quota_of(rate);
        let key = ClientKey {
            trusted_proxies: Arc::new(trusted_proxies),
        };
        let mut builder = GovernorConfigBuilder::default().key_extractor(key.clone());
        builder.period(period).burst_size(limit.get());
        let config = builder
            .use_headers()
            .finish()
            .unwrap_or_else(|| unreachable!("the period and burst are above zero"));
        Self {
            config: Arc::new(config),
            limit: limit.get(),
            key,
        }
    }

    /// Forgets clients whose buckets are full again.
    pub fn prune(&self) {
        self.config.limiter().retain_recent();
        self.config.limiter().shrink_to_fit();
    }

    pub fn tracked_clients(&self) -> usize {
        self.config.limiter().len()
    }

    /// The limit as a layer: a request over it is answered 429 `RATE_LIMITED` with `Retry-After`
    /// and `RateLimit-*`, like the webhook route's, and logged as a security event.
    pub fn layer(&self) -> GovernorLayer<ClientKey, StateInformationMiddleware, axum::body::Body> {
        let limit = self.limit;
        GovernorLayer::new(self.config.clone()).error_handler(move |error| throttled(error, limit))
    }
}

fn throttled(error: GovernorError, limit: u32) -> Response {
    match error {
        GovernorError::TooManyRequests { wait_time, .. } => {
            tracing::warn!(security = true, "request throttled");
            // tower_governor rounds the wait down to whole seconds; one more is never too early.
            ApiError::RateLimited(Throttled {
                limit,
                retry_after: Duration::from_secs(wait_time + 1),
            })
            .into_response()
        }
        GovernorError::UnableToExtractKey | GovernorError::Other { .. } => {
            tracing::error!(%error, "the rate limiter could not place the request");
            ApiError::Internal.into_response()
        }
    }
}

/// tower_governor names its allowance headers `x-ratelimit-*`; this service answers with the
/// `RateLimit-*` names express-rate-limit used, as the seed's clients expect.
pub async fn rename_allowance_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (from, to) in [
        ("x-ratelimit-limit", "ratelimit-limit"),
        ("x-ratelimit-remaining", "ratelimit-remaining"),
    ] {
        if let Some(value) = headers.remove(from) {
            headers.insert(HeaderName::from_static(to), value);
        }
    }
    headers.remove("x-ratelimit-after");
    headers.remove("x-ratelimit-whitelisted");
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_plus_one_request_is_throttled_with_a_retry_time() {
        let limiter = ClientLimiter::new(RateLimit {
            limit: 3,
            window: Duration::from_secs(300),
        });
        let client: IpAddr = "203.0.113.1".parse().expect("ip");
        let remaining: Vec<_> = (0..3)
            .map(|_| limiter.check(client).map(|a| a.remaining))
            .collect();
        assert_eq!(remaining, [Ok(2), Ok(1), Ok(0)]);
        let throttled = limiter.check(client).expect_err("fourth request throttled");
        assert!(
            throttled.retry_after > Duration::from_secs(90)
                && throttled.retry_after <= Duration::from_secs(100)
        );
        let other: IpAddr = "203.0.113.2".parse().expect("ip");
        assert!(limiter.check(other).is_ok(), "limits are per client");
    }
}
