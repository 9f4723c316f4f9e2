//! How invitee events change a meeting.
//!
//! Calendly delivers at least once and in no promised order, so a meeting is not stepped by each
//! event as it arrives: [`derive`] computes it from every event of its invitee, in one total
//! order (Calendly's time, then the kind, then the inbox key). Any arrival order therefore gives
//! the same record. Along that order, facts follow the newest event (an event without a field,
//! such as a legacy payload without times, leaves it as it was), a cancellation is final, reschedule
//! links are kept from whichever half brought them, and a no-show mark follows the newest mark or
//! unmark (an unmark wins a tie). The status is derived from those.

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

/// Where an event sits among its invitee's events: by Calendly's time; at one time by kind, in
/// the order booked, moved (seed), no-show marked, unmarked, canceled (so an unmark and a
/// cancellation win a tie); then by the inbox key, which differs for any two stored events.
pub fn order_key<'a>(event: &InviteeEvent, inbox_key: &'a str) -> (DateTime<Utc>, u8, &'a str) {
    let rank = match event.change {
        InviteeChange::Booked => 0,
        InviteeChange::Moved => 1,
        InviteeChange::NoShowMarked => 2,
        InviteeChange::NoShowCleared => 3,
        InviteeChange::Canceled(_) => 4,
    };
    (event.occurred_at, rank, inbox_key)
}

/// The meeting that every event of one invitee gives, each paired with its inbox key; `None`
/// when there are none.
pub fn derive(mut events: Vec<(InviteeEvent, String)>) -> Option<MeetingState> {
    events.sort_by(|(a, a_key), (b, b_key)| order_key(a, a_key).cmp(&order_key(b, b_key)));
    events
        .iter()
        .fold(None, |meeting, (event, _)| Some(apply(meeting, event)))
}

/// The meeting after `event`, from the meeting of the events before it in [`order_key`] order
/// (`None` when it is the first).
fn apply(current: Option<MeetingState>, event: &InviteeEvent) -> MeetingState {
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

    // Events come in order, so this one is the newest so far.
    meeting.last_event_at = meeting.last_event_at.max(event.occurred_at);
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

    /// The meeting `events` give, delivered in this order (the inbox keys follow it).
    fn replay(events: &[InviteeEvent]) -> MeetingState {
        let keyed = events
            .iter()
            .enumerate()
            .map(|(n, event)| (event.clone(), format!("key-{n}")))
            .collect();
        derive(keyed).expect("at least one event")
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
    fn a_field_follows_the_newest_event_that_has_it_whatever_the_order() {
        let mut booked = event(InviteeChange::Booked, 1);
        booked.facts.timezone = Some("Europe/Berlin".into());
        let mut marked = event(InviteeChange::NoShowMarked, 2);
        marked.facts.timezone = Some("America/New_York".into());
        let mut moved = event(InviteeChange::Moved, 3);
        moved.facts.timezone = None;
        let orders = [
            [booked.clone(), marked.clone(), moved.clone()],
            [moved.clone(), booked.clone(), marked.clone()],
            [marked, moved, booked],
        ];
        for order in orders {
            assert_eq!(replay(&order).timezone.as_deref(), Some("America/New_York"));
        }
    }

    #[test]
    fn at_one_time_the_later_kind_decides_in_any_order() {
        let mut booked = event(InviteeChange::Booked, 5);
        booked.facts.name = "Booked".into();
        let mut cleared = event(InviteeChange::NoShowCleared, 5);
        cleared.facts.name = "Cleared".into();
        let marked = event(InviteeChange::NoShowMarked, 5);
        for order in [
            [booked.clone(), marked.clone(), cleared.clone()],
            [cleared.clone(), marked.clone(), booked.clone()],
        ] {
            let meeting = replay(&order);
            assert_eq!(meeting.name, "Cleared");
            assert_eq!(
                meeting.status(),
                MeetingStatus::Scheduled,
                "the unmark wins the tie"
            );
        }
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
