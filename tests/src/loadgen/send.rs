//! Sending a [`Workload`]: at a fixed concurrency (closed loop) or a fixed rate (open loop with a
//! cap on requests in flight), retrying like Calendly, and recording what came back.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rand::Rng;
use serde::Serialize;

use super::workload::{Kind, Workload};

#[derive(Debug, Clone)]
pub struct SendOptions {
    pub url: String,
    pub secret: String,
    pub concurrency: usize,
    /// Requests started per second; `None` sends as fast as `concurrency` allows.
    pub rate: Option<f64>,
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub timeout: Duration,
    /// Nothing new is started after this long; a retry due after it is abandoned.
    pub time_limit: Duration,
}

/// Per-attempt record for `--attempts-log`: when, what came back, for which delivery.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub start_unix_ms: u128,
    pub end_unix_ms: u128,
    pub status: String,
    pub delivery: usize,
    pub attempt: u32,
}

#[derive(Default)]
struct Recorder {
    statuses: BTreeMap<String, u64>,
    outcomes: BTreeMap<String, u64>,
    latencies_us: Vec<u32>,
    retries: u64,
    attempts: Vec<AttemptRecord>,
}

pub struct Outcome {
    pub elapsed: Duration,
    /// Whether each delivery got a 2xx at least once.
    pub acknowledged: Vec<bool>,
    /// Whether each delivery was sent at all (the time limit may stop a run early).
    pub sent: Vec<bool>,
    pub statuses: BTreeMap<String, u64>,
    pub outcomes: BTreeMap<String, u64>,
    pub latencies_us: Vec<u32>,
    pub retries: u64,
    pub attempts: Vec<AttemptRecord>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Outcome {
    /// Percentiles of every request's latency (each attempt counts).
    pub fn latency(&mut self) -> Latency {
        self.latencies_us.sort_unstable();
        let values = &self.latencies_us;
        let at = |q: f64| -> f64 {
            if values.is_empty() {
                return 0.0;
            }
            let index = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
            f64::from(values[index]) / 1000.0
        };
        let mean = if values.is_empty() {
            0.0
        } else {
            values.iter().map(|v| f64::from(*v)).sum::<f64>() / values.len() as f64 / 1000.0
        };
        Latency {
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: values.last().map_or(0.0, |v| f64::from(*v) / 1000.0),
            mean_ms: mean,
        }
    }
}

struct Shared {
    workload: Workload,
    options: SendOptions,
    client: reqwest::Client,
    recorder: Mutex<Recorder>,
    acknowledged: Vec<AtomicBool>,
    sent: Vec<AtomicBool>,
    log_attempts: bool,
    started: Instant,
}

pub async fn send(workload: Workload, options: SendOptions, log_attempts: bool) -> (Workload, Outcome) {
    let pool = options.concurrency.max(1) * 5;
    let client = reqwest::Client::builder()
        .timeout(options.timeout)
        .connect_timeout(Duration::from_secs(5).min(options.timeout))
        .pool_max_idle_per_host(pool)
        .tcp_nodelay(true)
        .http1_only()
        .build()
        .expect("HTTP client");
    let deliveries = workload.deliveries.len();
    let shared = Arc::new(Shared {
        acknowledged: (0..deliveries).map(|_| AtomicBool::new(false)).collect(),
        sent: (0..deliveries).map(|_| AtomicBool::new(false)).collect(),
        workload,
        options,
        client,
        recorder: Mutex::new(Recorder::default()),
        log_attempts,
        started: Instant::now(),
    });
    match shared.options.rate {
        None => closed_loop(&shared).await,
        Some(rate) => open_loop(&shared, rate).await,
    }
    let elapsed = shared.started.elapsed();
    let shared = Arc::into_inner(shared).expect("every task finished");
    let recorder = shared.recorder.into_inner().expect("recorder");
    let outcome = Outcome {
        elapsed,
        acknowledged: shared
            .acknowledged
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .collect(),
        sent: shared.sent.iter().map(|a| a.load(Ordering::SeqCst)).collect(),
        statuses: recorder.statuses,
        outcomes: recorder.outcomes,
        latencies_us: recorder.latencies_us,
        retries: recorder.retries,
        attempts: recorder.attempts,
    };
    (shared.workload, outcome)
}

async fn closed_loop(shared: &Arc<Shared>) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..shared.options.concurrency.max(1) {
        let shared = shared.clone();
        let next = next.clone();
        workers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = shared.workload.jobs.get(index).copied() else {
                    return;
                };
                if shared.started.elapsed() >= shared.options.time_limit {
                    return;
                }
                run_job(&shared, job.delivery, job.copies).await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

async fn open_loop(shared: &Arc<Shared>, rate: f64) {
    let cap = Arc::new(tokio::sync::Semaphore::new(shared.options.concurrency.max(1)));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = tokio::task::JoinSet::new();
    for job in shared.workload.jobs.iter().copied() {
        ticker.tick().await;
        if shared.started.elapsed() >= shared.options.time_limit {
            break;
        }
        let permit = cap.clone().acquire_owned().await.expect("semaphore open");
        let shared = shared.clone();
        tasks.spawn(async move {
            run_job(&shared, job.delivery, job.copies).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

async fn run_job(shared: &Arc<Shared>, delivery: usize, copies: u32) {
    shared.sent[delivery].store(true, Ordering::SeqCst);
    if copies <= 1 {
        deliver(shared, delivery).await;
        return;
    }
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..copies {
        let shared = shared.clone();
        set.spawn(async move { deliver(&shared, delivery).await });
    }
    while set.join_next().await.is_some() {}
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Sends one delivery until it is acknowledged, finally refused, or out of attempts.
async fn deliver(shared: &Shared, index: usize) {
    let delivery = &shared.workload.deliveries[index];
    let options = &shared.options;
    let key = match delivery.kind {
        Kind::BadSignature => format!("not-{}", options.secret),
        _ => options.secret.clone(),
    };
    for attempt in 1..=options.max_attempts.max(1) {
        let signature =
            adapter::signature::sign(key.as_bytes(), chrono::Utc::now().timestamp(), &delivery.body);
        let start_unix_ms = unix_ms();
        let started = Instant::now();
        let response = shared
            .client
            .post(&options.url)
            .header("content-type", "application/json")
            .header("user-agent", "Calendly-Webhooks")
            .header("calendly-webhook-signature", signature)
            .body(delivery.body.as_ref().clone())
            .send()
            .await;
        let (status, outcome) = match response {
            Ok(response) => {
                let code = response.status().as_u16();
                match response.bytes().await {
                    Ok(body) => (code.to_string(), answer_outcome(code, &body)),
                    Err(error) if error.is_timeout() => ("timeout".to_owned(), None),
                    Err(_) => ("body-error".to_owned(), None),
                }
            }
            Err(error) if error.is_timeout() => ("timeout".to_owned(), None),
            Err(error) if error.is_connect() => ("connect-error".to_owned(), None),
            Err(_) => ("io-error".to_owned(), None),
        };
        let latency = started.elapsed();
        let code: u16 = status.parse().unwrap_or(0);
        let success = (200..300).contains(&code);
        {
            let mut recorder = shared.recorder.lock().expect("recorder");
            *recorder.statuses.entry(status.clone()).or_default() += 1;
            if let Some(outcome) = outcome {
                *recorder.outcomes.entry(outcome).or_default() += 1;
            }
            recorder
                .latencies_us
                .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
            if attempt > 1 {
                recorder.retries += 1;
            }
            if shared.log_attempts {
                recorder.attempts.push(AttemptRecord {
                    start_unix_ms,
                    end_unix_ms: unix_ms(),
                    status,
                    delivery: index,
                    attempt,
                });
            }
        }
        if success {
            shared.acknowledged[index].store(true, Ordering::SeqCst);
            return;
        }
        // Calendly retries server errors, throttling and timeouts; other client errors are final.
        let final_refusal = (400..500).contains(&code) && code != 429;
        if final_refusal || attempt == options.max_attempts {
            return;
        }
        let delay = backoff(options, attempt);
        if shared.started.elapsed() + delay >= options.time_limit {
            return;
        }
        tokio::time::sleep(delay).await;
    }
}

/// Exponential backoff with equal jitter: half the step, plus up to the other half at random.
fn backoff(options: &SendOptions, attempt: u32) -> Duration {
    let step = options
        .backoff_base
        .saturating_mul(1u32 << (attempt - 1).min(16))
        .min(options.backoff_max);
    let half = step / 2;
    half + Duration::from_micros(rand::rng().random_range(0..=half.as_micros() as u64))
}

/// The meeting service's decision from a 2xx answer (`result.outcome`); the error code otherwise.
fn answer_outcome(code: u16, body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    if (200..300).contains(&code) {
        json["result"]["outcome"].as_str().map(str::to_owned)
    } else {
        json["code"].as_str().map(|c| format!("error:{c}"))
    }
}
