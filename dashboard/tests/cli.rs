//! The command-line contract, for `auditflow-dashboard`.

const BIN: &str = env!("CARGO_BIN_EXE_auditflow-dashboard");
const BAD_CONFIG: &str = "listen = 8080\napi_url = \"ftp://x\"\ntheme = \"dark\"\n";
const PROBLEMS: &[&str] =
    &["listen: expected string, found integer", "api_url", "theme: unknown key"];

include!("../../tests/cli_contract.rs");
