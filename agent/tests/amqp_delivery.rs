//! End to end with the real RabbitMQ: 200,000 synthetic events over AMQP while the agent is
//! killed with SIGKILL once and RabbitMQ's application is stopped and started in the middle.
//! Every `(node, epoch, seq)` the agent produced must arrive at least once, none missing.
//! Needs `AMQP_URL` and `rabbitmqctl` (scripts/test.sh provides both); fails loudly without.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};

const EVENTS: u64 = 200_000;

/// One test restarts RabbitMQ: the tests of this file run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| {
        panic!("AMQP_URL is not set: RabbitMQ is required for this test; run scripts/test.sh")
    })
}

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl")
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("RabbitMQ: cannot run rabbitmqctl {args:?}: {e}"));
    assert!(status.success(), "RabbitMQ: rabbitmqctl {args:?} failed: {status}");
}

/// The agent process, killed when the test ends however it ends (an orphan would hold the
/// test runner's output open).
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(config: &std::path::Path) -> Agent {
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

/// A finite synthetic run over AMQP into `queue`, spooling beside the config file; `extra` is
/// appended (filter rules).
fn write_config(
    config: &std::path::Path,
    node: &str,
    url: &str,
    queue: &str,
    rate: u32,
    limit: u64,
    extra: &str,
) {
    let spool = config.parent().expect("config in a directory").join("spool");
    std::fs::write(
        config,
        format!(
            "node_id = \"{node}\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [spool]\ndir = \"{}\"\n\
             [transport]\nkind = \"amqp\"\namqp_url = \"{url}\"\namqp_queue = \"{queue}\"\n\
             amqp_heartbeat_queue = \"{queue}.hb\"\n\
             [synthetic]\nenabled = true\nrate_per_sec = {rate}.0\nlimit = {limit}\n{extra}",
            spool.display()
        ),
    )
    .expect("write the agent config");
}

fn wait_exit(agent: &mut Agent, limit: Duration) -> std::process::ExitStatus {
    let child = &mut agent.0;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for the agent") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the agent did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_despite_sigkill_and_a_rabbitmq_restart() {
    let _serial = SERIAL.lock().await;
    let url = amqp_url();
    let dir = tempfile::tempdir().unwrap();
    let queue = format!("auditflow.test.delivery.{}", std::process::id());
    let config = dir.path().join("agent.toml");
    write_config(&config, "e2e-node", &url, &queue, 40_000, EVENTS, "");

    // First run: killed without warning mid-stream.
    let mut first = start_agent(&config);
    std::thread::sleep(Duration::from_millis(1500));
    first.0.kill().expect("SIGKILL the agent");
    first.0.wait().unwrap();

    // Second run: replays its spool, and RabbitMQ goes away and comes back under it.
    let mut second = start_agent(&config);
    std::thread::sleep(Duration::from_millis(1000));
    rabbitmqctl(&["stop_app"]);
    std::thread::sleep(Duration::from_secs(3));
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    let status = wait_exit(&mut second, Duration::from_secs(180));
    assert!(status.success(), "the agent failed: {status}");

    // The spool's state says how many sequence numbers were handed out.
    let state = std::fs::read_to_string(dir.path().join("spool/state")).unwrap();
    let mut parts = state.split_whitespace();
    let epoch: u64 = parts.next().unwrap().parse().unwrap();
    let acked: u64 = parts.next().unwrap().parse().unwrap();
    assert!(acked >= EVENTS, "the second run alone produced {EVENTS}; acked {acked}");

    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to RabbitMQ at AMQP_URL: {e}"));
    let channel = conn.create_channel().await.unwrap();
    let mut seen = vec![false; acked as usize];
    let mut envelopes = 0u64;
    let mut duplicates = 0u64;
    while let Some(message) =
        channel.basic_get(queue.as_str().into(), BasicGetOptions::default()).await.unwrap()
    {
        let envelope: wire::Envelope = wire::decode(&message.delivery.data).expect("valid frame");
        assert_eq!(envelope.node_id, "e2e-node");
        assert_eq!(envelope.epoch, epoch, "the epoch survives a SIGKILL");
        for seq in envelope.first_seq..envelope.end_seq() {
            let slot = seen.get_mut(seq as usize).expect("no sequence beyond what was handed out");
            duplicates += u64::from(*slot);
            *slot = true;
        }
        envelopes += 1;
        message.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    let missing: Vec<usize> =
        seen.iter().enumerate().filter(|(_, s)| !**s).map(|(i, _)| i).collect();
    println!(
        "delivery: {envelopes} envelopes, {acked} sequence numbers, {duplicates} duplicates, {} missing",
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "missing sequence numbers: {:?}…",
        &missing[..missing.len().min(20)]
    );
    for q in [queue.clone(), format!("{queue}.hb")] {
        channel.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_events_are_counted_and_carried_upstream() {
    let _serial = SERIAL.lock().await;
    let url = amqp_url();
    let dir = tempfile::tempdir().unwrap();
    let queue = format!("auditflow.test.filter.{}", std::process::id());
    let config = dir.path().join("agent.toml");
    let filter = "[[filter]]\naction = \"sample\"\nevery = 4\n";
    write_config(&config, "filter-node", &url, &queue, 20_000, 4000, filter);
    let mut agent = start_agent(&config);
    let status = wait_exit(&mut agent, Duration::from_secs(60));
    assert!(status.success(), "the agent failed: {status}");

    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to RabbitMQ at AMQP_URL: {e}"));
    let channel = conn.create_channel().await.unwrap();
    let (mut events, mut sampled) = (0u64, 0u64);
    while let Some(message) =
        channel.basic_get(queue.as_str().into(), BasicGetOptions::default()).await.unwrap()
    {
        let envelope: wire::Envelope = wire::decode(&message.delivery.data).expect("valid frame");
        events += envelope.events.len() as u64;
        sampled += envelope.dropped.get(wire::DropReason::Sampled);
        message.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(events, 1000, "one in four kept");
    assert_eq!(sampled, 3000, "every sampled-out event is counted upstream");
    for q in [queue.clone(), format!("{queue}.hb")] {
        channel.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
    }
}
