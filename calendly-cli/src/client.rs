//! A small client for the Calendly API v2: bearer token, JSON, a timeout on every request,
//! rate limits waited out, transient failures retried with exponential backoff, and each HTTP
//! answer mapped to a [`CalendlyError`] on purpose.
//!
//! The token only ever goes to the configured base URL: paths are built from it, never taken
//! from a URL in a response or on the command line (see `pagination` and `webhooks`).

use std::{fmt, time::Duration};

use reqwest::{
    Method, StatusCode,
    header::{self, HeaderMap, HeaderValue},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{
    pagination::{Cursor, Page},
    settings::{ApiSettings, RetryPolicy},
};

/// How long a 429 asks the client to wait. `Retry-After` is seconds or an HTTP date;
/// Calendly documents `X-RateLimit-Reset` as seconds until the window resets (a value that large
/// is read as a Unix time instead). Without either, `fallback`. Never more than `cap`.
pub fn rate_limit_delay(
    retry_after: Option<&str>,
    reset: Option<&str>,
    now_unix: i64,
    fallback: Duration,
    cap: Duration,
) -> Duration {
    let from_retry_after = retry_after.map(str::trim).and_then(|value| {
        value.parse::<u64>().ok().or_else(|| {
            let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            u64::try_from(date.timestamp().saturating_sub(now_unix).max(0)).ok()
        })
    });
    let from_reset = || {
        let value = reset?.trim().parse::<u64>().ok()?;
        // A ten-digit value is a point in time, not a duration.
        if value > 1_000_000_000 {
            let now = u64::try_from(now_unix).unwrap_or(0);
            Some(value.saturating_sub(now))
        } else {
            Some(value)
        }
    };
    from_retry_after
        .or_else(from_reset)
        .map_or(fallback, Duration::from_secs)
        .min(cap)
}

/// Why a Calendly call failed. Messages are written for the person running the command and never
/// contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendlyError {
    #[error(
        "Calendly did not accept the API token (HTTP 401{detail}). Check CALENDLY_API_TOKEN: it may be \
         mistyped, expired or revoked"
    )]
    Unauthenticated { detail: String },
    #[error(
        "Calendly refused this request for the API token's user (HTTP 403{detail}). Organization-wide \
         subscriptions need an owner or admin token, and webhooks need a paid plan; check CALENDLY_API_TOKEN"
    )]
    PermissionDenied { detail: String },
    #[error("not found: {what} (HTTP 404{detail})")]
    NotFound { what: String, detail: String },
    #[error("Calendly refused the request for {what} (HTTP {status}{detail})")]
    Refused {
        what: String,
        status: u16,
        detail: String,
    },
    #[error("Calendly kept answering 429 Too Many Requests for {what} after {waits} waits; try again later")]
    RateLimited { what: String, waits: u32 },
    #[error("Calendly failed on {what} with HTTP {status} after {attempts} attempt(s){detail}")]
    Server {
        what: String,
        status: u16,
        attempts: u32,
        detail: String,
    },
    #[error("Calendly did not answer {what} within {timeout_ms} ms, {attempts} attempt(s)")]
    Timeout {
        what: String,
        timeout_ms: u128,
        attempts: u32,
    },
    #[error("could not reach Calendly at {base_url} for {what}: {reason}")]
    Unreachable {
        what: String,
        base_url: String,
        reason: String,
    },
    #[error("unexpected answer from Calendly for {what}: {reason}")]
    UnexpectedResponse { what: String, reason: String },
    #[error("could not set up the HTTP client: {0}")]
    Client(String),
}

impl CalendlyError {
    /// True when a request that changes something may or may not have been applied.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::Server { .. } | Self::Timeout { .. })
    }
}

/// The API client. Cheap to clone; `Debug` shows the base URL only.
#[derive(Clone)]
pub struct CalendlyClient {
    http: reqwest::Client,
    base_url: String,
    authorization: HeaderValue,
    token: service_kit::settings::Secret,
    timeout: Duration,
    retry: RetryPolicy,
    page_size: u8,
}

impl fmt::Debug for CalendlyClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CalendlyClient")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Whether a failed try may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idempotence {
    /// GET and DELETE: repeating them changes nothing more.
    Safe,
    /// POST: repeated only when it surely never reached Calendly.
    Unsafe,
}

