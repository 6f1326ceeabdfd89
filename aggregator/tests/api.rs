//! The REST API, legacy read API, live stream and webhook receivers of the real aggregator
//! binary (cluster profile: real RabbitMQ, Redis and PostgreSQL), driven over HTTP.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use support::{Aggregator, Env, Resp, failed_login, post, request, wait_until};

const VIEWER: &str = "viewer-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";
const GITHUB_SECRET: &str = "github-webhook-secret";
const GITLAB_TOKEN: &str = "gitlab-webhook-token";

fn tokens() -> String {
    format!("view:{VIEWER}:viewer,ops:{OPERATOR}:operator,boss:{ADMIN}:admin")
}

fn start(env: &Env, dir: &std::path::Path, name: &str) -> Aggregator {
    let tokens = tokens();
    Aggregator::start_with(
        env,
        dir,
        name,
        "",
        &[
            ("AUDITFLOW_API_TOKENS", tokens.as_str()),
            ("AUDITFLOW_GITHUB_SECRET", GITHUB_SECRET),
            ("AUDITFLOW_GITLAB_TOKEN", GITLAB_TOKEN),
        ],
    )
}

fn get(a: &Aggregator, path: &str, token: &str) -> Resp {
    request(a.http, "GET", path, Some(token), None, &[])
}

