//! Leads, owned by other services, matched to meetings by e-mail.

use chrono::{DateTime, Utc};
use proto::v1::ChangeKind;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
    sea_query::{Expr, ExprTrait, Func, LockType},
};

use super::{
    Store,
    changes::{NewChange, new_change},
    db_time, lock_for_update,
    plan::Cause,
    sql,
};
use crate::{
    domain::{
        lead::{NEW_LEAD_STATUS, lead_status_for, normalize_email},
        meeting::MeetingStatus,
    },
    entity::{lead, meeting},
    error::{Record, ServiceError},
};

#[derive(Debug, Clone)]
pub enum LeadKey {
    Id(i64),
    Email(String),
}

impl std::fmt::Display for LeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => write!(f, "id {id}"),
            Self::Email(email) => write!(f, "email {email}"),
        }
    }
}

/// What a caller asks `UpsertLead` for, validated.
pub struct LeadChange {
    /// Update this lead; `None` creates or updates the lead with `email`.
    pub id: Option<i64>,
    pub email: String,
    pub name: Option<String>,
    pub status: Option<String>,
}

/// Errors a transaction body can end with: a database error (retried when transient) or an
/// answer for the caller.
enum Failure {
    Db(DbErr),
    Refused(ServiceError),
}

impl From<DbErr> for Failure {
    fn from(error: DbErr) -> Self {
        Self::Db(error)
    }
}

/// Checks the e-mail's form and returns it normalised.
pub fn valid_email(email: &str) -> Result<String, ServiceError> {
    let email = normalize_email(email);
    let well_formed = email.len() <= 320
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !email.chars().any(char::is_whitespace);
    if well_formed {
        Ok(email)
    } else {
        Err(ServiceError::invalid("email", "not an e-mail address"))
    }
}

impl Store {
    pub async fn lead(&self, key: &LeadKey) -> Result<Option<lead::Model>, ServiceError> {
        let query = match key {
            LeadKey::Id(id) => lead::Entity::find_by_id(*id),
            LeadKey::Email(email) => {
                lead::Entity::find().filter(lead::Column::Email.eq(normalize_email(email)))
            }
        };
        query.one(&self.db).await.map_err(ServiceError::from_db)
    }

    /// Creates or updates the lead; meetings with its e-mail and no lead join it, each a change
    /// in the feed caused by the call with `tracking_id`.
    pub async fn upsert_lead(
        &self,
        change: LeadChange,
        tracking_id: &str,
        now: DateTime<Utc>,
    ) -> Result<lead::Model, ServiceError> {
        let now = db_time(now);
        // Refusals travel inside Ok, so only database errors are retried.
        self.with_retries("upsert_lead", || async {
            match self.try_upsert_lead(&change, tracking_id, now).await {
                Ok(lead) => Ok(Ok(lead)),
                Err(Failure::Db(error)) => Err(error),
                Err(Failure::Refused(error)) => Ok(Err(error)),
            }
        })
        .await?
    }

