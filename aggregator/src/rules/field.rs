//! Event fields as rules name them. A rule's field names are resolved to a [`FieldId`] once,
//! when the rule is loaded, so that evaluating a condition is a `match` and a comparison, not a
//! string lookup.

use std::borrow::Cow;
use std::net::IpAddr;

use wire::model::{Event, EventKind, Value};

/// An event as the rules see it: the event plus the node that sent it.
#[derive(Clone, Copy, Debug)]
pub struct EventRef<'a> {
    /// The node whose agent sent the event (the envelope's `node_id`, or the legacy
    /// `server_hostname` for legacy events).
    pub node: &'a str,
    /// The event.
    pub event: &'a Event,
}

/// A field rules can test and group by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldId {
    /// `login`, `privilege`, `file_change`, `package`, `service`, `account`, `k8s_audit`, `git`,
    /// `generic`.
    Kind,
    /// The collector: `synthetic`, `auth`, `dpkg`, `file`, `k8s_audit`, `webhook`, `legacy`, …
    Source,
    /// `info`, `warning`, `critical`.
    Severity,
    /// The node that sent the event.
    Node,
    /// The host the event is about: its own `host`, else the node.
    Host,
    /// The producing service, when not the agent.
    Origin,
    /// The legacy `event_type` (`user_login`, `sudo_command`, `file_modified`, …).
    EventType,
    /// Login, privilege and Kubernetes user; the git actor.
    User,
    /// Login client address; Kubernetes source IPs.
    SrcIp,
    /// Login method.
    Method,
    /// `success` or `failure` (logins, privilege changes).
    Outcome,
    /// Login failure reason.
    Reason,
    /// Privilege target user.
    TargetUser,
    /// Privilege command.
    Command,
    /// Privilege terminal.
    Tty,
    /// Privilege working directory.
    Cwd,
    /// File path.
    Path,
    /// File operation: `created`, `modified`, `deleted`, `attrib`, `renamed`.
    Op,
    /// File size change.
    SizeDelta,
    /// Package, account or Kubernetes object name.
    Name,
    /// Package version.
    Version,
    /// Package, account or git action.
    Action,
    /// Service unit.
    Unit,
    /// Service previous state.
    From,
    /// Service new state.
    To,
    /// Account group.
    Group,
    /// Kubernetes verb.
    Verb,
    /// Kubernetes resource.
    Resource,
    /// Kubernetes subresource.
    Subresource,
    /// Kubernetes namespace.
    Namespace,
    /// Kubernetes user groups (a list).
    Groups,
    /// Kubernetes response code.
    Code,
    /// Git provider.
    Provider,
    /// Git provider event name.
    GitEvent,
    /// Git repository.
    Repo,
    /// Git ref.
    Ref,
    /// Whether a push was forced.
    Forced,
    /// Git default branch.
    DefaultBranch,
    /// The branch a git ref names (`refs/heads/main` → `main`).
    Branch,
    /// Whether a git ref is the repository's default branch (`main` or `master` when the
    /// payload names no default).
    OnDefaultBranch,
    /// A field of a generic event: `fields.<name>`.
    Generic(String),
    /// An extra attribute kept from the producer: `attrs.<name>` (legacy details are
    /// `attrs.details.<name>`).
    Attr(String),
}

/// Every plain field name, for error messages.
pub const NAMES: &[&str] = &[
    "kind",
    "source",
    "severity",
    "node",
    "host",
    "origin",
    "event_type",
    "user",
    "src_ip",
    "method",
    "outcome",
    "reason",
    "target_user",
    "command",
    "tty",
    "cwd",
    "path",
    "op",
    "size_delta",
    "name",
    "version",
    "action",
    "unit",
    "from",
    "to",
    "group",
    "verb",
    "resource",
    "subresource",
    "namespace",
    "groups",
    "code",
    "provider",
    "event",
    "repo",
    "ref",
    "forced",
    "default_branch",
    "branch",
    "on_default_branch",
];

