//! `meetings`: the batch's meetings, locked, inserted and rewritten; each lead's latest other
//! meeting.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select, Statement,
    Value,
};

use super::{RowsInsert, one_of, placeholders};
use crate::{
    domain::meeting::{MeetingState, MeetingStatus},
    entity::meeting::{self, Column},
    store::{db_time, lock_for_update, plan::LatestMeeting},
};

/// The batch's existing meetings, locked in invitee URI order on PostgreSQL (the sort comes
/// before the lock, so rows are locked in that order).
pub async fn lock(db: &impl ConnectionTrait, invitee_uris: &[&str]) -> Result<Vec<meeting::Model>, DbErr> {
    lock_query(db.get_database_backend(), invitee_uris).all(db).await
}

pub(super) fn lock_query(backend: DbBackend, invitee_uris: &[&str]) -> Select<meeting::Entity> {
    lock_for_update(
        meeting::Entity::find()
            .filter(one_of(
                backend,
                Column::CalendlyInviteeId,
                invitee_uris.iter().map(|value| value.to_string()),
            ))
            .order_by_asc(Column::CalendlyInviteeId),
        backend,
    )
}

/// Every column but the id, in the order [`values`] gives them.
const COLUMNS: [Column; 21] = [
    Column::LeadId,
    Column::CalendlyEventId,
    Column::CalendlyInviteeId,
    Column::MeetingName,
    Column::StartTime,
    Column::EndTime,
    Column::Status,
    Column::InviteeEmail,
    Column::InviteeName,
    Column::InviteeTimezone,
    Column::CancelReason,
    Column::CanceledBy,
    Column::CancelerType,
    Column::CanceledAt,
    Column::RescheduledFromInviteeId,
    Column::RescheduledToInviteeId,
    Column::NoShow,
    Column::NoShowChangedAt,
    Column::LastEventAt,
    Column::CreatedAt,
    Column::UpdatedAt,
];

/// A meeting row to write: its state, lead and row times.
pub struct Row<'a> {
    pub id: Option<i64>,
    pub lead_id: Option<i64>,
    pub state: &'a MeetingState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn values(row: &Row<'_>) -> [Value; 21] {
    let state = row.state;
    let cancellation = state.cancellation.as_ref();
    [
        row.lead_id.into(),
        state.scheduled_event_uri.clone().into(),
        state.invitee_uri.clone().into(),
        state.meeting_name.clone().into(),
        state.start_time.map(db_time).into(),
        state.end_time.map(db_time).into(),
        state.status().as_str().into(),
        state.email.clone().into(),
        state.name.clone().into(),
        state.timezone.clone().into(),
        cancellation.and_then(|c| c.reason.clone()).into(),
        cancellation.and_then(|c| c.canceled_by.clone()).into(),
        cancellation.and_then(|c| c.canceler_type.clone()).into(),
        cancellation.map(|c| db_time(c.canceled_at)).into(),
        state.rescheduled_from.clone().into(),
        state.rescheduled_to.clone().into(),
        state.no_show.into(),
        state.no_show_changed_at.map(db_time).into(),
        db_time(state.last_event_at).into(),
        row.created_at.into(),
        row.updated_at.into(),
    ]
}

