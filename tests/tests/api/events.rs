//! Every Calendly event applied once and in any order: cancellations, reschedules, no-shows,
//! group events, unknown events, seed aliases, duplicates at the same instant, and replay.

use prost::Message;
use proto::v1::{ListWebhookEventsRequest, Outcome, ReplayWebhookEventRequest};

use crate::helpers::{
    Backend, fixture, future_seconds, in_the_future, json, live_reminders, spawn_app, spawn_app_with,
};

const JORDAN: &str = "https://api.calendly.com/scheduled_events/e0d1c2b3-a495-4867-8f9e-0a1b2c3d4e5f/invitees/1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";

/// The invitee URI of a fixture.
fn invitee_uri(name: &str) -> String {
    let body: serde_json::Value = serde_json::from_slice(&fixture(name)).expect("JSON fixture");
    body["payload"]["uri"].as_str().expect("payload.uri").to_owned()
}

async fn a_cancellation_records_who_and_why_and_cancels_reminders(backend: Backend) {
    let app = spawn_app(backend).await;
    add_lead(&app, "jordan.ellis@example.com").await;
    let answers = app
        .deliver(&[
            "invitee-created-one-on-one.json",
            "invitee-canceled-by-invitee.json",
        ])
        .await;
    assert_eq!(
        answers[1]["result"]["leadUpdated"], true,
        "the lead's status follows the meeting"
    );
    let meeting = app.meeting(JORDAN).await;
    assert_eq!(meeting.status, "canceled");
    assert_eq!(meeting.canceled_by.as_deref(), Some("Jordan Ellis"));
    assert_eq!(meeting.canceler_type.as_deref(), Some("invitee"));
    assert_eq!(
        meeting.cancel_reason.as_deref(),
        Some("Something came up at work, can we try again next month?")
    );
    assert!(live_reminders(&meeting).is_empty());
    assert_eq!(meeting.reminders.len(), 3, "canceled reminders keep their rows");
    assert_eq!(
        lead_status(&app, "jordan.ellis@example.com").await,
        "meeting_canceled"
    );
    app.stop().await;
}

async fn a_host_cancellation_without_a_reason_keeps_the_empty_reason(backend: Backend) {
    let app = spawn_app(backend).await;
    app.deliver(&[
        "invitee-created-with-utm-and-questions.json",
        "invitee-canceled-by-host.json",
    ])
    .await;
    let meeting = app.meeting(&invitee_uri("invitee-canceled-by-host.json")).await;
    assert_eq!(meeting.status, "canceled");
    assert_eq!(meeting.canceler_type.as_deref(), Some("host"));
    assert_eq!(meeting.cancel_reason.as_deref(), Some(""));
    app.stop().await;
}

async fn a_cancel_that_arrives_before_its_booking_still_ends_canceled(backend: Backend) {
    let app = spawn_app(backend).await;
    app.deliver(&[
        "invitee-canceled-by-invitee.json",
        "invitee-created-one-on-one.json",
    ])
    .await;
    let meeting = app.meeting(JORDAN).await;
    assert_eq!(meeting.status, "canceled");
    assert!(
        live_reminders(&meeting).is_empty(),
        "a late booking must not revive reminders"
    );
    assert_eq!(
        meeting.start_time.expect("start").seconds,
        future_seconds("2030-03-11T16:00:00Z"),
        "the booking's start, as the fixture says"
    );
    app.stop().await;
}

