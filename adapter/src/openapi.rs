//! The adapter's OpenAPI 3.1 description, generated from the handlers' annotations, served at
//! `GET /webhook/calendly/openapi.json` and kept in the repository as `adapter/openapi.json`
//! (a test fails when the two differ; `UPDATE_OPENAPI=1 cargo test -p adapter openapi` rewrites it
//! and still fails, so the rewrite is committed and checked by a plain run).

use axum::{Json, response::IntoResponse};
use utoipa::OpenApi;

use crate::{
    error::ErrorBody,
    routes::{self, Accepted, ProcessingResult},
};

// Request bodies, for the description only: the handlers read raw bytes (the signature covers
// them exactly) and parse with `calendly::parse_delivery`.

/// Calendly's webhook envelope (API v2).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CalendlyEnvelope {
    /// e.g. invitee.created, invitee.canceled, invitee_no_show.created
    #[schema(example = "invitee.created")]
    event: String,
    #[schema(format = DateTime)]
    created_at: String,
    created_by: Option<String>,
    /// The invitee (for invitee events) or another resource.
    #[schema(value_type = Object)]
    payload: (),
}

/// The seed's test shape.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SeedDelivery {
    #[serde(rename = "eventData")]
    event_data: SeedEventData,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SeedEventData {
    #[schema(example = "invitee.created")]
    event: String,
    #[schema(format = DateTime)]
    time: Option<String>,
    payload: Option<SeedPayload>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SeedPayload {
    event: Option<SeedMeeting>,
    invitee: Option<SeedInvitee>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SeedMeeting {
    uri: Option<String>,
    name: Option<String>,
    #[schema(format = DateTime)]
    start_time: Option<String>,
    #[schema(format = DateTime)]
    end_time: Option<String>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SeedInvitee {
    uri: Option<String>,
    email: Option<String>,
    name: Option<String>,
    #[schema(format = DateTime)]
    created_at: Option<String>,
}

/// Either shape.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum TestDelivery {
    Seed(SeedDelivery),
    Calendly(CalendlyEnvelope),
}

/// The refusals both webhook routes share, in the order the front door makes them (size, time,
/// content type: `routes::CheckedBody`), then the client's allowance and the meeting service.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum SharedRefusals {
    #[response(status = 413, description = "Body over 1 MiB", headers(("x-tracking-id" = String)))]
    TooLarge(ErrorBody<'static>),
    #[response(status = 408, description = "The body did not arrive in time", headers(("x-tracking-id" = String)))]
    TooSlow(ErrorBody<'static>),
    #[response(status = 415, description = "Content-Type is not application/json", headers(("x-tracking-id" = String)))]
    NotJson(ErrorBody<'static>),
    #[response(status = 429, description = "Too many requests from this client",
        headers(("x-tracking-id" = String), ("retry-after" = String), ("ratelimit-limit" = String),
            ("ratelimit-remaining" = String), ("ratelimit-reset" = String)))]
    Throttled(ErrorBody<'static>),
    #[response(status = 500, description = "Internal error; nothing was stored", headers(("x-tracking-id" = String)))]
    Internal(ErrorBody<'static>),
    #[response(status = 503, description = "The meeting service is unavailable; nothing was stored, retry later",
        headers(("x-tracking-id" = String)))]
    Unavailable(ErrorBody<'static>),
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Calendly webhook adapter",
        description = "Receives Calendly webhook deliveries and hands them to the meeting service. \
            Every error answer is {error, code, trackingId, timestamp}; every answer carries X-Tracking-Id.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(routes::webhook::receive, routes::test_endpoint::receive, routes::health::report, document),
    components(schemas(Accepted, ProcessingResult, ErrorBody, routes::health::Health, CalendlyEnvelope, TestDelivery)),
    tags(
        (name = "webhooks", description = "Calendly deliveries"),
        (name = "health", description = "Status for load balancers and operators")
    )
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(
    get,
    operation_id = "openapi_document",
    path = "/webhook/calendly/openapi.json",
    tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 description", content_type = "application/json",
        body = Object, headers(("x-tracking-id" = String))))
)]
pub async fn document() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

    #[test]
    fn the_committed_openapi_description_matches_the_code() {
        let generated = format!("{}\n", ApiDoc::openapi().to_pretty_json().expect("serialisable"));
        let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
        if committed == generated {
            return;
        }
        // Rewriting is a separate step that always fails, so the check can never pass on a file it
        // has just written: the second, plain run is the one that passes.
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(COMMITTED, &generated).expect("write adapter/openapi.json");
            panic!(
                "adapter/openapi.json was out of date and has been rewritten: review and commit it, \
                 then run the tests again without UPDATE_OPENAPI"
            );
        }
        panic!(
            "adapter/openapi.json is out of date: run UPDATE_OPENAPI=1 cargo test -p adapter openapi, then commit it"
        );
    }

    #[test]
    fn the_description_is_openapi_3_1_with_every_endpoint() {
        let doc: serde_json::Value = serde_json::to_value(ApiDoc::openapi()).expect("JSON");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")));
        for path in [
            "/webhook/calendly",
            "/webhook/calendly/test",
            "/webhook/calendly/health",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} is described");
        }
    }
}
