//! The change feed's store side: turning planned changes into rows, the feed's head as this
//! process knows it, the reads a stream makes, and retention.
//!
//! Rows are appended by the transaction that made the changes ([`sql::changes::append`], which
//! also keeps ids in commit order). After its commit, the writer moves this process's
//! [`FeedHead`]; changes committed by other replicas move it through PostgreSQL's notifications
//! and a slow poll (`crate::feed`). Streams wake on the head and read rows up to it, so they only
//! ever ask for rows already committed.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use prost::Message;
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr};
use tokio::sync::watch;

use super::{Store, sql};
use crate::{
    entity::{change_feed_horizon, meeting, meeting_change, message::meeting_message},
    error::ServiceError,
};

pub use sql::changes::{ChangeFilter, NewChange};

/// The highest change id this process knows to be committed. Cheap to clone.
#[derive(Clone)]
pub struct FeedHead(Arc<watch::Sender<i64>>);

impl Default for FeedHead {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(0)))
    }
}

impl FeedHead {
    /// `id` is committed; wakes the streams when it is news.
    pub fn advance(&self, id: i64) {
        self.0.send_if_modified(|head| {
            let newer = id > *head;
            if newer {
                *head = id;
            }
            newer
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.0.subscribe()
    }
}

/// A change row for `row` (the meeting as written), caused by `cause`.
pub fn new_change(
    row: &meeting::Model,
    kind: proto::v1::ChangeKind,
    cause: &super::plan::Cause,
    committed_at: DateTime<Utc>,
) -> NewChange {
    NewChange {
        meeting_id: row.id,
        lead_id: row.lead_id,
        kind: kind.label(),
        meeting: meeting_message(row, &[]).encode_to_vec(),
        webhook_event_id: cause.webhook_event_id,
        cause: cause.name,
        tracking_id: cause.tracking_id.clone(),
        committed_at,
    }
}

/// Where the feed stands, for a stream that opens or checks its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedBounds {
    /// Highest id retention removed; cursors below it are refused.
    pub horizon: i64,
    /// Highest id committed (at least the horizon).
    pub latest: i64,
}

const PRUNE_BATCH: u64 = 500;

impl Store {
    /// This process's view of the feed's head.
    pub fn feed_head(&self) -> &FeedHead {
        &self.feed
    }

    /// Wakes this process's change streams once a commit made `latest` (the answer of
    /// [`sql::changes::append`]) visible.
    pub(crate) fn announce(&self, latest: Option<i64>) {
        if let Some(id) = latest {
            self.feed.advance(id);
        }
    }

    pub async fn feed_bounds(&self) -> Result<FeedBounds, ServiceError> {
        let horizon = sql::changes::horizon(&self.db)
            .await
            .map_err(ServiceError::from_db)?;
        let latest = sql::changes::latest(&self.db)
            .await
            .map_err(ServiceError::from_db)?;
        Ok(FeedBounds {
            horizon,
            latest: latest.max(horizon),
        })
    }

    /// Up to `limit` changes after `after`, up to `through`, matching `filter`; and the horizon
    /// read after them, so that a caller whose `after` is below it knows rows may be missing.
    pub async fn changes_after(
        &self,
        after: i64,
        through: i64,
        filter: &ChangeFilter,
        limit: u64,
    ) -> Result<(Vec<meeting_change::Model>, i64), ServiceError> {
        let rows = sql::changes::after_query(after, through, filter, limit)
            .all(&self.db)
            .await
            .map_err(ServiceError::from_db)?;
        let horizon = sql::changes::horizon(&self.db)
            .await
            .map_err(ServiceError::from_db)?;
        Ok((rows, horizon))
    }

    /// Removes changes committed more than `retention` ago, oldest first, and raises the horizon
    /// past them in the same transaction; returns how many went.
    pub async fn prune_changes(&self, retention: Duration) -> Result<u64, DbErr> {
        let cutoff = Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let mut total = 0;
        loop {
            let txn = self.begin_write().await?;
            let oldest: Vec<i64> = meeting_change::Entity::find()
                .select_only()
                .column(meeting_change::Column::Id)
                .filter(meeting_change::Column::CommittedAt.lt(cutoff))
                .order_by_asc(meeting_change::Column::Id)
                .limit(PRUNE_BATCH)
                .into_tuple()
                .all(&txn)
                .await?;
            let Some(&through) = oldest.last() else {
                txn.commit().await?;
                return Ok(total);
            };
            let deleted = meeting_change::Entity::delete_many()
                .filter(meeting_change::Column::Id.lte(through))
                .exec(&txn)
                .await?;
            change_feed_horizon::Entity::update_many()
                .col_expr(change_feed_horizon::Column::PrunedThrough, Expr::value(through))
                .filter(change_feed_horizon::Column::Id.eq(1))
                .filter(change_feed_horizon::Column::PrunedThrough.lt(through))
                .exec(&txn)
                .await?;
            txn.commit().await?;
            total += deleted.rows_affected;
            tokio::task::yield_now().await;
        }
    }
}