impl FieldId {
    /// Resolves a field name; `None` for a name no event has.
    pub fn parse(name: &str) -> Option<Self> {
        if let Some(rest) = name.strip_prefix("fields.") {
            return (!rest.is_empty()).then(|| FieldId::Generic(rest.to_owned()));
        }
        if let Some(rest) = name.strip_prefix("attrs.") {
            return (!rest.is_empty()).then(|| FieldId::Attr(rest.to_owned()));
        }
        Some(match name {
            "kind" => FieldId::Kind,
            "source" => FieldId::Source,
            "severity" => FieldId::Severity,
            "node" => FieldId::Node,
            "host" => FieldId::Host,
            "origin" => FieldId::Origin,
            "event_type" => FieldId::EventType,
            "user" => FieldId::User,
            "src_ip" => FieldId::SrcIp,
            "method" => FieldId::Method,
            "outcome" => FieldId::Outcome,
            "reason" => FieldId::Reason,
            "target_user" => FieldId::TargetUser,
            "command" => FieldId::Command,
            "tty" => FieldId::Tty,
            "cwd" => FieldId::Cwd,
            "path" => FieldId::Path,
            "op" => FieldId::Op,
            "size_delta" => FieldId::SizeDelta,
            "name" => FieldId::Name,
            "version" => FieldId::Version,
            "action" => FieldId::Action,
            "unit" => FieldId::Unit,
            "from" => FieldId::From,
            "to" => FieldId::To,
            "group" => FieldId::Group,
            "verb" => FieldId::Verb,
            "resource" => FieldId::Resource,
            "subresource" => FieldId::Subresource,
            "namespace" => FieldId::Namespace,
            "groups" => FieldId::Groups,
            "code" => FieldId::Code,
            "provider" => FieldId::Provider,
            "event" => FieldId::GitEvent,
            "repo" => FieldId::Repo,
            "ref" => FieldId::Ref,
            "forced" => FieldId::Forced,
            "default_branch" => FieldId::DefaultBranch,
            "branch" => FieldId::Branch,
            "on_default_branch" => FieldId::OnDefaultBranch,
            _ => return None,
        })
    }

    /// The name rules use.
    pub fn name(&self) -> Cow<'static, str> {
        match self {
            FieldId::Generic(n) => Cow::Owned(format!("fields.{n}")),
            FieldId::Attr(n) => Cow::Owned(format!("attrs.{n}")),
            other => {
                let i = FIELD_ORDER.iter().position(|f| f == other).unwrap_or(0);
                Cow::Borrowed(NAMES[i])
            }
        }
    }
}

/// Every plain field with its name, in the order of [`NAMES`].
pub fn plain() -> impl Iterator<Item = (&'static str, &'static FieldId)> {
    NAMES.iter().copied().zip(FIELD_ORDER)
}

/// The plain fields in the order of [`NAMES`].
const FIELD_ORDER: &[FieldId] = &[
    FieldId::Kind,
    FieldId::Source,
    FieldId::Severity,
    FieldId::Node,
    FieldId::Host,
    FieldId::Origin,
    FieldId::EventType,
    FieldId::User,
    FieldId::SrcIp,
    FieldId::Method,
    FieldId::Outcome,
    FieldId::Reason,
    FieldId::TargetUser,
    FieldId::Command,
    FieldId::Tty,
    FieldId::Cwd,
    FieldId::Path,
    FieldId::Op,
    FieldId::SizeDelta,
    FieldId::Name,
    FieldId::Version,
    FieldId::Action,
    FieldId::Unit,
    FieldId::From,
    FieldId::To,
    FieldId::Group,
    FieldId::Verb,
    FieldId::Resource,
    FieldId::Subresource,
    FieldId::Namespace,
    FieldId::Groups,
    FieldId::Code,
    FieldId::Provider,
    FieldId::GitEvent,
    FieldId::Repo,
    FieldId::Ref,
    FieldId::Forced,
    FieldId::DefaultBranch,
    FieldId::Branch,
    FieldId::OnDefaultBranch,
];

