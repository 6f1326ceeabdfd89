//! The aggregator's configuration. [`DEFAULT_TOML`] is what `print-default-config` prints; a
//! test keeps it equal to [`Config::default`].

use std::net::SocketAddr;
use std::time::Duration;

use runtime::config::{Env, Validate, address, duration, optional_address};
use serde::{Deserialize, Serialize};

/// The documented defaults, as printed by `print-default-config`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// The aggregator's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Embedded mode's data directory.
    pub data_dir: String,
    /// Directory of rule files; empty means the shipped pack compiled into the binary.
    pub rules_dir: String,
    /// Detection settings.
    pub detection: DetectionConfig,
    /// RabbitMQ consumption.
    pub ingest: IngestConfig,
    /// Listeners.
    pub http: HttpConfig,
    /// API access.
    pub api: ApiConfig,
    /// Webhook receivers.
    pub hooks: HooksConfig,
    /// Notifications.
    pub notify: NotifyConfig,
    /// The legacy views: the `audit_alerts` feed and the legacy read API.
    pub legacy: LegacyConfig,
    /// How long what the store keeps is kept.
    pub retention: RetentionConfig,
    /// `[archive]`
    pub archive: ArchiveConfig,
    /// Embedded mode.
    pub embedded: EmbeddedConfig,
    /// External services; all empty means embedded mode.
    pub services: ServicesConfig,
}

/// `[api]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// File of `name:token:role` lines.
    pub tokens_file: String,
    /// Serve the legacy `GET /alerts` without a token.
    pub legacy_unauthenticated: bool,
    /// `AUDITFLOW_API_TOKENS` (environment only: tokens are secrets).
    #[serde(skip)]
    pub tokens_env: String,
}

/// `[embedded]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// The in-process MQTT broker's listener, for agents.
    #[serde(with = "address")]
    pub mqtt_listen: SocketAddr,
    /// Run an in-process agent for this host with demo traffic.
    pub demo: bool,
    /// Demo events per second.
    pub demo_rate: f64,
    /// How often the in-memory detection state is written to `data_dir/state` (it is also
    /// written at a clean stop; after a crash, the archive replays what came after it).
    #[serde(with = "duration")]
    pub state_snapshot_interval: Duration,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            mqtt_listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            demo: true,
            demo_rate: 50.0,
            state_snapshot_interval: Duration::from_secs(60),
        }
    }
}

/// `[notify]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Publish each new alert to the `audit_alerts` queue (cluster profile).
    pub audit_alerts: bool,
    /// Attempts per delivery before it is given up.
    pub max_attempts: u32,
    /// The dashboard's address as people open it (`https://auditflow.example.org`), for links
    /// to each alert in notifications; empty: no links.
    pub dashboard_url: String,
    /// Notification channels.
    pub channels: Vec<crate::notify::ChannelConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            audit_alerts: true,
            max_attempts: 10,
            dashboard_url: String::new(),
            channels: Vec::new(),
        }
    }
}

impl NotifyConfig {
    /// The outbox channels of a new alert: `audit_alerts` (when enabled and RabbitMQ is
    /// there), then the configured ones, to which silences apply.
    pub fn outbox_channels(&self, amqp: bool) -> Vec<crate::store::Channel> {
        let feed = (self.audit_alerts && amqp).then(|| crate::store::Channel {
            name: crate::notify::AUDIT_ALERTS.into(),
            silenceable: false,
        });
        feed.into_iter()
            .chain(
                self.channels
                    .iter()
                    .map(|c| crate::store::Channel { name: c.name.clone(), silenceable: true }),
            )
            .collect()
    }
}

/// `legacy.alerts_feed`: what the `audit_alerts` queue carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertsFeed {
    /// One message per new alert, then an update (same `alert_id`, `change: "updated"`, the
    /// new `occurrences`) at most every `update_interval` while firings fold into it.
    #[default]
    Alert,
    /// One message per firing, as the legacy analysis service sent one per triggering event,
    /// for consumers that count messages.
    Firing,
}

