//! The legacy AuditFlow event JSON (design.md §8) and its mapping to and from [`Event`].
//!
//! The mapping is lossless in both directions: `from_legacy` extracts the typed kind it can
//! and keeps every key whose value the typed form does not reproduce exactly in
//! [`Event::attrs`] (top-level keys by name, `details` entries as `details.<name>`), and
//! `to_legacy` renders the typed form and lays the kept values back over it. A known event type
//! whose fields do not fit its typed kind (a missing user, an unknown result) becomes
//! [`EventKind::Generic`] rather than being guessed at.

use std::net::IpAddr;

use serde_json::{Map, Value as Json};
pub use uuid::Uuid;

use crate::model::{Digest, Event, EventKind, FileOp, Outcome, Severity, Source, Timestamp, Value};

/// `source_service` written for events that carry no origin of their own.
pub const AGENT_SERVICE_NAME: &str = "auditflow-agent";

const DETAILS: &str = "details";
const DETAILS_PREFIX: &str = "details.";

/// Why a legacy JSON event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegacyError {
    /// The bytes are not JSON.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The JSON is not an object.
    #[error("a legacy event must be a JSON object")]
    NotAnObject,
    /// `event_type` is missing or not a string.
    #[error("`event_type` is missing or not a string")]
    MissingEventType,
}

/// The namespace of UUIDs derived from `(node, epoch, seq)`.
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_3c2e_9b7d_4e50_8f21_5d0c_a7e3_41b9);

/// A stable UUID for an agent event that has no id of its own, derived from the key that
/// identifies it exactly once. The same event always gets the same id, so a redelivery can
/// never mint a second alert id.
pub fn event_uuid(node: &str, epoch: u64, seq: u64) -> Uuid {
    let mut name = Vec::with_capacity(node.len() + 17);
    name.extend_from_slice(node.as_bytes());
    name.push(0);
    name.extend_from_slice(&epoch.to_be_bytes());
    name.extend_from_slice(&seq.to_be_bytes());
    Uuid::new_v5(&EVENT_ID_NAMESPACE, &name)
}

/// Parses legacy event JSON. `received` stands in for a missing or unreadable `timestamp`
/// (the original text is kept in `attrs`).
pub fn from_legacy_json(bytes: &[u8], received: Timestamp) -> Result<Event, LegacyError> {
    let value: Json =
        serde_json::from_slice(bytes).map_err(|e| LegacyError::InvalidJson(e.to_string()))?;
    from_legacy(&value, received)
}

/// Converts a parsed legacy event.
pub fn from_legacy(value: &Json, received: Timestamp) -> Result<Event, LegacyError> {
    let top = value.as_object().ok_or(LegacyError::NotAnObject)?;
    let event_type =
        top.get("event_type").and_then(Json::as_str).ok_or(LegacyError::MissingEventType)?;
    let fields = Fields { top, details: top.get(DETAILS).and_then(Json::as_object) };

    let ts = fields.text("timestamp").and_then(Timestamp::parse_rfc3339).unwrap_or(received);
    let severity = fields.text("severity").and_then(Severity::parse).unwrap_or_default();
    let id = fields.text("event_id").and_then(|s| Uuid::try_parse(s).ok()).map(|u| *u.as_bytes());
    let mut event = Event {
        ts,
        source: Source::Legacy,
        severity,
        kind: generic(event_type, fields.details),
        id,
        host: fields.text("server_hostname").map(str::to_owned),
        origin: fields.text("source_service").map(str::to_owned),
        attrs: Vec::new(),
    };

    // Use the typed kind only when its rendering introduces no key the producer did not send;
    // otherwise the typed form would be a guess.
    if let Some(kind) = typed_kind(event_type, &fields) {
        let candidate = render_kind(&kind);
        if candidate.introduces_nothing(top, fields.details) {
            event.kind = kind;
        }
    }

    // Keep whatever the rendering does not reproduce.
    let rendered = render(&event, "", Uuid::nil());
    let rendered = rendered.as_object().expect("render returns an object");
    let rendered_details = rendered.get(DETAILS).and_then(Json::as_object);
    let mut attrs = Vec::new();
    for (key, original) in top {
        if let (DETAILS, Some(details)) = (key.as_str(), fields.details) {
            for (dkey, dvalue) in details {
                if rendered_details.and_then(|d| d.get(dkey)) != Some(dvalue) {
                    attrs.push((format!("{DETAILS_PREFIX}{dkey}"), Value::from_json(dvalue)));
                }
            }
            continue;
        }
        if rendered.get(key) != Some(original) {
            attrs.push((key.clone(), Value::from_json(original)));
        }
    }
    event.attrs = attrs;
    Ok(event)
}

