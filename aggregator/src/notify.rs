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
    /// What receives it.
    pub kind: ChannelKind,
    /// The receiver's URL (`https://…`, or `http://…` inside the cluster): the webhook's, the
    /// ntfy topic's (`https://ntfy.example.org/topic`); PagerDuty's defaults to its Events API.
    #[serde(default)]
    pub url: String,
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
                    if matches!(kind, ChannelKind::Slack | ChannelKind::Discord) {
                        errors.push(format!(
                            "{at}: secret_file is for webhook, ntfy and pagerduty channels (a Slack or Discord URL is its own secret)"
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
    /// one.
    pub fn url(&self) -> String {
        if self.url.is_empty() && self.kind == ChannelKind::Pagerduty {
            PAGERDUTY_EVENTS.to_owned()
        } else {
            self.url.clone()
        }
    }

    /// An ntfy URL's server (where JSON is published) and topic (its last path segment).
    pub fn ntfy_topic(&self) -> Option<(String, String)> {
        let mut u = reqwest::Url::parse(&self.url).ok()?;
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

/// Severity as a colour: red, amber, blue.
fn colour(severity: &str) -> u32 {
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
pub fn slack_message(a: &Alert, link: Option<&str>) -> serde_json::Value {
    let field = |name: &str, value: &str| json!({"type": "mrkdwn", "text": format!("*{name}*\n{}", clip(&slack_escape(value), 1900))});
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn",
            "text": clip(&format!("*[{}] {}*", slack_escape(&a.severity), slack_escape(&a.title)), 2900)}}),
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
        "text": slack_escape(&text(a)),
        "attachments": [{"color": format!("#{:06x}", colour(&a.severity)), "blocks": blocks}],
    })
}

