//! Detection end to end with the real binary, RabbitMQ, Redis and PostgreSQL: envelopes (and
//! legacy JSON) published to RabbitMQ, firings read from PostgreSQL.

mod support;

use std::time::Duration;

use support::{Aggregator, Env, alerts, firings, message_count, publish, wait_until};
use wire::model::{Event, EventKind, FileOp, Outcome, Severity, Source, Timestamp};
use wire::{DropCounts, Envelope, queues};

/// Serializes the tests: each starts aggregators and they share the machine's two cores.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const T0: i64 = 1_767_225_600;

fn at(secs: f64) -> Timestamp {
    Timestamp(T0 * 1_000_000_000 + (secs * 1e9) as i64)
}

fn failed_login(user: &str, t: f64) -> Event {
    Event::new(
        at(t),
        Source::AuthLog,
        Severity::Warning,
        EventKind::Login {
            user: user.into(),
            src_ip: None,
            method: Some("password".into()),
            outcome: Outcome::Failure,
            reason: None,
        },
    )
}

fn sudo(user: &str, t: f64) -> Event {
    Event::new(
        at(t),
        Source::AuthLog,
        Severity::Info,
        EventKind::Privilege {
            user: user.into(),
            target_user: "root".into(),
            command: Some("/bin/ls".into()),
            tty: None,
            cwd: None,
            outcome: Outcome::Success,
        },
    )
}

fn file_modified(path: &str, t: f64) -> Event {
    Event::new(
        at(t),
        Source::FileWatch,
        Severity::Warning,
        EventKind::FileChange {
            path: path.into(),
            op: FileOp::Modified,
            old_hash: None,
            new_hash: None,
            size_delta: None,
        },
    )
}

fn envelope(node: &str, first_seq: u64, events: Vec<Event>) -> Vec<u8> {
    wire::frame::encode(&Envelope {
        node_id: node.into(),
        epoch: 1,
        first_seq,
        events,
        dropped: DropCounts::default(),
    })
}

async fn drained(agg: &Aggregator, events: f64) -> bool {
    let seen = agg.metric("auditflow_aggregator_events_in_total")
        + agg.metric("auditflow_aggregator_duplicate_events_total");
    seen >= events
}

#[tokio::test]
async fn failed_login_bursts_fire_once_in_event_time_and_never_twice() {
    let _guard = HEAVY.lock().await;
    let env = Env::new("burst").await;
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(&env, dir.path(), "agg", "");
    let (_conn, ch) = env.publisher().await;

    // Exactly three failures for alice on pi-a within 60 s (event time).
    let alice = envelope(
        "pi-a",
        0,
        vec![failed_login("alice", 0.0), failed_login("alice", 30.0), failed_login("alice", 60.0)],
    );
    publish(&ch, queues::EVENTS, &alice).await;
    // The same three for bob on pi-b, spread over 61 s.
    let bob = envelope(
        "pi-b",
        0,
        vec![failed_login("bob", 0.0), failed_login("bob", 30.5), failed_login("bob", 61.0)],
    );
    publish(&ch, queues::EVENTS, &bob).await;
    // alice's envelope delivered a second time, and an agent replay overlapping it.
    publish(&ch, queues::EVENTS, &alice).await;
    let replay =
        envelope("pi-a", 1, vec![failed_login("alice", 30.0), failed_login("alice", 60.0)]);
    publish(&ch, queues::EVENTS, &replay).await;

    wait_until(Duration::from_secs(30), "all events consumed", async || drained(&agg, 11.0).await)
        .await;
    let pool = env.pool().await;
    assert_eq!(
        firings(&pool).await,
        [("ANLY-SEC-001".to_owned(), "ANLY-SEC-001/alice/pi-a".to_owned())],
        "exactly one firing: alice's burst; bob's spread is not a burst; redeliveries add nothing"
    );
    assert_eq!(alerts(&pool).await, [("ANLY-SEC-001/alice/pi-a".to_owned(), 1)]);
    assert_eq!(agg.metric("auditflow_aggregator_duplicate_events_total"), 5.0);
    // The latency histograms: each evaluated event's age, the one firing's age at commit, and
    // every stage of at least one batch.
    assert_eq!(agg.metric("auditflow_aggregator_event_age_seconds_count"), 6.0);
    assert_eq!(agg.metric("auditflow_aggregator_firing_age_seconds_count"), 1.0);
    for stage in aggregator::telemetry::STAGES {
        let series = format!("auditflow_aggregator_batch_stage_seconds_count{{stage=\"{stage}\"}}");
        assert!(agg.metric(&series) >= 1.0, "{series}");
    }
    // The alert carries the legacy fields of the triggering event.
    let (name, severity, corr): (String, String, sqlx::types::Uuid) =
        sqlx::query_as("SELECT rule_name, severity, correlation_id FROM alerts")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((name.as_str(), severity.as_str()), ("Failed Login Burst Detection", "CRITICAL"));
    assert_eq!(corr.as_bytes(), wire::legacy::event_uuid("pi-a", 1, 2).as_bytes());
}

