//! `auditflow`: the whole system in one process (embedded mode, design.md §2). Parses
//! arguments, loads the configuration (the aggregator's file) and runs it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use aggregator::config::{Config, DEFAULT_TOML};

const BINARY: &str = "auditflow";
const THREADS: runtime::process::Threads = runtime::process::Threads::Workers(2);

/// AuditFlow in one process: the MQTT broker for agents, detection, a SQLite alert store, the
/// API, the dashboard and a demo agent for this host. No service to install.
#[derive(Debug, Parser)]
#[command(name = "auditflow", version, about)]
struct Cli {
    #[command(flatten)]
    args: runtime::cli::ConfigArgs,
    /// Data directory (SQLite store, tokens, agents' credentials, the demo agent's spool);
    /// overrides `data_dir`.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the API and the dashboard; overrides `http.listen`.
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Address of /metrics; overrides `http.metrics_listen`.
    #[arg(long, global = true, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// The MQTT listener for agents; overrides `embedded.mqtt_listen`.
    #[arg(long, global = true, value_name = "ADDR")]
    mqtt_listen: Option<std::net::SocketAddr>,
    /// Without the in-process demo agent; sets `embedded.demo = false`.
    #[arg(long, global = true)]
    no_demo: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the service (the default).
    Run,
    /// Print the documented default configuration.
    PrintDefaultConfig,
    /// Check the configuration and exit: 0 when valid, 64 with every problem listed when not.
    CheckConfig,
    /// Copy the alert store to PATH while AuditFlow runs: one consistent snapshot (SQLite's
    /// VACUUM INTO), checked after it is written.
    Backup {
        /// The new file (refused if it exists).
        path: PathBuf,
    },
    /// Replace the alert store with the backup at PATH. AuditFlow must be stopped; the store
    /// it replaces is kept beside it.
    Restore {
        /// The backup file.
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (common, copy) = match cli.command {
        None | Some(Command::Run) => (Some(runtime::cli::Command::Run), None),
        Some(Command::PrintDefaultConfig) => {
            (Some(runtime::cli::Command::PrintDefaultConfig), None)
        }
        Some(Command::CheckConfig) => (Some(runtime::cli::Command::CheckConfig), None),
        Some(Command::Backup { path }) => (Some(runtime::cli::Command::Run), Some((true, path))),
        Some(Command::Restore { path }) => (Some(runtime::cli::Command::Run), Some((false, path))),
    };
    runtime::cli::main::<Config>(BINARY, DEFAULT_TOML, &cli.args, common, |mut config| {
        // Command-line flags win over the file (typed like the config, nothing new to check).
        if let Some(d) = &cli.data_dir {
            config.data_dir = d.display().to_string();
        }
        if let Some(a) = cli.listen {
            config.http.listen = Some(a);
        }
        if let Some(a) = cli.metrics_listen {
            config.http.metrics_listen = Some(a);
        }
        if let Some(a) = cli.mqtt_listen {
            config.embedded.mqtt_listen = a;
        }
        if cli.no_demo {
            config.embedded.demo = false;
        }
        // Silently ignoring a configured service would leave its user wondering where the
        // alerts went.
        if !config.is_embedded() {
            eprintln!("{BINARY}: {}", auditflow::NO_SERVICES);
            return runtime::config::exit_config();
        }
        if let Some((backup, path)) = copy {
            return copy_store(&config, backup, &path);
        }
        runtime::process::init_tracing("info,sqlx=warn,rumqttd=warn");
        runtime::process::run_service(BINARY, THREADS, |cancel| auditflow::run(config, cancel))
    })
}

/// `backup` and `restore`: 0 when done, 1 with the reason when not.
fn copy_store(config: &Config, backup: bool, path: &std::path::Path) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{BINARY}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let done = runtime.block_on(async {
        if backup {
            auditflow::backup(config, path).await
        } else {
            auditflow::restore(config, path).await
        }
    });
    match done {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{BINARY}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
