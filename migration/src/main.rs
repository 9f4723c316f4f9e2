//! `migration [up|down|status|fresh]` against `DATABASE_URL` (read from `.env` when present).
//!
//! `down` and `fresh` destroy data; they are for development databases.

use anyhow::{Context, bail};
use migration::{Migrator, MigratorTrait};
use sea_orm_migration::sea_orm::Database;

const USAGE: &str = "usage: migration [up|down|status|fresh]  (DATABASE_URL names the database)";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = dotenvy::dotenv();
    let command = std::env::args().nth(1).unwrap_or_else(|| "up".to_owned());
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL must name the database")?;
    let db = Database::connect(&url)
        .await
        .context("connecting to DATABASE_URL")?;
    match command.as_str() {
        "up" => Migrator::up(&db, None).await?,
        "down" => Migrator::down(&db, Some(1)).await?,
        "fresh" => Migrator::fresh(&db).await?,
        "status" => {
            for migration in Migrator::get_migration_with_status(&db).await? {
                println!("{}\t{}", migration.name(), migration.status());
            }
        }
        "-h" | "--help" | "help" => println!("{USAGE}"),
        other => bail!("unknown command {other:?}; {USAGE}"),
    }
    Ok(())
}
