//! Group commit: concurrent `IngestCalendlyEvent` calls share one transaction.
//!
//! A caller puts its event on a bounded queue and waits for its own answer. A writer task per
//! queue takes batches off it and stores each with [`Store::ingest_batch`]: one commit, then every
//! caller answered. A free writer takes everything already queued, up to `max` events, so an idle
//! service stores a lone event at once and adds no waiting; while one batch commits, the next one
//! gathers. Only when the previous batch was full (the queue is outrunning its writer) does a
//! writer wait, at most `wait`, for its batch to fill.
//!
//! SQLite has one queue (it has one write lock anyway); PostgreSQL several, one batch committing
//! while another gathers. Events go to a queue by their invitee URI, so every event of one
//! meeting (and every copy of one event) lands in one queue: two batches of one process never lock
//! the same meeting, nor wait on each other's insert of the same inbox key, nor retry for it.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use sea_orm::DbErr;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};

use super::{IngestRequest, Ingested, Store};
use crate::error::ServiceError;

/// How batches are formed (`INGEST_BATCH_MAX`, `INGEST_BATCH_WAIT_MS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Most events in one transaction.
    pub max: usize,
    /// Longest a writer waits for a batch to fill, and only after a full one.
    pub wait: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max: 64,
            wait: Duration::from_millis(1),
        }
    }
}

struct Job {
    request: IngestRequest,
    queued_at: Instant,
    reply: oneshot::Sender<Result<Ingested, ServiceError>>,
}

/// The queues' sending side; cheap to clone. The writers stop once every clone is dropped and
/// their queues are empty.
#[derive(Clone)]
pub struct Ingestor {
    queues: Arc<Vec<mpsc::Sender<Job>>>,
}

impl Ingestor {
    /// Starts the writers for `store`, whose pool holds `pool_size` connections; await the
    /// handles after dropping every [`Ingestor`] to let them finish what is queued.
    pub fn start(store: Store, settings: BatchSettings, pool_size: u32) -> (Self, Vec<JoinHandle<()>>) {
        let writers = writers(store.backend(), pool_size);
        let mut queues = Vec::with_capacity(writers);
        let mut handles = Vec::with_capacity(writers);
        for _ in 0..writers {
            let (queue, receiver) = mpsc::channel(settings.max.saturating_mul(4).max(1));
            queues.push(queue);
            handles.push(tokio::spawn(write_batches(store.clone(), receiver, settings)));
        }
        (
            Self {
                queues: Arc::new(queues),
            },
            handles,
        )
    }

    /// Stores `request` with whatever else is queued and answers once that batch committed.
    pub async fn ingest(&self, request: IngestRequest) -> Result<Ingested, ServiceError> {
        let (reply, answer) = oneshot::channel();
        let queue = &self.queues[queue_of(&request, self.queues.len())];
        let job = Job {
            request,
            queued_at: Instant::now(),
            reply,
        };
        queue.send(job).await.map_err(|_| {
            ServiceError::Unavailable(DbErr::Custom("the ingest queue is closed: shutting down".into()))
        })?;
        answer.await.map_err(|_| {
            ServiceError::Unexpected(anyhow::anyhow!("the batch writer stopped before answering"))
        })?
    }
}

/// One writer on SQLite, which has one write lock. On PostgreSQL up to four, each holding a
/// connection while its batch runs, leaving at least half the pool to reads and health checks.
pub(crate) fn writers(backend: sea_orm::DbBackend, pool_size: u32) -> usize {
    match backend {
        sea_orm::DbBackend::Postgres => (pool_size / 2).clamp(1, 4) as usize,
        _ => 1,
    }
}

/// The queue for `request`: by its payload URI (the invitee's, for invitee events), so one meeting's
/// events share a queue.
fn queue_of(request: &IngestRequest, queues: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    crate::domain::event::payload_uri(&request.event).hash(&mut hasher);
    (hasher.finish() % queues.max(1) as u64) as usize
}

async fn write_batches(store: Store, mut receiver: mpsc::Receiver<Job>, settings: BatchSettings) {
    let mut previous_was_full = false;
    while let Some(jobs) = next_batch(&mut receiver, settings, previous_was_full).await {
        previous_was_full = jobs.len() >= settings.max;
        let started = Instant::now();
        metrics::histogram!("calendly_ingest_batch_size").record(jobs.len() as f64);
        for job in &jobs {
            metrics::histogram!("calendly_ingest_batch_wait_seconds")
                .record(started.duration_since(job.queued_at).as_secs_f64());
        }
        let (requests, replies): (Vec<_>, Vec<_>) =
            jobs.into_iter().map(|job| (job.request, job.reply)).unzip();
        let answers = store.ingest_batch(requests, Utc::now()).await;
        for (reply, answer) in replies.into_iter().zip(answers) {
            // A caller that gave up (deadline passed) is not waiting; its event is stored anyway and
            // a retry of it is answered as a duplicate.
            let _ = reply.send(answer);
        }
    }
}

