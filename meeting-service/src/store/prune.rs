//! Drops raw bodies from inbox rows older than the retention period.
//!
//! Only the body goes: each event's identity (its dedupe key) and outcome stay, so a late
//! Calendly retry is still recognised as a duplicate. Work is done in small batches, each its own
//! short transaction, so ingestion never waits long behind it.

use std::time::Duration;

use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect, sea_query::Expr};
use tokio_util::sync::CancellationToken;

use super::Store;
use crate::entity::webhook_event;

const BATCH_SIZE: u64 = 500;
const INTERVAL: Duration = Duration::from_secs(3_600);

pub async fn run(store: Store, retention: Duration, stop: CancellationToken) {
    loop {
        match store.prune_raw_bodies(retention).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "raw bodies past retention removed from the inbox"),
            Err(error) => tracing::warn!(%error, "pruning raw bodies failed; will try again"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(INTERVAL) => {}
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
