//! The alert store at scale: fills PostgreSQL (through `auditflow-aggregator`) or SQLite
//! (through `auditflow`) with ALERTS alerts and FIRINGS firings spread over 90 days of event
//! time across 200 nodes and 20 rules, then measures the API the dashboard uses. Run through
//! `scripts/bench.sh store`.
//!
//! `bench_store postgres|sqlite BIN_DIR ALERTS FIRINGS`
//!
//! The rows go in with SQL straight into the schema the binary itself created (its
//! migrations): going through ingestion would measure ingestion for hours, not the store.
//! Every query is timed from the client (connect to last byte), `SAMPLES` times each:
//! * list: newest first, and filtered by status, severity, node, rule and a 7-day window, and
//!   cursor pages followed 20 deep;
//! * search: the text filter `q` (a user, a node);
//! * detail: one alert with its evidence, history and deliveries;
//! * stats: the default 24 h and 7 days in 1 h buckets;
//! * rules: the rule list with firings per rule (the dashboard's overview and rules page).
//!
//! Last line: `store: <backend> list_p99_ms=<x> search_p99_ms=<y> stats_p99_ms=<z>
//! detail_p99_ms=<d> rules_p99_ms=<r> db_mb=<n>`.
//!
//! `bench_store fill-sqlite DB_FILE ALERTS FIRINGS` only fills a store `auditflow` created
//! (the dashboard's browser test at scale, dashboard/tests/browser.rs).

#[path = "common/redis_keys.rs"]
mod common;
#[path = "common/procs.rs"]
mod procs;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use procs::{Procs, add_vhost, free_port, get, rabbitmqctl, wait_ready};

const TOKEN: &str = "bench-admin-token-0123456789";
const SAMPLES: usize = 100;
const NODES: u64 = 200;
const RULES: u64 = 20;
const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    run_psql(Command::new("psql").args([url, "-qc", sql]), sql)
}

/// `psql` with `schema` alone on the search path: the store's tables are in the aggregator's
/// schema (`services.database_schema`, default `auditflow`), not in `public`.
fn psql_in(url: &str, schema: &str, sql: &str) -> anyhow::Result<()> {
    let mut c = Command::new("psql");
    c.args([url, "-qc", sql]).env("PGOPTIONS", format!("-c search_path={schema}"));
    run_psql(&mut c, sql)
}

