//! The notifier: delivers the outbox (design.md §6). Every new alert gets one outbox row per
//! channel in the same transaction that creates it; this task claims due rows, sends them and
//! records the result, retrying with exponential backoff until `max_attempts`. A crash
//! between sending and recording sends again (at least once); receivers can deduplicate on
//! the alert id.
//!
//! Channels: the `audit_alerts` RabbitMQ queue (legacy alert JSON plus ours, publisher
//! confirms), a generic JSON webhook, Slack (an incoming webhook: a Block Kit message in an
//! attachment coloured by severity), Discord (a webhook embed; Discord rather than Microsoft
//! Teams, whose connector webhooks are being retired for Power Automate workflows and which
//! few Pi and k3s homelabs run), ntfy (self-hosted push), PagerDuty (Events API v2, the alert
//! id as the dedup key), and e-mail over SMTP. Text that comes from events (titles, nodes) is
//! escaped for each receiver's markup, and Discord is told to ping nobody, so a node cannot
//! make a message mention `@everyone` or hide a link.
//!
//! Webhooks go over `https://` (or plain `http://` to a receiver inside the cluster) through
//! reqwest with rustls: the system's roots plus the channel's own `ca_file`, the proxy from
//! `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`, 10 s to connect and 15 s in all. A generic webhook
//! with a `secret_file` signs its body like GitHub does: `X-AuditFlow-Signature:
//! sha256=<HMAC-SHA256 of the body, hex>`, so its receiver can tell our deliveries from
//! forgeries. ntfy takes an access token and PagerDuty its integration (routing) key from the
//! same `secret_file`. E-mail goes over SMTP with STARTTLS or implicit TLS and AUTH.
//! Prometheus Alertmanager gets `POST /api/v2/alerts`, firing alerts re-sent every
//! `repeat_interval` (Alertmanager forgets alerts that are not re-sent) and resolved ones with
//! their end.
//!
//! A channel hears of an alert's changes, not only of its creation ([`policy`]): updates as
//! firings fold in (at most `max_updates`, `group_interval` apart), its resolution
//! (`send_resolved`), PagerDuty its acknowledgement; people's channels (Slack, Discord, ntfy,
//! e-mail) have a rate cap (`max_per_hour`) beyond which what is due goes out as one digest,
//! and quiet hours per severity.

pub mod policy;

use policy::Change;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Connection};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::{AlertsFeed, LegacyConfig};
use crate::legacy_alert::{self, FeedChange, Firing};
use crate::store::{Alert, OutboxItem, SharedStore, now_ms};
use crate::telemetry::Metrics;

/// The name of the `audit_alerts` channel.
pub const AUDIT_ALERTS: &str = "audit_alerts";

/// `[[notify.channels]]`: one notification channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Unique name, shown in deliveries.
    pub name: String,
    /// What receives it.
    pub kind: ChannelKind,
    /// The receiver's URL (`https://…`, or `http://…` inside the cluster): the webhook's, the
    /// ntfy topic's (`https://ntfy.example.org/topic`); PagerDuty's defaults to its Events API.
    #[serde(default)]
    pub url: String,
    /// A file holding the URL instead (in Kubernetes a Secret's key): a Slack or Discord
    /// webhook URL is itself the secret, and does not belong in a ConfigMap. Read at every
    /// delivery, so a rotated Secret takes effect without a restart.
    #[serde(default)]
    pub url_file: String,
    /// CA certificates (PEM) trusted for this channel's `https://` URL or SMTP TLS besides
    /// the system's.
    #[serde(default)]
    pub ca_file: String,
    /// A file holding the channel's secret: the key that signs a generic webhook's body
    /// (`X-AuditFlow-Signature: sha256=…`; empty: unsigned), ntfy's access token (empty: none),
    /// PagerDuty's integration key (required).
    #[serde(default)]
    pub secret_file: String,
    /// SMTP server `host:port`, for `email`.
    #[serde(default)]
    pub smtp: String,
    /// `starttls` (required; the default), `tls` (implicit, port 465) or `none` (a relay
    /// inside the cluster), for `email`.
    #[serde(default = "default_smtp_tls")]
    pub smtp_tls: String,
    /// SMTP AUTH user; empty: no AUTH.
    #[serde(default)]
    pub smtp_user: String,
    /// A file holding the SMTP password.
    #[serde(default)]
    pub smtp_password_file: String,
    /// Sender address, for `email`.
    #[serde(default)]
    pub from: String,
    /// Recipients, for `email`.
    #[serde(default)]
    pub to: Vec<String>,
    /// Only alerts at least this severe (`INFO`, `WARNING`, `CRITICAL`).
    #[serde(default)]
    pub min_severity: Option<String>,
    /// Only alerts of these rules (empty: any).
    #[serde(default)]
    pub rules: Vec<String>,
    /// Only alerts with at least one of these tags (empty: any).
    #[serde(default)]
    pub tags: Vec<String>,
    /// People's channels: new alerts of one rule created within the same `group_wait` window
    /// go out as one message (the first waits at most this long). "0s": each at once.
    #[serde(default = "group_wait", with = "runtime::config::duration")]
    pub group_wait: Duration,
    /// Updates of an alert (more firings folded into it) at most this often.
    #[serde(default = "group_interval", with = "runtime::config::duration")]
    pub group_interval: Duration,
    /// Updates per alert at most (0: none; the first message and the resolution only).
    #[serde(default = "max_updates")]
    pub max_updates: u32,
    /// A message when an alert is resolved (Alertmanager always gets it: it ends the alert).
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// `alertmanager`: how often a firing alert is sent again.
    #[serde(default = "repeat_interval", with = "runtime::config::duration")]
    pub repeat_interval: Duration,
    /// People's channels (slack, discord, ntfy, email): messages per hour at most; what is due
    /// beyond goes out as one digest when there is room again. 0: no cap.
    #[serde(default = "max_per_hour")]
    pub max_per_hour: u32,
    /// Hours in which alerts of some severities wait (UTC).
    #[serde(default)]
    pub quiet_hours: Option<policy::QuietHours>,
}

fn group_wait() -> Duration {
    policy::GROUP_WAIT
}
fn group_interval() -> Duration {
    policy::GROUP_INTERVAL
}
fn max_updates() -> u32 {
    3
}
fn yes() -> bool {
    true
}
fn repeat_interval() -> Duration {
    policy::REPEAT_INTERVAL
}
fn max_per_hour() -> u32 {
    20
}

/// A channel's receiver: `[[notify.channels]] kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// Our JSON (`{"kind": "alert", "alert": …, "legacy": …}`), optionally signed.
    Webhook,
    /// A Slack incoming webhook.
    Slack,
    /// A Discord webhook.
    Discord,
    /// An ntfy topic.
    Ntfy,
    /// PagerDuty Events API v2.
    Pagerduty,
    /// E-mail over SMTP.
    Email,
    /// Prometheus Alertmanager (`POST /api/v2/alerts`).
    Alertmanager,
}

impl ChannelKind {
    /// The name in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Slack => "slack",
            ChannelKind::Discord => "discord",
            ChannelKind::Ntfy => "ntfy",
            ChannelKind::Pagerduty => "pagerduty",
            ChannelKind::Email => "email",
            ChannelKind::Alertmanager => "alertmanager",
        }
    }

    /// Whether it is reached over HTTP(S).
    pub fn is_http(self) -> bool {
        self != ChannelKind::Email
    }
}

/// PagerDuty's Events API v2 endpoint, the default `url` of a `pagerduty` channel.
pub const PAGERDUTY_EVENTS: &str = "https://events.pagerduty.com/v2/enqueue";

