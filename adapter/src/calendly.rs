//! Calendly webhook JSON to the protobuf `CalendlyEvent` the meeting service ingests.
//!
//! Two body shapes arrive. The real API v2 delivery (`{event, created_at, created_by, payload}`)
//! is parsed strictly, because a signed Calendly delivery always carries those fields. The project
//! seed's test shape (`{"eventData": {...}}`) is parsed leniently, because the seed guide's own
//! debug command sends an almost empty invitee and the meeting service records what is missing.
//! Everything here is pure: no I/O, no clock.

use prost_types::Timestamp;
use proto::v1::{self, EventKind, calendly_event::Payload};
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::error::Category;
use serde_json::value::RawValue;

/// Why a body could not be turned into an event.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("body is not valid UTF-8")]
    InvalidUtf8,
    /// Syntax error, early end of input or trailing characters (HTTP 400).
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    /// An object names a key twice, at `path`: two parsers could read the body two ways (HTTP 400).
    #[error("{path}: the key appears more than once; a body must have one reading")]
    DuplicateKey { path: String },
    /// Valid JSON, but a required field is missing or a value has the wrong type (HTTP 422).
    /// `path` names the field, e.g. `payload.scheduled_event.start_time`, or `body` for the
    /// top level.
    #[error("{path}: {message}")]
    InvalidField { path: String, message: String },
}

/// Parses a webhook body in either shape into the protobuf event. Pure: no I/O, no clock.
pub fn parse_delivery(body: &[u8]) -> Result<v1::CalendlyEvent, ParseError> {
    let text = std::str::from_utf8(body).map_err(|_| ParseError::InvalidUtf8)?;
    if let Some(path) = crate::json_keys::first_duplicate_key(text) {
        return Err(ParseError::DuplicateKey { path });
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let envelope = match serde_path_to_error::deserialize::<_, ObjectOnly<Envelope<'_>>>(&mut deserializer) {
        Ok(ObjectOnly(envelope)) => envelope,
        Err(err) => return Err(top_level_error(text, err)),
    };
    deserializer
        .end()
        .map_err(|err| ParseError::InvalidJson(err.to_string()))?;
    match envelope.event_data {
        Some(seed) => Ok(from_seed(seed)),
        None => from_real(envelope),
    }
}

/// Maps a Calendly event name (or a seed alias) to its kind.
pub fn event_kind(event_name: &str) -> EventKind {
    match event_name {
        "invitee.created" => EventKind::InviteeCreated,
        "invitee.canceled" => EventKind::InviteeCanceled,
        "invitee_no_show.created" | "invitee.no_show" => EventKind::InviteeNoShowCreated,
        "invitee_no_show.deleted" => EventKind::InviteeNoShowDeleted,
        "invitee.rescheduled" => EventKind::InviteeRescheduled,
        "routing_form_submission.created" => EventKind::RoutingFormSubmissionCreated,
        _ => EventKind::Other,
    }
}

/// What can be said of a verified body that [`parse_delivery`] refused: its event name if it has
/// one, and why it could not be translated. No time and no payload, so the meeting service keys it
/// by the body and stores it as failed.
pub fn untranslatable(body: &[u8], error: &ParseError) -> v1::CalendlyEvent {
    let event_name = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|value| value.get("event").and_then(Value::as_str).map(str::to_owned))
        .filter(|name| !name.is_empty() && name.len() <= 200)
        .unwrap_or_else(|| "unknown".to_owned());
    v1::CalendlyEvent {
        kind: event_kind(&event_name) as i32,
        event_name,
        translation_error: error.to_string(),
        ..Default::default()
    }
}

fn is_invitee_kind(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::InviteeCreated
            | EventKind::InviteeCanceled
            | EventKind::InviteeNoShowCreated
            | EventKind::InviteeNoShowDeleted
            | EventKind::InviteeRescheduled
    )
}

// ---------------------------------------------------------------------------------------------
// Wire types
// ---------------------------------------------------------------------------------------------

/// Both shapes in one pass: `eventData` present means the seed shape. The real envelope's
/// fields stay untyped until the shape is known, so a seed body is not rejected for stray keys
/// and a real `payload` is only given a type once `event` says which one. Untyped, they are
/// slices of the body (checked as JSON, not built into a tree), typed later in a second pass over
/// just that slice: building a `Value` tree took two fifths of the parse's time (BENCHMARKS.md).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "eventData", default, deserialize_with = "object")]
    event_data: Option<SeedData>,
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    #[serde(borrow)]
    created_at: Option<&'a RawValue>,
    #[serde(borrow)]
    created_by: Option<&'a RawValue>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct SeedData {
    event: String,
    time: Option<Rfc3339>,
    payload: Option<SeedPayload>,
}

#[derive(Deserialize, Default)]
struct SeedPayload {
    event: Option<SeedEvent>,
    invitee: Option<SeedInvitee>,
}

#[derive(Deserialize)]
struct SeedEvent {
    uri: Option<String>,
    name: Option<String>,
    start_time: Option<Rfc3339>,
    end_time: Option<Rfc3339>,
}

#[derive(Deserialize, Default)]
struct SeedInvitee {
    uri: Option<String>,
    email: Option<String>,
    name: Option<String>,
    created_at: Option<Rfc3339>,
}

