//! The edge filter: ordered rules applied to every event before it is batched. A rule matches
//! on source, kind and severity and then drops, samples (keeps 1 in N), collapses identical
//! events within a window, or caps a rate with a token bucket. The first rule that drops an
//! event decides; every drop is counted by reason and travels upstream in the next envelope's
//! `DropCounts` — nothing is filtered silently.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use wire::{DropReason, Event, Severity, Source};

/// Most distinct events remembered by one collapse rule; beyond this its memory is cleared
/// (a few extra events then pass, none is lost).
const COLLAPSE_MEMORY: usize = 16_384;

/// One `[[filter]]` entry of the agent's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterRule {
    /// `drop`, `sample`, `collapse` or `rate_limit`.
    pub action: String,
    /// Only events of this source (`auth`, `dpkg`, `synthetic`, …); empty: any.
    pub source: String,
    /// Only events of this kind (`login`, `privilege`, `package`, …); empty: any.
    pub kind: String,
    /// Only events at or below this severity (`info`, `warning`, `critical`); empty: any.
    pub max_severity: String,
    /// `sample`: keep one event in this many.
    pub every: u32,
    /// `collapse`: identical events within this many milliseconds (event time) are merged.
    pub window_ms: u64,
    /// `rate_limit`: events per second allowed through.
    pub rate_per_sec: f64,
    /// `rate_limit`: burst size (defaults to one second's worth).
    pub burst: f64,
}

impl Default for FilterRule {
    fn default() -> Self {
        Self {
            action: "drop".into(),
            source: String::new(),
            kind: String::new(),
            max_severity: String::new(),
            every: 10,
            window_ms: 10_000,
            rate_per_sec: 100.0,
            burst: 0.0,
        }
    }
}

impl FilterRule {
    /// Every problem with the rule, prefixed with `prefix` (its place in the file).
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut errors = Vec::new();
        if !["drop", "sample", "collapse", "rate_limit"].contains(&self.action.as_str()) {
            errors.push(format!(
                "{prefix}.action: `{}` is not drop, sample, collapse or rate_limit",
                self.action
            ));
        }
        if !self.source.is_empty() && Source::parse(&self.source).is_none() {
            errors.push(format!("{prefix}.source: unknown source `{}`", self.source));
        }
        if !self.max_severity.is_empty() && Severity::parse(&self.max_severity).is_none() {
            errors.push(format!(
                "{prefix}.max_severity: `{}` is not info, warning or critical",
                self.max_severity
            ));
        }
        if self.action == "sample" && self.every < 2 {
            errors.push(format!("{prefix}.every: must be at least 2"));
        }
        if self.action == "collapse" && self.window_ms == 0 {
            errors.push(format!("{prefix}.window_ms: must be at least 1"));
        }
        if self.action == "rate_limit" && !(self.rate_per_sec > 0.0 && self.burst >= 0.0) {
            errors.push(format!("{prefix}.rate_per_sec: must be above 0 (and burst not negative)"));
        }
        errors
    }
}

#[derive(Debug)]
enum Action {
    Drop,
    Sample { every: u64, seen: u64 },
    Collapse { window_ns: i64, last: HashMap<u64, i64> },
    RateLimit { rate: f64, burst: f64, tokens: f64, refilled: Instant },
}

#[derive(Debug)]
struct Rule {
    source: Option<Source>,
    kind: Option<String>,
    max_severity: Option<Severity>,
    action: Action,
}

/// The compiled rules, applied in order.
#[derive(Debug, Default)]
pub struct Filter {
    rules: Vec<Rule>,
}

impl Filter {
    /// Compiles validated rules.
    pub fn new(rules: &[FilterRule]) -> Self {
        let rules = rules
            .iter()
            .map(|r| Rule {
                source: Source::parse(&r.source),
                kind: (!r.kind.is_empty()).then(|| r.kind.clone()),
                max_severity: Severity::parse(&r.max_severity),
                action: match r.action.as_str() {
                    "sample" => Action::Sample { every: u64::from(r.every.max(1)), seen: 0 },
                    "collapse" => Action::Collapse {
                        window_ns: i64::try_from(r.window_ms.saturating_mul(1_000_000))
                            .unwrap_or(i64::MAX),
                        last: HashMap::new(),
                    },
                    "rate_limit" => {
                        let burst = if r.burst > 0.0 { r.burst } else { r.rate_per_sec.max(1.0) };
                        Action::RateLimit {
                            rate: r.rate_per_sec,
                            burst,
                            tokens: burst,
                            refilled: Instant::now(),
                        }
                    }
                    _ => Action::Drop,
                },
            })
            .collect();
        Self { rules }
    }