/// A field's value in one event.
#[derive(Clone, Debug, PartialEq)]
pub enum Val<'a> {
    /// The event has no such field (or it is empty where the model has an `Option`).
    Missing,
    /// Text.
    Str(Cow<'a, str>),
    /// An integer.
    Int(i64),
    /// A float (generic and attribute values only).
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// An address.
    Ip(IpAddr),
    /// Several texts (Kubernetes groups and source addresses); a test matches when any does.
    List(&'a [String]),
}

impl Val<'_> {
    /// The text form used for equality, globs, regexes and group keys.
    pub fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            Val::Missing | Val::List(_) => None,
            Val::Str(s) => Some(Cow::Borrowed(s)),
            Val::Int(i) => Some(Cow::Owned(i.to_string())),
            Val::Float(f) => Some(Cow::Owned(f.to_string())),
            Val::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            Val::Ip(ip) => Some(Cow::Owned(ip.to_string())),
        }
    }

    /// The group-key form: lists join with commas, a missing field is empty.
    pub fn key_text(&self) -> String {
        let mut out = String::new();
        self.push_key_text(&mut out);
        out
    }

    /// Appends the group-key form to `out` (no allocation for texts the event holds).
    pub fn push_key_text(&self, out: &mut String) {
        use std::fmt::Write as _;
        match self {
            Val::Missing => {}
            Val::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(item);
                }
            }
            Val::Str(s) => out.push_str(s),
            Val::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Val::Float(f) => {
                let _ = write!(out, "{f}");
            }
            Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            // IPv4 by hand: group keys are built for every op, and `Display` for an
            // address (padding support, a buffer, four integer formats) was a tenth of
            // planning in the detection benchmark.
            Val::Ip(IpAddr::V4(v4)) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push('.');
                    }
                    if octet >= 100 {
                        out.push(char::from(b'0' + octet / 100));
                    }
                    if octet >= 10 {
                        out.push(char::from(b'0' + octet / 10 % 10));
                    }
                    out.push(char::from(b'0' + octet % 10));
                }
            }
            Val::Ip(ip) => {
                let _ = write!(out, "{ip}");
            }
        }
    }
}

fn s(text: &str) -> Val<'_> {
    Val::Str(Cow::Borrowed(text))
}

fn opt(text: &Option<String>) -> Val<'_> {
    text.as_deref().map_or(Val::Missing, s)
}

fn value(v: &Value) -> Val<'_> {
    match v {
        Value::Null => Val::Missing,
        Value::Bool(b) => Val::Bool(*b),
        Value::Int(i) => Val::Int(*i),
        Value::Float(f) => Val::Float(*f),
        Value::Str(t) | Value::Json(t) => s(t),
    }
}

impl<'a> EventRef<'a> {
    /// The value of `field` in this event.
    pub fn get(&self, field: &FieldId) -> Val<'a> {
        let e = self.event;
        match field {
            FieldId::Kind => return s(e.kind.name()),
            FieldId::Source => return s(e.source.as_str()),
            FieldId::Severity => {
                return s(match e.severity {
                    wire::model::Severity::Info => "info",
                    wire::model::Severity::Warning => "warning",
                    wire::model::Severity::Critical => "critical",
                });
            }
            FieldId::Node => return s(self.node),
            FieldId::Host => return s(e.host.as_deref().unwrap_or(self.node)),
            FieldId::Origin => return opt(&e.origin),
            FieldId::EventType => return s(wire::legacy::legacy_event_type(&e.kind)),
            FieldId::Attr(name) => {
                return e
                    .attrs
                    .iter()
                    .find(|(k, _)| k == name)
                    .map_or(Val::Missing, |(_, v)| value(v));
            }
            _ => {}
        }
        kind_field(&e.kind, field)
    }
}

fn outcome(o: wire::model::Outcome) -> Val<'static> {
    s(match o {
        wire::model::Outcome::Success => "success",
        wire::model::Outcome::Failure => "failure",
    })
}

