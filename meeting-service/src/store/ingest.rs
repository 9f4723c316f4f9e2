//! The ingest transaction: a batch of events stored in the inbox and applied to their meetings,
//! reminders and leads, all or nothing, in one commit; and the replay of one stored event.
//!
//! A batch of one is a delivery on its own; under load, [`super::batch`] hands concurrent
//! deliveries over together. Either way each caller is answered exactly as if its event had been
//! stored alone, in the batch's order, and only once the commit succeeded.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use prost::Message;
use proto::v1::{CalendlyEvent, Outcome, Source};
use sea_orm::{ActiveModelTrait, DatabaseTransaction, DbErr, EntityTrait, Set, TransactionTrait};

use super::{
    Store,
    changes::new_change,
    db_time, meeting_row,
    plan::{self, BatchEvent, Cause, EventEffect, LeadRef, Rules, Snapshot},
    sql,
};
use crate::{
    domain::{
        event::{Disposition, MAX_INDEXED_TEXT_BYTES, classify, dedupe_key, payload_uri, storable},
        lead::{NEW_LEAD_STATUS, normalize_email},
    },
    entity::webhook_event,
    error::{Record, ServiceError},
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
    /// Whether it wrote a change-feed row.
    pub changed: bool,
}

/// What the rules say of a request before anything is stored.
struct Prepared {
    key: String,
    disposition: Disposition,
    outcome: Outcome,
    errors: Vec<String>,
}

impl Prepared {
    fn new(request: &IngestRequest, now: DateTime<Utc>) -> Self {
        let disposition = classify(&request.event, now);
        let (outcome, errors) = planned_outcome(&disposition);
        Self {
            key: dedupe_key(&request.event, &request.raw_body),
            disposition,
            outcome,
            errors,
        }
    }
}

/// What a committed batch stored: the inbox ids of the rows it inserted (by dedupe key) and, per
/// request applied, its effect and meeting id.
struct Stored {
    inserted: HashMap<String, i64>,
    applied: HashMap<usize, (EventEffect, i64)>,
}

impl Store {
    /// Stores `request` in the inbox and applies it, once: a batch of one.
    pub async fn ingest(&self, request: IngestRequest, now: DateTime<Utc>) -> Result<Ingested, ServiceError> {
        self.ingest_batch(vec![request], now)
            .await
            .pop()
            .unwrap_or_else(|| {
                Err(ServiceError::Unexpected(anyhow::anyhow!(
                    "a batch of one gave no answer"
                )))
            })
    }

    /// Stores `requests` in the inbox and applies them in one transaction, and answers each in
    /// order as if it had come alone. Transient failures retry the whole batch and, when they
    /// persist, every caller gets `Unavailable` with nothing stored. Any other failure of a batch
    /// applies its events again one by one, so that only the event at fault gets the error.
    #[tracing::instrument(skip_all, fields(batch = requests.len()))]
    pub async fn ingest_batch(
        &self,
        requests: Vec<IngestRequest>,
        now: DateTime<Utc>,
    ) -> Vec<Result<Ingested, ServiceError>> {
        let now = db_time(now);
        let prepared: Vec<Prepared> = requests.iter().map(|r| Prepared::new(r, now)).collect();
        let stored = self
            .with_retries("ingest", || self.try_ingest_batch(&requests, &prepared, now))
            .await;
        let answers = match stored {
            Ok(stored) => self.answers(&prepared, stored).await,
            Err(error) if requests.len() > 1 && !matches!(error, ServiceError::Unavailable(_)) => {
                tracing::warn!(error = %error, "a batch failed; applying its events one by one");
                let mut answers = Vec::with_capacity(requests.len());
                for request in requests {
                    answers.push(Box::pin(self.ingest(request, now)).await);
                }
                return answers;
            }
            Err(error) => prepared.iter().map(|_| Err(error.shared())).collect(),
        };
        for (request, answer) in requests.iter().zip(&answers) {
            if let Ok(ingested) = answer {
                metrics::counter!(
                    "calendly_ingested_events_total",
                    "event" => request.event.kind_name(),
                    "outcome" => ingested.outcome.label()
                )
                .increment(1);
            }
        }
        answers
    }

