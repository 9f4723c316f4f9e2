//! `backfill`: applies the bookings Calendly already has through the meeting service's webhook
//! path (`IngestCalendlyEvent`), for accounts that existed before their subscription, or after
//! deliveries were lost.
//!
//! It pages through the organization's scheduled events and each one's invitees, translates every
//! invitee into the events a webhook would have brought (`translate`), and ingests them in order.
//! Event times come from the resources, so a rerun is all duplicates and changes nothing; and
//! because the meeting service orders each meeting's facts by those times, running it while
//! webhooks arrive converges to the same record.
//!
//! Counting is per invitee (one meeting each): **created** when its booking event was applied
//! now for the first time, **updated** when only a later event was (a cancellation or no-show mark
//! the service had not seen), **unchanged** when every event was a duplicate, **failed** when any
//! could not be applied. Scheduled events whose invitees could not be listed count as failed too.

use std::{io::Write, time::Duration};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use proto::v1::{IngestCalendlyEventResponse, Outcome, Source};
use serde_json::{Value, value::RawValue};

use super::{
    client::{CalendlyClient, CalendlyError},
    pagination::{Cursor, Page},
    progress::Reporter,
    resources::CurrentUser,
    tally::{InviteeResult, Tally},
    translate::{Delivery, invitee_deliveries},
};
use adapter::{error::ApiError, meeting_client::MeetingClient};

/// Tries of one event while the meeting service is unavailable (nothing was stored).
const INGEST_ATTEMPTS: u32 = 3;
const INGEST_RETRY_DELAY: Duration = Duration::from_millis(250);
/// Consecutive events the meeting service failed to take before the run stops: by then it is down
/// or refusing the token, and going on would only list every remaining event as failed.
const MAX_CONSECUTIVE_SERVICE_FAILURES: u32 = 5;
/// Failures kept for the summary; all of them are printed as they happen.
const MAX_LISTED_FAILURES: usize = 200;

/// `--since` / `--until`: an RFC 3339 time, or a date meaning its midnight UTC.
pub fn parse_time_bound(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|time| time.and_utc())
        .ok_or_else(|| {
            format!("{text:?} is neither a date (2030-03-01) nor an RFC 3339 time (2030-03-01T09:00:00Z)")
        })
}

/// The meeting start times to back-fill; both ends optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Range {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl Range {
    pub fn new(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> Result<Self, String> {
        if let (Some(since), Some(until)) = (since, until)
            && since >= until
        {
            return Err("--since must be before --until".into());
        }
        Ok(Self { since, until })
    }

    /// The query of `GET /scheduled_events`, oldest meeting first so progress reads naturally.
    pub fn query(&self, organization: &str) -> Vec<(&'static str, String)> {
        let mut query = vec![
            ("organization", organization.to_owned()),
            ("sort", "start_time:asc".to_owned()),
        ];
        if let Some(since) = self.since {
            query.push((
                "min_start_time",
                since.to_rfc3339_opts(SecondsFormat::Micros, true),
            ));
        }
        if let Some(until) = self.until {
            query.push((
                "max_start_time",
                until.to_rfc3339_opts(SecondsFormat::Micros, true),
            ));
        }
        query
    }
}

/// What one event did, as far as the summary cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventResult {
    Applied,
    Unchanged,
    Failed(String),
}

/// The meeting service's answer, judged. A duplicate of an event that was stored but never
/// applied is still a failure: the rerun cannot fix it, a replay after the fix can.
pub fn judge(response: &IngestCalendlyEventResponse) -> EventResult {
    let errors = || {
        if response.errors.is_empty() {
            "no reason given".to_owned()
        } else {
            response.errors.join("; ")
        }
    };
    match response.outcome() {
        Outcome::Processed => EventResult::Applied,
        Outcome::Duplicate if response.processed => EventResult::Unchanged,
        Outcome::Duplicate => EventResult::Failed(format!(
            "stored earlier but not applied (inbox event {}); replay it with ReplayWebhookEvent once the cause is fixed",
            response.webhook_event_id
        )),
        Outcome::Failed => EventResult::Failed(format!(
            "the meeting service could not apply it: {} (inbox event {})",
            errors(),
            response.webhook_event_id
        )),
        Outcome::Ignored => EventResult::Failed(format!("the meeting service ignored it: {}", errors())),
        Outcome::Unspecified => EventResult::Failed("the meeting service gave no outcome".into()),
    }
}

/// An invitee's result from its events' results, in the order sent (the booking first).
pub fn invitee_result(events: &[EventResult]) -> InviteeResult {
    if events.is_empty() || events.iter().any(|e| matches!(e, EventResult::Failed(_))) {
        InviteeResult::Failed
    } else if events[0] == EventResult::Applied {
        InviteeResult::Created
    } else if events.contains(&EventResult::Applied) {
        InviteeResult::Updated
    } else {
        InviteeResult::Unchanged
    }
}

