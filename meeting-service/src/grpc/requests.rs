//! Each RPC's request, validated once into a type the store takes: `TryFrom<…Request>`, failing
//! with `INVALID_ARGUMENT` whose message starts with the field's name.

use std::time::Duration;

use chrono::{DateTime, Utc};
use proto::v1::{
    ClaimDueRemindersRequest, CompleteReminderRequest, GetLeadRequest, GetMeetingRequest,
    GetSyncStatusRequest, IngestCalendlyEventRequest, ListMeetingsRequest, ListWebhookEventsRequest, Outcome,
    RecordSyncRunRequest, ReleaseReminderRequest, ReplayWebhookEventRequest, Source, SubscriptionState,
    UpsertLeadRequest, WatchMeetingChangesRequest, get_lead_request, get_meeting_request,
};

use super::convert::{decode_meetings_page_token, decode_page_token};
use crate::{
    domain::{event::to_utc, lead::normalize_email, meeting::MeetingStatus},
    error::ServiceError,
    feed::{Watch, decode_cursor},
    store::{
        IngestRequest,
        changes::ChangeFilter,
        leads::{LeadChange, LeadKey, valid_email},
        reads::{MeetingFilter, MeetingKey},
        sync::NewSyncRun,
    },
};

/// Largest page a list call returns, and most reminders one claim hands out.
pub const MAX_PAGE_SIZE: u32 = 500;
/// Longest claim lease.
pub const MAX_LEASE_SECONDS: u32 = 3_600;
const DEFAULT_PAGE_SIZE: u32 = 50;

/// `IngestCalendlyEvent`: an event with a name, and where it came from.
pub struct Ingest {
    pub event: proto::v1::CalendlyEvent,
    pub raw_body: Vec<u8>,
    pub source: Source,
}

impl TryFrom<IngestCalendlyEventRequest> for Ingest {
    type Error = ServiceError;

    fn try_from(request: IngestCalendlyEventRequest) -> Result<Self, ServiceError> {
        let event = request
            .event
            .ok_or_else(|| ServiceError::invalid("event", "is required"))?;
        if event.event_name.trim().is_empty() {
            return Err(ServiceError::invalid("event.event_name", "is required"));
        }
        Ok(Self {
            event,
            raw_body: request.raw_body,
            source: Source::try_from(request.source).unwrap_or(Source::Unspecified),
        })
    }
}

impl Ingest {
    pub fn with_tracking_id(self, tracking_id: String) -> IngestRequest {
        IngestRequest {
            event: self.event,
            raw_body: self.raw_body,
            source: self.source,
            tracking_id,
        }
    }
}

impl TryFrom<GetMeetingRequest> for MeetingKey {
    type Error = ServiceError;

    fn try_from(request: GetMeetingRequest) -> Result<Self, ServiceError> {
        match request.key {
            Some(get_meeting_request::Key::Id(id)) if id > 0 => Ok(Self::Id(id)),
            Some(get_meeting_request::Key::CalendlyInviteeUri(uri)) if !uri.trim().is_empty() => {
                Ok(Self::InviteeUri(uri.trim().to_owned()))
            }
            _ => Err(ServiceError::invalid(
                "key",
                "give a positive id or a calendly_invitee_uri",
            )),
        }
    }
}

/// `ListMeetings`: the filter and the page.
pub struct MeetingQuery {
    pub filter: MeetingFilter,
    pub limit: u64,
    pub after_id: Option<i64>,
    /// The listing's change cursor, from the page token after its first page.
    pub change_cursor: Option<i64>,
    pub include_reminders: bool,
}

impl TryFrom<ListMeetingsRequest> for MeetingQuery {
    type Error = ServiceError;

    fn try_from(request: ListMeetingsRequest) -> Result<Self, ServiceError> {
        let status = match request.status.trim() {
            "" => None,
            value => Some(MeetingStatus::parse(value).ok_or_else(|| {
                ServiceError::invalid("status", "one of scheduled, canceled, rescheduled, no_show")
            })?),
        };
        let (after_id, change_cursor) = decode_meetings_page_token(&request.page_token)?;
        Ok(Self {
            filter: MeetingFilter {
                lead_id: request.lead_id,
                invitee_email: Some(normalize_email(&request.invitee_email)).filter(|e| !e.is_empty()),
                status,
                start_from: optional_time("start_from", request.start_from.as_ref())?,
                start_before: optional_time("start_before", request.start_before.as_ref())?,
            },
            limit: page_size(request.page_size)?,
            after_id,
            change_cursor,
            include_reminders: request.include_reminders,
        })
    }
}

