//! Shared by the end-to-end tests and the tools in this crate: `binaries` (locating and
//! building the service binaries the tests start), `test_database` (a fresh SQLite file or
//! PostgreSQL database per test), `fixture_time` (moving fixtures' times relative to now),
//! `loadgen` (the load generator behind `scripts/bench.sh` and `scripts/fault-runs.sh`) and
//! `documented_settings` (a test that docs/configuration.md lists every setting the code reads).

pub mod binaries;
mod documented_settings;
pub mod fixture_time;
pub mod loadgen;
pub mod test_database;
