//! The notifier: delivers the outbox (design.md §6). Every new alert gets one outbox row per
//! channel in the same transaction that creates it; this task claims due rows, sends them and
//! records the result, retrying with exponential backoff until `max_attempts`. A crash
//! between sending and recording sends again (at least once); receivers can deduplicate on
//! the alert id.
//!
//! Channels: the `audit_alerts` RabbitMQ queue (legacy alert JSON plus ours, publisher
//! confirms), a generic JSON webhook, a Slack-compatible webhook, and e-mail over SMTP.
//!
//! Webhooks go over `https://` (or plain `http://` to a receiver inside the cluster) through
//! reqwest with rustls: the system's roots plus the channel's own `ca_file`, the proxy from
//! `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`, 10 s to connect and 15 s in all. A generic webhook
//! with a `secret_file` signs its body like GitHub does: `X-AuditFlow-Signature:
//! sha256=<HMAC-SHA256 of the body, hex>`, so its receiver can tell our deliveries from
//! forgeries. E-mail is plain SMTP to a relay (no TLS in this build).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Connection};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::legacy_alert;
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
    /// `webhook`, `slack` or `email`.
    pub kind: String,
    /// Webhook URL (`https://…`, or `http://…` inside the cluster), for `webhook` and `slack`.
    #[serde(default)]
    pub url: String,
    /// CA certificates (PEM) trusted for this channel's `https://` URL or SMTP TLS besides
    /// the system's.
    #[serde(default)]
    pub ca_file: String,
    /// A file holding the key that signs a generic webhook's body
    /// (`X-AuditFlow-Signature: sha256=…`); empty: unsigned.
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
}

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
        match self.kind.as_str() {
            "webhook" | "slack" => {
                match reqwest::Url::parse(&self.url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                    _ => errors
                        .push(format!("{at}: url must be https://host[:port]/path (or http://)")),
                }
                if !self.ca_file.is_empty()
                    && let Err(e) = tls_config(&self.ca_file)
                {
                    errors.push(format!("{at}: ca_file: {e:#}"));
                }
                if !self.secret_file.is_empty() {
                    if self.kind != "webhook" {
                        errors.push(format!("{at}: secret_file signs generic webhooks only"));
                    } else if let Err(e) = self.secret() {
                        errors.push(format!("{at}: secret_file: {e:#}"));
                    }
                }
            }
            "email" => {
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
            other => errors.push(format!("{at}: kind `{other}` is not webhook, slack or email")),
        }
        if let Some(s) = &self.min_severity
            && !matches!(s.to_ascii_uppercase().as_str(), "INFO" | "WARNING" | "CRITICAL")
        {
            errors.push(format!("{at}: min_severity must be INFO, WARNING or CRITICAL"));
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
        for c in channels.iter().filter(|c| matches!(c.kind.as_str(), "webhook" | "slack")) {
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
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The text of a notification.
fn text(a: &Alert) -> String {
    format!(
        "[{}] {} ({}), node {}, {} occurrence(s), first seen {}. Alert {}",
        a.severity,
        a.title,
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

/// POSTs `body` as JSON with the channel's client, signed when the channel has a key.
async fn post_json(
    (client, secret): &(reqwest::Client, Option<Vec<u8>>),
    url: &str,
    body: &serde_json::Value,
) -> anyhow::Result<()> {
    let body = body.to_string();
    let mut req = client.post(url).header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(secret) = secret {
        req = req.header("X-AuditFlow-Signature", signature(secret, body.as_bytes()));
    }
    // The error's chain names what failed (DNS, connect, TLS, timeout) without the URL's
    // query, which may hold a token (Slack's URLs are secrets themselves).
    let resp = req.body(body).send().await.map_err(|e| chain(&e.without_url()))?;
    let status = resp.status();
    if status.is_success() { Ok(()) } else { anyhow::bail!("HTTP {status}") }
}

/// HTML-escapes alert text (titles and nodes come from events, which a node controls).
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The mail for an alert: plain text and HTML, with `Date` and a `Message-ID`.
pub fn mail(c: &ChannelConfig, a: &Alert) -> anyhow::Result<lettre::Message> {
    use lettre::message::{Mailbox, MultiPart};
    let from: Mailbox = c.from.parse().with_context(|| format!("from `{}`", c.from))?;
    let mut builder = lettre::Message::builder()
        .from(from)
        .subject(format!("[AuditFlow {}] {}", a.severity, a.title).replace(['\r', '\n'], " "))
        .date_now()
        .message_id(Some(format!("<{}.{}@auditflow>", a.id, now_ms())));
    for to in &c.to {
        builder = builder.to(to.parse::<Mailbox>().with_context(|| format!("to `{to}`"))?);
    }
    let html = format!(
        "<html><body><p><strong>[{}] {}</strong></p><table>\
         <tr><th align=\"left\">Rule</th><td>{}</td></tr>\
         <tr><th align=\"left\">Node</th><td>{}</td></tr>\
         <tr><th align=\"left\">Occurrences</th><td>{}</td></tr>\
         <tr><th align=\"left\">First seen</th><td>{}</td></tr>\
         <tr><th align=\"left\">Alert</th><td>{}</td></tr></table></body></html>",
        html_escape(&a.severity),
        html_escape(&a.title),
        html_escape(&a.rule_id),
        html_escape(&a.node),
        a.occurrences,
        crate::store::rfc3339(a.first_seen),
        a.id
    );
    builder.multipart(MultiPart::alternative_plain_html(text(a), html)).context("build the mail")
}

/// Sends an alert's mail through the channel's SMTP server: implicit TLS (`smtp_tls = "tls"`,
/// port 465), STARTTLS required (`"starttls"`, the default, port 587) or plain (`"none"`,
/// for a relay inside the cluster), with AUTH when `smtp_user` is set.
async fn send_mail(c: &ChannelConfig, a: &Alert) -> anyhow::Result<()> {
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
    transport.send(mail(c, a)?).await.map(drop).map_err(|e| chain(&e))
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

    async fn publish(&self, body: &[u8], id: &str) -> anyhow::Result<()> {
        let mut link = self.link.lock().await;
        if link.as_ref().is_none_or(|(c, ch)| !c.status().connected() || !ch.status().connected()) {
            *link = Some(crate::ingest::open_confirming(&self.url, &[AUDIT_ALERTS]).await?);
        }
        let (_, ch) = link.as_ref().expect("connected above");
        let result = async {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    AUDIT_ALERTS.into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type("application/json".into())
                        .with_message_id(id.into()),
                )
                .await
                .context("publish")?
                .await
                .context("confirm")?;
            match confirm {
                lapin::Confirmation::Ack(_) => Ok(()),
                other => anyhow::bail!("RabbitMQ did not confirm: {other:?}"),
            }
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
}

/// Delay before retry `attempt` (1-based): 1 s, 2 s, 4 s, … at most 10 min.
pub fn retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(10)).min(Duration::from_secs(600))
}

impl Notifier {
    async fn deliver(&self, item: &OutboxItem, a: &Alert) -> Result<(), String> {
        if item.channel == AUDIT_ALERTS {
            let Some(amqp) = &self.amqp else { return Err("no RabbitMQ configured".into()) };
            let body = legacy_alert::nested(a).to_string();
            return amqp
                .publish(body.as_bytes(), &a.id.to_string())
                .await
                .map_err(|e| format!("{e:#}"));
        }
        let Some(c) = self.channels.iter().find(|c| c.name == item.channel) else {
            return Err("channel no longer configured".into());
        };
        let client = self.http.clients.get(&c.name);
        let result = match (c.kind.as_str(), client) {
            ("webhook", Some(client)) => {
                post_json(
                    client,
                    &c.url,
                    &json!({"kind": "alert", "alert": a, "legacy": legacy_alert::nested(a)}),
                )
                .await
            }
            ("slack", Some(client)) => post_json(client, &c.url, &json!({"text": text(a)})).await,
            ("webhook" | "slack", None) => Err(anyhow::anyhow!("no HTTP client for the channel")),
            _ => send_mail(c, a).await,
        };
        result.map_err(|e| format!("{e:#}"))
    }

    /// Sends what is due once; returns how many rows it handled.
    pub async fn tick(&self) -> anyhow::Result<usize> {
        let due = self.store.claim_outbox(now_ms(), 60_000, 32).await?;
        for item in &due {
            let kind = if item.channel == AUDIT_ALERTS {
                AUDIT_ALERTS
            } else {
                self.channels.iter().find(|c| c.name == item.channel).map_or("unknown", |c| match c
                    .kind
                    .as_str()
                {
                    "webhook" => "webhook",
                    "slack" => "slack",
                    _ => "email",
                })
            };
            let count =
                |result: &str| self.metrics.notifications.with_label_values(&[kind, result]).inc();
            let Some(alert) = self.store.find_alert(item.alert_id).await? else {
                self.store.delivery_failed(item.id, "alert not found", None).await?;
                count("failed");
                continue;
            };
            let a = &alert;
            if let Some(c) = self.channels.iter().find(|c| c.name == item.channel)
                && let Err(why) = c.wants(a)
            {
                self.store.delivery_skipped(item.id, &why).await?;
                count("skipped");
                continue;
            }
            match self.deliver(item, a).await {
                Ok(()) => {
                    self.store.delivered(item.id, now_ms()).await?;
                    count("delivered");
                }
                Err(e) => {
                    let attempt = u32::try_from(item.attempts + 1).unwrap_or(u32::MAX);
                    let retry = (attempt < self.max_attempts)
                        .then(|| now_ms() + retry_delay(attempt).as_millis() as i64);
                    tracing::warn!(channel = %item.channel, alert = %item.alert_id, attempt, error = %e,
                        gave_up = retry.is_none(), "notification failed");
                    self.store.delivery_failed(item.id, &e, retry).await?;
                    count(if retry.is_some() { "retry" } else { "failed" });
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
            kind: kind.into(),
            url: url.into(),
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
