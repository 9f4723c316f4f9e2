//! The adapter's gRPC client for the meeting service: tracking id and bearer token in the
//! metadata, a deadline on every call, fail-fast while the meeting service is known to be down
//! ([`crate::upstream`]), and the one place where a failed call becomes an HTTP answer
//! ([`api_error`]).

use std::time::{Duration, Instant};

use proto::v1::{
    CalendlyEvent, GetSyncStatusRequest, IngestCalendlyEventRequest, IngestCalendlyEventResponse,
    RecordSyncRunRequest, Source, SyncRun, SyncStatus, meeting_service_client::MeetingServiceClient,
};
use tonic::{
    Code, Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    error::{ApiError, Refusal},
    upstream::Upstream,
};

#[derive(Clone)]
pub struct MeetingClient {
    api: MeetingServiceClient<Channel>,
    health: HealthClient<Channel>,
    authorization: Option<AsciiMetadataValue>,
    timeout: Duration,
    upstream: Upstream,
}

impl MeetingClient {
    /// Connects lazily: the adapter starts (and reports the meeting service's state) even while
    /// the meeting service is down.
    pub fn new(url: &str, token: Option<&str>, timeout: Duration) -> Result<Self, SetupError> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        let authorization = token
            .map(|token| MetadataValue::try_from(format!("Bearer {token}")))
            .transpose()
            .map_err(|_| SetupError::Token)?;
        Ok(Self {
            api: MeetingServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
            authorization,
            timeout,
            upstream: Upstream::default(),
        })
    }

    /// Follows the meeting service's health for fail-fast; run it as a task for the adapter's life.
    pub fn follow_health(&self) -> impl Future<Output = ()> + Send + 'static {
        self.upstream
            .clone()
            .follow(self.health.clone(), proto::MEETING_SERVICE_NAME.to_owned())
    }

    fn request<T>(&self, message: T, tracking_id: &str) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        if let Ok(value) = AsciiMetadataValue::try_from(tracking_id) {
            request
                .metadata_mut()
                .insert(proto::TRACKING_ID_METADATA_KEY, value);
        }
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        request
    }

    pub async fn ingest(
        &self,
        event: CalendlyEvent,
        raw_body: Vec<u8>,
        source: Source,
        tracking_id: &str,
    ) -> Result<IngestCalendlyEventResponse, ApiError> {
        let request = self.request(
            IngestCalendlyEventRequest {
                event: Some(event),
                raw_body,
                source: source as i32,
            },
            tracking_id,
        );
        if let Err(refusal) = self.upstream.admit(Instant::now()) {
            tracing::warn!(?refusal, "meeting service known to be down; not called");
            metrics::counter!("calendly_meeting_service_fast_failures_total").increment(1);
            return Err(ApiError::MeetingServiceUnavailable);
        }
        match self.api.clone().ingest_calendly_event(request).await {
            Ok(response) => {
                self.upstream.succeeded();
                Ok(response.into_inner())
            }
            Err(status) => {
                let error = api_error(&status);
                if matches!(error, ApiError::MeetingServiceUnavailable) {
                    self.upstream.failed_transiently(Instant::now());
                }
                Err(error)
            }
        }
    }

    /// Records a finished reconcile run (`calendly reconcile`).
    pub async fn record_sync_run(&self, run: SyncRun, tracking_id: &str) -> Result<SyncRun, ApiError> {
        let request = self.request(RecordSyncRunRequest { run: Some(run) }, tracking_id);
        match self.api.clone().record_sync_run(request).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(api_error(&status)),
        }
    }

    /// The reconcile record: the latest run and the latest success. Bounded like a health check,
    /// since the health endpoint shows it.
    pub async fn sync_status(&self, tracking_id: &str) -> Result<SyncStatus, Unreachable> {
        let mut request = self.request(GetSyncStatusRequest {}, tracking_id);
        request.set_timeout(Duration::from_secs(2));
        match self.api.clone().get_sync_status(request).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(Unreachable(status.code())),
        }
    }

    /// The meeting service's own health answer for its API, or why there is none.
    pub async fn health(&self, tracking_id: &str) -> Result<ServingStatus, Unreachable> {
        let mut request = self.request(
            HealthCheckRequest {
                service: proto::MEETING_SERVICE_NAME.to_owned(),
            },
            tracking_id,
        );
        request.set_timeout(Duration::from_secs(2));
        match self.health.clone().check(request).await {
            Ok(response) => Ok(response.into_inner().status()),
            Err(status) => Err(Unreachable(status.code())),
        }
    }
}

/// No health answer from the meeting service: the gRPC code of the failed check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("UNREACHABLE ({0:?})")]
pub struct Unreachable(pub Code);

/// Why the client could not be set up from its settings.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("not a gRPC URL: {0}")]
    Url(#[from] tonic::transport::Error),
    #[error("INTERNAL_API_TOKEN: must be printable ASCII")]
    Token,
}

