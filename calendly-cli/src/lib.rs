//! The `calendly` command: the Calendly API side of the service. It manages webhook subscriptions
//! and back-fills existing bookings through the meeting service's webhook path, translating the
//! API's resources with the adapter's own webhook parser.
//!
//! Layout, each module depending only on those listed before it: `settings` (environment, the
//! retry policy), `pagination` (plain functions), `client` (HTTP, retries, error mapping),
//! `resources` (API shapes), `translate` (resources → webhook bodies, plain functions), `tally`
//! (a back-fill's counts), `progress` (bar or lines), `webhooks`, `backfill` and `reconcile` (the
//! commands), `cli` (arguments, parsed with the commands' defaults and parsers). The binary (`src/main.rs`) only parses, reads settings and calls [`run`], which tests
//! call in-process.

pub mod backfill;
pub mod cli;
pub mod client;
pub mod pagination;
pub mod progress;
pub mod reconcile;
pub mod resources;
pub mod settings;
pub mod tally;
pub mod translate;
pub mod webhooks;

use std::io::Write;

pub use cli::Cli;
pub use client::{CalendlyClient, CalendlyError};
pub use settings::Settings;

use adapter::meeting_client::MeetingClient;
use cli::{Command, WebhooksCommand};

/// Where a command writes.
pub struct Output<'a> {
    /// Results: what was created or listed, the back-fill summary. Scripts read this.
    pub out: &'a mut (dyn Write + Send),
    /// Progress and failures as they happen.
    pub err: &'a mut (dyn Write + Send),
    /// Draw a progress bar on the process's stderr instead of writing progress lines to `err`;
    /// the binary sets it when stderr is a terminal.
    pub progress_bar: bool,
}

/// `reconcile`'s exit status when the subscription is missing or disabled: distinct from a
/// failure (1) and from bad usage (2), so a job's monitor can tell "webhooks are off" apart.
pub const SUBSCRIPTION_NOT_ACTIVE: u8 = 3;

/// Why a command failed; [`CliError::exit_code`] is the process's exit status.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Arguments that parsed but cannot be used (checked before any request).
    #[error("{0}")]
    Request(#[from] webhooks::RequestError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Settings(#[from] service_kit::settings::SettingError),
    #[error("{0}")]
    Calendly(#[from] CalendlyError),
    #[error("could not set up the meeting service client: {0}")]
    MeetingService(#[from] adapter::meeting_client::SetupError),
    #[error("backfill incomplete: {failed} failed{stopped}; see the failures above and run it again")]
    BackfillIncomplete { failed: u64, stopped: &'static str },
    #[error(
        "the webhook subscription for {callback_url} is {state}: Calendly delivers nothing to it; see above"
    )]
    SubscriptionNotActive {
        state: &'static str,
        callback_url: String,
    },
    #[error("reconcile incomplete: {0}; the next run tries again")]
    ReconcileIncomplete(String),
    #[error("the meeting service did not record the run: {0}")]
    RecordFailed(String),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// 2 for what the person running the command must change (arguments, settings), as clap
    /// does for bad arguments; 1 for failures along the way; 3 for a subscription that is not
    /// active.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Request(_) | Self::Usage(_) | Self::Settings(_) => 2,
            Self::Calendly(_)
            | Self::MeetingService(_)
            | Self::BackfillIncomplete { .. }
            | Self::ReconcileIncomplete(_)
            | Self::RecordFailed(_)
            | Self::Output(_) => 1,
            Self::SubscriptionNotActive { .. } => SUBSCRIPTION_NOT_ACTIVE,
        }
    }
}

/// Runs one command to completion.
pub async fn run(cli: Cli, settings: Settings, output: &mut Output<'_>) -> Result<(), CliError> {
    match cli.command {
        Command::Webhooks { command } => {
            // Arguments are checked before the client exists, so a refused one costs no request.
            let client = CalendlyClient::new(&settings.api);
            match command {
                WebhooksCommand::Create(args) => {
                    let new = webhooks::NewSubscription::check(
                        &args.url,
                        &args.events,
                        args.scope,
                        args.signing_key,
                        args.allow_http,
                    )?;
                    webhooks::create(&client?, new, output).await
                }
                WebhooksCommand::List(args) => webhooks::list(&client?, args.scope, output).await,
                WebhooksCommand::Delete(args) => {
                    webhooks::subscription_path(&args.uri)?;
                    webhooks::delete(&client?, &args.uri, output).await
                }
            }
        }
        Command::Backfill(args) => {
            let range = backfill::Range::new(args.since, args.until).map_err(CliError::Usage)?;
            let (calendly, meeting) = clients(&settings)?;
            let me = resources::current_user(&calendly).await?;
            let mut reporter = progress::Reporter::new(&mut *output.err, output.progress_bar);
            let report = backfill::run(&calendly, &meeting, &me, range, &mut reporter).await?;
            reporter.finish();
            drop(reporter);
            report.write(&mut *output.out)?;
            if report.is_complete() {
                Ok(())
            } else {
                Err(CliError::BackfillIncomplete {
                    failed: report.tally.failed,
                    stopped: if report.stopped.is_some() {
                        " and it stopped early"
                    } else {
                        ""
                    },
                })
            }
        }
        Command::Reconcile => {
            let callback_url = settings.reconcile.callback_url.clone().ok_or_else(|| {
                service_kit::settings::SettingError::new(
                    "WEBHOOK_CALLBACK_URL",
                    "is required by reconcile: this deployment's webhook URL, as subscribed",
                )
            })?;
            let (calendly, meeting) = clients(&settings)?;
            let me = resources::current_user(&calendly).await?;
            let mut reporter = progress::Reporter::new(&mut *output.err, output.progress_bar);
            reconcile::run(
                &calendly,
                &meeting,
                &me,
                &settings.reconcile,
                &callback_url,
                &mut reporter,
                &mut *output.out,
            )
            .await
        }
    }
}

/// The Calendly and meeting-service clients of a command that needs both.
fn clients(settings: &Settings) -> Result<(CalendlyClient, MeetingClient), CliError> {
    let meeting = settings.meeting.as_ref().ok_or_else(|| {
        service_kit::settings::SettingError::new(
            "MEETING_SERVICE_URL",
            "this command needs the meeting service settings",
        )
    })?;
    let calendly = CalendlyClient::new(&settings.api)?;
    let meeting = MeetingClient::new(
        &meeting.url,
        meeting.token.as_ref().map(|t| t.expose()),
        meeting.timeout,
    )?;
    Ok((calendly, meeting))
}
