//! `webhook_events`: the inbox rows of a batch, and the stored history of its invitees.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use prost::Message;
use proto::v1::{CalendlyEvent, Outcome};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QuerySelect, Select,
};

use super::{RowsInsert, one_of};
use crate::{
    domain::event::{Disposition, InviteeEvent, classify},
    entity::webhook_event::{self, Column},
};

/// One inbox row to write.
pub struct NewRow<'a> {
    pub tracking_id: &'a str,
    pub event_type: String,
    pub dedupe_key: &'a str,
    pub source: &'static str,
    pub payload_uri: Option<String>,
    pub raw_body: &'a [u8],
    pub event_proto: Vec<u8>,
    pub received_at: DateTime<Utc>,
    pub outcome: Outcome,
    pub error: Option<String>,
}

/// Inserts the rows whose dedupe key is not stored yet and answers the ids of those inserted, by
/// key. `rows` must be in dedupe key order, with no key twice. On PostgreSQL a key being inserted
/// by a concurrent transaction waits for it: inserted there, it is a conflict here.
pub async fn insert_new(
    db: &impl ConnectionTrait,
    rows: Vec<NewRow<'_>>,
) -> Result<HashMap<String, i64>, DbErr> {
    if rows.is_empty() {
        return Ok(HashMap::new());
    }
    let count = rows.len();
    // The rows are the statement's own: what they own (the protobuf above all) moves into it.
    let values = rows.into_iter().map(|row| {
        [
            row.tracking_id.into(),
            row.event_type.into(),
            row.dedupe_key.into(),
            row.source.into(),
            row.payload_uri.into(),
            row.raw_body.to_vec().into(),
            row.event_proto.into(),
            row.received_at.into(),
            Some(row.received_at).into(),
            row.outcome.label().into(),
            row.error.into(),
            1i32.into(),
        ]
    });
    let mut insert = RowsInsert::new(
        webhook_event::Entity,
        [
            Column::TrackingId,
            Column::EventType,
            Column::DedupeKey,
            Column::Source,
            Column::PayloadUri,
            Column::RawBody,
            Column::EventProto,
            Column::ReceivedAt,
            Column::ProcessedAt,
            Column::Outcome,
            Column::Error,
            Column::Attempts,
        ],
        values,
        db.get_database_backend(),
    );
    insert.on_conflict_do_nothing(Column::DedupeKey);
    insert.returning([Column::Id, Column::DedupeKey]);
    let mut inserted = HashMap::with_capacity(count);
    for row in db.query_all_raw(insert.statement()).await? {
        inserted.insert(
            row.try_get::<String>("", "dedupe_key")?,
            row.try_get::<i64>("", "id")?,
        );
    }
    Ok(inserted)
}

/// Every applied event of each of `invitee_uris` in the inbox, with its inbox key, as the rules
/// take them; rows whose key is in `except` (the batch's own) are left out. The stored protobuf
/// is the event as received, so the history needs no JSON parser.
pub async fn histories(
    db: &impl ConnectionTrait,
    invitee_uris: &[&str],
    except: &HashSet<&str>,
) -> Result<HashMap<String, Vec<(InviteeEvent, String)>>, DbErr> {
    /// Payload URI, dedupe key, protobuf, received at.
    type HistoryRow = (Option<String>, String, Vec<u8>, DateTime<Utc>);
    let rows: Vec<HistoryRow> = histories_query(db.get_database_backend(), invitee_uris)
        .into_tuple()
        .all(db)
        .await?;
    let mut histories: HashMap<String, Vec<(InviteeEvent, String)>> = HashMap::new();
    for (uri, key, proto, received_at) in rows {
        if except.contains(key.as_str()) {
            continue;
        }
        let event = CalendlyEvent::decode(proto.as_slice())
            .map_err(|e| DbErr::Custom(format!("stored event {key} does not decode: {e}")))?;
        // An event stored as processed that no longer classifies as applicable (rules changed
        // since) is left out rather than guessed at.
        if let (Some(uri), Disposition::Apply(event)) = (uri, classify(&event, received_at)) {
            histories.entry(uri).or_default().push((*event, key));
        }
    }
    Ok(histories)
}

pub(super) fn histories_query(backend: DbBackend, invitee_uris: &[&str]) -> Select<webhook_event::Entity> {
    webhook_event::Entity::find()
        .select_only()
        .column(Column::PayloadUri)
        .column(Column::DedupeKey)
        .column(Column::EventProto)
        .column(Column::ReceivedAt)
        .filter(one_of(
            backend,
            Column::PayloadUri,
            invitee_uris.iter().map(|value| value.to_string()),
        ))
        .filter(Column::Outcome.eq(Outcome::Processed.label()))
}

/// The stored rows with these keys: key → (id, outcome, payload URI).
pub async fn by_keys(
    db: &impl ConnectionTrait,
    keys: &[&str],
) -> Result<HashMap<String, (i64, String, Option<String>)>, DbErr> {
    let rows: Vec<(String, i64, String, Option<String>)> = by_keys_query(db.get_database_backend(), keys)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(key, id, outcome, uri)| (key, (id, outcome, uri)))
        .collect())
}

pub(super) fn by_keys_query(backend: DbBackend, keys: &[&str]) -> Select<webhook_event::Entity> {
    webhook_event::Entity::find()
        .select_only()
        .column(Column::DedupeKey)
        .column(Column::Id)
        .column(Column::Outcome)
        .column(Column::PayloadUri)
        .filter(one_of(
            backend,
            Column::DedupeKey,
            keys.iter().map(|value| value.to_string()),
        ))
}
