//! Inline rule tests and the JSON/TOML event form they (and `POST /api/v1/rules/test`) use.
//!
//! ```toml
//! [[rule.test]]
//! name = "three failures within a minute fire once"
//! events = [
//!   { kind = "login", outcome = "failure", user = "alice", host = "pi-1", at = 0 },
//!   { kind = "login", outcome = "failure", user = "alice", host = "pi-1", at = 30 },
//!   { kind = "login", outcome = "failure", user = "alice", host = "pi-1", at = 60 },
//! ]
//! expect = 1
//! ```
//!
//! An event is a table of the field names rules use (`kind` required), plus `at` (seconds
//! after the test's start, default one second after the previous event) or `ts` (RFC 3339),
//! `node` (default `test-node`), and for generic events `event_type` and `fields`.

use std::net::IpAddr;

use serde_json::{Map, Value as Json};
use toml::Value as Toml;
use wire::model::{
    Event, EventKind, FileOp, Outcome, Severity, Source, Timestamp, Value as WireValue,
};

use super::{Rule, RuleSet};

/// One inline test.
#[derive(Clone, Debug)]
pub struct Case {
    /// What it checks.
    pub name: String,
    /// `(node, event)` in order.
    pub events: Vec<(String, Event)>,
    /// How many firings the rule must produce.
    pub expect: u32,
}

/// 2026-01-01T00:00:00Z: the time `at = 0` means in a test.
const TEST_EPOCH_SECS: i64 = 1_767_225_600;

impl Case {
    pub(crate) fn parse(value: &Toml) -> Result<Self, String> {
        let t = value.as_table().ok_or("must be a table")?;
        for k in t.keys() {
            if !["name", "events", "expect"].contains(&k.as_str()) {
                return Err(format!("unknown key `{k}` (name, events, expect)"));
            }
        }
        let name = t.get("name").and_then(Toml::as_str).ok_or("`name` is required")?.to_owned();
        let expect = match t.get("expect") {
            Some(Toml::Integer(n)) if *n >= 0 => *n as u32,
            _ => return Err(format!("`{name}`: `expect` (the number of firings) is required")),
        };
        let list = t
            .get("events")
            .and_then(Toml::as_array)
            .ok_or_else(|| format!("`{name}`: `events` must be an array of tables"))?;
        let mut events = Vec::new();
        let mut prev = Timestamp::from_unix(TEST_EPOCH_SECS - 1, 0);
        for (i, e) in list.iter().enumerate() {
            let json = super::toml_to_json(e);
            let (node, event) = event_from_json(&json, Timestamp(prev.0 + 1_000_000_000))
                .map_err(|e| format!("`{name}`: events[{i}]: {e}"))?;
            prev = event.ts;
            events.push((node, event));
        }
        Ok(Self { name, events, expect })
    }
}

const COMMON_KEYS: &[&str] =
    &["kind", "at", "ts", "node", "host", "severity", "source", "origin", "attrs"];

