//! What both services start with, so that `cargo run` (both in one process) and the two
//! production binaries do it the same way: settings read from the environment, logging, the
//! Prometheus recorder and its listener, and the shutdown signal.

pub mod log_file;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
