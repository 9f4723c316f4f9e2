//! Group commit: concurrent deliveries share transactions, and each caller still gets exactly
//! the answer it would have had alone. The batch API (`Store::ingest_batch`) is driven directly
//! where a test needs events in one batch for certain; concurrency goes through real HTTP and
//! gRPC.

use std::{collections::BTreeSet, time::Duration};

use chrono::Utc;
use meeting_service::{
    domain::reminders::default_offsets,
    entity::{lead, meeting, meeting_reminder, webhook_event},
    store::{self, IngestRequest, Ingested, Store, StoreSettings, retry::RetryPolicy},
};
use proto::v1::{IngestCalendlyEventRequest, Outcome, Source};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryOrder, Set,
    Statement, TransactionTrait,
};

use crate::helpers::{Backend, MeetingServiceProcess, TestDatabase, booking, fixture, json, spawn_app};

const INVITEE: &str = "https://api.calendly.com/scheduled_events/e0d1c2b3-a495-4867-8f9e-0a1b2c3d4e5f/invitees/1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";

/// A store on the pool the meeting service's batch writers use.
async fn store_on(url: &str) -> Store {
    let pools = store::Pools::connect(url, 4).await.expect("connect and migrate");
    let store = Store::new(
        pools.main,
        StoreSettings {
            reminder_offsets: default_offsets(),
            create_leads_for_unknown_invitees: false,
            retry: RetryPolicy::default(),
        },
    );
    match pools.batch_writers {
        Some(writers) => store.on_pool(writers),
        None => store,
    }
}

/// A fixture as the adapter hands it to the meeting service.
fn request(body: Vec<u8>) -> IngestRequest {
    IngestRequest {
        event: adapter::calendly::parse_delivery(&body).expect("a fixture parses"),
        raw_body: body,
        source: Source::Webhook,
        tracking_id: "batching".into(),
    }
}

