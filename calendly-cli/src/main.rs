//! `calendly`: webhook subscriptions and back-fill from the command line (docs/cli.md).

use std::{io::IsTerminal, process::ExitCode};

use calendly_cli::{Cli, Output, Settings};
use clap::Parser;
use service_kit::settings::process_env;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = dotenvy::dotenv();
    // Quiet unless asked: the command's own output says what happened; RUST_LOG adds detail
    // (e.g. the gRPC status behind a meeting service failure).
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("off")))
        .with_writer(std::io::stderr)
        .init();
    let settings = match Settings::from_lookup(&process_env, cli.command.needs_meeting_service()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let progress_bar = stderr.is_terminal();
    let mut output = Output {
        out: &mut stdout,
        err: &mut stderr,
        progress_bar,
    };
    match runtime.block_on(calendly_cli::run(cli, settings, &mut output)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
