//! Group commit: concurrent `IngestCalendlyEvent` calls share one transaction.
//!
//! A caller puts its event on a bounded queue and waits for its own answer. A dispatcher task forms
//! batches from that queue and hands each to a writer, which stores it with
//! [`Store::ingest_batch`]: one commit, then every caller answered. The rules that form batches are
//! plain ([`Gathering`]):
//!
//! - With no batch running, the next one takes everything already queued, up to `max` events, so an
//!   idle service stores a lone event at once and adds no waiting.
//! - While batches run, another starts beside them only once a quarter of `max` events wait. Events
//!   that arrive while the writers are busy gather into a few large batches rather than many small
//!   ones: most of a batch's cost is per statement, not per event (BENCHMARKS.md, "Batch size
//!   against CPU per delivery").
//! - Only when the previous batch was full (the queue is outrunning the writers) does a batch wait,
//!   at most `wait`, to fill.
//! - Events are keyed by their payload URI (the invitee's, for invitee events). A key in a running
//!   batch is held back, in arrival order, until that batch is done, so two batches of one process
//!   never lock the same meeting, nor wait on each other's insert of the same inbox key, nor retry
//!   for it.
//!
//! SQLite has one writer (it has one write lock anyway); PostgreSQL several, each with a connection
//! of the writers' pool ([`writers`]).

use std::{
    collections::{HashSet, VecDeque},
    future::Future,
    hash::{Hash, Hasher},
    time::Duration,
};

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
    /// Longest a batch waits to fill, and only after a full one.
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

/// The queue's sending side; cheap to clone. The dispatcher stops once every clone is dropped, the
/// queue is empty and every batch is stored.
#[derive(Clone)]
pub struct Ingestor {
    queue: mpsc::Sender<Job>,
}

impl Ingestor {
    /// Starts the dispatcher for `store`, whose pool holds `pool_size` connections; await its
    /// handle after dropping every [`Ingestor`] to let it store what is queued.
    pub fn start(store: Store, settings: BatchSettings, pool_size: u32) -> (Self, JoinHandle<()>) {
        let writers = writers(store.backend(), pool_size);
        let (ingestor, queue) = Self::queue(settings, writers);
        let handle = tokio::spawn(dispatch(queue, settings, writers, move |jobs| {
            write_batch(store.clone(), jobs)
        }));
        (ingestor, handle)
    }

    fn queue(settings: BatchSettings, writers: usize) -> (Self, mpsc::Receiver<Job>) {
        let (queue, receiver) = mpsc::channel(queue_capacity(settings, writers));
        (Self { queue }, receiver)
    }

