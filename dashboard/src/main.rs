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
        Command::Run => run(config),
    }
}

fn run(config: Config) -> ExitCode {
    init_tracing();
    let rt =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("auditflow-dashboard: cannot start the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
    let result = rt.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        let signals = cancel.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received, stopping");
            signals.cancel();
        });
        dashboard::serve(config, cancel).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "dashboard failed");
            eprintln!("auditflow-dashboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs as JSON when stderr is not a terminal, human-readable otherwise; `RUST_LOG` filters.
fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().init();
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
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