fn default_smtp_tls() -> String {
    "starttls".into()
}

fn rank(severity: &str) -> u8 {
    match severity.to_ascii_uppercase().as_str() {
        "CRITICAL" => 2,
        "WARNING" => 1,
        _ => 0,
    }
}

impl ChannelConfig {
    /// Every problem with it.
    pub fn problems(&self) -> Vec<String> {
        let at = format!("notify.channels `{}`", self.name);
        let mut errors = Vec::new();
        if self.name.is_empty() || self.name == AUDIT_ALERTS {
            errors.push(format!("{at}: needs a name other than {AUDIT_ALERTS}"));
        }
        match self.kind {
            kind if kind.is_http() => {
                if !self.url_file.is_empty() {
                    if !self.url.is_empty() {
                        errors.push(format!("{at}: url and url_file are exclusive"));
                    }
                    if let Err(e) = std::fs::read_to_string(&self.url_file) {
                        errors.push(format!("{at}: url_file {}: {e}", self.url_file));
                    }
                }
                match reqwest::Url::parse(&self.url()) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                    _ => errors
                        .push(format!("{at}: url must be https://host[:port]/path (or http://)")),
                }
                if kind == ChannelKind::Ntfy && self.ntfy_topic().is_none() {
                    errors.push(format!(
                        "{at}: an ntfy url ends with the topic (https://host/topic)"
                    ));
                }
                if !self.ca_file.is_empty()
                    && let Err(e) = tls_config(&self.ca_file)
                {
                    errors.push(format!("{at}: ca_file: {e:#}"));
                }
                if !self.secret_file.is_empty() {
                    if matches!(
                        kind,
                        ChannelKind::Slack | ChannelKind::Discord | ChannelKind::Alertmanager
                    ) {
                        errors.push(format!(
                            "{at}: secret_file is for webhook, ntfy and pagerduty channels (a Slack or Discord URL is its own secret; Alertmanager takes none)"
                        ));
                    } else if let Err(e) = self.secret() {
                        errors.push(format!("{at}: secret_file: {e:#}"));
                    }
                } else if kind == ChannelKind::Pagerduty {
                    errors.push(format!("{at}: pagerduty needs secret_file (the integration key)"));
                }
            }
            _ => {
                if !self.smtp.contains(':') || self.from.is_empty() || self.to.is_empty() {
                    errors.push(format!("{at}: email needs smtp (host:port), from and to"));
                }
                if !matches!(self.smtp_tls.as_str(), "starttls" | "tls" | "none") {
                    errors.push(format!("{at}: smtp_tls must be starttls, tls or none"));
                }
                if !self.smtp_user.is_empty()
                    && let Err(e) = self.smtp_password()
                {
                    errors.push(format!("{at}: smtp_password_file: {e:#}"));
                }
                if !self.ca_file.is_empty()
                    && let Err(e) = tls_config(&self.ca_file)
                {
                    errors.push(format!("{at}: ca_file: {e:#}"));
                }
                let bad = |a: &str| a.parse::<lettre::message::Mailbox>().is_err();
                if bad(&self.from) || self.to.iter().any(|t| bad(t)) {
                    errors.push(format!(
                        "{at}: from and to must be addresses (`a@example.org` or `Name <a@example.org>`)"
                    ));
                }
            }
        }
        if let Some(s) = &self.min_severity
            && !matches!(s.to_ascii_uppercase().as_str(), "INFO" | "WARNING" | "CRITICAL")
        {
            errors.push(format!("{at}: min_severity must be INFO, WARNING or CRITICAL"));
        }
        if let Some(q) = &self.quiet_hours {
            errors.extend(q.problems(&at));
        }
        if self.group_interval < Duration::from_secs(1) {
            errors.push(format!("{at}: group_interval must be at least 1s"));
        }
        if self.kind == ChannelKind::Alertmanager && self.repeat_interval < Duration::from_secs(10)
        {
            errors.push(format!("{at}: repeat_interval must be at least 10s"));
        }
        errors
    }

    /// Whether the channel wants this alert; `Err(why not)` otherwise.
    pub fn wants(&self, a: &Alert) -> Result<(), String> {
        if let Some(min) = &self.min_severity
            && rank(&a.severity) < rank(min)
        {
            return Err(format!("severity below {min}"));
        }
        if !self.rules.is_empty() && !self.rules.contains(&a.rule_id) {
            return Err("rule not in the channel's list".into());
        }
        if !self.tags.is_empty() && !a.tags.iter().any(|t| self.tags.contains(t)) {
            return Err("no tag in the channel's list".into());
        }
        Ok(())
    }
}

impl ChannelConfig {
    /// The receiver's URL: `url`, or PagerDuty's Events API for a `pagerduty` channel without
    /// one; an Alertmanager's alerts endpoint under its `url`.
    pub fn url(&self) -> String {
        let url = self.base_url();
        if url.is_empty() && self.kind == ChannelKind::Pagerduty {
            PAGERDUTY_EVENTS.to_owned()
        } else if self.kind == ChannelKind::Alertmanager {
            format!("{}/api/v2/alerts", url.trim_end_matches('/'))
        } else {
            url
        }
    }

    /// `url`, or the first line of `url_file` (empty when it cannot be read: the delivery then
    /// fails with a clear error and is retried).
    fn base_url(&self) -> String {
        if self.url_file.is_empty() {
            return self.url.clone();
        }
        std::fs::read_to_string(&self.url_file)
            .map(|t| t.lines().next().unwrap_or("").trim().to_owned())
            .unwrap_or_default()
    }

    /// An ntfy URL's server (where JSON is published) and topic (its last path segment).
    pub fn ntfy_topic(&self) -> Option<(String, String)> {
        let mut u = reqwest::Url::parse(&self.base_url()).ok()?;
        let topic = u.path_segments()?.next_back().filter(|t| !t.is_empty())?.to_owned();
        u.path_segments_mut().ok()?.pop();
        Some((u.to_string(), topic))
    }

    /// The SMTP password, read from `smtp_password_file`.
    pub fn smtp_password(&self) -> anyhow::Result<String> {
        anyhow::ensure!(!self.smtp_password_file.is_empty(), "smtp_user needs smtp_password_file");
        let text = std::fs::read_to_string(&self.smtp_password_file)
            .with_context(|| format!("read {}", self.smtp_password_file))?;
        let password = text.trim();
        anyhow::ensure!(!password.is_empty(), "{} is empty", self.smtp_password_file);
        Ok(password.to_owned())
    }

    /// The signing key of a generic webhook, read from `secret_file` (at least 16 bytes).
    pub fn secret(&self) -> anyhow::Result<Option<Vec<u8>>> {
        if self.secret_file.is_empty() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&self.secret_file)
            .with_context(|| format!("read {}", self.secret_file))?;
        let secret = text.trim();
        anyhow::ensure!(secret.len() >= 16, "the secret is shorter than 16 characters");
        Ok(Some(secret.as_bytes().to_vec()))
    }
}

