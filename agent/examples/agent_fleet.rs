//! Many simulated agents as tasks of one process, for the end-to-end benchmark at fleet size
//! (`scripts/bench.sh e2e` with `E2E_FLEET=1`, aggregator/examples/bench_e2e.rs): a thousand
//! agent processes would measure this machine's scheduler, not the broker and the aggregator.
//! Each task is a whole [`agent::run`] with its own configuration file, so its own node name,
//! MQTT connection and credential, spool directory and HTTP port, exactly as a node runs it;
//! they share only the process and its runtime.
//!
//! `agent_fleet DIR`: one agent per `*.toml` in DIR, until every one has finished (finite
//! sources: a synthetic limit, a scenario) or the process is interrupted. Exits non-zero when
//! any agent failed, after the others finished.

use std::process::ExitCode;

use agent::config::Config;
use runtime::process::{Threads, init_tracing, run_service};

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: agent_fleet DIR (one agent per *.toml in DIR)");
        return ExitCode::from(64);
    };
    let mut configs = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("agent_fleet: cannot read {dir}: {e}");
            return ExitCode::from(66);
        }
    };
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let env = |k: &str| std::env::var(k).ok();
    for path in &paths {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("agent_fleet: cannot read {}: {e}", path.display());
                return ExitCode::from(66);
            }
        };
        match runtime::config::parse::<Config>(&text, &env) {
            Ok(c) => configs.push(c),
            Err(errors) => {
                eprintln!(
                    "agent_fleet: invalid configuration {}: {}",
                    path.display(),
                    errors.join("; ")
                );
                return runtime::config::exit_config();
            }
        }
    }
    if configs.is_empty() {
        eprintln!("agent_fleet: no *.toml in {dir}");
        return ExitCode::from(64);
    }
    init_tracing("info,lapin=warn");
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    run_service("agent_fleet", Threads::Workers(workers), |cancel| async move {
        let mut tasks = tokio::task::JoinSet::new();
        for config in configs {
            let node = agent::node_name(&config);
            // A token of its own: an agent with finite sources cancels its token when it has
            // finished, which must not stop the others.
            let cancel = cancel.child_token();
            tasks.spawn(async move { (node, agent::run(config, cancel).await) });
        }
        let mut failed = 0usize;
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((_, Ok(()))) => {}
                Ok((node, Err(e))) => {
                    failed += 1;
                    tracing::error!(node, error = format!("{e:#}"), "agent failed");
                }
                Err(e) => {
                    failed += 1;
                    tracing::error!(error = %e, "agent task panicked");
                }
            }
        }
        anyhow::ensure!(failed == 0, "{failed} agents failed");
        Ok(())
    })
}