impl CalendlyClient {
    pub fn new(settings: &ApiSettings) -> Result<Self, CalendlyError> {
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", settings.token.expose()))
            .map_err(|_| CalendlyError::Client("CALENDLY_API_TOKEN is not a valid header value".into()))?;
        // Keeps it out of hyper's and reqwest's Debug output.
        authorization.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("calendly-meetings-cli/", env!("CARGO_PKG_VERSION")))
            // Calendly answers directly; a redirect would carry the token somewhere unplanned.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CalendlyError::Client(error_chain(&e)))?;
        Ok(Self {
            http,
            base_url: settings.base_url.clone(),
            authorization,
            token: settings.token.clone(),
            timeout: settings.timeout,
            retry: settings.retry,
            page_size: settings.page_size.clamp(1, super::settings::MAX_PAGE_SIZE),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `GET {base}{path}?{query}` as JSON. `what` names the resource in errors ("the current user").
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<T, CalendlyError> {
        let body = self
            .send(Method::GET, path, query, None, what, Idempotence::Safe)
            .await?;
        decode(&body, what)
    }

    /// `POST` with a JSON body. A 5xx or a timeout is not retried, because the first try may have
    /// created the resource: the error says so ([`CalendlyError::outcome_unknown`]).
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        what: &str,
    ) -> Result<T, CalendlyError> {
        let body = serde_json::to_vec(body).map_err(|e| CalendlyError::Client(e.to_string()))?;
        let answer = self
            .send(Method::POST, path, &[], Some(body), what, Idempotence::Unsafe)
            .await?;
        decode(&answer, what)
    }

    pub async fn delete(&self, path: &str, what: &str) -> Result<(), CalendlyError> {
        self.send(Method::DELETE, path, &[], None, what, Idempotence::Safe)
            .await
            .map(drop)
    }

    /// One page of a list endpoint, at the cursor's position, with `count` set.
    pub async fn page<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        cursor: &Cursor,
        what: &str,
    ) -> Result<Page<T>, CalendlyError> {
        let count = self.page_size.to_string();
        let mut query = query.to_vec();
        query.push(("count", &count));
        if let Some(token) = cursor.token() {
            query.push(("page_token", token));
        }
        self.get(path, &query, what).await
    }

    /// Every item of a list endpoint, following its pagination to the end.
    pub async fn all<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<Vec<T>, CalendlyError> {
        let mut items = Vec::new();
        let mut cursor = Cursor::new();
        while !cursor.is_done() {
            let page: Page<T> = self.page(path, query, &cursor, what).await?;
            items.extend(page.collection);
            cursor
                .advance(&page.pagination)
                .map_err(|e| CalendlyError::UnexpectedResponse {
                    what: what.to_owned(),
                    reason: e.to_string(),
                })?;
        }
        Ok(items)
    }