async fn a_reschedule_links_both_meetings_in_either_order(backend: Backend) {
    for order in [
        ["reschedule-canceled-old.json", "reschedule-created-new.json"],
        ["reschedule-created-new.json", "reschedule-canceled-old.json"],
    ] {
        let app = spawn_app(backend).await;
        app.deliver(&order).await;
        let new_uri = invitee_uri("reschedule-created-new.json");
        let old = app.meeting(&invitee_uri("reschedule-canceled-old.json")).await;
        let new = app.meeting(&new_uri).await;
        assert_eq!(old.status, "rescheduled", "{order:?}");
        assert_eq!(old.rescheduled_to_invitee_uri.as_deref(), Some(new_uri.as_str()));
        assert!(live_reminders(&old).is_empty());
        assert_eq!(new.status, "scheduled");
        assert_eq!(
            new.rescheduled_from_invitee_uri.as_deref(),
            Some(old.calendly_invitee_uri.as_str())
        );
        assert_eq!(live_reminders(&new), ["24h", "1h", "15min"]);
        assert_eq!(
            new.start_time.expect("start").seconds,
            future_seconds("2030-03-13T19:30:00Z"),
            "the new half's start"
        );
        app.stop().await;
    }
}

async fn a_no_show_mark_follows_the_newest_event_in_either_order(backend: Backend) {
    for (order, expected) in [
        (vec!["invitee-no-show-created.json"], "no_show"),
        (
            vec!["invitee-no-show-created.json", "invitee-no-show-deleted.json"],
            "scheduled",
        ),
        (
            vec!["invitee-no-show-deleted.json", "invitee-no-show-created.json"],
            "scheduled",
        ),
    ] {
        let app = spawn_app(backend).await;
        app.deliver(&order).await;
        let meeting = app.meeting(&invitee_uri("invitee-no-show-created.json")).await;
        assert_eq!(meeting.status, expected, "{order:?}");
        assert_eq!(meeting.no_show, expected == "no_show");
        // The fixture's meeting lies ahead: once the mark is removed its reminders are due again.
        let expected_reminders: &[&str] = if expected == "no_show" {
            &[]
        } else {
            &["24h", "1h", "15min"]
        };
        assert_eq!(live_reminders(&meeting), expected_reminders, "{order:?}");
        app.stop().await;
    }
}

async fn a_group_event_keeps_one_meeting_per_invitee(backend: Backend) {
    let app = spawn_app(backend).await;
    app.deliver(&[
        "group-event-invitee-a-created.json",
        "group-event-invitee-b-created.json",
    ])
    .await;
    let a = app
        .meeting(&invitee_uri("group-event-invitee-a-created.json"))
        .await;
    let b = app
        .meeting(&invitee_uri("group-event-invitee-b-created.json"))
        .await;
    assert_ne!(a.id, b.id);
    assert_eq!(a.calendly_event_uri, b.calendly_event_uri);
    assert_eq!((a.status.as_str(), b.status.as_str()), ("scheduled", "scheduled"));
    assert_eq!(app.count("meeting_reminders").await, 6);
    app.stop().await;
}

async fn events_that_change_no_meeting_are_stored_and_acknowledged_as_ignored(backend: Backend) {
    let app = spawn_app(backend).await;
    let answers = app
        .deliver(&[
            "routing-form-submission-created.json",
            "event-type-updated-unhandled.json",
        ])
        .await;
    for answer in &answers {
        assert_eq!(answer["success"], true);
        assert_eq!(answer["result"]["outcome"], "ignored");
        assert_eq!(answer["result"]["processed"], false);
    }
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM webhook_events WHERE outcome = 'ignored'")
            .await,
        2
    );
    assert_eq!(app.count("meetings").await, 0);
    app.stop().await;
}

async fn every_fixture_is_accepted_and_applied(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut names: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/calendly/fixtures"))
            .expect("fixtures directory")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".json"))
            .collect();
    names.sort();
    assert_eq!(names.len(), 15);
    for name in &names {
        let response = app.post_signed(&fixture(name)).await;
        assert_eq!(response.status(), 200, "{name}");
        let answer = json(response).await;
        let expected = if name.starts_with("routing-form") || name.starts_with("event-type") {
            "ignored"
        } else {
            "processed"
        };
        assert_eq!(answer["result"]["outcome"], expected, "{name}");
    }
    // The legacy shape has no scheduled event: the meeting is kept without times or reminders.
    let legacy = app
        .meeting(&invitee_uri(
            "invitee-created-legacy-without-scheduled-event.json",
        ))
        .await;
    assert!(legacy.start_time.is_none());
    assert!(legacy.reminders.is_empty());
    let unicode = app
        .meeting(&invitee_uri("invitee-created-unicode-name.json"))
        .await;
    assert_eq!(unicode.invitee_name, "山田 太郎 🌸");
    app.stop().await;
}