fn kind_field<'a>(kind: &'a EventKind, field: &FieldId) -> Val<'a> {
    use FieldId as F;
    match (kind, field) {
        (EventKind::Login { user, .. }, F::User) => s(user),
        (EventKind::Login { src_ip, .. }, F::SrcIp) => src_ip.map_or(Val::Missing, Val::Ip),
        (EventKind::Login { method, .. }, F::Method) => opt(method),
        (EventKind::Login { outcome: o, .. }, F::Outcome) => outcome(*o),
        (EventKind::Login { reason, .. }, F::Reason) => opt(reason),
        (EventKind::Privilege { user, .. }, F::User) => s(user),
        (EventKind::Privilege { target_user, .. }, F::TargetUser) => s(target_user),
        (EventKind::Privilege { command, .. }, F::Command) => opt(command),
        (EventKind::Privilege { tty, .. }, F::Tty) => opt(tty),
        (EventKind::Privilege { cwd, .. }, F::Cwd) => opt(cwd),
        (EventKind::Privilege { outcome: o, .. }, F::Outcome) => outcome(*o),
        (EventKind::FileChange { path, .. }, F::Path) => s(path),
        (EventKind::FileChange { op, .. }, F::Op) => s(match op {
            wire::model::FileOp::Created => "created",
            wire::model::FileOp::Modified => "modified",
            wire::model::FileOp::Deleted => "deleted",
            wire::model::FileOp::Attrib => "attrib",
            wire::model::FileOp::Renamed => "renamed",
        }),
        (EventKind::FileChange { size_delta, .. }, F::SizeDelta) => {
            size_delta.map_or(Val::Missing, Val::Int)
        }
        (EventKind::Package { name, .. }, F::Name) => s(name),
        (EventKind::Package { version, .. }, F::Version) => s(version),
        (EventKind::Package { action, .. }, F::Action) => s(action),
        (EventKind::Service { unit, .. }, F::Unit) => s(unit),
        (EventKind::Service { from, .. }, F::From) => opt(from),
        (EventKind::Service { to, .. }, F::To) => s(to),
        (EventKind::Account { name, .. }, F::Name | F::User) => s(name),
        (EventKind::Account { action, .. }, F::Action) => s(action),
        (EventKind::Account { group, .. }, F::Group) => opt(group),
        (EventKind::K8sAudit { verb, .. }, F::Verb) => s(verb),
        (EventKind::K8sAudit { resource, .. }, F::Resource) => s(resource),
        (EventKind::K8sAudit { subresource, .. }, F::Subresource) => opt(subresource),
        (EventKind::K8sAudit { namespace, .. }, F::Namespace) => opt(namespace),
        (EventKind::K8sAudit { name, .. }, F::Name) => opt(name),
        (EventKind::K8sAudit { user, .. }, F::User) => s(user),
        (EventKind::K8sAudit { groups, .. }, F::Groups) => Val::List(groups),
        (EventKind::K8sAudit { source_ips, .. }, F::SrcIp) => Val::List(source_ips),
        (EventKind::K8sAudit { code, .. }, F::Code) => Val::Int(i64::from(*code)),
        (EventKind::Git { provider, .. }, F::Provider) => s(provider),
        (EventKind::Git { event, .. }, F::GitEvent) => s(event),
        (EventKind::Git { repo, .. }, F::Repo) => s(repo),
        (EventKind::Git { actor, .. }, F::User) => s(actor),
        (EventKind::Git { git_ref, .. }, F::Ref) => opt(git_ref),
        (EventKind::Git { git_ref, .. }, F::Branch) => {
            git_ref.as_deref().and_then(|r| r.strip_prefix("refs/heads/")).map_or(Val::Missing, s)
        }
        (EventKind::Git { git_ref, default_branch, .. }, F::OnDefaultBranch) => {
            let branch = git_ref.as_deref().and_then(|r| r.strip_prefix("refs/heads/"));
            Val::Bool(match (branch, default_branch.as_deref()) {
                (Some(b), Some(d)) => b == d,
                (Some(b), None) => b == "main" || b == "master",
                (None, _) => false,
            })
        }
        (EventKind::Git { forced, .. }, F::Forced) => Val::Bool(*forced),
        (EventKind::Git { default_branch, .. }, F::DefaultBranch) => opt(default_branch),
        (EventKind::Git { action, .. }, F::Action) => opt(action),
        (EventKind::Generic { fields, .. }, F::Generic(name)) => {
            fields.iter().find(|(k, _)| k == name).map_or(Val::Missing, |(_, v)| value(v))
        }
        _ => Val::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_key_text_is_the_display_form() {
        for n in 0..=255u8 {
            for ip in [[n, 0, 10, 100], [255, n, 9, 99], [1, 20, n, 200], [192, 168, 1, n]] {
                let ip = IpAddr::from(ip);
                assert_eq!(Val::Ip(ip).key_text(), ip.to_string());
            }
        }
        let v6: IpAddr = "fe80::1".parse().unwrap();
        assert_eq!(Val::Ip(v6).key_text(), "fe80::1");
    }

    #[test]
    fn every_plain_name_round_trips() {
        assert_eq!(NAMES.len(), FIELD_ORDER.len());
        for name in NAMES {
            let id = FieldId::parse(name).expect(name);
            assert_eq!(id.name(), *name);
        }
        assert_eq!(FieldId::parse("fields.x").unwrap().name(), "fields.x");
        assert_eq!(FieldId::parse("attrs.details.ip").unwrap().name(), "attrs.details.ip");
        assert!(FieldId::parse("nope").is_none());
        assert!(FieldId::parse("fields.").is_none());
    }
}
