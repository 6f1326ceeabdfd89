//! Detection rules: the TOML format, validation of a whole rule set, and loading from a
//! directory. The format is documented with examples in `docs/rules.md`; the shipped pack is
//! in `aggregator/rules/`.

pub mod cond;
pub mod field;
pub mod testcase;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;
use toml::Value as Toml;
use wire::model::Severity;

pub use cond::Cond;
pub use field::{EventRef, FieldId};

/// The shipped rule pack, compiled in: used when `rules_dir` is empty, and written out by
/// `rules export`.
pub const SHIPPED: &[(&str, &str)] = &[
    ("legacy.toml", include_str!("../../rules/legacy.toml")),
    ("auth.toml", include_str!("../../rules/auth.toml")),
    ("host.toml", include_str!("../../rules/host.toml")),
    ("kubernetes.toml", include_str!("../../rules/kubernetes.toml")),
    ("git.toml", include_str!("../../rules/git.toml")),
    ("fleet.toml", include_str!("../../rules/fleet.toml")),
];

/// What a rule looks for.
#[derive(Clone, Debug)]
pub enum Spec {
    /// Every matching event fires.
    Match,
    /// `count` or more matching events per group within `window` (event time).
    Threshold {
        /// How many.
        count: u32,
        /// Within how long.
        window: Duration,
    },
    /// `count` or more distinct values of `field` per group within `window`.
    Distinct {
        /// Whose values are counted.
        field: FieldId,
        /// How many distinct values.
        count: u32,
        /// Within how long.
        window: Duration,
    },
    /// `count` events matching `first`, then one matching `then`, for the same group within
    /// `window`. `when` of a sequence rule is `first`.
    Sequence {
        /// The closing event.
        then: Cond,
        /// How many `first` events must precede it.
        count: u32,
        /// Within how long.
        window: Duration,
    },
    /// A value of `field` not seen before for the group (remembered for `remember`).
    NewValue {
        /// Whose values are tracked.
        field: FieldId,
        /// How long a value stays known after it was last seen.
        remember: Duration,
    },
}

impl Spec {
    /// The name used in rule files.
    pub fn name(&self) -> &'static str {
        match self {
            Spec::Match => "match",
            Spec::Threshold { .. } => "threshold",
            Spec::Distinct { .. } => "distinct",
            Spec::Sequence { .. } => "sequence",
            Spec::NewValue { .. } => "new_value",
        }
    }
}

/// Whether firings become alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Firings become alerts.
    Alert,
    /// Evaluated and counted, never alerts: for trying a rule on live traffic.
    Shadow,
}

/// One rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Stable id (`ANLY-SEC-001`); part of every alert fingerprint.
    pub id: String,
    /// Short human name (the legacy `alert_name`).
    pub name: String,
    /// What it means and why it matters.
    pub description: String,
    /// The alerts' severity.
    pub severity: Severity,
    /// Free labels copied onto alerts.
    pub tags: Vec<String>,
    /// Alert or shadow.
    pub mode: Mode,
    /// Which events count (for a sequence: the first step).
    pub when: Cond,
    /// What to look for.
    pub spec: Spec,
    /// Fields whose values make the group key; empty means one group.
    pub group_by: Vec<FieldId>,
    /// Cooldown per group after a firing, in event time.
    pub suppress: Option<Duration>,
    /// Alert title template: `{field}` is a group field's value, `{count}` the count.
    pub summary: Option<String>,
    /// What to do about it (legacy `metadata.remediation_guidance`).
    pub remediation: Option<String>,
    /// Where the runbook is (legacy `metadata.playbook_url`).
    pub playbook_url: Option<String>,
    /// Event kinds the rule can match; `None` means any (see [`Cond::kinds`]).
    pub kinds: Option<Vec<String>>,
    /// Inline test cases.
    pub tests: Vec<testcase::Case>,
    /// The file it came from.
    pub file: String,
}

impl Rule {
    /// The group key of an event: the group fields' values joined by U+001F.
    pub fn group_key(&self, event: &EventRef<'_>) -> String {
        let mut key = String::new();
        self.push_group_key(event, &mut key);
        key
    }

    /// Appends the group key to `out` (see [`Rule::group_key`]).
    pub fn push_group_key(&self, event: &EventRef<'_>, out: &mut String) {
        for (i, f) in self.group_by.iter().enumerate() {
            if i > 0 {
                out.push('\u{1f}');
            }
            event.get(f).push_key_text(out);
        }
    }

