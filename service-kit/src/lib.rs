//! What both services start with, so that `cargo run` (both in one process) and the two
//! production binaries do it the same way: settings read from the environment, logging, the
//! Prometheus recorder and its listener, and the shutdown signal.
//!
//! Layout: `allocator` (malloc's arenas), `settings` (typed reads from a lookup), `log_file` (the daily file), `telemetry` (logs,
//! the recorder, `/metrics`), `shutdown` (listeners, the signal), `binary` (a service binary's
//! whole start-up, on all of the above).

pub mod allocator;
pub mod binary;
pub mod log_file;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
