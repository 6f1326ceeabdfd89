//! Moving in next to the legacy database (design.md §8.7): AuditFlow's tables in a schema of
//! their own beside the legacy notification service's `alerts` table in `public`; an install
//! of the earlier layout (its tables in `public`) moving into that schema by itself; and
//! `auditflow-aggregator import-legacy` copying a legacy `alerts` table in, once. Against the
//! real PostgreSQL of `DATABASE_URL`, with the real binary; fails loudly without it.

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::Duration;

use aggregator::detect::Firing;
use aggregator::store::postgres::{PgSchema, PgStore, TABLES};
use aggregator::store::{Action, Channel, Status, Store, Transitioned};
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{Aggregator, Env, OUR_SCHEMA, failed_login, pool_at, post, request, wait_until};
use uuid::Uuid;
use wire::model::{Event, EventKind, Outcome, Severity, Source, Timestamp};

const OPERATOR: &str = "operator-token-0123456789";

/// `auditflow-aggregator ARGS` with the test's services in the environment, as a deployment
/// runs it.
fn aggregator(env: &Env, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_auditflow-aggregator"))
        .args(args)
        .env("AMQP_URL", &env.amqp_url)
        .env("DATABASE_URL", &env.database_url)
        .env("REDIS_URL", &env.redis_url)
        .env("RUST_LOG", "info")
        .output()
        .expect("run auditflow-aggregator")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `import-legacy` against `legacy_url` and returns its exit code, its summary line and
/// its stderr.
fn import(env: &Env, legacy_url: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["import-legacy", "--database-url", legacy_url];
    args.extend_from_slice(extra);
    let out = aggregator(env, &args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let summary = stdout
        .lines()
        .find_map(|l| l.strip_prefix("import-legacy: "))
        .unwrap_or_else(|| panic!("no summary line: {stdout}\n{stderr}"))
        .to_owned();
    (out.status.code(), summary, stderr)
}

async fn scalar<T>(pool: &PgPool, sql: &str) -> T
where
    T: Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The tables of a schema, sorted.
async fn tables_in(pool: &PgPool, schema: &str) -> BTreeSet<String> {
    sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = $1")
        .bind(schema)
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// A legacy row as the legacy notification service stored it: `alert_id`, `correlation_id`,
/// `timestamp`, `severity`, rule, actor, host, resource, `client_ip`, and the event.
struct Row<'a> {
    id: &'a str,
    correlation: &'a str,
    at: &'a str,
    severity: &'a str,
    rule: Option<(&'a str, &'a str)>,
    user: &'a str,
    host: Option<&'a str>,
    file: Option<&'a str>,
    client_ip: Option<&'a str>,
    event: Value,
}

async fn insert_legacy(pool: &PgPool, table: &str, r: &Row<'_>) {
    let (rule_id, rule_name) = r.rule.unzip();
    let (resource_type, resource_id) = match r.file {
        Some(path) => (Some("FILE"), Some(path)),
        None => (r.host.map(|_| "SERVER"), r.host),
    };
    let description =
        rule_id.map(|id| format!("{id} for '{}' on '{}'.", r.user, r.host.unwrap_or("?")));
    let sql = format!(
        "INSERT INTO {table} (alert_id, correlation_id, timestamp, alert_name, alert_type,
             severity, description, source_service_name, rule_id, rule_name, actor_type, actor_id,
             client_ip, resource_type, resource_id, server_hostname, action_observed,
             analysis_rule_details, triggered_by_details, impacted_resource_details, metadata,
             raw_event_data)
         VALUES ($1::uuid, $2::uuid, $3::timestamptz, $4, 'SECURITY', $5, $6,
             'audit-event-generator', $7, $8, 'USER', $9, $10::inet, $11, $12, $13,
             'LOGIN_FAILURE', $14, $15, $16, $17, $18)"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(r.id)
        .bind(r.correlation)
        .bind(r.at)
        .bind(rule_name.unwrap_or("Legacy alert"))
        .bind(r.severity)
        .bind(description)
        .bind(rule_id)
        .bind(rule_name)
        .bind(r.user)
        .bind(r.client_ip)
        .bind(resource_type)
        .bind(resource_id)
        .bind(r.host)
        .bind(sqlx::types::Json(json!({"rule_id": rule_id, "rule_name": rule_name})))
        .bind(sqlx::types::Json(
            json!({"actor_type": "USER", "actor_id": r.user, "client_ip": r.client_ip.unwrap_or("N/A")}),
        ))
        .bind(sqlx::types::Json(
            json!({"resource_type": resource_type, "resource_id": resource_id, "server_hostname": r.host}),
        ))
        .bind(sqlx::types::Json(json!({"tags": ["legacy-tag"], "environment": "pilab"})))
        .bind(sqlx::types::Json(&r.event))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("insert legacy row {}: {e}", r.id));
}

/// A firing of AuditFlow's own, as detection makes one.
fn native_firing(id: u128) -> Firing {
    let ts = Timestamp::from_unix(1_790_000_000, 0);
    Firing {
        id: Uuid::from_u128(id),
        fingerprint: "ANLY-SEC-001/dave/pi-9".into(),
        rule_id: "ANLY-SEC-001".into(),
        rule_name: "Failed Login Burst Detection".into(),
        rule_description: "three failures".into(),
        severity: Severity::Critical,
        tags: vec!["legacy".into()].into(),
        group: vec![("user".into(), "dave".into()), ("host".into(), "pi-9".into())],
        title: "3 failed logins for dave on pi-9 within 60 s".into(),
        count: 3,
        node: "pi-9".into(),
        event_id: Uuid::from_u128(id + 1),
        event: Event::new(
            ts,
            Source::AuthLog,
            Severity::Warning,
            EventKind::Login {
                user: "dave".into(),
                src_ip: None,
                method: None,
                outcome: Outcome::Failure,
                reason: None,
            },
        ),
        remediation: None,
        playbook_url: None,
    }
}

const A1: &str = "5b0c0000-0000-4000-8000-000000000001";
const A2: &str = "5b0c0000-0000-4000-8000-000000000002";
/// A3 and A4: one event redelivered to the legacy analysis service, which minted a new
/// `alert_id` each time: two legacy rows, two alerts.
const A3: &str = "5b0c0000-0000-4000-8000-000000000003";
const A4: &str = "5b0c0000-0000-4000-8000-000000000004";
const HIGH: &str = "5b0c0000-0000-4000-8000-000000000005";
const INFINITE: &str = "5b0c0000-0000-4000-8000-000000000006";
const NO_EVENT: &str = "5b0c0000-0000-4000-8000-000000000007";
const SPARSE: &str = "5b0c0000-0000-4000-8000-000000000008";
const BULK: i64 = 2_500;

/// The legacy read API's `GET /alerts/{id}` as the legacy service answered for A1.
fn generator_event() -> Value {
    json!({
        "event_id": "c0e10000-0000-4000-8000-000000000001",
        "timestamp": "2025-07-20T11:29:59.500000Z",
        "source_service": "audit-event-generator",
        "server_hostname": "prod-web-01",
        "event_type": "user_login",
        "severity": "WARNING",
        "user_id": "attacker_bob",
        "action_result": "FAILURE",
        "details": {"reason": "Incorrect password", "ip_address": "192.168.1.150"}
    })
}

/// Fills a database laid out like the legacy notification service's: its `alerts` table and
/// indexes in `public`, with the rows above, one that AuditFlow's own feed put there (`ours`),
/// and `BULK` more, so that the import reads several pages.
async fn fill_legacy(pool: &PgPool, ours: Uuid) {
    support::create_legacy_alerts(pool, "alerts").await;
    let ours = ours.to_string();
    let sec1 = Some(("ANLY-SEC-001", "Failed Login Burst Detection"));
    let rows = [
        Row {
            id: A1,
            correlation: "c0e10000-0000-4000-8000-000000000001",
            at: "2025-07-20 11:30:00+00",
            severity: "CRITICAL",
            rule: sec1,
            user: "attacker_bob",
            host: Some("prod-web-01"),
            file: None,
            client_ip: None,
            event: generator_event(),
        },
        Row {
            id: A2,
            correlation: "c0e10000-0000-4000-8000-000000000002",
            at: "2025-07-20 12:00:00.250+00",
            severity: "critical",
            rule: Some(("ANLY-SEC-002", "Sensitive File Modification Detection")),
            user: "alice",
            host: Some("db-01"),
            file: Some("/etc/shadow"),
            client_ip: Some("203.0.113.9"),
            event: json!({"event_id": "c0e10000-0000-4000-8000-000000000002",
                "event_type": "file_modified", "user_id": "alice", "server_hostname": "db-01",
                "details": {"file_path": "/etc/shadow"}}),
        },
        Row {
            id: A3,
            correlation: "c0e10000-0000-4000-8000-000000000003",
            at: "2025-07-21 08:00:00+00",
            severity: "CRITICAL",
            rule: sec1,
            user: "bob",
            host: Some("web-02"),
            file: None,
            client_ip: None,
            event: json!({"event_id": "c0e10000-0000-4000-8000-000000000003",
                "event_type": "user_login", "user_id": "bob", "server_hostname": "web-02"}),
        },
        Row {
            id: A4,
            correlation: "c0e10000-0000-4000-8000-000000000003",
            at: "2025-07-21 08:00:01+00",
            severity: "CRITICAL",
            rule: sec1,
            user: "bob",
            host: Some("web-02"),
            file: None,
            client_ip: None,
            event: json!({"event_id": "c0e10000-0000-4000-8000-000000000003",
                "event_type": "user_login", "user_id": "bob", "server_hostname": "web-02"}),
        },
        Row {
            id: HIGH,
            correlation: "c0e10000-0000-4000-8000-000000000005",
            at: "2025-07-22 08:00:00+00",
            severity: "HIGH",
            rule: sec1,
            user: "carol",
            host: Some("web-03"),
            file: None,
            client_ip: None,
            event: json!({"event_type": "user_login"}),
        },
        Row {
            id: INFINITE,
            correlation: "c0e10000-0000-4000-8000-000000000006",
            at: "infinity",
            severity: "INFO",
            rule: sec1,
            user: "carol",
            host: Some("web-03"),
            file: None,
            client_ip: None,
            event: json!({"event_type": "user_login"}),
        },
        Row {
            id: NO_EVENT,
            correlation: "c0e10000-0000-4000-8000-000000000007",
            at: "2025-07-22 09:00:00+00",
            severity: "INFO",
            rule: sec1,
            user: "carol",
            host: Some("web-03"),
            file: None,
            client_ip: None,
            event: Value::Null,
        },
        Row {
            id: SPARSE,
            correlation: "c0e10000-0000-4000-8000-000000000008",
            at: "2025-07-23 09:00:00+00",
            severity: "Info",
            rule: None,
            user: "unknown",
            host: None,
            file: None,
            client_ip: None,
            event: json!({}),
        },
        Row {
            id: &ours,
            correlation: "c0e10000-0000-4000-8000-000000000009",
            at: "2026-01-01 00:00:00+00",
            severity: "CRITICAL",
            rule: sec1,
            user: "dave",
            host: Some("pi-9"),
            file: None,
            client_ip: None,
            event: json!({"event_type": "user_login", "user_id": "dave"}),
        },
    ];
    for r in &rows {
        insert_legacy(pool, "alerts", r).await;
    }
    sqlx::query(
        "INSERT INTO alerts (alert_id, correlation_id, timestamp, alert_name, alert_type, severity,
             rule_id, rule_name, server_hostname, raw_event_data)
         SELECT md5('bulk' || i)::uuid, md5('event' || i)::uuid,
             timestamptz '2025-01-01 00:00:00+00' + i * interval '1 minute',
             'Multiple Failed Login Attempts', 'SECURITY',
             (ARRAY['INFO', 'WARNING', 'CRITICAL'])[1 + i % 3], 'ANLY-SEC-001',
             'Failed Login Burst Detection', 'bulk-' || (i % 7),
             jsonb_build_object('event_type', 'user_login', 'user_id', 'u' || i)
         FROM generate_series(1, $1) i",
    )
    .bind(BULK)
    .execute(pool)
    .await
    .expect("insert the bulk rows");
}

