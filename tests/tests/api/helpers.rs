//! Starting the real stack for a test: a fresh database (an SQLite file, or a PostgreSQL
//! database created for the test and dropped after it), the meeting service and the adapter on
//! port 0, talking real gRPC; and helpers to talk to them over real HTTP and gRPC.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use proto::v1::meeting_service_client::MeetingServiceClient;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use service_kit::settings::map_lookup;
pub use tests::fixture_time::{future_seconds, in_the_future};
pub use tests::test_database::{Backend, TestDatabase};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The signing key the adapter is configured with in tests.
pub const SIGNING_KEY: &str = "test-signing-key-5b0c";
/// The bearer token between adapter and meeting service in tests.
pub const INTERNAL_TOKEN: &str = "test-internal-token";

/// Lists a module's tests for the harness ([`crate::harness`]): each named `async fn(Backend)`
/// runs on SQLite and on PostgreSQL; those after `postgres_only:` need a network database and run
/// on PostgreSQL alone.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)? $(; postgres_only: $($pg_name:ident),* $(,)?)?) => {
        pub fn cases() -> Vec<$crate::harness::Case> {
            vec![
                $($crate::harness::Case::new(
                    module_path!(),
                    stringify!($name),
                    $crate::harness::BOTH,
                    |backend| Box::pin($name(backend)),
                ),)*
                $($($crate::harness::Case::new(
                    module_path!(),
                    stringify!($pg_name),
                    $crate::harness::POSTGRES_ONLY,
                    |backend| Box::pin($pg_name(backend)),
                ),)*)?
            ]
        }
    };
}

pub struct TestApp {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub db: DatabaseConnection,
    pub http: reqwest::Client,
    stop: CancellationToken,
    stop_meeting_service: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _database: TestDatabase,
}

fn lookup(pairs: Vec<(String, String)>) -> impl Fn(&str) -> Option<String> {
    map_lookup(pairs.into_iter().collect::<HashMap<_, _>>())
}

fn settings(defaults: &[(&str, String)], overrides: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = defaults.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    pairs.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    pairs
}

/// Starts the meeting service and the adapter with test settings; `overrides` win.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

pub async fn spawn_app_with(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_routed(backend, overrides, &|url| url.to_owned()).await
}

/// Like [`spawn_app_with`], but the meeting service reaches the database through the URL that
/// `route` makes of the test database's URL (for example through a fault-injecting proxy).
pub async fn spawn_app_routed(
    backend: Backend,
    overrides: &[(&str, &str)],
    route: &dyn Fn(&str) -> String,
) -> TestApp {
    let app = start_app(backend, overrides, route).await;
    app.wait_until_serving().await;
    app
}

/// Like [`spawn_app_with`], but does not wait for the stack to report healthy: for settings under
/// which it never does (for example a `MEETING_SERVICE_URL` where nothing listens).
pub async fn spawn_app_unhealthy(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
    let app = start_app(backend, overrides, &|url| url.to_owned()).await;
    app.wait_until_the_meeting_service_serves().await;
    app
}

