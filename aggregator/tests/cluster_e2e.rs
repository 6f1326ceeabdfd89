//! The cluster profile end to end, every part a real process on the real services: three
//! agents (MQTT) → auditflow-broker → RabbitMQ → auditflow-aggregator (Redis state,
//! PostgreSQL store) → the REST API.
//!
//! Each agent runs a scripted scenario (`[[scenario]]`) in two phases:
//! * phase 1 (from 1 s): a brute force on pi-a (nine failed root logins in 3 s), a change of
//!   /etc/shadow on pi-b, ordinary traffic everywhere; only ordinary traffic on pi-c;
//! * phase 2 (from 30 s): six more failed root logins and three for `oracle` on pi-a, a
//!   second change of /etc/shadow and one of /etc/sudoers on pi-b. The aggregator is killed
//!   with SIGKILL in the middle of it and restarted.
//!
//! After each phase the API must show exactly the expected alerts with the right folded
//! counts, nothing on pi-c, and the store exactly one firing per expected firing: the
//! redelivered messages after the kill fire nothing twice. Finally `auditflow-dashboard` in
//! front of this aggregator shows the same in a real browser (overview, alerts, the folded
//! alert's detail, fleet, rules) without console errors.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Aggregator, Broker, Env, free_port, request, wait_until, workspace_bin};

// The helpers are shared with the dashboard's own browser test; this file uses some of them.
#[allow(dead_code)]
mod browser {
    include!("../../tests/browser_support.rs");
}

const ADMIN: &str = "e2e-admin-token-0123456789";
const NODES: [(&str, &str); 3] = [
    ("pi-a", "alpha-password-0001"),
    ("pi-b", "bravo-password-0002"),
    ("pi-c", "charlie-password-0003"),
];
/// When phase 2 starts, in seconds after the agents start.
const PHASE_2: f64 = 30.0;

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

/// The scenario of each node.
fn scenario(node: &str) -> String {
    let normal = |count: u32| {
        format!(
            "[[scenario]]\nkind = \"normal\"\nat_s = 0.0\nover_s = {}\ncount = {count}\n",
            PHASE_2 + 8.0
        )
    };
    let logins = |at: f64, user: &str, ip: &str, count: u32, over: f64| {
        format!(
            "[[scenario]]\nkind = \"failed_logins\"\nat_s = {at}\nover_s = {over}\nuser = \"{user}\"\n\
             src_ip = \"{ip}\"\ncount = {count}\n"
        )
    };
    let file = |at: f64, path: &str| {
        format!("[[scenario]]\nkind = \"file_change\"\nat_s = {at}\npath = \"{path}\"\n")
    };
    match node {
        "pi-a" => [
            normal(800),
            logins(1.0, "root", "203.0.113.9", 9, 3.0),
            logins(PHASE_2, "root", "203.0.113.9", 6, 6.0),
            logins(PHASE_2 + 2.0, "oracle", "198.51.100.7", 3, 2.0),
        ]
        .concat(),
        "pi-b" => [
            normal(800),
            file(2.0, "/etc/shadow"),
            file(PHASE_2 + 1.0, "/etc/shadow"),
            file(PHASE_2 + 4.0, "/etc/sudoers"),
        ]
        .concat(),
        _ => normal(2000),
    }
}

