//! The meeting service's settings, read once at start.

use std::{net::SocketAddr, time::Duration};

use service_kit::{
    settings::{
        Environment, Lookup, Secret, SettingError, flag, optional, parsed, positive_seconds, seconds,
    },
    telemetry::LogSettings,
};

use crate::{
    domain::reminders::{ReminderOffset, parse_offsets},
    feed::FeedSettings,
    store::{batch::BatchSettings, prune::Retention},
};

/// Where `cargo run` keeps its data when `DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/meetings.db?mode=rwc";

#[derive(Debug, Clone)]
pub struct Config {
    pub environment: Environment,
    pub database_url: Secret,
    pub database_max_connections: u32,
    /// gRPC listen address (`GRPC_ADDR`).
    pub grpc_addr: SocketAddr,
    /// `/metrics` listen address (`METRICS_ADDR`).
    pub metrics_addr: SocketAddr,
    /// Bearer token internal callers must present; `None` accepts any caller (development only).
    pub internal_api_token: Option<Secret>,
    pub reminder_offsets: Vec<ReminderOffset>,
    pub create_leads_for_unknown_invitees: bool,
    /// How long raw bodies stay in the inbox (`RAW_BODY_RETENTION_DAYS`) and changes in the
    /// change feed (`CHANGE_RETENTION_DAYS`).
    pub retention: Retention,
    /// How change streams behave (`WATCH_HEARTBEAT_SECS`, `WATCH_STALL_TIMEOUT_SECS`,
    /// `WATCH_MAX_STREAMS`, `WATCH_POLL_INTERVAL_SECS`).
    pub feed: FeedSettings,
    /// How often the database is checked for the health service (`HEALTH_CHECK_INTERVAL_SECS`).
    pub health_check_interval: Duration,
    /// How long in-flight requests may take to finish after SIGTERM (`SHUTDOWN_GRACE_SECS`).
    pub shutdown_grace: Duration,
    /// How concurrent deliveries are grouped into transactions (`INGEST_BATCH_MAX`,
    /// `INGEST_BATCH_WAIT_MS`).
    pub ingest_batch: BatchSettings,
    pub log: LogSettings,
}

impl Config {
    pub fn from_lookup(lookup: Lookup<'_>) -> Result<Self, SettingError> {
        let environment = Environment::from_lookup(lookup)?;
        let production = environment == Environment::Production;
        let database_url =
            optional(lookup, "DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(SettingError::new(
                "DATABASE_URL",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        let internal_api_token = optional(lookup, "INTERNAL_API_TOKEN").map(Secret::new);
        if production && internal_api_token.is_none() {
            return Err(SettingError::new(
                "INTERNAL_API_TOKEN",
                "is required in production (APP_ENV, or NODE_ENV when APP_ENV is unset, is production)",
            ));
        }
        let reminder_offsets = match optional(lookup, "REMINDER_OFFSETS") {
            None => crate::domain::reminders::default_offsets(),
            Some(value) => parse_offsets(&value).map_err(|e| SettingError::new("REMINDER_OFFSETS", e))?,
        };
        // Loopback for local use; every interface in production, where a pod must be reachable.
        let host = if production { [0, 0, 0, 0] } else { [127, 0, 0, 1] };
        let retention_days: u64 = parsed(lookup, "RAW_BODY_RETENTION_DAYS", 30)?;
        let change_retention_days: u64 = parsed(lookup, "CHANGE_RETENTION_DAYS", 7)?;
        if change_retention_days == 0 {
            return Err(SettingError::new("CHANGE_RETENTION_DAYS", "must be at least 1"));
        }
        let feed_defaults = FeedSettings::default();
        let max_streams: usize = parsed(lookup, "WATCH_MAX_STREAMS", feed_defaults.max_streams)?;
        if max_streams == 0 {
            return Err(SettingError::new("WATCH_MAX_STREAMS", "must be at least 1"));
        }
        let defaults = BatchSettings::default();
        let batch_max: usize = parsed(lookup, "INGEST_BATCH_MAX", defaults.max)?;
        if !(1..=1_000).contains(&batch_max) {
            return Err(SettingError::new("INGEST_BATCH_MAX", "must be 1 to 1000"));
        }
        let batch_wait_ms: u64 = parsed(lookup, "INGEST_BATCH_WAIT_MS", defaults.wait.as_millis() as u64)?;
        if batch_wait_ms > 1_000 {
            return Err(SettingError::new("INGEST_BATCH_WAIT_MS", "must be at most 1000"));
        }
        Ok(Self {
            environment,
            database_url: Secret::new(database_url),
            database_max_connections: parsed(lookup, "DATABASE_MAX_CONNECTIONS", 10)?,
            grpc_addr: parsed(lookup, "GRPC_ADDR", SocketAddr::from((host, 50051)))?,
            metrics_addr: parsed(lookup, "METRICS_ADDR", SocketAddr::from((host, 9465)))?,
            internal_api_token,
            reminder_offsets,
            create_leads_for_unknown_invitees: flag(lookup, "CREATE_LEADS_FOR_UNKNOWN_INVITEES", false)?,
            retention: Retention {
                raw_bodies: days(retention_days),
                changes: days(change_retention_days),
            },
            feed: FeedSettings {
                heartbeat: positive_seconds(lookup, "WATCH_HEARTBEAT_SECS", feed_defaults.heartbeat)?,
                stall_timeout: positive_seconds(
                    lookup,
                    "WATCH_STALL_TIMEOUT_SECS",
                    feed_defaults.stall_timeout,
                )?,
                max_streams,
                poll_interval: positive_seconds(
                    lookup,
                    "WATCH_POLL_INTERVAL_SECS",
                    feed_defaults.poll_interval,
                )?,
            },
            health_check_interval: positive_seconds(
                lookup,
                "HEALTH_CHECK_INTERVAL_SECS",
                Duration::from_millis(250),
            )?,
            shutdown_grace: seconds(lookup, "SHUTDOWN_GRACE_SECS", Duration::from_secs(20))?,
            ingest_batch: BatchSettings {
                max: batch_max,
                wait: Duration::from_millis(batch_wait_ms),
            },
            log: LogSettings::from_lookup(lookup, production)?,
        })
    }
}

fn days(days: u64) -> Duration {
    Duration::from_secs(days.saturating_mul(86_400))
}

impl service_kit::binary::ServiceSettings for Config {
    fn read(lookup: Lookup<'_>) -> Result<Self, SettingError> {
        Self::from_lookup(lookup)
    }

