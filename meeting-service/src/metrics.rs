//! The meeting service's Prometheus metrics: names, units and help text in one place.
//!
//! Labels take few values (event kinds, outcomes, gRPC method names, operations); never an
//! e-mail, URI, tracking id or address.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

pub fn describe() {
    describe_counter!(
        "calendly_ingested_events_total",
        "Events stored in the inbox, by event kind and outcome (processed, duplicate, ignored, failed)."
    );
    describe_histogram!(
        "calendly_ingest_batch_size",
        Unit::Count,
        "Events stored per ingest transaction (group commit)."
    );
    describe_histogram!(
        "calendly_ingest_batch_wait_seconds",
        Unit::Seconds,
        "Time an event waited in the ingest queue before its batch began."
    );
    describe_counter!(
        "calendly_db_fast_failures_total",
        "Operations answered UNAVAILABLE at once because the database was known to be down, by operation."
    );
    describe_counter!(
        "calendly_db_retries_total",
        "Database transactions retried after a transient error, by operation."
    );
    describe_histogram!(
        "calendly_grpc_request_duration_seconds",
        Unit::Seconds,
        "Time to answer a gRPC call, by method and result code."
    );
    describe_gauge!(
        "calendly_database_up",
        "1 while the database answers the health check, else 0."
    );
    describe_counter!(
        "calendly_reminders_claimed_total",
        "Reminders handed to dispatchers."
    );
    describe_counter!(
        "calendly_reminders_sent_total",
        "Reminders dispatchers reported sent."
    );
    describe_gauge!(
        "calendly_reminders_overdue",
        "Pending reminders more than five minutes past their time."
    );
    describe_gauge!(
        "calendly_change_streams_open",
        "WatchMeetingChanges streams open on this replica."
    );
    describe_counter!(
        "calendly_changes_sent_total",
        "Changes handed to change-stream consumers."
    );
    describe_counter!(
        "calendly_change_streams_ended_total",
        "Change streams ended, by reason (consumer_gone, stalled, out_of_range, stopping, database)."
    );
    describe_gauge!(
        "calendly_change_stream_lag_seconds",
        Unit::Seconds,
        "Largest lag of an open change stream: age of the oldest committed change it has yet to hand over."
    );
    describe_counter!(
        "calendly_reconcile_missed_events_total",
        "Events a reconcile run applied that changed a meeting: webhooks that had not arrived."
    );
    describe_gauge!(
        "calendly_reconcile_last_success_timestamp_seconds",
        Unit::Seconds,
        "Unix time the last successful reconcile run finished; 0 before the first."
    );
    describe_gauge!(
        "calendly_webhook_subscription_state",
        "1 for the webhook subscription state the last reconcile run saw (active, disabled, missing, unknown), else 0."
    );
    describe_gauge!(
        "calendly_build_info",
        "Always 1; the version label names the running build."
    );
}