/// The TLS settings of a channel: the system's roots plus the PEM certificates in `ca_file`
/// (when set), with the ring provider.
pub fn tls_config(ca_file: &str) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if !ca_file.is_empty() {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
            .with_context(|| format!("read {ca_file}"))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("{ca_file} is not PEM"))?;
        anyhow::ensure!(!certs.is_empty(), "{ca_file} holds no certificate");
        for c in certs {
            roots.add(c).with_context(|| format!("a certificate in {ca_file}"))?;
        }
    } else if added == 0 {
        tracing::warn!(
            "no system CA certificates found: https:// webhooks will fail without a ca_file"
        );
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS versions")?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// One HTTP client per webhook channel (each with its own trusted CAs), and their keys.
#[derive(Debug, Default)]
pub struct HttpClients {
    clients: std::collections::HashMap<String, (reqwest::Client, Option<Vec<u8>>)>,
}

impl HttpClients {
    /// Clients for the webhook channels among `channels`.
    pub fn new(channels: &[ChannelConfig]) -> anyhow::Result<Self> {
        let mut clients = std::collections::HashMap::new();
        for c in channels.iter().filter(|c| c.kind.is_http()) {
            let client = reqwest::Client::builder()
                .tls_backend_preconfigured(tls_config(&c.ca_file)?)
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(15))
                .user_agent(concat!("auditflow-aggregator/", env!("CARGO_PKG_VERSION")))
                .build()
                .with_context(|| format!("the HTTP client of channel `{}`", c.name))?;
            clients.insert(c.name.clone(), (client, c.secret()?));
        }
        Ok(Self { clients })
    }

    /// Channel `name`'s secret, as text.
    fn secret(&self, name: &str) -> Option<String> {
        let (_, s) = self.clients.get(name)?;
        s.as_deref().map(|s| String::from_utf8_lossy(s).into_owned())
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The first line of a notice: the alert's severity and title, with what changed.
fn headline(a: &Alert, change: Change) -> String {
    match change {
        Change::Created | Change::Repeat => format!("[{}] {}", a.severity, a.title),
        Change::Updated => {
            format!("[{}] {} (still firing: {} occurrences)", a.severity, a.title, a.occurrences)
        }
        Change::Acknowledged => format!("[ACKNOWLEDGED] {}", a.title),
        Change::Resolved => format!("[RESOLVED] {}", a.title),
        Change::Reopened => format!("[{}] Reopened: {}", a.severity, a.title),
    }
}

/// The text of a notification.
fn text(a: &Alert, change: Change) -> String {
    format!(
        "{} ({}), node {}, {} occurrence(s), first seen {}. Alert {}",
        headline(a, change),
        a.rule_id,
        a.node,
        a.occurrences,
        crate::store::rfc3339(a.first_seen),
        a.id
    )
}

/// An error with its whole chain of causes, for the delivery's recorded error.
fn chain(e: &dyn std::error::Error) -> anyhow::Error {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    anyhow::anyhow!(text)
}

/// POSTs `body` as JSON with the channel's client and the extra `headers`.
async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    headers: &[(&str, String)],
) -> anyhow::Result<()> {
    let mut req = client.post(url).header(reqwest::header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    // The error's chain names what failed (DNS, connect, TLS, timeout) without the URL's
    // query, which may hold a token (Slack's URLs are secrets themselves).
    let resp = req.body(body.to_string()).send().await.map_err(|e| chain(&e.without_url()))?;
    let status = resp.status();
    if status.is_success() { Ok(()) } else { anyhow::bail!("HTTP {status}") }
}

/// The alert's page on the dashboard, when `[notify] dashboard_url` is set.
pub fn alert_link(dashboard_url: &str, a: &Alert) -> Option<String> {
    (!dashboard_url.is_empty())
        .then(|| format!("{}/#/alerts/{}", dashboard_url.trim_end_matches('/'), a.id))
}

/// Severity as a colour: red, amber, blue; green once resolved.
fn colour(severity: &str, change: Change) -> u32 {
    if change == Change::Resolved {
        return 0x002e_7d32;
    }
    match rank(severity) {
        2 => 0xd3_2f_2f,
        1 => 0xf9_a8_25,
        _ => 0x19_76_d2,
    }
}

/// At most `max` characters of `s` (receivers refuse longer fields).
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Escapes text for Slack's mrkdwn: `&`, `<` and `>` are its only control characters, and
/// unescaped they let an event's text mention `<!channel>` or hide a link.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A Slack incoming-webhook message: the text (notifications and old clients), and a Block
/// Kit message in an attachment coloured by severity, with the node, rule, count, first
/// seen and a button to the alert.
pub fn slack_message(a: &Alert, link: Option<&str>, change: Change) -> serde_json::Value {
    let field = |name: &str, value: &str| json!({"type": "mrkdwn", "text": format!("*{name}*\n{}", clip(&slack_escape(value), 1900))});
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn",
            "text": clip(&format!("*{}*", slack_escape(&headline(a, change))), 2900)}}),
        json!({"type": "section", "fields": [
            field("Node", &a.node),
            field("Rule", &format!("{} ({})", a.rule_id, a.rule_name)),
            field("Occurrences", &a.occurrences.to_string()),
            field("First seen", &crate::store::rfc3339(a.first_seen)),
        ]}),
    ];
    if let Some(link) = link {
        blocks.push(json!({"type": "actions", "elements": [{"type": "button",
            "text": {"type": "plain_text", "text": "Open the alert"}, "url": link}]}));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
        "text": format!("AuditFlow alert {}", a.id)}]}));
    json!({
        "text": slack_escape(&text(a, change)),
        "attachments": [{"color": format!("#{:06x}", colour(&a.severity, change)), "blocks": blocks}],
    })
}

/// A Discord webhook message: one embed coloured by severity. `allowed_mentions` is empty, so
/// nothing in an event's text can ping a user, a role or `@everyone`.
pub fn discord_message(a: &Alert, link: Option<&str>, change: Change) -> serde_json::Value {
    let field = |name: &str, value: String| json!({"name": name, "value": clip(&value, 1000), "inline": true});
    let mut embed = json!({
        "title": clip(&headline(a, change), 250),
        "description": clip(&a.rule_description, 2000),
        "color": colour(&a.severity, change),
        "fields": [
            field("Node", a.node.clone()),
            field("Rule", format!("{} ({})", a.rule_id, a.rule_name)),
            field("Occurrences", a.occurrences.to_string()),
        ],
        "timestamp": crate::store::rfc3339(a.first_seen),
        "footer": {"text": format!("AuditFlow alert {}", a.id)},
    });
    if let Some(link) = link {
        embed["url"] = json!(link);
    }
    json!({"username": "AuditFlow", "allowed_mentions": {"parse": []}, "embeds": [embed]})
}

/// An ntfy message, published as JSON to the server's root: priority 5 (critical), 4
/// (warning) or 3, a tag ntfy shows as an emoji, and a click-through to the alert.
pub fn ntfy_message(
    topic: &str,
    a: &Alert,
    link: Option<&str>,
    change: Change,
) -> serde_json::Value {
    let (priority, tag) = match (change, rank(&a.severity)) {
        (Change::Resolved, _) => (2, "white_check_mark"),
        (_, 2) => (5, "rotating_light"),
        (_, 1) => (4, "warning"),
        _ => (3, "information_source"),
    };
    let mut m = json!({
        "topic": topic,
        "title": clip(&headline(a, change), 250),
        "message": clip(&text(a, change), 4000),
        "priority": priority,
        "tags": [tag, a.rule_id],
    });
    if let Some(link) = link {
        m["click"] = json!(link);
    }
    m
}

