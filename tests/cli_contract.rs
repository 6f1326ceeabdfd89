// The command-line contract every AuditFlow binary keeps, driven from outside as a user
// would. Included by each app crate's `tests/cli.rs`, which defines `BIN` (the binary),
// `BAD_CONFIG` (a file with several problems) and `PROBLEMS` (lines each problem must name).
// A file, not a crate: the four crates share it without depending on each other.

use std::process::{Command, Output};


/// The binary, without the service URLs and secrets the test suite itself runs with (they
/// would override the values under test).
fn command() -> Command {
    let mut c = Command::new(BIN);
    for var in ["AMQP_URL", "DATABASE_URL", "REDIS_URL", "NODE_NAME"] {
        c.env_remove(var);
    }
    for (var, _) in std::env::vars().filter(|(k, _)| k.starts_with("AUDITFLOW_")) {
        c.env_remove(var);
    }
    c
}

fn run(args: &[&str]) -> Output {
    command().args(args).output().expect("start the binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version_and_help() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains(env!("CARGO_PKG_VERSION")), "{}", text(&out.stdout));
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for word in ["print-default-config", "check-config", "--config"] {
        assert!(help.contains(word), "--help does not mention {word}: {help}");
    }
}

#[test]
fn printed_defaults_are_a_valid_documented_config() {
    for args in [&["print-default-config"][..], &["--print-default-config"][..]] {
        let out = run(args);
        assert!(out.status.success());
        let defaults = text(&out.stdout);
        assert!(defaults.lines().filter(|l| l.starts_with('#')).count() >= 3, "documented");
        let dir = std::env::temp_dir().join(format!("auditflow-cli-{}-{}", std::process::id(), args.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("defaults.toml");
        std::fs::write(&path, &defaults).unwrap();
        // The defaults plus the environment a deployment sets must check clean.
        let out = command()
            .args(["--config", path.to_str().unwrap(), "check-config"])
            .env("AMQP_URL", "amqp://u:p@127.0.0.1:5672/%2f")
            .env("DATABASE_URL", "postgres://u@127.0.0.1/db")
            .env("REDIS_URL", "redis://127.0.0.1:6379/0")
            .env("AUDITFLOW_MQTT_PASSWORD", "secret")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_bad_config_exits_64_listing_every_problem() {
    let dir = std::env::temp_dir().join(format!("auditflow-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, BAD_CONFIG).unwrap();
    let out = run(&["--config", path.to_str().unwrap(), "check-config"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    for problem in PROBLEMS {
        assert!(stderr.contains(problem), "`{problem}` is not reported:\n{stderr}");
    }
    let out = run(&["--config", dir.join("missing.toml").to_str().unwrap(), "check-config"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("cannot read the file"));
    std::fs::write(&path, "this is = = not toml").unwrap();
    let out = run(&["--config", path.to_str().unwrap(), "check-config"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("syntax"));
    std::fs::remove_dir_all(&dir).unwrap();
}
