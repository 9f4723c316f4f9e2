//! End-to-end tests: the real adapter and meeting service on port 0, a fresh database per test,
//! real HTTP and gRPC. Every test runs on SQLite and on PostgreSQL (see `harness` for what
//! happens when no PostgreSQL server is there).

mod ambiguous;
mod bad_requests;
mod batching;
mod change_feed;
mod convergence;
mod events;
mod faults;
mod front_door;
mod harness;
mod helpers;
mod meeting_api;
mod operations;
mod pipeline;
mod process;
mod query_plans;

fn main() -> std::process::ExitCode {
    harness::run(
        [
            ambiguous::cases(),
            bad_requests::cases(),
            batching::cases(),
            change_feed::cases(),
            convergence::cases(),
            events::cases(),
            faults::cases(),
            front_door::cases(),
            meeting_api::cases(),
            operations::cases(),
            pipeline::cases(),
            process::cases(),
            query_plans::cases(),
        ]
        .into_iter()
        .flatten()
        .collect(),
    )
}
