//! This binary's own test runner (libtest-mimic), so that PostgreSQL variants that cannot run
//! are reported as such instead of passing.
//!
//! Each module lists its tests with [`crate::on_both_backends!`]: every `async fn(Backend)` named
//! there becomes `<module>::sqlite::<name>` and `<module>::postgres::<name>`. Without a
//! PostgreSQL server (see `tests::test_database::postgres_server`) the PostgreSQL variants are
//! marked ignored and one line at the end says how many did not run and how to run them; in CI
//! they run regardless, and fail.

use std::{
    future::Future,
    pin::Pin,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use libtest_mimic::{Arguments, Trial};
use tests::test_database::{Backend, in_ci, postgres_server};

/// `block_on` polls it on the trial's own thread, so it need not be `Send`.
pub type TestFuture = Pin<Box<dyn Future<Output = ()>>>;

/// One `async fn(Backend)` of a module, and the backends it runs on.
pub struct Case {
    pub module: &'static str,
    pub name: &'static str,
    pub backends: &'static [Backend],
    pub run: fn(Backend) -> TestFuture,
}

pub const BOTH: &[Backend] = &[Backend::Sqlite, Backend::Postgres];
pub const POSTGRES_ONLY: &[Backend] = &[Backend::Postgres];

impl Case {
    pub fn new(
        module_path: &'static str,
        name: &'static str,
        backends: &'static [Backend],
        run: fn(Backend) -> TestFuture,
    ) -> Self {
        // `module_path!()` of `api::events` is the module `events` of this binary.
        let module = module_path.split_once("::").map_or(module_path, |(_, rest)| rest);
        Self {
            module,
            name,
            backends,
            run,
        }
    }
}

fn label(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

/// Runs `cases` with the command line's filters and options, then reports the PostgreSQL
/// variants.
pub fn run(cases: Vec<Case>) -> ExitCode {
    let arguments = Arguments::from_args();
    let server = postgres_server();
    let skip_postgres = server.admin_url().is_none() && !in_ci();
    let postgres_ran = Arc::new(AtomicUsize::new(0));
    let mut postgres_total = 0;
    let mut trials = Vec::new();
    for case in cases {
        for &backend in case.backends {
            let is_postgres = backend == Backend::Postgres;
            postgres_total += usize::from(is_postgres);
            let ran = postgres_ran.clone();
            let run = case.run;
            let name = format!("{}::{}::{}", case.module, label(backend), case.name);
            let trial = Trial::test(name, move || {
                if is_postgres {
                    ran.fetch_add(1, Ordering::Relaxed);
                }
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| format!("building the test runtime: {e}"))?;
                runtime.block_on(run(backend));
                Ok(())
            });
            trials.push(trial.with_ignored_flag(is_postgres && skip_postgres));
        }
    }
    let listing = arguments.list;
    let conclusion = libtest_mimic::run(&arguments, trials);
    if !listing {
        let ran = postgres_ran.load(Ordering::Relaxed);
        if skip_postgres {
            println!(
                "PostgreSQL variants: {ran} of {postgres_total} ran (the others are marked ignored): {}",
                server.describe()
            );
        } else {
            println!(
                "PostgreSQL variants: {ran} of {postgres_total} ran, on {}",
                server.describe()
            );
        }
    }
    conclusion.exit_code()
}