/// The next batch, or `None` once the queue is closed and empty.
async fn next_batch(
    receiver: &mut mpsc::Receiver<Job>,
    settings: BatchSettings,
    previous_was_full: bool,
) -> Option<Vec<Job>> {
    let first = receiver.recv().await?;
    let mut jobs = Vec::with_capacity(settings.max);
    jobs.push(first);
    while jobs.len() < settings.max {
        match receiver.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    if previous_was_full && jobs.len() < settings.max {
        let deadline = Instant::now() + settings.wait;
        while jobs.len() < settings.max {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(job)) => jobs.push(job),
                Ok(None) | Err(_) => break,
            }
        }
    }
    Some(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> (Job, oneshot::Receiver<Result<Ingested, ServiceError>>) {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            request: IngestRequest {
                event: Default::default(),
                raw_body: Vec::new(),
                source: proto::v1::Source::Webhook,
                tracking_id: String::new(),
            },
            queued_at: Instant::now(),
            reply,
        };
        (job, answer)
    }

    #[test]
    fn one_invitees_events_share_a_queue() {
        let event = |name: &str, uri: &str| IngestRequest {
            event: proto::v1::CalendlyEvent {
                event_name: name.into(),
                payload: Some(proto::v1::calendly_event::Payload::Invitee(proto::v1::Invitee {
                    uri: uri.into(),
                    ..Default::default()
                })),
                ..Default::default()
            },
            raw_body: Vec::new(),
            source: proto::v1::Source::Webhook,
            tracking_id: String::new(),
        };
        for n in 0..50 {
            let uri = format!("https://api.calendly.com/invitees/{n}");
            assert_eq!(
                queue_of(&event("invitee.created", &uri), 4),
                queue_of(&event("invitee.canceled", &uri), 4)
            );
        }
    }

    #[test]
    fn writers_leave_half_the_pool_to_reads() {
        use sea_orm::DbBackend;
        assert_eq!(writers(DbBackend::Sqlite, 10), 1);
        assert_eq!(writers(DbBackend::Postgres, 10), 4);
        assert_eq!(writers(DbBackend::Postgres, 5), 2);
        assert_eq!(writers(DbBackend::Postgres, 1), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_free_writer_takes_what_is_queued_without_waiting() {
        let (sender, mut receiver) = mpsc::channel(16);
        let mut answers = Vec::new();
        for _ in 0..3 {
            let (job, answer) = job();
            sender.send(job).await.expect("queued");
            answers.push(answer);
        }
        let settings = BatchSettings {
            max: 64,
            wait: Duration::from_secs(60),
        };
        let started = Instant::now();
        let batch = next_batch(&mut receiver, settings, false).await.expect("a batch");
        assert_eq!(batch.len(), 3);
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "no waiting when the previous batch was not full"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_full_batch_a_writer_waits_at_most_the_wait_to_fill_the_next() {
        let (sender, mut receiver) = mpsc::channel(16);
        let (job, _answer) = job();
        sender.send(job).await.expect("queued");
        let settings = BatchSettings {
            max: 4,
            wait: Duration::from_millis(5),
        };
        let started = Instant::now();
        let batch = next_batch(&mut receiver, settings, true).await.expect("a batch");
        assert_eq!(batch.len(), 1);
        assert_eq!(started.elapsed(), Duration::from_millis(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_holds_at_most_max_events() {
        let (sender, mut receiver) = mpsc::channel(16);
        let mut answers = Vec::new();
        for _ in 0..10 {
            let (job, answer) = job();
            sender.send(job).await.expect("queued");
            answers.push(answer);
        }
        let settings = BatchSettings {
            max: 4,
            wait: Duration::from_millis(1),
        };
        assert_eq!(
            next_batch(&mut receiver, settings, false).await.map(|b| b.len()),
            Some(4)
        );
        drop(sender);
        assert_eq!(
            next_batch(&mut receiver, settings, true).await.map(|b| b.len()),
            Some(4)
        );
        assert_eq!(
            next_batch(&mut receiver, settings, true).await.map(|b| b.len()),
            Some(2)
        );
        assert!(
            next_batch(&mut receiver, settings, true).await.is_none(),
            "closed and empty"
        );
    }
}
