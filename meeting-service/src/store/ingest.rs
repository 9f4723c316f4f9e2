//! The ingest transaction: inbox row, meeting, lead link and status, reminders; all or nothing.

use chrono::{DateTime, SubsecRound, Utc};
use prost::Message;
use proto::v1::{CalendlyEvent, Outcome, Source};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use tracing::Instrument;

use super::{Store, retry::is_transient};
use crate::{
    domain::{
        event::{Disposition, InviteeEvent, classify, dedupe_key, payload_uri, storable},
        lead::{NEW_LEAD_STATUS, lead_status_for, normalize_email},
        meeting::{CancellationRecord, MeetingState, MeetingStatus, derive},
        reminders::{ExistingReminder, ReminderAction, ReminderState, reconcile},
    },
    entity::{lead, meeting, meeting_reminder, webhook_event},
    error::ServiceError,
};

pub struct IngestRequest {
    pub event: CalendlyEvent,
    pub raw_body: Vec<u8>,
    pub source: Source,
    pub tracking_id: String,
}

/// What happened to one event; mirrors `IngestCalendlyEventResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    pub outcome: Outcome,
    pub webhook_event_id: i64,
    pub processed: bool,
    pub lead_updated: bool,
    pub errors: Vec<String>,
    pub meeting_id: Option<i64>,
    pub reminders_scheduled: u32,
}

/// The effect of applying one invitee event inside the transaction.
struct Applied {
    meeting_id: i64,
    lead_updated: bool,
    reminders_scheduled: u32,
}

/// Times are stored with microsecond precision, the finest PostgreSQL keeps, so that a value
/// read back compares equal to the one written on both backends.
pub(crate) fn db_time(time: DateTime<Utc>) -> DateTime<Utc> {
    time.trunc_subsecs(6)
}

fn source_name(source: Source) -> &'static str {
    match source {
        Source::Webhook => "webhook",
        Source::TestEndpoint => "test_endpoint",
        Source::Backfill => "backfill",
        Source::Unspecified => "unspecified",
    }
}

pub(crate) fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Processed => "processed",
        Outcome::Duplicate => "duplicate",
        Outcome::Ignored => "ignored",
        Outcome::Failed => "failed",
        Outcome::Unspecified => "unspecified",
    }
}

pub(crate) fn parse_outcome(value: &str) -> Outcome {
    match value {
        "processed" => Outcome::Processed,
        "duplicate" => Outcome::Duplicate,
        "ignored" => Outcome::Ignored,
        "failed" => Outcome::Failed,
        _ => Outcome::Unspecified,
    }
}

enum Attempt {
    Stored(Ingested),
    Duplicate,
}

impl Store {
    /// Stores `request` in the inbox and applies it, once. Retries transient failures; when they
    /// persist, answers `Unavailable` with nothing stored.
    #[tracing::instrument(skip_all, fields(event = %request.event.event_name))]
    pub async fn ingest(&self, request: IngestRequest, now: DateTime<Utc>) -> Result<Ingested, ServiceError> {
        let now = db_time(now);
        let key = dedupe_key(&request.event, &request.raw_body);
        let disposition = classify(&request.event, now);
        let label = request.event.kind_name();
        let result = self
            .with_retries("ingest", || self.try_ingest(&request, &key, &disposition, now))
            .await;
        let ingested = match result? {
            Attempt::Stored(ingested) => ingested,
            Attempt::Duplicate => self.describe_duplicate(&key).await?,
        };
        metrics::counter!(
            "calendly_ingested_events_total",
            "event" => label,
            "outcome" => outcome_name(ingested.outcome)
        )
        .increment(1);
        Ok(ingested)
    }