/// An agent whose spool was damaged moves its waiting records to a new epoch; records it had
/// delivered already (the acknowledgement was lost) come again under new numbers, each event
/// naming its old ones (wire::model::REBASED_FROM). They are the same events: no second firing.
#[tokio::test]
async fn rebased_events_are_the_events_they_were_not_new_ones() {
    let _guard = HEAVY.lock().await;
    let env = Env::new("rebased").await;
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(&env, dir.path(), "agg", "");
    let (_conn, ch) = env.publisher().await;
    let burst = || {
        vec![failed_login("carol", 0.0), failed_login("carol", 20.0), failed_login("carol", 40.0)]
    };
    publish(&ch, queues::EVENTS, &envelope("pi-r", 0, burst())).await;
    let mut moved = burst();
    for (i, e) in moved.iter_mut().enumerate() {
        e.mark_rebased(1, i as u64);
    }
    let rebased = wire::frame::encode(&Envelope {
        node_id: "pi-r".into(),
        epoch: 2,
        first_seq: 10,
        events: moved,
        dropped: DropCounts::default(),
    });
    publish(&ch, queues::EVENTS, &rebased).await;
    wait_until(Duration::from_secs(30), "both envelopes evaluated", async || {
        agg.metric("auditflow_aggregator_events_in_total") >= 6.0
    })
    .await;
    let pool = env.pool().await;
    assert_eq!(
        firings(&pool).await,
        [("ANLY-SEC-001".to_owned(), "ANLY-SEC-001/carol/pi-r".to_owned())],
        "the rebased copy of the burst fired again"
    );
    assert_eq!(alerts(&pool).await, [("ANLY-SEC-001/carol/pi-r".to_owned(), 1)]);
}