/// `[legacy]`: the views legacy consumers read (docs/legacy.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LegacyConfig {
    /// `metadata.environment` of legacy alerts (`ENVIRONMENT` overrides, as it did for the
    /// legacy analysis service).
    pub environment: String,
    /// What `audit_alerts` carries.
    pub alerts_feed: AlertsFeed,
    /// Feed `alert`: updates at most this often per alert; "0s": no updates.
    #[serde(with = "duration")]
    pub update_interval: Duration,
}

impl Default for LegacyConfig {
    fn default() -> Self {
        Self {
            environment: crate::legacy_alert::DEFAULT_ENVIRONMENT.into(),
            alerts_feed: AlertsFeed::Alert,
            update_interval: Duration::from_secs(60),
        }
    }
}

/// `[retention]`: what the store deletes, in the background, in small batches
/// (`store::Store::retain`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Resolved alerts, with their firings, history and deliveries, this long after they
    /// were resolved. "0s": kept for ever.
    #[serde(with = "duration")]
    pub resolved_alerts: Duration,
    /// Firings (evidence and the replay record) this long after they were stored, whatever
    /// their alert: an alert that stays open keeps its count, its first event and its newest
    /// evidence.
    #[serde(with = "duration")]
    pub firings: Duration,
    /// Fleet rows of agents not heard from for this long (retired nodes).
    #[serde(with = "duration")]
    pub agents: Duration,
    /// Archived events (`[archive]`) this long after they were archived. "0s": kept for ever.
    #[serde(with = "duration")]
    pub events: Duration,
    /// The database's bound, MiB of live data: past it, the oldest archived events go first,
    /// then the oldest resolved alerts, then the oldest firings, until it is under. 0: no
    /// bound.
    pub max_db_mb: u64,
    /// How often the retention runs.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Rows per delete (a short transaction each, so ingestion never waits long).
    pub batch: u32,
    /// Single events (legacy JSON, API submissions, webhook deliveries) the dedup record
    /// remembers at most, the newest; older ones are forgotten before their 14 days (in Redis
    /// about 120 bytes each, so the default takes about 24 MB). A duplicate of a forgotten one
    /// is evaluated again and its firings are recognised by their ids in the store. 0: no
    /// bound.
    pub dedup_single_events: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let day = 86_400;
        Self {
            resolved_alerts: Duration::from_secs(90 * day),
            firings: Duration::from_secs(30 * day),
            agents: Duration::from_secs(30 * day),
            events: Duration::from_secs(7 * day),
            max_db_mb: 0,
            interval: Duration::from_secs(600),
            batch: 1000,
            dedup_single_events: 200_000,
        }
    }
}

/// `[archive]`: every evaluated event kept in the alert store's database (design.md §6.12),
/// for search, an alert's evidence and backtests; `[retention] events` says how long.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Archive events at all.
    pub enabled: bool,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// `[hooks]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// File holding the GitHub webhook secret.
    pub github_secret_file: String,
    /// File holding the GitLab webhook token.
    pub gitlab_token_file: String,
    /// `AUDITFLOW_GITHUB_SECRET` (environment only).
    #[serde(skip)]
    pub github_secret_env: String,
    /// `AUDITFLOW_GITLAB_TOKEN` (environment only).
    #[serde(skip)]
    pub gitlab_token_env: String,
}

/// Secrets read from files and the environment.
#[derive(Debug, Default)]
pub struct Secrets {
    /// API tokens.
    pub tokens: crate::http::auth::Tokens,
    /// Webhook secrets.
    pub hooks: crate::http::hooks::HookSecrets,
}

fn read_secret(key: &str, path: &str, errors: &mut Vec<String>) -> Option<String> {
    if path.is_empty() {
        return None;
    }
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
        Ok(_) => {
            errors.push(format!("{key}: `{path}` is empty"));
            None
        }
        Err(e) => {
            errors.push(format!("{key}: cannot read `{path}`: {e}"));
            None
        }
    }
}

