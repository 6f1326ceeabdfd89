//! Deterministic synthetic events: the seven templates and vocabularies of the legacy
//! AuditFlow event generator (design.md §8), for demo traffic, scripted scenarios, tests and the
//! size benchmark. Pure computation with a fixed-seed generator: the same seed gives the same
//! events on every machine.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::{Value as Json, json};

use crate::model::{Digest, Event, EventKind, FileOp, Outcome, Severity, Source, Timestamp};

/// The seven legacy event templates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Template {
    /// `user_login` / `FAILURE`.
    LoginFailure,
    /// `user_login` / `SUCCESS`.
    LoginSuccess,
    /// `sudo_command` / `SUCCESS`.
    SudoCommand,
    /// `file_modified` / `MODIFIED`.
    FileModified,
    /// `service_status_change` / `STARTED`.
    ServiceStarted,
    /// `service_status_change` / `STOPPED`.
    ServiceStopped,
    /// `user_account_management` / `CREATED`.
    AccountCreated,
}

impl Template {
    /// All seven, in a fixed order.
    pub const ALL: [Template; 7] = [
        Template::LoginFailure,
        Template::LoginSuccess,
        Template::SudoCommand,
        Template::FileModified,
        Template::ServiceStarted,
        Template::ServiceStopped,
        Template::AccountCreated,
    ];
}

/// The legacy generator's vocabularies.
pub mod vocab {
    /// Account names.
    pub const USERS: [&str; 8] =
        ["alice", "bob", "charlie", "dave", "eve", "mallory", "svc_backup", "admin"];
    /// Hosts the legacy generator reports from.
    pub const HOSTS: [&str; 5] = ["web-01", "web-02", "db-01", "k3s-node-1", "k3s-node-2"];
    /// Client addresses (documentation ranges and private ranges only).
    pub const IPS: [&str; 6] =
        ["192.168.1.10", "192.168.1.22", "10.0.0.5", "10.0.0.17", "203.0.113.5", "198.51.100.23"];
    /// Why a login failed.
    pub const FAILURE_REASONS: [&str; 3] = ["Invalid password", "Unknown user", "Account locked"];
    /// Commands run with sudo.
    pub const COMMANDS: [&str; 5] = [
        "/usr/bin/apt-get update",
        "/usr/bin/systemctl restart nginx",
        "/usr/bin/cat /var/log/auth.log",
        "/usr/bin/kubectl get pods -A",
        "/usr/sbin/reboot",
    ];
    /// Files whose change is reported; the first four are the legacy sensitive files.
    pub const FILES: [&str; 7] = [
        "/etc/sudoers",
        "/root/.ssh/authorized_keys",
        "/etc/shadow",
        "/etc/passwd",
        "/etc/nginx/nginx.conf",
        "/var/www/html/index.html",
        "/etc/hosts",
    ];
    /// Services that start and stop.
    pub const SERVICES: [&str; 5] = ["nginx", "sshd", "postgresql", "k3s-agent", "cron"];
    /// Groups new accounts are put in.
    pub const GROUPS: [&str; 4] = ["users", "sudo", "docker", "developers"];
    /// The legacy generator's `source_service`.
    pub const SOURCE_SERVICE: &str = "audit-event-generator";
}

/// A small, fast, seedable generator (SplitMix64): good enough for synthetic traffic and free
/// of dependencies.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator with a fixed seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform index below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        // The modulo bias is irrelevant for synthetic traffic.
        (self.next_u64() % (n as u64)) as usize
    }

    /// 32 random bytes as a content digest (synthetic file hashes).
    pub fn digest(&mut self) -> Digest {
        let mut out = [0u8; 32];
        for chunk in out.chunks_exact_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        Digest(out)
    }

    /// A uniformly chosen element.
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Generates events from the seven templates.
#[derive(Clone, Debug)]
pub struct Synth {
    rng: Rng,
}

impl Synth {
    /// A generator with a fixed seed.
    pub fn new(seed: u64) -> Self {
        Self { rng: Rng::new(seed) }
    }

    /// One event of a template chosen uniformly, as the agent's synthetic source emits it (no
    /// id, no host: the envelope names the node).
    pub fn next_event(&mut self, ts: Timestamp) -> Event {
        let template = Template::ALL[self.rng.below(Template::ALL.len())];
        self.event(template, ts)
    }

