//! Read-only queries behind the gRPC API.

use chrono::{DateTime, Utc};
use proto::v1::Outcome;
use sea_orm::{
    ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, Func},
};

use super::Store;
use crate::{
    domain::meeting::MeetingStatus,
    entity::{meeting, meeting_reminder, webhook_event},
    error::ServiceError,
};

/// A meeting with its reminders.
#[derive(Debug, Clone)]
pub struct MeetingView {
    pub meeting: meeting::Model,
    pub reminders: Vec<meeting_reminder::Model>,
}

#[derive(Debug, Clone)]
pub enum MeetingKey {
    Id(i64),
    InviteeUri(String),
}

impl std::fmt::Display for MeetingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => write!(f, "id {id}"),
            Self::InviteeUri(uri) => write!(f, "calendly_invitee_uri {uri}"),
        }
    }
}

/// `ListMeetings` filters, validated.
#[derive(Debug, Default)]
pub struct MeetingFilter {
    pub lead_id: Option<i64>,
    /// Normalised.
    pub invitee_email: Option<String>,
    pub status: Option<MeetingStatus>,
    pub start_from: Option<DateTime<Utc>>,
    pub start_before: Option<DateTime<Utc>>,
}

pub struct MeetingPage {
    pub meetings: Vec<MeetingView>,
    /// The id to continue after, when there may be more.
    pub next_after_id: Option<i64>,
}

pub struct InboxPage {
    pub events: Vec<webhook_event::Model>,
    /// The id to continue after, when there may be more.
    pub next_after_id: Option<i64>,
}

impl Store {
    pub async fn meeting(&self, key: &MeetingKey) -> Result<Option<MeetingView>, ServiceError> {
        let query = match key {
            MeetingKey::Id(id) => meeting::Entity::find_by_id(*id),
            MeetingKey::InviteeUri(uri) => {
                meeting::Entity::find().filter(meeting::Column::CalendlyInviteeId.eq(uri))
            }
        };
        let Some(meeting) = query.one(&self.db).await.map_err(ServiceError::from_db)? else {
            return Ok(None);
        };
        let reminders = meeting_reminder::Entity::find()
            .filter(meeting_reminder::Column::MeetingId.eq(meeting.id))
            .order_by_asc(meeting_reminder::Column::ScheduledTime)
            .order_by_asc(meeting_reminder::Column::Id)
            .all(&self.db)
            .await
            .map_err(ServiceError::from_db)?;
        Ok(Some(MeetingView { meeting, reminders }))
    }

    /// Meetings matching `filter` in id order (stable while rows are added), `limit` at a time,
    /// continuing after `after_id`.
    pub async fn meetings(
        &self,
        filter: &MeetingFilter,
        limit: u64,
        after_id: Option<i64>,
        include_reminders: bool,
    ) -> Result<MeetingPage, ServiceError> {
        let mut query = meeting::Entity::find();
        if let Some(lead_id) = filter.lead_id {
            query = query.filter(meeting::Column::LeadId.eq(lead_id));
        }
        if let Some(email) = &filter.invitee_email {
            query = query
                .filter(Expr::expr(Func::lower(Expr::col(meeting::Column::InviteeEmail))).eq(email.as_str()));
        }
        if let Some(status) = filter.status {
            query = query.filter(meeting::Column::Status.eq(status.as_str()));
        }
        if let Some(from) = filter.start_from {
            query = query.filter(meeting::Column::StartTime.gte(from));
        }
        if let Some(before) = filter.start_before {
            query = query.filter(meeting::Column::StartTime.lt(before));
        }
        if let Some(after) = after_id {
            query = query.filter(meeting::Column::Id.gt(after));
        }
        let mut rows = query
            .order_by_asc(meeting::Column::Id)
            .limit(limit + 1)
            .all(&self.db)
            .await
            .map_err(ServiceError::from_db)?;
        let more = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_after_id = if more { rows.last().map(|m| m.id) } else { None };
        let mut reminders = if include_reminders && !rows.is_empty() {
            meeting_reminder::Entity::find()
                .filter(meeting_reminder::Column::MeetingId.is_in(rows.iter().map(|m| m.id)))
                .order_by_asc(meeting_reminder::Column::ScheduledTime)
                .order_by_asc(meeting_reminder::Column::Id)
                .all(&self.db)
                .await
                .map_err(ServiceError::from_db)?
        } else {
            Vec::new()
        };
        let meetings = rows
            .into_iter()
            .map(|meeting| {
                let (own, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut reminders)
                    .into_iter()
                    .partition(|r| r.meeting_id == meeting.id);
                reminders = rest;
                MeetingView {
                    meeting,
                    reminders: own,
                }
            })
            .collect();
        Ok(MeetingPage {
            meetings,
            next_after_id,
        })
    }

    /// Inbox rows newest first (by id), `limit` at a time, continuing below `before_id`.
    pub async fn webhook_events(
        &self,
        outcome: Option<Outcome>,
        limit: u64,
        before_id: Option<i64>,
    ) -> Result<InboxPage, ServiceError> {
        let mut query = webhook_event::Entity::find();
        if let Some(outcome) = outcome {
            query = query.filter(webhook_event::Column::Outcome.eq(outcome.label()));
        }
        if let Some(before) = before_id {
            query = query.filter(webhook_event::Column::Id.lt(before));
        }
        let mut events = query
            .order_by_desc(webhook_event::Column::Id)
            .limit(limit + 1)
            .all(&self.db)
            .await
            .map_err(ServiceError::from_db)?;
        let more = events.len() as u64 > limit;
        events.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_after_id = if more { events.last().map(|e| e.id) } else { None };
        Ok(InboxPage {
            events,
            next_after_id,
        })
    }
}
