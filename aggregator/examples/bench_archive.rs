//! The event archive at fleet scale: fills PostgreSQL and SQLite archives with a week of a
//! NODES-node fleet at RATE events/s per node (synthetic events, `wire::synth`), in rows of
//! one node's 5 minutes (what compaction makes of a fleet's small batches), then times the
//! searches an analyst runs. Run through `scripts/bench.sh archive`.
//!
//! `bench_archive postgres|sqlite [NODES] [RATE] [DAYS]` (defaults 50, 1, 7)
//!
//! Every search is [`aggregator::archive::search`] as `GET /api/v1/events` runs it, timed
//! in-process (no HTTP), `SAMPLES` times each:
//! * node_day_scan: one node's whole day with a filter nothing matches, so every event of the
//!   day is read and tested (the worst case of a day's search);
//! * node_day_first: one node's day, newest 500 (the search page's default);
//! * context: one node, ±5 minutes around a time (the alert page's context view);
//! * fleet_hour: every node's hour filtered by user.
//!
//! Last line: `archive: <backend> events=<n> bytes_per_event=<b> fill_events_per_s=<f>
//! node_day_scan_p99_ms=<x> node_day_first_p99_ms=<y> context_p99_ms=<z> fleet_hour_p99_ms=<w>
//! db_mb=<m>`.

use std::time::{Duration, Instant};

use aggregator::archive::{Key, Pending, Query, packed_rows, search};
use aggregator::rules::FieldId;
use aggregator::store::SharedStore;
use wire::model::Timestamp;

const SAMPLES: usize = 20;
const DAY_MS: i64 = 86_400_000;
const ROW_MS: i64 = 300_000;

fn p99(samples: &mut [Duration]) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 * 0.99).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[i].as_secs_f64() * 1000.0
}

