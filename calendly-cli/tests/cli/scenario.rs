//! The bookings the tests back-fill, in the API's shapes, and the webhooks Calendly would have
//! sent for the same history (each as it was when it happened).
//!
//! Five scheduled events, oldest first: a one-on-one booking (A), the old (B) and new (C) halves of
//! a reschedule, a meeting the host canceled without a reason (D), and a group event (E) with one
//! invitee still booked, one marked as a no-show and one who canceled.
//!
//! The history is written in March 2030 and moved ahead of now by [`in_the_future`], so its
//! meetings still get reminders whatever the date.

use serde_json::{Map, Value, json};

use super::mock::{MockCalendly, USER};

const API: &str = "https://api.calendly.com";

pub fn event_uuid(letter: char) -> String {
    format!("e0000000-0000-4000-8000-00000000000{letter}")
}

pub fn event_uri(letter: char) -> String {
    format!("{API}/scheduled_events/{}", event_uuid(letter))
}

pub fn invitee_uri(letter: char, n: u8) -> String {
    format!(
        "{}/invitees/1{n}000000-0000-4000-8000-00000000000{letter}",
        event_uri(letter)
    )
}

pub struct Booking {
    pub event: Value,
    pub invitees: Vec<Value>,
}

pub struct Scenario {
    pub bookings: Vec<Booking>,
}

fn scheduled_event(
    letter: char,
    name: &str,
    start: &str,
    end: &str,
    canceled: Option<Value>,
    counter: Value,
) -> Value {
    let mut event = json!({
        "uri": event_uri(letter),
        "name": name,
        "status": if canceled.is_some() { "canceled" } else { "active" },
        "start_time": start,
        "end_time": end,
        "event_type": format!("{API}/event_types/5e2a9c7d-1b48-4f6e-a3d0-9c8b7e6f5a41"),
        "location": {"type": "google_conference", "status": "pushed",
                     "join_url": format!("https://calendly.com/events/{}/google_meet", event_uuid(letter))},
        "invitees_counter": counter,
        "created_at": "2030-02-20T10:00:00.000000Z",
        "updated_at": "2030-02-20T10:00:00.000000Z",
        "event_memberships": [{"user": USER, "user_email": "priya.raman@example.com", "user_name": "Priya Raman"}],
        "event_guests": [],
        "meeting_notes_plain": null,
        "meeting_notes_html": null
    });
    if let Some(cancellation) = canceled {
        event["cancellation"] = cancellation;
    }
    event
}

/// An invitee as `GET /scheduled_events/{uuid}/invitees` returns it: no `scheduled_event`.
fn invitee(letter: char, n: u8, email: &str, name: &str, created_at: &str, extra: Value) -> Value {
    let uuid = format!("1{n}000000-0000-4000-8000-00000000000{letter}");
    let mut invitee = json!({
        "uri": invitee_uri(letter, n),
        "email": email,
        "name": name,
        "first_name": null,
        "last_name": null,
        "status": "active",
        "timezone": "Europe/London",
        "event": event_uri(letter),
        "created_at": created_at,
        "updated_at": created_at,
        "questions_and_answers": [{"question": "What would you like to discuss?", "answer": "Pricing", "position": 0}],
        "tracking": {"utm_campaign": null, "utm_source": null, "utm_medium": null, "utm_content": null,
                     "utm_term": null, "salesforce_uuid": null},
        "text_reminder_number": null,
        "rescheduled": false,
        "old_invitee": null,
        "new_invitee": null,
        "cancel_url": format!("https://calendly.com/cancellations/{uuid}"),
        "reschedule_url": format!("https://calendly.com/reschedulings/{uuid}"),
        "routing_form_submission": null,
        "payment": null,
        "no_show": null,
        "reconfirmation": null,
        "scheduling_method": null,
        "invitee_scheduled_by": null
    });
    if let (Some(target), Value::Object(extra)) = (invitee.as_object_mut(), extra) {
        target.extend(extra);
    }
    invitee
}

