//! Schema of the meeting service, as sea-orm-migration migrations.
//!
//! Every table is created complete in one migration because SQLite cannot add a foreign key
//! or alter a column afterwards. Times are `timestamp with time zone` (TEXT on SQLite, always
//! written from Rust in UTC with fixed precision) and have no database-side defaults, so the
//! same statements behave alike on both backends. Never edit a migration after it has landed;
//! add a new one.

pub use sea_orm_migration::prelude::*;

mod m20261128_000001_create_tables;
mod m20261128_000002_add_reminder_claim_token;
mod m20261201_000001_index_inbox_payload_uri;
mod m20261201_000002_index_meetings_lead_latest;
mod m20261201_000003_create_meeting_changes;
mod m20261201_000004_create_sync_runs;
mod m20261202_000001_compress_inbox_bodies_with_lz4;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261128_000001_create_tables::Migration),
            Box::new(m20261128_000002_add_reminder_claim_token::Migration),
            Box::new(m20261201_000001_index_inbox_payload_uri::Migration),
            Box::new(m20261201_000002_index_meetings_lead_latest::Migration),
            Box::new(m20261201_000003_create_meeting_changes::Migration),
            Box::new(m20261201_000004_create_sync_runs::Migration),
            Box::new(m20261202_000001_compress_inbox_bodies_with_lz4::Migration),
        ]
    }
}
