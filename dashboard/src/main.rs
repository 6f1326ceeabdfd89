//! `auditflow-dashboard`: parses arguments, loads the configuration and runs the dashboard.

use std::process::ExitCode;

use clap::Parser;

use dashboard::config::{Config, DEFAULT_TOML};

const BINARY: &str = "auditflow-dashboard";

/// The AuditFlow dashboard.
#[derive(Debug, Parser)]
#[command(name = "auditflow-dashboard", version, about)]
struct Cli {
    #[command(flatten)]
    args: runtime::cli::ConfigArgs,
    #[command(subcommand)]
    command: Option<runtime::cli::Command>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    runtime::cli::main::<Config>(BINARY, DEFAULT_TOML, &cli.args, cli.command, run)
}

fn run(config: Config) -> ExitCode {
    runtime::process::init_tracing("info");
    runtime::process::run_service(BINARY, runtime::process::Threads::Workers(2), |cancel| {
        dashboard::serve(config, cancel)
    })
}
