//! Read-only queries behind the gRPC API.

use proto::v1::Outcome;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{
    Store,
    ingest::{outcome_name, parse_outcome},
};
use crate::{
    entity::{meeting, meeting_reminder, webhook_event},
    error::ServiceError,
};

/// A meeting with its reminders.
#[derive(Debug, Clone)]
pub struct MeetingView {
    pub meeting: meeting::Model,
    pub reminders: Vec<meeting_reminder::Model>,
}

pub enum MeetingKey<'a> {
    Id(i64),
    InviteeUri(&'a str),
}

pub struct InboxPage {
    pub events: Vec<webhook_event::Model>,
    /// The id to continue after, when there may be more.
    pub next_after_id: Option<i64>,
}

impl Store {
    pub async fn meeting(&self, key: MeetingKey<'_>) -> Result<Option<MeetingView>, ServiceError> {
        let query = match key {
            MeetingKey::Id(id) => meeting::Entity::find_by_id(id),
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

    /// Inbox rows newest first (by id), `limit` at a time, continuing below `before_id`.
    pub async fn webhook_events(
        &self,
        outcome: Option<Outcome>,
        limit: u64,
        before_id: Option<i64>,
    ) -> Result<InboxPage, ServiceError> {
        let mut query = webhook_event::Entity::find();
        if let Some(outcome) = outcome {
            query = query.filter(webhook_event::Column::Outcome.eq(outcome_name(outcome)));
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

pub(crate) fn outcome_of(row: &webhook_event::Model) -> Outcome {
    parse_outcome(&row.outcome)
}
