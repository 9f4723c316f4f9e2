use sea_orm::entity::prelude::*;

/// One run of `calendly reconcile`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sync_runs")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub started_at: DateTimeUtc,
    pub finished_at: DateTimeUtc,
    /// A `SubscriptionState` label.
    pub subscription_state: String,
    pub subscription_uri: Option<String>,
    pub retry_started_at: Option<DateTimeUtc>,
    pub events_sent: i64,
    pub events_missed: i64,
    pub failures: i64,
    pub succeeded: bool,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