    async fn try_ingest_batch(
        &self,
        requests: &[IngestRequest],
        prepared: &[Prepared],
        now: DateTime<Utc>,
    ) -> Result<Stored, DbErr> {
        // The first request of each key stores it; in key order, so two batches inserting the
        // same keys wait for each other in one order.
        let mut firsts: BTreeMap<&str, usize> = BTreeMap::new();
        for (index, request) in prepared.iter().enumerate() {
            firsts.entry(request.key.as_str()).or_insert(index);
        }
        let rows: Vec<sql::inbox::NewRow> = firsts
            .values()
            .map(|&index| inbox_row(&requests[index], &prepared[index], now))
            .collect();
        let txn = self.db.begin().await?;
        let inserted = sql::inbox::insert_new(&txn, rows).await?;
        let mut to_apply: Vec<(usize, BatchEvent)> = firsts
            .values()
            .filter(|&&index| inserted.contains_key(&prepared[index].key))
            .filter_map(|&index| match &prepared[index].disposition {
                Disposition::Apply(event) => Some((
                    index,
                    BatchEvent {
                        event: (**event).clone(),
                        key: prepared[index].key.clone(),
                        cause: Cause {
                            webhook_event_id: inserted.get(&prepared[index].key).copied(),
                            name: requests[index].event.kind_name(),
                            tracking_id: requests[index].tracking_id.clone(),
                        },
                    },
                )),
                Disposition::Ignore(_) | Disposition::Fail(_) => None,
            })
            .collect();
        // Applied in arrival order, which is the order callers are answered as if alone.
        to_apply.sort_by_key(|(index, _)| *index);
        let events: Vec<BatchEvent> = to_apply.iter().map(|(_, event)| event.clone()).collect();
        let applied = self.apply(&txn, &events, now).await?;
        txn.commit().await?;
        self.announce(applied.latest_change);
        Ok(Stored {
            inserted,
            applied: to_apply
                .into_iter()
                .map(|(index, _)| index)
                .zip(applied.effects)
                .collect(),
        })
    }

    /// Each request's answer, once the batch committed. A request whose key the batch did not
    /// insert (stored before, or by an earlier request of the batch) is a duplicate of that row.
    async fn answers(&self, prepared: &[Prepared], stored: Stored) -> Vec<Result<Ingested, ServiceError>> {
        let mut firsts: HashSet<&str> = HashSet::new();
        let mut duplicates: Vec<&str> = Vec::new();
        let mut answers: Vec<Option<Ingested>> = Vec::with_capacity(prepared.len());
        for (index, request) in prepared.iter().enumerate() {
            let first = firsts.insert(request.key.as_str());
            match stored.inserted.get(&request.key).filter(|_| first) {
                Some(&id) => {
                    let applied = stored.applied.get(&index);
                    answers.push(Some(Ingested {
                        outcome: request.outcome,
                        webhook_event_id: id,
                        processed: applied.is_some(),
                        lead_updated: applied.is_some_and(|(effect, _)| effect.lead_updated),
                        errors: request.errors.clone(),
                        meeting_id: applied.map(|(_, meeting_id)| *meeting_id),
                        reminders_scheduled: applied.map_or(0, |(effect, _)| effect.reminders_scheduled),
                        changed: applied.is_some_and(|(effect, _)| effect.changed),
                    }));
                }
                None => {
                    duplicates.push(request.key.as_str());
                    answers.push(None);
                }
            }
        }
        if duplicates.is_empty() {
            return answers.into_iter().map(|a| Ok(a.expect("answered"))).collect();
        }
        let originals = match self.originals(&duplicates).await {
            Ok(originals) => originals,
            Err(error) => {
                return prepared
                    .iter()
                    .zip(answers)
                    .map(|(_, answer)| answer.ok_or_else(|| error.shared()))
                    .collect();
            }
        };
        prepared
            .iter()
            .zip(answers)
            .map(|(request, answer)| match answer {
                Some(answer) => Ok(answer),
                None => originals.get(&request.key).cloned().ok_or_else(|| {
                    ServiceError::Unexpected(anyhow::anyhow!("duplicate key {} has no row", request.key))
                }),
            })
            .collect()
    }

