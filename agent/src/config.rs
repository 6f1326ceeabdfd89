//! The agent's configuration: one TOML file, every field documented and defaulted.
//! [`DEFAULT_TOML`] is what `auditflow-agent print-default-config` prints; a test keeps it
//! equal to [`Config::default`].

use std::net::SocketAddr;

use runtime::config::Validate;
use serde::{Deserialize, Serialize};

use crate::pipeline::Priorities;

/// The documented defaults, as printed by `print-default-config`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// The agent's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's name; empty means `NODE_NAME` from the environment, then the hostname.
    pub node_id: String,
    /// Health and metrics endpoint.
    pub http: HttpConfig,
    /// The on-disk spool.
    pub spool: SpoolConfig,
    /// How batches close.
    pub batch: BatchConfig,
    /// Where envelopes go.
    pub transport: TransportConfig,
    /// The synthetic source.
    pub synthetic: SyntheticConfig,
    /// The tailing sources.
    pub sources: SourcesConfig,
    /// The edge filter: ordered rules, `[[filter]]` in the file.
    pub filter: Vec<crate::filter::FilterRule>,
    /// A scripted scenario, `[[scenario]]` in the file (tests and demos).
    pub scenario: Vec<crate::scenario::Step>,
}

/// `[http]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[serde(with = "runtime::config::address")]
    pub listen: SocketAddr,
    /// Whether `POST /generate_event` answers at all. On for development and the legacy
    /// generator's users; the node configs AuditFlow ships (Pi image, Ansible role, chart)
    /// turn it off, since a real node's events come from its logs.
    pub generate_event: bool,
    /// Bearer token `POST /generate_event` requires (secret; `AUDITFLOW_GENERATE_EVENT_TOKEN`).
    /// Empty: the endpoint answers callers on this host (loopback) only.
    pub generate_event_token: String,
    /// The legacy generator's HTTP API (`POST /generate_event`, `GET /healthz` with its
    /// request and response bodies), for scripts written against it: `0.0.0.0:5000`, where
    /// the legacy generator listened. Empty: off.
    #[serde(with = "runtime::config::optional_address")]
    pub legacy_listen: Option<SocketAddr>,
    /// Let the legacy listener take events from any caller without a token, as the legacy
    /// generator did (a trusted network only: an accepted event raises alerts like any
    /// other). Otherwise the rule of `/generate_event` applies: the token, or this host.
    pub legacy_unauthenticated: bool,
}

/// `[spool]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory of the spool segments and the epoch file.
    pub dir: String,
    /// Byte cap; at the cap the lowest-priority events are shed first and counted.
    pub max_bytes: u64,
    /// Flush every batch to the device before it counts as spooled (survives power cuts).
    pub fsync: bool,
}

/// `[batch]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// A batch closes when it holds this many events.
    pub max_events: u32,
    /// … or when its oldest event is this old.
    pub max_age_ms: u64,
}

/// How the agent sends: `transport.kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// MQTT (or MQTT over TLS) to the broker.
    Mqtt,
    /// AMQP straight to RabbitMQ.
    Amqp,
}

/// What the synthetic source produces: `synthetic.mix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    /// The seven legacy templates with AuditFlow's vocabulary (they fire rules: demo traffic).
    Legacy,
    /// The legacy Python generator's events exactly: its templates, hosts, users, details
    /// keys and values (`wire::synth::LegacyGenerator`), for sites whose dashboards and
    /// scripts expect them.
    Generator,
    /// Only ordinary traffic no shipped rule fires on (background load for benchmarks).
    Normal,
}

/// `[transport]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// `mqtt` (to the broker) or `amqp` (straight to RabbitMQ).
    pub kind: Transport,
    /// The broker, for `mqtt`.
    pub mqtt_url: String,
    /// This node's MQTT password, for `mqtt`; `AUDITFLOW_MQTT_PASSWORD` overrides it.
    pub mqtt_password: String,
    /// A file holding the password, read at every connection (a projected service-account
    /// token, which the kubelet renews); `AUDITFLOW_MQTT_PASSWORD_FILE` overrides it.
    pub mqtt_password_file: String,
    /// CA certificates (PEM) trusted for `mqtts://`; empty trusts the system's roots.
    pub mqtt_ca_file: String,
    /// RabbitMQ, for `amqp`; `AMQP_URL` overrides it.
    pub amqp_url: String,
    /// Queue envelopes go to, for `amqp`.
    pub amqp_queue: String,
    /// Queue heartbeats go to, for `amqp`.
    pub amqp_heartbeat_queue: String,
}