    /// True when there are no rules (the batcher then skips the filter).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// `None` keeps the event; `Some(reason)` drops it.
    pub fn check(&mut self, event: &Event) -> Option<DropReason> {
        for rule in &mut self.rules {
            if rule.source.is_some_and(|s| s != event.source)
                || rule.kind.as_deref().is_some_and(|k| k != event.kind.name())
                || rule.max_severity.is_some_and(|m| event.severity > m)
            {
                continue;
            }
            match &mut rule.action {
                Action::Drop => return Some(DropReason::Filtered),
                Action::Sample { every, seen } => {
                    *seen += 1;
                    if (*seen - 1) % *every != 0 {
                        return Some(DropReason::Sampled);
                    }
                }
                Action::Collapse { window_ns, last } => {
                    let key = identity(event);
                    match last.get(&key) {
                        Some(&first)
                            if event.ts.0.saturating_sub(first) < *window_ns
                                && event.ts.0 >= first =>
                        {
                            return Some(DropReason::Collapsed);
                        }
                        _ => {
                            if last.len() >= COLLAPSE_MEMORY {
                                last.clear();
                            }
                            last.insert(key, event.ts.0);
                        }
                    }
                }
                Action::RateLimit { rate, burst, tokens, refilled } => {
                    let now = Instant::now();
                    let elapsed = now.duration_since(*refilled).as_secs_f64();
                    *refilled = now;
                    *tokens = (*tokens + elapsed * *rate).min(*burst);
                    if *tokens < 1.0 {
                        return Some(DropReason::RateLimited);
                    }
                    *tokens -= 1.0;
                }
            }
        }
        None
    }
}

/// What makes two events "identical" for collapsing: everything but the time.
fn identity(event: &Event) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    event.source.hash(&mut h);
    event.severity.hash(&mut h);
    // The kind's encoding is a faithful, cheap fingerprint of all its fields.
    let mut probe = event.clone();
    probe.ts = wire::Timestamp(0);
    wire::encode(&wire::Envelope {
        node_id: String::new(),
        epoch: 0,
        first_seq: 0,
        events: vec![probe],
        dropped: Default::default(),
    })
    .hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use wire::Timestamp;
    use wire::synth::{Synth, Template};

    use super::*;

    fn rule(action: &str) -> FilterRule {
        FilterRule { action: action.into(), ..FilterRule::default() }
    }

    fn events(n: usize, template: Template) -> Vec<Event> {
        let mut synth = Synth::new(1);
        (0..n).map(|i| synth.event(template, Timestamp(i as i64 * 1_000_000))).collect()
    }

    #[test]
    fn drop_matches_source_kind_and_severity() {
        let mut f = Filter::new(&[FilterRule {
            kind: "login".into(),
            max_severity: "info".into(),
            ..rule("drop")
        }]);
        let success = &events(1, Template::LoginSuccess)[0]; // info
        let failure = &events(1, Template::LoginFailure)[0]; // warning
        let sudo = &events(1, Template::SudoCommand)[0];
        assert_eq!(f.check(success), Some(DropReason::Filtered));
        assert_eq!(f.check(failure), None, "above max_severity");
        assert_eq!(f.check(sudo), None, "another kind");
        let mut other_source = Filter::new(&[FilterRule { source: "auth".into(), ..rule("drop") }]);
        assert_eq!(other_source.check(success), None, "synthetic is not auth");
    }

    #[test]
    fn sample_keeps_one_in_n() {
        let mut f = Filter::new(&[FilterRule { every: 4, ..rule("sample") }]);
        let kept =
            events(100, Template::SudoCommand).iter().filter(|e| f.check(e).is_none()).count();
        assert_eq!(kept, 25);
    }

    #[test]
    fn collapse_merges_identical_events_within_the_window() {
        let mut f = Filter::new(&[FilterRule { window_ms: 10, ..rule("collapse") }]);
        let e = events(1, Template::ServiceStopped).remove(0);
        let at = |ms: i64| Event { ts: Timestamp(ms * 1_000_000), ..e.clone() };
        assert_eq!(f.check(&at(0)), None);
        assert_eq!(f.check(&at(5)), Some(DropReason::Collapsed));
        assert_eq!(f.check(&at(9)), Some(DropReason::Collapsed));
        assert_eq!(f.check(&at(10)), None, "a new window");
        let different = events(2, Template::ServiceStarted).remove(1);
        assert_eq!(f.check(&different), None);
    }

    #[test]
    fn rate_limit_caps_a_burst() {
        let mut f =
            Filter::new(&[FilterRule { rate_per_sec: 0.001, burst: 5.0, ..rule("rate_limit") }]);
        let results: Vec<_> =
            events(20, Template::SudoCommand).iter().map(|e| f.check(e)).collect();
        assert_eq!(results.iter().filter(|r| r.is_none()).count(), 5);
        assert!(results[5..].iter().all(|r| *r == Some(DropReason::RateLimited)));
    }

    #[test]
    fn first_dropping_rule_decides_in_order() {
        let mut f = Filter::new(&[FilterRule { every: 2, ..rule("sample") }, rule("drop")]);
        let e = events(2, Template::SudoCommand);
        assert_eq!(f.check(&e[0]), Some(DropReason::Filtered), "kept by sampling, dropped next");
        assert_eq!(f.check(&e[1]), Some(DropReason::Sampled));
    }

    #[test]
    fn validation_names_every_problem() {
        let bad = FilterRule {
            action: "explode".into(),
            source: "nowhere".into(),
            max_severity: "loud".into(),
            ..FilterRule::default()
        };
        assert_eq!(bad.validate("filter[0]").len(), 3);
        assert_eq!(FilterRule { every: 1, ..rule("sample") }.validate("f").len(), 1);
        assert!(rule("collapse").validate("f").is_empty());
    }
}
