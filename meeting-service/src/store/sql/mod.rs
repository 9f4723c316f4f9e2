//! The ingest batch's statements, one module per table. Each is one statement for the whole
//! batch (multi-row inserts, upserts that rewrite rows by id, reads by a list of keys), and each
//! has one definition for SQLite and PostgreSQL: reads are built with sea-query; inserts and
//! upserts, which carry the batch's bodies, are written as text by `RowsInsert` in clauses both
//! dialects read alike; where a statement has no common form, both are written side by side.
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
    ColumnTrait, DbBackend, EntityName, IdenStatic, QueryTrait, Statement,
    sea_query::{Expr, Value, postgres_array::NotU8},
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

/// A multi-row `INSERT`, written as text with its values moved in. sea-query's builder makes an
/// expression per value and renders a clone of each (a batch's bodies and protobufs among them);
/// on the ingest path that was several percent of the service's CPU (BENCHMARKS.md, "Multi-row
/// inserts written as text"). Identifiers are quoted, which both dialects read alike.
struct RowsInsert {
    backend: DbBackend,
    sql: String,
    values: Vec<Value>,
}

impl RowsInsert {
    /// `INSERT INTO table (columns) VALUES` and one tuple per row, in order.
    fn new<C: IdenStatic, const N: usize>(
        table: impl EntityName,
        columns: [C; N],
        rows: impl ExactSizeIterator<Item = [Value; N]>,
        backend: DbBackend,
    ) -> Self {
        let mut insert = Self {
            backend,
            sql: String::with_capacity(64 + N * 24 + rows.len() * N * 5),
            values: Vec::with_capacity(rows.len() * N),
        };
        insert.sql.push_str("INSERT INTO ");
        push_ident(&mut insert.sql, table.table_name());
        insert.sql.push_str(" (");
        push_idents(&mut insert.sql, columns.iter().map(IdenStatic::as_str));
        insert.sql.push_str(") VALUES ");
        for (index, row) in rows.enumerate() {
            insert.sql.push_str(if index == 0 { "(" } else { ", (" });
            for (column, value) in row.into_iter().enumerate() {
                if column > 0 {
                    insert.sql.push_str(", ");
                }
                insert.push_value(value);
            }
            insert.sql.push(')');
        }
        insert
    }

    /// Binds `value` at this point of the text.
    fn push_value(&mut self, value: Value) {
        self.values.push(value);
        match self.backend {
            DbBackend::Postgres => {
                use std::fmt::Write;
                let _ = write!(self.sql, "${}", self.values.len());
            }
            _ => self.sql.push('?'),
        }
    }

    /// Appends SQL text, such as an `ON CONFLICT` clause.
    fn push_sql(&mut self, sql: &str) {
        self.sql.push_str(sql);
    }

    /// `"table"."column"`, as a condition names it.
    fn push_column(&mut self, table: impl EntityName, column: impl IdenStatic) {
        push_ident(&mut self.sql, table.table_name());
        self.sql.push('.');
        push_ident(&mut self.sql, column.as_str());
    }

    /// ` ON CONFLICT ("key") DO NOTHING`.
    fn on_conflict_do_nothing<C: IdenStatic>(&mut self, key: C) {
        self.sql.push_str(" ON CONFLICT (");
        push_ident(&mut self.sql, key.as_str());
        self.sql.push_str(") DO NOTHING");
    }

    /// ` ON CONFLICT ("key") DO UPDATE SET "c" = "excluded"."c", …` for each of `updated`.
    fn on_conflict_update<C: IdenStatic>(&mut self, key: C, updated: impl IntoIterator<Item = C>) {
        self.sql.push_str(" ON CONFLICT (");
        push_ident(&mut self.sql, key.as_str());
        self.sql.push_str(") DO UPDATE SET ");
        for (index, column) in updated.into_iter().enumerate() {
            if index > 0 {
                self.sql.push_str(", ");
            }
            push_ident(&mut self.sql, column.as_str());
            self.sql.push_str(" = \"excluded\".");
            push_ident(&mut self.sql, column.as_str());
        }
    }

    /// ` RETURNING "a", "b"`.
    fn returning<C: IdenStatic>(&mut self, columns: impl IntoIterator<Item = C>) {
        self.sql.push_str(" RETURNING ");
        push_idents(&mut self.sql, columns.into_iter().map(|column| column.as_str()));
    }

    fn statement(self) -> Statement {
        Statement::from_sql_and_values(self.backend, self.sql, self.values)
    }
}

/// `name` as a quoted identifier. The names come from the entities, never from input, and hold no
/// quote; one would be doubled all the same.
fn push_ident(sql: &mut String, name: &str) {
    sql.push('"');
    for part in name.split_inclusive('"') {
        sql.push_str(part);
        if part.ends_with('"') {
            sql.push('"');
        }
    }
    sql.push('"');
}

fn push_idents(sql: &mut String, names: impl Iterator<Item = &'static str>) {
    for (index, name) in names.enumerate() {
        if index > 0 {
            sql.push_str(", ");
        }
        push_ident(sql, name);
    }
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

    use crate::entity::lead;

    fn two_leads() -> impl ExactSizeIterator<Item = [Value; 2]> {
        [
            ["a@example.com".into(), Value::from(None::<String>)],
            ["b@example.com".into(), "B".into()],
        ]
        .into_iter()
    }

    #[test]
    fn rows_insert_numbers_postgres_placeholders_through_its_tail() {
        let mut insert = RowsInsert::new(
            lead::Entity,
            [lead::Column::Email, lead::Column::Name],
            two_leads(),
            DbBackend::Postgres,
        );
        insert.on_conflict_update(lead::Column::Email, [lead::Column::Name]);
        insert.push_sql(" WHERE ");
        insert.push_column(lead::Entity, lead::Column::Status);
        insert.push_sql(" <> ");
        insert.push_value("won".into());
        insert.returning([lead::Column::Id]);
        let statement = insert.statement();
        assert_eq!(
            statement.sql,
            "INSERT INTO \"leads\" (\"email\", \"name\") VALUES ($1, $2), ($3, $4) \
             ON CONFLICT (\"email\") DO UPDATE SET \"name\" = \"excluded\".\"name\" \
             WHERE \"leads\".\"status\" <> $5 RETURNING \"id\""
        );
        let values = statement.values.expect("values").0;
        assert_eq!(values.len(), 5);
        assert_eq!(values[3], Value::from("B"));
    }

    #[test]
    fn rows_insert_uses_question_marks_on_sqlite() {
        let statement = RowsInsert::new(
            lead::Entity,
            [lead::Column::Email, lead::Column::Name],
            two_leads(),
            DbBackend::Sqlite,
        )
        .statement();
        assert_eq!(
            statement.sql,
            "INSERT INTO \"leads\" (\"email\", \"name\") VALUES (?, ?), (?, ?)"
        );
    }

    #[test]
    fn quotes_in_identifiers_are_doubled() {
        for (name, quoted) in [
            ("plain", "\"plain\""),
            ("odd\"name", "\"odd\"\"name\""),
            ("end\"", "\"end\"\"\""),
            ("\"\"", "\"\"\"\"\"\""),
        ] {
            let mut sql = String::new();
            push_ident(&mut sql, name);
            assert_eq!(sql, quoted, "{name}");
        }
    }

    #[test]
    fn placeholders_follow_the_dialect() {
        assert_eq!(placeholders(DbBackend::Postgres, 3, 2), "$3, $4");
        assert_eq!(placeholders(DbBackend::Sqlite, 3, 2), "?, ?");
    }
}