/// `[synthetic]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Whether the synthetic source runs.
    pub enabled: bool,
    /// Events per second.
    pub rate_per_sec: f64,
    /// Seed of the generator: the same seed gives the same events.
    pub seed: u64,
    /// Stop after this many events; 0 runs until the agent stops.
    pub limit: u64,
    /// `legacy`: the seven legacy templates (they fire rules: demo traffic); `generator`: the
    /// legacy generator's events exactly; `normal`: only ordinary traffic no shipped rule fires
    /// on (background load for benchmarks).
    pub mix: Mix,
    /// Shedding priority at the spool's cap (0–9, higher is kept longer); scenarios too.
    pub priority: u8,
}

/// `[sources]`: the logs the agent tails.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourcesConfig {
    /// sshd, sudo and su in the auth log.
    pub auth: TailConfig,
    /// dpkg's log.
    pub dpkg: TailConfig,
    /// The Kubernetes API server's audit log (JSON lines).
    pub k8s_audit: TailConfig,
    /// Watched files.
    pub files: FilesConfig,
    /// Auth and kernel messages from the systemd journal.
    pub journal: JournalConfig,
    /// When a tailing source counts as blind (it reads lines it does not understand).
    pub blind: crate::blind::BlindConfig,
}

/// `[sources.files]`: files whose content and ownership are watched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// Whether it runs.
    pub enabled: bool,
    /// Absolute paths of files, or of directories whose files (not subdirectories) are
    /// watched.
    pub paths: Vec<String>,
    /// Where the host's root file system is mounted, in a container (`/host`); empty or `/`
    /// on the host itself. `paths` are the host's paths, read under this prefix and reported
    /// without it.
    pub host_root: String,
    /// Seconds between two hash sweeps of every watched file.
    pub sweep_interval_s: u64,
    /// Shedding priority at the spool's cap (0–9, higher is kept longer).
    pub priority: u8,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            paths: [
                "/etc/passwd",
                "/etc/shadow",
                "/etc/group",
                "/etc/sudoers",
                "/etc/sudoers.d",
                "/etc/ssh/sshd_config",
                "/etc/ssh/sshd_config.d",
                "/root/.ssh/authorized_keys",
            ]
            .map(String::from)
            .to_vec(),
            host_root: String::new(),
            sweep_interval_s: 300,
            priority: 9,
        }
    }
}

/// One tailing source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailConfig {
    /// Whether it runs.
    #[serde(default)]
    pub enabled: bool,
    /// The log file.
    pub path: String,
    /// On first start (no saved position): `end` skips the history already in the file,
    /// `beginning` reads it.
    #[serde(default)]
    pub start_at: StartAt,
    /// Shedding priority at the spool's cap (0–9, higher is kept longer); unset takes the
    /// source's default (auth 8, k8s_audit 7, dpkg 6).
    #[serde(default)]
    pub priority: Option<u8>,
}

/// Where a source starts reading on its first start (no saved position): `start_at`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// From now on: a new agent reports what happens next, not last week's history.
    #[default]
    End,
    /// The history already there too.
    Beginning,
}

/// How the journal source reads the journal: `reader` (`agent/src/journal.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalReader {
    /// journalctl when it is installed, the files otherwise.
    #[default]
    Auto,
    /// `journalctl --output=export --follow`.
    Journalctl,
    /// The journal files, read by the agent (its container image has no journalctl).
    Files,
}

/// `[sources.journal]`: sshd, sudo, su, logind and account changes, and kernel messages, read
/// from the systemd journal (`agent/src/journal.rs`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalConfig {
    /// Whether it runs.
    pub enabled: bool,
    /// How the journal is read.
    pub reader: JournalReader,
    /// The journalctl binary.
    pub journalctl: String,
    /// A journal directory to read instead of the system journal; empty: the system journal.
    pub directory: String,
    /// The host's `/` as the agent sees it (the DaemonSet: `/host`); the system journal is
    /// read under it (journalctl's `--root`). Empty: this machine's `/`.
    pub host_root: String,
    /// On first start (no saved cursor): `end` reads from now on, `beginning` the whole
    /// journal.
    pub start_at: StartAt,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            reader: JournalReader::Auto,
            journalctl: "journalctl".into(),
            directory: String::new(),
            host_root: String::new(),
            start_at: StartAt::End,
        }
    }
}

impl Default for SourcesConfig {
    fn default() -> Self {
        let tail = |path: &str, priority: u8| TailConfig {
            enabled: false,
            path: path.into(),
            start_at: StartAt::End,
            priority: Some(priority),
        };
        Self {
            auth: tail("/var/log/auth.log", 8),
            dpkg: tail("/var/log/dpkg.log", 6),
            k8s_audit: tail("/var/lib/rancher/k3s/server/logs/audit.log", 7),
            files: FilesConfig::default(),
            journal: JournalConfig::default(),
            blind: crate::blind::BlindConfig::default(),
        }
    }
}

