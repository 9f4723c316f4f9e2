//! What operators rely on: one tracking id through both services' logs, and health that follows
//! the database.

use std::time::Duration;

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{
    Backend, FaultProxy, SIGNING_KEY, booking, fixture, json, log_lines_containing, spawn_app,
    spawn_app_routed, spawn_app_unhealthy, spawn_app_with,
};

async fn one_tracking_id_follows_a_delivery_through_both_services_logs(backend: Backend) {
    let app = spawn_app(backend).await;
    let request_id = format!("trace-{}", uuid::Uuid::new_v4().simple());
    let body = fixture("invitee-created-one-on-one.json");
    let signature = adapter::signature::sign(
        crate::helpers::SIGNING_KEY.as_bytes(),
        chrono::Utc::now().timestamp(),
        &body,
    );
    let response = app
        .http
        .post(app.url("/webhook/calendly"))
        .header("content-type", "application/json")
        .header("x-request-id", &request_id)
        .header("calendly-webhook-signature", signature)
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.headers()["x-tracking-id"],
        request_id.as_str(),
        "an incoming X-Request-Id is kept"
    );
    assert_eq!(json(response).await["trackingId"], request_id.as_str());

    let lines = log_lines_containing(&request_id);
    let in_span = |span: &str, message: &str| {
        lines.iter().any(|line| {
            line["span"]["name"] == span
                && line["span"]["tracking_id"] == request_id.as_str()
                && line["message"].as_str().is_some_and(|m| m.contains(message))
        })
    };
    assert!(in_span("http", "delivery processed"), "adapter: {lines:#?}");
    assert!(
        lines
            .iter()
            .any(|line| line["message"] == "delivery processed" && line["span"]["client"] == "127.0.0.1"),
        "the one line per delivery names the client: {lines:#?}"
    );
    assert!(in_span("grpc", "event stored"), "meeting service: {lines:#?}");

    // A rejection is logged with its tracking id too.
    let forged_id = format!("forged-{}", uuid::Uuid::new_v4().simple());
    let forged = app
        .http
        .post(app.url("/webhook/calendly"))
        .header("content-type", "application/json")
        .header("x-request-id", &forged_id)
        .header("calendly-webhook-signature", "t=1,v1=00")
        .body("{}")
        .send()
        .await
        .expect("request");
    // A v1 that is not 64 hex digits is refused before any MAC is computed.
    assert_eq!(forged.status(), 401);
    assert_eq!(forged.headers()["x-tracking-id"], forged_id.as_str());
    let forged = json(forged).await;
    assert_eq!(forged["code"], "MALFORMED_SIGNATURE");
    assert_eq!(forged["trackingId"], forged_id.as_str());
    let rejected = log_lines_containing(&forged_id);
    assert!(
        rejected
            .iter()
            .any(|l| l["level"] == "WARN" && l["span"]["tracking_id"] == forged_id.as_str())
    );
    app.stop().await;
}

async fn a_sane_request_id_is_kept_and_any_other_is_replaced_by_a_new_uuid(backend: Backend) {
    let app = spawn_app(backend).await;
    let longest = "a".repeat(128);
    let too_long = "a".repeat(129);
    let cases: [(&[u8], Option<&str>); 11] = [
        (b"trace-0123", Some("trace-0123")),
        (b"A.b_c-d:9", Some("A.b_c-d:9")),
        (longest.as_bytes(), Some(&longest)),
        (too_long.as_bytes(), None),
        (b"", None),
        (b"has space", None),
        (b"semi;colon", None),
        (b"slash/x", None),
        (b"quote\"d", None),
        (b"tab\tinside", None),
        ("caf\u{e9}".as_bytes(), None),
    ];
    let mut replacements = std::collections::HashSet::new();
    for (sent, kept) in cases {
        let value = reqwest::header::HeaderValue::from_bytes(sent).expect("a header value");
        let response = app
            .http
            .get(app.url("/webhook/calendly/health"))
            .header("x-request-id", value)
            .send()
            .await
            .expect("request");
        let shown = String::from_utf8_lossy(sent).into_owned();
        let header = response.headers()["x-tracking-id"]
            .to_str()
            .expect("ASCII")
            .to_owned();
        assert_eq!(json(response).await["trackingId"], header.as_str(), "{shown:?}");
        match kept {
            Some(kept) => assert_eq!(header, kept, "{shown:?} is kept"),
            None => {
                let id = uuid::Uuid::parse_str(&header)
                    .unwrap_or_else(|_| panic!("{shown:?} is replaced by a UUID, got {header:?}"));
                assert_eq!(id.get_version(), Some(uuid::Version::Random), "{shown:?}");
                assert!(replacements.insert(header), "{shown:?}: each replacement is new");
            }
        }
    }
    app.stop().await;
}

