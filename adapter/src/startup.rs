//! The router, its layers, and serving it until shutdown.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{
    Router,
    extract::ConnectInfo,
    http::Request,
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;

use crate::{
    AppState, Config,
    error::ApiError,
    meeting_client::MeetingClient,
    rate_limit::{ClientLimiter, TestLimiter},
    routes, tracking,
};

/// The most a request's line and headers may take (hyper's read buffer, at least 8 KiB).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// How often idle rate-limit buckets are forgotten.
const LIMITER_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/webhook/calendly", post(routes::webhook::receive))
        .route("/webhook/calendly/health", get(routes::health::report))
        .route("/webhook/calendly/openapi.json", get(crate::openapi::document));
    let routes = if state.config.test_endpoint_enabled {
        routes.route_service("/webhook/calendly/test", test_endpoint(state.clone()))
    } else {
        routes.route("/webhook/calendly/test", post(routes::test_endpoint::disabled))
    };
    with_layers(routes, state)
}

/// The test endpoint behind its rate limit (a tower_governor layer), which clients in
/// `RATE_LIMIT_EXEMPT_CIDRS` go around: the layer has no allow-list of its own.
fn test_endpoint(
    state: AppState,
) -> impl tower::Service<
    Request<axum::body::Body>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response, std::convert::Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    let method_not_allowed = || async { ApiError::MethodNotAllowed };
    let plain = post(routes::test_endpoint::receive)
        .fallback(method_not_allowed)
        .with_state(state.clone());
    let limited = post(routes::test_endpoint::receive)
        .layer(state.test_limiter.layer())
        .layer(axum::middleware::map_response(
            crate::rate_limit::rename_allowance_headers,
        ))
        .fallback(method_not_allowed)
        .with_state(state.clone());
    tower::service_fn(move |request: Request<axum::body::Body>| {
        let exempt = state
            .test_limiter
            .client(&request)
            .is_some_and(|client| state.is_exempt(client));
        let route = if exempt { plain.clone() } else { limited.clone() };
        async move { route.oneshot(request).await }
    })
}

/// The fallbacks and layers every route gets: 404/405 as error bodies, a panic as a 500 that
/// leaves the process serving, and (outermost) the tracking id, error rendering and timing.
fn with_layers(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(tracking::track))
        .with_state(state)
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked; the process keeps serving");
    ApiError::Internal.into_response()
}

pub fn state(config: Config) -> anyhow::Result<AppState> {
    let meeting_client = MeetingClient::new(
        &config.meeting_service_url,
        config.internal_api_token.as_ref().map(|t| t.expose()),
        config.meeting_service_timeout,
    )
    .context("MEETING_SERVICE_URL")?;
    Ok(AppState {
        webhook_limiter: Arc::new(ClientLimiter::new(config.webhook_rate_limit)),
        test_limiter: TestLimiter::new(config.test_rate_limit, config.trusted_proxies.clone()),
        config: Arc::new(config),
        meeting_client,
        started: Instant::now(),
    })
}

/// Serves the adapter on `listener` until `shutdown` resolves; in-flight requests then get
/// `config.shutdown_grace` to finish.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    crate::metrics::describe();
    let grace = config.shutdown_grace;
    let header_timeout = config.request_read_timeout;
    let state = state(config)?;
    let pruner = tokio::spawn(prune_limiters(state.clone()));
    let health_follower = tokio::spawn(state.meeting_client.follow_health());
    let addr = listener
        .local_addr()
        .context("reading the HTTP listener address")?;
    tracing::info!(%addr, "adapter listening (HTTP)");
    let served = serve(listener, router(state), shutdown, header_timeout, grace).await;
    pruner.abort();
    health_follower.abort();
    tracing::info!("adapter stopped");
    served
}

/// axum's own `serve` sets no timer, so hyper's header read timeout never fires and a client
/// that sends headers slowly holds its connection forever. This loop is `serve` with the timer,
/// the timeout, and a bounded graceful drain.
async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    header_timeout: Duration,
    grace: Duration,
) -> anyhow::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // The request line and headers must fit in this, else hyper answers 431. A Calendly
        // delivery's headers are well under 2 KiB; the body is streamed and not bound by it.
        .max_buf_size(MAX_HEADER_BYTES);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = app.clone().map_request(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // The auto builder reads the protocol preface with no timer, and hyper's header timeout
            // starts only after it: a client that connects and sends nothing would hold its socket
            // and this task forever.
            let mut first_byte = [0u8; 1];
            let first_read = tokio::time::timeout(header_timeout, stream.peek(&mut first_byte)).await;
            if !matches!(first_read, Ok(Ok(1))) {
                tracing::debug!(%peer, "connection sent nothing in time; closed");
                return;
            }
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "in-flight requests did not finish within the grace period");
        }
    }
    Ok(())
}

async fn prune_limiters(state: AppState) {
    loop {
        tokio::time::sleep(LIMITER_PRUNE_INTERVAL).await;
        state.webhook_limiter.prune();
        state.test_limiter.prune();
        metrics::gauge!("calendly_rate_limiter_tracked_clients", "endpoint" => "webhook")
            .set(state.webhook_limiter.tracked_clients() as f64);
        metrics::gauge!("calendly_rate_limiter_tracked_clients", "endpoint" => "test")
            .set(state.test_limiter.tracked_clients() as f64);
    }
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use http_body_util::BodyExt;
    use service_kit::settings::map_lookup;
    use tower::ServiceExt;

    use super::*;

    async fn boom() -> &'static str {
        panic!("handler bug")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_with_the_error_body_and_serving_continues() {
        let config = Config::from_lookup(&map_lookup(Default::default())).expect("defaults");
        let app = with_layers(
            Router::new().route("/boom", get(boom)),
            state(config).expect("state"),
        );
        for _ in 0..2 {
            let response = app
                .clone()
                .oneshot(Request::get("/boom").body(Body::empty()).expect("request"))
                .await;
            let response = response.expect("infallible");
            assert_eq!(response.status(), 500);
            assert!(response.headers().contains_key("x-tracking-id"));
            let body = response.into_body().collect().await.expect("body").to_bytes();
            let error: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(error["code"], "INTERNAL_ERROR");
            // A body without `error` would pass a leak check vacuously, so the field is required.
            let message = error["error"]
                .as_str()
                .expect("the error body has an `error` message");
            assert_eq!(message, "internal error");
            assert!(!message.contains("handler bug"), "internals never leak");
            assert!(
                error["trackingId"].is_string() && error["timestamp"].is_string(),
                "{error}"
            );
        }
    }
}
