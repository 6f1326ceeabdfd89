//! `auditflow-broker`: parses arguments, loads the configuration and runs the broker.

use std::process::ExitCode;

use broker::config::{Config, DEFAULT_TOML};

const BINARY: &str = "auditflow-broker";

fn main() -> ExitCode {
    let about = "The AuditFlow broker: MQTT for agents, bridged into RabbitMQ.";
    runtime::cli::plain_main::<Config>(BINARY, about, env!("CARGO_PKG_VERSION"), DEFAULT_TOML, run)
}

// rumqttd's threads cannot be stopped; leaving main ends them.
fn run(config: Config) -> ExitCode {
    runtime::process::init_tracing("info,lapin=warn,rumqttd=warn");
    runtime::process::run_service(BINARY, runtime::process::Threads::Workers(2), |cancel| {
        broker::run(config, cancel)
    })
}
