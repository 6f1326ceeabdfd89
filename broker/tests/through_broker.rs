//! Agents → MQTT → broker → RabbitMQ, with the real binaries started as processes and the
//! real RabbitMQ. Each test gets its own RabbitMQ vhost (so the fixed queue names do not
//! collide); the tests that restart RabbitMQ or kill the broker run one at a time.
//! Needs `AMQP_URL` and `rabbitmqctl` (scripts/test.sh provides both); fails loudly without.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::{Connection, ConnectionProperties};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Serializes the tests: one restarts RabbitMQ, and all of them need the machine's cores.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("RabbitMQ: cannot run rabbitmqctl {args:?}: {e}"));
    assert!(
        out.status.success(),
        "RabbitMQ: rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A vhost of its own for one test; removed when dropped.
struct Vhost {
    name: String,
    url: String,
}

impl Vhost {
    fn new(tag: &str) -> Self {
        let base = std::env::var("AMQP_URL").unwrap_or_else(|_| {
            panic!("AMQP_URL is not set: RabbitMQ is required for this test; run scripts/test.sh")
        });
        let name = format!("auditflow_test_{tag}_{}", std::process::id());
        let (prefix, _) = base.rsplit_once('/').expect("AMQP_URL has a vhost path");
        let user = prefix
            .strip_prefix("amqp://")
            .and_then(|r| r.split_once(':'))
            .map(|(u, _)| u.to_owned())
            .expect("AMQP_URL has a user");
        let _ = Command::new("rabbitmqctl").args(["delete_vhost", &name]).output();
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, &user, ".*", ".*", ".*"]);
        Self { url: format!("{prefix}/{name}"), name }
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["delete_vhost", &self.name]).output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A sibling binary of the workspace (cargo builds every member's binaries for
/// `cargo test --workspace`).
fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join(name);
    assert!(bin.exists(), "{} is missing: build it with `cargo build -p agent`", bin.display());
    bin
}

struct Broker {
    child: Child,
    mqtt: u16,
    http: u16,
    config: PathBuf,
}

impl Broker {
    fn start(dir: &Path, amqp_url: &str, credentials: &str) -> Self {
        Self::start_with(dir, amqp_url, credentials, "")
    }

    /// A TLS listener with this certificate chain and key.
    fn start_tls(dir: &Path, amqp_url: &str, cert: &Path, key: &Path) -> Self {
        let tls = format!("tls_cert = \"{}\"\ntls_key = \"{}\"\n", cert.display(), key.display());
        Self::start_with(dir, amqp_url, CREDENTIALS, &tls)
    }

