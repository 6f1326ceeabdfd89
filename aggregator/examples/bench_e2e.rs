//! End-to-end benchmark: the real release binaries as processes, everything on this machine.
//! Run through `scripts/bench.sh e2e`, which builds the binaries and brings up the services.
//!
//! `bench_e2e cluster|embedded BIN_DIR AGENT_BIN_DIR AGENTS RATE SECONDS`
//!
//! * cluster: AGENTS agents → auditflow-broker (MQTT) → RabbitMQ → auditflow-aggregator with
//!   Redis and PostgreSQL (a vhost, database and key prefix of its own, removed afterwards);
//! * embedded: the same agents → `auditflow` with no services (in-process broker,
//!   SQLite, in-memory state).
//!
//! Each agent sends RATE events/s of ordinary traffic (`[synthetic] mix = "normal"`, which fires
//! no rule) for SECONDS, plus latency probes: three failed logins at once for a
//! fresh user, which fires ANLY-SEC-001 exactly once (four probes a second per agent). The probe's latency is from the event
//! time of its third login (the alert's `last_seen`) to the moment the alert arrives on the
//! API's live stream (`/api/v1/stream`), i.e. is visible in the API.
//!
//! Sustained events/s is every event sent divided by the time from the agents' start until
//! the aggregator has evaluated the last of them, so a pipeline that falls behind is charged
//! for its backlog. Prints a table per process (CPU % of one core, peak RSS) and the last line
//! `e2e: profile=<p> events_per_s=<n> p99_ms=<x>`.
//!
//! With `E2E_FLEET=1` the agents run as tasks of one process (`agent/examples/agent_fleet.rs`,
//! each with its own MQTT connection, credential and spool), so a thousand of them measure the
//! broker and the aggregator rather than this machine's scheduler; only the first
//! `E2E_PROBE_AGENTS` (10) carry latency probes, and batches close after `E2E_BATCH_MS` (50) ms
//! (otherwise 20). `scripts/bench.sh fleet` runs it.

#[path = "common/redis_keys.rs"]
mod common;
#[path = "common/procs.rs"]
mod procs;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use procs::{ClusterServices, Procs, free_port, wait_ready};

const TOKEN: &str = "bench-admin-token-0123456789";
/// Latency probes per second and agent.
const PROBES_PER_S: f64 = 4.0;

/// Probes of one agent that carries them: from 1 s until a second before its traffic ends.
fn probes_per_agent(a: &Args) -> u64 {
    (a.seconds.saturating_sub(2) as f64 * PROBES_PER_S) as u64
}

fn env_num(name: &str, default: u64) -> anyhow::Result<u64> {
    std::env::var(name).map_or(Ok(default), |v| v.parse().with_context(|| format!("{name}={v}")))
}

struct Args {
    profile: String,
    bin_dir: PathBuf,
    agent_bin_dir: PathBuf,
    agents: usize,
    rate: u64,
    seconds: u64,
    /// Agents as tasks of one `agent_fleet` process.
    fleet: bool,
    /// How many agents (the first ones) carry latency probes.
    probe_agents: usize,
    /// Batches close after this many milliseconds.
    batch_ms: u64,
}

fn args() -> anyhow::Result<Args> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [profile, bin_dir, agent_bin_dir, agents, rate, seconds] = a.as_slice() else {
        bail!("usage: bench_e2e cluster|embedded BIN_DIR AGENT_BIN_DIR AGENTS RATE SECONDS");
    };
    let fleet = std::env::var("E2E_FLEET").is_ok_and(|v| v == "1");
    let agents: usize = agents.parse()?;
    Ok(Args {
        profile: profile.clone(),
        bin_dir: bin_dir.into(),
        agent_bin_dir: agent_bin_dir.into(),
        agents,
        rate: rate.parse()?,
        seconds: seconds.parse()?,
        fleet,
        probe_agents: (env_num("E2E_PROBE_AGENTS", if fleet { 10 } else { agents as u64 })?
            as usize)
            .min(agents),
        batch_ms: env_num("E2E_BATCH_MS", if fleet { 50 } else { 20 })?,
    })
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn metric(port: u16, name: &str) -> f64 {
    http_get(port, "/metrics")
        .and_then(|b| {
            b.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(0.0)
}

/// CPU ticks (user + system) and peak RSS (kB) of a process.
fn proc_stat(pid: u32) -> Option<(u64, u64)> {
    proc_stat_as(pid, "VmHWM:")
}

/// CPU ticks and the `/proc/PID/status` memory figure `field` (kB) of a process.
fn proc_stat_as(pid: u32, field: &str) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Some((ticks, kb))
}

/// The machine's service processes by name (RabbitMQ, PostgreSQL, Redis): pids per group.
fn service_pids() -> HashMap<&'static str, Vec<u32>> {
    let mut out: HashMap<&'static str, Vec<u32>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let group = match comm.trim() {
            "beam.smp" | "epmd" | "erl_child_setup" | "inet_gethost" => "rabbitmq",
            c if c.starts_with("postgres") => "postgresql",
            "redis-server" => "redis",
            _ => continue,
        };
        out.entry(group).or_default().push(pid);
    }
    out
}