async fn start_app(backend: Backend, overrides: &[(&str, &str)], route: &dyn Fn(&str) -> String) -> TestApp {
    init_log_capture();
    let database = TestDatabase::create(backend).await;
    let stop = CancellationToken::new();

    let grpc_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gRPC");
    let grpc_addr = grpc_listener.local_addr().expect("gRPC address");
    let meeting_settings = settings(
        &[
            ("DATABASE_URL", route(&database.url)),
            ("LOG_DIR", "off".into()),
            ("INTERNAL_API_TOKEN", INTERNAL_TOKEN.into()),
            ("HEALTH_CHECK_INTERVAL_SECS", "1".into()),
        ],
        overrides,
    );
    let meeting_config =
        meeting_service::Config::from_lookup(&lookup(meeting_settings)).expect("meeting service settings");

    let http_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP");
    let http_addr = http_listener.local_addr().expect("HTTP address");
    let adapter_settings = settings(
        &[
            ("CALENDLY_WEBHOOK_SECRET", SIGNING_KEY.into()),
            ("MEETING_SERVICE_URL", format!("http://{grpc_addr}")),
            ("INTERNAL_API_TOKEN", INTERNAL_TOKEN.into()),
            ("LOG_DIR", "off".into()),
        ],
        overrides,
    );
    let adapter_config = adapter::Config::from_lookup(&lookup(adapter_settings)).expect("adapter settings");

    let stop_meeting_service = stop.child_token();
    let tasks = vec![
        tokio::spawn(meeting_service::run(
            meeting_config,
            grpc_listener,
            stop_meeting_service.clone().cancelled_owned(),
        )),
        tokio::spawn(adapter::run(
            adapter_config,
            http_listener,
            stop.clone().cancelled_owned(),
        )),
    ];
    let http = reqwest::Client::builder()
        // A backstop against a hang, far beyond any answer's time.
        .timeout(Duration::from_secs(120))
        .build()
        .expect("HTTP client");
    TestApp {
        http_addr,
        grpc_addr,
        db: Database::connect(&database.url).await.expect("test connection"),
        http,
        stop,
        stop_meeting_service,
        tasks,
        _database: database,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }

    async fn wait_until_serving(&self) {
        for _ in 0..1_200 {
            if let Ok(response) = self.http.get(self.url("/webhook/calendly/health")).send().await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the stack did not become healthy within a minute");
    }

    /// Waits for the meeting service's own gRPC health, which it reports once its migrations are
    /// applied.
    async fn wait_until_the_meeting_service_serves(&self) {
        wait_until_serving_grpc(self.grpc_addr).await;
    }

    /// POSTs `body` to the real endpoint, signed now with the test key.
    pub async fn post_signed(&self, body: &[u8]) -> reqwest::Response {
        let now = chrono::Utc::now().timestamp();
        self.post_webhook(
            body,
            Some(adapter::signature::sign(SIGNING_KEY.as_bytes(), now, body)),
        )
        .await
    }

    /// [`TestApp::post_signed`] for an owned body, answering just the status.
    pub async fn post_signed_owned(&self, body: Vec<u8>) -> u16 {
        self.post_signed(&body).await.status().as_u16()
    }

    pub async fn post_webhook(&self, body: &[u8], signature: Option<String>) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.url("/webhook/calendly"))
            .header("content-type", "application/json")
            .header("user-agent", "Calendly")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("calendly-webhook-signature", signature);
        }
        request.send().await.expect("HTTP request")
    }

    pub async fn post_test_endpoint(&self, body: &[u8]) -> reqwest::Response {
        self.http
            .post(self.url("/webhook/calendly/test"))
            .header("content-type", "application/json")
            .header("user-agent", "Calendly-Webhook")
            .header("calendly-webhook", "true")
            .body(body.to_vec())
            .send()
            .await
            .expect("HTTP request")
    }

    /// A gRPC client for the meeting service, with the internal token.
    pub async fn grpc(&self) -> GrpcClient {
        grpc_client(self.grpc_addr).await
    }

    /// The meeting for a Calendly invitee URI, read through the gRPC API.
    pub async fn meeting(&self, invitee_uri: &str) -> proto::v1::Meeting {
        self.grpc()
            .await
            .get_meeting(proto::v1::GetMeetingRequest {
                key: Some(proto::v1::get_meeting_request::Key::CalendlyInviteeUri(
                    invitee_uri.to_owned(),
                )),
            })
            .await
            .unwrap_or_else(|status| panic!("meeting {invitee_uri}: {status}"))
            .into_inner()
    }

    /// Signs and posts each fixture in turn, expecting 200 for each.
    pub async fn deliver(&self, fixtures: &[&str]) -> Vec<serde_json::Value> {
        let mut answers = Vec::new();
        for name in fixtures {
            let response = self.post_signed(&fixture(name)).await;
            assert_eq!(response.status(), 200, "{name}");
            answers.push(json(response).await);
        }
        answers
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.scalar(&format!("SELECT COUNT(*) FROM {table}")).await
    }

    /// Rows in every table the service writes.
    pub async fn total_rows(&self) -> i64 {
        let mut total = 0;
        for table in [
            "leads",
            "meetings",
            "meeting_reminders",
            "webhook_events",
            "meeting_changes",
        ] {
            total += self.count(table).await;
        }
        total
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                self.db.get_database_backend(),
                sql.to_owned(),
            ))
            .await
            .expect("query")
            .expect("one row");
        row.try_get_by_index::<i64>(0).expect("an integer")
    }

    pub async fn execute(&self, sql: &str) {
        self.db.execute_unprepared(sql).await.expect("statement");
    }

    /// Starts another meeting service on this test's database, as a second replica would be, with
    /// the test settings and `overrides`. It serves gRPC on a port of its own, which the adapter
    /// does not use.
    pub async fn start_meeting_replica(&self, overrides: &[(&str, &str)]) -> MeetingReplica {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gRPC");
        let meeting_settings = settings(
            &[
                ("DATABASE_URL", self._database.url.clone()),
                ("LOG_DIR", "off".into()),
                ("INTERNAL_API_TOKEN", INTERNAL_TOKEN.into()),
                ("HEALTH_CHECK_INTERVAL_SECS", "1".into()),
            ],
            overrides,
        );
        let config = meeting_service::Config::from_lookup(&lookup(meeting_settings))
            .expect("meeting service settings");
        let addr = listener.local_addr().expect("gRPC address");
        let stop = self.stop.child_token();
        let task = tokio::spawn(meeting_service::run(
            config,
            listener,
            stop.clone().cancelled_owned(),
        ));
        wait_until_serving_grpc(addr).await;
        MeetingReplica { addr, stop, task }
    }

    /// Starts the meeting service's shutdown (as SIGTERM would), leaving the adapter running.
    pub fn begin_meeting_service_shutdown(&self) {
        self.stop_meeting_service.cancel();
    }

    /// GET /webhook/calendly/health: the status and the JSON body.
    pub async fn health(&self) -> (u16, serde_json::Value) {
        let response = self
            .http
            .get(self.url("/webhook/calendly/health"))
            .send()
            .await
            .expect("health request");
        let status = response.status().as_u16();
        (status, json(response).await)
    }

    /// Stops both services and waits for them to exit cleanly.
    pub async fn stop(mut self) {
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            task.await.expect("service task").expect("service exited cleanly");
        }
    }
}

