//! Leads are matched to invitees by e-mail, compared case-insensitively.

use super::meeting::MeetingStatus;

/// The form in which e-mails are stored and compared. Calendly keeps what the invitee typed.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Lead status set from the lead's latest meeting. A rescheduled meeting says nothing on its
/// own (its replacement carries the news), so it yields `None`.
pub fn lead_status_for(meeting: MeetingStatus) -> Option<&'static str> {
    match meeting {
        MeetingStatus::Scheduled => Some("meeting_scheduled"),
        MeetingStatus::Canceled => Some("meeting_canceled"),
        MeetingStatus::NoShow => Some("meeting_no_show"),
        MeetingStatus::Rescheduled => None,
    }
}

/// Status of a lead created for an unknown invitee, before its meeting is applied.
pub const NEW_LEAD_STATUS: &str = "new";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_match_whatever_their_case_and_padding() {
        assert_eq!(
            normalize_email("  Jordan.Ellis@Example.COM "),
            "jordan.ellis@example.com"
        );
    }
}