/// The no-show fixture as a mark of the one-on-one fixture's invitee.
fn no_show_of_the_booking() -> Vec<u8> {
    String::from_utf8(fixture("invitee-no-show-created.json"))
        .expect("UTF-8")
        .replace(
            "2c4e6a8c-0e1f-4b3d-a5c7-9e1b3d5f7a65/invitees/3d5f7a9c-1e2b-4c4e-b6d8-0f2c4e6a8b77",
            "e0d1c2b3-a495-4867-8f9e-0a1b2c3d4e5f/invitees/1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        )
        .into_bytes()
}

async fn add_lead(db: &DatabaseConnection, email: &str) {
    lead::ActiveModel {
        email: Set(email.into()),
        name: Set(None),
        status: Set("new".into()),
        created_at: Set(Utc::now()),
        updated_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(db)
    .await
    .expect("lead");
}

/// What events decide, without ids and row times.
async fn record(db: &DatabaseConnection) -> (Vec<String>, Vec<(String, String)>, Vec<String>) {
    let meetings = meeting::Entity::find()
        .order_by_asc(meeting::Column::CalendlyInviteeId)
        .all(db)
        .await
        .expect("meetings");
    let mut reminders: Vec<(String, String)> = meeting_reminder::Entity::find()
        .all(db)
        .await
        .expect("reminders")
        .into_iter()
        .map(|r| (r.reminder_type, r.state))
        .collect();
    reminders.sort();
    let leads = lead::Entity::find()
        .order_by_asc(lead::Column::Email)
        .all(db)
        .await
        .expect("leads");
    (
        meetings
            .iter()
            .map(|m| {
                format!(
                    "{} {} {:?} {:?}",
                    m.calendly_invitee_id,
                    m.status,
                    m.cancel_reason,
                    m.lead_id.is_some()
                )
            })
            .collect(),
        reminders,
        leads
            .into_iter()
            .map(|l| format!("{} {}", l.email, l.status))
            .collect(),
    )
}

/// An answer without its ids, which differ between databases.
fn without_ids(answer: &Ingested) -> (Outcome, bool, bool, Vec<String>, bool, u32) {
    (
        answer.outcome,
        answer.processed,
        answer.lead_updated,
        answer.errors.clone(),
        answer.meeting_id.is_some(),
        answer.reminders_scheduled,
    )
}

async fn one_batch_of_an_invitees_events_is_what_sequential_delivery_gives(backend: Backend) {
    let bodies = [
        fixture("invitee-created-one-on-one.json"),
        fixture("invitee-canceled-by-invitee.json"),
        no_show_of_the_booking(),
    ];
    let orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    for order in orders {
        let batched_db = TestDatabase::create(backend).await;
        let sequential_db = TestDatabase::create(backend).await;
        let batched = store_on(&batched_db.url).await;
        let sequential = store_on(&sequential_db.url).await;
        for store in [&batched, &sequential] {
            add_lead(store.connection(), "jordan.ellis@example.com").await;
        }
        let now = Utc::now();
        let batch_answers = batched
            .ingest_batch(order.iter().map(|&i| request(bodies[i].clone())).collect(), now)
            .await;
        let mut one_by_one = Vec::new();
        for &i in &order {
            one_by_one.push(sequential.ingest(request(bodies[i].clone()), now).await);
        }
        let batch_answers: Vec<_> = batch_answers
            .iter()
            .map(|a| without_ids(a.as_ref().expect("stored")))
            .collect();
        let one_by_one: Vec<_> = one_by_one
            .iter()
            .map(|a| without_ids(a.as_ref().expect("stored")))
            .collect();
        assert_eq!(batch_answers, one_by_one, "answers in order {order:?}");
        let state = record(batched.connection()).await;
        assert_eq!(
            state,
            record(sequential.connection()).await,
            "record in order {order:?}"
        );
        assert!(
            state.0[0].contains(" canceled "),
            "cancellation is final: {state:?}"
        );
    }
}

async fn duplicates_in_a_batch_are_answered_with_their_originals(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let store = store_on(&database.url).await;
    let now = Utc::now();
    let stored_before = store.ingest(request(booking(1)), now).await.expect("stored");
    let answers: Vec<Ingested> = store
        .ingest_batch(
            vec![
                request(booking(2)),
                request(booking(1)),
                request(booking(2)),
                request(booking(3)),
            ],
            now,
        )
        .await
        .into_iter()
        .map(|a| a.expect("answered"))
        .collect();
    let outcomes: Vec<Outcome> = answers.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Processed,
            Outcome::Duplicate,
            Outcome::Duplicate,
            Outcome::Processed
        ]
    );
    assert_eq!(
        answers[1].webhook_event_id, stored_before.webhook_event_id,
        "a stored event's original"
    );
    assert_eq!(answers[1].meeting_id, stored_before.meeting_id);
    assert_eq!(
        answers[2].webhook_event_id, answers[0].webhook_event_id,
        "the batch's own first copy"
    );
    assert_eq!(answers[2].meeting_id, answers[0].meeting_id);
    assert!(
        answers[1].processed && answers[2].processed,
        "the originals were applied"
    );
    assert_eq!(
        (answers[2].reminders_scheduled, answers[0].reminders_scheduled),
        (0, 3)
    );
    let rows = webhook_event::Entity::find()
        .all(store.connection())
        .await
        .expect("inbox");
    assert_eq!(rows.len(), 3, "each event stored once");
}

/// Makes the database refuse inbox rows with one tracking id, as a limit it enforces would.
async fn poison(db: &DatabaseConnection, backend: Backend) {
    let statement = match backend {
        Backend::Postgres => {
            "ALTER TABLE webhook_events ADD CONSTRAINT poison CHECK (tracking_id <> 'poison')"
        }
        Backend::Sqlite => {
            "CREATE TRIGGER poison BEFORE INSERT ON webhook_events WHEN NEW.tracking_id = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
        }
    };
    db.execute_unprepared(statement).await.expect("poison");
}

async fn an_event_the_database_refuses_fails_alone_and_its_neighbours_are_stored(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let store = store_on(&database.url).await;
    poison(store.connection(), backend).await;
    let mut poisoned = request(booking(2));
    poisoned.tracking_id = "poison".into();
    let answers = store
        .ingest_batch(
            vec![request(booking(1)), poisoned, request(booking(3))],
            Utc::now(),
        )
        .await;
    assert!(answers[0].as_ref().is_ok_and(|a| a.outcome == Outcome::Processed));
    assert!(
        matches!(
            answers[1],
            Err(meeting_service::error::ServiceError::Unexpected(_))
        ),
        "the refused event gets the error: {:?}",
        answers[1]
    );
    assert!(answers[2].as_ref().is_ok_and(|a| a.outcome == Outcome::Processed));
    let counter = crate::helpers::RowCounter(store.connection());
    assert_eq!(counter.scalar("SELECT COUNT(*) FROM webhook_events").await, 2);
    assert_eq!(counter.scalar("SELECT COUNT(*) FROM meetings").await, 2);
    assert_eq!(counter.scalar("SELECT COUNT(*) FROM meeting_reminders").await, 6);
}

