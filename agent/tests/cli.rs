//! The command-line contract, for `auditflow-agent`.

const BIN: &str = env!("CARGO_BIN_EXE_auditflow-agent");
const BAD_CONFIG: &str = "bogus = 1\n[http]\nlisten = \"nowhere\"\n[batch]\nmax_events = 0\n";
const PROBLEMS: &[&str] = &["bogus: unknown key", "http.listen", "batch.max_events"];

include!("../../tests/cli_contract.rs");
