//! The load generator behind `cargo run --release -p tests --bin loadgen`: real-shape, correctly
//! signed Calendly deliveries at a chosen concurrency or rate, retried like Calendly retries,
//! with latency and status counts, a check of the database afterwards, a gRPC health probe, a
//! slow-client probe and stalled change-feed consumers. See `BENCHMARKS.md` for how the scripts use it.

pub mod health;
pub mod send;
pub mod slow;
pub mod stalled;
pub mod verify;
pub mod workload;

/// CPU seconds (user + system) this process has used, from `/proc/self/stat`.
pub fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((utime + stime) / 100.0)
}