    /// With more `[mqtt]` settings (TOML lines).
    fn start_with(dir: &Path, amqp_url: &str, credentials: &str, mqtt_extra: &str) -> Self {
        let (mqtt, http) = (free_port(), free_port());
        std::fs::write(dir.join("credentials"), credentials).unwrap();
        let config = dir.join("broker.toml");
        std::fs::write(
            &config,
            format!(
                "[mqtt]\nlisten = \"127.0.0.1:{mqtt}\"\ncredentials_file = \"{}\"\n{mqtt_extra}\
                 [http]\nlisten = \"127.0.0.1:{http}\"\n[amqp]\nurl = \"{amqp_url}\"\n",
                dir.join("credentials").display()
            ),
        )
        .unwrap();
        let mut b = Self { child: spawn_broker(&config), mqtt, http, config };
        b.wait_ready();
        b
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        while !http_get(self.http, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the broker exited: {status}");
            }
            // After RabbitMQ was away the bridge reconnects with backoff capped at 5 s
            // (runtime::retry), and RabbitMQ may start the test's vhost after `await_startup`
            // returns: readiness takes that long plus the reconnect itself.
            assert!(start.elapsed() < Duration::from_secs(60), "the broker is not ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn restart_after_sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        // The same ports: agents reconnect to where the broker was.
        self.child = spawn_broker(&self.config);
        self.wait_ready();
    }

    fn metric(&self, name: &str) -> f64 {
        let body = http_get(self.http, "/metrics").expect("metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_broker(config: &Path) -> Child {
    // The config names the test's vhost; the suite's AMQP_URL would override it.
    Command::new(env!("CARGO_BIN_EXE_auditflow-broker"))
        .arg("--config")
        .arg(config)
        .env_remove("AMQP_URL")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("start auditflow-broker")
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn start_agent(dir: &Path, node: &str, mqtt: u16, password: &str, events: u64, rate: u32) -> Child {
    let url = format!("mqtt://127.0.0.1:{mqtt}");
    start_agent_with(dir, node, &url, "", password, events, rate)
}

/// With the broker's URL and a CA file for `mqtts://`.
fn start_agent_with(
    dir: &Path,
    node: &str,
    url: &str,
    ca_file: &str,
    password: &str,
    events: u64,
    rate: u32,
) -> Child {
    let config = dir.join(format!("{node}.toml"));
    std::fs::write(
        &config,
        format!(
            "node_id = \"{node}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [spool]\ndir = \"{}\"\nfsync = false\n\
             [transport]\nkind = \"mqtt\"\nmqtt_url = \"{url}\"\nmqtt_ca_file = \"{ca_file}\"\n\
             mqtt_password = \"{password}\"\n\
             [synthetic]\nenabled = true\nrate_per_sec = {rate}.0\nlimit = {events}\n",
            dir.join(node).display()
        ),
    )
    .unwrap();
    Command::new(workspace_bin("auditflow-agent"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("start auditflow-agent")
}

/// Agent processes, killed when the test ends however it ends (an orphaned agent would retry
/// forever and hold the test runner's output open).
struct Agents(Vec<Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for a in &mut self.0 {
            let _ = a.kill();
            let _ = a.wait();
        }
    }
}

fn wait_all(agents: &mut [Child], limit: Duration) {
    let start = Instant::now();
    for a in agents.iter_mut() {
        loop {
            if let Some(status) = a.try_wait().unwrap() {
                assert!(status.success(), "an agent failed: {status}");
                break;
            }
            if start.elapsed() > limit {
                for a in agents.iter_mut() {
                    let _ = a.kill();
                }
                panic!("the agents did not finish within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The spool's `epoch acked` after an agent finished.
fn agent_state(dir: &Path, node: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(dir.join(node).join("state")).unwrap();
    let mut parts = text.split_whitespace().map(|p| p.parse::<u64>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

/// Drains `auditflow.events`: which sequence numbers arrived per (node, epoch).
/// Drains `auditflow.events`: which sequence numbers arrived per (node, epoch) from agents;
/// the broker's own refusal reports (`report.rs`) are left out.
async fn drain_events(url: &str) -> HashMap<(String, u64), Vec<u64>> {
    drain_all(url).await.0
}

/// Like [`drain_events`], and the broker's refusal reports as (node, reason).
async fn drain_all(url: &str) -> (HashMap<(String, u64), Vec<u64>>, Vec<(String, String)>) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to RabbitMQ: {e}"));
    let channel = conn.create_channel().await.unwrap();
    let mut seen: HashMap<(String, u64), Vec<u64>> = HashMap::new();
    let mut reports = Vec::new();
    while let Some(m) =
        channel.basic_get(wire::queues::EVENTS.into(), BasicGetOptions::default()).await.unwrap()
    {
        let e: wire::Envelope = wire::decode(&m.delivery.data).expect("valid envelope");
        if let [event] = e.events.as_slice()
            && event.origin.as_deref() == Some("auditflow-broker")
            && let wire::model::EventKind::Generic { event_type, fields } = &event.kind
            && event_type == "mqtt_refused"
        {
            let reason = fields
                .iter()
                .find(|(k, _)| k == "reason")
                .map(|(_, v)| format!("{v:?}"))
                .unwrap_or_default();
            reports.push((e.node_id.clone(), reason));
            m.delivery.ack(BasicAckOptions::default()).await.unwrap();
            continue;
        }
        let counts = seen.entry((e.node_id.clone(), e.epoch)).or_default();
        let end = e.end_seq() as usize;
        if counts.len() < end {
            counts.resize(end, 0);
        }
        for seq in e.first_seq..e.end_seq() {
            counts[seq as usize] += 1;
        }
        m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = conn.close(200, "done".into()).await;
    (seen, reports)
}

fn assert_complete(dir: &Path, nodes: &[&str], seen: &HashMap<(String, u64), Vec<u64>>) {
    for node in nodes {
        let (epoch, acked) = agent_state(dir, node);
        let counts =
            seen.get(&((*node).to_owned(), epoch)).unwrap_or_else(|| panic!("nothing from {node}"));
        let missing =
            (0..acked as usize).filter(|&s| counts.get(s).copied().unwrap_or(0) == 0).count();
        let duplicates: u64 = counts.iter().map(|&c| c.saturating_sub(1)).sum();
        println!(
            "{node}: {acked} sequence numbers, {duplicates} delivered more than once, {missing} missing"
        );
        assert_eq!(missing, 0, "{node} lost events");
        assert!(
            counts.len() as u64 <= acked,
            "{node}: sequence numbers beyond what was handed out"
        );
    }
}

const NODES: [&str; 3] = ["pi-a", "pi-b", "pi-c"];
// pi-c's line holds only the SHA-256 of its password, as the Pi image and Ansible write them.
const CREDENTIALS: &str = "pi-a:alpha-password-0001\npi-b:bravo-password-0002\n\
                           pi-c:sha256:669c71a47f91129a7fff0033bda7cdd7522f04ec4a40b0ff2df043ffbf8e9355\n";

fn password(node: &str) -> &'static str {
    match node {
        "pi-a" => "alpha-password-0001",
        "pi-b" => "bravo-password-0002",
        _ => "charlie-password-0003",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_deliver_every_event_through_the_broker() {
    let _heavy = HEAVY.lock().await;
    let vhost = Vhost::new("clean");
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &vhost.url, CREDENTIALS);
    let mut agents = Agents(
        NODES
            .iter()
            .map(|n| start_agent(dir.path(), n, broker.mqtt, password(n), 100_000, 50_000))
            .collect(),
    );
    wait_all(&mut agents.0, Duration::from_secs(180));
    assert_eq!(broker.metric("auditflow_broker_events_out_total") as u64, 300_000);
    let seen = drain_events(&vhost.url).await;
    assert_complete(dir.path(), &NODES, &seen);
}

/// A TCP proxy to `upstream` that holds the broker's first bytes on each connection (the
/// CONNACK) for `delay`: a slow handshake (a loaded broker, TLS over a poor link).
async fn slow_handshake_proxy(upstream: u16, delay: Duration) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
                tokio::time::sleep(delay).await;
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
        }
    });
    port
}

/// An agent whose CONNACK takes longer than the gaps between its own wake-ups (a batch every
/// second at this rate, the one-second tick) still connects: it must not drop a connection it
/// is making.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_connects_through_a_slow_handshake() {
    let _heavy = HEAVY.lock().await;
    let vhost = Vhost::new("slow");
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &vhost.url, CREDENTIALS);
    let proxy = slow_handshake_proxy(broker.mqtt, Duration::from_millis(1500)).await;
    let url = format!("mqtt://127.0.0.1:{proxy}");
    let mut agents =
        Agents(vec![start_agent_with(dir.path(), "pi-a", &url, "", password("pi-a"), 3000, 500)]);
    wait_all(&mut agents.0, Duration::from_secs(60));
    assert_eq!(broker.metric("auditflow_broker_events_out_total") as u64, 3000);
    let seen = drain_events(&vhost.url).await;
    assert_complete(dir.path(), &["pi-a"], &seen);
}

/// Reads one MQTT packet (fixed header, remaining length, body) whole.
async fn read_packet<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut packet = vec![r.read_u8().await?];
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let b = r.read_u8().await?;
        packet.push(b);
        len |= usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 || shift > 21 {
            break;
        }
    }
    let start = packet.len();
    packet.resize(start + len, 0);
    r.read_exact(&mut packet[start..]).await?;
    Ok(packet)
}

/// A TCP proxy to `upstream` that loses the first QoS 1 publish of events it carries *after
/// acknowledging it* to the client (a PUBACK of its own): what the agent sees when rumqttd
/// drops a log segment the bridge had not read yet, or a hop loses a publish it acknowledged.
/// Returns the port and the number of publishes lost.
async fn lossy_proxy(upstream: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let lost = Arc::new(AtomicU64::new(0));
    let lost_out = Arc::clone(&lost);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let lost = Arc::clone(&lost);
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let (cr, cw) = client.into_split();
                let (sr, mut sw) = server.into_split();
                let cw = Arc::new(tokio::sync::Mutex::new(cw));
                let to_client = Arc::clone(&cw);
                tokio::spawn(async move {
                    let mut sr = tokio::io::BufReader::new(sr);
                    while let Ok(p) = read_packet(&mut sr).await {
                        if to_client.lock().await.write_all(&p).await.is_err() {
                            return;
                        }
                    }
                });
                let mut cr = tokio::io::BufReader::new(cr);
                while let Ok(p) = read_packet(&mut cr).await {
                    let (header, qos) = (p[0] >> 4, (p[0] >> 1) & 3);
                    let body =
                        p[1..].iter().position(|&b| b & 0x80 == 0).map_or(p.len(), |i| i + 2);
                    if header == 3 && qos == 1 && body + 2 <= p.len() {
                        let topic_len = usize::from(u16::from_be_bytes([p[body], p[body + 1]]));
                        let topic = &p[body + 2..(body + 2 + topic_len).min(p.len())];
                        if topic.starts_with(b"auditflow/v1/events/")
                            && lost
                                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                                .is_ok()
                        {
                            let id = &p[body + 2 + topic_len..body + 4 + topic_len];
                            let puback = [0x40, 0x02, id[0], id[1]];
                            if cw.lock().await.write_all(&puback).await.is_err() {
                                return;
                            }
                            continue;
                        }
                    }
                    if sw.write_all(&p).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, lost_out)
}

/// The agent's first envelopes never reach the broker although they were acknowledged at the
/// MQTT level, so the broker's run for the stream starts above the agent's watermark. The run's
/// start travels in the `RunAck`; the agent refuses acks of a run that does not reach its
/// watermark, resends from the watermark when acks stop advancing, and nothing is lost. With
/// the old `Ack`, which cannot say where its run starts, the agent removed the lost envelope
/// from its spool with the first ack (docs/broker.md, the log-overflow defect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_lost_after_its_puback_is_resent_not_acknowledged() {
    let _heavy = HEAVY.lock().await;
    let vhost = Vhost::new("lossy");
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &vhost.url, CREDENTIALS);
    let (proxy, lost) = lossy_proxy(broker.mqtt).await;
    let url = format!("mqtt://127.0.0.1:{proxy}");
    let mut agents =
        Agents(vec![start_agent_with(dir.path(), "pi-a", &url, "", password("pi-a"), 2000, 1000)]);
    wait_all(&mut agents.0, Duration::from_secs(120));
    assert_eq!(lost.load(std::sync::atomic::Ordering::SeqCst), 1, "the proxy lost no publish");
    let seen = drain_events(&vhost.url).await;
    assert_complete(dir.path(), &["pi-a"], &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_when_rabbitmq_restarts_and_the_broker_is_killed() {
    let _heavy = HEAVY.lock().await;
    let vhost = Vhost::new("chaos");
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path(), &vhost.url, CREDENTIALS);
    let mut agents = Agents(
        NODES
            .iter()
            .map(|n| start_agent(dir.path(), n, broker.mqtt, password(n), 100_000, 25_000))
            .collect(),
    );
    std::thread::sleep(Duration::from_millis(1200));
    rabbitmqctl(&["stop_app"]);
    std::thread::sleep(Duration::from_secs(2));
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    broker.wait_ready();
    std::thread::sleep(Duration::from_millis(800));
    broker.restart_after_sigkill();
    wait_all(&mut agents.0, Duration::from_secs(240));
    let seen = drain_events(&vhost.url).await;
    assert_complete(dir.path(), &NODES, &seen);
}

/// Connects with rumqttc and reports whether the broker accepted the connection.
async fn try_connect(port: u16, client_id: &str, credentials: Option<(&str, &str)>) -> bool {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    if let Some((u, p)) = credentials {
        options.set_credentials(u, p);
    }
    let (_client, mut eventloop) = AsyncClient::new(options, 10);
    let result = tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await;
    matches!(result, Ok(Ok(Event::Incoming(Packet::ConnAck(_)))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_impostors_are_refused() {
    let _heavy = HEAVY.lock().await;
    let vhost = Vhost::new("refuse");
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &vhost.url, CREDENTIALS);

    // A second connection with pi-c's identity replaces the first, and is counted.
    let (_first, mut first_loop) = session(broker.mqtt, "pi-c").await;
    let (_second, _second_loop) = session(broker.mqtt, "pi-c").await;
    assert!(dropped(&mut first_loop, Duration::from_secs(5)).await, "the older session was kept");
    assert_eq!(broker.metric("auditflow_broker_client_takeovers_total{node=\"pi-c\"}"), 1.0);

    assert!(!try_connect(broker.mqtt, "pi-a", None).await, "no credentials");
    assert!(!try_connect(broker.mqtt, "pi-a", Some(("pi-a", "wrong"))).await, "wrong password");
    assert!(
        !try_connect(broker.mqtt, "pi-b", Some(("pi-a", "alpha-password-0001"))).await,
        "client id of another node"
    );
    assert!(
        try_connect(broker.mqtt, "pi-a", Some(("pi-a", "alpha-password-0001"))).await,
        "the right credentials"
    );
    // rumqttd refuses a connection without credentials before our check runs, so only the
    // two attempts with credentials are counted.
    assert_eq!(broker.metric("auditflow_broker_clients_refused_total{reason=\"auth\"}"), 2.0);

    // pi-a publishes an envelope claiming to be pi-b, on its own topic: refused, dead-lettered,
    // never acknowledged.
    let mut options = MqttOptions::new("pi-a", "127.0.0.1", broker.mqtt);
    options.set_credentials("pi-a", "alpha-password-0001");
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let forged = wire::encode(&wire::Envelope {
        node_id: "pi-b".into(),
        epoch: 1,
        first_seq: 0,
        events: vec![],
        dropped: Default::default(),
    });
    client.subscribe(wire::ack_topic("pi-a"), QoS::AtLeastOnce).await.unwrap();
    client
        .publish(wire::events_topic("pi-a"), QoS::AtLeastOnce, false, forged.clone())
        .await
        .unwrap();
    client
        .publish(wire::events_topic("pi-a"), QoS::AtLeastOnce, false, b"\x01junk".to_vec())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut acked = false;
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(_)))) => acked = true,
            Ok(Err(e)) => panic!("connection failed: {e}"),
            _ => {}
        }
        if broker.metric("auditflow_broker_invalid_envelopes_total") >= 2.0 {
            break;
        }
    }
    assert!(!acked, "a forged envelope was acknowledged");
    assert_eq!(broker.metric("auditflow_broker_refused_total{reason=\"node_mismatch\"}"), 1.0);
    assert_eq!(broker.metric("auditflow_broker_refused_total{reason=\"undecodable\"}"), 1.0);

