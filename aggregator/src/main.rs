//! `auditflow-aggregator`: parses arguments, loads the configuration and runs the aggregator.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use aggregator::config::{Config, DEFAULT_TOML};
use aggregator::rules::{RuleSet, testcase};

/// The AuditFlow aggregator.
#[derive(Debug, Parser)]
#[command(name = "auditflow-aggregator", version, about)]
struct Cli {
    /// Configuration file (TOML). Without one the documented defaults apply.
    #[arg(long, short, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print the documented default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Data directory of embedded mode (SQLite store, tokens, the demo agent's spool);
    /// overrides `data_dir`.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the API (and, in embedded mode, the dashboard); overrides `http.listen`.
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Address of /metrics; overrides `http.metrics_listen`.
    #[arg(long, global = true, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Embedded mode's MQTT listener for agents; overrides `embedded.mqtt_listen`.
    #[arg(long, global = true, value_name = "ADDR")]
    mqtt_listen: Option<std::net::SocketAddr>,
    /// Embedded mode without the in-process demo agent; sets `embedded.demo = false`.
    #[arg(long, global = true)]
    no_demo: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the aggregator (the default).
    Run,
    /// Print the documented default configuration.
    PrintDefaultConfig,
    /// Check the configuration and exit: 0 when valid, 64 with every problem listed when not.
    CheckConfig,
    /// Work with rule files.
    Rules {
        #[command(subcommand)]
        action: RulesCommand,
    },
    /// Apply the database migrations (PostgreSQL, DATABASE_URL) and exit.
    Migrate,
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Validate every rule file in DIR as one set; exit 1 listing every problem.
    Check {
        /// The rule directory.
        dir: PathBuf,
    },
    /// Run every rule's inline tests and print a report; exit 1 when any fails.
    Test {
        /// The rule directory.
        dir: PathBuf,
    },
    /// Write the shipped rule pack into DIR (to start a rule directory from).
    Export {
        /// The target directory (created if missing).
        dir: PathBuf,
    },
}

// The C library's allocator, on purpose. mimalloc makes the single-threaded detection
// benchmark much faster, but in the end-to-end benchmark (`scripts/bench.sh e2e`), where events
// are decoded on one thread and freed on another, it raised the aggregator's peak RSS from
// 40-65 MB to 100-139 MB, and this aggregator may run on a Pi (docs/benchmarks.md).
fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_default_config || matches!(cli.command, Some(Command::PrintDefaultConfig)) {
        print!("{DEFAULT_TOML}");
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Rules { action }) = &cli.command {
        return rules_command(action);
    }
    let mut config = match load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Command-line flags win over the file (they are typed, so nothing new to validate).
    if let Some(d) = &cli.data_dir {
        config.data_dir = d.display().to_string();
    }
    if let Some(a) = cli.listen {
        config.http.listen = a.to_string();
    }
    if let Some(a) = cli.metrics_listen {
        config.http.metrics_listen = a.to_string();
    }
    if let Some(a) = cli.mqtt_listen {
        config.embedded.mqtt_listen = a.to_string();
    }
    if cli.no_demo {
        config.embedded.demo = false;
    }
    match cli.command.unwrap_or(Command::Run) {
        Command::PrintDefaultConfig => ExitCode::SUCCESS,
        Command::CheckConfig => {
            println!("configuration is valid");
            ExitCode::SUCCESS
        }
        Command::Rules { .. } => ExitCode::SUCCESS,
        Command::Migrate => migrate(&config),
        Command::Run => run(config),
    }
}

fn rules_command(action: &RulesCommand) -> ExitCode {
    let load = |dir: &Path| match RuleSet::load_dir(dir) {
        Ok(set) => Ok(set),
        Err(e) => {
            eprintln!("{}: {} problem(s):", dir.display(), e.0.len());
            for p in &e.0 {
                eprintln!("  - {p}");
            }
            Err(ExitCode::FAILURE)
        }
    };
    match action {
        RulesCommand::Check { dir } => match load(dir) {
            Ok(set) => {
                println!(
                    "{}: {} rules valid (version {})",
                    dir.display(),
                    set.rules.len(),
                    set.version
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        RulesCommand::Test { dir } => {
            let set = match load(dir) {
                Ok(set) => set,
                Err(code) => return code,
            };
            let (mut passed, mut failed, mut untested) = (0, 0, 0);
            for report in testcase::run_all(&set) {
                if report.cases.is_empty() {
                    untested += 1;
                    println!("{:<32} (no tests)", report.rule);
                }
                for (name, want, got) in &report.cases {
                    if want == got {
                        passed += 1;
                        println!("{:<32} ok    {name}", report.rule);
                    } else {
                        failed += 1;
                        println!(
                            "{:<32} FAIL  {name}: expected {want} firing(s), got {got}",
                            report.rule
                        );
                    }
                }
            }
            println!(
                "rules: {} · tests: {passed} passed, {failed} failed · rules without tests: {untested}",
                set.rules.len()
            );
            if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        RulesCommand::Export { dir } => {
            if let Err(e) = std::fs::create_dir_all(dir) {
                eprintln!("{}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
            for (name, text) in aggregator::rules::SHIPPED {
                if let Err(e) = std::fs::write(dir.join(name), text) {
                    eprintln!("{}: {e}", dir.join(name).display());
                    return ExitCode::FAILURE;
                }
            }
            println!("wrote {} rule files to {}", aggregator::rules::SHIPPED.len(), dir.display());
            ExitCode::SUCCESS
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(
        |e| {
            eprintln!("auditflow-aggregator: cannot start the runtime: {e}");
            ExitCode::FAILURE
        },
    )
}

fn migrate(config: &Config) -> ExitCode {
    if config.services.database_url.is_empty() {
        eprintln!("auditflow-aggregator: migrate needs DATABASE_URL (PostgreSQL)");
        return ExitCode::from(wire::config::EXIT_CONFIG as u8);
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(aggregator::store::postgres::PgStore::connect(
        &config.services.database_url,
        Vec::new(),
    )) {
        Ok(_) => {
            println!("migrations applied");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("auditflow-aggregator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> ExitCode {
    init_tracing();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        let signals = cancel.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received, stopping");
            signals.cancel();
        });
        aggregator::run(config, cancel).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "aggregator failed");
            eprintln!("auditflow-aggregator: {e:#}");
            ExitCode::FAILURE
        }
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

/// Logs as JSON when stderr is not a terminal, human-readable otherwise; `RUST_LOG` filters.
fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,lapin=warn,sqlx=warn,rumqttd=warn")
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().init();
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
        eprintln!("auditflow-aggregator: invalid configuration {from}:");
        for e in errors {
            eprintln!("  - {e}");
        }
        ExitCode::from(wire::config::EXIT_CONFIG as u8)
    })
}