/// A PagerDuty Events API v2 event: `trigger` (new or reopened), `acknowledge` or `resolve`,
/// following the alert. The dedup key is the alert's id, so the repeated deliveries
/// at-least-once allows, and the later actions, land on the same incident.
pub fn pagerduty_event(
    routing_key: &str,
    a: &Alert,
    link: Option<&str>,
    change: Change,
) -> serde_json::Value {
    let action = match change {
        Change::Acknowledged => "acknowledge",
        Change::Resolved => "resolve",
        _ => "trigger",
    };
    if action != "trigger" {
        return json!({"routing_key": routing_key, "event_action": action,
            "dedup_key": a.id.to_string()});
    }
    let severity = match rank(&a.severity) {
        2 => "critical",
        1 => "warning",
        _ => "info",
    };
    let mut e = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": a.id.to_string(),
        "client": "AuditFlow",
        "payload": {
            "summary": clip(&format!("[{}] {} on {}", a.severity, a.title, a.node), 1000),
            "source": clip(&a.node, 250),
            "severity": severity,
            "timestamp": crate::store::rfc3339(a.first_seen),
            "component": a.rule_id,
            "group": a.rule_name,
            "class": "auditflow",
            "custom_details": {
                "rule": a.rule_id,
                "occurrences": a.occurrences,
                "tags": a.tags,
                "group": a.group,
                "alert_id": a.id,
            },
        },
    });
    if let Some(link) = link {
        e["links"] = json!([{"href": link, "text": "The alert in AuditFlow"}]);
    }
    e
}

/// Alertmanager's `POST /api/v2/alerts` body for the alert: one alert whose labels name the
/// rule (`alertname`), severity, node and the AuditFlow alert id (so each of ours is one of
/// Alertmanager's), firing until `now + 5 × repeat_interval` (it is re-sent well before), or
/// ended at its resolution.
pub fn alertmanager_alerts(
    a: &Alert,
    link: Option<&str>,
    change: Change,
    now: i64,
    repeat: Duration,
) -> serde_json::Value {
    let ends = if change == Change::Resolved || a.status == crate::store::Status::Resolved {
        a.updated_at.min(now)
    } else {
        now + 5 * repeat.as_millis() as i64
    };
    let mut alert = json!({
        "labels": {
            "alertname": a.rule_id,
            "severity": a.severity.to_ascii_lowercase(),
            "node": a.node,
            "rule_name": a.rule_name,
            "auditflow_alert_id": a.id.to_string(),
        },
        "annotations": {
            "summary": clip(&a.title, 1000),
            "description": clip(&a.rule_description, 4000),
            "occurrences": a.occurrences.to_string(),
            "status": a.status.as_str(),
        },
        "startsAt": crate::store::rfc3339(a.first_seen),
        "endsAt": crate::store::rfc3339(ends),
    });
    if let Some(link) = link {
        alert["generatorURL"] = json!(link);
    }
    if let Some(url) = &a.playbook_url {
        alert["annotations"]["runbook_url"] = json!(url);
    }
    json!([alert])
}

/// HTML-escapes alert text (titles and nodes come from events, which a node controls).
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The mail for an alert: plain text and HTML, with `Date` and a `Message-ID`.
pub fn mail(c: &ChannelConfig, a: &Alert, change: Change) -> anyhow::Result<lettre::Message> {
    use lettre::message::{Mailbox, MultiPart};
    let from: Mailbox = c.from.parse().with_context(|| format!("from `{}`", c.from))?;
    let mut builder = lettre::Message::builder()
        .from(from)
        .subject(
            // `[AuditFlow CRITICAL] title`, `[AuditFlow RESOLVED] title`: mail filters match it.
            headline(a, change).replacen('[', "[AuditFlow ", 1).replace(['\r', '\n'], " "),
        )
        .date_now()
        .message_id(Some(format!("<{}.{}@auditflow>", a.id, now_ms())));
    for to in &c.to {
        builder = builder.to(to.parse::<Mailbox>().with_context(|| format!("to `{to}`"))?);
    }
    let html = format!(
        "<html><body><p><strong>{}</strong></p><table>\
         <tr><th align=\"left\">Rule</th><td>{}</td></tr>\
         <tr><th align=\"left\">Node</th><td>{}</td></tr>\
         <tr><th align=\"left\">Occurrences</th><td>{}</td></tr>\
         <tr><th align=\"left\">First seen</th><td>{}</td></tr>\
         <tr><th align=\"left\">Alert</th><td>{}</td></tr></table></body></html>",
        html_escape(&headline(a, change)),
        html_escape(&a.rule_id),
        html_escape(&a.node),
        a.occurrences,
        crate::store::rfc3339(a.first_seen),
        a.id
    );
    builder
        .multipart(MultiPart::alternative_plain_html(text(a, change), html))
        .context("build the mail")
}

/// Sends an alert's mail through the channel's SMTP server: implicit TLS (`smtp_tls = "tls"`,
/// port 465), STARTTLS required (`"starttls"`, the default, port 587) or plain (`"none"`,
/// for a relay inside the cluster), with AUTH when `smtp_user` is set.
async fn send_mail(c: &ChannelConfig, m: lettre::Message) -> anyhow::Result<()> {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
    let (host, port) = c
        .smtp
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
        .context("smtp must be host:port")?;
    let tls = if c.smtp_tls == "none" {
        Tls::None
    } else {
        let mut params = TlsParameters::builder(host.clone());
        if !c.ca_file.is_empty() {
            let pem = std::fs::read(&c.ca_file).with_context(|| format!("read {}", c.ca_file))?;
            params = params.add_root_certificate(Certificate::from_pem(&pem)?);
        }
        let params = params.build_rustls()?;
        if c.smtp_tls == "tls" { Tls::Wrapper(params) } else { Tls::Required(params) }
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(Duration::from_secs(30)));
    if !c.smtp_user.is_empty() {
        transport =
            transport.credentials(Credentials::new(c.smtp_user.clone(), c.smtp_password()?));
    }
    let transport: AsyncSmtpTransport<Tokio1Executor> = transport.build();
    transport.send(m).await.map(drop).map_err(|e| chain(&e))
}

/// Sends `change` of alert `a` through channel `c` (not `audit_alerts`) with the channels'
/// HTTP clients.
async fn deliver_to(
    c: &ChannelConfig,
    clients: &HttpClients,
    (dashboard_url, environment): (&str, &str),
    a: &Alert,
    change: Change,
) -> Result<(), String> {
    let link = alert_link(dashboard_url, a);
    let link = link.as_deref();
    let result = match c.kind {
        ChannelKind::Email => match mail(c, a, change) {
            Ok(m) => send_mail(c, m).await,
            Err(e) => Err(e),
        },
        ChannelKind::Webhook => {
            let body = json!({"kind": "alert", "event": change.as_str(), "alert": a,
                "legacy": legacy_alert::nested(a, Firing::first(a), FeedChange::Created, environment)});
            post(c, clients, &c.url(), &body).await
        }
        ChannelKind::Slack => post(c, clients, &c.url(), &slack_message(a, link, change)).await,
        ChannelKind::Discord => post(c, clients, &c.url(), &discord_message(a, link, change)).await,
        ChannelKind::Ntfy => match c.ntfy_topic() {
            Some((server, topic)) => {
                post(c, clients, &server, &ntfy_message(&topic, a, link, change)).await
            }
            None => Err(anyhow::anyhow!("the ntfy url has no topic")),
        },
        ChannelKind::Pagerduty => match clients.secret(&c.name) {
            Some(key) => post(c, clients, &c.url(), &pagerduty_event(&key, a, link, change)).await,
            None => Err(anyhow::anyhow!("no integration key (secret_file)")),
        },
        ChannelKind::Alertmanager => {
            let body = alertmanager_alerts(a, link, change, now_ms(), c.repeat_interval);
            post(c, clients, &c.url(), &body).await
        }
    };
    result.map_err(|e| format!("{e:#}"))
}