    let conn = Connection::connect(&vhost.url, ConnectionProperties::default()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let mut reasons = Vec::new();
    for _ in 0..50 {
        match channel
            .basic_get(wire::queues::EVENTS_DLQ.into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            Some(m) => {
                let headers = m.delivery.properties.headers().clone().unwrap_or_default();
                let reason = match headers.inner().get("x-auditflow-reason") {
                    Some(lapin::types::AMQPValue::LongString(s)) => {
                        String::from_utf8_lossy(s.as_bytes()).into_owned()
                    }
                    other => format!("{other:?}"),
                };
                reasons.push(reason);
                m.delivery.ack(BasicAckOptions::default()).await.unwrap();
            }
            None if reasons.len() >= 2 => break,
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(reasons.len(), 2, "both refused envelopes are dead-lettered: {reasons:?}");
    reasons.sort();
    assert_eq!(reasons, ["node_mismatch", "undecodable"]);
    let _ = conn.close(200, "done".into()).await;
}

/// A CA and a server certificate for `localhost` and 127.0.0.1 signed by it, written as PEM
/// files into `dir`: returns (CA certificate, server certificate, server key) paths.
fn test_pki(dir: &Path, tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, format!("AuditFlow test CA {tag}"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    server.distinguished_name.push(DnType::CommonName, "auditflow-broker");
    let cert = server.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join(format!("ca-{tag}.pem")),
        dir.join(format!("server-{tag}.pem")),
        dir.join(format!("server-{tag}.key")),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// Polls a broker metric until it has `value` (the connected-clients gauge is sampled every
/// 2 s).
fn wait_metric(broker: &Broker, name: &str, value: f64, limit: Duration) {
    let start = Instant::now();
    loop {
        let now = broker.metric(name);
        if now == value {
            return;
        }
        assert!(start.elapsed() < limit, "{name} is {now}, not {value}, after {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_deliver_over_tls_and_only_to_the_broker_they_trust() {
    let _heavy = HEAVY.lock().await;
    let vhost = Vhost::new("tls");
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki(dir.path(), "good");
    let (other_ca, _, _) = test_pki(dir.path(), "other");
    let broker = Broker::start_tls(dir.path(), &vhost.url, &cert, &key);
    assert_eq!(broker.metric("auditflow_broker_clients_connected"), 0.0);

    // Plain MQTT to the TLS listener gets nowhere.
    assert!(
        !try_connect(broker.mqtt, "pi-a", Some(("pi-a", "alpha-password-0001"))).await,
        "plain MQTT"
    );

    // An agent that trusts another CA refuses the broker's certificate: it never gets as far
    // as authenticating.
    let url = format!("mqtts://localhost:{}", broker.mqtt);
    let mut impostor = Agents(vec![start_agent_with(
        dir.path(),
        "pi-b",
        &url,
        other_ca.to_str().unwrap(),
        password("pi-b"),
        1_000,
        1_000,
    )]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(impostor.0[0].try_wait().unwrap().is_none(), "the agent keeps retrying");
    assert_eq!(broker.metric("auditflow_broker_clients_accepted_total"), 0.0);
    drop(impostor);

    // The agent that trusts the test CA delivers everything over TLS; while it runs it is the
    // one client connected, and once it stopped, none is.
    let mut agents = Agents(vec![start_agent_with(
        dir.path(),
        "pi-a",
        &url,
        ca.to_str().unwrap(),
        password("pi-a"),
        20_000,
        4_000,
    )]);
    wait_metric(&broker, "auditflow_broker_clients_connected", 1.0, Duration::from_secs(5));
    wait_all(&mut agents.0, Duration::from_secs(60));
    wait_metric(&broker, "auditflow_broker_clients_connected", 0.0, Duration::from_secs(5));
    assert_eq!(broker.metric("auditflow_broker_events_out_total") as u64, 20_000);
    let seen = drain_events(&vhost.url).await;
    assert_complete(dir.path(), &["pi-a"], &seen);
}

/// One client that opens a TCP connection to the TLS listener and never says anything must not
/// keep the other agents out: the handshake runs in the connection's own task under the
/// connection timeout (10 s), not in the accept loop (vendor/README.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_does_not_stall_the_tls_listener() {
    let _heavy = HEAVY.lock().await;
    let vhost = Vhost::new("silent");
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki(dir.path(), "silent");
    let broker = Broker::start_tls(dir.path(), &vhost.url, &cert, &key);
    let silent = std::net::TcpStream::connect(("127.0.0.1", broker.mqtt)).unwrap();
    // Well under the connection timeout, so that the timeout freeing the listener cannot be
    // what lets the agent in.
    let limit = Duration::from_secs(7);
    let start = Instant::now();
    let url = format!("mqtts://localhost:{}", broker.mqtt);
    let mut agents = Agents(vec![start_agent_with(
        dir.path(),
        "pi-a",
        &url,
        ca.to_str().unwrap(),
        password("pi-a"),
        1_000,
        1_000,
    )]);
    while broker.metric("auditflow_broker_clients_accepted_total") < 1.0 {
        assert!(
            start.elapsed() < limit,
            "an agent could not connect within {limit:?} while another connection was silent"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_all(&mut agents.0, Duration::from_secs(60));
    assert_eq!(broker.metric("auditflow_broker_events_out_total") as u64, 1_000);
    drop(silent);
}

/// A connection as `node` (its own password); returns the client and its event loop once the
/// broker has accepted it.
async fn session(port: u16, node: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let mut options = MqttOptions::new(node, "127.0.0.1", port);
    options.set_credentials(node, password(node));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => (client, eventloop),
        other => panic!("{node} could not connect: {other:?}"),
    }
}

/// Polls until the broker drops the connection (true) or `limit` passes (false); fails on any
/// acknowledgement of the refused packet.
async fn dropped(eventloop: &mut rumqttc::EventLoop, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await {
            Ok(Err(_)) => return true,
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => panic!("a refused publish was acked"),
            Ok(Ok(Event::Incoming(Packet::SubAck(s))))
                if s.return_codes
                    .iter()
                    .any(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure)) =>
            {
                // rumqttd may answer a refused SUBSCRIBE with an empty SubAck before it drops
                // the connection; a granted filter would be a failure.
                panic!("a refused subscription was granted: {s:?}")
            }
            _ => {}
        }
    }
    false
}

/// With its own valid credentials, a node still cannot publish on another node's topics
/// (forged events would make the aggregator drop the real ones as duplicates; a forged ack
/// would make the real agent delete unsent events), nor subscribe to anything but its own
/// acks. Each attempt ends the connection, is counted, and reaches neither RabbitMQ nor the
/// other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_can_touch_only_its_own_topics() {
    let _heavy = HEAVY.lock().await;
    let vhost = Vhost::new("acl");
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &vhost.url, CREDENTIALS);

    // The victim listens for its acks, in both forms.
    let (victim, mut victim_loop) = session(broker.mqtt, "pi-b").await;
    victim.subscribe(wire::ack_topic("pi-b"), QoS::AtLeastOnce).await.unwrap();
    victim.subscribe(wire::run_ack_topic("pi-b"), QoS::AtLeastOnce).await.unwrap();
    let victim_events = tokio::spawn(async move {
        let mut publishes = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Ok(Event::Incoming(Packet::Publish(_)))) =
                tokio::time::timeout(Duration::from_millis(200), victim_loop.poll()).await
            {
                publishes += 1;
            }
        }
        publishes
    });

    let forged_events = wire::encode(&wire::Envelope {
        node_id: "pi-b".into(),
        epoch: 1,
        first_seq: 0,
        events: vec![wire::synth::Synth::new(7).next_event(wire::Timestamp::now())],
        dropped: Default::default(),
    });
    let forged_ack = wire::encode(&wire::Ack { epoch: 1, up_to_seq: u64::MAX });
    let forged_run_ack = wire::encode(&wire::RunAck { epoch: 1, from_seq: 0, up_to_seq: u64::MAX });
    let publishes = [
        (wire::events_topic("pi-b"), forged_events),
        (wire::heartbeat_topic("pi-b"), b"\x01".to_vec()),
        (wire::ack_topic("pi-b"), forged_ack),
        (wire::run_ack_topic("pi-b"), forged_run_ack),
        ("somewhere/else".to_owned(), b"x".to_vec()),
    ];
    for (topic, payload) in publishes {
        let (client, mut eventloop) = session(broker.mqtt, "pi-a").await;
        client.publish(topic.clone(), QoS::AtLeastOnce, false, payload).await.unwrap();
        assert!(dropped(&mut eventloop, Duration::from_secs(5)).await, "publish on {topic} kept");
    }
    for filter in [
        "#",
        "auditflow/v1/events/+",
        "auditflow/v1/ack/+",
        "auditflow/v1/ack/pi-b",
        "auditflow/v1/run-ack/pi-b",
    ] {
        let (client, mut eventloop) = session(broker.mqtt, "pi-a").await;
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        assert!(
            dropped(&mut eventloop, Duration::from_secs(5)).await,
            "subscription {filter} kept"
        );
    }
    assert_eq!(broker.metric("auditflow_broker_clients_refused_total{reason=\"acl\"}"), 10.0);
    assert_eq!(victim_events.await.unwrap(), 0, "the victim received a forged message");
    assert_eq!(broker.metric("auditflow_broker_envelopes_in_total"), 0.0);
    // What reached RabbitMQ: no forged envelope, and one report (an alert) per refusal, each
    // about the attacker.
    let (seen, reports) = drain_all(&vhost.url).await;
    assert!(seen.is_empty(), "a forged envelope reached RabbitMQ");
    assert_eq!(reports.len(), 10, "{reports:?}");
    assert!(
        reports.iter().all(|(node, reason)| node == "pi-a" && reason.contains("acl")),
        "{reports:?}"
    );
    assert_eq!(
        broker.metric("auditflow_broker_node_refusals_total{node=\"pi-a\",reason=\"acl\"}"),
        10.0
    );

    // Its own topics work as before: an envelope in, an ack back.
    let (client, mut eventloop) = session(broker.mqtt, "pi-a").await;
    client.subscribe(wire::ack_topic("pi-a"), QoS::AtLeastOnce).await.unwrap();
    let own = wire::encode(&wire::Envelope {
        node_id: "pi-a".into(),
        epoch: 1,
        first_seq: 0,
        events: vec![wire::synth::Synth::new(8).next_event(wire::Timestamp::now())],
        dropped: Default::default(),
    });
    client.publish(wire::events_topic("pi-a"), QoS::AtLeastOnce, false, own).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut acked = false;
    while !acked && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                let ack: wire::Ack = wire::decode(&p.payload).expect("an ack");
                acked = ack.epoch == 1 && ack.up_to_seq == 1;
            }
            Ok(Err(e)) => panic!("pi-a's own session failed: {e}"),
            _ => {}
        }
    }
    assert!(acked, "pi-a's own envelope was not acknowledged");
    assert_eq!(broker.metric("auditflow_broker_clients_refused_total{reason=\"acl\"}"), 10.0);
}

