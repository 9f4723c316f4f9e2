//! How a service's own binary starts, the same for the adapter and the meeting service: `.env`,
//! settings read once (a bad one prints one line and exits 2 before any port is bound), logs,
//! `/metrics` on its own port, the service's listener, then the service until SIGTERM or Ctrl-C.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{
    settings::{Lookup, SettingError, process_env},
    shutdown, telemetry,
};

/// What the start-up needs from a service's settings.
pub struct Startup<'a> {
    /// The service's name and what its listener serves (`HTTP`, `gRPC`), for messages.
    pub name: &'static str,
    pub protocol: &'static str,
    pub log: &'a telemetry::LogSettings,
    pub metrics_addr: SocketAddr,
    pub listen_addr: SocketAddr,
}

/// A service's settings, as its binary reads them.
pub trait ServiceSettings: Sized {
    fn read(lookup: Lookup<'_>) -> Result<Self, SettingError>;
    fn startup(&self) -> Startup<'_>;
}

/// Starts a binary's tokio runtime and runs `main` on it to the end. Call it as the whole of
/// `fn main`, in place of `#[tokio::main]`: malloc's arenas must be capped before the runtime's
/// worker threads exist ([`crate::allocator::limit_malloc_arenas`]), and the macro would start
/// them first.
pub fn start<Fut>(main: impl FnOnce() -> Fut) -> anyhow::Result<()>
where
    Fut: Future<Output = anyhow::Result<()>>,
{
    crate::allocator::limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(main())
}

/// Runs the service `run` as its binary: see the module's documentation.
pub async fn run_binary<S, Fut>(
    run: impl FnOnce(S, TcpListener, shutdown::Signal) -> Fut,
) -> anyhow::Result<()>
where
    S: ServiceSettings,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let _ = dotenvy::dotenv();
    let settings = match S::read(&process_env) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("configuration error: {error}");
            std::process::exit(2);
        }
    };
    let startup = settings.startup();
    let name = startup.name;
    let _logs = telemetry::init_logging(startup.log)?;
    let metrics = telemetry::metrics_handle()?;
    let metrics_listener = shutdown::bind(startup.metrics_addr, "metrics").await?;
    let listener = shutdown::bind(startup.listen_addr, startup.protocol).await?;
    tokio::spawn(telemetry::serve_metrics(
        metrics_listener,
        metrics,
        shutdown::shutdown_signal(),
    ));
    run(settings, listener, Box::pin(shutdown::shutdown_signal()))
        .await
        .with_context(|| format!("{name} stopped with an error"))
}
