//! One reading of every request. Input that two correct parsers could read two ways is refused:
//! a header that must appear once appearing twice (before the body is read), and a JSON key
//! repeated in one object at any depth (a signed delivery is kept as failed, the test endpoint
//! answers 400). Requests the HTTP library itself refuses answer as docs/http-api.md says. Raw sockets,
//! because a client library would normalise these requests.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Backend, SIGNING_KEY, TestApp, fixture, json, spawn_app_with};

/// Sends `head` (request line and headers, without the blank line) and `body` as written, and
/// reads the whole answer (the request says `Connection: close`).
async fn raw(app: &TestApp, head: &str, body: &[u8]) -> (u16, String, Option<serde_json::Value>) {
    let mut stream = tokio::net::TcpStream::connect(app.http_addr)
        .await
        .expect("connect");
    let mut request = format!("{head}\r\nHost: {}\r\nConnection: close\r\n\r\n", app.http_addr).into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await.expect("write");
    let mut answer = Vec::new();
    // A backstop against a hang only: the server closes the connection after answering.
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut answer))
        .await
        .expect("answered")
        .ok();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    // A chunked body (axum's JSON answers have a length; the check is on the parsed JSON only).
    let parsed = serde_json::from_str(body.trim()).ok().or_else(|| {
        body.split("\r\n")
            .find(|line| line.starts_with('{'))
            .and_then(|line| serde_json::from_str(line).ok())
    });
    (status, head.to_owned(), parsed)
}

fn signature_for(body: &[u8]) -> String {
    adapter::signature::sign(SIGNING_KEY.as_bytes(), chrono::Utc::now().timestamp(), body)
}

async fn a_header_that_must_appear_once_appearing_twice_is_refused_before_the_body(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[("TEST_RATE_LIMIT", "1000"), ("TEST_RATE_WINDOW_SECS", "360000")],
    )
    .await;
    let body = fixture("invitee-created-one-on-one.json");
    let signature = signature_for(&body);
    let length = body.len();
    let json = "Content-Type: application/json";
    let cases: Vec<(&str, String)> = vec![
        ("two identical Content-Type lines", format!("{json}\r\n{json}")),
        (
            "two different Content-Type lines",
            format!("{json}\r\nContent-Type: text/plain"),
        ),
        ("JSON second", format!("Content-Type: text/plain\r\n{json}")),
        (
            "two signature lines",
            format!(
                "{json}\r\nCalendly-Webhook-Signature: {signature}\r\nCalendly-Webhook-Signature: t=1,v1=00"
            ),
        ),
        (
            "two identical signature lines",
            format!(
                "{json}\r\nCalendly-Webhook-Signature: {signature}\r\nCalendly-Webhook-Signature: {signature}"
            ),
        ),
    ];
    for route in ["/webhook/calendly", "/webhook/calendly/test"] {
        for (name, headers) in &cases {
            let with_length = if headers.contains("Content-Length") {
                headers.clone()
            } else {
                format!("{headers}\r\nContent-Length: {length}")
            };
            let with_signature = if with_length.contains("Signature") {
                with_length
            } else {
                format!("{with_length}\r\nCalendly-Webhook-Signature: {signature}")
            };
            let (status, head, error) =
                raw(&app, &format!("POST {route} HTTP/1.1\r\n{with_signature}"), &body).await;
            let error = error.unwrap_or_else(|| panic!("{route}, {name}: no JSON body in {head}"));
            assert_eq!(status, 400, "{route}, {name}: {error}");
            assert_eq!(error["code"], "AMBIGUOUS_HEADER", "{route}, {name}");
            assert!(
                head.to_ascii_lowercase().contains("x-tracking-id:"),
                "{route}, {name}: {head}"
            );
            assert_eq!(
                error["trackingId"].as_str().map(str::len),
                Some(36),
                "{route}, {name}"
            );
        }
    }
    assert_eq!(app.total_rows().await, 0, "nothing stored");
    app.stop().await;
}

