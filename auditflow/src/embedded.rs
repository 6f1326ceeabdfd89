//! Embedded mode's own pieces: the data directory and its secrets, and the bridge from the
//! in-process MQTT broker into the detection pipeline.
//!
//! The bridge keeps the cluster profile's delivery guarantee: an agent's envelopes are acked
//! only after the batch holding them is committed to SQLite (design.md §4), so the in-process
//! agent's spool, and any outside agent's, replays what a crash lost.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use broker::acks::AckBook;
use broker::bridge::{EVENTS_FILTER, HEARTBEAT_FILTER, Incoming, classify};
use broker::report::{Refusal, Reporter};
use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};
use runtime::retry::Backoff;
use tokio_util::sync::CancellationToken;
use wire::model::{Heartbeat, Timestamp};

use aggregator::http::auth::{Role, Tokens, generate_token};
use aggregator::pipeline::{Item, Pipeline};
use aggregator::state::WindowState;
use aggregator::store::SharedStore;

/// Files under the data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    /// The directory.
    pub root: PathBuf,
}

impl DataDir {
    /// Creates the directory if needed, private to this user from its creation (mode 0700,
    /// not chmodded afterwards, so there is no moment in which others may open it).
    pub fn open(root: &str) -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let root = PathBuf::from(root);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .with_context(|| format!("create the data directory {}", root.display()))?;
        Ok(Self { root })
    }

    /// The SQLite URL of the alert store.
    pub fn database_url(&self) -> String {
        format!("sqlite:{}", self.root.join("auditflow.db").display())
    }

    /// The local agent's spool.
    pub fn spool(&self) -> PathBuf {
        self.root.join("spool")
    }

    /// Reads a secret kept in the data directory, creating it on first use. Returns the
    /// secret and whether it was created now (so that it is shown once, at its creation).
    pub fn secret(&self, name: &str) -> anyhow::Result<(String, bool)> {
        let path = self.root.join(name);
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => return Ok((s.trim().to_owned(), false)),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        }
        let token = generate_token().context("read random bytes for a token")?;
        write_private(&path, &format!("{token}\n"))?;
        Ok((token, true))
    }

    /// `agents.credentials`: `node:password` lines the MQTT listener accepts. The local
    /// agent's line is added on first start; add lines for outside agents.
    pub fn credentials(
        &self,
        node: &str,
    ) -> anyhow::Result<(broker::credentials::Credentials, String)> {
        let path = self.root.join("agents.credentials");
        let mut text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                "# node:password, one per line; agents log in with their node name.\n".into()
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        let existing = text.lines().find_map(|l| {
            l.split_once(':').filter(|(n, _)| *n == node).map(|(_, p)| p.trim().to_owned())
        });
        let password = match existing {
            Some(p) => p,
            None => {
                let p = generate_token().context("read random bytes for a password")?;
                text.push_str(&format!("{node}:{p}\n"));
                write_private(&path, &text)?;
                p
            }
        };
        let creds = broker::credentials::Credentials::parse(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.join("; ")))?;
        Ok((creds, password))
    }
}

/// Writes a file holding secrets: created 0600 (never chmodded after writing, which would
/// leave it readable for a moment), then renamed into place.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    // A stale temporary file from a crash may have any mode: start afresh.
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Where embedded mode's API tokens come from.
#[derive(Debug)]
pub enum AdminToken {
    /// Configured tokens (`AUDITFLOW_API_TOKENS`, `[api] tokens`).
    Configured,
    /// An admin token created now, in the data directory: printed once, now.
    Created(String),
    /// The admin token created at an earlier start: never printed again (logs and terminal
    /// scrollback outlive it); its file is named instead.
    Kept,
}

/// The API tokens of embedded mode: the configured ones, or else an admin token kept in the
/// data directory.
pub fn tokens(configured: Tokens, dir: &DataDir) -> anyhow::Result<(Tokens, AdminToken)> {
    if !configured.is_empty() {
        return Ok((configured, AdminToken::Configured));
    }
    let (token, created) = dir.secret("admin.token")?;
    let mut t = Tokens::default();
    t.add("admin", &token, Role::Admin);
    Ok((t, if created { AdminToken::Created(token) } else { AdminToken::Kept }))
}

/// Envelopes and heartbeats per pipeline batch at most.
const BATCH: usize = 256;
/// How long a batch waits to fill.
const BATCH_WAIT: Duration = Duration::from_millis(20);

