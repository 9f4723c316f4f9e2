//! The adapter's settings, read once at start.

use std::{net::SocketAddr, time::Duration};

use ipnet::IpNet;
use service_kit::{
    settings::{Environment, Lookup, Secret, SettingError, flag, optional, parsed, seconds},
    telemetry::LogSettings,
};

use crate::signature::{DEFAULT_TOLERANCE_SECS, SigningKeys};

/// The seed's payload limit.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A per-client-IP allowance: `limit` requests per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u32,
    pub window: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub environment: Environment,
    /// HTTP listen address: `HTTP_ADDR`, else `PORT` (3001) on 127.0.0.1 in development and
    /// 0.0.0.0 in production.
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// `CALENDLY_WEBHOOK_SECRET`, comma-separated for rotation.
    pub signing_keys: SigningKeys,
    pub signature_tolerance: Duration,
    /// `CALENDLY_API_TOKEN`: only reported as configured or not; the webhook path never calls Calendly.
    pub calendly_api_token: Option<Secret>,
    /// `MEETING_SERVICE_URL`, e.g. `http://meeting-service:50051`.
    pub meeting_service_url: String,
    pub meeting_service_timeout: Duration,
    pub internal_api_token: Option<Secret>,
    /// `ENABLE_TEST_ENDPOINT`: on by default in development, off in production.
    pub test_endpoint_enabled: bool,
    pub webhook_rate_limit: RateLimit,
    pub test_rate_limit: RateLimit,
    /// Peers whose `X-Forwarded-For` / `Forwarded` headers are believed (`TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<IpNet>,
    /// Client networks never rate limited (`RATE_LIMIT_EXEMPT_CIDRS`).
    pub rate_limit_exempt: Vec<IpNet>,
    pub shutdown_grace: Duration,
    /// How long a client may take to send its request headers, and then its body
    /// (`REQUEST_READ_TIMEOUT_SECS`): a slow or stalled client is cut off instead of holding a
    /// connection and a task forever. Calendly sends a few kilobytes at once.
    pub request_read_timeout: Duration,
    pub log: LogSettings,
}

impl Config {
    pub fn from_lookup(lookup: Lookup<'_>) -> Result<Self, SettingError> {
        let environment = Environment::from_lookup(lookup)?;
        let production = environment == Environment::Production;
        let signing_keys = SigningKeys::from_comma_separated(
            &optional(lookup, "CALENDLY_WEBHOOK_SECRET").unwrap_or_default(),
        );
        if production && signing_keys.is_empty() {
            return Err(SettingError::new(
                "CALENDLY_WEBHOOK_SECRET",
                "is required in production (APP_ENV, or NODE_ENV when APP_ENV is unset, is production)",
            ));
        }
        let port: u16 = parsed(lookup, "PORT", 3001)?;
        let host = if production { [0, 0, 0, 0] } else { [127, 0, 0, 1] };
        let meeting_service_url =
            optional(lookup, "MEETING_SERVICE_URL").unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
        if !(meeting_service_url.starts_with("http://") || meeting_service_url.starts_with("https://")) {
            return Err(SettingError::new(
                "MEETING_SERVICE_URL",
                "must start with http:// or https://",
            ));
        }
        Ok(Self {
            environment,
            http_addr: parsed(lookup, "HTTP_ADDR", SocketAddr::from((host, port)))?,
            metrics_addr: parsed(lookup, "METRICS_ADDR", SocketAddr::from((host, 9464)))?,
            signing_keys,
            signature_tolerance: seconds(
                lookup,
                "SIGNATURE_TOLERANCE_SECS",
                Duration::from_secs(DEFAULT_TOLERANCE_SECS),
            )?,
            calendly_api_token: optional(lookup, "CALENDLY_API_TOKEN").map(Secret::new),
            meeting_service_url,
            meeting_service_timeout: Duration::from_millis(parsed(
                lookup,
                "MEETING_SERVICE_TIMEOUT_MS",
                5_000,
            )?),
            internal_api_token: optional(lookup, "INTERNAL_API_TOKEN").map(Secret::new),
            test_endpoint_enabled: flag(lookup, "ENABLE_TEST_ENDPOINT", !production)?,
            webhook_rate_limit: rate_limit(
                lookup,
                "WEBHOOK_RATE_LIMIT",
                100,
                "WEBHOOK_RATE_WINDOW_SECS",
                15 * 60,
            )?,
            test_rate_limit: rate_limit(lookup, "TEST_RATE_LIMIT", 10, "TEST_RATE_WINDOW_SECS", 5 * 60)?,
            trusted_proxies: networks(lookup, "TRUSTED_PROXIES")?,
            rate_limit_exempt: networks(lookup, "RATE_LIMIT_EXEMPT_CIDRS")?,
            shutdown_grace: seconds(lookup, "SHUTDOWN_GRACE_SECS", Duration::from_secs(20))?,
            request_read_timeout: positive_seconds(lookup, "REQUEST_READ_TIMEOUT_SECS", 10)?,
            log: LogSettings::from_lookup(lookup, production)?,
        })
    }
}

