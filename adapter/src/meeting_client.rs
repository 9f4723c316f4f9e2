//! The adapter's gRPC client for the meeting service: tracking id and bearer token in the
//! metadata, a deadline on every call, and a deliberate mapping of gRPC codes to HTTP answers.

use std::time::Duration;

use proto::v1::{
    CalendlyEvent, IngestCalendlyEventRequest, IngestCalendlyEventResponse, Source,
    meeting_service_client::MeetingServiceClient,
};
use tonic::{
    Code, Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::error::ApiError;

#[derive(Clone)]
pub struct MeetingClient {
    api: MeetingServiceClient<Channel>,
    health: HealthClient<Channel>,
    authorization: Option<AsciiMetadataValue>,
    timeout: Duration,
}

impl MeetingClient {
    /// Connects lazily: the adapter starts (and reports the meeting service's state) even while
    /// the meeting service is down.
    pub fn new(url: &str, token: Option<&str>, timeout: Duration) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        let authorization = token
            .map(|token| MetadataValue::try_from(format!("Bearer {token}")))
            .transpose()
            .map_err(|_| anyhow::anyhow!("INTERNAL_API_TOKEN: must be printable ASCII"))?;
        Ok(Self {
            api: MeetingServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
            authorization,
            timeout,
        })
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
        self.api
            .clone()
            .ingest_calendly_event(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| api_error(&status))
    }

    /// The meeting service's own health answer for its API, or why there is none.
    pub async fn health(&self, tracking_id: &str) -> Result<ServingStatus, String> {
        let mut request = self.request(
            HealthCheckRequest {
                service: proto::MEETING_SERVICE_NAME.to_owned(),
            },
            tracking_id,
        );
        request.set_timeout(Duration::from_secs(2));
        match self.health.clone().check(request).await {
            Ok(response) => Ok(response.into_inner().status()),
            Err(status) => Err(format!("{:?}", status.code())),
        }
    }
}

/// gRPC outcome → HTTP answer. Calendly retries anything that is not 2xx, so a 5xx is the right
/// answer exactly when nothing was stored and a later try may succeed.
pub fn api_error(status: &Status) -> ApiError {
    let error = match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Cancelled => ApiError::MeetingServiceUnavailable,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            ApiError::Rejected(status.message().to_owned())
        }
        // Misconfiguration (token), a contract mismatch or a bug: nothing was stored; a 500 makes
        // Calendly retry once it is fixed.
        Code::Unauthenticated
        | Code::PermissionDenied
        | Code::NotFound
        | Code::AlreadyExists
        | Code::Unimplemented
        | Code::Internal
        | Code::Unknown
        | Code::DataLoss
        | Code::Ok => ApiError::Internal,
    };
    tracing::error!(grpc_code = ?status.code(), grpc_message = status.message(), "meeting service call failed");
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn retryable_grpc_failures_become_503() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Aborted,
        ] {
            assert_eq!(
                api_error(&Status::new(code, "x")).status(),
                StatusCode::SERVICE_UNAVAILABLE
            );
        }
        assert_eq!(
            api_error(&Status::invalid_argument("event.event_name")).status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            api_error(&Status::unauthenticated("token")).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
