//! Rate limits that never drop Calendly: verified deliveries are never throttled, unverified
//! traffic is, per client address, and forwarding headers count only from trusted proxies.

use crate::helpers::{Backend, TestApp, booking, spawn_app, spawn_app_with};

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
    let app = spawn_app(backend).await;
    let started = std::time::Instant::now();
    for chunk in (0..300).collect::<Vec<_>>().chunks(10) {
        let answers =
            futures::future::join_all(chunk.iter().map(|n| app.post_signed_owned(booking(*n)))).await;
        for status in answers {
            assert_eq!(status, 200, "a verified delivery is never throttled");
        }
    }
    assert!(
        started.elapsed().as_secs() < 60,
        "the 300 deliveries took {:?}",
        started.elapsed()
    );
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
    let app = spawn_app_with(backend, &[("WEBHOOK_RATE_LIMIT", "2")]).await;
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
        &[("WEBHOOK_RATE_LIMIT", "2"), ("TRUSTED_PROXIES", "127.0.0.1/32")],
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

async fn exempt_networks_are_never_throttled(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ("WEBHOOK_RATE_LIMIT", "1"),
            ("RATE_LIMIT_EXEMPT_CIDRS", "127.0.0.0/8"),
        ],
    )
    .await;
    for _ in 0..5 {
        assert_eq!(unsigned(&app, None).await, 401);
    }
    app.stop().await;
}

async fn slow_clients_are_cut_off_without_stalling_others(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(backend, &[("REQUEST_READ_TIMEOUT_SECS", "1")]).await;
    let started = std::time::Instant::now();

    // Headers that never finish.
    let mut stalled_headers = tokio::net::TcpStream::connect(app.http_addr)
        .await
        .expect("connect");
    stalled_headers
        .write_all(b"POST /webhook/calendly HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    // A connection that never sends a byte.
    let mut silent = tokio::net::TcpStream::connect(app.http_addr)
        .await
        .expect("connect");
    // A body trickled one byte at a time.
    let mut trickle = tokio::net::TcpStream::connect(app.http_addr)
        .await
        .expect("connect");
    trickle
        .write_all(b"POST /webhook/calendly/test HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .expect("write");
    let trickling = tokio::spawn(async move {
        for _ in 0..20 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            if trickle.write_all(b" ").await.is_err() {
                break;
            }
        }
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            trickle.read_to_end(&mut answer),
        )
        .await;
        String::from_utf8_lossy(&answer).into_owned()
    });

    // Meanwhile others are served at once.
    assert_eq!(app.post_signed_owned(booking(1)).await, 200);
    assert!(
        started.elapsed().as_millis() < 900,
        "a normal request waited {:?}",
        started.elapsed()
    );

    let mut buffer = [0u8; 64];
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stalled_headers.read(&mut buffer),
    )
    .await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "stalled headers are cut off: {closed:?}"
    );
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), silent.read(&mut buffer)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a silent connection is cut off: {closed:?}"
    );
    let answer = trickling.await.expect("trickle task");
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "a trickled body gets 408: {answer:.200}"
    );
    assert!(answer.contains("REQUEST_TIMEOUT"));
    app.stop().await;
}

crate::on_both_backends!(
    slow_clients_are_cut_off_without_stalling_others,
    three_hundred_signed_deliveries_pass_while_the_101st_unsigned_request_is_throttled,
    forwarding_headers_cannot_dodge_the_limit_unless_the_peer_is_a_trusted_proxy,
    exempt_networks_are_never_throttled,
);
