//! The working pipeline: a signed booking stored once with its reminders, the seed guide's
//! endpoints, and what a bad signature leaves behind (nothing).

use proto::v1::{GetMeetingRequest, get_meeting_request::Key};

use crate::helpers::{Backend, fixture, json, spawn_app};

const ONE_ON_ONE_INVITEE: &str = "https://api.calendly.com/scheduled_events/e0d1c2b3-a495-4867-8f9e-0a1b2c3d4e5f/invitees/1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";

/// The body of the seed guide's test-endpoint curl command, verbatim.
const SEED_GUIDE_TEST_BODY: &str = r#"{
    "eventData": {
      "event": "invitee.created",
      "time": "2024-01-15T10:00:00.000000Z",
      "payload": {
        "event": {
          "uri": "https://api.calendly.com/scheduled_events/test123",
          "name": "Test Meeting",
          "start_time": "2024-01-15T15:00:00.000000Z",
          "end_time": "2024-01-15T16:00:00.000000Z"
        },
        "invitee": {
          "uri": "https://api.calendly.com/invitees/test456",
          "email": "test@example.com",
          "name": "Test User",
          "created_at": "2024-01-15T10:00:00.000000Z"
        }
      }
    }
  }"#;

async fn health_reports_status_and_configuration_without_secrets(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .http
        .get(app.url("/webhook/calendly/health"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-tracking-id"));
    let text = response.text().await.expect("body");
    assert!(
        !text.contains(crate::helpers::SIGNING_KEY),
        "the signing key must never be shown"
    );
    assert!(
        !text.contains(crate::helpers::INTERNAL_TOKEN),
        "the internal token must never be shown"
    );
    let body: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["meetingService"]["status"], "SERVING");
    assert_eq!(body["configuration"]["webhookSecretConfigured"], true);
    assert_eq!(body["configuration"]["webhookRateLimit"]["limit"], 100);
    app.stop().await;
}

async fn the_seed_guides_test_request_stores_a_meeting(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.post_test_endpoint(SEED_GUIDE_TEST_BODY.as_bytes()).await;
    assert_eq!(response.status(), 200);
    let header_id = response.headers()["x-tracking-id"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    let body = json(response).await;
    assert_eq!(body["success"], true);
    assert_eq!(body["trackingId"], header_id.as_str());
    assert_eq!(body["event"], "invitee.created");
    assert_eq!(body["result"]["event"], "invitee.created");
    assert_eq!(body["result"]["trackingId"], header_id.as_str());
    assert_eq!(body["result"]["processed"], true);
    assert_eq!(body["result"]["leadUpdated"], false);
    assert_eq!(body["result"]["errors"], serde_json::json!([]));
    assert_eq!(app.count("meetings").await, 1);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM meetings WHERE calendly_invitee_id = 'https://api.calendly.com/invitees/test456' AND status = 'scheduled'").await,
        1
    );
    // The seed's meeting is in 2024: every reminder time has passed, so none is created.
    assert_eq!(app.count("meeting_reminders").await, 0);
    app.stop().await;
}

async fn a_signed_booking_stores_one_meeting_and_its_future_reminders(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.post_signed(&fixture("invitee-created-one-on-one.json")).await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["duplicate"], false);
    assert_eq!(body["result"]["outcome"], "processed");
    assert_eq!(body["result"]["remindersScheduled"], 3);

    let mut grpc = app.grpc().await;
    let meeting = grpc
        .get_meeting(GetMeetingRequest {
            key: Some(Key::CalendlyInviteeUri(ONE_ON_ONE_INVITEE.into())),
        })
        .await
        .expect("the meeting exists")
        .into_inner();
    assert_eq!(Some(meeting.id), body["result"]["meetingId"].as_i64());
    assert_eq!(meeting.status, "scheduled");
    assert_eq!(meeting.invitee_email, "jordan.ellis@example.com");
    assert_eq!(meeting.meeting_name.as_deref(), Some("30 Minute Discovery Call"));
    let start = meeting.start_time.expect("start time").seconds;
    let reminders: Vec<_> = meeting
        .reminders
        .iter()
        .map(|r| {
            (
                r.reminder_type.as_str(),
                start - r.scheduled_time.as_ref().expect("time").seconds,
                r.state.as_str(),
            )
        })
        .collect();
    assert_eq!(
        reminders,
        [
            ("24h", 86_400, "pending"),
            ("1h", 3_600, "pending"),
            ("15min", 900, "pending")
        ]
    );
    assert_eq!(app.count("webhook_events").await, 1);
    app.stop().await;
}

