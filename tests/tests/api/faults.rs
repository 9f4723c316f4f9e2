//! Faults answered the way Calendly needs: a meeting service killed mid-load gives only 503s with
//! `Retry-After` (never a 500, which would page someone for a bug), nothing answered 200 is lost,
//! and deliveries succeed again once it is back.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use sea_orm::Database;

use crate::helpers::{AdapterOnly, Backend, MeetingServiceProcess, RowCounter, TestDatabase, booking};

/// One answer as Calendly would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Stored,
    /// A 503 with `Retry-After` and the documented code.
    Unavailable,
    /// Anything else: status, code, whether `Retry-After` was there.
    Other(u16, String, bool),
}

async fn answer(adapter: &AdapterOnly, n: usize) -> Answer {
    let response = adapter
        .post_signed(&booking(n))
        .await
        .expect("the adapter answers");
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let code = body["code"].as_str().unwrap_or_default().to_owned();
    match (status, code.as_str(), retry_after) {
        (200, _, _) => Answer::Stored,
        (503, "MEETING_SERVICE_UNAVAILABLE", true) => Answer::Unavailable,
        _ => Answer::Other(status, code, retry_after),
    }
}

async fn killing_the_meeting_service_mid_load_gives_only_503s_and_loses_nothing(backend: Backend) {
    const SENDERS: usize = 8;
    /// Deliveries stored before the kill, so it lands mid-load.
    const BEFORE_KILL: usize = 30;
    /// Answers collected while the meeting service is down.
    const WHILE_DOWN: usize = 40;
    const AT_MOST: usize = 5_000;

    let database = TestDatabase::create(backend).await;
    let mut meeting = MeetingServiceProcess::start(&database.url).await;
    let addr = meeting.addr.clone();
    let adapter = AdapterOnly::start(&addr).await;

    let next = AtomicUsize::new(0);
    let down = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let answers: Mutex<BTreeMap<usize, Vec<Answer>>> = Mutex::new(BTreeMap::new());
    let stored = AtomicUsize::new(0);
    let answered_while_down = AtomicUsize::new(0);
    let sender = || async {
        while !stop.load(Ordering::SeqCst) {
            let n = next.fetch_add(1, Ordering::SeqCst);
            if n >= AT_MOST {
                return;
            }
            let was_down = down.load(Ordering::SeqCst);
            let got = answer(&adapter, n).await;
            if got == Answer::Stored {
                stored.fetch_add(1, Ordering::SeqCst);
            }
            if was_down && down.load(Ordering::SeqCst) {
                answered_while_down.fetch_add(1, Ordering::SeqCst);
            }
            answers.lock().expect("lock").entry(n).or_default().push(got);
        }
    };
    let conductor = async {
        while stored.load(Ordering::SeqCst) < BEFORE_KILL {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        down.store(true, Ordering::SeqCst);
        meeting.kill();
        while answered_while_down.load(Ordering::SeqCst) < WHILE_DOWN {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let restarted = MeetingServiceProcess::start_on(&database.url, &addr).await;
        down.store(false, Ordering::SeqCst);
        let stored_at_restart = stored.load(Ordering::SeqCst);
        while stored.load(Ordering::SeqCst) < stored_at_restart + BEFORE_KILL {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.store(true, Ordering::SeqCst);
        restarted
    };
    let (_, restarted) = tokio::join!(
        futures::future::join_all((0..SENDERS).map(|_| sender())),
        conductor
    );

    let mut answers = answers.into_inner().expect("lock");
    let others: Vec<_> = answers
        .iter()
        .flat_map(|(n, got)| got.iter().map(move |a| (n, a)))
        .filter(|(_, a)| matches!(a, Answer::Other(..)))
        .collect();
    assert!(
        others.is_empty(),
        "every failure is a 503 with Retry-After and MEETING_SERVICE_UNAVAILABLE: {others:?}"
    );
    let refused: Vec<usize> = answers
        .iter()
        .filter(|(_, got)| got.last() == Some(&Answer::Unavailable))
        .map(|(n, _)| *n)
        .collect();
    assert!(
        !refused.is_empty(),
        "the kill landed while deliveries were being made"
    );

    // Calendly's retries of what was refused: every one is stored now.
    for n in refused {
        let got = answer(&adapter, n).await;
        assert_eq!(
            got,
            Answer::Stored,
            "delivery {n} once the meeting service is back"
        );
        answers.entry(n).or_default().push(got);
    }
    let db = Database::connect(&database.url).await.expect("connect");
    let counter = RowCounter(&db);
    let sent = answers.len() as i64;
    assert_eq!(
        counter.scalar("SELECT COUNT(*) FROM meetings").await,
        sent,
        "each delivery stored once"
    );
    assert_eq!(counter.scalar("SELECT COUNT(*) FROM webhook_events").await, sent);
    assert_eq!(
        counter.scalar("SELECT COUNT(*) FROM meeting_reminders").await,
        sent * 3
    );
    db.close().await.ok();
    adapter.stop().await;
    drop(restarted);
}

crate::on_both_backends!(killing_the_meeting_service_mid_load_gives_only_503s_and_loses_nothing);
