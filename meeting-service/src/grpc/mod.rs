//! The tonic implementation of `calendly.meetings.v1.MeetingService`. Each RPC validates its
//! request into a typed value ([`requests`]), calls the store, and converts the result
//! ([`convert`]); the rules live in `store` and `domain`. Every call runs in a span carrying the
//! caller's tracking id, and is timed by method and result code. [`auth`] holds the bearer check.

pub mod auth;
pub mod convert;
pub mod requests;

use chrono::Utc;
use proto::v1::{
    ClaimDueRemindersRequest, ClaimDueRemindersResponse, CompleteReminderRequest, GetLeadRequest,
    GetMeetingRequest, GetSyncStatusRequest, IngestCalendlyEventRequest, IngestCalendlyEventResponse, Lead,
    ListMeetingsRequest, ListMeetingsResponse, ListWebhookEventsRequest, ListWebhookEventsResponse, Meeting,
    RecordSyncRunRequest, ReleaseReminderRequest, Reminder, ReplayWebhookEventRequest, SyncRun, SyncStatus,
    UpsertLeadRequest, WatchMeetingChangesRequest, meeting_service_server::MeetingService,
};
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::Instrument;

pub use auth::BearerAuth;
use convert::{
    due_reminder, inbox_page, ingest_response, lead_message, meeting_view, meetings_page, reminder_message,
    sync_run_message, sync_status_message,
};
use requests::{Claim, HeldClaim, InboxQuery, Ingest, MeetingQuery, Replay, SyncStatusQuery};

use crate::{
    error::{Record, ServiceError},
    feed::{ChangeStream, Feed, Watch},
    store::{
        Store,
        batch::Ingestor,
        leads::{LeadChange, LeadKey},
        reads::MeetingKey,
        sync::NewSyncRun,
    },
};

pub struct MeetingApi {
    store: Store,
    ingestor: Ingestor,
    feed: Feed,
}

impl MeetingApi {
    pub fn new(store: Store, ingestor: Ingestor, feed: Feed) -> Self {
        Self {
            store,
            ingestor,
            feed,
        }
    }
}