/// POSTs `body` to `url` with channel `c`'s client: signed when it is a generic webhook with a
/// secret, with ntfy's access token.
async fn post(
    c: &ChannelConfig,
    clients: &HttpClients,
    url: &str,
    body: &serde_json::Value,
) -> anyhow::Result<()> {
    let Some((client, _)) = clients.clients.get(&c.name) else {
        anyhow::bail!("no HTTP client for the channel");
    };
    let header = match (c.kind, clients.secret(&c.name)) {
        (ChannelKind::Webhook, Some(s)) => {
            Some(("X-AuditFlow-Signature", signature(s.as_bytes(), body.to_string().as_bytes())))
        }
        (ChannelKind::Ntfy, Some(t)) => Some(("Authorization", format!("Bearer {t}"))),
        _ => None,
    };
    post_json(client, url, body, header.as_slice()).await
}

/// One message about several `alerts` for a people's channel (new alerts of one rule, or a
/// digest over the rate cap), under `title`: the first ten listed, the rest counted.
async fn deliver_digest(
    c: &ChannelConfig,
    clients: &HttpClients,
    title: &str,
    alerts: &[(Alert, Change)],
) -> Result<(), String> {
    let shown = 10;
    let mut lines: Vec<String> = alerts
        .iter()
        .take(shown)
        .map(|(a, change)| format!("{} on {} ({})", headline(a, *change), a.node, a.rule_id))
        .collect();
    if alerts.len() > shown {
        lines.push(format!("and {} more", alerts.len() - shown));
    }
    let result = match c.kind {
        ChannelKind::Slack => {
            let body = lines.iter().map(|l| format!("• {}", slack_escape(l))).collect::<Vec<_>>();
            let text = format!("*{}*\n{}", slack_escape(title), body.join("\n"));
            post(c, clients, &c.url(), &json!({"text": clip(&text, 3900)})).await
        }
        ChannelKind::Discord => {
            let text = format!("**{title}**\n{}", lines.join("\n"));
            let body = json!({"username": "AuditFlow", "allowed_mentions": {"parse": []},
                "content": clip(&text, 1900)});
            post(c, clients, &c.url(), &body).await
        }
        ChannelKind::Ntfy => match c.ntfy_topic() {
            Some((server, topic)) => {
                let body = json!({"topic": topic, "title": clip(title, 250),
                    "message": clip(&lines.join("\n"), 4000), "priority": 4, "tags": ["warning"]});
                post(c, clients, &server, &body).await
            }
            None => Err(anyhow::anyhow!("the ntfy url has no topic")),
        },
        ChannelKind::Email => {
            let built = digest_mail(c, title, &lines);
            match built {
                Ok(m) => send_mail(c, m).await,
                Err(e) => Err(e),
            }
        }
        // Machines get every alert; they are never capped (policy::for_people).
        _ => Err(anyhow::anyhow!("no digest for a {} channel", c.kind.as_str())),
    };
    result.map_err(|e| format!("{e:#}"))
}

/// The mail of a digest, plain text.
fn digest_mail(
    c: &ChannelConfig,
    title: &str,
    lines: &[String],
) -> anyhow::Result<lettre::Message> {
    use lettre::message::Mailbox;
    let from: Mailbox = c.from.parse().with_context(|| format!("from `{}`", c.from))?;
    let mut builder = lettre::Message::builder()
        .from(from)
        .subject(title.replace(['\r', '\n'], " "))
        .date_now()
        .message_id(Some(format!("<digest.{}@auditflow>", uuid::Uuid::new_v4())));
    for to in &c.to {
        builder = builder.to(to.parse::<Mailbox>().with_context(|| format!("to `{to}`"))?);
    }
    builder.body(lines.join("\n")).context("build the mail")
}

/// Sends a test notification through the configured channel `name` (not `audit_alerts`),
/// as `auditflow-aggregator notify test` does: an INFO alert that says it is a test.
pub async fn send_test(config: &crate::Config, name: &str) -> anyhow::Result<()> {
    let c = config
        .notify
        .channels
        .iter()
        .find(|c| c.name == name)
        .with_context(|| format!("no channel `{name}` in [[notify.channels]]"))?;
    let clients = HttpClients::new(std::slice::from_ref(c))?;
    deliver_to(
        c,
        &clients,
        (&config.notify.dashboard_url, &config.legacy.environment),
        &test_alert(name, "the command line"),
        Change::Created,
    )
    .await
    .map_err(|e| anyhow::anyhow!(e))
}

/// The alert a test notification carries: INFO, rule `AUDITFLOW-TEST`, saying who sent it.
fn test_alert(channel: &str, by: &str) -> Alert {
    let now = now_ms();
    let node = std::env::var("HOSTNAME").unwrap_or_else(|_| "auditflow".into());
    Alert {
        id: uuid::Uuid::new_v4(),
        fingerprint: "test".into(),
        rule_id: "AUDITFLOW-TEST".into(),
        rule_name: "Test notification".into(),
        rule_description: format!("Sent from {by} to check the channel."),
        severity: "INFO".into(),
        title: format!("AuditFlow test notification for channel {channel}"),
        tags: vec!["test".into()],
        node,
        group: serde_json::Map::new(),
        status: crate::store::Status::Open,
        occurrences: 1,
        first_seen: now,
        last_seen: now,
        created_at: now,
        updated_at: now,
        correlation_id: uuid::Uuid::new_v4(),
        remediation: None,
        playbook_url: None,
        silenced: false,
        raw_event: serde_json::Value::Null,
    }
}

/// A lazily (re)connected publisher to `audit_alerts` with publisher confirms.
#[derive(Debug)]
pub struct AmqpPublisher {
    url: String,
    link: tokio::sync::Mutex<Option<(Connection, Channel)>>,
}

impl AmqpPublisher {
    /// A publisher for a RabbitMQ URL; it connects on first use.
    pub fn new(url: &str) -> Self {
        Self { url: url.to_owned(), link: tokio::sync::Mutex::new(None) }
    }

    /// Publishes `(body, message id)`s, all sent before their confirms are awaited (one
    /// round trip for a chunk of firings, not one each).
    async fn publish_many(&self, messages: &[(Vec<u8>, String)]) -> anyhow::Result<()> {
        let mut link = self.link.lock().await;
        if link.as_ref().is_none_or(|(c, ch)| !c.status().connected() || !ch.status().connected()) {
            *link = Some(crate::ingest::open_confirming(&self.url, &[AUDIT_ALERTS]).await?);
        }
        let (_, ch) = link.as_ref().expect("connected above");
        let result = async {
            let mut confirms = Vec::with_capacity(messages.len());
            for (body, id) in messages {
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        AUDIT_ALERTS.into(),
                        BasicPublishOptions::default(),
                        body,
                        BasicProperties::default()
                            .with_delivery_mode(2)
                            .with_content_type("application/json".into())
                            .with_message_id(id.as_str().into()),
                    )
                    .await
                    .context("publish")?;
                confirms.push(confirm);
            }
            for confirm in confirms {
                match confirm.await.context("confirm")? {
                    lapin::Confirmation::Ack(_) => {}
                    other => anyhow::bail!("RabbitMQ did not confirm: {other:?}"),
                }
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            *link = None;
        }
        result
    }
}

/// The notifier's settings.
#[derive(Debug)]
pub struct Notifier {
    /// Alerts and the outbox.
    pub store: SharedStore,
    /// Configured channels.
    pub channels: Vec<ChannelConfig>,
    /// The `audit_alerts` publisher (cluster profile).
    pub amqp: Option<AmqpPublisher>,
    /// Attempts before a delivery is given up.
    pub max_attempts: u32,
    /// Counters.
    pub metrics: Metrics,
    /// The webhook channels' clients.
    pub http: HttpClients,
    /// The dashboard's address as people open it (`[notify] dashboard_url`), for links to
    /// alerts; empty: no links.
    pub dashboard_url: String,
    /// The legacy views' settings (`[legacy]`): the feed mode, updates, the environment.
    pub legacy: LegacyConfig,
    /// Messages per people's channel in the last hour (the rate cap).
    pub cap: std::sync::Mutex<policy::RateCap>,
}

