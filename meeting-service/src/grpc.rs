//! The tonic implementation of `calendly.meetings.v1.MeetingService`: request validation,
//! the tracking-id span, and conversion between rows and protobuf. The rules live in `store`
//! and `domain`.

use chrono::Utc;
use proto::v1::{
    ClaimDueRemindersRequest, ClaimDueRemindersResponse, CompleteReminderRequest, DueReminder,
    GetLeadRequest, GetMeetingRequest, IngestCalendlyEventRequest, IngestCalendlyEventResponse, Lead,
    ListMeetingsRequest, ListMeetingsResponse, ListWebhookEventsRequest, ListWebhookEventsResponse, Meeting,
    Outcome, ReleaseReminderRequest, Reminder, ReplayWebhookEventRequest, Source, UpsertLeadRequest,
    WebhookEvent, get_lead_request, get_meeting_request::Key, meeting_service_server::MeetingService,
};
use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::Instrument;

use crate::{
    domain::{
        event::{to_timestamp, to_utc},
        lead::normalize_email,
        meeting::MeetingStatus,
    },
    entity::{lead, meeting, meeting_reminder, webhook_event},
    error::ServiceError,
    store::{
        IngestRequest, Ingested, Store,
        batch::Ingestor,
        leads::{LeadChange, LeadKey, valid_email},
        reads::{MeetingFilter, MeetingKey},
    },
};

/// Largest page a list call returns, and most reminders one claim hands out.
pub const MAX_PAGE_SIZE: u32 = 500;
/// Longest claim lease.
pub const MAX_LEASE_SECONDS: u32 = 3_600;
const DEFAULT_PAGE_SIZE: u32 = 50;

pub struct MeetingApi {
    store: Store,
    ingestor: Ingestor,
}

