//! Per-client-IP request allowances (GCRA, via governor).
//!
//! `limit` requests per `window` is a bucket of `limit` tokens with one token coming back every
//! `window / limit`: bursts up to the limit, then a steady rate. That differs from the seed's
//! fixed window at the edges, never in the long-run rate. The handlers call [`ClientLimiter::check`]
//! themselves, only for traffic that is not a verified Calendly delivery (see `routes::webhook`).
//! State is per process: N adapter replicas allow N times the quota.

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};

use crate::config::RateLimit;

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

/// Over the limit: when the next request would be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub limit: u32,
    pub retry_after: Duration,
}

impl ClientLimiter {
    pub fn new(rate: RateLimit) -> Self {
        let limit = NonZeroU32::new(rate.limit).unwrap_or(NonZeroU32::MIN);
        let period = (rate.window / limit.get()).max(Duration::from_nanos(1));
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
