//! What one ingest batch writes, decided in memory from what it read: pure, no I/O, no clock.
//!
//! The batch's applicable events are applied one after another, in arrival order, to the state
//! the transaction read (locked meetings and their stored histories, their reminders, the leads
//! involved and each lead's latest other meeting). Each event's answer is therefore the one it
//! would have had alone, delivered in that order; the writes are only the final rows, plus one
//! change-feed row for each event that changed what a consumer sees of its meeting.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use proto::v1::ChangeKind;

use crate::{
    domain::{
        change::change_kind,
        event::InviteeEvent,
        lead::{NEW_LEAD_STATUS, lead_status_for, normalize_email},
        meeting::{MeetingState, MeetingStatus, derive},
        reminders::{ExistingReminder, ReminderAction, ReminderOffset, ReminderState, reconcile},
    },
    entity::{lead, meeting, meeting_reminder},
};

/// An applicable event new to the inbox (or being replayed), with its inbox key.
#[derive(Debug, Clone)]
pub struct BatchEvent {
    pub event: InviteeEvent,
    pub key: String,
    pub cause: Cause,
}

/// What a change row says caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// The inbox row of the event; `None` for a lead link by `UpsertLead`.
    pub webhook_event_id: Option<i64>,
    /// The event's kind as a Calendly event name, or the RPC's name.
    pub name: &'static str,
    pub tracking_id: String,
}

/// The latest meeting of a lead that counts for its status (not rescheduled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestMeeting {
    pub last_event_at: DateTime<Utc>,
    pub invitee_uri: String,
    pub status: MeetingStatus,
}

impl LatestMeeting {
    fn later_than(&self, other: &Self) -> bool {
        (self.last_event_at, &self.invitee_uri) > (other.last_event_at, &other.invitee_uri)
    }
}

/// What the transaction read before deciding.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The batch's meetings that exist, by invitee URI (locked).
    pub meetings: HashMap<String, meeting::Model>,
    /// Every applied event of each invitee already in the inbox, the batch's own excluded.
    pub histories: HashMap<String, Vec<(InviteeEvent, String)>>,
    /// The reminders of the existing meetings, by meeting id (locked).
    pub reminders: HashMap<i64, Vec<meeting_reminder::Model>>,
    /// The leads involved: those of the meetings, and those with the invitees' e-mails (locked).
    pub leads: Vec<lead::Model>,
    /// Per lead id: its latest counting meeting outside the batch, if any.
    pub latest_other: HashMap<i64, LatestMeeting>,
}

/// A lead that exists, or one this batch creates (for an unknown invitee, when configured).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeadRef {
    Existing(i64),
    New(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLead {
    pub email: String,
    pub name: Option<String>,
}

/// A meeting row to insert (`stored_id` none) or to rewrite.
#[derive(Debug, Clone, PartialEq)]
pub struct MeetingWrite {
    pub stored_id: Option<i64>,
    pub lead: Option<LeadRef>,
    pub state: MeetingState,
    pub created_at: DateTime<Utc>,
}

/// A reminder row to insert (`id` none) or to rewrite, of the meeting with `invitee_uri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderWrite {
    pub invitee_uri: String,
    pub row: meeting_reminder::Model,
    pub is_new: bool,
}

/// A change-feed row to write: the meeting as batch event `event` left it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedChange {
    pub event: usize,
    pub kind: ChangeKind,
    pub lead: Option<LeadRef>,
    pub state: MeetingState,
    pub created_at: DateTime<Utc>,
}

/// What one event did, as its caller is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEffect {
    pub invitee_uri: String,
    pub lead_updated: bool,
    pub reminders_scheduled: u32,
    /// Whether it wrote a change-feed row.
    pub changed: bool,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub new_leads: Vec<NewLead>,
    /// Changed or new meetings, in invitee URI order.
    pub meetings: BTreeMap<String, MeetingWrite>,
    pub reminders: Vec<ReminderWrite>,
    /// Leads whose status changed: the lead, its new status.
    pub lead_statuses: BTreeMap<LeadRef, String>,
    /// One per batch event, in its order.
    pub effects: Vec<EventEffect>,
    /// In batch event order.
    pub changes: Vec<PlannedChange>,
}

pub struct Rules<'a> {
    pub reminder_offsets: &'a [ReminderOffset],
    pub create_leads_for_unknown_invitees: bool,
    pub now: DateTime<Utc>,
}

