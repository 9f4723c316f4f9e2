//! Log setup, the Prometheus recorder and its `/metrics` listener.

use std::{path::PathBuf, sync::OnceLock, time::Duration};

use anyhow::Context;

use crate::{
    log_file::DailyLogFile,
    settings::{Lookup, SettingError, optional, parsed},
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tracing::Level;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{
    EnvFilter, Layer, filter::LevelFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt,
};

/// How log lines are written to standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Readable lines with timestamps, for people at a terminal.
    Pretty,
    /// One JSON object per line, for Kubernetes log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "pretty" | "text" | "console" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!("expected pretty or json, got {other:?}")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Filter used when `RUST_LOG` is unset, e.g. `info`.
    pub default_filter: String,
    pub format: LogFormat,
    /// Where `combined.log` (every line) and `error.log` (errors only) are written as JSON lines;
    /// `None` writes no files.
    pub dir: Option<PathBuf>,
}

impl LogSettings {
    /// `LOG_FORMAT` (pretty | json; json by default in production), `LOG_DIR` (JSON log files;
    /// `logs` by default in development, off by default in production, `off` to disable),
    /// `LOG_LEVEL` (the filter when `RUST_LOG` is unset; `info` by default).
    pub fn from_lookup(lookup: Lookup<'_>, production: bool) -> Result<Self, SettingError> {
        let default_format = if production {
            LogFormat::Json
        } else {
            LogFormat::Pretty
        };
        let dir = match optional(lookup, "LOG_DIR") {
            Some(dir) if dir.eq_ignore_ascii_case("off") => None,
            Some(dir) => Some(PathBuf::from(dir)),
            None if production => None,
            None => Some(PathBuf::from("logs")),
        };
        Ok(Self {
            default_filter: optional(lookup, "LOG_LEVEL").unwrap_or_else(|| "info".to_owned()),
            format: parsed(lookup, "LOG_FORMAT", default_format)?,
            dir,
        })
    }
}

/// Rotated log files kept per file: two weeks of daily files.
const ROTATED_FILES_KEPT: usize = 14;

/// Keeps the background log writers (standard output and the files) alive; dropping it flushes
/// them.
#[must_use = "dropping the guard stops logging"]
pub struct LogGuard {
    _writers: Vec<WorkerGuard>,
}

/// Lines that may wait for a log writer's thread before a logging thread waits with them. A few
/// hundred KiB at most: enough to ride out a burst, small enough for the memory budget.
const LINES_QUEUED: usize = 1024;

/// `writer` on a thread of its own, so that a slow pipe, terminal or disk never stalls a tokio
/// worker in `write`. Never lossy: with `LINES_QUEUED` lines waiting, the logging thread waits, as
/// it would writing itself. The thread flushes each time its queue runs empty, so a buffered
/// `writer` sends lines logged together in one `write`.
fn on_own_thread<W: std::io::Write + Send + 'static>(writer: W, name: &str) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LINES_QUEUED)
        .thread_name(name)
        .finish(writer)
}

/// Installs the global subscriber. Call once per process, before anything logs.
pub fn init_logging(settings: &LogSettings) -> anyhow::Result<LogGuard> {
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.default_filter));
    let (stdout_writer, stdout_guard) =
        on_own_thread(std::io::BufWriter::new(std::io::stdout()), "log-stdout");
    let stdout = match settings.format {
        LogFormat::Pretty => fmt::layer()
            .with_target(false)
            .with_writer(stdout_writer)
            .with_filter(filter())
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(stdout_writer)
            .with_filter(filter())
            .boxed(),
    };
    let mut writers = vec![stdout_guard];
    let mut layers = vec![stdout];
    if let Some(dir) = &settings.dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating log directory {}", dir.display()))?;
        for (file, level) in [("combined.log", None), ("error.log", Some(Level::ERROR))] {
            let appender = DailyLogFile::open(dir, file, ROTATED_FILES_KEPT)
                .with_context(|| format!("opening {}", dir.join(file).display()))?;
            let (writer, guard) = on_own_thread(appender, "log-file");
            writers.push(guard);
            let layer = fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_ansi(false)
                .with_writer(writer);
            layers.push(match level {
                Some(level) => layer.with_filter(LevelFilter::from_level(level)).boxed(),
                None => layer.with_filter(filter()).boxed(),
            });
        }
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .context("installing the log subscriber")?;
    Ok(LogGuard { _writers: writers })
}

/// Latency buckets in seconds: webhook handling is expected in milliseconds, and Calendly gives
/// up after 15 s.
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Events per ingest transaction: 1 when idle, up to `INGEST_BATCH_MAX` (default 64) under load.
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Time in the ingest queue: microseconds when idle, about a commit's time under load.
const QUEUE_WAIT_BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use. Both services share it when they
/// run in one process.
pub fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    if let Some(handle) = RECORDER.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("calendly_ingest_batch_wait_seconds".to_owned()),
            QUEUE_WAIT_BUCKETS_SECONDS,
        )
        .context("configuring histogram buckets")?
        .set_buckets_for_metric(
            Matcher::Full("calendly_ingest_batch_size".to_owned()),
            BATCH_SIZE_BUCKETS,
        )
        .context("configuring histogram buckets")?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS_SECONDS)
        .context("configuring histogram buckets")?
        .build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        // Another thread won the race; use its recorder.
        return RECORDER
            .get()
            .cloned()
            .context("a foreign metrics recorder is installed");
    }
    let _ = RECORDER.set(handle.clone());
    metrics::gauge!(
        "calendly_build_info",
        "version" => env!("CARGO_PKG_VERSION")
    )
    .set(1.0);
    Ok(handle)
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves, and runs the recorder's
/// upkeep (which the exporter's own listener would otherwise do).
pub async fn serve_metrics(
    listener: TcpListener,
    handle: PrometheusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let upkeep_handle = handle.clone();
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep_handle.run_upkeep();
        }
    });
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    handle.render(),
                )
            }
        }),
    );
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    upkeep.abort();
    served.context("serving /metrics")
}
