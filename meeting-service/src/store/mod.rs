//! Persistence: connecting (migrations applied), the ingest transaction, and reads.
//!
//! Every effect of an event happens in the transaction that inserts its inbox row. The row's
//! unique `dedupe_key` is what makes a repeated delivery a no-op: the insert finds the key taken
//! and the caller is told "duplicate". No read-then-write check is involved, so identical
//! deliveries at the same instant are safe too. Concurrent deliveries share one transaction
//! ([`batch`] collects them, [`ingest`] stores them, [`plan`] decides what to write, [`sql`] holds
//! the multi-row statements). Transient database errors retry the whole transaction ([`retry`]).
//!
//! Every effect on a meeting also appends a row to the change feed (`meeting_changes`) in the
//! same transaction ([`changes`]).
//!
//! Layout: `batch` (the queue and its writers), `ingest` (the batch transaction, replay), `plan`
//! (pure), `sql` (statements per table), `changes` (the feed's rows, head and retention),
//! `leads` (`UpsertLead`, lead status), `reminders` (claims), `reads`, `prune`, `retry`, `sync`
//! (the record of reconcile runs).

pub mod batch;
pub mod changes;
pub mod ingest;
pub mod leads;
pub mod plan;
pub mod prune;
pub mod reads;
pub mod reminders;
pub mod retry;
pub mod sql;
pub mod sync;

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use chrono::{DateTime, SubsecRound, Utc};
use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::postgres::{PgConnectOptions, PgSslMode};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, EntityTrait,
    QuerySelect, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

pub use ingest::{IngestRequest, Ingested};
pub use reads::{InboxPage, MeetingView};

use crate::{
    domain::{
        meeting::{CancellationRecord, MeetingState, MeetingStatus},
        reminders::ReminderOffset,
    },
    entity::meeting,
};
use retry::RetryPolicy;

/// Rules the store applies that operators may change.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub reminder_offsets: Vec<ReminderOffset>,
    /// Whether an invitee with no matching lead gets a new lead.
    pub create_leads_for_unknown_invitees: bool,
    pub retry: RetryPolicy,
}

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    settings: StoreSettings,
    database: DatabaseState,
    feed: changes::FeedHead,
}

/// Whether the database is known to answer, as the health probe last found. An operation that
/// loses its connection has the probe check at once. While it is down, operations fail fast
/// with `Unavailable` instead of each waiting for the pool.
#[derive(Clone, Default)]
pub struct DatabaseState(Arc<DatabaseFlags>);

#[derive(Default)]
struct DatabaseFlags {
    down: AtomicBool,
    suspected: tokio::sync::Notify,
}

impl DatabaseState {
    pub fn is_up(&self) -> bool {
        !self.0.down.load(Ordering::Acquire)
    }

    /// The probe's verdict.
    pub fn set_up(&self, up: bool) {
        self.0.down.store(!up, Ordering::Release);
    }

    /// An operation lost its connection: the probe is woken to check now.
    pub fn suspect(&self) {
        self.0.suspected.notify_one();
    }

    /// Resolves when [`DatabaseState::suspect`] is called.
    pub async fn wait_for_suspicion(&self) {
        self.0.suspected.notified().await;
    }
}

impl Store {
    pub fn new(db: DatabaseConnection, settings: StoreSettings) -> Self {
        Self {
            db,
            settings,
            database: DatabaseState::default(),
            feed: changes::FeedHead::default(),
        }
    }

    /// Whether the database is known to answer, and the means to say otherwise.
    pub fn database(&self) -> &DatabaseState {
        &self.database
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// This store on another pool of the same database: its settings, database state and change
    /// feed head are shared.
    pub fn on_pool(&self, db: DatabaseConnection) -> Self {
        Self { db, ..self.clone() }
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        self.db.ping().await.is_ok()
    }

    /// A transaction that reads before it writes. On SQLite it takes the write lock at `BEGIN`,
    /// waiting the busy timeout for it: a deferred transaction that has read cannot take the lock
    /// once another connection committed after its read, and fails "database is locked" at once.
    pub(crate) async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        self.db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
    }
}

/// Times are stored with microsecond precision, the finest PostgreSQL keeps, so that a value
/// read back compares equal to the one written on both backends.
pub fn db_time(time: DateTime<Utc>) -> DateTime<Utc> {
    time.trunc_subsecs(6)
}

