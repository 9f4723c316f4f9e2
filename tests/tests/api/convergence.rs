//! Property: whatever the order of delivery, with repeats anywhere, the stored record is the one
//! the documented rules (docs/events.md) give for the set of distinct events.
//!
//! Histories of bookings are generated with facts that differ from event to event (names, time
//! zones, meeting names, start times moved by seed reschedules), Calendly times that often tie,
//! every event kind in both body shapes (the real envelope, its legacy form without
//! `scheduled_event`, and the seed's `eventData`), events that are stored as failed or ignored,
//! meetings in the past and in the future, and reschedule chains. Each body is parsed by the
//! adapter's own parser and delivered:
//!
//! - one by one to the store, in a shuffled order with duplicates inserted anywhere; and
//! - all at once as concurrent `IngestCalendlyEvent` calls to the real gRPC service, several
//!   histories interleaved (the path a batching ingest must keep correct).
//!
//! The expected record comes from [`model`], a few lines written from the documented rules, not
//! from the production functions. Every case lives under its own URIs and e-mails, so the cases
//! of one test share its database. `PROPTEST_CASES` sets the number of cases (default 256 for the
//! sequential property, a quarter of it for the concurrent one).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, SubsecRound, Utc};
use meeting_service::{
    domain::reminders::default_offsets,
    entity::{lead, meeting, meeting_reminder, webhook_event},
    store::{self, IngestRequest, Store, StoreSettings, retry::RetryPolicy},
};
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use proto::v1::{IngestCalendlyEventRequest, Outcome, Source};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};
use serde_json::json;

use crate::helpers::{Backend, TestDatabase, spawn_app};

// --- What is generated ---------------------------------------------------------------------------

/// What an event does, in the order that decides ties at one Calendly time (docs/events.md, "How events
/// are applied"): a later kind wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Created,
    Moved,
    NoShowMarked,
    NoShowCleared,
    Canceled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Real,
    /// The real envelope without `scheduled_event` (only the scheduled event's URI).
    Legacy,
    Seed,
}

/// Start times relative to now, in hours: in the past; close enough that the 24h reminder is
/// already due; and well ahead. Every reminder time is hours away from now, so the few seconds a
/// case takes never change which reminders are still to come.
const START_HOURS: [i64; 4] = [-72, 12, 72, 240];
const TIMEZONES: [&str; 2] = ["Europe/Berlin", "America/New_York"];
const MEETING_NAMES: [&str; 2] = ["Intro call", "Demo"];
const NAMES: [&str; 3] = ["Pat Lee", "Patricia Lee", "P. Lee"];
const REASONS: [&str; 2] = ["busy", "found another time"];

#[derive(Debug, Clone)]
enum Body {
    Invitee(InviteeBody),
    /// An event that changes no meeting (routing form submission, or an unknown event family).
    Unrelated {
        routing_form: bool,
        n: usize,
    },
}

/// An invitee event of `invitee` (an index into its history's reschedule chain).
#[derive(Debug, Clone)]
struct InviteeBody {
    invitee: usize,
    kind: Kind,
    /// `invitee.no_show` instead of `invitee_no_show.created` (seed shape only).
    seed_alias: bool,
    shape: Shape,
    name: &'static str,
    /// 0: the e-mail as the lead has it, 1: upper case, 2: padded with spaces.
    email_variant: u8,
    email_missing: bool,
    timezone: Option<&'static str>,
    meeting_name: Option<&'static str>,
    start_hours: i64,
    reason: Option<&'static str>,
    /// Cancel: the old half of a reschedule to `invitee + 1`. Created: the new half of one
    /// from `invitee - 1`.
    reschedule_link: bool,
}

#[derive(Clone)]
struct Event {
    history: usize,
    minute: i64,
    body: Body,
}

