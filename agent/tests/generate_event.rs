//! The legacy `POST /generate_event` on the agent's HTTP port, driven over HTTP against the
//! real agent process and RabbitMQ: 202 with an `event_id` only once the event is spooled
//! (and that id is the one downstream sees), 400 for bodies that are not events, 503 when the
//! spool is full — never 202 for an event that was lost.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| {
        panic!("AMQP_URL is not set: RabbitMQ is required for this test; run scripts/test.sh")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// POSTs `body`; returns the status code and the response body.
fn post(port: u16, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the agent");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The agent process, killed when the test ends however it ends.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &std::path::Path, http: u16) -> Agent {
    // The config names the RabbitMQ to use; the suite's AMQP_URL would override it.
    let child = Command::new(env!("CARGO_BIN_EXE_auditflow-agent"))
        .arg("--config")
        .arg(config)
        .env_remove("AMQP_URL")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("start auditflow-agent");
    let agent = Agent(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "the agent's HTTP port never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
    agent
}

fn stop(mut agent: Agent) {
    let child = &mut agent.0;
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(20), "the agent did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn event_id(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).expect("JSON answer");
    v["event_id"].as_str().expect("event_id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_events_reach_rabbitmq_under_the_returned_id() {
    let url = amqp_url();
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let queue = format!("auditflow.test.generate.{}", std::process::id());
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = \"api-node\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n\
             [spool]\ndir = \"{}\"\n[batch]\nmax_age_ms = 50\n\
             [transport]\nkind = \"amqp\"\namqp_url = \"{url}\"\namqp_queue = \"{queue}\"\n\
             amqp_heartbeat_queue = \"{queue}.hb\"\n",
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let agent = start(&config, http);

    let (status, body) = post(http, "/generate_event", r#"{"event_type": "user_login"}"#);
    assert_eq!(status, 202, "{body}");
    let synthesized = event_id(&body);
    let legacy = r#"{"event_id": "2f1b7f0e-8d4c-4a51-9d43-1b2f7c3e9a10", "timestamp": "2025-06-01T12:00:00Z",
        "event_type": "file_modified", "user_id": "root", "action_result": "MODIFIED", "severity": "CRITICAL",
        "details": {"resource": "/etc/shadow"}}"#;
    let (status, body) = post(http, "/generate_event", legacy);
    assert_eq!(status, 202, "{body}");
    assert_eq!(event_id(&body), "2f1b7f0e-8d4c-4a51-9d43-1b2f7c3e9a10", "the sender's id is kept");
    for bad in ["{}", "not json", "[1, 2]", r#"{"event_type": 7}"#] {
        let (status, body) = post(http, "/generate_event", bad);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("error"), "{body}");
    }
    let big = format!(r#"{{"event_type": "x", "pad": "{}"}}"#, "a".repeat(100_000));
    assert_eq!(post(http, "/generate_event", &big).0, 413, "oversized bodies are refused");
    stop(agent);

    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to RabbitMQ at AMQP_URL: {e}"));
    let channel = conn.create_channel().await.unwrap();
    let mut ids = Vec::new();
    while let Some(m) =
        channel.basic_get(queue.as_str().into(), BasicGetOptions::default()).await.unwrap()
    {
        let e: wire::Envelope = wire::decode(&m.delivery.data).unwrap();
        for (i, event) in e.events.iter().enumerate() {
            assert_eq!(event.source, wire::Source::Api);
            let id = event.id.map_or_else(
                || wire::legacy::event_uuid(&e.node_id, e.epoch, e.first_seq + i as u64),
                wire::legacy::Uuid::from_bytes,
            );
            ids.push(id.to_string());
        }
        m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(ids, [synthesized, "2f1b7f0e-8d4c-4a51-9d43-1b2f7c3e9a10".to_owned()]);
    for q in [queue.clone(), format!("{queue}.hb")] {
        channel.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
    }
}

#[test]
fn a_full_spool_answers_503_not_202() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let closed = free_port();
    let config = dir.path().join("agent.toml");
    // Nothing listens on the AMQP port: the synthetic source fills the 1 MiB spool.
    std::fs::write(
        &config,
        format!(
            "node_id = \"full-node\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n\
             [spool]\ndir = \"{}\"\nmax_bytes = 1048576\nfsync = false\n[batch]\nmax_age_ms = 50\n\
             [transport]\nkind = \"amqp\"\namqp_url = \"amqp://u:p@127.0.0.1:{closed}/%2f\"\n\
             [synthetic]\nenabled = true\nrate_per_sec = 100000.0\n",
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let agent = start(&config, http);
    let start_time = Instant::now();
    loop {
        let (status, body) = post(http, "/generate_event", r#"{"event_type": "sudo_command"}"#);
        if status == 503 {
            assert!(body.contains("could not be spooled"), "{body}");
            break;
        }
        assert_eq!(status, 202, "{body}");
        assert!(start_time.elapsed() < Duration::from_secs(30), "the spool never filled");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(agent);
}

/// The node configs AuditFlow ships set `http.generate_event = false`: the endpoint then takes
/// nothing, even from the node itself, and says why.
#[test]
fn off_takes_nothing() {
    let url = amqp_url();
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = \"off-node\"\n[http]\nlisten = \"127.0.0.1:{http}\"\ngenerate_event = false\n\
             [spool]\ndir = \"{}\"\n[transport]\nkind = \"amqp\"\namqp_url = \"{url}\"\n\
             amqp_queue = \"auditflow.test.off.{}\"\n",
            dir.path().join("spool").display(),
            std::process::id()
        ),
    )
    .unwrap();
    let agent = start(&config, http);
    let (status, body) = post(http, "/generate_event", r#"{"event_type": "user_login"}"#);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("http.generate_event"), "{body}");
    stop(agent);
}

fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the agent");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The legacy generator's API on its own listener, as its scripts call it (the legacy tests'
/// request: `{"event_type": "custom_test_event", "user_id": "test_user_api"}`): 202
/// `{"status": "success", "event_id": …}`, its 400 message, `/healthz` with its keys; the
/// event downstream carries the legacy defaults and the returned id. With `synthetic.mix =
/// "generator"` the agent's own traffic is the legacy generator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_listener_answers_as_the_legacy_generator() {
    let url = amqp_url();
    let dir = tempfile::tempdir().unwrap();
    let (http, legacy) = (free_port(), free_port());
    let queue = format!("auditflow.test.legacy.{}", std::process::id());
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = \"api-node\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n\
             legacy_listen = \"127.0.0.1:{legacy}\"\n\
             [spool]\ndir = \"{}\"\n[batch]\nmax_age_ms = 50\n\
             [transport]\nkind = \"amqp\"\namqp_url = \"{url}\"\namqp_queue = \"{queue}\"\n\
             amqp_heartbeat_queue = \"{queue}.hb\"\n\
             [synthetic]\nenabled = true\nmix = \"generator\"\nrate_per_sec = 1000.0\nlimit = 70\n",
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let agent = start(&config, http);
    let start_at = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", legacy)).is_err() {
        assert!(start_at.elapsed() < Duration::from_secs(20), "the legacy port never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let start_at = Instant::now();
    loop {
        let (status, body) = get(legacy, "/healthz");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON health");
        if status == 200 {
            assert_eq!(v, serde_json::json!({"status": "healthy", "rabbitmq_connected": true}));
            break;
        }
        assert_eq!(v, serde_json::json!({"status": "unhealthy", "rabbitmq_connected": false}));
        assert!(start_at.elapsed() < Duration::from_secs(20), "never connected: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (status, body) = post(
        legacy,
        "/generate_event",
        r#"{"event_type": "custom_test_event", "user_id": "test_user_api"}"#,
    );
    assert_eq!(status, 202, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["status"], "success", "{body}");
    let id = event_id(&body);
    assert_eq!(wire::legacy::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    for bad in ["{}", "[1]", r#"{"user_id": "x"}"#] {
        let (status, body) = post(legacy, "/generate_event", bad);
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"error": "Invalid event data. 'event_type' is required."})
        );
    }
    // Let the synthetic source finish its 70 events.
    std::thread::sleep(Duration::from_millis(500));
    stop(agent);

    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to RabbitMQ at AMQP_URL: {e}"));
    let channel = conn.create_channel().await.unwrap();
    let mut api = Vec::new();
    let mut generated = Vec::new();
    while let Some(m) =
        channel.basic_get(queue.as_str().into(), BasicGetOptions::default()).await.unwrap()
    {
        let e: wire::Envelope = wire::decode(&m.delivery.data).unwrap();
        for (i, event) in e.events.iter().enumerate() {
            let fallback = wire::legacy::event_uuid(&e.node_id, e.epoch, e.first_seq + i as u64);
            let json = wire::legacy::to_legacy(event, &e.node_id, fallback);
            if event.source == wire::Source::Api {
                api.push(json);
            } else {
                generated.push(json);
            }
        }
        m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(api.len(), 1, "{api:?}");
    let e = &api[0];
    assert_eq!(e["event_id"], id.as_str());
    assert_eq!(e["event_type"], "custom_test_event");
    assert_eq!(e["user_id"], "test_user_api");
    assert_eq!(e["source_service"], "audit-event-generator-api");
    assert_eq!(e["server_hostname"], "api-node");
    assert_eq!(e["action_result"], "SUCCESS");
    assert_eq!(e["severity"], "INFO");
    assert_eq!(e["details"], serde_json::json!({}));
    assert_eq!(generated.len(), 70);
    for g in &generated {
        assert_eq!(g["source_service"], "audit-event-generator", "{g}");
        assert!(
            wire::synth::legacy_vocab::HOSTS.contains(&g["server_hostname"].as_str().unwrap()),
            "{g}"
        );
        assert!(wire::synth::legacy_vocab::USERS.contains(&g["user_id"].as_str().unwrap()), "{g}");
    }
    for q in [queue.clone(), format!("{queue}.hb")] {
        channel.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
    }
}
