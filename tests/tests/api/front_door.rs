//! Rate limits that never drop Calendly: verified deliveries are never throttled, unverified
//! traffic is, per client address, and forwarding headers count only from trusted proxies.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Backend, TestApp, booking, fixture, spawn_app_with};

/// A window so long that no request's allowance comes back while a test runs, however slow the
/// machine: one request returns every `window / limit`, an hour or more here.
const HOURS: &str = "360000";

async fn unsigned(app: &TestApp, forwarded_for: Option<&str>) -> u16 {
    let mut request = app
        .http
        .post(app.url("/webhook/calendly"))
        .header("content-type", "application/json")
        .body("{}");
    if let Some(client) = forwarded_for {
        request = request.header("x-forwarded-for", client);
    }
    request.send().await.expect("request").status().as_u16()
}

async fn three_hundred_signed_deliveries_pass_while_the_101st_unsigned_request_is_throttled(
    backend: Backend,
) {
    let app = spawn_app_with(backend, &[("WEBHOOK_RATE_WINDOW_SECS", HOURS)]).await;
    for chunk in (0..300).collect::<Vec<_>>().chunks(10) {
        let answers =
            futures::future::join_all(chunk.iter().map(|n| app.post_signed_owned(booking(*n)))).await;
        for status in answers {
            assert_eq!(status, 200, "a verified delivery is never throttled");
        }
    }
    assert_eq!(app.count("meetings").await, 300);
    for n in 1..=100 {
        assert_eq!(
            unsigned(&app, None).await,
            401,
            "unsigned request {n} is only refused"
        );
    }
    assert_eq!(
        unsigned(&app, None).await,
        429,
        "the 101st unsigned request is throttled"
    );
    // Calendly's own deliveries still get through from the same address.
    assert_eq!(app.post_signed_owned(booking(300)).await, 200);
    app.stop().await;
}

async fn forwarding_headers_cannot_dodge_the_limit_unless_the_peer_is_a_trusted_proxy(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[("WEBHOOK_RATE_LIMIT", "2"), ("WEBHOOK_RATE_WINDOW_SECS", HOURS)],
    )
    .await;
    let rotating = ["203.0.113.1", "203.0.113.2", "203.0.113.3"];
    let statuses: Vec<u16> =
        futures::future::join_all(rotating.iter().map(|ip| unsigned(&app, Some(ip)))).await;
    let mut statuses = statuses;
    statuses.sort();
    assert_eq!(
        statuses,
        [401, 401, 429],
        "an untrusted peer's X-Forwarded-For is ignored"
    );
    app.stop().await;

    let app = spawn_app_with(
        backend,
        &[
            ("WEBHOOK_RATE_LIMIT", "2"),
            ("WEBHOOK_RATE_WINDOW_SECS", HOURS),
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ],
    )
    .await;
    for ip in rotating {
        assert_eq!(
            unsigned(&app, Some(ip)).await,
            401,
            "behind the proxy each client has its own allowance"
        );
    }
    assert_eq!(unsigned(&app, Some("203.0.113.1")).await, 401);
    assert_eq!(
        unsigned(&app, Some("203.0.113.1")).await,
        429,
        "the client behind the proxy is limited"
    );
    // Entries left of the proxy's own are the client's to invent; the right-most untrusted one counts.
    assert_eq!(unsigned(&app, Some("198.51.100.9, 203.0.113.1")).await, 429);
    app.stop().await;
}

async fn exempt_networks_are_never_throttled_on_either_endpoint(backend: Backend) {
    let limits = [
        ("WEBHOOK_RATE_LIMIT", "1"),
        ("WEBHOOK_RATE_WINDOW_SECS", HOURS),
        ("TEST_RATE_LIMIT", "1"),
        ("TEST_RATE_WINDOW_SECS", HOURS),
    ];
    let seed = fixture("seed-test-format.json");
    // The same limits without the exemption throttle the second request, so the exemption is
    // what lets the others through.
    let app = spawn_app_with(backend, &limits).await;
    assert_eq!(unsigned(&app, None).await, 401);
    assert_eq!(unsigned(&app, None).await, 429);
    assert_eq!(app.post_test_endpoint(&seed).await.status(), 200);
    assert_eq!(app.post_test_endpoint(&seed).await.status(), 429);
    app.stop().await;

    let mut exempt = limits.to_vec();
    exempt.push(("RATE_LIMIT_EXEMPT_CIDRS", "127.0.0.0/8"));
    let app = spawn_app_with(backend, &exempt).await;
    for n in 1..=5 {
        assert_eq!(unsigned(&app, None).await, 401, "unsigned request {n}");
        let test = app.post_test_endpoint(&seed).await;
        assert_eq!(test.status(), 200, "test request {n}");
        assert!(
            !test.headers().contains_key("retry-after"),
            "an exempt client is never told to wait"
        );
    }
    assert_eq!(
        app.count("webhook_events").await,
        1,
        "the same seed body, stored once"
    );
    app.stop().await;
}

