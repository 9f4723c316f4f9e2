//! Persistence: connecting (migrations applied), the ingest transaction, and reads.
//!
//! Every effect of one event happens in one transaction that starts by inserting the inbox row.
//! Its unique `dedupe_key` is what makes a repeated delivery a no-op: the insert fails, the
//! transaction rolls back, and the caller is told "duplicate". No read-then-write check is
//! involved, so identical deliveries at the same instant are safe too. Transient database errors
//! retry the whole transaction (see [`retry`]).

mod ingest;
pub mod leads;
pub mod prune;
pub mod reads;
pub mod reminders;
pub mod retry;

use std::{path::Path, time::Duration};

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};

pub use ingest::{IngestRequest, Ingested};
pub use reads::{InboxPage, MeetingView};

use crate::domain::reminders::ReminderOffset;
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
}

impl Store {
    pub fn new(db: DatabaseConnection, settings: StoreSettings) -> Self {
        Self { db, settings }
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        self.db.ping().await.is_ok()
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
                .foreign_keys(true)
                .create_if_missing(true)
        });
    let db = Database::connect(options)
        .await
        .context("connecting to DATABASE_URL")?;
    Migrator::up(&db, None).await.context("applying migrations")?;
    Ok(db)
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
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_file_path("sqlite://data/meetings.db?mode=rwc"),
            Some("data/meetings.db")
        );
        assert_eq!(sqlite_file_path("sqlite::memory:"), None);
        assert_eq!(sqlite_file_path("postgres://localhost/x"), None);
    }
}
