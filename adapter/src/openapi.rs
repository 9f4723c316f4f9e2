//! The adapter's OpenAPI 3.1 description, generated from the handlers' annotations, served at
//! `GET /webhook/calendly/openapi.json` and kept in the repository as `adapter/openapi.json`
//! (a test fails when the two differ; `UPDATE_OPENAPI=1 cargo test -p adapter openapi` rewrites it
//! and still fails, so the rewrite is committed and checked by a plain run).

use axum::{Json, response::IntoResponse};
use utoipa::OpenApi;

use crate::{
    error::ErrorBody,
    routes::{
        self, Accepted, ProcessingResult,
        schema::{CalendlyEnvelope, TestDelivery},
    },
};

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
