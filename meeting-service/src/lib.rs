//! The meeting service: owns the meeting record built from Calendly events and serves it over
//! gRPC (`calendly.meetings.v1.MeetingService`), with standard health checking and reflection.
//!
//! Layout, each module depending only on those listed before it: `domain` (the rules, pure),
//! `entity` (tables, and rows as protobuf), `error` (errors and their gRPC codes), `metrics`,
//! `store` (persistence: the ingest batches, the change feed's rows, reads, leads, reminder
//! claims, retries, pruning, reconcile runs), `feed` (the change streams), `sync_metrics` (the
//! reconcile record as metrics), `config` (settings, the store's and
//! the feed's among them), `health` (the database probe behind gRPC health), `drain` (an
//! observable shutdown), `grpc` (the tonic service: requests, conversions, the bearer check). It
//! knows nothing of HTTP, signatures or Calendly's JSON: the adapter translates those into
//! protobuf.

pub mod config;
pub mod domain;
pub mod drain;
pub mod entity;
pub mod error;
pub mod feed;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod store;
pub mod sync_metrics;

use std::time::Duration;

use anyhow::Context;
use proto::v1::meeting_service_server::MeetingServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

pub use config::Config;
use store::{Store, StoreSettings, batch::Ingestor, retry::RetryPolicy};

/// Connects to the database (applying migrations), then serves gRPC on `listener` until
/// `shutdown` resolves. On shutdown the health service reports NOT_SERVING first; new API calls
/// are refused with UNAVAILABLE while in-flight ones finish, health answering all the while
/// (see [`drain`]); then the listener closes. All of it gets `config.shutdown_grace`, and the
/// pool is closed.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    crate::metrics::describe();
    let pools = store::Pools::connect(config.database_url.expose(), config.database_max_connections).await?;
    let store = Store::new(
        pools.main.clone(),
        StoreSettings {
            reminder_offsets: config.reminder_offsets.clone(),
            create_leads_for_unknown_invitees: config.create_leads_for_unknown_invitees,
            retry: RetryPolicy::default(),
        },
    );
    let addr = listener
        .local_addr()
        .context("reading the gRPC listener address")?;
    let stop = CancellationToken::new();
    let (reporter, health_service) = tonic_health::server::health_reporter();
    // Registered before the first check, so a probe of the named service never sees NOT_FOUND.
    health::report_not_serving(&reporter).await;
    let health_task = tokio::spawn(health::watch_database(
        store.clone(),
        reporter.clone(),
        config.health_check_interval,
        stop.clone(),
    ));
    let prune_task = tokio::spawn(store::prune::run(store.clone(), config.retention, stop.clone()));
    let feed = feed::Feed::new(store.clone(), config.feed, stop.clone());
    let feed_task = tokio::spawn(feed::follow_commits(feed.clone(), stop.clone()));
    let sync_metrics_task = tokio::spawn(sync_metrics::run(store.clone(), stop.clone()));
    // Both versions of reflection: many clients (Python's grpcio-reflection, older grpcurl builds,
    // GUI clients) speak only v1alpha and get UNIMPLEMENTED from a v1-only server.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("building the reflection service (v1alpha)")?;
    let reflection = reflection()
        .build_v1()
        .context("building the reflection service")?;
    let ingest_store = match &pools.batch_writers {
        Some(db) => store.on_pool(db.clone()),
        None => store.clone(),
    };
    let (ingestor, dispatcher) =
        Ingestor::start(ingest_store, config.ingest_batch, config.database_max_connections);
    let drain = drain::Drain::default();
    let api = tonic::service::interceptor::InterceptedService::new(
        drain.wrap(MeetingServiceServer::new(grpc::MeetingApi::new(
            store.clone(),
            ingestor,
            feed,
        ))),
        grpc::BearerAuth::new(config.internal_api_token.as_ref().map(|t| t.expose())),
    );

    let drain_started = CancellationToken::new();
    let on_shutdown = {
        let reporter = reporter.clone();
        let stop = stop.clone();
        let drain_started = drain_started.clone();
        async move {
            shutdown.await;
            stop.cancel();
            health::report_not_serving(&reporter).await;
            drain_started.cancel();
            drain.drain().await;
        }
    };
    tracing::info!(%addr, "meeting service listening (gRPC)");
    let grace = config.shutdown_grace;
    let served = {
        let server = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(api)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), on_shutdown);
        tokio::pin!(server);
        tokio::select! {
            served = &mut server => served,
            () = async { drain_started.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "in-flight calls did not finish within the grace period");
                Ok(())
            }
        }
    };
    // The server, and with it every sender of the ingest queue, is gone: the dispatcher stores
    // what is queued (bounded, should the database hang).
    match tokio::time::timeout(grace, dispatcher).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "the ingest dispatcher stopped abnormally"),
        Err(_) => tracing::warn!(
            ?grace,
            "queued deliveries were not stored within the grace period"
        ),
    }
    health_task.abort();
    prune_task.abort();
    feed_task.abort();
    sync_metrics_task.abort();
    if let Err(error) = pools.close().await {
        tracing::warn!(%error, "closing the database pool");
    }
    tracing::info!("meeting service stopped");
    served.context("serving gRPC")
}

/// How long tests and tools wait between health probes.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
