//! The change feed's streams (`WatchMeetingChanges`): each reads `meeting_changes` at its own
//! pace and hands rows to its consumer, in id order (which is commit order, `store::sql::changes`).
//!
//! A stream never holds a transaction or a connection while its consumer is slow: it reads a page
//! (at most [`PAGE`] rows), then sends them through a channel of [`BUFFER`] messages. A consumer
//! that takes nothing for `stall_timeout` while a message waits is cut off with
//! RESOURCE_EXHAUSTED and resumes from its cursor. So ingestion never waits for a consumer, and a
//! stream holds at most a page, the channel and the HTTP/2 window of messages.
//!
//! Streams wake when this process's feed head moves: after each local commit, on each PostgreSQL
//! notification from any replica, and on a poll every `poll_interval` as a fallback for lost
//! notifications ([`follow_commits`]). They only read rows up to the head, all committed.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use chrono::{DateTime, Utc};
use prost::Message;
use proto::v1::{
    ChangeKind, Heartbeat, Meeting, MeetingChange, WatchMeetingChangesResponse,
    watch_meeting_changes_response,
};
use sea_orm::DbBackend;
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{
    domain::event::to_timestamp,
    entity::meeting_change,
    error::{ServiceError, StreamRefusal},
    store::{
        Store,
        changes::{ChangeFilter, FeedBounds},
        sql::changes::NOTIFY_CHANNEL,
    },
};

/// Rows a stream reads at once.
pub const PAGE: u64 = 100;
/// Messages waiting between a stream's reader and its consumer.
pub const BUFFER: usize = 16;

/// How streams behave (`WATCH_*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedSettings {
    /// An idle stream sends a heartbeat this often.
    pub heartbeat: Duration,
    /// A consumer that takes no message for this long, while one waits, is cut off.
    pub stall_timeout: Duration,
    /// Most streams open on one replica.
    pub max_streams: usize,
    /// How often the head is read from the database, whatever the notifications say.
    pub poll_interval: Duration,
}

impl Default for FeedSettings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            stall_timeout: Duration::from_secs(30),
            max_streams: 64,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// A validated `WatchMeetingChanges` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// Resume after this change id; `None` starts at the head.
    pub after: Option<i64>,
    pub filter: ChangeFilter,
}

const CURSOR_PREFIX: &str = "c1.";

/// Cursors are opaque to callers; today they carry a change id.
pub fn encode_cursor(change_id: i64) -> String {
    format!("{CURSOR_PREFIX}{change_id}")
}

pub fn decode_cursor(cursor: &str) -> Result<Option<i64>, ServiceError> {
    if cursor.is_empty() {
        return Ok(None);
    }
    cursor
        .strip_prefix(CURSOR_PREFIX)
        .and_then(|id| id.parse::<i64>().ok())
        .filter(|id| *id >= 0)
        .map(Some)
        .ok_or_else(|| ServiceError::invalid("cursor", "not a cursor this service issued"))
}

/// Where a stream starts: after its cursor, or at the head. A cursor below the horizon may have
/// missed pruned rows; one past the latest change comes from another database (or a restore).
pub fn start_position(after: Option<i64>, bounds: FeedBounds) -> Result<i64, ServiceError> {
    match after {
        None => Ok(bounds.latest),
        Some(id) if id < bounds.horizon => Err(ServiceError::CursorOutOfRange {
            problem: "it is older than the change retention window",
        }),
        Some(id) if id > bounds.latest => Err(ServiceError::CursorOutOfRange {
            problem: "it is ahead of every change this database holds",
        }),
        Some(id) => Ok(id),
    }
}

/// The feed: opens streams and keeps their registry (for the limit and the lag metric).
#[derive(Clone)]
pub struct Feed(Arc<Shared>);