async fn the_seed_aliases_reschedule_and_mark_no_shows(backend: Backend) {
    let app = spawn_app(backend).await;
    let seed = |event: &str, time: &str, start: &str| {
        in_the_future(&format!(
            r#"{{"eventData":{{"event":"{event}","time":"{time}","payload":{{"event":{{"uri":"https://api.calendly.com/scheduled_events/seed-1","name":"Seed Call","start_time":"{start}","end_time":"2031-01-01T00:00:00Z"}},"invitee":{{"uri":"https://api.calendly.com/invitees/seed-1","email":"seed@example.com","name":"Seed"}}}}}}}}"#
        ))
    };
    for (event, time, start) in [
        ("invitee.created", "2030-01-01T00:00:00Z", "2030-06-01T10:00:00Z"),
        (
            "invitee.rescheduled",
            "2030-01-02T00:00:00Z",
            "2030-07-01T10:00:00Z",
        ),
    ] {
        assert_eq!(
            app.post_test_endpoint(seed(event, time, start).as_bytes())
                .await
                .status(),
            200
        );
    }
    let moved = app.meeting("https://api.calendly.com/invitees/seed-1").await;
    assert_eq!(moved.status, "scheduled");
    let new_start = future_seconds("2030-07-01T10:00:00Z");
    assert_eq!(
        moved.start_time.expect("start").seconds,
        new_start,
        "the reschedule's time"
    );
    let due: Vec<i64> = moved
        .reminders
        .iter()
        .filter(|r| r.state == "pending")
        .map(|r| new_start - r.scheduled_time.as_ref().expect("time").seconds)
        .collect();
    assert_eq!(due, [86_400, 3_600, 900], "reminders moved with the meeting");

    let no_show = seed("invitee.no_show", "2030-07-01T11:00:00Z", "2030-07-01T10:00:00Z");
    assert_eq!(app.post_test_endpoint(no_show.as_bytes()).await.status(), 200);
    assert_eq!(
        app.meeting("https://api.calendly.com/invitees/seed-1")
            .await
            .status,
        "no_show"
    );
    app.stop().await;
}