fn cancellation(by: &str, kind: &str, reason: &str, at: &str) -> Value {
    json!({"canceled_by": by, "canceler_type": kind, "reason": reason, "created_at": at})
}

// The end-to-end tests' own year shift, compiled into this test too: the tests crate depends on
// this one, so this one cannot depend on it, and two copies of the rule could drift apart.
#[path = "../../../tests/src/fixture_time.rs"]
#[allow(dead_code, reason = "this test uses only in_the_future")]
mod fixture_time;

pub use fixture_time::in_the_future;

/// Every string in `value` through [`in_the_future`].
fn moved(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(in_the_future(&text)),
        Value::Array(items) => Value::Array(items.into_iter().map(moved).collect()),
        Value::Object(fields) => Value::Object(fields.into_iter().map(|(k, v)| (k, moved(v))).collect()),
        other => other,
    }
}

impl Scenario {
    pub fn standard() -> Self {
        let mut scenario = Self::as_written();
        for booking in &mut scenario.bookings {
            booking.event = moved(booking.event.take());
            booking.invitees = booking.invitees.drain(..).map(moved).collect();
        }
        scenario
    }

    fn as_written() -> Self {
        let moved = cancellation(
            "Taylor Brooks",
            "invitee",
            "Flight moved",
            "2030-03-08T11:20:44.870552Z",
        );
        let host_cancel = cancellation("Priya Raman", "host", "", "2030-03-05T12:00:00.500000Z");
        let left_group = cancellation(
            "Sam Ortiz",
            "invitee",
            "Can't make it",
            "2030-03-06T09:00:00.000000Z",
        );
        let counter =
            |total: u32, active: u32, limit: u32| json!({"total": total, "active": active, "limit": limit});
        Self {
            bookings: vec![
                Booking {
                    event: scheduled_event(
                        'a',
                        "30 Minute Discovery Call",
                        "2030-03-11T16:00:00.000000Z",
                        "2030-03-11T16:30:00.000000Z",
                        None,
                        counter(1, 1, 1),
                    ),
                    invitees: vec![invitee(
                        'a',
                        1,
                        "jordan.ellis@example.com",
                        "Jordan Ellis",
                        "2030-03-01T09:00:00.123456Z",
                        json!({}),
                    )],
                },
                Booking {
                    event: scheduled_event(
                        'b',
                        "30 Minute Discovery Call",
                        "2030-03-12T14:00:00.000000Z",
                        "2030-03-12T14:30:00.000000Z",
                        Some(moved.clone()),
                        counter(1, 0, 1),
                    ),
                    invitees: vec![invitee(
                        'b',
                        1,
                        "taylor.brooks@example.com",
                        "Taylor Brooks",
                        "2030-03-02T08:03:19.690417Z",
                        json!({"status": "canceled", "rescheduled": true, "new_invitee": invitee_uri('c', 1),
                               "cancellation": moved, "updated_at": "2030-03-08T11:20:44.902236Z"}),
                    )],
                },
                Booking {
                    event: scheduled_event(
                        'c',
                        "30 Minute Discovery Call",
                        "2030-03-13T17:00:00.000000Z",
                        "2030-03-13T17:30:00.000000Z",
                        None,
                        counter(1, 1, 1),
                    ),
                    invitees: vec![invitee(
                        'c',
                        1,
                        "taylor.brooks@example.com",
                        "Taylor Brooks",
                        "2030-03-08T11:20:44.912345Z",
                        json!({"old_invitee": invitee_uri('b', 1)}),
                    )],
                },
                Booking {
                    event: scheduled_event(
                        'd',
                        "Product Demo",
                        "2030-03-14T10:00:00.000000Z",
                        "2030-03-14T11:00:00.000000Z",
                        Some(host_cancel.clone()),
                        counter(1, 0, 1),
                    ),
                    invitees: vec![invitee(
                        'd',
                        1,
                        "alex.kim@example.com",
                        "Alex Kim",
                        "2030-03-03T10:00:00.000000Z",
                        json!({"status": "canceled", "cancellation": host_cancel,
                               "updated_at": "2030-03-05T12:00:00.600000Z"}),
                    )],
                },
                Booking {
                    event: scheduled_event(
                        'e',
                        "Group Onboarding",
                        "2030-03-15T15:00:00.000000Z",
                        "2030-03-15T16:00:00.000000Z",
                        None,
                        counter(3, 2, 10),
                    ),
                    invitees: vec![
                        invitee(
                            'e',
                            1,
                            "maria.lopez@example.com",
                            "María López",
                            "2030-03-04T10:00:00.000000Z",
                            json!({}),
                        ),
                        invitee(
                            'e',
                            2,
                            "chen.wei@example.com",
                            "Chen Wei",
                            "2030-03-04T11:00:00.000000Z",
                            json!({"no_show": {"uri": format!("{API}/invitee_no_shows/a0000000-0000-4000-8000-000000000001"),
                                               "created_at": "2030-03-15T15:20:00.000000Z"}}),
                        ),
                        invitee(
                            'e',
                            3,
                            "sam.ortiz@example.com",
                            "Sam Ortiz",
                            "2030-03-04T12:00:00.000000Z",
                            json!({"status": "canceled", "cancellation": left_group,
                                   "updated_at": "2030-03-06T09:00:00.100000Z"}),
                        ),
                    ],
                },
            ],
        }
    }

