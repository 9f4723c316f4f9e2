//! The production Kubernetes manifests, run for real.
//!
//! `scripts/check-k8s.sh --render` renders `k8s/overlays/production` with kustomize, exactly as
//! it is applied. This test then does what the cluster would do, with the real binaries: it runs
//! the migration Job's command, then starts the meeting service and the adapter with the
//! environment their Deployments give them (ConfigMap values resolved, the Secret's keys given
//! test values, `DATABASE_URL` a fresh database), and runs the reconcile CronJob's command once
//! against a stand-in for Calendly's API. Each startup, readiness and liveness probe runs as the
//! kubelet runs it. The alerts' metrics must be in what Prometheus would scrape
//! through the ServiceMonitor, and each process must exit within its termination grace period.
//!
//! Only addresses change. Listeners bind 127.0.0.1 instead of 0.0.0.0, on the manifest's port
//! unless that port is busy on this machine. Service names in URLs resolve to 127.0.0.1 and
//! the port the backing pod listens on; Calendly's API is a local server. The binaries are built on first use, with this test's
//! profile and target directory (`tests::binaries`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement, TransactionTrait};
use serde_json::Value;
use tests::{
    binaries::{workspace_binary, workspace_root as workspace},
    test_database::TestDatabase,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The values the test puts into the Secret's keys.
const SIGNING_KEY: &str = "k8s-conformance-signing-key";
const INTERNAL_TOKEN: &str = "k8s-conformance-internal-token";
const API_TOKEN: &str = "k8s-conformance-api-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_manifests_run_the_real_binaries() {
    let database = TestDatabase::preferred().await;
    let scratch = tempfile::tempdir().expect("temp dir");
    let manifests = Manifests::render(&scratch.path().join("rendered"));
    let secrets = BTreeMap::from([
        ("CALENDLY_WEBHOOK_SECRET", SIGNING_KEY.to_owned()),
        ("CALENDLY_API_TOKEN", API_TOKEN.to_owned()),
        ("DATABASE_URL", database.url.clone()),
        ("INTERNAL_API_TOKEN", INTERNAL_TOKEN.to_owned()),
    ]);
    let meeting = Workload::new(&manifests, "Deployment", "meeting-service");
    let adapter = Workload::new(&manifests, "Deployment", "adapter");
    let workloads = [&meeting, &adapter];
    // Each process runs in an empty directory: no `.env` is read, and what it writes shows.
    let workdir = |name: &str| {
        let dir = scratch.path().join("cwd").join(name);
        fs::create_dir_all(&dir).expect("working directory");
        dir
    };

    // The migration Job, to completion, before anything else.
    let job = Workload::new(&manifests, "Job", "meeting-service-migration");
    let mut migration = job.spawn(
        &manifests,
        &secrets,
        &workloads,
        &workdir("migration"),
        &scratch.path().join("migration.log"),
    );
    let deadline = job.object["spec"]["activeDeadlineSeconds"]
        .as_u64()
        .unwrap_or(600);
    assert_eq!(
        migration.exit_code(Duration::from_secs(deadline.min(120))).await,
        Some(0),
        "the migration Job failed:\n{}",
        migration.log_tail()
    );
    let db = Database::connect(&database.url).await.expect("connect");
    let applied = scalar(&db, "SELECT COUNT(*) FROM seaql_migrations").await;
    assert_eq!(
        applied,
        <migration::Migrator as migration::MigratorTrait>::migrations().len() as i64,
        "the Job applies every migration"
    );

    // The meeting service, then the adapter, each probed as the kubelet probes it.
    let mut meeting_process = meeting.spawn(
        &manifests,
        &secrets,
        &workloads,
        &workdir("meeting-service"),
        &scratch.path().join("meeting-service.log"),
    );
    meeting.pass_probes(&mut meeting_process).await;
    let mut adapter_process = adapter.spawn(
        &manifests,
        &secrets,
        &workloads,
        &workdir("adapter"),
        &scratch.path().join("adapter.log"),
    );
    adapter.pass_probes(&mut adapter_process).await;

    // Traffic, so the counters the alerts use exist: a signed delivery, a forged one, a genuine
    // one that is too old, and a transaction retried after a transient database error.
    let http = reqwest::Client::new();
    let webhook_url = format!(
        "http://127.0.0.1:{}/webhook/calendly",
        adapter.local_port_named("http")
    );
    let body = fixture("invitee-created-one-on-one.json");
    let now = chrono::Utc::now().timestamp();
    let post = |signature: String| {
        http.post(&webhook_url)
            .header("content-type", "application/json")
            .header("calendly-webhook-signature", signature)
            .body(body.clone())
            .send()
    };
    let stored = post(adapter::signature::sign(SIGNING_KEY.as_bytes(), now, &body))
        .await
        .expect("signed delivery");
    assert_eq!(stored.status(), 200, "a correctly signed delivery is stored");
    let stored: Value = stored.json().await.expect("JSON answer");
    let webhook_event_id = stored["result"]["webhookEventId"]
        .as_i64()
        .expect("webhookEventId");
    let forged = post(format!("t={now},v1={}", "0".repeat(64)))
        .await
        .expect("forged delivery");
    assert_eq!(forged.status(), 401, "a forged signature is refused");
    let stale = post(adapter::signature::sign(
        SIGNING_KEY.as_bytes(),
        now - 3_600,
        &body,
    ))
    .await
    .expect("stale delivery");
    assert_eq!(stale.status(), 401, "a genuine signature an hour old is refused");

    let meeting_metrics = meeting.scrape_url(&manifests);
    force_a_database_retry(
        &db,
        &database,
        meeting.local_port_named("grpc"),
        webhook_event_id,
        &meeting_metrics,
    )
    .await;

    // The reconcile CronJob's command, once, with its manifest's environment; Calendly's API is
    // a local stand-in that has the manifest's callback URL subscribed.
    let cron = Workload::new(&manifests, "CronJob", "calendly-reconcile");
    assert_eq!(cron.object["spec"]["concurrencyPolicy"], "Forbid");
    let callback_url = cron.environment(&manifests, &secrets, &workloads)["WEBHOOK_CALLBACK_URL"].clone();
    let calendly_api = calendly_api_stand_in(&callback_url).await;
    let mut reconcile = cron.spawn_with(
        &manifests,
        &secrets,
        &workloads,
        &workdir("reconcile"),
        &scratch.path().join("reconcile.log"),
        &[("CALENDLY_API_BASE_URL", calendly_api)],
    );
    assert_eq!(
        reconcile.exit_code(Duration::from_secs(120)).await,
        Some(0),
        "the reconcile CronJob's run failed:\n{}",
        reconcile.log_tail()
    );
    let exposition = http
        .get(&meeting_metrics)
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("exposition");
    assert!(
        exposition.contains(r#"calendly_webhook_subscription_state{state="active"} 1"#),
        "the run's subscription state is exported:\n{exposition}"
    );

    // What Prometheus would scrape, through the ServiceMonitor and the Services.
    let mut scraped = BTreeSet::new();
    for url in manifests.service_monitor_targets(&workloads) {
        let exposition = http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .unwrap_or_else(|e| panic!("scraping {url}: {e}"))
            .text()
            .await
            .expect("exposition");
        scraped.extend(metric_names(&exposition));
    }
    let rule = manifests.only("PrometheusRule");
    let mut used = BTreeSet::new();
    for group in rule["spec"]["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            used.extend(calendly_names(rule["expr"].as_str().expect("expr")));
        }
    }
    assert!(!used.is_empty(), "the alerts use the services' metrics");
    let missing: Vec<_> = used.difference(&scraped).collect();
    assert!(
        missing.is_empty(),
        "the alerts use metrics the services do not export: {missing:?}\nexported: {scraped:?}"
    );
    // The dashboard's metrics: exported now, or declared by the services (reminder counters
    // appear once a dispatcher claims and completes reminders).
    let declared = declared_metric_names();
    let dashboard: Value = serde_json::from_str(
        &fs::read_to_string(workspace().join("k8s/grafana/calendly-meetings.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut dashboard_names = BTreeSet::new();
    collect_exprs(&dashboard, &mut dashboard_names);
    let unknown: Vec<_> = dashboard_names
        .iter()
        .filter(|name| !scraped.contains(*name) && !declared.contains(strip_histogram_suffix(name)))
        .collect();
    assert!(
        unknown.is_empty(),
        "the dashboard uses unknown metrics: {unknown:?}"
    );

    // Production logs are JSON lines on stdout, and nothing is written to the working directory
    // (the root filesystem is read-only).
    for (process, dir) in [
        (&meeting_process, "meeting-service"),
        (&adapter_process, "adapter"),
    ] {
        let log = fs::read_to_string(&process.log).expect("log");
        assert!(
            log.lines()
                .all(|line| serde_json::from_str::<Value>(line).is_ok()),
            "{dir} logs JSON lines:\n{log}"
        );
        assert!(
            fs::read_dir(workdir(dir)).expect("dir").next().is_none(),
            "{dir} wrote files into its working directory"
        );
    }

    // SIGTERM, as the kubelet sends it after the preStop hook: both exit cleanly within the
    // termination grace period that remains.
    for (workload, process) in [(&adapter, &mut adapter_process), (&meeting, &mut meeting_process)] {
        process.terminate();
        let limit = workload.grace_after_pre_stop();
        assert_eq!(
            process.exit_code(limit).await,
            Some(0),
            "{} did not exit cleanly within {limit:?}:\n{}",
            workload.name,
            process.log_tail()
        );
    }
    db.close().await.ok();
}

/// Holds a lock the meeting service needs while it replays an event, until a transient error
/// makes it retry (`calendly_db_retries_total`): PostgreSQL's waiting connection is terminated;
/// SQLite's writer gives up after its busy timeout.
async fn force_a_database_retry(
    db: &DatabaseConnection,
    database: &TestDatabase,
    grpc_port: u16,
    webhook_event_id: i64,
    metrics_url: &str,
) {
    let holder = db.begin().await.expect("begin");
    if database.is_postgres() {
        holder
            .execute_unprepared("LOCK TABLE meetings IN EXCLUSIVE MODE")
            .await
            .expect("lock meetings");
    } else {
        holder
            .execute_unprepared("UPDATE meetings SET status = status")
            .await
            .expect("take the write lock");
    }
    let replay = tokio::spawn(async move {
        let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
            .expect("URL")
            .connect()
            .await
            .expect("gRPC connect");
        let mut client = proto::v1::meeting_service_client::MeetingServiceClient::with_interceptor(
            channel,
            |mut request: tonic::Request<()>| {
                let token = format!("Bearer {INTERNAL_TOKEN}").parse().expect("ASCII");
                request.metadata_mut().insert("authorization", token);
                Ok(request)
            },
        );
        let mut request = tonic::Request::new(proto::v1::ReplayWebhookEventRequest { id: webhook_event_id });
        request.set_timeout(Duration::from_secs(90));
        client.replay_webhook_event(request).await
    });
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut terminated = false;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the meeting service never retried a transaction"
        );
        if database.is_postgres() && !terminated {
            let waiting = db
                .query_all_raw(Statement::from_string(
                    db.get_database_backend(),
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock' \
                     AND pid <> pg_backend_pid()"
                        .to_owned(),
                ))
                .await
                .expect("terminate the waiting connection");
            terminated = !waiting.is_empty();
        }
        let exposition = http
            .get(metrics_url)
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("exposition");
        if metric_names(&exposition).contains("calendly_db_retries_total") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    holder.rollback().await.expect("release the lock");
    // PostgreSQL's retry waits for the lock and succeeds; SQLite's writer fails at once, so its
    // five tries may all be spent before the lock goes: then the answer is UNAVAILABLE, which the
    // adapter turns into a 503 that Calendly retries. Either is the designed behaviour.
    match replay.await.expect("replay task") {
        Ok(_) => {}
        Err(status) if !database.is_postgres() && status.code() == tonic::Code::Unavailable => {}
        Err(status) => panic!("the retried replay failed: {status:?}"),
    }
}

// --- The rendered manifests --------------------------------------------------------------------

struct Manifests {
    objects: Vec<Value>,
}

impl Manifests {
    fn render(dir: &Path) -> Self {
        let output = Command::new("bash")
            .arg(workspace().join("scripts/check-k8s.sh"))
            .arg("--render")
            .arg(dir)
            .current_dir(workspace())
            .output()
            .expect("run bash scripts/check-k8s.sh");
        assert!(
            output.status.success(),
            "scripts/check-k8s.sh --render failed (it needs python3 and PyPI the first time):\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let json = fs::read_to_string(dir.join("production.json")).expect("production.json");
        Self {
            objects: serde_json::from_str(&json).expect("rendered objects"),
        }
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("the production manifests have no {kind}/{name}"))
    }

    fn only(&self, kind: &str) -> &Value {
        let mut all = self.objects.iter().filter(|o| o["kind"] == kind);
        let first = all.next().unwrap_or_else(|| panic!("no {kind}"));
        assert!(all.next().is_none(), "more than one {kind}");
        first
    }

    /// The workload behind `service` and the container port its `port` (name or number) reaches.
    fn backend<'a>(&self, workloads: &[&'a Workload], service: &str, port: &Value) -> (&'a Workload, u16) {
        let service = self.get("Service", service);
        let selector = service["spec"]["selector"].as_object().expect("selector");
        let workload = workloads
            .iter()
            .find(|w| {
                selector
                    .iter()
                    .all(|(k, v)| w.pod_labels.get(k).is_some_and(|label| label == v))
            })
            .unwrap_or_else(|| panic!("no workload behind Service {}", service["metadata"]["name"]));
        let service_port = service["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| &p["name"] == port || &p["port"] == port)
            .unwrap_or_else(|| panic!("Service {} has no port {port}", service["metadata"]["name"]));
        (workload, workload.container_port(&service_port["targetPort"]))
    }

    /// `http://127.0.0.1:<port>/metrics` for every endpoint of every Service the
    /// ServiceMonitor selects.
    fn service_monitor_targets(&self, workloads: &[&Workload]) -> Vec<String> {
        let monitor = self.only("ServiceMonitor");
        let services: Vec<&str> = self
            .objects
            .iter()
            .filter(|o| {
                o["kind"] == "Service" && selects(&monitor["spec"]["selector"], &o["metadata"]["labels"])
            })
            .map(|o| o["metadata"]["name"].as_str().expect("name"))
            .collect();
        assert_eq!(
            services.len(),
            2,
            "the ServiceMonitor selects both Services: {services:?}"
        );
        let mut targets = Vec::new();
        for service in services {
            for endpoint in monitor["spec"]["endpoints"].as_array().expect("endpoints") {
                let (workload, port) = self.backend(workloads, service, &endpoint["port"]);
                let path = endpoint["path"].as_str().unwrap_or("/metrics");
                targets.push(format!("http://127.0.0.1:{}{path}", workload.local_port(port)));
            }
        }
        targets
    }
}

/// A label selector (`matchLabels`, `matchExpressions` with `In`) against labels.
fn selects(selector: &Value, labels: &Value) -> bool {
    let mut match_labels = selector["matchLabels"].as_object().into_iter().flatten();
    let mut expressions = selector["matchExpressions"].as_array().into_iter().flatten();
    match_labels.all(|(k, v)| &labels[k] == v)
        && expressions.all(|e| {
            assert_eq!(e["operator"], "In", "only In is understood here");
            e["values"]
                .as_array()
                .expect("values")
                .contains(&labels[e["key"].as_str().expect("key")])
        })
}

// --- One workload: its container, ports, environment and probes ---------------------------------

struct Workload {
    name: String,
    object: Value,
    pod: Value,
    container: Value,
    pod_labels: serde_json::Map<String, Value>,
    /// Container port name → number.
    named_ports: BTreeMap<String, u16>,
    /// Container port → the port used on 127.0.0.1.
    local_ports: BTreeMap<u16, u16>,
}

impl Workload {
    fn new(manifests: &Manifests, kind: &str, name: &str) -> Self {
        let object = manifests.get(kind, name).clone();
        let template = if kind == "CronJob" {
            &object["spec"]["jobTemplate"]["spec"]["template"]
        } else {
            &object["spec"]["template"]
        };
        let pod = template["spec"].clone();
        let containers = pod["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1, "{name} runs one container");
        let container = containers[0].clone();
        let mut named_ports = BTreeMap::new();
        let mut local_ports = BTreeMap::new();
        for port in container["ports"].as_array().into_iter().flatten() {
            let number = u16::try_from(port["containerPort"].as_u64().expect("containerPort")).expect("port");
            if let Some(port_name) = port["name"].as_str() {
                named_ports.insert(port_name.to_owned(), number);
            }
            local_ports.insert(number, local_port_for(number));
        }
        Self {
            name: name.to_owned(),
            pod_labels: template["metadata"]["labels"]
                .as_object()
                .cloned()
                .unwrap_or_default(),
            object,
            pod,
            container,
            named_ports,
            local_ports,
        }
    }

    fn container_port(&self, port: &Value) -> u16 {
        match port {
            Value::String(name) => *self
                .named_ports
                .get(name)
                .unwrap_or_else(|| panic!("{} has no container port named {name}", self.name)),
            Value::Number(number) => {
                let number = u16::try_from(number.as_u64().expect("port")).expect("port");
                assert!(
                    self.local_ports.contains_key(&number),
                    "{} does not declare container port {number}",
                    self.name
                );
                number
            }
            other => panic!("{} names a port as {other}", self.name),
        }
    }

    fn local_port(&self, container_port: u16) -> u16 {
        *self
            .local_ports
            .get(&container_port)
            .unwrap_or_else(|| panic!("{} does not declare container port {container_port}", self.name))
    }

    fn local_port_named(&self, name: &str) -> u16 {
        self.local_port(self.container_port(&Value::String(name.to_owned())))
    }

    fn scrape_url(&self, manifests: &Manifests) -> String {
        let monitor = manifests.only("ServiceMonitor");
        let endpoint = &monitor["spec"]["endpoints"][0];
        format!(
            "http://127.0.0.1:{}{}",
            self.local_port_named(endpoint["port"].as_str().expect("port name")),
            endpoint["path"].as_str().unwrap_or("/metrics")
        )
    }

    /// The container's environment as the kubelet builds it (`envFrom` first, `env` over it),
    /// with listen addresses and Service URLs pointed at this machine.
    fn environment(
        &self,
        manifests: &Manifests,
        secrets: &BTreeMap<&str, String>,
        workloads: &[&Workload],
    ) -> BTreeMap<String, String> {
        let secret = |reference: &Value| {
            let key = reference["key"].as_str().expect("key");
            secrets.get(key).cloned().unwrap_or_else(|| {
                panic!(
                    "{} reads Secret key {key}, which the test has no value for",
                    self.name
                )
            })
        };
        let mut env = BTreeMap::new();
        for source in self.container["envFrom"].as_array().into_iter().flatten() {
            let name = source["configMapRef"]["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: only configMapRef is understood in envFrom", self.name));
            let data = manifests.get("ConfigMap", name)["data"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for (key, value) in data {
                env.insert(
                    key,
                    value.as_str().expect("ConfigMap values are strings").to_owned(),
                );
            }
        }
        for variable in self.container["env"].as_array().into_iter().flatten() {
            let name = variable["name"].as_str().expect("name").to_owned();
            let value = if let Some(value) = variable["value"].as_str() {
                value.to_owned()
            } else if !variable["valueFrom"]["secretKeyRef"].is_null() {
                secret(&variable["valueFrom"]["secretKeyRef"])
            } else if !variable["valueFrom"]["configMapKeyRef"].is_null() {
                let reference = &variable["valueFrom"]["configMapKeyRef"];
                manifests.get("ConfigMap", reference["name"].as_str().expect("name"))["data"]
                    [reference["key"].as_str().expect("key")]
                .as_str()
                .expect("value")
                .to_owned()
            } else {
                panic!("{}: unsupported env source for {name}", self.name)
            };
            env.insert(name, value);
        }

        for key in ["GRPC_ADDR", "METRICS_ADDR", "HTTP_ADDR"] {
            if let Some(value) = env.get(key) {
                let addr: SocketAddr = value
                    .parse()
                    .unwrap_or_else(|_| panic!("{}: {key}={value} is not an address", self.name));
                assert!(
                    addr.ip().is_unspecified(),
                    "{}: {key}={value} must listen on every interface in a pod",
                    self.name
                );
                let local = self.local_port(addr.port());
                env.insert(key.to_owned(), format!("127.0.0.1:{local}"));
            }
        }
        if self.named_ports.contains_key("metrics") {
            assert!(
                env.contains_key("METRICS_ADDR"),
                "{}: set METRICS_ADDR explicitly, so the metrics port does not depend on a default",
                self.name
            );
        }
        if let Some(port) = env.get("PORT").cloned()
            && !env.contains_key("HTTP_ADDR")
        {
            // The adapter binds 0.0.0.0:$PORT in production; here the same port on loopback.
            let port: u16 = port.parse().expect("PORT");
            env.insert(
                "HTTP_ADDR".to_owned(),
                format!("127.0.0.1:{}", self.local_port(port)),
            );
        }
        if let Some(url) = env.get("MEETING_SERVICE_URL").cloned() {
            let authority = url
                .strip_prefix("http://")
                .unwrap_or_else(|| panic!("{}: MEETING_SERVICE_URL={url} is not plaintext http", self.name));
            let (host, port) = authority
                .trim_end_matches('/')
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("MEETING_SERVICE_URL={url} names no port"));
            let service = host.split('.').next().expect("host");
            let port: u16 = port.parse().expect("port");
            let (workload, container_port) = manifests.backend(workloads, service, &Value::from(port));
            env.insert(
                "MEETING_SERVICE_URL".to_owned(),
                format!("http://127.0.0.1:{}", workload.local_port(container_port)),
            );
        }
        env
    }

    fn spawn(
        &self,
        manifests: &Manifests,
        secrets: &BTreeMap<&str, String>,
        workloads: &[&Workload],
        cwd: &Path,
        log: &Path,
    ) -> Process {
        self.spawn_with(manifests, secrets, workloads, cwd, log, &[])
    }

    /// [`Workload::spawn`] with some addresses outside the cluster replaced (`overrides`).
    fn spawn_with(
        &self,
        manifests: &Manifests,
        secrets: &BTreeMap<&str, String>,
        workloads: &[&Workload],
        cwd: &Path,
        log: &Path,
        overrides: &[(&str, String)],
    ) -> Process {
        let mut env = self.environment(manifests, secrets, workloads);
        for (key, value) in overrides {
            env.insert((*key).to_owned(), value.clone());
        }
        let command: Vec<&str> = self.container["command"]
            .as_array()
            .unwrap_or_else(|| panic!("{} names its command", self.name))
            .iter()
            .chain(self.container["args"].as_array().into_iter().flatten())
            .map(|v| v.as_str().expect("string"))
            .collect();
        let program = workspace_binary(command[0].rsplit('/').next().expect("file name"));
        let output = fs::File::create(log).expect("log file");
        let child = Command::new(&program)
            .args(&command[1..])
            .env_clear()
            .envs(&env)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("log file"))
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        Process {
            child,
            log: log.to_owned(),
        }
    }

    /// The startup probe until it passes (within failureThreshold × periodSeconds), then
    /// readiness and liveness, each within its own failure budget.
    async fn pass_probes(&self, process: &mut Process) {
        for kind in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let probe = &self.container[kind];
            assert!(probe.is_object(), "{} has no {kind}", self.name);
            let period = probe["periodSeconds"].as_u64().unwrap_or(10);
            let failures = probe["failureThreshold"].as_u64().unwrap_or(3);
            let budget = Duration::from_secs((period * failures).min(120));
            let started = Instant::now();
            loop {
                process.assert_running(&self.name);
                match self.probe_once(probe).await {
                    Ok(()) => break,
                    Err(error) if started.elapsed() > budget => panic!(
                        "{} failed its {kind} for {budget:?}: {error}\n{}",
                        self.name,
                        process.log_tail()
                    ),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    }

    async fn probe_once(&self, probe: &Value) -> Result<(), String> {
        let timeout = Duration::from_secs(probe["timeoutSeconds"].as_u64().unwrap_or(1));
        if probe["grpc"].is_object() {
            // Plaintext, no metadata, the named service: what the kubelet sends.
            let port = self.local_port(self.container_port(&probe["grpc"]["port"]));
            let service = probe["grpc"]["service"].as_str().unwrap_or_default().to_owned();
            let check = async {
                let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
                    .map_err(|e| e.to_string())?
                    .connect()
                    .await
                    .map_err(|e| e.to_string())?;
                let mut client = HealthClient::new(channel);
                let status = client
                    .check(HealthCheckRequest { service })
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner()
                    .status();
                if status == ServingStatus::Serving {
                    Ok(())
                } else {
                    Err(format!("{status:?}"))
                }
            };
            tokio::time::timeout(timeout, check)
                .await
                .map_err(|_| "timed out".to_owned())?
        } else if probe["httpGet"].is_object() {
            let port = self.local_port(self.container_port(&probe["httpGet"]["port"]));
            let path = probe["httpGet"]["path"].as_str().unwrap_or("/");
            let response = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{port}{path}"))
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            // The kubelet counts 200–399 as success.
            let status = response.status().as_u16();
            if (200..400).contains(&status) {
                Ok(())
            } else {
                Err(format!("HTTP {status}"))
            }
        } else if probe["tcpSocket"].is_object() {
            let port = self.local_port(self.container_port(&probe["tcpSocket"]["port"]));
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect(("127.0.0.1", port)))
                .await
                .map_err(|_| "timed out".to_owned())?
                .map(drop)
                .map_err(|e| e.to_string())
        } else {
            Err(format!("unsupported probe {probe}"))
        }
    }

    /// terminationGracePeriodSeconds less the preStop sleep: what SIGTERM leaves the process.
    fn grace_after_pre_stop(&self) -> Duration {
        let grace = self.pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
        let pre_stop = self.container["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0);
        Duration::from_secs(grace.saturating_sub(pre_stop))
    }
}

/// A stand-in for api.calendly.com with what a reconcile run reads: the token's user, one active
/// subscription for `callback_url`, and no scheduled events. Answers its base URL.
async fn calendly_api_stand_in(callback_url: &str) -> String {
    use axum::{Json, Router, routing::get};
    let organization = "https://api.calendly.com/organizations/k8s-conformance";
    let user = "https://api.calendly.com/users/k8s-conformance";
    let me = serde_json::json!({"resource": {"uri": user, "current_organization": organization}});
    let subscriptions = serde_json::json!({
        "collection": [{
            "uri": "https://api.calendly.com/webhook_subscriptions/k8s-conformance",
            "callback_url": callback_url, "state": "active", "scope": "organization",
            "events": ["invitee.created", "invitee.canceled"], "retry_started_at": null,
            "created_at": "2030-01-01T00:00:00.000000Z"
        }],
        "pagination": {"count": 1, "next_page": null, "next_page_token": null}
    });
    let no_events = serde_json::json!({
        "collection": [], "pagination": {"count": 0, "next_page": null, "next_page_token": null}
    });
    let app = Router::new()
        .route("/users/me", get(move || async move { Json(me) }))
        .route(
            "/webhook_subscriptions",
            get(move || async move { Json(subscriptions) }),
        )
        .route("/scheduled_events", get(move || async move { Json(no_events) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The manifest's port when it is free on 127.0.0.1, else any free port.
fn local_port_for(port: u16) -> u16 {
    if TcpListener::bind(("127.0.0.1", port)).is_ok() {
        return port;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

// --- Processes -----------------------------------------------------------------------------------

struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn assert_running(&mut self, name: &str) {
        if let Some(status) = self.child.try_wait().expect("wait") {
            panic!("{name} exited ({status}):\n{}", self.log_tail());
        }
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM");
    }

    /// Waits up to `limit` for the process to exit; its exit code.
    async fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        panic!("the process did not exit within {limit:?}:\n{}", self.log_tail());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- Metric names --------------------------------------------------------------------------------

/// Metric names in a Prometheus text exposition (histograms as `_bucket`, `_sum`, `_count`).
fn metric_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Every `calendly_…` identifier in a PromQL expression.
fn calendly_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("calendly_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

fn collect_exprs(value: &Value, names: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => names.extend(calendly_names(expr)),
                    _ => collect_exprs(value, names),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_exprs(item, names)),
        _ => {}
    }
}

/// The names the services describe (`adapter/src/metrics.rs`, `meeting-service/src/metrics.rs`).
fn declared_metric_names() -> BTreeSet<String> {
    ["adapter/src/metrics.rs", "meeting-service/src/metrics.rs"]
        .iter()
        .flat_map(|file| {
            let source = fs::read_to_string(workspace().join(file)).expect("metrics.rs");
            calendly_names(&source)
        })
        .collect()
}

fn strip_histogram_suffix(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

// --- Test data -----------------------------------------------------------------------------------

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/calendly/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> i64 {
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql.to_owned()))
        .await
        .expect("query")
        .expect("one row")
        .try_get_by_index::<i64>(0)
        .expect("an integer")
}
