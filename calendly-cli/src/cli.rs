//! The command line, as clap types. Values that are secrets parse into [`Secret`], so printing
//! the parsed arguments (`{:?}`) never shows them.

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use service_kit::settings::Secret;

use super::{
    backfill::parse_time_bound,
    webhooks::{DEFAULT_EVENTS, Scope},
};

#[derive(Debug, Parser)]
#[command(
    name = "calendly",
    version,
    about = "Manage Calendly webhook subscriptions and back-fill existing bookings into the meeting service",
    after_help = "Settings come from the environment (and .env): CALENDLY_API_TOKEN (required), \
                  CALENDLY_API_BASE_URL, CALENDLY_API_TIMEOUT_MS; for backfill and reconcile also \
                  MEETING_SERVICE_URL, INTERNAL_API_TOKEN, MEETING_SERVICE_TIMEOUT_MS; for reconcile \
                  WEBHOOK_CALLBACK_URL (required) and RECONCILE_LOOKBACK."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list or delete Calendly webhook subscriptions.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// Apply the organization's existing bookings through the meeting service, as webhooks would.
    Backfill(BackfillArgs),
    /// Check this deployment's webhook subscription, back-fill what can still change, and record
    /// the run (what the scheduled job runs).
    Reconcile,
}

impl Command {
    /// Whether the command needs the meeting service's settings.
    pub fn needs_meeting_service(&self) -> bool {
        match self {
            Self::Webhooks { .. } => false,
            Self::Backfill(_) | Self::Reconcile => true,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Subscribe a callback URL; prints the signing key once.
    Create(CreateArgs),
    /// List subscriptions (all pages).
    List(ListArgs),
    /// Delete a subscription by its URI (as `list` prints it) or uuid.
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Where Calendly posts events, e.g. https://hooks.example.com/webhook/calendly
    #[arg(long)]
    pub url: String,
    /// Event names, comma-separated or repeated.
    #[arg(long, value_delimiter = ',', default_values_t = default_events())]
    pub events: Vec<String>,
    /// `organization`: every member's bookings (owner/admin token); `user`: the token's own.
    #[arg(long, value_enum, default_value_t = Scope::Organization)]
    pub scope: Scope,
    /// Use this signing key (at least 32 characters, no commas) instead of a generated one.
    #[arg(long, value_name = "KEY", value_parser = secret)]
    pub signing_key: Option<Secret>,
    /// Accept an http:// callback URL (local tunnels, tests).
    #[arg(long)]
    pub allow_http: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, value_enum, default_value_t = Scope::Organization)]
    pub scope: Scope,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// https://api.calendly.com/webhook_subscriptions/<uuid>, or the uuid alone.
    pub uri: String,
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// Only meetings starting at or after this time (2030-03-01 or 2030-03-01T09:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time_bound)]
    pub since: Option<DateTime<Utc>>,
    /// Only meetings starting before this time.
    #[arg(long, value_name = "TIME", value_parser = parse_time_bound)]
    pub until: Option<DateTime<Utc>>,
}

fn default_events() -> Vec<String> {
    DEFAULT_EVENTS.iter().map(|e| (*e).to_owned()).collect()
}

fn secret(value: &str) -> Result<Secret, String> {
    Ok(Secret::new(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn create_defaults_to_the_invitee_events_and_organization_scope() {
        let cli = Cli::try_parse_from(["calendly", "webhooks", "create", "--url", "https://x.example/h"])
            .expect("parses");
        let Command::Webhooks {
            command: WebhooksCommand::Create(args),
        } = cli.command
        else {
            panic!("expected webhooks create");
        };
        assert_eq!(args.events, default_events());
        assert_eq!(args.scope, Scope::Organization);
        assert!(args.signing_key.is_none() && !args.allow_http);
    }

    #[test]
    fn events_may_be_comma_separated_and_keys_stay_out_of_debug_output() {
        let key = "k".repeat(40);
        let cli = Cli::try_parse_from([
            "calendly",
            "webhooks",
            "create",
            "--url",
            "https://x.example/h",
            "--events",
            "invitee.created,invitee.canceled",
            "--scope",
            "user",
            "--signing-key",
            &key,
        ])
        .expect("parses");
        assert!(!format!("{cli:?}").contains(&key));
        let Command::Webhooks {
            command: WebhooksCommand::Create(args),
        } = cli.command
        else {
            panic!("expected webhooks create");
        };
        assert_eq!(args.events, ["invitee.created", "invitee.canceled"]);
        assert_eq!(args.scope, Scope::User);
    }

    #[test]
    fn backfill_parses_its_bounds_and_rejects_bad_ones() {
        let cli = Cli::try_parse_from(["calendly", "backfill", "--since", "2030-03-01"]).expect("parses");
        assert!(cli.command.needs_meeting_service());
        assert!(Cli::try_parse_from(["calendly", "backfill", "--until", "someday"]).is_err());
        assert!(
            Cli::try_parse_from(["calendly", "webhooks", "create"]).is_err(),
            "--url is required"
        );
    }
}