#[tokio::test]
async fn undecodable_messages_go_to_the_dead_letter_queue() {
    let _guard = HEAVY.lock().await;
    let env = Env::new("dlq").await;
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(&env, dir.path(), "agg", "");
    let (_conn, ch) = env.publisher().await;
    publish(&ch, queues::EVENTS, b"\x07not a frame").await;
    publish(&ch, queues::LEGACY_EVENTS, b"{\"no\": \"event_type\"}").await;
    publish(&ch, queues::EVENTS, &envelope("pi-a", 0, vec![file_modified("/etc/shadow", 1.0)]))
        .await;
    wait_until(Duration::from_secs(30), "the good envelope", async || drained(&agg, 1.0).await)
        .await;
    wait_until(Duration::from_secs(10), "two invalid messages", async || {
        agg.metric("auditflow_aggregator_invalid_messages_total") >= 2.0
    })
    .await;
    assert_eq!(
        message_count(&ch, queues::EVENTS_DLQ).await,
        2,
        "both bad messages are in the dead-letter queue"
    );
    assert_eq!(message_count(&ch, queues::EVENTS).await, 0, "nothing is requeued");
    assert_eq!(firings(&env.pool().await).await.len(), 1);
    // An undecodable message last in a batch: the batch's ack names the last good delivery,
    // never the rejected one (which would close the channel and cost a reconnect).
    publish(&ch, queues::EVENTS, &envelope("pi-b", 0, vec![file_modified("/etc/shadow", 2.0)]))
        .await;
    publish(&ch, queues::EVENTS, b"\x07not a frame either").await;
    wait_until(Duration::from_secs(30), "the second good envelope", async || {
        drained(&agg, 2.0).await
    })
    .await;
    wait_until(Duration::from_secs(10), "the third invalid message", async || {
        agg.metric("auditflow_aggregator_invalid_messages_total") >= 3.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(message_count(&ch, queues::EVENTS).await, 0, "nothing came back");
    assert_eq!(
        agg.metric("auditflow_aggregator_consumer_sessions_total{feed=\"native\"}"),
        2.0,
        "each of the two consumers kept its first session"
    );
}

/// A deterministic mixed scenario on four nodes: bursts, sudo by unexpected users, sensitive
/// file changes, normal traffic; envelopes of 5 events.
fn scenario() -> Vec<(String, u64, Vec<Event>)> {
    let mut out = Vec::new();
    for n in 0..4 {
        let node = format!("pi-{n}");
        let mut events = Vec::new();
        for i in 0..200 {
            let t = f64::from(i) * 7.0 + f64::from(n);
            events.push(match (i + n) % 9 {
                0..=3 => failed_login(["alice", "bob", "carol"][(i % 3) as usize], t),
                4 => sudo(["mallory", "admin", "eve"][(i % 3) as usize], t),
                5 => file_modified(["/etc/shadow", "/etc/hosts"][(i % 2) as usize], t),
                _ => sudo("pi", t),
            });
        }
        for (k, chunk) in events.chunks(5).enumerate() {
            out.push((node.clone(), (k * 5) as u64, chunk.to_vec()));
        }
    }
    // Interleave nodes as agents would.
    out.sort_by_key(|(node, seq, _)| (*seq, node.clone()));
    out
}

async fn run_scenario(tag: &str, replicas: usize) -> (Vec<(String, String)>, Vec<(String, i64)>) {
    let env = Env::new(tag).await;
    let dir = tempfile::tempdir().unwrap();
    let aggs: Vec<Aggregator> = (0..replicas)
        .map(|i| Aggregator::start(&env, dir.path(), &format!("agg{i}"), ""))
        .collect();
    let (_conn, ch) = env.publisher().await;
    let envelopes = scenario();
    let total: usize = envelopes.iter().map(|(_, _, e)| e.len()).sum();
    for (node, seq, events) in envelopes {
        publish(&ch, queues::EVENTS, &envelope(&node, seq, events)).await;
    }
    wait_until(Duration::from_secs(60), "all events consumed", async || {
        let mut seen = 0.0;
        for a in &aggs {
            seen += a.metric("auditflow_aggregator_events_in_total");
        }
        seen >= total as f64
    })
    .await;
    if replicas > 1 {
        for a in &aggs {
            assert!(
                a.metric("auditflow_aggregator_events_in_total") > 0.0,
                "every replica took part"
            );
        }
    }
    let pool = env.pool().await;
    (firings(&pool).await, alerts(&pool).await)
}

#[tokio::test]
async fn two_aggregators_on_one_queue_fire_like_one() {
    let _guard = HEAVY.lock().await;
    let (one_firings, one_alerts) = run_scenario("one", 1).await;
    let (two_firings, two_alerts) = run_scenario("two", 2).await;
    assert!(one_firings.len() > 20, "the scenario fires: {one_firings:?}");
    assert_eq!(one_firings, two_firings);
    assert_eq!(one_alerts, two_alerts);
}

#[tokio::test]
async fn legacy_json_stream_fires_like_the_native_path() {
    let _guard = HEAVY.lock().await;
    let (native, native_alerts) = run_scenario("native", 1).await;

    let env = Env::new("legacy").await;
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(&env, dir.path(), "agg", "");
    let (_conn, ch) = env.publisher().await;
    let mut total = 0;
    for (node, seq, events) in scenario() {
        for (i, event) in events.iter().enumerate() {
            let id = wire::legacy::event_uuid(&node, 1, seq + i as u64);
            let json = wire::legacy::to_legacy(event, &node, id);
            publish(&ch, queues::LEGACY_EVENTS, json.to_string().as_bytes()).await;
            total += 1;
        }
    }
    wait_until(Duration::from_secs(60), "all legacy events consumed", async || {
        drained(&agg, f64::from(total)).await
    })
    .await;
    let pool = env.pool().await;
    assert_eq!(firings(&pool).await, native);
    assert_eq!(alerts(&pool).await, native_alerts);
}

#[tokio::test]
async fn a_broken_rule_file_keeps_detection_on_the_last_good_set() {
    let _guard = HEAVY.lock().await;
    let env = Env::new("reload").await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    for (name, text) in aggregator::rules::SHIPPED {
        std::fs::write(rules.join(name), text).unwrap();
    }
    let agg =
        Aggregator::start(&env, dir.path(), "agg", &format!("rules_dir = \"{}\"", rules.display()));
    // A broken file lands (as a bad ConfigMap edit would).
    std::fs::write(rules.join("zz-broken.toml"), "[[rule]]\nid = \"X\"\nkind = \"nonsense\"\n")
        .unwrap();
    wait_until(Duration::from_secs(10), "the broken set to be refused", async || {
        agg.metric("auditflow_aggregator_rule_reloads_total{result=\"invalid\"}") >= 1.0
    })
    .await;
    let (_conn, ch) = env.publisher().await;
    publish(
        &ch,
        queues::EVENTS,
        &envelope(
            "pi-a",
            0,
            vec![failed_login("dave", 0.0), failed_login("dave", 1.0), failed_login("dave", 2.0)],
        ),
    )
    .await;
    wait_until(Duration::from_secs(30), "the burst", async || drained(&agg, 3.0).await).await;
    let pool = env.pool().await;
    assert_eq!(
        firings(&pool).await,
        [("ANLY-SEC-001".to_owned(), "ANLY-SEC-001/dave/pi-a".to_owned())],
        "the old rule set still detects"
    );
    // Fixing the file loads the new set, new rule included.
    std::fs::write(
        rules.join("zz-broken.toml"),
        "[[rule]]\nid = \"X-1\"\nname = \"x\"\nkind = \"match\"\nseverity = \"info\"\n\
         when = { field = \"user\", eq = \"zed\" }\n",
    )
    .unwrap();
    wait_until(Duration::from_secs(10), "the fixed set", async || {
        agg.metric("auditflow_aggregator_rule_reloads_total{result=\"ok\"}") >= 1.0
    })
    .await;
    publish(&ch, queues::EVENTS, &envelope("pi-a", 3, vec![sudo("zed", 10.0)])).await;
    wait_until(Duration::from_secs(30), "the new rule", async || drained(&agg, 4.0).await).await;
    let rules_fired: Vec<String> = firings(&pool).await.into_iter().map(|(r, _)| r).collect();
    assert!(rules_fired.contains(&"X-1".to_owned()), "{rules_fired:?}");
}

#[tokio::test]
async fn an_agent_whose_heartbeats_stop_is_reported_once() {
    let _guard = HEAVY.lock().await;
    let env = Env::new("silent").await;
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(&env, dir.path(), "agg", "");
    let (_conn, ch) = env.publisher().await;
    let now = Timestamp::now().as_nanos() / 1_000_000_000;
    // The node's clock is far off (no RTC): silence is measured on the aggregator's clock.
    for (node, age) in [("pi-quiet", 50 * 365 * 86_400)] {
        let hb = wire::Heartbeat {
            node_id: node.into(),
            version: "test".into(),
            uptime_secs: 1,
            spool_bytes: 0,
            events_sent: 0,
            dropped: DropCounts::default(),
            rules_version: String::new(),
            ts: Timestamp::from_unix(now - age, 0),
        };
        publish(&ch, queues::HEARTBEATS, &wire::frame::encode(&hb)).await;
    }
    let pool = env.pool().await;
    wait_until(Duration::from_secs(20), "the silent agent's alert", async || {
        !firings(&pool).await.is_empty()
    })
    .await;
    // Several more watcher rounds (one a second): still exactly one firing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        firings(&pool).await,
        [("FLEET-AGENT-SILENT-001".to_owned(), "FLEET-AGENT-SILENT-001/pi-quiet".to_owned())]
    );
    assert_eq!(agg.metric("auditflow_aggregator_heartbeats_total"), 1.0);
    assert_eq!(agg.metric("auditflow_aggregator_agents_silent"), 1.0);
}