/// `WatchMeetingChanges`: where to resume, and which changes.
impl TryFrom<WatchMeetingChangesRequest> for Watch {
    type Error = ServiceError;

    fn try_from(request: WatchMeetingChangesRequest) -> Result<Self, ServiceError> {
        let mut kinds = Vec::new();
        for value in &request.kinds {
            let kind = proto::v1::ChangeKind::try_from(*value)
                .ok()
                .filter(|kind| *kind != proto::v1::ChangeKind::Unspecified)
                .ok_or_else(|| ServiceError::invalid("kinds", format!("{value} is not a change kind")))?;
            if !kinds.contains(&kind.label()) {
                kinds.push(kind.label());
            }
        }
        if request.lead_id.is_some_and(|id| id <= 0) {
            return Err(ServiceError::invalid("lead_id", "must be positive"));
        }
        Ok(Self {
            after: decode_cursor(&request.cursor)?,
            filter: ChangeFilter {
                kinds,
                lead_id: request.lead_id,
            },
        })
    }
}

/// `RecordSyncRun`: a finished run, its counts in range.
impl TryFrom<RecordSyncRunRequest> for NewSyncRun {
    type Error = ServiceError;

    fn try_from(request: RecordSyncRunRequest) -> Result<Self, ServiceError> {
        let run = request
            .run
            .ok_or_else(|| ServiceError::invalid("run", "is required"))?;
        let started_at = required_time("run.started_at", run.started_at.as_ref())?;
        let finished_at = required_time("run.finished_at", run.finished_at.as_ref())?;
        if finished_at < started_at {
            return Err(ServiceError::invalid(
                "run.finished_at",
                "is before run.started_at",
            ));
        }
        let subscription_state = SubscriptionState::try_from(run.subscription_state)
            .ok()
            .filter(|state| *state != SubscriptionState::Unspecified)
            .ok_or_else(|| ServiceError::invalid("run.subscription_state", "is required"))?;
        let count = |field: &'static str, value: u64| {
            i64::try_from(value).map_err(|_| ServiceError::invalid(field, "is out of range"))
        };
        let events_sent = count("run.events_sent", run.events_sent)?;
        let events_missed = count("run.events_missed", run.events_missed)?;
        if events_missed > events_sent {
            return Err(ServiceError::invalid(
                "run.events_missed",
                "is more than run.events_sent",
            ));
        }
        let text = |field: &'static str, value: String, limit: usize| {
            if value.len() > limit {
                Err(ServiceError::invalid(field, format!("at most {limit} bytes")))
            } else {
                Ok(Some(value).filter(|v| !v.is_empty()))
            }
        };
        Ok(Self {
            started_at,
            finished_at,
            subscription_state,
            subscription_uri: text("run.subscription_uri", run.subscription_uri, 1_024)?,
            retry_started_at: optional_time("run.retry_started_at", run.retry_started_at.as_ref())?,
            events_sent,
            events_missed,
            failures: count("run.failures", run.failures)?,
            succeeded: run.succeeded,
            error: text("run.error", run.error, 2_000)?,
        })
    }
}

/// `GetSyncStatus`: nothing to validate.
pub struct SyncStatusQuery;

impl TryFrom<GetSyncStatusRequest> for SyncStatusQuery {
    type Error = ServiceError;

    fn try_from(_: GetSyncStatusRequest) -> Result<Self, ServiceError> {
        Ok(Self)
    }
}

/// `ListWebhookEvents`: one outcome or all, and the page (newest first).
pub struct InboxQuery {
    pub outcome: Option<Outcome>,
    pub limit: u64,
    pub before_id: Option<i64>,
}

impl TryFrom<ListWebhookEventsRequest> for InboxQuery {
    type Error = ServiceError;

    fn try_from(request: ListWebhookEventsRequest) -> Result<Self, ServiceError> {
        let outcome = match Outcome::try_from(request.outcome) {
            Ok(Outcome::Unspecified) => None,
            Ok(outcome) => Some(outcome),
            Err(_) => return Err(ServiceError::invalid("outcome", "unknown value")),
        };
        Ok(Self {
            outcome,
            limit: page_size(request.page_size)?,
            before_id: decode_page_token(&request.page_token)?,
        })
    }
}

/// `ReplayWebhookEvent`: the inbox row's id.
pub struct Replay(pub i64);

impl TryFrom<ReplayWebhookEventRequest> for Replay {
    type Error = ServiceError;

    fn try_from(request: ReplayWebhookEventRequest) -> Result<Self, ServiceError> {
        positive_id(request.id).map(Self)
    }
}