async fn twenty_identical_deliveries_at_once_store_one_meeting(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = fixture("invitee-created-one-on-one.json");
    // All twenty are in flight before any answer is awaited.
    let answers = futures::future::join_all((0..20).map(|_| app.post_signed(&body))).await;
    let mut processed = 0;
    for response in answers {
        assert_eq!(response.status(), 200);
        let answer = json(response).await;
        match answer["result"]["outcome"].as_str() {
            Some("processed") => processed += 1,
            Some("duplicate") => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(processed, 1);
    assert_eq!(app.count("meetings").await, 1);
    assert_eq!(app.count("meeting_reminders").await, 3);
    assert_eq!(app.count("webhook_events").await, 1);
    app.stop().await;
}

async fn a_failed_event_is_listed_and_applies_on_replay_after_a_fix(backend: Backend) {
    let app = spawn_app(backend).await;
    // An invitee event with no URI cannot be applied; it is kept as failed and acknowledged.
    let broken = in_the_future(
        r#"{"eventData":{"event":"invitee.created","time":"2030-01-01T00:00:00Z","payload":{"event":{"uri":"https://api.calendly.com/scheduled_events/x","start_time":"2030-06-01T10:00:00Z","end_time":"2030-06-01T11:00:00Z"},"invitee":{"email":"fix@example.com","name":"Fix"}}}}"#,
    );
    let answer = json(app.post_test_endpoint(broken.as_bytes()).await).await;
    assert_eq!(answer["result"]["outcome"], "failed");
    let id = answer["result"]["webhookEventId"].as_i64().expect("inbox id");

    let mut grpc = app.grpc().await;
    let failed = grpc
        .list_webhook_events(ListWebhookEventsRequest {
            outcome: Outcome::Failed as i32,
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(failed.events.iter().map(|e| e.id).collect::<Vec<_>>(), [id]);
    assert!(
        failed.events[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("payload.uri"))
    );

    // Stand-in for a fix in the translation: the stored event gains the URI it lacked.
    let row = app
        .scalar(&format!(
            "SELECT COUNT(*) FROM webhook_events WHERE id = {id} AND event_proto IS NOT NULL"
        ))
        .await;
    assert_eq!(row, 1);
    let mut event =
        proto::v1::CalendlyEvent::decode(stored_proto(&app, id).await.as_slice()).expect("stored protobuf");
    if let Some(proto::v1::calendly_event::Payload::Invitee(invitee)) = &mut event.payload {
        invitee.uri = "https://api.calendly.com/invitees/fixed".into();
    }
    store_proto(&app, id, &event.encode_to_vec()).await;

    let replayed = grpc
        .replay_webhook_event(ReplayWebhookEventRequest { id })
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replayed.outcome(), Outcome::Processed);
    assert_eq!(
        app.meeting("https://api.calendly.com/invitees/fixed")
            .await
            .status,
        "scheduled"
    );
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM meeting_changes WHERE webhook_event_id = {id} AND kind = 'created'"
        ))
        .await,
        1,
        "a replay that applies is a change like a webhook"
    );
    let listed = grpc
        .list_webhook_events(ListWebhookEventsRequest {
            outcome: Outcome::Processed as i32,
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.events[0].attempts, 2);
    app.stop().await;
}

async fn text_the_database_cannot_store_gets_its_outcome_not_a_server_error(backend: Backend) {
    let app = spawn_app(backend).await;
    let long_uri = format!("https://api.calendly.com/invitees/{}", "x".repeat(3_000));
    // classify() fails an invitee event whose text cannot be stored, and ignores any event name
    // it does not apply, whatever that name contains.
    let cases = [
        (
            r#"{"eventData":{"event":"invitee.created","time":"2030-01-01T00:00:00Z","payload":{"event":{"uri":"e","start_time":"2030-06-01T10:00:00Z","end_time":"2030-06-01T11:00:00Z"},"invitee":{"uri":"https://api.calendly.com/invitees/nul","email":"a\u0000b@example.com","name":"N\u0000"}}}}"#.to_owned(),
            "failed",
            "contains a NUL character",
        ),
        (
            format!(r#"{{"eventData":{{"event":"invitee.created","time":"2030-01-01T00:00:00Z","payload":{{"invitee":{{"uri":"{long_uri}","email":"a@example.com"}}}}}}}}"#),
            "failed",
            "payload.uri is longer than 1024 bytes",
        ),
        (
            r#"{"eventData":{"event":"odd\u0000name","payload":{}}}"#.to_owned(),
            "ignored",
            "is not applied to meetings",
        ),
    ];
    for (body, outcome, reason) in cases {
        let response = app.post_test_endpoint(body.as_bytes()).await;
        assert_eq!(response.status(), 200, "{body:.80}");
        let answer = json(response).await;
        assert_eq!(answer["result"]["outcome"], outcome, "{body:.80}: {answer}");
        let errors = answer["result"]["errors"].as_array().expect("errors");
        assert!(
            errors
                .iter()
                .any(|e| e.as_str().is_some_and(|e| e.contains(reason))),
            "{body:.80}: {errors:?}"
        );
    }
    assert_eq!(app.count("meetings").await, 0);
    assert_eq!(app.count("webhook_events").await, 3);
    app.stop().await;
}

async fn unknown_invitees_create_leads_only_when_configured(backend: Backend) {
    for (setting, leads) in [("false", 0), ("true", 1)] {
        let app = spawn_app_with(backend, &[("CREATE_LEADS_FOR_UNKNOWN_INVITEES", setting)]).await;
        let answer = app.deliver(&["invitee-created-one-on-one.json"]).await.remove(0);
        assert_eq!(app.count("leads").await, leads);
        assert_eq!(answer["result"]["leadUpdated"], leads == 1);
        if leads == 1 {
            assert_eq!(
                lead_status(&app, "jordan.ellis@example.com").await,
                "meeting_scheduled"
            );
        }
        app.stop().await;
    }
}

async fn reminder_offsets_come_from_the_settings(backend: Backend) {
    let app = spawn_app_with(backend, &[("REMINDER_OFFSETS", "2d,30min")]).await;
    app.deliver(&["invitee-created-one-on-one.json"]).await;
    assert_eq!(live_reminders(&app.meeting(JORDAN).await), ["2d", "30min"]);
    app.stop().await;
}

async fn add_lead(app: &crate::helpers::TestApp, email: &str) {
    app.execute(&format!(
        "INSERT INTO leads (email, name, status, created_at, updated_at) \
         VALUES ('{email}', NULL, 'new', '2030-01-01T00:00:00+00:00', '2030-01-01T00:00:00+00:00')"
    ))
    .await;
}

async fn lead_status(app: &crate::helpers::TestApp, email: &str) -> String {
    use sea_orm::{ConnectionTrait, Statement};
    let row = app
        .db
        .query_one_raw(Statement::from_string(
            app.db.get_database_backend(),
            format!("SELECT status FROM leads WHERE email = '{email}'"),
        ))
        .await
        .expect("query")
        .expect("the lead exists");
    row.try_get_by_index::<String>(0).expect("status")
}

async fn stored_proto(app: &crate::helpers::TestApp, id: i64) -> Vec<u8> {
    use sea_orm::{ConnectionTrait, Statement};
    let row = app
        .db
        .query_one_raw(Statement::from_string(
            app.db.get_database_backend(),
            format!("SELECT event_proto FROM webhook_events WHERE id = {id}"),
        ))
        .await
        .expect("query")
        .expect("row");
    row.try_get_by_index::<Vec<u8>>(0).expect("bytes")
}

async fn store_proto(app: &crate::helpers::TestApp, id: i64, bytes: &[u8]) {
    use sea_orm::{ConnectionTrait, Statement, Value};
    let backend = app.db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => "UPDATE webhook_events SET event_proto = $1 WHERE id = $2",
        _ => "UPDATE webhook_events SET event_proto = ? WHERE id = ?",
    };
    app.db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [Value::from(bytes.to_vec()), Value::from(id)],
        ))
        .await
        .expect("update");
}

crate::on_both_backends!(
    a_cancellation_records_who_and_why_and_cancels_reminders,
    a_host_cancellation_without_a_reason_keeps_the_empty_reason,
    a_cancel_that_arrives_before_its_booking_still_ends_canceled,
    a_reschedule_links_both_meetings_in_either_order,
    a_no_show_mark_follows_the_newest_event_in_either_order,
    a_group_event_keeps_one_meeting_per_invitee,
    events_that_change_no_meeting_are_stored_and_acknowledged_as_ignored,
    every_fixture_is_accepted_and_applied,
    the_seed_aliases_reschedule_and_mark_no_shows,
    twenty_identical_deliveries_at_once_store_one_meeting,
    a_failed_event_is_listed_and_applies_on_replay_after_a_fix,
    unknown_invitees_create_leads_only_when_configured,
    reminder_offsets_come_from_the_settings,
    text_the_database_cannot_store_gets_its_outcome_not_a_server_error,
);