/// Why a test notification was not sent.
#[derive(Debug)]
pub enum TestError {
    /// No configured channel has that name.
    NoSuchChannel,
    /// The receiver's error.
    Failed(String),
}

/// What the notifier does with a due row.
enum Plan {
    /// Send this change.
    Send(Change),
    /// Nothing to send: record what the channel now knows.
    Settle,
    /// Look again at this time.
    Defer(i64),
}

/// Delay before retry `attempt` (1-based): 1 s, 2 s, 4 s, … at most 10 min.
pub fn retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(10)).min(Duration::from_secs(600))
}

/// Firings the `audit_alerts` feed in mode `firing` publishes per round for one alert (their
/// confirms awaited together); an alert with more is taken up again at once.
const FEED_CHUNK: i64 = 256;

impl Notifier {
    fn views(&self) -> (&str, &str) {
        (&self.dashboard_url, &self.legacy.environment)
    }

    async fn deliver(&self, item: &OutboxItem, a: &Alert, change: Change) -> Result<(), String> {
        if item.channel == AUDIT_ALERTS {
            let Some(amqp) = &self.amqp else { return Err("no RabbitMQ configured".into()) };
            let feed_change =
                if change == Change::Updated { FeedChange::Updated } else { FeedChange::Created };
            let body =
                legacy_alert::nested(a, Firing::first(a), feed_change, &self.legacy.environment);
            let body = body.to_string();
            return amqp
                .publish_many(&[(body.into_bytes(), a.id.to_string())])
                .await
                .map_err(|e| format!("{e:#}"));
        }
        let Some(c) = self.channels.iter().find(|c| c.name == item.channel) else {
            return Err("channel no longer configured".into());
        };
        deliver_to(c, &self.http, self.views(), a, change).await
    }

    /// The `audit_alerts` feed in mode `firing`: publishes the alert's next firings (one
    /// message each, the firing's own id as `alert_id`), then records how far it got.
    async fn feed_firings(
        &self,
        item: &OutboxItem,
        a: &Alert,
        now: i64,
        count: &(dyn Fn(&str) + Sync),
    ) -> anyhow::Result<()> {
        let firings = self.store.feed_firings(a.id, item.sent_firing, FEED_CHUNK).await?;
        let Some(last) = firings.last().map(|f| (f.created_at, f.id)) else {
            self.store.delivered(item.id, &crate::store::Sent::known(a)).await?;
            count("settled");
            return Ok(());
        };
        let result = match &self.amqp {
            None => Err("no RabbitMQ configured".to_owned()),
            Some(amqp) => {
                let bodies: Vec<(Vec<u8>, String)> = firings
                    .iter()
                    .map(|f| {
                        let firing = Firing {
                            id: f.id,
                            event_id: f.event_id,
                            event: &f.event,
                            at: f.created_at,
                        };
                        let body = legacy_alert::nested(
                            a,
                            firing,
                            FeedChange::Firing,
                            &self.legacy.environment,
                        );
                        (body.to_string().into_bytes(), f.id.to_string())
                    })
                    .collect();
                amqp.publish_many(&bodies).await.map_err(|e| format!("{e:#}"))
            }
        };
        if let Err(e) = result {
            return self.record(item, a, Change::Updated, Err(e), count).await;
        }
        for _ in &firings {
            count("delivered");
        }
        if firings.len() as i64 == FEED_CHUNK {
            self.store.feed_progress(item.id, last, now).await?;
        } else {
            let sent = crate::store::Sent {
                messaged_at: Some(now),
                firing: Some(last),
                ..crate::store::Sent::known(a)
            };
            self.store.delivered(item.id, &sent).await?;
        }
        Ok(())
    }

    /// What to do with a due row of channel `c` (`None`: `audit_alerts`) for alert `a`.
    fn plan(&self, c: Option<&ChannelConfig>, item: &OutboxItem, a: &Alert, now: i64) -> Plan {
        let change = policy::change(item, a);
        let send_resolved = c.is_none_or(|c| c.send_resolved);
        if !policy::announces(c.map(|c| c.kind), change, send_resolved) {
            return Plan::Settle;
        }
        let Some(c) = c else {
            // The `audit_alerts` feed (mode `alert`): updates at most every
            // `update_interval`; "0s": none.
            let every = self.legacy.update_interval;
            if change == Change::Updated {
                if every.is_zero() {
                    return Plan::Settle;
                }
                let next = item.delivered_at.unwrap_or(0) + every.as_millis() as i64;
                if next > now {
                    return Plan::Defer(next);
                }
            }
            return Plan::Send(change);
        };
        // Alertmanager is sent the alert's state every repeat_interval whatever changed: it
        // does its own grouping and forgets what is not re-sent.
        if change == Change::Updated && c.kind != ChannelKind::Alertmanager {
            if item.updates_sent >= i64::from(c.max_updates) {
                return Plan::Settle;
            }
            let next = item.delivered_at.unwrap_or(0) + c.group_interval.as_millis() as i64;
            if next > now {
                return Plan::Defer(next);
            }
        }
        if change == Change::Created
            && policy::for_people(c.kind)
            && let Some(end) = policy::group_window_end(a.created_at, c.group_wait)
            && end > now
        {
            return Plan::Defer(end);
        }
        if let Some(until) = c.quiet_hours.as_ref().and_then(|q| q.until(now, &a.severity)) {
            return Plan::Defer(until);
        }
        Plan::Send(change)
    }

    /// Records a delivery's success or failure.
    async fn record(
        &self,
        item: &OutboxItem,
        a: &Alert,
        change: Change,
        result: Result<(), String>,
        count: &(dyn Fn(&str) + Sync),
    ) -> anyhow::Result<()> {
        let now = now_ms();
        match result {
            Ok(()) => {
                let am = self.channels.iter().find(|c| c.name == item.channel).filter(|c| {
                    c.kind == ChannelKind::Alertmanager
                        && a.status != crate::store::Status::Resolved
                });
                let sent = crate::store::Sent {
                    status: a.status,
                    occurrences: a.occurrences,
                    messaged_at: Some(now),
                    update: change == Change::Updated && am.is_none(),
                    again_at: am.map(|c| now + c.repeat_interval.as_millis() as i64),
                    firing: None,
                };
                self.store.delivered(item.id, &sent).await?;
                count("delivered");
            }
            Err(e) => {
                let attempt = u32::try_from(item.attempts + 1).unwrap_or(u32::MAX);
                let retry = (attempt < self.max_attempts)
                    .then(|| now + retry_delay(attempt).as_millis() as i64);
                tracing::warn!(channel = %item.channel, alert = %item.alert_id, change = change.as_str(),
                    attempt, error = %e, gave_up = retry.is_none(), "notification failed");
                self.store.delivery_failed(item.id, &e, retry).await?;
                count(if retry.is_some() { "retry" } else { "failed" });
            }
        }
        Ok(())
    }

