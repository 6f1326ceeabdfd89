//! What the process-driving benchmarks share: ports, plain HTTP with a bearer token, readiness,
//! and processes that die with the benchmark.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// `GET path` over HTTP/1.0 with `token`: the status, the body and how long it took.
pub fn get(port: u16, path: &str, token: &str) -> Option<(u16, String, Duration)> {
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let took = start.elapsed();
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body, took))
}

/// Waits until `/readyz` on `port` answers 200, or the process exits, or a minute passes.
pub fn wait_ready(port: u16, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    while get(port, "/readyz", "").is_none_or(|(status, _, _)| status != 200) {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited: {status}");
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("{what} is not ready after 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Processes killed at the end however it ends.
pub struct Procs(pub Vec<(String, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Adds `vhost` to the RabbitMQ server of `amqp` (AMQP_URL, `amqp://user:password@host/vhost`)
/// with every permission for its user; returns the URL of the new vhost.
pub fn add_vhost(amqp: &str, vhost: &str) -> anyhow::Result<String> {
    let (prefix, _) = amqp.rsplit_once('/').context("AMQP_URL has a vhost")?;
    let user = prefix
        .strip_prefix("amqp://")
        .and_then(|r| r.split_once(':'))
        .map(|(u, _)| u.to_owned())
        .context("AMQP_URL has a user")?;
    rabbitmqctl(&["add_vhost", vhost])?;
    rabbitmqctl(&["set_permissions", "-p", vhost, &user, ".*", ".*", ".*"])?;
    Ok(format!("{prefix}/{vhost}"))
}

pub fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let out =
        std::process::Command::new("rabbitmqctl").args(args).output().context("run rabbitmqctl")?;
    if !out.status.success() {
        bail!("rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A RabbitMQ vhost, a PostgreSQL database and a Redis key prefix of a benchmark's own (from
/// AMQP_URL, DATABASE_URL, REDIS_URL), removed when dropped.
pub struct ClusterServices {
    pub vhost: String,
    pub admin_db: String,
    pub db: String,
    pub redis_url: String,
    pub redis_prefix: String,
    /// The vhost's URL.
    pub amqp_url: String,
    /// The database's URL.
    pub database_url: String,
}

impl ClusterServices {
    /// Creates them, named after `tag`.
    pub fn create(tag: &str) -> anyhow::Result<Self> {
        let env = |k: &str| std::env::var(k).with_context(|| format!("{k} is not set"));
        let (amqp, admin_db, redis_url) =
            (env("AMQP_URL")?, env("DATABASE_URL")?, env("REDIS_URL")?);
        let vhost = format!("auditflow_bench_{tag}");
        let db = format!("auditflow_bench_{tag}");
        let amqp_url = add_vhost(&amqp, &vhost)?;
        let out = std::process::Command::new("psql")
            .args([&admin_db, "-qc", &format!("CREATE DATABASE {db}")])
            .output()?;
        if !out.status.success() {
            bail!("create database: {}", String::from_utf8_lossy(&out.stderr));
        }
        let database_url = format!("{}/{db}", admin_db.rsplit_once('/').context("DATABASE_URL")?.0);
        Ok(Self {
            vhost,
            admin_db,
            db,
            redis_url,
            redis_prefix: format!("auditflow-bench:{tag}:"),
            amqp_url,
            database_url,
        })
    }
}

impl Drop for ClusterServices {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_vhost", &self.vhost]);
        let _ = std::process::Command::new("psql")
            .args([
                &self.admin_db,
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db),
            ])
            .output();
        // The aggregator's windows and dedup records (they would expire within a day).
        let _ = crate::common::unlink_prefix(&self.redis_url, &self.redis_prefix);
    }
}

/// The value of a Prometheus metric line starting with `name` (0 when absent).
pub fn metric(port: u16, name: &str) -> f64 {
    get(port, "/metrics", "")
        .and_then(|(_, body, _)| {
            body.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(0.0)
}
