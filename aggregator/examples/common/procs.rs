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
