//! `loadgen slow-client`: do slow clients stall others, and are they cut off?
//!
//! Opens, at once: connections that trickle a signed delivery's body one byte a second,
//! connections that send part of a header one byte a second, connections that send nothing, and
//! keep-alive connections left idle after one complete delivery.
//! Meanwhile a probe delivery is sent every half second on its own connection. It reports, for
//! each slow connection, whether and when the server closed it (or answered), and whether any
//! probe failed or took longer than `stall` (a stalled front door). A slow connection still open
//! after `hold` means the server has no timeout for it: that is reported as a failure, never
//! passed over.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::workload::{Mix, Options, Workload};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Style {
    /// Complete headers, then the body one byte at a time.
    TrickledBody,
    /// The request line, then header bytes one at a time.
    TrickledHeaders,
    /// Connected, nothing sent.
    Idle,
    /// One complete delivery, answered, then the keep-alive connection left idle.
    IdleAfterRequest,
}

const STYLES: [Style; 4] = [
    Style::TrickledBody,
    Style::TrickledHeaders,
    Style::Idle,
    Style::IdleAfterRequest,
];

#[derive(Debug, Serialize)]
pub struct SlowConnection {
    pub style: Style,
    /// Seconds until the server closed the connection or answered; `None`: still open at the end.
    pub cut_off_after_secs: Option<f64>,
    pub bytes_sent: usize,
    /// The server's status line, when it answered before closing.
    pub answer: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SlowReport {
    pub hold_secs: u64,
    pub connections: Vec<SlowConnection>,
    pub probes: usize,
    pub probe_failures: usize,
    pub probe_max_ms: f64,
    pub stall_threshold_ms: f64,
    pub findings: Vec<String>,
}

impl SlowReport {
    pub fn passed(&self) -> bool {
        self.findings.is_empty()
    }
}

fn split_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("only http:// URLs: {url}"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    Ok((authority.to_owned(), format!("/{path}")))
}

pub async fn run(
    url: &str,
    secret: &str,
    per_style: usize,
    hold: Duration,
    stall: Duration,
) -> anyhow::Result<SlowReport> {
    let (authority, path) = split_url(url)?;
    let workload = Workload::generate(&Options {
        requests: per_style + (hold.as_secs() as usize) * 2 + 4,
        mix: Mix::Created,
        duplicates: 0.0,
        invalid_signatures: 0.0,
        oversized: 0.0,
        copies: 1,
        seed: rand::random(),
        lead_share: 0.0,
        lead_pool: 1,
    });
    let mut bodies = workload.deliveries.iter().map(|d| d.body.as_ref().clone());

    let mut slow = tokio::task::JoinSet::new();
    for style in STYLES {
        for _ in 0..per_style {
            let body = bodies.next().expect("enough bodies");
            let signature =
                adapter::signature::sign(secret.as_bytes(), chrono::Utc::now().timestamp(), &body);
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
                 Calendly-Webhook-Signature: {signature}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let request = match style {
                Style::TrickledBody => (head.into_bytes(), body),
                Style::IdleAfterRequest => {
                    let mut whole = head.into_bytes();
                    whole.extend_from_slice(&body);
                    (whole, Vec::new())
                }
                Style::TrickledHeaders => (
                    format!("POST {path} HTTP/1.1\r\nHost: {authority}\r\n").into_bytes(),
                    format!("X-Padding: {}\r\n", "a".repeat(4096)).into_bytes(),
                ),
                Style::Idle => (Vec::new(), Vec::new()),
            };
            let authority = authority.clone();
            slow.spawn(async move { slow_connection(&authority, style, request, hold).await });
        }
    }

    // Probes: ordinary signed deliveries while the slow connections hang on.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()?;
    let started = Instant::now();
    let (mut probes, mut probe_failures, mut probe_max) = (0usize, 0usize, Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(500)).await;
    while started.elapsed() < hold {
        let Some(body) = bodies.next() else { break };
        let signature = adapter::signature::sign(secret.as_bytes(), chrono::Utc::now().timestamp(), &body);
        let sent = Instant::now();
        let answer = client
            .post(url)
            .header("content-type", "application/json")
            .header("calendly-webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let took = sent.elapsed();
        probes += 1;
        probe_max = probe_max.max(took);
        if !answer.is_ok_and(|r| r.status().is_success()) {
            probe_failures += 1;
        }
        tokio::time::sleep(Duration::from_millis(500).saturating_sub(took)).await;
    }
    let mut connections = Vec::new();
    while let Some(done) = slow.join_next().await {
        connections.push(done?);
    }

    let mut findings = Vec::new();
    for style in STYLES {
        let open: Vec<&SlowConnection> = connections
            .iter()
            .filter(|c| c.style == style)
            .filter(|c| c.cut_off_after_secs.is_none())
            .collect();
        if !open.is_empty() {
            let sent = open.iter().map(|c| c.bytes_sent).max().unwrap_or(0);
            findings.push(format!(
                "MISSING TIMEOUT: {} of {per_style} {style:?} connection(s) still open after {} s \
                 ({sent} bytes sent); the server never cut them off",
                open.len(),
                hold.as_secs()
            ));
        }
    }
    if probe_failures > 0 {
        findings.push(format!(
            "{probe_failures} of {probes} probe deliveries failed during the slow clients"
        ));
    }
    if probe_max > stall {
        findings.push(format!(
            "a probe delivery took {:.0} ms (over {} ms): slow clients stalled others",
            probe_max.as_secs_f64() * 1000.0,
            stall.as_millis()
        ));
    }
    Ok(SlowReport {
        hold_secs: hold.as_secs(),
        connections,
        probes,
        probe_failures,
        probe_max_ms: probe_max.as_secs_f64() * 1000.0,
        stall_threshold_ms: stall.as_secs_f64() * 1000.0,
        findings,
    })
}

async fn slow_connection(
    authority: &str,
    style: Style,
    (head, trickle): (Vec<u8>, Vec<u8>),
    hold: Duration,
) -> SlowConnection {
    let started = Instant::now();
    let mut result = SlowConnection {
        style,
        cut_off_after_secs: None,
        bytes_sent: 0,
        answer: None,
    };
    let Ok(stream) = TcpStream::connect(authority).await else {
        result.cut_off_after_secs = Some(0.0);
        result.answer = Some("connect failed".into());
        return result;
    };
    let (mut reader, mut writer) = stream.into_split();
    let closed = async {
        let mut buffer = vec![0u8; 4096];
        let mut answer = Vec::new();
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
        let text = String::from_utf8_lossy(&answer);
        text.lines().next().map(str::to_owned).filter(|l| !l.is_empty())
    };
    let sent = std::sync::atomic::AtomicUsize::new(0);
    let sending = async {
        if writer.write_all(&head).await.is_err() {
            return;
        }
        sent.store(head.len(), std::sync::atomic::Ordering::Relaxed);
        for byte in &trickle {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if writer.write_all(std::slice::from_ref(byte)).await.is_err() {
                return;
            }
            sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        std::future::pending::<()>().await;
    };
    let ended = tokio::select! {
        answer = closed => Some(answer),
        () = sending => Some(Some("write failed".to_owned())),
        () = tokio::time::sleep(hold) => None,
    };
    if let Some(answer) = ended {
        result.cut_off_after_secs = Some(started.elapsed().as_secs_f64());
        result.answer = answer;
    }
    result.bytes_sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    result
}