    /// One event of the given template.
    pub fn event(&mut self, template: Template, ts: Timestamp) -> Event {
        let rng = &mut self.rng;
        let (severity, kind) = match template {
            Template::LoginFailure => (
                Severity::Warning,
                EventKind::Login {
                    user: rng.pick(&vocab::USERS).to_owned(),
                    src_ip: Some(ip(rng)),
                    method: Some("SSH".to_owned()),
                    outcome: Outcome::Failure,
                    reason: Some(rng.pick(&vocab::FAILURE_REASONS).to_owned()),
                },
            ),
            Template::LoginSuccess => (
                Severity::Info,
                EventKind::Login {
                    user: rng.pick(&vocab::USERS).to_owned(),
                    src_ip: Some(ip(rng)),
                    method: Some("SSH".to_owned()),
                    outcome: Outcome::Success,
                    reason: None,
                },
            ),
            Template::SudoCommand => {
                let user = rng.pick(&vocab::USERS);
                (
                    Severity::Info,
                    EventKind::Privilege {
                        user: user.to_owned(),
                        target_user: "root".to_owned(),
                        command: Some(rng.pick(&vocab::COMMANDS).to_owned()),
                        tty: Some(format!("pts/{}", rng.below(4))),
                        cwd: Some(format!("/home/{user}")),
                        outcome: Outcome::Success,
                    },
                )
            }
            Template::FileModified => {
                let i = rng.below(vocab::FILES.len());
                let severity = if i < 4 { Severity::Critical } else { Severity::Warning };
                (
                    severity,
                    EventKind::FileChange {
                        path: vocab::FILES[i].to_owned(),
                        op: FileOp::Modified,
                        old_hash: Some(rng.digest()),
                        new_hash: Some(rng.digest()),
                        size_delta: None,
                    },
                )
            }
            Template::ServiceStarted | Template::ServiceStopped => {
                let started = template == Template::ServiceStarted;
                (
                    if started { Severity::Info } else { Severity::Warning },
                    EventKind::Service {
                        unit: rng.pick(&vocab::SERVICES).to_owned(),
                        from: None,
                        to: if started { "started" } else { "stopped" }.to_owned(),
                    },
                )
            }
            Template::AccountCreated => (
                Severity::Info,
                EventKind::Account {
                    name: rng.pick(&vocab::USERS).to_owned(),
                    action: "created".to_owned(),
                    group: Some(rng.pick(&vocab::GROUPS).to_owned()),
                },
            ),
        };
        Event::new(ts, Source::Synthetic, severity, kind)
    }

    /// One event of the given template exactly as the legacy Python generator publishes it on
    /// `audit_events` (random `event_id`, a host from the vocabulary).
    pub fn legacy_json(&mut self, template: Template, ts: Timestamp) -> Json {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        let event_id = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let host = self.rng.pick(&vocab::HOSTS);
        let event = self.event(template, ts);
        let mut out = crate::legacy::to_legacy(&event, host, event_id);
        out["source_service"] = json!(vocab::SOURCE_SERVICE);
        out
    }
}