impl Config {
    /// Reads the secrets the configuration points at; every problem is reported.
    pub fn secrets(&self) -> Result<Secrets, Vec<String>> {
        let mut errors = Vec::new();
        let mut text =
            read_secret("api.tokens_file", &self.api.tokens_file, &mut errors).unwrap_or_default();
        if !self.api.tokens_env.is_empty() {
            text.push('\n');
            text.push_str(&self.api.tokens_env);
        }
        let tokens = crate::http::auth::Tokens::parse(&text).unwrap_or_else(|e| {
            errors.extend(e.into_iter().map(|e| format!("api tokens: {e}")));
            Default::default()
        });
        let h = &self.hooks;
        // Webhook secrets are held to the API tokens' floor: a short secret is a guessable one.
        let pick = |env: &str, key: &str, file: &str, errors: &mut Vec<String>| {
            let secret =
                if env.is_empty() { read_secret(key, file, errors) } else { Some(env.to_owned()) };
            match secret {
                Some(s) if s.len() < crate::http::auth::MIN_TOKEN_LEN => {
                    errors.push(format!(
                        "{key}: the secret is shorter than {} characters",
                        crate::http::auth::MIN_TOKEN_LEN
                    ));
                    None
                }
                other => other,
            }
        };
        let hooks = crate::http::hooks::HookSecrets {
            github: pick(
                &h.github_secret_env,
                "hooks.github_secret_file",
                &h.github_secret_file,
                &mut errors,
            ),
            gitlab: pick(
                &h.gitlab_token_env,
                "hooks.gitlab_token_file",
                &h.gitlab_token_file,
                &mut errors,
            ),
        };
        if errors.is_empty() { Ok(Secrets { tokens, hooks }) } else { Err(errors) }
    }
}

/// `[http]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// API, webhooks, SSE; empty: the profile's default ([`Config::api_listen`]).
    #[serde(with = "optional_address")]
    pub listen: Option<SocketAddr>,
    /// Prometheus metrics; empty: the profile's default ([`Config::metrics_listen`]).
    #[serde(with = "optional_address")]
    pub metrics_listen: Option<SocketAddr>,
}

/// `[detection]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectionConfig {
    /// How far behind the newest event of a window an event may arrive and still count.
    #[serde(with = "duration")]
    pub allowed_lateness: Duration,
    /// How often the rule directory is checked for changes.
    #[serde(with = "duration")]
    pub reload_interval: Duration,
    /// Prefix of every Redis key.
    pub redis_prefix: String,
    /// An agent whose last heartbeat is older than this is reported silent.
    #[serde(with = "duration")]
    pub agent_silent_after: Duration,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        Self {
            allowed_lateness: Duration::from_secs(300),
            reload_interval: Duration::from_secs(2),
            redis_prefix: "auditflow:".into(),
            agent_silent_after: Duration::from_secs(180),
        }
    }
}

/// `[ingest]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Unacked deliveries RabbitMQ may hand a consumer at once.
    pub prefetch: u16,
    /// Messages per batch at most.
    pub batch_max: usize,
    /// How long a batch waits to fill, milliseconds.
    pub batch_wait_ms: u64,
    /// Also consume legacy JSON events from `audit_events`.
    pub legacy_queue: bool,
    /// `prefetch` of the `audit_events` consumer: one message there is one event, not an
    /// envelope of many, so it takes more messages per batch for the same work per batch.
    pub legacy_prefetch: u16,
    /// `batch_max` of the `audit_events` consumer.
    pub legacy_batch_max: usize,
    /// Largest envelope accepted, bytes.
    pub max_frame_bytes: usize,
    /// Consumers of `auditflow.events` (and of `audit_events`) in this process, each with
    /// its own connection, prefetch and batches. One batch's stages wait on Redis and
    /// PostgreSQL in turn; a second consumer's batch runs while the first waits. Their
    /// batches interleave exactly as two replicas' do (design.md §4, §5).
    pub consumers: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            prefetch: 512,
            batch_max: 256,
            batch_wait_ms: 2,
            legacy_queue: false,
            legacy_prefetch: 4096,
            legacy_batch_max: 2048,
            max_frame_bytes: 1 << 20,
            consumers: 2,
        }
    }
}

