use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "meeting_reminders")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub meeting_id: i64,
    pub reminder_type: String,
    pub scheduled_time: DateTimeUtc,
    /// The seed's flag; true exactly when `state` is `sent`.
    pub sent: bool,
    pub state: String,
    pub claimed_by: Option<String>,
    /// Identifies the current claim; required to complete or release it.
    pub claim_token: Option<String>,
    pub claim_expires_at: Option<DateTimeUtc>,
    pub sent_at: Option<DateTimeUtc>,
    pub attempts: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