async fn the_same_delivery_again_is_a_duplicate_that_stores_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = fixture("invitee-created-one-on-one.json");
    assert_eq!(app.post_signed(&body).await.status(), 200);
    let rows_after_first = app.total_rows().await;

    // A retry is signed again with a new timestamp; the event's identity is what counts.
    let retry = app.post_signed(&body).await;
    assert_eq!(retry.status(), 200);
    let retry = json(retry).await;
    assert_eq!(retry["success"], true);
    assert_eq!(retry["duplicate"], true);
    assert_eq!(retry["result"]["outcome"], "duplicate");
    assert_eq!(app.total_rows().await, rows_after_first);
    app.stop().await;
}

async fn a_wrong_signature_is_rejected_and_stores_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = fixture("invitee-created-one-on-one.json");
    let now = chrono::Utc::now().timestamp();
    let forged = adapter::signature::sign(b"not-the-key", now, &body);
    let response = app.post_webhook(&body, Some(forged)).await;
    assert_eq!(response.status(), 401);
    let header_id = response.headers()["x-tracking-id"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    let error = json(response).await;
    assert_eq!(error["code"], "INVALID_SIGNATURE");
    assert_eq!(error["trackingId"], header_id.as_str());
    assert!(error["error"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(error["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(app.total_rows().await, 0);
    app.stop().await;
}

/// The inbox keeps each body exactly as it was signed, however PostgreSQL compresses it (lz4
/// since `m20261202_000001`; a body of a few KB is over its 2 KB threshold).
async fn the_inbox_keeps_the_signed_body_byte_for_byte(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = fixture("invitee-created-with-utm-and-questions.json");
    assert!(
        body.len() > 2_048,
        "the body must be large enough to be compressed"
    );
    assert_eq!(app.post_signed(&body).await.status(), 200);
    let hex: String = body.iter().map(|byte| format!("{byte:02x}")).collect();
    let literal = match backend {
        Backend::Postgres => format!("'\\x{hex}'::bytea"),
        Backend::Sqlite => format!("X'{hex}'"),
    };
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM webhook_events WHERE raw_body = {literal}"
        ))
        .await,
        1
    );
    if backend == Backend::Postgres {
        assert_eq!(
            app.scalar("SELECT COUNT(*) FROM webhook_events WHERE pg_column_compression(raw_body) = 'lz4'")
                .await,
            1,
            "the raw body is stored lz4-compressed"
        );
        assert_eq!(
            app.scalar(
                "SELECT COUNT(*) FROM pg_attribute WHERE attrelid = 'webhook_events'::regclass \
                 AND attname IN ('raw_body', 'event_proto') AND attcompression = 'l'"
            )
            .await,
            2,
            "both stored forms of an event are set to lz4"
        );
    }
    app.stop().await;
}

async fn a_booking_links_the_lead_with_the_same_email_in_any_case(backend: Backend) {
    let app = spawn_app(backend).await;
    app.execute(
        "INSERT INTO leads (email, name, status, created_at, updated_at) \
         VALUES ('jordan.ellis@example.com', 'Jordan', 'new', '2030-01-01T00:00:00+00:00', '2030-01-01T00:00:00+00:00')",
    )
    .await;
    let body = String::from_utf8(fixture("invitee-created-one-on-one.json"))
        .expect("UTF-8")
        .replace("jordan.ellis@example.com", "Jordan.Ellis@Example.COM");
    let response = json(app.post_signed(body.as_bytes()).await).await;
    assert_eq!(response["result"]["leadUpdated"], true);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM meetings m JOIN leads l ON l.id = m.lead_id WHERE l.status = 'meeting_scheduled'")
            .await,
        1
    );
    app.stop().await;
}