    pub fn install(&self, mock: &MockCalendly) {
        for booking in &self.bookings {
            mock.add_booking(booking.event.clone(), booking.invitees.clone());
        }
    }

    pub fn invitee_uris(&self) -> Vec<String> {
        self.bookings
            .iter()
            .flat_map(|b| &b.invitees)
            .map(|i| i["uri"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The webhook bodies Calendly would have posted over this history. Each carries the state
    /// at its moment (the booking before any cancellation or mark) and an envelope time of its own,
    /// a little after the resource's, as real deliveries have.
    pub fn webhooks(&self) -> Vec<Vec<u8>> {
        let mut bodies = Vec::new();
        for booking in &self.bookings {
            for invitee in &booking.invitees {
                let mut payload = invitee.as_object().cloned().unwrap_or_default();
                payload.insert("scheduled_event".into(), booking.event.clone());
                let current = payload.clone();

                let mut booked = payload.clone();
                for (key, value) in [
                    ("status", json!("active")),
                    ("rescheduled", json!(false)),
                    ("new_invitee", Value::Null),
                    ("no_show", Value::Null),
                    ("updated_at", invitee["created_at"].clone()),
                ] {
                    booked.insert(key.into(), value);
                }
                booked.remove("cancellation");
                if let Some(event) = booked.get_mut("scheduled_event").and_then(Value::as_object_mut) {
                    event.insert("status".into(), json!("active"));
                    event.remove("cancellation");
                }
                bodies.push(envelope("invitee.created", &invitee["created_at"], booked));

                if invitee["status"] == "canceled" {
                    let mut canceled = current.clone();
                    canceled.insert("no_show".into(), Value::Null);
                    bodies.push(envelope(
                        "invitee.canceled",
                        &invitee["cancellation"]["created_at"],
                        canceled,
                    ));
                }
                if !invitee["no_show"].is_null() {
                    bodies.push(envelope(
                        "invitee_no_show.created",
                        &invitee["no_show"]["created_at"],
                        current,
                    ));
                }
            }
        }
        bodies
    }
}

fn envelope(event: &str, resource_time: &Value, payload: Map<String, Value>) -> Vec<u8> {
    let resource_time = resource_time.as_str().expect("a time");
    let at =
        chrono::DateTime::parse_from_rfc3339(resource_time).expect("RFC 3339") + chrono::Duration::seconds(1);
    let body = json!({
        "event": event,
        "created_at": at.to_utc().format("%Y-%m-%dT%H:%M:%S.000000Z").to_string(),
        "created_by": USER,
        "payload": payload,
    });
    serde_json::to_vec(&body).expect("JSON")
}
