//! Parser tests on the real OpenSSH auth log sample (tests/fixtures at the workspace root) and on hand-written
//! sudo, su, PAM-only, dpkg and Kubernetes audit lines. The expected counts for the fixture
//! were established by reading the file: 212 `Failed password` + 4 `Failed none` lines, two
//! `message repeated 5 times: [ Failed password … ]` lines (10 more attempts), every PAM
//! `authentication failure` followed by a `Failed` line of the same process (so none counts
//! on its own), and one `Accepted password`.

use std::io::Cursor;

use agent::parse::{Format, Summary, parse_reader};
use wire::{Event, EventKind, Outcome};

const FIXTURE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/openssh-auth-sample.log");

fn parse(format: Format, text: &str) -> (Vec<Event>, Summary) {
    let mut events = Vec::new();
    let summary =
        parse_reader(format, 2025, Cursor::new(text.as_bytes().to_vec()), |e| events.push(e))
            .unwrap();
    (events, summary)
}

fn login(e: &Event) -> (&str, Option<String>, Option<&str>, Outcome, Option<&str>) {
    match &e.kind {
        EventKind::Login { user, src_ip, method, outcome, reason } => (
            user.as_str(),
            src_ip.map(|i| i.to_string()),
            method.as_deref(),
            *outcome,
            reason.as_deref(),
        ),
        other => panic!("not a login: {other:?}"),
    }
}

#[test]
fn openssh_fixture_counts_every_attempt_once() {
    let text = std::fs::read_to_string(FIXTURE).expect("the shared fixture is beside the project");
    let (events, summary) = parse(Format::Auth, &text);
    assert_eq!(summary.lines, 1000);
    assert_eq!(summary.events.get("login/failure"), Some(&226));
    assert_eq!(summary.events.get("login/success"), Some(&1));
    assert_eq!(summary.events.len(), 2, "{:?}", summary.events);
    assert_eq!(events.len(), 227);
    assert_eq!(summary.unparsed_lines, 0, "every line of the sample is understood");

    // Spot checks, in file order.
    assert_eq!(
        login(&events[0]),
        (
            "webmaster",
            Some("173.234.31.186".into()),
            Some("password"),
            Outcome::Failure,
            Some("invalid user")
        )
    );
    let accepted: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Login { outcome: Outcome::Success, .. }))
        .collect();
    assert_eq!(
        login(accepted[0]),
        ("fztu", Some("119.137.62.142".into()), Some("password"), Outcome::Success, None)
    );
    assert_eq!(accepted[0].ts, wire::Timestamp::parse_rfc3339("2025-12-10T09:32:20Z").unwrap());
    let none: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Login { method: Some(m), .. } if m == "none"))
        .collect();
    assert_eq!(none.len(), 4);
    assert_eq!(login(none[0]).0, "0");
    // pid 24227: one Failed line plus "message repeated 5 times" = 6 attempts on root.
    let root_from_oman = events
        .iter()
        .filter(|e| login(e).0 == "root" && login(e).1.as_deref() == Some("5.36.59.76"))
        .count();
    assert_eq!(root_from_oman, 6);
    // A user name with a leading space is kept as sshd logged it.
    assert!(events.iter().any(|e| login(e).0 == " 0101"));
}

#[test]
fn pam_only_systems_count_pam_failures_as_attempts() {
    let text = "\
Mar  1 10:00:00 pi sshd[100]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.9  user=alice
Mar  1 10:00:03 pi sshd[100]: PAM 2 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.9  user=alice
Mar  1 10:00:04 pi sshd[100]: Connection closed by 203.0.113.9 port 4242 [preauth]
Mar  1 10:01:00 pi sshd[200]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=bad.example.net
Mar  1 10:01:01 pi sshd[200]: Failed password for bob from 198.51.100.7 port 1 ssh2
Mar  1 10:01:02 pi sshd[300]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=198.51.100.8 user=carol
";
    let (events, summary) = parse(Format::Auth, text);
    assert_eq!(
        summary.events.get("login/failure"),
        Some(&5),
        "3 PAM-only + 1 Failed + 1 unresolved at the end"
    );
    let alice: Vec<_> = events.iter().filter(|e| login(e).0 == "alice").collect();
    assert_eq!(alice.len(), 3);
    assert_eq!(login(alice[0]).1.as_deref(), Some("203.0.113.9"));
    assert_eq!(login(alice[0]).2, Some("pam"));
    // The PAM line of process 200 enriched its Failed line instead of counting twice.
    let bob: Vec<_> = events.iter().filter(|e| login(e).0 == "bob").collect();
    assert_eq!(bob.len(), 1);
    assert!(
        bob[0].attrs.iter().any(|(k, v)| k == "rhost" && v.as_str() == Some("bad.example.net"))
    );
    assert!(events.iter().any(|e| login(e).0 == "carol"));
}

