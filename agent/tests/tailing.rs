//! The auth-log source end to end: the agent process tails a log that grows, is rotated by
//! rename (with a late write to the old file), grows while the agent is killed with SIGKILL,
//! and is then truncated in place (copytruncate). Every failed login written to the log must
//! arrive in RabbitMQ at least once, none missing. Needs `AMQP_URL` (scripts/test.sh).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use wire::EventKind;

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
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 300 {
        assert!(
            Instant::now() < deadline,
            "missing after 30 s: {:?}",
            (0..300).map(|i| format!("u{i}")).filter(|u| !seen.contains_key(u)).collect::<Vec<_>>()
        );
        match channel.basic_get(queue.as_str().into(), BasicGetOptions::default()).await {
            Ok(Some(m)) => {
                let envelope: wire::Envelope = wire::decode(&m.delivery.data).expect("valid frame");
                for e in &envelope.events {
                    if let EventKind::Login { user, .. } = &e.kind {
                        *seen.entry(user.clone()).or_default() += 1;
                    }
                }
                m.delivery.ack(BasicAckOptions::default()).await.unwrap();
            }
            // Not declared yet, or empty for now.
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let repeated = seen.values().filter(|n| **n > 1).count();
    eprintln!("tailing: 300 of 300 failed logins arrived; {repeated} more than once (the SIGKILL)");
    assert!(seen.keys().all(|u| u.starts_with('u')), "{seen:?}");
    let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    let _ = channel
        .queue_delete(format!("{queue}.hb").as_str().into(), QueueDeleteOptions::default())
        .await;
}