/// A meeting as the batch goes.
struct Working {
    stored: Option<meeting::Model>,
    history: Vec<(InviteeEvent, String)>,
    state: Option<MeetingState>,
    lead: Option<LeadRef>,
    /// Current reminder rows; new ones have negative ids until inserted.
    reminders: Vec<meeting_reminder::Model>,
    changed_reminders: Vec<i64>,
}

struct LeadStatus {
    status: String,
    latest_other: Option<LatestMeeting>,
}

pub fn plan(snapshot: Snapshot, events: &[BatchEvent], rules: &Rules) -> Plan {
    let Snapshot {
        mut meetings,
        mut histories,
        mut reminders,
        leads,
        mut latest_other,
    } = snapshot;
    let leads_by_email: HashMap<String, i64> = leads.iter().map(|l| (l.email.clone(), l.id)).collect();
    let mut lead_statuses: BTreeMap<LeadRef, LeadStatus> = leads
        .iter()
        .map(|l| {
            let status = LeadStatus {
                status: l.status.clone(),
                latest_other: latest_other.remove(&l.id),
            };
            (LeadRef::Existing(l.id), status)
        })
        .collect();
    let initial_statuses: BTreeMap<LeadRef, String> = lead_statuses
        .iter()
        .map(|(lead, status)| (lead.clone(), status.status.clone()))
        .collect();
    let mut working: BTreeMap<String, Working> = BTreeMap::new();
    let mut new_leads: Vec<NewLead> = Vec::new();
    let mut next_reminder_id = -1;
    let mut effects = Vec::with_capacity(events.len());
    let mut changes = Vec::new();

    for (index, batch_event) in events.iter().enumerate() {
        let uri = batch_event.event.facts.invitee_uri.clone();
        let meeting = working.entry(uri.clone()).or_insert_with(|| {
            let stored = meetings.remove(&uri);
            let rows = stored
                .as_ref()
                .and_then(|m| reminders.remove(&m.id))
                .unwrap_or_default();
            Working {
                lead: stored.as_ref().and_then(|m| m.lead_id).map(LeadRef::Existing),
                state: stored.as_ref().map(crate::store::state_of),
                history: histories.remove(&uri).unwrap_or_default(),
                stored,
                reminders: rows,
                changed_reminders: Vec::new(),
            }
        });
        meeting
            .history
            .push((batch_event.event.clone(), batch_event.key.clone()));
        let after =
            derive(meeting.history.clone()).unwrap_or_else(|| unreachable!("the history holds this event"));

        let lead_before = meeting.lead.clone();
        if meeting.lead.is_none() {
            let email = normalize_email(&after.email);
            meeting.lead = match leads_by_email.get(&email) {
                Some(id) => Some(LeadRef::Existing(*id)),
                None if !email.is_empty() && rules.create_leads_for_unknown_invitees => {
                    if !new_leads.iter().any(|l| l.email == email) {
                        new_leads.push(NewLead {
                            email: email.clone(),
                            name: Some(after.name.clone()).filter(|n| !n.is_empty()),
                        });
                    }
                    let lead = LeadRef::New(email);
                    lead_statuses.entry(lead.clone()).or_insert(LeadStatus {
                        status: NEW_LEAD_STATUS.to_owned(),
                        latest_other: None,
                    });
                    Some(lead)
                }
                None => None,
            };
        }

        let existing: Vec<ExistingReminder> = meeting
            .reminders
            .iter()
            .map(|row| ExistingReminder {
                id: row.id,
                reminder_type: row.reminder_type.clone(),
                scheduled_time: row.scheduled_time,
                state: ReminderState::parse(&row.state).unwrap_or(ReminderState::Canceled),
            })
            .collect();
        let mut reminders_scheduled = 0;
        let actions = reconcile(
            after.status(),
            after.start_time,
            rules.reminder_offsets,
            &existing,
            rules.now,
        );
        for action in actions {
            match action {
                ReminderAction::Create {
                    reminder_type,
                    scheduled_time,
                } => {
                    meeting.reminders.push(new_reminder(
                        next_reminder_id,
                        reminder_type,
                        scheduled_time,
                        rules.now,
                    ));
                    next_reminder_id -= 1;
                    reminders_scheduled += 1;
                }
                ReminderAction::Reschedule { id, scheduled_time } => {
                    update_reminder(
                        meeting,
                        id,
                        ReminderState::Pending,
                        Some(scheduled_time),
                        rules.now,
                    );
                    reminders_scheduled += 1;
                }
                ReminderAction::Cancel { id } => {
                    update_reminder(meeting, id, ReminderState::Canceled, None, rules.now);
                }
            }
        }
        let lead_linked = lead_before.is_none() && meeting.lead.is_some();
        let kind = change_kind(meeting.state.as_ref(), &after, lead_linked);
        if let Some(kind) = kind {
            changes.push(PlannedChange {
                event: index,
                kind,
                lead: meeting.lead.clone(),
                state: after.clone(),
                created_at: meeting.stored.as_ref().map_or(rules.now, |m| m.created_at),
            });
        }
        meeting.state = Some(after);

        let lead_status_changed = match meeting.lead.clone() {
            Some(lead) => refresh_status(&lead, &working, &mut lead_statuses),
            None => false,
        };
        effects.push(EventEffect {
            invitee_uri: uri,
            lead_updated: lead_status_changed || lead_linked,
            reminders_scheduled,
            changed: kind.is_some(),
        });
    }

    let mut plan = Plan {
        new_leads,
        effects,
        changes,
        ..Plan::default()
    };
    for (uri, meeting) in working {
        let Some(state) = meeting.state else { continue };
        let unchanged = meeting.stored.as_ref().is_some_and(|stored| {
            crate::store::state_of(stored) == state && stored.lead_id.map(LeadRef::Existing) == meeting.lead
        });
        if !unchanged {
            plan.meetings.insert(
                uri.clone(),
                MeetingWrite {
                    stored_id: meeting.stored.as_ref().map(|m| m.id),
                    lead: meeting.lead.clone(),
                    created_at: meeting.stored.as_ref().map_or(rules.now, |m| m.created_at),
                    state,
                },
            );
        }
        for row in meeting.reminders {
            if row.id < 0 || meeting.changed_reminders.contains(&row.id) {
                plan.reminders.push(ReminderWrite {
                    invitee_uri: uri.clone(),
                    is_new: row.id < 0,
                    row,
                });
            }
        }
    }
    for (lead, status) in lead_statuses {
        if initial_statuses.get(&lead) != Some(&status.status) {
            plan.lead_statuses.insert(lead, status.status);
        }
    }
    plan
}

