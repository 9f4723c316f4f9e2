//! Types that exist only to be described in the OpenAPI document (`crate::openapi`): the request
//! bodies, which the handlers read as raw bytes (the signature covers them exactly) and parse with
//! `calendly::parse_delivery`, and the refusals both webhook routes share.

use crate::error::ErrorBody;

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
