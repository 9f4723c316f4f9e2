//! Each claim of a reminder gets a token, so only the dispatcher holding the current claim can
//! complete or release it; a dispatcher whose lease ran out and was re-claimed cannot.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(MeetingReminders::Table)
                    .add_column(string_null(MeetingReminders::ClaimToken))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(MeetingReminders::Table)
                    .drop_column(MeetingReminders::ClaimToken)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum MeetingReminders {
    Table,
    ClaimToken,
}
