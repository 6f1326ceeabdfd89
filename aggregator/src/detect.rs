//! The detector: turns a batch of events into state ops, and the state's verdicts into
//! firings. It holds no state itself — windows, cooldowns and first-seen values live in a
//! [`WindowState`](crate::state::WindowState) — so replicas sharing a Redis produce the same
//! firings as one process.

use std::sync::Arc;

use uuid::Uuid;
use wire::model::{Event, Severity};

use crate::rules::{EventRef, Mode, Rule, RuleSet, Spec};
use crate::state::{Name, Op, Verdict};

/// One event to evaluate.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// Identifies the event exactly once: derived from `(node, epoch, seq)` for agent events,
    /// the `event_id` for legacy ones. Firing ids are derived from it.
    pub id: Uuid,
    /// The node that sent it.
    pub node: &'a str,
    /// The event.
    pub event: &'a Event,
}

/// A rule fired: what the alert store receives (design.md §6). Deterministic: the same event
/// firing the same rule always gives the same `id`.
#[derive(Clone, Debug, PartialEq)]
pub struct Firing {
    /// UUID v5 of rule, group and triggering event.
    pub id: Uuid,
    /// Rule id and group key; alerts fold by it while open.
    pub fingerprint: String,
    /// The rule's id. (The rule's texts are shared with the rule set, not copied: a firing is
    /// made for every triggering event, up to one in six events of the legacy mix.)
    pub rule_id: Arc<str>,
    /// The rule's name.
    pub rule_name: Arc<str>,
    /// The rule's description.
    pub rule_description: Arc<str>,
    /// The rule's severity.
    pub severity: Severity,
    /// The rule's tags.
    pub tags: Arc<[String]>,
    /// The group: `(field, value)` for each `group_by` field.
    pub group: Vec<(String, String)>,
    /// The alert title (the rule's `summary` filled in, else its name).
    pub title: String,
    /// How many events (or distinct values) made the firing.
    pub count: u32,
    /// The node that sent the triggering event.
    pub node: String,
    /// The triggering event's id (the legacy `correlation_id`).
    pub event_id: Uuid,
    /// The triggering event (evidence).
    pub event: Event,
    /// What to do about it.
    pub remediation: Option<Arc<str>>,
    /// The runbook.
    pub playbook_url: Option<Arc<str>>,
}

/// The state ops of a batch and what each is for.
#[derive(Debug, Default)]
pub struct Plan {
    /// Ops to apply, in order.
    pub ops: Vec<Op>,
    /// Candidate firings: `(rule, input, op)`; `op` is `None` for a match rule without a
    /// cooldown (it fires without consulting the state).
    slots: Vec<(usize, usize, Option<usize>)>,
}

/// What a batch produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Firings of rules in alert mode.
    pub firings: Vec<Firing>,
    /// Firings per rule, shadow rules included: `(rule id, firings)` for rules that fired.
    pub per_rule: Vec<(String, u64)>,
    /// Firings of shadow rules (counted, never alerts).
    pub shadow: u64,
    /// The shadow rules' firings themselves (for their live figures; never stored).
    pub shadow_firings: Vec<Firing>,
    /// Firings held back by a cooldown.
    pub suppressed: u64,
    /// Events too late for a window.
    pub late: u64,
}

/// The rules plus the settings that apply to all of them.
#[derive(Clone, Debug)]
pub struct Detector {
    /// The loaded rule set.
    pub rules: Arc<RuleSet>,
    /// How far behind the newest event of a window an event may arrive and still count, µs.
    pub lateness_us: i64,
}

const FIRING_NAMESPACE: Uuid = Uuid::from_u128(0x3d5e_8a61_0f4c_4b7e_9a2d_71c3_b8e0_5f16);

