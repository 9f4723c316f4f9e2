//! `--verify-database`: the database against what the run acknowledged.
//!
//! - every acknowledged delivery is in the inbox exactly once (one row per distinct event) and
//!   processed; a delivery never acknowledged is there at most once;
//! - every invitee with an acknowledged delivery has exactly one meeting, whose status is the one
//!   its deliveries imply (checked when all of them were acknowledged);
//! - a scheduled meeting has one live reminder per configured offset, other meetings none, and no
//!   (meeting, reminder type) pair appears twice anywhere;
//! - nothing is half-written: no processed invitee event without its meeting, no meeting without
//!   an inbox row;
//! - rejected requests (bad signature, oversized) left no row at all.

use std::collections::{HashMap, HashSet};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde::Serialize;

use super::workload::{Effect, Kind, Workload, implied_status};

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub acknowledged_events: usize,
    pub unacknowledged_events: usize,
    pub meetings_checked: usize,
    pub status_checked: usize,
    pub inbox_rows: usize,
    pub violations: Vec<String>,
    /// Violations past the first 20 are counted, not listed.
    pub more_violations: usize,
}

impl Report {
    fn violation(&mut self, message: String) {
        if self.violations.len() < 20 {
            self.violations.push(message);
        } else {
            self.more_violations += 1;
        }
    }

    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

async fn rows(db: &DatabaseConnection, sql: String) -> anyhow::Result<Vec<sea_orm::QueryResult>> {
    Ok(db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?)
}

async fn count(db: &DatabaseConnection, sql: &str) -> anyhow::Result<i64> {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql.to_owned()))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no row for {sql}"))?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