    /// Sends a test notification through channel `name` with the running notifier's clients
    /// (`POST /api/v1/channels/{name}/test`); `by` says who asked. Not counted against the
    /// rate cap.
    pub async fn test(&self, name: &str, by: &str) -> Result<(), TestError> {
        let Some(c) = self.channels.iter().find(|c| c.name == name) else {
            return Err(TestError::NoSuchChannel);
        };
        let result =
            deliver_to(c, &self.http, self.views(), &test_alert(name, by), Change::Created).await;
        let outcome = if result.is_ok() { "delivered" } else { "failed" };
        self.metrics.notifications.with_label_values(&[c.kind.as_str(), outcome]).inc();
        result.map_err(TestError::Failed)
    }

    /// The configured channels as the API shows them: no URL path, query or secret (a Slack
    /// URL is itself a secret), only the receiver's host.
    pub fn describe(&self) -> Vec<serde_json::Value> {
        let mut out: Vec<serde_json::Value> = Vec::new();
        if self.amqp.is_some() {
            out.push(json!({"name": AUDIT_ALERTS, "kind": "amqp", "receiver": "RabbitMQ queue audit_alerts"}));
        }
        for c in &self.channels {
            let receiver = if c.kind == ChannelKind::Email {
                c.smtp.clone()
            } else {
                reqwest::Url::parse(&c.url())
                    .ok()
                    .and_then(|u| Some(format!("{}://{}", u.scheme(), u.host_str()?)))
                    .unwrap_or_default()
            };
            out.push(json!({
                "name": c.name,
                "kind": c.kind.as_str(),
                "receiver": receiver,
                "min_severity": c.min_severity,
                "rules": c.rules,
                "tags": c.tags,
                "group_interval": runtime::config::duration::format(c.group_interval),
                "max_updates": c.max_updates,
                "send_resolved": c.send_resolved,
                "max_per_hour": c.max_per_hour,
                "quiet_hours": c.quiet_hours,
            }));
        }
        out
    }

    /// Sends what is due once; returns how many rows it handled.
    pub async fn tick(&self) -> anyhow::Result<usize> {
        let now = now_ms();
        let due = self.store.claim_outbox(now, 60_000, 256).await?;
        // People's channels' messages, sent after the others (grouping, the rate cap).
        let mut held: std::collections::BTreeMap<String, Vec<(OutboxItem, Alert, Change)>> =
            std::collections::BTreeMap::new();
        for item in &due {
            let c = self.channels.iter().find(|c| c.name == item.channel);
            let kind = if item.channel == AUDIT_ALERTS {
                AUDIT_ALERTS
            } else {
                c.map_or("unknown", |c| c.kind.as_str())
            };
            let count =
                |result: &str| self.metrics.notifications.with_label_values(&[kind, result]).inc();
            let Some(alert) = self.store.find_alert(item.alert_id).await? else {
                self.store.delivery_failed(item.id, "alert not found", None).await?;
                count("failed");
                continue;
            };
            let a = &alert;
            if let Some(c) = c
                && let Err(why) = c.wants(a)
            {
                self.store.delivery_skipped(item.id, &why).await?;
                count("skipped");
                continue;
            }
            if item.channel != AUDIT_ALERTS && c.is_none() {
                self.store.delivery_failed(item.id, "channel no longer configured", None).await?;
                count("failed");
                continue;
            }
            if item.channel == AUDIT_ALERTS && self.legacy.alerts_feed == AlertsFeed::Firing {
                self.feed_firings(item, a, now, &count).await?;
                continue;
            }
            let change = match self.plan(c, item, a, now) {
                Plan::Settle => {
                    self.store.delivered(item.id, &crate::store::Sent::known(a)).await?;
                    count("settled");
                    continue;
                }
                Plan::Defer(at) => {
                    self.store.defer_delivery(item.id, at).await?;
                    count("deferred");
                    continue;
                }
                Plan::Send(change) => change,
            };
            match c.filter(|c| policy::for_people(c.kind)) {
                Some(c) => {
                    held.entry(c.name.clone()).or_default().push((item.clone(), alert, change))
                }
                None => {
                    let result = self.deliver(item, a, change).await;
                    self.record(item, a, change, result, &count).await?;
                }
            }
        }
        // People's channels: new alerts of one rule due together go out as one message; then
        // the rate cap, past which the rest goes out as one digest.
        for (name, items) in held {
            let Some(c) = self.channels.iter().find(|c| c.name == name) else { continue };
            let count = |result: &str| {
                self.metrics.notifications.with_label_values(&[c.kind.as_str(), result]).inc();
            };
            let messages = policy::bundle(items, !c.group_wait.is_zero());
            let room = if c.max_per_hour == 0 {
                usize::MAX
            } else {
                let mut cap = self.cap.lock().expect("not poisoned");
                cap.room(&name, c.max_per_hour, now) as usize
            };
            if room == 0 {
                let at = self.cap.lock().expect("not poisoned").next_room(&name, now);
                for (item, _, _) in messages.iter().flatten() {
                    self.store.defer_delivery(item.id, at).await?;
                    count("deferred");
                }
                continue;
            }
            let over = messages.len() > room;
            let mut messages = messages.into_iter();
            let mut batches: Vec<(Vec<_>, bool)> = messages
                .by_ref()
                .take(if over { room - 1 } else { room })
                .map(|m| (m, false))
                .collect();
            if over {
                batches.push((messages.flatten().collect(), true));
            }
            for (items, digest) in batches {
                if c.max_per_hour > 0 {
                    self.cap.lock().expect("not poisoned").sent(&name, now);
                }
                let result = if let [(_, a, change)] = items.as_slice() {
                    deliver_to(c, &self.http, self.views(), a, *change).await
                } else {
                    let alerts: Vec<(Alert, Change)> =
                        items.iter().map(|(_, a, ch)| (a.clone(), *ch)).collect();
                    let title = if digest {
                        format!(
                            "AuditFlow: {} alert notices over this channel's cap of {} an hour",
                            alerts.len(),
                            c.max_per_hour
                        )
                    } else {
                        let (a, _) = &alerts[0];
                        format!(
                            "AuditFlow: {} new alerts of {} ({})",
                            alerts.len(),
                            a.rule_id,
                            a.rule_name
                        )
                    };
                    deliver_digest(c, &self.http, &title, &alerts).await
                };
                for (item, a, change) in &items {
                    self.record(item, a, *change, result.clone(), &count).await?;
                }
            }
        }
        Ok(due.len())
    }

    /// Delivers until cancelled: at once when alerts are created, else every second.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut changes = self.store.subscribe();
        loop {
            match self.tick().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "notifier: outbox unavailable"),
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = changes.recv() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(kind: &str, url: &str) -> ChannelConfig {
        ChannelConfig {
            name: "c".into(),
            kind: serde_json::from_value(json!(kind)).unwrap(),
            url: url.into(),
            url_file: String::new(),
            ca_file: String::new(),
            secret_file: String::new(),
            smtp: String::new(),
            smtp_tls: default_smtp_tls(),
            smtp_user: String::new(),
            smtp_password_file: String::new(),
            from: String::new(),
            to: Vec::new(),
            min_severity: None,
            rules: Vec::new(),
            tags: Vec::new(),
            group_interval: group_interval(),
            max_updates: max_updates(),
            send_resolved: true,
            repeat_interval: repeat_interval(),
            max_per_hour: max_per_hour(),
            quiet_hours: None,
            group_wait: group_wait(),
        }
    }

    #[test]
    fn urls() {
        for ok in ["https://hooks.slack.com/services/T0/B0/x", "http://h:8080/x/y", "https://h"] {
            assert!(channel("slack", ok).problems().is_empty(), "{ok}");
        }
        for bad in ["ftp://h/x", "h/x", "https://", ""] {
            assert!(!channel("webhook", bad).problems().is_empty(), "{bad}");
        }
        let mut c = channel("webhook", "https://h/x");
        c.ca_file = "/nonexistent/ca.pem".into();
        assert!(c.problems().iter().any(|p| p.contains("ca_file")));
    }

