//! Rows and store results → protobuf messages, and the opaque page tokens.

use proto::v1::{
    DueReminder, IngestCalendlyEventResponse, Lead, ListMeetingsResponse, ListWebhookEventsResponse, Meeting,
    Outcome, SubscriptionState, SyncRun, WebhookEvent,
};

pub use crate::entity::message::{meeting_message, reminder_message};
use crate::{
    domain::event::to_timestamp,
    entity::{lead, sync_run, webhook_event},
    error::ServiceError,
    feed::encode_cursor,
    store::{
        Ingested,
        reads::{InboxPage, MeetingPage, MeetingView},
        reminders::ClaimedReminder,
        sync::SyncStatus,
    },
};

pub fn ingest_response(ingested: Ingested) -> IngestCalendlyEventResponse {
    IngestCalendlyEventResponse {
        outcome: ingested.outcome as i32,
        duplicate: ingested.outcome == Outcome::Duplicate,
        processed: ingested.processed,
        lead_updated: ingested.lead_updated,
        errors: ingested.errors,
        webhook_event_id: ingested.webhook_event_id,
        meeting_id: ingested.meeting_id,
        reminders_scheduled: ingested.reminders_scheduled,
        changed: ingested.changed,
    }
}

pub fn meeting_view(view: &MeetingView) -> Meeting {
    meeting_message(&view.meeting, &view.reminders)
}

/// A page of meetings; its token carries `change_cursor` on to the next page, so that every page
/// of one listing answers the cursor read before the first.
pub fn meetings_page(page: &MeetingPage, change_cursor: i64) -> ListMeetingsResponse {
    ListMeetingsResponse {
        meetings: page.meetings.iter().map(meeting_view).collect(),
        next_page_token: page
            .next_after_id
            .map(|after_id| encode_meetings_page_token(after_id, change_cursor))
            .unwrap_or_default(),
        change_cursor: encode_cursor(change_cursor),
    }
}

pub fn due_reminder(claimed: &ClaimedReminder, claim_token: &str) -> DueReminder {
    DueReminder {
        reminder: Some(reminder_message(&claimed.reminder)),
        meeting: Some(meeting_message(&claimed.meeting, &[])),
        claim_token: claim_token.to_owned(),
        claim_expires_at: claimed.reminder.claim_expires_at.map(to_timestamp),
    }
}

pub fn lead_message(row: &lead::Model) -> Lead {
    Lead {
        id: row.id,
        email: row.email.clone(),
        name: row.name.clone(),
        status: row.status.clone(),
        created_at: Some(to_timestamp(row.created_at)),
        updated_at: Some(to_timestamp(row.updated_at)),
    }
}

pub fn webhook_event_message(row: &webhook_event::Model) -> WebhookEvent {
    WebhookEvent {
        id: row.id,
        tracking_id: row.tracking_id.clone(),
        event_name: row.event_type.clone(),
        dedupe_key: row.dedupe_key.clone(),
        outcome: Outcome::from_label(&row.outcome) as i32,
        error: row.error.clone(),
        attempts: row.attempts,
        received_at: Some(to_timestamp(row.received_at)),
        processed_at: row.processed_at.map(to_timestamp),
    }
}

pub fn inbox_page(page: &InboxPage) -> ListWebhookEventsResponse {
    ListWebhookEventsResponse {
        events: page.events.iter().map(webhook_event_message).collect(),
        next_page_token: page.next_after_id.map(encode_page_token).unwrap_or_default(),
    }
}

pub fn sync_run_message(row: &sync_run::Model) -> SyncRun {
    SyncRun {
        id: row.id,
        started_at: Some(to_timestamp(row.started_at)),
        finished_at: Some(to_timestamp(row.finished_at)),
        subscription_state: SubscriptionState::from_label(&row.subscription_state) as i32,
        subscription_uri: row.subscription_uri.clone().unwrap_or_default(),
        retry_started_at: row.retry_started_at.map(to_timestamp),
        events_sent: u64::try_from(row.events_sent).unwrap_or_default(),
        events_missed: u64::try_from(row.events_missed).unwrap_or_default(),
        failures: u64::try_from(row.failures).unwrap_or_default(),
        succeeded: row.succeeded,
        error: row.error.clone().unwrap_or_default(),
    }
}

pub fn sync_status_message(status: &SyncStatus) -> proto::v1::SyncStatus {
    proto::v1::SyncStatus {
        last_run: status.last_run.as_ref().map(sync_run_message),
        last_success: status.last_success.as_ref().map(sync_run_message),
    }
}

/// Page tokens are opaque to callers; today they carry the last id seen.
pub fn encode_page_token(after_id: i64) -> String {
    format!("v1.{after_id}")
}

/// A meetings page token: the last id seen and the listing's change cursor.
pub fn encode_meetings_page_token(after_id: i64, change_cursor: i64) -> String {
    format!("v2.{after_id}.{change_cursor}")
}

/// A meetings page token's last id and change cursor; tokens of the older form (`v1.`) carry no
/// cursor, and the page reads the current one.
pub fn decode_meetings_page_token(token: &str) -> Result<(Option<i64>, Option<i64>), ServiceError> {
    if let Some((after, cursor)) = token.strip_prefix("v2.").and_then(|rest| rest.split_once('.')) {
        return match (after.parse::<i64>(), cursor.parse::<i64>()) {
            (Ok(after), Ok(cursor)) if cursor >= 0 => Ok((Some(after), Some(cursor))),
            _ => Err(ServiceError::invalid(
                "page_token",
                "not a token this service issued",
            )),
        };
    }
    Ok((decode_page_token(token)?, None))
}

pub fn decode_page_token(token: &str) -> Result<Option<i64>, ServiceError> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .strip_prefix("v1.")
        .and_then(|id| id.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| ServiceError::invalid("page_token", "not a token this service issued"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_foreign_ones_are_rejected() {
        assert_eq!(decode_page_token(&encode_page_token(42)).ok(), Some(Some(42)));
        assert!(decode_page_token("42").is_err());
        assert!(matches!(decode_page_token(""), Ok(None)));
    }

    #[test]
    fn meetings_page_tokens_carry_the_listings_cursor() {
        let token = encode_meetings_page_token(42, 7);
        assert_eq!(decode_meetings_page_token(&token).ok(), Some((Some(42), Some(7))));
        assert_eq!(decode_meetings_page_token("v1.42").ok(), Some((Some(42), None)));
        assert_eq!(decode_meetings_page_token("").ok(), Some((None, None)));
        for foreign in ["v2.42", "v2.42.x", "v2.x.7", "v2.42.-1", "42"] {
            assert!(decode_meetings_page_token(foreign).is_err(), "{foreign}");
        }
    }
}
