//! `cargo run` at the repository root: the whole service on one machine, in one process.
//!
//! The meeting service and the adapter start exactly as their own binaries do, talking real gRPC
//! over loopback, on an SQLite file under `data/` (unless `DATABASE_URL` says otherwise), with
//! migrations applied. Settings come from the environment and `.env`, as in production.

use anyhow::Context;
use service_kit::{
    settings::{Environment, process_env},
    shutdown, telemetry,
};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    service_kit::binary::start(run)
}

async fn run() -> anyhow::Result<()> {
    let _ = dotenvy::dotenv();
    let lookup = with_internal_token(&process_env);
    let (meeting_config, mut adapter_config) = match (
        meeting_service::Config::from_lookup(&lookup),
        adapter::Config::from_lookup(&lookup),
    ) {
        (Ok(meeting), Ok(adapter)) => (meeting, adapter),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("configuration error: {error}");
            std::process::exit(2);
        }
    };
    let _logs = telemetry::init_logging(&adapter_config.log)?;

    // One process has one metrics recorder, so both services' metrics share one listener.
    let metrics = telemetry::metrics_handle()?;
    let metrics_listener = shutdown::bind(adapter_config.metrics_addr, "metrics").await?;
    let grpc_listener = shutdown::bind(meeting_config.grpc_addr, "gRPC").await?;
    let http_listener = shutdown::bind(adapter_config.http_addr, "HTTP").await?;
    if process_env("MEETING_SERVICE_URL").is_none() {
        let grpc_addr = grpc_listener.local_addr().context("reading the gRPC address")?;
        adapter_config.meeting_service_url = format!("http://{grpc_addr}");
    }
    tracing::info!(
        http = %adapter_config.http_addr,
        grpc = %meeting_config.grpc_addr,
        metrics = %adapter_config.metrics_addr,
        database = %redacted_url(meeting_config.database_url.expose()),
        "starting the adapter and the meeting service"
    );

    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown::shutdown_signal().await;
            stop.cancel();
        }
    });
    let stopped = |token: &CancellationToken| {
        let token = token.clone();
        async move { token.cancelled().await }
    };
    tokio::spawn(telemetry::serve_metrics(
        metrics_listener,
        metrics,
        stopped(&stop),
    ));
    let meeting = meeting_service::run(meeting_config, grpc_listener, stopped(&stop));
    let adapter = adapter::run(adapter_config, http_listener, stopped(&stop));
    // If either stops with an error, stop the other too.
    let result = tokio::try_join!(
        async {
            let result = meeting.await;
            if result.is_err() {
                stop.cancel();
            }
            result
        },
        async {
            let result = adapter.await;
            if result.is_err() {
                stop.cancel();
            }
            result
        },
    );
    result.map(|_| ())
}

/// In production the meeting service refuses to start without `INTERNAL_API_TOKEN`. Here both
/// services share one process, so when it is unset they share a random token made for this run:
/// a seed user's `.env` with `NODE_ENV=production` still starts, and the gRPC port stays closed
/// to callers without a token.
fn with_internal_token(lookup: &dyn Fn(&str) -> Option<String>) -> impl Fn(&str) -> Option<String> + '_ {
    let production = matches!(Environment::from_lookup(lookup), Ok(Environment::Production));
    let missing = lookup("INTERNAL_API_TOKEN").is_none_or(|token| token.trim().is_empty());
    let generated = (production && missing).then(|| uuid::Uuid::new_v4().simple().to_string());
    if generated.is_some() {
        eprintln!(
            "INTERNAL_API_TOKEN is unset: using a random token for this run; set it to call the gRPC API"
        );
    }
    move |name| match (name, &generated) {
        ("INTERNAL_API_TOKEN", Some(token)) => Some(token.clone()),
        _ => lookup(name),
    }
}

/// The URL without any password, for the start-up log line.
fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://[redacted]@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}