#[derive(Deserialize)]
struct InviteePayload {
    uri: String,
    email: String,
    name: String,
    first_name: Option<String>,
    last_name: Option<String>,
    status: Option<String>,
    timezone: Option<String>,
    event: Option<String>,
    scheduled_event: Option<ScheduledEventPayload>,
    rescheduled: Option<bool>,
    old_invitee: Option<String>,
    new_invitee: Option<String>,
    cancellation: Option<CancellationPayload>,
    no_show: Option<NoShowPayload>,
    created_at: Option<Rfc3339>,
    updated_at: Option<Rfc3339>,
    text_reminder_number: Option<String>,
    questions_and_answers: Option<Vec<QuestionAndAnswerPayload>>,
    tracking: Option<TrackingPayload>,
}

#[derive(Deserialize)]
struct ScheduledEventPayload {
    uri: String,
    name: Option<String>,
    status: Option<String>,
    start_time: Rfc3339,
    end_time: Rfc3339,
    event_type: Option<String>,
    location: Option<LocationPayload>,
}

#[derive(Deserialize)]
struct LocationPayload {
    #[serde(rename = "type")]
    kind: Option<String>,
    join_url: Option<String>,
}

#[derive(Deserialize)]
struct CancellationPayload {
    canceled_by: Option<String>,
    reason: Option<String>,
    canceler_type: Option<String>,
    created_at: Option<Rfc3339>,
}

#[derive(Deserialize)]
struct NoShowPayload {
    uri: Option<String>,
    created_at: Option<Rfc3339>,
}

#[derive(Deserialize)]
struct QuestionAndAnswerPayload {
    question: Option<String>,
    answer: Option<String>,
    position: Option<i32>,
}

#[derive(Deserialize)]
struct TrackingPayload {
    utm_campaign: Option<String>,
    utm_source: Option<String>,
    utm_medium: Option<String>,
    utm_content: Option<String>,
    utm_term: Option<String>,
    salesforce_uuid: Option<String>,
}

/// A payload of an event family this service does not model: only its `uri`, if it is a string.
#[derive(Deserialize)]
struct OtherPayloadFields {
    uri: Option<Value>,
}

#[derive(Deserialize)]
struct RoutingFormSubmissionPayload {
    uri: String,
    routing_form: Option<String>,
    submitter: Option<String>,
}

/// An RFC 3339 instant, already converted to UTC.
struct Rfc3339(Timestamp);

impl<'de> Deserialize<'de> for Rfc3339 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        // The input is not echoed: it is client data and the message may end up in logs.
        parse_timestamp(&text)
            .map(Rfc3339)
            .ok_or_else(|| de::Error::custom("expected an RFC 3339 timestamp such as 2030-03-11T16:00:00Z"))
    }
}

fn parse_timestamp(text: &str) -> Option<Timestamp> {
    let instant = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    // A leap second (`:60`) arrives as nanos >= 1e9, which a protobuf Timestamp cannot hold.
    let nanos = instant.timestamp_subsec_nanos();
    Some(Timestamp {
        seconds: instant.timestamp() + i64::from(nanos / 1_000_000_000),
        // Below 1e9 after the modulo, so it fits.
        nanos: (nanos % 1_000_000_000) as i32,
    })
}

/// Accepts only a JSON object. A derived struct would also accept an array positionally,
/// which would let `[...]` bodies through as if they had named fields.
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(std::marker::PhantomData))
            .map(ObjectOnly)
    }
}

/// For `deserialize_with`: present means it must be an object (`null` included), absent is `None`.
fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    ObjectOnly::<T>::deserialize(deserializer).map(|ObjectOnly(inner)| Some(inner))
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

type PathError = serde_path_to_error::Error<serde_json::Error>;

fn top_level_error(text: &str, err: PathError) -> ParseError {
    // The typed pass stops at the first wrong type, possibly before a syntax error further on.
    // A body that is not JSON at all is a framing problem (400) and should say so.
    if err.inner().classify() == Category::Data
        && let Err(syntax) = serde_json::from_str::<de::IgnoredAny>(text)
    {
        return ParseError::InvalidJson(syntax.to_string());
    }
    to_parse_error(err, "")
}

/// `prefix` is where the deserialized value sits in the body (`payload` for a buffered payload).
fn to_parse_error(err: PathError, prefix: &str) -> ParseError {
    let mut path = join_path(prefix, &err.path().to_string());
    let inner = err.into_inner();
    match inner.classify() {
        Category::Io | Category::Syntax | Category::Eof => ParseError::InvalidJson(inner.to_string()),
        Category::Data => {
            let message = without_position(&inner);
            // serde reports a missing field at its parent; callers want the field itself.
            if let Some(field) = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.strip_suffix('`'))
            {
                path = join_path(&path, field);
            }
            if path.is_empty() {
                path = "body".to_owned();
            }
            ParseError::InvalidField { path, message }
        }
    }
}

/// serde_path_to_error renders the root as "." and sequence indexes as `[n]`.
fn join_path(prefix: &str, rest: &str) -> String {
    match (prefix, rest) {
        (_, "" | ".") => prefix.to_owned(),
        ("", _) => rest.to_owned(),
        (_, rest) if rest.starts_with('[') => format!("{prefix}{rest}"),
        _ => format!("{prefix}.{rest}"),
    }
}

/// The path already locates the problem; the line/column suffix would only repeat it, and
/// errors from buffered values have none, so dropping it keeps messages uniform.
fn without_position(err: &serde_json::Error) -> String {
    let mut message = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    if err.line() != 0 && message.ends_with(&suffix) {
        message.truncate(message.len() - suffix.len());
    }
    message
}

fn typed<T: DeserializeOwned>(value: &RawValue, path: &str) -> Result<T, ParseError> {
    let mut deserializer = serde_json::Deserializer::from_str(value.get());
    serde_path_to_error::deserialize(&mut deserializer).map_err(|err| to_parse_error(err, path))
}