/// Renders an event as legacy JSON. `node` names the host for events without their own
/// `host`; `fallback_id` is the `event_id` for events without their own id (use
/// [`event_uuid`]).
pub fn to_legacy(event: &Event, node: &str, fallback_id: Uuid) -> Json {
    let mut out = render(event, node, fallback_id);
    let obj = out.as_object_mut().expect("render returns an object");
    let mut details_attrs = Vec::new();
    for (key, value) in &event.attrs {
        match key.strip_prefix(DETAILS_PREFIX) {
            Some(dkey) => details_attrs.push((dkey, value)),
            None => {
                obj.insert(key.clone(), value.to_json());
            }
        }
    }
    if !details_attrs.is_empty() {
        let details = obj.entry(DETAILS).or_insert_with(|| Json::Object(Map::new()));
        if let Some(details) = details.as_object_mut() {
            for (dkey, value) in details_attrs {
                details.insert(dkey.to_owned(), value.to_json());
            }
        }
    }
    out
}

/// The legacy `event_type` an event is rendered with.
pub fn legacy_event_type(kind: &EventKind) -> &str {
    match kind {
        EventKind::Login { .. } => "user_login",
        EventKind::Privilege { .. } => "sudo_command",
        EventKind::FileChange { .. } => "file_modified",
        EventKind::Package { .. } => "package_change",
        EventKind::Service { .. } => "service_status_change",
        EventKind::Account { .. } => "user_account_management",
        EventKind::K8sAudit { .. } => "k8s_audit",
        EventKind::Git { .. } => "git_event",
        EventKind::Generic { event_type, .. } => event_type,
    }
}

/// The typed rendering without attrs.
fn render(event: &Event, node: &str, fallback_id: Uuid) -> Json {
    let mut top = Map::new();
    let id = event.id.map_or(fallback_id, Uuid::from_bytes);
    top.insert("event_id".into(), id.hyphenated().to_string().into());
    top.insert("timestamp".into(), event.ts.to_rfc3339().into());
    let origin = event.origin.as_deref().unwrap_or(AGENT_SERVICE_NAME);
    top.insert("source_service".into(), origin.into());
    top.insert("server_hostname".into(), event.host.as_deref().unwrap_or(node).into());
    top.insert("event_type".into(), legacy_event_type(&event.kind).into());
    top.insert("severity".into(), event.severity.as_legacy().into());
    let kind = render_kind(&event.kind);
    if let Some(user) = kind.user_id {
        top.insert("user_id".into(), user.into());
    }
    if let Some(result) = kind.action_result {
        top.insert("action_result".into(), result.into());
    }
    top.insert(DETAILS.into(), Json::Object(kind.details));
    Json::Object(top)
}

/// The kind-specific part of a rendering.
struct KindJson {
    user_id: Option<String>,
    action_result: Option<String>,
    details: Map<String, Json>,
}

impl KindJson {
    fn new(user_id: Option<&str>, action_result: Option<String>) -> Self {
        Self { user_id: user_id.map(str::to_owned), action_result, details: Map::new() }
    }

    fn put(&mut self, key: &str, value: impl Into<Json>) {
        self.details.insert(key.to_owned(), value.into());
    }

    fn put_opt<T: Into<Json>>(&mut self, key: &str, value: Option<T>) {
        if let Some(v) = value {
            self.put(key, v);
        }
    }

    /// True when every key this rendering would write was present in the original (at top
    /// level or under `details`).
    fn introduces_nothing(
        &self,
        top: &Map<String, Json>,
        details: Option<&Map<String, Json>>,
    ) -> bool {
        let sent = |k: &str| top.contains_key(k) || details.is_some_and(|d| d.contains_key(k));
        // `client_ip` is the address under another name: rendering it as `ip_address` is no
        // guess (the producer's own key is kept beside it).
        let has = |k: &str| sent(k) || (k == "ip_address" && sent("client_ip"));
        (self.user_id.is_none() || top.contains_key("user_id"))
            && (self.action_result.is_none() || top.contains_key("action_result"))
            && self.details.keys().all(|k| has(k))
    }
}

