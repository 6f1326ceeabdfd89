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
