use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tracking_id: String,
    pub event_type: String,
    #[sea_orm(unique)]
    pub dedupe_key: String,
    pub source: String,
    pub payload_uri: Option<String>,
    #[sea_orm(column_type = "Blob", nullable)]
    pub raw_body: Option<Vec<u8>>,
    #[sea_orm(column_type = "Blob")]
    pub event_proto: Vec<u8>,
    pub received_at: DateTimeUtc,
    pub processed_at: Option<DateTimeUtc>,
    pub outcome: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    pub attempts: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
