//! The API resources the commands read, typed only as far as they use them. Unknown keys are
//! ignored and most fields are optional: Calendly adds fields, and a listing should not fail
//! because one item lacks something only shown for display.

use serde::Deserialize;

use super::client::{CalendlyClient, CalendlyError};

/// `{"resource": ...}`, the wrapper of every single-resource answer.
#[derive(Debug, Deserialize)]
pub struct Resource<T> {
    pub resource: T,
}

/// `GET /users/me`: who the token belongs to and their current organization.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CurrentUser {
    pub uri: String,
    pub current_organization: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// The token's user, from which every command takes its organization.
pub async fn current_user(client: &CalendlyClient) -> Result<CurrentUser, CalendlyError> {
    let me: Resource<CurrentUser> = client
        .get("/users/me", &[], "the current user (GET /users/me)")
        .await?;
    Ok(me.resource)
}

/// A webhook subscription as Calendly returns it. It never includes the signing key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Subscription {
    pub uri: String,
    #[serde(default)]
    pub callback_url: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub retry_started_at: Option<String>,
}
