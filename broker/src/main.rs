//! `auditflow-broker`: parses arguments, loads the configuration and runs the broker.

use std::process::ExitCode;

use clap::Parser;

use broker::config::{Config, DEFAULT_TOML};

const BINARY: &str = "auditflow-broker";

/// The AuditFlow broker.
#[derive(Debug, Parser)]
#[command(name = "auditflow-broker", version, about)]
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

// rumqttd's threads cannot be stopped; leaving main ends them.
fn run(config: Config) -> ExitCode {
    runtime::process::init_tracing("info,lapin=warn,rumqttd=warn");
    runtime::process::run_service(BINARY, runtime::process::Threads::Workers(2), |cancel| {
        broker::run(config, cancel)
    })
}