/// Connections that send their request too slowly, or not at all: headers that never finish, a
/// connection that says nothing, and a body that arrives a byte at a time and never completes.
struct SlowClients {
    stalled_headers: tokio::net::TcpStream,
    silent: tokio::net::TcpStream,
    trickle: tokio::net::TcpStream,
}

impl SlowClients {
    async fn connect(app: &TestApp) -> Self {
        let connect = || async {
            tokio::net::TcpStream::connect(app.http_addr)
                .await
                .expect("connect")
        };
        let mut stalled_headers = connect().await;
        stalled_headers
            .write_all(b"POST /webhook/calendly HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        let silent = connect().await;
        let mut trickle = connect().await;
        trickle
            .write_all(b"POST /webhook/calendly/test HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            .await
            .expect("write");
        Self {
            stalled_headers,
            silent,
            trickle,
        }
    }
}

/// Whether the server has left `stream` open: nothing to read yet, and no end of stream.
fn still_open(stream: &tokio::net::TcpStream) -> bool {
    let mut buffer = [0u8; 1];
    matches!(stream.try_read(&mut buffer), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Everything the server sends on `stream` until it closes it. The limit only keeps a server that
/// never closes from hanging the run.
async fn read_until_closed(stream: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(120), stream.read_to_end(&mut answer)).await;
    // A reset counts as closed too.
    assert!(
        read.is_ok(),
        "the server left the connection open: {:?}",
        String::from_utf8_lossy(&answer)
    );
    answer
}

async fn slow_clients_do_not_hold_up_other_requests(backend: Backend) {
    // Slow clients are cut off only after an hour here, so they are certainly still held while
    // the normal request is served, however long that takes.
    let app = spawn_app_with(backend, &[("REQUEST_READ_TIMEOUT_SECS", "3600")]).await;
    let slow = SlowClients::connect(&app).await;
    assert_eq!(app.post_signed_owned(booking(1)).await, 200);
    for (name, stream) in [
        ("stalled headers", &slow.stalled_headers),
        ("silent", &slow.silent),
        ("trickle", &slow.trickle),
    ] {
        assert!(
            still_open(stream),
            "{name}: still held after the normal request was answered"
        );
    }
    // Closed by the client, so the adapter's graceful stop does not wait for them.
    drop(slow);
    app.stop().await;
}

async fn slow_clients_are_cut_off_after_the_read_timeout(backend: Backend) {
    let app = spawn_app_with(backend, &[("REQUEST_READ_TIMEOUT_SECS", "1")]).await;
    let SlowClients {
        mut stalled_headers,
        mut silent,
        trickle,
    } = SlowClients::connect(&app).await;
    // The body keeps coming until the server answers: a trickle must not reset the deadline.
    let (mut trickle_in, mut trickle_out) = trickle.into_split();
    let trickling = tokio::spawn(async move {
        while trickle_out.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let answer = read_until_closed(&mut trickle_in).await;
    trickling.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "a trickled body gets 408: {answer:.200}"
    );
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer:.400}");

    assert_eq!(
        read_until_closed(&mut stalled_headers).await,
        b"",
        "stalled headers are cut off without an answer"
    );
    assert_eq!(
        read_until_closed(&mut silent).await,
        b"",
        "a silent connection is cut off without an answer"
    );
    // Still serving afterwards.
    assert_eq!(app.post_signed_owned(booking(2)).await, 200);
    app.stop().await;
}

crate::on_both_backends!(
    slow_clients_do_not_hold_up_other_requests,
    slow_clients_are_cut_off_after_the_read_timeout,
    three_hundred_signed_deliveries_pass_while_the_101st_unsigned_request_is_throttled,
    forwarding_headers_cannot_dodge_the_limit_unless_the_peer_is_a_trusted_proxy,
    exempt_networks_are_never_throttled_on_either_endpoint,
);