/// One line per event, so a shrunk counterexample reads as a history.
impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "h{} m{} {}", self.history, self.minute, self.body.event_name())?;
        match &self.body {
            Body::Unrelated { n, .. } => write!(f, " #{n}"),
            Body::Invitee(i) => write!(
                f,
                " invitee {} {:?} name={:?} email={}{} tz={:?} meeting={:?} start={}h reason={:?}{}",
                i.invitee,
                i.shape,
                i.name,
                i.email_variant,
                if i.email_missing { " MISSING" } else { "" },
                i.timezone,
                i.meeting_name,
                i.start_hours,
                i.reason,
                if i.reschedule_link { " reschedule-link" } else { "" },
            ),
        }
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    has_lead: Vec<bool>,
    /// Distinct events, in the order they happened (before any shuffling).
    events: Vec<Event>,
    /// The order of delivery: indexes into `events`, each at least once.
    deliveries: Vec<usize>,
}

impl Kind {
    fn real_name(self) -> &'static str {
        match self {
            Kind::Created => "invitee.created",
            Kind::Moved => "invitee.rescheduled",
            Kind::NoShowMarked => "invitee_no_show.created",
            Kind::NoShowCleared => "invitee_no_show.deleted",
            Kind::Canceled => "invitee.canceled",
        }
    }
}

impl Body {
    fn event_name(&self) -> &'static str {
        match self {
            Body::Invitee(body) if body.kind == Kind::NoShowMarked && body.seed_alias => "invitee.no_show",
            Body::Invitee(body) => body.kind.real_name(),
            Body::Unrelated {
                routing_form: true, ..
            } => "routing_form_submission.created",
            Body::Unrelated { .. } => "event_type.updated",
        }
    }
}

/// One draft event: small numbers the shrinker can reduce; [`build`] makes it consistent.
type Draft = (u8, u8, u8, u8, u8, u8, u8, u8);

fn scenario() -> impl Strategy<Value = Scenario> {
    let history = (
        any::<bool>(),
        1usize..=3,
        proptest::collection::vec(any::<Draft>(), 0..6),
    );
    (proptest::collection::vec(history, 1..=3), any::<u64>(), 0usize..6)
        .prop_map(|(histories, seed, repeats)| build(&histories, seed, repeats))
}