/// A meeting service started by [`TestApp::start_meeting_replica`].
pub struct MeetingReplica {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl MeetingReplica {
    pub async fn grpc(&self) -> GrpcClient {
        grpc_client(self.addr).await
    }

    /// Stops it and waits for a clean exit.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task
            .await
            .expect("replica task")
            .expect("replica exited cleanly");
    }
}

/// Waits until the meeting service at `addr` reports SERVING over gRPC health.
async fn wait_until_serving_grpc(addr: SocketAddr) {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("gRPC URL")
        .connect_lazy();
    for _ in 0..1_200 {
        let request = HealthCheckRequest {
            service: proto::MEETING_SERVICE_NAME.into(),
        };
        if let Ok(answer) = HealthClient::new(channel.clone()).check(request).await
            && answer.into_inner().status() == ServingStatus::Serving
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the meeting service at {addr} did not start serving within a minute");
}

/// A gRPC client for the meeting service at `addr`, with the internal token.
pub async fn grpc_client(addr: SocketAddr) -> GrpcClient {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("gRPC URL")
        .connect()
        .await
        .expect("gRPC connect");
    MeetingServiceClient::with_interceptor(channel, Bearer)
}

pub type GrpcClient = MeetingServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Integer queries against any connection.
pub struct RowCounter<'a>(pub &'a DatabaseConnection);

impl RowCounter<'_> {
    pub async fn scalar(&self, sql: &str) -> i64 {
        let row = self
            .0
            .query_one_raw(Statement::from_string(
                self.0.get_database_backend(),
                sql.to_owned(),
            ))
            .await
            .expect("query")
            .expect("one row");
        row.try_get_by_index::<i64>(0).expect("an integer")
    }
}

#[derive(Clone)]
pub struct Bearer;

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let value = format!("Bearer {INTERNAL_TOKEN}").parse().expect("ASCII token");
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

static CAPTURED_LOGS: std::sync::OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> =
    std::sync::OnceLock::new();

/// Every log line of both services in this test binary, as JSON, for tests that follow a tracking
/// id. Installed once; tests filter by their own ids.
fn init_log_capture() {
    CAPTURED_LOGS.get_or_init(|| {
        use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let layer = fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(move || CaptureWriter(sink.clone()));
        let _ = tracing_subscriber::registry()
            .with(EnvFilter::new("info"))
            .with(layer)
            .try_init();
        buffer
    });
}

struct CaptureWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captured log lines (parsed) that mention `needle`.
pub fn log_lines_containing(needle: &str) -> Vec<serde_json::Value> {
    let Some(buffer) = CAPTURED_LOGS.get() else {
        return Vec::new();
    };
    let bytes = buffer.lock().expect("log buffer").clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|line| line.contains(needle))
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// A TCP proxy on 127.0.0.1 that can cut every connection and refuse new ones, to make the
/// database unreachable for one meeting service without touching the shared server.
pub struct FaultProxy {
    pub addr: SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let accepting = up.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !accepting.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the connection is refused as soon as it opens
                }
                let mut cuts = cuts.clone();
                // Only cuts after this connection opened end it.
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Self { addr, up, cut, task }
    }

    /// Cuts open connections and refuses new ones until [`FaultProxy::restore`].
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fixture's bytes with its timestamps moved into the future by [`in_the_future`], so that its
/// meetings still lie ahead, whatever the date, and get their reminders. Everything else is byte
/// for byte as stored; signatures are made over what is sent.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/calendly/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    in_the_future(&String::from_utf8(stored).expect("fixtures are UTF-8")).into_bytes()
}

