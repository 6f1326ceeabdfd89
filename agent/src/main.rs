//! `auditflow-agent`: parses arguments, loads the configuration and runs the agent.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use agent::config::{Config, DEFAULT_TOML};

/// The AuditFlow node agent.
#[derive(Debug, Parser)]
#[command(name = "auditflow-agent", version, about)]
struct Cli {
    #[command(flatten)]
    args: runtime::cli::ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Print the documented default configuration.
    PrintDefaultConfig,
    /// Check the configuration and exit: 0 when valid, 64 with every problem listed when not.
    CheckConfig,
    /// Read a log file the way the agent's sources do: events as JSON lines on stdout, a count
    /// per kind and outcome on stderr.
    Parse {
        /// The log format: `auth`, `dpkg` or `k8s-audit`; or `journal`, with `--file` a
        /// journal directory (its files read as the journal source's files reader does).
        #[arg(long, value_name = "FORMAT")]
        source: String,
        /// The file to read (`-` for standard input), or the journal directory.
        #[arg(long, value_name = "PATH")]
        file: PathBuf,
        /// Year of classic syslog timestamps (which carry none). Default: the year of the
        /// file's modification time, else the current year.
        #[arg(long, value_name = "YYYY")]
        year: Option<i32>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Parse { source, file, year }) = &cli.command {
        return parse_command(source, file, *year);
    }
    if cli.args.print_default_config || matches!(cli.command, Some(Command::PrintDefaultConfig)) {
        print!("{DEFAULT_TOML}");
        return ExitCode::SUCCESS;
    }
    let config =
        match runtime::config::load::<Config>("auditflow-agent", cli.args.config.as_deref()) {
            Ok(c) => c,
            Err(code) => return code,
        };
    match cli.command.unwrap_or(Command::Run) {
        Command::PrintDefaultConfig | Command::Parse { .. } => ExitCode::SUCCESS,
        Command::CheckConfig => {
            println!("configuration is valid");
            ExitCode::SUCCESS
        }
        Command::Run => run(config),
    }
}

/// `auditflow-agent parse`: exit 0 when the file was read (whatever its lines held), 64 for a
/// bad format name, 66 when the file cannot be read.
fn parse_command(source: &str, file: &Path, year: Option<i32>) -> ExitCode {
    if source == "journal" {
        return parse_journal(file);
    }
    let Some(format) = agent::parse::Format::parse(source) else {
        eprintln!(
            "auditflow-agent: --source must be auth, dpkg, k8s-audit or journal, not `{source}`"
        );
        return ExitCode::from(64);
    };
    let stdin = file.as_os_str() == "-";
    let (year, year_from) = match year {
        Some(y) => (y, "--year"),
        None => {
            let mtime =
                if stdin { None } else { std::fs::metadata(file).and_then(|m| m.modified()).ok() };
            match mtime {
                Some(t) => (time::OffsetDateTime::from(t).year(), "the file's modification time"),
                None => (time::OffsetDateTime::now_utc().year(), "the current year"),
            }
        }
    };
    let input: Box<dyn std::io::BufRead> = if stdin {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(file) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => {
                eprintln!("auditflow-agent: cannot read {}: {e}", file.display());
                return ExitCode::from(66);
            }
        }
    };
    let mut out = JsonLines::new();
    let summary = agent::parse::parse_reader(format, year, input, |event| out.write(&event));
    if let Err(code) = out.finish() {
        return code;
    }
    match summary {
        Ok(s) => {
            if format == agent::parse::Format::Auth {
                eprintln!("year {year} (from {year_from})");
            }
            for line in &s.unparsed_samples {
                eprintln!("unparsed: {line}");
            }
            for (label, n) in &s.events {
                eprintln!("{label} {n}");
            }
            eprintln!(
                "lines {} (events from {}, known {}, unparsed {})",
                s.lines, s.event_lines, s.known_lines, s.unparsed_lines
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("auditflow-agent: reading {} failed: {e}", file.display());
            ExitCode::from(74)
        }
    }
}

/// One runtime thread is enough for the agent (100k events/s use a fifth of a core) and keeps
/// its memory small; file writes go to the blocking pool.
fn run(config: Config) -> ExitCode {
    runtime::process::init_tracing("info,lapin=warn");
    runtime::process::run_service("auditflow-agent", runtime::process::Threads::Current, |cancel| {
        agent::run(config, cancel)
    })
}

/// `auditflow-agent parse --source journal --file DIR`: every entry of the journal files in
/// `DIR`, once; 66 when they cannot be read.
fn parse_journal(dir: &Path) -> ExitCode {
    let mut out = JsonLines::new();
    let started = std::time::Instant::now();
    let summary = agent::journal::parse_directory(dir, |event| out.write(&event));
    let secs = started.elapsed().as_secs_f64();
    if let Err(code) = out.finish() {
        return code;
    }
    match summary {
        Ok(s) => {
            for line in &s.parsed.unparsed_samples {
                eprintln!("unparsed: {line}");
            }
            for (label, n) in &s.parsed.events {
                eprintln!("{label} {n}");
            }
            let p = &s.parsed;
            eprintln!(
                "entries {} (parsed {}: events from {}, known {}, unparsed {}; skipped {}, untrusted {}, unreadable {}) in {secs:.2} s",
                s.entries,
                p.lines,
                p.event_lines,
                p.known_lines,
                p.unparsed_lines,
                s.skipped,
                s.untrusted,
                s.unreadable
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("auditflow-agent: {e}");
            ExitCode::from(66)
        }
    }
}

/// `parse`'s output: each event as a legacy JSON line on stdout, with ids derived from this
/// host's name; the first write error is kept for [`JsonLines::finish`].
struct JsonLines {
    node: String,
    stdout: std::io::BufWriter<std::io::StdoutLock<'static>>,
    seq: u64,
    error: Option<std::io::Error>,
}

impl JsonLines {
    fn new() -> Self {
        let node = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_or_else(|_| "localhost".to_owned(), |h| h.trim().to_owned());
        Self {
            node,
            stdout: std::io::BufWriter::new(std::io::stdout().lock()),
            seq: 0,
            error: None,
        }
    }

    fn write(&mut self, event: &wire::Event) {
        use std::io::Write;
        let id = wire::legacy::event_uuid(&self.node, 0, self.seq);
        self.seq += 1;
        let json = wire::legacy::to_legacy(event, &self.node, id);
        if self.error.is_none() {
            self.error = writeln!(self.stdout, "{json}").err();
        }
    }

    /// Flushes; exit 74 when a write failed.
    fn finish(mut self) -> Result<(), ExitCode> {
        use std::io::Write;
        let flushed = self.stdout.flush();
        match self.error.or(flushed.err()) {
            Some(e) => {
                eprintln!("auditflow-agent: cannot write the events: {e}");
                Err(ExitCode::from(74))
            }
            None => Ok(()),
        }
    }
}
