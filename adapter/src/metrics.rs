//! The adapter's Prometheus metrics: names, units and help text in one place.
//!
//! Labels take few values (event kinds, outcomes, rejection reasons, routes, standard methods,
//! status codes); never an e-mail, URI, tracking id, address or raw path.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

pub fn describe() {
    describe_gauge!(
        "calendly_meeting_service_serving",
        "1 while the meeting service's health stream says SERVING, else 0."
    );
    describe_counter!(
        "calendly_meeting_service_fast_failures_total",
        "Deliveries answered 503 at once, without calling the meeting service, because it was known to be down."
    );
    describe_counter!(
        "calendly_deliveries_total",
        "Deliveries the meeting service stored, by event kind and outcome (processed, duplicate, ignored, failed)."
    );
    describe_counter!(
        "calendly_http_rejections_total",
        "Requests answered with an error, by reason (size, content_type, timeout, ambiguous_header, signature, stale, malformed, rate_limited, route, unavailable, internal)."
    );
    describe_counter!(
        "calendly_stale_genuine_signatures_total",
        "Deliveries with a correct signature rejected only because their timestamp was outside the tolerance."
    );
    describe_histogram!(
        "calendly_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by route, method and status."
    );
    describe_gauge!(
        "calendly_rate_limiter_tracked_clients",
        "Client addresses the rate limiter currently keeps state for, by endpoint."
    );
    describe_gauge!(
        "calendly_build_info",
        "Always 1; the version label names the running build."
    );
}