/// Moves agents' publishes from the in-process broker into the pipeline, acking each agent
/// after its envelopes are committed, and the broker's refusals of nodes' actions in as
/// `mqtt_refused` events (`broker/src/report.rs`). Runs until cancelled.
pub async fn bridge<S: WindowState + 'static>(
    (mut tx, mut rx, mut refusals): (LinkTx, LinkRx, tokio::sync::mpsc::Receiver<Refusal>),
    pipeline: Arc<Pipeline<S, SharedStore>>,
    max_frame: usize,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    tx.subscribe(EVENTS_FILTER).context("subscribe to agents' events")?;
    tx.subscribe(HEARTBEAT_FILTER).context("subscribe to agents' heartbeats")?;
    let mut book = AckBook::default();
    let mut reporter = Reporter::new();
    let metrics = pipeline.metrics.clone();
    loop {
        let mut incoming = Vec::new();
        let mut items = Vec::new();
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            n = rx.next() => incoming.extend(n.context("the MQTT broker's link closed")?),
            Some(r) = refusals.recv() => items.push(Item::Envelope(reporter.envelope(&r))),
        }
        while let Ok(r) = refusals.try_recv() {
            items.push(Item::Envelope(reporter.envelope(&r)));
        }
        let deadline = tokio::time::Instant::now() + BATCH_WAIT;
        while incoming.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.next()).await {
                Ok(n) => incoming.extend(n.context("the MQTT broker's link closed")?),
                Err(_) => break,
            }
        }
        let mut streams = Vec::new();
        let mut beats: Vec<Heartbeat> = Vec::new();
        for n in incoming {
            let Notification::Forward(f) = n else { continue };
            match classify(&f.publish.topic, &f.publish.payload, max_frame) {
                Incoming::Envelope { node, envelope, .. } => {
                    streams.push((node, envelope.epoch, envelope.first_seq, envelope.end_seq()));
                    items.push(Item::Envelope(envelope));
                }
                Incoming::Heartbeat { frame } => {
                    if let Ok(h) = wire::frame::decode_with_limit::<Heartbeat>(&frame, max_frame) {
                        beats.push(h);
                    }
                }
                Incoming::Invalid { reason, detail, topic, .. } => {
                    metrics.invalid.inc();
                    tracing::warn!(reason, detail = %detail, topic = %topic, "envelope refused");
                    if let Some(node) = topic.strip_prefix("auditflow/v1/events/") {
                        let r = Refusal {
                            node: node.to_owned(),
                            reason,
                            access: "publish",
                            topic: topic.clone(),
                        };
                        items.push(Item::Envelope(reporter.envelope(&r)));
                    }
                }
                Incoming::Ignored(reason) => {
                    metrics.invalid.inc();
                    tracing::debug!(reason, "publish ignored");
                }
                // Only the broker makes reports; nothing on the link is one.
                Incoming::Report { .. } => {}
            }
        }
        metrics.messages_in.with_label_values(&["native"]).inc_by(streams.len() as u64);
        metrics.heartbeats.inc_by(beats.len() as u64);
        let mut backoff = Backoff::service();
        loop {
            let result = async {
                pipeline.heard(&beats).await?;
                pipeline.process(&items).await
            }
            .await;
            match result {
                Ok(_) => break,
                Err(e) => {
                    metrics.batch_failures.inc();
                    tracing::warn!(error = %format!("{e:#}"), "batch failed; retrying");
                    tokio::select! {
                        // Unacked envelopes are resent by their agents.
                        () = cancel.cancelled() => return Ok(()),
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
        for (node, epoch, first, end) in streams {
            if let Some(up_to_seq) = book.confirmed(&node, epoch, first, end) {
                let ack = wire::encode(&wire::Ack { epoch, up_to_seq });
                tx.publish(wire::ack_topic(&node), ack).context("publish ack")?;
            }
        }
    }
}

/// The in-process agent's configuration: this host's name, its spool under the data
/// directory, the embedded broker, demo traffic at `rate` events/s.
pub fn agent_config(
    dir: &DataDir,
    node: &str,
    mqtt: &str,
    password: &str,
    rate: f64,
) -> agent::Config {
    let mut c = agent::Config { node_id: node.to_owned(), ..Default::default() };
    c.http.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    c.spool.dir = dir.spool().display().to_string();
    c.transport.kind = agent::config::Transport::Mqtt;
    c.transport.mqtt_url = format!("mqtt://{mqtt}");
    c.transport.mqtt_password = password.to_owned();
    c.synthetic.enabled = true;
    c.synthetic.rate_per_sec = rate;
    c.synthetic.seed = Timestamp::now().as_nanos() as u64;
    c
}