    /// The alert title for a firing.
    pub fn title(&self, event: &EventRef<'_>, count: u32) -> String {
        use std::fmt::Write as _;
        let Some(template) = &self.summary else { return self.name.clone() };
        let mut out = String::with_capacity(template.len() + 16);
        let mut rest = template.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            match after.find('}') {
                Some(close) => {
                    let name = &after[..close];
                    if name == "count" {
                        let _ = write!(out, "{count}");
                    } else if let Some(f) = FieldId::parse(name) {
                        event.get(&f).push_key_text(&mut out);
                    } else {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    out.push_str(&rest[open..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// A validated set of rules, indexed by event kind.
#[derive(Debug, Default)]
pub struct RuleSet {
    /// The rules in file order.
    pub rules: Vec<Rule>,
    /// For each event kind name, the indices of rules that can match it (including rules
    /// that do not pin a kind).
    by_kind: BTreeMap<&'static str, Vec<usize>>,
    /// A short digest of the source text, reported in heartbeats and the API.
    pub version: String,
    /// Each rule's texts that firings carry, shared (same order as `rules`).
    pub(crate) shared: Vec<SharedTexts>,
}

/// A rule's texts as firings carry them: made once per rule set, and each firing holds
/// references to them instead of copies.
#[derive(Debug)]
pub struct SharedTexts {
    /// The rule's id.
    pub id: Arc<str>,
    /// Its name.
    pub name: Arc<str>,
    /// Its description.
    pub description: Arc<str>,
    /// Its tags.
    pub tags: Arc<[String]>,
    /// Its remediation text.
    pub remediation: Option<Arc<str>>,
    /// Its runbook.
    pub playbook_url: Option<Arc<str>>,
}

impl SharedTexts {
    /// The texts of `rule`.
    pub fn of(rule: &Rule) -> Self {
        Self {
            id: rule.id.as_str().into(),
            name: rule.name.as_str().into(),
            description: rule.description.as_str().into(),
            tags: rule.tags.clone().into(),
            remediation: rule.remediation.as_deref().map(Arc::from),
            playbook_url: rule.playbook_url.as_deref().map(Arc::from),
        }
    }
}

/// Every event kind name, for the index.
pub const KINDS: [&str; 9] = [
    "login",
    "privilege",
    "file_change",
    "package",
    "service",
    "account",
    "k8s_audit",
    "git",
    "generic",
];

/// Why a rule set was refused: every problem, each prefixed with its file and rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleErrors(pub Vec<String>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s): {}", self.0.len(), self.0.join("; "))
    }
}

impl std::error::Error for RuleErrors {}

impl RuleSet {
    /// Parses and validates `(file name, text)` pairs as one set: every problem in every file
    /// is reported, and ids must be unique across files.
    pub fn parse(files: &[(String, String)]) -> Result<Self, RuleErrors> {
        let mut errors = Vec::new();
        let mut rules = Vec::new();
        for (name, text) in files {
            parse_file(name, text, &mut rules, &mut errors);
        }
        let mut ids = HashSet::new();
        for r in &rules {
            if !ids.insert(r.id.clone()) {
                errors.push(format!("{}: rule id `{}` is used more than once", r.file, r.id));
            }
        }
        if !errors.is_empty() {
            return Err(RuleErrors(errors));
        }
        let mut digest = crc32fast::Hasher::new();
        for (name, text) in files {
            digest.update(name.as_bytes());
            digest.update(text.as_bytes());
        }
        Ok(Self::from_rules(rules, format!("{:08x}", digest.finalize())))
    }

    /// A set of rules already validated (a parsed set's, changed: a backtest lifts their
    /// modes), indexed anew.
    pub fn from_rules(rules: Vec<Rule>, version: String) -> Self {
        let mut by_kind: BTreeMap<&'static str, Vec<usize>> = BTreeMap::new();
        for kind in KINDS {
            let list = rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.kinds.as_ref().is_none_or(|ks| ks.iter().any(|k| k == kind)))
                .map(|(i, _)| i)
                .collect();
            by_kind.insert(kind, list);
        }
        let shared = rules.iter().map(SharedTexts::of).collect();
        Self { rules, by_kind, version, shared }
    }

    /// The shipped pack.
    pub fn shipped() -> Self {
        let files: Vec<(String, String)> =
            SHIPPED.iter().map(|(n, t)| ((*n).to_owned(), (*t).to_owned())).collect();
        Self::parse(&files).expect("the shipped rule pack is valid (a unit test checks it)")
    }

    /// Reads every `*.toml` file of a directory (following symlinks, as a Kubernetes
    /// ConfigMap mount needs; hidden entries such as `..data` are skipped) and parses them as
    /// one set. An empty directory is an error: running with no rules is never what was meant.
    pub fn load_dir(dir: &Path) -> Result<Self, RuleErrors> {
        Self::parse(&read_dir(dir)?)
    }

    /// The shared texts of rule `index` (an index into `rules`).
    pub fn shared(&self, index: usize) -> &SharedTexts {
        &self.shared[index]
    }

    /// Indices of the rules an event of this kind can match.
    pub fn candidates(&self, kind: &str) -> &[usize] {
        self.by_kind.get(kind).map_or(&[], Vec::as_slice)
    }
}

/// The `(name, text)` of every rule file in `dir`, sorted by name.
pub fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, RuleErrors> {
    let err = |e: std::io::Error| RuleErrors(vec![format!("{}: {e}", dir.display())]);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".toml") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path())
            .map_err(|e| RuleErrors(vec![format!("{name}: {e}")]))?;
        files.push((name, text));
    }
    files.sort();
    if files.is_empty() {
        return Err(RuleErrors(vec![format!("{}: no *.toml rule files", dir.display())]));
    }
    Ok(files)
}

const RULE_KEYS: &[&str] = &[
    "id",
    "name",
    "description",
    "kind",
    "severity",
    "tags",
    "mode",
    "when",
    "first",
    "then",
    "group_by",
    "count",
    "window",
    "field",
    "remember",
    "suppress",
    "summary",
    "remediation",
    "playbook_url",
    "test",
];

fn parse_file(file: &str, text: &str, rules: &mut Vec<Rule>, errors: &mut Vec<String>) {
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            errors.push(format!("{file}: {}", e.message().trim()));
            return;
        }
    };
    for key in table.keys() {
        if key != "rule" {
            errors
                .push(format!("{file}: unknown top-level key `{key}` (rules are [[rule]] tables)"));
        }
    }
    let Some(list) = table.get("rule") else {
        errors.push(format!("{file}: no [[rule]] tables"));
        return;
    };
    let Some(list) = list.as_array() else {
        errors.push(format!("{file}: `rule` must be an array of tables ([[rule]])"));
        return;
    };
    for (i, value) in list.iter().enumerate() {
        let Some(t) = value.as_table() else {
            errors.push(format!("{file}: rule[{i}] must be a table"));
            continue;
        };
        let label = match t.get("id").and_then(Toml::as_str) {
            Some(id) => format!("{file}: rule `{id}`"),
            None => format!("{file}: rule[{i}]"),
        };
        let before = errors.len();
        let rule = parse_rule(t, file, &label, errors);
        if errors.len() == before {
            rules.extend(rule);
        }
    }
}

