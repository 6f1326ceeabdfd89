//! `auditflow-aggregator`: parses arguments, loads the configuration and runs the aggregator.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use aggregator::config::{Config, DEFAULT_TOML};
use aggregator::rule_tests;
use aggregator::rules::RuleSet;

const BINARY: &str = "auditflow-aggregator";
const THREADS: runtime::process::Threads = runtime::process::Threads::Workers(2);

/// The AuditFlow aggregator, the cluster service: consumes from RabbitMQ, keeps detection state
/// in Redis and alerts in PostgreSQL. `auditflow` runs the whole system in one process.
#[derive(Debug, Parser)]
#[command(name = "auditflow-aggregator", version, about)]
struct Cli {
    #[command(flatten)]
    args: runtime::cli::ConfigArgs,
    /// Address of the API; overrides `http.listen`.
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Address of /metrics; overrides `http.metrics_listen`.
    #[arg(long, global = true, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the aggregator (the default); needs AMQP_URL, DATABASE_URL and REDIS_URL.
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
    /// Copy the legacy notification service's alert history (its `alerts` table) into the
    /// store (PostgreSQL, DATABASE_URL) as resolved alerts that no channel announces; rows
    /// already copied are skipped. Exits 1 on an error or when rows were refused.
    ImportLegacy {
        /// The legacy notification service's database, postgres://… (leave the password out
        /// and set PGPASSWORD: arguments are visible to other users of the machine).
        #[arg(long, value_name = "URL")]
        database_url: String,
        /// The legacy table, NAME or SCHEMA.NAME; by default the first `alerts` on the legacy
        /// URL's search path outside AuditFlow's own schema.
        #[arg(long, value_name = "TABLE")]
        table: Option<String>,
    },
    /// Work with notification channels.
    Notify {
        #[command(subcommand)]
        action: NotifyCommand,
    },
}

