//! The gRPC API internal services use: meetings, leads, and reminder dispatch.

use std::collections::HashSet;

use proto::v1::{
    ClaimDueRemindersRequest, CompleteReminderRequest, GetLeadRequest, ListMeetingsRequest,
    ListWebhookEventsRequest, Outcome, ReleaseReminderRequest, UpsertLeadRequest, get_lead_request,
};
use tonic::Code;

use crate::helpers::{Backend, TestApp, booking, future_seconds, json, spawn_app};

async fn all_meeting_ids(app: &TestApp, mut request: ListMeetingsRequest) -> Vec<i64> {
    let mut grpc = app.grpc().await;
    let mut ids = Vec::new();
    for _ in 0..100 {
        let page = grpc
            .list_meetings(request.clone())
            .await
            .expect("list")
            .into_inner();
        ids.extend(page.meetings.iter().map(|m| m.id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        request.page_token = page.next_page_token;
    }
    panic!("paging did not end");
}

async fn list_meetings_filters_and_pages_through_every_match_once(backend: Backend) {
    let app = spawn_app(backend).await;
    app.deliver(&[
        "invitee-created-one-on-one.json",
        "group-event-invitee-a-created.json",
        "group-event-invitee-b-created.json",
        "reschedule-canceled-old.json",
        "reschedule-created-new.json",
        "invitee-created-unicode-name.json",
    ])
    .await;
    let everything = all_meeting_ids(
        &app,
        ListMeetingsRequest {
            page_size: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(everything.len(), 6);
    assert!(
        everything.windows(2).all(|w| w[0] < w[1]),
        "stable id order: {everything:?}"
    );

    let rescheduled = all_meeting_ids(
        &app,
        ListMeetingsRequest {
            status: "rescheduled".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rescheduled.len(), 1);
    let by_email = all_meeting_ids(
        &app,
        ListMeetingsRequest {
            invitee_email: "TAYLOR.Brooks@example.com".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_email.len(), 2, "both halves of Taylor's reschedule");
    // The week of the new Taylor booking and the Unicode one.
    let in_range = all_meeting_ids(
        &app,
        ListMeetingsRequest {
            start_from: Some(prost_types::Timestamp {
                seconds: future_seconds("2030-03-13T00:00:00Z"),
                nanos: 0,
            }),
            start_before: Some(prost_types::Timestamp {
                seconds: future_seconds("2030-03-19T00:00:00Z"),
                nanos: 0,
            }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(in_range.len(), 2);

    let mut grpc = app.grpc().await;
    let with_reminders = grpc
        .list_meetings(ListMeetingsRequest {
            page_size: 1,
            include_reminders: true,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(with_reminders.meetings[0].reminders.len(), 3);
    for (request, field) in [
        (
            ListMeetingsRequest {
                status: "done".into(),
                ..Default::default()
            },
            "status",
        ),
        (
            ListMeetingsRequest {
                page_token: "42".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            ListMeetingsRequest {
                page_size: 501,
                ..Default::default()
            },
            "page_size",
        ),
    ] {
        let status = grpc.list_meetings(request).await.expect_err("invalid");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    app.stop().await;
}

async fn leads_are_upserted_looked_up_and_linked_to_earlier_meetings(backend: Backend) {
    let app = spawn_app(backend).await;
    app.deliver(&["invitee-created-one-on-one.json"]).await;
    let mut grpc = app.grpc().await;
    let lead = grpc
        .upsert_lead(UpsertLeadRequest {
            email: " Jordan.Ellis@Example.com ".into(),
            name: Some("Jordan Ellis".into()),
            ..Default::default()
        })
        .await
        .expect("upsert")
        .into_inner();
    assert_eq!(lead.email, "jordan.ellis@example.com");
    assert_eq!(
        lead.status, "meeting_scheduled",
        "the earlier booking is linked and sets the status"
    );
    let meetings = grpc
        .list_meetings(ListMeetingsRequest {
            lead_id: Some(lead.id),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(meetings.meetings.len(), 1);

    let found = grpc
        .get_lead(GetLeadRequest {
            key: Some(get_lead_request::Key::Email("JORDAN.ELLIS@example.com".into())),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(found.id, lead.id);

    let updated = grpc
        .upsert_lead(UpsertLeadRequest {
            id: lead.id,
            email: lead.email.clone(),
            status: "qualified".into(),
            name: None,
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(
        (updated.status.as_str(), updated.name.as_deref()),
        ("qualified", Some("Jordan Ellis"))
    );

    let other = grpc
        .upsert_lead(UpsertLeadRequest {
            email: "sam@example.com".into(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    assert_eq!(other.status, "new");
    let cases = [
        (
            UpsertLeadRequest {
                id: other.id,
                email: lead.email.clone(),
                ..Default::default()
            },
            Code::AlreadyExists,
        ),
        (
            UpsertLeadRequest {
                id: 9_999,
                email: "x@example.com".into(),
                ..Default::default()
            },
            Code::NotFound,
        ),
        (
            UpsertLeadRequest {
                email: "not-an-email".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
    ];
    for (request, code) in cases {
        assert_eq!(grpc.upsert_lead(request).await.expect_err("refused").code(), code);
    }
    let missing = grpc
        .get_lead(GetLeadRequest {
            key: Some(get_lead_request::Key::Id(9_999)),
        })
        .await;
    assert_eq!(missing.expect_err("none").code(), Code::NotFound);
    app.stop().await;
}

/// Moves every reminder's time into the past, so it is due now.
async fn make_reminders_due(app: &TestApp) {
    app.execute("UPDATE meeting_reminders SET scheduled_time = '2020-01-01T00:00:00+00:00'")
        .await;
}

fn claim(limit: u32, lease_seconds: u32) -> ClaimDueRemindersRequest {
    ClaimDueRemindersRequest {
        limit,
        lease_seconds,
        claimant: "dispatcher-1".into(),
    }
}

async fn reminders_are_claimed_completed_released_and_reclaimed_after_the_lease(backend: Backend) {
    let app = spawn_app(backend).await;
    app.deliver(&["invitee-created-one-on-one.json"]).await;
    let mut grpc = app.grpc().await;
    assert!(
        grpc.claim_due_reminders(claim(10, 60))
            .await
            .expect("claim")
            .into_inner()
            .reminders
            .is_empty()
    );
    make_reminders_due(&app).await;

    let claimed = grpc
        .claim_due_reminders(claim(10, 60))
        .await
        .expect("claim")
        .into_inner()
        .reminders;
    assert_eq!(claimed.len(), 3);
    let first = &claimed[0];
    assert_eq!(
        first.meeting.as_ref().expect("meeting").invitee_email,
        "jordan.ellis@example.com"
    );
    assert!(
        grpc.claim_due_reminders(claim(10, 60))
            .await
            .expect("claim")
            .into_inner()
            .reminders
            .is_empty()
    );

    let id = first.reminder.as_ref().expect("reminder").id;
    let wrong = grpc
        .complete_reminder(CompleteReminderRequest {
            id,
            claim_token: "nope".into(),
        })
        .await;
    assert_eq!(
        wrong.expect_err("not the holder").code(),
        Code::FailedPrecondition
    );
    let sent = grpc
        .complete_reminder(CompleteReminderRequest {
            id,
            claim_token: first.claim_token.clone(),
        })
        .await
        .expect("complete")
        .into_inner();
    assert_eq!((sent.state.as_str(), sent.sent), ("sent", true));
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM meeting_reminders WHERE sent = true")
            .await,
        1
    );

    let second = claimed[1].reminder.as_ref().expect("reminder").id;
    let released = grpc
        .release_reminder(ReleaseReminderRequest {
            id: second,
            claim_token: claimed[1].claim_token.clone(),
        })
        .await
        .expect("release")
        .into_inner();
    assert_eq!(released.state, "pending");
    let again = grpc
        .claim_due_reminders(claim(10, 1))
        .await
        .expect("claim")
        .into_inner()
        .reminders;
    assert_eq!(
        again
            .iter()
            .map(|r| r.reminder.as_ref().expect("r").id)
            .collect::<Vec<_>>(),
        [second]
    );

    // The third is still claimed (lease 60 s); the second's 1 s lease runs out.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let expired = grpc
        .claim_due_reminders(claim(10, 60))
        .await
        .expect("claim")
        .into_inner()
        .reminders;
    assert_eq!(
        expired
            .iter()
            .map(|r| r.reminder.as_ref().expect("r").id)
            .collect::<Vec<_>>(),
        [second]
    );
    let stale = grpc
        .complete_reminder(CompleteReminderRequest {
            id: second,
            claim_token: again[0].claim_token.clone(),
        })
        .await;
    assert_eq!(
        stale.expect_err("the lease was lost").code(),
        Code::FailedPrecondition
    );
    app.stop().await;
}

async fn reminders_of_a_canceled_meeting_are_never_handed_out(backend: Backend) {
    let app = spawn_app(backend).await;
    app.deliver(&["invitee-created-one-on-one.json"]).await;
    make_reminders_due(&app).await;
    app.deliver(&["invitee-canceled-by-invitee.json"]).await;
    // Even a row left pending by hand is not handed out while its meeting is canceled.
    app.execute("UPDATE meeting_reminders SET state = 'pending'")
        .await;
    let mut grpc = app.grpc().await;
    assert!(
        grpc.claim_due_reminders(claim(10, 60))
            .await
            .expect("claim")
            .into_inner()
            .reminders
            .is_empty()
    );
    app.stop().await;
}

async fn two_dispatchers_claiming_a_thousand_reminders_never_share_one(backend: Backend) {
    let app = spawn_app(backend).await;
    app.deliver(&["invitee-created-one-on-one.json"]).await;
    let values: Vec<String> = (0..1_000)
        .map(|i| {
            format!(
                "(1, 'r{i}', '2020-01-01T00:00:00+00:00', false, 'pending', 0, '2020-01-01T00:00:00+00:00', '2020-01-01T00:00:00+00:00')"
            )
        })
        .collect();
    app.execute("DELETE FROM meeting_reminders").await;
    app.execute(&format!(
        "INSERT INTO meeting_reminders (meeting_id, reminder_type, scheduled_time, sent, state, attempts, created_at, updated_at) VALUES {}",
        values.join(", ")
    ))
    .await;
    let dispatcher = |name: &'static str| {
        let grpc = app.grpc();
        async move {
            let mut grpc = grpc.await;
            let mut ids = Vec::new();
            for _ in 0..1_000 {
                let request = ClaimDueRemindersRequest {
                    limit: 25,
                    lease_seconds: 600,
                    claimant: name.into(),
                };
                let batch = grpc
                    .claim_due_reminders(request)
                    .await
                    .expect("claim")
                    .into_inner()
                    .reminders;
                if batch.is_empty() {
                    break;
                }
                ids.extend(batch.iter().map(|r| r.reminder.as_ref().expect("reminder").id));
            }
            ids
        }
    };
    let (a, b) = tokio::join!(dispatcher("a"), dispatcher("b"));
    let all: HashSet<i64> = a.iter().chain(&b).copied().collect();
    assert_eq!(a.len() + b.len(), 1_000, "each reminder handed out exactly once");
    assert_eq!(all.len(), 1_000);
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both dispatchers got work: {} / {}",
        a.len(),
        b.len()
    );
    app.stop().await;
}

async fn claim_requests_are_validated(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut grpc = app.grpc().await;
    // docs/grpc-api.md: limit 1-500, lease_seconds 1-3600; both ends of each are accepted.
    for (request, refused_field) in [
        (claim(1, 60), None),
        (claim(500, 60), None),
        (claim(0, 60), Some("limit")),
        (claim(501, 60), Some("limit")),
        (claim(10, 1), None),
        (claim(10, 3_600), None),
        (claim(10, 0), Some("lease_seconds")),
        (claim(10, 3_601), Some("lease_seconds")),
        (
            ClaimDueRemindersRequest {
                limit: 1,
                lease_seconds: 1,
                claimant: " ".into(),
            },
            Some("claimant"),
        ),
    ] {
        let shown = format!(
            "limit {} lease {} claimant {:?}",
            request.limit, request.lease_seconds, request.claimant
        );
        match (grpc.claim_due_reminders(request).await, refused_field) {
            (Ok(claimed), None) => assert!(claimed.into_inner().reminders.is_empty(), "{shown}"),
            (Err(status), Some(field)) => {
                assert_eq!(status.code(), Code::InvalidArgument, "{shown}");
                assert!(
                    status.message().starts_with(field),
                    "{shown}: {}",
                    status.message()
                );
            }
            (answer, _) => panic!("{shown}: expected {refused_field:?}, got {answer:?}"),
        }
    }
    let missing = grpc
        .complete_reminder(CompleteReminderRequest {
            id: 77,
            claim_token: "t".into(),
        })
        .await;
    assert_eq!(missing.expect_err("no such reminder").code(), Code::NotFound);
    app.stop().await;
}

async fn list_webhook_events_gives_newest_first_and_fifty_when_page_size_is_zero(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut delivered = Vec::new();
    for n in 0..60 {
        let answer = json(app.post_signed(&booking(n)).await).await;
        delivered.push(answer["result"]["webhookEventId"].as_i64().expect("inbox id"));
    }
    let newest_first: Vec<i64> = delivered.iter().rev().copied().collect();

    let mut grpc = app.grpc().await;
    let list = |page_size: u32, page_token: String| ListWebhookEventsRequest {
        outcome: Outcome::Unspecified as i32,
        page_size,
        page_token,
    };
    let first = grpc
        .list_webhook_events(list(0, String::new()))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(first.events.len(), 50, "page_size 0 means 50");
    assert_eq!(
        first.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        newest_first[..50],
        "newest first"
    );
    assert!(!first.next_page_token.is_empty());
    let rest = grpc
        .list_webhook_events(list(0, first.next_page_token))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        rest.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        newest_first[50..],
        "the next page continues where the first stopped"
    );
    assert!(rest.next_page_token.is_empty(), "the last page says so");

    let small = grpc
        .list_webhook_events(list(7, String::new()))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        small.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        newest_first[..7]
    );
    let everything = grpc
        .list_webhook_events(list(500, String::new()))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(everything.events.len(), 60);
    let too_big = grpc
        .list_webhook_events(list(501, String::new()))
        .await
        .expect_err("invalid");
    assert_eq!(too_big.code(), Code::InvalidArgument);
    assert!(
        too_big.message().starts_with("page_size"),
        "{}",
        too_big.message()
    );
    app.stop().await;
}

/// A CRM may create the lead at the moment its first booking arrives. Whichever commits first,
/// the booking ends up linked: a booking that found no lead is never committed after a lead whose
/// link looked for it.
async fn a_lead_created_while_its_booking_is_ingested_is_linked_to_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let grpc = app.grpc().await;
    let shared = &app;
    for round in 0..4 {
        let pairs = (0..64).map(|i| {
            let n = round * 64 + i;
            let email = format!("racing-{n}@example.com");
            let body = String::from_utf8(booking(n))
                .expect("UTF-8")
                .replace("jordan.ellis@example.com", &email)
                .into_bytes();
            let mut grpc = grpc.clone();
            async move {
                let (status, lead) = tokio::join!(
                    shared.post_signed_owned(body),
                    grpc.upsert_lead(UpsertLeadRequest {
                        email,
                        ..Default::default()
                    })
                );
                assert_eq!(status, 200);
                lead.expect("upsert");
            }
        });
        futures::future::join_all(pairs).await;
    }
    let unlinked = app
        .scalar(
            "SELECT COUNT(*) FROM meetings m JOIN leads l ON l.email = lower(m.invitee_email) \
             WHERE m.lead_id IS NULL",
        )
        .await;
    assert_eq!(unlinked, 0, "bookings left without their lead");
    assert_eq!(app.count("meetings").await, 256);
    app.stop().await;
}

crate::on_both_backends!(
    list_webhook_events_gives_newest_first_and_fifty_when_page_size_is_zero,
    list_meetings_filters_and_pages_through_every_match_once,
    leads_are_upserted_looked_up_and_linked_to_earlier_meetings,
    reminders_are_claimed_completed_released_and_reclaimed_after_the_lease,
    reminders_of_a_canceled_meeting_are_never_handed_out,
    two_dispatchers_claiming_a_thousand_reminders_never_share_one,
    claim_requests_are_validated,
    a_lead_created_while_its_booking_is_ingested_is_linked_to_it,
);
