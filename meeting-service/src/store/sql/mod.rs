//! The ingest batch's statements, one module per table. Each is one statement for the whole
//! batch (multi-row inserts, upserts that rewrite rows by id, reads by a list of keys), built with
//! sea-query so the SQLite and PostgreSQL forms come from one definition; where the builder has no
//! form for a statement, both dialects are written side by side.
//!
//! Reads by a list of keys have one text whatever the list's length on PostgreSQL (`= ANY($1)`,
//! the list one array parameter), so each connection prepares each read once and PostgreSQL can
//! keep one plan for it; an `IN ($1, …, $n)` per length would be a statement of its own for every
//! batch size, each planned again on every run and competing for the statement cache. SQLite,
//! whose statements are planned by the library at no round trip, keeps the `IN` list.
//!
//! Rows are locked and written in one fixed key order (inbox by dedupe key, then the events'
//! e-mail guards, meetings by invitee URI, reminders and leads by id, and the change feed's order
//! lock last), so two batches, on one replica or several, wait for each other in one order and
//! never in a cycle.

pub mod changes;
pub mod inbox;
pub mod leads;
pub mod meetings;
pub mod reminders;

use sea_orm::{
    ColumnTrait, DbBackend, DbErr, QueryTrait, Statement,
    sea_query::{Expr, InsertStatement, Value, postgres_array::NotU8},
};

/// Keys that a batch reads by: its invitee URIs and dedupe keys, the leads and meetings they lead
/// to.
pub struct ReadKeys<'a> {
    pub invitee_uris: &'a [&'a str],
    pub dedupe_keys: &'a [&'a str],
    pub lead_ids: &'a [i64],
    pub emails: &'a [&'a str],
    pub meeting_ids: &'a [i64],
}

/// Every read an ingest batch makes, as it would run for `keys`, named: for checking their query
/// plans (`tests/tests/api/query_plans.rs`).
pub fn ingest_reads(backend: DbBackend, keys: &ReadKeys<'_>) -> Vec<(&'static str, Statement)> {
    vec![
        (
            "lock the batch's meetings",
            meetings::lock_query(backend, keys.invitee_uris).build(backend),
        ),
        (
            "the invitees' histories",
            inbox::histories_query(backend, keys.invitee_uris).build(backend),
        ),
        (
            "lock the leads",
            leads::lock_query(backend, keys.lead_ids, keys.emails).build(backend),
        ),
        // A batch of new bookings: no meeting yet, so no lead by id, only by e-mail.
        (
            "lock the leads by e-mail alone",
            leads::lock_query(backend, &[], keys.emails).build(backend),
        ),
        (
            "lock the leads by id alone",
            leads::lock_query(backend, keys.lead_ids, &[]).build(backend),
        ),
        (
            "each lead's latest other meeting",
            meetings::latest_per_lead_statement(backend, keys.lead_ids, keys.invitee_uris),
        ),
        (
            "lock the reminders",
            reminders::lock_query(backend, keys.meeting_ids).build(backend),
        ),
        (
            "duplicates' originals",
            inbox::by_keys_query(backend, keys.dedupe_keys).build(backend),
        ),
        (
            "duplicates' meetings",
            meetings::ids_query(backend, keys.invitee_uris).build(backend),
        ),
    ]
}

/// `column` is one of `values`: `= ANY(array)` on PostgreSQL (one text for any number of values),
/// `IN (…)` elsewhere. An empty list matches nothing on both.
fn one_of<C, V, I>(backend: DbBackend, column: C, values: I) -> Expr
where
    C: ColumnTrait,
    V: Into<Value> + NotU8,
    I: IntoIterator<Item = V>,
{
    match backend {
        DbBackend::Postgres => column.eq_any(values),
        _ => column.is_in(values),
    }
}

/// Adds one row to a multi-row insert.
fn add_row<const N: usize>(
    insert: &mut InsertStatement,
    values: [sea_orm::sea_query::SimpleExpr; N],
) -> Result<(), DbErr> {
    insert
        .values(values)
        .map(|_| ())
        .map_err(|e| DbErr::Custom(format!("building a multi-row insert: {e}")))
}

/// `n` placeholders from number `first` on, in the backend's syntax.
fn placeholders(backend: DbBackend, first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| match backend {
            DbBackend::Postgres => format!("${i}"),
            _ => "?".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_dialect() {
        assert_eq!(placeholders(DbBackend::Postgres, 3, 2), "$3, $4");
        assert_eq!(placeholders(DbBackend::Sqlite, 3, 2), "?, ?");
    }
}
