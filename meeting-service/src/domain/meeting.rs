//! How invitee events change a meeting.
//!
//! Calendly delivers at least once and in no promised order, so [`apply`] is written to converge:
//! the meeting's facts follow the newest event by Calendly's time, a cancellation is final for its
//! invitee URI, reschedule links are kept from whichever half brought them, and a no-show mark
//! follows the newest mark or unmark. The status is derived from those, never stored as a step.

use chrono::{DateTime, Utc};

use super::event::{InviteeChange, InviteeEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MeetingStatus {
    Scheduled,
    Canceled,
    Rescheduled,
    NoShow,
}

impl MeetingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Canceled => "canceled",
            Self::Rescheduled => "rescheduled",
            Self::NoShow => "no_show",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "scheduled" => Some(Self::Scheduled),
            "canceled" => Some(Self::Canceled),
            "rescheduled" => Some(Self::Rescheduled),
            "no_show" => Some(Self::NoShow),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancellationRecord {
    pub reason: Option<String>,
    pub canceled_by: Option<String>,
    pub canceler_type: Option<String>,
    pub canceled_at: DateTime<Utc>,
}

/// The part of a meeting row that events decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetingState {
    pub invitee_uri: String,
    pub scheduled_event_uri: String,
    pub email: String,
    pub name: String,
    pub timezone: Option<String>,
    pub meeting_name: Option<String>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub cancellation: Option<CancellationRecord>,
    /// Set by the old half of a reschedule.
    pub rescheduled: bool,
    pub rescheduled_to: Option<String>,
    pub rescheduled_from: Option<String>,
    pub no_show: bool,
    pub no_show_changed_at: Option<DateTime<Utc>>,
    /// Calendly time of the newest event applied.
    pub last_event_at: DateTime<Utc>,
}

impl MeetingState {
    pub fn status(&self) -> MeetingStatus {
        match (&self.cancellation, self.rescheduled, self.no_show) {
            (Some(_), true, _) => MeetingStatus::Rescheduled,
            (Some(_), false, _) => MeetingStatus::Canceled,
            (None, _, true) => MeetingStatus::NoShow,
            (None, _, false) => MeetingStatus::Scheduled,
        }
    }
}