fn parse_rule(t: &toml::Table, file: &str, label: &str, errors: &mut Vec<String>) -> Option<Rule> {
    let mut err = |msg: String| errors.push(format!("{label}: {msg}"));
    for key in t.keys() {
        if !RULE_KEYS.contains(&key.as_str()) {
            err(format!("unknown key `{key}`"));
        }
    }
    let text = |key: &str, err: &mut dyn FnMut(String)| -> Option<String> {
        match t.get(key) {
            None => None,
            Some(Toml::String(s)) => Some(s.clone()),
            Some(_) => {
                err(format!("`{key}` must be a string"));
                None
            }
        }
    };
    let id = text("id", &mut err);
    match &id {
        None => err("`id` is required".into()),
        Some(id) if id.is_empty() || id.len() > 64 || id.chars().any(char::is_whitespace) => {
            err("`id` must be 1–64 characters without spaces".into())
        }
        _ => {}
    }
    let name = text("name", &mut err);
    if name.is_none() {
        err("`name` is required".into());
    }
    let description = text("description", &mut err).unwrap_or_default();
    let severity = match text("severity", &mut err) {
        None => {
            err("`severity` is required (info, warning, critical)".into());
            Severity::Warning
        }
        Some(s) => Severity::parse(&s).unwrap_or_else(|| {
            err(format!("`severity` must be info, warning or critical, not `{s}`"));
            Severity::Warning
        }),
    };
    let mode = match text("mode", &mut err).as_deref() {
        None | Some("alert") => Mode::Alert,
        Some("shadow") => Mode::Shadow,
        Some(other) => {
            err(format!("`mode` must be alert or shadow, not `{other}`"));
            Mode::Alert
        }
    };
    let tags = strings(t.get("tags"), "tags", &mut err);
    let group_by: Vec<FieldId> = strings(t.get("group_by"), "group_by", &mut err)
        .iter()
        .filter_map(|n| {
            let f = FieldId::parse(n);
            if f.is_none() {
                err(format!("group_by: unknown field `{n}`"));
            }
            f
        })
        .collect();
    let duration = |key: &str, err: &mut dyn FnMut(String)| -> Option<Duration> {
        let s = text(key, err)?;
        let d = parse_duration(&s);
        if d.is_none() {
            err(format!("`{key}` must be a duration like 30s, 5m, 1h or 7d, not `{s}`"));
        }
        d
    };
    let window = duration("window", &mut err);
    let suppress = duration("suppress", &mut err);
    let remember = duration("remember", &mut err);
    let count = match t.get("count") {
        None => None,
        Some(Toml::Integer(n)) if (1..=100_000).contains(n) => Some(*n as u32),
        Some(_) => {
            err("`count` must be an integer from 1 to 100000".into());
            None
        }
    };
    let field = text("field", &mut err).and_then(|n| {
        let f = FieldId::parse(&n);
        if f.is_none() {
            err(format!("field: unknown field `{n}`"));
        }
        f
    });

    let kind = text("kind", &mut err);
    let mut cond_errors = Vec::new();
    let mut cond = |key: &str| -> Option<Cond> {
        t.get(key).and_then(|v| cond::parse(v, key, &mut cond_errors))
    };
    let (when, spec) = match kind.as_deref() {
        Some("sequence") => {
            let first = cond("first");
            let then = cond("then");
            if t.contains_key("when") {
                err("a sequence rule has `first` and `then`, not `when`".into());
            }
            if first.is_none() && !t.contains_key("first") {
                err("`first` is required for a sequence rule".into());
            }
            if then.is_none() && !t.contains_key("then") {
                err("`then` is required for a sequence rule".into());
            }
            if window.is_none() {
                err("`window` is required for a sequence rule".into());
            }
            match (first, then, window) {
                (Some(first), Some(then), Some(window)) => {
                    (first, Spec::Sequence { then, count: count.unwrap_or(1), window })
                }
                _ => (Cond::All(Vec::new()), Spec::Match),
            }
        }
        Some(k @ ("match" | "threshold" | "distinct" | "new_value")) => {
            for key in ["first", "then"] {
                if t.contains_key(key) {
                    err(format!("`{key}` belongs to sequence rules; use `when`"));
                }
            }
            let when = cond("when");
            if when.is_none() && !t.contains_key("when") {
                err("`when` is required".into());
            }
            let spec = match k {
                "match" => Spec::Match,
                "threshold" => {
                    if count.is_none() {
                        err("`count` is required for a threshold rule".into());
                    }
                    if window.is_none() {
                        err("`window` is required for a threshold rule".into());
                    }
                    Spec::Threshold {
                        count: count.unwrap_or(1),
                        window: window.unwrap_or_default(),
                    }
                }
                "distinct" => {
                    if field.is_none() || count.is_none() || window.is_none() {
                        err("a distinct rule needs `field`, `count` and `window`".into());
                    }
                    Spec::Distinct {
                        field: field.clone().unwrap_or(FieldId::Kind),
                        count: count.unwrap_or(1),
                        window: window.unwrap_or_default(),
                    }
                }
                _ => {
                    if field.is_none() {
                        err("a new_value rule needs `field`".into());
                    }
                    Spec::NewValue {
                        field: field.clone().unwrap_or(FieldId::Kind),
                        remember: remember.unwrap_or(Duration::from_secs(30 * 86_400)),
                    }
                }
            };
            (when.unwrap_or(Cond::All(Vec::new())), spec)
        }
        Some(other) => {
            err(format!(
                "`kind` must be match, threshold, distinct, sequence or new_value, not `{other}`"
            ));
            return None;
        }
        None => {
            err("`kind` is required (match, threshold, distinct, sequence, new_value)".into());
            return None;
        }
    };
    for e in cond_errors {
        err(e);
    }
    if matches!(spec, Spec::Match) && window.is_some() {
        err("`window` has no meaning for a match rule".into());
    }
    let kinds = when.kinds().map(|mut ks| {
        if let Spec::Sequence { then, .. } = &spec {
            match then.kinds() {
                Some(more) => ks.extend(more),
                None => return None,
            }
        }
        Some(ks)
    });
    let kinds = kinds.flatten();
    if let Some(ks) = &kinds {
        for k in ks {
            if !KINDS.contains(&k.as_str()) {
                err(format!("unknown event kind `{k}` (one of {})", KINDS.join(", ")));
            }
        }
    }
    let tests = match t.get("test") {
        None => Vec::new(),
        Some(Toml::Array(cases)) => cases
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match testcase::Case::parse(c) {
                Ok(c) => Some(c),
                Err(e) => {
                    err(format!("test[{i}]: {e}"));
                    None
                }
            })
            .collect(),
        Some(_) => {
            err("`test` must be an array of tables ([[rule.test]])".into());
            Vec::new()
        }
    };
    let summary = text("summary", &mut err);
    let remediation = text("remediation", &mut err);
    let playbook_url = text("playbook_url", &mut err);
    Some(Rule {
        id: id?,
        name: name?,
        description,
        severity,
        tags,
        mode,
        when,
        spec,
        group_by,
        suppress,
        summary,
        remediation,
        playbook_url,
        kinds,
        tests,
        file: file.to_owned(),
    })
}

