//! The front door's answer to every kind of bad request: a uniform error body with a stable
//! code, `X-Tracking-Id`, and nothing stored anywhere.

use adapter::signature::{compute_mac, sign};
use reqwest::Method;

use crate::helpers::{Backend, SIGNING_KEY, TestApp, booking, fixture, json, spawn_app_with};

const ONE_MIB: usize = 1024 * 1024;

enum Sig {
    None,
    Header(String),
}

struct Case {
    name: &'static str,
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    signature: Sig,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn case(
    name: &'static str,
    path: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method: Method::POST,
        path,
        content_type: Some("application/json"),
        signature: Sig::None,
        body: body.into(),
        status,
        code,
    }
}

const WEBHOOK: &str = "/webhook/calendly";
const TEST: &str = "/webhook/calendly/test";

fn catalogue() -> Vec<Case> {
    let body = fixture("invitee-created-one-on-one.json");
    let now = chrono::Utc::now().timestamp();
    let genuine = hex::encode(compute_mac(SIGNING_KEY.as_bytes(), now, &body));
    let signed = |name, header: String, status, code| Case {
        signature: Sig::Header(header),
        ..case(name, WEBHOOK, body.clone(), status, code)
    };
    let mut tampered = body.clone();
    tampered[40] ^= 0x01;
    let oversized = vec![b' '; ONE_MIB + 1];
    let cases = vec![
        // Content type and size, checked before the signature.
        Case {
            content_type: None,
            ..case(
                "no content type",
                WEBHOOK,
                body.clone(),
                415,
                "UNSUPPORTED_MEDIA_TYPE",
            )
        },
        Case {
            content_type: Some("text/plain"),
            ..case("text/plain", WEBHOOK, body.clone(), 415, "UNSUPPORTED_MEDIA_TYPE")
        },
        Case {
            content_type: Some("application/xml"),
            ..case("xml", WEBHOOK, body.clone(), 415, "UNSUPPORTED_MEDIA_TYPE")
        },
        Case {
            content_type: Some("application/jsonp"),
            ..case("jsonp", WEBHOOK, body.clone(), 415, "UNSUPPORTED_MEDIA_TYPE")
        },
        Case {
            content_type: Some("application/x-www-form-urlencoded"),
            ..case("form", WEBHOOK, body.clone(), 415, "UNSUPPORTED_MEDIA_TYPE")
        },
        case(
            "one byte over 1 MiB",
            WEBHOOK,
            oversized.clone(),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        // Signatures.
        case(
            "no signature header",
            WEBHOOK,
            body.clone(),
            401,
            "MISSING_SIGNATURE",
        ),
        signed(
            "empty signature header",
            String::new(),
            401,
            "MALFORMED_SIGNATURE_HEADER",
        ),
        signed(
            "garbage signature header",
            "garbage".into(),
            401,
            "MALFORMED_SIGNATURE_HEADER",
        ),
        signed("timestamp only", format!("t={now}"), 401, "MALFORMED_SIGNATURE"),
        signed(
            "signature only",
            format!("v1={genuine}"),
            401,
            "MALFORMED_SIGNATURE_HEADER",
        ),
        signed(
            "two timestamps",
            format!("t={now},t={},v1={genuine}", now + 1),
            401,
            "MALFORMED_SIGNATURE_HEADER",
        ),
        signed(
            "non-numeric timestamp",
            format!("t=now,v1={genuine}"),
            401,
            "MALFORMED_SIGNATURE_HEADER",
        ),
        signed(
            "GitHub-style header",
            format!("sha256={genuine}"),
            401,
            "MALFORMED_SIGNATURE_HEADER",
        ),
        signed(
            "non-hex signature",
            format!("t={now},v1={}", "z".repeat(64)),
            401,
            "MALFORMED_SIGNATURE",
        ),
        signed(
            "truncated signature",
            format!("t={now},v1={}", &genuine[..63]),
            401,
            "MALFORMED_SIGNATURE",
        ),
        signed(
            "SHA-1 length signature",
            format!("t={now},v1={}", &genuine[..40]),
            401,
            "MALFORMED_SIGNATURE",
        ),
        signed(
            "wrong key",
            sign(b"another-key", now, &body),
            401,
            "INVALID_SIGNATURE",
        ),
        signed(
            "timestamp moved after signing",
            format!("t={},v1={genuine}", now - 1),
            401,
            "INVALID_SIGNATURE",
        ),
        signed(
            "signed over the body alone",
            format!("t={now},v1={}", body_only_mac(&body)),
            401,
            "INVALID_SIGNATURE",
        ),
        Case {
            signature: Sig::Header(sign(SIGNING_KEY.as_bytes(), now, &body)),
            ..case(
                "body changed after signing",
                WEBHOOK,
                tampered,
                401,
                "INVALID_SIGNATURE",
            )
        },
        signed(
            "genuine but ten minutes old",
            sign(SIGNING_KEY.as_bytes(), now - 600, &body),
            401,
            "SIGNATURE_TIMESTAMP_OUT_OF_TOLERANCE",
        ),
        signed(
            "genuine but ten minutes ahead",
            sign(SIGNING_KEY.as_bytes(), now + 600, &body),
            401,
            "SIGNATURE_TIMESTAMP_OUT_OF_TOLERANCE",
        ),
        signed(
            "timestamp in milliseconds",
            sign(SIGNING_KEY.as_bytes(), now * 1000, &body),
            401,
            "SIGNATURE_TIMESTAMP_OUT_OF_TOLERANCE",
        ),
        // Routes and methods.
        Case {
            method: Method::GET,
            ..case("GET on the webhook", WEBHOOK, "", 405, "METHOD_NOT_ALLOWED")
        },
        Case {
            method: Method::PUT,
            ..case("PUT on the webhook", WEBHOOK, "{}", 405, "METHOD_NOT_ALLOWED")
        },
        Case {
            method: Method::DELETE,
            ..case("DELETE on the test endpoint", TEST, "", 405, "METHOD_NOT_ALLOWED")
        },
        case(
            "POST on health",
            "/webhook/calendly/health",
            "{}",
            405,
            "METHOD_NOT_ALLOWED",
        ),
        Case {
            method: Method::GET,
            ..case("unknown path", "/nope", "", 404, "NOT_FOUND")
        },
        case("parent path", "/webhook", "{}", 404, "NOT_FOUND"),
        Case {
            method: Method::GET,
            ..case(
                "path below health",
                "/webhook/calendly/health/x",
                "",
                404,
                "NOT_FOUND",
            )
        },
        // Bodies on the unsigned test endpoint.
        case(
            "invalid UTF-8",
            TEST,
            vec![b'{', 0xff, 0xfe, b'}'],
            400,
            "INVALID_UTF8",
        ),
        case("empty body", TEST, "", 400, "INVALID_JSON"),
        case("unterminated object", TEST, "{", 400, "INVALID_JSON"),
        case(
            "trailing garbage",
            TEST,
            r#"{"event":"invitee.created"} x"#,
            400,
            "INVALID_JSON",
        ),
        case("single quotes", TEST, "{'event': 1}", 400, "INVALID_JSON"),
        case("top-level array", TEST, "[]", 422, "INVALID_PAYLOAD"),
        case("top-level null", TEST, "null", 422, "INVALID_PAYLOAD"),
        case("empty object", TEST, "{}", 422, "INVALID_PAYLOAD"),
        case(
            "event is a number",
            TEST,
            r#"{"event":1,"created_at":"2030-01-01T00:00:00Z","payload":{}}"#,
            422,
            "INVALID_PAYLOAD",
        ),
        case(
            "created_at missing",
            TEST,
            r#"{"event":"invitee.created","payload":{}}"#,
            422,
            "INVALID_PAYLOAD",
        ),
        case(
            "created_at not a time",
            TEST,
            r#"{"event":"invitee.created","created_at":"yesterday","payload":{}}"#,
            422,
            "INVALID_PAYLOAD",
        ),
        case(
            "invitee without uri",
            TEST,
            r#"{"event":"invitee.created","created_at":"2030-01-01T00:00:00Z","payload":{"email":"a@b.c","name":"A"}}"#,
            422,
            "INVALID_PAYLOAD",
        ),
        case(
            "start_time not a time",
            TEST,
            r#"{"event":"invitee.created","created_at":"2030-01-01T00:00:00Z","payload":{"uri":"u","email":"a@b.c","name":"A","scheduled_event":{"uri":"e","start_time":"soon","end_time":"2030-01-01T00:00:00Z"}}}"#,
            422,
            "INVALID_PAYLOAD",
        ),
        case(
            "seed eventData not an object",
            TEST,
            r#"{"eventData":"x"}"#,
            422,
            "INVALID_PAYLOAD",
        ),
        case(
            "seed event missing",
            TEST,
            r#"{"eventData":{"payload":{}}}"#,
            422,
            "INVALID_PAYLOAD",
        ),
        case(
            "seed email is a number",
            TEST,
            r#"{"eventData":{"event":"invitee.created","payload":{"invitee":{"email":7}}}}"#,
            422,
            "INVALID_PAYLOAD",
        ),
        Case {
            content_type: Some("text/plain"),
            ..case(
                "test endpoint, text/plain",
                TEST,
                "{}",
                415,
                "UNSUPPORTED_MEDIA_TYPE",
            )
        },
        case(
            "test endpoint, over 1 MiB",
            TEST,
            oversized,
            413,
            "PAYLOAD_TOO_LARGE",
        ),
    ];
    cases
}

/// The MAC of a signer that leaves out `t.`.
fn body_only_mac(body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SIGNING_KEY.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

async fn send(app: &TestApp, case: &Case) -> reqwest::Response {
    // Once: a refused body is still read (and dropped) while its answer goes out, so a client
    // that writes its whole body first reads the answer rather than a reset.
    let mut request = app
        .http
        .request(case.method.clone(), app.url(case.path))
        .body(case.body.clone());
    if let Some(content_type) = case.content_type {
        request = request.header("content-type", content_type);
    }
    if let Sig::Header(value) = &case.signature {
        request = request.header("calendly-webhook-signature", value.as_str());
    }
    request
        .send()
        .await
        .unwrap_or_else(|error| panic!("{}: HTTP request: {error:?}", case.name))
}

/// The catalogue's size as docs/development.md states it: "a catalogue of N bad requests".
fn catalogue_size_in_the_readme() -> usize {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/development.md"))
        .expect("docs/development.md is readable");
    let words: Vec<&str> = readme
        .split_once("a catalogue of ")
        .expect("docs/development.md counts the catalogue")
        .1
        .split_whitespace()
        .take(3)
        .collect();
    assert_eq!(words[1..], ["bad", "requests"], "the documented sentence changed");
    words[0].parse().expect("a number of bad requests")
}

/// Checks the uniform error answer: status, code, a message, the tracking id in header and body,
/// and a timestamp.
async fn assert_error_answer(response: reqwest::Response, status: u16, code: &str, name: &str) {
    assert_eq!(response.status().as_u16(), status, "{name}");
    let tracking = response
        .headers()
        .get("x-tracking-id")
        .map(|v| v.to_str().expect("ASCII").to_owned());
    assert!(tracking.is_some(), "{name}: X-Tracking-Id");
    let error = json(response).await;
    assert_eq!(error["code"], code, "{name}: {error}");
    assert_eq!(error["trackingId"].as_str(), tracking.as_deref(), "{name}");
    assert!(
        error["error"].as_str().is_some_and(|m| !m.is_empty()),
        "{name}: {error}"
    );
    assert!(error["timestamp"].as_str().is_some(), "{name}: {error}");
}

async fn every_bad_request_gets_its_status_and_code_and_stores_nothing(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[("WEBHOOK_RATE_LIMIT", "1000"), ("TEST_RATE_LIMIT", "1000")],
    )
    .await;
    let cases = catalogue();
    assert_eq!(
        cases.len(),
        catalogue_size_in_the_readme(),
        "the documented count of the catalogue"
    );
    for case in &cases {
        let response = send(&app, case).await;
        assert_error_answer(response, case.status, case.code, case.name).await;
        assert_eq!(app.total_rows().await, 0, "{} stored something", case.name);
    }
    app.stop().await;
}

async fn without_a_signing_key_the_webhook_answers_500_and_the_test_endpoint_still_works(backend: Backend) {
    // Blank counts as unset, so this overrides the test key.
    let app = spawn_app_with(backend, &[("CALENDLY_WEBHOOK_SECRET", "")]).await;
    let body = fixture("invitee-created-one-on-one.json");
    let signed = app
        .post_webhook(
            &body,
            Some(sign(
                SIGNING_KEY.as_bytes(),
                chrono::Utc::now().timestamp(),
                &body,
            )),
        )
        .await;
    assert_error_answer(signed, 500, "WEBHOOK_SECRET_NOT_CONFIGURED", "signed delivery").await;
    let unsigned = app.post_webhook(&body, None).await;
    assert_error_answer(
        unsigned,
        500,
        "WEBHOOK_SECRET_NOT_CONFIGURED",
        "unsigned delivery",
    )
    .await;
    assert_eq!(app.total_rows().await, 0);

    let test = app.post_test_endpoint(&fixture("seed-test-format.json")).await;
    assert_eq!(test.status(), 200, "the unsigned test endpoint works either way");
    assert_eq!(app.count("webhook_events").await, 1);
    app.stop().await;
}

async fn the_test_endpoint_is_404_when_disabled_and_in_production_unless_enabled(backend: Backend) {
    for (settings, enabled) in [
        (&[("ENABLE_TEST_ENDPOINT", "false")][..], false),
        (&[("APP_ENV", "production")][..], false),
        (&[("NODE_ENV", "production")][..], false),
        (
            &[("APP_ENV", "production"), ("ENABLE_TEST_ENDPOINT", "true")][..],
            true,
        ),
        (&[("ENABLE_TEST_ENDPOINT", "true")][..], true),
    ] {
        let app = spawn_app_with(backend, settings).await;
        let response = app.post_test_endpoint(&fixture("seed-test-format.json")).await;
        if enabled {
            assert_eq!(response.status(), 200, "{settings:?}");
            assert_eq!(app.count("webhook_events").await, 1, "{settings:?}");
        } else {
            let name = format!("{settings:?}");
            assert_error_answer(response, 404, "TEST_ENDPOINT_DISABLED", &name).await;
            assert_eq!(app.total_rows().await, 0, "{settings:?}");
        }
        app.stop().await;
    }
}

async fn json_content_types_in_any_case_and_with_parameters_are_accepted_on_both_routes(backend: Backend) {
    let app = spawn_app_with(backend, &[("TEST_RATE_LIMIT", "1000")]).await;
    let content_types = [
        "application/json",
        "Application/JSON; charset=utf-8",
        "APPLICATION/JSON",
        "application/json;charset=UTF-8",
        "application/Json ; charset=\"utf-8\"",
    ];
    for (n, content_type) in content_types.into_iter().enumerate() {
        let body = booking(n);
        let now = chrono::Utc::now().timestamp();
        let webhook = app
            .http
            .post(app.url(WEBHOOK))
            .header("content-type", content_type)
            .header(
                "calendly-webhook-signature",
                sign(SIGNING_KEY.as_bytes(), now, &body),
            )
            .body(body)
            .send()
            .await
            .expect("HTTP request");
        assert_eq!(webhook.status(), 200, "webhook, {content_type}");
        assert_eq!(
            json(webhook).await["result"]["outcome"],
            "processed",
            "{content_type}"
        );

        let seed = format!(
            r#"{{"eventData":{{"event":"invitee.created","payload":{{"invitee":{{"uri":"https://api.calendly.com/invitees/ct-{n}","email":"ct{n}@example.com"}}}}}}}}"#
        );
        let test = app
            .http
            .post(app.url(TEST))
            .header("content-type", content_type)
            .body(seed)
            .send()
            .await
            .expect("HTTP request");
        assert_eq!(test.status(), 200, "test endpoint, {content_type}");
        assert_eq!(
            json(test).await["result"]["outcome"],
            "processed",
            "{content_type}"
        );
    }
    assert_eq!(app.count("meetings").await, 2 * content_types.len() as i64);
    app.stop().await;
}

async fn a_body_of_exactly_one_mib_is_accepted(backend: Backend) {
    let app = spawn_app_with(backend, &[]).await;
    let fixture = String::from_utf8(fixture("invitee-created-one-on-one.json")).expect("UTF-8");
    // Pad inside the JSON (unknown fields are ignored) up to exactly 1 MiB.
    let object = fixture.trim_end().strip_suffix('}').expect("an object");
    let prefix = format!(r#"{object},"padding":""#);
    let suffix = r#""}"#;
    let body = format!(
        "{prefix}{}{suffix}",
        "x".repeat(ONE_MIB - prefix.len() - suffix.len())
    );
    assert_eq!(body.len(), ONE_MIB);
    let response = app.post_signed(body.as_bytes()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.count("meetings").await, 1);
    app.stop().await;
}

async fn a_verified_delivery_that_cannot_be_translated_is_kept_as_failed(backend: Backend) {
    let app = spawn_app_with(backend, &[]).await;
    let body =
        br#"{"event":"invitee.created","created_at":"2030-01-01T00:00:00Z","payload":{"email":"a@b.c"}}"#;
    let response = app.post_signed(body).await;
    assert_eq!(
        response.status(),
        200,
        "Calendly must not retry a genuine delivery for its content"
    );
    let answer = json(response).await;
    assert_eq!(answer["result"]["outcome"], "failed");
    let error = answer["result"]["errors"][0].as_str().expect("a reason");
    assert!(error.contains("payload"), "{error}");
    assert_eq!(app.count("webhook_events").await, 1);
    assert_eq!(app.count("meetings").await, 0);
    // A retry of the same body is recognised.
    assert_eq!(
        json(app.post_signed(body).await).await["result"]["outcome"],
        "duplicate"
    );
    app.stop().await;
}

async fn test_endpoint_answers_carry_the_rate_limit_headers(backend: Backend) {
    let app = spawn_app_with(backend, &[("TEST_RATE_LIMIT", "2")]).await;
    let body = fixture("seed-test-format.json");
    let first = app.post_test_endpoint(&body).await;
    assert_eq!(first.headers()["ratelimit-limit"], "2");
    assert_eq!(first.headers()["ratelimit-remaining"], "1");
    app.post_test_endpoint(&body).await;
    let throttled = app.post_test_endpoint(&body).await;
    assert_eq!(throttled.status(), 429);
    assert_eq!(throttled.headers()["ratelimit-remaining"], "0");
    assert!(throttled.headers().contains_key("ratelimit-reset"));
    assert!(throttled.headers().contains_key("retry-after"));
    app.stop().await;
}

/// A client that writes its whole body before reading (reqwest, like hyper, does) gets the answer
/// to a refused body, declared or chunked, every time: the rest of the body is read and dropped
/// while the answer goes out, instead of the connection being reset under the client's write.
async fn a_refused_body_is_answered_to_a_client_that_writes_it_whole(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[("WEBHOOK_RATE_LIMIT", "1000"), ("TEST_RATE_LIMIT", "1000")],
    )
    .await;
    let three_mib = vec![b' '; 3 * ONE_MIB];
    // Within the limit, so refused for its content type alone, before any of it is read.
    let one_mib = vec![b' '; ONE_MIB];
    for attempt in 0..5 {
        for (content_type, body, status, code) in [
            ("application/json", &three_mib, 413, "PAYLOAD_TOO_LARGE"),
            ("text/plain", &one_mib, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ] {
            let refused = Case {
                content_type: Some(content_type),
                ..case("declared body, whole", WEBHOOK, body.clone(), status, code)
            };
            let name = format!("{} bytes as {content_type}, attempt {attempt}", body.len());
            assert_error_answer(send(&app, &refused).await, status, code, &name).await;
        }
        let head = chunked_post(app.http_addr, WEBHOOK, &three_mib).await;
        assert!(
            head.starts_with("HTTP/1.1 413"),
            "chunked, attempt {attempt}: {head}"
        );
    }
    assert_eq!(app.total_rows().await, 0);
    app.stop().await;
}

/// Writes a chunked POST of `body` whole, then reads the answer's status line and headers.
async fn chunked_post(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connects");
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             transfer-encoding: chunked\r\n\r\n{:x}\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("writes the head");
        stream.write_all(body).await.expect("writes the whole body");
        stream.write_all(b"\r\n0\r\n\r\n").await.expect("ends the body");
        let mut answer = vec![0; 4096];
        let read = stream.read(&mut answer).await.expect("reads the answer");
        String::from_utf8_lossy(&answer[..read]).into_owned()
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), exchange)
        .await
        .expect("the exchange ends within 30 s")
}

crate::on_both_backends!(
    every_bad_request_gets_its_status_and_code_and_stores_nothing,
    without_a_signing_key_the_webhook_answers_500_and_the_test_endpoint_still_works,
    the_test_endpoint_is_404_when_disabled_and_in_production_unless_enabled,
    json_content_types_in_any_case_and_with_parameters_are_accepted_on_both_routes,
    a_body_of_exactly_one_mib_is_accepted,
    a_verified_delivery_that_cannot_be_translated_is_kept_as_failed,
    test_endpoint_answers_carry_the_rate_limit_headers,
    a_refused_body_is_answered_to_a_client_that_writes_it_whole,
);
