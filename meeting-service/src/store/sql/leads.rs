//! `leads`: the leads a batch touches, locked, created and given their new status.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select,
    Statement, sea_query::LockType,
};

use super::{RowsInsert, one_of};
use crate::entity::lead::{self, Column, Model};

/// The advisory lock class of e-mail guards (an arbitrary constant: "lead"); the key within it
/// is the e-mail's hash. The two-key form never meets the one-key locks of `super::changes`.
const EMAIL_GUARD_CLASS: i32 = 0x6c65_6164;

/// Guards the e-mails a transaction looks leads up by, until its commit: shared by ingest, which
/// may store a meeting without a lead for an e-mail it found none for, and exclusive for
/// `UpsertLead`, which creates or renames a lead and links the meetings it finds. Without it a
/// booking that found no lead could commit after a new lead's link had looked for it, and stay
/// unlinked. Taken before any meeting or lead lock by both (ingest holds only its inbox rows,
/// which `UpsertLead` never touches), so it closes no cycle; a hash collision only
/// makes two unrelated e-mails wait for each other. Shared guards never wait for one another and
/// `UpsertLead` holds one e-mail's, so their order does not matter. SQLite's one writer needs none.
pub async fn guard_emails(db: &impl ConnectionTrait, emails: &[&str], exclusive: bool) -> Result<(), DbErr> {
    if emails.is_empty() || db.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let function = if exclusive {
        "pg_advisory_xact_lock"
    } else {
        "pg_advisory_xact_lock_shared"
    };
    let sql = format!("SELECT {function}($1, hashtext(v.email)) FROM unnest($2::text[]) AS v(email)");
    let emails: Vec<String> = emails.iter().map(|email| email.to_string()).collect();
    let values: [sea_orm::Value; 2] = [EMAIL_GUARD_CLASS.into(), emails.into()];
    db.execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values))
        .await
        .map(|_| ())
}

/// The leads with these ids or e-mails, locked in id order. `FOR NO KEY UPDATE`, because a
/// concurrent transaction that wrote a meeting of one of them holds its KEY SHARE lock (the
/// foreign key) and may be waiting for this one's meeting insert: `FOR UPDATE` would wait for it
/// in turn, a deadlock PostgreSQL breaks only after a second.
pub async fn lock(db: &impl ConnectionTrait, ids: &[i64], emails: &[&str]) -> Result<Vec<Model>, DbErr> {
    if ids.is_empty() && emails.is_empty() {
        return Ok(Vec::new());
    }
    lock_query(db.get_database_backend(), ids, emails).all(db).await
}

pub(super) fn lock_query(backend: DbBackend, ids: &[i64], emails: &[&str]) -> Select<lead::Entity> {
    // Only the non-empty halves: an empty `IN ()` becomes a constant false, and `false OR
    // email IN (…)` is planned by SQLite as a scan of every lead.
    let mut wanted = Condition::any();
    if !ids.is_empty() {
        wanted = wanted.add(one_of(backend, Column::Id, ids.iter().copied()));
    }
    if !emails.is_empty() {
        wanted = wanted.add(one_of(
            backend,
            Column::Email,
            emails.iter().map(|value| value.to_string()),
        ));
    }
    let query = lead::Entity::find().filter(wanted).order_by_asc(Column::Id);
    match backend {
        DbBackend::Postgres => query.lock(LockType::NoKeyUpdate),
        _ => query,
    }
}

/// Every column but the id, in the order the inserts give their values.
const COLUMNS: [Column; 5] = [
    Column::Email,
    Column::Name,
    Column::Status,
    Column::CreatedAt,
    Column::UpdatedAt,
];

/// Creates leads (e-mail, name, status) and answers their ids by e-mail. A plain insert: a lead
/// created meanwhile by a concurrent batch is a unique violation, which retries this batch so
/// that it finds and locks that lead.
pub async fn insert(
    db: &impl ConnectionTrait,
    rows: &[(String, Option<String>, String)],
    now: DateTime<Utc>,
) -> Result<HashMap<String, i64>, DbErr> {
    if rows.is_empty() {
        return Ok(HashMap::new());
    }
    let values = rows.iter().map(|(email, name, status)| {
        [
            email.as_str().into(),
            name.as_deref().into(),
            status.as_str().into(),
            now.into(),
            now.into(),
        ]
    });
    let mut insert = RowsInsert::new(lead::Entity, COLUMNS, values, db.get_database_backend());
    insert.returning([Column::Id, Column::Email]);
    let mut ids = HashMap::with_capacity(rows.len());
    for row in db.query_all_raw(insert.statement()).await? {
        ids.insert(row.try_get::<String>("", "email")?, row.try_get::<i64>("", "id")?);
    }
    Ok(ids)
}

/// Sets the status of existing (locked) leads, in one statement.
pub async fn set_statuses(db: &impl ConnectionTrait, rows: &[Model]) -> Result<(), DbErr> {
    if rows.is_empty() {
        return Ok(());
    }
    let values = rows.iter().map(|row| {
        [
            row.id.into(),
            row.email.as_str().into(),
            row.name.as_deref().into(),
            row.status.as_str().into(),
            row.created_at.into(),
            row.updated_at.into(),
        ]
    });
    let mut columns = [Column::Id; 6];
    columns[1..].copy_from_slice(&COLUMNS);
    let mut insert = RowsInsert::new(lead::Entity, columns, values, db.get_database_backend());
    insert.on_conflict_update(Column::Id, [Column::Status, Column::UpdatedAt]);
    db.execute_raw(insert.statement()).await.map(|_| ())
}