fn strings(value: Option<&Toml>, key: &str, err: &mut dyn FnMut(String)) -> Vec<String> {
    match value {
        None => Vec::new(),
        Some(Toml::Array(items)) => {
            let out: Option<Vec<String>> =
                items.iter().map(|v| v.as_str().map(str::to_owned)).collect();
            out.unwrap_or_else(|| {
                err(format!("`{key}` must be an array of strings"));
                Vec::new()
            })
        }
        Some(_) => {
            err(format!("`{key}` must be an array of strings"));
            Vec::new()
        }
    }
}

/// Parses `500ms`, `30s`, `5m`, `1h`, `7d`: the same words as every config file.
pub use runtime::config::parse_duration;

/// Converts a TOML value to JSON (rule test events share the JSON event builder).
pub(crate) fn toml_to_json(v: &Toml) -> Json {
    serde_json::to_value(v).unwrap_or(Json::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RuleSet, RuleErrors> {
        RuleSet::parse(&[("t.toml".to_owned(), text.to_owned())])
    }

    #[test]
    fn shipped_pack_is_valid() {
        let set = RuleSet::shipped();
        assert!(set.rules.len() >= 12, "{}", set.rules.len());
        assert!(set.rules.iter().all(|r| !r.tests.is_empty()), "every shipped rule has tests");
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let err = parse(
            r#"
            [[rule]]
            id = "A"
            name = "a"
            kind = "threshold"
            severity = "loud"
            when = { field = "usr", eq = "x" }
            window = "1 minute"

            [[rule]]
            id = "A"
            name = "b"
            kind = "match"
            severity = "info"
            when = { field = "user", eq = "x" }
            colour = "red"
            "#,
        )
        .unwrap_err();
        let all = err.0.join("\n");
        for needle in [
            "rule `A`: `severity` must be",
            "`window` must be a duration",
            "`count` is required",
            "when.field: unknown field `usr`",
            "unknown key `colour`",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn duplicate_ids_and_syntax_errors() {
        let ok = r#"
            [[rule]]
            id = "A"
            name = "a"
            kind = "match"
            severity = "info"
            when = { field = "kind", eq = "login" }
        "#;
        let err = RuleSet::parse(&[
            ("a.toml".into(), ok.into()),
            ("b.toml".into(), ok.into()),
            ("c.toml".into(), "[[rule]\n".into()),
        ])
        .unwrap_err();
        assert!(err.0.iter().any(|e| e.contains("used more than once")), "{err}");
        assert!(err.0.iter().any(|e| e.starts_with("c.toml:")), "{err}");
        let set = parse(ok).unwrap();
        assert_eq!(set.candidates("login"), &[0]);
        assert!(set.candidates("package").is_empty());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("99999999999999999999d"), None);
    }
}