/// The end of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub tally: Tally,
    /// One line per failure: which event or invitee, and why (the first [`MAX_LISTED_FAILURES`]).
    pub failures: Vec<String>,
    /// Why the run stopped before the end, if it did.
    pub stopped: Option<String>,
}

impl Report {
    pub fn is_complete(&self) -> bool {
        self.tally.failed == 0 && self.stopped.is_none()
    }

    pub fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let tally = &self.tally;
        let heading = if self.stopped.is_some() {
            "Backfill stopped early"
        } else {
            "Backfill finished"
        };
        writeln!(
            out,
            "{heading}: {} scheduled event(s), {} invitee(s), {} event(s) sent to the meeting service",
            tally.scheduled_events, tally.invitees, tally.events_sent
        )?;
        for (label, count) in [
            ("created", tally.created),
            ("updated", tally.updated),
            ("unchanged", tally.unchanged),
            ("failed", tally.failed),
        ] {
            writeln!(out, "  {label:<10} {count}")?;
        }
        if !self.failures.is_empty() {
            writeln!(out, "Failures:")?;
            for failure in &self.failures {
                writeln!(out, "  - {failure}")?;
            }
            let unlisted = usize::try_from(tally.failed)
                .unwrap_or(usize::MAX)
                .saturating_sub(self.failures.len());
            if unlisted > 0 {
                writeln!(out, "  … and {unlisted} more, printed above as they happened")?;
            }
        }
        if let Some(reason) = &self.stopped {
            writeln!(out, "Stopped because: {reason}")?;
        }
        if !self.is_complete() {
            writeln!(
                out,
                "Run the same command again to finish: what was applied is recognised and left unchanged."
            )?;
        }
        Ok(())
    }
}

/// The back-fill itself. Returns a report even when it stops early; only output errors escape.
pub async fn run(
    calendly: &CalendlyClient,
    meeting: &MeetingClient,
    me: &CurrentUser,
    range: Range,
    reporter: &mut Reporter<'_>,
) -> std::io::Result<Report> {
    let mut run = Run {
        calendly,
        meeting,
        me,
        reporter,
        report: Report::default(),
        consecutive_service_failures: 0,
        service_down: None,
    };
    if let Err(stop) = run.all_events(range).await {
        run.report.stopped = Some(stop.to_string());
    }
    Ok(run.report)
}

/// Why a run ends before its last page.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("listing scheduled events failed: {0}")]
    Listing(CalendlyError),
    #[error("the meeting service failed {MAX_CONSECUTIVE_SERVICE_FAILURES} events in a row; last: {0}")]
    ServiceDown(String),
    #[error("writing progress: {0}")]
    Output(#[from] std::io::Error),
}

struct Run<'r, 'w> {
    calendly: &'r CalendlyClient,
    meeting: &'r MeetingClient,
    me: &'r CurrentUser,
    reporter: &'r mut Reporter<'w>,
    report: Report,
    consecutive_service_failures: u32,
    /// Set when the meeting service has failed too many events in a row; the run stops after
    /// recording the current invitee.
    service_down: Option<String>,
}

impl Run<'_, '_> {
    async fn all_events(&mut self, range: Range) -> Result<(), Stop> {
        let query = range.query(&self.me.current_organization);
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut cursor = Cursor::new();
        while !cursor.is_done() {
            let page: Page<Box<RawValue>> = self
                .calendly
                .page("/scheduled_events", &query, &cursor, "the scheduled events")
                .await
                .map_err(Stop::Listing)?;
            self.reporter.listed(page.collection.len());
            for event in &page.collection {
                self.one_event(event).await?;
                self.reporter.event_done(&self.report.tally);
            }
            self.reporter.page_done(&self.report.tally)?;
            cursor.advance(&page.pagination).map_err(|e| {
                Stop::Listing(CalendlyError::UnexpectedResponse {
                    what: "the scheduled events".into(),
                    reason: e.to_string(),
                })
            })?;
        }
        Ok(())
    }

    async fn one_event(&mut self, raw: &RawValue) -> Result<(), Stop> {
        self.report.tally.scheduled_events += 1;
        let event: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
        let uri = event
            .get("uri")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let Some(uuid) = last_segment(&uri, "scheduled_events") else {
            self.report.tally.failed += 1;
            return self.fail(format!(
                "scheduled event {}: it has no usable uri, so its invitees cannot be listed",
                if uri.is_empty() { "(no uri)" } else { &uri }
            ));
        };
        let invitees: Vec<Box<RawValue>> = match self
            .calendly
            .all(
                &format!("/scheduled_events/{uuid}/invitees"),
                &[],
                // The failure line already names the event; this names the request.
                &format!("GET /scheduled_events/{uuid}/invitees"),
            )
            .await
        {
            Ok(invitees) => invitees,
            Err(error) => {
                self.report.tally.failed += 1;
                return self.fail(format!("scheduled event {uri}: {error}"));
            }
        };
        for invitee in &invitees {
            self.one_invitee(&uri, &event, invitee).await?;
        }
        Ok(())
    }

