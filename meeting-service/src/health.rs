//! gRPC health: SERVING while the database answers, NOT_SERVING while it does not.
//!
//! Both the whole server (`""`) and `calendly.meetings.v1.MeetingService` are reported. The
//! database is probed every interval (`HEALTH_CHECK_INTERVAL_SECS`, default 0.25 s: an interval
//! plus the probe's timeout is how long a lost database can go unnoticed, and it must stay under a
//! second), with a short timeout so a database that stopped answering counts as down at once;
//! while it is down, at least four times a second, so recovery shows within a quarter of a second. An operation that loses its
//! connection has the probe run at once ([`crate::store::DatabaseState::suspect`]) rather than at
//! the next interval. Kubernetes readiness should probe the named service; liveness should probe
//! something that does not depend on the database, so an outage does not restart every pod.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::store::Store;

/// A pending reminder this long past its time means no dispatcher is keeping up.
const OVERDUE_AFTER: Duration = Duration::from_secs(300);
/// A database that takes longer than this to answer `SELECT 1` is not serving.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How often overdue reminders are counted (a gauge, not a probe).
const OVERDUE_COUNT_INTERVAL: Duration = Duration::from_secs(15);
/// How often a database that is down is probed for its recovery.
const RECOVERY_PROBE_INTERVAL: Duration = Duration::from_millis(250);

pub async fn watch_database(
    store: Store,
    reporter: HealthReporter,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut last = None;
    let mut last_overdue_count = None;
    loop {
        let serving = tokio::time::timeout(PROBE_TIMEOUT, store.ping())
            .await
            .unwrap_or(false);
        store.database().set_up(serving);
        if serving
            && last_overdue_count
                .is_none_or(|at: tokio::time::Instant| at.elapsed() >= OVERDUE_COUNT_INTERVAL)
        {
            last_overdue_count = Some(tokio::time::Instant::now());
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
        let wait = if serving {
            interval
        } else {
            interval.min(RECOVERY_PROBE_INTERVAL)
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = store.database().wait_for_suspicion() => {}
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
