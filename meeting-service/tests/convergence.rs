//! Property: for a booking's events (create, reschedule chains, cancel, no-show marks and
//! unmarks) delivered in any order with any repeats, the final meetings, live reminders and lead
//! equal those of in-order delivery without repeats. Runs the real store on SQLite files.

use chrono::{DateTime, Duration, TimeZone, Utc};
use meeting_service::{
    domain::{event::to_timestamp, reminders::default_offsets},
    entity::{lead, meeting, meeting_reminder},
    store::{self, IngestRequest, Store, StoreSettings, retry::RetryPolicy},
};
use proptest::prelude::*;
use proto::v1::{
    CalendlyEvent, Cancellation, EventKind, Invitee, NoShow, ScheduledEvent, Source, calendly_event::Payload,
};
use sea_orm::{ActiveModelTrait, EntityTrait, QueryOrder, Set};

const EMAIL: &str = "pat.lee@example.com";

fn at(base_minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 2, 1, 0, 0, 0).single().expect("valid") + Duration::minutes(base_minutes)
}

fn invitee_uri(n: usize) -> String {
    format!("https://api.calendly.com/scheduled_events/evt-{n}/invitees/inv-{n}")
}

/// Meeting `n` starts `n` days after 2030-03-01 10:00.
fn start_of(n: usize) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 3, 1, 10, 0, 0)
        .single()
        .expect("valid")
        + Duration::days(n as i64)
}

fn event(
    kind: EventKind,
    n: usize,
    occurred: DateTime<Utc>,
    change: impl FnOnce(&mut Invitee),
) -> CalendlyEvent {
    let start = start_of(n);
    let mut invitee = Invitee {
        uri: invitee_uri(n),
        email: EMAIL.into(),
        name: "Pat Lee".into(),
        status: "active".into(),
        scheduled_event_uri: format!("https://api.calendly.com/scheduled_events/evt-{n}"),
        scheduled_event: Some(ScheduledEvent {
            uri: format!("https://api.calendly.com/scheduled_events/evt-{n}"),
            name: Some("Demo".into()),
            status: "active".into(),
            start_time: Some(to_timestamp(start)),
            end_time: Some(to_timestamp(start + Duration::minutes(30))),
            ..Default::default()
        }),
        ..Default::default()
    };
    change(&mut invitee);
    CalendlyEvent {
        event_name: kind.canonical_name().into(),
        kind: kind as i32,
        occurred_at: Some(to_timestamp(occurred)),
        created_by: String::new(),
        translation_error: String::new(),
        payload: Some(Payload::Invitee(invitee)),
    }
}

/// The events of one booking, in the order they happened.
fn history(reschedules: usize, final_cancel: bool, no_show_toggles: usize) -> Vec<CalendlyEvent> {
    let mut events = vec![event(EventKind::InviteeCreated, 0, at(0), |_| {})];
    let mut minute = 10;
    for n in 1..=reschedules {
        // Both halves of a reschedule carry the same time, as Calendly's do.
        let time = at(minute);
        events.push(event(EventKind::InviteeCanceled, n - 1, time, |i| {
            i.status = "canceled".into();
            i.rescheduled = true;
            i.new_invitee = Some(invitee_uri(n));
            i.cancellation = Some(Cancellation {
                canceled_by: Some("Pat Lee".into()),
                reason: Some("moved".into()),
                canceler_type: Some("invitee".into()),
                created_at: Some(to_timestamp(time)),
            });
        }));
        events.push(event(EventKind::InviteeCreated, n, time, |i| {
            i.old_invitee = Some(invitee_uri(n - 1))
        }));
        minute += 10;
    }
    let last = reschedules;
    for toggle in 0..no_show_toggles {
        minute += 10;
        let marked = toggle % 2 == 0;
        let kind = if marked {
            EventKind::InviteeNoShowCreated
        } else {
            EventKind::InviteeNoShowDeleted
        };
        let time = at(minute);
        events.push(event(kind, last, time, |i| {
            i.no_show = marked.then(|| NoShow {
                uri: format!("https://api.calendly.com/invitee_no_shows/{toggle}"),
                created_at: Some(to_timestamp(time)),
            });
        }));
    }
    if final_cancel {
        minute += 10;
        let time = at(minute);
        events.push(event(EventKind::InviteeCanceled, last, time, |i| {
            i.status = "canceled".into();
            i.cancellation = Some(Cancellation {
                canceled_by: Some("Host".into()),
                reason: Some(String::new()),
                canceler_type: Some("host".into()),
                created_at: Some(to_timestamp(time)),
            });
        }));
    }
    events
}

