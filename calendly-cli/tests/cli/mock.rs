//! A local stand-in for api.calendly.com: a real HTTP server on 127.0.0.1, port 0, serving the
//! endpoints the `calendly` command uses with Calendly's shapes (`{resource}`, `{collection,
//! pagination}`, `{title, message}` errors), cursor pagination honouring `count`, and faults
//! (429 with `Retry-After: 1`, 500, no answer at all) injected for the first N calls of a path.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot};

pub const ORGANIZATION: &str = "https://api.calendly.com/organizations/0f3c9e7a-org0-4e2d-9a11-5c7b2d4e6f80";
pub const USER: &str = "https://api.calendly.com/users/c4a7e9b2-6f13-4d58-9e0a-5b8c1d2f7a34";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After: 1`.
    RateLimit,
    /// 500 with Calendly's error body.
    ServerError,
    /// Does what the request asks (a create still creates), then never answers: the client's
    /// timeout is what ends the call, however long the client allows.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub body: Option<Value>,
}

#[derive(Default)]
struct Data {
    token: String,
    scheduled_events: Vec<Value>,
    /// By scheduled event uuid.
    invitees: HashMap<String, Vec<Value>>,
    subscriptions: Vec<Value>,
    faults: HashMap<String, (Fault, u32)>,
    requests: Vec<Recorded>,
    next_id: u32,
}

#[derive(Clone)]
struct Shared {
    data: Arc<Mutex<Data>>,
    base_url: String,
}

pub struct MockCalendly {
    pub base_url: String,
    shared: Shared,
    stop: Option<oneshot::Sender<()>>,
}

impl MockCalendly {
    pub async fn start(token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let base_url = format!("http://{}", listener.local_addr().expect("mock address"));
        let shared = Shared {
            data: Arc::new(Mutex::new(Data {
                token: token.to_owned(),
                ..Data::default()
            })),
            base_url: base_url.clone(),
        };
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    stopped.await.ok();
                })
                .await
                .expect("mock server");
        });
        Self {
            base_url,
            shared,
            stop: Some(stop),
        }
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        self.shared.data.lock().expect("mock state")
    }

    /// Adds a scheduled event and its invitees (API shapes: invitees without `scheduled_event`).
    pub fn add_booking(&self, event: Value, invitees: Vec<Value>) {
        let uuid = last_segment(event["uri"].as_str().expect("event uri")).to_owned();
        let mut data = self.data();
        data.scheduled_events.push(event);
        data.invitees.insert(uuid, invitees);
    }

    /// Changes one invitee in place, e.g. to cancel it between two runs.
    pub fn update_invitee(&self, uri: &str, change: impl FnOnce(&mut Value)) {
        let mut data = self.data();
        let invitee = data
            .invitees
            .values_mut()
            .flatten()
            .find(|invitee| invitee["uri"] == uri)
            .expect("known invitee");
        change(invitee);
    }

    pub fn add_subscription(&self, callback_url: &str) -> String {
        let mut data = self.data();
        let uri = data.new_subscription_uri();
        data.subscriptions.push(json!({
            "uri": uri, "callback_url": callback_url, "created_at": "2030-01-01T00:00:00.000000Z",
            "updated_at": "2030-01-01T00:00:00.000000Z", "retry_started_at": null, "state": "active",
            "events": ["invitee.created", "invitee.canceled"], "scope": "organization",
            "organization": ORGANIZATION, "user": null, "group": null, "creator": USER
        }));
        uri
    }

    /// Sets a subscription's `state`, as Calendly does when it disables one.
    pub fn set_subscription_state(&self, uri: &str, state: &str) {
        let mut data = self.data();
        let subscription = data
            .subscriptions
            .iter_mut()
            .find(|s| s["uri"] == uri)
            .expect("known subscription");
        subscription["state"] = state.into();
    }

    /// Deletes every subscription, as Calendly does after a 410 answer.
    pub fn remove_subscriptions(&self) {
        self.data().subscriptions.clear();
    }

    pub fn subscriptions(&self) -> Vec<Value> {
        self.data().subscriptions.clone()
    }

    /// The next `times` calls of exactly `path` fail with `fault`.
    pub fn fail(&self, path: &str, fault: Fault, times: u32) {
        self.data().faults.insert(path.to_owned(), (fault, times));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.data().requests.clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }

    pub fn clear_requests(&self) {
        self.data().requests.clear();
    }
}

impl Drop for MockCalendly {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
    }
}

impl Data {
    fn new_subscription_uri(&mut self) -> String {
        self.next_id += 1;
        format!(
            "https://api.calendly.com/webhook_subscriptions/5ub5c41b-0000-4000-8000-{:012}",
            self.next_id
        )
    }
}

pub fn last_segment(uri: &str) -> &str {
    uri.rsplit('/').next().unwrap_or_default()
}

fn error(status: StatusCode, title: &str, message: &str) -> Response {
    (status, axum::Json(json!({"title": title, "message": message}))).into_response()
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query: HashMap<String, String> = uri
        .query()
        .map(|q| {
            reqwest::Url::parse(&format!("http://x/?{q}"))
                .expect("query")
                .query_pairs()
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let fault = {
        let mut data = shared.data.lock().expect("mock state");
        data.requests.push(Recorded {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            body: serde_json::from_slice(&body).ok(),
        });
        match data.faults.get_mut(&path) {
            Some((fault, remaining)) if *remaining > 0 => {
                *remaining -= 1;
                Some(*fault)
            }
            _ => None,
        }
    };
    match fault {
        Some(Fault::RateLimit) => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "Too Many Requests",
                "Rate limit exceeded",
            );
            response
                .headers_mut()
                .insert("retry-after", "1".parse().expect("header"));
            return response;
        }
        Some(Fault::ServerError) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                "The server encountered an unexpected condition",
            );
        }
        Some(Fault::Hang) | None => {}
    }
    let response = answer(&shared, &method, &path, &query, &headers, &body);
    if fault == Some(Fault::Hang) {
        std::future::pending::<()>().await;
    }
    response
}

/// The answer Calendly would give, with its effects on the mock's state.
fn answer(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let data = &mut *shared.data.lock().expect("mock state");
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if presented != format!("Bearer {}", data.token) {
        // Echoes what it was given, so the tests can show the client never repeats a token.
        return error(
            StatusCode::UNAUTHORIZED,
            "Unauthenticated",
            &format!("The access token is invalid ({presented})"),
        );
    }

    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["users", "me"]) => axum::Json(json!({"resource": {
            "uri": USER, "name": "Priya Raman", "email": "priya.raman@example.com",
            "current_organization": ORGANIZATION, "timezone": "Europe/London"
        }}))
        .into_response(),
        ("GET", ["scheduled_events"]) => {
            if query.get("organization").map(String::as_str) != Some(ORGANIZATION) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Invalid Argument",
                    "organization is missing",
                );
            }
            let mut events: Vec<Value> = data
                .scheduled_events
                .iter()
                .filter(|e| {
                    let start = e["start_time"].as_str().unwrap_or_default();
                    query
                        .get("min_start_time")
                        .is_none_or(|min| start >= min.as_str())
                        && query.get("max_start_time").is_none_or(|max| start < max.as_str())
                })
                .cloned()
                .collect();
            events.sort_by(|a, b| a["start_time"].as_str().cmp(&b["start_time"].as_str()));
            page(&shared.base_url, path, query, &events)
        }
        ("GET", ["scheduled_events", uuid, "invitees"]) => match data.invitees.get(*uuid) {
            Some(invitees) => page(&shared.base_url, path, query, invitees),
            None => error(
                StatusCode::NOT_FOUND,
                "Resource Not Found",
                "The server could not find the requested resource.",
            ),
        },
        ("GET", ["webhook_subscriptions"]) => {
            if query.get("organization").map(String::as_str) != Some(ORGANIZATION)
                || !query.contains_key("scope")
            {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Invalid Argument",
                    "organization and scope are required",
                );
            }
            let subscriptions = data.subscriptions.clone();
            page(&shared.base_url, path, query, &subscriptions)
        }
        ("POST", ["webhook_subscriptions"]) => {
            let Ok(request) = serde_json::from_slice::<Value>(body) else {
                return error(StatusCode::BAD_REQUEST, "Invalid Argument", "body is not JSON");
            };
            let url = request["url"].as_str().unwrap_or_default().to_owned();
            if data.subscriptions.iter().any(|s| s["callback_url"] == url) {
                return error(
                    StatusCode::CONFLICT,
                    "Already Exists",
                    "Hook with this url already exists",
                );
            }
            let uri = data.new_subscription_uri();
            let subscription = json!({
                "uri": uri, "callback_url": url, "created_at": "2030-01-02T00:00:00.000000Z",
                "updated_at": "2030-01-02T00:00:00.000000Z", "retry_started_at": null, "state": "active",
                "events": request["events"], "scope": request["scope"], "organization": request["organization"],
                "user": request.get("user").cloned().unwrap_or(Value::Null), "group": null, "creator": USER
            });
            data.subscriptions.push(subscription.clone());
            (StatusCode::CREATED, axum::Json(json!({"resource": subscription}))).into_response()
        }
        ("DELETE", ["webhook_subscriptions", uuid]) => {
            let before = data.subscriptions.len();
            data.subscriptions
                .retain(|s| last_segment(s["uri"].as_str().unwrap_or_default()) != *uuid);
            if data.subscriptions.len() == before {
                error(
                    StatusCode::NOT_FOUND,
                    "Resource Not Found",
                    "The server could not find the requested resource.",
                )
            } else {
                StatusCode::NO_CONTENT.into_response()
            }
        }
        _ => error(StatusCode::NOT_FOUND, "Resource Not Found", "No such endpoint"),
    }
}

/// Calendly's cursor pagination over `items`; the token is an opaque offset here.
fn page(base_url: &str, path: &str, query: &HashMap<String, String>, items: &[Value]) -> Response {
    let count: usize = match query.get("count").map(|c| c.parse()) {
        None => 20,
        Some(Ok(count)) if (1..=100).contains(&count) => count,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Invalid Argument",
                "count must be between 1 and 100",
            );
        }
    };
    let start: usize = match query.get("page_token").map(|t| t.parse()) {
        None => 0,
        Some(Ok(start)) => start,
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "Invalid Argument", "bad page_token"),
    };
    let end = (start + count).min(items.len());
    let collection = items.get(start..end).unwrap_or_default().to_vec();
    let next_token = (end < items.len()).then(|| end.to_string());
    let next_page = next_token.as_ref().map(|token| {
        let mut url = reqwest::Url::parse(&format!("{base_url}{path}")).expect("URL");
        {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query.iter().filter(|(name, _)| name.as_str() != "page_token") {
                pairs.append_pair(name, value);
            }
            pairs.append_pair("page_token", token);
        }
        url.to_string()
    });
    axum::Json(json!({
        "collection": collection,
        "pagination": {
            "count": collection.len(),
            "next_page": next_page,
            "previous_page": null,
            "next_page_token": next_token,
            "previous_page_token": null,
        }
    }))
    .into_response()
}
