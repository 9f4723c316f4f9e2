//! Rows and store results → protobuf messages, and the opaque page tokens.

use proto::v1::{
    DueReminder, IngestCalendlyEventResponse, Lead, ListMeetingsResponse, ListWebhookEventsResponse, Meeting,
    Outcome, Reminder, WebhookEvent,
};

use crate::{
    domain::event::to_timestamp,
    entity::{lead, meeting, meeting_reminder, webhook_event},
    error::ServiceError,
    store::{
        Ingested,
        reads::{InboxPage, MeetingPage, MeetingView},
        reminders::ClaimedReminder,
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
    }
}

pub fn meeting_message(row: &meeting::Model, reminders: &[meeting_reminder::Model]) -> Meeting {
    Meeting {
        id: row.id,
        lead_id: row.lead_id,
        calendly_event_uri: row.calendly_event_id.clone(),
        calendly_invitee_uri: row.calendly_invitee_id.clone(),
        meeting_name: row.meeting_name.clone(),
        start_time: row.start_time.map(to_timestamp),
        end_time: row.end_time.map(to_timestamp),
        status: row.status.clone(),
        invitee_email: row.invitee_email.clone(),
        invitee_name: row.invitee_name.clone(),
        invitee_timezone: row.invitee_timezone.clone(),
        cancel_reason: row.cancel_reason.clone(),
        canceled_by: row.canceled_by.clone(),
        canceler_type: row.canceler_type.clone(),
        rescheduled_from_invitee_uri: row.rescheduled_from_invitee_id.clone(),
        rescheduled_to_invitee_uri: row.rescheduled_to_invitee_id.clone(),
        no_show: row.no_show,
        created_at: Some(to_timestamp(row.created_at)),
        updated_at: Some(to_timestamp(row.updated_at)),
        reminders: reminders.iter().map(reminder_message).collect(),
    }
}

pub fn meeting_view(view: &MeetingView) -> Meeting {
    meeting_message(&view.meeting, &view.reminders)
}

pub fn meetings_page(page: &MeetingPage) -> ListMeetingsResponse {
    ListMeetingsResponse {
        meetings: page.meetings.iter().map(meeting_view).collect(),
        next_page_token: page.next_after_id.map(encode_page_token).unwrap_or_default(),
    }
}

pub fn reminder_message(row: &meeting_reminder::Model) -> Reminder {
    Reminder {
        id: row.id,
        meeting_id: row.meeting_id,
        reminder_type: row.reminder_type.clone(),
        scheduled_time: Some(to_timestamp(row.scheduled_time)),
        state: row.state.clone(),
        sent: row.sent,
        attempts: row.attempts,
        sent_at: row.sent_at.map(to_timestamp),
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

/// Page tokens are opaque to callers; today they carry the last id seen.
pub fn encode_page_token(after_id: i64) -> String {
    format!("v1.{after_id}")
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
}