fn run_psql(c: &mut Command, sql: &str) -> anyhow::Result<()> {
    let out = c.output().context("run psql")?;
    if !out.status.success() {
        bail!("psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The aggregator's default schema, where the server under measurement keeps its tables.
const SCHEMA: &str = "auditflow";

/// The vhost and database of a PostgreSQL run, removed when dropped.
struct Cluster {
    admin_db: String,
    db: String,
    vhost: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = psql(&self.admin_db, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db));
        let _ = rabbitmqctl(&["delete_vhost", &self.vhost]);
    }
}

struct Server {
    command: Command,
    http: u16,
}

impl Server {
    fn start(&mut self, procs: &mut Procs) -> anyhow::Result<()> {
        if let Some((_, mut old)) = procs.0.pop() {
            let _ = old.kill();
            let _ = old.wait();
        }
        procs.0.push(("server".into(), self.command.spawn().context("start the server")?));
        wait_ready(self.http, &mut procs.0[0].1, "the server")
    }
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if let [mode, db, alerts, firings] = a.as_slice()
        && mode == "fill-sqlite"
    {
        return fill_sqlite(std::path::Path::new(db), alerts.parse()?, firings.parse()?, now_ms());
    }
    let [backend, bin_dir, alerts, firings] = a.as_slice() else {
        bail!(
            "usage: bench_store postgres|sqlite BIN_DIR ALERTS FIRINGS\n       \
             bench_store fill-sqlite DB_FILE ALERTS FIRINGS  (a store auditflow has created)"
        );
    };
    let (alerts, firings): (u64, u64) = (alerts.parse()?, firings.parse()?);
    let bin_dir = std::path::PathBuf::from(bin_dir);
    let dir = tempfile::tempdir()?;
    let (http, metrics) = (free_port(), free_port());
    let mut procs = Procs(Vec::new());
    let now = now_ms();
    let mut _cluster = None;

    let (mut server, db_size): (Server, Box<dyn Fn() -> anyhow::Result<f64>>) = match backend
        .as_str()
    {
        "postgres" => {
            let env = |k: &str| std::env::var(k).with_context(|| format!("{k} is not set"));
            let (amqp, admin_db, redis) =
                (env("AMQP_URL")?, env("DATABASE_URL")?, env("REDIS_URL")?);
            let tag = format!("{}_{}", std::process::id(), now);
            let cluster = Cluster {
                admin_db: admin_db.clone(),
                db: format!("auditflow_store_{tag}"),
                vhost: format!("auditflow_store_{tag}"),
            };
            let amqp_url = add_vhost(&amqp, &cluster.vhost)?;
            psql(&admin_db, &format!("CREATE DATABASE {}", cluster.db))?;
            let database_url =
                format!("{}/{}", admin_db.rsplit_once('/').context("DATABASE_URL")?.0, cluster.db);
            let config = dir.path().join("aggregator.toml");
            std::fs::write(
                &config,
                format!(
                    "[detection]\nredis_prefix = \"auditflow-store:{tag}:\"\n\
                     [http]\nlisten = \"127.0.0.1:{http}\"\nmetrics_listen = \"127.0.0.1:{metrics}\"\n\
                     [services]\namqp_url = \"{amqp_url}\"\ndatabase_url = \"{database_url}\"\nredis_url = \"{redis}\"\n"
                ),
            )?;
            let mut c = Command::new(bin_dir.join("auditflow-aggregator"));
            c.args(["--config", config.to_str().context("path")?, "run"])
                .env_remove("AMQP_URL")
                .env_remove("DATABASE_URL")
                .env_remove("REDIS_URL");
            _cluster = Some(cluster);
            let url = database_url.clone();
            let size = move || -> anyhow::Result<f64> {
                let out = Command::new("psql")
                    .args([&url, "-tAc", "SELECT pg_database_size(current_database())"])
                    .output()?;
                Ok(String::from_utf8_lossy(&out.stdout).trim().parse::<f64>()? / 1048576.0)
            };
            let mut server = Server { command: c, http };
            server.command.env("AUDITFLOW_API_TOKENS", format!("bench:{TOKEN}:admin"));
            server.start(&mut procs)?;
            fill_postgres(&database_url, alerts, firings, now)?;
            (server, Box::new(size))
        }
        "sqlite" => {
            let data = dir.path().join("data");
            std::fs::create_dir_all(&data)?;
            let mut c = Command::new(bin_dir.join("auditflow"));
            c.args(["--data-dir", data.to_str().context("path")?])
                .args(["--listen", &format!("127.0.0.1:{http}")])
                .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
                .args(["--mqtt-listen", &format!("127.0.0.1:{}", free_port())])
                .args(["--no-demo", "run"])
                .env_remove("AMQP_URL")
                .env_remove("DATABASE_URL")
                .env_remove("REDIS_URL");
            let mut server = Server { command: c, http };
            server.command.env("AUDITFLOW_API_TOKENS", format!("bench:{TOKEN}:admin"));
            server.start(&mut procs)?;
            // Stopped while filling: SQLite has one writer.
            if let Some((_, mut c)) = procs.0.pop() {
                let _ = c.kill();
                let _ = c.wait();
            }
            let db = data.join("auditflow.db");
            fill_sqlite(&db, alerts, firings, now)?;
            let size = move || -> anyhow::Result<f64> {
                let mut bytes = 0;
                for ext in ["", "-wal"] {
                    bytes +=
                        std::fs::metadata(format!("{}{ext}", db.display())).map_or(0, |m| m.len());
                }
                Ok(bytes as f64 / 1048576.0)
            };
            (server, Box::new(size))
        }
        other => bail!("unknown backend {other}: postgres or sqlite"),
    };
    server.command.env("RUST_LOG", "warn").stdin(Stdio::null()).stdout(Stdio::null());
    server.command.stderr(std::fs::File::create(dir.path().join("server.log"))?);
    let filled = Instant::now();
    server.start(&mut procs)?;
    eprintln!("({backend}: server ready {:.1} s after the fill)", filled.elapsed().as_secs_f64());
    measure(backend, http, now, db_size()?)
}

/// The per-rule counts the store keeps as it inserts firings, for rows put in by SQL.
const RULE_COUNTS: &str = "INSERT INTO rule_counts (rule_id, firings, last_fired)
     SELECT rule_id, COUNT(*), MAX(ts) FROM firings WHERE true GROUP BY rule_id
     ON CONFLICT (rule_id) DO UPDATE SET firings = excluded.firings, last_fired = excluded.last_fired";

fn fill_postgres(url: &str, alerts: u64, firings: u64, now: i64) -> anyhow::Result<()> {
    let span = 90 * DAY_MS;
    let started = Instant::now();
    let alerts_sql = format!(
        "INSERT INTO alerts (id, fingerprint, rule_id, rule_name, rule_description, severity, title,
             tags, node, group_values, status, occurrences, first_seen, last_seen, created_at,
             updated_at, correlation_id, raw_event, search_text)
         SELECT md5('a' || i)::uuid, 'ANLY-BENCH-' || (i % {RULES}) || '/u' || i,
             'ANLY-BENCH-' || (i % {RULES}), 'Bench rule ' || (i % {RULES}), 'A benchmark rule.',
             (ARRAY['INFO', 'WARNING', 'CRITICAL'])[1 + i % 3],
             'Bench alert for u' || i || ' on pi-' || (i % {NODES}), '[]'::jsonb, 'pi-' || (i % {NODES}),
             jsonb_build_object('user', 'u' || i),
             CASE WHEN i % 20 = 0 THEN 'open' WHEN i % 20 = 1 THEN 'acknowledged' ELSE 'resolved' END,
             {per}, t - 60000, t, t, t, md5('c' || i)::uuid, '{{}}'::jsonb,
             'bench alert for u' || i || ' on pi-' || (i % {NODES}) || ' anly-bench-' || (i % {RULES}) || ' u' || i
         FROM (SELECT i, {now} - (i::bigint * {span} / {alerts}) AS t FROM generate_series(0, {alerts} - 1) i) s",
        per = firings / alerts.max(1)
    );
    psql_in(url, SCHEMA, &alerts_sql)?;
    eprintln!("(postgres: {alerts} alerts in {:.0} s)", started.elapsed().as_secs_f64());
    let started = Instant::now();
    let firings_sql = format!(
        "INSERT INTO firings (id, alert_id, rule_id, fingerprint, ts, count, node, event_id, event, created_at)
         SELECT md5('f' || i)::uuid, md5('a' || (i % {alerts}))::uuid, 'ANLY-BENCH-' || (i % {alerts} % {RULES}),
             'ANLY-BENCH-' || (i % {alerts} % {RULES}) || '/u' || (i % {alerts}),
             {now} - ((i % {alerts})::bigint * {span} / {alerts}) - (i / {alerts}) * 1000, 3,
             'pi-' || (i % {alerts} % {NODES}), md5('e' || i)::uuid,
             jsonb_build_object('event_type', 'user_login', 'user', 'u' || (i % {alerts})),
             {now} - ((i % {alerts})::bigint * {span} / {alerts})
         FROM generate_series(0, {firings} - 1) i"
    );
    psql_in(url, SCHEMA, &firings_sql)?;
    psql_in(url, SCHEMA, RULE_COUNTS)?;
    psql(url, "VACUUM ANALYZE")?;
    eprintln!("(postgres: {firings} firings in {:.0} s)", started.elapsed().as_secs_f64());
    Ok(())
}

