//! Failing fast while the meeting service is known to be down.
//!
//! Two signals say so. The meeting service's own health, followed with the gRPC health `Watch`
//! stream (pushed the moment it changes, and re-subscribed in the background when the stream
//! breaks): NOT_SERVING means its database is unreachable or it is shutting down. And a circuit
//! breaker: [`FAILURES_TO_OPEN`] consecutive transient failures of calls open it. While either
//! holds, deliveries are answered 503 at once instead of each waiting for its deadline. An open
//! breaker lets calls through again after [`OPEN_FOR`], or as soon as the health stream reports
//! SERVING; a failure of such a call opens it again.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use tokio_stream::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Consecutive transient failures that open the breaker.
pub const FAILURES_TO_OPEN: u32 = 3;
/// How long an open breaker refuses calls before letting one through again.
pub const OPEN_FOR: Duration = Duration::from_millis(500);
/// Pause before re-subscribing to a broken health stream.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(250);

const UNKNOWN: u8 = 0;
const SERVING: u8 = 1;
const NOT_SERVING: u8 = 2;

/// What the adapter knows of the meeting service; shared by every request.
#[derive(Clone, Default)]
pub struct Upstream(Arc<Shared>);

#[derive(Default)]
struct Shared {
    health: AtomicU8,
    consecutive_failures: AtomicU32,
    opened_at: Mutex<Option<Instant>>,
}

/// Why a call was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The meeting service reports NOT_SERVING.
    NotServing,
    /// Its recent calls failed transiently.
    BreakerOpen,
}

impl Upstream {
    /// Whether a call may go out now.
    pub fn admit(&self, now: Instant) -> Result<(), Refusal> {
        if self.0.health.load(Ordering::Acquire) == NOT_SERVING {
            return Err(Refusal::NotServing);
        }
        let opened_at = *self.0.opened_at.lock().unwrap_or_else(|e| e.into_inner());
        match opened_at {
            Some(at) if now.duration_since(at) < OPEN_FOR => Err(Refusal::BreakerOpen),
            _ => Ok(()),
        }
    }

    pub fn succeeded(&self) {
        self.0.consecutive_failures.store(0, Ordering::Release);
        *self.0.opened_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// A call failed in a way a later one may not (unreachable, timed out, database down).
    pub fn failed_transiently(&self, now: Instant) {
        let failures = self.0.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= FAILURES_TO_OPEN {
            let mut opened_at = self.0.opened_at.lock().unwrap_or_else(|e| e.into_inner());
            if opened_at.is_none_or(|at| now.duration_since(at) >= OPEN_FOR) {
                if opened_at.is_none() {
                    tracing::warn!(
                        failures,
                        "meeting service failing; answering 503 at once for a while"
                    );
                }
                *opened_at = Some(now);
            }
        }
    }

    /// What the health stream last said.
    pub fn reported(&self, status: ServingStatus) {
        let value = match status {
            ServingStatus::Serving => SERVING,
            ServingStatus::NotServing => NOT_SERVING,
            ServingStatus::Unknown | ServingStatus::ServiceUnknown => UNKNOWN,
        };
        let before = self.0.health.swap(value, Ordering::AcqRel);
        if value == SERVING && before != SERVING {
            // Back: let calls through at once rather than wait out the breaker.
            self.succeeded();
        }
        if value != before {
            metrics::gauge!("calendly_meeting_service_serving").set(f64::from(u8::from(value == SERVING)));
        }
    }

    /// The health stream broke: no word from the meeting service, which is neither a yes nor a no;
    /// the breaker decides from the calls themselves.
    fn lost_stream(&self) {
        self.0.health.store(UNKNOWN, Ordering::Release);
    }

    /// Follows the meeting service's health for `service` on `client` until the task is aborted.
    pub async fn follow(self, mut client: HealthClient<tonic::transport::Channel>, service: String) {
        loop {
            let request = HealthCheckRequest {
                service: service.clone(),
            };
            match client.watch(request).await {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    while let Some(message) = stream.next().await {
                        match message {
                            Ok(message) => self.reported(message.status()),
                            Err(_) => break,
                        }
                    }
                }
                Err(status) => tracing::debug!(code = ?status.code(), "health watch failed"),
            }
            self.lost_stream();
            tokio::time::sleep(RESUBSCRIBE_AFTER).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_consecutive_transient_failures_and_lets_a_call_through_later() {
        let upstream = Upstream::default();
        let start = Instant::now();
        for _ in 0..FAILURES_TO_OPEN - 1 {
            upstream.failed_transiently(start);
            assert_eq!(upstream.admit(start), Ok(()), "not yet open");
        }
        upstream.failed_transiently(start);
        assert_eq!(upstream.admit(start), Err(Refusal::BreakerOpen));
        assert_eq!(upstream.admit(start + OPEN_FOR / 2), Err(Refusal::BreakerOpen));
        assert_eq!(
            upstream.admit(start + OPEN_FOR),
            Ok(()),
            "a trial call after the pause"
        );
        upstream.failed_transiently(start + OPEN_FOR);
        assert_eq!(
            upstream.admit(start + OPEN_FOR),
            Err(Refusal::BreakerOpen),
            "a failed trial opens it again"
        );
        upstream.succeeded();
        assert_eq!(upstream.admit(start + OPEN_FOR), Ok(()));
    }

    #[test]
    fn a_success_between_failures_keeps_the_breaker_closed() {
        let upstream = Upstream::default();
        let now = Instant::now();
        for _ in 0..10 {
            upstream.failed_transiently(now);
            upstream.failed_transiently(now);
            upstream.succeeded();
        }
        assert_eq!(upstream.admit(now), Ok(()));
    }

    #[test]
    fn not_serving_refuses_and_serving_closes_an_open_breaker() {
        let upstream = Upstream::default();
        let now = Instant::now();
        upstream.reported(ServingStatus::NotServing);
        assert_eq!(upstream.admit(now), Err(Refusal::NotServing));
        for _ in 0..FAILURES_TO_OPEN {
            upstream.failed_transiently(now);
        }
        upstream.reported(ServingStatus::Serving);
        assert_eq!(
            upstream.admit(now),
            Ok(()),
            "back in service: calls go through at once"
        );
        upstream.lost_stream();
        assert_eq!(upstream.admit(now), Ok(()), "no word is not a refusal");
    }
}
