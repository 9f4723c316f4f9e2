//! `meeting_changes`: the change feed's rows, appended by the transaction that made the changes,
//! and read by id.
//!
//! A reader that has seen id N must never later find a committed row below N. Ids come from a
//! sequence, which hands them out at insert time, not at commit: two transactions could commit in
//! the other order. So on PostgreSQL every transaction that appends takes one transaction-level
//! advisory lock first, held until its commit: ids are then taken and made visible one
//! transaction after another, on any number of replicas. It is the transaction's last lock (after
//! every row lock), so it never closes a cycle, and it is held only from the append to the commit.
//! SQLite's one write lock already does the same.
//!
//! On PostgreSQL the lock, the insert and the notification are one statement: the lock is held
//! from that statement to the commit, the shortest it can be.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Select, Statement, Value,
};

use super::{RowsInsert, placeholders};
use crate::entity::{
    change_feed_horizon,
    meeting_change::{self, Column},
};

/// The advisory lock key that orders change ids (an arbitrary constant: "mtgchnge").
pub const ORDER_LOCK_KEY: i64 = 0x6d74_6763_686e_6765;

/// The channel on which PostgreSQL announces newly committed changes to every replica.
pub const NOTIFY_CHANNEL: &str = "meeting_changes";

/// A change row to append.
pub struct NewChange {
    pub meeting_id: i64,
    pub lead_id: Option<i64>,
    pub kind: &'static str,
    pub meeting: Vec<u8>,
    pub webhook_event_id: Option<i64>,
    pub cause: &'static str,
    pub tracking_id: String,
    pub committed_at: DateTime<Utc>,
}

/// Appends `rows` in their order and answers the highest id given, `None` for no rows. On
/// PostgreSQL, also announces it: the notification is delivered at commit, and only then.
pub async fn append(db: &impl ConnectionTrait, rows: &[NewChange]) -> Result<Option<i64>, DbErr> {
    if rows.is_empty() {
        return Ok(None);
    }
    if db.get_database_backend() == DbBackend::Postgres {
        return append_ordered(db, rows).await;
    }
    let mut insert = RowsInsert::new(
        meeting_change::Entity,
        COLUMNS,
        rows.iter().map(NewChange::values),
        DbBackend::Sqlite,
    );
    insert.returning([Column::Id]);
    let mut latest = None;
    for row in db.query_all_raw(insert.statement()).await? {
        let id: i64 = row.try_get("", "id")?;
        latest = latest.max(Some(id));
    }
    Ok(latest)
}

/// PostgreSQL's append: the order lock, the insert and the notification in one round trip. The
/// insert reads its rows through a join with the lock's result, so no id is drawn from the
/// sequence before the lock is held.
async fn append_ordered(db: &impl ConnectionTrait, rows: &[NewChange]) -> Result<Option<i64>, DbErr> {
    const FIRST_ROW_PLACEHOLDER: usize = 3;
    let columns = "meeting_id, lead_id, kind, meeting, webhook_event_id, cause, tracking_id, committed_at";
    let width = COLUMNS.len();
    let tuples: Vec<String> = (0..rows.len())
        .map(|i| {
            let first = FIRST_ROW_PLACEHOLDER + i * width;
            format!("({})", placeholders(DbBackend::Postgres, first, width))
        })
        .collect();
    let sql = format!(
        "WITH ordered AS (SELECT pg_advisory_xact_lock($1)), \
         appended AS (INSERT INTO meeting_changes ({columns}) \
             SELECT v.* FROM ordered CROSS JOIN (VALUES {}) AS v({columns}) RETURNING id) \
         SELECT latest, pg_notify($2, latest::text)::text AS notified \
         FROM (SELECT max(id) AS latest FROM appended) AS head",
        tuples.join(", ")
    );
    let mut values: Vec<Value> = Vec::with_capacity(2 + rows.len() * width);
    values.push(ORDER_LOCK_KEY.into());
    values.push(NOTIFY_CHANNEL.into());
    for row in rows {
        values.extend(row.values());
    }
    let answer = db
        .query_one_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values))
        .await?;
    match answer {
        Some(row) => row.try_get("", "latest"),
        None => Ok(None),
    }
}

const COLUMNS: [Column; 8] = [
    Column::MeetingId,
    Column::LeadId,
    Column::Kind,
    Column::Meeting,
    Column::WebhookEventId,
    Column::Cause,
    Column::TrackingId,
    Column::CommittedAt,
];

impl NewChange {
    /// The row's values, in [`COLUMNS`] order.
    fn values(&self) -> [Value; 8] {
        [
            self.meeting_id.into(),
            self.lead_id.into(),
            self.kind.into(),
            self.meeting.clone().into(),
            self.webhook_event_id.into(),
            self.cause.into(),
            self.tracking_id.clone().into(),
            self.committed_at.into(),
        ]
    }
}

/// What a stream reads: kinds (labels; empty for all) and a lead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeFilter {
    pub kinds: Vec<&'static str>,
    pub lead_id: Option<i64>,
}

/// Up to `limit` rows after `after` and up to `through`, matching `filter`, in id order.
pub fn after_query(
    after: i64,
    through: i64,
    filter: &ChangeFilter,
    limit: u64,
) -> Select<meeting_change::Entity> {
    let mut query = meeting_change::Entity::find()
        .filter(Column::Id.gt(after))
        .filter(Column::Id.lte(through));
    if !filter.kinds.is_empty() {
        query = query.filter(Column::Kind.is_in(filter.kinds.iter().copied()));
    }
    if let Some(lead_id) = filter.lead_id {
        query = query.filter(Column::LeadId.eq(lead_id));
    }
    query.order_by_asc(Column::Id).limit(limit)
}

/// The highest id committed, or 0 when there is none.
pub async fn latest(db: &impl ConnectionTrait) -> Result<i64, DbErr> {
    let latest: Option<Option<i64>> = meeting_change::Entity::find()
        .select_only()
        .column_as(Column::Id.max(), "latest")
        .into_tuple()
        .one(db)
        .await?;
    Ok(latest.flatten().unwrap_or(0))
}

/// The highest id retention removed: a cursor below it may have missed rows.
pub async fn horizon(db: &impl ConnectionTrait) -> Result<i64, DbErr> {
    let row = change_feed_horizon::Entity::find_by_id(1).one(db).await?;
    row.map(|row| row.pruned_through)
        .ok_or_else(|| DbErr::RecordNotFound("the change feed's horizon row is missing".into()))
}
