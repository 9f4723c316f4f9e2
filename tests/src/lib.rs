//! Shared by the end-to-end tests and the tools in this crate.

pub mod binaries;
mod documented_settings;
pub mod fixture_time;
pub mod loadgen;
pub mod test_database;