/// `SELECT … FOR UPDATE` on PostgreSQL. SQLite has no row locks (and sea-query drops the clause);
/// there the transaction's write lock, taken by its first write, already serialises writers.
pub(crate) fn lock_for_update<E: EntityTrait>(
    select: sea_orm::Select<E>,
    backend: DbBackend,
) -> sea_orm::Select<E> {
    match backend {
        DbBackend::Postgres => select.lock_exclusive(),
        _ => select,
    }
}

/// The part of a meeting row that events decide.
pub(crate) fn state_of(row: &meeting::Model) -> MeetingState {
    MeetingState {
        invitee_uri: row.calendly_invitee_id.clone(),
        scheduled_event_uri: row.calendly_event_id.clone(),
        email: row.invitee_email.clone(),
        name: row.invitee_name.clone(),
        timezone: row.invitee_timezone.clone(),
        meeting_name: row.meeting_name.clone(),
        start_time: row.start_time,
        end_time: row.end_time,
        cancellation: row.canceled_at.map(|canceled_at| CancellationRecord {
            reason: row.cancel_reason.clone(),
            canceled_by: row.canceled_by.clone(),
            canceler_type: row.canceler_type.clone(),
            canceled_at,
        }),
        rescheduled: row.status == MeetingStatus::Rescheduled.as_str(),
        rescheduled_to: row.rescheduled_to_invitee_id.clone(),
        rescheduled_from: row.rescheduled_from_invitee_id.clone(),
        no_show: row.no_show,
        no_show_changed_at: row.no_show_changed_at,
        last_event_at: row.last_event_at,
    }
}

/// The meeting row `state` is written as; the inverse of [`state_of`].
pub(crate) fn meeting_row(
    id: i64,
    lead_id: Option<i64>,
    state: &MeetingState,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
) -> meeting::Model {
    let cancellation = state.cancellation.as_ref();
    meeting::Model {
        id,
        lead_id,
        calendly_event_id: state.scheduled_event_uri.clone(),
        calendly_invitee_id: state.invitee_uri.clone(),
        meeting_name: state.meeting_name.clone(),
        start_time: state.start_time.map(db_time),
        end_time: state.end_time.map(db_time),
        status: state.status().as_str().to_owned(),
        invitee_email: state.email.clone(),
        invitee_name: state.name.clone(),
        invitee_timezone: state.timezone.clone(),
        cancel_reason: cancellation.and_then(|c| c.reason.clone()),
        canceled_by: cancellation.and_then(|c| c.canceled_by.clone()),
        canceler_type: cancellation.and_then(|c| c.canceler_type.clone()),
        canceled_at: cancellation.map(|c| db_time(c.canceled_at)),
        rescheduled_from_invitee_id: state.rescheduled_from.clone(),
        rescheduled_to_invitee_id: state.rescheduled_to.clone(),
        no_show: state.no_show,
        no_show_changed_at: state.no_show_changed_at.map(db_time),
        last_event_at: db_time(state.last_event_at),
        created_at,
        updated_at,
    }
}

/// Prepared statements each SQLite connection keeps. They live in this process (PostgreSQL keeps
/// its own server-side), and a batch's multi-row statements differ by row count, so sqlx's default
/// of 100 held up to 100 large variants per connection. At 16 the one-process binary's peak under
/// load fell by about a quarter, at no cost in throughput (BENCHMARKS.md, "SQLite's statement
/// cache").
const SQLITE_STATEMENT_CACHE: usize = 16;

/// What SQLite's heap (page caches and prepared statements, every connection's together) may
/// grow to before its page caches recycle their own pages instead of taking more: SQLite's
/// `soft_heap_limit`, which is one limit for the whole process. Each connection's page cache
/// could otherwise hold its 2 MB, whichever connection filled it. With malloc's arenas capped,
/// 8 MiB left the one-process binary's peak under load at 37.5-42.0 MiB; 4 MiB brought it to
/// 34.4-37.7 MiB with no throughput difference resolved (BENCHMARKS.md, "SQLite's soft heap
/// limit at 4 MiB").
const SQLITE_SOFT_HEAP_LIMIT_BYTES: u64 = 4 << 20;