    async fn try_upsert_lead(
        &self,
        change: &LeadChange,
        tracking_id: &str,
        now: DateTime<Utc>,
    ) -> Result<lead::Model, Failure> {
        let txn = self.begin_write().await?;
        let backend = txn.get_database_backend();
        // Before any row lock: a booking of this e-mail being ingested commits first, and is then
        // found below, or waits for this commit and then finds the lead.
        sql::leads::guard_emails(&txn, &[change.email.as_str()], true).await?;
        let by_email = lock_for_update(
            lead::Entity::find().filter(lead::Column::Email.eq(change.email.as_str())),
            backend,
        )
        .one(&txn)
        .await?;
        let existing = match change.id {
            Some(id) => {
                let Some(found) = lock_for_update(lead::Entity::find_by_id(id), backend)
                    .one(&txn)
                    .await?
                else {
                    return Err(Failure::Refused(ServiceError::not_found(
                        Record::Lead,
                        LeadKey::Id(id),
                    )));
                };
                if by_email.as_ref().is_some_and(|other| other.id != id) {
                    return Err(Failure::Refused(ServiceError::AlreadyExists {
                        field: "email",
                        problem: "another lead has this e-mail",
                    }));
                }
                Some(found)
            }
            None => by_email,
        };
        let lead = match existing {
            Some(found) => {
                let mut active: lead::ActiveModel = found.into();
                active.email = Set(change.email.clone());
                if let Some(name) = &change.name {
                    active.name = Set(Some(name.clone()));
                }
                if let Some(status) = &change.status {
                    active.status = Set(status.clone());
                }
                active.updated_at = Set(now);
                active.update(&txn).await?
            }
            None => {
                lead::ActiveModel {
                    email: Set(change.email.clone()),
                    name: Set(change.name.clone()),
                    status: Set(change
                        .status
                        .clone()
                        .unwrap_or_else(|| NEW_LEAD_STATUS.to_owned())),
                    created_at: Set(now),
                    updated_at: Set(now),
                    ..Default::default()
                }
                .insert(&txn)
                .await?
            }
        };
        let linked = link_meetings(&txn, &lead, tracking_id, now).await?;
        let lead = if !linked.is_empty()
            && change.status.is_none()
            && refresh_lead_status(&txn, lead.id, now).await?
        {
            lead::Entity::find_by_id(lead.id).one(&txn).await?.unwrap_or(lead)
        } else {
            lead
        };
        let latest_change = sql::changes::append(&txn, &linked).await?;
        txn.commit().await?;
        self.announce(latest_change);
        Ok(lead)
    }
}

/// Meetings booked before the lead existed join it now (locked in id order, like the ingest
/// batches lock theirs by invitee URI); answers their change rows.
async fn link_meetings(
    txn: &DatabaseTransaction,
    lead: &lead::Model,
    tracking_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<NewChange>, DbErr> {
    let unlinked = lock_for_update(
        meeting::Entity::find()
            .filter(meeting::Column::LeadId.is_null())
            .filter(Expr::expr(Func::lower(Expr::col(meeting::Column::InviteeEmail))).eq(lead.email.as_str()))
            .order_by_asc(meeting::Column::CalendlyInviteeId),
        txn.get_database_backend(),
    )
    .all(txn)
    .await?;
    if unlinked.is_empty() {
        return Ok(Vec::new());
    }
    meeting::Entity::update_many()
        .col_expr(meeting::Column::LeadId, Expr::value(lead.id))
        .col_expr(meeting::Column::UpdatedAt, Expr::value(now))
        .filter(meeting::Column::Id.is_in(unlinked.iter().map(|m| m.id)))
        .exec(txn)
        .await?;
    let cause = Cause {
        webhook_event_id: None,
        name: "UpsertLead",
        tracking_id: tracking_id.to_owned(),
    };
    Ok(unlinked
        .into_iter()
        .map(|mut row| {
            row.lead_id = Some(lead.id);
            row.updated_at = now;
            new_change(&row, ChangeKind::LeadLinked, &cause, now)
        })
        .collect())
}

/// Sets the lead's status from its latest meeting; true when it changed. (Ingest batches do the
/// same in memory, `super::plan`.)
async fn refresh_lead_status(
    txn: &DatabaseTransaction,
    lead_id: i64,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    // Locked like an ingest batch locks it (`super::sql::leads::lock`), so the latest-meeting read
    // below sees every committed change.
    let lead_row = lead::Entity::find_by_id(lead_id);
    let lead_row = match txn.get_database_backend() {
        DbBackend::Postgres => lead_row.lock(LockType::NoKeyUpdate),
        _ => lead_row,
    };
    let Some(lead) = lead_row.one(txn).await? else {
        return Ok(false);
    };
    let latest = meeting::Entity::find()
        .filter(meeting::Column::LeadId.eq(lead_id))
        .filter(meeting::Column::Status.ne(MeetingStatus::Rescheduled.as_str()))
        .order_by_desc(meeting::Column::LastEventAt)
        .order_by_desc(meeting::Column::CalendlyInviteeId)
        .one(txn)
        .await?;
    let Some(status) = latest
        .and_then(|m| MeetingStatus::parse(&m.status))
        .and_then(lead_status_for)
    else {
        return Ok(false);
    };
    if lead.status == status {
        return Ok(false);
    }
    let mut active: lead::ActiveModel = lead.into();
    active.status = Set(status.to_owned());
    active.updated_at = Set(now);
    active.update(txn).await?;
    Ok(true)
}
