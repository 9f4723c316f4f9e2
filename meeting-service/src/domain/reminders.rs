//! Which reminders a meeting should have, and the steps from the rows it has to those.
//!
//! A scheduled meeting with a known start gets one reminder per configured offset (default 24h,
//! 1h, 15min before the start), but only those still in the future when they would be created.
//! A reminder already sent is never touched; one that is no longer wanted is canceled, not
//! deleted, so the unique `(meeting_id, reminder_type)` row keeps its history.

use chrono::{DateTime, Duration, Utc};

use super::meeting::MeetingStatus;

/// A reminder kind: its label (the seed's `reminder_type`) and how long before the start it fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderOffset {
    pub label: String,
    pub before: Duration,
}

/// Parses `24h,1h,15min` (units: `d`, `h`, `min`/`m`, `s`). The label is the item as written.
pub fn parse_offsets(value: &str) -> Result<Vec<ReminderOffset>, String> {
    let mut offsets: Vec<ReminderOffset> = Vec::new();
    for item in value.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        let digits_end = item.find(|c: char| !c.is_ascii_digit()).unwrap_or(item.len());
        let (number, unit) = item.split_at(digits_end);
        let number: i64 = number
            .parse()
            .map_err(|_| format!("{item:?} does not start with a whole number"))?;
        let seconds_per_unit = match unit {
            "d" => 86_400,
            "h" => 3_600,
            "min" | "m" => 60,
            "s" => 1,
            _ => return Err(format!("{item:?} has unit {unit:?}; use d, h, min or s")),
        };
        if number == 0 {
            return Err(format!("{item:?} must be more than zero"));
        }
        if offsets.iter().any(|known| known.label == item) {
            return Err(format!("{item:?} is listed twice"));
        }
        offsets.push(ReminderOffset {
            label: item.to_owned(),
            before: Duration::seconds(number.saturating_mul(seconds_per_unit)),
        });
    }
    if offsets.is_empty() {
        return Err("at least one offset is needed, e.g. 24h,1h,15min".into());
    }
    Ok(offsets)
}

