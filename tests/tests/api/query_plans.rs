//! Every read on the ingest path uses an index, on a pre-loaded database with statistics: leads
//! with many meetings each (where SQLite once planned the latest-meeting lookup as a scan plus a
//! sort), unlinked meetings, and an inbox row and reminders per meeting. A plan regression fails
//! here instead of in production.

use meeting_service::store::{self, sql};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use crate::helpers::{Backend, TestDatabase};

const LEADS: i64 = 20_000;
/// The first leads have this many meetings each; the other leads have none.
const BUSY_LEADS: i64 = 100;
const MEETINGS_PER_BUSY_LEAD: i64 = 100;
const UNLINKED_MEETINGS: i64 = 10_000;

/// `SELECT g FROM <numbers 1..=n>` in the backend's dialect.
fn numbers(backend: Backend, n: i64) -> String {
    match backend {
        Backend::Postgres => format!("SELECT g FROM generate_series(1, {n}) AS g"),
        Backend::Sqlite => format!(
            "WITH RECURSIVE numbers(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM numbers WHERE g < {n}) \
             SELECT g FROM numbers"
        ),
    }
}

async fn preload(db: &DatabaseConnection, backend: Backend) {
    let time = "'2026-01-01 00:00:00+00:00'";
    let time = match backend {
        Backend::Postgres => format!("{time}::timestamptz"),
        Backend::Sqlite => time.to_owned(),
    };
    let linked = BUSY_LEADS * MEETINGS_PER_BUSY_LEAD;
    let statements = [
        format!(
            "INSERT INTO leads (email, name, status, created_at, updated_at) \
             SELECT 'lead' || g || '@example.com', NULL, 'meeting_scheduled', {time}, {time} FROM ({}) AS n",
            numbers(backend, LEADS)
        ),
        // Meetings 1..=linked belong to the busy leads; the rest to no lead.
        format!(
            "INSERT INTO meetings (lead_id, calendly_event_id, calendly_invitee_id, status, invitee_email, \
             invitee_name, no_show, last_event_at, created_at, updated_at) \
             SELECT CASE WHEN g <= {linked} THEN 1 + (g - 1) / {MEETINGS_PER_BUSY_LEAD} ELSE NULL END, \
             'https://api.calendly.com/scheduled_events/e' || g, \
             'https://api.calendly.com/scheduled_events/e' || g || '/invitees/i' || g, \
             CASE WHEN g % 5 = 0 THEN 'rescheduled' ELSE 'scheduled' END, \
             'lead' || (1 + (g - 1) / {MEETINGS_PER_BUSY_LEAD}) || '@example.com', 'Pat', {false}, {time}, {time}, {time} \
             FROM ({}) AS n",
            numbers(backend, linked + UNLINKED_MEETINGS),
            false = if backend == Backend::Postgres {
                "false"
            } else {
                "0"
            },
        ),
        format!(
            "INSERT INTO webhook_events (tracking_id, event_type, dedupe_key, source, payload_uri, event_proto, \
             received_at, processed_at, outcome, attempts) \
             SELECT 't', 'invitee.created', 'event:' || id, 'webhook', calendly_invitee_id, {empty}, {time}, {time}, \
             'processed', 1 FROM meetings",
            empty = if backend == Backend::Postgres {
                "'\\x'::bytea"
            } else {
                "X''"
            },
        ),
        format!(
            "INSERT INTO meeting_reminders (meeting_id, reminder_type, scheduled_time, sent, state, attempts, \
             created_at, updated_at) \
             SELECT id, r.t, {time}, {false}, 'pending', 0, {time}, {time} FROM meetings, \
             (SELECT '24h' AS t UNION ALL SELECT '1h' UNION ALL SELECT '15min') AS r",
            false = if backend == Backend::Postgres {
                "false"
            } else {
                "0"
            },
        ),
    ];
    for statement in statements {
        db.execute_unprepared(&statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    db.execute_unprepared("ANALYZE").await.expect("statistics");
}

async fn plan_lines(db: &DatabaseConnection, statement: &Statement) -> Vec<String> {
    let explain = match statement.db_backend {
        DbBackend::Postgres => "EXPLAIN ",
        _ => "EXPLAIN QUERY PLAN ",
    };
    let explained = Statement {
        sql: format!("{explain}{}", statement.sql),
        ..statement.clone()
    };
    let rows = db.query_all_raw(explained).await.expect("explain");
    rows.iter()
        .map(|row| match statement.db_backend {
            DbBackend::Postgres => row.try_get_by_index::<String>(0).expect("plan line"),
            _ => row.try_get::<String>("", "detail").expect("plan detail"),
        })
        .collect()
}

/// PostgreSQL's generic plan of `statement`: the one it keeps for a prepared statement once a
/// custom plan per run looks no cheaper. The reads have one text for any number of keys, so this
/// is the plan most runs get; `EXPLAIN` with parameters shows only a custom one.
async fn generic_plan_lines(db: &DatabaseConnection, statement: &Statement) -> Vec<String> {
    use sea_orm::{
        TransactionTrait,
        sea_query::{PostgresQueryBuilder, QueryBuilder},
    };
    let arguments: Vec<String> = statement
        .values
        .iter()
        .flat_map(|values| values.0.iter())
        .map(|value| PostgresQueryBuilder.value_to_string(value))
        .collect();
    let txn = db.begin().await.expect("begin");
    txn.execute_unprepared("SET LOCAL plan_cache_mode = force_generic_plan")
        .await
        .expect("force generic plans");
    txn.execute_unprepared(&format!("PREPARE ingest_read AS {}", statement.sql))
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", statement.sql));
    let explain = if arguments.is_empty() {
        "EXPLAIN EXECUTE ingest_read".to_owned()
    } else {
        format!("EXPLAIN EXECUTE ingest_read({})", arguments.join(", "))
    };
    let rows = txn
        .query_all_raw(Statement::from_string(DbBackend::Postgres, explain))
        .await
        .expect("explain the generic plan");
    // A prepared statement outlives the transaction; this connection goes back to the pool.
    txn.execute_unprepared("DEALLOCATE ingest_read")
        .await
        .expect("deallocate");
    txn.rollback().await.expect("rollback");
    rows.iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("plan line"))
        .collect()
}

/// What a plan line must never say of one of the service's tables.
fn is_full_scan(backend: Backend, line: &str) -> bool {
    const TABLES: [&str; 4] = ["leads", "meetings", "meeting_reminders", "webhook_events"];
    TABLES.iter().any(|table| match backend {
        Backend::Postgres => line.contains(&format!("Seq Scan on {table}")),
        // `SCAN t` without an index; `SEARCH t USING INDEX …` is a lookup.
        Backend::Sqlite => {
            line.trim() == format!("SCAN {table}") || line.trim_start().starts_with(&format!("SCAN {table} "))
        }
    })
}

async fn every_ingest_read_uses_an_index_on_a_loaded_database_with_statistics(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let db = store::connect(&database.url, 2)
        .await
        .expect("connect and migrate");
    preload(&db, backend).await;

    // A batch as it would be: a few invitees of busy leads and a few unlinked ones.
    let uris: Vec<String> = [1, 150, 5_000, 9_999, 10_500, 19_000]
        .iter()
        .map(|g| format!("https://api.calendly.com/scheduled_events/e{g}/invitees/i{g}"))
        .collect();
    let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
    let keys = ["event:1", "event:150", "event:19000"];
    let emails = ["lead1@example.com", "lead15000@example.com", "nobody@example.com"];
    let keys = sql::ReadKeys {
        invitee_uris: &uris,
        dedupe_keys: &keys,
        lead_ids: &[1, 2, 100],
        emails: &emails,
        meeting_ids: &[1, 150, 5_000, 10_500],
    };
    let mut failures = Vec::new();
    for (read, statement) in sql::ingest_reads(db.get_database_backend(), &keys) {
        let mut plans = vec![("", plan_lines(&db, &statement).await)];
        if backend == Backend::Postgres {
            plans.push((" (generic plan)", generic_plan_lines(&db, &statement).await));
        }
        for (kind, plan) in plans {
            let sorts_the_lead = read == "each lead's latest other meeting"
                && plan
                    .iter()
                    .any(|line| line.contains("TEMP B-TREE") || line.contains("Sort"));
            if plan.iter().any(|line| is_full_scan(backend, line)) || sorts_the_lead {
                failures.push(format!(
                    "{read}{kind}:\n  {}\n  {}",
                    statement.sql,
                    plan.join("\n  ")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "reads without an index:\n{}",
        failures.join("\n")
    );
}

crate::on_both_backends!(every_ingest_read_uses_an_index_on_a_loaded_database_with_statistics);
