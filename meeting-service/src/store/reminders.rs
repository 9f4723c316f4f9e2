//! Handing reminders to dispatchers: claims with a lease, completion, release.
//!
//! A claim is one conditional `UPDATE … WHERE id IN (…) AND <still due>`; the rows it changed
//! carry the claim's token and are exactly what this caller got. On PostgreSQL the candidates are
//! first selected `FOR UPDATE SKIP LOCKED`, so concurrent dispatchers take disjoint rows instead of
//! queueing behind each other; on SQLite (no row locks) the condition in the `UPDATE` alone keeps
//! two claimers from taking one row, because writers are serialised.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{Expr, ExprTrait, LockBehavior, LockType, Query},
};

use super::{Store, db_time};
use crate::{
    domain::{meeting::MeetingStatus, reminders::ReminderState},
    entity::{meeting, meeting_reminder},
    error::{Record, ServiceError},
};

/// A reminder handed to a dispatcher, with its meeting.
pub struct ClaimedReminder {
    pub reminder: meeting_reminder::Model,
    pub meeting: meeting::Model,
}

/// Due now: pending and its time has come, or claimed by someone whose lease ran out; and its
/// meeting is still scheduled.
fn due(now: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(
            Condition::any()
                .add(
                    Condition::all()
                        .add(meeting_reminder::Column::State.eq(ReminderState::Pending.as_str()))
                        .add(meeting_reminder::Column::ScheduledTime.lte(now)),
                )
                .add(
                    Condition::all()
                        .add(meeting_reminder::Column::State.eq(ReminderState::Claimed.as_str()))
                        .add(meeting_reminder::Column::ClaimExpiresAt.lte(now)),
                ),
        )
        .add(
            meeting_reminder::Column::MeetingId.in_subquery(
                Query::select()
                    .column(meeting::Column::Id)
                    .from(meeting::Entity)
                    .and_where(meeting::Column::Status.eq(MeetingStatus::Scheduled.as_str()))
                    .to_owned(),
            ),
        )
}