    async fn one_invitee(&mut self, event_uri: &str, event: &Value, raw: &RawValue) -> Result<(), Stop> {
        self.report.tally.invitees += 1;
        let invitee_uri = serde_json::from_str::<Value>(raw.get())
            .ok()
            .and_then(|v| v.get("uri").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| "(no uri)".to_owned());
        let deliveries = match invitee_deliveries(raw, event, &self.me.uri) {
            Ok(deliveries) => deliveries,
            Err(error) => {
                self.report.tally.add(InviteeResult::Failed);
                return self.fail(format!(
                    "invitee {invitee_uri} (scheduled event {event_uri}): {error}"
                ));
            }
        };
        let mut results = Vec::with_capacity(deliveries.len());
        // Every event is sent even after one fails: the service orders them by time, so the rest
        // still apply, and the rerun only has to resend what failed.
        for delivery in deliveries {
            let name = delivery.event.event_name.clone();
            let result = self.ingest(delivery).await;
            if let EventResult::Failed(reason) = &result {
                self.fail(format!(
                    "invitee {invitee_uri} (scheduled event {event_uri}), {name}: {reason}"
                ))?;
            }
            results.push(result);
            if self.service_down.is_some() {
                break;
            }
        }
        self.report.tally.add(invitee_result(&results));
        match self.service_down.take() {
            Some(reason) => Err(Stop::ServiceDown(reason)),
            None => Ok(()),
        }
    }

    /// Sends one event, retrying while the service is unavailable. Sets `service_down` once
    /// [`MAX_CONSECUTIVE_SERVICE_FAILURES`] events in a row could not be handed over.
    async fn ingest(&mut self, delivery: Delivery) -> EventResult {
        self.report.tally.events_sent += 1;
        let tracking_id = format!("backfill-{}", uuid::Uuid::new_v4());
        let mut last_error = None;
        for attempt in 1..=INGEST_ATTEMPTS {
            match self
                .meeting
                .ingest(
                    delivery.event.clone(),
                    delivery.raw_body.clone(),
                    Source::Backfill,
                    &tracking_id,
                )
                .await
            {
                Ok(response) => {
                    self.consecutive_service_failures = 0;
                    self.report.tally.events_changed += u64::from(response.changed);
                    return judge(&response);
                }
                Err(ApiError::MeetingServiceUnavailable) if attempt < INGEST_ATTEMPTS => {
                    tokio::time::sleep(INGEST_RETRY_DELAY.saturating_mul(1 << (attempt - 1))).await;
                    last_error = Some(ApiError::MeetingServiceUnavailable);
                }
                Err(error) => {
                    last_error = Some(error);
                    break;
                }
            }
        }
        let reason = last_error.map_or_else(|| "no answer".to_owned(), |e| service_failure(&e));
        self.consecutive_service_failures += 1;
        if self.consecutive_service_failures >= MAX_CONSECUTIVE_SERVICE_FAILURES {
            self.service_down = Some(reason.clone());
        }
        EventResult::Failed(reason)
    }

    fn fail(&mut self, line: String) -> Result<(), Stop> {
        self.reporter.failure(&line)?;
        if self.report.failures.len() < MAX_LISTED_FAILURES {
            self.report.failures.push(line);
        }
        Ok(())
    }
}

/// The meeting client's error as a reason a person can act on.
fn service_failure(error: &ApiError) -> String {
    match error {
        ApiError::MeetingServiceUnavailable => format!(
            "the meeting service was unavailable ({INGEST_ATTEMPTS} tries); nothing was stored for this event"
        ),
        ApiError::Rejected(refusal) => format!("the meeting service rejected it: {refusal}"),
        ApiError::Internal => "the meeting service refused or failed the call: check INTERNAL_API_TOKEN \
                               and its logs (RUST_LOG=adapter=error shows the gRPC status)"
            .to_owned(),
        // `MeetingClient` only produces the three above. The other variants are the HTTP front
        // door's and grow with it, so they share one arm instead of being listed here.
        other => format!("unexpected error from the meeting client: {other}"),
    }
}

