//! `webhooks create | list | delete`: Calendly's webhook subscriptions for the token's
//! organization (or user). The checks on a new subscription are plain functions, run before any
//! request, so a bad argument costs no API call.

use serde::Serialize;
use service_kit::settings::Secret;

use super::{
    CliError, Output,
    client::{CalendlyClient, CalendlyError},
    resources::{CurrentUser, Resource, Subscription, current_user},
};

/// Subscribed when `--events` is not given: everything the meeting service applies.
pub const DEFAULT_EVENTS: [&str; 4] = [
    "invitee.created",
    "invitee.canceled",
    "invitee_no_show.created",
    "invitee_no_show.deleted",
];
/// Calendly only sends this one to organization-scope subscriptions (WEBHOOKS.md, section 12).
pub const ROUTING_FORM_EVENT: &str = "routing_form_submission.created";
/// Where the adapter reads its signing keys; comma-separated while rotating.
pub const SECRET_VARIABLE: &str = "CALENDLY_WEBHOOK_SECRET";
/// Shortest signing key accepted from `--signing-key`; generated keys are 64 characters.
pub const MIN_SIGNING_KEY_CHARS: usize = 32;
const GENERATED_KEY_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scope {
    /// Every member's events (needs an owner or admin token).
    Organization,
    /// Only the token's own user's events.
    User,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Organization => "organization",
            Self::User => "user",
        }
    }
}

/// Why a subscription request was refused before it was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("--url {0:?} is not an absolute URL")]
    BadUrl(String),
    #[error(
        "--url must use https:// (Calendly posts booking data and signatures there); pass --allow-http \
         to use {0:?} anyway, e.g. for a local tunnel"
    )]
    NotHttps(String),
    #[error("--events is empty; leave it out to subscribe to {}", DEFAULT_EVENTS.join(","))]
    NoEvents,
    #[error("{ROUTING_FORM_EVENT} is only available with --scope organization")]
    RoutingFormNeedsOrganization,
    #[error(
        "{ROUTING_FORM_EVENT} cannot share a subscription with other events (their allowed scopes \
         differ); create it with its own subscription"
    )]
    RoutingFormMixed,
    #[error("--signing-key {0}")]
    BadSigningKey(&'static str),
    #[error("{0:?} is not a webhook subscription URI (…/webhook_subscriptions/<uuid>) or uuid")]
    BadSubscription(String),
}

/// The callback URL, checked: absolute, with a host, and https unless `allow_http`.
pub fn check_callback_url(url: &str, allow_http: bool) -> Result<String, RequestError> {
    let parsed = reqwest::Url::parse(url.trim()).map_err(|_| RequestError::BadUrl(url.to_owned()))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(RequestError::BadUrl(url.to_owned()));
    }
    match parsed.scheme() {
        "https" => {}
        "http" if allow_http => {}
        _ => return Err(RequestError::NotHttps(url.to_owned())),
    }
    Ok(url.trim().to_owned())
}

/// The event names, trimmed and without repeats, checked against Calendly's scope rules.
/// Other names pass through: new event families keep appearing and Calendly itself decides.
pub fn check_events(events: &[String], scope: Scope) -> Result<Vec<String>, RequestError> {
    let mut checked: Vec<String> = Vec::new();
    for event in events.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        if !checked.iter().any(|known| known == event) {
            checked.push(event.to_owned());
        }
    }
    if checked.is_empty() {
        return Err(RequestError::NoEvents);
    }
    if checked.iter().any(|e| e == ROUTING_FORM_EVENT) {
        if scope != Scope::Organization {
            return Err(RequestError::RoutingFormNeedsOrganization);
        }
        if checked.len() > 1 {
            return Err(RequestError::RoutingFormMixed);
        }
    }
    Ok(checked)
}

