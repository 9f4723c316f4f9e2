//! The bearer token internal callers present, checked in constant time. Registered on the
//! meeting API only: the health service stays open, because Kubernetes probes send no metadata.

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

#[derive(Clone)]
pub struct BearerAuth {
    expected: Option<Vec<u8>>,
}

impl BearerAuth {
    /// `None` accepts any caller (development only; production requires a token).
    pub fn new(token: Option<&str>) -> Self {
        Self {
            expected: token.map(|t| format!("Bearer {t}").into_bytes()),
        }
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes())
            .unwrap_or_default();
        if bool::from(given.ct_eq(expected.as_slice())) {
            Ok(request)
        } else {
            tracing::warn!(security = true, "gRPC call without a valid bearer token rejected");
            Err(Status::unauthenticated(
                "a valid `authorization: Bearer <token>` is required",
            ))
        }
    }
}