/// Builds an event from its JSON form (see the module docs). `default_ts` applies when
/// neither `at` nor `ts` is given. Returns the node and the event.
pub fn event_from_json(value: &Json, default_ts: Timestamp) -> Result<(String, Event), String> {
    let o = value.as_object().ok_or("an event must be an object")?;
    let kind_name = o.get("kind").and_then(Json::as_str).ok_or("`kind` is required")?;
    let text = |k: &str| -> Result<Option<String>, String> {
        match o.get(k) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.clone())),
            Some(Json::Number(n)) => Ok(Some(n.to_string())),
            Some(Json::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(format!("`{k}` must be a string")),
        }
    };
    let need = |k: &str| -> Result<String, String> {
        text(k)?.ok_or_else(|| format!("`{k}` is required for a {kind_name} event"))
    };
    let outcome = || -> Result<Outcome, String> {
        match text("outcome")?.as_deref() {
            None | Some("success") => Ok(Outcome::Success),
            Some("failure") => Ok(Outcome::Failure),
            Some(x) => Err(format!("`outcome` must be success or failure, not `{x}`")),
        }
    };
    let list = |k: &str| -> Result<Vec<String>, String> {
        match o.get(k) {
            None => Ok(Vec::new()),
            Some(Json::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or(format!("`{k}` must be strings")))
                .collect(),
            Some(Json::String(s)) => Ok(vec![s.clone()]),
            Some(_) => Err(format!("`{k}` must be an array of strings")),
        }
    };
    let (keys, kind): (&[&str], EventKind) = match kind_name {
        "login" => (
            &["user", "src_ip", "method", "outcome", "reason"],
            EventKind::Login {
                user: need("user")?,
                src_ip: match text("src_ip")? {
                    None => None,
                    Some(ip) => Some(
                        ip.parse::<IpAddr>()
                            .map_err(|_| format!("`src_ip`: `{ip}` is not an address"))?,
                    ),
                },
                method: text("method")?,
                outcome: outcome()?,
                reason: text("reason")?,
            },
        ),
        "privilege" => (
            &["user", "target_user", "command", "tty", "cwd", "outcome"],
            EventKind::Privilege {
                user: need("user")?,
                target_user: text("target_user")?.unwrap_or_else(|| "root".into()),
                command: text("command")?,
                tty: text("tty")?,
                cwd: text("cwd")?,
                outcome: outcome()?,
            },
        ),
        "file_change" => (
            &["path", "op", "size_delta"],
            EventKind::FileChange {
                path: need("path")?,
                op: match text("op")?.as_deref() {
                    None | Some("modified") => FileOp::Modified,
                    Some("created") => FileOp::Created,
                    Some("deleted") => FileOp::Deleted,
                    Some("attrib") => FileOp::Attrib,
                    Some("renamed") => FileOp::Renamed,
                    Some(x) => return Err(format!("`op`: unknown file operation `{x}`")),
                },
                old_hash: None,
                new_hash: None,
                size_delta: o.get("size_delta").and_then(Json::as_i64),
            },
        ),
        "package" => (
            &["name", "version", "action"],
            EventKind::Package {
                name: need("name")?,
                version: text("version")?.unwrap_or_default(),
                action: text("action")?.unwrap_or_else(|| "install".into()),
            },
        ),
        "service" => (
            &["unit", "from", "to"],
            EventKind::Service { unit: need("unit")?, from: text("from")?, to: need("to")? },
        ),
        "account" => (
            &["name", "action", "group"],
            EventKind::Account {
                name: need("name")?,
                action: text("action")?.unwrap_or_else(|| "created".into()),
                group: text("group")?,
            },
        ),
        "k8s_audit" => (
            &[
                "verb",
                "resource",
                "subresource",
                "namespace",
                "name",
                "user",
                "groups",
                "src_ip",
                "code",
            ],
            EventKind::K8sAudit {
                verb: need("verb")?,
                resource: need("resource")?,
                subresource: text("subresource")?,
                namespace: text("namespace")?,
                name: text("name")?,
                user: text("user")?.unwrap_or_default(),
                groups: list("groups")?,
                source_ips: list("src_ip")?,
                code: o.get("code").and_then(Json::as_u64).map_or(200, |c| c.min(999) as u16),
            },
        ),
        "git" => (
            &["provider", "event", "repo", "user", "ref", "forced", "default_branch", "action"],
            EventKind::Git {
                provider: text("provider")?.unwrap_or_else(|| "github".into()),
                event: text("event")?.unwrap_or_else(|| "push".into()),
                repo: need("repo")?,
                actor: text("user")?.unwrap_or_default(),
                git_ref: text("ref")?,
                forced: o.get("forced").and_then(Json::as_bool).unwrap_or(false),
                default_branch: text("default_branch")?,
                action: text("action")?,
            },
        ),
        "generic" => (
            &["event_type", "fields"],
            EventKind::Generic {
                event_type: need("event_type")?,
                fields: match o.get("fields") {
                    None => Vec::new(),
                    Some(Json::Object(m)) => fields(m),
                    Some(_) => return Err("`fields` must be a table".into()),
                },
            },
        ),
        other => {
            return Err(format!("unknown kind `{other}` (one of {})", super::KINDS.join(", ")));
        }
    };
    for k in o.keys() {
        if !COMMON_KEYS.contains(&k.as_str()) && !keys.contains(&k.as_str()) {
            return Err(format!("unknown key `{k}` for a {kind_name} event"));
        }
    }
    let ts = match (o.get("at"), text("ts")?) {
        (Some(at), _) => {
            let secs = at.as_f64().ok_or("`at` must be a number of seconds")?;
            if !(0.0..1e9).contains(&secs) {
                return Err("`at` must be between 0 and 1e9 seconds".into());
            }
            Timestamp(TEST_EPOCH_SECS * 1_000_000_000 + (secs * 1e9) as i64)
        }
        (None, Some(ts)) => {
            Timestamp::parse_rfc3339(&ts).ok_or_else(|| format!("`ts`: `{ts}` is not RFC 3339"))?
        }
        (None, None) => default_ts,
    };
    let severity = match text("severity")? {
        None => Severity::Info,
        Some(s) => Severity::parse(&s).ok_or_else(|| format!("`severity`: unknown `{s}`"))?,
    };
    let source = match text("source")? {
        None => Source::Api,
        Some(s) => Source::parse(&s).ok_or_else(|| format!("`source`: unknown `{s}`"))?,
    };
    let mut event = Event::new(ts, source, severity, kind);
    event.host = text("host")?;
    event.origin = text("origin")?;
    if let Some(attrs) = o.get("attrs") {
        event.attrs = fields(attrs.as_object().ok_or("`attrs` must be a table")?);
    }
    let node = text("node")?.unwrap_or_else(|| "test-node".into());
    Ok((node, event))
}

fn fields(m: &Map<String, Json>) -> Vec<(String, WireValue)> {
    m.iter().map(|(k, v)| (k.clone(), WireValue::from_json(v))).collect()
}

impl RuleSet {
    /// A set of one rule (rule tests run each rule alone).
    pub fn single(rule: Rule) -> Self {
        let mut by_kind = std::collections::BTreeMap::new();
        for kind in super::KINDS {
            let hit = rule.kinds.as_ref().is_none_or(|ks| ks.iter().any(|k| k == kind));
            by_kind.insert(kind, if hit { vec![0] } else { Vec::new() });
        }
        let shared = vec![super::SharedTexts::of(&rule)];
        Self { rules: vec![rule], by_kind, version: "single".into(), shared }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_errors_are_clear() {
        let ts = Timestamp(0);
        let e = |j: Json| event_from_json(&j, ts).unwrap_err();
        assert!(e(serde_json::json!({"user": "x"})).contains("`kind` is required"));
        assert!(e(serde_json::json!({"kind": "login"})).contains("`user` is required"));
        assert!(
            e(serde_json::json!({"kind": "login", "user": "a", "colour": 1}))
                .contains("unknown key `colour`")
        );
        assert!(
            e(serde_json::json!({"kind": "login", "user": "a", "src_ip": "x"}))
                .contains("not an address")
        );
        let (node, ev) = event_from_json(
            &serde_json::json!({"kind": "login", "user": "a", "outcome": "failure", "node": "n1", "at": 2}),
            ts,
        )
        .unwrap();
        assert_eq!(node, "n1");
        assert_eq!(ev.ts.as_nanos(), (TEST_EPOCH_SECS + 2) * 1_000_000_000);
    }
}