pub async fn verify(
    url: &str,
    workload: &Workload,
    acknowledged: &[bool],
    reminders_per_meeting: usize,
) -> anyhow::Result<Report> {
    let db = Database::connect(url).await?;
    let pattern = workload.uri_pattern();
    let mut report = Report::default();

    // This run's inbox rows, meetings and reminders.
    let mut inbox: HashMap<(String, String), (i64, Vec<String>)> = HashMap::new();
    for row in rows(
        &db,
        format!(
            "SELECT event_type, payload_uri, outcome, COUNT(*) FROM webhook_events \
             WHERE payload_uri LIKE '{pattern}' GROUP BY event_type, payload_uri, outcome"
        ),
    )
    .await?
    {
        let key = (
            row.try_get_by_index::<String>(0)?,
            row.try_get_by_index::<String>(1)?,
        );
        let outcome: String = row.try_get_by_index(2)?;
        let n: i64 = row.try_get_by_index(3)?;
        let entry = inbox.entry(key).or_default();
        entry.0 += n;
        entry.1.push(outcome);
        report.inbox_rows += n as usize;
    }
    let mut meetings: HashMap<String, (i64, String)> = HashMap::new();
    for row in rows(
        &db,
        format!(
            "SELECT id, calendly_invitee_id, status FROM meetings WHERE calendly_invitee_id LIKE '{pattern}'"
        ),
    )
    .await?
    {
        meetings.insert(
            row.try_get_by_index::<String>(1)?,
            (
                row.try_get_by_index::<i64>(0)?,
                row.try_get_by_index::<String>(2)?,
            ),
        );
    }
    let mut reminders: HashMap<i64, Vec<(String, String)>> = HashMap::new();
    for row in rows(
        &db,
        format!(
            "SELECT r.meeting_id, r.reminder_type, r.state FROM meeting_reminders r \
             JOIN meetings m ON m.id = r.meeting_id WHERE m.calendly_invitee_id LIKE '{pattern}'"
        ),
    )
    .await?
    {
        reminders
            .entry(row.try_get_by_index::<i64>(0)?)
            .or_default()
            .push((
                row.try_get_by_index::<String>(1)?,
                row.try_get_by_index::<String>(2)?,
            ));
    }

    // Events: exactly once when acknowledged, at most once otherwise.
    let mut valid_uris: HashSet<&str> = HashSet::new();
    let mut expected_events: HashSet<(String, String)> = HashSet::new();
    for (id, delivery) in workload.deliveries.iter().enumerate() {
        let Kind::Valid(_) = delivery.kind else {
            continue;
        };
        valid_uris.insert(&delivery.invitee_uri);
        let key = (delivery.event_type.to_owned(), delivery.invitee_uri.clone());
        let (rows, outcomes) = inbox.get(&key).cloned().unwrap_or_default();
        expected_events.insert(key);
        if acknowledged[id] {
            report.acknowledged_events += 1;
            if rows != 1 {
                report.violation(format!(
                    "acknowledged {} for {} has {rows} inbox rows",
                    delivery.event_type, delivery.invitee_uri
                ));
            } else if outcomes != ["processed"] {
                report.violation(format!(
                    "acknowledged {} for {} is {outcomes:?}, not processed",
                    delivery.event_type, delivery.invitee_uri
                ));
            }
        } else {
            report.unacknowledged_events += 1;
            if rows > 1 {
                report.violation(format!(
                    "unacknowledged {} for {} has {rows} inbox rows",
                    delivery.event_type, delivery.invitee_uri
                ));
            }
        }
    }
    for key in inbox.keys() {
        if !expected_events.contains(key) {
            report.violation(format!(
                "inbox row for {} {} that was never sent validly",
                key.0, key.1
            ));
        }
    }

    // Meetings: one per acknowledged invitee, with the implied status.
    for (uri, ids) in workload.by_invitee() {
        let acked: Vec<Effect> = ids
            .iter()
            .filter(|id| acknowledged[**id])
            .filter_map(|id| match workload.deliveries[*id].kind {
                Kind::Valid(effect) => Some(effect),
                _ => None,
            })
            .collect();
        let Some((meeting_id, status)) = meetings.get(uri) else {
            if !acked.is_empty() {
                report.violation(format!("acknowledged invitee {uri} has no meeting"));
            }
            continue;
        };
        report.meetings_checked += 1;
        if acked.len() == ids.len() {
            report.status_checked += 1;
            let expected = implied_status(&acked);
            if status != expected {
                report.violation(format!(
                    "meeting {uri} is {status}, its deliveries imply {expected}"
                ));
            }
        }
        let own = reminders.get(meeting_id).cloned().unwrap_or_default();
        let types: HashSet<&str> = own.iter().map(|(t, _)| t.as_str()).collect();
        if types.len() != own.len() {
            report.violation(format!("meeting {uri} has duplicated reminder types: {own:?}"));
        }
        let live = own
            .iter()
            .filter(|(_, state)| state == "pending" || state == "claimed")
            .count();
        let wanted = if status == "scheduled" {
            reminders_per_meeting
        } else {
            0
        };
        if live != wanted {
            report.violation(format!(
                "meeting {uri} ({status}) has {live} live reminders, expected {wanted}: {own:?}"
            ));
        }
    }
    for uri in meetings.keys() {
        if !valid_uris.contains(uri.as_str()) {
            report.violation(format!("meeting {uri} exists but was only ever sent rejected"));
        }
    }

    // Whole-database invariants.
    let duplicated_reminders = count(
        &db,
        "SELECT COUNT(*) FROM (SELECT meeting_id, reminder_type FROM meeting_reminders \
         GROUP BY meeting_id, reminder_type HAVING COUNT(*) > 1) d",
    )
    .await?;
    if duplicated_reminders > 0 {
        report.violation(format!(
            "{duplicated_reminders} (meeting, reminder type) pairs appear twice"
        ));
    }
    let orphan_events = count(
        &db,
        "SELECT COUNT(*) FROM webhook_events w WHERE w.outcome = 'processed' \
         AND w.event_type LIKE 'invitee%' AND w.payload_uri IS NOT NULL \
         AND NOT EXISTS (SELECT 1 FROM meetings m WHERE m.calendly_invitee_id = w.payload_uri)",
    )
    .await?;
    if orphan_events > 0 {
        report.violation(format!(
            "{orphan_events} processed invitee events have no meeting"
        ));
    }
    let orphan_meetings = count(
        &db,
        "SELECT COUNT(*) FROM meetings m LEFT JOIN \
         (SELECT DISTINCT payload_uri FROM webhook_events WHERE payload_uri IS NOT NULL) w \
         ON w.payload_uri = m.calendly_invitee_id WHERE w.payload_uri IS NULL",
    )
    .await?;
    if orphan_meetings > 0 {
        report.violation(format!("{orphan_meetings} meetings have no inbox row"));
    }
    db.close().await.ok();
    Ok(report)
}