fn start_agent(dir: &Path, node: &str, password: &str, mqtt: u16) -> Child {
    let config = dir.join(format!("{node}.toml"));
    std::fs::write(
        &config,
        format!(
            "node_id = \"{node}\"\n{}\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [spool]\ndir = \"{}\"\nfsync = false\n[batch]\nmax_age_ms = 200\n\
             [transport]\nkind = \"mqtt\"\nmqtt_url = \"mqtt://127.0.0.1:{mqtt}\"\n\
             mqtt_password = \"{password}\"\n",
            scenario(node),
            dir.join(node).display()
        ),
    )
    .unwrap();
    Command::new(workspace_bin("auditflow-agent"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{node}.log"))).unwrap())
        .spawn()
        .expect("start auditflow-agent")
}

/// Every alert as `(rule, node, what) → occurrences`, where `what` is the user or path.
fn alerts(agg: &Aggregator) -> BTreeMap<(String, String, String), i64> {
    let r = request(agg.http, "GET", "/api/v1/alerts?limit=500", Some(ADMIN), None, &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let json = r.json();
    let mut out = BTreeMap::new();
    for a in json["alerts"].as_array().unwrap() {
        let group = &a["group"];
        let what = group["user"].as_str().or(group["path"].as_str()).unwrap_or("").to_owned();
        let key = (
            a["rule_id"].as_str().unwrap().to_owned(),
            a["node"].as_str().unwrap().to_owned(),
            what,
        );
        let previous = out.insert(key.clone(), a["occurrences"].as_i64().unwrap());
        assert!(previous.is_none(), "two alerts for {key:?}: {json}");
    }
    out
}

fn expected(entries: &[(&str, &str, &str, i64)]) -> BTreeMap<(String, String, String), i64> {
    entries.iter().map(|(r, n, w, c)| ((r.to_string(), n.to_string(), w.to_string()), *c)).collect()
}

/// Waits until the API shows exactly `want`, then checks that it stays so (a late duplicate
/// would change it).
async fn expect_alerts(
    agg: &Aggregator,
    want: &BTreeMap<(String, String, String), i64>,
    limit: Duration,
) {
    let start = Instant::now();
    loop {
        let got = alerts(agg);
        if &got == want {
            break;
        }
        assert!(start.elapsed() < limit, "alerts after {limit:?}:\n got  {got:?}\n want {want:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(&alerts(agg), want, "the alerts changed after they matched");
}

fn start_aggregator(env: &Env, dir: &Path, name: &str) -> Aggregator {
    let tokens = format!("e2e:{ADMIN}:admin");
    // Agents beat every 10 s; while the aggregator is away no heartbeat is read, so "silent"
    // must mean much longer than the outage.
    Aggregator::start_silent_after(env, dir, name, "", &[("AUDITFLOW_API_TOKENS", &tokens)], "5m")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_through_the_broker_survive_an_aggregator_sigkill() {
    let env = Env::new("e2e").await;
    let dir = tempfile::tempdir().unwrap();
    let mut agg = start_aggregator(&env, dir.path(), "agg1");
    let broker = Broker::start(dir.path(), &env.amqp_url, &NODES, free_port());
    let mqtt = broker.mqtt;
    let mut procs = Procs(vec![]);
    let started = Instant::now();
    for (node, password) in NODES {
        procs.0.push(start_agent(dir.path(), node, password, mqtt));
    }

    // Phase 1.
    let phase_1 = expected(&[
        ("ANLY-SEC-001", "pi-a", "root", 3),
        ("ANLY-SEC-002", "pi-b", "/etc/shadow", 1),
    ]);
    expect_alerts(&agg, &phase_1, Duration::from_secs(20)).await;
    assert!(
        started.elapsed() < Duration::from_secs_f64(PHASE_2),
        "phase 1 took until phase 2 began ({:?}): the machine is too slow for this test's timing",
        started.elapsed()
    );

    // Phase 2, with the aggregator killed in the middle of it.
    tokio::time::sleep_until((started + Duration::from_secs_f64(PHASE_2 + 2.5)).into()).await;
    agg.child.kill().unwrap();
    agg.child.wait().unwrap();
    let killed_at = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let agg = start_aggregator(&env, dir.path(), "agg2");

    let phase_2 = expected(&[
        ("ANLY-SEC-001", "pi-a", "oracle", 1),
        ("ANLY-SEC-001", "pi-a", "root", 5),
        ("ANLY-SEC-002", "pi-b", "/etc/shadow", 2),
        ("ANLY-SEC-002", "pi-b", "/etc/sudoers", 1),
    ]);
    // The agents stop by themselves once the broker has acknowledged all their events.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, (node, _)) in NODES.iter().enumerate() {
        let agent = &mut procs.0[i];
        loop {
            if let Some(status) = agent.try_wait().unwrap() {
                assert!(status.success(), "agent {node} failed: {status}");
                break;
            }
            assert!(Instant::now() < deadline, "agent {node} did not finish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    expect_alerts(&agg, &phase_2, Duration::from_secs(30)).await;

    // Every event reached the aggregator and nothing was dead-lettered.
    let (_conn, ch) = env.publisher().await;
    wait_until(Duration::from_secs(20), "auditflow.events drained", async || {
        support::message_count(&ch, wire::queues::EVENTS).await == 0
    })
    .await;
    assert_eq!(support::message_count(&ch, wire::queues::EVENTS_DLQ).await, 0);

    // Exactly one stored firing per expected firing: nothing fired twice after the kill.
    let pool = env.pool().await;
    let firings = support::firings(&pool).await;
    assert_eq!(firings.len(), 9, "firings: {firings:?}");
    eprintln!(
        "cluster e2e: aggregator killed at {killed_at:?}; all alerts exact after {:?}",
        started.elapsed()
    );

    // The dashboard on this profile's real data.
    let port = free_port();
    let config = dir.path().join("dashboard.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{port}\"\napi_url = \"http://127.0.0.1:{}\"\n", agg.http),
    )
    .unwrap();
    procs.0.push(
        Command::new(workspace_bin("auditflow-dashboard"))
            .args(["--config", config.to_str().unwrap(), "run"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("dashboard.log")).unwrap())
            .spawn()
            .expect("start auditflow-dashboard"),
    );
    wait_until(Duration::from_secs(20), "the dashboard ready", async || {
        support::http_get(port, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    })
    .await;
    let base = format!("http://127.0.0.1:{port}");
    let b = browser::Browser::start().await;
    let c = b.client.clone();
    browser::sign_in(&c, &base, ADMIN).await;
    browser::wait_js(
        &c,
        "the open-alert count",
        "return document.querySelector('#card-open .value')?.textContent === '4'",
    )
    .await;
    browser::no_console_errors(&c, "cluster overview").await;
    browser::screenshot(&c, "cluster-overview").await;
    c.goto(&format!("{base}/#/alerts")).await.unwrap();
    let nodes = browser::wait_js(
        &c,
        "four alert rows",
        "const r = [...document.querySelectorAll('#alert-rows tr')].map(r => r.cells[3].textContent).sort(); return r.length === 4 && r",
    )
    .await;
    assert_eq!(nodes, serde_json::json!(["pi-a", "pi-a", "pi-b", "pi-b"]));
    browser::screenshot(&c, "cluster-alerts").await;
    c.goto(&format!("{base}/#/alerts?rule=ANLY-SEC-001&q=root")).await.unwrap();
    // Found and clicked in one step: the list re-renders when the live stream reports a
    // change, and an element found before that is stale by the time it is clicked.
    browser::wait_js(
        &c,
        "a row to open",
        "const a = document.querySelector('#alert-rows tr a'); if (a) { a.click(); return true; } return false",
    )
    .await;
    let count = browser::wait_js(
        &c,
        "the alert's count",
        "return document.querySelector('#alert-count')?.textContent || false",
    )
    .await;
    assert_eq!(count, serde_json::json!("5"), "the folded brute force");
    browser::screenshot(&c, "cluster-alert").await;
    c.goto(&format!("{base}/#/fleet")).await.unwrap();
    for node in ["pi-a", "pi-b", "pi-c"] {
        browser::wait_css(&c, &format!("#agents tr[data-node='{node}']")).await;
    }
    browser::screenshot(&c, "cluster-fleet").await;
    c.goto(&format!("{base}/#/rules")).await.unwrap();
    browser::wait_css(&c, "#rules tbody tr").await;
    browser::no_console_errors(&c, "cluster pages").await;
    c.close().await.unwrap();
}