fn assert_error(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "{r:?}");
    let body = r.json();
    assert!(body["error"].is_string() && body["message"].is_string(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_lifecycle_filters_pages_and_legacy_shapes() {
    let env = Env::new("api_life").await;
    let dir = tempfile::tempdir().unwrap();
    let a = start(&env, dir.path(), "api");

    // Three failed logins for alice on pi-a within 60 s: ANLY-SEC-001; bob on pi-b twice
    // more than the rule needs; a sensitive file change on pi-b.
    let mut events: Vec<Value> = (0..3).map(|i| failed_login("alice", "pi-a", i * 5, i)).collect();
    events.extend((0..6).map(|i| failed_login("bob", "pi-b", i * 2, 100 + i)));
    events.push(json!({
        "event_id": "00000000-0000-4000-8000-000000000900",
        "timestamp": "2026-11-20T10:01:00Z",
        "source_service": "fim",
        "server_hostname": "pi-b",
        "event_type": "file_modified",
        "severity": "CRITICAL",
        "user_id": "root",
        "action_result": "MODIFIED",
        "details": {"resource": "/etc/shadow"}
    }));
    let r = post(&a, "/api/v1/events", OPERATOR, &Value::Array(events.clone()));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["accepted"], 10);
    // The same events again are recognised.
    let r = post(&a, "/api/v1/events", OPERATOR, &Value::Array(events));
    assert_eq!(
        (r.json()["accepted"].as_u64(), r.json()["duplicates"].as_u64()),
        (Some(0), Some(10))
    );
    // A viewer may not submit.
    assert_error(&post(&a, "/api/v1/events", VIEWER, &failed_login("x", "y", 0, 1)), 403);

    let list = get(&a, "/api/v1/alerts", VIEWER).json();
    let alerts = list["alerts"].as_array().unwrap();
    let by_rule = |rule: &str| alerts.iter().filter(|x| x["rule_id"] == rule).count();
    assert_eq!(by_rule("ANLY-SEC-001"), 2, "{list}");
    assert_eq!(by_rule("ANLY-SEC-002"), 1, "{list}");
    let bob = alerts
        .iter()
        .find(|x| x["rule_id"] == "ANLY-SEC-001" && x["group"]["user"] == "bob")
        .expect("bob's alert");
    assert!(bob["occurrences"].as_i64().unwrap() >= 2, "bob's burst folds: {bob}");

    // Filters.
    let count = |q: &str| {
        let r = get(&a, &format!("/api/v1/alerts?{q}"), VIEWER);
        assert_eq!(r.status, 200, "{q}: {r:?}");
        r.json()["alerts"].as_array().unwrap().len()
    };
    assert_eq!(count("node=pi-a"), 1);
    assert_eq!(count("rule=ANLY-SEC-002"), 1);
    assert_eq!(count("severity=critical"), alerts.len());
    assert_eq!(count("severity=INFO"), 0);
    assert_eq!(count("status=open"), alerts.len());
    assert_eq!(count("q=ALICE"), 1);
    assert_eq!(count("since=2026-11-20T10:00:30Z"), 1);
    assert_eq!(count("until=2026-11-20T10:00:30Z"), 2);
    for hostile in [
        "node=pi-a%27%20OR%20%271%27%3D%271",
        "q=%27%3B%20DROP%20TABLE%20alerts%3B%20--",
        "rule=%22%20OR%201%3D1",
    ] {
        assert_eq!(count(hostile), 0, "{hostile}");
    }
    for bad in [
        "status=closed",
        "severity=LOUD",
        "limit=0",
        "limit=501",
        "since=yesterday",
        "cursor=zzz",
        "colour=red",
        "node=a&node=b",
    ] {
        assert_error(&get(&a, &format!("/api/v1/alerts?{bad}"), VIEWER), 400);
    }

    // Pages of one walk every alert once.
    let mut seen = Vec::new();
    let mut path = "/api/v1/alerts?limit=1".to_owned();
    loop {
        let page = get(&a, &path, VIEWER).json();
        seen.extend(page["alerts"].as_array().unwrap().iter().map(|x| x["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/alerts?limit=1&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), alerts.len());
    let all: Vec<Value> = alerts.iter().map(|x| x["id"].clone()).collect();
    assert_eq!(seen, all);

    // Detail and lifecycle.
    let alice = alerts.iter().find(|x| x["group"]["user"] == "alice").unwrap();
    let id = alice["id"].as_str().unwrap();
    let d = get(&a, &format!("/api/v1/alerts/{id}"), VIEWER).json();
    assert_eq!(d["evidence"][0]["user_id"], "alice");
    assert_eq!(d["raw_event"]["details"]["ip_address"], "203.0.113.9");
    assert_error(&get(&a, "/api/v1/alerts/not-a-uuid", VIEWER), 400);
    assert_error(&get(&a, "/api/v1/alerts/00000000-0000-4000-8000-999999999999", VIEWER), 404);

    let ack = format!("/api/v1/alerts/{id}/ack");
    assert_error(&post(&a, &ack, VIEWER, &json!({"comment": "mine"})), 403);
    assert_error(&request(a.http, "POST", &ack, None, None, &[]), 401);
    assert_error(&post(&a, &ack, OPERATOR, &json!({"comment": 5})), 400);
    let r = post(&a, &ack, OPERATOR, &json!({"comment": "looking <b>now</b>"}));
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("acknowledged")), "{r:?}");
    assert_error(&post(&a, &ack, OPERATOR, &json!({})), 409);
    let r =
        request(a.http, "POST", &format!("/api/v1/alerts/{id}/resolve"), Some(ADMIN), None, &[]);
    assert_eq!(r.json()["status"], "resolved", "{r:?}");
    let r =
        post(&a, &format!("/api/v1/alerts/{id}/reopen"), OPERATOR, &json!({"comment": "again"}));
    assert_eq!(r.json()["status"], "open", "{r:?}");
    let d = get(&a, &format!("/api/v1/alerts/{id}"), VIEWER).json();
    let history: Vec<(String, String, String)> = d["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["actor"].as_str().unwrap().into(),
                h["to_status"].as_str().unwrap().into(),
                h["comment"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            ("ops".into(), "acknowledged".into(), "looking <b>now</b>".into()),
            ("boss".into(), "resolved".into(), String::new()),
            ("ops".into(), "open".into(), "again".into()),
        ]
    );
    assert_eq!(count("status=acknowledged,resolved"), 0);

    // Silences.
    let r = post(
        &a,
        "/api/v1/silences",
        OPERATOR,
        &json!({"matchers": [{"field": "node", "value": "pi-*"}], "comment": "maintenance", "duration": "2h"}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let silence = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(get(&a, "/api/v1/silences", VIEWER).json()["silences"][0]["created_by"], "ops");
    assert_error(
        &post(
            &a,
            "/api/v1/silences",
            VIEWER,
            &json!({"matchers": [{"field": "node", "value": "x"}], "duration": "1h"}),
        ),
        403,
    );
    for bad in [
        json!({"matchers": [], "duration": "1h"}),
        json!({"matchers": [{"field": "colour", "value": "x"}], "duration": "1h"}),
        json!({"matchers": [{"field": "node", "value": "x"}]}),
        json!({"matchers": [{"field": "node", "value": "x"}], "duration": "400d"}),
        json!({"matchers": [{"field": "node", "value": "x"}], "duration": "1h", "extra": 1}),
    ] {
        assert_error(&post(&a, "/api/v1/silences", OPERATOR, &bad), 400);
    }
    let r = request(
        a.http,
        "DELETE",
        &format!("/api/v1/silences/{silence}"),
        Some(OPERATOR),
        None,
        &[],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(get(&a, "/api/v1/silences", VIEWER).json()["silences"].as_array().unwrap().is_empty());

    // Rules: counts, test, reload (the shipped pack cannot be reloaded).
    let rules = get(&a, "/api/v1/rules", VIEWER).json();
    let sec1 =
        rules["rules"].as_array().unwrap().iter().find(|r| r["id"] == "ANLY-SEC-001").unwrap();
    assert!(sec1["firings"].as_i64().unwrap() >= 2, "{sec1}");
    assert_eq!(rules["source"], "shipped");
    let r = post(
        &a,
        "/api/v1/rules/test",
        VIEWER,
        &json!({"event": {"event_type": "file_modified", "action_result": "MODIFIED", "server_hostname": "pi-z", "details": {"resource": "/etc/passwd"}}}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.json()["matched"].as_array().unwrap().contains(&json!("ANLY-SEC-002")), "{r:?}");
    assert_eq!(r.json()["fired"][0]["rule_id"], "ANLY-SEC-002", "{r:?}");
    assert_error(&post(&a, "/api/v1/rules/reload", OPERATOR, &json!({})), 403);
    assert_error(&post(&a, "/api/v1/rules/reload", ADMIN, &json!({})), 409);

    // Stats.
    let s = get(
        &a,
        "/api/v1/stats?from=2026-11-20T00:00:00Z&to=2026-11-21T00:00:00Z&bucket=1h",
        VIEWER,
    )
    .json();
    let total: i64 =
        s["buckets"].as_array().unwrap().iter().map(|b| b["alerts"].as_i64().unwrap()).sum();
    assert_eq!(total, alerts.len() as i64, "{s}");
    assert!(s["buckets"][0]["start"].as_str().unwrap().starts_with("2026-11-20T10:00:00"), "{s}");
    assert_error(&get(&a, "/api/v1/stats?bucket=1ms&from=2026-01-01T00:00:00Z", VIEWER), 400);

    // The legacy read API: flat legacy fields, newest first, its 400 and 404.
    let legacy = get(&a, "/alerts?limit=10&offset=0", VIEWER).json();
    let rows = legacy.as_array().unwrap();
    assert_eq!(rows.len(), alerts.len());
    for row in rows {
        let keys: Vec<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = aggregator::legacy_alert::FLAT_KEYS.to_vec();
        expected.sort_unstable();
        let mut keys = keys.clone();
        keys.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(row["alert_type"], "SECURITY");
    }
    let shadow = rows.iter().find(|r| r["rule_id"] == "ANLY-SEC-002").unwrap();
    assert_eq!(shadow["resource_type"], "FILE");
    assert_eq!(shadow["resource_id"], "/etc/shadow");
    assert_eq!(shadow["server_hostname"], "pi-b");
    assert_eq!(shadow["alert_name"], "Sensitive File Modification Detected");
    assert_eq!(shadow["rule_name"], "Sensitive File Modification Detection");
    assert_eq!(shadow["action_observed"], "FILE_MODIFIED");
    let one = get(&a, &format!("/alerts/{}", shadow["alert_id"].as_str().unwrap()), VIEWER);
    assert_eq!(one.json()["alert_id"], shadow["alert_id"]);
    assert_eq!(get(&a, "/alerts?limit=1&offset=1", VIEWER).json().as_array().unwrap().len(), 1);
    for bad in ["limit=abc", "limit=-1", "offset=-5", "limit=1.5"] {
        assert_error(&get(&a, &format!("/alerts?{bad}"), VIEWER), 400);
    }
    assert_error(&get(&a, "/alerts/not-a-uuid", VIEWER), 404);
    assert_error(&get(&a, "/alerts/00000000-0000-4000-8000-999999999999", VIEWER), 404);
    assert_error(&request(a.http, "GET", "/alerts", None, None, &[]), 401);
}

/// The NDJSON of a search: its events and its summary line.
fn search(a: &Aggregator, query: &str) -> (Vec<Value>, Value) {
    let r = get(a, &format!("/api/v1/events?{query}"), VIEWER);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.head.to_ascii_lowercase().contains("content-type: application/x-ndjson"), "{r:?}");
    let mut lines: Vec<Value> = r
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let summary = lines.pop().expect("a summary line");
    assert!(summary["summary"].is_object(), "{summary}");
    assert_eq!(summary["summary"]["returned"], lines.len(), "{summary}");
    (lines, summary["summary"].clone())
}

/// Events sent through detection are archived and found again: filtered by node, kind, any
/// field rules name and free text, in time order either way, limited, and refused clearly
/// when the query is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_archive_is_searched_by_node_kind_field_and_text() {
    let env = Env::new("api_search").await;
    let dir = tempfile::tempdir().unwrap();
    let a = start(&env, dir.path(), "api");
    let mut events: Vec<Value> = (0..3).map(|i| failed_login("alice", "pi-a", i * 5, i)).collect();
    events.extend((0..4).map(|i| failed_login("bob", "pi-b", 1 + i * 2, 100 + i)));
    events.push(json!({
        "kind": "package", "node": "pi-b", "name": "openssh-server", "version": "1:9.2p1-2",
        "action": "upgrade", "ts": "2026-11-20T10:00:30Z"
    }));
    // Inside alice's window, but a success: not one of the burst's events.
    events.push(json!({
        "kind": "login", "node": "pi-a", "user": "alice", "outcome": "success",
        "src_ip": "198.51.100.4", "ts": "2026-11-20T10:00:07Z"
    }));
    let r = post(&a, "/api/v1/events", OPERATOR, &Value::Array(events));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["accepted"], 9);

    // The burst's alert shows the three failures that made it, oldest first.
    let alerts = get(&a, "/api/v1/alerts?node=pi-a", VIEWER).json();
    let alert = &alerts["alerts"][0];
    assert_eq!(alert["rule_id"], "ANLY-SEC-001", "{alerts}");
    let ev = get(&a, &format!("/api/v1/alerts/{}/evidence", alert["id"].as_str().unwrap()), VIEWER);
    assert_eq!(ev.status, 200, "{ev:?}");
    let ev = ev.json();
    assert_eq!(ev["window_ms"], 60_000);
    let firing = &ev["firings"][0];
    assert_eq!(firing["archived"], true, "{ev}");
    assert_eq!(firing["left_out"], 0);
    let members: Vec<&str> =
        firing["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(
        members,
        (0..3).map(|i| format!("00000000-0000-4000-8000-{i:012}")).collect::<Vec<_>>(),
        "{ev}"
    );
    assert_eq!(firing["event_id"], "00000000-0000-4000-8000-000000000002", "the third triggers");
    assert_error(
        &get(&a, "/api/v1/alerts/00000000-0000-4000-8000-999999999999/evidence", VIEWER),
        404,
    );

    let range = "from=2026-11-20T09:00:00Z&to=2026-11-20T11:00:00Z";
    let (all, summary) = search(&a, range);
    assert_eq!(all.len(), 9, "{all:?}");
    assert_eq!(summary["truncated"], false);
    let times: Vec<&str> = all.iter().map(|e| e["ts"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first: {times:?}");
    assert_eq!(all[0]["user"], "alice");
    assert_eq!(all[0]["node"], "pi-a");
    assert_eq!(all[0]["src_ip"], "203.0.113.9");
    assert_eq!(all[0]["outcome"], "failure");
    assert_eq!(all[0]["id"], "00000000-0000-4000-8000-000000000000", "the legacy event_id");

    let (pi_a, _) = search(&a, &format!("{range}&node=pi-a"));
    assert_eq!(pi_a.len(), 4);
    let (bob, _) = search(&a, &format!("{range}&user=BOB&kind=login"));
    assert_eq!(bob.len(), 4);
    let (pkg, _) = search(&a, &format!("{range}&kind=package,service"));
    assert_eq!(pkg.len(), 1);
    assert_eq!(pkg[0]["name"], "openssh-server");
    let (text, _) = search(&a, &format!("{range}&q=9.2P1"));
    assert_eq!(text.len(), 1);
    let (newest, _) = search(&a, &format!("{range}&order=desc&limit=2"));
    assert_eq!(newest.len(), 2);
    assert_eq!(newest[0]["kind"], "package", "10:00:30 is the newest");
    assert_eq!(newest[1]["ts"], all[all.len() - 2]["ts"]);
    let (none, _) = search(&a, "from=2026-11-21T09:00:00Z&to=2026-11-21T11:00:00Z");
    assert!(none.is_empty());

    for bad in [
        "kind=telepathy",
        "colour=red",
        "order=sideways",
        "limit=0",
        "limit=10001",
        "from=yesterday",
        "from=2026-11-20T11:00:00Z&to=2026-11-20T10:00:00Z",
        "from=2026-01-01T00:00:00Z&to=2026-11-20T10:00:00Z",
        "user=a&user=b",
    ] {
        assert_error(&get(&a, &format!("/api/v1/events?{bad}"), VIEWER), 400);
    }
    assert_error(&request(a.http, "GET", "/api/v1/events", None, None, &[]), 401);
    assert!(a.metric("auditflow_aggregator_archived_events_total") >= 8.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_exists_and_enforces_its_role() {
    let env = Env::new("api_auth").await;
    let dir = tempfile::tempdir().unwrap();
    let a = start(&env, dir.path(), "api");
    let doc = request(a.http, "GET", "/api/v1/openapi.json", None, None, &[]).json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut checked = 0;
    // Wrong tokens are tried on the first routes only: more than 20 from one address start
    // the back-off, checked below.
    let mut wrong_tries = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let concrete = path.replace("{id}", "00000000-0000-4000-8000-000000000001");
            let m = method.to_uppercase();
            let body = (m == "POST").then_some(b"{}".as_slice());
            let send = |token: Option<&str>| {
                if let Some(token) = token.filter(|_| path == "/api/v1/stream") {
                    // The stream never ends; see only its status line.
                    return stream_status(a.http, token);
                }
                request(a.http, &m, &concrete, token, body, &[]).status
            };
            let role = op["x-required-role"].as_str();
            let strongest = send(Some(ADMIN));
            assert!(![405].contains(&strongest), "{m} {path}: documented but answered {strongest}");
            if strongest == 404 {
                let r = request(a.http, &m, &concrete, Some(ADMIN), body, &[]);
                assert_ne!(
                    r.json()["message"],
                    "no such route",
                    "{m} {path} is documented but not routed"
                );
            }
            match role {
                None => {
                    assert!(op["security"].as_array().unwrap().is_empty(), "{m} {path}");
                }
                Some(role) => {
                    let r = request(a.http, &m, &concrete, None, body, &[]);
                    assert_error(&r, 401);
                    assert!(r.head.contains("www-authenticate: Bearer"), "{}", r.head);
                    if wrong_tries < 10 {
                        wrong_tries += 1;
                        assert_error(
                            &request(
                                a.http,
                                &m,
                                &concrete,
                                Some("wrong-token-0123456789"),
                                body,
                                &[],
                            ),
                            401,
                        );
                    }
                    let viewer = send(Some(VIEWER));
                    let operator = send(Some(OPERATOR));
                    match role {
                        "viewer" => assert!(
                            viewer != 401 && viewer != 403,
                            "{m} {path}: viewer got {viewer}"
                        ),
                        "operator" => {
                            assert_eq!(viewer, 403, "{m} {path}");
                            assert!(operator != 401 && operator != 403, "{m} {path}");
                        }
                        "admin" => {
                            assert_eq!((viewer, operator), (403, 403), "{m} {path}");
                        }
                        other => panic!("unknown role {other}"),
                    }
                    assert!(strongest != 401 && strongest != 403, "{m} {path}");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} operations documented");

    // Live streams per token are capped; another token has its own.
    let streams: Vec<BufReader<std::net::TcpStream>> = (0..8)
        .map(|i| {
            let (status, s) = open_stream(a.http, OPERATOR);
            assert_eq!(status, 200, "live stream {i}");
            s
        })
        .collect();
    assert_eq!(stream_status(a.http, OPERATOR), 429, "a ninth live stream was granted");
    assert_eq!(stream_status(a.http, VIEWER), 200);
    drop(streams);

    // Wrong tokens back off: after 20 from one address, 429 with Retry-After, whatever the
    // token (a right one would tell a guesser which guess was right), and counted.
    let mut last = None;
    for _ in 0..12 {
        last = Some(request(
            a.http,
            "GET",
            "/api/v1/alerts",
            Some("guess-0123456789abcdef"),
            None,
            &[],
        ));
    }
    let last = last.unwrap();
    assert_error(&last, 429);
    assert!(last.head.contains("retry-after: "), "{}", last.head);
    assert_error(&get(&a, "/api/v1/alerts", ADMIN), 429);
    assert!(a.metric("auditflow_aggregator_api_denied_total{status=\"429\"}") >= 2.0);
    let t = Instant::now();
    while get(&a, "/api/v1/alerts", ADMIN).status == 429 {
        assert!(t.elapsed() < Duration::from_secs(10), "the back-off never ended");
        std::thread::sleep(Duration::from_millis(500));
    }
    // Undocumented paths are 404 with a JSON body; open endpoints need no token.
    assert_error(&request(a.http, "GET", "/api/v1/nothing", Some(ADMIN), None, &[]), 404);
    assert_eq!(request(a.http, "GET", "/healthz", None, None, &[]).status, 200);
    assert_eq!(request(a.http, "GET", "/metrics", None, None, &[]).status, 200);
    let who = get(&a, "/api/v1/whoami", OPERATOR).json();
    assert_eq!((who["name"].as_str(), who["role"].as_str()), (Some("ops"), Some("operator")));

    // Hostile bodies: clear 4xx JSON, nothing stored.
    let big = vec![b'['; 2 << 20];
    assert_error(&request(a.http, "POST", "/api/v1/events", Some(OPERATOR), Some(&big), &[]), 413);
    assert_error(
        &request(a.http, "POST", "/api/v1/events", Some(OPERATOR), Some(b"{not json"), &[]),
        400,
    );
    let nested = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    assert_error(
        &request(a.http, "POST", "/api/v1/events", Some(OPERATOR), Some(nested.as_bytes()), &[]),
        400,
    );
    assert_error(
        &request(
            a.http,
            "POST",
            "/api/v1/events",
            Some(OPERATOR),
            Some(b"{}"),
            &[("Content-Type", "text/plain")],
        ),
        415,
    );
    let many = Value::Array((0..1001).map(|i| failed_login("m", "h", 0, i)).collect());
    assert_error(&post(&a, "/api/v1/events", OPERATOR, &many), 400);
    let mixed = json!([failed_login("m", "h", 0, 1), {"event_type": 5}]);
    let r = post(&a, "/api/v1/events", OPERATOR, &mixed);
    assert_error(&r, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("event 1"), "{r:?}");
    assert!(get(&a, "/api/v1/alerts", VIEWER).json()["alerts"].as_array().unwrap().is_empty());
    assert!(a.metric("auditflow_aggregator_api_denied_total{status=\"401\"}") > 0.0);
}

/// Opens the live stream and returns its status code.
fn stream_status(port: u16, token: &str) -> u16 {
    open_stream(port, token).0
}

/// Opens the live stream: its status code, and the connection, to keep it open.
fn open_stream(port: u16, token: &str) -> (u16, BufReader<std::net::TcpStream>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")
        .unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(s);
    reader.read_line(&mut line).unwrap();
    (line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_stream_heartbeats_and_webhooks() {
    let env = Env::new("api_live").await;
    let dir = tempfile::tempdir().unwrap();
    let a = start(&env, dir.path(), "api");

    // The live stream announces a new alert.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", a.http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {VIEWER}\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(s);
    let mut lines = Vec::new();
    let mut line = String::new();
    while !lines.iter().any(|l: &String| l.starts_with("event: hello")) {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream closed: {lines:?}");
        lines.push(line.clone());
    }
    assert!(lines[0].starts_with("HTTP/1.1 200"), "{lines:?}");
    let events: Vec<Value> = (0..3).map(|i| failed_login("carol", "pi-c", i, 300 + i)).collect();
    assert_eq!(post(&a, "/api/v1/events", OPERATOR, &Value::Array(events)).status, 200);
    let start = Instant::now();
    let data = loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream closed");
        if let Some(d) = line.trim_end().strip_prefix("data: ").filter(|d| d.contains("alert")) {
            break serde_json::from_str::<Value>(d).unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no alert on the stream");
    };
    assert_eq!(data["change"], "created", "{data}");
    assert_eq!(data["alert"]["group"]["user"], "carol", "{data}");

    // Heartbeats from RabbitMQ show up in the fleet.
    let (_conn, ch) = env.publisher().await;
    let beat = wire::model::Heartbeat {
        node_id: "pi-c".into(),
        version: "0.1.0".into(),
        uptime_secs: 5,
        spool_bytes: 123,
        events_sent: 10,
        dropped: Default::default(),
        rules_version: "r1".into(),
        ts: wire::model::Timestamp::now(),
    };
    support::publish(&ch, wire::queues::HEARTBEATS, &wire::frame::encode(&beat)).await;
    wait_until(Duration::from_secs(10), "the agent in the fleet", async || {
        get(&a, "/api/v1/agents", VIEWER).json()["agents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["node"] == "pi-c" && x["spool_bytes"] == 123 && x["state"] == "ok")
    })
    .await;

    // GitHub: the real push fixture, signed; the same delivery twice; bad signatures.
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/github-webhooks/push-payload.json"
    ))
    .expect("the GitHub webhook fixture");
    let sign = |body: &[u8], secret: &str| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        let sig: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={sig}")
    };
    let hook = |body: &[u8], sig: Option<&str>, delivery: &str| {
        let mut headers = vec![("X-GitHub-Event", "push"), ("X-GitHub-Delivery", delivery)];
        if let Some(s) = sig {
            headers.push(("X-Hub-Signature-256", s));
        }
        request(a.http, "POST", "/hooks/github", None, Some(body), &headers)
    };
    let good = sign(&fixture, GITHUB_SECRET);
    let r = hook(&fixture, Some(&good), "d-1");
    assert_eq!((r.status, r.json()["accepted"].as_u64()), (200, Some(1)), "{r:?}");
    let r = hook(&fixture, Some(&good), "d-1");
    assert_eq!(r.json()["duplicate"], true, "{r:?}");
    // GitHub signs the body only: the same signed body under a new delivery id is a replay,
    // and the same event.
    let r = hook(&fixture, Some(&good), "d-replayed");
    assert_eq!((r.status, r.json()["duplicate"].clone()), (200, json!(true)), "{r:?}");
    // Headers are checked before the body is read: a delivery that announces 4 MiB with a
    // malformed signature, or 9 MiB, is answered at once without a byte of body.
    for (headers, status) in [
        ("X-Hub-Signature-256: sha256=00\r\nContent-Length: 4194304\r\n", 401),
        (
            "X-Hub-Signature-256: sha256=0000000000000000000000000000000000000000000000000000000000000000\r\nContent-Length: 9437184\r\n",
            413,
        ),
    ] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", a.http)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "POST /hooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n{headers}\r\n"
        )
        .unwrap();
        let mut first = [0u8; 12];
        s.read_exact(&mut first).expect("an answer before the body");
        assert_eq!(&first[9..12], status.to_string().as_bytes(), "{headers}");
    }
    assert_error(&hook(&fixture, Some(&sign(&fixture, "wrong")), "d-2"), 401);
    assert_error(&hook(&fixture, None, "d-3"), 401);
    let mut tampered = fixture.clone();
    tampered[10] ^= 1;
    assert_error(&hook(&tampered, Some(&good), "d-4"), 401);
    // A signed body that is not JSON is a 400 after the signature check.
    assert_error(&hook(b"not json", Some(&sign(b"not json", GITHUB_SECRET)), "d-5"), 400);
    // Refused: the malformed signature above, a wrong key, none, a tampered body.
    assert_eq!(
        a.metric("auditflow_aggregator_webhooks_total{provider=\"github\",result=\"refused\"}"),
        4.0
    );

    // A force push to the default branch fires GIT-FORCE-PUSH-001.
    let force = json!({
        "ref": "refs/heads/main", "forced": true,
        "repository": {"full_name": "acme/site", "default_branch": "main"},
        "sender": {"login": "mallory"}, "pusher": {"name": "mallory"}
    })
    .to_string();
    let r = hook(force.as_bytes(), Some(&sign(force.as_bytes(), GITHUB_SECRET)), "d-6");
    assert_eq!(r.json()["firings"], 1, "{r:?}");
    let list = get(&a, "/api/v1/alerts?rule=GIT-FORCE-PUSH-001", VIEWER).json();
    assert_eq!(list["alerts"][0]["group"]["user"], "mallory", "{list}");

    // GitLab: token check.
    let gl = json!({"project": {"path_with_namespace": "acme/site", "default_branch": "main"}, "user_username": "eve", "ref": "refs/heads/main"}).to_string();
    let gitlab = |token: &str| {
        request(
            a.http,
            "POST",
            "/hooks/gitlab",
            None,
            Some(gl.as_bytes()),
            &[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", token)],
        )
    };
    assert_error(&gitlab("nope"), 401);
    assert_eq!(gitlab(GITLAB_TOKEN).status, 200);
}
