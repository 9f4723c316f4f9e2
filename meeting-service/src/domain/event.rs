//! From a received [`CalendlyEvent`] to what the store applies.
//!
//! The adapter already checked the JSON's shape; this module checks what the meeting record
//! needs (an invitee URI, an e-mail, ...). An event that fails here is still stored in the inbox
//! as `failed` with these messages, and acknowledged, so Calendly does not retry it forever.

use chrono::{DateTime, Utc};
use proto::v1::{CalendlyEvent, EventKind, calendly_event::Payload};
use sha2::{Digest, Sha256};

/// What an invitee event does to its meeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InviteeChange {
    /// `invitee.created`: a booking (or the new half of a reschedule).
    Booked,
    /// `invitee.canceled`: final for this invitee URI.
    Canceled(Cancellation),
    /// `invitee_no_show.created` / seed `invitee.no_show`.
    NoShowMarked,
    /// `invitee_no_show.deleted`.
    NoShowCleared,
    /// Seed `invitee.rescheduled`: the same invitee moved to the payload's times.
    Moved,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cancellation {
    pub reason: Option<String>,
    pub canceled_by: Option<String>,
    pub canceler_type: Option<String>,
    pub canceled_at: Option<DateTime<Utc>>,
    /// The old half of a reschedule.
    pub rescheduled: bool,
    pub new_invitee_uri: Option<String>,
}

/// The meeting facts every invitee payload carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteeFacts {
    pub invitee_uri: String,
    pub email: String,
    pub name: String,
    pub timezone: Option<String>,
    pub scheduled_event_uri: String,
    pub meeting_name: Option<String>,
    /// Unknown for the legacy shape without `scheduled_event`.
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub old_invitee_uri: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteeEvent {
    pub change: InviteeChange,
    pub facts: InviteeFacts,
    /// Calendly's time for the event; orders events for the same meeting.
    pub occurred_at: DateTime<Utc>,
}

/// Longest URI kept in an indexed column; PostgreSQL's b-tree entries must stay well under 2.7 kB.
pub const MAX_INDEXED_TEXT_BYTES: usize = 1_024;
/// The longest e-mail address RFC 5321 allows.
pub const MAX_EMAIL_BYTES: usize = 320;

/// Every text of an invitee payload that is stored in a text column.
fn invitee_text(invitee: &proto::v1::Invitee) -> impl Iterator<Item = &str> {
    let scheduled = invitee.scheduled_event.as_ref();
    let cancellation = invitee.cancellation.as_ref();
    [
        Some(invitee.uri.as_str()),
        Some(invitee.email.as_str()),
        Some(invitee.name.as_str()),
        Some(invitee.scheduled_event_uri.as_str()),
        invitee.timezone.as_deref(),
        invitee.old_invitee.as_deref(),
        invitee.new_invitee.as_deref(),
        scheduled.map(|s| s.uri.as_str()),
        scheduled.and_then(|s| s.name.as_deref()),
        cancellation.and_then(|c| c.reason.as_deref()),
        cancellation.and_then(|c| c.canceled_by.as_deref()),
        cancellation.and_then(|c| c.canceler_type.as_deref()),
    ]
    .into_iter()
    .flatten()
}

/// Text for a column that PostgreSQL must accept: no NUL characters.
pub fn storable(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

/// What the store does with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    Apply(Box<InviteeEvent>),
    /// Stored and acknowledged, no meeting change (routing forms, event types, unknown names).
    Ignore(String),
    /// Stored as failed with these reasons; replayable.
    Fail(Vec<String>),
}