async fn health_is_degraded_and_says_unreachable_while_nothing_listens_at_the_meeting_service_url(
    backend: Backend,
) {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let url = format!("http://{closed}");
    let app = spawn_app_unhealthy(backend, &[("MEETING_SERVICE_URL", &url)]).await;
    let (status, body) = app.health().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["service"], "calendly-webhook-adapter");
    assert_eq!(
        body["meetingService"]["status"], "UNREACHABLE (Unavailable)",
        "a refused connection is gRPC UNAVAILABLE: {body}"
    );
    assert_eq!(body["meetingService"]["url"], url.as_str());
    assert!(
        body["trackingId"].is_string() && body["timestamp"].is_string(),
        "{body}"
    );

    // Nothing can be stored, so a delivery is a 503 that Calendly retries.
    let delivery = app.post_signed(&fixture("invitee-created-one-on-one.json")).await;
    assert_eq!(delivery.status(), 503);
    assert_eq!(json(delivery).await["code"], "MEETING_SERVICE_UNAVAILABLE");
    assert_eq!(app.total_rows().await, 0);
    app.stop().await;
}

async fn a_meeting_service_prunes_raw_bodies_past_retention_as_it_starts(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut ids = Vec::new();
    for n in 0..4 {
        let answer = json(app.post_signed(&booking(n)).await).await;
        ids.push(answer["result"]["webhookEventId"].as_i64().expect("inbox id"));
    }
    for (id, days) in ids.iter().zip([61, 31, 29, 0]) {
        received_days_ago(&app, *id, days).await;
    }
    let has_body = |id: i64| {
        let app = &app;
        async move {
            app.scalar(&format!(
                "SELECT COUNT(*) FROM webhook_events WHERE id = {id} AND raw_body IS NOT NULL"
            ))
            .await
                == 1
        }
    };

    // The stack's own meeting service pruned at its start, before these rows existed, and waits
    // an hour for its next pass: each replica started here prunes at its start, with the
    // retention it is given.
    for (overrides, pruned, kept) in [
        (&[("RAW_BODY_RETENTION_DAYS", "60")][..], ids[0], &ids[1..]),
        (&[][..], ids[1], &ids[2..]),
    ] {
        let replica = app.start_meeting_replica(overrides).await;
        wait_until(|| async { !has_body(pruned).await }, "the old raw body is pruned").await;
        for id in kept {
            assert!(has_body(*id).await, "{overrides:?}: row {id} keeps its raw body");
        }
        replica.stop().await;
    }
    // The default (30 days) kept the 29-day-old body; the rows themselves all stay.
    assert_eq!(app.count("webhook_events").await, 4);
    let retry = json(app.post_signed(&booking(0)).await).await;
    assert_eq!(
        retry["result"]["outcome"], "duplicate",
        "a late retry is still recognised"
    );
    assert_eq!(retry["result"]["webhookEventId"], ids[0]);
    app.stop().await;
}

/// Moves an inbox row's receive time `days` into the past.
async fn received_days_ago(app: &crate::helpers::TestApp, id: i64, days: i64) {
    use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
    let received = chrono::Utc::now() - chrono::Duration::days(days);
    let backend = app.db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => "UPDATE webhook_events SET received_at = $1 WHERE id = $2",
        _ => "UPDATE webhook_events SET received_at = ? WHERE id = ?",
    };
    app.db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [Value::from(received), Value::from(id)],
        ))
        .await
        .expect("update");
}

async fn reflection_lists_the_services_for_grpcurl_style_tools(backend: Backend) {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = spawn_app(backend).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
        .expect("URL")
        .connect()
        .await
        .expect("connect");
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers.message().await.expect("stream").expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("expected a service list");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&proto::MEETING_SERVICE_NAME), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    app.stop().await;
}

crate::on_both_backends!(
    one_tracking_id_follows_a_delivery_through_both_services_logs,
    a_sane_request_id_is_kept_and_any_other_is_replaced_by_a_new_uuid,
    health_is_degraded_and_says_unreachable_while_nothing_listens_at_the_meeting_service_url,
    a_meeting_service_prunes_raw_bodies_past_retention_as_it_starts,
    reflection_lists_the_services_for_grpcurl_style_tools;
    postgres_only: health_and_answers_follow_the_database_down_and_back,
    health_says_not_serving_while_the_meeting_service_drains_in_flight_calls,
);

async fn health_status(channel: &tonic::transport::Channel, service: &str) -> Option<ServingStatus> {
    let mut health = HealthClient::new(channel.clone());
    let request = HealthCheckRequest {
        service: service.into(),
    };
    health.check(request).await.ok().map(|r| r.into_inner().status())
}

