//! PostgreSQL: the inbox's raw bodies and stored events are compressed with lz4 instead of
//! pglz. A Calendly body (2-3 KB of JSON) is over PostgreSQL's 2 KB threshold, so every inbox
//! row is compressed as it is written, and pglz took about 8% of PostgreSQL's CPU under load
//! (BENCHMARKS.md, "lz4 for the inbox's bodies"). Only the column's method for new values
//! changes: nothing is rewritten, and rows written before keep pglz, which PostgreSQL still reads.
//!
//! A server built without lz4 refuses the method; there the columns keep pglz and the migration
//! still succeeds, since nothing but speed depends on it. SQLite stores bodies uncompressed and
//! has no such setting.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// `EXECUTE` so that a server that cannot parse `SET COMPRESSION` (before PostgreSQL 14) fails
/// at run time, where the handler can catch it, rather than when the block is compiled.
fn set_compression_sql(method: &str) -> String {
    format!(
        "DO $$
BEGIN
    EXECUTE 'ALTER TABLE webhook_events
        ALTER COLUMN raw_body SET COMPRESSION {method},
        ALTER COLUMN event_proto SET COMPRESSION {method}';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    RAISE NOTICE 'webhook_events keeps its compression: %', SQLERRM;
END
$$"
    )
}

/// Sets the columns' method on PostgreSQL; elsewhere does nothing.
async fn set_compression(manager: &SchemaManager<'_>, method: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    manager
        .get_connection()
        .execute_unprepared(&set_compression_sql(method))
        .await
        .map(|_| ())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set_compression(manager, "lz4").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set_compression(manager, "default").await
    }
}