impl Config {
    /// Each source's shedding priority, as configured.
    pub fn priorities(&self) -> Priorities {
        let s = &self.sources;
        Priorities {
            synthetic: self.synthetic.priority,
            auth: s.auth.priority.unwrap_or(8),
            dpkg: s.dpkg.priority.unwrap_or(6),
            k8s_audit: s.k8s_audit.priority.unwrap_or(7),
            files: s.files.priority,
        }
    }
}

impl Default for Priorities {
    fn default() -> Self {
        Config::default().priorities()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            http: HttpConfig {
                listen: SocketAddr::from(([0, 0, 0, 0], 9100)),
                generate_event: true,
                generate_event_token: String::new(),
                legacy_listen: None,
                legacy_unauthenticated: false,
            },
            spool: SpoolConfig {
                dir: "/var/lib/auditflow/spool".into(),
                max_bytes: 64 << 20,
                fsync: true,
            },
            batch: BatchConfig { max_events: 512, max_age_ms: 1000 },
            transport: TransportConfig {
                kind: Transport::Mqtt,
                mqtt_url: "mqtt://auditflow-broker:1883".into(),
                mqtt_password: String::new(),
                mqtt_password_file: String::new(),
                mqtt_ca_file: String::new(),
                amqp_url: String::new(),
                amqp_queue: wire::queues::EVENTS.into(),
                amqp_heartbeat_queue: wire::queues::HEARTBEATS.into(),
            },
            synthetic: SyntheticConfig {
                enabled: false,
                rate_per_sec: 1.0,
                seed: 42,
                limit: 0,
                mix: Mix::Legacy,
                priority: 2,
            },
            sources: SourcesConfig::default(),
            filter: Vec::new(),
            scenario: Vec::new(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Config::default().http
    }
}
impl Default for SpoolConfig {
    fn default() -> Self {
        Config::default().spool
    }
}
impl Default for BatchConfig {
    fn default() -> Self {
        Config::default().batch
    }
}
impl Default for TransportConfig {
    fn default() -> Self {
        Config::default().transport
    }
}
impl Default for SyntheticConfig {
    fn default() -> Self {
        Config::default().synthetic
    }
}

impl Validate for Config {
    /// `NODE_NAME` (when `node_id` is empty), `AMQP_URL`, `AUDITFLOW_MQTT_URL`,
    /// `AUDITFLOW_MQTT_PASSWORD`, `AUDITFLOW_MQTT_PASSWORD_FILE`, `AUDITFLOW_MQTT_CA_FILE`,
    /// `AUDITFLOW_GENERATE_EVENT_TOKEN`.
    fn apply_env(&mut self, get: runtime::config::Env<'_>) {
        if let Some(v) = get("NODE_NAME").filter(|_| self.node_id.is_empty()) {
            self.node_id = v;
        }
        if let Some(v) = get("AMQP_URL") {
            self.transport.amqp_url = v;
        }
        if let Some(v) = get("AUDITFLOW_MQTT_URL") {
            self.transport.mqtt_url = v;
        }
        if let Some(v) = get("AUDITFLOW_MQTT_PASSWORD") {
            self.transport.mqtt_password = v;
        }
        if let Some(v) = get("AUDITFLOW_MQTT_PASSWORD_FILE") {
            self.transport.mqtt_password_file = v;
        }
        if let Some(v) = get("AUDITFLOW_MQTT_CA_FILE") {
            self.transport.mqtt_ca_file = v;
        }
        if let Some(v) = get("AUDITFLOW_GENERATE_EVENT_TOKEN") {
            self.http.generate_event_token = v;
        }
    }