/// Inserts new meetings (in invitee URI order) and answers their ids by invitee URI. A plain
/// insert: a meeting inserted meanwhile by a concurrent batch is a unique violation, which
/// retries this batch so that it reads that meeting's events too.
pub async fn insert(db: &impl ConnectionTrait, rows: &[Row<'_>]) -> Result<HashMap<String, i64>, DbErr> {
    if rows.is_empty() {
        return Ok(HashMap::new());
    }
    let mut insert = RowsInsert::new(
        meeting::Entity,
        COLUMNS,
        rows.iter().map(values),
        db.get_database_backend(),
    );
    insert.returning([Column::Id, Column::CalendlyInviteeId]);
    let mut ids = HashMap::with_capacity(rows.len());
    for row in db.query_all_raw(insert.statement()).await? {
        ids.insert(
            row.try_get::<String>("", "calendly_invitee_id")?,
            row.try_get::<i64>("", "id")?,
        );
    }
    Ok(ids)
}

/// Rewrites existing (locked) meetings by id, in one statement: an upsert whose insert half never
/// applies, because every id exists.
pub async fn rewrite(db: &impl ConnectionTrait, rows: &[Row<'_>]) -> Result<(), DbErr> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut with_ids = Vec::with_capacity(rows.len());
    for row in rows {
        let id = row
            .id
            .ok_or_else(|| DbErr::Custom("a meeting to rewrite has no id".into()))?;
        let [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r, s, t, u] = values(row);
        with_ids.push([
            id.into(),
            a,
            b,
            c,
            d,
            e,
            f,
            g,
            h,
            i,
            j,
            k,
            l,
            m,
            n,
            o,
            p,
            q,
            r,
            s,
            t,
            u,
        ]);
    }
    let mut columns = [Column::Id; 22];
    columns[1..].copy_from_slice(&COLUMNS);
    let mut insert = RowsInsert::new(
        meeting::Entity,
        columns,
        with_ids.into_iter(),
        db.get_database_backend(),
    );
    // Everything but the id and the creation time.
    insert.on_conflict_update(
        Column::Id,
        COLUMNS
            .into_iter()
            .filter(|column| !matches!(column, Column::CreatedAt)),
    );
    db.execute_raw(insert.statement()).await.map(|_| ())
}

/// Per lead: its latest meeting that counts for its status (not rescheduled) among those not in
/// `except`, by Calendly time then invitee URI. One statement: one indexed `LIMIT 1` per lead.
pub async fn latest_per_lead(
    db: &impl ConnectionTrait,
    lead_ids: &[i64],
    except: &[&str],
) -> Result<HashMap<i64, LatestMeeting>, DbErr> {
    if lead_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = db
        .query_all_raw(latest_per_lead_statement(
            db.get_database_backend(),
            lead_ids,
            except,
        ))
        .await?;
    let mut latest = HashMap::with_capacity(rows.len());
    for row in rows {
        let status: String = row.try_get("", "status")?;
        let Some(status) = MeetingStatus::parse(&status) else {
            continue;
        };
        latest.insert(
            row.try_get::<i64>("", "lead_id")?,
            LatestMeeting {
                last_event_at: row.try_get("", "last_event_at")?,
                invitee_uri: row.try_get("", "calendly_invitee_id")?,
                status,
            },
        );
    }
    Ok(latest)
}

/// The builder has no `UNION ALL` of limited subqueries that SQLite accepts, nor a lateral join,
/// so this one is written out. On PostgreSQL one text for any number of leads: the lead ids and
/// the excluded URIs are two array parameters, each lead's `LIMIT 1` a lateral subquery.
pub(super) fn latest_per_lead_statement(backend: DbBackend, lead_ids: &[i64], except: &[&str]) -> Statement {
    if backend == DbBackend::Postgres {
        let sql = "SELECT latest.lead_id, latest.last_event_at, latest.calendly_invitee_id, latest.status \
                   FROM unnest($1::bigint[]) AS wanted(lead_id) \
                   CROSS JOIN LATERAL (SELECT lead_id, last_event_at, calendly_invitee_id, status FROM meetings \
                    WHERE lead_id = wanted.lead_id AND status <> $2 AND calendly_invitee_id <> ALL($3::text[]) \
                    ORDER BY last_event_at DESC, calendly_invitee_id DESC LIMIT 1) AS latest";
        let except: Vec<String> = except.iter().map(|uri| uri.to_string()).collect();
        let values: [sea_orm::Value; 3] = [
            lead_ids.to_vec().into(),
            MeetingStatus::Rescheduled.as_str().into(),
            except.into(),
        ];
        return Statement::from_sql_and_values(backend, sql, values);
    }
    let mut sql = String::new();
    let mut values: Vec<sea_orm::Value> = Vec::new();
    for (n, lead_id) in lead_ids.iter().enumerate() {
        if n > 0 {
            sql.push_str(" UNION ALL ");
        }
        let lead = placeholders(backend, values.len() + 1, 1);
        values.push((*lead_id).into());
        let rescheduled = placeholders(backend, values.len() + 1, 1);
        values.push(MeetingStatus::Rescheduled.as_str().into());
        let excluded = if except.is_empty() {
            String::new()
        } else {
            let list = placeholders(backend, values.len() + 1, except.len());
            values.extend(except.iter().map(|uri| sea_orm::Value::from(*uri)));
            format!(" AND calendly_invitee_id NOT IN ({list})")
        };
        sql.push_str(&format!(
            "SELECT lead_id, last_event_at, calendly_invitee_id, status FROM \
             (SELECT lead_id, last_event_at, calendly_invitee_id, status FROM meetings \
              WHERE lead_id = {lead} AND status <> {rescheduled}{excluded} \
              ORDER BY last_event_at DESC, calendly_invitee_id DESC LIMIT 1) AS latest_{n}"
        ));
    }
    Statement::from_sql_and_values(backend, sql, values)
}

/// The ids of the meetings of these invitees.
pub async fn ids(db: &impl ConnectionTrait, invitee_uris: &[&str]) -> Result<HashMap<String, i64>, DbErr> {
    let rows: Vec<(String, i64)> = ids_query(db.get_database_backend(), invitee_uris)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().collect())
}

pub(super) fn ids_query(backend: DbBackend, invitee_uris: &[&str]) -> Select<meeting::Entity> {
    meeting::Entity::find()
        .select_only()
        .column(Column::CalendlyInviteeId)
        .column(Column::Id)
        .filter(one_of(
            backend,
            Column::CalendlyInviteeId,
            invitee_uris.iter().map(|value| value.to_string()),
        ))
}