impl MeetingApi {
    pub fn new(store: Store, ingestor: Ingestor) -> Self {
        Self { store, ingestor }
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

fn request_span(method: &'static str, tracking_id: &str) -> tracing::Span {
    tracing::info_span!("grpc", method, tracking_id = %tracking_id)
}

/// Runs `work` inside the request's span, timing it and logging a failure with the span's fields.
async fn handle<T>(
    method: &'static str,
    tracking_id: &str,
    work: impl Future<Output = Result<T, ServiceError>>,
) -> Result<Response<T>, Status> {
    let span = request_span(method, tracking_id);
    async move {
        let started = std::time::Instant::now();
        let result = work.await;
        let code = match &result {
            Ok(_) => "ok",
            Err(ServiceError::InvalidArgument(_)) => "invalid_argument",
            Err(ServiceError::NotFound(_)) => "not_found",
            Err(ServiceError::AlreadyExists(_)) => "already_exists",
            Err(ServiceError::FailedPrecondition(_)) => "failed_precondition",
            Err(ServiceError::Unavailable(_)) => "unavailable",
            Err(ServiceError::Unexpected(_)) => "internal",
        };
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
        let tracking_id = tracking_id(request.metadata());
        let request = request.into_inner();
        handle("IngestCalendlyEvent", &tracking_id.clone(), async {
            let event = request
                .event
                .ok_or_else(|| ServiceError::InvalidArgument("event is required".into()))?;
            if event.event_name.trim().is_empty() {
                return Err(ServiceError::InvalidArgument(
                    "event.event_name is required".into(),
                ));
            }
            let source = Source::try_from(request.source).unwrap_or(Source::Unspecified);
            let ingested = self
                .ingestor
                .ingest(IngestRequest {
                    event,
                    raw_body: request.raw_body,
                    source,
                    tracking_id,
                })
                .await?;
            tracing::info!(
                outcome = ?ingested.outcome,
                webhook_event_id = ingested.webhook_event_id,
                meeting_id = ?ingested.meeting_id,
                lead_updated = ingested.lead_updated,
                reminders_scheduled = ingested.reminders_scheduled,
                "event stored"
            );
            Ok(ingest_response(ingested))
        })
        .await
    }

    async fn get_meeting(&self, request: Request<GetMeetingRequest>) -> Result<Response<Meeting>, Status> {
        let tracking_id = tracking_id(request.metadata());
        let request = request.into_inner();
        handle("GetMeeting", &tracking_id, async {
            let key = match &request.key {
                Some(Key::Id(id)) if *id > 0 => MeetingKey::Id(*id),
                Some(Key::CalendlyInviteeUri(uri)) if !uri.trim().is_empty() => {
                    MeetingKey::InviteeUri(uri.trim())
                }
                _ => {
                    return Err(ServiceError::InvalidArgument(
                        "key: give a positive id or a calendly_invitee_uri".into(),
                    ));
                }
            };
            let view = self
                .store
                .meeting(key)
                .await?
                .ok_or_else(|| ServiceError::NotFound("no such meeting".into()))?;
            Ok(meeting_message(&view.meeting, &view.reminders))
        })
        .await
    }

    async fn list_webhook_events(
        &self,
        request: Request<ListWebhookEventsRequest>,
    ) -> Result<Response<ListWebhookEventsResponse>, Status> {
        let tracking_id = tracking_id(request.metadata());
        let request = request.into_inner();
        handle("ListWebhookEvents", &tracking_id, async {
            let outcome = match Outcome::try_from(request.outcome) {
                Ok(Outcome::Unspecified) => None,
                Ok(outcome) => Some(outcome),
                Err(_) => return Err(ServiceError::InvalidArgument("outcome: unknown value".into())),
            };
            let page_size = page_size(request.page_size)?;
            let before_id = decode_page_token(&request.page_token)?;
            let page = self.store.webhook_events(outcome, page_size, before_id).await?;
            Ok(ListWebhookEventsResponse {
                events: page.events.iter().map(webhook_event_message).collect(),
                next_page_token: page.next_after_id.map(encode_page_token).unwrap_or_default(),
            })
        })
        .await
    }

    async fn replay_webhook_event(
        &self,
        request: Request<ReplayWebhookEventRequest>,
    ) -> Result<Response<IngestCalendlyEventResponse>, Status> {
        let tracking_id = tracking_id(request.metadata());
        let request = request.into_inner();
        handle("ReplayWebhookEvent", &tracking_id, async {
            if request.id <= 0 {
                return Err(ServiceError::InvalidArgument("id: must be positive".into()));
            }
            let ingested = self.store.replay(request.id, Utc::now()).await?;
            tracing::info!(outcome = ?ingested.outcome, webhook_event_id = request.id, "event replayed");
            Ok(ingest_response(ingested))
        })
        .await
    }
    async fn list_meetings(
        &self,
        request: Request<ListMeetingsRequest>,
    ) -> Result<Response<ListMeetingsResponse>, Status> {
        let tracking_id = tracking_id(request.metadata());
        let request = request.into_inner();
        handle("ListMeetings", &tracking_id, async {
            let status = match request.status.trim() {
                "" => None,
                value => Some(MeetingStatus::parse(value).ok_or_else(|| {
                    ServiceError::InvalidArgument(
                        "status: one of scheduled, canceled, rescheduled, no_show".into(),
                    )
                })?),
            };
            let filter = MeetingFilter {
                lead_id: request.lead_id,
                invitee_email: Some(normalize_email(&request.invitee_email)).filter(|e| !e.is_empty()),
                status,
                start_from: optional_time("start_from", request.start_from.as_ref())?,
                start_before: optional_time("start_before", request.start_before.as_ref())?,
            };
            let limit = page_size(request.page_size)?;
            let after = decode_page_token(&request.page_token)?;
            let page = self
                .store
                .meetings(&filter, limit, after, request.include_reminders)
                .await?;
            Ok(ListMeetingsResponse {
                meetings: page
                    .meetings
                    .iter()
                    .map(|v| meeting_message(&v.meeting, &v.reminders))
                    .collect(),
                next_page_token: page.next_after_id.map(encode_page_token).unwrap_or_default(),
            })
        })
        .await
    }

    async fn upsert_lead(&self, request: Request<UpsertLeadRequest>) -> Result<Response<Lead>, Status> {
        let tracking_id = tracking_id(request.metadata());
        let request = request.into_inner();
        handle("UpsertLead", &tracking_id, async {
            if request.id < 0 {
                return Err(ServiceError::InvalidArgument(
                    "id: must be positive, or 0 to match by email".into(),
                ));
            }
            let status = Some(request.status.trim().to_owned()).filter(|s| !s.is_empty());
            if status.as_ref().is_some_and(|s| s.len() > 64) {
                return Err(ServiceError::InvalidArgument(
                    "status: at most 64 characters".into(),
                ));
            }
            let change = LeadChange {
                id: (request.id > 0).then_some(request.id),
                email: valid_email(&request.email)?,
                name: request
                    .name
                    .map(|n| n.trim().to_owned())
                    .filter(|n| !n.is_empty()),
                status,
            };
            let lead = self.store.upsert_lead(change, Utc::now()).await?;
            Ok(lead_message(&lead))
        })
        .await
    }

    async fn get_lead(&self, request: Request<GetLeadRequest>) -> Result<Response<Lead>, Status> {
        let tracking_id = tracking_id(request.metadata());
        let request = request.into_inner();
        handle("GetLead", &tracking_id, async {
            let key = match &request.key {
                Some(get_lead_request::Key::Id(id)) if *id > 0 => LeadKey::Id(*id),
                Some(get_lead_request::Key::Email(email)) if !email.trim().is_empty() => {
                    LeadKey::Email(email)
                }
                _ => {
                    return Err(ServiceError::InvalidArgument(
                        "key: give a positive id or an email".into(),
                    ));
                }
            };
            let lead = self
                .store
                .lead(key)
                .await?
                .ok_or_else(|| ServiceError::NotFound("no such lead".into()))?;
            Ok(lead_message(&lead))
        })
        .await
    }

    async fn claim_due_reminders(
        &self,
        request: Request<ClaimDueRemindersRequest>,
    ) -> Result<Response<ClaimDueRemindersResponse>, Status> {
        let tracking_id = tracking_id(request.metadata());
        let request = request.into_inner();
        handle("ClaimDueReminders", &tracking_id, async {
            if !(1..=MAX_PAGE_SIZE).contains(&request.limit) {
                return Err(ServiceError::InvalidArgument(format!(
                    "limit: 1 to {MAX_PAGE_SIZE}"
                )));
            }
            if !(1..=MAX_LEASE_SECONDS).contains(&request.lease_seconds) {
                return Err(ServiceError::InvalidArgument(format!(
                    "lease_seconds: 1 to {MAX_LEASE_SECONDS}"
                )));
            }
            let claimant = request.claimant.trim();
            if claimant.is_empty() || claimant.len() > 128 {
                return Err(ServiceError::InvalidArgument(
                    "claimant: 1 to 128 characters".into(),
                ));
            }
            let lease = std::time::Duration::from_secs(u64::from(request.lease_seconds));
            let (token, claimed) = self
                .store
                .claim_due_reminders(u64::from(request.limit), lease, claimant, Utc::now())
                .await?;
            tracing::info!(claimant, claimed = claimed.len(), "reminders claimed");
            Ok(ClaimDueRemindersResponse {
                reminders: claimed
                    .iter()
                    .map(|c| DueReminder {
                        reminder: Some(reminder_message(&c.reminder)),
                        meeting: Some(meeting_message(&c.meeting, &[])),
                        claim_token: token.clone(),
                        claim_expires_at: c.reminder.claim_expires_at.map(to_timestamp),
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn complete_reminder(
        &self,
        request: Request<CompleteReminderRequest>,
    ) -> Result<Response<Reminder>, Status> {
        let tracking_id = tracking_id(request.metadata());
        let request = request.into_inner();
        handle("CompleteReminder", &tracking_id, async {
            validate_claim(request.id, &request.claim_token)?;
            let reminder = self
                .store
                .complete_reminder(request.id, &request.claim_token, Utc::now())
                .await?;
            Ok(reminder_message(&reminder))
        })
        .await
    }

    async fn release_reminder(
        &self,
        request: Request<ReleaseReminderRequest>,
    ) -> Result<Response<Reminder>, Status> {
        let tracking_id = tracking_id(request.metadata());
        let request = request.into_inner();
        handle("ReleaseReminder", &tracking_id, async {
            validate_claim(request.id, &request.claim_token)?;
            let reminder = self
                .store
                .release_reminder(request.id, &request.claim_token, Utc::now())
                .await?;
            Ok(reminder_message(&reminder))
        })
        .await
    }
}

fn validate_claim(id: i64, claim_token: &str) -> Result<(), ServiceError> {
    if id <= 0 {
        return Err(ServiceError::InvalidArgument("id: must be positive".into()));
    }
    if claim_token.trim().is_empty() {
        return Err(ServiceError::InvalidArgument("claim_token: required".into()));
    }
    Ok(())
}

/// Page tokens are opaque to callers; today they carry the last id seen.
fn encode_page_token(after_id: i64) -> String {
    format!("v1.{after_id}")
}

fn decode_page_token(token: &str) -> Result<Option<i64>, ServiceError> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .strip_prefix("v1.")
        .and_then(|id| id.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| ServiceError::InvalidArgument("page_token: not a token this service issued".into()))
}

fn ingest_response(ingested: Ingested) -> IngestCalendlyEventResponse {
    IngestCalendlyEventResponse {
        outcome: ingested.outcome as i32,
        duplicate: ingested.outcome == Outcome::Duplicate,
        processed: ingested.processed,
        lead_updated: ingested.lead_updated,
        errors: ingested.errors,
        webhook_event_id: ingested.webhook_event_id,
        meeting_id: ingested.meeting_id,
        reminders_scheduled: ingested.reminders_scheduled,
    }
}

pub(crate) fn meeting_message(row: &meeting::Model, reminders: &[meeting_reminder::Model]) -> Meeting {
    Meeting {
        id: row.id,
        lead_id: row.lead_id,
        calendly_event_uri: row.calendly_event_id.clone(),
        calendly_invitee_uri: row.calendly_invitee_id.clone(),
        meeting_name: row.meeting_name.clone(),
        start_time: row.start_time.map(to_timestamp),
        end_time: row.end_time.map(to_timestamp),
        status: row.status.clone(),
        invitee_email: row.invitee_email.clone(),
        invitee_name: row.invitee_name.clone(),
        invitee_timezone: row.invitee_timezone.clone(),
        cancel_reason: row.cancel_reason.clone(),
        canceled_by: row.canceled_by.clone(),
        canceler_type: row.canceler_type.clone(),
        rescheduled_from_invitee_uri: row.rescheduled_from_invitee_id.clone(),
        rescheduled_to_invitee_uri: row.rescheduled_to_invitee_id.clone(),
        no_show: row.no_show,
        created_at: Some(to_timestamp(row.created_at)),
        updated_at: Some(to_timestamp(row.updated_at)),
        reminders: reminders.iter().map(reminder_message).collect(),
    }
}

pub(crate) fn reminder_message(row: &meeting_reminder::Model) -> Reminder {
    Reminder {
        id: row.id,
        meeting_id: row.meeting_id,
        reminder_type: row.reminder_type.clone(),
        scheduled_time: Some(to_timestamp(row.scheduled_time)),
        state: row.state.clone(),
        sent: row.sent,
        attempts: row.attempts,
        sent_at: row.sent_at.map(to_timestamp),
    }
}

fn lead_message(row: &lead::Model) -> Lead {
    Lead {
        id: row.id,
        email: row.email.clone(),
        name: row.name.clone(),
        status: row.status.clone(),
        created_at: Some(to_timestamp(row.created_at)),
        updated_at: Some(to_timestamp(row.updated_at)),
    }
}

fn page_size(requested: u32) -> Result<u64, ServiceError> {
    match requested {
        0 => Ok(u64::from(DEFAULT_PAGE_SIZE)),
        n if n > MAX_PAGE_SIZE => Err(ServiceError::InvalidArgument(format!(
            "page_size: at most {MAX_PAGE_SIZE}"
        ))),
        n => Ok(u64::from(n)),
    }
}

fn optional_time(
    field: &str,
    timestamp: Option<&prost_types::Timestamp>,
) -> Result<Option<chrono::DateTime<Utc>>, ServiceError> {
    timestamp
        .map(|t| {
            to_utc(t).ok_or_else(|| ServiceError::InvalidArgument(format!("{field}: not a valid timestamp")))
        })
        .transpose()
}

fn webhook_event_message(row: &webhook_event::Model) -> WebhookEvent {
    WebhookEvent {
        id: row.id,
        tracking_id: row.tracking_id.clone(),
        event_name: row.event_type.clone(),
        dedupe_key: row.dedupe_key.clone(),
        outcome: crate::store::reads::outcome_of(row) as i32,
        error: row.error.clone(),
        attempts: row.attempts,
        received_at: Some(to_timestamp(row.received_at)),
        processed_at: row.processed_at.map(to_timestamp),
    }
}

/// Checks `authorization: Bearer <token>` in constant time. Registered on the meeting API only:
/// the health service stays open, because Kubernetes probes send no metadata.
#[derive(Clone)]
pub struct BearerAuth {
    expected: Option<Vec<u8>>,
}

impl BearerAuth {
    pub fn new(token: Option<&str>) -> Self {
        Self {
            expected: token.map(|t| format!("Bearer {t}").into_bytes()),
        }
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes())
            .unwrap_or_default();
        if bool::from(given.ct_eq(expected.as_slice())) {
            Ok(request)
        } else {
            tracing::warn!(security = true, "gRPC call without a valid bearer token rejected");
            Err(Status::unauthenticated(
                "a valid `authorization: Bearer <token>` is required",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_foreign_ones_are_rejected() {
        assert_eq!(decode_page_token(&encode_page_token(42)).ok(), Some(Some(42)));
        assert!(decode_page_token("42").is_err());
        assert!(matches!(decode_page_token(""), Ok(None)));
    }
}
