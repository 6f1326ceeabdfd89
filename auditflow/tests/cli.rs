//! The command-line contract, for `auditflow`.

const BIN: &str = env!("CARGO_BIN_EXE_auditflow");
const BAD_CONFIG: &str =
    "data_dir = \"\"\n[http]\nlisten = \"x\"\nport = 1\n[embedded]\nmqtt_listen = \"y\"\n";
const PROBLEMS: &[&str] = &["http.port: unknown key", "http.listen", "data_dir", "mqtt_listen"];

include!("../../tests/cli_contract.rs");

/// A configured service is refused with a pointer to the cluster binary, never ignored.
#[test]
fn a_configured_service_is_refused_not_ignored() {
    let out = command()
        .env("AMQP_URL", "amqp://127.0.0.1:1/%2f")
        .env("DATABASE_URL", "postgres://127.0.0.1:1/x")
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("auditflow-aggregator"), "{err}");
}
