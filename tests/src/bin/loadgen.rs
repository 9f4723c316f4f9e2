//! `loadgen`: load and fault tooling for the webhook pipeline.
//!
//! ```text
//! loadgen --url http://127.0.0.1:3001/webhook/calendly --secret KEY --requests 10000 --concurrency 64
//! loadgen --mix realistic --duplicates 0.1 --rate 200 --verify-database postgres://…
//! loadgen health --addr http://127.0.0.1:50051 --expect NOT_SERVING --wait-secs 20
//! loadgen slow-client --url http://127.0.0.1:3001/webhook/calendly --secret KEY --hold-secs 45
//! loadgen stalled-watchers --addr http://127.0.0.1:50051 --token T --streams 4 --until-file F
//! ```
//!
//! Exit status: 0 when everything asked for held, 1 when a check failed, 2 for bad usage.

use std::{io::Write, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;
use tests::loadgen::{
    health, own_cpu_seconds,
    send::{SendOptions, send},
    slow, stalled, verify,
    workload::{Kind, Mix, Options, Workload},
};

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Signed Calendly deliveries under load, database verification, health and slow-client probes",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    send: SendArgs,
}

#[derive(Subcommand)]
enum Command {
    /// The meeting service's gRPC health status; with --expect, wait for it.
    Health {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
        /// "" is the whole server; the meeting service reports its own name too.
        #[arg(long, default_value = "calendly.meetings.v1.MeetingService")]
        service: String,
        /// SERVING or NOT_SERVING: poll until the status is this one.
        #[arg(long)]
        expect: Option<String>,
        #[arg(long, default_value_t = 30)]
        wait_secs: u64,
    },
    /// Slow clients: trickled bodies and headers and idle connections, with probes alongside.
    SlowClient {
        #[arg(long, default_value = "http://127.0.0.1:3001/webhook/calendly")]
        url: String,
        /// Signing key (default: $CALENDLY_WEBHOOK_SECRET).
        #[arg(long)]
        secret: Option<String>,
        /// Slow connections of each kind.
        #[arg(long, default_value_t = 2)]
        per_style: usize,
        /// How long a slow connection is kept up before it counts as never cut off.
        #[arg(long, default_value_t = 45)]
        hold_secs: u64,
        /// A probe slower than this means the slow clients stalled others.
        #[arg(long, default_value_t = 1000)]
        stall_ms: u64,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Change-feed consumers that open WatchMeetingChanges and read nothing, held until a file
    /// exists (or a time passes); then how each stream ended.
    StalledWatchers {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
        /// Bearer token (default: $INTERNAL_API_TOKEN).
        #[arg(long)]
        token: Option<String>,
        #[arg(long, default_value_t = 4)]
        streams: usize,
        /// Read the streams once this file exists.
        #[arg(long)]
        until_file: Option<PathBuf>,
        /// ... or after this long, whichever comes first.
        #[arg(long, default_value_t = 600)]
        hold_secs: u64,
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum MixArg {
    Created,
    Realistic,
}

#[derive(Args)]
struct SendArgs {
    #[arg(long, default_value = "http://127.0.0.1:3001/webhook/calendly")]
    url: String,
    /// Signing key (default: $CALENDLY_WEBHOOK_SECRET).
    #[arg(long)]
    secret: Option<String>,
    /// Distinct deliveries to send (re-sends from --duplicates and --copies come on top).
    #[arg(long, short = 'n', default_value_t = 1000)]
    requests: usize,
    /// Requests in flight at once (with --rate: the most in flight).
    #[arg(long, short = 'c', default_value_t = 16)]
    concurrency: usize,
    /// Start this many deliveries per second instead of as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, value_enum, default_value = "created")]
    mix: MixArg,
    /// Fraction of valid deliveries sent once more, later in the run.
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    /// Fraction of requests signed with a wrong key (expected 401, never stored).
    #[arg(long, default_value_t = 0.0)]
    invalid_signatures: f64,
    /// Fraction of requests with a body over 1 MiB (expected 413, never stored).
    #[arg(long, default_value_t = 0.0)]
    oversized: f64,
    /// Fraction of bookings whose invitee has a pre-loaded lead's e-mail (`lead<k>@example.com`).
    #[arg(long, default_value_t = 0.0)]
    lead_share: f64,
    /// How many pre-loaded leads those e-mails are drawn from (k in 1..=N).
    #[arg(long, default_value_t = 200_000)]
    lead_pool: usize,
    /// Send every delivery this many times at once (a duplicate storm).
    #[arg(long, default_value_t = 1)]
    copies: u32,
    /// Attempts per delivery, the first included, on 5xx, 429, timeouts and connection errors.
    #[arg(long, default_value_t = 6)]
    max_attempts: u32,
    #[arg(long, default_value_t = 200)]
    backoff_base_ms: u64,
    #[arg(long, default_value_t = 5000)]
    backoff_max_ms: u64,
    /// Per-request timeout.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Nothing new starts after this many seconds (retries included).
    #[arg(long, default_value_t = 600)]
    time_limit_secs: u64,
    #[arg(long)]
    seed: Option<u64>,
    /// Write the summary as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write every attempt (start/end unix ms, status, delivery, attempt) as CSV here.
    #[arg(long)]
    attempts_log: Option<PathBuf>,
    /// Afterwards, check this database against what was acknowledged.
    #[arg(long)]
    verify_database: Option<String>,
    /// Live reminders a scheduled meeting must have (the service's REMINDER_OFFSETS count).
    #[arg(long, default_value_t = 3)]
    reminders_per_meeting: usize,
    /// Fail unless every valid delivery was acknowledged in the end (fault runs: convergence).
    #[arg(long)]
    require_all_acknowledged: bool,
    /// A label carried into the JSON summary.
    #[arg(long, default_value = "")]
    label: String,
}

fn secret_from(argument: Option<String>) -> String {
    argument
        .or_else(|| std::env::var("CALENDLY_WEBHOOK_SECRET").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            eprintln!("no signing key: pass --secret or set CALENDLY_WEBHOOK_SECRET");
            std::process::exit(2);
        })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let code = match cli.command {
        Some(Command::Health {
            addr,
            service,
            expect,
            wait_secs,
        }) => match expect {
            Some(expected) => {
                let reached =
                    health::wait_for(&addr, &service, &expected, Duration::from_secs(wait_secs)).await;
                i32::from(!reached)
            }
            None => {
                let status = health::status(&addr, &service).await;
                println!("{status}");
                i32::from(status != "SERVING")
            }
        },
        Some(Command::StalledWatchers {
            addr,
            token,
            streams,
            until_file,
            hold_secs,
            json,
        }) => {
            let token = token.or_else(|| std::env::var("INTERNAL_API_TOKEN").ok());
            let release = async {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(hold_secs);
                while tokio::time::Instant::now() < deadline
                    && !until_file.as_ref().is_some_and(|file| file.exists())
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            };
            let report =
                stalled::run(&addr, token.as_deref(), streams, release, Duration::from_secs(10)).await?;
            println!("{} stalled streams ended: {:?}", report.streams, report.endings);
            if let Some(path) = json {
                std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
            }
            i32::from(report.endings.iter().any(|ending| ending != "ResourceExhausted"))
        }
        Some(Command::SlowClient {
            url,
            secret,
            per_style,
            hold_secs,
            stall_ms,
            json,
        }) => {
            let secret = secret_from(secret);
            let report = slow::run(
                &url,
                &secret,
                per_style,
                Duration::from_secs(hold_secs),
                Duration::from_millis(stall_ms),
            )
            .await?;
            for connection in &report.connections {
                match connection.cut_off_after_secs {
                    Some(secs) => println!(
                        "{:?}: closed after {secs:.1} s ({} bytes sent), answer {:?}",
                        connection.style, connection.bytes_sent, connection.answer
                    ),
                    None => println!(
                        "{:?}: STILL OPEN after {} s ({} bytes sent)",
                        connection.style, report.hold_secs, connection.bytes_sent
                    ),
                }
            }
            println!(
                "probes: {} sent, {} failed, slowest {:.1} ms",
                report.probes, report.probe_failures, report.probe_max_ms
            );
            for finding in &report.findings {
                println!("FINDING: {finding}");
            }
            if let Some(path) = json {
                std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
            }
            i32::from(!report.passed())
        }
        None => run_load(cli.send).await?,
    };
    std::process::exit(code);
}

async fn run_load(args: SendArgs) -> anyhow::Result<i32> {
    let secret = secret_from(args.secret.clone());
    let seed = args.seed.unwrap_or_else(rand::random);
    let workload = Workload::generate(&Options {
        requests: args.requests,
        mix: match args.mix {
            MixArg::Created => Mix::Created,
            MixArg::Realistic => Mix::Realistic,
        },
        duplicates: args.duplicates,
        invalid_signatures: args.invalid_signatures,
        oversized: args.oversized,
        copies: args.copies,
        seed,
        lead_share: args.lead_share,
        lead_pool: args.lead_pool,
    });
    let planned = workload.planned_requests();
    let run_id = workload.run_id.clone();
    eprintln!(
        "run {run_id}: {} deliveries, {planned} requests planned, {} to {}",
        workload.deliveries.len(),
        match args.rate {
            Some(rate) => format!("{rate}/s (at most {} in flight)", args.concurrency),
            None => format!("concurrency {}", args.concurrency),
        },
        args.url
    );
    let cpu_before = own_cpu_seconds();
    let (workload, mut outcome) = send(
        workload,
        SendOptions {
            url: args.url.clone(),
            secret,
            concurrency: args.concurrency,
            rate: args.rate,
            max_attempts: args.max_attempts,
            backoff_base: Duration::from_millis(args.backoff_base_ms),
            backoff_max: Duration::from_millis(args.backoff_max_ms),
            timeout: Duration::from_millis(args.timeout_ms),
            time_limit: Duration::from_secs(args.time_limit_secs),
        },
        args.attempts_log.is_some(),
    )
    .await;
    let client_cpu = match (cpu_before, own_cpu_seconds()) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    let latency = outcome.latency();
    let elapsed = outcome.elapsed.as_secs_f64();
    let requests: u64 = outcome.statuses.values().sum();
    let valid: Vec<usize> = workload
        .deliveries
        .iter()
        .enumerate()
        .filter(|(_, d)| matches!(d.kind, Kind::Valid(_)))
        .map(|(i, _)| i)
        .collect();
    let acknowledged = valid.iter().filter(|i| outcome.acknowledged[**i]).count();
    let never_sent = valid.iter().filter(|i| !outcome.sent[**i]).count();

    println!(
        "{requests} requests in {elapsed:.2} s: {:.1} requests/s; {acknowledged} of {} valid deliveries \
         acknowledged ({:.1}/s), {} retries, {never_sent} never sent",
        requests as f64 / elapsed,
        valid.len(),
        acknowledged as f64 / elapsed,
        outcome.retries
    );
    println!("status: {}", counts(&outcome.statuses));
    println!("outcome: {}", counts(&outcome.outcomes));
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}",
        latency.p50_ms, latency.p90_ms, latency.p99_ms, latency.max_ms, latency.mean_ms
    );
    if let Some(cpu) = client_cpu {
        println!("generator CPU: {cpu:.2} s");
    }

