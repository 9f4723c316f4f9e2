//! The rate limiter's memory follows recent clients only: 100,000 distinct client addresses
//! (through a trusted proxy's `X-Forwarded-For`) are tracked, then forgotten once their buckets
//! refill. Driven through the real router and handler, in process.

use std::{net::SocketAddr, time::Duration};

use adapter::{Config, startup};
use axum::{body::Body, extract::ConnectInfo, http::Request};
use service_kit::settings::map_lookup;
use tower::ServiceExt;

const CLIENTS: u32 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_for_a_hundred_thousand_clients_is_pruned() {
    let settings = [
        ("CALENDLY_WEBHOOK_SECRET", "k"),
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("WEBHOOK_RATE_LIMIT", "10"),
        // One token back every 100 ms: a client's bucket is full again soon after its request.
        ("WEBHOOK_RATE_WINDOW_SECS", "1"),
        ("LOG_DIR", "off"),
    ];
    let config = Config::from_lookup(&map_lookup(
        settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    ))
    .expect("settings");
    let state = startup::state(config).expect("state");
    let app = startup::router(state.clone());
    let ingress: SocketAddr = "127.0.0.1:40000".parse().expect("address");

    for n in 0..CLIENTS {
        let client = format!("100.{}.{}.{}", 64 + (n >> 16), (n >> 8) & 0xff, n & 0xff);
        let mut request = Request::post("/webhook/calendly")
            .header("content-type", "application/json")
            .header("x-forwarded-for", client)
            .body(Body::from("{}"))
            .expect("request");
        request.extensions_mut().insert(ConnectInfo(ingress));
        let response = app.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), 401, "unsigned, under its own client's limit");
    }
    assert_eq!(state.webhook_limiter.tracked_clients(), CLIENTS as usize);

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    state.webhook_limiter.prune();
    assert_eq!(
        state.webhook_limiter.tracked_clients(),
        0,
        "every idle client is forgotten"
    );
}
