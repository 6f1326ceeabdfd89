//! The command-line contract, for `auditflow-aggregator`.

const BIN: &str = env!("CARGO_BIN_EXE_auditflow-aggregator");
const BAD_CONFIG: &str =
    "data_dir = \"\"\n[http]\nlisten = \"x\"\nport = 1\n[services]\nredis_url = \"http://r\"\n";
const PROBLEMS: &[&str] =
    &["http.port: unknown key", "http.listen", "data_dir", "services.redis_url"];

include!("../../tests/cli_contract.rs");

/// Without services the cluster binary says so and names the one-process binary.
#[test]
fn without_services_it_points_to_auditflow() {
    let out = command().arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("`auditflow`") && err.contains("AMQP_URL"), "{err}");
}
