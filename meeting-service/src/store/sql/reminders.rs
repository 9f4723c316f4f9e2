//! `meeting_reminders`: the reminders of a batch's meetings, locked, inserted and rewritten.

use sea_orm::{ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, Select, Value};

use super::{RowsInsert, one_of};
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

fn values(row: &Model) -> [Value; 12] {
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
    let insert = RowsInsert::new(
        meeting_reminder::Entity,
        COLUMNS,
        rows.iter().map(values),
        db.get_database_backend(),
    );
    db.execute_raw(insert.statement()).await.map(|_| ())
}

/// Rewrites existing (locked) reminders by id: their state, time and claim. A reminder already
/// sent is never changed, whatever the batch computed.
pub async fn rewrite(db: &impl ConnectionTrait, rows: &[Model]) -> Result<(), DbErr> {
    if rows.is_empty() {
        return Ok(());
    }
    let with_ids = rows.iter().map(|row| {
        let [a, b, c, d, e, f, g, h, i, j, k, l] = values(row);
        [row.id.into(), a, b, c, d, e, f, g, h, i, j, k, l]
    });
    let mut columns = [Column::Id; 13];
    columns[1..].copy_from_slice(&COLUMNS);
    let mut insert = RowsInsert::new(
        meeting_reminder::Entity,
        columns,
        with_ids,
        db.get_database_backend(),
    );
    insert.on_conflict_update(
        Column::Id,
        [
            Column::ScheduledTime,
            Column::State,
            Column::ClaimedBy,
            Column::ClaimToken,
            Column::ClaimExpiresAt,
            Column::UpdatedAt,
        ],
    );
    insert.push_sql(" WHERE ");
    insert.push_column(meeting_reminder::Entity, Column::State);
    insert.push_sql(" <> ");
    insert.push_value(ReminderState::Sent.as_str().into());
    db.execute_raw(insert.statement()).await.map(|_| ())
}