fn required<'a>(value: Option<&'a RawValue>, path: &str) -> Result<&'a RawValue, ParseError> {
    value.ok_or_else(|| ParseError::InvalidField {
        path: path.to_owned(),
        message: "missing required field (absent or null)".to_owned(),
    })
}

// ---------------------------------------------------------------------------------------------
// Conversion
// ---------------------------------------------------------------------------------------------

fn from_real(envelope: Envelope) -> Result<v1::CalendlyEvent, ParseError> {
    let event_name: String = typed(required(envelope.event, "event")?, "event")?;
    let Rfc3339(occurred_at) = typed(required(envelope.created_at, "created_at")?, "created_at")?;
    let created_by = match envelope.created_by {
        Some(value) => typed(value, "created_by")?,
        None => String::new(),
    };
    let payload = required(envelope.payload, "payload")?;

    let kind = event_kind(&event_name);
    let payload = if is_invitee_kind(kind) {
        let ObjectOnly(invitee) = typed(payload, "payload")?;
        Payload::Invitee(invitee_from_real(invitee))
    } else if kind == EventKind::RoutingFormSubmissionCreated {
        let ObjectOnly(submission): ObjectOnly<RoutingFormSubmissionPayload> = typed(payload, "payload")?;
        Payload::RoutingFormSubmission(v1::RoutingFormSubmission {
            uri: submission.uri,
            routing_form: submission.routing_form.unwrap_or_default(),
            submitter: submission.submitter,
        })
    } else {
        // New event families keep appearing; they must be stored, never rejected for shape.
        let ObjectOnly(other): ObjectOnly<OtherPayloadFields> = typed(payload, "payload")?;
        Payload::Other(v1::OtherPayload {
            uri: other.uri.as_ref().and_then(Value::as_str).map(str::to_owned),
        })
    };

    Ok(v1::CalendlyEvent {
        event_name,
        kind: kind as i32,
        occurred_at: Some(occurred_at),
        created_by,
        translation_error: String::new(),
        payload: Some(payload),
    })
}

fn invitee_from_real(invitee: InviteePayload) -> v1::Invitee {
    // `event` is the older duplicate of `scheduled_event.uri`, and the only one in legacy bodies.
    let scheduled_event_uri = invitee
        .scheduled_event
        .as_ref()
        .map(|event| event.uri.clone())
        .or(invitee.event)
        .unwrap_or_default();
    let scheduled_event = invitee.scheduled_event.map(|event| {
        let (location_type, join_url) = event
            .location
            .map_or((None, None), |location| (location.kind, location.join_url));
        v1::ScheduledEvent {
            uri: event.uri,
            name: event.name,
            status: event.status.unwrap_or_default(),
            start_time: Some(event.start_time.0),
            end_time: Some(event.end_time.0),
            event_type: event.event_type,
            location_type,
            join_url,
        }
    });
    v1::Invitee {
        uri: invitee.uri,
        email: invitee.email,
        name: invitee.name,
        first_name: invitee.first_name,
        last_name: invitee.last_name,
        status: invitee.status.unwrap_or_default(),
        timezone: invitee.timezone,
        scheduled_event_uri,
        scheduled_event,
        rescheduled: invitee.rescheduled.unwrap_or(false),
        old_invitee: invitee.old_invitee,
        new_invitee: invitee.new_invitee,
        cancellation: invitee.cancellation.map(|c| v1::Cancellation {
            canceled_by: c.canceled_by,
            reason: c.reason,
            canceler_type: c.canceler_type,
            created_at: c.created_at.map(|t| t.0),
        }),
        no_show: invitee.no_show.map(|n| v1::NoShow {
            uri: n.uri.unwrap_or_default(),
            created_at: n.created_at.map(|t| t.0),
        }),
        created_at: invitee.created_at.map(|t| t.0),
        updated_at: invitee.updated_at.map(|t| t.0),
        text_reminder_number: invitee.text_reminder_number,
        questions_and_answers: invitee
            .questions_and_answers
            .unwrap_or_default()
            .into_iter()
            .map(|qa| v1::QuestionAndAnswer {
                question: qa.question.unwrap_or_default(),
                answer: qa.answer,
                position: qa.position.unwrap_or_default(),
            })
            .collect(),
        tracking: invitee.tracking.map(|t| v1::Tracking {
            utm_campaign: t.utm_campaign,
            utm_source: t.utm_source,
            utm_medium: t.utm_medium,
            utm_content: t.utm_content,
            utm_term: t.utm_term,
            salesforce_uuid: t.salesforce_uuid,
        }),
    }
}