fn ip(rng: &mut Rng) -> IpAddr {
    rng.pick(&vocab::IPS).parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The legacy Python generator's own vocabularies and templates (its `EVENT_TEMPLATES`,
/// `SIMULATED_*` lists), for [`LegacyGenerator`]: what its users' dashboards, scripts and
/// tests know. Described field by field in the legacy specification that design.md §8 cites.
pub mod legacy_vocab {
    /// `server_hostname` values.
    pub const HOSTS: [&str; 4] = ["prod-web-01", "prod-db-02", "dev-api-03", "test-worker-04"];
    /// `user_id` values (and the home directories of `sudo_command`).
    pub const USERS: [&str; 5] =
        ["devops_admin", "app_user", "guest_user", "monitoring_agent", "attacker_bob"];
    /// `details.resource` of `file_modified`.
    pub const RESOURCES: [&str; 5] = [
        "/etc/passwd",
        "/var/log/nginx/access.log",
        "/opt/app/config.json",
        "/root/.ssh/authorized_keys",
        "/var/www/html/index.php",
    ];
    /// `details.command` of `sudo_command`.
    pub const COMMANDS: [&str; 4] = [
        "/usr/bin/sudo apt update",
        "/usr/bin/useradd newuser",
        "/bin/rm -rf /",
        "/bin/systemctl restart nginx",
    ];
    /// `details.resource` of `service_status_change`.
    pub const SERVICES: [&str; 3] = ["nginx.service", "mysql.service", "apache2.service"];
    /// `details.group` of `user_account_management`.
    pub const GROUPS: [&str; 3] = ["users", "devops", "sudo"];
    /// `source_service` of generated events.
    pub const SOURCE_SERVICE: &str = "audit-event-generator";
    /// `source_service` of events submitted to `POST /generate_event`.
    pub const API_SOURCE_SERVICE: &str = "audit-event-generator-api";
}

/// The legacy generator's events exactly: its seven templates chosen uniformly, its hosts,
/// users, details keys and values, severities and results, a random v4 `event_id` and its
/// timestamp format (`2025-07-20T11:30:00.123456Z`). [`Synth`] makes AuditFlow's own demo
/// traffic from the same seven templates with AuditFlow's vocabulary; this one is for sites
/// whose dashboards, scripts and tests expect the legacy generator's.
#[derive(Clone, Debug)]
pub struct LegacyGenerator {
    rng: Rng,
}

impl LegacyGenerator {
    /// A generator with a fixed seed.
    pub fn new(seed: u64) -> Self {
        Self { rng: Rng::new(seed) }
    }

    /// A random version-4 UUID, as `str(uuid.uuid4())`.
    pub fn uuid4(&mut self) -> uuid::Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// A host of the legacy vocabulary.
    pub fn host(&mut self) -> &'static str {
        self.rng.pick(&legacy_vocab::HOSTS)
    }

    /// A user of the legacy vocabulary.
    pub fn user(&mut self) -> &'static str {
        self.rng.pick(&legacy_vocab::USERS)
    }

    /// The next event, at `ts`.
    pub fn next_json(&mut self, ts: Timestamp) -> Json {
        let template = Template::ALL[self.rng.below(Template::ALL.len())];
        self.json(template, ts)
    }

    /// An event of `template` at `ts`, the legacy generator's keys in its order.
    pub fn json(&mut self, template: Template, ts: Timestamp) -> Json {
        let event_id = self.uuid4();
        let host = self.host();
        let user = self.user();
        let ip = |rng: &mut Rng| format!("192.168.1.{}", 100 + rng.below(101));
        let protocol = |rng: &mut Rng| rng.pick(&["ssh", "console"]);
        let short = |g: &mut Self, n: usize| g.uuid4().to_string()[..n].to_owned();
        let (event_type, severity, result, details) = match template {
            Template::LoginFailure => (
                "user_login",
                "WARNING",
                "FAILURE",
                json!({
                    "reason": "Incorrect password",
                    "ip_address": ip(&mut self.rng),
                    "protocol": protocol(&mut self.rng),
                }),
            ),
            Template::LoginSuccess => (
                "user_login",
                "INFO",
                "SUCCESS",
                json!({"ip_address": ip(&mut self.rng), "protocol": protocol(&mut self.rng)}),
            ),
            Template::SudoCommand => (
                "sudo_command",
                "INFO",
                "SUCCESS",
                json!({
                    "command": self.rng.pick(&legacy_vocab::COMMANDS),
                    "tty": "/dev/pts/0",
                    "cwd": format!("/home/{}", self.rng.pick(&legacy_vocab::USERS)),
                }),
            ),
            Template::FileModified => (
                "file_modified",
                "CRITICAL",
                "MODIFIED",
                json!({
                    "resource": self.rng.pick(&legacy_vocab::RESOURCES),
                    "old_checksum": short(self, 8),
                    "new_checksum": short(self, 8),
                    "size_change_bytes": self.rng.below(2001) as i64 - 1000,
                }),
            ),
            Template::ServiceStarted => (
                "service_status_change",
                "INFO",
                "STARTED",
                json!({
                    "resource": self.rng.pick(&legacy_vocab::SERVICES),
                    "previous_state": self.rng.pick(&["STOPPED", "FAILED"]),
                    "message": "Service successfully started.",
                }),
            ),
            Template::ServiceStopped => (
                "service_status_change",
                "WARNING",
                "STOPPED",
                json!({
                    "resource": self.rng.pick(&legacy_vocab::SERVICES),
                    "previous_state": "RUNNING",
                    "message": "Service unexpectedly stopped.",
                }),
            ),
            // Two independent suffixes, as the legacy generator drew them.
            Template::AccountCreated => (
                "user_account_management",
                "INFO",
                "CREATED",
                json!({
                    "resource": format!("new_user_{}", short(self, 6)),
                    "group": self.rng.pick(&legacy_vocab::GROUPS),
                    "home_directory": format!("/home/new_user_{}", short(self, 6)),
                }),
            ),
        };
        json!({
            "event_id": event_id.to_string(),
            "timestamp": python_utc_iso(ts),
            "source_service": legacy_vocab::SOURCE_SERVICE,
            "server_hostname": host,
            "event_type": event_type,
            "severity": severity,
            "user_id": user,
            "action_result": result,
            "details": details,
        })
    }
}

/// `datetime.utcnow().isoformat() + 'Z'`: microseconds, left out when they are zero.
pub fn python_utc_iso(ts: Timestamp) -> String {
    let text = ts.to_rfc3339();
    let micros = (ts.as_nanos().rem_euclid(1_000_000_000) / 1_000) as u32;
    if micros == 0 { format!("{}Z", &text[..19]) } else { format!("{}.{micros:06}Z", &text[..19]) }
}
