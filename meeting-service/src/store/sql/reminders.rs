//! `meeting_reminders`: the reminders of a batch's meetings, locked, inserted and rewritten.

use sea_orm::{
    ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, Select,
    sea_query::{Expr, ExprTrait, OnConflict, Query, SimpleExpr},
};

use super::{add_row, one_of};
use crate::{
    domain::reminders::ReminderState,
    entity::meeting_reminder::{self, Column, Model},
    store::lock_for_update,
};

/// The reminders of these meetings, locked in id order on PostgreSQL, so a dispatcher cannot
/// complete one between this read and the batch's write (claims skip locked rows).
pub async fn lock(db: &impl ConnectionTrait, meeting_ids: &[i64]) -> Result<Vec<Model>, DbErr> {
    if meeting_ids.is_empty() {
        return Ok(Vec::new());
    }
    lock_query(db.get_database_backend(), meeting_ids).all(db).await
}

pub(super) fn lock_query(backend: DbBackend, meeting_ids: &[i64]) -> Select<meeting_reminder::Entity> {
    lock_for_update(
        meeting_reminder::Entity::find()
            .filter(one_of(backend, Column::MeetingId, meeting_ids.iter().copied()))
            .order_by_asc(Column::Id),
        backend,
    )
}

const COLUMNS: [Column; 12] = [
    Column::MeetingId,
    Column::ReminderType,
    Column::ScheduledTime,
    Column::Sent,
    Column::State,
    Column::ClaimedBy,
    Column::ClaimToken,
    Column::ClaimExpiresAt,
    Column::SentAt,
    Column::Attempts,
    Column::CreatedAt,
    Column::UpdatedAt,
];

fn values(row: &Model) -> [SimpleExpr; 12] {
    [
        row.meeting_id.into(),
        row.reminder_type.clone().into(),
        row.scheduled_time.into(),
        row.sent.into(),
        row.state.clone().into(),
        row.claimed_by.clone().into(),
        row.claim_token.clone().into(),
        row.claim_expires_at.into(),
        row.sent_at.into(),
        row.attempts.into(),
        row.created_at.into(),
        row.updated_at.into(),
    ]
}

/// Inserts new reminders (their `id` is ignored).
pub async fn insert(db: &impl ConnectionTrait, rows: &[Model]) -> Result<(), DbErr> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = Query::insert();
    insert.into_table(meeting_reminder::Entity).columns(COLUMNS);
    for row in rows {
        add_row(&mut insert, values(row))?;
    }
    db.execute(&insert).await.map(|_| ())
}

/// Rewrites existing (locked) reminders by id: their state, time and claim. A reminder already
/// sent is never changed, whatever the batch computed.
pub async fn rewrite(db: &impl ConnectionTrait, rows: &[Model]) -> Result<(), DbErr> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = Query::insert();
    insert
        .into_table(meeting_reminder::Entity)
        .columns(std::iter::once(Column::Id).chain(COLUMNS));
    for row in rows {
        let [a, b, c, d, e, f, g, h, i, j, k, l] = values(row);
        add_row(&mut insert, [row.id.into(), a, b, c, d, e, f, g, h, i, j, k, l])?;
    }
    insert.on_conflict(
        OnConflict::column(Column::Id)
            .update_columns([
                Column::ScheduledTime,
                Column::State,
                Column::ClaimedBy,
                Column::ClaimToken,
                Column::ClaimExpiresAt,
                Column::UpdatedAt,
            ])
            .action_and_where(
                Expr::col((meeting_reminder::Entity, Column::State)).ne(ReminderState::Sent.as_str()),
            )
            .to_owned(),
    );
    db.execute(&insert).await.map(|_| ())
}
