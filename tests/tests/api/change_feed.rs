//! The change feed: `WatchMeetingChanges` over real gRPC, fed by real deliveries through the
//! adapter. Order, resumption, filters, heartbeats, retention, a stalled consumer, and (on
//! PostgreSQL) several replicas committing at once.

use std::{collections::BTreeSet, time::Duration};

use futures::StreamExt;
use meeting_service::{
    domain::reminders::default_offsets,
    store::{Store, StoreSettings, retry::RetryPolicy},
};
use proto::v1::{
    ChangeKind, IngestCalendlyEventRequest, ListMeetingsRequest, MeetingChange, Source, UpsertLeadRequest,
    WatchMeetingChangesRequest, WatchMeetingChangesResponse, watch_meeting_changes_response::Item,
};
use tonic::{Code, Streaming};

use crate::helpers::{
    Backend, Bearer, GrpcClient, TestApp, booking, fixture, json, spawn_app, spawn_app_with,
};

const OLD: &str = "https://api.calendly.com/scheduled_events/b3d5f7a9-1c2e-4f40-9b6d-8f0a2c4e6a91/invitees/c5e7a9b1-3d4f-4a62-8d8f-0b2c4e6a8c03";
const NEW: &str = "https://api.calendly.com/scheduled_events/d7f9b1c3-5e6a-4b84-9f0a-2d4e6a8c0e15/invitees/e9b1d3f5-7a8c-4ca6-8b2c-4f6a8c0e2a27";
const JORDAN_EVENT: &str = "e0d1c2b3-a495-4867-8f9e-0a1b2c3d4e5f";
const JORDAN_INVITEE: &str = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";

/// A backstop for one message; changes arrive in milliseconds.
const MESSAGE_WAIT: Duration = Duration::from_secs(20);

/// `fixture` with the one-on-one booking's event and invitee ids replaced by those of `uri`.
fn as_invitee(name: &str, uri: &str) -> Vec<u8> {
    let (event, invitee) = ids_of(uri);
    String::from_utf8(fixture(name))
        .expect("UTF-8")
        .replace(JORDAN_EVENT, event)
        .replace(JORDAN_INVITEE, invitee)
        .into_bytes()
}

fn ids_of(uri: &str) -> (&str, &str) {
    let rest = uri
        .strip_prefix("https://api.calendly.com/scheduled_events/")
        .expect("an invitee URI");
    rest.split_once("/invitees/").expect("an invitee URI")
}

async fn watch(app: &TestApp, request: WatchMeetingChangesRequest) -> Streaming<WatchMeetingChangesResponse> {
    watch_on(app.grpc().await, request).await
}

async fn watch_on(
    mut grpc: GrpcClient,
    request: WatchMeetingChangesRequest,
) -> Streaming<WatchMeetingChangesResponse> {
    grpc.watch_meeting_changes(request)
        .await
        .expect("the stream opens")
        .into_inner()
}

async fn watch_all(app: &TestApp) -> Streaming<WatchMeetingChangesResponse> {
    watch(app, WatchMeetingChangesRequest::default()).await
}

/// The next message, heartbeat or change.
async fn next_message(stream: &mut Streaming<WatchMeetingChangesResponse>) -> WatchMeetingChangesResponse {
    tokio::time::timeout(MESSAGE_WAIT, stream.message())
        .await
        .expect("a message in time")
        .expect("the stream stays open")
        .expect("the stream is not over")
}

/// The next change (heartbeats skipped), with the cursor that follows it.
async fn next_change(stream: &mut Streaming<WatchMeetingChangesResponse>) -> (MeetingChange, String) {
    loop {
        let message = next_message(stream).await;
        if let Some(Item::Change(change)) = message.item {
            return (change, message.cursor);
        }
    }
}

async fn next_changes(stream: &mut Streaming<WatchMeetingChangesResponse>, n: usize) -> Vec<MeetingChange> {
    let mut changes = Vec::with_capacity(n);
    for _ in 0..n {
        changes.push(next_change(stream).await.0);
    }
    changes
}

fn summary(change: &MeetingChange) -> (ChangeKind, String, String) {
    let meeting = change.meeting.as_ref().expect("a meeting");
    (
        change.kind(),
        meeting.calendly_invitee_uri.clone(),
        meeting.status.clone(),
    )
}