/// Decides what to do with `event`. `received_at` stands in for Calendly's time when a seed-shape
/// test body carries none.
pub fn classify(event: &CalendlyEvent, received_at: DateTime<Utc>) -> Disposition {
    if !event.translation_error.is_empty() {
        return Disposition::Fail(vec![format!(
            "the body could not be translated: {}",
            event.translation_error
        )]);
    }
    let kind = EventKind::try_from(event.kind).unwrap_or(EventKind::Unspecified);
    let change = match kind {
        EventKind::InviteeCreated => None,
        EventKind::InviteeNoShowCreated => Some(InviteeChange::NoShowMarked),
        EventKind::InviteeNoShowDeleted => Some(InviteeChange::NoShowCleared),
        EventKind::InviteeRescheduled => Some(InviteeChange::Moved),
        EventKind::InviteeCanceled => Some(InviteeChange::Canceled(Cancellation::default())),
        EventKind::RoutingFormSubmissionCreated => {
            return Disposition::Ignore("routing form submissions do not change meetings".into());
        }
        EventKind::Other | EventKind::Unspecified => {
            return Disposition::Ignore(format!("event {:?} is not applied to meetings", event.event_name));
        }
    };
    let Some(Payload::Invitee(invitee)) = &event.payload else {
        return Disposition::Fail(vec![format!(
            "event {:?} carries no invitee payload",
            event.event_name
        )]);
    };

    let mut errors = Vec::new();
    for (field, value) in [("payload.uri", &invitee.uri), ("payload.email", &invitee.email)] {
        if value.trim().is_empty() {
            errors.push(format!("{field} is missing"));
        }
    }
    let scheduled_uri = invitee
        .scheduled_event
        .as_ref()
        .map(|s| s.uri.as_str())
        .unwrap_or_default();
    for (field, value, limit) in [
        ("payload.uri", invitee.uri.as_str(), MAX_INDEXED_TEXT_BYTES),
        ("payload.email", invitee.email.as_str(), MAX_EMAIL_BYTES),
        (
            "payload.event",
            invitee.scheduled_event_uri.as_str(),
            MAX_INDEXED_TEXT_BYTES,
        ),
        (
            "payload.scheduled_event.uri",
            scheduled_uri,
            MAX_INDEXED_TEXT_BYTES,
        ),
    ] {
        if value.len() > limit {
            errors.push(format!("{field} is longer than {limit} bytes"));
        }
    }
    if invitee_text(invitee).any(|text| text.contains('\0')) {
        errors.push("the invitee payload contains a NUL character, which cannot be stored".into());
    }
    let scheduled = invitee.scheduled_event.as_ref();
    let start_time = scheduled.and_then(|s| s.start_time.as_ref()).and_then(to_utc);
    let end_time = scheduled.and_then(|s| s.end_time.as_ref()).and_then(to_utc);
    if let (Some(start), Some(end)) = (start_time, end_time)
        && end < start
    {
        errors.push("payload.scheduled_event.end_time is before start_time".into());
    }
    if matches!(kind, EventKind::InviteeRescheduled) && start_time.is_none() {
        errors.push("payload.event.start_time is missing: a reschedule needs the new time".into());
    }
    if !errors.is_empty() {
        return Disposition::Fail(errors);
    }

    let change = change.map_or(InviteeChange::Booked, |change| match change {
        InviteeChange::Canceled(_) => {
            let cancellation = invitee.cancellation.as_ref();
            InviteeChange::Canceled(Cancellation {
                reason: cancellation.and_then(|c| c.reason.clone()),
                canceled_by: cancellation.and_then(|c| c.canceled_by.clone()),
                canceler_type: cancellation.and_then(|c| c.canceler_type.clone()),
                canceled_at: cancellation.and_then(|c| c.created_at.as_ref()).and_then(to_utc),
                rescheduled: invitee.rescheduled,
                new_invitee_uri: non_empty(invitee.new_invitee.as_deref()),
            })
        }
        other => other,
    });
    let scheduled_event_uri = scheduled
        .map(|s| s.uri.clone())
        .filter(|uri| !uri.is_empty())
        .unwrap_or_else(|| invitee.scheduled_event_uri.clone());
    let facts = InviteeFacts {
        invitee_uri: invitee.uri.trim().to_owned(),
        email: invitee.email.trim().to_owned(),
        name: invitee.name.clone(),
        timezone: non_empty(invitee.timezone.as_deref()),
        scheduled_event_uri,
        meeting_name: scheduled.and_then(|s| s.name.clone()),
        start_time,
        end_time,
        old_invitee_uri: non_empty(invitee.old_invitee.as_deref()),
    };
    let occurred_at = event.occurred_at.as_ref().and_then(to_utc).unwrap_or(received_at);
    Disposition::Apply(Box::new(InviteeEvent {
        change,
        facts,
        occurred_at,
    }))
}

/// The URI that identifies the event's subject, when it has one.
pub fn payload_uri(event: &CalendlyEvent) -> Option<String> {
    let uri = match event.payload.as_ref()? {
        Payload::Invitee(invitee) => Some(invitee.uri.clone()),
        Payload::RoutingFormSubmission(submission) => Some(submission.uri.clone()),
        Payload::Other(other) => other.uri.clone(),
    };
    non_empty(uri.as_deref()).map(|uri| storable(&uri))
}