async fn open(backend: &str) -> anyhow::Result<(SharedStore, Option<String>, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    match backend {
        "sqlite" => {
            let url = format!("sqlite:{}", dir.path().join("archive.db").display());
            Ok((aggregator::store::open(&url, Vec::new()).await?, None, dir))
        }
        "postgres" => {
            let admin = std::env::var("DATABASE_URL").map_err(|_| {
                anyhow::anyhow!("DATABASE_URL is not set (scripts/bench.sh sets it)")
            })?;
            let pool = sqlx::PgPool::connect(&admin).await?;
            let db = format!("auditflow_bench_archive_{}", std::process::id());
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")))
                .execute(&pool)
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                .execute(&pool)
                .await?;
            let (base, _) = admin.rsplit_once('/').unwrap_or((&admin, ""));
            let url = format!("{base}/{db}");
            Ok((aggregator::store::open(&url, Vec::new()).await?, Some(db), dir))
        }
        other => anyhow::bail!("unknown backend {other} (postgres or sqlite)"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let backend = args.get(1).map_or("sqlite", String::as_str).to_owned();
    let nodes: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(50);
    let rate: f64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1.0);
    let days: i64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(7);
    let (store, pg_db, _dir) = open(&backend).await?;
    let names: Vec<String> = (0..nodes).map(|i| format!("pi-{i:03}")).collect();
    let end = Timestamp::now().as_nanos() / 1_000_000;
    let start = end - days * DAY_MS;
    let per_row = ((ROW_MS as f64 / 1000.0) * rate).round().max(1.0) as usize;
    let step_ns = (1e9 / rate) as i64;

    // Fill: each 5 minutes of fleet time, one row per node, committed together.
    let mut synth = wire::synth::Synth::new(7);
    let (mut events_total, mut bytes_total, mut seq) = (0u64, 0u64, vec![0u64; nodes]);
    let fill_start = Instant::now();
    let mut t = start;
    while t < end {
        let mut batch_rows = Vec::with_capacity(nodes);
        for (n, node) in names.iter().enumerate() {
            let events: Vec<_> = (0..per_row)
                .map(|k| {
                    let ns = t * 1_000_000 + k as i64 * step_ns + n as i64 * 7_919;
                    synth.next_event(Timestamp::from_unix(
                        ns / 1_000_000_000,
                        (ns % 1_000_000_000) as u32,
                    ))
                })
                .collect();
            let pending = events
                .iter()
                .enumerate()
                .map(|(k, e)| Pending {
                    node,
                    key: Key::Seq { epoch: 1, seq: seq[n] + k as u64 },
                    event: e,
                })
                .collect();
            seq[n] += per_row as u64;
            for r in packed_rows(pending) {
                bytes_total += r.frame.len() as u64;
                batch_rows.push(r);
            }
            events_total += per_row as u64;
        }
        store.commit_batch_at(&[], &batch_rows, t).await?;
        t += ROW_MS;
    }
    let fill_s = fill_start.elapsed().as_secs_f64();
    let live = store.live_bytes().await?;
    println!(
        "filled {backend}: {events_total} events of {nodes} nodes over {days} days in {fill_s:.0} s \
         ({:.0} events/s); frames {:.1} bytes/event; database {:.0} MB ({:.1} bytes/event)",
        events_total as f64 / fill_s,
        bytes_total as f64 / events_total as f64,
        live as f64 / 1e6,
        live as f64 / events_total as f64
    );

    let day_from = end - DAY_MS - DAY_MS / 2;
    let node = names[nodes / 2].clone();
    let cases: Vec<(&str, Query)> = vec![
        (
            "node_day_scan",
            Query {
                node: Some(node.clone()),
                fields: vec![(FieldId::User, "nobody-has-this-name".into())],
                from: day_from,
                to: day_from + DAY_MS,
                limit: 500,
                ..Query::default()
            },
        ),
        (
            "node_day_first",
            Query {
                node: Some(node.clone()),
                from: day_from,
                to: day_from + DAY_MS,
                limit: 500,
                desc: true,
                ..Query::default()
            },
        ),
        (
            "context",
            Query {
                node: Some(node.clone()),
                from: day_from + 3_600_000,
                to: day_from + 3_600_000 + 600_000,
                limit: 200,
                ..Query::default()
            },
        ),
        (
            "fleet_hour",
            Query {
                fields: vec![(FieldId::User, "alice".into())],
                from: day_from,
                to: day_from + 3_600_000,
                limit: 500,
                ..Query::default()
            },
        ),
    ];
    println!(
        "\n| search | p50 ms | p99 ms | events returned | events read |\n|---|---:|---:|---:|---:|"
    );
    let mut line = format!(
        "archive: {backend} events={events_total} bytes_per_event={:.1} fill_events_per_s={:.0}",
        live as f64 / events_total as f64,
        events_total as f64 / fill_s
    );
    for (name, q) in cases {
        let mut times = Vec::with_capacity(SAMPLES);
        let mut last = Default::default();
        for _ in 0..SAMPLES {
            let mut out = Vec::new();
            let t0 = Instant::now();
            last = search(&store, &q, u64::MAX, &mut out).await?;
            times.push(t0.elapsed());
        }
        let mut sorted = times.clone();
        sorted.sort();
        let p50 = sorted[sorted.len() / 2].as_secs_f64() * 1000.0;
        let p99 = p99(&mut times);
        println!("| {name} | {p50:.1} | {p99:.1} | {} | {} |", last.returned, last.events_scanned);
        line.push_str(&format!(" {name}_p99_ms={p99:.1}"));
    }
    line.push_str(&format!(" db_mb={:.0}", live as f64 / 1e6));
    if let Some(db) = pg_db {
        drop(store);
        if let Ok(admin) = std::env::var("DATABASE_URL") {
            let pool = sqlx::PgPool::connect(&admin).await?;
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
            )))
            .execute(&pool)
            .await;
        }
    }
    println!("\n{line}");
    Ok(())
}