/// A Discord webhook message: one embed coloured by severity. `allowed_mentions` is empty, so
/// nothing in an event's text can ping a user, a role or `@everyone`.
pub fn discord_message(a: &Alert, link: Option<&str>) -> serde_json::Value {
    let field = |name: &str, value: String| json!({"name": name, "value": clip(&value, 1000), "inline": true});
    let mut embed = json!({
        "title": clip(&format!("[{}] {}", a.severity, a.title), 250),
        "description": clip(&a.rule_description, 2000),
        "color": colour(&a.severity),
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
pub fn ntfy_message(topic: &str, a: &Alert, link: Option<&str>) -> serde_json::Value {
    let (priority, tag) = match rank(&a.severity) {
        2 => (5, "rotating_light"),
        1 => (4, "warning"),
        _ => (3, "information_source"),
    };
    let mut m = json!({
        "topic": topic,
        "title": clip(&format!("[{}] {}", a.severity, a.title), 250),
        "message": clip(&text(a), 4000),
        "priority": priority,
        "tags": [tag, a.rule_id],
    });
    if let Some(link) = link {
        m["click"] = json!(link);
    }
    m
}

/// A PagerDuty Events API v2 trigger. The dedup key is the alert's id, so the repeated
/// deliveries at-least-once allows, and later updates, land on the same incident.
pub fn pagerduty_event(routing_key: &str, a: &Alert, link: Option<&str>) -> serde_json::Value {
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

/// Sends alert `a` through channel `c` (not `audit_alerts`) with the channels' HTTP clients.
async fn deliver_to(
    c: &ChannelConfig,
    clients: &HttpClients,
    dashboard_url: &str,
    a: &Alert,
) -> Result<(), String> {
    let link = alert_link(dashboard_url, a);
    let link = link.as_deref();
    let http = clients.clients.get(&c.name);
    let secret =
        http.and_then(|(_, s)| s.as_deref()).map(|s| String::from_utf8_lossy(s).into_owned());
    let result = match (c.kind, http) {
        (ChannelKind::Email, _) => send_mail(c, a).await,
        (_, None) => Err(anyhow::anyhow!("no HTTP client for the channel")),
        (ChannelKind::Webhook, Some((client, _))) => {
            let body = json!({"kind": "alert", "alert": a, "legacy": legacy_alert::nested(a)});
            let signed = secret.map(|s| {
                ("X-AuditFlow-Signature", signature(s.as_bytes(), body.to_string().as_bytes()))
            });
            post_json(client, &c.url, &body, signed.as_slice()).await
        }
        (ChannelKind::Slack, Some((client, _))) => {
            post_json(client, &c.url, &slack_message(a, link), &[]).await
        }
        (ChannelKind::Discord, Some((client, _))) => {
            post_json(client, &c.url, &discord_message(a, link), &[]).await
        }
        (ChannelKind::Ntfy, Some((client, _))) => match c.ntfy_topic() {
            Some((server, topic)) => {
                let auth = secret.map(|t| ("Authorization", format!("Bearer {t}")));
                post_json(client, &server, &ntfy_message(&topic, a, link), auth.as_slice()).await
            }
            None => Err(anyhow::anyhow!("the ntfy url has no topic")),
        },
        (ChannelKind::Pagerduty, Some((client, _))) => match secret {
            Some(key) => post_json(client, &c.url(), &pagerduty_event(&key, a, link), &[]).await,
            None => Err(anyhow::anyhow!("no integration key (secret_file)")),
        },
    };
    result.map_err(|e| format!("{e:#}"))
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
    let now = now_ms();
    let node = std::env::var("HOSTNAME").unwrap_or_else(|_| "auditflow".into());
    let a = Alert {
        id: uuid::Uuid::new_v4(),
        fingerprint: "test".into(),
        rule_id: "AUDITFLOW-TEST".into(),
        rule_name: "Test notification".into(),
        rule_description: "Sent by `auditflow-aggregator notify test` to check a channel.".into(),
        severity: "INFO".into(),
        title: format!("AuditFlow test notification for channel {name}"),
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
    };
    deliver_to(c, &clients, &config.notify.dashboard_url, &a).await.map_err(|e| anyhow::anyhow!(e))
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
    /// The dashboard's address as people open it (`[notify] dashboard_url`), for links to
    /// alerts; empty: no links.
    pub dashboard_url: String,
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
        deliver_to(c, &self.http, &self.dashboard_url, a).await
    }

    /// Sends what is due once; returns how many rows it handled.
    pub async fn tick(&self) -> anyhow::Result<usize> {
        let due = self.store.claim_outbox(now_ms(), 60_000, 32).await?;
        for item in &due {
            let kind = if item.channel == AUDIT_ALERTS {
                AUDIT_ALERTS
            } else {
                self.channels
                    .iter()
                    .find(|c| c.name == item.channel)
                    .map_or("unknown", |c| c.kind.as_str())
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
            kind: serde_json::from_value(json!(kind)).unwrap(),
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

    fn alert(title: &str, node: &str, severity: &str) -> Alert {
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
        let slack = slack_message(&a, Some(link));
        let text = slack.to_string();
        assert!(!text.contains("<!channel>") && !text.contains("<https://evil"), "{text}");
        assert!(text.contains("&lt;!channel&gt;"), "{text}");
        assert_eq!(slack["attachments"][0]["color"], "#d32f2f");
        assert_eq!(slack["attachments"][0]["blocks"][2]["elements"][0]["url"], link);
        let discord = discord_message(&a, Some(link));
        assert_eq!(discord["allowed_mentions"]["parse"], json!([]));
        assert_eq!(discord["embeds"][0]["color"], 0xd3_2f_2f);
        assert_eq!(discord["embeds"][0]["url"], link);
        let ntfy = ntfy_message("alerts", &a, None);
        assert_eq!((ntfy["topic"].as_str(), ntfy["priority"].as_i64()), (Some("alerts"), Some(5)));
        assert!(ntfy.get("click").is_none());
        let pd = pagerduty_event("R0UTINGKEY", &alert("t", "n", "WARNING"), None);
        assert_eq!(pd["event_action"], "trigger");
        assert_eq!(pd["dedup_key"], "7b0c1f0e-6a4e-4b8e-9a59-2d6f6c1d2e3f");
        assert_eq!(pd["payload"]["severity"], "warning");
        assert_eq!(pd["routing_key"], "R0UTINGKEY");
        // Long text is clipped to what the receivers accept.
        let long = alert(&"x".repeat(5000), "n", "INFO");
        assert!(
            discord_message(&long, None)["embeds"][0]["title"].as_str().unwrap().chars().count()
                <= 250
        );
        assert!(
            pagerduty_event("k", &long, None)["payload"]["summary"]
                .as_str()
                .unwrap()
                .chars()
                .count()
                <= 1000
        );
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