/// Every change id in the table, in order.
async fn stored_change_ids(app: &TestApp) -> Vec<i64> {
    use sea_orm::{ConnectionTrait, Statement};
    let rows = app
        .db
        .query_all_raw(Statement::from_string(
            app.db.get_database_backend(),
            "SELECT id FROM meeting_changes ORDER BY id",
        ))
        .await
        .expect("query");
    rows.iter()
        .map(|row| row.try_get_by_index::<i64>(0).expect("an id"))
        .collect()
}

async fn a_watcher_sees_a_bookings_changes_in_order_and_a_duplicate_adds_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut stream = watch_all(&app).await;
    let booked = as_invitee("invitee-created-one-on-one.json", OLD);
    // The new booking's cancellation, a day after the reschedule that made it.
    let canceled = String::from_utf8(as_invitee("invitee-canceled-by-invitee.json", NEW))
        .expect("UTF-8")
        .replace("-06T09:14:0", "-09T09:14:0")
        .into_bytes();
    for body in [
        booked.clone(),
        fixture("reschedule-canceled-old.json"),
        fixture("reschedule-created-new.json"),
        canceled,
    ] {
        assert_eq!(app.post_signed_owned(body).await, 200);
    }
    let changes = next_changes(&mut stream, 4).await;
    assert_eq!(
        changes.iter().map(summary).collect::<Vec<_>>(),
        [
            (ChangeKind::Created, OLD.to_owned(), "scheduled".to_owned()),
            (ChangeKind::Rescheduled, OLD.to_owned(), "rescheduled".to_owned()),
            (ChangeKind::Created, NEW.to_owned(), "scheduled".to_owned()),
            (ChangeKind::Canceled, NEW.to_owned(), "canceled".to_owned()),
        ]
    );
    let rescheduled = changes[1].meeting.as_ref().expect("a meeting");
    assert_eq!(rescheduled.rescheduled_to_invitee_uri.as_deref(), Some(NEW));
    assert_eq!(rescheduled.id, changes[0].meeting.as_ref().expect("a meeting").id);
    assert_eq!(
        changes[3].meeting.as_ref().expect("a meeting"),
        &{
            let mut stored = app.meeting(NEW).await;
            stored.reminders.clear();
            stored
        },
        "the last change carries the meeting as stored"
    );
    assert_eq!(
        changes.iter().map(|c| c.cause.as_str()).collect::<Vec<_>>(),
        [
            "invitee.created",
            "invitee.canceled",
            "invitee.created",
            "invitee.canceled"
        ]
    );
    assert!(
        changes
            .iter()
            .all(|c| c.webhook_event_id.is_some() && !c.tracking_id.is_empty())
    );
    assert!(changes.windows(2).all(|w| w[0].change_id < w[1].change_id));

    // A copy of the first booking is a duplicate: the next change is the one after it.
    let duplicate = json(app.post_signed(&booked).await).await;
    assert_eq!(duplicate["result"]["duplicate"], true);
    assert_eq!(
        app.post_signed_owned(fixture("group-event-invitee-a-created.json"))
            .await,
        200
    );
    let (next, _) = next_change(&mut stream).await;
    assert_eq!(next.kind(), ChangeKind::Created);
    assert_eq!(
        next.meeting.as_ref().expect("a meeting").invitee_email,
        "amara.nwosu@example.com"
    );
    assert_eq!(stored_change_ids(&app).await.len(), 5);

    // Stopping the service ends the stream with a status to resume on, and does not wait for it.
    app.begin_meeting_service_shutdown();
    let ended = tokio::time::timeout(MESSAGE_WAIT, stream.message())
        .await
        .expect("the stream ends in time");
    assert_eq!(ended.expect_err("ended with a status").code(), Code::Unavailable);
    app.stop().await;
}