    let mut failed = false;
    if args.require_all_acknowledged && acknowledged < valid.len() {
        println!(
            "FAIL: {} valid deliveries were never acknowledged",
            valid.len() - acknowledged
        );
        failed = true;
    }
    let verification = match &args.verify_database {
        Some(url) => {
            let report =
                verify::verify(url, &workload, &outcome.acknowledged, args.reminders_per_meeting).await?;
            println!(
                "verify: {} acknowledged events, {} unacknowledged, {} meetings ({} with status checked), \
                 {} inbox rows: {}",
                report.acknowledged_events,
                report.unacknowledged_events,
                report.meetings_checked,
                report.status_checked,
                report.inbox_rows,
                if report.passed() { "PASS" } else { "FAIL" }
            );
            for violation in &report.violations {
                println!("  violation: {violation}");
            }
            if report.more_violations > 0 {
                println!("  … and {} more", report.more_violations);
            }
            failed |= !report.passed();
            Some(report)
        }
        None => None,
    };

    if let Some(path) = &args.attempts_log {
        let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(file, "start_unix_ms,end_unix_ms,status,delivery,attempt")?;
        for a in &outcome.attempts {
            writeln!(
                file,
                "{},{},{},{},{}",
                a.start_unix_ms, a.end_unix_ms, a.status, a.delivery, a.attempt
            )?;
        }
    }
    if let Some(path) = &args.json {
        let summary = json!({
            "label": args.label,
            "run_id": run_id,
            "url": args.url,
            "mix": match args.mix { MixArg::Created => "created", MixArg::Realistic => "realistic" },
            "concurrency": args.concurrency,
            "rate": args.rate,
            "duplicates": args.duplicates,
            "invalid_signatures": args.invalid_signatures,
            "oversized": args.oversized,
            "copies": args.copies,
            "elapsed_secs": elapsed,
            "requests": requests,
            "requests_per_sec": requests as f64 / elapsed,
            "valid_deliveries": valid.len(),
            "acknowledged": acknowledged,
            "acknowledged_per_sec": acknowledged as f64 / elapsed,
            "never_sent": never_sent,
            "retries": outcome.retries,
            "status_counts": outcome.statuses,
            "outcomes": outcome.outcomes,
            "latency_ms": latency,
            "generator_cpu_secs": client_cpu,
            "verify": verification,
            "passed": !failed,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)?;
    }
    Ok(i32::from(failed))
}

fn counts(map: &std::collections::BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "-".to_owned();
    }
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