/// The identifier after `/{collection}/` at the end of a Calendly URI, when it is a plain token.
pub fn last_segment<'a>(uri: &'a str, collection: &str) -> Option<&'a str> {
    let (rest, id) = uri.trim_end_matches('/').rsplit_once('/')?;
    let plain = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    (plain && rest.ends_with(&format!("/{collection}"))).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds_accept_dates_and_rfc3339() {
        assert_eq!(
            parse_time_bound("2030-03-01").map(|t| t.to_rfc3339()),
            Ok("2030-03-01T00:00:00+00:00".into())
        );
        assert_eq!(
            parse_time_bound("2030-03-01T10:00:00+02:00").map(|t| t.to_rfc3339()),
            Ok("2030-03-01T08:00:00+00:00".into())
        );
        assert!(parse_time_bound("March").is_err());
        assert!(parse_time_bound("2030-02-30").is_err());
    }

    #[test]
    fn the_range_is_checked_and_becomes_the_listing_query() {
        let since = parse_time_bound("2030-03-01").ok();
        let until = parse_time_bound("2030-04-01").ok();
        assert!(Range::new(until, since).is_err());
        assert!(Range::new(since, since).is_err());
        let query = Range::new(since, until).expect("valid").query("org");
        assert_eq!(
            query,
            vec![
                ("organization", "org".to_owned()),
                ("sort", "start_time:asc".to_owned()),
                ("min_start_time", "2030-03-01T00:00:00.000000Z".to_owned()),
                ("max_start_time", "2030-04-01T00:00:00.000000Z".to_owned()),
            ]
        );
        assert_eq!(Range::default().query("org").len(), 2);
    }

    fn response(outcome: Outcome, processed: bool) -> IngestCalendlyEventResponse {
        IngestCalendlyEventResponse {
            outcome: outcome as i32,
            duplicate: outcome == Outcome::Duplicate,
            processed,
            webhook_event_id: 7,
            errors: vec!["payload.email is missing".into()],
            ..Default::default()
        }
    }

    #[test]
    fn answers_are_judged_by_outcome_and_a_stuck_duplicate_still_fails() {
        assert_eq!(judge(&response(Outcome::Processed, true)), EventResult::Applied);
        assert_eq!(judge(&response(Outcome::Duplicate, true)), EventResult::Unchanged);
        let EventResult::Failed(reason) = judge(&response(Outcome::Duplicate, false)) else {
            panic!("a duplicate of a failed event is a failure");
        };
        assert!(reason.contains("inbox event 7"), "{reason}");
        let EventResult::Failed(reason) = judge(&response(Outcome::Failed, false)) else {
            panic!("failed");
        };
        assert!(reason.contains("payload.email is missing"), "{reason}");
        assert!(matches!(
            judge(&response(Outcome::Ignored, false)),
            EventResult::Failed(_)
        ));
        assert!(matches!(
            judge(&response(Outcome::Unspecified, false)),
            EventResult::Failed(_)
        ));
    }

    #[test]
    fn an_invitee_counts_once_by_what_its_events_did() {
        use EventResult::{Applied, Unchanged};
        let failed = || EventResult::Failed("x".into());
        assert_eq!(invitee_result(&[Applied]), InviteeResult::Created);
        assert_eq!(invitee_result(&[Applied, Applied]), InviteeResult::Created);
        assert_eq!(invitee_result(&[Unchanged, Applied]), InviteeResult::Updated);
        assert_eq!(
            invitee_result(&[Unchanged, Unchanged, Unchanged]),
            InviteeResult::Unchanged
        );
        assert_eq!(invitee_result(&[Applied, failed()]), InviteeResult::Failed);
        assert_eq!(invitee_result(&[]), InviteeResult::Failed);
    }

    #[test]
    fn the_report_lists_counts_failures_and_how_to_finish() {
        let mut report = Report::default();
        report.tally.add(InviteeResult::Created);
        report.tally.add(InviteeResult::Failed);
        report.failures.push("invitee u: boom".into());
        let mut out = Vec::new();
        report.write(&mut out).expect("write");
        let text = String::from_utf8(out).expect("UTF-8");
        assert!(text.contains("created    1"), "{text}");
        assert!(text.contains("failed     1"), "{text}");
        assert!(text.contains("- invitee u: boom"), "{text}");
        assert!(text.contains("Run the same command again"), "{text}");
        assert!(!report.is_complete());
    }

    #[test]
    fn identifiers_come_from_the_end_of_a_uri_in_the_right_collection() {
        assert_eq!(
            last_segment(
                "https://api.calendly.com/scheduled_events/abc-1",
                "scheduled_events"
            ),
            Some("abc-1")
        );
        assert_eq!(
            last_segment("https://api.calendly.com/users/abc", "scheduled_events"),
            None
        );
        assert_eq!(
            last_segment(
                "https://api.calendly.com/scheduled_events/a%2F..",
                "scheduled_events"
            ),
            None
        );
        assert_eq!(last_segment("", "scheduled_events"), None);
    }
}
