//! `reconcile`: what a scheduled job runs so that lost webhooks are noticed and repaired.
//!
//! One run (a) finds the subscription(s) whose callback URL is this deployment's and reads their
//! state, (b) back-fills every meeting that can still change (starting from `RECONCILE_LOOKBACK`
//! ago onwards) through the back-fill path, so that any booking, cancellation or no-show whose
//! webhook never arrived is applied now, exactly once, and (c) records the run with the meeting
//! service, which exports it as metrics and shows it in the adapter's health summary.
//!
//! An event that changes a meeting (the meeting service says so) is one whose webhook had not
//! arrived: the webhook would have applied it already, and then the back-filled copy changes
//! nothing. A webhook still on its way when the run reaches its booking is counted too.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use proto::v1::{SubscriptionState, SyncRun};

use super::{
    CliError,
    backfill::{self, Range, Report},
    client::CalendlyClient,
    progress::Reporter,
    resources::{CurrentUser, Subscription},
    settings::ReconcileSettings,
    webhooks::{self, Scope},
};
use adapter::meeting_client::MeetingClient;

/// What the run found of the subscription(s) for the callback URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionCheck {
    pub state: SubscriptionState,
    pub uri: Option<String>,
    /// When an active subscription's deliveries began failing (Calendly disables it 24 h later).
    pub retry_started_at: Option<DateTime<Utc>>,
    /// Why the state is unknown.
    pub error: Option<String>,
}

/// Whether `candidate` is the callback URL `ours`: the same scheme, host, port and path. The
/// query may differ, since a signing-key rotation subscribes the same path with a query string.
pub fn same_callback(candidate: &str, ours: &str) -> bool {
    let (Ok(candidate), Ok(ours)) = (
        reqwest::Url::parse(candidate.trim()),
        reqwest::Url::parse(ours.trim()),
    ) else {
        return false;
    };
    let path = |url: &reqwest::Url| url.path().trim_end_matches('/').to_owned();
    candidate.scheme() == ours.scheme()
        && candidate.host_str().map(str::to_ascii_lowercase) == ours.host_str().map(str::to_ascii_lowercase)
        && candidate.port_or_known_default() == ours.port_or_known_default()
        && path(&candidate) == path(&ours)
}

/// The state of the subscriptions for `callback_url`: active when any is; else disabled when
/// there is one (in any other state); else missing.
pub fn check_subscriptions(subscriptions: &[Subscription], callback_url: &str) -> SubscriptionCheck {
    let ours: Vec<&Subscription> = subscriptions
        .iter()
        .filter(|s| {
            s.callback_url
                .as_deref()
                .is_some_and(|url| same_callback(url, callback_url))
        })
        .collect();
    let active = ours.iter().find(|s| s.state.as_deref() == Some("active"));
    let (state, chosen) = match (active, ours.first()) {
        (Some(active), _) => (SubscriptionState::Active, Some(*active)),
        (None, Some(other)) => (SubscriptionState::Disabled, Some(*other)),
        (None, None) => (SubscriptionState::Missing, None),
    };
    SubscriptionCheck {
        state,
        uri: chosen.map(|s| s.uri.clone()),
        retry_started_at: chosen
            .filter(|_| state == SubscriptionState::Active)
            .and_then(|s| s.retry_started_at.as_deref())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
        error: None,
    }
}

/// The run as the meeting service records it.
pub fn sync_run(
    check: &SubscriptionCheck,
    report: &Report,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
) -> SyncRun {
    let timestamp = |t: DateTime<Utc>| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or_default(),
    };
    let error = check
        .error
        .clone()
        .or_else(|| report.stopped.clone())
        .or_else(|| report.failures.first().cloned())
        .unwrap_or_default();
    SyncRun {
        id: 0,
        started_at: Some(timestamp(started_at)),
        finished_at: Some(timestamp(finished_at)),
        subscription_state: check.state as i32,
        subscription_uri: check.uri.clone().unwrap_or_default(),
        retry_started_at: check.retry_started_at.map(timestamp),
        events_sent: report.tally.events_sent,
        events_missed: report.tally.events_changed,
        failures: report.tally.failed,
        succeeded: report.is_complete() && check.error.is_none(),
        error: error.chars().take(2_000).collect(),
    }
}