/// Holds the database's write lock (SQLite) or the inbox's table lock (PostgreSQL) until dropped,
/// so that deliveries queue up behind the first batch.
async fn hold_writes(db: &DatabaseConnection, backend: Backend) -> sea_orm::DatabaseTransaction {
    let txn = db.begin().await.expect("begin");
    let statement = match backend {
        Backend::Postgres => "LOCK TABLE webhook_events IN EXCLUSIVE MODE",
        Backend::Sqlite => {
            "INSERT INTO leads (email, status, created_at, updated_at) \
             VALUES ('lock@example.com', 'new', '2026-01-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00')"
        }
    };
    txn.execute_unprepared(statement).await.expect("lock");
    txn
}

async fn sixty_four_concurrent_deliveries_share_transactions_and_get_their_own_answers(backend: Backend) {
    const DELIVERIES: usize = 64;
    let app = spawn_app(backend).await;
    let lock = hold_writes(&app.db, backend).await;
    let app_ref = &app;
    let sends = futures::future::join_all((0..DELIVERIES).map(|n| async move {
        let app = app_ref;
        let response = app.post_signed(&booking(n)).await;
        (n, response.status().as_u16(), json(response).await)
    }));
    let release = async {
        // Long enough for the deliveries to queue behind the held lock; any that arrive later
        // only make the batches smaller, never the answers wrong.
        tokio::time::sleep(Duration::from_secs(1)).await;
        lock.rollback().await.expect("release");
    };
    let (answers, ()) = tokio::join!(sends, release);
    let mut events = BTreeSet::new();
    let mut meetings = BTreeSet::new();
    for (n, status, answer) in &answers {
        assert_eq!(*status, 200, "delivery {n}: {answer}");
        assert_eq!(answer["result"]["outcome"], "processed", "delivery {n}");
        assert_eq!(answer["result"]["remindersScheduled"], 3, "delivery {n}");
        assert_eq!(answer["result"]["duplicate"], false, "delivery {n}");
        events.insert(answer["result"]["webhookEventId"].as_i64().expect("inbox id"));
        meetings.insert(answer["result"]["meetingId"].as_i64().expect("meeting id"));
        let uri = INVITEE.replace("0e1f2a3b4c5d", &format!("{n:012}"));
        assert_eq!(
            app.meeting(&uri).await.id,
            answer["result"]["meetingId"].as_i64().expect("meeting id"),
            "delivery {n} is told its own meeting"
        );
    }
    assert_eq!((events.len(), meetings.len()), (DELIVERIES, DELIVERIES));
    // One commit per transaction: PostgreSQL names each row's inserting transaction; on SQLite,
    // every event of a batch is received at the batch's one instant.
    let transactions = match backend {
        Backend::Postgres => {
            app.scalar("SELECT COUNT(DISTINCT xmin::text) FROM webhook_events")
                .await
        }
        Backend::Sqlite => {
            app.scalar("SELECT COUNT(DISTINCT received_at) FROM webhook_events")
                .await
        }
    };
    eprintln!("{DELIVERIES} concurrent deliveries were stored in {transactions} transactions");
    assert!(
        (1..DELIVERIES as i64).contains(&transactions),
        "{DELIVERIES} deliveries in {transactions} transactions"
    );
    assert_eq!(app.count("meeting_reminders").await, DELIVERIES as i64 * 3);
    app.stop().await;
}

