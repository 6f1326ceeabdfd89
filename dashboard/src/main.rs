//! `auditflow-dashboard`: parses arguments, loads the configuration and runs the dashboard.

use std::process::ExitCode;

use dashboard::config::{Config, DEFAULT_TOML};

const BINARY: &str = "auditflow-dashboard";

fn main() -> ExitCode {
    let about = "The AuditFlow dashboard: the browser UI over the aggregator's API.";
    runtime::cli::plain_main::<Config>(BINARY, about, env!("CARGO_PKG_VERSION"), DEFAULT_TOML, run)
}

fn run(config: Config) -> ExitCode {
    runtime::process::init_tracing("info");
    runtime::process::run_service(BINARY, runtime::process::Threads::Workers(2), |cancel| {
        dashboard::serve(config, cancel)
    })
}
