//! Rows in their protobuf form: for the API's answers, and for the change feed, which keeps each
//! change's meeting as the message it will be sent as.

use proto::v1::{Meeting, Reminder};

use super::{meeting, meeting_reminder};
use crate::domain::event::to_timestamp;

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