/// The tracking id the adapter sent, or a new one for callers that send none.
fn tracking_id(metadata: &MetadataMap) -> String {
    metadata
        .get(proto::TRACKING_ID_METADATA_KEY)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty() && value.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Runs `work` on the validated request inside the call's span, timing it and mapping a
/// failure to its status.
async fn handle<R, V, T>(
    method: &'static str,
    request: Request<R>,
    work: impl AsyncFnOnce(V, String) -> Result<T, ServiceError>,
) -> Result<Response<T>, Status>
where
    V: TryFrom<R, Error = ServiceError>,
{
    let tracking_id = tracking_id(request.metadata());
    let span = tracing::info_span!("grpc", method, tracking_id = %tracking_id);
    async move {
        let started = std::time::Instant::now();
        let result = match V::try_from(request.into_inner()) {
            Ok(valid) => work(valid, tracking_id).await,
            Err(error) => Err(error),
        };
        let code = result.as_ref().map_or_else(ServiceError::label, |_| "ok");
        metrics::histogram!("calendly_grpc_request_duration_seconds", "method" => method, "code" => code)
            .record(started.elapsed().as_secs_f64());
        result.map(Response::new).map_err(Status::from)
    }
    .instrument(span)
    .await
}

#[tonic::async_trait]
impl MeetingService for MeetingApi {
    async fn ingest_calendly_event(
        &self,
        request: Request<IngestCalendlyEventRequest>,
    ) -> Result<Response<IngestCalendlyEventResponse>, Status> {
        handle(
            "IngestCalendlyEvent",
            request,
            async |ingest: Ingest, tracking_id| {
                let ingested = self.ingestor.ingest(ingest.with_tracking_id(tracking_id)).await?;
                tracing::info!(
                    outcome = ?ingested.outcome,
                    webhook_event_id = ingested.webhook_event_id,
                    meeting_id = ?ingested.meeting_id,
                    reminders_scheduled = ingested.reminders_scheduled,
                    "event stored"
                );
                Ok(ingest_response(ingested))
            },
        )
        .await
    }

    async fn get_meeting(&self, request: Request<GetMeetingRequest>) -> Result<Response<Meeting>, Status> {
        handle("GetMeeting", request, async |key: MeetingKey, _| {
            let view = self.store.meeting(&key).await?;
            view.map(|v| meeting_view(&v))
                .ok_or_else(|| ServiceError::not_found(Record::Meeting, key))
        })
        .await
    }

    async fn list_meetings(
        &self,
        request: Request<ListMeetingsRequest>,
    ) -> Result<Response<ListMeetingsResponse>, Status> {
        handle("ListMeetings", request, async |query: MeetingQuery, _| {
            // Read before the page, so that every change at or below it is in the page.
            let change_cursor = match query.change_cursor {
                Some(cursor) => cursor,
                None => self.store.feed_bounds().await?.latest,
            };
            let page = self
                .store
                .meetings(
                    &query.filter,
                    query.limit,
                    query.after_id,
                    query.include_reminders,
                )
                .await?;
            Ok(meetings_page(&page, change_cursor))
        })
        .await
    }

    async fn list_webhook_events(
        &self,
        request: Request<ListWebhookEventsRequest>,
    ) -> Result<Response<ListWebhookEventsResponse>, Status> {
        handle("ListWebhookEvents", request, async |query: InboxQuery, _| {
            let page = self
                .store
                .webhook_events(query.outcome, query.limit, query.before_id)
                .await?;
            Ok(inbox_page(&page))
        })
        .await
    }

    async fn replay_webhook_event(
        &self,
        request: Request<ReplayWebhookEventRequest>,
    ) -> Result<Response<IngestCalendlyEventResponse>, Status> {
        handle("ReplayWebhookEvent", request, async |Replay(id), tracking_id| {
            let ingested = self.store.replay(id, &tracking_id, Utc::now()).await?;
            tracing::info!(outcome = ?ingested.outcome, webhook_event_id = id, "event replayed");
            Ok(ingest_response(ingested))
        })
        .await
    }

    async fn upsert_lead(&self, request: Request<UpsertLeadRequest>) -> Result<Response<Lead>, Status> {
        handle("UpsertLead", request, async |change: LeadChange, tracking_id| {
            let lead = self.store.upsert_lead(change, &tracking_id, Utc::now()).await?;
            Ok(lead_message(&lead))
        })
        .await
    }

    async fn get_lead(&self, request: Request<GetLeadRequest>) -> Result<Response<Lead>, Status> {
        handle("GetLead", request, async |key: LeadKey, _| {
            let lead = self.store.lead(&key).await?;
            lead.map(|l| lead_message(&l))
                .ok_or_else(|| ServiceError::not_found(Record::Lead, key))
        })
        .await
    }

    async fn claim_due_reminders(
        &self,
        request: Request<ClaimDueRemindersRequest>,
    ) -> Result<Response<ClaimDueRemindersResponse>, Status> {
        handle("ClaimDueReminders", request, async |claim: Claim, _| {
            let (token, claimed) = self
                .store
                .claim_due_reminders(claim.limit, claim.lease, &claim.claimant, Utc::now())
                .await?;
            tracing::info!(
                claimant = claim.claimant,
                claimed = claimed.len(),
                "reminders claimed"
            );
            Ok(ClaimDueRemindersResponse {
                reminders: claimed.iter().map(|c| due_reminder(c, &token)).collect(),
            })
        })
        .await
    }

    async fn complete_reminder(
        &self,
        request: Request<CompleteReminderRequest>,
    ) -> Result<Response<Reminder>, Status> {
        handle("CompleteReminder", request, async |held: HeldClaim, _| {
            let reminder = self
                .store
                .complete_reminder(held.id, &held.claim_token, Utc::now())
                .await?;
            Ok(reminder_message(&reminder))
        })
        .await
    }

    async fn release_reminder(
        &self,
        request: Request<ReleaseReminderRequest>,
    ) -> Result<Response<Reminder>, Status> {
        handle("ReleaseReminder", request, async |held: HeldClaim, _| {
            let reminder = self
                .store
                .release_reminder(held.id, &held.claim_token, Utc::now())
                .await?;
            Ok(reminder_message(&reminder))
        })
        .await
    }

    type WatchMeetingChangesStream = ChangeStream;

    async fn watch_meeting_changes(
        &self,
        request: Request<WatchMeetingChangesRequest>,
    ) -> Result<Response<ChangeStream>, Status> {
        handle("WatchMeetingChanges", request, async |watch: Watch, _| {
            self.feed.open(watch).await
        })
        .await
    }

    async fn record_sync_run(
        &self,
        request: Request<RecordSyncRunRequest>,
    ) -> Result<Response<SyncRun>, Status> {
        handle("RecordSyncRun", request, async |run: NewSyncRun, _| {
            let recorded = self.store.record_sync_run(run).await?;
            metrics::counter!("calendly_reconcile_missed_events_total")
                .increment(u64::try_from(recorded.events_missed).unwrap_or_default());
            crate::sync_metrics::export(&self.store.sync_status().await?);
            tracing::info!(
                subscription_state = recorded.subscription_state,
                events_sent = recorded.events_sent,
                events_missed = recorded.events_missed,
                failures = recorded.failures,
                succeeded = recorded.succeeded,
                "reconcile run recorded"
            );
            Ok(sync_run_message(&recorded))
        })
        .await
    }

    async fn get_sync_status(
        &self,
        request: Request<GetSyncStatusRequest>,
    ) -> Result<Response<SyncStatus>, Status> {
        handle("GetSyncStatus", request, async |_: SyncStatusQuery, _| {
            Ok(sync_status_message(&self.store.sync_status().await?))
        })
        .await
    }
}
