//! The `calendly` command's settings, read once from the environment (after `.env`).
//!
//! Only what the chosen command needs is required: every command calls Calendly, so
//! `CALENDLY_API_TOKEN` always is; only `backfill` and `reconcile` talk to the meeting service,
//! and only `reconcile` needs `WEBHOOK_CALLBACK_URL`.

use std::{net::IpAddr, time::Duration};

use service_kit::settings::{Lookup, Secret, SettingError, optional, parsed};

pub const DEFAULT_BASE_URL: &str = "https://api.calendly.com";
pub const DEFAULT_MEETING_SERVICE_URL: &str = "http://127.0.0.1:50051";
/// Calendly's largest page (`count` 1–100); fewer pages means fewer rate-limited calls.
pub const MAX_PAGE_SIZE: u8 = 100;

#[derive(Debug, Clone)]
pub struct Settings {
    pub api: ApiSettings,
    /// Present when the command talks to the meeting service (`backfill`, `reconcile`).
    pub meeting: Option<MeetingSettings>,
    pub reconcile: ReconcileSettings,
}

/// What `reconcile` checks and back-fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileSettings {
    /// `WEBHOOK_CALLBACK_URL`: this deployment's webhook URL, as subscribed (required by
    /// `reconcile` only).
    pub callback_url: Option<String>,
    /// `RECONCILE_LOOKBACK`: meetings that started up to this long ago can still change (a late
    /// cancellation, a no-show mark), so they are back-filled too.
    pub lookback: Duration,
}

/// `RECONCILE_LOOKBACK` unless set: a day covers a no-show marked the day after the meeting.
pub const DEFAULT_LOOKBACK: Duration = Duration::from_secs(86_400);

/// A duration such as `1d`, `36h`, `90min` (or `90m`) or `3600s`; positive, at most 366 days.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 1d, 36h, 90min or 3600s"))?;
    let unit_seconds = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "min" | "m" => 60,
        "s" => 1,
        _ => return Err(format!("{text:?}: the unit must be d, h, min (or m) or s")),
    };
    let seconds = number.saturating_mul(unit_seconds);
    if seconds == 0 || seconds > 366 * 86_400 {
        return Err(format!("{text:?} must be more than 0 and at most 366 days"));
    }
    Ok(Duration::from_secs(seconds))
}