impl TryFrom<UpsertLeadRequest> for LeadChange {
    type Error = ServiceError;

    fn try_from(request: UpsertLeadRequest) -> Result<Self, ServiceError> {
        if request.id < 0 {
            return Err(ServiceError::invalid(
                "id",
                "must be positive, or 0 to match by email",
            ));
        }
        let status = Some(request.status.trim().to_owned()).filter(|s| !s.is_empty());
        if status.as_ref().is_some_and(|s| s.len() > 64) {
            return Err(ServiceError::invalid("status", "at most 64 characters"));
        }
        Ok(Self {
            id: (request.id > 0).then_some(request.id),
            email: valid_email(&request.email)?,
            name: request
                .name
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty()),
            status,
        })
    }
}

impl TryFrom<GetLeadRequest> for LeadKey {
    type Error = ServiceError;

    fn try_from(request: GetLeadRequest) -> Result<Self, ServiceError> {
        match request.key {
            Some(get_lead_request::Key::Id(id)) if id > 0 => Ok(Self::Id(id)),
            Some(get_lead_request::Key::Email(email)) if !email.trim().is_empty() => Ok(Self::Email(email)),
            _ => Err(ServiceError::invalid("key", "give a positive id or an email")),
        }
    }
}

/// `ClaimDueReminders`: how many, for how long, for whom.
pub struct Claim {
    pub limit: u64,
    pub lease: Duration,
    pub claimant: String,
}

impl TryFrom<ClaimDueRemindersRequest> for Claim {
    type Error = ServiceError;

    fn try_from(request: ClaimDueRemindersRequest) -> Result<Self, ServiceError> {
        if !(1..=MAX_PAGE_SIZE).contains(&request.limit) {
            return Err(ServiceError::invalid("limit", format!("1 to {MAX_PAGE_SIZE}")));
        }
        if !(1..=MAX_LEASE_SECONDS).contains(&request.lease_seconds) {
            return Err(ServiceError::invalid(
                "lease_seconds",
                format!("1 to {MAX_LEASE_SECONDS}"),
            ));
        }
        let claimant = request.claimant.trim();
        if claimant.is_empty() || claimant.len() > 128 {
            return Err(ServiceError::invalid("claimant", "1 to 128 characters"));
        }
        Ok(Self {
            limit: u64::from(request.limit),
            lease: Duration::from_secs(u64::from(request.lease_seconds)),
            claimant: claimant.to_owned(),
        })
    }
}

/// `CompleteReminder` / `ReleaseReminder`: the reminder and the claim held on it.
pub struct HeldClaim {
    pub id: i64,
    pub claim_token: String,
}

impl HeldClaim {
    fn new(id: i64, claim_token: String) -> Result<Self, ServiceError> {
        let id = positive_id(id)?;
        if claim_token.trim().is_empty() {
            return Err(ServiceError::invalid("claim_token", "required"));
        }
        Ok(Self { id, claim_token })
    }
}

impl TryFrom<CompleteReminderRequest> for HeldClaim {
    type Error = ServiceError;

    fn try_from(request: CompleteReminderRequest) -> Result<Self, ServiceError> {
        Self::new(request.id, request.claim_token)
    }
}

impl TryFrom<ReleaseReminderRequest> for HeldClaim {
    type Error = ServiceError;

    fn try_from(request: ReleaseReminderRequest) -> Result<Self, ServiceError> {
        Self::new(request.id, request.claim_token)
    }
}

fn positive_id(id: i64) -> Result<i64, ServiceError> {
    if id > 0 {
        Ok(id)
    } else {
        Err(ServiceError::invalid("id", "must be positive"))
    }
}

fn page_size(requested: u32) -> Result<u64, ServiceError> {
    match requested {
        0 => Ok(u64::from(DEFAULT_PAGE_SIZE)),
        n if n > MAX_PAGE_SIZE => Err(ServiceError::invalid(
            "page_size",
            format!("at most {MAX_PAGE_SIZE}"),
        )),
        n => Ok(u64::from(n)),
    }
}

fn required_time(
    field: &'static str,
    timestamp: Option<&prost_types::Timestamp>,
) -> Result<DateTime<Utc>, ServiceError> {
    optional_time(field, timestamp)?.ok_or_else(|| ServiceError::invalid(field, "is required"))
}

fn optional_time(
    field: &'static str,
    timestamp: Option<&prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, ServiceError> {
    timestamp
        .map(|t| to_utc(t).ok_or_else(|| ServiceError::invalid(field, "not a valid timestamp")))
        .transpose()
}
