//! A binary's life: logging set up, a tokio runtime, the service run until it returns or a
//! signal (SIGINT, SIGTERM) cancels it, and the outcome as an exit status.

use std::future::Future;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

/// The runtime a binary asks for.
#[derive(Clone, Copy, Debug)]
pub enum Threads {
    /// One thread: the agent, whose work fits in a fraction of a core and whose memory must
    /// stay small on a Pi.
    Current,
    /// A multi-threaded runtime with this many workers.
    Workers(usize),
}

/// Logs as JSON when stderr is not a terminal, human-readable otherwise. `RUST_LOG` filters;
/// `default_filter` applies when it is unset or invalid.
pub fn init_tracing(default_filter: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().init();
    }
}

/// Waits for SIGINT or SIGTERM (SIGINT alone where SIGTERM cannot be watched).
pub async fn wait_for_signal() {
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

/// Builds the runtime a binary asks for; on failure prints why and returns the exit status.
pub fn runtime(binary: &str, threads: Threads) -> Result<tokio::runtime::Runtime, ExitCode> {
    let built = match threads {
        Threads::Current => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        Threads::Workers(n) => {
            tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build()
        }
    };
    built.map_err(|e| {
        eprintln!("{binary}: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

/// Runs a service: `service` gets a token that a signal cancels, and must finish its in-flight
/// work and return once it is cancelled. An error is logged and also printed to stderr (a
/// service that fails at start-up may fail before anyone reads its logs); the exit status is
/// 0 for `Ok`, 1 for an error.
pub fn run_service<F, Fut>(binary: &str, threads: Threads, service: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let rt = match runtime(binary, threads) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(async {
        let cancel = CancellationToken::new();
        let signals = cancel.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received, stopping");
            signals.cancel();
        });
        service(cancel).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "{binary} failed");
            eprintln!("{binary}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
