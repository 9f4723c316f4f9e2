//! The change feed: `meeting_changes`, an outbox written in the transaction of each change it
//! describes, and `change_feed_horizon`, the highest change id retention has removed.
//!
//! Ids must never be reused, or a consumer's cursor would skip rows: the id column autoincrements
//! (AUTOINCREMENT on SQLite, a sequence on PostgreSQL), so pruning the newest rows does not give
//! their ids out again. The horizon row is how a cursor older than retention is told apart from
//! a gap that a rolled-back transaction left in the sequence.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(MeetingChanges::Table)
                    .col(big_pk_auto(MeetingChanges::Id))
                    .col(big_integer(MeetingChanges::MeetingId))
                    // The meeting's lead after the change, for consumers that follow one lead.
                    .col(big_integer_null(MeetingChanges::LeadId))
                    .col(string(MeetingChanges::Kind))
                    // The meeting as the change left it: an encoded `calendly.meetings.v1.Meeting`.
                    .col(blob(MeetingChanges::Meeting))
                    .col(big_integer_null(MeetingChanges::WebhookEventId))
                    .col(string(MeetingChanges::Cause))
                    .col(string(MeetingChanges::TrackingId))
                    .col(timestamp_with_time_zone(MeetingChanges::CommittedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_meeting_changes_meeting_id")
                            .from(MeetingChanges::Table, MeetingChanges::MeetingId)
                            .to(Meetings::Table, Meetings::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // A lead's stream reads by lead, in id order; retention finds the oldest rows by time.
        manager
            .create_index(
                Index::create()
                    .name("idx_meeting_changes_lead_id")
                    .table(MeetingChanges::Table)
                    .col(MeetingChanges::LeadId)
                    .col(MeetingChanges::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_meeting_changes_committed_at")
                    .table(MeetingChanges::Table)
                    .col(MeetingChanges::CommittedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ChangeFeedHorizon::Table)
                    .col(integer(ChangeFeedHorizon::Id).primary_key())
                    .col(big_integer(ChangeFeedHorizon::PrunedThrough))
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(ChangeFeedHorizon::Table)
                    .columns([ChangeFeedHorizon::Id, ChangeFeedHorizon::PrunedThrough])
                    .values_panic([1.into(), 0i64.into()])
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ChangeFeedHorizon::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(MeetingChanges::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum MeetingChanges {
    Table,
    Id,
    MeetingId,
    LeadId,
    Kind,
    Meeting,
    WebhookEventId,
    Cause,
    TrackingId,
    CommittedAt,
}

#[derive(DeriveIden)]
enum ChangeFeedHorizon {
    Table,
    Id,
    PrunedThrough,
}

#[derive(DeriveIden)]
enum Meetings {
    Table,
    Id,
}