/// `[services]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServicesConfig {
    /// RabbitMQ.
    pub amqp_url: String,
    /// PostgreSQL.
    pub database_url: String,
    /// The PostgreSQL schema AuditFlow's tables live in, apart from `public`, where the legacy
    /// notification service keeps its `alerts` table (design.md §8.7).
    pub database_schema: crate::store::postgres::PgSchema,
    /// Redis.
    pub redis_url: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: "./auditflow-data".into(),
            rules_dir: String::new(),
            detection: DetectionConfig::default(),
            ingest: IngestConfig::default(),
            http: HttpConfig::default(),
            api: ApiConfig::default(),
            hooks: HooksConfig::default(),
            notify: NotifyConfig::default(),
            legacy: LegacyConfig::default(),
            retention: RetentionConfig::default(),
            archive: ArchiveConfig::default(),
            embedded: EmbeddedConfig::default(),
            services: ServicesConfig::default(),
        }
    }
}

impl Config {
    /// Where the API listens: `http.listen`, or by default every interface in the cluster
    /// profile (a pod's port, behind a NetworkPolicy) and only this machine in embedded mode
    /// (a laptop or a Pi on a LAN: the admin token should not face the network unless asked).
    pub fn api_listen(&self) -> SocketAddr {
        self.http.listen.unwrap_or_else(|| self.profile_address(8000))
    }

    /// Where `/metrics` listens, with the same defaults on port 9102.
    pub fn metrics_listen(&self) -> SocketAddr {
        self.http.metrics_listen.unwrap_or_else(|| self.profile_address(9102))
    }

    fn profile_address(&self, port: u16) -> SocketAddr {
        let ip = if self.is_embedded() { [127, 0, 0, 1] } else { [0, 0, 0, 0] };
        SocketAddr::from((ip, port))
    }

    /// True when no external service is configured: everything runs in-process.
    pub fn is_embedded(&self) -> bool {
        let s = &self.services;
        s.amqp_url.is_empty() && s.database_url.is_empty() && s.redis_url.is_empty()
    }
}

impl Validate for Config {
    /// `AMQP_URL`, `DATABASE_URL`, `REDIS_URL`, `AUDITFLOW_API_TOKENS`,
    /// `AUDITFLOW_GITHUB_SECRET`, `AUDITFLOW_GITLAB_TOKEN`, `ENVIRONMENT`.
    fn apply_env(&mut self, env: Env<'_>) {
        for (name, slot) in [
            ("AUDITFLOW_API_TOKENS", &mut self.api.tokens_env),
            ("AUDITFLOW_GITHUB_SECRET", &mut self.hooks.github_secret_env),
            ("AUDITFLOW_GITLAB_TOKEN", &mut self.hooks.gitlab_token_env),
            ("ENVIRONMENT", &mut self.legacy.environment),
        ] {
            if let Some(v) = env(name) {
                *slot = v;
            }
        }
        let s = &mut self.services;
        for (name, slot) in [
            ("AMQP_URL", &mut s.amqp_url),
            ("DATABASE_URL", &mut s.database_url),
            ("REDIS_URL", &mut s.redis_url),
        ] {
            if let Some(v) = env(name) {
                *slot = v;
            }
        }
    }

    fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.detection.reload_interval.is_zero() {
            errors.push("detection.reload_interval: must be more than zero".into());
        }
        let i = &self.ingest;
        if i.prefetch == 0 || i.batch_max == 0 || i.max_frame_bytes == 0 {
            errors.push("ingest: prefetch, batch_max and max_frame_bytes must be positive".into());
        }
        if i.batch_max > usize::from(i.prefetch) {
            errors.push("ingest.batch_max: must not exceed ingest.prefetch".into());
        }
        if !(1..=16).contains(&i.consumers) {
            errors.push("ingest.consumers: must be between 1 and 16".into());
        }
        if i.legacy_prefetch == 0 || i.legacy_batch_max == 0 {
            errors.push("ingest: legacy_prefetch and legacy_batch_max must be positive".into());
        }
        if i.legacy_batch_max > usize::from(i.legacy_prefetch) {
            errors.push("ingest.legacy_batch_max: must not exceed ingest.legacy_prefetch".into());
        }
        if !self.rules_dir.is_empty() && !std::path::Path::new(&self.rules_dir).is_dir() {
            errors.push(format!("rules_dir: `{}` is not a directory", self.rules_dir));
        }
        if self.data_dir.is_empty() {
            errors.push("data_dir: must not be empty".into());
        }
        if self.retention.interval.is_zero() || self.retention.batch == 0 {
            errors.push("retention: interval and batch must be more than zero".into());
        }
        if let Err(e) = self.secrets() {
            errors.extend(e);
        }
        if !(self.embedded.demo_rate > 0.0 && self.embedded.demo_rate <= 100_000.0) {
            errors.push("embedded.demo_rate: must be above 0 and at most 100000".into());
        }
        if self.embedded.state_snapshot_interval < Duration::from_secs(1) {
            errors.push("embedded.state_snapshot_interval: must be at least 1s".into());
        }
        let d = &self.notify.dashboard_url;
        if !(d.is_empty() || d.starts_with("https://") || d.starts_with("http://")) {
            errors.push(format!("notify.dashboard_url: `{d}` is not an http(s):// URL"));
        }
        if self.notify.max_attempts == 0 {
            errors.push("notify.max_attempts: must be at least 1".into());
        }
        for (i, c) in self.notify.channels.iter().enumerate() {
            errors.extend(c.problems());
            if self.notify.channels[..i].iter().any(|o| o.name == c.name) {
                errors.push(format!("notify.channels: name `{}` used twice", c.name));
            }
        }
        let s = &self.services;
        let checks: [(&str, &str, &[&str]); 3] = [
            ("services.amqp_url", &s.amqp_url, &["amqp://", "amqps://"]),
            ("services.database_url", &s.database_url, &["postgres://", "postgresql://"]),
            ("services.redis_url", &s.redis_url, &["redis://", "rediss://"]),
        ];
        for (key, value, schemes) in checks {
            if !value.is_empty() && !schemes.iter().any(|p| value.starts_with(p)) {
                errors.push(format!("{key}: must start with {}", schemes.join(" or ")));
            }
        }
        if !self.is_embedded() && checks.iter().any(|(_, v, _)| v.is_empty()) {
            errors.push(
                "services: set all of amqp_url, database_url and redis_url (cluster profile) or \
                 none (embedded)"
                    .into(),
            );
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use runtime::config::{no_env, parse};

    use super::*;

    #[test]
    fn the_api_faces_the_network_only_in_the_cluster_or_when_asked() {
        let mut c = Config::default();
        assert!(c.is_embedded());
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            (c.api_listen(), c.metrics_listen()),
            (addr("127.0.0.1:8000"), addr("127.0.0.1:9102"))
        );
        c.services.amqp_url = "amqp://x".into();
        assert_eq!(
            (c.api_listen(), c.metrics_listen()),
            (addr("0.0.0.0:8000"), addr("0.0.0.0:9102"))
        );
        c.http.listen = Some(addr("10.0.0.5:8080"));
        assert_eq!(c.api_listen(), addr("10.0.0.5:8080"));
    }

    #[test]
    fn documented_defaults_equal_the_built_in_ones() {
        let parsed: Config = parse(DEFAULT_TOML, &no_env).expect("default.toml is valid");
        assert_eq!(parsed, Config::default());
        assert!(parsed.is_embedded());
    }

    #[test]
    fn the_database_schema_is_a_plain_identifier() {
        let errors =
            parse::<Config>("[services]\ndatabase_schema = \"Audit-Flow\"\n", &no_env).unwrap_err();
        assert!(
            errors.iter().any(|e| e.starts_with(
                "services.database_schema: `Audit-Flow` is not a \
                 plain SQL identifier"
            )),
            "{errors:?}"
        );
        let c: Config = parse("[services]\ndatabase_schema = \"af_prod\"\n", &no_env).unwrap();
        assert_eq!(c.services.database_schema.as_str(), "af_prod");
    }

    #[test]
    fn partial_cluster_profile_is_refused() {
        let env = |k: &str| (k == "REDIS_URL").then(|| "redis://r".to_owned());
        let errors = parse::<Config>("", &env).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
    }
}
