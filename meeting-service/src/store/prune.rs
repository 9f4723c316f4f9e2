//! Retention: drops raw bodies from inbox rows older than their retention period, and change-feed
//! rows older than theirs.
//!
//! Only an inbox row's body goes: each event's identity (its dedupe key) and outcome stay, so a
//! late Calendly retry is still recognised as a duplicate. Change rows go whole, and the feed's
//! horizon moves past them (`super::changes`). Work is done in small batches, each its own short
//! transaction, so ingestion never waits long behind it.

use std::time::Duration;

use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect, sea_query::Expr};
use tokio_util::sync::CancellationToken;

use super::Store;
use crate::entity::webhook_event;

const BATCH_SIZE: u64 = 500;
/// docs/events.md: raw bodies are pruned "hourly and at start".
pub const INTERVAL: Duration = Duration::from_secs(3_600);

/// How long data is kept (`RAW_BODY_RETENTION_DAYS`, `CHANGE_RETENTION_DAYS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub raw_bodies: Duration,
    pub changes: Duration,
}

/// Prunes at once, then every [`INTERVAL`], until `stop`.
pub async fn run(store: Store, retention: Retention, stop: CancellationToken) {
    run_every(store, retention, INTERVAL, stop).await;
}

async fn run_every(store: Store, retention: Retention, interval: Duration, stop: CancellationToken) {
    loop {
        match store.prune_raw_bodies(retention.raw_bodies).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "raw bodies past retention removed from the inbox"),
            Err(error) => tracing::warn!(%error, "pruning raw bodies failed; will try again"),
        }
        match store.prune_changes(retention.changes).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "changes past retention removed from the change feed"),
            Err(error) => tracing::warn!(%error, "pruning the change feed failed; will try again"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

impl Store {
    /// Removes raw bodies received more than `retention` ago; returns how many.
    pub async fn prune_raw_bodies(&self, retention: Duration) -> Result<u64, sea_orm::DbErr> {
        let cutoff = Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let mut total = 0;
        loop {
            let ids: Vec<i64> = webhook_event::Entity::find()
                .select_only()
                .column(webhook_event::Column::Id)
                .filter(webhook_event::Column::ReceivedAt.lt(cutoff))
                .filter(webhook_event::Column::RawBody.is_not_null())
                .limit(BATCH_SIZE)
                .into_tuple()
                .all(&self.db)
                .await?;
            if ids.is_empty() {
                return Ok(total);
            }
            let result = webhook_event::Entity::update_many()
                .col_expr(
                    webhook_event::Column::RawBody,
                    Expr::value(Option::<Vec<u8>>::None),
                )
                .filter(webhook_event::Column::Id.is_in(ids))
                .exec(&self.db)
                .await?;
            total += result.rows_affected;
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Statement, Value};

    use super::*;
    use crate::store::{StoreSettings, connect, retry::RetryPolicy};

    const DAY: Duration = Duration::from_secs(86_400);

    fn retention() -> Retention {
        Retention {
            raw_bodies: 30 * DAY,
            changes: 7 * DAY,
        }
    }

    async fn store(dir: &tempfile::TempDir) -> Store {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("prune.db").display());
        let db = connect(&url, 2).await.expect("a database");
        Store::new(
            db,
            StoreSettings {
                reminder_offsets: Vec::new(),
                create_leads_for_unknown_invitees: false,
                retry: RetryPolicy::default(),
            },
        )
    }

    /// An inbox row with a raw body, received `age` ago.
    async fn add_row(store: &Store, key: &str, age: Duration) -> i64 {
        let received = Utc::now() - chrono::Duration::from_std(age).expect("in range");
        let statement = Statement::from_sql_and_values(
            store.backend(),
            "INSERT INTO webhook_events (tracking_id, event_type, dedupe_key, source, raw_body, event_proto, \
             received_at, outcome, attempts) VALUES ('t', 'invitee.created', ?, 'webhook', ?, ?, ?, 'processed', 1)",
            [
                Value::from(key),
                Value::from(b"{}".to_vec()),
                Value::from(Vec::<u8>::new()),
                Value::from(received),
            ],
        );
        store.connection().execute_raw(statement).await.expect("insert");
        store
            .connection()
            .query_one_raw(Statement::from_string(
                store.backend(),
                "SELECT MAX(id) FROM webhook_events",
            ))
            .await
            .expect("query")
            .expect("a row")
            .try_get_by_index(0)
            .expect("an id")
    }

    async fn has_raw_body(store: &Store, id: i64) -> bool {
        let row = webhook_event::Entity::find_by_id(id)
            .one(store.connection())
            .await
            .expect("query")
            .expect("the row stays");
        row.raw_body.is_some()
    }

    async fn until_pruned(store: &Store, id: i64) {
        // A backstop against a hang; the pass takes milliseconds.
        for _ in 0..1_200 {
            if !has_raw_body(store, id).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("row {id} was not pruned within a minute");
    }

    #[test]
    fn pruning_runs_hourly() {
        assert_eq!(INTERVAL, Duration::from_secs(3_600));
    }

    #[tokio::test]
    async fn only_bodies_past_retention_go_and_their_rows_stay() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store(&dir).await;
        let old = add_row(&store, "old", 31 * DAY).await;
        let recent = add_row(&store, "recent", 29 * DAY).await;
        assert_eq!(store.prune_raw_bodies(30 * DAY).await.expect("prune"), 1);
        assert!(!has_raw_body(&store, old).await);
        assert!(has_raw_body(&store, recent).await);
        assert_eq!(
            store.prune_raw_bodies(30 * DAY).await.expect("prune"),
            0,
            "already pruned"
        );
    }

    #[tokio::test]
    async fn the_schedule_prunes_at_start_and_again_after_each_interval() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store(&dir).await;
        let before_start = add_row(&store, "before start", 31 * DAY).await;
        let stop = CancellationToken::new();
        // An interval far longer than this test: only the pass at start can prune this row.
        let task = tokio::spawn(run_every(store.clone(), retention(), 10 * INTERVAL, stop.clone()));
        until_pruned(&store, before_start).await;
        stop.cancel();
        task.await.expect("the task stops when told");

        // Short enough to see later passes: a row that turns old after one is pruned by another.
        let stop = CancellationToken::new();
        let first = add_row(&store, "first", 31 * DAY).await;
        let task = tokio::spawn(run_every(
            store.clone(),
            retention(),
            Duration::from_millis(20),
            stop.clone(),
        ));
        until_pruned(&store, first).await;
        let later = add_row(&store, "later", 31 * DAY).await;
        until_pruned(&store, later).await;
        stop.cancel();
        task.await.expect("the task stops when told");
    }
}
