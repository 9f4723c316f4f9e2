use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "meetings")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub lead_id: Option<i64>,
    /// The scheduled event URI (shared by a group event's invitees).
    pub calendly_event_id: String,
    /// The invitee URI: the meeting's identity.
    #[sea_orm(unique)]
    pub calendly_invitee_id: String,
    pub meeting_name: Option<String>,
    pub start_time: Option<DateTimeUtc>,
    pub end_time: Option<DateTimeUtc>,
    pub status: String,
    pub invitee_email: String,
    pub invitee_name: String,
    pub invitee_timezone: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub cancel_reason: Option<String>,
    pub canceled_by: Option<String>,
    pub canceler_type: Option<String>,
    pub canceled_at: Option<DateTimeUtc>,
    pub rescheduled_from_invitee_id: Option<String>,
    pub rescheduled_to_invitee_id: Option<String>,
    pub no_show: bool,
    pub no_show_changed_at: Option<DateTimeUtc>,
    pub last_event_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
