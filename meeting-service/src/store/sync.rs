//! The record of reconcile runs (`calendly reconcile`): each run is recorded once, at its end;
//! the status is the latest run and the latest that succeeded.

use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};

use super::{Store, db_time};
use crate::{entity::sync_run, error::ServiceError};

/// A run to record, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSyncRun {
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: chrono::DateTime<chrono::Utc>,
    pub subscription_state: proto::v1::SubscriptionState,
    pub subscription_uri: Option<String>,
    pub retry_started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub events_sent: i64,
    pub events_missed: i64,
    pub failures: i64,
    pub succeeded: bool,
    pub error: Option<String>,
}

/// The latest run, and the latest that succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStatus {
    pub last_run: Option<sync_run::Model>,
    pub last_success: Option<sync_run::Model>,
}

impl Store {
    pub async fn record_sync_run(&self, run: NewSyncRun) -> Result<sync_run::Model, ServiceError> {
        sync_run::ActiveModel {
            started_at: Set(db_time(run.started_at)),
            finished_at: Set(db_time(run.finished_at)),
            subscription_state: Set(run.subscription_state.label().to_owned()),
            subscription_uri: Set(run.subscription_uri),
            retry_started_at: Set(run.retry_started_at.map(db_time)),
            events_sent: Set(run.events_sent),
            events_missed: Set(run.events_missed),
            failures: Set(run.failures),
            succeeded: Set(run.succeeded),
            error: Set(run.error),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .map_err(ServiceError::from_db)
    }

    pub async fn sync_status(&self) -> Result<SyncStatus, ServiceError> {
        let last_run = sync_run::Entity::find()
            .order_by_desc(sync_run::Column::Id)
            .one(&self.db)
            .await
            .map_err(ServiceError::from_db)?;
        let last_success = match &last_run {
            Some(run) if run.succeeded => Some(run.clone()),
            Some(_) => sync_run::Entity::find()
                .filter(sync_run::Column::Succeeded.eq(true))
                .order_by_desc(sync_run::Column::Id)
                .one(&self.db)
                .await
                .map_err(ServiceError::from_db)?,
            None => None,
        };
        Ok(SyncStatus {
            last_run,
            last_success,
        })
    }
}