/// A key given with `--signing-key`. It ends up in `CALENDLY_WEBHOOK_SECRET`, which is
/// comma-separated and trimmed, so commas and surrounding spaces would silently change it.
pub fn check_signing_key(key: &str) -> Result<(), RequestError> {
    if key.chars().count() < MIN_SIGNING_KEY_CHARS {
        return Err(RequestError::BadSigningKey(
            "must be at least 32 characters; leave it out to have one generated",
        ));
    }
    if key.contains(',') || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RequestError::BadSigningKey(
            "must not contain commas, spaces or control characters (CALENDLY_WEBHOOK_SECRET is a comma-separated list)",
        ));
    }
    Ok(())
}

/// 32 bytes from the operating system's CSPRNG (through `rand`'s thread generator), as 64 hex
/// characters: printable, free of commas, and used by Calendly as-is for the HMAC.
pub fn generate_signing_key() -> Secret {
    let bytes: [u8; GENERATED_KEY_BYTES] = rand::random();
    Secret::new(hex::encode(bytes))
}

/// `POST /webhook_subscriptions` body.
#[derive(Debug, Serialize)]
pub struct CreateBody<'a> {
    pub url: &'a str,
    pub events: &'a [String],
    pub organization: &'a str,
    pub scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    pub signing_key: &'a str,
}

/// A subscription that passed every check, ready to send.
#[derive(Debug)]
pub struct NewSubscription {
    pub url: String,
    pub events: Vec<String>,
    pub scope: Scope,
    pub signing_key: Secret,
    /// True when the key was generated here rather than given.
    pub generated_key: bool,
}

impl NewSubscription {
    pub fn check(
        url: &str,
        events: &[String],
        scope: Scope,
        signing_key: Option<Secret>,
        allow_http: bool,
    ) -> Result<Self, RequestError> {
        let url = check_callback_url(url, allow_http)?;
        let events = check_events(events, scope)?;
        let (signing_key, generated_key) = match signing_key {
            Some(key) => {
                check_signing_key(key.expose())?;
                (key, false)
            }
            None => (generate_signing_key(), true),
        };
        Ok(Self {
            url,
            events,
            scope,
            signing_key,
            generated_key,
        })
    }

    pub fn body<'a>(&'a self, me: &'a CurrentUser) -> CreateBody<'a> {
        CreateBody {
            url: &self.url,
            events: &self.events,
            organization: &me.current_organization,
            scope: self.scope.as_str(),
            user: (self.scope == Scope::User).then_some(me.uri.as_str()),
            signing_key: self.signing_key.expose(),
        }
    }
}

/// The API path of a subscription given as its URI (as `webhooks list` prints it) or bare uuid.
/// Only the identifier is taken from the argument; the host is always the configured base URL,
/// so the token is never sent to a host named on the command line.
pub fn subscription_path(argument: &str) -> Result<String, RequestError> {
    let bad = || RequestError::BadSubscription(argument.to_owned());
    let argument = argument.trim();
    let id = if argument.contains('/') {
        let path = reqwest::Url::parse(argument)
            .map_err(|_| bad())?
            .path()
            .to_owned();
        let mut segments = path.trim_end_matches('/').rsplitn(2, '/');
        let id = segments.next().unwrap_or_default().to_owned();
        if !segments
            .next()
            .is_some_and(|rest| rest.ends_with("/webhook_subscriptions"))
        {
            return Err(bad());
        }
        id
    } else {
        argument.to_owned()
    };
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(bad());
    }
    Ok(format!("/webhook_subscriptions/{id}"))
}

