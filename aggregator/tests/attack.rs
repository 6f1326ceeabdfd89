//! The attack suite (docs/security.md §6): the probes a hostile node (holding its own valid
//! MQTT password) or a hostile peer on the network can make, run against both profiles — the
//! cluster one (auditflow-broker and a cluster aggregator on the real RabbitMQ, Redis and
//! PostgreSQL) and embedded mode — each probe checked by what the attacker can observe. Prints
//! one line per probe and `attack: tried=<n> held=<n>`; fails unless every probe held.
//! `scripts/attack.sh` runs it. Probes that need a bare broker or a real agent (forged acks
//! past the broker, tokens of another node) live in `broker/tests/through_broker.rs`.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support::{Aggregator, Broker, Env, free_port, request, workspace_bin};

const ADMIN: &str = "attack-admin-token-0123456789";
const GITHUB_SECRET: &str = "attack-github-secret-0123";
const NODES: [(&str, &str); 2] = [("pi-a", "alpha-password-0001"), ("pi-b", "bravo-password-0002")];

/// Processes killed when the test ends however it ends.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Where the probes aim.
struct Target {
    profile: &'static str,
    mqtt: u16,
    api: u16,
}

fn wait_ready(port: u16, child: &mut Child, what: &str) {
    let start = Instant::now();
    while !support::http_get(port, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited: {status}");
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{what} is not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn credentials() -> String {
    NODES.iter().map(|(n, p)| format!("{n}:{p}\n")).collect()
}

fn start_embedded(dir: &Path, procs: &mut Procs) -> Target {
    let (api, metrics, mqtt) = (free_port(), free_port(), free_port());
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("agents.credentials"), credentials()).unwrap();
    let mut child = Command::new(workspace_bin("auditflow"))
        .args(["--data-dir", data.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{api}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .args(["--mqtt-listen", &format!("127.0.0.1:{mqtt}")])
        .args(["--no-demo", "run"])
        .env_remove("AMQP_URL")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("AUDITFLOW_API_TOKENS", format!("boss:{ADMIN}:admin"))
        .env("AUDITFLOW_GITHUB_SECRET", GITHUB_SECRET)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("embedded.log")).unwrap())
        .spawn()
        .expect("start auditflow");
    wait_ready(api, &mut child, "the embedded aggregator");
    procs.0.push(child);
    Target { profile: "embedded", mqtt, api }
}

/// A session as `client_id` with `user`'s password; `None` when the broker refused it.
async fn connect(
    port: u16,
    client_id: &str,
    user: &str,
    password: &str,
) -> Option<(AsyncClient, rumqttc::EventLoop)> {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_credentials(user, password);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => Some((client, eventloop)),
        _ => None,
    }
}

fn password(node: &str) -> &'static str {
    NODES.iter().find(|(n, _)| *n == node).map(|(_, p)| *p).unwrap()
}

/// Polls until the broker drops the session (true) or 5 s pass (false); an acknowledgement of
/// the refused packet counts as not dropped.
async fn dropped(eventloop: &mut rumqttc::EventLoop) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await {
            Ok(Err(_)) => return true,
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => return false,
            Ok(Ok(Event::Incoming(Packet::SubAck(s))))
                if s.return_codes
                    .iter()
                    .any(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure)) =>
            {
                return false;
            }
            _ => {}
        }
    }
    false
}

fn envelope(node: &str) -> Vec<u8> {
    wire::encode(&wire::Envelope {
        node_id: node.into(),
        epoch: 7,
        first_seq: 0,
        events: vec![wire::synth::Synth::new(3).next_event(wire::Timestamp::now())],
        dropped: Default::default(),
    })
}

/// Publishes `payload` on pi-a's own events topic and reports whether an `Ack` for it came
/// back within 3 s (a refused envelope is never acknowledged).
async fn acked_on_own_topic(port: u16, payload: Vec<u8>) -> bool {
    let Some((client, mut eventloop)) = connect(port, "pi-a", "pi-a", password("pi-a")).await
    else {
        panic!("pi-a cannot connect with its own password");
    };
    client.subscribe(wire::ack_topic("pi-a"), QoS::AtLeastOnce).await.unwrap();
    client.publish(wire::events_topic("pi-a"), QoS::AtLeastOnce, false, payload).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await
            && wire::decode::<wire::Ack>(&p.payload).is_ok_and(|a| a.epoch == 7)
        {
            return true;
        }
    }
    false
}

