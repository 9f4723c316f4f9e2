//! What reading one body costs, and how much of it is the duplicate-key check (`json_keys`),
//! on the real one-on-one fixture (about 2.4 KB).
//!
//!     cargo bench -p adapter --bench parse
//!
//! Rounds of 20,000 parses each, alternating the three measurements; the median round of each is
//! reported, with the check's share of a full parse.

use std::{hint::black_box, time::Instant};

const ROUNDS: usize = 9;
const PER_ROUND: u32 = 20_000;

fn per_call_ns(work: impl Fn()) -> f64 {
    let started = Instant::now();
    for _ in 0..PER_ROUND {
        work();
    }
    started.elapsed().as_nanos() as f64 / f64::from(PER_ROUND)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/calendly/fixtures/invitee-created-one-on-one.json"
    ))
    .expect("fixture");
    let text = std::str::from_utf8(&body).expect("UTF-8");
    let (mut full, mut check, mut parse_without) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        full.push(per_call_ns(|| {
            black_box(adapter::calendly::parse_delivery(black_box(&body)).ok());
        }));
        check.push(per_call_ns(|| {
            black_box(adapter::json_keys::first_duplicate_key(black_box(text)));
        }));
        parse_without.push(per_call_ns(|| {
            black_box(serde_json::from_str::<serde_json::Value>(black_box(text)).ok());
        }));
    }
    let (full, check, value) = (median(full), median(check), median(parse_without));
    println!("body: {} bytes, {ROUNDS} rounds of {PER_ROUND}", body.len());
    println!("parse_delivery (check included): {full:8.0} ns");
    println!(
        "duplicate-key check alone:       {check:8.0} ns ({:.0}% of parse_delivery)",
        100.0 * check / full
    );
    println!("serde_json::Value, for scale:    {value:8.0} ns");
}