fn build(histories: &[(bool, usize, Vec<Draft>)], seed: u64, repeats: usize) -> Scenario {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut events = Vec::new();
    for (h, (_, chain, drafts)) in histories.iter().enumerate() {
        let mut taken: BTreeSet<(usize, i64, &'static str)> = BTreeSet::new();
        let mut ranks: BTreeSet<(usize, i64, Kind)> = BTreeSet::new();
        let mut push = |events: &mut Vec<Event>, minute: i64, body: Body| {
            // Two distinct events of one invitee never share name and time (that would be one
            // event, a retry); nor kind and time (then no rule orders them).
            let mut minute = minute;
            if let Body::Invitee(invitee) = &body {
                let (who, kind, name) = (invitee.invitee, invitee.kind, body.event_name());
                while taken.contains(&(who, minute, name)) || ranks.contains(&(who, minute, kind)) {
                    minute += 1;
                }
                taken.insert((who, minute, name));
                ranks.insert((who, minute, kind));
            }
            events.push(Event {
                history: h,
                minute,
                body,
            });
        };
        let start_hours = START_HOURS[rng.random_range(0..START_HOURS.len())];
        for invitee in 0..*chain {
            // The booking, and the reschedule that replaces it by the next invitee: both halves
            // carry one time, as Calendly's do.
            let minute = (invitee as i64) * 3;
            let booked = invitee_body(&mut rng, invitee, Kind::Created, Shape::Real, start_hours);
            let booked = with_link(booked, invitee > 0);
            push(&mut events, minute, booked);
            if invitee + 1 < *chain {
                let cancel = invitee_body(&mut rng, invitee, Kind::Canceled, Shape::Real, start_hours);
                push(&mut events, minute + 3, with_link(cancel, true));
            }
        }
        for (n, draft) in drafts.iter().enumerate() {
            let (what, invitee, minute, shape, a, b, c, d) = *draft;
            let invitee = usize::from(invitee) % chain;
            let minute = i64::from(minute % 10);
            if what % 8 == 7 {
                push(
                    &mut events,
                    minute,
                    Body::Unrelated {
                        routing_form: a % 2 == 0,
                        n,
                    },
                );
                continue;
            }
            let kind = [
                Kind::Created,
                Kind::Moved,
                Kind::NoShowMarked,
                Kind::NoShowCleared,
                Kind::NoShowMarked,
                Kind::NoShowCleared,
                Kind::Canceled,
            ][usize::from(what % 7)];
            let shape = match (kind, shape % 3) {
                // The seed's reschedule has no real counterpart.
                (Kind::Moved, _) | (_, 0) => Shape::Seed,
                (_, 1) => Shape::Legacy,
                _ => Shape::Real,
            };
            let start = START_HOURS[usize::from(a) % START_HOURS.len()];
            let mut body = invitee_body(&mut rng, invitee, kind, shape, start);
            if let Body::Invitee(invitee) = &mut body {
                invitee.seed_alias = shape == Shape::Seed && b % 2 == 0;
                invitee.email_missing = c % 11 == 0;
                invitee.email_variant = d % 3;
            }
            push(&mut events, minute, body);
        }
    }
    let mut deliveries: Vec<usize> = (0..events.len()).collect();
    deliveries.shuffle(&mut rng);
    for _ in 0..repeats {
        let copy = deliveries[rng.random_range(0..deliveries.len())];
        let at = rng.random_range(0..=deliveries.len());
        deliveries.insert(at, copy);
    }
    Scenario {
        has_lead: histories.iter().map(|(lead, ..)| *lead).collect(),
        events,
        deliveries,
    }
}

fn invitee_body(rng: &mut StdRng, invitee: usize, kind: Kind, shape: Shape, start_hours: i64) -> Body {
    let pick = |rng: &mut StdRng, options: &[&'static str]| options[rng.random_range(0..options.len())];
    let maybe = |rng: &mut StdRng, options: &[&'static str]| {
        rng.random_bool(0.7)
            .then(|| options[rng.random_range(0..options.len())])
    };
    Body::Invitee(InviteeBody {
        invitee,
        kind,
        seed_alias: false,
        shape,
        name: pick(rng, &NAMES),
        email_variant: rng.random_range(0..3),
        email_missing: false,
        timezone: maybe(rng, &TIMEZONES),
        meeting_name: maybe(rng, &MEETING_NAMES),
        start_hours,
        reason: maybe(rng, &REASONS),
        reschedule_link: false,
    })
}

fn with_link(mut body: Body, link: bool) -> Body {
    if let Body::Invitee(invitee) = &mut body {
        invitee.reschedule_link = link;
    }
    body
}

impl Event {
    fn invitee(&self) -> &InviteeBody {
        match &self.body {
            Body::Invitee(invitee) => invitee,
            Body::Unrelated { .. } => unreachable!("only invitee events apply to meetings"),
        }
    }
}

// --- Rendering: URIs, e-mails, JSON ----------------------------------------------------------------

/// Where one generated case's events live: its URIs and e-mails carry the case's id.
struct Scope {
    id: String,
    /// The Calendly time of minute 0, and now (whole seconds, as the bodies carry them).
    base: DateTime<Utc>,
    now: DateTime<Utc>,
}

impl Scope {
    fn new(now: DateTime<Utc>) -> Self {
        let now = now.trunc_subsecs(0);
        Self {
            id: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            base: now - Duration::days(1),
            now,
        }
    }

    fn prefix(&self) -> String {
        format!("https://api.calendly.com/scheduled_events/c{}-", self.id)
    }

    fn event_uri(&self, history: usize, invitee: usize) -> String {
        format!("{}{history}-{invitee}", self.prefix())
    }

    fn invitee_uri(&self, history: usize, invitee: usize) -> String {
        format!(
            "{}/invitees/i{history}-{invitee}",
            self.event_uri(history, invitee)
        )
    }

    fn unrelated_uri(&self, history: usize, n: usize) -> String {
        format!("{}{history}-other/forms/{n}", self.prefix())
    }

    fn lead_email(&self, history: usize) -> String {
        format!("pat.{history}.{}@example.com", self.id)
    }

    fn time(&self, minute: i64) -> DateTime<Utc> {
        self.base + Duration::minutes(minute)
    }

    fn start(&self, hours: i64) -> DateTime<Utc> {
        self.now + Duration::hours(hours)
    }
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn email_as_sent(case: &Scope, history: usize, variant: u8) -> String {
    let email = case.lead_email(history);
    match variant {
        1 => email.to_uppercase(),
        2 => format!("  {email} "),
        _ => email,
    }
}

/// The body Calendly (or the seed's curl command) would send for `event`.
fn render(case: &Scope, event: &Event) -> Vec<u8> {
    let occurred = rfc3339(case.time(event.minute));
    let h = event.history;
    let body = match &event.body {
        Body::Unrelated { routing_form, n } => json!({
            "event": event.body.event_name(),
            "created_at": occurred,
            "created_by": "https://api.calendly.com/users/u",
            "payload": if *routing_form {
                json!({"uri": case.unrelated_uri(h, *n), "routing_form": "https://api.calendly.com/routing_forms/f"})
            } else {
                json!({"uri": case.unrelated_uri(h, *n), "name": "Intro call"})
            },
        }),
        Body::Invitee(InviteeBody {
            invitee,
            kind,
            shape,
            name,
            email_variant,
            email_missing,
            timezone,
            meeting_name,
            start_hours,
            reason,
            reschedule_link,
            ..
        }) => {
            let uri = case.invitee_uri(h, *invitee);
            let email = if *email_missing {
                String::new()
            } else {
                email_as_sent(case, h, *email_variant)
            };
            let start = case.start(*start_hours);
            let end = start + Duration::minutes(30);
            match shape {
                Shape::Seed => {
                    let mut scheduled = json!({
                        "uri": case.event_uri(h, *invitee),
                        "start_time": rfc3339(start),
                        "end_time": rfc3339(end),
                    });
                    if let Some(meeting_name) = meeting_name {
                        scheduled["name"] = json!(meeting_name);
                    }
                    json!({"eventData": {
                        "event": event.body.event_name(),
                        "time": occurred,
                        "payload": {
                            "event": scheduled,
                            "invitee": {"uri": uri, "email": email, "name": name, "created_at": occurred},
                        },
                    }})
                }
                Shape::Real | Shape::Legacy => {
                    let mut payload = json!({
                        "uri": uri,
                        "email": email,
                        "name": name,
                        "status": if *kind == Kind::Canceled { "canceled" } else { "active" },
                        "created_at": occurred,
                        "updated_at": occurred,
                        "rescheduled": *kind == Kind::Canceled && *reschedule_link,
                        "event": case.event_uri(h, *invitee),
                    });
                    if let Some(timezone) = timezone {
                        payload["timezone"] = json!(timezone);
                    }
                    if *shape == Shape::Real {
                        payload["scheduled_event"] = json!({
                            "uri": case.event_uri(h, *invitee),
                            "name": meeting_name,
                            "status": "active",
                            "start_time": rfc3339(start),
                            "end_time": rfc3339(end),
                        });
                    }
                    match kind {
                        Kind::Canceled => {
                            payload["cancellation"] = json!({
                                "canceled_by": name,
                                "reason": reason,
                                "canceler_type": "invitee",
                                "created_at": occurred,
                            });
                            if *reschedule_link {
                                payload["new_invitee"] = json!(case.invitee_uri(h, invitee + 1));
                            }
                        }
                        Kind::Created if *reschedule_link => {
                            payload["old_invitee"] = json!(case.invitee_uri(h, invitee - 1));
                        }
                        Kind::NoShowMarked => {
                            payload["no_show"] =
                                json!({"uri": format!("{uri}/no_show"), "created_at": occurred});
                        }
                        _ => {}
                    }
                    json!({
                        "event": event.body.event_name(),
                        "created_at": occurred,
                        "created_by": "https://api.calendly.com/users/u",
                        "payload": payload,
                    })
                }
            }
        }
    };
    serde_json::to_vec(&body).expect("JSON")
}

// --- The model: the documented rules, over the set of distinct events ---------------------------

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct MeetingRecord {
    invitee_uri: String,
    status: String,
    email: String,
    name: String,
    timezone: Option<String>,
    meeting_name: Option<String>,
    scheduled_event_uri: String,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    cancel_reason: Option<String>,
    rescheduled_from: Option<String>,
    rescheduled_to: Option<String>,
    no_show: bool,
    linked_to_lead: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    meetings: Vec<MeetingRecord>,
    /// (invitee URI, reminder type, time) of every reminder still to be sent.
    live_reminders: BTreeSet<(String, String, DateTime<Utc>)>,
    /// Lead e-mail → status.
    leads: BTreeMap<String, String>,
    /// Inbox: (event name, payload URI, minute) → outcome.
    inbox: BTreeMap<(String, String, i64), String>,
}

/// What docs/events.md says the record must be.
fn model(case: &Scope, scenario: &Scenario) -> Record {
    let mut inbox = BTreeMap::new();
    // Invitee URI → its applicable events, with their history.
    let mut applicable: BTreeMap<String, Vec<&Event>> = BTreeMap::new();
    for event in &scenario.events {
        let h = event.history;
        let (uri, outcome) = match &event.body {
            Body::Unrelated { n, .. } => (case.unrelated_uri(h, *n), "ignored"),
            Body::Invitee(invitee) => {
                let uri = case.invitee_uri(h, invitee.invitee);
                if invitee.email_missing {
                    (uri, "failed")
                } else {
                    applicable.entry(uri.clone()).or_default().push(event);
                    (uri, "processed")
                }
            }
        };
        inbox.insert(
            (event.body.event_name().to_owned(), uri, event.minute),
            outcome.to_owned(),
        );
    }

    let mut meetings = Vec::new();
    let mut live_reminders = BTreeSet::new();
    // Lead e-mail → (newest Calendly time, invitee URI, status) of its meetings that count.
    let mut latest: BTreeMap<String, (i64, String, &'static str)> = BTreeMap::new();
    for (uri, mut events) in applicable {
        // The newest event by Calendly time decides; at one time, the later kind.
        events.sort_by_key(|e| (e.minute, e.invitee().kind));
        let newest_with =
            |has: &dyn Fn(&InviteeBody) -> bool| events.iter().rev().map(|e| e.invitee()).find(|i| has(i));
        let newest = events.last().expect("at least one event");
        let h = newest.history;
        let timezone =
            newest_with(&|i| i.shape != Shape::Seed && i.timezone.is_some()).and_then(|i| i.timezone);
        let meeting_name = newest_with(&|i| i.shape != Shape::Legacy && i.meeting_name.is_some())
            .and_then(|i| i.meeting_name);
        let start = newest_with(&|i| i.shape != Shape::Legacy).map(|i| case.start(i.start_hours));
        let is_reschedule = |i: &InviteeBody| i.shape != Shape::Seed && i.reschedule_link;
        let cancels: Vec<&InviteeBody> = events
            .iter()
            .map(|e| e.invitee())
            .filter(|i| i.kind == Kind::Canceled)
            .collect();
        let rescheduled = cancels.iter().any(|i| is_reschedule(i));
        let rescheduled_to = newest_with(&|i| i.kind == Kind::Canceled && is_reschedule(i))
            .map(|i| case.invitee_uri(h, i.invitee + 1));
        let rescheduled_from = newest_with(&|i| i.kind == Kind::Created && is_reschedule(i))
            .map(|i| case.invitee_uri(h, i.invitee - 1));
        // The newest cancellation's details (its own time is the event's here); the seed's
        // shape carries none.
        let cancel_reason = cancels
            .last()
            .filter(|i| i.shape != Shape::Seed)
            .and_then(|i| i.reason);
        let no_show = newest_with(&|i| matches!(i.kind, Kind::NoShowMarked | Kind::NoShowCleared))
            .is_some_and(|i| i.kind == Kind::NoShowMarked);
        let status = match (cancels.is_empty(), rescheduled, no_show) {
            (false, true, _) => "rescheduled",
            (false, false, _) => "canceled",
            (true, _, true) => "no_show",
            (true, _, false) => "scheduled",
        };
        if status == "scheduled"
            && let Some(start) = start
        {
            for offset in default_offsets() {
                let at = start - offset.before;
                if at > case.now {
                    live_reminders.insert((uri.clone(), offset.label.clone(), at));
                }
            }
        }
        let newest_minute = newest.minute;
        if scenario.has_lead[h] && status != "rescheduled" {
            let entry = (newest_minute, uri.clone(), status);
            let slot = latest.entry(case.lead_email(h)).or_insert(entry.clone());
            if (entry.0, &entry.1) > (slot.0, &slot.1) {
                *slot = entry;
            }
        }
        let facts = newest.invitee();
        meetings.push(MeetingRecord {
            invitee_uri: uri.clone(),
            status: status.to_owned(),
            email: email_as_sent(case, h, facts.email_variant).trim().to_owned(),
            name: facts.name.to_owned(),
            timezone: timezone.map(str::to_owned),
            meeting_name: meeting_name.map(str::to_owned),
            scheduled_event_uri: case.event_uri(h, facts.invitee),
            start,
            end: start.map(|s| s + Duration::minutes(30)),
            cancel_reason: cancel_reason.map(str::to_owned),
            rescheduled_from,
            rescheduled_to,
            no_show,
            linked_to_lead: scenario.has_lead[h],
        });
    }
    let leads = (0..scenario.has_lead.len())
        .filter(|h| scenario.has_lead[*h])
        .map(|h| {
            let email = case.lead_email(h);
            let status = match latest.get(&email).map(|(_, _, status)| *status) {
                Some("scheduled") => "meeting_scheduled",
                Some("canceled") => "meeting_canceled",
                Some("no_show") => "meeting_no_show",
                _ => "new",
            };
            (email, status.to_owned())
        })
        .collect();
    meetings.sort();
    Record {
        meetings,
        live_reminders,
        leads,
        inbox,
    }
}

// --- What is stored ----------------------------------------------------------------------------

async fn stored(db: &DatabaseConnection, case: &Scope, scenario: &Scenario) -> Record {
    let prefix = case.prefix();
    let rows = meeting::Entity::find()
        .filter(meeting::Column::CalendlyInviteeId.starts_with(prefix.as_str()))
        .all(db)
        .await
        .expect("meetings");
    let ids: HashMap<i64, String> = rows
        .iter()
        .map(|m| (m.id, m.calendly_invitee_id.clone()))
        .collect();
    let reminders = meeting_reminder::Entity::find()
        .filter(meeting_reminder::Column::MeetingId.is_in(ids.keys().copied()))
        .all(db)
        .await
        .expect("reminders");
    let live_reminders = reminders
        .iter()
        .filter(|r| r.state == "pending" || r.state == "claimed")
        .map(|r| {
            (
                ids[&r.meeting_id].clone(),
                r.reminder_type.clone(),
                r.scheduled_time,
            )
        })
        .collect();
    let mut meetings: Vec<MeetingRecord> = rows
        .iter()
        .map(|m| MeetingRecord {
            invitee_uri: m.calendly_invitee_id.clone(),
            status: m.status.clone(),
            email: m.invitee_email.clone(),
            name: m.invitee_name.clone(),
            timezone: m.invitee_timezone.clone(),
            meeting_name: m.meeting_name.clone(),
            scheduled_event_uri: m.calendly_event_id.clone(),
            start: m.start_time,
            end: m.end_time,
            cancel_reason: m.cancel_reason.clone(),
            rescheduled_from: m.rescheduled_from_invitee_id.clone(),
            rescheduled_to: m.rescheduled_to_invitee_id.clone(),
            no_show: m.no_show,
            linked_to_lead: m.lead_id.is_some(),
        })
        .collect();
    meetings.sort();
    let mut leads = BTreeMap::new();
    for h in (0..scenario.has_lead.len()).filter(|h| scenario.has_lead[*h]) {
        let email = case.lead_email(h);
        let row = lead::Entity::find()
            .filter(lead::Column::Email.eq(email.as_str()))
            .one(db)
            .await
            .expect("lead query")
            .expect("the lead");
        leads.insert(email, row.status);
    }
    let minute_of = |time: DateTime<Utc>| (time - case.base).num_minutes();
    let mut inbox = BTreeMap::new();
    for row in webhook_event::Entity::find()
        .filter(webhook_event::Column::PayloadUri.starts_with(prefix.as_str()))
        .all(db)
        .await
        .expect("inbox")
    {
        let event = <proto::v1::CalendlyEvent as prost::Message>::decode(row.event_proto.as_slice())
            .expect("stored protobuf");
        let occurred = event
            .occurred_at
            .map(|t| DateTime::from_timestamp(t.seconds, 0).expect("time"))
            .expect("every generated body carries its time");
        let key = (
            row.event_type,
            row.payload_uri.unwrap_or_default(),
            minute_of(occurred),
        );
        assert!(
            inbox.insert(key.clone(), row.outcome).is_none(),
            "one event stored twice: {key:?}"
        );
    }
    Record {
        meetings,
        live_reminders,
        leads,
        inbox,
    }
}

async fn create_leads(db: &DatabaseConnection, case: &Scope, scenario: &Scenario) {
    for h in (0..scenario.has_lead.len()).filter(|h| scenario.has_lead[*h]) {
        lead::ActiveModel {
            email: Set(case.lead_email(h)),
            name: Set(None),
            status: Set("new".into()),
            created_at: Set(case.now),
            updated_at: Set(case.now),
            ..Default::default()
        }
        .insert(db)
        .await
        .expect("lead");
    }
}

/// The event's inbox identity: name, payload URI, Calendly time.
fn identity(case: &Scope, event: &Event) -> (String, String, i64) {
    let uri = match &event.body {
        Body::Unrelated { n, .. } => case.unrelated_uri(event.history, *n),
        Body::Invitee(invitee) => case.invitee_uri(event.history, invitee.invitee),
    };
    (event.body.event_name().to_owned(), uri, event.minute)
}

fn parsed(case: &Scope, event: &Event) -> (proto::v1::CalendlyEvent, Vec<u8>) {
    let body = render(case, event);
    let parsed = adapter::calendly::parse_delivery(&body).unwrap_or_else(|e| {
        panic!(
            "the adapter refused a generated body: {e}\n{}",
            String::from_utf8_lossy(&body)
        )
    });
    (parsed, body)
}

/// Passes when the stored record is the expected one; otherwise names what differs.
fn same_record(stored: Record, expected: Record) -> Result<(), TestCaseError> {
    if stored == expected {
        return Ok(());
    }
    let mut differences = Vec::new();
    let by_uri = |record: &Record| -> BTreeMap<String, MeetingRecord> {
        record
            .meetings
            .iter()
            .map(|m| (m.invitee_uri.clone(), m.clone()))
            .collect()
    };
    let (got, want) = (by_uri(&stored), by_uri(&expected));
    for uri in got.keys().chain(want.keys()).collect::<BTreeSet<_>>() {
        if got.get(uri) != want.get(uri) {
            differences.push(format!(
                "meeting {uri}:\n    stored   {:?}\n    expected {:?}",
                got.get(uri),
                want.get(uri)
            ));
        }
    }
    for (what, a, b) in [
        (
            "live reminders",
            format!("{:?}", stored.live_reminders),
            format!("{:?}", expected.live_reminders),
        ),
        (
            "leads",
            format!("{:?}", stored.leads),
            format!("{:?}", expected.leads),
        ),
        (
            "inbox",
            format!("{:?}", stored.inbox),
            format!("{:?}", expected.inbox),
        ),
    ] {
        if a != b {
            differences.push(format!("{what}:\n    stored   {a}\n    expected {b}"));
        }
    }
    Err(TestCaseError::fail(differences.join("\n")))
}

fn case_count(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `check` for every generated scenario on a multi-thread runtime's worker (the harness
/// gives every test one), failing the test with the shrunk counterexample.
fn run_property<F, Fut>(cases: u32, check: F)
where
    F: Fn(Scenario) -> Fut,
    Fut: Future<Output = Result<(), TestCaseError>>,
{
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result =
        tokio::task::block_in_place(|| runner.run(&scenario(), |scenario| handle.block_on(check(scenario))));
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

fn store_settings() -> StoreSettings {
    StoreSettings {
        reminder_offsets: default_offsets(),
        create_leads_for_unknown_invitees: false,
        retry: RetryPolicy::default(),
    }
}

// --- The properties ------------------------------------------------------------------------------

async fn any_delivery_order_with_repeats_gives_the_record_the_rules_define(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let db = store::connect(&database.url, 4)
        .await
        .expect("connect and migrate");
    let store = Store::new(db.clone(), store_settings());
    run_property(case_count(256), |scenario| {
        let (store, db) = (store.clone(), db.clone());
        async move {
            let case = Scope::new(Utc::now());
            create_leads(&db, &case, &scenario).await;
            let mut seen = BTreeSet::new();
            for &index in &scenario.deliveries {
                let event = &scenario.events[index];
                let (parsed, body) = parsed(&case, event);
                let answer = store
                    .ingest(
                        IngestRequest {
                            event: parsed,
                            raw_body: body,
                            source: Source::Webhook,
                            tracking_id: "convergence".into(),
                        },
                        case.now,
                    )
                    .await
                    .map_err(|e| TestCaseError::fail(format!("ingest failed: {e}")))?;
                let first = seen.insert(identity(&case, event));
                prop_assert_eq!(
                    answer.outcome == Outcome::Duplicate,
                    !first,
                    "only a repeat is a duplicate: {:?}",
                    event
                );
            }
            same_record(stored(&db, &case, &scenario).await, model(&case, &scenario))
        }
    });
}

async fn concurrent_grpc_deliveries_give_the_record_the_rules_define(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.grpc().await;
    let db = app.db.clone();
    run_property(case_count(256).div_ceil(4), |scenario| {
        let (client, db) = (client.clone(), db.clone());
        async move {
            let case = Scope::new(Utc::now());
            create_leads(&db, &case, &scenario).await;
            let calls = scenario.deliveries.iter().map(|&index| {
                let mut client = client.clone();
                let (parsed, body) = parsed(&case, &scenario.events[index]);
                async move {
                    // Like Calendly: an answer that is not a success is sent again.
                    for _ in 0..20 {
                        let request = IngestCalendlyEventRequest {
                            event: Some(parsed.clone()),
                            raw_body: body.clone(),
                            source: Source::Webhook as i32,
                        };
                        match client.ingest_calendly_event(request).await {
                            Ok(answer) => return (index, Ok(answer.into_inner())),
                            Err(status) if status.code() == tonic::Code::Unavailable => {
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            }
                            Err(status) => return (index, Err(status)),
                        }
                    }
                    (
                        index,
                        Err(tonic::Status::unavailable("still unavailable after 20 tries")),
                    )
                }
            });
            let answers = futures::future::join_all(calls).await;
            let mut firsts: BTreeMap<(String, String, i64), usize> = BTreeMap::new();
            for (index, answer) in answers {
                let answer = answer.map_err(|s| TestCaseError::fail(format!("ingest failed: {s}")))?;
                let key = identity(&case, &scenario.events[index]);
                *firsts.entry(key).or_default() += usize::from(!answer.duplicate);
            }
            for (key, count) in &firsts {
                prop_assert_eq!(*count, 1, "exactly one delivery of {:?} is not a duplicate", key);
            }
            same_record(stored(&db, &case, &scenario).await, model(&case, &scenario))
        }
    });
    app.stop().await;
}

crate::on_both_backends!(
    any_delivery_order_with_repeats_gives_the_record_the_rules_define,
    concurrent_grpc_deliveries_give_the_record_the_rules_define,
);