impl ReconcileSettings {
    pub fn from_lookup(lookup: Lookup<'_>) -> Result<Self, SettingError> {
        let callback_url = optional(lookup, "WEBHOOK_CALLBACK_URL")
            .map(|url| {
                reqwest::Url::parse(url.trim())
                    .ok()
                    .filter(|u| matches!(u.scheme(), "https" | "http"))
                    .map(|_| url.trim().to_owned())
                    .ok_or_else(|| {
                        SettingError::new("WEBHOOK_CALLBACK_URL", "must be an https:// (or http://) URL")
                    })
            })
            .transpose()?;
        let lookback = match optional(lookup, "RECONCILE_LOOKBACK") {
            Some(value) => parse_duration(&value).map_err(|e| SettingError::new("RECONCILE_LOOKBACK", e))?,
            None => DEFAULT_LOOKBACK,
        };
        Ok(Self {
            callback_url,
            lookback,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// `CALENDLY_API_TOKEN`: a personal access token or an OAuth access token.
    pub token: Secret,
    /// `CALENDLY_API_BASE_URL` without a trailing slash.
    pub base_url: String,
    /// `CALENDLY_API_TIMEOUT_MS`: limit on each HTTP request, retries excluded.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// `count` sent on every list request (1–100). Not an environment setting: only tests lower it,
    /// to get many pages from little data.
    pub page_size: u8,
}

#[derive(Debug, Clone)]
pub struct MeetingSettings {
    /// `MEETING_SERVICE_URL`.
    pub url: String,
    /// `INTERNAL_API_TOKEN`, sent as a bearer token when set.
    pub token: Option<Secret>,
    /// `MEETING_SERVICE_TIMEOUT_MS`: deadline of each gRPC call.
    pub timeout: Duration,
}

impl Settings {
    /// Reads the settings; `meeting_service` says whether the command needs the meeting service.
    pub fn from_lookup(lookup: Lookup<'_>, meeting_service: bool) -> Result<Self, SettingError> {
        let meeting = if meeting_service {
            Some(MeetingSettings::from_lookup(lookup)?)
        } else {
            None
        };
        Ok(Self {
            api: ApiSettings::from_lookup(lookup)?,
            meeting,
            reconcile: ReconcileSettings::from_lookup(lookup)?,
        })
    }
}

impl ApiSettings {
    pub fn from_lookup(lookup: Lookup<'_>) -> Result<Self, SettingError> {
        const TOKEN: &str = "CALENDLY_API_TOKEN";
        let token = optional(lookup, TOKEN).ok_or_else(|| {
            SettingError::new(
                TOKEN,
                "is required: a Calendly personal access token (Integrations → API & Webhooks)",
            )
        })?;
        // The value is never echoed: it is a credential.
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SettingError::new(
                TOKEN,
                "must be printable ASCII without spaces or line breaks",
            ));
        }
        let base_url =
            optional(lookup, "CALENDLY_API_BASE_URL").unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let timeout_ms: u64 = parsed(lookup, "CALENDLY_API_TIMEOUT_MS", 30_000)?;
        if timeout_ms == 0 {
            return Err(SettingError::new("CALENDLY_API_TIMEOUT_MS", "must be at least 1"));
        }
        Ok(Self {
            token: Secret::new(token),
            base_url: check_base_url(&base_url)
                .map_err(|message| SettingError::new("CALENDLY_API_BASE_URL", message))?,
            timeout: Duration::from_millis(timeout_ms),
            retry: RetryPolicy::default(),
            page_size: MAX_PAGE_SIZE,
        })
    }
}

impl MeetingSettings {
    pub fn from_lookup(lookup: Lookup<'_>) -> Result<Self, SettingError> {
        let url =
            optional(lookup, "MEETING_SERVICE_URL").unwrap_or_else(|| DEFAULT_MEETING_SERVICE_URL.to_owned());
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(SettingError::new(
                "MEETING_SERVICE_URL",
                "must start with http:// or https://",
            ));
        }
        let token = optional(lookup, "INTERNAL_API_TOKEN");
        if token
            .as_deref()
            .is_some_and(|token| !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(SettingError::new(
                "INTERNAL_API_TOKEN",
                "must be printable ASCII without spaces or line breaks",
            ));
        }
        let timeout_ms: u64 = parsed(lookup, "MEETING_SERVICE_TIMEOUT_MS", 5_000)?;
        if timeout_ms == 0 {
            return Err(SettingError::new(
                "MEETING_SERVICE_TIMEOUT_MS",
                "must be at least 1",
            ));
        }
        Ok(Self {
            url,
            token: token.map(Secret::new),
            timeout: Duration::from_millis(timeout_ms),
        })
    }
}

