//! End-to-end tests: the real adapter and meeting service on port 0, a fresh database per test,
//! real HTTP and gRPC. Every test runs on SQLite, and on PostgreSQL when `TEST_DATABASE_URL` is set.

mod bad_requests;
mod events;
mod front_door;
mod helpers;
mod meeting_api;
mod operations;
mod pipeline;
mod process;