struct Shared {
    store: Store,
    settings: FeedSettings,
    stop: CancellationToken,
    next_stream: AtomicU64,
    /// Per open stream: the commit time of the oldest change it read and has not handed over.
    streams: Mutex<HashMap<u64, Option<DateTime<Utc>>>>,
}

impl Feed {
    /// Streams end with UNAVAILABLE once `stop` is cancelled.
    pub fn new(store: Store, settings: FeedSettings, stop: CancellationToken) -> Self {
        Self(Arc::new(Shared {
            store,
            settings,
            stop,
            next_stream: AtomicU64::new(0),
            streams: Mutex::new(HashMap::new()),
        }))
    }

    /// Opens a stream for `watch`; its cursor is checked before the first message.
    pub async fn open(&self, watch: Watch) -> Result<ChangeStream, ServiceError> {
        let slot = self.register()?;
        let bounds = self.0.store.feed_bounds().await?;
        let position = start_position(watch.after, bounds)?;
        let (sender, items) = mpsc::channel(BUFFER);
        let (cut, cut_received) = oneshot::channel();
        let reader = Reader {
            slot,
            filter: watch.filter,
            position,
            sender,
        };
        tokio::spawn(reader.run(cut));
        Ok(ChangeStream {
            items,
            cut: Some(cut_received),
            ended: false,
        })
    }

    fn register(&self) -> Result<Slot, ServiceError> {
        let mut streams = self.0.streams.lock().unwrap_or_else(|e| e.into_inner());
        if streams.len() >= self.0.settings.max_streams {
            return Err(ServiceError::StreamRefused(StreamRefusal::TooManyStreams {
                limit: self.0.settings.max_streams,
            }));
        }
        let id = self.0.next_stream.fetch_add(1, Ordering::Relaxed);
        streams.insert(id, None);
        metrics::gauge!("calendly_change_streams_open").set(streams.len() as f64);
        Ok(Slot {
            feed: self.clone(),
            id,
        })
    }

    /// The largest lag of any open stream: how long ago the oldest change it has yet to hand over
    /// was committed; zero when every stream is caught up.
    pub fn max_lag(&self, now: DateTime<Utc>) -> Duration {
        let streams = self.0.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams
            .values()
            .flatten()
            .filter_map(|since| (now - *since).to_std().ok())
            .max()
            .unwrap_or_default()
    }
}

/// An open stream's place in the registry; leaving it closes the place.
struct Slot {
    feed: Feed,
    id: u64,
}

impl Slot {
    fn behind_since(&self, since: Option<DateTime<Utc>>) {
        let mut streams = self.feed.0.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = streams.get_mut(&self.id) {
            *entry = since;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut streams = self.feed.0.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.remove(&self.id);
        metrics::gauge!("calendly_change_streams_open").set(streams.len() as f64);
    }
}

/// Why a stream's reader stopped.
enum Ended {
    /// The consumer went away; nobody to tell.
    ConsumerGone,
    /// The consumer is told this status.
    Refused(ServiceError),
}

impl From<ServiceError> for Ended {
    fn from(error: ServiceError) -> Self {
        Self::Refused(error)
    }
}

/// One stream's reader task.
struct Reader {
    slot: Slot,
    filter: ChangeFilter,
    /// Every change up to here was handed over (or filtered out).
    position: i64,
    sender: mpsc::Sender<Result<WatchMeetingChangesResponse, Status>>,
}

impl Reader {
    async fn run(mut self, cut: oneshot::Sender<Status>) {
        let stop = self.slot.feed.0.stop.clone();
        let ended = tokio::select! {
            ended = self.follow() => ended,
            () = stop.cancelled() => Ended::Refused(ServiceError::Stopping),
        };
        let reason = match ended {
            Ended::ConsumerGone => "consumer_gone",
            Ended::Refused(error) => {
                let reason = match &error {
                    ServiceError::CursorOutOfRange { .. } => "out_of_range",
                    ServiceError::StreamRefused(_) => "stalled",
                    ServiceError::Stopping => "stopping",
                    _ => "database",
                };
                let _ = cut.send(Status::from(error));
                reason
            }
        };
        metrics::counter!("calendly_change_streams_ended_total", "reason" => reason).increment(1);
    }