async fn wait_for(channel: &tonic::transport::Channel, wanted: ServingStatus) {
    for _ in 0..600 {
        if health_status(channel, proto::MEETING_SERVICE_NAME).await == Some(wanted)
            && health_status(channel, "").await == Some(wanted)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("health did not become {wanted:?} within a minute");
}

/// Needs a network database, so PostgreSQL only: the meeting service reaches it through a proxy
/// this test cuts and restores.
async fn health_and_answers_follow_the_database_down_and_back(backend: Backend) {
    let proxy = FaultProxy::start("127.0.0.1:5432".parse().expect("address")).await;
    let proxied = proxy.addr;
    let app = spawn_app_routed(backend, &[("MEETING_SERVICE_TIMEOUT_MS", "8000")], &move |url| {
        let (scheme, rest) = url.split_once("://").expect("URL");
        let (authority, path) = rest.split_once('/').expect("database name");
        let credentials = authority
            .rsplit_once('@')
            .map_or(String::new(), |(user, _)| format!("{user}@"));
        format!("{scheme}://{credentials}{proxied}/{path}")
    })
    .await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
        .expect("URL")
        .connect()
        .await
        .expect("connect");
    wait_for(&channel, ServingStatus::Serving).await;

    proxy.cut();
    wait_for(&channel, ServingStatus::NotServing).await;
    // While the database is known down, every delivery is refused the same way (and at once,
    // which scripts/fault-runs.sh measures): never a 2xx, never a 500.
    for _ in 0..5 {
        let during = app.post_signed(&fixture("invitee-created-one-on-one.json")).await;
        assert_eq!(during.status(), 503, "never 2xx while nothing can be stored");
        assert_eq!(
            during.headers().get("retry-after").and_then(|v| v.to_str().ok()),
            Some("5")
        );
        assert_eq!(json(during).await["code"], "MEETING_SERVICE_UNAVAILABLE");
    }
    let (status, body) = app.health().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["meetingService"]["status"], "NOT_SERVING", "{body}");
    assert_eq!(app.total_rows().await, 0);

    proxy.restore();
    wait_for(&channel, ServingStatus::Serving).await;
    let after = app.post_signed(&fixture("invitee-created-one-on-one.json")).await;
    assert_eq!(
        after.status(),
        200,
        "Calendly's retry is stored once the database is back"
    );
    assert_eq!(app.count("meetings").await, 1);
    app.stop().await;
}

/// PostgreSQL only: a table lock held by the test keeps one ingest in flight for as long as the
/// test needs, with no timing involved.
async fn health_says_not_serving_while_the_meeting_service_drains_in_flight_calls(backend: Backend) {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let app = spawn_app_with(
        backend,
        &[
            ("MEETING_SERVICE_TIMEOUT_MS", "600000"),
            ("SHUTDOWN_GRACE_SECS", "600"),
        ],
    )
    .await;
    let lock = app.db.begin().await.expect("a transaction");
    lock.execute_unprepared("LOCK TABLE webhook_events IN EXCLUSIVE MODE")
        .await
        .expect("lock the inbox");

    let in_flight = {
        let body = fixture("invitee-created-one-on-one.json");
        let signature =
            adapter::signature::sign(SIGNING_KEY.as_bytes(), chrono::Utc::now().timestamp(), &body);
        let request = app
            .http
            .post(app.url("/webhook/calendly"))
            .header("content-type", "application/json")
            .header("calendly-webhook-signature", signature)
            .body(body);
        tokio::spawn(async move { request.send().await.expect("the delivery is answered").status() })
    };
    // The ingest has reached the database once its insert waits for the lock.
    wait_until(
        || async {
            app.scalar(
                "SELECT COUNT(*) FROM pg_locks WHERE NOT granted AND relation = 'webhook_events'::regclass",
            )
            .await
                > 0
        },
        "the delivery's insert waits for the lock",
    )
    .await;

    app.begin_meeting_service_shutdown();
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
        .expect("URL")
        .connect_lazy();
    wait_until(
        || async {
            health_status(&channel, proto::MEETING_SERVICE_NAME).await != Some(ServingStatus::Serving)
        },
        "the meeting service leaves SERVING",
    )
    .await;
    for service in ["", proto::MEETING_SERVICE_NAME] {
        assert_eq!(
            health_status(&channel, service).await,
            Some(ServingStatus::NotServing),
            "gRPC health of {service:?} answers NOT_SERVING while a call drains"
        );
    }
    let (status, body) = app.health().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["meetingService"]["status"], "NOT_SERVING", "{body}");
    // New work is refused while the old drains, so Calendly retries it elsewhere or later.
    let refused = app
        .post_signed(&fixture("invitee-canceled-by-invitee.json"))
        .await;
    assert_eq!(refused.status(), 503);
    assert_eq!(json(refused).await["code"], "MEETING_SERVICE_UNAVAILABLE");

    lock.rollback().await.expect("release the lock");
    assert_eq!(
        in_flight.await.expect("delivery task"),
        200,
        "the in-flight delivery finishes during the drain"
    );
    assert_eq!(app.count("meetings").await, 1);
    assert_eq!(
        app.count("webhook_events").await,
        1,
        "the refused delivery stored nothing"
    );
    wait_until(
        || async { app.health().await.1["meetingService"]["status"] != "NOT_SERVING" },
        "the meeting service has stopped",
    )
    .await;
    let (status, body) = app.health().await;
    assert_eq!(
        (status, body["meetingService"]["status"].as_str()),
        (503, Some("UNREACHABLE (Unavailable)"))
    );
    app.stop().await;
}

/// Polls `condition` until it holds. The limit only keeps a broken build from hanging the run;
/// it is far beyond what any of these conditions takes.
async fn wait_until<F, Fut>(condition: F, what: &str)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..1_200 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within a minute");
}
