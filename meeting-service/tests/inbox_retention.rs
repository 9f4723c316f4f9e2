//! Raw bodies leave the inbox after the retention period; each event's identity stays, so a late
//! Calendly retry is still recognised as a duplicate.

use std::time::Duration;

use chrono::Utc;
use meeting_service::{
    domain::{event::to_timestamp, reminders::default_offsets},
    entity::webhook_event,
    store::{self, IngestRequest, Store, StoreSettings, retry::RetryPolicy},
};
use proto::v1::{CalendlyEvent, EventKind, Invitee, Outcome, Source, calendly_event::Payload};
use sea_orm::EntityTrait;

fn event(uri: &str) -> CalendlyEvent {
    CalendlyEvent {
        event_name: "invitee.created".into(),
        kind: EventKind::InviteeCreated as i32,
        occurred_at: Some(to_timestamp(Utc::now())),
        payload: Some(Payload::Invitee(Invitee {
            uri: uri.into(),
            email: "a@example.com".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn request(event: &CalendlyEvent) -> IngestRequest {
    IngestRequest {
        event: event.clone(),
        raw_body: b"{\"raw\":true}".to_vec(),
        source: Source::Webhook,
        tracking_id: "t".into(),
    }
}

#[tokio::test]
async fn old_raw_bodies_are_pruned_and_late_retries_still_count_as_duplicates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("inbox.db").display());
    let store = Store::new(
        store::connect(&url, 2).await.expect("connect"),
        StoreSettings {
            reminder_offsets: default_offsets(),
            create_leads_for_unknown_invitees: false,
            retry: RetryPolicy::default(),
        },
    );
    let old = event("https://api.calendly.com/invitees/old");
    let recent = event("https://api.calendly.com/invitees/recent");
    let forty_days_ago = Utc::now() - chrono::Duration::days(40);
    store
        .ingest(request(&old), forty_days_ago)
        .await
        .expect("old event");
    store
        .ingest(request(&recent), Utc::now())
        .await
        .expect("recent event");

    let pruned = store
        .prune_raw_bodies(Duration::from_secs(30 * 86_400))
        .await
        .expect("prune");
    assert_eq!(pruned, 1);
    let rows = webhook_event::Entity::find()
        .all(store.connection())
        .await
        .expect("rows");
    let body_of = |uri: &str| {
        rows.iter()
            .find(|r| r.payload_uri.as_deref() == Some(uri))
            .expect("row")
            .raw_body
            .clone()
    };
    assert_eq!(body_of("https://api.calendly.com/invitees/old"), None);
    assert!(body_of("https://api.calendly.com/invitees/recent").is_some());

    let late_retry = store.ingest(request(&old), Utc::now()).await.expect("retry");
    assert_eq!(late_retry.outcome, Outcome::Duplicate);
    assert_eq!(
        store
            .prune_raw_bodies(Duration::from_secs(30 * 86_400))
            .await
            .expect("prune"),
        0
    );
}