async fn fresh_store(dir: &tempfile::TempDir, name: &str) -> Store {
    let url = format!("sqlite://{}?mode=rwc", dir.path().join(name).display());
    let db = store::connect(&url, 2).await.expect("connect and migrate");
    lead::ActiveModel {
        email: Set(EMAIL.into()),
        name: Set(None),
        status: Set("new".into()),
        created_at: Set(at(0)),
        updated_at: Set(at(0)),
        ..Default::default()
    }
    .insert(&db)
    .await
    .expect("lead");
    Store::new(
        db,
        StoreSettings {
            reminder_offsets: default_offsets(),
            create_leads_for_unknown_invitees: false,
            retry: RetryPolicy::default(),
        },
    )
}

#[derive(Debug, PartialEq)]
struct MeetingFacts {
    invitee: String,
    status: String,
    start: Option<DateTime<Utc>>,
    cancel_reason: Option<String>,
    rescheduled_from: Option<String>,
    rescheduled_to: Option<String>,
    no_show: bool,
    linked_to_lead: bool,
}

/// Everything events decide, in a form that does not depend on insertion order (ids, row times).
#[derive(Debug, PartialEq)]
struct Snapshot {
    meetings: Vec<MeetingFacts>,
    live_reminders: Vec<(String, String, DateTime<Utc>)>,
    lead_status: String,
}

async fn snapshot(store: &Store) -> Snapshot {
    let db = store.connection();
    let meetings = meeting::Entity::find()
        .order_by_asc(meeting::Column::CalendlyInviteeId)
        .all(db)
        .await
        .expect("meetings");
    let reminders = meeting_reminder::Entity::find().all(db).await.expect("reminders");
    let invitee_of = |id: i64| {
        meetings
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.calendly_invitee_id.clone())
            .unwrap_or_default()
    };
    let mut live_reminders: Vec<_> = reminders
        .iter()
        .filter(|r| r.state == "pending" || r.state == "claimed")
        .map(|r| {
            (
                invitee_of(r.meeting_id),
                r.reminder_type.clone(),
                r.scheduled_time,
            )
        })
        .collect();
    live_reminders.sort();
    let lead = lead::Entity::find()
        .one(db)
        .await
        .expect("lead query")
        .expect("the lead");
    Snapshot {
        meetings: meetings
            .iter()
            .map(|m| MeetingFacts {
                invitee: m.calendly_invitee_id.clone(),
                status: m.status.clone(),
                start: m.start_time,
                cancel_reason: m.cancel_reason.clone(),
                rescheduled_from: m.rescheduled_from_invitee_id.clone(),
                rescheduled_to: m.rescheduled_to_invitee_id.clone(),
                no_show: m.no_show,
                linked_to_lead: m.lead_id.is_some(),
            })
            .collect(),
        live_reminders,
        lead_status: lead.status,
    }
}

async fn deliver(store: &Store, events: &[CalendlyEvent]) {
    let now = Utc
        .with_ymd_and_hms(2030, 1, 15, 0, 0, 0)
        .single()
        .expect("valid");
    for event in events {
        let request = IngestRequest {
            event: event.clone(),
            raw_body: Vec::new(),
            source: Source::Webhook,
            tracking_id: "property".into(),
        };
        store.ingest(request, now).await.expect("ingest");
    }
}

fn scenario() -> impl Strategy<Value = (Vec<CalendlyEvent>, Vec<CalendlyEvent>)> {
    (0usize..=2, any::<bool>(), 0usize..=3).prop_flat_map(|(reschedules, final_cancel, toggles)| {
        let in_order = history(reschedules, final_cancel, toggles);
        let count = in_order.len();
        (
            Just(in_order.clone()),
            Just(in_order).prop_shuffle(),
            proptest::collection::vec(0..count, 0..4),
        )
            .prop_map(|(in_order, mut shuffled, repeats)| {
                for index in repeats {
                    let copy = shuffled[index].clone();
                    shuffled.insert(index, copy);
                }
                (in_order, shuffled)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn any_delivery_order_with_repeats_converges_to_the_in_order_state((in_order, delivered) in scenario()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (expected, actual) = runtime.block_on(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let reference = fresh_store(&dir, "in-order.db").await;
            deliver(&reference, &in_order).await;
            let shuffled = fresh_store(&dir, "shuffled.db").await;
            deliver(&shuffled, &delivered).await;
            (snapshot(&reference).await, snapshot(&shuffled).await)
        });
        prop_assert_eq!(actual, expected);
    }
}

#[tokio::test]
async fn the_in_order_history_ends_in_the_expected_states() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = fresh_store(&dir, "story.db").await;
    // Rescheduled twice, then marked no-show.
    deliver(&store, &history(2, false, 1)).await;
    let state = snapshot(&store).await;
    let statuses: Vec<_> = state.meetings.iter().map(|m| m.status.as_str()).collect();
    assert_eq!(statuses, ["rescheduled", "rescheduled", "no_show"]);
    assert!(state.live_reminders.is_empty());
    assert_eq!(state.lead_status, "meeting_no_show");
}