/// `webhooks create`.
pub async fn create(
    client: &CalendlyClient,
    new: NewSubscription,
    output: &mut Output<'_>,
) -> Result<(), CliError> {
    let me = current_user(client).await?;
    let what = format!("creating a webhook subscription for {}", new.url);
    let created: Result<Resource<Subscription>, CalendlyError> =
        client.post("/webhook_subscriptions", &new.body(&me), &what).await;
    let subscription = match created {
        Ok(created) => created.resource,
        Err(error) if error.outcome_unknown() => {
            // It may exist after all, signed with this key, which Calendly will never show again.
            writeln!(
                output.out,
                "The subscription may or may not have been created. If `calendly webhooks list` shows it, \
                 its signing key is:\n  {}",
                new.signing_key.expose()
            )?;
            return Err(error.into());
        }
        Err(error) => return Err(error.into()),
    };
    writeln!(output.out, "Created webhook subscription {}", subscription.uri)?;
    write_details(output, &subscription)?;
    let origin = if new.generated_key {
        "generated for it"
    } else {
        "given with --signing-key"
    };
    writeln!(
        output.out,
        "\nSigning key ({origin}). Calendly never shows it again: store it now, as the adapter's \
         {SECRET_VARIABLE}:\n\n  {SECRET_VARIABLE}={key}\n\n\
         While rotating, list the new key and the old one comma-separated ({SECRET_VARIABLE}=<new>,<old>) \
         until the old subscription is deleted.",
        key = new.signing_key.expose(),
    )?;
    Ok(())
}

/// Every subscription of `scope` (all pages).
pub async fn subscriptions(
    client: &CalendlyClient,
    me: &CurrentUser,
    scope: Scope,
) -> Result<Vec<Subscription>, CalendlyError> {
    let mut query = vec![
        ("organization", me.current_organization.as_str()),
        ("scope", scope.as_str()),
    ];
    if scope == Scope::User {
        query.push(("user", me.uri.as_str()));
    }
    client
        .all("/webhook_subscriptions", &query, "the webhook subscriptions")
        .await
}

/// `webhooks list`: every page.
pub async fn list(client: &CalendlyClient, scope: Scope, output: &mut Output<'_>) -> Result<(), CliError> {
    let me = current_user(client).await?;
    let subscriptions = subscriptions(client, &me, scope).await?;
    for subscription in &subscriptions {
        writeln!(output.out, "{}", subscription.uri)?;
        write_details(output, subscription)?;
    }
    writeln!(
        output.out,
        "{} webhook subscription(s) with scope {} in {}",
        subscriptions.len(),
        scope.as_str(),
        me.current_organization
    )?;
    Ok(())
}

/// `webhooks delete <uri>`.
pub async fn delete(
    client: &CalendlyClient,
    argument: &str,
    output: &mut Output<'_>,
) -> Result<(), CliError> {
    let path = subscription_path(argument)?;
    let uri = format!("{}{path}", client.base_url());
    client
        .delete(&path, &format!("webhook subscription {uri}"))
        .await?;
    writeln!(output.out, "Deleted webhook subscription {uri}")?;
    Ok(())
}