    fn startup(&self) -> service_kit::binary::Startup<'_> {
        service_kit::binary::Startup {
            name: "meeting service",
            protocol: "gRPC",
            log: &self.log,
            metrics_addr: self.metrics_addr,
            listen_addr: self.grpc_addr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use service_kit::settings::pairs_lookup;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, SettingError> {
        let lookup = pairs_lookup(pairs);
        Config::from_lookup(&lookup)
    }

    #[test]
    fn defaults_run_locally_on_sqlite() {
        let config = config(&[]).expect("defaults are valid");
        assert_eq!(config.database_url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(config.reminder_offsets.len(), 3);
        assert!(!config.create_leads_for_unknown_invitees);
        assert_eq!(
            config.retention.raw_bodies,
            Duration::from_secs(30 * 86_400),
            "RAW_BODY_RETENTION_DAYS defaults to 30"
        );
        assert_eq!(
            config.retention.changes,
            Duration::from_secs(7 * 86_400),
            "CHANGE_RETENTION_DAYS defaults to 7"
        );
        assert_eq!(config.feed, FeedSettings::default());
        let week = config_with(&[("RAW_BODY_RETENTION_DAYS", "7"), ("CHANGE_RETENTION_DAYS", "2")]);
        assert_eq!(week.retention.raw_bodies, Duration::from_secs(7 * 86_400));
        assert_eq!(week.retention.changes, Duration::from_secs(2 * 86_400));
    }

    fn config_with(pairs: &[(&str, &str)]) -> Config {
        config(pairs).expect("valid settings")
    }

    #[test]
    fn production_refuses_to_start_without_an_internal_token() {
        let error = config(&[("APP_ENV", "production")]).expect_err("token required");
        assert_eq!(error.variable, "INTERNAL_API_TOKEN");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (variable, value) in [
            ("DATABASE_URL", "mysql://x"),
            ("GRPC_ADDR", "nowhere"),
            ("REMINDER_OFFSETS", "1w"),
            ("CREATE_LEADS_FOR_UNKNOWN_INVITEES", "maybe"),
            ("LOG_FORMAT", "xml"),
            ("INGEST_BATCH_MAX", "0"),
            ("INGEST_BATCH_WAIT_MS", "5000"),
            ("CHANGE_RETENTION_DAYS", "0"),
            ("WATCH_MAX_STREAMS", "0"),
            ("WATCH_STALL_TIMEOUT_SECS", "0"),
            ("WATCH_HEARTBEAT_SECS", "soon"),
        ] {
            let error = config(&[(variable, value)]).expect_err("invalid");
            assert_eq!(error.variable, variable);
        }
    }
}
