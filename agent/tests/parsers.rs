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