    #[tracing::instrument(skip_all, fields(%method, path))]
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        what: &str,
        idempotence: Idempotence,
    ) -> Result<Vec<u8>, CalendlyError> {
        let url =
            reqwest::Url::parse_with_params(&format!("{}{path}", self.base_url), query).map_err(|e| {
                CalendlyError::Client(format!("cannot build a URL from {}{path}: {e}", self.base_url))
            })?;
        let policy = self.retry;
        let mut attempts = 0;
        let mut waits = 0;
        // Each pass either returns or uses up one try or one rate-limit wait, so this is bounded.
        for _ in 0..policy
            .max_attempts
            .saturating_add(policy.max_rate_limit_waits)
            .max(1)
        {
            attempts += 1;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(header::AUTHORIZATION, self.authorization.clone())
                .header(header::ACCEPT, "application/json");
            if let Some(body) = &body {
                request = request
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let failure = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    match response.bytes().await {
                        Ok(bytes) if status.is_success() => return Ok(bytes.to_vec()),
                        Ok(bytes) => Failure::Status(status, headers, bytes.to_vec()),
                        Err(error) => Failure::Transport(error),
                    }
                }
                Err(error) => Failure::Transport(error),
            };
            let retry_in = match failure {
                Failure::Status(StatusCode::TOO_MANY_REQUESTS, headers, _) => {
                    if waits >= policy.max_rate_limit_waits {
                        return Err(CalendlyError::RateLimited {
                            what: what.to_owned(),
                            waits,
                        });
                    }
                    waits += 1;
                    // A rate-limited request was not processed, so it does not use up a try.
                    attempts -= 1;
                    rate_limit_delay(
                        header_text(&headers, header::RETRY_AFTER.as_str()),
                        header_text(&headers, "x-ratelimit-reset"),
                        chrono::Utc::now().timestamp(),
                        policy.delay_after(waits),
                        policy.max_rate_limit_wait,
                    )
                }
                Failure::Status(status, _, body) if status.is_server_error() => {
                    if idempotence == Idempotence::Unsafe || attempts >= policy.max_attempts {
                        return Err(CalendlyError::Server {
                            what: what.to_owned(),
                            status: status.as_u16(),
                            attempts,
                            detail: self.detail(&body),
                        });
                    }
                    policy.delay_after(attempts)
                }
                Failure::Status(status, _, body) => return Err(self.client_error(status, &body, what)),
                Failure::Transport(error) => {
                    // A refused connection never reached Calendly: safe to repeat even a POST.
                    let repeatable = idempotence == Idempotence::Safe || error.is_connect();
                    if !repeatable || attempts >= policy.max_attempts {
                        return Err(self.transport_error(&error, what, attempts));
                    }
                    policy.delay_after(attempts)
                }
            };
            tracing::debug!(attempts, waits, ?retry_in, "retrying a Calendly request");
            tokio::time::sleep(retry_in).await;
        }
        Err(CalendlyError::RateLimited {
            what: what.to_owned(),
            waits,
        })
    }

    fn client_error(&self, status: StatusCode, body: &[u8], what: &str) -> CalendlyError {
        let detail = self.detail(body);
        match status {
            StatusCode::UNAUTHORIZED => CalendlyError::Unauthenticated { detail },
            StatusCode::FORBIDDEN => CalendlyError::PermissionDenied { detail },
            StatusCode::NOT_FOUND => CalendlyError::NotFound {
                what: what.to_owned(),
                detail,
            },
            _ => CalendlyError::Refused {
                what: what.to_owned(),
                status: status.as_u16(),
                detail,
            },
        }
    }

    fn transport_error(&self, error: &reqwest::Error, what: &str, attempts: u32) -> CalendlyError {
        if error.is_timeout() {
            CalendlyError::Timeout {
                what: what.to_owned(),
                timeout_ms: self.timeout.as_millis(),
                attempts,
            }
        } else {
            CalendlyError::Unreachable {
                what: what.to_owned(),
                base_url: self.base_url.clone(),
                reason: self.scrub(&error_chain(error)),
            }
        }
    }

    /// Calendly's error body as `: title: message (parameter: message; ...)`, or empty.
    fn detail(&self, body: &[u8]) -> String {
        let detail = error_detail(body);
        if detail.is_empty() {
            detail
        } else {
            format!(": {}", self.scrub(&detail))
        }
    }

    /// Whatever a server echoes back, the token does not reach the terminal.
    fn scrub(&self, text: &str) -> String {
        let token = self.token.expose();
        if token.is_empty() {
            text.to_owned()
        } else {
            text.replace(token, "[redacted]")
        }
    }
}