    pub(super) fn alert(title: &str, node: &str, severity: &str) -> Alert {
        Alert {
            id: "7b0c1f0e-6a4e-4b8e-9a59-2d6f6c1d2e3f".parse().unwrap(),
            fingerprint: "f".into(),
            rule_id: "ANLY-SEC-001".into(),
            rule_name: "Brute Force".into(),
            rule_description: "Failed logins".into(),
            severity: severity.into(),
            title: title.into(),
            tags: vec!["brute-force".into()],
            node: node.into(),
            group: serde_json::Map::new(),
            status: crate::store::Status::Open,
            occurrences: 3,
            first_seen: 1_765_000_000_000,
            last_seen: 1_765_000_060_000,
            created_at: 1_765_000_000_000,
            updated_at: 1_765_000_060_000,
            correlation_id: "7b0c1f0e-6a4e-4b8e-9a59-2d6f6c1d2e3f".parse().unwrap(),
            remediation: None,
            playbook_url: None,
            silenced: false,
            raw_event: serde_json::Value::Null,
        }
    }

    #[test]
    fn receivers_get_their_documented_payloads_and_no_injection() {
        let a =
            alert("<!channel> @everyone <https://evil.example|click> & more", "pi-<1>", "CRITICAL");
        let link = "https://af.example.org/#/alerts/7b0c1f0e-6a4e-4b8e-9a59-2d6f6c1d2e3f";
        let slack = slack_message(&a, Some(link), Change::Created);
        let text = slack.to_string();
        assert!(!text.contains("<!channel>") && !text.contains("<https://evil"), "{text}");
        assert!(text.contains("&lt;!channel&gt;"), "{text}");
        assert_eq!(slack["attachments"][0]["color"], "#d32f2f");
        assert_eq!(slack["attachments"][0]["blocks"][2]["elements"][0]["url"], link);
        let discord = discord_message(&a, Some(link), Change::Created);
        assert_eq!(discord["allowed_mentions"]["parse"], json!([]));
        assert_eq!(discord["embeds"][0]["color"], 0xd3_2f_2f);
        assert_eq!(discord["embeds"][0]["url"], link);
        let ntfy = ntfy_message("alerts", &a, None, Change::Created);
        assert_eq!((ntfy["topic"].as_str(), ntfy["priority"].as_i64()), (Some("alerts"), Some(5)));
        assert!(ntfy.get("click").is_none());
        let pd = pagerduty_event("R0UTINGKEY", &alert("t", "n", "WARNING"), None, Change::Created);
        assert_eq!(pd["event_action"], "trigger");
        assert_eq!(pd["dedup_key"], "7b0c1f0e-6a4e-4b8e-9a59-2d6f6c1d2e3f");
        assert_eq!(pd["payload"]["severity"], "warning");
        assert_eq!(pd["routing_key"], "R0UTINGKEY");
        // Long text is clipped to what the receivers accept.
        let long = alert(&"x".repeat(5000), "n", "INFO");
        assert!(
            discord_message(&long, None, Change::Created)["embeds"][0]["title"]
                .as_str()
                .unwrap()
                .chars()
                .count()
                <= 250
        );
        assert!(
            pagerduty_event("k", &long, None, Change::Created)["payload"]["summary"]
                .as_str()
                .unwrap()
                .chars()
                .count()
                <= 1000
        );
    }

    #[test]
    fn lifecycle_payloads_say_what_changed() {
        let mut a = alert("Brute force on pi-1", "pi-1", "CRITICAL");
        let pd = pagerduty_event("k", &a, None, Change::Acknowledged);
        assert_eq!(
            pd,
            json!({"routing_key": "k", "event_action": "acknowledge",
            "dedup_key": "7b0c1f0e-6a4e-4b8e-9a59-2d6f6c1d2e3f"})
        );
        assert_eq!(pagerduty_event("k", &a, None, Change::Resolved)["event_action"], "resolve");
        assert_eq!(pagerduty_event("k", &a, None, Change::Reopened)["event_action"], "trigger");
        let slack = slack_message(&a, None, Change::Resolved);
        assert_eq!(slack["attachments"][0]["color"], "#2e7d32");
        assert!(slack["text"].as_str().unwrap().starts_with("[RESOLVED] Brute force"), "{slack}");
        let update = discord_message(&a, None, Change::Updated);
        assert!(
            update["embeds"][0]["title"].as_str().unwrap().contains("still firing: 3"),
            "{update}"
        );
        let now = 1_765_000_100_000;
        let am = alertmanager_alerts(
            &a,
            Some("https://af/x"),
            Change::Created,
            now,
            Duration::from_secs(60),
        );
        assert_eq!(am[0]["labels"]["alertname"], "ANLY-SEC-001");
        assert_eq!(am[0]["labels"]["severity"], "critical");
        assert_eq!(am[0]["generatorURL"], "https://af/x");
        assert_eq!(
            am[0]["endsAt"],
            crate::store::rfc3339(now + 300_000),
            "firing: five re-sends ahead"
        );
        a.status = crate::store::Status::Resolved;
        let am = alertmanager_alerts(&a, None, Change::Resolved, now, Duration::from_secs(60));
        assert_eq!(am[0]["endsAt"], crate::store::rfc3339(a.updated_at), "ended at its resolution");
        let c = channel("alertmanager", "http://alertmanager:9093/");
        assert_eq!(c.url(), "http://alertmanager:9093/api/v2/alerts");
    }

    #[test]
    fn channel_kinds_check_what_they_need() {
        let c = channel("ntfy", "https://ntfy.example.org/alerts");
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.ntfy_topic(), Some(("https://ntfy.example.org/".into(), "alerts".into())));
        assert!(!channel("ntfy", "https://ntfy.example.org/").problems().is_empty());
        let pd = channel("pagerduty", "");
        assert_eq!(pd.url(), PAGERDUTY_EVENTS);
        assert!(pd.problems().iter().any(|p| p.contains("integration key")), "{:?}", pd.problems());
        let mut slack = channel("slack", "https://hooks.slack.com/services/x");
        slack.secret_file = "/etc/hostname".into();
        assert!(slack.problems().iter().any(|p| p.contains("secret_file")));
        // The URL from a file (a Kubernetes Secret's key), never with `url` as well.
        let dir = std::env::temp_dir().join(format!("auditflow-url-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("slack-url"), "https://hooks.slack.com/services/T0/B0/s3cret\n")
            .unwrap();
        let mut from_file = channel("slack", "");
        from_file.url_file = dir.join("slack-url").display().to_string();
        assert!(from_file.problems().is_empty(), "{:?}", from_file.problems());
        assert_eq!(from_file.url(), "https://hooks.slack.com/services/T0/B0/s3cret");
        from_file.url = "https://other".into();
        assert!(from_file.problems().iter().any(|p| p.contains("exclusive")));
        from_file.url = String::new();
        from_file.url_file = dir.join("missing").display().to_string();
        assert!(from_file.problems().iter().any(|p| p.contains("url_file")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn signatures_are_githubs_scheme() {
        // GitHub's documented example: the same construction, another header name.
        assert_eq!(
            signature(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn backoff_doubles_to_ten_minutes() {
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(2), Duration::from_secs(2));
        assert_eq!(retry_delay(5), Duration::from_secs(16));
        assert_eq!(retry_delay(30), Duration::from_secs(600));
    }
}
