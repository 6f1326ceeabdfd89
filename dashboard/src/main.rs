//! `auditflow-dashboard`: parses arguments, loads the configuration and runs the dashboard.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use dashboard::config::{Config, DEFAULT_TOML};

/// The AuditFlow dashboard.
#[derive(Debug, Parser)]
#[command(name = "auditflow-dashboard", version, about)]
struct Cli {
    /// Configuration file (TOML). Without one the documented defaults apply.
    #[arg(long, short, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print the documented default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the dashboard (the default).
    Run,
    /// Print the documented default configuration.
    PrintDefaultConfig,
    /// Check the configuration and exit: 0 when valid, 64 with every problem listed when not.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_default_config || matches!(cli.command, Some(Command::PrintDefaultConfig)) {
        print!("{DEFAULT_TOML}");
        return ExitCode::SUCCESS;
    }
    let config = match load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::PrintDefaultConfig => ExitCode::SUCCESS,
        Command::CheckConfig => {
            println!("configuration is valid");
            ExitCode::SUCCESS
        }
        Command::Run => {
            let _ = config;
            eprintln!(
                "auditflow-dashboard: `run` is not implemented in this build yet (see the open issues)"
            );
            ExitCode::from(69)
        }
    }
}

/// Reads, checks and completes the configuration; on failure prints every problem and
/// returns exit status 64.
fn load(path: Option<&Path>) -> Result<Config, ExitCode> {
    let text = match path {
        None => Ok(String::new()),
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| vec![format!("cannot read the file: {e}")])
        }
    };
    let env = |k: &str| std::env::var(k).ok();
    text.and_then(|text| wire::config::parse::<Config>(&text, &env)).map_err(|errors| {
        let from = path
            .map_or_else(|| "(defaults and environment)".to_owned(), |p| p.display().to_string());
        eprintln!("auditflow-dashboard: invalid configuration {from}:");
        for e in errors {
            eprintln!("  - {e}");
        }
        ExitCode::from(wire::config::EXIT_CONFIG as u8)
    })
}
