//! Embedded mode end to end: the `auditflow` binary (no services) runs its broker,
//! the demo agent (over MQTT), detection, SQLite and the API in one process. Demo alerts show
//! up in the API, survive a restart, and the process stops cleanly on SIGTERM.

mod support;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, request};

struct Embedded {
    child: Child,
    http: u16,
    metrics: u16,
    mqtt: u16,
}

/// A failed assertion must not leave the process running.
impl Drop for Embedded {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path) -> Embedded {
    start_with(dir, &[])
}

/// Like [`start`], with more arguments before `run` (e.g. `--no-demo`, `--config FILE`).
fn start_with(dir: &std::path::Path, args: &[&str]) -> Embedded {
    let (http, metrics, mqtt) = (free_port(), free_port(), free_port());
    let child = Command::new(support::workspace_bin("auditflow"))
        .args(args)
        .args(["--data-dir", dir.join("data").to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{http}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .args(["--mqtt-listen", &format!("127.0.0.1:{mqtt}")])
        .arg("run")
        .env_remove("AMQP_URL")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("AUDITFLOW_API_TOKENS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("embedded.log"))
                .unwrap(),
        )
        .spawn()
        .expect("start auditflow");
    let mut e = Embedded { child, http, metrics, mqtt };
    let start = Instant::now();
    while request_status(http, "/readyz") != Some(200) {
        if let Ok(Some(status)) = e.child.try_wait() {
            let log = std::fs::read_to_string(dir.join("embedded.log")).unwrap_or_default();
            panic!("embedded mode exited: {status}\n{log}");
        }
        assert!(start.elapsed() < Duration::from_secs(30), "not ready within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    e
}

fn request_status(port: u16, path: &str) -> Option<u16> {
    std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    Some(request(port, "GET", path, None, None, &[]).status)
}

fn alerts(port: u16, token: &str) -> Vec<serde_json::Value> {
    let r = request(port, "GET", "/api/v1/alerts?limit=500", Some(token), None, &[]);
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["alerts"].as_array().unwrap().clone()
}

/// Sends SIGTERM and returns how long the process took to exit.
fn stop(mut e: Embedded) -> (std::process::ExitStatus, Duration, String) {
    let t = Instant::now();
    Command::new("kill").args(["-TERM", &e.child.id().to_string()]).status().unwrap();
    loop {
        if let Some(status) = e.child.try_wait().unwrap() {
            let mut out = String::new();
            e.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            return (status, t.elapsed(), out);
        }
        assert!(t.elapsed() < Duration::from_secs(30), "did not stop within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn one_command_shows_demo_alerts_that_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path());
    let token = std::fs::read_to_string(dir.path().join("data/admin.token")).unwrap();
    let token = token.trim();
    assert_eq!(token.len(), 43);

    // Without the token: 401. With it, demo alerts within 30 s of start.
    assert_eq!(request(first.http, "GET", "/api/v1/alerts", None, None, &[]).status, 401);
    let t = Instant::now();
    let mut seen = Vec::new();
    while seen.is_empty() {
        assert!(t.elapsed() < Duration::from_secs(30), "no demo alert within 30 s");
        std::thread::sleep(Duration::from_millis(500));
        seen = alerts(first.http, token);
    }
    // The demo agent is in the fleet once it sent a heartbeat (every 10 s).
    let t = Instant::now();
    loop {
        let r = request(first.http, "GET", "/api/v1/agents", Some(token), None, &[]).json();
        if r["agents"].as_array().unwrap().iter().any(|a| a["state"] == "ok") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "the demo agent never reported: {r}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let landing = request(first.http, "GET", "/", None, None, &[]);
    assert!(landing.body.contains("AuditFlow"), "{landing:?}");

    let (status, took, out) = stop(first);
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(15), "stopping took {took:?}");
    assert!(out.contains("AuditFlow is running (embedded mode"), "{out}");
    assert!(out.contains(token), "the generated token is printed next to the URL: {out}");

    // Restart: the same token, the alerts still there.
    let ids: Vec<String> = seen.iter().map(|a| a["id"].as_str().unwrap().to_owned()).collect();
    let second = start(dir.path());
    let after = alerts(second.http, token);
    for id in &ids {
        assert!(after.iter().any(|a| a["id"] == id.as_str()), "alert {id} lost over a restart");
    }
    let (status, _, out) = stop(second);
    assert!(status.success());
    // A token is shown once, when it is made; after that the banner names its file.
    assert!(!out.contains(token), "the token was printed a second time: {out}");
    assert!(out.contains("admin.token"), "{out}");
    // Files holding secrets are private, and so is the directory.
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |p: &str| std::fs::metadata(dir.path().join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("data"), 0o700);
    assert_eq!(mode("data/admin.token"), 0o600);
    assert_eq!(mode("data/agents.credentials"), 0o600);
}

#[test]
fn a_taken_mqtt_port_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = Command::new(support::workspace_bin("auditflow"))
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--mqtt-listen", &format!("127.0.0.1:{port}")])
        .arg("run")
        .env_remove("AMQP_URL")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")) && err.contains("not available"), "{err}");
}

fn auditflow(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(support::workspace_bin("auditflow"))
        .args(["--data-dir", dir.join("data").to_str().unwrap()])
        .args(args)
        .env_remove("AMQP_URL")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .output()
        .expect("run auditflow")
}

/// A backup taken while the demo agent's alerts keep coming holds every alert committed
/// before it; a restore is refused while AuditFlow runs, and once it is stopped brings the
/// backup back (the replaced store kept beside it).
#[test]
fn a_backup_taken_during_ingestion_restores_every_alert_committed_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path());
    let token = std::fs::read_to_string(dir.path().join("data/admin.token")).unwrap();
    let token = token.trim().to_owned();
    let t = Instant::now();
    let mut before = Vec::new();
    while before.len() < 3 {
        assert!(t.elapsed() < Duration::from_secs(60), "too few demo alerts: {}", before.len());
        std::thread::sleep(Duration::from_millis(500));
        before = alerts(running.http, &token);
    }
    let backup = dir.path().join("backup.db");
    let out = auditflow(dir.path(), &["backup", backup.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.starts_with("backup: ") && text.contains(" alerts, "), "{text}");
    let again = auditflow(dir.path(), &["backup", backup.to_str().unwrap()]);
    assert!(!again.status.success(), "an existing file is never overwritten");
    let refused = auditflow(dir.path(), &["restore", backup.to_str().unwrap()]);
    assert!(!refused.status.success(), "a restore under a running AuditFlow: {refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("stop it first"), "{refused:?}");
    // Ingestion went on after the backup; the live store has more than the backup then.
    std::thread::sleep(Duration::from_secs(2));
    let (status, _, _) = stop(running);
    assert!(status.success());

    let restored = auditflow(dir.path(), &["restore", backup.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&restored.stdout);
    assert!(restored.status.success(), "{restored:?}");
    assert!(text.contains("kept as"), "{text}");
    let second = start(dir.path());
    let after = alerts(second.http, &token);
    for a in &before {
        assert!(
            after.iter().any(|x| x["id"] == a["id"]),
            "alert {} missing after the restore",
            a["id"]
        );
    }
    let (status, _, _) = stop(second);
    assert!(status.success());
    let kept = std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains("before-restore"));
    assert!(kept, "the replaced store is kept");
    // Two AuditFlows on one data directory: the second is refused.
    let first = start(dir.path());
    let twin = auditflow(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
            "run",
        ],
    );
    assert!(!twin.status.success(), "{twin:?}");
    assert!(String::from_utf8_lossy(&twin.stderr).contains("stop it first"), "{twin:?}");
    stop(first);
}

/// The value of a metric line on the metrics listener (0 when absent).
fn metric(port: u16, line_start: &str) -> f64 {
    let r = request(port, "GET", "/metrics", None, None, &[]);
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(line_start).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// The in-process bridge answers rumqttd's flow control: 2,000 envelopes (40,000 events) published as fast as
/// MQTT allows all reach the pipeline (without it the bridge stopped after the first 200 that
/// piled up while it committed a batch, and stayed stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_publishes_does_not_stall_the_bridge() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/agents.credentials"), "pi-burst:burst-password-0001\n")
        .unwrap();
    let e = start(dir.path());
    let messages = "auditflow_aggregator_messages_in_total{queue=\"native\"}";
    let before = metric(e.metrics, messages);

    let mut options = MqttOptions::new("pi-burst", "127.0.0.1", e.mqtt);
    options.set_credentials("pi-burst", "burst-password-0001");
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {}
        other => panic!("pi-burst could not connect: {other:?}"),
    }
    let poller = tokio::spawn(async move {
        loop {
            if let Err(e) = eventloop.poll().await {
                panic!("pi-burst's session failed: {e}");
            }
        }
    });
    // Envelopes of 20 events, so that committing a batch takes long enough for publishes to
    // pile up in the broker meanwhile.
    const BURST: u64 = 2_000;
    let mut synth = wire::synth::Synth::new(7);
    for seq in 0..BURST {
        let events = (0..20).map(|_| synth.next_event(wire::model::Timestamp::now())).collect();
        let envelope = wire::encode(&wire::Envelope {
            node_id: "pi-burst".into(),
            epoch: 1,
            first_seq: seq * 20,
            events,
            dropped: Default::default(),
        });
        client
            .publish(wire::events_topic("pi-burst"), QoS::AtLeastOnce, false, envelope)
            .await
            .unwrap();
    }
    // The demo agent's envelopes count too, but they pass the same link: a stalled bridge
    // takes in neither.
    let t = Instant::now();
    let mut taken = 0.0;
    while t.elapsed() < Duration::from_secs(30) {
        taken = metric(e.metrics, messages) - before;
        if taken >= BURST as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    poller.abort();
    println!("taken in: {taken} envelopes (before: {before})");
    let _ = stop(e);
    assert!(taken >= BURST as f64, "the bridge stalled: {taken} of {BURST} envelopes taken in");
}

/// Posts legacy failed logins for `user` on `host` (ids from `first`), at 10 s apart from
/// `secs`.
fn post_failures(e: &Embedded, token: &str, user: &str, host: &str, secs: u32, ids: &[u32]) {
    let events: Vec<serde_json::Value> = ids
        .iter()
        .enumerate()
        .map(|(k, id)| support::failed_login(user, host, secs + 10 * k as u32, *id))
        .collect();
    let body = serde_json::Value::Array(events).to_string();
    let r = request(e.http, "POST", "/api/v1/events", Some(token), Some(body.as_bytes()), &[]);
    assert!(r.status == 200 || r.status == 202, "{r:?}");
}

fn kill(mut e: Embedded) {
    e.child.kill().unwrap();
    e.child.wait().unwrap();
}

/// Waits up to 10 s for a brute-force alert (ANLY-SEC-001) on `host`.
fn brute_force_alert(e: &Embedded, token: &str, host: &str) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if alerts(e.http, token).iter().any(|a| a["rule_id"] == "ANLY-SEC-001" && a["node"] == host)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// The detection state lives in memory: a restart must not forget what a window had counted.
/// After a SIGKILL (no snapshot taken yet) the archive's replay rebuilds it; after a clean stop
/// the snapshot does, with the archive off; a damaged snapshot is set aside, counted, and the
/// replay takes over.
#[test]
fn detection_state_survives_a_crash_a_restart_and_a_damaged_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let first = start_with(dir.path(), &["--no-demo"]);
    let token = std::fs::read_to_string(dir.path().join("data/admin.token")).unwrap();
    let token = token.trim().to_owned();
    // Two failures, the process killed, the third after the restart: three within 60 s.
    post_failures(&first, &token, "mallory", "pi-crash", 0, &[1, 2]);
    assert!(!brute_force_alert(&first, &token, "pi-crash"), "two failures fired already");
    kill(first);
    assert!(!dir.path().join("data/state").exists(), "a snapshot was taken before the kill");
    let second = start_with(dir.path(), &["--no-demo"]);
    post_failures(&second, &token, "mallory", "pi-crash", 20, &[3]);
    assert!(
        brute_force_alert(&second, &token, "pi-crash"),
        "the failures counted before the SIGKILL were forgotten"
    );
    let (status, _, _) = stop(second);
    assert!(status.success());
    assert!(dir.path().join("data/state").exists(), "no snapshot at the clean stop");

    // The snapshot alone (no archive to replay from).
    let config = dir.path().join("no-archive.toml");
    std::fs::write(&config, "[archive]\nenabled = false\n").unwrap();
    let config = config.to_str().unwrap();
    let third = start_with(dir.path(), &["--no-demo", "--config", config]);
    post_failures(&third, &token, "trent", "pi-stop", 0, &[4, 5]);
    let (status, _, _) = stop(third);
    assert!(status.success());
    let fourth = start_with(dir.path(), &["--no-demo", "--config", config]);
    post_failures(&fourth, &token, "trent", "pi-stop", 20, &[6]);
    assert!(
        brute_force_alert(&fourth, &token, "pi-stop"),
        "the failures counted before the clean stop were forgotten"
    );
    let (status, _, _) = stop(fourth);
    assert!(status.success());

    // A damaged snapshot: kept aside, counted; the archive's last hour replayed instead.
    let fifth = start_with(dir.path(), &["--no-demo"]);
    post_failures(&fifth, &token, "oscar", "pi-damaged", 0, &[7, 8]);
    let (status, _, _) = stop(fifth);
    assert!(status.success());
    let state = dir.path().join("data/state");
    let mut bytes = std::fs::read(&state).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    std::fs::write(&state, bytes).unwrap();
    let sixth = start_with(dir.path(), &["--no-demo"]);
    assert!(dir.path().join("data/state.damaged").exists(), "the damaged snapshot is not kept");
    assert_eq!(metric(sixth.metrics, "auditflow_aggregator_state_snapshot_failures_total"), 1.0);
    post_failures(&sixth, &token, "oscar", "pi-damaged", 20, &[9]);
    assert!(
        brute_force_alert(&sixth, &token, "pi-damaged"),
        "the archive's replay did not rebuild the window"
    );
    let (status, _, _) = stop(sixth);
    assert!(status.success());
}
