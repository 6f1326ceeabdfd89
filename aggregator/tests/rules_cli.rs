//! `auditflow-aggregator rules check|test|export` as a user runs them.

use std::process::Command;

fn agg(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_auditflow-aggregator")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn export_check_and_test_the_shipped_pack() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert_eq!(agg(&["rules", "export", d]).0, 0);
    let (code, out, _) = agg(&["rules", "check", d]);
    assert_eq!(code, 0, "{out}");
    // Every rule of the shipped pack was exported.
    let shipped: usize = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .map(|text| text.lines().filter(|l| l.trim() == "[[rule]]").count())
        .sum();
    assert!(shipped >= 14, "{shipped}");
    assert!(out.contains(&format!("{shipped} rules valid")), "{out}");
    let (code, out, _) = agg(&["rules", "test", d]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 failed") && out.contains("rules without tests: 0"), "{out}");
}

#[test]
fn broken_rules_and_failing_tests_exit_non_zero_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        "[[rule]]\nid = \"A\"\nname = \"a\"\nkind = \"threshold\"\nseverity = \"loud\"\n\
         when = { field = \"usr\", eq = \"x\" }\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("b.toml"), "not toml at all [").unwrap();
    let (code, _, err) = agg(&["rules", "check", d]);
    assert_eq!(code, 1);
    for needle in
        ["a.toml: rule `A`: `severity`", "unknown field `usr`", "`count` is required", "b.toml:"]
    {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }

    std::fs::remove_file(dir.path().join("b.toml")).unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        "[[rule]]\nid = \"A\"\nname = \"a\"\nkind = \"match\"\nseverity = \"info\"\n\
         when = { field = \"user\", eq = \"x\" }\n\
         [[rule.test]]\nname = \"wrong expectation\"\nevents = [{ kind = \"login\", user = \"x\" }]\nexpect = 2\n",
    )
    .unwrap();
    let (code, out, _) = agg(&["rules", "test", d]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  wrong expectation: expected 2 firing(s), got 1"), "{out}");
}

/// A failed or successful ssh login for `user` on `node`, `secs` seconds before now.
fn login(user: &str, ok: bool, secs_ago: i64) -> wire::model::Event {
    use wire::model::{Event, EventKind, Outcome, Severity, Source, Timestamp};
    let now = Timestamp::now().as_nanos() / 1_000_000_000;
    Event::new(
        Timestamp::from_unix(now - secs_ago, 0),
        Source::AuthLog,
        Severity::Info,
        EventKind::Login {
            user: user.into(),
            src_ip: Some("203.0.113.9".parse().unwrap()),
            method: Some("password".into()),
            outcome: if ok { Outcome::Success } else { Outcome::Failure },
            reason: None,
        },
    )
}

/// `rules backtest` replays an archive the test fills (SQLite, as embedded mode keeps it)
/// through a candidate directory and compares with the rules in force (the shipped pack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtest_reports_the_firings_a_candidate_would_have_had() {
    use aggregator::archive::{Key, Pending, rows};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("auditflow.db");
    let url = format!("sqlite:{}", db.display());
    let store = aggregator::store::open(&url, Vec::new()).await.unwrap();
    // alice: two bursts of three failures on pi-a (the shipped ANLY-SEC-001 fires twice); bob:
    // two failures on pi-b (it does not fire); a success that no rule here counts.
    let mut events: Vec<(&str, wire::model::Event)> = Vec::new();
    for start in [3600, 1800] {
        for k in 0..3 {
            events.push(("pi-a", login("alice", false, start - k * 10)));
        }
    }
    events.push(("pi-b", login("bob", false, 900)));
    events.push(("pi-b", login("bob", false, 890)));
    events.push(("pi-b", login("bob", true, 880)));
    let pending: Vec<Pending<'_>> = events
        .iter()
        .enumerate()
        .map(|(i, (node, event))| Pending {
            node,
            key: Key::Seq { epoch: 1, seq: i as u64 },
            event,
        })
        .collect();
    store.commit_batch_at(&[], &rows(pending), aggregator::store::now_ms()).await.unwrap();
    // An event older than --since is not replayed.
    let old = [login("alice", false, 3 * 86_400)];
    let row =
        rows(vec![Pending { node: "pi-a", key: Key::Seq { epoch: 0, seq: 0 }, event: &old[0] }]);
    store.commit_batch_at(&[], &row, aggregator::store::now_ms()).await.unwrap();
    drop(store);

    // The candidate: ANLY-SEC-001 at two failures instead of three, and a rule of its own.
    let rules = dir.path().join("candidate");
    std::fs::create_dir(&rules).unwrap();
    let legacy = aggregator::rules::SHIPPED.iter().find(|(n, _)| *n == "legacy.toml").unwrap().1;
    let changed = legacy.replacen("count = 3\nwindow = \"60s\"", "count = 2\nwindow = \"60s\"", 1);
    assert_ne!(changed, legacy, "the shipped ANLY-SEC-001 changed its shape");
    // Its inline tests expect three; a backtest runs no tests.
    std::fs::write(rules.join("legacy.toml"), changed).unwrap();
    std::fs::write(
        rules.join("mine.toml"),
        "[[rule]]\nid = \"MINE-001\"\nname = \"Any login\"\ndescription = \"d\"\nkind = \"match\"\n\
         severity = \"info\"\nmode = \"shadow\"\ngroup_by = [\"user\"]\n\
         when = { field = \"kind\", eq = \"login\" }\n",
    )
    .unwrap();
    let config = dir.path().join("aggregator.toml");
    std::fs::write(&config, "rules_dir = \"\"\n").unwrap();
    let backtest = |extra: &[&str]| {
        let (config, rules) = (config.to_str().unwrap(), rules.to_str().unwrap());
        let args = ["--config", config, "rules", "backtest", rules, "--since", "2d"];
        agg(&[&args[..], &["--database-url", &url], extra].concat())
    };
    let (code, out, err) = backtest(&["--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["events"], 9, "{report}");
    let rule = |id: &str| {
        report["rules"].as_array().unwrap().iter().find(|r| r["rule_id"] == id).unwrap().clone()
    };
    let anly = rule("ANLY-SEC-001");
    // Two failures fire, and a firing empties the window: once per burst of alice's (its third
    // failure starts a new window), once for bob.
    assert_eq!((anly["firings"].as_u64(), anly["groups"].as_u64()), (Some(3), Some(2)), "{anly}");
    assert_eq!(anly["in_force"], 2, "the shipped rule fired twice");
    assert_eq!(anly["examples"].as_array().unwrap().len(), 3);
    assert_eq!(anly["examples"][0]["node"], "pi-a");
    let mine = rule("MINE-001");
    assert_eq!((mine["firings"].as_u64(), mine["groups"].as_u64()), (Some(9), Some(2)), "{mine}");
    assert_eq!(mine["mode"], "shadow");
    assert!(mine["in_force"].is_null(), "not a rule in force");
    assert!(
        report["only_in_force"].as_array().unwrap().iter().any(|r| r[0] == "AUTH-SPRAY-001"),
        "{report}"
    );

    // The text form ends with its summary line.
    let (code, out, _) = backtest(&[]);
    assert_eq!(code, 0);
    assert!(out.contains("ANLY-SEC-001") && out.contains("in force: 2 (+1)"), "{out}");
    let last = out.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("backtest: rules=") && last.contains(" events=9 "), "{out}");
    let (code, _, err) = agg(&[
        "rules",
        "backtest",
        rules.to_str().unwrap(),
        "--since",
        "soon",
        "--database-url",
        &url,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("--since"), "{err}");
}
