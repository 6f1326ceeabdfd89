//! The command-line contract, for `auditflow-aggregator`.

const BIN: &str = env!("CARGO_BIN_EXE_auditflow-aggregator");
const BAD_CONFIG: &str =
    "data_dir = \"\"\n[http]\nlisten = \"x\"\nport = 1\n[services]\nredis_url = \"http://r\"\n";
const PROBLEMS: &[&str] =
    &["http.port: unknown key", "http.listen", "data_dir", "services.redis_url"];

include!("../../tests/cli_contract.rs");
