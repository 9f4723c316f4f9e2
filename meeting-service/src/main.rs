//! `meeting-service`: the gRPC meeting service on its own, configured by the environment.

use anyhow::Context;
use meeting_service::Config;
use service_kit::{settings::process_env, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = dotenvy::dotenv();
    let config = match Config::from_lookup(&process_env) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("configuration error: {error}");
            std::process::exit(2);
        }
    };
    let _logs = telemetry::init_logging(&config.log)?;
    let metrics = telemetry::metrics_handle()?;
    let metrics_listener = shutdown::bind(config.metrics_addr, "metrics").await?;
    let listener = shutdown::bind(config.grpc_addr, "gRPC").await?;
    tokio::spawn(telemetry::serve_metrics(
        metrics_listener,
        metrics,
        shutdown::shutdown_signal(),
    ));
    meeting_service::run(config, listener, shutdown::shutdown_signal())
        .await
        .context("meeting service stopped with an error")
}
