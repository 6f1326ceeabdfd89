//! The command-line contract, for `auditflow-broker`.

const BIN: &str = env!("CARGO_BIN_EXE_auditflow-broker");
const BAD_CONFIG: &str =
    "[mqtt]\nlisten = \"x\"\nmax_inflight = \"many\"\n[amqp]\nurl = \"http://x\"\n";
const PROBLEMS: &[&str] =
    &["mqtt.listen", "mqtt.max_inflight: expected integer, found string", "amqp.url"];

include!("../../tests/cli_contract.rs");