#[derive(Debug, Subcommand)]
enum NotifyCommand {
    /// Send a test notification through the configured channel NAME; exit 1 with the
    /// receiver's error when it fails.
    Test {
        /// The channel's `name` in [[notify.channels]].
        name: String,
    },
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
    /// Replay the event archive through the rules in DIR with the real detection code,
    /// writing nothing, and report per rule: firings, distinct groups, the first examples,
    /// and the firings of the rules in force (`rules_dir`, or the shipped pack).
    Backtest {
        /// The candidate rule directory.
        dir: PathBuf,
        /// How far back, like 7d or 12h (at most the archive's retention holds).
        #[arg(long, default_value = "7d", value_name = "AGE")]
        since: String,
        /// The store: postgres://… (default: DATABASE_URL) or sqlite:PATH (embedded mode's
        /// data_dir/auditflow.db).
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

// The C library's allocator, on purpose. mimalloc makes the single-threaded detection
// benchmark much faster, but in the end-to-end benchmark (`scripts/bench.sh e2e`), where events
// are decoded on one thread and freed on another, it raised the aggregator's peak RSS from
// 40-65 MB to 100-139 MB, and this aggregator may run on a Pi (docs/benchmarks.md).
fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.args.print_default_config || matches!(cli.command, Some(Command::PrintDefaultConfig)) {
        print!("{DEFAULT_TOML}");
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Rules { action }) = &cli.command
        && !matches!(action, RulesCommand::Backtest { .. })
    {
        return rules_command(action);
    }
    let mut config = match runtime::config::load::<Config>(BINARY, cli.args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Command-line flags win over the file (typed like the config, nothing new to check).
    if let Some(a) = cli.listen {
        config.http.listen = Some(a);
    }
    if let Some(a) = cli.metrics_listen {
        config.http.metrics_listen = Some(a);
    }
    match cli.command.unwrap_or(Command::Run) {
        Command::PrintDefaultConfig => ExitCode::SUCCESS,
        Command::CheckConfig => {
            println!("configuration is valid");
            ExitCode::SUCCESS
        }
        Command::Rules { action: RulesCommand::Backtest { dir, since, database_url, json } } => {
            backtest(&config, &dir, &since, database_url.as_deref(), json)
        }
        Command::Rules { .. } => ExitCode::SUCCESS,
        Command::Migrate => migrate(&config),
        Command::ImportLegacy { database_url, table } => {
            import_legacy(&config, &database_url, table.as_deref())
        }
        Command::Notify { action: NotifyCommand::Test { name } } => notify_test(&config, &name),
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
            for report in rule_tests::run_all(&set) {
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
        // Needs the configuration: main runs it.
        RulesCommand::Backtest { .. } => ExitCode::SUCCESS,
    }
}

fn backtest(config: &Config, dir: &Path, since: &str, url: Option<&str>, json: bool) -> ExitCode {
    let candidate = match RuleSet::load_dir(dir) {
        Ok(set) => set,
        Err(e) => {
            eprintln!("{}: {} problem(s):", dir.display(), e.0.len());
            for p in &e.0 {
                eprintln!("  - {p}");
            }
            return ExitCode::FAILURE;
        }
    };
    let Some(since) = aggregator::rules::parse_duration(since) else {
        eprintln!("{BINARY}: --since: `{since}` is not a duration like 7d, 12h or 30m");
        return runtime::config::exit_config();
    };
    let url = match url {
        Some(u) => u.to_owned(),
        None if !config.services.database_url.is_empty() => config.services.database_url.clone(),
        None => {
            eprintln!("{BINARY}: rules backtest needs --database-url or DATABASE_URL");
            return runtime::config::exit_config();
        }
    };
    runtime::process::init_tracing("warn,sqlx=warn");
    let rt = match runtime::process::runtime(BINARY, THREADS) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(async {
        let in_force = aggregator::load_rules(config)?.0;
        let store = if url.starts_with("postgres") {
            aggregator::store::SharedStore::new(std::sync::Arc::new(
                aggregator::store::postgres::PgStore::connect(
                    &url,
                    &config.services.database_schema,
                    Vec::new(),
                )
                .await?,
            ))
        } else {
            aggregator::store::open(&url, Vec::new()).await?
        };
        let to = aggregator::store::now_ms();
        let from = to.saturating_sub(i64::try_from(since.as_millis()).unwrap_or(i64::MAX));
        aggregator::backtest::run(
            &store,
            &candidate,
            &in_force,
            config.detection.allowed_lateness,
            from,
            to,
            u64::MAX,
        )
        .await
    });
    match result {
        Ok(report) if json => {
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", aggregator::backtest::render(&report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{BINARY}: rules backtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What a one-shot command on the PostgreSQL store needs: DATABASE_URL, logging (the move of
/// an earlier layout into the schema is logged) and a runtime.
fn postgres_command(config: &Config, what: &str) -> Result<tokio::runtime::Runtime, ExitCode> {
    if config.services.database_url.is_empty() {
        eprintln!("{BINARY}: {what} needs DATABASE_URL (PostgreSQL)");
        return Err(runtime::config::exit_config());
    }
    runtime::process::init_tracing("info,sqlx=warn");
    runtime::process::runtime(BINARY, THREADS)
}

fn migrate(config: &Config) -> ExitCode {
    let rt = match postgres_command(config, "migrate") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(aggregator::store::postgres::PgStore::connect(
        &config.services.database_url,
        &config.services.database_schema,
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

fn import_legacy(config: &Config, legacy_url: &str, table: Option<&str>) -> ExitCode {
    use aggregator::legacy_import::{self, Summary};
    use aggregator::store::legacy::LegacyTable;
    use aggregator::store::postgres::PgStore;

    let rt = match postgres_command(config, "import-legacy") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let s = &config.services;
    let mut summary = Summary::default();
    let result = rt.block_on(async {
        let source = LegacyTable::open(legacy_url, table, &s.database_schema).await?;
        let rows = source.count().await?;
        eprintln!("import-legacy: {rows} rows in {}", source.name);
        let store = PgStore::connect(&s.database_url, &s.database_schema, Vec::new()).await?;
        let mut last_report = std::time::Instant::now();
        legacy_import::run(
            &source,
            &store,
            &mut summary,
            &mut |id, why| eprintln!("import-legacy: refused {id}: {why}"),
            &mut |so_far| {
                if last_report.elapsed() >= std::time::Duration::from_secs(10) {
                    last_report = std::time::Instant::now();
                    eprintln!("import-legacy: {so_far} (of {rows})");
                }
            },
        )
        .await
    });
    println!("import-legacy: {summary}");
    match result {
        Ok(()) if summary.refused == 0 => ExitCode::SUCCESS,
        Ok(()) => {
            eprintln!("{BINARY}: import-legacy: {} rows refused (listed above)", summary.refused);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{BINARY}: import-legacy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn notify_test(config: &Config, name: &str) -> ExitCode {
    let rt = match runtime::process::runtime(BINARY, THREADS) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(aggregator::notify::send_test(config, name)) {
        Ok(()) => {
            println!("test notification sent through `{name}`");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{BINARY}: notify test {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> ExitCode {
    if config.is_embedded() {
        eprintln!("{BINARY}: {}", aggregator::NEEDS_SERVICES);
        return runtime::config::exit_config();
    }
    runtime::process::init_tracing("info,lapin=warn,sqlx=warn");
    runtime::process::run_service(BINARY, THREADS, |cancel| aggregator::run(config, cancel))
}