/// Prepared statements each PostgreSQL connection keeps, unless the URL names
/// `statement-cache-capacity`. A batch's multi-row inserts and upserts differ by row count (its
/// reads do not, see `sql`), so a writer connection uses a few hundred statement texts; at
/// sqlx's default of 100 it kept evicting them, and PostgreSQL parsed and planned them again,
/// batch after batch: a fifth of its CPU per delivery (BENCHMARKS.md, "PostgreSQL's statement cache"). The server keeps the plans, about
/// 6 MiB more per connection at this size; this process keeps their parameter and column types,
/// about 4 MiB more of its peak.
const POSTGRES_STATEMENT_CACHE: usize = 256;

/// The pools of one replica, `DATABASE_MAX_CONNECTIONS` connections in all.
pub struct Pools {
    /// Reads, replays, lead upserts, claims, health checks; and ingest where `batch_writers` is
    /// `None`.
    pub main: DatabaseConnection,
    /// On PostgreSQL, one connection per ingest batch writer ([`batch::writers`]), with generic
    /// plans: every ingest statement's plan is made once per connection instead of on every run.
    /// The ingest reads have one text whatever the batch size (see [`sql`]), and
    /// `tests/tests/api/query_plans.rs` checks each one's generic plan. The main pool keeps
    /// PostgreSQL's default, a plan per run where that looks cheaper: the operators' filtered
    /// listings want it.
    pub batch_writers: Option<DatabaseConnection>,
}

impl Pools {
    /// Connects (applying pending migrations on the main pool). On PostgreSQL, the batch writers
    /// get theirs out of `max_connections` when the main pool is left at least
    /// [`MAIN_POOL_MIN`]; otherwise they share the one pool.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let writers = batch::writers(backend_of_url(url), max_connections) as u32;
        if backend_of_url(url) != DbBackend::Postgres || max_connections < writers + MAIN_POOL_MIN {
            return Ok(Self {
                main: connect(url, max_connections).await?,
                batch_writers: None,
            });
        }
        let main = connect(url, max_connections - writers).await?;
        let batch_writers = Database::connect(options(url, writers, PlanCache::Generic))
            .await
            .context("connecting the ingest writers to DATABASE_URL")?;
        Ok(Self {
            main,
            batch_writers: Some(batch_writers),
        })
    }

    /// Closes every pool.
    pub async fn close(self) -> Result<(), DbErr> {
        if let Some(writers) = self.batch_writers {
            writers.close().await?;
        }
        self.main.close().await
    }
}

/// The fewest connections the main pool is split down to: the change feed's listener holds one
/// for good, and health checks, reads and the reminder claims need another. With one, the
/// health check timed out waiting for it and the service reported NOT_SERVING.
const MAIN_POOL_MIN: u32 = 2;

/// How PostgreSQL plans a pool's prepared statements.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PlanCache {
    /// Its default: a custom plan per run while that looks cheaper than a generic one.
    Auto,
    /// One generic plan per statement and connection.
    Generic,
}

fn backend_of_url(url: &str) -> DbBackend {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        DbBackend::Postgres
    } else {
        DbBackend::Sqlite
    }
}

/// Opens a pool on `url` and applies pending migrations.
///
/// SQLite files are created (with their directory) when missing and run in WAL mode with a busy
/// timeout, so concurrent writers wait for each other instead of failing with "database is locked".
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<DatabaseConnection> {
    if let Some(path) = sqlite_file_path(url)
        && let Some(dir) = Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let db = Database::connect(options(url, max_connections, PlanCache::Auto))
        .await
        .context("connecting to DATABASE_URL")?;
    Migrator::up(&db, None).await.context("applying migrations")?;
    Ok(db)
}