    /// Applies a stored inbox event again, from its stored protobuf; the row's outcome, error and
    /// attempt count are updated in the same transaction.
    pub async fn replay(&self, id: i64, now: DateTime<Utc>) -> Result<Ingested, ServiceError> {
        let now = db_time(now);
        let row = webhook_event::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .map_err(ServiceError::from_db)?
            .ok_or_else(|| ServiceError::NotFound(format!("no webhook event with id {id}")))?;
        let event = CalendlyEvent::decode(row.event_proto.as_slice()).map_err(|e| {
            ServiceError::Unexpected(anyhow::anyhow!("stored event {id} does not decode: {e}"))
        })?;
        let disposition = classify(&event, row.received_at);
        let (outcome, errors) = planned_outcome(&disposition);
        self.with_retries("replay", || async {
            let txn = self.db.begin().await?;
            // The row's new outcome first: an applied event is part of its invitee's history, which
            // is read by the payload URI, so that is taken from the protobuf as it is now.
            let mut active: webhook_event::ActiveModel = row.clone().into();
            active.payload_uri = Set(payload_uri(&event));
            active.outcome = Set(outcome_name(outcome).to_owned());
            active.error = Set(errors_text(&errors));
            active.attempts = Set(row.attempts.saturating_add(1));
            active.processed_at = Set(Some(now));
            active.update(&txn).await?;
            let applied = match &disposition {
                Disposition::Apply(event) => Some(self.apply_invitee_event(&txn, event, now).await?),
                Disposition::Ignore(_) | Disposition::Fail(_) => None,
            };
            txn.commit().await?;
            Ok(ingested(outcome, row.id, errors.clone(), applied))
        })
        .await
    }

    pub(crate) async fn with_retries<T, F, Fut>(
        &self,
        operation: &'static str,
        mut attempt: F,
    ) -> Result<T, ServiceError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, DbErr>>,
    {
        let policy = self.settings.retry;
        let mut tries = 1;
        loop {
            match attempt().instrument(tracing::Span::current()).await {
                Ok(value) => return Ok(value),
                Err(error) if is_transient(&error) && tries < policy.max_attempts => {
                    let delay = policy.delay_after(tries);
                    tracing::warn!(operation, attempt = tries, ?delay, error = %error, "transient database error; retrying");
                    metrics::counter!("calendly_db_retries_total", "operation" => operation).increment(1);
                    tokio::time::sleep(delay).await;
                    tries += 1;
                }
                Err(error) => {
                    tracing::error!(operation, attempts = tries, error = %error, "database transaction failed; rolled back");
                    return Err(ServiceError::from_db(error));
                }
            }
        }
    }

    async fn try_ingest(
        &self,
        request: &IngestRequest,
        key: &str,
        disposition: &Disposition,
        now: DateTime<Utc>,
    ) -> Result<Attempt, DbErr> {
        let txn = self.db.begin().await?;
        let (outcome, errors) = planned_outcome(disposition);
        // The inbox row goes first: its unique key settles duplicates before any other write, and
        // on SQLite the first write takes the write lock, so the transaction never has to upgrade.
        let inbox = webhook_event::ActiveModel {
            tracking_id: Set(request.tracking_id.clone()),
            event_type: Set(storable(&request.event.event_name)),
            dedupe_key: Set(key.to_owned()),
            source: Set(source_name(request.source).to_owned()),
            payload_uri: Set(payload_uri(&request.event)),
            raw_body: Set(Some(request.raw_body.clone())),
            event_proto: Set(request.event.encode_to_vec()),
            received_at: Set(now),
            processed_at: Set(Some(now)),
            outcome: Set(outcome_name(outcome).to_owned()),
            error: Set(errors_text(&errors).map(|e| storable(&e))),
            attempts: Set(1),
            ..Default::default()
        };
        let inbox = match inbox.insert(&txn).await {
            Ok(row) => row,
            Err(error)
                if error
                    .sql_err()
                    .is_some_and(|e| matches!(e, sea_orm::SqlErr::UniqueConstraintViolation(_))) =>
            {
                txn.rollback().await?;
                return Ok(Attempt::Duplicate);
            }
            Err(error) => return Err(error),
        };
        let applied = match disposition {
            Disposition::Apply(event) => Some(self.apply_invitee_event(&txn, event, now).await?),
            Disposition::Ignore(_) | Disposition::Fail(_) => None,
        };
        txn.commit().await?;
        Ok(Attempt::Stored(ingested(outcome, inbox.id, errors, applied)))
    }

    async fn describe_duplicate(&self, key: &str) -> Result<Ingested, ServiceError> {
        let original = webhook_event::Entity::find()
            .filter(webhook_event::Column::DedupeKey.eq(key))
            .one(&self.db)
            .await
            .map_err(ServiceError::from_db)?
            .ok_or_else(|| ServiceError::Unexpected(anyhow::anyhow!("duplicate key {key} has no row")))?;
        let meeting_id = match &original.payload_uri {
            Some(uri) => meeting::Entity::find()
                .filter(meeting::Column::CalendlyInviteeId.eq(uri.as_str()))
                .one(&self.db)
                .await
                .map_err(ServiceError::from_db)?
                .map(|m| m.id),
            None => None,
        };
        Ok(Ingested {
            outcome: Outcome::Duplicate,
            webhook_event_id: original.id,
            processed: original.outcome == outcome_name(Outcome::Processed),
            lead_updated: false,
            errors: Vec::new(),
            meeting_id,
            reminders_scheduled: 0,
        })
    }