fn fill_sqlite(db: &std::path::Path, alerts: u64, firings: u64, now: i64) -> anyhow::Result<()> {
    let span = 90 * DAY_MS;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .connect()
            .await
            .context("open the SQLite database")?;
        let started = Instant::now();
        // Ids: 16 bytes each (the store reads UUIDs from 16-byte blobs), unique per row.
        let alerts_sql = format!(
            "INSERT INTO alerts (id, fingerprint, rule_id, rule_name, rule_description, severity,
                 title, tags, node, group_values, status, occurrences, first_seen, last_seen,
                 created_at, updated_at, correlation_id, raw_event, search_text)
             WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {alerts} - 1)
             SELECT CAST(printf('a%015x', i) AS BLOB), 'ANLY-BENCH-' || (i % {RULES}) || '/u' || i,
                 'ANLY-BENCH-' || (i % {RULES}), 'Bench rule ' || (i % {RULES}), 'A benchmark rule.',
                 CASE i % 3 WHEN 0 THEN 'INFO' WHEN 1 THEN 'WARNING' ELSE 'CRITICAL' END,
                 'Bench alert for u' || i || ' on pi-' || (i % {NODES}), '[]', 'pi-' || (i % {NODES}),
                 json_object('user', 'u' || i),
                 CASE WHEN i % 20 = 0 THEN 'open' WHEN i % 20 = 1 THEN 'acknowledged' ELSE 'resolved' END,
                 {per}, {now} - (i * {span} / {alerts}) - 60000, {now} - (i * {span} / {alerts}),
                 {now} - (i * {span} / {alerts}), {now} - (i * {span} / {alerts}),
                 CAST(printf('c%015x', i) AS BLOB), '{{}}',
                 'bench alert for u' || i || ' on pi-' || (i % {NODES}) || ' anly-bench-' || (i % {RULES}) || ' u' || i
             FROM s",
            per = firings / alerts.max(1)
        );
        sqlx::query(sqlx::AssertSqlSafe(alerts_sql)).execute(&mut conn).await.context("fill alerts")?;
        eprintln!("(sqlite: {alerts} alerts in {:.0} s)", started.elapsed().as_secs_f64());
        let started = Instant::now();
        let firings_sql = format!(
            "INSERT INTO firings (id, alert_id, rule_id, fingerprint, ts, count, node, event_id, event, created_at)
             WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {firings} - 1)
             SELECT CAST(printf('f%015x', i) AS BLOB), CAST(printf('a%015x', i % {alerts}) AS BLOB),
                 'ANLY-BENCH-' || (i % {alerts} % {RULES}), 'ANLY-BENCH-' || (i % {alerts} % {RULES}) || '/u' || (i % {alerts}),
                 {now} - ((i % {alerts}) * {span} / {alerts}) - (i / {alerts}) * 1000, 3,
                 'pi-' || (i % {alerts} % {NODES}), CAST(printf('e%015x', i) AS BLOB),
                 json_object('event_type', 'user_login', 'user', 'u' || (i % {alerts})),
                 {now} - ((i % {alerts}) * {span} / {alerts})
             FROM s"
        );
        sqlx::query(sqlx::AssertSqlSafe(firings_sql)).execute(&mut conn).await.context("fill firings")?;
        sqlx::query(RULE_COUNTS).execute(&mut conn).await.context("count firings per rule")?;
        sqlx::query("ANALYZE").execute(&mut conn).await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut conn).await?;
        eprintln!("(sqlite: {firings} firings in {:.0} s)", started.elapsed().as_secs_f64());
        anyhow::Ok(())
    })
}