fn write_details(output: &mut Output<'_>, subscription: &Subscription) -> std::io::Result<()> {
    let show = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
    writeln!(output.out, "  callback_url: {}", show(&subscription.callback_url))?;
    writeln!(
        output.out,
        "  state: {}  scope: {}  created_at: {}",
        show(&subscription.state),
        show(&subscription.scope),
        show(&subscription.created_at)
    )?;
    writeln!(output.out, "  events: {}", subscription.events.join(", "))?;
    if let Some(since) = &subscription.retry_started_at {
        writeln!(
            output.out,
            "  retrying since {since}: deliveries are failing; Calendly disables it after 24 hours"
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn callback_urls_must_be_https_unless_allowed() {
        assert_eq!(
            check_callback_url(" https://hooks.example.com/webhook/calendly ", false),
            Ok("https://hooks.example.com/webhook/calendly".into())
        );
        assert!(matches!(
            check_callback_url("http://hooks.example.com/x", false),
            Err(RequestError::NotHttps(_))
        ));
        assert!(check_callback_url("http://127.0.0.1:3001/webhook/calendly", true).is_ok());
        assert!(matches!(
            check_callback_url("ftp://x/y", true),
            Err(RequestError::NotHttps(_))
        ));
        assert!(matches!(
            check_callback_url("hooks.example.com", false),
            Err(RequestError::BadUrl(_))
        ));
    }

    #[test]
    fn events_are_deduplicated_and_routing_forms_follow_the_scope_rules() {
        assert_eq!(
            check_events(
                &strings(&["invitee.created", " invitee.created", "invitee.canceled"]),
                Scope::User
            ),
            Ok(strings(&["invitee.created", "invitee.canceled"]))
        );
        assert_eq!(
            check_events(&strings(&["", " "]), Scope::Organization),
            Err(RequestError::NoEvents)
        );
        assert_eq!(
            check_events(&strings(&[ROUTING_FORM_EVENT]), Scope::User),
            Err(RequestError::RoutingFormNeedsOrganization)
        );
        assert_eq!(
            check_events(
                &strings(&[ROUTING_FORM_EVENT, "invitee.created"]),
                Scope::Organization
            ),
            Err(RequestError::RoutingFormMixed)
        );
        assert!(check_events(&strings(&[ROUTING_FORM_EVENT]), Scope::Organization).is_ok());
        assert!(check_events(&strings(&["contact.created"]), Scope::User).is_ok());
    }

    #[test]
    fn given_signing_keys_must_be_long_and_survive_the_comma_separated_variable() {
        assert!(check_signing_key(&"k".repeat(32)).is_ok());
        assert!(check_signing_key(&"k".repeat(31)).is_err());
        assert!(check_signing_key(&format!("{},x", "k".repeat(32))).is_err());
        assert!(check_signing_key(&format!("{} x", "k".repeat(32))).is_err());
    }

    #[test]
    fn generated_keys_are_long_fresh_and_valid() {
        let first = generate_signing_key();
        let second = generate_signing_key();
        assert_eq!(first.expose().len(), 64);
        assert_ne!(first, second);
        assert!(check_signing_key(first.expose()).is_ok());
    }

    #[test]
    fn the_create_body_names_the_user_only_for_user_scope() {
        let me = CurrentUser {
            uri: "https://api.calendly.com/users/u".into(),
            current_organization: "https://api.calendly.com/organizations/o".into(),
            name: None,
        };
        let new = NewSubscription::check(
            "https://x.example/hook",
            &strings(&DEFAULT_EVENTS),
            Scope::Organization,
            None,
            false,
        )
        .expect("valid");
        let body = serde_json::to_value(new.body(&me)).expect("JSON");
        assert_eq!(body["organization"], "https://api.calendly.com/organizations/o");
        assert_eq!(body["scope"], "organization");
        assert!(body.get("user").is_none());
        assert_eq!(body["signing_key"].as_str().map(str::len), Some(64));
        let user = NewSubscription::check(
            "https://x.example/hook",
            &strings(&["invitee.created"]),
            Scope::User,
            None,
            false,
        )
        .expect("valid");
        assert_eq!(
            serde_json::to_value(user.body(&me)).expect("JSON")["user"],
            me.uri
        );
    }

    #[test]
    fn debug_output_of_a_new_subscription_hides_its_key() {
        let new = NewSubscription::check(
            "https://x.example/hook",
            &strings(&DEFAULT_EVENTS),
            Scope::Organization,
            Some(Secret::new("k".repeat(40))),
            false,
        )
        .expect("valid");
        assert!(!format!("{new:?}").contains(&"k".repeat(40)));
    }

    #[test]
    fn subscriptions_are_addressed_by_uuid_on_the_configured_host() {
        assert_eq!(
            subscription_path("https://api.calendly.com/webhook_subscriptions/ab-12"),
            Ok("/webhook_subscriptions/ab-12".into())
        );
        assert_eq!(
            subscription_path("https://evil.example/webhook_subscriptions/ab-12/"),
            Ok("/webhook_subscriptions/ab-12".into()),
            "the host is not used"
        );
        assert_eq!(
            subscription_path("ab-12"),
            Ok("/webhook_subscriptions/ab-12".into())
        );
        for bad in [
            "",
            "https://api.calendly.com/users/ab-12",
            "https://api.calendly.com/webhook_subscriptions/",
            "ab/../12",
            "ab?x=1",
            "ab%2F",
        ] {
            assert!(subscription_path(bad).is_err(), "{bad:?}");
        }
    }
}