    /// Brings `event`'s meeting in line with every applied event of its invitee, this one
    /// included: it must already be in the inbox as processed, in this transaction.
    async fn apply_invitee_event(
        &self,
        txn: &DatabaseTransaction,
        event: &InviteeEvent,
        now: DateTime<Utc>,
    ) -> Result<Applied, DbErr> {
        let invitee_uri = event.facts.invitee_uri.as_str();
        // The lock comes before reading the history, so a concurrent event of this invitee has
        // either committed (and is read) or waits for this transaction.
        let existing = lock_for_update(
            meeting::Entity::find().filter(meeting::Column::CalendlyInviteeId.eq(invitee_uri)),
            txn.get_database_backend(),
        )
        .one(txn)
        .await?;
        let before = existing.as_ref().map(state_of);
        let after = derive(invitee_history(txn, invitee_uri).await?).ok_or_else(|| {
            DbErr::Custom(format!(
                "the event being applied is missing from the history of {invitee_uri}"
            ))
        })?;
        let status = after.status();

        let lead_before = existing.as_ref().and_then(|m| m.lead_id);
        let lead_id = match lead_before {
            Some(id) => Some(id),
            None => self.find_or_create_lead(txn, &after, now).await?,
        };
        let row = match existing {
            Some(row) if before.as_ref() == Some(&after) && row.lead_id == lead_id => row,
            Some(row) => {
                let mut active: meeting::ActiveModel = row.into();
                write_state(&mut active, &after);
                active.lead_id = Set(lead_id);
                active.updated_at = Set(now);
                active.update(txn).await?
            }
            None => {
                let mut active = meeting::ActiveModel {
                    lead_id: Set(lead_id),
                    created_at: Set(now),
                    updated_at: Set(now),
                    ..Default::default()
                };
                write_state(&mut active, &after);
                active.insert(txn).await?
            }
        };

        let reminders_scheduled = self
            .reconcile_reminders(txn, row.id, status, after.start_time, now)
            .await?;
        let lead_status_changed = match lead_id {
            Some(id) => refresh_lead_status(txn, id, now).await?,
            None => false,
        };
        Ok(Applied {
            meeting_id: row.id,
            lead_updated: lead_status_changed || (lead_before.is_none() && lead_id.is_some()),
            reminders_scheduled,
        })
    }

