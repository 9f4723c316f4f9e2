//! `sync_runs`: one row per run of `calendly reconcile`, recorded by the meeting service, so that
//! every replica (and the adapter's health summary) can tell when the last one ran, what it found
//! of the webhook subscription, and how many webhooks it found missing.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SyncRuns::Table)
                    .col(big_pk_auto(SyncRuns::Id))
                    .col(timestamp_with_time_zone(SyncRuns::StartedAt))
                    .col(timestamp_with_time_zone(SyncRuns::FinishedAt))
                    .col(string(SyncRuns::SubscriptionState))
                    .col(string_null(SyncRuns::SubscriptionUri))
                    .col(timestamp_with_time_zone_null(SyncRuns::RetryStartedAt))
                    .col(big_integer(SyncRuns::EventsSent))
                    .col(big_integer(SyncRuns::EventsMissed))
                    .col(big_integer(SyncRuns::Failures))
                    .col(boolean(SyncRuns::Succeeded))
                    .col(text_null(SyncRuns::Error))
                    .to_owned(),
            )
            .await?;
        // The latest success is looked up on every status read.
        manager
            .create_index(
                Index::create()
                    .name("idx_sync_runs_succeeded_id")
                    .table(SyncRuns::Table)
                    .col(SyncRuns::Succeeded)
                    .col(SyncRuns::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SyncRuns::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum SyncRuns {
    Table,
    Id,
    StartedAt,
    FinishedAt,
    SubscriptionState,
    SubscriptionUri,
    RetryStartedAt,
    EventsSent,
    EventsMissed,
    Failures,
    Succeeded,
    Error,
}