    /// Hands over every change after the position, then each new one, with heartbeats between.
    async fn follow(&mut self) -> Ended {
        let feed = self.slot.feed.clone();
        let settings = feed.0.settings;
        let mut head = feed.0.store.feed_head().subscribe();
        let mut last_sent = Instant::now();
        loop {
            let target = *head.borrow_and_update();
            while self.position < target {
                match self.catch_up(target, &mut last_sent).await {
                    Ok(()) => {}
                    Err(ended) => return ended,
                }
            }
            self.slot.behind_since(None);
            tokio::select! {
                changed = head.changed() => {
                    // The head lives as long as the store; without it there is nothing to follow.
                    if changed.is_err() {
                        return Ended::Refused(ServiceError::Stopping);
                    }
                }
                () = tokio::time::sleep_until(last_sent + settings.heartbeat) => {
                    let beat = heartbeat(self.position, Utc::now());
                    if let Err(ended) = self.send(beat, settings.stall_timeout).await {
                        return ended;
                    }
                    last_sent = Instant::now();
                }
                () = self.sender.closed() => return Ended::ConsumerGone,
            }
        }
    }

    /// Reads one page up to `target` and hands it over.
    async fn catch_up(&mut self, target: i64, last_sent: &mut Instant) -> Result<(), Ended> {
        let store = self.slot.feed.0.store.clone();
        let stall = self.slot.feed.0.settings.stall_timeout;
        let (rows, horizon) = store
            .changes_after(self.position, target, &self.filter, PAGE)
            .await?;
        if horizon > self.position {
            return Err(Ended::Refused(ServiceError::CursorOutOfRange {
                problem: "changes after it were removed by retention before this stream read them",
            }));
        }
        let complete = (rows.len() as u64) < PAGE;
        for row in rows {
            self.slot.behind_since(Some(row.committed_at));
            let id = row.id;
            self.send(change_message(row)?, stall).await?;
            metrics::counter!("calendly_changes_sent_total").increment(1);
            self.position = id;
            *last_sent = Instant::now();
        }
        if complete {
            self.position = target;
        }
        Ok(())
    }

    async fn send(&self, message: WatchMeetingChangesResponse, stall: Duration) -> Result<(), Ended> {
        match tokio::time::timeout(stall, self.sender.send(Ok(message))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ended::ConsumerGone),
            Err(_) => Err(Ended::Refused(ServiceError::StreamRefused(
                StreamRefusal::ConsumerStalled {
                    seconds: stall.as_secs(),
                },
            ))),
        }
    }
}

fn heartbeat(position: i64, now: DateTime<Utc>) -> WatchMeetingChangesResponse {
    WatchMeetingChangesResponse {
        item: Some(watch_meeting_changes_response::Item::Heartbeat(Heartbeat {
            at: Some(to_timestamp(now)),
        })),
        cursor: encode_cursor(position),
    }
}

fn change_message(row: meeting_change::Model) -> Result<WatchMeetingChangesResponse, ServiceError> {
    let meeting = Meeting::decode(row.meeting.as_slice()).map_err(|e| {
        ServiceError::Unexpected(anyhow::anyhow!("stored change {} does not decode: {e}", row.id))
    })?;
    Ok(WatchMeetingChangesResponse {
        cursor: encode_cursor(row.id),
        item: Some(watch_meeting_changes_response::Item::Change(MeetingChange {
            change_id: row.id,
            kind: ChangeKind::from_label(&row.kind) as i32,
            meeting: Some(meeting),
            committed_at: Some(to_timestamp(row.committed_at)),
            webhook_event_id: row.webhook_event_id,
            cause: row.cause,
            tracking_id: row.tracking_id,
        })),
    })
}

