//! The `calendly` command against a local mock of the Calendly API and real meeting services
//! (SQLite): subscriptions, token errors, back-fill equivalence with webhooks, reruns, recovery
//! from rate limits, server errors and timeouts, partial failures, and reconcile runs. Commands run in-process
//! through `calendly_cli::run`; one smoke test runs the built binary.

#[path = "cli/mock.rs"]
mod mock;
#[path = "cli/scenario.rs"]
mod scenario;
#[path = "cli/stack.rs"]
mod stack;

use std::time::{Duration, Instant};

use calendly_cli::{
    Cli, CliError, Output, Settings,
    client::CalendlyError,
    settings::RetryPolicy,
    webhooks::{DEFAULT_EVENTS, RequestError},
};
use clap::Parser;
use mock::{Fault, MockCalendly, ORGANIZATION, USER};
use proto::v1::Source;
use scenario::{Scenario, event_uri, event_uuid, invitee_uri};
use service_kit::settings::map_lookup;
use stack::{INTERNAL_TOKEN, MeetingService, MeetingView};

const TOKEN: &str = "pat-test-0123456789abcdef";

/// The client's limit on each request to the mock: so far beyond a local answer that only the
/// requests the mock never answers ([`Fault::Hang`]) reach it, however slow the machine.
const CALENDLY_TIMEOUT_MS: &str = "10000";

/// Settings as the binary would read them, plus what only tests change: two items a page and
/// quick retries.
fn settings(mock: &MockCalendly, meeting: Option<&MeetingService>) -> Settings {
    let mut pairs = vec![
        ("CALENDLY_API_TOKEN", TOKEN.to_owned()),
        ("CALENDLY_API_BASE_URL", mock.base_url.clone()),
        ("CALENDLY_API_TIMEOUT_MS", CALENDLY_TIMEOUT_MS.to_owned()),
    ];
    if let Some(meeting) = meeting {
        pairs.push(("MEETING_SERVICE_URL", meeting.url.clone()));
        pairs.push(("INTERNAL_API_TOKEN", INTERNAL_TOKEN.to_owned()));
    }
    let lookup = map_lookup(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
    let mut settings = Settings::from_lookup(&lookup, meeting.is_some()).expect("valid settings");
    settings.api.page_size = 2;
    settings.api.retry = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_rate_limit_waits: 5,
        max_rate_limit_wait: Duration::from_secs(3),
    };
    settings
}

struct Ran {
    result: Result<(), CliError>,
    out: String,
    err: String,
}

async fn calendly(args: &[&str], settings: Settings) -> Ran {
    let cli = Cli::try_parse_from(std::iter::once("calendly").chain(args.iter().copied()))
        .expect("arguments parse");
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut output = Output {
        out: &mut out,
        err: &mut err,
        progress_bar: false,
    };
    let result = calendly_cli::run(cli, settings, &mut output).await;
    Ran {
        result,
        out: String::from_utf8(out).expect("UTF-8"),
        err: String::from_utf8(err).expect("UTF-8"),
    }
}

impl Ran {
    fn ok(self) -> Self {
        if let Err(error) = &self.result {
            panic!(
                "command failed: {error}\nstdout:\n{}\nstderr:\n{}",
                self.out, self.err
            );
        }
        self
    }

    fn error(&self) -> &CliError {
        self.result.as_ref().expect_err("the command should have failed")
    }

    /// The summary's count for `label`.
    fn count(&self, label: &str) -> u64 {
        self.out
            .lines()
            .find_map(|line| {
                line.trim()
                    .strip_prefix(label)
                    .map(|rest| rest.trim().parse().expect("a count"))
            })
            .unwrap_or_else(|| panic!("no {label} count in:\n{}", self.out))
    }

    fn counts(&self) -> [u64; 4] {
        ["created", "updated", "unchanged", "failed"].map(|label| self.count(label))
    }
}

/// Delivers webhook bodies to a meeting service through the adapter's own translation and client.
async fn deliver(service: &MeetingService, bodies: &[Vec<u8>]) {
    for body in bodies {
        let event = adapter::calendly::parse_delivery(body).expect("webhook parses");
        let response = service
            .client
            .ingest(event, body.clone(), Source::Webhook, "webhook-test")
            .await
            .expect("ingested");
        assert!(response.processed, "{response:?}");
    }
}

