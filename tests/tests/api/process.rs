//! The `cargo run` binary as operators run it, in its own process: metrics that pass
//! `promtool check metrics`, JSON log files, and SIGTERM during a burst of deliveries.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use sea_orm::Database;

use crate::helpers::{Backend, SIGNING_KEY, TestDatabase, booking};

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").to_string()
}

struct LocalProcess {
    child: Child,
    http: String,
    metrics: String,
    client: reqwest::Client,
}

impl LocalProcess {
    async fn start(database_url: &str, dir: &Path) -> Self {
        let (http, grpc, metrics) = (free_addr(), free_addr(), free_addr());
        let stdout = std::fs::File::create(dir.join("stdout.log")).expect("create stdout.log");
        let child = Command::new(env!("CARGO_BIN_EXE_local"))
            .current_dir(dir)
            .env("DATABASE_URL", database_url)
            .env("HTTP_ADDR", &http)
            .env("GRPC_ADDR", &grpc)
            .env("METRICS_ADDR", &metrics)
            .env("CALENDLY_WEBHOOK_SECRET", SIGNING_KEY)
            .env("LOG_DIR", dir.join("logs"))
            .env("SHUTDOWN_GRACE_SECS", "15")
            .env_remove("RUST_LOG")
            .env("LOG_FORMAT", "json")
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .expect("start the local binary");
        let process = Self {
            child,
            http,
            metrics,
            client: reqwest::Client::new(),
        };
        // A minute at most: a backstop against a hang, not a speed requirement.
        for _ in 0..1_200 {
            let health = process
                .client
                .get(format!("http://{}/webhook/calendly/health", process.http))
                .send()
                .await;
            if health.is_ok_and(|r| r.status() == 200) {
                return process;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the local binary did not become healthy");
    }

    async fn post_signed(&self, body: Vec<u8>) -> Result<reqwest::Response, reqwest::Error> {
        let signature =
            adapter::signature::sign(SIGNING_KEY.as_bytes(), chrono::Utc::now().timestamp(), &body);
        self.client
            .post(format!("http://{}/webhook/calendly", self.http))
            .header("content-type", "application/json")
            .header("calendly-webhook-signature", signature)
            .body(body)
            .send()
            .await
    }

    fn terminate(&self) {
        self.signal("-TERM");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit; its exit code.
    async fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        panic!("the process did not exit within {limit:?}");
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Metrics, and logs both on standard output (written by a thread of its own, flushed at exit) and
/// in the JSON files.
async fn metrics_pass_promtool_and_logs_are_json_files(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut process = LocalProcess::start(&database.url, dir.path()).await;
    assert_eq!(
        process.post_signed(booking(1)).await.expect("request").status(),
        200
    );
    assert_eq!(
        process.post_signed(booking(1)).await.expect("request").status(),
        200
    );
    let forged = process
        .client
        .post(format!("http://{}/webhook/calendly", process.http))
        .header("content-type", "application/json")
        .header("calendly-webhook-signature", "t=1,v1=00")
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(forged.status(), 401);

    let exposition = process
        .client
        .get(format!("http://{}/metrics", process.metrics))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    for name in [
        "calendly_deliveries_total",
        "calendly_ingested_events_total",
        "calendly_http_rejections_total",
        "calendly_http_request_duration_seconds_bucket",
        "calendly_grpc_request_duration_seconds_bucket",
        "calendly_database_up",
        "calendly_reminders_overdue",
        "calendly_change_stream_lag_seconds",
        "calendly_build_info",
    ] {
        assert!(exposition.contains(name), "{name} missing from:\n{exposition}");
    }
    assert!(
        exposition.contains(r#"calendly_http_rejections_total{reason="signature"} 1"#),
        "{exposition}"
    );
    assert!(exposition.contains(r#"outcome="duplicate""#));
    promtool_check(&exposition);

    process.terminate();
    assert_eq!(process.exit_code(Duration::from_secs(120)).await, Some(0));
    let combined = std::fs::read_to_string(dir.path().join("logs/combined.log")).expect("combined.log");
    let lines: Vec<serde_json::Value> = combined
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "delivery processed" && l["span"]["tracking_id"].is_string())
    );
    let errors = std::fs::read_to_string(dir.path().join("logs/error.log")).expect("error.log");
    assert!(
        errors.lines().all(|l| l.contains(r#""level":"ERROR""#)),
        "only errors in error.log"
    );

    // Standard output got every line the file got, in the same order, down to the last ones
    // written on the way out.
    let stdout = std::fs::read_to_string(dir.path().join("stdout.log")).expect("stdout.log");
    let messages = |lines: &[serde_json::Value]| -> Vec<String> {
        lines.iter().map(|l| l["message"].to_string()).collect()
    };
    let stdout_lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect();
    assert_eq!(messages(&stdout_lines), messages(&lines));
    for last in ["adapter stopped", "meeting service stopped"] {
        assert!(
            stdout_lines.iter().any(|l| l["message"] == last),
            "{last:?} missing from:\n{stdout}"
        );
    }
}

/// `promtool check metrics` on the exposition. Required in CI (`.ci/run` installs the
/// `prometheus` package); elsewhere skipped with a note when promtool is absent.
fn promtool_check(exposition: &str) {
    use std::io::Write;
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(_) if std::env::var("CI").is_err() => {
            eprintln!("promtool is not installed: metrics were not linted");
            return;
        }
        Err(error) => panic!("promtool is required in CI: {error}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("promtool");
    assert!(
        output.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One delivery of the burst, and where it fell relative to the signal.
struct Sent {
    n: usize,
    started_after_signal: bool,
    finished_after_signal: bool,
    status: Result<u16, String>,
}

async fn sigterm_during_a_burst_loses_no_acknowledged_delivery(backend: Backend) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    // Concurrent senders, each sending its next delivery as soon as the last is answered.
    const SENDERS: usize = 8;
    // Deliveries acknowledged before the signal is sent, so it lands once the burst is under way.
    const BEFORE_SIGNAL: usize = 20;
    // Only against a process that never stops answering.
    const AT_MOST: usize = 5_000;

    let database = TestDatabase::create(backend).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut process = LocalProcess::start(&database.url, dir.path()).await;
    let signalled = AtomicBool::new(false);
    let next = AtomicUsize::new(0);
    let acknowledged_before_signal = AtomicUsize::new(0);
    let process_ref = &process;
    let sender = || async {
        let mut sent = Vec::new();
        loop {
            let n = next.fetch_add(1, Ordering::SeqCst);
            if n >= AT_MOST {
                return sent;
            }
            let started_after_signal = signalled.load(Ordering::SeqCst);
            let status = process_ref
                .post_signed(booking(n))
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string());
            let finished_after_signal = signalled.load(Ordering::SeqCst);
            if status == Ok(200) && !finished_after_signal {
                acknowledged_before_signal.fetch_add(1, Ordering::SeqCst);
            }
            let refused = status.is_err();
            sent.push(Sent {
                n,
                started_after_signal,
                finished_after_signal,
                status,
            });
            // The process is gone or going: this sender is done.
            if refused {
                return sent;
            }
        }
    };
    let signal = async {
        while acknowledged_before_signal.load(Ordering::SeqCst) < BEFORE_SIGNAL
            && next.load(Ordering::SeqCst) < AT_MOST
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        signalled.store(true, Ordering::SeqCst);
        process_ref.terminate();
    };
    let (sent, ()) = tokio::join!(futures::future::join_all((0..SENDERS).map(|_| sender())), signal);
    let sent: Vec<Sent> = sent.into_iter().flatten().collect();
    assert_eq!(
        process.exit_code(Duration::from_secs(120)).await,
        Some(0),
        "a clean exit after draining"
    );

    let before: Vec<&Sent> = sent.iter().filter(|s| !s.finished_after_signal).collect();
    assert!(
        before.iter().all(|s| s.status == Ok(200)),
        "every delivery before the signal is acknowledged: {:?}",
        before.iter().map(|s| (s.n, &s.status)).collect::<Vec<_>>()
    );
    assert!(
        before.len() >= BEFORE_SIGNAL,
        "the burst was under way at the signal"
    );
    let in_flight_at_signal = sent
        .iter()
        .filter(|s| !s.started_after_signal && s.finished_after_signal)
        .count();
    let refused_after_signal = sent
        .iter()
        .filter(|s| s.finished_after_signal && s.status != Ok(200))
        .count();
    assert!(
        in_flight_at_signal + refused_after_signal > 0,
        "the signal landed mid-burst: requests were in flight across it or refused after it"
    );
    assert!(sent.len() < AT_MOST, "the process kept answering after SIGTERM");

    let acknowledged: Vec<usize> = sent.iter().filter(|s| s.status == Ok(200)).map(|s| s.n).collect();
    assert_acknowledged_are_stored_whole(&database.url, &acknowledged).await;
}

/// SIGKILL mid-burst: batches in flight die with the process, and every delivery that was
/// answered 200 is stored, whole.
async fn sigkill_during_batches_loses_no_acknowledged_delivery(backend: Backend) {
    use std::sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    };
    const SENDERS: usize = 16;
    const BEFORE_KILL: usize = 40;
    const AT_MOST: usize = 5_000;

    let database = TestDatabase::create(backend).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut process = LocalProcess::start(&database.url, dir.path()).await;
    let killed = AtomicBool::new(false);
    let next = AtomicUsize::new(0);
    let acknowledged = Mutex::new(Vec::new());
    let process_ref = &process;
    let sender = || async {
        loop {
            let n = next.fetch_add(1, Ordering::SeqCst);
            if n >= AT_MOST || killed.load(Ordering::SeqCst) {
                return;
            }
            match process_ref.post_signed(booking(n)).await {
                Ok(response) if response.status() == 200 => acknowledged.lock().expect("lock").push(n),
                Ok(_) => {}
                Err(_) => return,
            }
        }
    };
    let kill = async {
        while acknowledged.lock().expect("lock").len() < BEFORE_KILL && next.load(Ordering::SeqCst) < AT_MOST
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        killed.store(true, Ordering::SeqCst);
        process_ref.signal("-KILL");
    };
    tokio::join!(futures::future::join_all((0..SENDERS).map(|_| sender())), kill);
    assert_eq!(
        process.exit_code(Duration::from_secs(60)).await,
        None,
        "killed by the signal"
    );
    let acknowledged = acknowledged.into_inner().expect("lock");
    assert!(acknowledged.len() >= BEFORE_KILL);
    let sent = next.load(Ordering::SeqCst).min(AT_MOST);
    assert!(
        sent > acknowledged.len(),
        "deliveries were in flight when the process died"
    );

    assert_acknowledged_are_stored_whole(&database.url, &acknowledged).await;
}

/// Every delivery answered 200 (delivery n is invitee `…-{n:012}`) has its meeting, and nothing is
/// half-written: every stored meeting has its inbox row and all three reminders.
async fn assert_acknowledged_are_stored_whole(url: &str, acknowledged: &[usize]) {
    let db = Database::connect(url).await.expect("connect");
    let app_db = crate::helpers::RowCounter(&db);
    for n in acknowledged {
        let uri = format!(
            "https://api.calendly.com/scheduled_events/e0d1c2b3-a495-4867-8f9e-0a1b2c3d4e5f/invitees/1a2b3c4d-5e6f-4a7b-8c9d-{n:012}"
        );
        let meetings = app_db
            .scalar(&format!(
                "SELECT COUNT(*) FROM meetings WHERE calendly_invitee_id = '{uri}'"
            ))
            .await;
        assert_eq!(meetings, 1, "delivery {n} was answered 200 but is not stored");
    }
    // Nothing half-written: every stored meeting has its inbox row and all three reminders.
    let meetings = app_db.scalar("SELECT COUNT(*) FROM meetings").await;
    assert!(meetings >= acknowledged.len() as i64);
    assert_eq!(
        app_db.scalar("SELECT COUNT(*) FROM webhook_events").await,
        meetings
    );
    assert_eq!(
        app_db.scalar("SELECT COUNT(*) FROM meeting_reminders").await,
        meetings * 3
    );
    db.close().await.ok();
}

crate::on_both_backends!(
    metrics_pass_promtool_and_logs_are_json_files,
    sigterm_during_a_burst_loses_no_acknowledged_delivery,
    sigkill_during_batches_loses_no_acknowledged_delivery,
);
