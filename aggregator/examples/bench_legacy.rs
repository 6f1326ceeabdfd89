//! The legacy path's throughput: legacy JSON events pre-queued on `audit_events`, drained by
//! the release aggregator with RabbitMQ, Redis and PostgreSQL (a vhost, database and key
//! prefix of its own per stream, removed afterwards). Run through `scripts/bench.sh legacy`.
//!
//! `bench_legacy BIN_DIR EVENTS`
//!
//! Two streams of EVENTS events each, made by `wire::synth::LegacyGenerator` (the legacy
//! generator's events exactly), with event times 1 ms apart:
//! * mixed: its seven templates, uniformly (a seventh are failed logins);
//! * failures: failed logins only (the firing-heavy stream: every third failure of a
//!   user on a host fires ANLY-SEC-001).
//!
//! The time is from the aggregator's first evaluated event to its last (`events_in` counts a
//! batch after its firings are committed, and its messages are acked after that), so startup
//! is not charged. Then the mixed stream is drained by a consumer that only acknowledges:
//! RabbitMQ's own rate for the queue, the ceiling the figures are read against
//! (`BENCH_LEGACY_DRAIN_ONLY=1` measures only that). Prints a line per stream and the last
//! line `legacy: mixed_events_per_s=<n> failures_events_per_s=<m>`.