async fn views(service: &MeetingService, uris: &[String]) -> Vec<MeetingView> {
    service
        .meetings(uris)
        .await
        .iter()
        .map(MeetingView::from)
        .collect()
}

// --- webhooks -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_sends_the_subscription_with_a_fresh_signing_key_and_prints_it_once() {
    let mock = MockCalendly::start(TOKEN).await;
    let url = "https://hooks.example.com/webhook/calendly";
    let ran = calendly(&["webhooks", "create", "--url", url], settings(&mock, None))
        .await
        .ok();

    let posts = mock.requests_to("/webhook_subscriptions");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].method, axum::http::Method::POST);
    let body = posts[0].body.clone().expect("a JSON body");
    assert_eq!(body["url"], url);
    assert_eq!(body["events"], serde_json::json!(DEFAULT_EVENTS));
    assert_eq!(body["organization"], ORGANIZATION);
    assert_eq!(body["scope"], "organization");
    assert!(body.get("user").is_none(), "{body}");
    let key = body["signing_key"].as_str().expect("signing_key");
    assert!(key.len() >= 32, "{key}");

    assert_eq!(ran.out.matches(key).count(), 1, "{}", ran.out);
    assert!(
        ran.out.contains(&format!("CALENDLY_WEBHOOK_SECRET={key}")),
        "{}",
        ran.out
    );
    assert!(ran.out.contains("comma-separated"), "{}", ran.out);
    let created = mock.subscriptions();
    assert_eq!(created.len(), 1);
    assert!(ran.out.contains(created[0]["uri"].as_str().expect("uri")));

    // A second subscription gets a key of its own.
    calendly(
        &[
            "webhooks",
            "create",
            "--url",
            "https://hooks.example.com/webhook/calendly/v2",
        ],
        settings(&mock, None),
    )
    .await
    .ok();
    let posts = mock.requests_to("/webhook_subscriptions");
    assert_ne!(posts[1].body.as_ref().expect("body")["signing_key"], key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_uses_a_given_key_events_and_user_scope() {
    let mock = MockCalendly::start(TOKEN).await;
    let key = "given-signing-key-with-at-least-32-chars";
    calendly(
        &[
            "webhooks",
            "create",
            "--url",
            "https://hooks.example.com/h",
            "--events",
            "invitee.created,invitee.canceled",
            "--scope",
            "user",
            "--signing-key",
            key,
        ],
        settings(&mock, None),
    )
    .await
    .ok();
    let body = mock.requests_to("/webhook_subscriptions")[0]
        .body
        .clone()
        .expect("body");
    assert_eq!(body["signing_key"], key);
    assert_eq!(body["scope"], "user");
    assert_eq!(body["user"], USER);
    assert_eq!(
        body["events"],
        serde_json::json!(["invitee.created", "invitee.canceled"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_times_out_is_not_repeated_and_still_shows_its_key() {
    let mock = MockCalendly::start(TOKEN).await;
    mock.fail("/webhook_subscriptions", Fault::Hang, 1);
    let ran = calendly(
        &["webhooks", "create", "--url", "https://hooks.example.com/h"],
        settings(&mock, None),
    )
    .await;
    assert!(matches!(
        ran.error(),
        CliError::Calendly(CalendlyError::Timeout { .. })
    ));
    // The request still created it: a retry would have hit "Already Exists" and lost the key.
    let posts = mock.requests_to("/webhook_subscriptions");
    assert_eq!(posts.len(), 1);
    assert_eq!(mock.subscriptions().len(), 1);
    let key = posts[0].body.as_ref().expect("body")["signing_key"]
        .as_str()
        .expect("key")
        .to_owned();
    assert!(
        ran.out.contains("may or may not have been created"),
        "{}",
        ran.out
    );
    assert!(ran.out.contains(&key), "{}", ran.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_refuses_plain_http_and_impossible_scopes_before_calling_calendly() {
    let mock = MockCalendly::start(TOKEN).await;
    let ran = calendly(
        &["webhooks", "create", "--url", "http://hooks.example.com/h"],
        settings(&mock, None),
    )
    .await;
    assert!(matches!(
        ran.error(),
        CliError::Request(RequestError::NotHttps(_))
    ));
    assert_eq!(ran.error().exit_code(), 2);
    assert!(ran.error().to_string().contains("--allow-http"));

    let ran = calendly(
        &[
            "webhooks",
            "create",
            "--url",
            "https://hooks.example.com/h",
            "--events",
            "routing_form_submission.created",
            "--scope",
            "user",
        ],
        settings(&mock, None),
    )
    .await;
    assert!(matches!(
        ran.error(),
        CliError::Request(RequestError::RoutingFormNeedsOrganization)
    ));
    assert!(
        mock.requests().is_empty(),
        "nothing is sent for a refused request"
    );

    calendly(
        &[
            "webhooks",
            "create",
            "--url",
            "http://127.0.0.1:3001/webhook/calendly",
            "--allow-http",
        ],
        settings(&mock, None),
    )
    .await
    .ok();
    assert_eq!(mock.subscriptions().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_follows_every_page() {
    let mock = MockCalendly::start(TOKEN).await;
    let uris: Vec<String> = (1..=5)
        .map(|n| mock.add_subscription(&format!("https://hooks.example.com/{n}")))
        .collect();
    let ran = calendly(&["webhooks", "list"], settings(&mock, None)).await.ok();
    for uri in &uris {
        assert!(ran.out.contains(uri.as_str()), "{uri} missing from:\n{}", ran.out);
    }
    assert!(ran.out.contains("5 webhook subscription(s)"), "{}", ran.out);
    let pages = mock.requests_to("/webhook_subscriptions");
    assert_eq!(pages.len(), 3, "5 items, 2 a page");
    let tokens: Vec<Option<&str>> = pages
        .iter()
        .map(|p| p.query.get("page_token").map(String::as_str))
        .collect();
    assert_eq!(tokens, [None, Some("2"), Some("4")]);
    for page in &pages {
        assert_eq!(page.query.get("count").map(String::as_str), Some("2"));
        assert_eq!(page.query.get("scope").map(String::as_str), Some("organization"));
        assert_eq!(
            page.query.get("organization").map(String::as_str),
            Some(ORGANIZATION)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_a_subscription_and_names_a_missing_one() {
    let mock = MockCalendly::start(TOKEN).await;
    let doomed = mock.add_subscription("https://hooks.example.com/old");
    mock.add_subscription("https://hooks.example.com/new");

    let ran = calendly(&["webhooks", "delete", &doomed], settings(&mock, None))
        .await
        .ok();
    assert!(ran.out.contains("Deleted webhook subscription"), "{}", ran.out);
    assert_eq!(mock.subscriptions().len(), 1);
    assert_eq!(
        mock.subscriptions()[0]["callback_url"],
        "https://hooks.example.com/new"
    );

    let ran = calendly(&["webhooks", "delete", &doomed], settings(&mock, None)).await;
    assert!(matches!(
        ran.error(),
        CliError::Calendly(CalendlyError::NotFound { .. })
    ));
    let message = ran.error().to_string();
    assert!(
        message.starts_with("not found: webhook subscription"),
        "{message}"
    );
    assert!(message.contains(mock::last_segment(&doomed)), "{message}");
    assert_eq!(ran.error().exit_code(), 1);

    mock.clear_requests();
    let ran = calendly(
        &["webhooks", "delete", "https://api.calendly.com/users/x"],
        settings(&mock, None),
    )
    .await;
    assert_eq!(ran.error().exit_code(), 2);
    assert!(mock.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_is_explained_without_showing_it() {
    // The mock accepts another token, and echoes the one it got in its error body.
    let mock = MockCalendly::start("the-right-token").await;
    let settings = settings(&mock, None);
    let debug_settings = format!("{settings:?}");
    let ran = calendly(&["webhooks", "list"], settings).await;
    assert!(matches!(
        ran.error(),
        CliError::Calendly(CalendlyError::Unauthenticated { .. })
    ));
    let message = ran.error().to_string();
    assert!(message.contains("CALENDLY_API_TOKEN"), "{message}");
    assert!(message.contains("401"), "{message}");
    for text in [
        message,
        format!("{:?}", ran.error()),
        ran.out,
        ran.err,
        debug_settings,
    ] {
        assert!(!text.contains(TOKEN), "the token leaked: {text}");
    }
    assert_eq!(mock.requests_to("/users/me").len(), 1, "a 401 is not retried");
}

// --- backfill -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_gives_the_same_meetings_as_webhooks_and_a_rerun_changes_nothing() {
    let mock = MockCalendly::start(TOKEN).await;
    let scenario = Scenario::standard();
    scenario.install(&mock);
    let uris = scenario.invitee_uris();
    let (backfilled, webhooked) = tokio::join!(MeetingService::start(), MeetingService::start());

    let ran = calendly(&["backfill"], settings(&mock, Some(&backfilled)))
        .await
        .ok();
    assert_eq!(ran.counts(), [7, 0, 0, 0], "{}", ran.out);
    assert!(
        ran.out
            .contains("5 scheduled event(s), 7 invitee(s), 11 event(s)"),
        "{}",
        ran.out
    );
    assert!(
        ran.err.contains("backfill: 2 scheduled event(s)"),
        "plain progress lines:\n{}",
        ran.err
    );

    // Pagination: 5 events at 2 a page, and the group event's 3 invitees on 2 pages.
    let listings = mock.requests_to("/scheduled_events");
    assert_eq!(listings.len(), 3);
    for listing in &listings {
        assert_eq!(
            listing.query.get("organization").map(String::as_str),
            Some(ORGANIZATION)
        );
        assert_eq!(listing.query.get("count").map(String::as_str), Some("2"));
    }
    let group_path = format!("/scheduled_events/{}/invitees", event_uuid('e'));
    assert_eq!(mock.requests_to(&group_path).len(), 2);

    // The same history delivered as webhooks, newest first, to a second real service.
    let mut webhooks = scenario.webhooks();
    webhooks.reverse();
    deliver(&webhooked, &webhooks).await;
    let expected = views(&webhooked, &uris).await;
    assert_eq!(views(&backfilled, &uris).await, expected);
    assert_eq!(backfilled.count("meetings").await, 7);
    assert_eq!(webhooked.count("meetings").await, 7);

    // What that state is, so the comparison is not between two equally wrong records.
    let by_uri = |uri: String| {
        expected
            .iter()
            .find(|m| m.invitee == uri)
            .cloned()
            .expect("meeting")
    };
    let booked = by_uri(invitee_uri('a', 1));
    assert_eq!(booked.status, "scheduled");
    assert_eq!(booked.live_reminders.len(), 3, "{booked:?}");
    let old = by_uri(invitee_uri('b', 1));
    assert_eq!(old.status, "rescheduled");
    assert_eq!(old.rescheduled_to, Some(invitee_uri('c', 1)));
    assert!(old.live_reminders.is_empty());
    assert_eq!(
        by_uri(invitee_uri('c', 1)).rescheduled_from,
        Some(invitee_uri('b', 1))
    );
    let host_canceled = by_uri(invitee_uri('d', 1));
    assert_eq!(host_canceled.status, "canceled");
    assert_eq!(host_canceled.canceler_type.as_deref(), Some("host"));
    assert_eq!(by_uri(invitee_uri('e', 2)).status, "no_show");
    assert_eq!(by_uri(invitee_uri('e', 3)).status, "canceled");
    assert_eq!(by_uri(invitee_uri('e', 1)).scheduled_event, event_uri('e'));

    // A rerun is all duplicates: no inbox row, no meeting change.
    let inbox = backfilled.count("webhook_events").await;
    let before = backfilled.meetings(&uris).await;
    let ran = calendly(&["backfill"], settings(&mock, Some(&backfilled)))
        .await
        .ok();
    assert_eq!(ran.counts(), [0, 0, 7, 0], "{}", ran.out);
    assert_eq!(backfilled.count("webhook_events").await, inbox);
    assert_eq!(backfilled.meetings(&uris).await, before);

    // A booking canceled since then is an update.
    mock.update_invitee(&invitee_uri('a', 1), |invitee| {
        invitee["status"] = "canceled".into();
        invitee["cancellation"] = serde_json::json!({"canceled_by": "Jordan Ellis", "canceler_type": "invitee",
            "reason": "No longer needed", "created_at": scenario::in_the_future("2030-03-09T08:00:00.000000Z")});
    });
    let ran = calendly(&["backfill"], settings(&mock, Some(&backfilled)))
        .await
        .ok();
    assert_eq!(ran.counts(), [0, 1, 6, 0], "{}", ran.out);
    let canceled = MeetingView::from(&backfilled.meetings(&[invitee_uri('a', 1)]).await[0]);
    assert_eq!(canceled.status, "canceled");
    assert_eq!(canceled.cancel_reason.as_deref(), Some("No longer needed"));
    assert!(canceled.live_reminders.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_converges_with_webhooks_arriving_at_the_same_time() {
    let mock = MockCalendly::start(TOKEN).await;
    let scenario = Scenario::standard();
    scenario.install(&mock);
    let uris = scenario.invitee_uris();
    let (busy, reference) = tokio::join!(MeetingService::start(), MeetingService::start());

    let mut webhooks = scenario.webhooks();
    webhooks.reverse();
    let (ran, ()) = tokio::join!(
        calendly(&["backfill"], settings(&mock, Some(&busy))),
        deliver(&busy, &webhooks),
    );
    let ran = ran.ok();
    assert_eq!(ran.count("failed"), 0);
    deliver(&reference, &scenario.webhooks()).await;
    assert_eq!(views(&busy, &uris).await, views(&reference, &uris).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_rides_out_rate_limits_server_errors_and_timeouts() {
    let mock = MockCalendly::start(TOKEN).await;
    Scenario::standard().install(&mock);
    let service = MeetingService::start().await;
    let slow_path = format!("/scheduled_events/{}/invitees", event_uuid('b'));
    let flaky_path = format!("/scheduled_events/{}/invitees", event_uuid('e'));
    mock.fail("/users/me", Fault::ServerError, 1);
    mock.fail("/scheduled_events", Fault::RateLimit, 1);
    mock.fail(&slow_path, Fault::Hang, 1);
    mock.fail(&flaky_path, Fault::ServerError, 2);

    let started = Instant::now();
    let ran = calendly(&["backfill"], settings(&mock, Some(&service)))
        .await
        .ok();
    assert_eq!(ran.counts(), [7, 0, 0, 0], "{}", ran.out);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was waited out"
    );
    assert_eq!(mock.requests_to("/users/me").len(), 2);
    assert_eq!(
        mock.requests_to("/scheduled_events").len(),
        4,
        "3 pages and one 429"
    );
    assert_eq!(
        mock.requests_to(&slow_path).len(),
        2,
        "one timeout, then the answer"
    );
    assert_eq!(mock.requests_to(&flaky_path).len(), 4, "two 500s, then two pages");
    assert_eq!(service.count("meetings").await, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_reports_what_failed_exits_non_zero_and_a_rerun_finishes() {
    let mock = MockCalendly::start(TOKEN).await;
    Scenario::standard().install(&mock);
    let service = MeetingService::start().await;
    let broken = format!("/scheduled_events/{}/invitees", event_uuid('d'));
    // As many failures as the client tries, so this event fails in the first run only.
    mock.fail(&broken, Fault::ServerError, 4);

    let ran = calendly(&["backfill"], settings(&mock, Some(&service))).await;
    assert!(matches!(
        ran.error(),
        CliError::BackfillIncomplete { failed: 1, .. }
    ));
    assert_eq!(ran.error().exit_code(), 1);
    assert_eq!(ran.counts(), [6, 0, 0, 1], "{}", ran.out);
    let line = format!(
        "failed: scheduled event {}: Calendly failed on GET /scheduled_events/{}/invitees",
        event_uri('d'),
        event_uuid('d')
    );
    assert!(ran.err.contains(&line), "{}", ran.err);
    assert!(ran.err.contains("HTTP 500 after 4 attempt(s)"), "{}", ran.err);
    assert!(
        ran.out.contains(&event_uri('d')),
        "the summary lists it too:\n{}",
        ran.out
    );
    assert!(ran.out.contains("Run the same command again"), "{}", ran.out);
    assert_eq!(service.count("meetings").await, 6);

    let ran = calendly(&["backfill"], settings(&mock, Some(&service)))
        .await
        .ok();
    assert_eq!(ran.counts(), [1, 0, 6, 0], "{}", ran.out);
    assert_eq!(service.count("meetings").await, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitee_the_meeting_service_cannot_apply_is_reported_with_its_reason() {
    let mock = MockCalendly::start(TOKEN).await;
    let scenario = Scenario::standard();
    scenario.install(&mock);
    mock.update_invitee(&invitee_uri('e', 1), |invitee| invitee["email"] = "".into());
    let service = MeetingService::start().await;

    let ran = calendly(&["backfill"], settings(&mock, Some(&service))).await;
    assert!(matches!(
        ran.error(),
        CliError::BackfillIncomplete { failed: 1, .. }
    ));
    let line = format!(
        "failed: invitee {} (scheduled event {})",
        invitee_uri('e', 1),
        event_uri('e')
    );
    assert!(ran.err.contains(&line), "{}", ran.err);
    assert!(ran.err.contains("payload.email is missing"), "{}", ran.err);

    // Stored as failed in the inbox: a rerun cannot fix the data, and says how to replay it.
    let ran = calendly(&["backfill"], settings(&mock, Some(&service))).await;
    assert_eq!(ran.counts(), [0, 0, 6, 1], "{}", ran.out);
    assert!(ran.err.contains("ReplayWebhookEvent"), "{}", ran.err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_stops_early_when_the_meeting_service_is_down() {
    let mock = MockCalendly::start(TOKEN).await;
    Scenario::standard().install(&mock);
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("address")
    };
    let mut settings = settings(&mock, None);
    settings.meeting = Some(calendly_cli::settings::MeetingSettings {
        url: format!("http://{closed}"),
        token: None,
        timeout: Duration::from_secs(2),
    });
    let ran = calendly(&["backfill"], settings).await;
    assert!(matches!(ran.error(), CliError::BackfillIncomplete { .. }));
    assert!(ran.out.contains("Backfill stopped early"), "{}", ran.out);
    assert!(ran.out.contains("failed 5 events in a row"), "{}", ran.out);
    // Five events (A1's booking, B1's booking and cancellation, C1's and D1's bookings) from four
    // invitees; the one that tipped it over is counted and listed like the others.
    assert!(matches!(
        ran.error(),
        CliError::BackfillIncomplete { failed: 4, .. }
    ));
    assert_eq!(ran.count("failed"), 4);
    assert_eq!(ran.err.matches("failed: invitee").count(), 5, "{}", ran.err);
    assert!(ran.err.contains(&invitee_uri('d', 1)), "{}", ran.err);
    assert!(
        ran.err.contains("the meeting service was unavailable"),
        "{}",
        ran.err
    );
}

// --- reconcile ----------------------------------------------------------------------------------

const CALLBACK: &str = "https://hooks.example.com/webhook/calendly";

/// The meeting service's metrics in this test binary, and one reconcile test at a time, so that
/// the counter a test reads moved only by its own runs.
fn metrics() -> &'static (
    metrics_exporter_prometheus::PrometheusHandle,
    tokio::sync::Mutex<()>,
) {
    static METRICS: std::sync::OnceLock<(
        metrics_exporter_prometheus::PrometheusHandle,
        tokio::sync::Mutex<()>,
    )> = std::sync::OnceLock::new();
    METRICS.get_or_init(|| {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("the only recorder of this test binary");
        (handle, tokio::sync::Mutex::new(()))
    })
}

/// A sample's value in the exposition (0 when absent).
fn sample(name_and_labels: &str) -> f64 {
    metrics()
        .0
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn reconcile_settings(mock: &MockCalendly, meeting: &MeetingService) -> Settings {
    let mut settings = settings(mock, Some(meeting));
    settings.reconcile.callback_url = Some(CALLBACK.to_owned());
    settings
}

/// Calendly with the standard history and an active subscription for [`CALLBACK`], and two
/// fresh meeting services: one to reconcile, one to compare with.
async fn reconcile_world() -> (
    MockCalendly,
    Scenario,
    Vec<String>,
    MeetingService,
    MeetingService,
) {
    let mock = MockCalendly::start(TOKEN).await;
    let scenario = Scenario::standard();
    scenario.install(&mock);
    mock.add_subscription(CALLBACK);
    let uris = scenario.invitee_uris();
    let (service, reference) = tokio::join!(MeetingService::start(), MeetingService::start());
    (mock, scenario, uris, service, reference)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_recovers_webhooks_that_never_came_once_and_records_the_run() {
    let _one_at_a_time = metrics().1.lock().await;
    let (mock, scenario, uris, service, reference) = reconcile_world().await;
    // Only the first two webhooks arrived; Calendly has everything.
    let webhooks = scenario.webhooks();
    deliver(&service, &webhooks[..2]).await;
    deliver(&reference, &webhooks).await;
    let missed_before = sample("calendly_reconcile_missed_events_total");

    let ran = calendly(&["reconcile"], reconcile_settings(&mock, &service))
        .await
        .ok();
    assert!(ran.out.contains("subscription  active"), "{}", ran.out);
    assert_eq!(views(&service, &uris).await, views(&reference, &uris).await);
    let first = service.sync_status().await.last_run.expect("a run");
    assert!(first.succeeded, "{first:?}");
    assert_eq!(first.events_sent, 11);
    let missed = first.events_missed;
    assert!(
        (1..=9).contains(&missed),
        "the two webhooks that came are not missed: {first:?}"
    );
    assert!(
        ran.out.contains(&format!("missed        {missed} event(s)")),
        "{}",
        ran.out
    );
    let listings = mock.requests_to("/scheduled_events");
    assert!(
        listings.iter().all(|l| l.query.contains_key("min_start_time")),
        "only meetings that can still change are listed"
    );

    // A second run finds nothing new, and the counter counted the first run's once.
    calendly(&["reconcile"], reconcile_settings(&mock, &service))
        .await
        .ok();
    let status = service.sync_status().await;
    let second = status.last_run.expect("a run");
    assert_eq!((second.events_missed, second.succeeded), (0, true));
    assert_eq!(status.last_success.map(|r| r.id), Some(second.id));
    assert_eq!(
        sample("calendly_reconcile_missed_events_total") - missed_before,
        missed as f64
    );
    assert_eq!(
        sample(r#"calendly_webhook_subscription_state{state="active"}"#),
        1.0
    );
    assert!(sample("calendly_reconcile_last_success_timestamp_seconds") > 0.0);
}

/// The adapter in front of `meeting`, for its health summary.
async fn adapter_in_front_of(meeting: &MeetingService) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind HTTP");
    let addr = listener.local_addr().expect("address");
    let lookup = map_lookup(
        [
            ("CALENDLY_WEBHOOK_SECRET", "test-signing-key-5b0c"),
            ("MEETING_SERVICE_URL", meeting.url.as_str()),
            ("INTERNAL_API_TOKEN", INTERNAL_TOKEN),
            ("LOG_DIR", "off"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    );
    let config = adapter::Config::from_lookup(&lookup).expect("adapter settings");
    tokio::spawn(adapter::run(config, listener, std::future::pending()));
    format!("http://{addr}/webhook/calendly/health")
}

async fn reconcile_summary(health_url: &str) -> serde_json::Value {
    for _ in 0..200 {
        if let Ok(response) = reqwest::get(health_url).await
            && response.status() == 200
        {
            return response.json::<serde_json::Value>().await.expect("JSON")["reconcile"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the adapter did not become healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_or_missing_subscription_exits_3_says_how_to_restore_it_and_shows_in_health() {
    let _one_at_a_time = metrics().1.lock().await;
    let mock = MockCalendly::start(TOKEN).await;
    let scenario = Scenario::standard();
    scenario.install(&mock);
    let subscription = mock.add_subscription(CALLBACK);
    mock.set_subscription_state(&subscription, "disabled");
    mock.add_subscription("https://elsewhere.example.com/webhook/calendly");
    let service = MeetingService::start().await;
    deliver(&service, &scenario.webhooks()).await;
    let health = adapter_in_front_of(&service).await;
    assert_eq!(reconcile_summary(&health).await["subscriptionState"], "never_run");

    for (state, expected) in [("disabled", "disabled"), ("gone", "missing")] {
        if state == "gone" {
            mock.remove_subscriptions();
        }
        let ran = calendly(&["reconcile"], reconcile_settings(&mock, &service)).await;
        assert!(
            matches!(ran.error(), CliError::SubscriptionNotActive { state, .. } if *state == expected),
            "{:?}",
            ran.result
        );
        assert_eq!(ran.error().exit_code(), 3);
        assert!(
            ran.out
                .contains(&format!("calendly webhooks create --url {CALLBACK}")),
            "{}",
            ran.out
        );
        assert!(
            ran.out.contains(&format!("subscription  {expected}")),
            "{}",
            ran.out
        );
        let summary = reconcile_summary(&health).await;
        assert_eq!(summary["subscriptionState"], expected, "{summary}");
        assert_eq!(
            summary["lastRunSucceeded"], true,
            "the back-fill itself went through"
        );
        assert!(
            summary["lastRunAgeSeconds"].as_u64().is_some_and(|age| age < 60),
            "{summary}"
        );
        assert_eq!(
            sample(&format!(
                r#"calendly_webhook_subscription_state{{state="{expected}"}}"#
            )),
            1.0
        );
        assert_eq!(
            sample(r#"calendly_webhook_subscription_state{state="active"}"#),
            0.0
        );
    }
    let text = reqwest::get(&health)
        .await
        .expect("health")
        .text()
        .await
        .expect("body");
    assert!(
        !text.contains(TOKEN) && !text.contains(INTERNAL_TOKEN),
        "no secret in {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_racing_live_webhooks_converges_to_the_same_record() {
    let _one_at_a_time = metrics().1.lock().await;
    let (mock, scenario, uris, busy, reference) = reconcile_world().await;
    let mut webhooks = scenario.webhooks();
    webhooks.reverse();
    let (ran, ()) = tokio::join!(
        calendly(&["reconcile"], reconcile_settings(&mock, &busy)),
        deliver(&busy, &webhooks),
    );
    ran.ok();
    deliver(&reference, &scenario.webhooks()).await;
    assert_eq!(views(&busy, &uris).await, views(&reference, &uris).await);
}

#[tokio::test]
async fn reconcile_needs_the_callback_url() {
    let mock = MockCalendly::start(TOKEN).await;
    let service = MeetingService::start().await;
    let ran = calendly(&["reconcile"], settings(&mock, Some(&service))).await;
    assert!(
        matches!(ran.error(), CliError::Settings(error) if error.variable == "WEBHOOK_CALLBACK_URL"),
        "{:?}",
        ran.result
    );
    assert_eq!(ran.error().exit_code(), 2);
    assert!(mock.requests().is_empty(), "nothing was asked of Calendly");
}

// --- the binary ---------------------------------------------------------------------------------

#[test]
fn the_binary_prints_help_and_names_a_missing_setting() {
    let binary = env!("CARGO_BIN_EXE_calendly");
    let help = std::process::Command::new(binary)
        .arg("--help")
        .output()
        .expect("run calendly --help");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for expected in ["webhooks", "backfill", "CALENDLY_API_TOKEN"] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }

    // In an empty directory, so no .env is read.
    let empty = tempfile::tempdir().expect("temp dir");
    let missing = std::process::Command::new(binary)
        .args(["webhooks", "list"])
        .env_clear()
        .current_dir(empty.path())
        .output()
        .expect("run calendly webhooks list");
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.starts_with("configuration error: CALENDLY_API_TOKEN: "),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