/// Every probe against `t`: (what was tried, whether it held).
async fn probes(t: &Target) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut held = |what: &str, ok: bool| out.push((format!("{}: {what}", t.profile), ok));

    // Identity.
    held(
        "log in as pi-b with pi-a's password",
        connect(t.mqtt, "pi-b", "pi-b", password("pi-a")).await.is_none(),
    );
    held(
        "client id pi-b, username pi-a",
        connect(t.mqtt, "pi-b", "pi-a", password("pi-a")).await.is_none(),
    );
    held("no password", connect(t.mqtt, "pi-a", "pi-a", "").await.is_none());
    // Topics: another node's, acks, wildcards.
    for (topic, payload) in [
        (wire::events_topic("pi-b"), envelope("pi-b")),
        (wire::heartbeat_topic("pi-b"), b"\x01".to_vec()),
        (wire::ack_topic("pi-b"), wire::encode(&wire::Ack { epoch: 1, up_to_seq: u64::MAX })),
        (
            wire::run_ack_topic("pi-b"),
            wire::encode(&wire::RunAck { epoch: 1, from_seq: 0, up_to_seq: u64::MAX }),
        ),
        ("auditflow/v1/other".to_owned(), b"x".to_vec()),
    ] {
        let (client, mut eventloop) =
            connect(t.mqtt, "pi-a", "pi-a", password("pi-a")).await.unwrap();
        client.publish(topic.clone(), QoS::AtLeastOnce, false, payload).await.unwrap();
        held(&format!("publish on {topic}"), dropped(&mut eventloop).await);
    }
    for filter in [
        "#",
        "auditflow/v1/events/+",
        "auditflow/v1/ack/pi-b",
        "auditflow/v1/run-ack/pi-b",
        "auditflow/v1/heartbeat/+",
    ] {
        let (client, mut eventloop) =
            connect(t.mqtt, "pi-a", "pi-a", password("pi-a")).await.unwrap();
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        held(&format!("subscribe to {filter}"), dropped(&mut eventloop).await);
    }
    // Envelopes on its own topic claiming another node, or garbage.
    held("own topic, envelope of pi-b", !acked_on_own_topic(t.mqtt, envelope("pi-b")).await);
    held(
        "own topic, undecodable frame",
        !acked_on_own_topic(t.mqtt, b"\xff\x00garbage".to_vec()).await,
    );
    held(
        "own topic, own envelope is acked (control)",
        acked_on_own_topic(t.mqtt, envelope("pi-a")).await,
    );

    // The API.
    let api = t.api;
    held(
        "API without a token",
        request(api, "GET", "/api/v1/alerts", None, None, &[]).status == 401,
    );
    let big = vec![b'['; 2 << 20];
    held(
        "API body of 2 MiB",
        request(api, "POST", "/api/v1/events", Some(ADMIN), Some(&big), &[]).status == 413,
    );
    let nested = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    held(
        "API JSON nested 5,000 deep",
        request(api, "POST", "/api/v1/events", Some(ADMIN), Some(nested.as_bytes()), &[]).status
            == 400,
    );
    // Webhooks: a signed body replayed under a new delivery id; a bad signature that
    // announces a large body is answered before any of it is read.
    let body = br#"{"ref":"refs/heads/main","forced":true,"repository":{"full_name":"acme/site","default_branch":"main"},"sender":{"login":"mallory"}}"#;
    let sig = {
        use hmac::{KeyInit, Mac};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(GITHUB_SECRET.as_bytes()).unwrap();
        mac.update(body);
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    };
    let hook = |delivery: &str| {
        request(
            api,
            "POST",
            "/hooks/github",
            None,
            Some(body),
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", delivery),
                ("X-Hub-Signature-256", &sig),
            ],
        )
    };
    let first = hook("delivery-1");
    let replay = hook("delivery-2");
    held(
        "webhook replayed under a new delivery id",
        first.status == 200 && replay.status == 200 && replay.json()["duplicate"] == true,
    );
    held("webhook, bad signature announcing 4 MiB", {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", api)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "POST /hooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n\
             X-Hub-Signature-256: sha256=00\r\nContent-Length: 4194304\r\n\r\n"
        )
        .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).is_ok() && &head[9..12] == b"401"
    });
    // A connection that sends nothing is dropped after the header-read timeout.
    held("silent HTTP connection", {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", api)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut buf = [0u8; 64];
        let mut closed = false;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => {
                    closed = true;
                    break;
                }
                Ok(_) => {}
            }
        }
        closed && start.elapsed() < Duration::from_secs(14)
    });
    // Every refused action raised an alert about the attacker, and none about its victim.
    held("refusals raise FLEET-MQTT-REFUSED-001 for pi-a only", {
        let start = Instant::now();
        loop {
            let r = request(
                api,
                "GET",
                "/api/v1/alerts?rule=FLEET-MQTT-REFUSED-001",
                Some(ADMIN),
                None,
                &[],
            );
            let nodes: Vec<String> = r.json()["alerts"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x["node"].as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            if !nodes.is_empty() || start.elapsed() > Duration::from_secs(15) {
                break nodes == ["pi-a"];
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    // Token guessing backs off (last: it locks this address out for a while).
    let statuses: Vec<u16> = (0..25)
        .map(|i| {
            request(api, "GET", "/api/v1/alerts", Some(&format!("guess-{i:020}")), None, &[]).status
        })
        .collect();
    held(
        "25 token guesses",
        statuses.iter().take(20).all(|&s| s == 401) && statuses[20..].iter().all(|&s| s == 429),
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_is_refused_in_both_profiles() {
    let env = Env::new("attack").await;
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs(Vec::new());
    let broker = Broker::start(dir.path(), &env.amqp_url, &NODES, free_port());
    let mqtt = broker.mqtt;
    let aggregator = Aggregator::start_with(
        &env,
        dir.path(),
        "attack",
        "",
        &[
            ("AUDITFLOW_API_TOKENS", &format!("boss:{ADMIN}:admin")),
            ("AUDITFLOW_GITHUB_SECRET", GITHUB_SECRET),
        ],
    );
    let cluster = Target { profile: "cluster", mqtt, api: aggregator.http };
    let embedded = start_embedded(&dir.path().join("embedded"), &mut procs);

    let mut results = probes(&cluster).await;
    results.extend(probes(&embedded).await);
    for (what, ok) in &results {
        println!("{} {what}", if *ok { "held  " } else { "BROKEN" });
    }
    let held = results.iter().filter(|(_, ok)| *ok).count();
    println!("attack: tried={} held={held}", results.len());
    assert_eq!(held, results.len(), "some attacks succeeded (BROKEN above)");
    drop(aggregator);
}