    /// The answer a duplicate of each stored key gets: the original's id, whether it was applied,
    /// and its meeting.
    async fn originals(&self, keys: &[&str]) -> Result<HashMap<String, Ingested>, ServiceError> {
        let rows = sql::inbox::by_keys(&self.db, keys)
            .await
            .map_err(ServiceError::from_db)?;
        let uris: Vec<&str> = rows.values().filter_map(|(_, _, uri)| uri.as_deref()).collect();
        let meetings = sql::meetings::ids(&self.db, &uris)
            .await
            .map_err(ServiceError::from_db)?;
        Ok(rows
            .iter()
            .map(|(key, (id, outcome, uri))| {
                let answer = Ingested {
                    outcome: Outcome::Duplicate,
                    webhook_event_id: *id,
                    processed: Outcome::from_label(outcome) == Outcome::Processed,
                    lead_updated: false,
                    errors: Vec::new(),
                    meeting_id: uri.as_ref().and_then(|uri| meetings.get(uri).copied()),
                    reminders_scheduled: 0,
                    changed: false,
                };
                (key.clone(), answer)
            })
            .collect())
    }

    /// Applies a stored inbox event again, from its stored protobuf; the row's outcome, error and
    /// attempt count are updated in the same transaction.
    pub async fn replay(
        &self,
        id: i64,
        tracking_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Ingested, ServiceError> {
        let now = db_time(now);
        let row = webhook_event::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .map_err(ServiceError::from_db)?
            .ok_or_else(|| ServiceError::not_found(Record::WebhookEvent, format!("id {id}")))?;
        let event = CalendlyEvent::decode(row.event_proto.as_slice()).map_err(|e| {
            ServiceError::Unexpected(anyhow::anyhow!("stored event {id} does not decode: {e}"))
        })?;
        let disposition = classify(&event, row.received_at);
        let (outcome, errors) = planned_outcome(&disposition);
        let event_kind_name = event.kind_name();
        self.with_retries("replay", || async {
            let mut latest_change = None;
            let txn = self.db.begin().await?;
            // The row's new outcome first: an applied event is part of its invitee's history, which
            // is read by the payload URI, so that is taken from the protobuf as it is now.
            let mut active: webhook_event::ActiveModel = row.clone().into();
            active.payload_uri = Set(payload_uri_column(&event));
            active.outcome = Set(outcome.label().to_owned());
            active.error = Set(errors_text(&errors));
            active.attempts = Set(row.attempts.saturating_add(1));
            active.processed_at = Set(Some(now));
            active.update(&txn).await?;
            let applied = match &disposition {
                Disposition::Apply(event) => {
                    let events = [BatchEvent {
                        event: (**event).clone(),
                        key: row.dedupe_key.clone(),
                        cause: Cause {
                            webhook_event_id: Some(row.id),
                            name: event_kind_name,
                            tracking_id: tracking_id.to_owned(),
                        },
                    }];
                    let applied = self.apply(&txn, &events, now).await?;
                    latest_change = applied.latest_change;
                    applied.effects.into_iter().next()
                }
                Disposition::Ignore(_) | Disposition::Fail(_) => None,
            };
            txn.commit().await?;
            self.announce(latest_change);
            Ok(Ingested {
                outcome,
                webhook_event_id: row.id,
                processed: applied.is_some(),
                lead_updated: applied.as_ref().is_some_and(|(effect, _)| effect.lead_updated),
                errors: errors.clone(),
                meeting_id: applied.as_ref().map(|(_, meeting_id)| *meeting_id),
                changed: applied.as_ref().is_some_and(|(effect, _)| effect.changed),
                reminders_scheduled: applied.map_or(0, |(effect, _)| effect.reminders_scheduled),
            })
        })
        .await
    }

    /// Brings the meetings of `events` (already in the inbox as processed, in this transaction) in
    /// line with every applied event of their invitees, and answers each event's effect and
    /// meeting id. Reads lock in a fixed order: the events' e-mails (shared, see
    /// [`sql::leads::guard_emails`]), meetings by invitee URI, leads by id, reminders by id; a
    /// concurrent event of one of these invitees has therefore either committed (and is read) or
    /// waits for this transaction.
    async fn apply(
        &self,
        txn: &DatabaseTransaction,
        events: &[BatchEvent],
        now: DateTime<Utc>,
    ) -> Result<Applied, DbErr> {
        if events.is_empty() {
            return Ok(Applied::default());
        }
        let uris: Vec<&str> = events
            .iter()
            .map(|e| e.event.facts.invitee_uri.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let own_keys: HashSet<&str> = events.iter().map(|e| e.key.as_str()).collect();
        let event_emails: BTreeSet<String> = events
            .iter()
            .map(|e| normalize_email(&e.event.facts.email))
            .filter(|email| !email.is_empty())
            .collect();
        let event_emails: Vec<&str> = event_emails.iter().map(String::as_str).collect();
        sql::leads::guard_emails(txn, &event_emails, false).await?;
        let stored = sql::meetings::lock(txn, &uris).await?;
        let histories = sql::inbox::histories(txn, &uris, &own_keys).await?;

        // Leads: those of the meetings, and those an unlinked meeting may be linked to by any of
        // its events' e-mails.
        let linked: HashSet<&str> = stored
            .iter()
            .filter(|m| m.lead_id.is_some())
            .map(|m| m.calendly_invitee_id.as_str())
            .collect();
        let emails: BTreeSet<String> = histories
            .iter()
            .filter(|(uri, _)| !linked.contains(uri.as_str()))
            .flat_map(|(_, history)| history.iter().map(|(event, _)| &event.facts.email))
            .chain(
                events
                    .iter()
                    .filter(|e| !linked.contains(e.event.facts.invitee_uri.as_str()))
                    .map(|e| &e.event.facts.email),
            )
            .map(|email| normalize_email(email))
            .filter(|email| !email.is_empty())
            .collect();
        let emails: Vec<&str> = emails.iter().map(String::as_str).collect();
        let lead_ids: Vec<i64> = stored.iter().filter_map(|m| m.lead_id).collect();
        let leads = sql::leads::lock(txn, &lead_ids, &emails).await?;
        let all_lead_ids: Vec<i64> = leads.iter().map(|l| l.id).collect();
        let latest_other = sql::meetings::latest_per_lead(txn, &all_lead_ids, &uris).await?;
        let stored_ids: Vec<i64> = stored.iter().map(|m| m.id).collect();
        let mut reminders: HashMap<i64, Vec<_>> = HashMap::new();
        for row in sql::reminders::lock(txn, &stored_ids).await? {
            reminders.entry(row.meeting_id).or_default().push(row);
        }

        let stored_meeting_ids: HashMap<String, i64> = stored
            .iter()
            .map(|m| (m.calendly_invitee_id.clone(), m.id))
            .collect();
        let snapshot = Snapshot {
            meetings: stored
                .into_iter()
                .map(|m| (m.calendly_invitee_id.clone(), m))
                .collect(),
            histories,
            reminders,
            leads: leads.clone(),
            latest_other,
        };
        let plan = plan::plan(
            snapshot,
            events,
            &Rules {
                reminder_offsets: &self.settings.reminder_offsets,
                create_leads_for_unknown_invitees: self.settings.create_leads_for_unknown_invitees,
                now,
            },
        );
        self.write(txn, plan, events, &leads, stored_meeting_ids, now)
            .await
    }

    /// Writes what `plan` decided: new leads, then meetings (new, then rewritten), their
    /// reminders, the leads' new statuses, and last the change-feed rows.
    async fn write(
        &self,
        txn: &DatabaseTransaction,
        plan: plan::Plan,
        events: &[BatchEvent],
        leads: &[crate::entity::lead::Model],
        stored_meeting_ids: HashMap<String, i64>,
        now: DateTime<Utc>,
    ) -> Result<Applied, DbErr> {
        let mut new_leads: Vec<_> = plan
            .new_leads
            .iter()
            .map(|lead| {
                let status = plan
                    .lead_statuses
                    .get(&LeadRef::New(lead.email.clone()))
                    .cloned()
                    .unwrap_or_else(|| NEW_LEAD_STATUS.to_owned());
                (lead.email.clone(), lead.name.clone(), status)
            })
            .collect();
        new_leads.sort();
        let created_leads = sql::leads::insert(txn, &new_leads, now).await?;
        let lead_id = |lead: &Option<LeadRef>| -> Result<Option<i64>, DbErr> {
            match lead {
                None => Ok(None),
                Some(LeadRef::Existing(id)) => Ok(Some(*id)),
                Some(LeadRef::New(email)) => created_leads
                    .get(email)
                    .copied()
                    .map(Some)
                    .ok_or_else(|| DbErr::Custom(format!("lead {email} was not created"))),
            }
        };

        let mut new_rows = Vec::new();
        let mut rewritten = Vec::new();
        for write in plan.meetings.values() {
            let row = sql::meetings::Row {
                id: write.stored_id,
                lead_id: lead_id(&write.lead)?,
                state: &write.state,
                created_at: write.created_at,
                updated_at: now,
            };
            if write.stored_id.is_some() {
                rewritten.push(row);
            } else {
                new_rows.push(row);
            }
        }
        let mut meeting_ids = stored_meeting_ids;
        meeting_ids.extend(sql::meetings::insert(txn, &new_rows).await?);
        sql::meetings::rewrite(txn, &rewritten).await?;
        let mut new_reminders = Vec::new();
        let mut changed_reminders = Vec::new();
        for write in plan.reminders {
            let mut row = write.row;
            if write.is_new {
                row.meeting_id = *meeting_ids
                    .get(&write.invitee_uri)
                    .ok_or_else(|| DbErr::Custom(format!("no meeting id for {}", write.invitee_uri)))?;
                new_reminders.push(row);
            } else {
                changed_reminders.push(row);
            }
        }
        sql::reminders::insert(txn, &new_reminders).await?;
        sql::reminders::rewrite(txn, &changed_reminders).await?;
        let statuses: Vec<_> = leads
            .iter()
            .filter_map(|lead| {
                let status = plan.lead_statuses.get(&LeadRef::Existing(lead.id))?;
                let mut lead = lead.clone();
                lead.status = status.clone();
                lead.updated_at = now;
                Some(lead)
            })
            .collect();
        sql::leads::set_statuses(txn, &statuses).await?;

        let meeting_id = |uri: &str| {
            meeting_ids
                .get(uri)
                .copied()
                .ok_or_else(|| DbErr::Custom(format!("no meeting id for {uri}")))
        };
        let mut changes = Vec::with_capacity(plan.changes.len());
        for change in &plan.changes {
            let row = meeting_row(
                meeting_id(&change.state.invitee_uri)?,
                lead_id(&change.lead)?,
                &change.state,
                change.created_at,
                now,
            );
            changes.push(new_change(&row, change.kind, &events[change.event].cause, now));
        }
        let latest_change = sql::changes::append(txn, &changes).await?;
        let mut effects = Vec::with_capacity(plan.effects.len());
        for effect in plan.effects {
            let id = meeting_id(&effect.invitee_uri)?;
            effects.push((effect, id));
        }
        Ok(Applied {
            effects,
            latest_change,
        })
    }
}

/// What applying a batch's events wrote: each event's effect and meeting id, in order, and the
/// highest change id appended.
#[derive(Default)]
struct Applied {
    effects: Vec<(EventEffect, i64)>,
    latest_change: Option<i64>,
}

fn inbox_row<'a>(
    request: &'a IngestRequest,
    prepared: &'a Prepared,
    now: DateTime<Utc>,
) -> sql::inbox::NewRow<'a> {
    sql::inbox::NewRow {
        tracking_id: &request.tracking_id,
        event_type: storable(&request.event.event_name),
        dedupe_key: &prepared.key,
        source: request.source.label(),
        payload_uri: payload_uri_column(&request.event),
        raw_body: &request.raw_body,
        event_proto: request.event.encode_to_vec(),
        received_at: now,
        outcome: prepared.outcome,
        error: errors_text(&prepared.errors).map(|e| storable(&e)),
    }
}

/// The payload URI as the indexed column keeps it: an over-long one (never an invitee event that
/// is applied, which the rules refuse) is left out rather than break the index.
fn payload_uri_column(event: &CalendlyEvent) -> Option<String> {
    payload_uri(event).filter(|uri| uri.len() <= MAX_INDEXED_TEXT_BYTES)
}

/// The outcome an event gets before anything is applied, and its reasons.
fn planned_outcome(disposition: &Disposition) -> (Outcome, Vec<String>) {
    match disposition {
        Disposition::Apply(_) => (Outcome::Processed, Vec::new()),
        Disposition::Ignore(reason) => (Outcome::Ignored, vec![reason.clone()]),
        Disposition::Fail(reasons) => (Outcome::Failed, reasons.clone()),
    }
}

fn errors_text(errors: &[String]) -> Option<String> {
    (!errors.is_empty()).then(|| errors.join("; "))
}
