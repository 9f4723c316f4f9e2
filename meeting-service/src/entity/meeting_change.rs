use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "meeting_changes")]
pub struct Model {
    /// Increases in commit order (`store::changes`).
    #[sea_orm(primary_key)]
    pub id: i64,
    pub meeting_id: i64,
    pub lead_id: Option<i64>,
    /// A `ChangeKind` label.
    pub kind: String,
    /// The meeting after the change: an encoded `calendly.meetings.v1.Meeting`.
    #[sea_orm(column_type = "Blob")]
    pub meeting: Vec<u8>,
    pub webhook_event_id: Option<i64>,
    pub cause: String,
    pub tracking_id: String,
    pub committed_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