impl Store {
    pub async fn claim_due_reminders(
        &self,
        limit: u64,
        lease: Duration,
        claimant: &str,
        now: DateTime<Utc>,
    ) -> Result<(String, Vec<ClaimedReminder>), ServiceError> {
        let now = db_time(now);
        let expires = db_time(now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX));
        let token = uuid::Uuid::new_v4().to_string();
        let claimed = self
            .with_retries("claim_reminders", || async {
                let txn = self.begin_write().await?;
                let mut candidates = meeting_reminder::Entity::find()
                    .select_only()
                    .column(meeting_reminder::Column::Id)
                    .filter(due(now))
                    .order_by_asc(meeting_reminder::Column::ScheduledTime)
                    .order_by_asc(meeting_reminder::Column::Id)
                    .limit(limit);
                if txn.get_database_backend() == DbBackend::Postgres {
                    candidates = candidates.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
                }
                let ids: Vec<i64> = candidates.into_tuple().all(&txn).await?;
                if ids.is_empty() {
                    txn.commit().await?;
                    return Ok(Vec::new());
                }
                meeting_reminder::Entity::update_many()
                    .col_expr(
                        meeting_reminder::Column::State,
                        Expr::value(ReminderState::Claimed.as_str()),
                    )
                    .col_expr(meeting_reminder::Column::ClaimedBy, Expr::value(claimant))
                    .col_expr(meeting_reminder::Column::ClaimToken, Expr::value(token.as_str()))
                    .col_expr(meeting_reminder::Column::ClaimExpiresAt, Expr::value(expires))
                    .col_expr(
                        meeting_reminder::Column::Attempts,
                        Expr::col(meeting_reminder::Column::Attempts).add(1),
                    )
                    .col_expr(meeting_reminder::Column::UpdatedAt, Expr::value(now))
                    .filter(meeting_reminder::Column::Id.is_in(ids))
                    .filter(due(now))
                    .exec(&txn)
                    .await?;
                let reminders = meeting_reminder::Entity::find()
                    .filter(meeting_reminder::Column::ClaimToken.eq(token.as_str()))
                    .order_by_asc(meeting_reminder::Column::ScheduledTime)
                    .order_by_asc(meeting_reminder::Column::Id)
                    .all(&txn)
                    .await?;
                let meetings = meeting::Entity::find()
                    .filter(meeting::Column::Id.is_in(reminders.iter().map(|r| r.meeting_id)))
                    .all(&txn)
                    .await?;
                txn.commit().await?;
                Ok(reminders
                    .into_iter()
                    .filter_map(|reminder| {
                        let meeting = meetings.iter().find(|m| m.id == reminder.meeting_id)?.clone();
                        Some(ClaimedReminder { reminder, meeting })
                    })
                    .collect())
            })
            .await?;
        metrics::counter!("calendly_reminders_claimed_total").increment(claimed.len() as u64);
        Ok((token, claimed))
    }

    /// Marks the reminder sent, if `claim_token` holds its current claim.
    pub async fn complete_reminder(
        &self,
        id: i64,
        claim_token: &str,
        now: DateTime<Utc>,
    ) -> Result<meeting_reminder::Model, ServiceError> {
        let now = db_time(now);
        let update = meeting_reminder::Entity::update_many()
            .col_expr(
                meeting_reminder::Column::State,
                Expr::value(ReminderState::Sent.as_str()),
            )
            .col_expr(meeting_reminder::Column::Sent, Expr::value(true))
            .col_expr(meeting_reminder::Column::SentAt, Expr::value(now));
        let reminder = self.finish_claim(id, claim_token, now, update).await?;
        metrics::counter!("calendly_reminders_sent_total").increment(1);
        Ok(reminder)
    }

    /// Gives the reminder back to be claimed again, if `claim_token` holds its current claim.
    pub async fn release_reminder(
        &self,
        id: i64,
        claim_token: &str,
        now: DateTime<Utc>,
    ) -> Result<meeting_reminder::Model, ServiceError> {
        let update = meeting_reminder::Entity::update_many()
            .col_expr(
                meeting_reminder::Column::State,
                Expr::value(ReminderState::Pending.as_str()),
            )
            .col_expr(
                meeting_reminder::Column::ClaimedBy,
                Expr::value(Option::<String>::None),
            );
        self.finish_claim(id, claim_token, db_time(now), update).await
    }

    /// Applies `update` to the reminder and ends its claim, if `claim_token` holds it.
    async fn finish_claim(
        &self,
        id: i64,
        claim_token: &str,
        now: DateTime<Utc>,
        update: sea_orm::UpdateMany<meeting_reminder::Entity>,
    ) -> Result<meeting_reminder::Model, ServiceError> {
        let update = update
            .col_expr(
                meeting_reminder::Column::ClaimToken,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                meeting_reminder::Column::ClaimExpiresAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(meeting_reminder::Column::UpdatedAt, Expr::value(now));
        let changed = self
            .with_retries("finish_claim", || {
                update
                    .clone()
                    .filter(meeting_reminder::Column::Id.eq(id))
                    .filter(meeting_reminder::Column::State.eq(ReminderState::Claimed.as_str()))
                    .filter(meeting_reminder::Column::ClaimToken.eq(claim_token))
                    .exec(&self.db)
            })
            .await?
            .rows_affected;
        let row = meeting_reminder::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .map_err(ServiceError::from_db)?
            .ok_or_else(|| ServiceError::not_found(Record::Reminder, format!("id {id}")))?;
        if changed == 1 {
            Ok(row)
        } else {
            Err(ServiceError::ClaimNotHeld { id, state: row.state })
        }
    }

    /// Pending reminders whose time passed more than `grace` ago: dispatchers are behind.
    pub async fn overdue_reminders(
        &self,
        grace: Duration,
        now: DateTime<Utc>,
    ) -> Result<u64, sea_orm::DbErr> {
        let cutoff = now - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        meeting_reminder::Entity::find()
            .filter(meeting_reminder::Column::State.eq(ReminderState::Pending.as_str()))
            .filter(meeting_reminder::Column::ScheduledTime.lt(cutoff))
            .count(&self.db)
            .await
    }
}