/// The one-on-one fixture as a different invitee, so each body is a new booking.
pub fn booking(n: usize) -> Vec<u8> {
    String::from_utf8(fixture("invitee-created-one-on-one.json"))
        .expect("UTF-8")
        .replace(
            "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
            &format!("1a2b3c4d-5e6f-4a7b-8c9d-{n:012}"),
        )
        .into_bytes()
}

/// Reminder types of a meeting that are still to be sent (pending or claimed).
pub fn live_reminders(meeting: &proto::v1::Meeting) -> Vec<String> {
    meeting
        .reminders
        .iter()
        .filter(|r| r.state == "pending" || r.state == "claimed")
        .map(|r| r.reminder_type.clone())
        .collect()
}

pub async fn json(response: reqwest::Response) -> serde_json::Value {
    response.json().await.expect("a JSON body")
}

/// A meeting service of its own, from the workspace's binary.
pub struct MeetingServiceProcess {
    child: std::process::Child,
    pub addr: String,
}

impl MeetingServiceProcess {
    pub async fn start(database_url: &str) -> Self {
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address").to_string()
        };
        Self::start_on(database_url, &addr).await
    }

    /// Starts it listening on `addr` (again, after a kill).
    pub async fn start_on(database_url: &str, addr: &str) -> Self {
        let addr = addr.to_owned();
        let metrics = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address").to_string()
        };
        let child = std::process::Command::new(tests::binaries::workspace_binary("meeting-service"))
            .env("DATABASE_URL", database_url)
            .env("GRPC_ADDR", &addr)
            .env("METRICS_ADDR", metrics)
            .env("INTERNAL_API_TOKEN", INTERNAL_TOKEN)
            .env("LOG_DIR", "off")
            .env("HEALTH_CHECK_INTERVAL_SECS", "1")
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the meeting service");
        let process = Self { child, addr };
        // A minute at most: a backstop against a hang, not a speed requirement.
        for _ in 0..600 {
            if process.client().await.is_some() {
                return process;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the meeting service did not start");
    }

    pub async fn client(
        &self,
    ) -> Option<
        proto::v1::meeting_service_client::MeetingServiceClient<
            tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
        >,
    > {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", self.addr))
            .ok()?
            .connect()
            .await
            .ok()?;
        Some(proto::v1::meeting_service_client::MeetingServiceClient::with_interceptor(channel, Bearer))
    }
}

impl MeetingServiceProcess {
    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MeetingServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The adapter alone, in this process, in front of a meeting service at `meeting_addr`.
pub struct AdapterOnly {
    pub http_addr: SocketAddr,
    pub http: reqwest::Client,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl AdapterOnly {
    pub async fn start(meeting_addr: &str) -> Self {
        init_log_capture();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP");
        let http_addr = listener.local_addr().expect("HTTP address");
        let config = adapter::Config::from_lookup(&lookup(settings(
            &[
                ("CALENDLY_WEBHOOK_SECRET", SIGNING_KEY.into()),
                ("MEETING_SERVICE_URL", format!("http://{meeting_addr}")),
                ("INTERNAL_API_TOKEN", INTERNAL_TOKEN.into()),
                ("LOG_DIR", "off".into()),
            ],
            &[],
        )))
        .expect("adapter settings");
        let stop = CancellationToken::new();
        let task = tokio::spawn(adapter::run(config, listener, stop.clone().cancelled_owned()));
        Self {
            http_addr,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("HTTP client"),
            stop,
            task: Some(task),
        }
    }

    /// POSTs `body` to the real endpoint, signed now with the test key.
    pub async fn post_signed(&self, body: &[u8]) -> reqwest::Result<reqwest::Response> {
        let now = chrono::Utc::now().timestamp();
        self.http
            .post(format!("http://{}/webhook/calendly", self.http_addr))
            .header("content-type", "application/json")
            .header(
                "calendly-webhook-signature",
                adapter::signature::sign(SIGNING_KEY.as_bytes(), now, body),
            )
            .body(body.to_vec())
            .send()
            .await
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("adapter task").expect("adapter exited cleanly");
        }
    }
}

impl Drop for AdapterOnly {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