fn render_kind(kind: &EventKind) -> KindJson {
    match kind {
        EventKind::Login { user, src_ip, method, outcome, reason } => {
            let mut k = KindJson::new(Some(user), Some(outcome.as_legacy().into()));
            k.put_opt("ip_address", src_ip.map(|ip| ip.to_string()));
            k.put_opt("protocol", method.clone());
            k.put_opt("reason", reason.clone());
            k
        }
        EventKind::Privilege { user, target_user, command, tty, cwd, outcome } => {
            let mut k = KindJson::new(Some(user), Some(outcome.as_legacy().into()));
            k.put_opt("command", command.clone());
            k.put_opt("tty", tty.clone());
            k.put_opt("cwd", cwd.clone());
            // The legacy sudo events have no target user: root is implied.
            if target_user != "root" {
                k.put("run_as", target_user.clone());
            }
            k
        }
        EventKind::FileChange { path, op, old_hash, new_hash, size_delta } => {
            let mut k = KindJson::new(None, Some(op.as_legacy().into()));
            k.put("resource", path.clone());
            k.put_opt("checksum_before", old_hash.map(|d| d.to_hex()));
            k.put_opt("checksum_after", new_hash.map(|d| d.to_hex()));
            k.put_opt("size_delta", *size_delta);
            k
        }
        EventKind::Package { name, version, action } => {
            let mut k = KindJson::new(None, Some(action.to_ascii_uppercase()));
            k.put("package", name.clone());
            k.put("version", version.clone());
            k
        }
        EventKind::Service { unit, from, to } => {
            let mut k = KindJson::new(None, Some(to.to_ascii_uppercase()));
            k.put("service_name", unit.clone());
            k.put_opt("previous_state", from.clone());
            k
        }
        EventKind::Account { name, action, group } => {
            let mut k = KindJson::new(Some(name), Some(action.to_ascii_uppercase()));
            k.put_opt("group", group.clone());
            k
        }
        EventKind::K8sAudit {
            verb,
            resource,
            subresource,
            namespace,
            name,
            user,
            groups,
            source_ips,
            code,
        } => {
            let result = if *code < 400 { Outcome::Success } else { Outcome::Failure };
            let mut k = KindJson::new(Some(user), Some(result.as_legacy().into()));
            k.put("verb", verb.clone());
            k.put("resource", resource.clone());
            k.put_opt("subresource", subresource.clone());
            k.put_opt("namespace", namespace.clone());
            k.put_opt("name", name.clone());
            k.put("groups", groups.clone());
            k.put("source_ips", source_ips.clone());
            k.put("code", *code);
            k
        }
        EventKind::Git {
            provider,
            event,
            repo,
            actor,
            git_ref,
            forced,
            default_branch,
            action,
        } => {
            let mut k = KindJson::new(Some(actor), None);
            k.put("provider", provider.clone());
            k.put("event", event.clone());
            k.put("repository", repo.clone());
            k.put_opt("ref", git_ref.clone());
            k.put("forced", *forced);
            k.put_opt("default_branch", default_branch.clone());
            k.put_opt("action", action.clone());
            k
        }
        EventKind::Generic { fields, .. } => {
            let mut k = KindJson::new(None, None);
            for (key, value) in fields {
                k.put(key, value.to_json());
            }
            k
        }
    }
}

fn generic(event_type: &str, details: Option<&Map<String, Json>>) -> EventKind {
    let fields = details
        .map(|d| d.iter().map(|(k, v)| (k.clone(), Value::from_json(v))).collect())
        .unwrap_or_default();
    EventKind::Generic { event_type: event_type.to_owned(), fields }
}

/// Read access to a legacy event's fields: `details` first, then the top level (the legacy
/// producers put the client address and the file path in either place).
struct Fields<'a> {
    top: &'a Map<String, Json>,
    details: Option<&'a Map<String, Json>>,
}