/// The response stream tonic sends: the reader's messages, unless the reader ended it with a
/// status, which then goes first (a stalled consumer is not made to read its backlog to learn
/// that it was cut off).
pub struct ChangeStream {
    items: mpsc::Receiver<Result<WatchMeetingChangesResponse, Status>>,
    cut: Option<oneshot::Receiver<Status>>,
    ended: bool,
}

impl futures::Stream for ChangeStream {
    type Item = Result<WatchMeetingChangesResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(cut) = self.cut.as_mut() {
            match Pin::new(cut).poll(cx) {
                Poll::Ready(Ok(status)) => {
                    self.ended = true;
                    self.items.close();
                    return Poll::Ready(Some(Err(status)));
                }
                // The reader ended without a status: the stream ends once the buffer is read.
                Poll::Ready(Err(_)) => self.cut = None,
                Poll::Pending => {}
            }
        }
        self.items.poll_recv(cx)
    }
}

/// Keeps this process's feed head current with commits made anywhere, until `stop`: PostgreSQL's
/// notifications (from every replica) and, whatever they do, a poll every `poll_interval`. The
/// poll also refreshes the lag metric.
pub async fn follow_commits(feed: Feed, stop: CancellationToken) {
    let store = feed.0.store.clone();
    let listener = (store.backend() == DbBackend::Postgres).then(|| {
        let store = store.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = listen(&store) => {}
                () = stop.cancelled() => {}
            }
        })
    });
    let mut poll = tokio::time::interval(feed.0.settings.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = poll.tick() => {}
        }
        if let Ok(bounds) = store.feed_bounds().await {
            store.feed_head().advance(bounds.latest);
        }
        metrics::gauge!("calendly_change_stream_lag_seconds").set(feed.max_lag(Utc::now()).as_secs_f64());
    }
    if let Some(listener) = listener {
        listener.abort();
    }
}

/// Moves the head on every notification. A lost connection is opened again (sqlx's listener
/// does that on the next receive); what was announced meanwhile is caught by the poll.
async fn listen(store: &Store) {
    use sea_orm::sqlx::postgres::PgListener;
    loop {
        let listener = async {
            let mut listener =
                PgListener::connect_with(store.connection().get_postgres_connection_pool()).await?;
            listener.listen(NOTIFY_CHANNEL).await?;
            loop {
                let notification = listener.recv().await?;
                if let Ok(id) = notification.payload().parse::<i64>() {
                    store.feed_head().advance(id);
                }
            }
        };
        let result: Result<(), sea_orm::sqlx::Error> = listener.await;
        if let Err(error) = result {
            tracing::warn!(%error, "listening for change notifications failed; polling meanwhile");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        assert_eq!(decode_cursor(&encode_cursor(42)).ok(), Some(Some(42)));
        assert!(matches!(decode_cursor(""), Ok(None)));
        for foreign in [
            "42",
            "v1.42",
            "c1.",
            "c1.-1",
            "c1.x",
            "c1.9999999999999999999",
            " c1.4",
        ] {
            assert!(decode_cursor(foreign).is_err(), "{foreign}");
        }
    }

    #[test]
    fn a_stream_starts_where_its_cursor_can_resume_without_a_gap() {
        let bounds = FeedBounds {
            horizon: 10,
            latest: 50,
        };
        let cases = [
            (None, Ok(50)),
            (Some(10), Ok(10)),
            (Some(30), Ok(30)),
            (Some(50), Ok(50)),
            (Some(9), Err(tonic::Code::OutOfRange)),
            (Some(0), Err(tonic::Code::OutOfRange)),
            (Some(51), Err(tonic::Code::OutOfRange)),
        ];
        for (after, expected) in cases {
            let started = start_position(after, bounds).map_err(|e| e.code());
            assert_eq!(started, expected, "{after:?}");
        }
    }
}