#[path = "common/redis_keys.rs"]
mod common;
#[path = "common/procs.rs"]
mod procs;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use procs::{ClusterServices, Procs, free_port, metric, wait_ready};
use wire::Timestamp;
use wire::synth::{LegacyGenerator, Template};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Publishes `n` legacy events of the stream to `audit_events`, with confirms.
async fn prequeue(amqp_url: &str, stream: &str, n: u64) -> anyhow::Result<()> {
    let conn = Connection::connect(amqp_url, ConnectionProperties::default())
        .await
        .context("connect to RabbitMQ")?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    // Declared as the legacy services declare it.
    ch.queue_declare(
        "audit_events".into(),
        QueueDeclareOptions { durable: true, ..Default::default() },
        FieldTable::default(),
    )
    .await?;
    let mut g = LegacyGenerator::new(7);
    let start = Timestamp::now().as_nanos() - n as i64 * 1_000_000;
    let mut confirms = Vec::with_capacity(1000);
    for i in 0..n {
        let ns = start + i as i64 * 1_000_000;
        let ts =
            Timestamp::from_unix(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u32);
        let event = match stream {
            "failures" => g.json(Template::LoginFailure, ts),
            _ => g.next_json(ts),
        };
        let body = serde_json::to_vec(&event)?;
        confirms.push(
            ch.basic_publish(
                "".into(),
                "audit_events".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?,
        );
        if confirms.len() == 1000 {
            for c in confirms.drain(..) {
                c.await?;
            }
        }
    }
    for c in confirms {
        c.await?;
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

struct Run {
    events_per_s: f64,
    firings: f64,
    seconds: f64,
}

fn run(bin_dir: &Path, stream: &str, n: u64) -> anyhow::Result<Run> {
    let svc =
        ClusterServices::create(&format!("legacy_{stream}_{}_{}", std::process::id(), now_ms()))?;
    tokio::runtime::Runtime::new()?.block_on(prequeue(&svc.amqp_url, stream, n))?;

    let dir = tempfile::tempdir()?;
    let (http, metrics_port) = (free_port(), free_port());
    let config = dir.path().join("aggregator.toml");
    std::fs::write(
        &config,
        format!(
            "[detection]\nredis_prefix = \"{}\"\n[ingest]\nlegacy_queue = true\n{}\
             [http]\nlisten = \"127.0.0.1:{http}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\
             [services]\namqp_url = \"{}\"\ndatabase_url = \"{}\"\nredis_url = \"{}\"\n",
            svc.redis_prefix,
            // Extra [ingest] settings for experiments, e.g. "prefetch = 2048\n".
            std::env::var("BENCH_INGEST_TOML").unwrap_or_default(),
            svc.amqp_url,
            svc.database_url,
            svc.redis_url
        ),
    )?;
    let mut procs = Procs(Vec::new());
    let child = Command::new(bin_dir.join("auditflow-aggregator"))
        .args(["--config", config.to_str().context("path")?, "run"])
        .env_remove("AMQP_URL")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("AUDITFLOW_API_TOKENS", "bench:bench-admin-token-0123456789:admin")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("aggregator.log"))?)
        .spawn()
        .context("start the aggregator")?;
    procs.0.push(("aggregator".into(), child));
    wait_ready(http, &mut procs.0[0].1, "the aggregator")?;

    let events = || metric(metrics_port, "auditflow_aggregator_events_in_total");
    let limit = Instant::now() + Duration::from_secs(600);
    let mut first: Option<(Instant, f64)> = None;
    loop {
        let seen = events();
        if first.is_none() && seen > 0.0 {
            first = Some((Instant::now(), seen));
        }
        if seen >= n as f64 {
            break;
        }
        if Instant::now() > limit {
            bail!("only {seen} of {n} events evaluated in 10 minutes");
        }
        if let Some(status) = procs.0[0].1.try_wait()? {
            bail!("the aggregator exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (t0, at_t0) = first.context("no event evaluated")?;
    let seconds = t0.elapsed().as_secs_f64();
    // The first batch is counted at t0: it is not charged to the interval.
    let events_per_s = (n as f64 - at_t0) / seconds;
    let firings = metric(metrics_port, "auditflow_aggregator_firings_total");
    // Where a batch's time goes: the stage histograms' sums.
    let mut stages = Vec::new();
    for stage in ["dedup", "detect", "state", "store", "mark"] {
        let sum = metric(
            metrics_port,
            &format!("auditflow_aggregator_batch_stage_seconds_sum{{stage=\"{stage}\"}}"),
        );
        let count = metric(
            metrics_port,
            &format!("auditflow_aggregator_batch_stage_seconds_count{{stage=\"{stage}\"}}"),
        );
        stages.push(format!("{stage} {sum:.2} s / {count:.0} batches"));
    }
    println!("stream={stream} stages: {}", stages.join(", "));
    Ok(Run { events_per_s, firings, seconds })
}

/// RabbitMQ's own ceiling: the same pre-queued stream drained by a consumer that does nothing
/// but acknowledge (prefetch and batches as the aggregator's legacy consumer: 4,096 and 2,048,
/// acks `multiple`), so the figures above can be read against what the broker alone delivers
/// on this machine. (Other prefetch and ack sizes, and a second consumer, measured no higher.)
fn drain_only(n: u64) -> anyhow::Result<f64> {
    use futures_util::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    let svc =
        ClusterServices::create(&format!("legacy_drain_{}_{}", std::process::id(), now_ms()))?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(prequeue(&svc.amqp_url, "mixed", n))?;
    rt.block_on(async {
        let conn = Connection::connect(&svc.amqp_url, ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        ch.basic_qos(4096, BasicQosOptions::default()).await?;
        let mut deliveries = ch
            .basic_consume(
                "audit_events".into(),
                "drain".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let (mut seen, mut t0) = (0u64, None);
        while let Some(d) = deliveries.next().await {
            let d = d?;
            t0.get_or_insert_with(Instant::now);
            seen += 1;
            if seen % 2048 == 0 || seen == n {
                d.acker.ack(BasicAckOptions { multiple: true }).await?;
            }
            if seen == n {
                break;
            }
        }
        let seconds = t0.context("nothing delivered")?.elapsed().as_secs_f64();
        let _ = conn.close(200, "done".into()).await;
        // The first delivery starts the clock.
        anyhow::Ok((n - 1) as f64 / seconds)
    })
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(bin_dir), Some(n)) = (args.next(), args.next()) else {
        bail!("usage: bench_legacy BIN_DIR EVENTS");
    };
    let bin_dir = PathBuf::from(bin_dir);
    let n: u64 = n.parse().context("EVENTS")?;
    // BENCH_LEGACY_DRAIN_ONLY=1 measures the broker's ceiling alone (for experiments).
    if std::env::var_os("BENCH_LEGACY_DRAIN_ONLY").is_some() {
        println!("stream=drain-only events={n} events_per_s={:.0}", drain_only(n)?);
        return Ok(());
    }
    let mut rates = Vec::new();
    for stream in ["mixed", "failures"] {
        let r = run(&bin_dir, stream, n)?;
        println!(
            "stream={stream} events={n} seconds={:.2} events_per_s={:.0} firings={:.0}",
            r.seconds, r.events_per_s, r.firings
        );
        rates.push(r.events_per_s);
    }
    // The broker's ceiling, for reading the figures (not part of the result line).
    println!("stream=drain-only events={n} events_per_s={:.0}", drain_only(n)?);
    println!("legacy: mixed_events_per_s={:.0} failures_events_per_s={:.0}", rates[0], rates[1]);
    Ok(())
}