/// The meeting after `event`, from the meeting before it (`None` when the invitee is new).
pub fn apply(current: Option<MeetingState>, event: &InviteeEvent) -> MeetingState {
    let facts = &event.facts;
    let mut meeting = match current {
        Some(meeting) => meeting,
        None => MeetingState {
            invitee_uri: facts.invitee_uri.clone(),
            scheduled_event_uri: facts.scheduled_event_uri.clone(),
            email: facts.email.clone(),
            name: facts.name.clone(),
            timezone: facts.timezone.clone(),
            meeting_name: facts.meeting_name.clone(),
            start_time: facts.start_time,
            end_time: facts.end_time,
            cancellation: None,
            rescheduled: false,
            rescheduled_to: None,
            rescheduled_from: None,
            no_show: false,
            no_show_changed_at: None,
            last_event_at: event.occurred_at,
        },
    };

    if event.occurred_at >= meeting.last_event_at {
        meeting.last_event_at = event.occurred_at;
        meeting.email = facts.email.clone();
        meeting.name = facts.name.clone();
        if !facts.scheduled_event_uri.is_empty() {
            meeting.scheduled_event_uri = facts.scheduled_event_uri.clone();
        }
        // A payload without the meeting (legacy shape) must not erase what another event told us.
        meeting.timezone = facts.timezone.clone().or(meeting.timezone);
        meeting.meeting_name = facts.meeting_name.clone().or(meeting.meeting_name);
        meeting.start_time = facts.start_time.or(meeting.start_time);
        meeting.end_time = facts.end_time.or(meeting.end_time);
    } else {
        // Older than what we have: it may only fill gaps.
        meeting.timezone = meeting.timezone.or_else(|| facts.timezone.clone());
        meeting.meeting_name = meeting.meeting_name.or_else(|| facts.meeting_name.clone());
        meeting.start_time = meeting.start_time.or(facts.start_time);
        meeting.end_time = meeting.end_time.or(facts.end_time);
    }
    if let Some(old) = &facts.old_invitee_uri {
        meeting.rescheduled_from = Some(old.clone());
    }

    match &event.change {
        InviteeChange::Booked | InviteeChange::Moved => {}
        InviteeChange::Canceled(cancel) => {
            let canceled_at = cancel.canceled_at.unwrap_or(event.occurred_at);
            let newer = meeting
                .cancellation
                .as_ref()
                .is_none_or(|known| canceled_at >= known.canceled_at);
            if newer {
                meeting.cancellation = Some(CancellationRecord {
                    reason: cancel.reason.clone(),
                    canceled_by: cancel.canceled_by.clone(),
                    canceler_type: cancel.canceler_type.clone(),
                    canceled_at,
                });
            }
            meeting.rescheduled |= cancel.rescheduled || cancel.new_invitee_uri.is_some();
            if let Some(new) = &cancel.new_invitee_uri {
                meeting.rescheduled_to = Some(new.clone());
            }
        }
        InviteeChange::NoShowMarked | InviteeChange::NoShowCleared => {
            let marked = event.change == InviteeChange::NoShowMarked;
            // At equal times the unmark wins, so both arrival orders agree.
            let newer = match meeting.no_show_changed_at {
                None => true,
                Some(known) => event.occurred_at > known || (event.occurred_at == known && !marked),
            };
            if newer {
                meeting.no_show = marked;
                meeting.no_show_changed_at = Some(event.occurred_at);
            }
        }
    }
    meeting
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{Cancellation, InviteeFacts};

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("valid time")
    }

    fn event(change: InviteeChange, occurred: i64) -> InviteeEvent {
        InviteeEvent {
            change,
            occurred_at: at(occurred),
            facts: InviteeFacts {
                invitee_uri: "inv".into(),
                email: "a@example.com".into(),
                name: "A".into(),
                timezone: None,
                scheduled_event_uri: "evt".into(),
                meeting_name: Some("Call".into()),
                start_time: Some(at(10_000)),
                end_time: Some(at(11_000)),
                old_invitee_uri: None,
            },
        }
    }

    fn replay(events: &[InviteeEvent]) -> MeetingState {
        events
            .iter()
            .fold(None, |meeting, event| Some(apply(meeting, event)))
            .expect("at least one event")
    }

    #[test]
    fn a_booking_is_scheduled() {
        assert_eq!(
            replay(&[event(InviteeChange::Booked, 1)]).status(),
            MeetingStatus::Scheduled
        );
    }

    #[test]
    fn a_cancel_before_its_create_still_ends_canceled() {
        let cancel = event(
            InviteeChange::Canceled(Cancellation {
                reason: Some("busy".into()),
                ..Default::default()
            }),
            2,
        );
        let create = event(InviteeChange::Booked, 1);
        let in_order = replay(&[create.clone(), cancel.clone()]);
        let reversed = replay(&[cancel, create]);
        assert_eq!(in_order, reversed);
        assert_eq!(in_order.status(), MeetingStatus::Canceled);
        assert_eq!(
            in_order.cancellation.and_then(|c| c.reason).as_deref(),
            Some("busy")
        );
    }

    #[test]
    fn the_old_half_of_a_reschedule_links_forward() {
        let cancel = event(
            InviteeChange::Canceled(Cancellation {
                rescheduled: true,
                new_invitee_uri: Some("inv-new".into()),
                ..Default::default()
            }),
            2,
        );
        let meeting = replay(&[event(InviteeChange::Booked, 1), cancel]);
        assert_eq!(meeting.status(), MeetingStatus::Rescheduled);
        assert_eq!(meeting.rescheduled_to.as_deref(), Some("inv-new"));
    }

    #[test]
    fn no_show_follows_the_newest_mark_in_any_order() {
        let booked = event(InviteeChange::Booked, 1);
        let marked = event(InviteeChange::NoShowMarked, 20);
        let cleared = event(InviteeChange::NoShowCleared, 30);
        let in_order = replay(&[booked.clone(), marked.clone(), cleared.clone()]);
        assert_eq!(in_order.status(), MeetingStatus::Scheduled);
        assert_eq!(
            replay(&[cleared.clone(), marked.clone(), booked.clone()]),
            in_order
        );
        assert_eq!(replay(&[marked, booked]).status(), MeetingStatus::NoShow);
    }

    #[test]
    fn an_older_event_does_not_overwrite_newer_times() {
        let mut moved = event(InviteeChange::Moved, 5);
        moved.facts.start_time = Some(at(20_000));
        let old = event(InviteeChange::Booked, 1);
        assert_eq!(replay(&[moved.clone(), old.clone()]).start_time, Some(at(20_000)));
        assert_eq!(replay(&[old, moved]).start_time, Some(at(20_000)));
    }

    #[test]
    fn a_legacy_payload_without_times_keeps_known_times() {
        let mut legacy = event(InviteeChange::NoShowMarked, 9);
        legacy.facts.start_time = None;
        legacy.facts.end_time = None;
        let meeting = replay(&[event(InviteeChange::Booked, 1), legacy]);
        assert_eq!(meeting.start_time, Some(at(10_000)));
    }
}