/// Follows the API's live stream; records `(arrival ms, alert)` of every alert change.
fn follow_stream(port: u16, seen: Arc<Mutex<Vec<(i64, serde_json::Value)>>>) {
    std::thread::spawn(move || {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return };
        // HTTP/1.0: the body is the rest of the connection, no chunk framing to undo.
        if write!(s, "GET /api/v1/stream HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
            .is_err()
        {
            return;
        }
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { return };
            let Some(data) = line.strip_prefix("data:") else { continue };
            let arrived = now_ms();
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim())
                && let Ok(mut g) = seen.lock()
            {
                g.push((arrived, v));
            }
        }
    });
}

fn agent_config(
    dir: &Path,
    node: &str,
    mqtt: u16,
    password: &str,
    a: &Args,
    probe: bool,
) -> String {
    let mut probes = String::new();
    for k in 0..if probe { probes_per_agent(a) } else { 0 } {
        probes.push_str(&format!(
            "[[scenario]]\nkind = \"failed_logins\"\nat_s = {}\nuser = \"probe-{node}-{k}\"\n\
             src_ip = \"198.51.100.{}\"\ncount = 3\n",
            1.0 + k as f64 / PROBES_PER_S,
            k % 250 + 1
        ));
    }
    // Batches close at 512 events or batch_ms (20 ms): at two agents' rates they close by
    // count, and the latency probes do not wait the default second.
    format!(
        "node_id = \"{node}\"\n{probes}[http]\nlisten = \"127.0.0.1:0\"\n\
         [spool]\ndir = \"{}\"\n[batch]\nmax_age_ms = {}\n\
         [transport]\nkind = \"mqtt\"\nmqtt_url = \"mqtt://127.0.0.1:{mqtt}\"\n\
         mqtt_password = \"{password}\"\n\
         [synthetic]\nenabled = true\nmix = \"normal\"\nrate_per_sec = {}.0\nlimit = {}\n",
        dir.join(format!("spool-{node}")).display(),
        a.batch_ms,
        a.rate,
        a.rate * a.seconds
    )
}