    /// Stores `request` with whatever else is queued and answers once that batch committed.
    pub async fn ingest(&self, request: IngestRequest) -> Result<Ingested, ServiceError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            request,
            queued_at: Instant::now(),
            reply,
        };
        self.queue.send(job).await.map_err(|_| {
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

/// Events waiting for a batch, beyond which callers wait to queue: four full batches per writer.
fn queue_capacity(settings: BatchSettings, writers: usize) -> usize {
    settings.max.saturating_mul(4).saturating_mul(writers).max(1)
}

/// What one meeting's events share: the hash of their payload URI (the invitee's, for invitee
/// events). Two URIs with one hash only wait for each other.
fn key_of(request: &IngestRequest) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    crate::domain::event::payload_uri(&request.event).hash(&mut hasher);
    hasher.finish()
}

/// Takes jobs off `queue` into batches by the rules of [`Gathering`] and runs `write` on each, at
/// most `writers` at a time. Returns once the queue is closed and empty and every batch is done.
async fn dispatch<W, F>(mut queue: mpsc::Receiver<Job>, settings: BatchSettings, writers: usize, write: W)
where
    W: Fn(Vec<Job>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let capacity = queue_capacity(settings, writers);
    let mut gathering = Gathering::new(settings, writers);
    let (done, mut finished) = mpsc::unbounded_channel::<Vec<u64>>();
    let mut open = true;
    loop {
        let wake_at = loop {
            match gathering.next(Instant::now()) {
                Next::Start(batch) => {
                    let release = Release {
                        keys: batch.keys,
                        done: done.clone(),
                    };
                    let written = write(batch.items);
                    tokio::spawn(async move {
                        // Dropped after the batch, or while a panic unwinds it: its keys are
                        // released either way.
                        let _release = release;
                        written.await;
                    });
                }
                Next::WaitUntil(deadline) => break Some(deadline),
                Next::Idle => break None,
            }
        };
        if !open && gathering.is_done() {
            return;
        }
        tokio::select! {
            job = queue.recv(), if open && gathering.waiting() < capacity => match job {
                Some(job) => {
                    gathering.push(key_of(&job.request), job);
                    while gathering.waiting() < capacity {
                        match queue.try_recv() {
                            Ok(job) => gathering.push(key_of(&job.request), job),
                            Err(_) => break,
                        }
                    }
                }
                None => open = false,
            },
            Some(keys) = finished.recv() => gathering.finished(&keys),
            () = sleep_until(wake_at) => {}
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Hands a batch's keys back to the dispatcher when dropped.
struct Release {
    keys: Vec<u64>,
    done: mpsc::UnboundedSender<Vec<u64>>,
}

impl Drop for Release {
    fn drop(&mut self) {
        // The dispatcher outlives every batch it started; a failed send means it is gone already.
        let _ = self.done.send(std::mem::take(&mut self.keys));
    }
}

async fn write_batch(store: Store, jobs: Vec<Job>) {
    let started = Instant::now();
    metrics::histogram!("calendly_ingest_batch_size").record(jobs.len() as f64);
    for job in &jobs {
        metrics::histogram!("calendly_ingest_batch_wait_seconds")
            .record(started.duration_since(job.queued_at).as_secs_f64());
    }
    let (requests, replies): (Vec<_>, Vec<_>) = jobs.into_iter().map(|job| (job.request, job.reply)).unzip();
    let answers = store.ingest_batch(requests, Utc::now()).await;
    for (reply, answer) in replies.into_iter().zip(answers) {
        // A caller that gave up (deadline passed) is not waiting; its event is stored anyway and a
        // retry of it is answered as a duplicate.
        let _ = reply.send(answer);
    }
}

/// The events waiting for a batch, the keys of the batches running, and the rules that decide
/// when the next batch starts and what it holds. No I/O and no clock of its own.
struct Gathering<T> {
    settings: BatchSettings,
    writers: usize,
    waiting: VecDeque<(u64, T)>,
    running: usize,
    held: HashSet<u64>,
    previous_was_full: bool,
    fill_deadline: Option<Instant>,
}

/// A batch to start: its items in arrival order and the keys it holds until it is done.
struct Batch<T> {
    items: Vec<T>,
    keys: Vec<u64>,
}

enum Next<T> {
    Start(Batch<T>),
    /// Nothing to start before this instant unless something arrives or a batch finishes.
    WaitUntil(Instant),
    /// Nothing to start until something arrives or a batch finishes.
    Idle,
}

impl<T> Gathering<T> {
    fn new(settings: BatchSettings, writers: usize) -> Self {
        Self {
            settings: BatchSettings {
                max: settings.max.max(1),
                ..settings
            },
            writers: writers.max(1),
            waiting: VecDeque::new(),
            running: 0,
            held: HashSet::new(),
            previous_was_full: false,
            fill_deadline: None,
        }
    }

    fn push(&mut self, key: u64, item: T) {
        self.waiting.push_back((key, item));
    }

    fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Nothing waits and no batch runs.
    fn is_done(&self) -> bool {
        self.waiting.is_empty() && self.running == 0
    }

    /// A batch started by [`Gathering::next`] is done; its keys are free again.
    fn finished(&mut self, keys: &[u64]) {
        self.running = self.running.saturating_sub(1);
        for key in keys {
            self.held.remove(key);
        }
    }

    /// How many events, at least, make a batch worth starting beside running ones.
    fn beside_running(&self) -> usize {
        (self.settings.max / 4).max(1)
    }

    /// Which waiting events the next batch would take: in arrival order, at most `max`, none whose
    /// key a running batch holds, and none after an earlier event of its key that was held back.
    fn eligible(&self) -> Vec<bool> {
        let mut held_back = HashSet::new();
        let mut taken = 0;
        self.waiting
            .iter()
            .map(|(key, _)| {
                if taken == self.settings.max || held_back.contains(key) {
                    return false;
                }
                if self.held.contains(key) {
                    held_back.insert(*key);
                    return false;
                }
                taken += 1;
                true
            })
            .collect()
    }

    fn next(&mut self, now: Instant) -> Next<T> {
        if self.running >= self.writers || self.waiting.is_empty() {
            return Next::Idle;
        }
        let eligible = self.eligible();
        let count = eligible.iter().filter(|&&taken| taken).count();
        if count == 0 || (self.running > 0 && count < self.beside_running()) {
            return Next::Idle;
        }
        if self.previous_was_full && count < self.settings.max {
            let deadline = *self.fill_deadline.get_or_insert(now + self.settings.wait);
            if now < deadline {
                return Next::WaitUntil(deadline);
            }
        }
        let mut batch = Batch {
            items: Vec::with_capacity(count),
            keys: Vec::with_capacity(count),
        };
        let mut rest = VecDeque::with_capacity(self.waiting.len() - count);
        for ((key, item), taken) in self.waiting.drain(..).zip(eligible) {
            if taken {
                self.held.insert(key);
                batch.keys.push(key);
                batch.items.push(item);
            } else {
                rest.push_back((key, item));
            }
        }
        self.waiting = rest;
        self.running += 1;
        self.previous_was_full = count >= self.settings.max;
        self.fill_deadline = None;
        Next::Start(batch)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    fn request_for(uri: &str) -> IngestRequest {
        IngestRequest {
            event: proto::v1::CalendlyEvent {
                event_name: "invitee.created".into(),
                payload: Some(proto::v1::calendly_event::Payload::Invitee(proto::v1::Invitee {
                    uri: uri.into(),
                    ..Default::default()
                })),
                ..Default::default()
            },
            raw_body: Vec::new(),
            source: proto::v1::Source::Webhook,
            tracking_id: String::new(),
        }
    }

    fn job_for(uri: &str) -> (Job, oneshot::Receiver<Result<Ingested, ServiceError>>) {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            request: request_for(uri),
            queued_at: Instant::now(),
            reply,
        };
        (job, answer)
    }

    fn started<T: Copy>(next: Next<T>) -> (Vec<T>, Vec<u64>) {
        match next {
            Next::Start(batch) => (batch.items, batch.keys),
            Next::WaitUntil(_) => panic!("expected a batch to start, it waits"),
            Next::Idle => panic!("expected a batch to start, it is idle"),
        }
    }

    fn settings(max: usize, wait_ms: u64) -> BatchSettings {
        BatchSettings {
            max,
            wait: Duration::from_millis(wait_ms),
        }
    }

    #[test]
    fn one_invitees_events_share_a_key() {
        for n in 0..50 {
            let uri = format!("https://api.calendly.com/invitees/{n}");
            let mut canceled = request_for(&uri);
            canceled.event.event_name = "invitee.canceled".into();
            assert_eq!(key_of(&request_for(&uri)), key_of(&canceled));
        }
        assert_ne!(
            key_of(&request_for("https://a/1")),
            key_of(&request_for("https://a/2"))
        );
    }

    #[test]
    fn writers_leave_half_the_pool_to_reads() {
        use sea_orm::DbBackend;
        assert_eq!(writers(DbBackend::Sqlite, 10), 1);
        assert_eq!(writers(DbBackend::Postgres, 10), 4);
        assert_eq!(writers(DbBackend::Postgres, 5), 2);
        assert_eq!(writers(DbBackend::Postgres, 1), 1);
    }

    #[test]
    fn with_no_batch_running_the_next_takes_everything_queued_at_once() {
        let now = Instant::now();
        let mut gathering = Gathering::new(settings(64, 60_000), 4);
        gathering.push(1, 'a');
        assert_eq!(
            started(gathering.next(now)).0,
            vec!['a'],
            "a lone event starts at once"
        );
        gathering.finished(&[1]);
        for (key, item) in [(2, 'b'), (3, 'c'), (4, 'd')] {
            gathering.push(key, item);
        }
        assert_eq!(started(gathering.next(now)).0, vec!['b', 'c', 'd']);
    }

    #[test]
    fn beside_a_running_batch_another_starts_only_once_a_quarter_of_max_wait() {
        let now = Instant::now();
        let mut gathering = Gathering::new(settings(64, 1), 4);
        gathering.push(0, 0);
        started(gathering.next(now));
        for key in 1..16 {
            gathering.push(key, key);
        }
        assert!(
            matches!(gathering.next(now), Next::Idle),
            "15 of 16 wait for the running batch"
        );
        gathering.push(16, 16);
        assert_eq!(started(gathering.next(now)).0, (1..=16).collect::<Vec<_>>());
        gathering.finished(&[0]);
        gathering.push(17, 17);
        assert!(matches!(gathering.next(now), Next::Idle), "one batch still runs");
        gathering.finished(&(1..=16).collect::<Vec<_>>());
        assert_eq!(started(gathering.next(now)).0, vec![17], "none runs: at once");
    }

    #[test]
    fn a_key_in_a_running_batch_is_held_back_in_arrival_order() {
        let now = Instant::now();
        const A: u64 = 10;
        const B: u64 = 20;
        const C: u64 = 30;
        let mut gathering = Gathering::new(settings(4, 1), 2);
        gathering.push(A, "a1");
        let (first, first_keys) = started(gathering.next(now));
        assert_eq!(first, vec!["a1"]);
        for (key, item) in [(A, "a2"), (B, "b1"), (A, "a3")] {
            gathering.push(key, item);
        }
        let (second, second_keys) = started(gathering.next(now));
        assert_eq!(second, vec!["b1"], "A's later events wait for its running batch");
        gathering.push(C, "c1");
        assert!(matches!(gathering.next(now), Next::Idle), "both writers are busy");
        gathering.finished(&first_keys);
        assert_eq!(started(gathering.next(now)).0, vec!["a2", "a3", "c1"]);
        gathering.push(B, "b2");
        assert!(
            matches!(gathering.next(now), Next::Idle),
            "B is running, and so are both writers"
        );
        gathering.finished(&second_keys);
        assert_eq!(started(gathering.next(now)).0, vec!["b2"]);
    }

    #[test]
    fn a_batch_holds_at_most_max_events_and_at_most_writers_run() {
        let now = Instant::now();
        let mut gathering = Gathering::new(settings(4, 0), 2);
        for key in 0..10 {
            gathering.push(key, key);
        }
        assert_eq!(started(gathering.next(now)).0, vec![0, 1, 2, 3]);
        assert_eq!(started(gathering.next(now)).0, vec![4, 5, 6, 7]);
        assert!(matches!(gathering.next(now), Next::Idle));
        gathering.finished(&[0, 1, 2, 3]);
        assert_eq!(started(gathering.next(now)).0, vec![8, 9]);
        gathering.finished(&[4, 5, 6, 7]);
        gathering.finished(&[8, 9]);
        assert!(gathering.is_done());
    }

    #[test]
    fn after_a_full_batch_the_next_waits_at_most_the_wait_to_fill() {
        let now = Instant::now();
        let wait = Duration::from_millis(5);
        let mut gathering = Gathering::new(settings(4, 5), 1);
        for key in 0..4 {
            gathering.push(key, key);
        }
        started(gathering.next(now));
        gathering.finished(&[0, 1, 2, 3]);
        gathering.push(4, 4);
        assert!(matches!(gathering.next(now), Next::WaitUntil(deadline) if deadline == now + wait));
        assert!(
            matches!(gathering.next(now + wait / 2), Next::WaitUntil(deadline) if deadline == now + wait)
        );
        assert_eq!(started(gathering.next(now + wait)).0, vec![4], "the wait is over");
        gathering.finished(&[4]);
        gathering.push(5, 5);
        assert_eq!(
            started(gathering.next(now + wait)).0,
            vec![5],
            "the previous batch was not full"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_filling_batch_starts_as_soon_as_it_is_full() {
        let now = Instant::now();
        let mut gathering = Gathering::new(settings(2, 5), 1);
        gathering.push(0, 0);
        gathering.push(1, 1);
        started(gathering.next(now));
        gathering.finished(&[0, 1]);
        gathering.push(2, 2);
        assert!(matches!(gathering.next(now), Next::WaitUntil(_)));
        gathering.push(3, 3);
        assert_eq!(started(gathering.next(now)).0, vec![2, 3]);
    }

    /// Runs the dispatcher over `uris` with a writer that takes `write_ms` per batch and panics on
    /// the batch numbered `panic_on`; returns each batch's size and the most batches at once.
    async fn dispatch_with(
        uris: &[&str],
        writers: usize,
        write_ms: u64,
        panic_on: Option<usize>,
    ) -> (Vec<usize>, usize) {
        let settings = settings(4, 1);
        let (ingestor, queue) = Ingestor::queue(settings, writers);
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let write = {
            let (sizes, running, most) = (sizes.clone(), running.clone(), most.clone());
            move |jobs: Vec<Job>| {
                let number = {
                    let mut sizes = sizes.lock().unwrap();
                    sizes.push(jobs.len());
                    sizes.len() - 1
                };
                let (running, most) = (running.clone(), most.clone());
                async move {
                    let now_running = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now_running, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(write_ms)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    assert_ne!(Some(number), panic_on, "this batch fails");
                    drop(jobs);
                }
            }
        };
        let dispatcher = tokio::spawn(dispatch(queue, settings, writers, write));
        let mut answers = Vec::new();
        for (n, uri) in uris.iter().enumerate() {
            let (job, answer) = job_for(uri);
            ingestor.queue.send(job).await.expect("queued");
            answers.push(answer);
            if n == 0 {
                // The first batch starts with the first event alone; the rest queue behind it.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        drop(ingestor);
        tokio::time::timeout(Duration::from_secs(60), dispatcher)
            .await
            .expect("the dispatcher stops once the queue is closed and every batch is done")
            .expect("the dispatcher does not panic");
        for answer in answers {
            assert!(
                answer.await.is_err(),
                "this writer answers nobody: every job was handed to it"
            );
        }
        let sizes = sizes.lock().unwrap().clone();
        (sizes, most.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn the_dispatcher_hands_every_event_to_a_writer_and_stops_when_closed() {
        let uris: Vec<String> = (0..10).map(|n| format!("https://a/{n}")).collect();
        let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
        let (sizes, most) = dispatch_with(&uris, 2, 10, None).await;
        assert_eq!(sizes.iter().sum::<usize>(), 10);
        assert!(sizes.iter().all(|&size| size <= 4), "{sizes:?}");
        assert!(most <= 2, "at most two writers at once, saw {most}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_that_panics_frees_its_keys_for_the_next() {
        let (sizes, _) = dispatch_with(&["https://a/1", "https://a/1", "https://a/1"], 2, 10, Some(0)).await;
        assert_eq!(
            sizes,
            vec![1, 2],
            "the second batch waited for the first, which panicked"
        );
    }
}