/// Real envelope fixtures with one key written twice: a member added at the start of an object
/// that already has that key, at the top, in `payload` and in `payload.scheduled_event`.
fn bodies_with_a_repeated_key() -> Vec<(String, String, Vec<u8>)> {
    let mut bodies = Vec::new();
    for name in [
        "invitee-created-one-on-one.json",
        "invitee-canceled-by-invitee.json",
        "invitee-created-with-utm-and-questions.json",
    ] {
        let text = String::from_utf8(fixture(name)).expect("UTF-8");
        for (object, member, path) in [
            ("{", r#""event": "invitee.canceled","#, "event"),
            (
                r#""payload": {"#,
                r#""uri": "https://api.calendly.com/invitees/other","#,
                "payload.uri",
            ),
            (
                r#""scheduled_event": {"#,
                r#""start_time": "2031-01-01T00:00:00.000000Z","#,
                "payload.scheduled_event.start_time",
            ),
        ] {
            let at = text.find(object).unwrap_or_else(|| panic!("{name} has {object}")) + object.len();
            let repeated = format!("{}{member}{}", &text[..at], &text[at..]);
            bodies.push((name.to_owned(), path.to_owned(), repeated.into_bytes()));
        }
    }
    bodies
}

async fn a_key_repeated_at_any_depth_is_kept_as_failed_or_refused(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[("TEST_RATE_LIMIT", "1000"), ("TEST_RATE_WINDOW_SECS", "360000")],
    )
    .await;
    let bodies = bodies_with_a_repeated_key();
    assert!(
        bodies.len() >= 6,
        "the fixtures give repeated keys at several depths"
    );
    for (fixture_name, path, body) in &bodies {
        // Signed: stored as failed (a dead letter), never applied, answered 200 as any verified
        // delivery is; the error names where the key repeats.
        let answer = app.post_signed(body).await;
        assert_eq!(answer.status(), 200, "{fixture_name} {path}");
        let answer = json(answer).await;
        assert_eq!(
            answer["result"]["outcome"], "failed",
            "{fixture_name} {path}: {answer}"
        );
        assert_eq!(answer["result"]["processed"], false);
        let errors = answer["result"]["errors"].to_string();
        assert!(
            errors.contains(path.as_str()) && errors.contains("more than once"),
            "{errors}"
        );
        // Unsigned test endpoint: refused.
        let refused = app.post_test_endpoint(body).await;
        assert_eq!(refused.status(), 400, "{fixture_name} {path}");
        let refused = json(refused).await;
        assert_eq!(refused["code"], "DUPLICATE_KEY");
        assert!(
            refused["error"]
                .as_str()
                .is_some_and(|e| e.starts_with(path.as_str())),
            "{refused}"
        );
    }
    assert_eq!(
        app.count("meetings").await,
        0,
        "no meeting from a body with two readings"
    );
    assert_eq!(
        app.count("webhook_events").await,
        bodies.len() as i64,
        "each signed one kept once, as failed"
    );
    app.stop().await;
}

async fn requests_the_http_library_refuses_answer_as_documented(backend: Backend) {
    let app = spawn_app_with(backend, &[]).await;
    let body = fixture("invitee-created-one-on-one.json");
    let route = "POST /webhook/calendly HTTP/1.1\r\nContent-Type: application/json";
    let huge = "x".repeat(adapter::startup::MAX_HEADER_BYTES);
    let cases: Vec<(&str, String, &[u8], u16)> = vec![
        (
            "two different Content-Length lines",
            format!("{route}\r\nContent-Length: {}\r\nContent-Length: 3", body.len()),
            &body,
            400,
        ),
        (
            "a Content-Length that is not a number",
            format!("{route}\r\nContent-Length: 12a"),
            b"",
            400,
        ),
        (
            "a transfer coding other than chunked",
            format!("{route}\r\nTransfer-Encoding: gzip"),
            b"",
            400,
        ),
        (
            "headers over the size limit",
            format!("{route}\r\nX-Filler: {huge}"),
            b"",
            431,
        ),
    ];
    for (name, head, body, expected) in cases {
        let (status, head, parsed) = raw(&app, &head, body).await;
        assert_eq!(status, expected, "{name}: {head}");
        // hyper answers these itself, before the router sees a request: no body, no tracking id
        // (docs/http-api.md, "Answers").
        assert!(parsed.is_none(), "{name}");
        assert!(
            !head.to_ascii_lowercase().contains("x-tracking-id"),
            "{name}: {head}"
        );
    }
    assert_eq!(app.total_rows().await, 0);

    // Framings hyper reads one way only, so they reach the service with that one reading: identical
    // Content-Length lines merged, Transfer-Encoding followed over a Content-Length (which it drops,
    // RFC 9112 §6.3, and closes the connection after the answer).
    let signature = signature_for(&body);
    let mut chunked = format!("{:x}\r\n", body.len()).into_bytes();
    chunked.extend_from_slice(&body);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    for (name, head, sent) in [
        (
            "identical Content-Length lines",
            format!(
                "{route}\r\nCalendly-Webhook-Signature: {signature}\r\nContent-Length: {n}\r\nContent-Length: {n}",
                n = body.len()
            ),
            body.clone(),
        ),
        (
            "chunked and a Content-Length",
            format!(
                "{route}\r\nCalendly-Webhook-Signature: {signature}\r\nTransfer-Encoding: chunked\r\nContent-Length: 3"
            ),
            chunked,
        ),
    ] {
        let (status, head, answer) = raw(&app, &head, &sent).await;
        assert_eq!(status, 200, "{name}: {head}");
        assert!(answer.is_some_and(|a| a["success"] == true), "{name}");
    }
    assert_eq!(
        app.count("webhook_events").await,
        1,
        "the same delivery, read one way, both times"
    );
    app.stop().await;
}

crate::on_both_backends!(
    a_header_that_must_appear_once_appearing_twice_is_refused_before_the_body,
    a_key_repeated_at_any_depth_is_kept_as_failed_or_refused,
    requests_the_http_library_refuses_answer_as_documented,
);
