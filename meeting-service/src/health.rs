//! gRPC health: SERVING while the database answers, NOT_SERVING while it does not.
//!
//! Both the whole server (`""`) and `calendly.meetings.v1.MeetingService` are reported, checked
//! every interval. Kubernetes readiness should probe the named service; liveness should probe
//! something that does not depend on the database, so an outage does not restart every pod.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::store::Store;

/// A pending reminder this long past its time means no dispatcher is keeping up.
const OVERDUE_AFTER: Duration = Duration::from_secs(300);

pub async fn watch_database(
    store: Store,
    reporter: HealthReporter,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut last = None;
    loop {
        let serving = store.ping().await;
        if serving {
            match store.overdue_reminders(OVERDUE_AFTER, chrono::Utc::now()).await {
                Ok(overdue) => metrics::gauge!("calendly_reminders_overdue").set(overdue as f64),
                Err(error) => tracing::warn!(%error, "counting overdue reminders failed"),
            }
        }
        if last != Some(serving) {
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if serving {
                tracing::info!("database reachable; health SERVING");
            } else {
                tracing::error!("database unreachable; health NOT_SERVING");
            }
            metrics::gauge!("calendly_database_up").set(if serving { 1.0 } else { 0.0 });
            for service in ["", proto::MEETING_SERVICE_NAME] {
                reporter.set_service_status(service, status).await;
            }
            last = Some(serving);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

pub async fn report_not_serving(reporter: &HealthReporter) {
    for service in ["", proto::MEETING_SERVICE_NAME] {
        reporter
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    }
}