async fn two_meeting_services_on_one_database_store_each_event_once_in_a_duplicate_storm(backend: Backend) {
    const EVENTS: usize = 40;
    const COPIES: usize = 4;
    let database = TestDatabase::create(backend).await;
    // Migrated once here, so the two processes do not race to apply migrations.
    store::connect(&database.url, 1).await.expect("migrate");
    let services = [
        MeetingServiceProcess::start(&database.url).await,
        MeetingServiceProcess::start(&database.url).await,
    ];
    let mut clients = Vec::new();
    for service in &services {
        clients.push(service.client().await.expect("gRPC client"));
    }
    let calls = (0..EVENTS).flat_map(|n| (0..COPIES).map(move |copy| (n, copy)));
    let answers = futures::future::join_all(calls.map(|(n, copy)| {
        let mut client = clients[copy % 2].clone();
        async move {
            let body = booking(n);
            let event = adapter::calendly::parse_delivery(&body).expect("parses");
            // Like Calendly: a delivery that is not acknowledged is sent again.
            for _ in 0..20 {
                let request = IngestCalendlyEventRequest {
                    event: Some(event.clone()),
                    raw_body: body.clone(),
                    source: Source::Webhook as i32,
                };
                match client.ingest_calendly_event(request).await {
                    Ok(answer) => return (n, answer.into_inner()),
                    Err(status) if status.code() == tonic::Code::Unavailable => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(status) => panic!("event {n}: {status}"),
                }
            }
            panic!("event {n} was never acknowledged")
        }
    }))
    .await;
    for n in 0..EVENTS {
        let firsts = answers
            .iter()
            .filter(|(m, answer)| *m == n && !answer.duplicate)
            .count();
        assert_eq!(firsts, 1, "event {n}: exactly one delivery stores it");
    }
    let db = sea_orm::Database::connect(&database.url).await.expect("connect");
    let counter = crate::helpers::RowCounter(&db);
    assert_eq!(
        counter.scalar("SELECT COUNT(*) FROM webhook_events").await,
        EVENTS as i64
    );
    assert_eq!(
        counter.scalar("SELECT COUNT(*) FROM meetings").await,
        EVENTS as i64
    );
    assert_eq!(
        counter.scalar("SELECT COUNT(*) FROM meeting_reminders").await,
        EVENTS as i64 * 3
    );
    db.close().await.ok();
}

async fn plan_cache_mode(db: &DatabaseConnection) -> String {
    db.query_one_raw(Statement::from_string(
        DbBackend::Postgres,
        "SHOW plan_cache_mode",
    ))
    .await
    .expect("show")
    .expect("a row")
    .try_get_by_index(0)
    .expect("a setting")
}

/// On PostgreSQL the batch writers have a pool of their own, with generic plans, taken out of
/// `DATABASE_MAX_CONNECTIONS`; the main pool keeps PostgreSQL's default. SQLite has one pool.
async fn batch_writers_have_a_pool_of_their_own_within_the_connection_limit(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let pools = store::Pools::connect(&database.url, 10)
        .await
        .expect("connect and migrate");
    match backend {
        Backend::Sqlite => assert!(pools.batch_writers.is_none(), "SQLite has one pool"),
        Backend::Postgres => {
            let writers = pools.batch_writers.as_ref().expect("a pool for the writers");
            let size =
                |db: &DatabaseConnection| db.get_postgres_connection_pool().options().get_max_connections();
            assert_eq!(
                (size(&pools.main), size(writers)),
                (6, 4),
                "10 connections in all"
            );
            assert_eq!(plan_cache_mode(writers).await, "force_generic_plan");
            assert_eq!(plan_cache_mode(&pools.main).await, "auto");
        }
    }
    // The change feed's listener holds a main connection for good: the main pool keeps two.
    for (max, split) in [(1, None), (2, None), (3, Some((2, 1))), (5, Some((3, 2)))] {
        let pools = store::Pools::connect(&database.url, max).await.expect("connect");
        let sizes = pools.batch_writers.as_ref().map(|writers| {
            let size =
                |db: &DatabaseConnection| db.get_postgres_connection_pool().options().get_max_connections();
            (size(&pools.main), size(writers))
        });
        let expected = if backend == Backend::Postgres { split } else { None };
        assert_eq!(sizes, expected, "DATABASE_MAX_CONNECTIONS={max}");
    }
}

crate::on_both_backends!(
    batch_writers_have_a_pool_of_their_own_within_the_connection_limit,
    one_batch_of_an_invitees_events_is_what_sequential_delivery_gives,
    duplicates_in_a_batch_are_answered_with_their_originals,
    an_event_the_database_refuses_fails_alone_and_its_neighbours_are_stored,
    sixty_four_concurrent_deliveries_share_transactions_and_get_their_own_answers;
    postgres_only: two_meeting_services_on_one_database_store_each_event_once_in_a_duplicate_storm,
);