fn p99(samples: &mut [Duration]) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 * 0.99).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[i].as_secs_f64() * 1000.0
}

/// Times `path`; fails on anything but 200.
fn timed(http: u16, path: &str, into: &mut Vec<Duration>) -> anyhow::Result<serde_json::Value> {
    let (status, body, took) = get(http, path, TOKEN).with_context(|| format!("GET {path}"))?;
    if status != 200 {
        bail!("GET {path}: {status} {body}");
    }
    into.push(took);
    Ok(serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

fn measure(backend: &str, http: u16, now: i64, db_mb: f64) -> anyhow::Result<()> {
    let week_ago = aggregator::store::rfc3339(now - 7 * DAY_MS);
    let (mut list, mut search, mut detail, mut stats, mut deep, mut rules) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut ids = Vec::new();
    // Warm-up: the first queries after a start read from disk.
    for _ in 0..3 {
        timed(http, "/api/v1/alerts?limit=50", &mut Vec::new())?;
    }
    for k in 0..SAMPLES as u64 {
        let filters = [
            String::new(),
            "&status=open".into(),
            "&severity=CRITICAL".into(),
            format!("&node=pi-{}", k * 7 % NODES),
            format!("&rule=ANLY-BENCH-{}", k % RULES),
            format!("&since={week_ago}"),
        ];
        for f in &filters {
            let page = timed(http, &format!("/api/v1/alerts?limit=50{f}"), &mut list)?;
            if let Some(id) = page["alerts"].get(k as usize % 50).and_then(|a| a["id"].as_str()) {
                ids.push(id.to_owned());
            }
        }
        timed(http, &format!("/api/v1/alerts?limit=50&q=u{}", k * 9_973 % 1_000_000), &mut search)?;
        timed(http, &format!("/api/v1/alerts?limit=50&q=pi-{}", k * 13 % NODES), &mut search)?;
        timed(http, "/api/v1/stats", &mut stats)?;
        timed(http, &format!("/api/v1/stats?from={week_ago}&bucket=1h"), &mut stats)?;
        timed(http, "/api/v1/rules", &mut rules)?;
    }
    for id in ids.iter().take(SAMPLES) {
        timed(http, &format!("/api/v1/alerts/{id}"), &mut detail)?;
    }
    // Cursor pages 20 deep, five times.
    for _ in 0..5 {
        let mut cursor: Option<String> = None;
        for _ in 0..20 {
            let path = match &cursor {
                Some(c) => format!("/api/v1/alerts?limit=50&cursor={c}"),
                None => "/api/v1/alerts?limit=50".into(),
            };
            let page = timed(http, &path, &mut deep)?;
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
    }
    println!("| {backend} | query | samples | p50 ms | p99 ms |\n|---|---|---:|---:|---:|");
    for (name, s) in [
        ("list (6 filters)", &mut list),
        ("cursor pages, 20 deep", &mut deep),
        ("search (q)", &mut search),
        ("detail", &mut detail),
        ("stats 24 h and 7 d", &mut stats),
        ("rules (firings per rule)", &mut rules),
    ] {
        s.sort();
        let p50 = s.get(s.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        println!("| | {name} | {} | {p50:.1} | {:.1} |", s.len(), p99(s));
    }
    list.extend(deep.iter().copied());
    println!(
        "store: {backend} list_p99_ms={:.1} search_p99_ms={:.1} stats_p99_ms={:.1} detail_p99_ms={:.1} rules_p99_ms={:.1} db_mb={db_mb:.0}",
        p99(&mut list),
        p99(&mut search),
        p99(&mut stats),
        p99(&mut detail),
        p99(&mut rules)
    );
    Ok(())
}