/// rumqttd stops serving an in-process link after filling its buffer with 200 notifications
/// until the link says it is ready again; a bridge that missed that stalled for good as soon as
/// 200 publishes piled up while it waited for RabbitMQ's confirms (300 agents did it at once;
/// so would a RabbitMQ outage under a busy fleet). 2,000 envelopes published as fast as MQTT
/// allows must all reach RabbitMQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_publishes_does_not_stall_the_bridge() {
    let _heavy = HEAVY.lock().await;
    let vhost = Vhost::new("burst");
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &vhost.url, CREDENTIALS);
    let (client, mut eventloop) = session(broker.mqtt, "pi-a").await;
    let poller = tokio::spawn(async move {
        loop {
            if let Err(e) = eventloop.poll().await {
                panic!("pi-a's session failed: {e}");
            }
        }
    });
    const BURST: u64 = 2_000;
    for seq in 0..BURST {
        let envelope = wire::encode(&wire::Envelope {
            node_id: "pi-a".into(),
            epoch: 1,
            first_seq: seq,
            events: vec![],
            dropped: Default::default(),
        });
        client
            .publish(wire::events_topic("pi-a"), QoS::AtLeastOnce, false, envelope)
            .await
            .unwrap();
    }
    let start = Instant::now();
    let mut out = 0.0;
    while start.elapsed() < Duration::from_secs(30) {
        out = broker.metric("auditflow_broker_envelopes_out_total");
        if out >= BURST as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    poller.abort();
    assert_eq!(
        out, BURST as f64,
        "the bridge stalled: {out} of {BURST} envelopes reached RabbitMQ"
    );
}