fn options(url: &str, max_connections: u32, plan_cache: PlanCache) -> ConnectOptions {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_connections)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|opts| {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .statement_cache_capacity(SQLITE_STATEMENT_CACHE)
                .pragma("soft_heap_limit", SQLITE_SOFT_HEAP_LIMIT_BYTES.to_string())
                .foreign_keys(true)
                .create_if_missing(true)
        });
    // sqlx 0.9.0 leaves Nagle's algorithm on, and its TLS writes then wait for delayed ACKs: on
    // loopback, TLS (sslmode=prefer, the default) cut group-commit throughput 4.5-fold
    // (BENCHMARKS.md) while protecting nothing, since the traffic never leaves the host.
    let statement_cache_named = names_query_parameter(url, "statement-cache-capacity");
    options.map_sqlx_postgres_opts(move |opts| {
        let opts = if statement_cache_named {
            opts
        } else {
            opts.statement_cache_capacity(POSTGRES_STATEMENT_CACHE)
        };
        if tls_is_pointless(&opts) {
            opts.ssl_mode(PgSslMode::Disable)
        } else {
            opts
        }
    });
    if plan_cache == PlanCache::Generic {
        // A `SET` on each new connection rather than a startup parameter, which poolers such as
        // PgBouncer refuse.
        options.map_sqlx_postgres_pool_opts(|pool| {
            pool.after_connect(|connection, _| {
                Box::pin(async move {
                    use sea_orm::sqlx::Executor;
                    connection
                        .execute("SET plan_cache_mode = force_generic_plan")
                        .await
                        .map(|_| ())
                })
            })
        });
    }
    options
}

/// TLS only costs time towards this host (a loopback address or a Unix socket), and `prefer`
/// (the mode when neither the URL's `sslmode` nor `PGSSLMODE` names one) lets it be left out.
/// Any other mode is kept as named.
fn tls_is_pointless(options: &PgConnectOptions) -> bool {
    matches!(options.get_ssl_mode(), PgSslMode::Prefer)
        && (options.get_socket().is_some() || is_loopback(options.get_host()))
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

fn names_query_parameter(url: &str, name: &str) -> bool {
    url.split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|pair| pair.split('=').next() == Some(name)))
}

fn sqlite_file_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_cache_size_in_the_url_is_found_only_as_a_query_parameter() {
        let key = "statement-cache-capacity";
        let cases = [
            ("postgres://u@127.0.0.1/app?statement-cache-capacity=50", true),
            (
                "postgres://u@127.0.0.1/app?sslmode=disable&statement-cache-capacity=50",
                true,
            ),
            ("postgres://u@127.0.0.1/app?statement-cache-capacity", true),
            ("postgres://u@127.0.0.1/app", false),
            ("postgres://u@127.0.0.1/app?sslmode=disable", false),
            ("postgres://u@127.0.0.1/statement-cache-capacity", false),
            ("postgres://u@127.0.0.1/app?x-statement-cache-capacity=5", false),
        ];
        for (url, expected) in cases {
            assert_eq!(names_query_parameter(url, key), expected, "{url}");
        }
    }

    #[test]
    fn tls_is_skipped_only_towards_this_host_and_only_when_the_mode_allows_it() {
        let cases = [
            ("postgres://postgres@127.0.0.1:5432/app", true),
            ("postgresql://user:pw@localhost/app", true),
            ("postgres://user@[::1]:5432/app", true),
            ("postgres://user@127.0.0.2/app", true),
            ("postgres://user@localhost/app?host=/var/run/postgresql", true),
            (
                "postgres://user@localhost/app?host=%2Fvar%2Frun%2Fpostgresql",
                true,
            ),
            ("postgres://postgres@127.0.0.1:5432/app?sslmode=require", false),
            (
                "postgres://postgres@127.0.0.1/app?application_name=x&sslmode=verify-full",
                false,
            ),
            // prefer allows a connection without TLS; towards this host that is the one taken.
            ("postgres://postgres@127.0.0.1/app?sslmode=prefer", true),
            ("postgres://user@db.internal:5432/app", false),
            ("postgres://user@10.0.0.7/app", false),
            ("postgres://user@localhost.example.com/app", false),
            ("postgres://user@localhost/app?host=db.internal", false),
        ];
        for (url, expected) in cases {
            let options: PgConnectOptions = url.parse().expect("a PostgreSQL URL");
            assert_eq!(tls_is_pointless(&options), expected, "{url}");
        }
    }

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_file_path("sqlite://data/meetings.db?mode=rwc"),
            Some("data/meetings.db")
        );
        assert_eq!(sqlite_file_path("sqlite::memory:"), None);
        assert_eq!(sqlite_file_path("postgres://localhost/x"), None);
    }
}