/// The first run copies every row it can map, refuses the others by id and reason, and
/// finds AuditFlow's own alert present; the second finds everything present; a refused row
/// corrected in the legacy table comes in with the third. Imported alerts are resolved, map
/// back to what the legacy read API served, and have no outbox rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_legacy_copies_the_history_once() {
    let env = Env::new("legacy_import").await;
    // AuditFlow's store, with one alert of its own that its audit_alerts feed also put into
    // the legacy table.
    let channels = vec![Channel { name: "audit_alerts".into(), silenceable: false }];
    let store = PgStore::connect(&env.database_url, &PgSchema::default(), channels).await.unwrap();
    let ours = native_firing(0xda7e);
    assert_eq!(
        store.commit_at(std::slice::from_ref(&ours), 1_790_000_000_000).await.unwrap().created,
        1
    );

    let legacy_url = env.create_database("legacy").await;
    let legacy = pool_at(&legacy_url, "public").await;
    fill_legacy(&legacy, ours.id).await;
    let read = 9 + BULK as u64;

    let (code, summary, stderr) = import(&env, &legacy_url, &[]);
    assert_eq!(code, Some(1), "refused rows make the exit status 1\n{stderr}");
    assert_eq!(
        summary,
        format!("read={read} imported={} already_present=1 refused=3", read - 4),
        "{stderr}"
    );
    assert!(stderr.contains("rows in public.alerts"), "{stderr}");
    for (id, why) in [
        (HIGH, "severity `HIGH` is not INFO, WARNING or CRITICAL"),
        (INFINITE, "timestamp is not a finite time"),
        (NO_EVENT, "raw_event_data is not a JSON object"),
    ] {
        assert!(stderr.contains(&format!("refused {id}: {why}")), "{id}: {stderr}");
    }

    let pool = env.pool().await;
    let imported: i64 =
        scalar(&pool, "SELECT count(*) FROM alerts WHERE fingerprint LIKE '%/legacy/%'").await;
    assert_eq!(imported as u64, read - 4);
    let id = |s: &str| Uuid::parse_str(s).unwrap();

    // A1 back through the legacy read API's row: what the legacy service served.
    let a1 = store.find_alert(id(A1)).await.unwrap().expect("A1 imported");
    let row = aggregator::legacy_alert::flat(&a1, "pilab");
    assert_eq!(row["alert_id"], A1);
    assert_eq!(row["correlation_id"], "c0e10000-0000-4000-8000-000000000001");
    assert_eq!(row["timestamp"], "2025-07-20 11:30:00+00:00");
    assert_eq!(row["severity"], "CRITICAL");
    assert_eq!(row["rule_id"], "ANLY-SEC-001");
    assert_eq!(row["alert_name"], "Multiple Failed Login Attempts");
    assert_eq!(row["actor_id"], "attacker_bob");
    assert_eq!(row["server_hostname"], "prod-web-01");
    assert_eq!(row["raw_event_data"], generator_event());
    assert_eq!((a1.status, a1.occurrences), (Status::Resolved, 1));
    // Event time from the event; NULL client_ip: no address in the group.
    assert_eq!(a1.first_seen, 1_753_010_999_500);
    assert_eq!(
        a1.group,
        *json!({"user": "attacker_bob", "host": "prod-web-01"}).as_object().unwrap()
    );

    // A2: an odd spelling of a severity, a file, an address.
    let a2 = store.find_alert(id(A2)).await.unwrap().expect("A2 imported");
    assert_eq!((a2.severity.as_str(), a2.node.as_str()), ("CRITICAL", "db-01"));
    assert_eq!(a2.created_at, 1_753_012_800_250);
    assert_eq!(
        Value::Object(a2.group),
        json!({"user": "alice", "host": "db-01", "path": "/etc/shadow", "client_ip": "203.0.113.9"})
    );
    // A3 and A4: one event, two legacy alerts, both kept.
    let (a3, a4) =
        (store.find_alert(id(A3)).await.unwrap(), store.find_alert(id(A4)).await.unwrap());
    assert_eq!(a3.unwrap().correlation_id, a4.unwrap().correlation_id);
    // A row with little in it.
    let sparse = store.find_alert(id(SPARSE)).await.unwrap().expect("SPARSE imported");
    assert_eq!(
        (sparse.rule_id.as_str(), sparse.severity.as_str(), sparse.node.as_str()),
        ("LEGACY-SECURITY", "INFO", "legacy")
    );
    // AuditFlow's own alert is untouched; imported alerts are announced nowhere.
    let mine = store.find_alert(ours.id).await.unwrap().unwrap();
    assert_eq!((mine.rule_id.as_str(), mine.status), ("ANLY-SEC-001", Status::Open));
    let outbox: Vec<Uuid> =
        sqlx::query_scalar("SELECT alert_id FROM outbox").fetch_all(&pool).await.unwrap();
    assert_eq!(outbox, [ours.id]);
    // The history says where an imported alert came from.
    let detail = store.alert(id(A1)).await.unwrap().unwrap();
    assert_eq!(detail.history.len(), 1);
    assert_eq!(
        (detail.history[0].actor.as_str(), detail.history[0].to_status.as_str()),
        ("import-legacy", "resolved")
    );

    // Again: nothing new.
    let (code, summary, stderr) = import(&env, &legacy_url, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(summary, format!("read={read} imported=0 already_present={} refused=3", read - 3));
    let again: i64 =
        scalar(&pool, "SELECT count(*) FROM alerts WHERE fingerprint LIKE '%/legacy/%'").await;
    assert_eq!(again, imported);
    let history: i64 = scalar(&pool, "SELECT count(*) FROM alert_history").await;
    assert_eq!(history, imported);

    // The operator corrects a refused row in the legacy table; the next run takes it.
    sqlx::query("UPDATE alerts SET severity = 'WARNING' WHERE alert_id = $1::uuid")
        .bind(HIGH)
        .execute(&legacy)
        .await
        .unwrap();
    let (code, summary, stderr) = import(&env, &legacy_url, &["--table", "public.alerts"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(summary, format!("read={read} imported=1 already_present={} refused=2", read - 3));
    assert_eq!(store.find_alert(id(HIGH)).await.unwrap().unwrap().severity, "WARNING");
}

/// A legacy database that is not there, or a table that is not the legacy one: exit 1,
/// nothing read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_legacy_fails_loudly_without_a_legacy_table() {
    let env = Env::new("legacy_import_errors").await;
    let (base, _) = env.database_url.rsplit_once('/').unwrap();
    let (code, summary, stderr) = import(&env, &format!("{base}/no_such_database_here"), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(summary, "read=0 imported=0 already_present=0 refused=0");
    assert!(stderr.contains("connect to the legacy database"), "{stderr}");

    let legacy_url = env.create_database("not_legacy").await;
    let legacy = pool_at(&legacy_url, "public").await;
    sqlx::query("CREATE TABLE widgets (id INT)").execute(&legacy).await.unwrap();
    let (code, _, stderr) = import(&env, &legacy_url, &[]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no table `alerts`"), "{stderr}");
    let (code, _, stderr) = import(&env, &legacy_url, &["--table", "widgets"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("public.widgets is not laid out as the legacy"), "{stderr}");
    let (code, _, stderr) = import(&env, &legacy_url, &["--table", "x; DROP TABLE widgets"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("plain SQL identifier"), "{stderr}");
}

/// One database, both services' tables: the legacy `alerts` in `public`, AuditFlow's in
/// `auditflow`. The aggregator migrates and runs there, the legacy table stays as it was, and
/// `import-legacy` pointed at the same database finds the legacy table by default (not
/// AuditFlow's `alerts`, which the role `auditflow` sees first on the default search path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditflow_moves_in_next_to_the_legacy_alerts_table() {
    let env = Env::new("legacy_same_db").await;
    let public = env.pool_in("public").await;
    support::create_legacy_alerts(&public, "public.alerts").await;
    // Another application of the database installed pg_trgm in public before AuditFlow came:
    // AuditFlow's schema, alone on its search path, still gets its search index.
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public")
        .execute(&public)
        .await
        .expect("PostgreSQL: create pg_trgm (contrib)");
    for (id, user) in [(A1, "attacker_bob"), (A2, "alice")] {
        let r = Row {
            id,
            correlation: id,
            at: "2025-07-20 11:30:00+00",
            severity: "CRITICAL",
            rule: Some(("ANLY-SEC-001", "Failed Login Burst Detection")),
            user,
            host: Some("prod-web-01"),
            file: None,
            client_ip: None,
            event: json!({"event_type": "user_login", "user_id": user}),
        };
        insert_legacy(&public, "public.alerts", &r).await;
    }

    let out = aggregator(&env, &["migrate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ours = env.pool().await;
    let want: BTreeSet<String> = TABLES.iter().map(|t| (*t).to_owned()).collect();
    assert_eq!(tables_in(&ours, OUR_SCHEMA).await, want, "the move must know every table");
    let in_public = tables_in(&ours, "public").await;
    assert_eq!(in_public, BTreeSet::from(["alerts".to_owned()]));
    let legacy_rows: i64 = scalar(&public, "SELECT count(*) FROM public.alerts").await;
    assert_eq!(legacy_rows, 2);
    let search: bool =
        scalar(&ours, "SELECT to_regclass('auditflow.alerts_search') IS NOT NULL").await;
    assert!(search, "no trigram index in schema auditflow");

    // The aggregator runs there: an alert of its own.
    let dir = tempfile::tempdir().unwrap();
    let tokens = format!("ops:{OPERATOR}:operator");
    let a = Aggregator::start_with(
        &env,
        dir.path(),
        "same_db",
        "",
        &[("AUDITFLOW_API_TOKENS", &tokens)],
    );
    let events: Vec<Value> = (0..3).map(|i| failed_login("erin", "web-09", i, 900 + i)).collect();
    let r = post(&a, "/api/v1/events", OPERATOR, &Value::Array(events));
    assert_eq!(r.status, 200, "{r:?}");
    wait_until(Duration::from_secs(20), "the alert", async || {
        scalar::<i64>(&ours, "SELECT count(*) FROM alerts").await == 1
    })
    .await;

    // The legacy history, from the same database, found by default.
    let (code, summary, stderr) = import(&env, &env.database_url, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(summary, "read=2 imported=2 already_present=0 refused=0");
    assert!(stderr.contains("2 rows in public.alerts"), "{stderr}");
    let legacy_rows: i64 = scalar(&public, "SELECT count(*) FROM public.alerts").await;
    assert_eq!(legacy_rows, 2, "the legacy table is read, never changed");
    // The legacy read API serves AuditFlow's alert and the legacy history.
    let rows = request(a.http, "GET", "/alerts", Some(OPERATOR), None, &[]).json();
    let mut ids: Vec<&str> =
        rows.as_array().unwrap().iter().map(|r| r["alert_id"].as_str().unwrap()).collect();
    ids.retain(|i| [A1, A2].contains(i));
    ids.sort_unstable();
    assert_eq!((rows.as_array().unwrap().len(), ids), (3, vec![A1, A2]));
}

/// An install of the earlier layout (migrations 0001–0007 run in `public`, an alert with
/// history in it) moves into schema `auditflow` at its first start, in one step, logged with
/// the number of tables; the alert is found there and its lifecycle goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_of_the_earlier_layout_moves_into_its_schema() {
    let env = Env::new("legacy_move").await;
    let public = env.pool_in("public").await;
    let old = tempfile::tempdir().unwrap();
    for entry in
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres")).unwrap()
    {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < "0008" {
            std::fs::copy(&path, old.path().join(name)).unwrap();
        }
    }
    let earlier = sqlx::migrate::Migrator::new(old.path()).await.unwrap();
    assert_eq!(earlier.iter().count(), 7);
    earlier.run(&public).await.expect("the earlier layout's migrations");
    let id = Uuid::from_u128(0x01d_1a70);
    sqlx::query(
        "INSERT INTO alerts (id, fingerprint, rule_id, rule_name, rule_description, severity,
             title, tags, node, group_values, status, occurrences, first_seen, last_seen,
             created_at, updated_at, correlation_id, raw_event, search_text)
         VALUES ($1, 'R-1/old', 'R-1', 'Old rule', '', 'WARNING', 'from before the move', '[]',
             'pi-old', '{}', 'acknowledged', 4, 1000, 2000, 2000, 3000, $2, '{}', 'old')",
    )
    .bind(id)
    .bind(Uuid::from_u128(2))
    .execute(&public)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO alert_history (alert_id, at, actor, action, from_status, to_status, comment)
         VALUES ($1, 3000, 'ops', 'acknowledge', 'open', 'acknowledged', 'mine')",
    )
    .bind(id)
    .execute(&public)
    .await
    .unwrap();
    public.close().await;

    let out = aggregator(&env, &["migrate"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("moved AuditFlow's tables from public into its schema")
            && stderr.contains("\"tables\":9"),
        "{stderr}"
    );
    let ours = env.pool().await;
    assert!(tables_in(&ours, "public").await.is_empty(), "tables left in public");
    let migrations: i64 = scalar(&ours, "SELECT count(*) FROM auditflow._sqlx_migrations").await;
    assert_eq!(migrations, 9, "the seven moved, and 0008 and 0009 after them");

    let store =
        PgStore::connect(&env.database_url, &PgSchema::default(), Vec::new()).await.unwrap();
    let found = store.find_alert(id).await.unwrap().expect("the alert from before the move");
    assert_eq!((found.title.as_str(), found.occurrences), ("from before the move", 4));
    // The history's identity sequence moved with its table.
    let t = store.transition(id, Action::Resolve, "ops", "done", 4000).await.unwrap();
    assert!(matches!(t, Transitioned::Done(_)), "{t:?}");
    let detail = store.alert(id).await.unwrap().unwrap();
    assert_eq!(detail.history.len(), 2);
}

/// A `public._sqlx_migrations` of another application's is not AuditFlow's layout: nothing in
/// `public` moves, a warning says so, and AuditFlow's tables are made in its schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_applications_migrations_in_public_stay_where_they_are() {
    let env = Env::new("legacy_other_app").await;
    let public = env.pool_in("public").await;
    for sql in [
        "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
             installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL,
             checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL)",
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (1, 'widgets', true, '\\x00', 1)",
        "CREATE TABLE firings (id INT)",
    ] {
        sqlx::query(sql).execute(&public).await.unwrap();
    }
    let out = aggregator(&env, &["migrate"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("does not record AuditFlow's migrations: nothing moved"), "{stderr}");
    assert_eq!(
        tables_in(&public, "public").await,
        BTreeSet::from(["_sqlx_migrations".to_owned(), "firings".to_owned()])
    );
    let ours = env.pool().await;
    let migrations: i64 = scalar(&ours, "SELECT count(*) FROM _sqlx_migrations").await;
    assert_eq!(migrations, 9);
}
