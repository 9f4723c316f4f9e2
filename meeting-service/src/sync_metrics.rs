//! The reconcile record as metrics, from the database: every replica exports the same values
//! whichever process recorded the run, so alerts see them through any pod. (The missed-events
//! counter is the exception: the replica that records a run counts it, and alerts sum the pods.)

use std::time::Duration;

use proto::v1::SubscriptionState;
use tokio_util::sync::CancellationToken;

use crate::store::{Store, sync::SyncStatus};

/// How often the gauges are read again from the database.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// Sets the gauges from `status`: the last success's end (0 when there has been none) and the
/// subscription state the last run saw (1 for it, 0 for the others; all 0 before any run).
pub fn export(status: &SyncStatus) {
    let last_success = status
        .last_success
        .as_ref()
        .map_or(0.0, |run| run.finished_at.timestamp() as f64);
    metrics::gauge!("calendly_reconcile_last_success_timestamp_seconds").set(last_success);
    let seen = status
        .last_run
        .as_ref()
        .map(|run| SubscriptionState::from_label(&run.subscription_state));
    for state in SubscriptionState::ALL {
        metrics::gauge!("calendly_webhook_subscription_state", "state" => state.label())
            .set(if seen == Some(state) { 1.0 } else { 0.0 });
    }
}

/// Exports at once, then every [`INTERVAL`], until `stop`; the counter is registered at zero.
pub async fn run(store: Store, stop: CancellationToken) {
    metrics::counter!("calendly_reconcile_missed_events_total").increment(0);
    loop {
        match store.sync_status().await {
            Ok(status) => export(&status),
            Err(error) => tracing::debug!(%error, "reading the reconcile record failed; will try again"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(INTERVAL) => {}
        }
    }
}
