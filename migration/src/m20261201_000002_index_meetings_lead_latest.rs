//! A lead's status comes from its latest meeting (by Calendly time, then invitee URI, rescheduled
//! ones left out), looked up on every ingest that touches the lead. On SQLite with statistics, the
//! index on `lead_id` alone made that a scan of every meeting of the lead plus a sort, for leads
//! with many meetings. This index matches the filter and the order, so the lookup reads from the
//! newest end and stops at the first meeting that counts; it also serves everything the
//! `lead_id` index did, which it replaces.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const INDEX: &str = "idx_meetings_lead_latest";
const REPLACED: &str = "idx_meetings_lead_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Meetings::Table)
                    .col(Meetings::LeadId)
                    .col(Meetings::LastEventAt)
                    .col(Meetings::CalendlyInviteeId)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(Index::drop().name(REPLACED).table(Meetings::Table).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(REPLACED)
                    .table(Meetings::Table)
                    .col(Meetings::LeadId)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(Index::drop().name(INDEX).table(Meetings::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Meetings {
    Table,
    LeadId,
    LastEventAt,
    CalendlyInviteeId,
}