/// What the cluster profile creates on the services, removed when dropped.
fn main() -> anyhow::Result<()> {
    let a = args()?;
    let mut dir = tempfile::tempdir()?;
    // E2E_KEEP=1 keeps the run's directory (configs, logs) for inspection.
    if std::env::var("E2E_KEEP").is_ok_and(|v| v == "1") {
        dir.disable_cleanup(true);
        eprintln!("the run's directory: {}", dir.path().display());
    }
    let (http, metrics_port, mqtt) = (free_port(), free_port(), free_port());
    let nodes: Vec<(String, String)> =
        (1..=a.agents).map(|i| (format!("bench-{i}"), format!("bench-password-{i}"))).collect();
    let creds: String = nodes.iter().map(|(n, p)| format!("{n}:{p}\n")).collect();
    let mut procs = Procs(Vec::new());
    let mut _services = None;

    let agg_log = std::fs::File::create(dir.path().join("aggregator.log"))?;
    let binary = if a.profile == "cluster" { "auditflow-aggregator" } else { "auditflow" };
    let mut agg = Command::new(a.bin_dir.join(binary));
    agg.env("AUDITFLOW_API_TOKENS", format!("bench:{TOKEN}:admin"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(agg_log);
    let mqtt_port = if a.profile == "cluster" {
        let svc = ClusterServices::create(&format!("{}_{}", std::process::id(), now_ms()))?;
        let (amqp_url, database_url) = (svc.amqp_url.clone(), svc.database_url.clone());
        let (redis, redis_prefix) = (svc.redis_url.clone(), svc.redis_prefix.clone());
        _services = Some(svc);
        let config = dir.path().join("aggregator.toml");
        std::fs::write(
            &config,
            format!(
                "[detection]\nredis_prefix = \"{redis_prefix}\"\n\
                 [http]\nlisten = \"127.0.0.1:{http}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\
                 [services]\namqp_url = \"{amqp_url}\"\ndatabase_url = \"{database_url}\"\nredis_url = \"{redis}\"\n{}",
                // Extra aggregator settings for experiments, e.g. "[ingest]\nbatch_wait_ms = 5".
                std::env::var("BENCH_AGGREGATOR_TOML").unwrap_or_default()
            ),
        )?;
        agg.args(["--config", config.to_str().context("path")?, "run"])
            .env_remove("AMQP_URL")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL");
        procs.0.push(("aggregator".into(), agg.spawn().context("start the aggregator")?));
        wait_ready(http, &mut procs.0[0].1, "the aggregator")?;

        let (broker_mqtt, broker_http) = (free_port(), free_port());
        std::fs::write(dir.path().join("credentials"), &creds)?;
        let config = dir.path().join("broker.toml");
        std::fs::write(
            &config,
            format!(
                "[mqtt]\nlisten = \"127.0.0.1:{broker_mqtt}\"\ncredentials_file = \"{}\"\n\
                 max_connections = {}\n\
                 [http]\nlisten = \"127.0.0.1:{broker_http}\"\n[amqp]\nurl = \"{amqp_url}\"\n",
                dir.path().join("credentials").display(),
                // The default (256) is a small fleet's; every agent here is one connection.
                (a.agents + 16).max(256)
            ),
        )?;
        let broker = Command::new(a.bin_dir.join("auditflow-broker"))
            .arg("--config")
            .arg(&config)
            .env_remove("AMQP_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("broker.log"))?)
            .spawn()
            .context("start the broker")?;
        procs.0.push(("broker".into(), broker));
        wait_ready(broker_http, &mut procs.0[1].1, "the broker")?;
        broker_mqtt
    } else {
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        std::fs::write(data.join("agents.credentials"), &creds)?;
        agg.args(["--data-dir", data.to_str().context("path")?])
            .args(["--listen", &format!("127.0.0.1:{http}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--mqtt-listen", &format!("127.0.0.1:{mqtt}")])
            .args(["--no-demo", "run"])
            .env_remove("AMQP_URL")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL");
        procs.0.push(("aggregator".into(), agg.spawn().context("start the aggregator")?));
        wait_ready(http, &mut procs.0[0].1, "the aggregator")?;
        mqtt
    };

    let seen = Arc::new(Mutex::new(Vec::new()));
    follow_stream(http, Arc::clone(&seen));
    std::thread::sleep(Duration::from_millis(300));

    let hz = 100.0; // USER_HZ on Linux
    let services = if a.profile == "cluster" { service_pids() } else { HashMap::new() };
    let service_ticks =
        |pids: &[u32]| -> u64 { pids.iter().filter_map(|p| proc_stat(*p)).map(|s| s.0).sum() };
    let services_t0: HashMap<&str, u64> =
        services.iter().map(|(k, v)| (*k, service_ticks(v))).collect();
    let ours_t0: Vec<u64> =
        procs.0.iter().map(|(_, c)| proc_stat(c.id()).map_or(0, |s| s.0)).collect();
    let events_t0 = metric(metrics_port, "auditflow_aggregator_events_in_total");

    let started = Instant::now();
    let first_agent = procs.0.len();
    let fleet_dir = dir.path().join("fleet");
    std::fs::create_dir_all(&fleet_dir)?;
    for (i, (node, password)) in nodes.iter().enumerate() {
        let config = fleet_dir.join(format!("{node}.toml"));
        let text = agent_config(dir.path(), node, mqtt_port, password, &a, i < a.probe_agents);
        std::fs::write(&config, text)?;
        if a.fleet {
            continue;
        }
        let child = Command::new(a.agent_bin_dir.join("auditflow-agent"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join(format!("{node}.log")))?)
            .spawn()
            .context("start an agent")?;
        procs.0.push((node.clone(), child));
    }
    if a.fleet {
        let name = format!("agents ({} in one process)", a.agents);
        let child = Command::new(a.agent_bin_dir.join("examples/agent_fleet"))
            .arg(&fleet_dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join(format!("{name}.log")))?)
            .spawn()
            .context("start agent_fleet")?;
        procs.0.push((name, child));
    }
    let probes_per_agent = probes_per_agent(&a);
    let probes = probes_per_agent * a.probe_agents as u64;
    let total = a.rate * a.seconds * a.agents as u64 + 3 * probes;

    // Sample peak RSS and CPU until the aggregator has evaluated every event.
    let mut last: Vec<(u64, u64)> = vec![(0, 0); procs.0.len()];
    let limit = Duration::from_secs(a.seconds * 10 + 120);
    let mut done_at = None;
    loop {
        for (i, (_, c)) in procs.0.iter().enumerate() {
            if let Some(s) = proc_stat(c.id()) {
                last[i] = (s.0, last[i].1.max(s.1));
            }
        }
        let evaluated = metric(metrics_port, "auditflow_aggregator_events_in_total") - events_t0;
        if evaluated >= total as f64 {
            done_at = Some(started.elapsed());
            break;
        }
        if started.elapsed() > limit {
            eprintln!("only {evaluated} of {total} events evaluated after {limit:?}");
            break;
        }
        for (name, c) in procs.0.iter_mut().skip(first_agent) {
            if let Some(status) = c.try_wait()?
                && !status.success()
            {
                bail!("agent {name} failed: {status}");
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(elapsed) = done_at else { bail!("the pipeline did not finish") };
    let wall = elapsed.as_secs_f64();
    // Give the last probes' alerts a moment to reach the stream.
    std::thread::sleep(Duration::from_millis(500));

    // Latency of the probes.
    let mut latencies: Vec<i64> = Vec::new();
    if let Ok(g) = seen.lock() {
        for (arrived, v) in g.iter() {
            let alert = &v["alert"];
            let probe = alert["group"]["user"].as_str().is_some_and(|u| u.starts_with("probe-"));
            if probe && v["change"] == "created" {
                let last_seen = alert["last_seen"]
                    .as_str()
                    .and_then(wire::model::Timestamp::parse_rfc3339)
                    .map_or(0, |t| t.as_nanos() / 1_000_000);
                latencies.push(arrived - last_seen);
            }
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64
    };

    // Wire bytes per event, from the agents' final log lines.
    // And how often agents resent their window for want of acknowledgements (load the
    // backlog adds to itself) or lost their broker session.
    let (mut sent, mut bytes, mut resends, mut sessions_ended) = (0u64, 0u64, 0u64, 0u64);
    for (name, c) in procs.0.iter_mut().skip(first_agent) {
        let _ = c.wait();
        let log =
            std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap_or_default();
        // The agent logs JSON lines when stderr is not a terminal; a fleet, one per agent.
        for line in log.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
            let message = line["fields"]["message"].as_str().unwrap_or_default();
            if message == "agent stopped" {
                sent += line["fields"]["sent"].as_u64().unwrap_or(0);
                bytes += line["fields"]["sent_bytes"].as_u64().unwrap_or(0);
            } else if message.starts_with("no acknowledgement progress") {
                resends += 1;
            } else if message == "broker session ended" {
                sessions_ended += 1;
            }
        }
    }
    println!("agents: {resends} window resends, {sessions_ended} broker sessions ended");

    let events_per_s = total as f64 / wall;
    println!(
        "\n### profile={} — {} agents × {} events/s for {} s (+ {} latency probes)\n",
        a.profile, a.agents, a.rate, a.seconds, probes
    );
    println!("| process | CPU % of one core | peak RSS MB |\n|---|---:|---:|");
    for (i, (name, _)) in procs.0.iter().enumerate() {
        let t0 = ours_t0.get(i).copied().unwrap_or(0);
        let cpu = 100.0 * (last[i].0.saturating_sub(t0)) as f64 / hz / wall;
        println!("| {name} | {cpu:.0} | {:.1} |", last[i].1 as f64 / 1024.0);
    }
    let mut names: Vec<_> = services.keys().copied().collect();
    names.sort_unstable();
    for name in names {
        let pids = &services[name];
        let cpu = 100.0 * service_ticks(pids).saturating_sub(services_t0[name]) as f64 / hz / wall;
        // The services outlive the run, so their peak would be that of their whole life
        // (earlier benchmarks included): their RSS at the end of the run instead.
        let rss: u64 = pids.iter().filter_map(|p| proc_stat_as(*p, "VmRSS:")).map(|s| s.1).sum();
        println!(
            "| {name} (service, {} processes) | {cpu:.0} | {:.1} (sum, at the end) |",
            pids.len(),
            rss as f64 / 1024.0
        );
    }
    println!(
        "\n| events | seconds | events/s | probes seen | latency p50 ms | p99 ms | max ms | wire bytes/event |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    println!(
        "| {total} | {wall:.1} | {events_per_s:.0} | {}/{} | {:.0} | {:.0} | {:.0} | {:.1} |",
        latencies.len(),
        probes,
        pct(0.5),
        pct(0.99),
        latencies.last().copied().unwrap_or(0),
        if sent > 0 { bytes as f64 / sent as f64 } else { f64::NAN }
    );
    where_the_time_goes(metrics_port);
    // The event archive's share (design.md §6.12): compressed bytes written per event.
    let (archived, archived_bytes) = (
        metric(metrics_port, "auditflow_aggregator_archived_events_total"),
        metric(metrics_port, "auditflow_aggregator_archived_bytes_total"),
    );
    let per_event = if archived > 0.0 { archived_bytes / archived } else { 0.0 };
    println!(
        "\nEvent archive: {archived:.0} events archived, {per_event:.1} compressed bytes per event"
    );
    println!(
        "e2e: profile={} events_per_s={events_per_s:.0} p99_ms={:.0} archive_bytes_per_event={per_event:.1}",
        a.profile,
        pct(0.99)
    );
    Ok(())
}

/// The aggregator's own latency histograms for the run: how old events are when they reach
/// detection (agents, broker, RabbitMQ, consumer batching), each pipeline stage per batch, and
/// how old a firing's event is when it is committed. Quantiles are bucket upper bounds.
fn where_the_time_goes(metrics_port: u16) {
    let Some(body) = http_get(metrics_port, "/metrics") else { return };
    println!(
        "\nWhere the time goes (the aggregator's histograms; quantiles are bucket bounds):\n\n\
         | measure | count | mean ms | p50 ms ≤ | p99 ms ≤ |\n|---|---:|---:|---:|---:|"
    );
    let mut rows = vec![("event age at detection", "auditflow_aggregator_event_age_seconds", "")];
    for stage in aggregator::telemetry::STAGES {
        rows.push(("batch stage", "auditflow_aggregator_batch_stage_seconds", stage));
    }
    rows.push(("firing age at commit", "auditflow_aggregator_firing_age_seconds", ""));
    for (what, name, stage) in rows {
        let label = if stage.is_empty() { String::new() } else { format!("stage=\"{stage}\"") };
        let Some(h) = histogram(&body, name, &label) else { continue };
        let title = if stage.is_empty() { what.to_owned() } else { format!("{what}: {stage}") };
        println!(
            "| {title} | {} | {:.2} | {} | {} |",
            h.count,
            if h.count > 0.0 { 1000.0 * h.sum / h.count } else { f64::NAN },
            h.quantile_ms(0.5),
            h.quantile_ms(0.99)
        );
    }
}

struct Hist {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

impl Hist {
    fn quantile_ms(&self, q: f64) -> String {
        let want = q * self.count;
        self.buckets.iter().find(|(_, n)| *n >= want && *n > 0.0).map_or_else(
            || "-".into(),
            |(le, _)| {
                if le.is_infinite() { "∞".into() } else { format!("{}", le * 1000.0) }
            },
        )
    }
}

/// A Prometheus histogram from the text exposition; `label` selects one series
/// (`stage="detect"`), empty for an unlabelled histogram.
fn histogram(body: &str, name: &str, label: &str) -> Option<Hist> {
    let (mut buckets, mut sum, mut count) = (Vec::new(), None, None);
    for line in body.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let labels = |suffix: &str| -> Option<String> {
            let rest = series.strip_prefix(name)?.strip_prefix(suffix)?;
            Some(rest.trim_start_matches('{').trim_end_matches('}').to_owned())
        };
        if let Some(l) = labels("_bucket") {
            let mut le = None;
            let mut ours = label.is_empty();
            for part in l.split(',') {
                if let Some(v) = part.strip_prefix("le=") {
                    let v = v.trim_matches('"');
                    le = Some(if v == "+Inf" { f64::INFINITY } else { v.parse().ok()? });
                } else if part == label {
                    ours = true;
                }
            }
            if let (Some(le), true) = (le, ours) {
                buckets.push((le, value));
            }
        } else if let Some(l) = labels("_sum") {
            if l == label {
                sum = Some(value);
            }
        } else if let Some(l) = labels("_count")
            && l == label
        {
            count = Some(value);
        }
    }
    Some(Hist { buckets, sum: sum?, count: count? })
}
