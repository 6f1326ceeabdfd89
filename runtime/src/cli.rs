//! The command-line contract every binary keeps (`tests/cli_contract.rs` drives it from
//! outside): `--config PATH`, `--print-default-config` and the subcommands `run` (the default),
//! `print-default-config` and `check-config`. Binaries with commands of their own flatten
//! [`ConfigArgs`] into their parser and add their subcommands; the others use [`Command`] and
//! [`main`] as they are.

use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::Validate;

/// The options every binary takes.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Configuration file (TOML). Without one the documented defaults apply.
    #[arg(long, short, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print the documented default configuration and exit.
    #[arg(long)]
    pub print_default_config: bool,
}

/// The subcommands of a binary that has no others.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Run,
    /// Print the documented default configuration.
    PrintDefaultConfig,
    /// Check the configuration and exit: 0 when valid, 64 with every problem listed when not.
    CheckConfig,
}

/// The `main` of a binary with only the common commands: prints the defaults, or loads and
/// checks the configuration (exit 64 listing every problem), then checks it or runs.
pub fn main<T>(
    binary: &str,
    default_toml: &str,
    args: &ConfigArgs,
    command: Option<Command>,
    run: impl FnOnce(T) -> ExitCode,
) -> ExitCode
where
    T: DeserializeOwned + Serialize + Default + Validate,
{
    if args.print_default_config || matches!(command, Some(Command::PrintDefaultConfig)) {
        print!("{default_toml}");
        return ExitCode::SUCCESS;
    }
    let config = match crate::config::load::<T>(binary, args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match command.unwrap_or(Command::Run) {
        Command::PrintDefaultConfig => ExitCode::SUCCESS,
        Command::CheckConfig => {
            println!("configuration is valid");
            ExitCode::SUCCESS
        }
        Command::Run => run(config),
    }
}

/// The command line of a binary with only the common options and subcommands.
#[derive(Debug, clap::Parser)]
pub struct Plain {
    /// The common options.
    #[command(flatten)]
    pub args: ConfigArgs,
    /// The subcommand (`run` when none).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The whole `main` of a binary with only the common options and subcommands: parses the
/// command line as `binary` (with `about` and `version` in its help), then runs [`main`].
pub fn plain_main<T>(
    binary: &'static str,
    about: &'static str,
    version: &'static str,
    default_toml: &str,
    run: impl FnOnce(T) -> ExitCode,
) -> ExitCode
where
    T: DeserializeOwned + Serialize + Default + Validate,
{
    use clap::{CommandFactory, FromArgMatches};
    let matches =
        Plain::command().name(binary).bin_name(binary).about(about).version(version).get_matches();
    let cli = Plain::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    main(binary, default_toml, &cli.args, cli.command, run)
}