fn rate_limit(
    lookup: Lookup<'_>,
    limit_variable: &str,
    default_limit: u32,
    window_variable: &str,
    default_window_secs: u64,
) -> Result<RateLimit, SettingError> {
    let limit: u32 = parsed(lookup, limit_variable, default_limit)?;
    if limit == 0 {
        return Err(SettingError::new(limit_variable, "must be at least 1"));
    }
    let window = seconds(lookup, window_variable, Duration::from_secs(default_window_secs))?;
    if window.is_zero() {
        return Err(SettingError::new(window_variable, "must be at least 1 second"));
    }
    Ok(RateLimit { limit, window })
}

fn positive_seconds(lookup: Lookup<'_>, variable: &str, default_secs: u64) -> Result<Duration, SettingError> {
    let value = seconds(lookup, variable, Duration::from_secs(default_secs))?;
    if value.is_zero() {
        return Err(SettingError::new(variable, "must be at least 1 second"));
    }
    Ok(value)
}

/// Comma-separated CIDRs or plain addresses.
fn networks(lookup: Lookup<'_>, variable: &str) -> Result<Vec<IpNet>, SettingError> {
    let Some(value) = optional(lookup, variable) else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| SettingError::new(variable, format!("{item:?} is not an address or CIDR")))
        })
        .collect()
}

impl service_kit::binary::ServiceSettings for Config {
    fn read(lookup: Lookup<'_>) -> Result<Self, SettingError> {
        Self::from_lookup(lookup)
    }

    fn startup(&self) -> service_kit::binary::Startup<'_> {
        service_kit::binary::Startup {
            name: "adapter",
            protocol: "HTTP",
            log: &self.log,
            metrics_addr: self.metrics_addr,
            listen_addr: self.http_addr,
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
    fn defaults_are_the_seeds() {
        let config = config(&[]).expect("defaults are valid");
        assert_eq!(config.http_addr.port(), 3001);
        assert_eq!(
            config.webhook_rate_limit,
            RateLimit {
                limit: 100,
                window: Duration::from_secs(900)
            }
        );
        assert_eq!(
            config.test_rate_limit,
            RateLimit {
                limit: 10,
                window: Duration::from_secs(300)
            }
        );
        assert!(config.test_endpoint_enabled);
    }

    #[test]
    fn production_refuses_to_start_without_a_webhook_secret() {
        let error = config(&[("NODE_ENV", "production")]).expect_err("secret required");
        assert_eq!(error.variable, "CALENDLY_WEBHOOK_SECRET");
        let production =
            config(&[("APP_ENV", "production"), ("CALENDLY_WEBHOOK_SECRET", "k")]).expect("valid");
        assert!(
            !production.test_endpoint_enabled,
            "the test endpoint is off in production by default"
        );
        assert_eq!(production.http_addr.ip().to_string(), "0.0.0.0");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (variable, value) in [
            ("PORT", "http"),
            ("MEETING_SERVICE_URL", "meeting:50051"),
            ("TRUSTED_PROXIES", "10.0.0.0/8,not-a-net"),
            ("WEBHOOK_RATE_LIMIT", "0"),
            ("ENABLE_TEST_ENDPOINT", "sometimes"),
            ("SIGNATURE_TOLERANCE_SECS", "-1"),
        ] {
            let error = config(&[(variable, value)]).expect_err("invalid");
            assert_eq!(error.variable, variable, "{value:?}");
        }
    }
}
