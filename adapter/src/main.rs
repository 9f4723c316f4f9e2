//! `adapter`: the HTTP front door on its own, configured by the environment.

use adapter::Config;
use anyhow::Context;
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
    let listener = shutdown::bind(config.http_addr, "HTTP").await?;
    tokio::spawn(telemetry::serve_metrics(
        metrics_listener,
        metrics,
        shutdown::shutdown_signal(),
    ));
    adapter::run(config, listener, shutdown::shutdown_signal())
        .await
        .context("adapter stopped with an error")
}
