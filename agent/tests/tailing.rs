//! The file sources end to end, with the agent as a process delivering to RabbitMQ.
//!
//! * The auth log: it grows, is rotated by rename (with a late write to the old file), grows
//!   while the agent is killed with SIGKILL, and is then truncated in place (copytruncate).
//!   Every failed login written to the log must arrive at least once, none missing.
//! * The journal: a real journal file (written by systemd-journal-remote) followed live and
//!   from its saved cursor after a SIGKILL; auth and kernel messages arrive, none missing.
//! * Watched files: changes seen by inotify while the agent runs, and changes made while it
//!   was killed, reported at its next start.
//!
//! Needs `AMQP_URL` (scripts/test.sh).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use wire::{EventKind, FileOp};

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(config: &Path) -> Agent {
    Agent(
        Command::new(env!("CARGO_BIN_EXE_auditflow-agent"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start auditflow-agent"),
    )
}

/// Appends failed logins for users `u{from}..u{to}` (one sshd process each).
fn failures(path: &Path, from: u32, to: u32) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    for i in from..to {
        writeln!(
            f,
            "Nov 26 10:{:02}:{:02} pi-tail sshd[{}]: Failed password for invalid user u{i} from 203.0.113.9 port 50022 ssh2",
            i / 60 % 60,
            i % 60,
            10_000 + i
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_logged_failure_arrives_through_rotation_sigkill_and_truncation() {
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| {
        panic!("AMQP_URL is not set: RabbitMQ is required for this test; run scripts/test.sh")
    });
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    let queue = format!("auditflow.test.tail.{}", std::process::id());
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = \"pi-tail\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [spool]\ndir = \"{}\"\nfsync = false\n[batch]\nmax_age_ms = 100\n\
             [transport]\nkind = \"amqp\"\namqp_url = \"{url}\"\namqp_queue = \"{queue}\"\n\
             amqp_heartbeat_queue = \"{queue}.hb\"\n\
             [sources.auth]\nenabled = true\npath = \"{}\"\nstart_at = \"beginning\"\n",
            dir.path().join("spool").display(),
            log.display()
        ),
    )
    .unwrap();

    failures(&log, 0, 100); // history, read because start_at = "beginning"
    let mut agent = start_agent(&config);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Rotation by rename, a late write to the old file, then the new file.
    failures(&log, 100, 150);
    let rotated = dir.path().join("auth.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    failures(&rotated, 150, 170);
    failures(&log, 170, 220);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Killed; the log grows meanwhile; restarted from the saved position.
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    failures(&log, 220, 260);
    let _agent = start_agent(&config);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // copytruncate.
    std::fs::copy(&log, dir.path().join("auth.log.2")).unwrap();
    std::fs::OpenOptions::new().write(true).truncate(true).open(&log).unwrap();
    failures(&log, 260, 300);

    // Every user u0..u299 arrives at least once.
    let conn = Connection::connect(&url, ConnectionProperties::default()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let add = |seen: &mut BTreeMap<String, u32>, e: &wire::Event| {
        if let EventKind::Login { user, .. } = &e.kind {
            *seen.entry(user.clone()).or_default() += 1;
        }
    };
    // On a timeout the panic shows who arrived; the users are u0..u299.
    collect_until(&channel, &queue, &mut seen, add, |s| s.len() >= 300).await;
    let repeated = seen.values().filter(|n| **n > 1).count();
    eprintln!("tailing: 300 of 300 failed logins arrived; {repeated} more than once (the SIGKILL)");
    assert!(seen.keys().all(|u| u.starts_with('u')), "{seen:?}");
    let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    let _ = channel
        .queue_delete(format!("{queue}.hb").as_str().into(), QueueDeleteOptions::default())
        .await;
}

/// Takes envelopes off `queue` until `done` says the events seen so far are enough, or
/// panics after 30 s with what was seen. A queue not declared yet counts as empty.
async fn collect_until<T: std::fmt::Debug>(
    channel: &lapin::Channel,
    queue: &str,
    seen: &mut T,
    mut add: impl FnMut(&mut T, &wire::Event),
    done: impl Fn(&T) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(seen) {
        assert!(Instant::now() < deadline, "after 30 s only {seen:?}");
        match channel.basic_get(queue.into(), BasicGetOptions::default()).await {
            Ok(Some(m)) => {
                let envelope: wire::Envelope = wire::decode(&m.delivery.data).expect("valid frame");
                for e in &envelope.events {
                    add(seen, e);
                }
                m.delivery.ack(BasicAckOptions::default()).await.unwrap();
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_file_changes_arrive_live_and_after_a_sigkill() {
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| {
        panic!("AMQP_URL is not set: RabbitMQ is required for this test; run scripts/test.sh")
    });
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    let sudoers_d = etc.join("sudoers.d");
    std::fs::create_dir_all(&sudoers_d).unwrap();
    let passwd = etc.join("passwd");
    std::fs::write(&passwd, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\n").unwrap(); // not watched
    let queue = format!("auditflow.test.files.{}", std::process::id());
    let config = dir.path().join("agent.toml");
    // An hour between sweeps: what arrives while the agent runs was seen by inotify.
    std::fs::write(
        &config,
        format!(
            "node_id = \"pi-files\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [spool]\ndir = \"{}\"\nfsync = false\n[batch]\nmax_age_ms = 100\n\
             [transport]\nkind = \"amqp\"\namqp_url = \"{url}\"\namqp_queue = \"{queue}\"\n\
             amqp_heartbeat_queue = \"{queue}.hb\"\n\
             [sources.files]\nenabled = true\npaths = [\"{}\", \"{}\"]\nsweep_interval_s = 3600\n",
            dir.path().join("spool").display(),
            passwd.display(),
            sudoers_d.display(),
        ),
    )
    .unwrap();
    let conn = Connection::connect(&url, ConnectionProperties::default()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    type Seen = BTreeMap<(String, String, String), u32>;
    let add = |seen: &mut Seen, e: &wire::Event| {
        if let EventKind::FileChange { path, op, .. } = &e.kind {
            let name = Path::new(path).file_name().unwrap().to_string_lossy().into_owned();
            let by =
                e.attrs.iter().find(|(k, _)| k == "detected_by").map(|(_, v)| format!("{v:?}"));
            *seen.entry((name, format!("{op:?}"), by.unwrap_or_default())).or_default() += 1;
        }
    };

    // First start: the baseline, nothing reported. Then a passwd replaced by rename (the way
    // vipw does it), a new sudoers rule, and a change to an unwatched file.
    let mut agent = start_agent(&config);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let tmp = etc.join("passwd.new");
    std::fs::write(&tmp, "root:x:0:0:root:/root:/bin/bash\nmallory:x:0:0::/:/bin/sh\n").unwrap();
    std::fs::rename(&tmp, &passwd).unwrap();
    let rule = sudoers_d.join("90-mallory");
    std::fs::write(&rule, "mallory ALL=(ALL) NOPASSWD: ALL\n").unwrap();
    std::fs::write(etc.join("group"), "root:x:0:mallory\n").unwrap();
    let mut seen = Seen::new();
    collect_until(&channel, &queue, &mut seen, add, |s| s.len() >= 2).await;

    // Killed; meanwhile the rule's mode changes and passwd is removed; the next start reports
    // both from the saved state. (The state is saved right after the events are spooled; the
    // pause keeps a kill from landing between the two, which would repeat a report.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rule, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(&passwd).unwrap();
    let _agent = start_agent(&config);
    collect_until(&channel, &queue, &mut seen, add, |s| s.len() >= 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    collect_until(&channel, &queue, &mut seen, add, |_| true).await;

    let by = |how: &str| format!("{:?}", wire::Value::Str(how.into()));
    let mut expected: Vec<(String, String, String)> = [
        ("90-mallory", FileOp::Created, "inotify"),
        ("90-mallory", FileOp::Attrib, "start"),
        ("passwd", FileOp::Modified, "inotify"),
        ("passwd", FileOp::Deleted, "start"),
    ]
    .into_iter()
    .map(|(name, op, how)| (name.to_owned(), format!("{op:?}"), by(how)))
    .collect();
    expected.sort();
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), expected, "{seen:?}");
    assert!(seen.values().all(|n| *n == 1), "each change reported once: {seen:?}");
    let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    let _ = channel
        .queue_delete(format!("{queue}.hb").as_str().into(), QueueDeleteOptions::default())
        .await;
}

/// design.md §4.1: a source whose log changes format under it (here sshd lines, then the same
/// daemon writing JSON) reports itself blind with the counts and samples of what it did not
/// understand, once per window, and says nothing while it understands its lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_whose_format_changes_reports_itself_blind() {
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| {
        panic!("AMQP_URL is not set: RabbitMQ is required for this test; run scripts/test.sh")
    });
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    let queue = format!("auditflow.test.blind.{}", std::process::id());
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = \"pi-blind\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [spool]\ndir = \"{}\"\nfsync = false\n[batch]\nmax_age_ms = 100\n\
             [transport]\nkind = \"amqp\"\namqp_url = \"{url}\"\namqp_queue = \"{queue}\"\n\
             amqp_heartbeat_queue = \"{queue}.hb\"\n\
             [sources.auth]\nenabled = true\npath = \"{}\"\nstart_at = \"beginning\"\n\
             [sources.blind]\ncheck_interval_s = 2\nmin_lines = 10\nmin_understood = 0.5\n",
            dir.path().join("spool").display(),
            log.display()
        ),
    )
    .unwrap();
    failures(&log, 0, 30);
    let _agent = start_agent(&config);

    let conn = Connection::connect(&url, ConnectionProperties::default()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    // (logins, blind reports) seen.
    type Seen = (u32, Vec<Vec<(String, wire::Value)>>);
    let add = |seen: &mut Seen, e: &wire::Event| match &e.kind {
        EventKind::Login { .. } => seen.0 += 1,
        EventKind::Generic { event_type, fields } if event_type == "source_blind" => {
            seen.1.push(fields.clone());
        }
        _ => {}
    };
    let mut seen: Seen = (0, Vec::new());
    collect_until(&channel, &queue, &mut seen, add, |s| s.0 >= 30).await;
    // Two windows pass with every line understood: no report.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    collect_until(&channel, &queue, &mut seen, add, |_| true).await;
    assert!(seen.1.is_empty(), "a source that understands its lines reported itself: {:?}", seen.1);

    // The daemon's format changes.
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    for i in 0..40 {
        writeln!(
            f,
            r#"{{"ts":"2026-12-06T08:00:{i:02}Z","prog":"sshd","msg":"auth failed","user":"u{i}"}}"#
        )
        .unwrap();
    }
    drop(f);
    collect_until(&channel, &queue, &mut seen, add, |s| !s.1.is_empty()).await;
    let report = &seen.1[0];
    let get = |k: &str| report.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("source"), Some(wire::Value::Str("auth".into())), "{report:?}");
    assert_eq!(get("unparsed"), Some(wire::Value::Int(40)), "{report:?}");
    assert_eq!(get("understood_pct"), Some(wire::Value::Int(0)), "{report:?}");
    assert!(
        matches!(get("sample_3"), Some(wire::Value::Str(s)) if s.contains(r#""user":"u39""#)),
        "the newest line not understood is a sample: {report:?}"
    );
    let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    let _ = channel
        .queue_delete(format!("{queue}.hb").as_str().into(), QueueDeleteOptions::default())
        .await;
}

/// systemd-journal-remote, which writes genuine journal files from export-format input.
fn journal_remote() -> std::path::PathBuf {
    ["/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "systemd-journal-remote is missing: the journal test needs it to write real journal \
                 files (Debian package systemd-journal-remote; scripts/test.sh installs it)"
            )
        })
}

/// Appends entries to the journal file `journal`: failed logins of `j{from}..j{to}` from
/// sshd-session (as root), a login forged by a user with `logger -t sshd`, an unrelated
/// program's line, and (with `oom`) a kernel OOM kill.
fn journal_entries(journal: &Path, from: u32, to: u32, oom: bool) {
    let mut export = Vec::new();
    let mut entry = |i: u32, fields: &[(&str, String)]| {
        let us = 1_765_000_000_000_000u64 + u64::from(i) * 1_000_000;
        export.extend(
            format!(
                "__REALTIME_TIMESTAMP={us}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=pi-journal\n",
                u64::from(i) * 1000 + 1
            )
            .into_bytes(),
        );
        for (k, v) in fields {
            export.extend(format!("{k}={v}\n").into_bytes());
        }
        export.push(b'\n');
    };
    for i in from..to {
        entry(
            i,
            &[
                ("_TRANSPORT", "syslog".into()),
                ("_UID", "0".into()),
                ("SYSLOG_IDENTIFIER", "sshd-session".into()),
                ("_PID", (20_000 + i).to_string()),
                (
                    "MESSAGE",
                    format!(
                        "Failed password for invalid user j{i} from 203.0.113.7 port {} ssh2",
                        40_000 + i
                    ),
                ),
            ],
        );
        // A local user's forgery (`logger -t sshd`): journald records the sender's uid.
        entry(
            i,
            &[
                ("_TRANSPORT", "syslog".into()),
                ("_UID", "1000".into()),
                ("SYSLOG_IDENTIFIER", "sshd".into()),
                ("_PID", (30_000 + i).to_string()),
                (
                    "MESSAGE",
                    format!("Accepted password for forged{i} from 198.51.100.1 port 22 ssh2"),
                ),
            ],
        );
        entry(
            i,
            &[
                ("_TRANSPORT", "syslog".into()),
                ("SYSLOG_IDENTIFIER", "CRON".into()),
                ("MESSAGE", "pam_unix(cron:session): session closed for user root".into()),
            ],
        );
    }
    if oom {
        entry(
            to,
            &[
                ("_TRANSPORT", "kernel".into()),
                ("SYSLOG_IDENTIFIER", "kernel".into()),
                ("MESSAGE", "Out of memory: Killed process 4321 (java) total-vm:812345kB, anon-rss:234567kB".into()),
            ],
        );
    }
    let input = journal.with_extension(format!("{from}.export"));
    std::fs::write(&input, export).unwrap();
    let out = Command::new(journal_remote())
        .arg(format!("--output={}", journal.display()))
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-journal-remote: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_source_follows_a_real_journal_through_a_sigkill() {
    journal_through_a_sigkill("journalctl").await;
}

/// The same journal read by the agent itself (the container image's reader: no journalctl).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_files_reader_follows_a_real_journal_through_a_sigkill() {
    journal_through_a_sigkill("files").await;
}

async fn journal_through_a_sigkill(reader: &str) {
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| {
        panic!("AMQP_URL is not set: RabbitMQ is required for this test; run scripts/test.sh")
    });
    let dir = tempfile::tempdir().unwrap();
    let journals = dir.path().join("journal");
    std::fs::create_dir(&journals).unwrap();
    let journal = journals.join("remote.journal");
    let queue = format!("auditflow.test.journal.{reader}.{}", std::process::id());
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = \"pi-journal\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [spool]\ndir = \"{}\"\nfsync = false\n[batch]\nmax_age_ms = 100\n\
             [transport]\nkind = \"amqp\"\namqp_url = \"{url}\"\namqp_queue = \"{queue}\"\n\
             amqp_heartbeat_queue = \"{queue}.hb\"\n\
             [sources.journal]\nenabled = true\nreader = \"{reader}\"\ndirectory = \"{}\"\n\
             start_at = \"beginning\"\n",
            dir.path().join("spool").display(),
            journals.display()
        ),
    )
    .unwrap();

    journal_entries(&journal, 0, 50, true); // history, read because start_at = "beginning"
    let mut agent = start_agent(&config);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    journal_entries(&journal, 50, 100, false); // followed live
    tokio::time::sleep(Duration::from_millis(2000)).await;
    // Killed; the journal grows meanwhile; restarted after the saved cursor.
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    journal_entries(&journal, 100, 150, false);
    let _agent = start_agent(&config);

    let conn = Connection::connect(&url, ConnectionProperties::default()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let add = |seen: &mut BTreeMap<String, u32>, e: &wire::Event| match &e.kind {
        EventKind::Login { user, .. } => *seen.entry(user.clone()).or_default() += 1,
        EventKind::Generic { event_type, .. } => {
            assert_eq!(e.source, wire::Source::Kernel);
            *seen.entry(event_type.clone()).or_default() += 1;
        }
        _ => {}
    };
    collect_until(&channel, &queue, &mut seen, add, |s| s.len() >= 151).await;
    assert_eq!(seen.get("kernel_oom_kill"), Some(&1), "{seen:?}");
    assert!(
        !seen.keys().any(|k| k.starts_with("forged")),
        "a non-root sender's login got through: {seen:?}"
    );
    for i in 0..150 {
        assert!(seen.contains_key(&format!("j{i}")), "j{i} missing: {seen:?}");
    }
    let repeated = seen.values().filter(|n| **n > 1).count();
    eprintln!(
        "journal ({reader}): 150 of 150 failed logins and the OOM kill arrived; {repeated} more than once"
    );
    let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    let _ = channel
        .queue_delete(format!("{queue}.hb").as_str().into(), QueueDeleteOptions::default())
        .await;
}

/// `auditflow-agent parse --source journal`: a real journal's entries counted by use, the
/// events on stdout, as the journal source would make them.
#[test]
fn parse_reads_a_journal_directory_with_the_sources_rules() {
    let dir = tempfile::tempdir().unwrap();
    journal_entries(&dir.path().join("remote.journal"), 0, 20, true);
    let out = Command::new(env!("CARGO_BIN_EXE_auditflow-agent"))
        .args(["parse", "--source", "journal", "--file"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Per index: a root sshd failure (parsed), a user's forgery (untrusted), cron (skipped);
    // and the kernel's OOM kill (parsed).
    assert!(
        stderr.contains("entries 61 (parsed 21: events from 21, known 0, unparsed 0; skipped 20, untrusted 20, unreadable 0)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("login/failure 20") && stderr.contains("generic/kernel_oom_kill 1"),
        "{stderr}"
    );
    let events = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(events, 21, "one JSON line per event");
    let missing = Command::new(env!("CARGO_BIN_EXE_auditflow-agent"))
        .args(["parse", "--source", "journal", "--file", "/nonexistent/journal"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(66), "{}", String::from_utf8_lossy(&missing.stderr));
}