async fn a_consumer_that_resumes_from_its_cursor_gets_the_rest_once(backend: Backend) {
    const BOOKINGS: usize = 8;
    const BEFORE_DISCONNECT: usize = 3;
    let app = spawn_app(backend).await;
    let mut stream = watch_all(&app).await;
    for n in 0..BOOKINGS {
        assert_eq!(app.post_signed_owned(booking(n)).await, 200);
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for _ in 0..BEFORE_DISCONNECT {
        let (change, after) = next_change(&mut stream).await;
        seen.push(change.change_id);
        cursor = after;
    }
    drop(stream);

    let mut resumed = watch(
        &app,
        WatchMeetingChangesRequest {
            cursor,
            ..Default::default()
        },
    )
    .await;
    for change in next_changes(&mut resumed, BOOKINGS - BEFORE_DISCONNECT).await {
        seen.push(change.change_id);
    }
    assert_eq!(seen, stored_change_ids(&app).await, "every change once, in order");
    app.stop().await;
}

async fn filters_choose_kinds_and_a_lead_and_lead_links_are_changes(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut grpc = app.grpc().await;
    let mut canceled_only = watch(
        &app,
        WatchMeetingChangesRequest {
            kinds: vec![ChangeKind::Canceled as i32],
            ..Default::default()
        },
    )
    .await;
    let mut all = watch_all(&app).await;
    app.deliver(&["invitee-created-one-on-one.json"]).await;
    // The lead comes after the booking, so its meeting joins it: a change of its own.
    let lead = grpc
        .upsert_lead(UpsertLeadRequest {
            email: "jordan.ellis@example.com".into(),
            ..Default::default()
        })
        .await
        .expect("upsert")
        .into_inner();
    let mut of_the_lead = watch(
        &app,
        WatchMeetingChangesRequest {
            lead_id: Some(lead.id),
            ..Default::default()
        },
    )
    .await;
    app.deliver(&[
        "group-event-invitee-a-created.json",
        "invitee-canceled-by-invitee.json",
    ])
    .await;

    let kinds: Vec<_> = next_changes(&mut all, 4).await.iter().map(|c| c.kind()).collect();
    assert_eq!(
        kinds,
        [
            ChangeKind::Created,
            ChangeKind::LeadLinked,
            ChangeKind::Created,
            ChangeKind::Canceled
        ]
    );
    let (canceled, _) = next_change(&mut canceled_only).await;
    assert_eq!(canceled.kind(), ChangeKind::Canceled);
    let (of_lead, _) = next_change(&mut of_the_lead).await;
    assert_eq!(
        of_lead.kind(),
        ChangeKind::Canceled,
        "the other invitee's booking is not this lead's"
    );
    assert_eq!(of_lead.meeting.as_ref().and_then(|m| m.lead_id), Some(lead.id));
    let link = &stored_change_ids(&app).await;
    assert_eq!(link.len(), 4);
    app.stop().await;
}

async fn an_idle_stream_gets_heartbeats_carrying_the_latest_cursor(backend: Backend) {
    let app = spawn_app_with(backend, &[("WATCH_HEARTBEAT_SECS", "0.2")]).await;
    // Its filter matches nothing that follows; its cursor must still move past what it skipped.
    let mut no_shows = watch(
        &app,
        WatchMeetingChangesRequest {
            kinds: vec![ChangeKind::NoShowMarked as i32],
            ..Default::default()
        },
    )
    .await;
    let mut all = watch_all(&app).await;
    app.deliver(&["invitee-created-one-on-one.json"]).await;
    let (_, latest) = next_change(&mut all).await;
    let mut beats = 0;
    loop {
        let message = next_message(&mut no_shows).await;
        assert!(matches!(message.item, Some(Item::Heartbeat(_))), "{message:?}");
        beats += 1;
        if message.cursor == latest {
            break;
        }
        assert!(beats < 100, "the heartbeat's cursor never reached {latest}");
    }
    app.stop().await;
}

async fn a_cursor_past_retention_is_out_of_range_and_list_meetings_resumes_without_a_gap(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut stream = watch_all(&app).await;
    for n in 0..3 {
        assert_eq!(app.post_signed_owned(booking(n)).await, 200);
    }
    let (_, first_cursor) = next_change(&mut stream).await;
    drop(stream);
    let store = Store::new(
        app.db.clone(),
        StoreSettings {
            reminder_offsets: default_offsets(),
            create_leads_for_unknown_invitees: false,
            retry: RetryPolicy::default(),
        },
    );
    assert_eq!(store.prune_changes(Duration::ZERO).await.expect("prune"), 3);

    let mut grpc = app.grpc().await;
    let refused = grpc
        .watch_meeting_changes(WatchMeetingChangesRequest {
            cursor: first_cursor,
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::OutOfRange);
    assert!(
        refused.message().contains("ListMeetings"),
        "{}",
        refused.message()
    );
    let ahead = grpc
        .watch_meeting_changes(WatchMeetingChangesRequest {
            cursor: "c1.999999".into(),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(ahead.code(), Code::OutOfRange);

    // Resync: list every meeting (two pages), then watch from the listing's cursor.
    let first = grpc
        .list_meetings(ListMeetingsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(app.post_signed_owned(booking(3)).await, 200);
    let second = grpc
        .list_meetings(ListMeetingsRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        second.change_cursor, first.change_cursor,
        "one cursor for the whole listing"
    );
    assert!(first.meetings.len() + second.meetings.len() >= 3);
    let mut resumed = watch(
        &app,
        WatchMeetingChangesRequest {
            cursor: first.change_cursor,
            ..Default::default()
        },
    )
    .await;
    let (change, _) = next_change(&mut resumed).await;
    assert_eq!(change.kind(), ChangeKind::Created);
    assert!(
        change
            .meeting
            .as_ref()
            .is_some_and(|m| m.calendly_invitee_uri.ends_with("000000000003")),
        "the booking after the listing: {change:?}"
    );
    app.stop().await;
}

async fn bad_watch_requests_are_refused_with_the_field_at_fault(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut grpc = app.grpc().await;
    let cases = [
        (
            "a foreign cursor",
            WatchMeetingChangesRequest {
                cursor: "v1.5".into(),
                ..Default::default()
            },
            "cursor",
        ),
        (
            "an unknown kind",
            WatchMeetingChangesRequest {
                kinds: vec![99],
                ..Default::default()
            },
            "kinds",
        ),
        (
            "the unspecified kind",
            WatchMeetingChangesRequest {
                kinds: vec![ChangeKind::Unspecified as i32],
                ..Default::default()
            },
            "kinds",
        ),
        (
            "a lead id of zero",
            WatchMeetingChangesRequest {
                lead_id: Some(0),
                ..Default::default()
            },
            "lead_id",
        ),
    ];
    for (name, request, field) in cases {
        let status = grpc.watch_meeting_changes(request).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}");
        assert!(
            status.message().starts_with(field),
            "{name}: {}",
            status.message()
        );
    }
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
        .expect("URL")
        .connect()
        .await
        .expect("connect");
    let anonymous = proto::v1::meeting_service_client::MeetingServiceClient::new(channel)
        .watch_meeting_changes(WatchMeetingChangesRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    app.stop().await;
}

/// A client whose HTTP/2 window is small, so that not reading stalls the stream after a few
/// dozen messages (tonic's default window would take thousands).
async fn small_window_client(app: &TestApp) -> GrpcClient {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
        .expect("URL")
        .initial_stream_window_size(16 * 1024)
        .initial_connection_window_size(64 * 1024)
        .connect()
        .await
        .expect("connect");
    proto::v1::meeting_service_client::MeetingServiceClient::with_interceptor(channel, Bearer)
}

/// Ingests bookings `range` over gRPC, 32 at a time.
async fn ingest_bookings(grpc: GrpcClient, range: std::ops::Range<usize>) {
    futures::stream::iter(range)
        .map(|n| {
            let mut grpc = grpc.clone();
            async move {
                let body = booking(n);
                let request = IngestCalendlyEventRequest {
                    event: Some(adapter::calendly::parse_delivery(&body).expect("a booking parses")),
                    raw_body: body,
                    source: Source::Webhook as i32,
                };
                grpc.ingest_calendly_event(request).await.expect("ingested");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

async fn a_stalled_consumer_is_cut_off_and_slows_no_one_else(backend: Backend) {
    // More than the server's HTTP/2 send buffer (400 KiB a stream, hyper's default) holds, so that
    // the stream's reader itself must wait.
    const BOOKINGS: usize = 1_500;
    let app = spawn_app_with(backend, &[("WATCH_STALL_TIMEOUT_SECS", "1")]).await;
    let mut stalled = small_window_client(&app)
        .await
        .watch_meeting_changes(WatchMeetingChangesRequest::default())
        .await
        .expect("opens")
        .into_inner();
    let mut healthy = watch_all(&app).await;
    let reader = async {
        let mut ids = Vec::with_capacity(BOOKINGS);
        while ids.len() < BOOKINGS {
            ids.push(next_change(&mut healthy).await.0.change_id);
        }
        ids
    };
    let (received, ()) = tokio::join!(reader, ingest_bookings(app.grpc().await, 0..BOOKINGS));
    assert_eq!(
        received,
        stored_change_ids(&app).await,
        "the healthy consumer got every change"
    );

    // The stalled one gets what was already on its way, then the status, and not everything.
    let mut delivered = 0;
    let status = loop {
        match tokio::time::timeout(MESSAGE_WAIT, stalled.message())
            .await
            .expect("the stalled stream ends in time")
        {
            Ok(Some(WatchMeetingChangesResponse {
                item: Some(Item::Change(_)),
                ..
            })) => delivered += 1,
            Ok(Some(_)) => panic!("the stalled stream was never cut off: all {delivered} changes came"),
            Ok(None) => panic!("the stalled stream ended without a status after {delivered} changes"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("resume"), "{}", status.message());
    assert!(
        delivered < BOOKINGS,
        "the stalled consumer was sent all {delivered} changes"
    );
    eprintln!("the stalled consumer was sent {delivered} of {BOOKINGS} changes before it was cut off");
    app.stop().await;
}

/// Writers on two meeting-service replicas commit concurrent batches while a reader polls the
/// table as fast as it can: what the reader saw, in order, is every committed row, with no gap;
/// and a stream on the other replica sees the same.
async fn commit_order_holds_across_replicas_for_a_racing_reader(backend: Backend) {
    const BOOKINGS: usize = 1_200;
    let app = spawn_app(backend).await;
    let replica = app.start_meeting_replica(&[]).await;
    let mut stream = watch_on(replica.grpc().await, WatchMeetingChangesRequest::default()).await;
    let done = std::sync::atomic::AtomicBool::new(false);
    let reader = async {
        use sea_orm::{ConnectionTrait, Statement};
        let mut seen: Vec<i64> = Vec::new();
        loop {
            let finished = done.load(std::sync::atomic::Ordering::SeqCst);
            let after = seen.last().copied().unwrap_or(0);
            let rows = app
                .db
                .query_all_raw(Statement::from_string(
                    app.db.get_database_backend(),
                    format!("SELECT id FROM meeting_changes WHERE id > {after} ORDER BY id"),
                ))
                .await
                .expect("poll");
            seen.extend(rows.iter().map(|r| r.try_get_by_index::<i64>(0).expect("an id")));
            if finished {
                return seen;
            }
        }
    };
    let writers = async {
        tokio::join!(
            ingest_bookings(app.grpc().await, 0..BOOKINGS / 2),
            ingest_bookings(replica.grpc().await, BOOKINGS / 2..BOOKINGS)
        );
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let (seen, ()) = tokio::join!(reader, writers);
    let stored = stored_change_ids(&app).await;
    assert_eq!(stored.len(), BOOKINGS);
    let missed: BTreeSet<_> = stored.iter().filter(|id| !seen.contains(id)).collect();
    assert!(
        missed.is_empty(),
        "the reader skipped committed changes {missed:?}"
    );
    assert_eq!(seen, stored);
    let streamed: Vec<i64> = next_changes(&mut stream, BOOKINGS)
        .await
        .iter()
        .map(|c| c.change_id)
        .collect();
    assert_eq!(streamed, stored, "the stream on the other replica");
    drop(stream);
    replica.stop().await;
    app.stop().await;
}

async fn a_change_committed_on_one_replica_reaches_a_watcher_on_another_within_a_second(backend: Backend) {
    let app = spawn_app(backend).await;
    // Its poll is far too slow to matter here: only the notification can be in time.
    let replica = app
        .start_meeting_replica(&[("WATCH_POLL_INTERVAL_SECS", "60")])
        .await;
    let mut stream = watch_on(replica.grpc().await, WatchMeetingChangesRequest::default()).await;
    for n in 0..3 {
        assert_eq!(app.post_signed_owned(booking(n)).await, 200);
        let answered = std::time::Instant::now();
        let (change, _) = next_change(&mut stream).await;
        let took = answered.elapsed();
        assert!(
            change
                .meeting
                .as_ref()
                .is_some_and(|m| m.calendly_invitee_uri.ends_with(&format!("{n:012}")))
        );
        eprintln!("change {n} reached the other replica's watcher {took:?} after its answer");
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }
    drop(stream);
    replica.stop().await;
    app.stop().await;
}

crate::on_both_backends!(
    a_watcher_sees_a_bookings_changes_in_order_and_a_duplicate_adds_nothing,
    a_consumer_that_resumes_from_its_cursor_gets_the_rest_once,
    filters_choose_kinds_and_a_lead_and_lead_links_are_changes,
    an_idle_stream_gets_heartbeats_carrying_the_latest_cursor,
    a_cursor_past_retention_is_out_of_range_and_list_meetings_resumes_without_a_gap,
    bad_watch_requests_are_refused_with_the_field_at_fault,
    a_stalled_consumer_is_cut_off_and_slows_no_one_else;
    postgres_only:
    commit_order_holds_across_replicas_for_a_racing_reader,
    a_change_committed_on_one_replica_reaches_a_watcher_on_another_within_a_second,
);