enum Failure {
    Status(StatusCode, HeaderMap, Vec<u8>),
    Transport(reqwest::Error),
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn decode<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, CalendlyError> {
    serde_json::from_slice(body).map_err(|e| CalendlyError::UnexpectedResponse {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

/// An error and its causes on one line: reqwest's own message alone ("error sending request")
/// hides the reason (connection refused, DNS, TLS).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    // Cause chains are short; the bound only guards against a cyclic one.
    for _ in 0..8 {
        let Some(cause) = source else { break };
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[derive(Deserialize)]
struct ErrorBody {
    title: Option<String>,
    message: Option<String>,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    parameter: Option<String>,
    message: Option<String>,
}

/// Calendly's `{title, message, details[]}` as one line, shortened; empty when the body is not
/// that shape (an HTML error page from a proxy says nothing useful).
pub fn error_detail(body: &[u8]) -> String {
    const MAX_CHARS: usize = 400;
    let Ok(error) = serde_json::from_slice::<ErrorBody>(body) else {
        return String::new();
    };
    let mut text = [error.title, error.message]
        .into_iter()
        .flatten()
        .filter(|part| !part.trim().is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    let details: Vec<String> = error
        .details
        .into_iter()
        .map(|d| match (d.parameter, d.message) {
            (Some(parameter), Some(message)) => format!("{parameter}: {message}"),
            (Some(only), None) | (None, Some(only)) => only,
            (None, None) => String::new(),
        })
        .filter(|d| !d.is_empty())
        .collect();
    if !details.is_empty() {
        text.push_str(&format!(" ({})", details.join("; ")));
    }
    if text.chars().count() > MAX_CHARS {
        text = text.chars().take(MAX_CHARS).collect::<String>() + "…";
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay_after(1), Duration::from_millis(500));
        assert_eq!(policy.delay_after(2), Duration::from_secs(1));
        assert_eq!(policy.delay_after(3), Duration::from_secs(2));
        assert_eq!(policy.delay_after(10), Duration::from_secs(8));
        assert_eq!(policy.delay_after(u32::MAX), Duration::from_secs(8));
    }

    #[test]
    fn a_429_waits_as_its_headers_say() {
        let fallback = Duration::from_millis(700);
        let cap = Duration::from_secs(60);
        let now = 1_900_000_000;
        assert_eq!(
            rate_limit_delay(Some("1"), None, now, fallback, cap),
            Duration::from_secs(1)
        );
        assert_eq!(
            rate_limit_delay(Some(" 3 "), Some("40"), now, fallback, cap),
            Duration::from_secs(3),
            "Retry-After wins"
        );
        assert_eq!(
            rate_limit_delay(None, Some("12"), now, fallback, cap),
            Duration::from_secs(12)
        );
        assert_eq!(
            rate_limit_delay(None, Some("1900000005"), now, fallback, cap),
            Duration::from_secs(5),
            "a Unix time"
        );
        assert_eq!(rate_limit_delay(None, None, now, fallback, cap), fallback);
        assert_eq!(
            rate_limit_delay(Some("soon"), Some("x"), now, fallback, cap),
            fallback
        );
        assert_eq!(rate_limit_delay(Some("86400"), None, now, fallback, cap), cap);
        assert_eq!(
            rate_limit_delay(
                Some("Fri, 15 Mar 2030 00:00:10 GMT"),
                None,
                1_899_763_200,
                fallback,
                cap
            ),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn calendly_error_bodies_become_one_line() {
        let body = br#"{"title":"Invalid Argument","message":"The supplied parameters are invalid.",
            "details":[{"parameter":"user","message":"is missing"},{"message":"bad count"}]}"#;
        assert_eq!(
            error_detail(body),
            "Invalid Argument: The supplied parameters are invalid. (user: is missing; bad count)"
        );
        assert_eq!(error_detail(br#"{"title":"Already Exists"}"#), "Already Exists");
        assert_eq!(error_detail(b"<html>bad gateway</html>"), "");
        assert_eq!(error_detail(b""), "");
        let long = format!(r#"{{"message":"{}"}}"#, "é".repeat(1000));
        assert_eq!(error_detail(long.as_bytes()).chars().count(), 401);
    }

    #[test]
    fn messages_name_the_token_variable_and_what_was_missing() {
        let unauthenticated = CalendlyError::Unauthenticated {
            detail: ": Unauthenticated: The access token is invalid".into(),
        };
        assert!(unauthenticated.to_string().contains("CALENDLY_API_TOKEN"));
        let missing = CalendlyError::NotFound {
            what: "webhook subscription https://api.calendly.com/webhook_subscriptions/x".into(),
            detail: String::new(),
        };
        assert!(missing.to_string().starts_with("not found: webhook subscription"));
        assert!(
            CalendlyError::Timeout {
                what: "w".into(),
                timeout_ms: 5,
                attempts: 1
            }
            .outcome_unknown()
        );
        assert!(!unauthenticated.outcome_unknown());
    }

    #[test]
    fn the_client_debug_output_has_no_token() {
        let settings = ApiSettings {
            token: service_kit::settings::Secret::new("pat-very-secret"),
            base_url: "http://127.0.0.1:9".into(),
            timeout: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            page_size: 100,
        };
        let client = CalendlyClient::new(&settings).expect("client");
        let debug = format!("{client:?}");
        assert!(!debug.contains("pat-very-secret"), "{debug}");
        assert_eq!(client.scrub("echo pat-very-secret"), "echo [redacted]");
    }
}