impl<'a> Fields<'a> {
    fn get(&self, key: &str) -> Option<&'a Json> {
        self.details.and_then(|d| d.get(key)).or_else(|| self.top.get(key))
    }

    fn text(&self, key: &str) -> Option<&'a str> {
        self.top.get(key).and_then(Json::as_str)
    }

    fn detail(&self, key: &str) -> Option<String> {
        self.get(key).and_then(Json::as_str).map(str::to_owned)
    }

    fn strings(&self, key: &str) -> Option<Vec<String>> {
        self.get(key)?.as_array()?.iter().map(|v| v.as_str().map(str::to_owned)).collect()
    }

    fn outcome(&self) -> Option<Outcome> {
        match self.text("action_result")? {
            "SUCCESS" => Some(Outcome::Success),
            "FAILURE" => Some(Outcome::Failure),
            _ => None,
        }
    }

    /// A lower-case state or action taken from `action_result`, when it is upper case (so it
    /// renders back to the same text).
    fn lower_result(&self) -> Option<String> {
        let result = self.text("action_result")?;
        (result == result.to_ascii_uppercase()).then(|| result.to_ascii_lowercase())
    }
}

fn typed_kind(event_type: &str, f: &Fields<'_>) -> Option<EventKind> {
    Some(match event_type {
        "user_login" => EventKind::Login {
            user: f.text("user_id")?.to_owned(),
            // The address under either name, in `details` or at the top (our contract takes
            // `client_ip` at the top); the legacy producers' placeholder "N/A" is no address.
            src_ip: match f.get("ip_address").or_else(|| f.get("client_ip")) {
                None => None,
                Some(v) if matches!(v.as_str(), Some("N/A" | "")) || v.is_null() => None,
                Some(v) => Some(v.as_str()?.parse::<IpAddr>().ok()?),
            },
            method: f.detail("protocol"),
            outcome: f.outcome()?,
            reason: f.detail("reason"),
        },
        "sudo_command" => EventKind::Privilege {
            user: f.text("user_id")?.to_owned(),
            target_user: f.detail("run_as").unwrap_or_else(|| "root".to_owned()),
            command: f.detail("command"),
            tty: f.detail("tty"),
            cwd: f.detail("cwd"),
            outcome: f.outcome()?,
        },
        "file_modified" => EventKind::FileChange {
            path: f.detail("resource").or_else(|| f.detail("file_path"))?,
            op: FileOp::parse_legacy(f.text("action_result")?)?,
            old_hash: digest(f, "checksum_before")?,
            new_hash: digest(f, "checksum_after")?,
            size_delta: match f.get("size_delta") {
                None => None,
                Some(v) => Some(v.as_i64()?),
            },
        },
        "package_change" => EventKind::Package {
            name: f.detail("package")?,
            version: f.detail("version")?,
            action: f.lower_result()?,
        },
        "service_status_change" => EventKind::Service {
            unit: f.detail("service_name")?,
            from: f.detail("previous_state"),
            to: f.lower_result()?,
        },
        "user_account_management" => EventKind::Account {
            name: f.text("user_id")?.to_owned(),
            action: f.lower_result()?,
            group: f.detail("group"),
        },
        "k8s_audit" => EventKind::K8sAudit {
            verb: f.detail("verb")?,
            resource: f.detail("resource")?,
            subresource: f.detail("subresource"),
            namespace: f.detail("namespace"),
            name: f.detail("name"),
            user: f.text("user_id")?.to_owned(),
            groups: f.strings("groups")?,
            source_ips: f.strings("source_ips")?,
            code: u16::try_from(f.get("code")?.as_u64()?).ok()?,
        },
        "git_event" => EventKind::Git {
            provider: f.detail("provider")?,
            event: f.detail("event")?,
            repo: f.detail("repository")?,
            actor: f.text("user_id")?.to_owned(),
            git_ref: f.detail("ref"),
            forced: f.get("forced")?.as_bool()?,
            default_branch: f.detail("default_branch"),
            action: f.detail("action"),
        },
        _ => return None,
    })
}

/// `Some(None)` when the key is absent, `None` when it is present but not a digest.
fn digest(f: &Fields<'_>, key: &str) -> Option<Option<Digest>> {
    match f.get(key) {
        None => Some(None),
        Some(v) => Some(Some(Digest::from_hex(v.as_str()?)?)),
    }
}
