//! From the API's invitee resources to the events a webhook would have delivered for them.
//!
//! The API's Invitee has the webhook payload's shape minus `scheduled_event`, so the back-fill
//! attaches the scheduled event it fetched, wraps the result in the envelope Calendly would have
//! sent and translates it with [`calendly::parse_delivery`], the webhook path's own parser. The
//! meeting service therefore sees the same kind of event either way.
//!
//! Event times come from the resources, never from the clock, so a second run produces the same
//! dedupe keys (event name, invitee URI, time) and the meeting service answers "duplicate":
//! `invitee.created` at the invitee's `created_at`, `invitee.canceled` at `cancellation.created_at`,
//! `invitee_no_show.created` at `no_show.created_at`. Pure: no I/O, no clock.

use proto::v1::CalendlyEvent;
use serde_json::{Map, Value, json, value::RawValue};

use adapter::calendly::{self, ParseError};

pub const INVITEE_CREATED: &str = "invitee.created";
pub const INVITEE_CANCELED: &str = "invitee.canceled";
pub const INVITEE_NO_SHOW_CREATED: &str = "invitee_no_show.created";

/// One event for the meeting service.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub event: CalendlyEvent,
    /// The invitee resource exactly as fetched: the inbox's audit copy.
    pub raw_body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TranslateError {
    #[error("the invitee is not a JSON object")]
    InviteeNotAnObject,
    #[error("the scheduled event is not a JSON object")]
    ScheduledEventNotAnObject,
    #[error("the invitee has no {field}, so its {event} event would have no stable time")]
    MissingTime {
        field: &'static str,
        event: &'static str,
    },
    #[error("{0}")]
    Invalid(#[from] ParseError),
}

/// The events that bring the meeting service up to date with one invitee, in the order they
/// happened: the booking; for a canceled invitee its cancellation (a reschedule's old half keeps
/// `rescheduled` and `new_invitee`); for an invitee marked as a no-show, the mark.
///
/// `created_by` stands in for the envelope's subscription owner: the token's user.
pub fn invitee_deliveries(
    invitee: &RawValue,
    scheduled_event: &Value,
    created_by: &str,
) -> Result<Vec<Delivery>, TranslateError> {
    let Ok(Value::Object(mut payload)) = serde_json::from_str::<Value>(invitee.get()) else {
        return Err(TranslateError::InviteeNotAnObject);
    };
    if !scheduled_event.is_object() {
        return Err(TranslateError::ScheduledEventNotAnObject);
    }

    let mut plan = vec![(
        INVITEE_CREATED,
        text(&payload, "created_at").ok_or(TranslateError::MissingTime {
            field: "created_at",
            event: INVITEE_CREATED,
        })?,
    )];
    if text(&payload, "status") == Some("canceled") {
        // A cancellation without its object is not documented; `updated_at` is the closest
        // stable time the resource offers.
        let canceled_at = object(&payload, "cancellation")
            .and_then(|cancellation| text(cancellation, "created_at"))
            .or_else(|| text(&payload, "updated_at"))
            .ok_or(TranslateError::MissingTime {
                field: "cancellation.created_at",
                event: INVITEE_CANCELED,
            })?;
        plan.push((INVITEE_CANCELED, canceled_at));
    }
    if let Some(no_show) = payload.get("no_show").filter(|value| !value.is_null()) {
        let marked_at = no_show
            .as_object()
            .and_then(|no_show| text(no_show, "created_at"))
            .ok_or(TranslateError::MissingTime {
                field: "no_show.created_at",
                event: INVITEE_NO_SHOW_CREATED,
            })?;
        plan.push((INVITEE_NO_SHOW_CREATED, marked_at));
    }
    let plan: Vec<(&str, String)> = plan
        .into_iter()
        .map(|(event, at)| (event, at.to_owned()))
        .collect();

    if payload.get("scheduled_event").is_none_or(Value::is_null) {
        payload.insert("scheduled_event".to_owned(), scheduled_event.clone());
    }
    let payload = Value::Object(payload);
    plan.into_iter()
        .map(|(event, at)| {
            let envelope = json!({
                "event": event,
                "created_at": at,
                "created_by": created_by,
                "payload": &payload,
            });
            let body = serde_json::to_vec(&envelope).map_err(|e| ParseError::InvalidJson(e.to_string()))?;
            Ok(Delivery {
                event: calendly::parse_delivery(&body)?,
                raw_body: invitee.get().as_bytes().to_vec(),
            })
        })
        .collect()
}

fn text<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object
        .get(key)
        .and_then(Value::as_str)
        .filter(|value| !value.trim().is_empty())
}

