//! Helpers for the aggregator's integration tests: a RabbitMQ vhost, a PostgreSQL database and
//! a Redis key prefix of their own per test, and the real binary started as a process. Needs
//! `AMQP_URL`, `DATABASE_URL`, `REDIS_URL` and `rabbitmqctl` (scripts/test.sh provides them);
//! fails loudly, naming the service, without them.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use sqlx::PgPool;

pub fn env(name: &str, service: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: {service} is required for this test; run scripts/test.sh")
    })
}

pub fn rabbitmqctl(args: &[&str]) {
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

/// A RabbitMQ vhost, a PostgreSQL database and a Redis prefix of one test's own.
pub struct Env {
    pub tag: String,
    pub vhost: String,
    pub amqp_url: String,
    pub database_url: String,
    pub redis_url: String,
    pub redis_prefix: String,
    admin_db: String,
    db_name: String,
}

impl Env {
    pub async fn new(tag: &str) -> Self {
        let tag = format!("{tag}_{}", std::process::id());
        let base = env("AMQP_URL", "RabbitMQ");
        let (prefix, _) = base.rsplit_once('/').expect("AMQP_URL has a vhost path");
        let user = prefix
            .strip_prefix("amqp://")
            .and_then(|r| r.split_once(':'))
            .map(|(u, _)| u.to_owned())
            .expect("AMQP_URL has a user");
        let vhost = format!("auditflow_agg_{tag}");
        let _ = Command::new("rabbitmqctl").args(["delete_vhost", &vhost]).output();
        rabbitmqctl(&["add_vhost", &vhost]);
        rabbitmqctl(&["set_permissions", "-p", &vhost, &user, ".*", ".*", ".*"]);

        let admin_db = env("DATABASE_URL", "PostgreSQL");
        let db_name = format!("auditflow_agg_{tag}");
        let pool = PgPool::connect(&admin_db)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL: cannot connect to DATABASE_URL: {e}"));
        // Databases earlier runs left behind: the test process's id ends every name, so a
        // database whose process is gone is stale (one of a run still going is left alone).
        let stale: Vec<(String,)> = sqlx::query_as(
            "SELECT datname FROM pg_database WHERE datname LIKE 'auditflow\\_agg\\_%'",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        for (name,) in stale {
            let pid = name.rsplit('_').next().unwrap_or_default();
            if pid.parse::<u32>().is_err() || Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&pool)
            .await;
        }
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db_name}")))
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let (db_base, _) = admin_db.rsplit_once('/').unwrap();
        Self {
            amqp_url: format!("{prefix}/{vhost}"),
            vhost,
            database_url: format!("{db_base}/{db_name}"),
            redis_url: env("REDIS_URL", "Redis"),
            redis_prefix: format!("aftest:{tag}:{}:", nanos()),
            tag,
            admin_db,
            db_name,
        }
    }

    /// A pool on the test's database with AuditFlow's schema alone on the search path, as
    /// the aggregator has it: unqualified names are AuditFlow's tables, never a legacy
    /// `alerts` table in `public`.
    pub async fn pool(&self) -> PgPool {
        self.pool_in(OUR_SCHEMA).await
    }

    /// A pool on the test's database with `search_path` as given (`public` for the legacy
    /// service's view of it).
    pub async fn pool_in(&self, search_path: &str) -> PgPool {
        pool_at(&self.database_url, search_path).await
    }

    /// Creates another database of this test's, named after `what`, and returns its URL (the
    /// test process's id ends its name, so a later run drops it as stale).
    pub async fn create_database(&self, what: &str) -> String {
        let name = format!("auditflow_agg_{what}_{}", self.tag);
        let pool = PgPool::connect(&self.admin_db)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL: cannot connect to DATABASE_URL: {e}"));
        for sql in [format!("DROP DATABASE IF EXISTS {name}"), format!("CREATE DATABASE {name}")] {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
        }
        pool.close().await;
        let (db_base, _) = self.admin_db.rsplit_once('/').unwrap();
        format!("{db_base}/{name}")
    }

    /// A publisher on the vhost with confirms on, the queues declared as the broker does.
    pub async fn publisher(&self) -> (Connection, Channel) {
        let conn = Connection::connect(&self.amqp_url, ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ: cannot connect: {e}"));
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        for q in [
            wire::queues::EVENTS,
            wire::queues::LEGACY_EVENTS,
            wire::queues::EVENTS_DLQ,
            wire::queues::HEARTBEATS,
        ] {
            ch.queue_declare(
                q.into(),
                QueueDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        }
        (conn, ch)
    }
}

/// The schema of AuditFlow's tables in the tests' databases (the default).
pub const OUR_SCHEMA: &str = "auditflow";

/// A pool on the database at `url` with `search_path` as given.
pub async fn pool_at(url: &str, search_path: &str) -> PgPool {
    let options = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .expect("a PostgreSQL URL")
        .options([("search_path", search_path)]);
    let mut tries = 0;
    loop {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options.clone())
            .await;
        match pool {
            Ok(p) => return p,
            Err(e) if tries < 20 => {
                tries += 1;
                eprintln!("PostgreSQL: connect to the test database: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("PostgreSQL: cannot connect to the test database: {e}"),
        }
    }
}

/// The legacy notification service's `alerts` table and its eight indexes, exactly as that
/// service creates them at every start (read from its code; design.md §8.4 lists the
/// columns), as table `table` (`alerts`, `public.alerts`, `legacy_ns.alerts`): the
/// statements, in order. The indexes take the table's schema.
pub fn legacy_alerts_ddl(table: &str) -> Vec<String> {
    let mut ddl = vec![format!(
        "CREATE TABLE IF NOT EXISTS {table} (
    alert_id UUID PRIMARY KEY,
    correlation_id UUID NOT NULL,
    timestamp TIMESTAMP WITH TIME ZONE NOT NULL,
    received_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    alert_name VARCHAR(255) NOT NULL,
    alert_type VARCHAR(50) NOT NULL,
    severity VARCHAR(50) NOT NULL,
    description TEXT,
    source_service_name VARCHAR(255),
    rule_id VARCHAR(255),
    rule_name VARCHAR(255),
    actor_type VARCHAR(50),
    actor_id VARCHAR(255),
    client_ip INET,
    resource_type VARCHAR(50),
    resource_id VARCHAR(255),
    server_hostname VARCHAR(255),
    action_observed VARCHAR(255),
    analysis_rule_details JSONB,
    triggered_by_details JSONB,
    impacted_resource_details JSONB,
    metadata JSONB,
    raw_event_data JSONB NOT NULL
)"
    )];
    for (name, on) in [
        ("idx_alerts_timestamp", "(timestamp DESC)"),
        ("idx_alerts_alert_type", "(alert_type)"),
        ("idx_alerts_severity", "(severity)"),
        ("idx_alerts_actor_id", "(actor_id)"),
        ("idx_alerts_server_hostname", "(server_hostname)"),
        ("idx_alerts_rule_name", "(rule_name)"),
        ("idx_alerts_metadata_gin", "USING GIN (metadata)"),
        ("idx_alerts_raw_event_data_gin", "USING GIN (raw_event_data)"),
    ] {
        ddl.push(format!("CREATE INDEX IF NOT EXISTS {name} ON {table} {on}"));
    }
    ddl
}

/// Creates the legacy `alerts` table and its indexes as `table` through `pool`.
pub async fn create_legacy_alerts(pool: &PgPool, table: &str) {
    for sql in legacy_alerts_ddl(table) {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL: create the legacy table {table}: {e}"));
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["delete_vhost", &self.vhost]).output();
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// Messages ready in a queue (a passive declare: the queue must exist).
pub async fn message_count(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions { durable: true, passive: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("RabbitMQ: queue {queue}: {e}"))
    .message_count()
}

pub async fn publish(ch: &Channel, queue: &str, payload: &[u8]) {
    let confirm = ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            payload,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(matches!(confirm, lapin::Confirmation::Ack(_)), "{confirm:?}");
}

/// A sibling binary of the workspace (`cargo test --workspace` builds every member's
/// binaries before it runs any test).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join(name);
    assert!(bin.exists(), "{} is missing: build it with `cargo build --workspace`", bin.display());
    bin
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A legacy `user_login`/`FAILURE` event for `user` on `host` at 2026-11-20T10:00:`secs`Z from
/// 203.0.113.9, with `event_id` made from `id`.
pub fn failed_login(user: &str, host: &str, secs: u32, id: u32) -> serde_json::Value {
    serde_json::json!({
        "event_id": format!("00000000-0000-4000-8000-{id:012}"),
        "timestamp": format!("2026-11-20T10:00:{secs:02}Z"),
        "source_service": "auth",
        "server_hostname": host,
        "event_type": "user_login",
        "severity": "WARNING",
        "user_id": user,
        "action_result": "FAILURE",
        "details": {"ip_address": "203.0.113.9", "protocol": "ssh"}
    })
}

/// An HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One HTTP/1.1 request over a fresh connection. `extra` holds additional header lines.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
    extra: &[(&str, &str)],
) -> Resp {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the API");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let has_type = extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    if let Some(b) = body {
        if !has_type {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    if let Some(b) = body {
        // The server may answer (413) before reading everything.
        let _ = s.write_all(b);
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    Resp { status, head: head.to_owned(), body }
}

/// A `POST` of a JSON body to the aggregator's API with a bearer token.
pub fn post(a: &Aggregator, path: &str, token: &str, body: &serde_json::Value) -> Resp {
    request(a.http, "POST", path, Some(token), Some(body.to_string().as_bytes()), &[])
}

/// The aggregator binary as a process; killed when dropped.
pub struct Aggregator {
    pub child: Child,
    pub http: u16,
    pub config: PathBuf,
}

impl Aggregator {
    /// Starts one with its own ports; `top` holds extra top-level keys for the config.
    pub fn start(env: &Env, dir: &Path, name: &str, top: &str) -> Self {
        Self::start_with(env, dir, name, top, &[])
    }

    /// Like [`Aggregator::start`], with extra environment variables.
    pub fn start_with(env: &Env, dir: &Path, name: &str, top: &str, vars: &[(&str, &str)]) -> Self {
        Self::start_silent_after(env, dir, name, top, vars, "2s")
    }

    /// Like [`Aggregator::start_with`], with the time after which a node without heartbeats
    /// counts as silent (tests with real agents, which beat every 10 s, need more than 2 s).
    pub fn start_silent_after(
        env: &Env,
        dir: &Path,
        name: &str,
        top: &str,
        vars: &[(&str, &str)],
        silent_after: &str,
    ) -> Self {
        // A port free_port found may be taken by another test before the aggregator binds it:
        // then it exits at once saying so, and it is started again on other ports.
        for _ in 0..3 {
            match Self::try_start(env, dir, name, top, vars, silent_after) {
                Ok(a) => return a,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("the aggregator exited: {log}"),
            }
        }
        panic!("the aggregator found its ports taken three times");
    }

    fn try_start(
        env: &Env,
        dir: &Path,
        name: &str,
        top: &str,
        vars: &[(&str, &str)],
        silent_after: &str,
    ) -> Result<Self, String> {
        let (http, metrics) = (free_port(), free_port());
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "{top}\n[detection]\nredis_prefix = \"{}\"\nreload_interval = \"200ms\"\nagent_silent_after = \"{silent_after}\"\n\
                 [ingest]\nprefetch = 16\nbatch_max = 8\nbatch_wait_ms = 5\nlegacy_queue = true\n\
                 [http]\nlisten = \"127.0.0.1:{http}\"\nmetrics_listen = \"127.0.0.1:{metrics}\"\n\
                 [services]\namqp_url = \"{}\"\ndatabase_url = \"{}\"\nredis_url = \"{}\"\n",
                env.redis_prefix, env.amqp_url, env.database_url, env.redis_url
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_auditflow-aggregator"))
            .args(["--config", config.to_str().unwrap(), "run"])
            .env_remove("AMQP_URL")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env("RUST_LOG", "info")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start auditflow-aggregator");
        let mut a = Self { child, http, config };
        a.wait_ready(dir, name)?;
        Ok(a)
    }

    /// Waits for `/readyz`; the log when the process exits first.
    fn wait_ready(&mut self, dir: &Path, name: &str) -> Result<(), String> {
        let start = Instant::now();
        while !http_get(self.http, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log =
                    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
                return Err(format!("{status}\n{log}"));
            }
            assert!(start.elapsed() < Duration::from_secs(30), "the aggregator is not ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    pub fn metric(&self, name: &str) -> f64 {
        let body = http_get(self.http, "/metrics").expect("metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `f` holds, up to `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `(rule_id, fingerprint)` of every stored firing, sorted.
pub async fn firings(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as("SELECT rule_id, fingerprint FROM firings ORDER BY rule_id, fingerprint, ts")
        .fetch_all(pool)
        .await
        .expect("read firings")
}

/// `(fingerprint, occurrences)` of every alert, sorted.
pub async fn alerts(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT fingerprint, occurrences FROM alerts ORDER BY fingerprint")
        .fetch_all(pool)
        .await
        .expect("read alerts")
}

/// `auditflow-broker` as a process on the given MQTT port (so a restarted one is found where
/// the agents look), bridging into `amqp_url`, accepting `nodes` (`(node, password)`); killed
/// when dropped.
pub struct Broker {
    pub child: Child,
    pub mqtt: u16,
    pub http: u16,
}

impl Broker {
    pub fn start(dir: &Path, amqp_url: &str, nodes: &[(&str, &str)], mqtt: u16) -> Self {
        let http = free_port();
        let creds: String = nodes.iter().map(|(n, p)| format!("{n}:{p}\n")).collect();
        std::fs::write(dir.join("credentials"), creds).unwrap();
        let config = dir.join("broker.toml");
        std::fs::write(
            &config,
            format!(
                "[mqtt]\nlisten = \"127.0.0.1:{mqtt}\"\ncredentials_file = \"{}\"\n\
                 [http]\nlisten = \"127.0.0.1:{http}\"\n[amqp]\nurl = \"{amqp_url}\"\n",
                dir.join("credentials").display()
            ),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("broker.log"))
            .unwrap();
        let mut child = Command::new(workspace_bin("auditflow-broker"))
            .arg("--config")
            .arg(&config)
            .env_remove("AMQP_URL")
            .env("RUST_LOG", std::env::var("BROKER_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start auditflow-broker");
        let start = Instant::now();
        while !http_get(http, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join("broker.log")).unwrap_or_default();
                panic!("the broker exited: {status}\n{log}");
            }
            assert!(start.elapsed() < Duration::from_secs(30), "the broker is not ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, mqtt, http }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