async fn the_seed_guides_minimal_debug_request_is_kept_as_failed(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .post_test_endpoint(br#"{"eventData":{"event":"invitee.created","payload":{"invitee":{"email":"test@example.com"}}}}"#)
        .await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["success"], true);
    assert_eq!(body["result"]["processed"], false);
    assert_eq!(body["result"]["outcome"], "failed");
    assert_eq!(
        body["result"]["errors"],
        serde_json::json!(["payload.uri is missing"])
    );
    assert_eq!(app.count("meetings").await, 0);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM webhook_events WHERE outcome = 'failed'")
            .await,
        1
    );
    app.stop().await;
}

async fn the_seed_guides_rate_limit_loop_passes_and_the_eleventh_request_is_throttled(backend: Backend) {
    let app = spawn_app(backend).await;
    for i in 1..=10 {
        let body = format!(
            r#"{{"eventData":{{"event":"invitee.created","time":"2024-01-15T10:00:00.000000Z","payload":{{"event":{{"uri":"https://api.calendly.com/scheduled_events/test{i}","name":"Test Meeting","start_time":"2024-01-15T15:00:00.000000Z","end_time":"2024-01-15T16:00:00.000000Z"}},"invitee":{{"uri":"https://api.calendly.com/invitees/test{i}","email":"test{i}@example.com","name":"Test User","created_at":"2024-01-15T10:00:00.000000Z"}}}}}}}}"#
        );
        assert_eq!(
            app.post_test_endpoint(body.as_bytes()).await.status(),
            200,
            "request {i}"
        );
    }
    let throttled = app.post_test_endpoint(SEED_GUIDE_TEST_BODY.as_bytes()).await;
    assert_eq!(throttled.status(), 429);
    let retry_after: u64 = throttled.headers()["retry-after"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("seconds");
    assert!(
        (1..=30).contains(&retry_after),
        "one request comes back every 30 s, got {retry_after}"
    );
    assert_eq!(json(throttled).await["code"], "RATE_LIMITED");
    assert_eq!(app.count("meetings").await, 10);
    app.stop().await;
}

async fn the_meeting_api_refuses_callers_without_the_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
        .expect("URL")
        .connect()
        .await
        .expect("connect");
    let mut anonymous = proto::v1::meeting_service_client::MeetingServiceClient::new(channel.clone());
    let status = anonymous
        .get_meeting(GetMeetingRequest {
            key: Some(Key::Id(1)),
        })
        .await
        .expect_err("no token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    // Probes send no metadata: health stays open.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: proto::MEETING_SERVICE_NAME.into(),
        })
        .await
        .expect("health answers")
        .into_inner();
    assert_eq!(
        serving.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    app.stop().await;
}

crate::on_both_backends!(
    health_reports_status_and_configuration_without_secrets,
    the_seed_guides_test_request_stores_a_meeting,
    a_signed_booking_stores_one_meeting_and_its_future_reminders,
    the_same_delivery_again_is_a_duplicate_that_stores_nothing,
    a_wrong_signature_is_rejected_and_stores_nothing,
    the_inbox_keeps_the_signed_body_byte_for_byte,
    a_booking_links_the_lead_with_the_same_email_in_any_case,
    the_seed_guides_minimal_debug_request_is_kept_as_failed,
    the_seed_guides_rate_limit_loop_passes_and_the_eleventh_request_is_throttled,
    the_meeting_api_refuses_callers_without_the_token,
);