fn object<'a>(parent: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    parent.get(key).and_then(Value::as_object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::v1::{EventKind, calendly_event::Payload};

    const FIXTURES: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/calendly/fixtures/"
    );

    /// A webhook fixture split the way the API returns it: the invitee without its meeting, and
    /// the meeting on its own.
    fn api_shapes(fixture: &str) -> (Box<RawValue>, Value, CalendlyEvent) {
        let body = std::fs::read(format!("{FIXTURES}{fixture}")).expect("fixture");
        let webhook = calendly::parse_delivery(&body).expect("fixture parses");
        let mut envelope: Value = serde_json::from_slice(&body).expect("JSON");
        let payload = envelope["payload"].as_object_mut().expect("payload");
        let scheduled_event = payload.remove("scheduled_event").expect("scheduled_event");
        let invitee = RawValue::from_string(serde_json::to_string(payload).expect("JSON")).expect("raw");
        (invitee, scheduled_event, webhook)
    }

    fn names(deliveries: &[Delivery]) -> Vec<&str> {
        deliveries.iter().map(|d| d.event.event_name.as_str()).collect()
    }

    fn invitee(event: &CalendlyEvent) -> &proto::v1::Invitee {
        match &event.payload {
            Some(Payload::Invitee(invitee)) => invitee,
            other => panic!("expected an invitee, got {other:?}"),
        }
    }

    fn seconds_of(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text)
            .expect("time")
            .timestamp()
    }

    #[test]
    fn an_active_invitee_is_one_booking_at_its_creation_time() {
        let (raw, meeting, webhook) = api_shapes("invitee-created-one-on-one.json");
        let deliveries = invitee_deliveries(&raw, &meeting, "https://api.calendly.com/users/me").expect("ok");
        assert_eq!(names(&deliveries), [INVITEE_CREATED]);
        let event = &deliveries[0].event;
        assert_eq!(event.kind, EventKind::InviteeCreated as i32);
        assert_eq!(event.created_by, "https://api.calendly.com/users/me");
        // The same invitee and meeting as the webhook; only the envelope differs.
        assert_eq!(event.payload, webhook.payload);
        let created_at = invitee(event).created_at.expect("created_at");
        assert_eq!(event.occurred_at, Some(created_at));
    }

    #[test]
    fn the_old_half_of_a_reschedule_is_a_booking_then_its_cancellation() {
        let (raw, meeting, webhook) = api_shapes("reschedule-canceled-old.json");
        let deliveries = invitee_deliveries(&raw, &meeting, "").expect("ok");
        assert_eq!(names(&deliveries), [INVITEE_CREATED, INVITEE_CANCELED]);
        let canceled = &deliveries[1].event;
        assert_eq!(canceled.kind, EventKind::InviteeCanceled as i32);
        assert_eq!(canceled.payload, webhook.payload);
        let moved = invitee(canceled);
        assert!(moved.rescheduled);
        assert!(
            moved
                .new_invitee
                .as_deref()
                .is_some_and(|uri| uri.contains("/invitees/"))
        );
        let cancellation = moved.cancellation.as_ref().expect("cancellation");
        assert_eq!(
            canceled.occurred_at.as_ref().map(|t| t.seconds),
            Some(seconds_of("2030-03-08T11:20:44.870552Z"))
        );
        assert_eq!(canceled.occurred_at, cancellation.created_at);
        assert_eq!(deliveries[0].event.occurred_at, moved.created_at);
    }

    #[test]
    fn the_new_half_of_a_reschedule_keeps_its_link_back() {
        let (raw, meeting, webhook) = api_shapes("reschedule-created-new.json");
        let deliveries = invitee_deliveries(&raw, &meeting, "").expect("ok");
        assert_eq!(names(&deliveries), [INVITEE_CREATED]);
        assert_eq!(deliveries[0].event.payload, webhook.payload);
        assert!(invitee(&deliveries[0].event).old_invitee.is_some());
    }

    #[test]
    fn a_no_show_adds_its_mark_at_the_mark_time() {
        let (raw, meeting, webhook) = api_shapes("invitee-no-show-created.json");
        let deliveries = invitee_deliveries(&raw, &meeting, "").expect("ok");
        assert_eq!(names(&deliveries), [INVITEE_CREATED, INVITEE_NO_SHOW_CREATED]);
        let marked = &deliveries[1].event;
        assert_eq!(marked.payload, webhook.payload);
        let no_show = invitee(marked).no_show.as_ref().expect("no_show");
        assert_eq!(marked.occurred_at, no_show.created_at);
    }

    #[test]
    fn translation_is_deterministic_and_keeps_the_body_as_fetched() {
        let (raw, meeting, _) = api_shapes("invitee-canceled-by-host.json");
        let first = invitee_deliveries(&raw, &meeting, "u").expect("ok");
        let second = invitee_deliveries(&raw, &meeting, "u").expect("ok");
        assert_eq!(first, second);
        for delivery in &first {
            assert_eq!(delivery.raw_body, raw.get().as_bytes());
        }
    }

    #[test]
    fn a_cancellation_without_its_object_falls_back_to_updated_at() {
        let raw = RawValue::from_string(
            r#"{"uri":"https://api.calendly.com/scheduled_events/e/invitees/i","email":"a@example.com",
                "name":"A","status":"canceled","created_at":"2030-01-01T00:00:00Z",
                "updated_at":"2030-01-02T00:00:00Z"}"#
                .to_owned(),
        )
        .expect("raw");
        let meeting = json!({"uri":"https://api.calendly.com/scheduled_events/e",
            "start_time":"2030-02-01T10:00:00Z","end_time":"2030-02-01T10:30:00Z","status":"canceled"});
        let deliveries = invitee_deliveries(&raw, &meeting, "").expect("ok");
        assert_eq!(
            deliveries[1].event.occurred_at.as_ref().map(|t| t.seconds),
            Some(seconds_of("2030-01-02T00:00:00Z"))
        );
    }

    #[test]
    fn resources_without_stable_times_or_shape_are_refused() {
        let meeting = json!({"uri":"https://api.calendly.com/scheduled_events/e",
            "start_time":"2030-02-01T10:00:00Z","end_time":"2030-02-01T10:30:00Z"});
        let raw = |text: &str| RawValue::from_string(text.to_owned()).expect("raw");
        let cases = [
            (
                raw(r#"{"uri":"u","email":"e","name":"n"}"#),
                TranslateError::MissingTime {
                    field: "created_at",
                    event: INVITEE_CREATED,
                },
            ),
            (
                raw(
                    r#"{"uri":"u","email":"e","name":"n","created_at":"2030-01-01T00:00:00Z","status":"canceled"}"#,
                ),
                TranslateError::MissingTime {
                    field: "cancellation.created_at",
                    event: INVITEE_CANCELED,
                },
            ),
            (
                raw(
                    r#"{"uri":"u","email":"e","name":"n","created_at":"2030-01-01T00:00:00Z","no_show":{"uri":"x"}}"#,
                ),
                TranslateError::MissingTime {
                    field: "no_show.created_at",
                    event: INVITEE_NO_SHOW_CREATED,
                },
            ),
            (raw("[1]"), TranslateError::InviteeNotAnObject),
        ];
        for (invitee, want) in cases {
            assert_eq!(invitee_deliveries(&invitee, &meeting, ""), Err(want));
        }
        let ok = raw(r#"{"uri":"u","email":"e","name":"n","created_at":"2030-01-01T00:00:00Z"}"#);
        assert_eq!(
            invitee_deliveries(&ok, &json!("x"), ""),
            Err(TranslateError::ScheduledEventNotAnObject)
        );
        let bad_time = raw(r#"{"uri":"u","email":"e","name":"n","created_at":"yesterday"}"#);
        assert!(matches!(
            invitee_deliveries(&bad_time, &meeting, ""),
            Err(TranslateError::Invalid(ParseError::InvalidField { .. }))
        ));
    }
}