pub fn default_offsets() -> Vec<ReminderOffset> {
    parse_offsets("24h,1h,15min").unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReminderState {
    Pending,
    Claimed,
    Sent,
    Canceled,
}

impl ReminderState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Claimed => "claimed",
            Self::Sent => "sent",
            Self::Canceled => "canceled",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "pending" => Some(Self::Pending),
            "claimed" => Some(Self::Claimed),
            "sent" => Some(Self::Sent),
            "canceled" => Some(Self::Canceled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingReminder {
    pub id: i64,
    pub reminder_type: String,
    pub scheduled_time: DateTime<Utc>,
    pub state: ReminderState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReminderAction {
    Create {
        reminder_type: String,
        scheduled_time: DateTime<Utc>,
    },
    /// Back to pending at a new time (the meeting moved); drops any claim.
    Reschedule {
        id: i64,
        scheduled_time: DateTime<Utc>,
    },
    Cancel {
        id: i64,
    },
}

/// The steps that bring `existing` in line with a meeting in `status` starting at `start`.
pub fn reconcile(
    status: MeetingStatus,
    start: Option<DateTime<Utc>>,
    offsets: &[ReminderOffset],
    existing: &[ExistingReminder],
    now: DateTime<Utc>,
) -> Vec<ReminderAction> {
    let wanted = |label: &str| -> Option<DateTime<Utc>> {
        let start = start.filter(|_| status == MeetingStatus::Scheduled)?;
        let offset = offsets.iter().find(|offset| offset.label == label)?;
        Some(start - offset.before)
    };
    let mut actions = Vec::new();
    for row in existing {
        let live = matches!(row.state, ReminderState::Pending | ReminderState::Claimed);
        match wanted(&row.reminder_type) {
            // Due but not yet dispatched: keep it even though its time has passed.
            Some(time) if live && time == row.scheduled_time => {}
            Some(time) if time > now && row.state != ReminderState::Sent => {
                actions.push(ReminderAction::Reschedule {
                    id: row.id,
                    scheduled_time: time,
                });
            }
            _ if live => actions.push(ReminderAction::Cancel { id: row.id }),
            _ => {}
        }
    }
    for offset in offsets {
        if existing.iter().any(|row| row.reminder_type == offset.label) {
            continue;
        }
        if let Some(time) = wanted(&offset.label).filter(|time| *time > now) {
            actions.push(ReminderAction::Create {
                reminder_type: offset.label.clone(),
                scheduled_time: time,
            });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("valid time")
    }

    const HOUR: i64 = 3_600;

    #[test]
    fn the_default_offsets_are_the_seeds() {
        let labels: Vec<_> = default_offsets().into_iter().map(|o| o.label).collect();
        assert_eq!(labels, ["24h", "1h", "15min"]);
    }

    #[test]
    fn bad_offsets_are_rejected_with_the_item_named() {
        for bad in ["", "24", "1w", "h", "0h", "1h,1h", "-1h"] {
            assert!(parse_offsets(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            parse_offsets("2d, 30min").map(|o| o[1].before),
            Ok(Duration::minutes(30))
        );
    }

    #[test]
    fn a_new_meeting_gets_only_reminders_still_in_the_future() {
        let start = at(100 * HOUR);
        let now = start - Duration::hours(2);
        let actions = reconcile(
            MeetingStatus::Scheduled,
            Some(start),
            &default_offsets(),
            &[],
            now,
        );
        assert_eq!(
            actions,
            vec![
                ReminderAction::Create {
                    reminder_type: "1h".into(),
                    scheduled_time: start - Duration::hours(1)
                },
                ReminderAction::Create {
                    reminder_type: "15min".into(),
                    scheduled_time: start - Duration::minutes(15)
                },
            ]
        );
    }

    #[test]
    fn canceling_cancels_live_reminders_but_not_sent_ones() {
        let rows = [
            ExistingReminder {
                id: 1,
                reminder_type: "24h".into(),
                scheduled_time: at(0),
                state: ReminderState::Sent,
            },
            ExistingReminder {
                id: 2,
                reminder_type: "1h".into(),
                scheduled_time: at(HOUR),
                state: ReminderState::Claimed,
            },
            ExistingReminder {
                id: 3,
                reminder_type: "15min".into(),
                scheduled_time: at(2 * HOUR),
                state: ReminderState::Pending,
            },
        ];
        let actions = reconcile(
            MeetingStatus::Canceled,
            Some(at(3 * HOUR)),
            &default_offsets(),
            &rows,
            at(0),
        );
        assert_eq!(
            actions,
            vec![ReminderAction::Cancel { id: 2 }, ReminderAction::Cancel { id: 3 }]
        );
    }

    #[test]
    fn a_due_reminder_not_yet_sent_is_kept() {
        let start = at(10 * HOUR);
        let rows = [ExistingReminder {
            id: 7,
            reminder_type: "1h".into(),
            scheduled_time: start - Duration::hours(1),
            state: ReminderState::Pending,
        }];
        let offsets = parse_offsets("1h").expect("valid");
        assert!(reconcile(MeetingStatus::Scheduled, Some(start), &offsets, &rows, start).is_empty());
    }

    #[test]
    fn a_moved_meeting_moves_its_reminders_and_never_resends() {
        let offsets = parse_offsets("1h").expect("valid");
        let new_start = at(50 * HOUR);
        let pending = [ExistingReminder {
            id: 1,
            reminder_type: "1h".into(),
            scheduled_time: at(HOUR),
            state: ReminderState::Pending,
        }];
        assert_eq!(
            reconcile(
                MeetingStatus::Scheduled,
                Some(new_start),
                &offsets,
                &pending,
                at(0)
            ),
            vec![ReminderAction::Reschedule {
                id: 1,
                scheduled_time: new_start - Duration::hours(1)
            }]
        );
        let sent = [ExistingReminder {
            state: ReminderState::Sent,
            ..pending[0].clone()
        }];
        assert!(reconcile(MeetingStatus::Scheduled, Some(new_start), &offsets, &sent, at(0)).is_empty());
    }
}