fn from_seed(seed: SeedData) -> v1::CalendlyEvent {
    let kind = event_kind(&seed.event);
    let SeedPayload { event, invitee } = seed.payload.unwrap_or_default();
    let invitee = invitee.unwrap_or_default();

    let payload = if is_invitee_kind(kind) {
        let status = if kind == EventKind::InviteeCanceled {
            "canceled"
        } else {
            "active"
        };
        Payload::Invitee(v1::Invitee {
            uri: invitee.uri.unwrap_or_default(),
            email: invitee.email.unwrap_or_default(),
            name: invitee.name.unwrap_or_default(),
            status: status.to_owned(),
            scheduled_event_uri: event
                .as_ref()
                .and_then(|event| event.uri.clone())
                .unwrap_or_default(),
            scheduled_event: event.map(|event| v1::ScheduledEvent {
                uri: event.uri.unwrap_or_default(),
                name: event.name,
                status: "active".to_owned(),
                start_time: event.start_time.map(|t| t.0),
                end_time: event.end_time.map(|t| t.0),
                ..Default::default()
            }),
            created_at: invitee.created_at.map(|t| t.0),
            ..Default::default()
        })
    } else {
        Payload::Other(v1::OtherPayload {
            uri: invitee.uri.or_else(|| event.and_then(|event| event.uri)),
        })
    };

    v1::CalendlyEvent {
        event_name: seed.event,
        kind: kind as i32,
        occurred_at: seed.time.map(|t| t.0),
        created_by: String::new(),
        translation_error: String::new(),
        payload: Some(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIXTURES: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/calendly/fixtures/"
    );

    fn fixture(name: &str) -> v1::CalendlyEvent {
        let body = std::fs::read(format!("{FIXTURES}{name}")).expect("fixture is readable");
        parse_delivery(&body).unwrap_or_else(|err| panic!("{name}: {err}"))
    }

    fn invitee(event: &v1::CalendlyEvent) -> &v1::Invitee {
        match &event.payload {
            Some(Payload::Invitee(invitee)) => invitee,
            other => panic!("expected an invitee payload, got {other:?}"),
        }
    }

    fn ts(text: &str) -> Timestamp {
        parse_timestamp(text).expect("valid timestamp")
    }

    #[test]
    fn every_fixture_parses() {
        let mut count = 0;
        for entry in std::fs::read_dir(FIXTURES).expect("fixture dir") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|ext| ext == "json") {
                let body = std::fs::read(&path).expect("readable");
                if let Err(err) = parse_delivery(&body) {
                    panic!("{}: {err}", path.display());
                }
                count += 1;
            }
        }
        assert!(count >= 15, "only {count} fixtures found");
    }

    #[test]
    fn a_one_on_one_booking_maps_the_invitee_and_meeting_time() {
        let event = fixture("invitee-created-one-on-one.json");
        assert_eq!(event.event_name, "invitee.created");
        assert_eq!(event.kind, EventKind::InviteeCreated as i32);
        assert_eq!(
            event.occurred_at,
            Some(Timestamp {
                seconds: 1_898_866_932,
                nanos: 0
            })
        );
        assert!(event.created_by.ends_with("c4a7e9b2-6f13-4d58-9e0a-5b8c1d2f7a34"));
        let invitee = invitee(&event);
        assert_eq!(
            invitee.uri,
            "https://api.calendly.com/scheduled_events/e0d1c2b3-a495-4867-8f9e-0a1b2c3d4e5f/invitees/1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
        );
        assert_eq!(invitee.email, "jordan.ellis@example.com");
        assert_eq!(invitee.first_name, None);
        assert_eq!(invitee.status, "active");
        let meeting = invitee.scheduled_event.as_ref().expect("scheduled_event");
        assert_eq!(
            meeting.start_time,
            Some(Timestamp {
                seconds: 1_899_475_200,
                nanos: 0
            })
        );
        assert_eq!(meeting.location_type.as_deref(), Some("google_conference"));
        assert_eq!(meeting.join_url, None);
        assert_eq!(invitee.scheduled_event_uri, meeting.uri);
    }

    #[test]
    fn a_legacy_invitee_without_scheduled_event_takes_the_uri_from_event() {
        let event = fixture("invitee-created-legacy-without-scheduled-event.json");
        let invitee = invitee(&event);
        assert_eq!(invitee.scheduled_event, None);
        assert_eq!(
            invitee.scheduled_event_uri,
            "https://api.calendly.com/scheduled_events/6a8c0e2a-4c5e-4a7b-99f1-3c5e7a9c1cc5"
        );
    }

    #[test]
    fn the_canceled_half_of_a_reschedule_keeps_rescheduled_new_invitee_and_cancellation() {
        let event = fixture("reschedule-canceled-old.json");
        assert_eq!(event.kind, EventKind::InviteeCanceled as i32);
        let invitee = invitee(&event);
        assert!(invitee.rescheduled);
        assert!(
            invitee
                .new_invitee
                .as_deref()
                .is_some_and(|uri| uri.ends_with("e9b1d3f5-7a8c-4ca6-8b2c-4f6a8c0e2a27"))
        );
        let cancellation = invitee.cancellation.as_ref().expect("cancellation");
        assert_eq!(cancellation.canceler_type.as_deref(), Some("invitee"));
        assert!(cancellation.created_at.is_some());
    }

    #[test]
    fn a_host_cancellation_keeps_an_empty_reason_as_empty() {
        let event = fixture("invitee-canceled-by-host.json");
        let cancellation = invitee(&event).cancellation.clone().expect("cancellation");
        assert_eq!(cancellation.reason.as_deref(), Some(""));
    }

    #[test]
    fn a_no_show_mark_carries_the_no_show_and_its_removal_does_not() {
        let created = fixture("invitee-no-show-created.json");
        assert_eq!(created.kind, EventKind::InviteeNoShowCreated as i32);
        let no_show = invitee(&created).no_show.clone().expect("no_show");
        assert!(
            no_show
                .uri
                .starts_with("https://api.calendly.com/invitee_no_shows/")
        );
        let deleted = fixture("invitee-no-show-deleted.json");
        assert_eq!(deleted.kind, EventKind::InviteeNoShowDeleted as i32);
        assert_eq!(invitee(&deleted).no_show, None);
    }

    #[test]
    fn questions_and_tracking_are_carried_over() {
        let event = fixture("invitee-created-with-utm-and-questions.json");
        let invitee = invitee(&event);
        assert_eq!(invitee.questions_and_answers.len(), 5);
        assert!(
            invitee
                .questions_and_answers
                .iter()
                .any(|qa| qa.answer.as_deref().is_some_and(|a| a.contains('\n')))
        );
        let tracking = invitee.tracking.as_ref().expect("tracking");
        assert_eq!(tracking.utm_source.as_deref(), Some("linkedin"));
        assert_eq!(tracking.salesforce_uuid, None);
        assert_eq!(invitee.text_reminder_number.as_deref(), Some("+1 312-555-0142"));
    }

    #[test]
    fn a_routing_form_submission_maps_its_uri_and_form() {
        let event = fixture("routing-form-submission-created.json");
        assert_eq!(event.kind, EventKind::RoutingFormSubmissionCreated as i32);
        let Some(Payload::RoutingFormSubmission(submission)) = &event.payload else {
            panic!("expected a routing form submission, got {:?}", event.payload);
        };
        assert_eq!(
            submission.uri,
            "https://api.calendly.com/routing_form_submissions/6f8a0c2e-4b6d-4e8f-a0b2-c4d6e8f0a1b3"
        );
        assert!(
            submission
                .routing_form
                .starts_with("https://api.calendly.com/routing_forms/")
        );
        assert_eq!(submission.submitter, None);
    }

    #[test]
    fn an_unhandled_event_type_is_other_with_the_payload_uri() {
        let event = fixture("event-type-updated-unhandled.json");
        assert_eq!(event.event_name, "event_type.updated");
        assert_eq!(event.kind, EventKind::Other as i32);
        let Some(Payload::Other(other)) = &event.payload else {
            panic!("expected other, got {:?}", event.payload);
        };
        assert!(
            other
                .uri
                .as_deref()
                .is_some_and(|uri| uri.contains("/event_types/"))
        );
    }

    #[test]
    fn an_unknown_event_does_not_care_about_its_payload_fields() {
        let body = br#"{"event":"contact.created","created_at":"2030-03-04T15:02:12Z",
            "payload":{"uri":7,"email":{"nested":[1,2]},"name":null}}"#;
        let event = parse_delivery(body).expect("parses");
        assert_eq!(
            event.payload,
            Some(Payload::Other(v1::OtherPayload { uri: None }))
        );
        assert_eq!(event.created_by, "");
    }

    #[test]
    fn a_unicode_name_is_preserved_exactly() {
        let event = fixture("invitee-created-unicode-name.json");
        let invitee = invitee(&event);
        assert_eq!(invitee.name, "山田 太郎 🌸");
        assert_eq!(invitee.first_name.as_deref(), Some("太郎"));
        assert!(
            invitee.questions_and_answers[2]
                .answer
                .as_deref()
                .is_some_and(|a| a.ends_with("rocket 🚀"))
        );
        assert_eq!(
            invitee
                .scheduled_event
                .as_ref()
                .and_then(|e| e.location_type.as_deref()),
            Some("physical")
        );
    }

    #[test]
    fn the_seed_test_format_maps_event_and_invitee() {
        let event = fixture("seed-test-format.json");
        assert_eq!(event.kind, EventKind::InviteeCreated as i32);
        assert_eq!(
            event.occurred_at,
            Some(Timestamp {
                seconds: 1_898_866_932,
                nanos: 0
            })
        );
        let invitee = invitee(&event);
        assert_eq!(invitee.email, "seed.tester@example.com");
        assert_eq!(invitee.status, "active");
        assert_eq!(
            invitee.scheduled_event_uri,
            "https://api.calendly.com/scheduled_events/seedtest-evt-0001"
        );
        let meeting = invitee.scheduled_event.as_ref().expect("scheduled_event");
        assert_eq!(
            meeting.start_time,
            Some(Timestamp {
                seconds: 1_899_475_200,
                nanos: 0
            })
        );
        assert_eq!(meeting.name.as_deref(), Some("Seed Format Demo Call"));
    }

    #[test]
    fn the_seed_debug_command_is_accepted_with_what_it_has() {
        let body = br#"{"eventData":{"event":"invitee.created","payload":{"invitee":{"email":"test@example.com"}}}}"#;
        let event = parse_delivery(body).expect("parses");
        assert_eq!(event.occurred_at, None);
        let invitee = invitee(&event);
        assert_eq!(invitee.email, "test@example.com");
        assert_eq!(invitee.uri, "");
        assert_eq!(invitee.scheduled_event, None);
    }

    #[test]
    fn seed_aliases_map_to_their_kinds_and_a_seed_cancel_is_canceled() {
        let body = br#"{"eventData":{"event":"invitee.canceled"}}"#;
        let event = parse_delivery(body).expect("parses");
        assert_eq!(invitee(&event).status, "canceled");
        let body = br#"{"eventData":{"event":"invitee.rescheduled","payload":null}}"#;
        assert_eq!(
            parse_delivery(body).map(|e| e.kind),
            Ok(EventKind::InviteeRescheduled as i32)
        );
        let body =
            br#"{"eventData":{"event":"routing_form_submission.created","payload":{"event":{"uri":"e"}}}}"#;
        let event = parse_delivery(body).expect("parses");
        assert_eq!(
            event.payload,
            Some(Payload::Other(v1::OtherPayload {
                uri: Some("e".into())
            }))
        );
    }

    #[test]
    fn event_names_map_to_kinds() {
        for (name, kind) in [
            ("invitee.created", EventKind::InviteeCreated),
            ("invitee.canceled", EventKind::InviteeCanceled),
            ("invitee_no_show.created", EventKind::InviteeNoShowCreated),
            ("invitee.no_show", EventKind::InviteeNoShowCreated),
            ("invitee_no_show.deleted", EventKind::InviteeNoShowDeleted),
            ("invitee.rescheduled", EventKind::InviteeRescheduled),
            (
                "routing_form_submission.created",
                EventKind::RoutingFormSubmissionCreated,
            ),
            ("event_type.updated", EventKind::Other),
            ("Invitee.Created", EventKind::Other),
            ("", EventKind::Other),
        ] {
            assert_eq!(event_kind(name), kind, "{name}");
        }
    }

    #[test]
    fn timestamps_accept_any_fraction_length_and_offset() {
        let base = 1_899_475_200; // 2030-03-11T16:00:00Z
        for (text, seconds, nanos) in [
            ("2030-03-11T16:00:00Z", base, 0),
            ("2030-03-11T16:00:00.123Z", base, 123_000_000),
            ("2030-03-11T16:00:00.123456Z", base, 123_456_000),
            ("2030-03-11T16:00:00.123456789Z", base, 123_456_789),
            ("2030-03-11T18:00:00+02:00", base, 0),
            ("2030-03-11T11:00:00.5-05:00", base, 500_000_000),
        ] {
            assert_eq!(ts(text), Timestamp { seconds, nanos }, "{text}");
        }
        assert_eq!(parse_timestamp("2030-03-11"), None);
        assert_eq!(parse_timestamp("2030-03-11T16:00:00"), None);
    }

    enum Want {
        Utf8,
        Json,
        Field(&'static str),
    }

    fn real(payload: &str) -> Vec<u8> {
        format!(r#"{{"event":"invitee.created","created_at":"2030-03-04T15:02:12Z","payload":{payload}}}"#)
            .into_bytes()
    }

    fn with_meeting(meeting: &str) -> Vec<u8> {
        real(&format!(
            r#"{{"uri":"u","email":"e","name":"n","scheduled_event":{meeting}}}"#
        ))
    }

    #[test]
    fn bad_bodies_are_rejected_with_the_right_variant_and_path() {
        let ok_invitee = r#"{"uri":"u","email":"e","name":"n"}"#;
        let mut trailing = real(ok_invitee);
        trailing.extend_from_slice(b" {}");
        let cases: Vec<(&str, Vec<u8>, Want)> = vec![
            ("invalid utf-8", b"{\"event\":\"\xff\xfe\"}".to_vec(), Want::Utf8),
            ("empty body", b"".to_vec(), Want::Json),
            ("lone brace", b"{".to_vec(), Want::Json),
            ("trailing garbage", trailing, Want::Json),
            ("type error before a syntax error", br#"{"eventData": 5, "#.to_vec(), Want::Json),
            ("top-level array", b"[]".to_vec(), Want::Field("body")),
            ("top-level number", b"42".to_vec(), Want::Field("body")),
            ("top-level null", b"null".to_vec(), Want::Field("body")),
            ("missing event", br#"{"created_at":"2030-03-04T15:02:12Z","payload":{}}"#.to_vec(), Want::Field("event")),
            ("event as number", br#"{"event":5,"created_at":"2030-03-04T15:02:12Z","payload":{}}"#.to_vec(), Want::Field("event")),
            ("missing created_at", br#"{"event":"x","payload":{}}"#.to_vec(), Want::Field("created_at")),
            ("created_at not a timestamp", br#"{"event":"x","created_at":"yesterday","payload":{}}"#.to_vec(), Want::Field("created_at")),
            ("created_by as number", br#"{"event":"x","created_at":"2030-03-04T15:02:12Z","created_by":1,"payload":{}}"#.to_vec(), Want::Field("created_by")),
            ("missing payload", br#"{"event":"x","created_at":"2030-03-04T15:02:12Z"}"#.to_vec(), Want::Field("payload")),
            ("payload as array", real("[]"), Want::Field("payload")),
            ("invitee missing uri", real(r#"{"email":"e","name":"n"}"#), Want::Field("payload.uri")),
            ("uri as number", real(r#"{"uri":1,"email":"e","name":"n"}"#), Want::Field("payload.uri")),
            ("email null", real(r#"{"uri":"u","email":null,"name":"n"}"#), Want::Field("payload.email")),
            ("scheduled_event missing start_time", with_meeting(r#"{"uri":"m","end_time":"2030-03-11T16:30:00Z"}"#), Want::Field("payload.scheduled_event.start_time")),
            ("start_time garbage", with_meeting(r#"{"uri":"m","start_time":"soon","end_time":"2030-03-11T16:30:00Z"}"#), Want::Field("payload.scheduled_event.start_time")),
            ("location as string", with_meeting(r#"{"uri":"m","start_time":"2030-03-11T16:00:00Z","end_time":"2030-03-11T16:30:00Z","location":"zoom"}"#), Want::Field("payload.scheduled_event.location")),
            ("rescheduled as string", real(r#"{"uri":"u","email":"e","name":"n","rescheduled":"yes"}"#), Want::Field("payload.rescheduled")),
            ("questions_and_answers not an array", real(r#"{"uri":"u","email":"e","name":"n","questions_and_answers":{}}"#), Want::Field("payload.questions_and_answers")),
            ("position as string", real(r#"{"uri":"u","email":"e","name":"n","questions_and_answers":[{"question":"q","position":"0"}]}"#), Want::Field("payload.questions_and_answers[0].position")),
            ("cancellation time garbage", real(r#"{"uri":"u","email":"e","name":"n","cancellation":{"created_at":1}}"#), Want::Field("payload.cancellation.created_at")),
            ("tracking field as number", real(r#"{"uri":"u","email":"e","name":"n","tracking":{"utm_source":3}}"#), Want::Field("payload.tracking.utm_source")),
            ("routing form missing uri", br#"{"event":"routing_form_submission.created","created_at":"2030-03-04T15:02:12Z","payload":{}}"#.to_vec(), Want::Field("payload.uri")),
            ("seed eventData not an object", br#"{"eventData":"x"}"#.to_vec(), Want::Field("eventData")),
            ("seed eventData null", br#"{"eventData":null}"#.to_vec(), Want::Field("eventData")),
            ("seed event missing", br#"{"eventData":{"payload":{}}}"#.to_vec(), Want::Field("eventData.event")),
            ("seed invitee email as number", br#"{"eventData":{"event":"invitee.created","payload":{"invitee":{"email":5}}}}"#.to_vec(), Want::Field("eventData.payload.invitee.email")),
            ("seed time garbage", br#"{"eventData":{"event":"invitee.created","time":"noon"}}"#.to_vec(), Want::Field("eventData.time")),
            ("seed start_time garbage", br#"{"eventData":{"event":"invitee.created","payload":{"event":{"start_time":"x"}}}}"#.to_vec(), Want::Field("eventData.payload.event.start_time")),
        ];
        assert!(cases.len() >= 20);
        for (name, body, want) in cases {
            let got = parse_delivery(&body);
            match (&got, want) {
                (Err(ParseError::InvalidUtf8), Want::Utf8)
                | (Err(ParseError::InvalidJson(_)), Want::Json) => {}
                (Err(ParseError::InvalidField { path, message }), Want::Field(expected)) => {
                    assert_eq!(path, expected, "{name}: {message}");
                    assert!(!message.contains(" at line "), "{name}: {message}");
                }
                _ => panic!("{name}: unexpected result {got:?}"),
            }
        }
    }

    #[test]
    fn a_bad_timestamp_message_says_what_was_expected() {
        let body = br#"{"event":"x","created_at":"yesterday","payload":{}}"#;
        let Err(ParseError::InvalidField { message, .. }) = parse_delivery(body) else {
            panic!("expected an invalid field");
        };
        assert!(message.contains("expected an RFC 3339 timestamp"), "{message}");
    }

    #[rustfmt::skip]
    const KEYS: &[&str] = &[
        "eventData", "event", "time", "payload", "invitee", "created_at", "created_by", "uri",
        "email", "name", "scheduled_event", "start_time", "end_time", "location", "type",
        "rescheduled", "questions_and_answers", "position", "tracking", "cancellation", "no_show",
    ];

    #[rustfmt::skip]
    const TOKENS: &[&str] = &[
        "{", "}", "[", "]", ",", ":", " ", "null", "true", "0", "-1.5e3", "\"\"", "\"x\"",
        "\"invitee.created\"", "\"2030-03-11T16:00:00Z\"", "\"\\ud83d\"", "\"eventData\"",
        "\"event\"", "\"payload\"", "\"created_at\"", "\"uri\"", "\"scheduled_event\"",
    ];

    fn json_tokens() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(TOKENS), 0..48).prop_map(|parts| parts.concat())
    }

    /// Well-formed JSON whose keys come from the schema, to reach the typed conversions.
    fn schema_like_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            prop::sample::select(vec![
                "invitee.created",
                "invitee.canceled",
                "routing_form_submission.created",
                "2030-03-11T16:00:00Z",
                "x"
            ])
            .prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::from),
                prop::collection::btree_map(prop::sample::select(KEYS), inner, 0..6).prop_map(|map| {
                    serde_json::Value::Object(map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        })
    }

    /// What the bytes alone say `parse_delivery` must answer.
    #[derive(Debug)]
    enum Framing {
        NotUtf8,
        NotJson,
        NotAnObject,
        /// An object: an event, or a field error that names its field.
        Object,
        /// serde_json checks `\u` escapes only in values it keeps, so a lone surrogate in a skipped
        /// field is no syntax error while one in a typed field is: either answer is right.
        EscapeDependent,
    }

    fn framing(body: &[u8]) -> Framing {
        let Ok(text) = std::str::from_utf8(body) else {
            return Framing::NotUtf8;
        };
        if serde_json::from_str::<de::IgnoredAny>(text).is_err() {
            return Framing::NotJson;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(value) if value.is_object() => Framing::Object,
            Ok(_) => Framing::NotAnObject,
            Err(_) => Framing::EscapeDependent,
        }
    }

    /// Fails unless `result` is the typed verdict [`framing`] calls for.
    fn assert_typed_verdict(
        body: &[u8],
        result: &Result<v1::CalendlyEvent, ParseError>,
    ) -> Result<(), TestCaseError> {
        let shown = String::from_utf8_lossy(body);
        let expected = framing(body);
        let named_field = |path: &str, message: &str| !path.is_empty() && !message.is_empty();
        let agrees = match (&expected, result) {
            (Framing::NotUtf8, Err(ParseError::InvalidUtf8)) => true,
            (Framing::NotJson, Err(ParseError::InvalidJson(_))) => true,
            (Framing::NotAnObject, Err(ParseError::InvalidField { path, .. })) => path == "body",
            (Framing::Object, Ok(_)) => true,
            (Framing::Object, Err(ParseError::InvalidField { path, message })) => named_field(path, message),
            (Framing::EscapeDependent, Ok(_) | Err(ParseError::InvalidJson(_))) => true,
            (Framing::EscapeDependent, Err(ParseError::InvalidField { path, message })) => {
                named_field(path, message)
            }
            _ => false,
        };
        prop_assert!(agrees, "{}: expected {:?}, got {:?}", shown, expected, result);
        Ok(())
    }

    const EVENT_NAMES: &[&str] = &[
        "invitee.created",
        "invitee.canceled",
        "invitee_no_show.created",
        "invitee.no_show",
        "invitee_no_show.deleted",
        "invitee.rescheduled",
        "routing_form_submission.created",
        "event_type.updated",
        "contact.created",
    ];

    fn event_name() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(EVENT_NAMES).prop_map(str::to_owned),
            "[a-z_]{1,12}\\.[a-z_]{1,12}",
        ]
    }

    /// A real envelope whose payload has what its event name requires.
    fn valid_envelope() -> impl Strategy<Value = (String, i64, Vec<u8>)> {
        (event_name(), 0i64..4_000_000_000, "[ -~]{1,40}", "[ -~]{0,40}").prop_map(
            |(name, seconds, uri, text)| {
                let created_at = chrono::DateTime::from_timestamp(seconds, 0)
                    .expect("in range")
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                let payload = match event_kind(&name) {
                    kind if is_invitee_kind(kind) => {
                        serde_json::json!({"uri": uri, "email": text, "name": text})
                    }
                    EventKind::RoutingFormSubmissionCreated => serde_json::json!({"uri": uri}),
                    _ => serde_json::json!({"uri": uri, "anything": [text]}),
                };
                let body = serde_json::json!({"event": name, "created_at": created_at, "payload": payload});
                (name, seconds, body.to_string().into_bytes())
            },
        )
    }

    proptest! {
        #[test]
        fn a_fixture_with_any_key_written_twice_is_refused_for_it_and_never_applied(
            name in prop::sample::select(vec![
                "invitee-created-one-on-one.json",
                "invitee-canceled-by-invitee.json",
                "invitee-created-with-utm-and-questions.json",
                "invitee-no-show-created.json",
                "routing-form-submission-created.json",
                "seed-test-format.json",
            ]),
            pick in any::<prop::sample::Index>(),
        ) {
            // The fixture as compact JSON, one of its members (at any depth) written twice.
            let value: Value = serde_json::from_slice(&std::fs::read(format!("{FIXTURES}{name}")).expect("fixture"))
                .expect("JSON");
            let doubled = crate::json_keys::testing::with_a_member_repeated(&value.to_string(), pick)
                .expect("a fixture has members");
            let refused = parse_delivery(doubled.as_bytes());
            prop_assert!(matches!(refused, Err(ParseError::DuplicateKey { .. })), "{:?}", refused);
            // Signed, it is kept as failed: an untranslatable event, never an applicable one.
            let kept = untranslatable(doubled.as_bytes(), &refused.expect_err("refused"));
            prop_assert!(!kept.translation_error.is_empty());
            prop_assert!(kept.payload.is_none());
        }

        #[test]
        fn arbitrary_bytes_get_the_typed_error_their_framing_calls_for(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let result = parse_delivery(&bytes);
            assert_typed_verdict(&bytes, &result)?;
        }

        #[test]
        fn non_utf8_bytes_are_always_invalid_utf8(prefix in "[ -~]{0,20}", bad in 0x80u8..=0xff, suffix in "[ -~]{0,20}") {
            let mut body = prefix.into_bytes();
            body.push(bad);
            body.extend_from_slice(suffix.as_bytes());
            // A lone byte of 0x80 and above never starts a valid UTF-8 sequence followed by ASCII.
            prop_assume!(std::str::from_utf8(&body).is_err());
            prop_assert_eq!(parse_delivery(&body), Err(ParseError::InvalidUtf8));
        }

        #[test]
        fn json_token_soup_gets_the_typed_error_its_framing_calls_for(text in json_tokens()) {
            let result = parse_delivery(text.as_bytes());
            assert_typed_verdict(text.as_bytes(), &result)?;
        }

        #[test]
        fn schema_like_json_is_never_a_syntax_error_and_a_field_error_names_its_field(value in schema_like_json()) {
            let body = value.to_string();
            let result = parse_delivery(body.as_bytes());
            prop_assert!(!matches!(result, Err(ParseError::InvalidJson(_) | ParseError::InvalidUtf8)), "{}: {:?}", body, result);
            assert_typed_verdict(body.as_bytes(), &result)?;
        }

        #[test]
        fn a_valid_envelope_parses_to_its_event_name_kind_and_time((name, seconds, body) in valid_envelope()) {
            let event = parse_delivery(&body).map_err(|error| TestCaseError::fail(format!("{}: {error}", String::from_utf8_lossy(&body))))?;
            prop_assert_eq!(&event.event_name, &name);
            prop_assert_eq!(event.kind, event_kind(&name) as i32);
            prop_assert_eq!(event.occurred_at, Some(Timestamp { seconds, nanos: 0 }));
            let kind = event_kind(&name);
            let payload_matches = match &event.payload {
                Some(Payload::Invitee(_)) => is_invitee_kind(kind),
                Some(Payload::RoutingFormSubmission(_)) => kind == EventKind::RoutingFormSubmissionCreated,
                Some(Payload::Other(other)) => {
                    !is_invitee_kind(kind) && kind != EventKind::RoutingFormSubmissionCreated && other.uri.is_some()
                }
                None => false,
            };
            prop_assert!(payload_matches, "{}: {:?}", name, event.payload);
        }

        #[test]
        fn a_seed_body_parses_to_its_event_name_and_kind(name in event_name()) {
            let body = serde_json::json!({"eventData": {"event": name}}).to_string();
            let event = parse_delivery(body.as_bytes()).map_err(|error| TestCaseError::fail(format!("{body}: {error}")))?;
            prop_assert_eq!(&event.event_name, &name);
            prop_assert_eq!(event.kind, event_kind(&name) as i32);
            prop_assert_eq!(event.occurred_at, None);
        }
    }
}