/// The base URL, normalised without a trailing slash. The bearer token goes wherever this points,
/// so plain `http://` is only accepted for loopback (a local mock or a tunnel), never across a network.
pub fn check_base_url(value: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(value).map_err(|e| format!("{value:?} is not a URL: {e}"))?;
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(
            "must be a plain base URL such as https://api.calendly.com (no credentials, query or fragment)"
                .into(),
        );
    }
    let loopback = url.host_str().is_some_and(|host| {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    });
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err("must use https:// (http:// is only accepted for 127.0.0.1 or localhost)".into());
        }
        other => return Err(format!("has scheme {other:?}; use https://")),
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// How hard one request is tried before its failure is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries of one request that fails with 5xx, a timeout or a dropped connection. Requests that
    /// create something are not retried after they may have reached Calendly (see `CalendlyClient::post`).
    pub max_attempts: u32,
    /// Wait before the second try; doubled for each further try.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// 429 answers waited out for one request before giving up.
    pub max_rate_limit_waits: u32,
    /// Longest single wait a 429 may impose; a longer hint is capped, and the request tried again.
    pub max_rate_limit_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_rate_limit_waits: 10,
            // Calendly's limits are per minute.
            max_rate_limit_wait: Duration::from_secs(65),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed try number `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use service_kit::settings::pairs_lookup;

    fn settings(pairs: &[(&str, &str)], meeting_service: bool) -> Result<Settings, SettingError> {
        let lookup = pairs_lookup(pairs);
        Settings::from_lookup(&lookup, meeting_service)
    }

    #[test]
    fn the_token_is_required_and_the_rest_has_defaults() {
        let error = settings(&[], false).expect_err("token required");
        assert_eq!(error.variable, "CALENDLY_API_TOKEN");
        let ok = settings(&[("CALENDLY_API_TOKEN", "tok")], true).expect("valid");
        assert_eq!(ok.api.base_url, "https://api.calendly.com");
        assert_eq!(ok.api.timeout, Duration::from_secs(30));
        assert_eq!(ok.api.page_size, 100);
        let meeting = ok.meeting.expect("backfill settings");
        assert_eq!(meeting.url, "http://127.0.0.1:50051");
        assert!(meeting.token.is_none());
    }

    #[test]
    fn meeting_service_settings_are_only_read_when_needed() {
        let pairs = [
            ("CALENDLY_API_TOKEN", "tok"),
            ("MEETING_SERVICE_URL", "meeting:50051"),
        ];
        assert!(settings(&pairs, false).is_ok_and(|s| s.meeting.is_none()));
        assert_eq!(
            settings(&pairs, true).expect_err("bad URL").variable,
            "MEETING_SERVICE_URL"
        );
    }

    #[test]
    fn bad_values_name_their_variable_and_never_echo_the_token() {
        for (variable, value) in [
            ("CALENDLY_API_TOKEN", "has space-secret"),
            ("CALENDLY_API_BASE_URL", "api.calendly.com"),
            ("CALENDLY_API_BASE_URL", "http://api.calendly.com"),
            ("CALENDLY_API_BASE_URL", "ftp://127.0.0.1"),
            ("CALENDLY_API_BASE_URL", "https://user:pw@api.calendly.com"),
            ("CALENDLY_API_TIMEOUT_MS", "0"),
            ("CALENDLY_API_TIMEOUT_MS", "soon"),
            ("INTERNAL_API_TOKEN", "two words"),
            ("MEETING_SERVICE_TIMEOUT_MS", "-5"),
        ] {
            let mut pairs = vec![("CALENDLY_API_TOKEN", "tok"), (variable, value)];
            if variable == "CALENDLY_API_TOKEN" {
                pairs.remove(0);
            }
            let error = settings(&pairs, true).expect_err(value);
            assert_eq!(error.variable, variable, "{value:?}");
            assert!(!error.to_string().contains("secret"), "{error}");
        }
    }

    #[test]
    fn the_base_url_is_normalised_and_http_is_loopback_only() {
        assert_eq!(
            check_base_url("https://api.calendly.com/"),
            Ok("https://api.calendly.com".into())
        );
        assert_eq!(
            check_base_url("http://127.0.0.1:8080"),
            Ok("http://127.0.0.1:8080".into())
        );
        assert_eq!(
            check_base_url("http://localhost:9/v2/"),
            Ok("http://localhost:9/v2".into())
        );
        assert!(check_base_url("http://[::1]:80").is_ok());
        assert!(check_base_url("http://10.0.0.5").is_err());
    }

    #[test]
    fn reconcile_settings_default_to_a_day_back_and_check_their_values() {
        let defaults = settings(&[("CALENDLY_API_TOKEN", "t")], false).expect("valid");
        assert_eq!(
            defaults.reconcile,
            ReconcileSettings {
                callback_url: None,
                lookback: DEFAULT_LOOKBACK
            }
        );
        let set = settings(
            &[
                ("CALENDLY_API_TOKEN", "t"),
                (
                    "WEBHOOK_CALLBACK_URL",
                    " https://hooks.example.com/webhook/calendly ",
                ),
                ("RECONCILE_LOOKBACK", "36h"),
            ],
            false,
        )
        .expect("valid");
        assert_eq!(
            set.reconcile.callback_url.as_deref(),
            Some("https://hooks.example.com/webhook/calendly")
        );
        assert_eq!(set.reconcile.lookback, Duration::from_secs(36 * 3_600));
        for (variable, value) in [
            ("WEBHOOK_CALLBACK_URL", "hooks.example.com/webhook"),
            ("WEBHOOK_CALLBACK_URL", "ftp://hooks.example.com/x"),
            ("RECONCILE_LOOKBACK", "yesterday"),
            ("RECONCILE_LOOKBACK", "0h"),
            ("RECONCILE_LOOKBACK", "400d"),
        ] {
            let error = settings(&[("CALENDLY_API_TOKEN", "t"), (variable, value)], false).expect_err(value);
            assert_eq!(error.variable, variable, "{value}");
        }
    }

    #[test]
    fn durations_take_days_hours_minutes_and_seconds() {
        for (text, seconds) in [
            ("1d", 86_400),
            ("36h", 129_600),
            ("90min", 5_400),
            ("90m", 5_400),
            ("3600s", 3_600),
        ] {
            assert_eq!(parse_duration(text), Ok(Duration::from_secs(seconds)), "{text}");
        }
        for bad in ["", "d", "1", "1w", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_output_redacts_the_tokens() {
        let settings = settings(
            &[
                ("CALENDLY_API_TOKEN", "tok-abc"),
                ("INTERNAL_API_TOKEN", "int-xyz"),
            ],
            true,
        )
        .expect("valid");
        let debug = format!("{settings:?}");
        assert!(
            !debug.contains("tok-abc") && !debug.contains("int-xyz"),
            "{debug}"
        );
    }
}