/// gRPC outcome → HTTP answer. Calendly retries anything that is not 2xx, so a 5xx is the right
/// answer exactly when nothing was stored and a later try may succeed; 503 says so, 500 is kept
/// for what needs fixing.
///
/// Classified by cause first: a status that did not come from the meeting service's answer (the
/// client made it from a transport error: refused or reset connection, a server that died
/// mid-call) is transient whatever its code. The meeting service itself never answers `UNKNOWN`,
/// so that code means no answer from it either.
pub fn api_error(status: &Status) -> ApiError {
    let error = if from_transport(status) {
        ApiError::MeetingServiceUnavailable
    } else {
        by_code(status)
    };
    tracing::error!(
        grpc_code = ?status.code(),
        grpc_message = status.message(),
        transport = from_transport(status),
        "meeting service call failed"
    );
    error
}

/// Whether the client made `status` from an error of its own (it carries that error as its
/// source) rather than decoding it from the meeting service's answer.
fn from_transport(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// The answer for a status the meeting service sent.
fn by_code(status: &Status) -> ApiError {
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Cancelled
        | Code::Unknown => ApiError::MeetingServiceUnavailable,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => ApiError::Rejected(Refusal {
            code: status.code(),
            message: status.message().to_owned(),
        }),
        // Misconfiguration (token), a contract mismatch or a bug: nothing was stored; a 500 makes
        // Calendly retry once it is fixed.
        Code::Unauthenticated
        | Code::PermissionDenied
        | Code::NotFound
        | Code::AlreadyExists
        | Code::Unimplemented
        | Code::Internal
        | Code::DataLoss
        | Code::Ok => ApiError::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    const ALL_CODES: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// `UNAVAILABLE` for `Code::Unavailable`, as the documented table writes the codes.
    fn readme_name(code: Code) -> String {
        let mut name = String::new();
        for (i, c) in format!("{code:?}").chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                name.push('_');
            }
            name.push(c.to_ascii_uppercase());
        }
        name
    }

    /// The rows of docs/http-api.md's "gRPC failures seen by the adapter" table: each gRPC code named
    /// there with its HTTP status and error code.
    fn documented_mapping() -> Vec<(String, u16, String)> {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/http-api.md"))
            .expect("docs/http-api.md is readable");
        let section = readme
            .split("### gRPC failures seen by the adapter")
            .nth(1)
            .expect("docs/http-api.md has the gRPC failures section");
        let mut rows = Vec::new();
        for line in section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
        {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let Ok(http) = cells[1].parse::<u16>() else {
                continue; // the header and the separator
            };
            let code = cells[2].trim_matches('`').to_owned();
            for grpc in cells[0].split(',') {
                rows.push((grpc.trim().trim_matches('`').to_owned(), http, code.clone()));
            }
        }
        rows
    }

    #[test]
    fn every_grpc_code_maps_to_the_http_answer_the_readme_documents() {
        let documented = documented_mapping();
        assert_eq!(
            documented.len(),
            ALL_CODES.len(),
            "the documented table names every gRPC code once: {documented:?}"
        );
        for code in ALL_CODES {
            let name = readme_name(code);
            let (_, http, error_code) = documented
                .iter()
                .find(|(grpc, _, _)| *grpc == name)
                .unwrap_or_else(|| panic!("{name} is missing from the documented table"));
            let error = api_error(&Status::new(code, "detail"));
            assert_eq!(error.status().as_u16(), *http, "{name}");
            assert_eq!(error.code(), error_code, "{name}");
        }
    }

    #[test]
    fn the_three_classes_of_grpc_codes_keep_their_answers() {
        // Pinned here as well, so that editing the docs alone cannot move a code.
        let expected = |code: Code| match code {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown => (StatusCode::SERVICE_UNAVAILABLE, "MEETING_SERVICE_UNAVAILABLE"),
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                (StatusCode::UNPROCESSABLE_ENTITY, "EVENT_REJECTED")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
        };
        for code in ALL_CODES {
            let error = api_error(&Status::new(code, "event.event_name"));
            assert_eq!((error.status(), error.code()), expected(code), "{code:?}");
        }
    }

    #[test]
    fn a_status_made_from_a_transport_error_is_transient_whatever_its_code() {
        for code in [Code::Unknown, Code::Internal, Code::Cancelled] {
            let mut status = Status::new(code, "transport error");
            status.set_source(std::sync::Arc::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            )));
            assert_eq!(
                api_error(&status).status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{code:?} from a reset connection"
            );
        }
        assert_eq!(
            api_error(&Status::internal("internal error")).status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "the meeting service's own INTERNAL is a bug to fix"
        );
    }

    #[test]
    fn a_rejection_carries_the_meeting_services_reason() {
        let error = api_error(&Status::invalid_argument("event.event_name: too long"));
        assert!(
            error.to_string().ends_with("event.event_name: too long"),
            "{error}"
        );
    }
}