#[test]
fn sudo_and_su_lines() {
    let text = "\
2025-06-01T12:00:00+00:00 pi sudo: alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/apt-get update ; echo hi
2025-06-01T12:00:01+00:00 pi sudo: mallory : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/tmp ; USER=root ; COMMAND=/bin/sh
2025-06-01T12:00:02+00:00 pi sudo: eve : user NOT in sudoers ; TTY=pts/2 ; PWD=/home/eve ; USER=root ; COMMAND=/usr/bin/id
2025-06-01T12:00:03+00:00 pi sudo: pam_unix(sudo:session): session opened for user root(uid=0) by alice(uid=1000)
<86>1 2025-06-01T12:00:04Z pi su 900 - - (to root) bob on pts/3
<86>1 2025-06-01T12:00:05Z pi su 901 - - FAILED SU (to postgres) bob on pts/3
2025-06-01T12:00:06+00:00 pi sshd[5]: Accepted publickey for deploy from 2001:db8::1 port 50000 ssh2: ED25519 SHA256:abc
2025-06-01T12:00:07+00:00 pi sshd[6]: something new and strange
2025-06-01T12:00:08+00:00 pi cron[7]: (root) CMD (true)
total garbage line
";
    let (events, summary) = parse(Format::Auth, text);
    assert_eq!(summary.events.get("privilege/success"), Some(&2));
    assert_eq!(summary.events.get("privilege/failure"), Some(&3));
    assert_eq!(summary.events.get("login/success"), Some(&1));
    assert_eq!(summary.unparsed_lines, 3);
    match &events[0].kind {
        EventKind::Privilege { user, target_user, command, tty, cwd, outcome } => {
            assert_eq!(user, "alice");
            assert_eq!(target_user, "root");
            assert_eq!(command.as_deref(), Some("/usr/bin/apt-get update ; echo hi"));
            assert_eq!(tty.as_deref(), Some("pts/0"));
            assert_eq!(cwd.as_deref(), Some("/home/alice"));
            assert_eq!(*outcome, Outcome::Success);
        }
        other => panic!("{other:?}"),
    }
    match &events[4].kind {
        EventKind::Privilege { user, target_user, outcome, .. } => {
            assert_eq!(
                (user.as_str(), target_user.as_str(), *outcome),
                ("bob", "postgres", Outcome::Failure)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        login(&events[5]),
        ("deploy", Some("2001:db8::1".into()), Some("publickey"), Outcome::Success, None)
    );
}

#[test]
fn kubernetes_audit_lines() {
    let text = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"8d1f4c36-2f6e-4b7a-9a55-0b8c6d7e9f10","stage":"RequestReceived","requestURI":"/api/v1/namespaces/kube-system/secrets/k3s-token","verb":"get","user":{"username":"system:serviceaccount:default:snoop","groups":["system:serviceaccounts"]},"sourceIPs":["10.42.0.7"],"objectRef":{"resource":"secrets","namespace":"kube-system","name":"k3s-token","apiVersion":"v1"},"requestReceivedTimestamp":"2025-06-01T12:00:00.000000Z","stageTimestamp":"2025-06-01T12:00:00.000000Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"8d1f4c36-2f6e-4b7a-9a55-0b8c6d7e9f10","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/kube-system/secrets/k3s-token","verb":"get","user":{"username":"system:serviceaccount:default:snoop","groups":["system:serviceaccounts"]},"sourceIPs":["10.42.0.7"],"userAgent":"kubectl/v1.31.0","objectRef":{"resource":"secrets","namespace":"kube-system","name":"k3s-token","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":403},"requestReceivedTimestamp":"2025-06-01T12:00:00.000000Z","stageTimestamp":"2025-06-01T12:00:00.004512Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"11111111-2f6e-4b7a-9a55-0b8c6d7e9f10","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/apps/pods/web-0/exec?command=sh","verb":"create","user":{"username":"alice","groups":["system:authenticated"]},"sourceIPs":["192.168.1.5"],"objectRef":{"resource":"pods","subresource":"exec","namespace":"apps","name":"web-0"},"responseStatus":{"code":101},"stageTimestamp":"2025-06-01T12:01:00Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","stage":"ResponseComplete","requestURI":"/healthz","verb":"get","user":{"username":"system:anonymous"},"sourceIPs":["127.0.0.1"],"responseStatus":{"code":200},"stageTimestamp":"2025-06-01T12:02:00Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1"
[1,2,3]
"#;
    let (events, summary) = parse(Format::K8sAudit, text);
    assert_eq!(events.len(), 3, "one event per completed request");
    assert_eq!(summary.known_lines, 1, "the RequestReceived stage");
    assert_eq!(summary.unparsed_lines, 2);
    match &events[0].kind {
        EventKind::K8sAudit { verb, resource, namespace, name, user, code, source_ips, .. } => {
            assert_eq!((verb.as_str(), resource.as_str(), *code), ("get", "secrets", 403));
            assert_eq!(
                (namespace.as_deref(), name.as_deref()),
                (Some("kube-system"), Some("k3s-token"))
            );
            assert_eq!(user, "system:serviceaccount:default:snoop");
            assert_eq!(source_ips, &["10.42.0.7".to_owned()]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(events[0].severity, wire::Severity::Warning);
    assert!(events[0].id.is_some(), "auditID is kept as the correlation id");
    assert!(
        matches!(&events[1].kind, EventKind::K8sAudit { subresource: Some(s), .. } if s == "exec")
    );
    assert!(
        matches!(&events[2].kind, EventKind::K8sAudit { resource, .. } if resource == "/healthz")
    );
}

#[test]
fn binary_garbage_never_panics() {
    let mut bytes: Vec<u8> = (0..=255u8).cycle().take(20_000).collect();
    bytes.extend_from_slice(
        b"\nDec 10 06:55:46 LabSZ sshd[1]: Failed password for x from 1.2.3.4 port 1 ssh2\n",
    );
    for format in [Format::Auth, Format::Dpkg, Format::K8sAudit] {
        let summary = parse_reader(format, 2025, Cursor::new(bytes.clone()), |_| {}).unwrap();
        assert!(summary.lines > 0);
    }
}

/// A fixture of `tests/fixtures/auth/` (written for this project, one per family of systems;
/// the families and their counts are the table in docs/agent.md).
fn auth_fixture(name: &str) -> (Vec<Event>, Summary) {
    let path = format!("{}/../tests/fixtures/auth/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    parse(Format::Auth, &text)
}

/// `label count` pairs, as `auditflow-agent parse` prints them.
fn counts(summary: &Summary) -> Vec<(&str, u64)> {
    summary.events.iter().map(|(k, v)| (k.as_str(), *v)).collect()
}

/// A fixture, its line count and the counts it must give.
type Case = (&'static str, usize, &'static [(&'static str, u64)]);

#[test]
fn every_family_of_auth_logs_parses_completely() {
    let cases: [Case; 7] = [
        ("openssh-9.8-password-bruteforce.log", 30, &[("login/failure", 7), ("login/success", 1)]),
        ("openssh-keyonly-bruteforce.log", 15, &[("login/failure", 7), ("login/success", 1)]),
        ("openssh-10-sshd-auth.log", 7, &[("login/failure", 2), ("login/success", 1)]),
        (
            "redhat-pam-module-tags.log",
            10,
            &[("login/failure", 4), ("privilege/failure", 1), ("privilege/success", 1)],
        ),
        (
            "privilege-console-sessions.log",
            17,
            &[
                ("generic/session", 2),
                ("login/failure", 1),
                ("login/success", 1),
                ("privilege/failure", 3),
                ("privilege/success", 2),
            ],
        ),
        (
            "account-changes.log",
            22,
            &[
                ("account/added_to_group", 2),
                ("account/created", 1),
                ("account/deleted", 1),
                ("account/group_created", 2),
                ("account/group_deleted", 1),
                ("account/modified", 2),
                ("account/password_changed", 2),
                ("account/removed_from_group", 1),
            ],
        ),
        ("timestamp-forms-and-forged-repeat.log", 4, &[("login/failure", 1003)]),
    ];
    for (name, lines, want) in cases {
        let (_, summary) = auth_fixture(name);
        assert_eq!(summary.lines, lines as u64, "{name}");
        assert_eq!(summary.unparsed_lines, 0, "{name}: {:?}", summary.unparsed_samples);
        assert_eq!(counts(&summary), want, "{name}");
    }
}

/// The same attack against a host with passwords and a key-only host: seven connections from
/// one address, each trying one account (root three times, then admin, pi, ubuntu, test). Both
/// logs must give the same failed attempts, so that ANLY-SEC-001 (three for one user and host
/// within 60 s) and AUTH-SPRAY-001 (five users from one address) fire on both.
#[test]
fn key_only_and_password_brute_force_count_alike() {
    let failures = |name: &str| {
        let (events, _) = auth_fixture(name);
        let mut v: Vec<(String, Option<String>)> = events
            .iter()
            .map(login)
            .filter(|(_, _, _, outcome, _)| *outcome == Outcome::Failure)
            .map(|(user, ip, ..)| (user.to_owned(), ip))
            .collect();
        v.sort();
        v
    };
    let password = failures("openssh-9.8-password-bruteforce.log");
    let key_only = failures("openssh-keyonly-bruteforce.log");
    assert_eq!(password, key_only);
    let ip = Some("203.0.113.7".to_owned());
    assert_eq!(password.iter().filter(|(u, i)| u == "root" && *i == ip).count(), 3);
    let users: std::collections::BTreeSet<&str> =
        password.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(users.len(), 5, "{users:?}");
}

/// Anyone may write `message repeated 4294967295 times: [ … ]` with `logger`: the expansion is
/// capped, the line's whole count stays on the last event, and no other forged count (PAM's
/// `N more authentication failures`) expands further either.
#[test]
fn a_forged_repeat_count_is_capped_and_stays_visible() {
    let (events, _) = auth_fixture("timestamp-forms-and-forged-repeat.log");
    let repeated: Vec<&Event> =
        events.iter().filter(|e| e.attrs.iter().any(|(k, _)| k == "repeated")).collect();
    assert_eq!(repeated.len(), 1);
    let attr = |k: &str| repeated[0].attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(attr("repeated"), Some(wire::Value::Int(i64::from(u32::MAX))));
    assert_eq!(
        attr("not_expanded"),
        Some(wire::Value::Int(i64::from(u32::MAX - agent::parse::auth::MAX_REPEAT)))
    );
    let forged = "Jun  1 00:00:00 h sshd[9]: PAM 4294967295 more authentication failures; \
                  logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.9 user=root\n\
                  Jun  1 00:00:01 h sshd[9]: message repeated 4294967295 times: [ PAM 4294967295 \
                  more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= \
                  rhost=203.0.113.9 user=root]\n";
    let (events, summary) = parse(Format::Auth, forged);
    assert_eq!(summary.unparsed_lines, 0);
    assert_eq!(events.len(), 2 * agent::parse::auth::MAX_REPEAT as usize);
}

/// Timestamps: RFC 5424, ISO 8601 with a colon-less offset, classic syslog and RFC 3339 with a
/// fraction all land on the same clock.
#[test]
fn every_timestamp_form_gives_the_same_clock() {
    let (events, _) = auth_fixture("timestamp-forms-and-forged-repeat.log");
    let secs: Vec<i64> = events[..4].iter().map(|e| e.ts.as_nanos() / 1_000_000_000).collect();
    let base =
        wire::Timestamp::parse_rfc3339("2025-08-20T11:00:00Z").unwrap().as_nanos() / 1_000_000_000;
    // The classic line carries no zone and is read as UTC (13:00:02 there).
    assert_eq!(secs, vec![base, base + 1, base + 2 * 3600 + 2, base + 3]);
}