/// A bare rumqttd with no authentication and no topic ACL: what a forged ack would meet if it
/// got past the real broker (a compromised broker, or a broker without the ACL). Returns the
/// port and an in-process link that can read and publish anything.
fn bare_rumqttd() -> (u16, rumqttd::local::LinkTx, rumqttd::local::LinkRx) {
    use rumqttd::{ConnectionSettings, RouterConfig, ServerSettings};
    let port = free_port();
    let server = ServerSettings {
        name: "bare".to_owned(),
        listen: ([127, 0, 0, 1], port).into(),
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: 2 << 20,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let router = RouterConfig {
        topic_acl: None,
        on_takeover: None,
        max_connections: 16,
        max_outgoing_packet_count: 256,
        max_segment_size: 1 << 20,
        max_segment_count: 8,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    let config = rumqttd::Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("bare".to_owned(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    let mut broker = rumqttd::Broker::new(config);
    let (tx, rx) = broker.link("forger").unwrap();
    std::thread::spawn(move || {
        let _ = broker.start();
    });
    (port, tx, rx)
}

/// design.md §4.2: an agent applies an ack only up to what it has published in that epoch, and
/// only for a run that reaches its watermark. A forged `RunAck{epoch, 0, u64::MAX}` (the probe
/// that once deleted 1,216 unsent events) is ignored and counted, so is a run that starts above
/// the watermark (the broker never saw the events in between); a true ack still works.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_ignores_acks_beyond_what_it_sent_or_above_its_watermark() {
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (mqtt, mut tx, mut rx) = bare_rumqttd();
    tx.subscribe(wire::events_topic("pi-f")).unwrap();
    let http = free_port();
    let config = dir.path().join("pi-f.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = \"pi-f\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n\
             [spool]\ndir = \"{}\"\nfsync = false\n\
             [transport]\nkind = \"mqtt\"\nmqtt_url = \"mqtt://127.0.0.1:{mqtt}\"\n\
             mqtt_password = \"unused\"\n\
             [synthetic]\nenabled = true\nrate_per_sec = 200.0\nlimit = 40\n",
            dir.path().join("pi-f").display()
        ),
    )
    .unwrap();
    let agent = Command::new(workspace_bin("auditflow-agent"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("start auditflow-agent");
    let _agents = Agents(vec![agent]);

    // The first envelope tells the spool's epoch and how far the agent has sent.
    let first = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(Some(rumqttd::Notification::Forward(f))) = rx.next().await {
                return wire::decode::<wire::Envelope>(&f.publish.payload).expect("an envelope");
            }
        }
    })
    .await
    .expect("no envelope from the agent within 20 s");
    let metric = |name: &str| -> f64 {
        http_get(http, "/metrics")
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
            })
            .unwrap_or(-1.0)
    };
    let end = first.end_seq();
    assert_eq!(first.first_seq, 0, "a fresh spool starts at 0");
    let refusals = [
        ("unsent", wire::RunAck { epoch: first.epoch, from_seq: 0, up_to_seq: u64::MAX }),
        ("gap", wire::RunAck { epoch: first.epoch, from_seq: 1, up_to_seq: end }),
    ];
    for (reason, ack) in refusals {
        let refused = format!("auditflow_agent_acks_refused_total{{reason=\"{reason}\"}}");
        tx.publish(wire::run_ack_topic("pi-f"), wire::encode(&ack)).unwrap();
        let start = Instant::now();
        while metric(&refused) < 1.0 {
            assert!(start.elapsed() < Duration::from_secs(10), "{ack:?} was not counted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Give a wrongly applied ack time to reach the spool before looking.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(agent_state(dir.path(), "pi-f"), (first.epoch, 0), "{ack:?} moved the spool");
        assert_eq!(metric("auditflow_agent_acked_events_total"), 0.0);
    }

    // The true ack for the first envelope is applied.
    tx.publish(
        wire::run_ack_topic("pi-f"),
        wire::encode(&wire::RunAck { epoch: first.epoch, from_seq: 0, up_to_seq: end }),
    )
    .unwrap();
    let start = Instant::now();
    while agent_state(dir.path(), "pi-f").1 < end {
        assert!(start.elapsed() < Duration::from_secs(10), "the true ack was not applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// base64url without padding, as JWKs spell key material.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// A signing key the test makes, as the cluster's service-account issuer would hold it, and
/// its public half as a JWK.
struct IssuerKey {
    kid: String,
    alg: jsonwebtoken::Algorithm,
    key: jsonwebtoken::EncodingKey,
    jwk: serde_json::Value,
}

impl IssuerKey {
    /// ECDSA P-256 (ES256), made with rcgen.
    fn ec(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let point = pair.public_key_raw();
        assert_eq!((point.len(), point[0]), (65, 4), "an uncompressed P-256 point");
        Self {
            kid: kid.to_owned(),
            alg: jsonwebtoken::Algorithm::ES256,
            key: jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: serde_json::json!({
                "use": "sig", "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
                "x": b64url(&point[1..33]), "y": b64url(&point[33..]),
            }),
        }
    }

    /// RSA 2048 (RS256, a cluster's default), made with the openssl command.
    fn rsa(kid: &str, dir: &Path) -> Self {
        let pem = dir.join(format!("{kid}.pem"));
        let ok = Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
            .arg(&pem)
            .stderr(Stdio::null())
            .status()
            .expect("run openssl (Debian package openssl)")
            .success();
        assert!(ok, "openssl genpkey failed");
        let out = Command::new("openssl")
            .args(["rsa", "-noout", "-modulus", "-in"])
            .arg(&pem)
            .output()
            .unwrap();
        let hex = String::from_utf8(out.stdout).unwrap();
        let hex = hex.trim().strip_prefix("Modulus=").expect("openssl printed the modulus");
        let modulus: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        Self {
            kid: kid.to_owned(),
            alg: jsonwebtoken::Algorithm::RS256,
            key: jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(&pem).unwrap()).unwrap(),
            jwk: serde_json::json!({
                "use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256",
                "n": b64url(&modulus), "e": "AQAB",
            }),
        }
    }

    fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const AGENT_SA: &str = "system:serviceaccount:auditflow:auditflow-agent";

/// The claims the kubelet puts in an agent pod's projected token (Kubernetes 1.30+).
fn kube_claims(node: &str) -> serde_json::Value {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    serde_json::json!({
        "aud": ["auditflow-broker"],
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "iss": ISSUER,
        "jti": "7d4b3c1e",
        "sub": AGENT_SA,
        "kubernetes.io": {
            "namespace": "auditflow",
            "node": { "name": node, "uid": "0b8c4e52-1f0e-4b8e-9a55-3f1c2d7e6a10" },
            "pod": { "name": format!("auditflow-agent-{node}"), "uid": "5a2d9c40-8e1b-4f3a-b6d2-1e7f0c9a3b55" },
            "serviceaccount": { "name": "auditflow-agent", "uid": "c0ffee00" },
        },
    })
}

/// design.md §4.3: in the cluster an agent's credential is its projected service-account
/// token, bound by the kubelet to its node. The broker checks it against the cluster's keys
/// (a key set the test makes; no API server is needed to verify a JWT): a token lets in only
/// the node it names, and every way of bending it is refused and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_admit_only_the_node_they_name() {
    let _heavy = HEAVY.lock().await;
    let vhost = Vhost::new("token");
    let dir = tempfile::tempdir().unwrap();
    let (rsa, ec) = (IssuerKey::rsa("rsa-1", dir.path()), IssuerKey::ec("ec-1"));
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({ "keys": [rsa.jwk, ec.jwk] }).to_string()).unwrap();
    let kubernetes =
        format!("[mqtt.kubernetes]\njwks_file = \"{}\"\nissuer = \"{ISSUER}\"\n", jwks.display());
    let broker = Broker::start_with(dir.path(), &vhost.url, CREDENTIALS, &kubernetes);

    // Tokens a kubelet would issue, with either key, let their own node in.
    for key in [&rsa, &ec] {
        let token = key.sign(&kube_claims("k3s-node-1"));
        assert!(
            try_connect(broker.mqtt, "k3s-node-1", Some(("k3s-node-1", &token))).await,
            "a valid {:?} token was refused",
            key.alg
        );
    }

    // Every bent token is refused.
    let stranger = IssuerKey::ec("ec-1");
    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    let good = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = kube_claims("k3s-node-1");
        f(&mut c);
        rsa.sign(&c)
    };
    cases.push(("another node's token", rsa.sign(&kube_claims("k3s-node-2")), "token_node"));
    cases.push((
        "no node claim",
        good(&|c| {
            c["kubernetes.io"].as_object_mut().unwrap().remove("node");
        }),
        "token_node",
    ));
    cases.push(("expired", good(&|c| c["exp"] = serde_json::json!(1_000_000)), "token_invalid"));
    cases.push((
        "another audience",
        good(&|c| c["aud"] = serde_json::json!(["kubernetes"])),
        "token_invalid",
    ));
    cases.push((
        "another issuer",
        good(&|c| c["iss"] = serde_json::json!("https://evil")),
        "token_invalid",
    ));
    cases.push((
        "another service account",
        good(&|c| c["sub"] = serde_json::json!("system:serviceaccount:default:default")),
        "token_service_account",
    ));
    cases.push((
        "signed by a stranger's key",
        stranger.sign(&kube_claims("k3s-node-1")),
        "token_invalid",
    ));
    // Algorithm confusion: HMAC keyed with the public key's bytes, and `none`.
    let hmac = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        let secret = rsa.jwk["n"].as_str().unwrap().as_bytes().to_vec();
        jsonwebtoken::encode(
            &header,
            &kube_claims("k3s-node-1"),
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap()
    };
    cases.push(("HS256 with the public key", hmac, "token_unknown_key"));
    let unsigned = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","kid":"rsa-1"}"#),
        b64url(kube_claims("k3s-node-1").to_string().as_bytes())
    );
    cases.push(("alg none", unsigned, "token_malformed"));
    let mut expected: HashMap<&str, f64> = HashMap::new();
    for (what, token, reason) in &cases {
        assert!(
            !try_connect(broker.mqtt, "k3s-node-1", Some(("k3s-node-1", token))).await,
            "{what}: accepted"
        );
        *expected.entry(reason).or_default() += 1.0;
    }
    // A valid token under another client id or username.
    let token = rsa.sign(&kube_claims("k3s-node-1"));
    assert!(!try_connect(broker.mqtt, "k3s-node-2", Some(("k3s-node-2", &token))).await);
    assert!(!try_connect(broker.mqtt, "k3s-node-2", Some(("k3s-node-1", &token))).await);
    *expected.entry("token_node").or_default() += 1.0;
    *expected.entry("auth").or_default() += 1.0;
    for (reason, n) in expected {
        let name = format!("auditflow_broker_clients_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(broker.metric(&name), n, "{name}");
    }

    // An agent with its token in a file (as the DaemonSet mounts it) delivers end to end,
    // and passwords still work beside tokens.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, ec.sign(&kube_claims("k3s-node-1"))).unwrap();
    let url = format!("mqtt://127.0.0.1:{}", broker.mqtt);
    let mut agents = Agents(vec![start_agent_with_password_file(
        dir.path(),
        "k3s-node-1",
        &url,
        &token_file,
        300,
        500,
    )]);
    agents.0.push(start_agent(dir.path(), "pi-a", broker.mqtt, password("pi-a"), 300, 500));
    wait_all(&mut agents.0, Duration::from_secs(60));
    let seen = drain_events(&vhost.url).await;
    assert_complete(dir.path(), &["k3s-node-1", "pi-a"], &seen);
}

/// An agent whose MQTT password is read from a file.
fn start_agent_with_password_file(
    dir: &Path,
    node: &str,
    url: &str,
    file: &Path,
    events: u64,
    rate: u32,
) -> Child {
    let config = dir.join(format!("{node}.toml"));
    std::fs::write(
        &config,
        format!(
            "node_id = \"{node}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [spool]\ndir = \"{}\"\nfsync = false\n\
             [transport]\nkind = \"mqtt\"\nmqtt_url = \"{url}\"\nmqtt_password_file = \"{}\"\n\
             [synthetic]\nenabled = true\nrate_per_sec = {rate}.0\nlimit = {events}\n",
            dir.join(node).display(),
            file.display()
        ),
    )
    .unwrap();
    Command::new(workspace_bin("auditflow-agent"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("start auditflow-agent")
}
