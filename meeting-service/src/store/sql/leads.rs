//! `leads`: the leads a batch touches, locked, created and given their new status.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Select,
    sea_query::{IntoColumnRef, LockType, OnConflict, Query, ReturningClause},
};

use super::add_row;
use crate::entity::lead::{self, Column, Model};

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
        wanted = wanted.add(Column::Id.is_in(ids.iter().copied()));
    }
    if !emails.is_empty() {
        wanted = wanted.add(Column::Email.is_in(emails.iter().copied()));
    }
    let query = lead::Entity::find().filter(wanted).order_by_asc(Column::Id);
    match backend {
        DbBackend::Postgres => query.lock(LockType::NoKeyUpdate),
        _ => query,
    }
}

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
    let mut insert = Query::insert();
    insert.into_table(lead::Entity).columns([
        Column::Email,
        Column::Name,
        Column::Status,
        Column::CreatedAt,
        Column::UpdatedAt,
    ]);
    for (email, name, status) in rows {
        add_row(
            &mut insert,
            [
                email.clone().into(),
                name.clone().into(),
                status.clone().into(),
                now.into(),
                now.into(),
            ],
        )?;
    }
    insert.returning(ReturningClause::Columns(vec![
        Column::Id.into_column_ref(),
        Column::Email.into_column_ref(),
    ]));
    let mut ids = HashMap::with_capacity(rows.len());
    for row in db.query_all(&insert).await? {
        ids.insert(row.try_get::<String>("", "email")?, row.try_get::<i64>("", "id")?);
    }
    Ok(ids)
}

/// Sets the status of existing (locked) leads, in one statement.
pub async fn set_statuses(db: &impl ConnectionTrait, rows: &[Model]) -> Result<(), DbErr> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = Query::insert();
    insert.into_table(lead::Entity).columns([
        Column::Id,
        Column::Email,
        Column::Name,
        Column::Status,
        Column::CreatedAt,
        Column::UpdatedAt,
    ]);
    for row in rows {
        add_row(
            &mut insert,
            [
                row.id.into(),
                row.email.clone().into(),
                row.name.clone().into(),
                row.status.clone().into(),
                row.created_at.into(),
                row.updated_at.into(),
            ],
        )?;
    }
    insert.on_conflict(
        OnConflict::column(Column::Id)
            .update_columns([Column::Status, Column::UpdatedAt])
            .to_owned(),
    );
    db.execute(&insert).await.map(|_| ())
}