    async fn find_or_create_lead(
        &self,
        txn: &DatabaseTransaction,
        meeting: &MeetingState,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, DbErr> {
        let email = normalize_email(&meeting.email);
        if email.is_empty() {
            return Ok(None);
        }
        let found = lead::Entity::find()
            .filter(lead::Column::Email.eq(email.as_str()))
            .one(txn)
            .await?;
        if let Some(lead) = found {
            return Ok(Some(lead.id));
        }
        if !self.settings.create_leads_for_unknown_invitees {
            return Ok(None);
        }
        let created = lead::ActiveModel {
            email: Set(email),
            name: Set(Some(meeting.name.clone()).filter(|n| !n.is_empty())),
            status: Set(NEW_LEAD_STATUS.to_owned()),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        }
        .insert(txn)
        .await?;
        Ok(Some(created.id))
    }

    async fn reconcile_reminders(
        &self,
        txn: &DatabaseTransaction,
        meeting_id: i64,
        status: MeetingStatus,
        start: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<u32, DbErr> {
        let rows = meeting_reminder::Entity::find()
            .filter(meeting_reminder::Column::MeetingId.eq(meeting_id))
            .all(txn)
            .await?;
        let existing: Vec<ExistingReminder> = rows
            .iter()
            .map(|row| ExistingReminder {
                id: row.id,
                reminder_type: row.reminder_type.clone(),
                scheduled_time: row.scheduled_time,
                state: ReminderState::parse(&row.state).unwrap_or(ReminderState::Canceled),
            })
            .collect();
        let mut scheduled = 0;
        for action in reconcile(status, start, &self.settings.reminder_offsets, &existing, now) {
            match action {
                ReminderAction::Create {
                    reminder_type,
                    scheduled_time,
                } => {
                    meeting_reminder::ActiveModel {
                        meeting_id: Set(meeting_id),
                        reminder_type: Set(reminder_type),
                        scheduled_time: Set(db_time(scheduled_time)),
                        sent: Set(false),
                        state: Set(ReminderState::Pending.as_str().to_owned()),
                        claimed_by: Set(None),
                        claim_token: Set(None),
                        claim_expires_at: Set(None),
                        sent_at: Set(None),
                        attempts: Set(0),
                        created_at: Set(now),
                        updated_at: Set(now),
                        ..Default::default()
                    }
                    .insert(txn)
                    .await?;
                    scheduled += 1;
                }
                ReminderAction::Reschedule { id, scheduled_time } => {
                    update_reminder(
                        txn,
                        &rows,
                        id,
                        ReminderState::Pending,
                        Some(db_time(scheduled_time)),
                        now,
                    )
                    .await?;
                    scheduled += 1;
                }
                ReminderAction::Cancel { id } => {
                    update_reminder(txn, &rows, id, ReminderState::Canceled, None, now).await?;
                }
            }
        }
        Ok(scheduled)
    }
}

async fn update_reminder(
    txn: &DatabaseTransaction,
    rows: &[meeting_reminder::Model],
    id: i64,
    state: ReminderState,
    scheduled_time: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let Some(row) = rows.iter().find(|row| row.id == id) else {
        return Ok(());
    };
    let mut active: meeting_reminder::ActiveModel = row.clone().into();
    active.state = Set(state.as_str().to_owned());
    active.claimed_by = Set(None);
    active.claim_token = Set(None);
    active.claim_expires_at = Set(None);
    if let Some(time) = scheduled_time {
        active.scheduled_time = Set(time);
    }
    active.updated_at = Set(now);
    active.update(txn).await?;
    Ok(())
}

/// Sets the lead's status from its latest meeting; true when it changed.
pub(crate) async fn refresh_lead_status(
    txn: &DatabaseTransaction,
    lead_id: i64,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    // Locking the lead serialises concurrent events for different meetings of one lead, so the
    // latest-meeting read below sees every committed change. `FOR NO KEY UPDATE`, because a
    // concurrent transaction that wrote a meeting of this lead holds the lead's KEY SHARE lock
    // (its foreign key) and may be waiting for this one's meeting insert: `FOR UPDATE` would
    // wait for it in turn, a deadlock PostgreSQL breaks only after a second.
    let lead_row = lead::Entity::find_by_id(lead_id);
    let lead_row = match txn.get_database_backend() {
        DbBackend::Postgres => lead_row.lock(sea_orm::sea_query::LockType::NoKeyUpdate),
        _ => lead_row,
    };
    let Some(lead) = lead_row.one(txn).await? else {
        return Ok(false);
    };
    let latest = meeting::Entity::find()
        .filter(meeting::Column::LeadId.eq(lead_id))
        .filter(meeting::Column::Status.ne(MeetingStatus::Rescheduled.as_str()))
        .order_by_desc(meeting::Column::LastEventAt)
        .order_by_desc(meeting::Column::CalendlyInviteeId)
        .one(txn)
        .await?;
    let Some(status) = latest
        .and_then(|m| MeetingStatus::parse(&m.status))
        .and_then(lead_status_for)
    else {
        return Ok(false);
    };
    if lead.status == status {
        return Ok(false);
    }
    let mut active: lead::ActiveModel = lead.into();
    active.status = Set(status.to_owned());
    active.updated_at = Set(now);
    active.update(txn).await?;
    Ok(true)
}

/// Every applied event of one invitee in the inbox, with its inbox key, as the rules take them.
/// The stored protobuf is the event as received, so the history needs no JSON parser.
async fn invitee_history(
    txn: &DatabaseTransaction,
    invitee_uri: &str,
) -> Result<Vec<(InviteeEvent, String)>, DbErr> {
    let rows: Vec<(String, Vec<u8>, DateTime<Utc>)> = webhook_event::Entity::find()
        .select_only()
        .column(webhook_event::Column::DedupeKey)
        .column(webhook_event::Column::EventProto)
        .column(webhook_event::Column::ReceivedAt)
        .filter(webhook_event::Column::PayloadUri.eq(invitee_uri))
        .filter(webhook_event::Column::Outcome.eq(outcome_name(Outcome::Processed)))
        .into_tuple()
        .all(txn)
        .await?;
    let mut history = Vec::with_capacity(rows.len());
    for (key, proto, received_at) in rows {
        let event = CalendlyEvent::decode(proto.as_slice())
            .map_err(|e| DbErr::Custom(format!("stored event {key} does not decode: {e}")))?;
        // An event stored as processed that no longer classifies as applicable (rules changed
        // since) is left out rather than guessed at.
        if let Disposition::Apply(event) = classify(&event, received_at) {
            history.push((*event, key));
        }
    }
    Ok(history)
}

/// The outcome an event gets before anything is applied, and its reasons.
fn planned_outcome(disposition: &Disposition) -> (Outcome, Vec<String>) {
    match disposition {
        Disposition::Apply(_) => (Outcome::Processed, Vec::new()),
        Disposition::Ignore(reason) => (Outcome::Ignored, vec![reason.clone()]),
        Disposition::Fail(reasons) => (Outcome::Failed, reasons.clone()),
    }
}

/// `SELECT … FOR UPDATE` on PostgreSQL. SQLite has no row locks (and sea-query drops the clause);
/// there the transaction's write lock, taken by the inbox insert, already serialises writers.
pub(crate) fn lock_for_update<E: EntityTrait>(
    select: sea_orm::Select<E>,
    backend: DbBackend,
) -> sea_orm::Select<E> {
    match backend {
        DbBackend::Postgres => select.lock_exclusive(),
        _ => select,
    }
}

fn ingested(
    outcome: Outcome,
    webhook_event_id: i64,
    errors: Vec<String>,
    applied: Option<Applied>,
) -> Ingested {
    Ingested {
        outcome,
        webhook_event_id,
        processed: applied.is_some(),
        lead_updated: applied.as_ref().is_some_and(|a| a.lead_updated),
        errors,
        meeting_id: applied.as_ref().map(|a| a.meeting_id),
        reminders_scheduled: applied.map_or(0, |a| a.reminders_scheduled),
    }
}

fn errors_text(errors: &[String]) -> Option<String> {
    (!errors.is_empty()).then(|| errors.join("; "))
}

pub(crate) fn state_of(row: &meeting::Model) -> MeetingState {
    MeetingState {
        invitee_uri: row.calendly_invitee_id.clone(),
        scheduled_event_uri: row.calendly_event_id.clone(),
        email: row.invitee_email.clone(),
        name: row.invitee_name.clone(),
        timezone: row.invitee_timezone.clone(),
        meeting_name: row.meeting_name.clone(),
        start_time: row.start_time,
        end_time: row.end_time,
        cancellation: row.canceled_at.map(|canceled_at| CancellationRecord {
            reason: row.cancel_reason.clone(),
            canceled_by: row.canceled_by.clone(),
            canceler_type: row.canceler_type.clone(),
            canceled_at,
        }),
        rescheduled: row.status == MeetingStatus::Rescheduled.as_str(),
        rescheduled_to: row.rescheduled_to_invitee_id.clone(),
        rescheduled_from: row.rescheduled_from_invitee_id.clone(),
        no_show: row.no_show,
        no_show_changed_at: row.no_show_changed_at,
        last_event_at: row.last_event_at,
    }
}

fn write_state(active: &mut meeting::ActiveModel, state: &MeetingState) {
    active.calendly_invitee_id = Set(state.invitee_uri.clone());
    active.calendly_event_id = Set(state.scheduled_event_uri.clone());
    active.invitee_email = Set(state.email.clone());
    active.invitee_name = Set(state.name.clone());
    active.invitee_timezone = Set(state.timezone.clone());
    active.meeting_name = Set(state.meeting_name.clone());
    active.start_time = Set(state.start_time.map(db_time));
    active.end_time = Set(state.end_time.map(db_time));
    active.status = Set(state.status().as_str().to_owned());
    let cancellation = state.cancellation.as_ref();
    active.cancel_reason = Set(cancellation.and_then(|c| c.reason.clone()));
    active.canceled_by = Set(cancellation.and_then(|c| c.canceled_by.clone()));
    active.canceler_type = Set(cancellation.and_then(|c| c.canceler_type.clone()));
    active.canceled_at = Set(cancellation.map(|c| db_time(c.canceled_at)));
    active.rescheduled_from_invitee_id = Set(state.rescheduled_from.clone());
    active.rescheduled_to_invitee_id = Set(state.rescheduled_to.clone());
    active.no_show = Set(state.no_show);
    active.no_show_changed_at = Set(state.no_show_changed_at.map(db_time));
    active.last_event_at = Set(db_time(state.last_event_at));
}
