//! One module per endpoint that carries the service's work (`webhook`, `test_endpoint`,
//! `health`); each handler extracts its input, calls the pipeline and maps the result. The
//! shared steps (size, content type, body, answer) live here, and `schema` holds the types that
//! only the OpenAPI document describes. The document's own endpoint is `crate::openapi`.

pub mod health;
pub mod schema;
pub mod test_endpoint;
pub mod webhook;

use std::time::Duration;

use axum::{
    Json,
    body::{Body, Bytes},
    extract::{FromRequest, Request},
    http::{HeaderMap, header},
};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use proto::v1::{CalendlyEvent, IngestCalendlyEventResponse, Source};
use serde::Serialize;

use crate::{AppState, config::MAX_BODY_BYTES, error::ApiError, tracking::TrackingId};

/// Headers a webhook request must carry at most once. A proxy in front may read another of two
/// lines than this service would (RFC 9110 combines repeated fields only for list-valued ones,
/// which these are not), so a request with two has two readings and is refused. (hyper already
/// refuses differing `Content-Length` lines and merges identical ones, and follows
/// `Transfer-Encoding` over `Content-Length`, dropping the latter, as RFC 9112 §6.3 requires.)
pub const SINGLE_HEADERS: [&str; 3] = ["content-type", "content-length", webhook::SIGNATURE_HEADER];

/// 400 `AMBIGUOUS_HEADER` when one of [`SINGLE_HEADERS`] appears more than once. The first
/// check: it needs nothing but the header block.
fn reject_repeated_headers(headers: &HeaderMap) -> Result<(), ApiError> {
    match SINGLE_HEADERS
        .into_iter()
        .find(|name| headers.get_all(*name).iter().nth(1).is_some())
    {
        Some(name) => Err(ApiError::AmbiguousHeader(name)),
        None => Ok(()),
    }
}

/// 415 unless the content type is JSON (`application/json`, any case, any parameters).
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// 413 for a declared `Content-Length` over the limit, before anything is read: the cheapest
/// check after the header block's own.
fn reject_declared_oversize(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    Ok(())
}

/// Reads the body, stopping with 413 as soon as it passes the limit (a chunked body declares no
/// length) and with 408 when it does not arrive within `timeout` (a client trickling bytes).
async fn read_body(mut body: Body, timeout: Duration) -> Result<Bytes, ApiError> {
    let collected = tokio::time::timeout(timeout, Limited::new(&mut body, MAX_BODY_BYTES).collect())
        .await
        .map_err(|_| ApiError::RequestTimeout(timeout))?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => {
            discard_in_background(body);
            Err(ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            })
        }
        Err(error) => {
            tracing::warn!(%error, "reading the request body failed");
            Err(ApiError::BodyUnreadable)
        }
    }
}

/// The most of a refused body still read, and for how long, before its connection is closed.
const DISCARD_LIMIT_BYTES: usize = 4 * MAX_BODY_BYTES;
const DISCARD_TIME: Duration = Duration::from_secs(5);

/// Reads and drops the rest of a refused request's body while its answer goes out. Closing a
/// connection with request bytes still unread makes the kernel reset it, and a client that writes
/// its whole body before it reads (hyper's and reqwest's among them) then sees its write fail
/// instead of reading the answer. Bounded in bytes and time: past either, the body is dropped
/// and the connection closed, as it would have been at once.
fn discard_in_background(mut body: Body) {
    tokio::spawn(async move {
        let mut discarded = 0usize;
        let _ = tokio::time::timeout(DISCARD_TIME, async {
            while discarded <= DISCARD_LIMIT_BYTES {
                match body.frame().await {
                    Some(Ok(frame)) => discarded += frame.data_ref().map_or(0, Bytes::len),
                    Some(Err(_)) | None => break,
                }
            }
        })
        .await;
    });
}

/// A webhook request's body, after the front door's checks, each run once and in the documented
/// order: one reading of the headers (400), the declared size (413), the content type (415), then
/// the body itself, read in time (408) and within the limit (413). Both webhook routes take it;
/// `/webhook/calendly` takes it as a `Result`, because a refusal there also costs the client's
/// unverified allowance.
pub struct CheckedBody(pub Bytes);

impl FromRequest<AppState> for CheckedBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let headers = request.headers();
        let refused = reject_repeated_headers(headers)
            .and_then(|()| reject_declared_oversize(headers))
            .and_then(|()| require_json(headers));
        if let Err(refusal) = refused {
            discard_in_background(request.into_body());
            return Err(refusal);
        }
        let body = read_body(request.into_body(), state.config.request_read_timeout).await?;
        Ok(Self(body))
    }
}

/// The seed's success answer, plus what the meeting service decided.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub success: bool,
    pub tracking_id: String,
    pub event: String,
    pub duplicate: bool,
    pub result: ProcessingResult,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessingResult {
    pub event: String,
    pub tracking_id: String,
    pub processed: bool,
    pub lead_updated: bool,
    pub errors: Vec<String>,
    pub duplicate: bool,
    /// processed | duplicate | ignored | failed
    #[schema(value_type = String, example = "processed")]
    pub outcome: &'static str,
    pub webhook_event_id: i64,
    pub meeting_id: Option<i64>,
    pub reminders_scheduled: u32,
}

/// Hands a parsed event to the meeting service and builds the answer. 2xx only once the meeting
/// service has committed it.
pub async fn ingest(
    state: &AppState,
    tracking_id: &TrackingId,
    event: CalendlyEvent,
    raw_body: Bytes,
    source: Source,
) -> Result<Json<Accepted>, ApiError> {
    let event_name = event.event_name.clone();
    let kind_label = event.kind_name();
    let started = std::time::Instant::now();
    let response: IngestCalendlyEventResponse = state
        .meeting_client
        .ingest(event, raw_body.to_vec(), source, &tracking_id.0)
        .await?;
    let outcome = response.outcome();
    tracing::info!(
        event = %event_name,
        outcome = outcome.label(),
        processed = response.processed,
        lead_updated = response.lead_updated,
        duration_ms = started.elapsed().as_millis() as u64,
        "delivery processed"
    );
    metrics::counter!("calendly_deliveries_total", "event" => kind_label, "outcome" => outcome.label())
        .increment(1);
    Ok(Json(Accepted::new(tracking_id, event_name, response)))
}

impl Accepted {
    /// The seed's answer shape, from the meeting service's answer.
    fn new(tracking_id: &TrackingId, event: String, response: IngestCalendlyEventResponse) -> Self {
        let duplicate = response.duplicate;
        let outcome = response.outcome().label();
        Accepted {
            success: true,
            tracking_id: tracking_id.0.clone(),
            event: event.clone(),
            duplicate,
            result: ProcessingResult {
                event,
                tracking_id: tracking_id.0.clone(),
                processed: response.processed,
                lead_updated: response.lead_updated,
                errors: response.errors,
                duplicate,
                outcome,
                webhook_event_id: response.webhook_event_id,
                meeting_id: response.meeting_id,
                reminders_scheduled: response.reminders_scheduled,
            },
        }
    }
}