/// The inbox's unique key, derived from the event's identity so that every delivery of one event
/// (Calendly retries, the same test body sent twice) has the same key: the event name, the payload
/// URI and Calendly's time. Calendly sends no delivery id. Without a URI or a time (a seed-shape
/// test body missing them) the body itself is the identity.
pub fn dedupe_key(event: &CalendlyEvent, raw_body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    match (payload_uri(event), event.occurred_at.as_ref().and_then(to_utc)) {
        (Some(uri), Some(occurred_at)) => {
            hasher.update(event.event_name.as_bytes());
            hasher.update([0]);
            hasher.update(uri.as_bytes());
            hasher.update([0]);
            hasher.update(occurred_at.timestamp_micros().to_string().as_bytes());
            format!("event:{}", hex::encode(hasher.finalize()))
        }
        _ => {
            hasher.update(raw_body);
            format!("body:{}", hex::encode(hasher.finalize()))
        }
    }
}

pub fn to_utc(timestamp: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    DateTime::from_timestamp(timestamp.seconds, nanos)
}

pub fn to_timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value.map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::v1::{Invitee, ScheduledEvent};

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn created(uri: &str, email: &str, occurred: i64) -> CalendlyEvent {
        CalendlyEvent {
            event_name: "invitee.created".into(),
            kind: EventKind::InviteeCreated as i32,
            occurred_at: ts(occurred),
            created_by: String::new(),
            translation_error: String::new(),
            payload: Some(Payload::Invitee(Invitee {
                uri: uri.into(),
                email: email.into(),
                name: "N".into(),
                scheduled_event: Some(ScheduledEvent {
                    uri: "https://api.calendly.com/scheduled_events/e".into(),
                    start_time: ts(2_000),
                    end_time: ts(3_000),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn a_retry_of_the_same_event_has_the_same_dedupe_key_whatever_its_body() {
        let event = created("u1", "a@example.com", 100);
        assert_eq!(dedupe_key(&event, b"first"), dedupe_key(&event, b"second"));
    }

    #[test]
    fn events_differing_in_name_uri_or_time_have_different_keys() {
        let base = created("u1", "a@example.com", 100);
        let mut renamed = base.clone();
        renamed.event_name = "invitee.canceled".into();
        let keys = [
            dedupe_key(&base, b""),
            dedupe_key(&renamed, b""),
            dedupe_key(&created("u2", "a@example.com", 100), b""),
            dedupe_key(&created("u1", "a@example.com", 101), b""),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn a_body_without_uri_or_time_is_keyed_by_its_bytes() {
        let mut event = created("", "a@example.com", 100);
        event.occurred_at = None;
        assert!(dedupe_key(&event, b"x").starts_with("body:"));
        assert_ne!(dedupe_key(&event, b"x"), dedupe_key(&event, b"y"));
    }

    #[test]
    fn an_invitee_event_without_uri_or_email_fails_with_both_reasons() {
        let event = created(" ", "", 100);
        assert_eq!(
            classify(&event, Utc::now()),
            Disposition::Fail(vec![
                "payload.uri is missing".into(),
                "payload.email is missing".into()
            ])
        );
    }

    #[test]
    fn an_untranslatable_delivery_fails_with_the_adapters_reason() {
        let mut event = created("u", "e@x", 1);
        event.translation_error = "payload.uri: missing field".into();
        assert_eq!(
            classify(&event, Utc::now()),
            Disposition::Fail(vec![
                "the body could not be translated: payload.uri: missing field".into()
            ])
        );
    }

    #[test]
    fn text_postgresql_cannot_store_or_index_fails_the_event() {
        let long = created(&format!("https://x/{}", "a".repeat(2_000)), "e@x", 1);
        assert!(
            matches!(classify(&long, Utc::now()), Disposition::Fail(errors) if errors[0].contains("payload.uri"))
        );
        let nul = created("u", "e\0@x", 1);
        assert!(matches!(classify(&nul, Utc::now()), Disposition::Fail(errors) if errors[0].contains("NUL")));
        assert_eq!(storable("a\0b"), "a\u{fffd}b");
    }

    #[test]
    fn unknown_and_routing_events_are_ignored() {
        let mut event = created("u", "e@x", 1);
        event.kind = EventKind::Other as i32;
        assert!(matches!(classify(&event, Utc::now()), Disposition::Ignore(_)));
        event.kind = EventKind::RoutingFormSubmissionCreated as i32;
        assert!(matches!(classify(&event, Utc::now()), Disposition::Ignore(_)));
    }

    #[test]
    fn a_booking_becomes_an_applicable_event_with_its_times() {
        let Disposition::Apply(event) = classify(&created("u", "E@x.com", 100), Utc::now()) else {
            panic!("expected Apply");
        };
        assert_eq!(event.change, InviteeChange::Booked);
        assert_eq!(event.facts.start_time, DateTime::from_timestamp(2_000, 0));
        assert_eq!(
            event.occurred_at,
            DateTime::from_timestamp(100, 0).expect("valid")
        );
    }
}