    fn validate(&self) -> Vec<String> {
        let mut errors = self.sources.blind.problems();
        let token = &self.http.generate_event_token;
        if !token.is_empty() && token.len() < 16 {
            errors.push(
                "http.generate_event_token: shorter than 16 characters (a short token is a guessable one)"
                    .into(),
            );
        }
        if self.spool.dir.is_empty() {
            errors.push("spool.dir: must not be empty".into());
        }
        if self.spool.max_bytes < 1 << 20 {
            errors.push("spool.max_bytes: must be at least 1048576 (1 MiB)".into());
        }
        if !(1..=4096).contains(&self.batch.max_events) {
            errors.push("batch.max_events: must be between 1 and 4096".into());
        }
        if !(1..=60_000).contains(&self.batch.max_age_ms) {
            errors.push("batch.max_age_ms: must be between 1 and 60000".into());
        }
        match self.transport.kind {
            Transport::Mqtt
                if !self.transport.mqtt_url.starts_with("mqtt://")
                    && !self.transport.mqtt_url.starts_with("mqtts://") =>
            {
                errors.push("transport.mqtt_url: must start with mqtt:// or mqtts://".into());
            }
            Transport::Amqp
                if !self.transport.amqp_url.starts_with("amqp://")
                    && !self.transport.amqp_url.starts_with("amqps://") =>
            {
                errors.push(
                    "transport.amqp_url: must start with amqp:// or amqps:// (or set AMQP_URL)"
                        .into(),
                );
            }
            Transport::Mqtt => {
                let t = &self.transport;
                if !t.mqtt_password.is_empty() && !t.mqtt_password_file.is_empty() {
                    errors.push(
                        "transport.mqtt_password, transport.mqtt_password_file: set one, not both"
                            .into(),
                    );
                } else if !t.mqtt_password_file.is_empty()
                    && let Err(e) =
                        crate::mqtt::Password::File(t.mqtt_password_file.clone().into()).current()
                {
                    errors.push(format!("transport.mqtt_password_file: {e}"));
                }
            }
            Transport::Amqp => {}
        }
        for (i, rule) in self.filter.iter().enumerate() {
            errors.extend(rule.validate(&format!("filter[{i}]")));
        }
        for (name, t) in [
            ("auth", &self.sources.auth),
            ("dpkg", &self.sources.dpkg),
            ("k8s_audit", &self.sources.k8s_audit),
        ] {
            if t.enabled && !t.path.starts_with('/') {
                errors.push(format!("sources.{name}.path: must be an absolute path"));
            }
            if t.priority.is_some_and(|p| p > 9) {
                errors.push(format!("sources.{name}.priority: must be between 0 and 9"));
            }
        }
        let files = &self.sources.files;
        if files.priority > 9 {
            errors.push("sources.files.priority: must be between 0 and 9".into());
        }
        if self.synthetic.priority > 9 {
            errors.push("synthetic.priority: must be between 0 and 9".into());
        }
        if files.enabled && files.paths.is_empty() {
            errors.push("sources.files.paths: name at least one file or directory".into());
        }
        for p in &files.paths {
            if !p.starts_with('/') || p.contains('\n') {
                errors.push(format!("sources.files.paths: `{p}` is not an absolute path"));
            }
        }
        if !files.host_root.is_empty() && !files.host_root.starts_with('/') {
            errors.push("sources.files.host_root: must be empty or an absolute path".into());
        }
        if !(1..=86_400).contains(&files.sweep_interval_s) {
            errors.push("sources.files.sweep_interval_s: must be between 1 and 86400".into());
        }
        for (i, step) in self.scenario.iter().enumerate() {
            errors.extend(step.validate(&format!("scenario[{i}]")));
        }
        if !(self.synthetic.rate_per_sec > 0.0 && self.synthetic.rate_per_sec <= 1_000_000.0) {
            errors.push("synthetic.rate_per_sec: must be above 0 and at most 1000000".into());
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_defaults_equal_the_built_in_ones() {
        let env = |k: &str| (k == "AUDITFLOW_MQTT_PASSWORD").then(|| "pw".to_owned());
        let parsed: Config =
            runtime::config::parse(DEFAULT_TOML, &env).expect("default.toml is valid");
        let mut expected = Config::default();
        expected.transport.mqtt_password = "pw".into();
        assert_eq!(parsed, expected);
    }

    #[test]
    fn filter_rules_are_read_and_checked() {
        let text = "[[filter]]\naction = \"sample\"\nevery = 5\nsource = \"auth\"\n\
                    [[filter]]\naction = \"collapse\"\nwindow_ms = 0\n";
        let errors = runtime::config::parse::<Config>(text, &|k: &str| {
            (k == "AUDITFLOW_MQTT_PASSWORD").then(|| "pw".to_owned())
        })
        .unwrap_err();
        assert_eq!(errors, vec!["filter[1].window_ms: must be at least 1"]);
    }

    #[test]
    fn bad_values_are_all_reported() {
        let text = "[http]\nlisten = \"x\"\n[batch]\nmax_events = 0\n[transport]\nkind = \"udp\"\n";
        let errors = runtime::config::parse::<Config>(text, &runtime::config::no_env).unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    #[test]
    fn environment_overrides_urls_and_node() {
        let env = |k: &str| match k {
            "NODE_NAME" => Some("pi-1".to_owned()),
            "AMQP_URL" => Some("amqp://h".to_owned()),
            _ => None,
        };
        let c: Config = runtime::config::parse("[transport]\nkind = \"amqp\"\n", &env).unwrap();
        assert_eq!(c.node_id, "pi-1");
        assert_eq!(c.transport.amqp_url, "amqp://h");
    }
}