/// The whole run; the error says how it ended when it did not end well.
pub async fn run(
    calendly: &CalendlyClient,
    meeting: &MeetingClient,
    me: &CurrentUser,
    settings: &ReconcileSettings,
    callback_url: &str,
    reporter: &mut Reporter<'_>,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let started_at = Utc::now();
    let check = match webhooks::subscriptions(calendly, me, Scope::Organization).await {
        Ok(subscriptions) => check_subscriptions(&subscriptions, callback_url),
        Err(error) => SubscriptionCheck {
            state: SubscriptionState::Unknown,
            uri: None,
            retry_started_at: None,
            error: Some(format!("listing the webhook subscriptions failed: {error}")),
        },
    };
    let lookback = chrono::Duration::from_std(settings.lookback).unwrap_or(chrono::Duration::days(1));
    let range = Range {
        since: Some(started_at - lookback),
        until: None,
    };
    let report = backfill::run(calendly, meeting, me, range, reporter).await?;
    reporter.finish();
    let run = sync_run(&check, &report, started_at, Utc::now());
    let tracking_id = format!("reconcile-{}", uuid::Uuid::new_v4());
    let recorded = meeting.record_sync_run(run.clone(), &tracking_id).await;

    report.write(out)?;
    write_summary(out, &check, &run, callback_url)?;
    if let Err(error) = recorded {
        return Err(CliError::RecordFailed(error.to_string()));
    }
    match check.state {
        SubscriptionState::Active if run.succeeded => Ok(()),
        SubscriptionState::Disabled | SubscriptionState::Missing => Err(CliError::SubscriptionNotActive {
            state: check.state.label(),
            callback_url: callback_url.to_owned(),
        }),
        _ => Err(CliError::ReconcileIncomplete(run.error)),
    }
}

fn write_summary(
    out: &mut (dyn Write + Send),
    check: &SubscriptionCheck,
    run: &SyncRun,
    callback_url: &str,
) -> std::io::Result<()> {
    writeln!(out, "Reconcile of {callback_url}:")?;
    match (&check.uri, check.state) {
        (Some(uri), state) => writeln!(out, "  subscription  {} ({uri})", state.label())?,
        (None, state) => writeln!(out, "  subscription  {}", state.label())?,
    }
    if let Some(since) = check.retry_started_at {
        writeln!(
            out,
            "  retrying since {}: deliveries are failing; Calendly disables it 24 hours after that",
            since.to_rfc3339_opts(SecondsFormat::Secs, true)
        )?;
    }
    writeln!(
        out,
        "  missed        {} event(s) applied whose webhooks had not arrived",
        run.events_missed
    )?;
    if matches!(
        check.state,
        SubscriptionState::Disabled | SubscriptionState::Missing
    ) {
        writeln!(
            out,
            "  Calendly delivers nothing to this URL. Restore it with:\n    calendly webhooks create --url {callback_url}\n  \
             then set the adapter's CALENDLY_WEBHOOK_SECRET to the key it prints{}.",
            if check.uri.is_some() {
                ", and delete the disabled one with calendly webhooks delete"
            } else {
                ""
            }
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(url: &str, state: &str, retry: Option<&str>) -> Subscription {
        Subscription {
            uri: format!("https://api.calendly.com/webhook_subscriptions/{state}"),
            callback_url: Some(url.to_owned()),
            state: Some(state.to_owned()),
            scope: Some("organization".into()),
            events: Vec::new(),
            created_at: None,
            retry_started_at: retry.map(str::to_owned),
        }
    }

    const OURS: &str = "https://hooks.example.com/webhook/calendly";

    #[test]
    fn callback_urls_match_by_scheme_host_port_and_path_whatever_the_query() {
        for (candidate, same) in [
            (OURS, true),
            ("https://HOOKS.example.com/webhook/calendly/", true),
            ("https://hooks.example.com:443/webhook/calendly?k=2", true),
            ("http://hooks.example.com/webhook/calendly", false),
            ("https://hooks.example.com:8443/webhook/calendly", false),
            ("https://other.example.com/webhook/calendly", false),
            ("https://hooks.example.com/webhook/calendly/test", false),
            ("not a url", false),
        ] {
            assert_eq!(same_callback(candidate, OURS), same, "{candidate}");
        }
    }

    #[test]
    fn the_state_is_active_when_any_of_ours_is_else_disabled_else_missing() {
        let other = subscription("https://elsewhere.example.com/hook", "active", None);
        let disabled = subscription(OURS, "disabled", None);
        let active = subscription(
            &format!("{OURS}?k=2"),
            "active",
            Some("2030-03-01T10:00:00.000000Z"),
        );
        let cases = [
            (vec![], SubscriptionState::Missing, None),
            (vec![other.clone()], SubscriptionState::Missing, None),
            (
                vec![other.clone(), disabled.clone()],
                SubscriptionState::Disabled,
                Some(&disabled),
            ),
            (
                vec![disabled.clone(), active.clone()],
                SubscriptionState::Active,
                Some(&active),
            ),
        ];
        for (subscriptions, state, chosen) in cases {
            let check = check_subscriptions(&subscriptions, OURS);
            assert_eq!(check.state, state, "{subscriptions:?}");
            assert_eq!(check.uri, chosen.map(|s| s.uri.clone()));
        }
        let check = check_subscriptions(&[active], OURS);
        assert_eq!(
            check.retry_started_at.map(|t| t.to_rfc3339()),
            Some("2030-03-01T10:00:00+00:00".to_owned())
        );
    }
}