/// Sets `lead`'s status from its latest counting meeting, in the batch or outside it; true when
/// it changed. No counting meeting leaves the status as it is.
fn refresh_status(
    lead: &LeadRef,
    working: &BTreeMap<String, Working>,
    statuses: &mut BTreeMap<LeadRef, LeadStatus>,
) -> bool {
    let Some(current) = statuses.get_mut(lead) else {
        return false;
    };
    let mut latest = current.latest_other.clone();
    for (uri, meeting) in working {
        let Some(state) = meeting
            .state
            .as_ref()
            .filter(|_| meeting.lead.as_ref() == Some(lead))
        else {
            continue;
        };
        if state.status() == MeetingStatus::Rescheduled {
            continue;
        }
        let candidate = LatestMeeting {
            last_event_at: state.last_event_at,
            invitee_uri: uri.clone(),
            status: state.status(),
        };
        if latest.as_ref().is_none_or(|known| candidate.later_than(known)) {
            latest = Some(candidate);
        }
    }
    let Some(status) = latest.and_then(|m| lead_status_for(m.status)) else {
        return false;
    };
    if current.status == status {
        return false;
    }
    current.status = status.to_owned();
    true
}

fn new_reminder(
    id: i64,
    reminder_type: String,
    scheduled_time: DateTime<Utc>,
    now: DateTime<Utc>,
) -> meeting_reminder::Model {
    meeting_reminder::Model {
        id,
        meeting_id: 0,
        reminder_type,
        scheduled_time: crate::store::db_time(scheduled_time),
        sent: false,
        state: ReminderState::Pending.as_str().to_owned(),
        claimed_by: None,
        claim_token: None,
        claim_expires_at: None,
        sent_at: None,
        attempts: 0,
        created_at: now,
        updated_at: now,
    }
}

/// A reminder moved or canceled: back to `state`, its claim dropped.
fn update_reminder(
    meeting: &mut Working,
    id: i64,
    state: ReminderState,
    scheduled_time: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) {
    let Some(row) = meeting.reminders.iter_mut().find(|row| row.id == id) else {
        return;
    };
    row.state = state.as_str().to_owned();
    row.claimed_by = None;
    row.claim_token = None;
    row.claim_expires_at = None;
    if let Some(time) = scheduled_time {
        row.scheduled_time = crate::store::db_time(time);
    }
    row.updated_at = now;
    if id > 0 && !meeting.changed_reminders.contains(&id) {
        meeting.changed_reminders.push(id);
    }
}