fn micros(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Window state key for a rule and group, `<rule id>:<group>`; long groups are hashed so keys
/// stay short. Written into `key` (cleared first), a buffer reused from op to op.
fn state_key(rule: &Rule, ev: &EventRef<'_>, key: &mut String) {
    key.clear();
    key.push_str(&rule.id);
    key.push(':');
    let start = key.len();
    rule.push_group_key(ev, key);
    if key.len() - start > 96 {
        let hashed = Uuid::new_v5(&FIRING_NAMESPACE, &key.as_bytes()[start..]).simple();
        key.truncate(start);
        key.push('#');
        key.push_str(hashed.encode_lower(&mut Uuid::encode_buffer()));
    }
}

/// The state keys of one plan, each made once and shared by the ops that use it: a batch
/// touches few windows many times (85 keys for 700 ops per 1,000 events of the benchmark's
/// mix), and an allocation per op was a large part of planning.
struct Keys {
    buf: String,
    made: hashbrown::HashSet<Name>,
}

impl Keys {
    /// The state key of `rule` for `ev`.
    fn get(&mut self, rule: &Rule, ev: &EventRef<'_>) -> Name {
        state_key(rule, ev, &mut self.buf);
        self.share()
    }

    /// A distinct rule's member: the value of `field` (values recur, like keys).
    fn value(&mut self, ev: &EventRef<'_>, field: &crate::rules::FieldId) -> Name {
        self.buf.clear();
        ev.get(field).push_key_text(&mut self.buf);
        self.share()
    }

    /// What `buf` holds, made once.
    fn share(&mut self) -> Name {
        if let Some(k) = self.made.get(self.buf.as_str()) {
            return k.clone();
        }
        let k = Name::from(self.buf.as_str());
        self.made.insert(k.clone());
        k
    }
}

impl Detector {
    /// A detector for a rule set.
    pub fn new(rules: Arc<RuleSet>, lateness: std::time::Duration) -> Self {
        Self { rules, lateness_us: micros(lateness) }
    }

    /// Matches every event against the rules for its kind and lists the state ops needed.
    pub fn plan(&self, inputs: &[Input<'_>]) -> Plan {
        let mut plan =
            Plan { ops: Vec::with_capacity(inputs.len()), slots: Vec::with_capacity(inputs.len()) };
        let mut keys = Keys { buf: String::with_capacity(128), made: Default::default() };
        keys.made.reserve(128);
        for (i, input) in inputs.iter().enumerate() {
            let ev = EventRef { node: input.node, event: input.event };
            let ts = input.event.ts.as_nanos() / 1_000;
            // The event key, made once per event and shared by its ops.
            let mut event_key: Option<Name> = None;
            let mut by = || {
                event_key
                    .get_or_insert_with(|| {
                        Name::from(&*input.id.simple().encode_lower(&mut Uuid::encode_buffer()))
                    })
                    .clone()
            };
            for &r in self.rules.candidates(input.event.kind.name()) {
                let rule = &self.rules.rules[r];
                let first = rule.when.eval(&ev);
                let then = match &rule.spec {
                    Spec::Sequence { then, .. } => then.eval(&ev),
                    _ => false,
                };
                if !first && !then {
                    continue;
                }
                let key = keys.get(rule, &ev);
                let suppress = rule.suppress.map(micros);
                let op = match &rule.spec {
                    Spec::Match => {
                        suppress.map(|suppress| Op::Gate { key, by: by(), ts, suppress })
                    }
                    Spec::Threshold { count, window } | Spec::Distinct { count, window, .. } => {
                        // Threshold windows count events, distinct windows values.
                        let member = match &rule.spec {
                            Spec::Distinct { field, .. } => keys.value(&ev, field),
                            _ => by(),
                        };
                        Some(Op::Window {
                            key,
                            member,
                            by: by(),
                            ts,
                            window: micros(*window),
                            count: *count,
                            lateness: self.lateness_us,
                            suppress,
                        })
                    }
                    Spec::NewValue { field, remember } => Some(Op::NewValue {
                        key,
                        value: ev.get(field).key_text(),
                        by: by(),
                        ts,
                        ttl: remember.as_secs().max(1),
                        suppress,
                    }),
                    Spec::Sequence { count, window, .. } => {
                        let window = micros(*window);
                        if then {
                            plan.slots.push((r, i, Some(plan.ops.len())));
                            plan.ops.push(Op::SeqThen {
                                key: key.clone(),
                                by: by(),
                                ts,
                                window,
                                count: *count,
                                suppress,
                            });
                        }
                        if first {
                            plan.ops.push(Op::SeqFirst {
                                key,
                                member: by(),
                                ts,
                                window,
                                lateness: self.lateness_us,
                            });
                        }
                        continue;
                    }
                };
                match op {
                    Some(op) => {
                        plan.slots.push((r, i, Some(plan.ops.len())));
                        plan.ops.push(op);
                    }
                    None => plan.slots.push((r, i, None)),
                }
            }
        }
        plan
    }

    /// Turns the state's verdicts for `plan.ops` into firings.
    pub fn finish(&self, inputs: &[Input<'_>], plan: &Plan, verdicts: &[Verdict]) -> Outcome {
        let mut out = Outcome {
            late: verdicts.iter().filter(|v| **v == Verdict::Late).count() as u64,
            ..Outcome::default()
        };
        // The name a firing id is derived from, reused from firing to firing.
        let mut name = Vec::new();
        for &(r, i, op) in &plan.slots {
            let verdict = op
                .map_or(Verdict::Fired(1), |o| verdicts.get(o).copied().unwrap_or(Verdict::Quiet));
            let count = match verdict {
                Verdict::Fired(n) => n,
                Verdict::Suppressed => {
                    out.suppressed += 1;
                    continue;
                }
                Verdict::Quiet | Verdict::Late => continue,
            };
            let rule = &self.rules.rules[r];
            match out.per_rule.iter_mut().find(|(id, _)| *id == rule.id) {
                Some((_, n)) => *n += 1,
                None => out.per_rule.push((rule.id.clone(), 1)),
            }
            if rule.mode == Mode::Shadow {
                out.shadow += 1;
                let f = self.firing(r, &inputs[i], count, &mut name);
                out.shadow_firings.push(f);
                continue;
            }
            out.firings.push(self.firing(r, &inputs[i], count, &mut name));
        }
        out
    }

    fn firing(
        &self,
        rule_index: usize,
        input: &Input<'_>,
        count: u32,
        name: &mut Vec<u8>,
    ) -> Firing {
        let rule = &self.rules.rules[rule_index];
        let ev = EventRef { node: input.node, event: input.event };
        let group_key = rule.group_key(&ev);
        name.clear();
        name.extend_from_slice(rule.id.as_bytes());
        name.push(0);
        name.extend_from_slice(group_key.as_bytes());
        name.push(0);
        name.extend_from_slice(input.id.as_bytes());
        let mut fingerprint = String::with_capacity(rule.id.len() + 1 + group_key.len());
        fingerprint.push_str(&rule.id);
        fingerprint.push('/');
        fingerprint.extend(group_key.chars().map(|c| if c == '\u{1f}' { '/' } else { c }));
        let shared = self.rules.shared(rule_index);
        Firing {
            id: Uuid::new_v5(&FIRING_NAMESPACE, name),
            fingerprint,
            rule_id: shared.id.clone(),
            rule_name: shared.name.clone(),
            rule_description: shared.description.clone(),
            severity: rule.severity,
            tags: shared.tags.clone(),
            group: rule
                .group_by
                .iter()
                .map(|f| (f.name().into_owned(), ev.get(f).key_text()))
                .collect(),
            title: rule.title(&ev, count),
            count,
            node: input.node.to_owned(),
            event_id: input.id,
            event: input.event.clone(),
            remediation: shared.remediation.clone(),
            playbook_url: shared.playbook_url.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use wire::model::Source;

    use super::*;
    use crate::state::memory::MemoryState;

    fn set(mode: &str) -> Arc<RuleSet> {
        let text = format!(
            "[[rule]]\nid = \"R\"\nname = \"r\"\nkind = \"match\"\nseverity = \"warning\"\n\
             mode = \"{mode}\"\ngroup_by = [\"user\"]\nsummary = \"{{user}} did it {{count}}x\"\n\
             when = {{ field = \"kind\", eq = \"login\" }}\n"
        );
        Arc::new(RuleSet::parse(&[("r.toml".into(), text)]).unwrap())
    }

    fn login() -> Event {
        use wire::model::EventKind;
        Event::new(
            wire::model::Timestamp(0),
            Source::AuthLog,
            Severity::Info,
            EventKind::Login {
                user: "alice".into(),
                src_ip: None,
                method: None,
                outcome: wire::model::Outcome::Success,
                reason: None,
            },
        )
    }

    fn run(mode: &str) -> Outcome {
        let d = Detector::new(set(mode), std::time::Duration::from_secs(60));
        let e = login();
        let inputs = [Input { id: Uuid::from_u128(1), node: "pi-1", event: &e }];
        let plan = d.plan(&inputs);
        let verdicts = MemoryState::new().apply_now(&plan.ops);
        d.finish(&inputs, &plan, &verdicts)
    }

    #[test]
    fn shadow_rules_are_counted_but_never_alert() {
        let shadow = run("shadow");
        assert!(shadow.firings.is_empty());
        assert_eq!((shadow.shadow, shadow.per_rule.clone()), (1, vec![("R".to_owned(), 1)]));
        assert_eq!(shadow.shadow_firings.len(), 1, "kept for the rule's live figures");
        // The live figures: the same firing twice in one group, then another group.
        let book = crate::pipeline::ShadowBook::default();
        book.record(&shadow.shadow_firings);
        book.record(&shadow.shadow_firings);
        let mut other = shadow.shadow_firings[0].clone();
        other.fingerprint.push_str("-other");
        book.record(&[other]);
        let fig = book.get("R").expect("figures");
        assert_eq!((fig.firings, fig.groups, fig.examples.len()), (3, 2, 3));
        assert_eq!(fig.examples[0].1, "pi-1");
        assert!(book.get("nothing").is_none());
        let alert = run("alert");
        assert_eq!(alert.firings.len(), 1);
        let f = &alert.firings[0];
        assert_eq!((f.title.as_str(), f.fingerprint.as_str()), ("alice did it 1x", "R/alice"));
        assert_eq!(f.id, run("alert").firings[0].id, "firing ids are deterministic");
    }
}
