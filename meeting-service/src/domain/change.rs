//! Which change, if any, a meeting went through: the rule behind the change feed's rows.
//!
//! Only what a consumer can see counts. The time of the newest event applied moves with every
//! event, even one that tells nothing new (a late copy of facts already known), so it is left out:
//! such an event writes no change.

use proto::v1::ChangeKind;

use super::meeting::{MeetingState, MeetingStatus};

/// The kind of change from `before` (`None`: the meeting did not exist) to `after`, with
/// `lead_linked` when the meeting joined a lead; `None` when nothing a consumer sees changed.
/// One kind per change, the most telling first (see `ChangeKind` in the proto).
pub fn change_kind(
    before: Option<&MeetingState>,
    after: &MeetingState,
    lead_linked: bool,
) -> Option<ChangeKind> {
    let Some(before) = before else {
        return Some(ChangeKind::Created);
    };
    let (was, is) = (before.status(), after.status());
    let moved = before.start_time != after.start_time || before.end_time != after.end_time;
    let kind = match is {
        MeetingStatus::Canceled if was != is => ChangeKind::Canceled,
        MeetingStatus::Rescheduled if was != is => ChangeKind::Rescheduled,
        _ if moved => ChangeKind::Rescheduled,
        _ if !before.no_show && after.no_show => ChangeKind::NoShowMarked,
        _ if before.no_show && !after.no_show => ChangeKind::NoShowUnmarked,
        _ if !same_but_for_event_time(before, after) => ChangeKind::DetailsUpdated,
        _ if lead_linked => ChangeKind::LeadLinked,
        _ => return None,
    };
    Some(kind)
}

fn same_but_for_event_time(before: &MeetingState, after: &MeetingState) -> bool {
    let mut after = after.clone();
    after.last_event_at = before.last_event_at;
    // The time of a mark is not shown either; the mark itself is.
    after.no_show_changed_at = before.no_show_changed_at;
    *before == after
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::domain::meeting::CancellationRecord;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("valid time")
    }

    fn scheduled() -> MeetingState {
        MeetingState {
            invitee_uri: "inv".into(),
            scheduled_event_uri: "evt".into(),
            email: "a@example.com".into(),
            name: "A".into(),
            timezone: None,
            meeting_name: Some("Call".into()),
            start_time: Some(at(10_000)),
            end_time: Some(at(11_000)),
            cancellation: None,
            rescheduled: false,
            rescheduled_to: None,
            rescheduled_from: None,
            no_show: false,
            no_show_changed_at: None,
            last_event_at: at(1),
        }
    }

    fn with(change: impl FnOnce(&mut MeetingState)) -> MeetingState {
        let mut state = scheduled();
        state.last_event_at = at(2);
        change(&mut state);
        state
    }

    fn canceled(state: &mut MeetingState) {
        state.cancellation = Some(CancellationRecord {
            reason: None,
            canceled_by: None,
            canceler_type: None,
            canceled_at: at(2),
        });
    }

    /// A name, the state before and after, whether a lead was linked, and the kind expected.
    type Case = (
        &'static str,
        Option<MeetingState>,
        MeetingState,
        bool,
        Option<ChangeKind>,
    );

    #[test]
    fn each_change_gets_the_most_telling_kind() {
        let no_show = with(|s| {
            s.no_show = true;
            s.no_show_changed_at = Some(at(2));
        });
        let cases: Vec<Case> = vec![
            (
                "a new meeting",
                None,
                scheduled(),
                false,
                Some(ChangeKind::Created),
            ),
            (
                "a new meeting with its lead",
                None,
                scheduled(),
                true,
                Some(ChangeKind::Created),
            ),
            (
                "canceled",
                Some(scheduled()),
                with(canceled),
                false,
                Some(ChangeKind::Canceled),
            ),
            (
                "the old half of a reschedule",
                Some(scheduled()),
                with(|s| {
                    canceled(s);
                    s.rescheduled = true;
                }),
                false,
                Some(ChangeKind::Rescheduled),
            ),
            (
                "moved in place",
                Some(scheduled()),
                with(|s| s.start_time = Some(at(20_000))),
                false,
                Some(ChangeKind::Rescheduled),
            ),
            (
                "no-show marked",
                Some(scheduled()),
                no_show.clone(),
                false,
                Some(ChangeKind::NoShowMarked),
            ),
            (
                "no-show unmarked",
                Some(no_show),
                with(|s| s.no_show_changed_at = Some(at(3))),
                false,
                Some(ChangeKind::NoShowUnmarked),
            ),
            (
                "renamed",
                Some(scheduled()),
                with(|s| s.name = "B".into()),
                false,
                Some(ChangeKind::DetailsUpdated),
            ),
            (
                "renamed while joining a lead",
                Some(scheduled()),
                with(|s| s.name = "B".into()),
                true,
                Some(ChangeKind::DetailsUpdated),
            ),
            (
                "joined a lead",
                Some(scheduled()),
                with(|_| {}),
                true,
                Some(ChangeKind::LeadLinked),
            ),
            (
                "a late copy of known facts",
                Some(scheduled()),
                with(|_| {}),
                false,
                None,
            ),
            (
                "canceled again, already canceled",
                Some(with(canceled)),
                with(|s| {
                    canceled(s);
                    s.last_event_at = at(5);
                }),
                false,
                None,
            ),
        ];
        for (name, before, after, lead_linked, expected) in cases {
            assert_eq!(
                change_kind(before.as_ref(), &after, lead_linked),
                expected,
                "{name}"
            );
        }
    }
}
