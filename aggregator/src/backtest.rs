//! Backtests (design.md §6.12): the event archive replayed through a candidate rule set with
//! the real detection code ([`Detector`] over fresh in-memory state), writing nothing, and
//! compared with the rules in force replayed the same way.
//!
//! Rows are read in `ts_min` order and each row's events in time order, so events reach the
//! detector at most a row's span (5 minutes) out of order — what the lateness allowance (also
//! 5 minutes by default) absorbs, as it does for live traffic. Shadow rules count like alert
//! rules here: a backtest is how a rule in shadow mode is judged.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use crate::archive::{self, Pages};
use crate::detect::{Detector, Firing, Input};
use crate::rules::{Mode, RuleSet};
use crate::state::memory::MemoryState;
use crate::store::{ArchiveScan, SharedStore};

/// Examples kept per rule.
const EXAMPLES: usize = 3;

/// One firing, as an example.
#[derive(Clone, Debug, Serialize)]
pub struct Example {
    /// The triggering event's time.
    pub ts: String,
    /// Its node.
    pub node: String,
    /// The alert title it would have.
    pub title: String,
    /// The triggering event's id (`GET /api/v1/events` shows it).
    pub event_id: Uuid,
}

/// One rule's figures.
#[derive(Clone, Debug, Serialize)]
pub struct RuleFigures {
    /// The rule's id.
    pub rule_id: String,
    /// Its name.
    pub name: String,
    /// Its mode in the candidate set (`alert` or `shadow`).
    pub mode: &'static str,
    /// Firings over the range.
    pub firings: u64,
    /// Distinct groups (alerts, as open alerts fold).
    pub groups: u64,
    /// The first firings.
    pub examples: Vec<Example>,
    /// Firings of the rule of the same id in force (`None`: no such rule in force).
    pub in_force: Option<u64>,
}

/// What a backtest found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Event time from (RFC 3339).
    pub from: String,
    /// Event time to.
    pub to: String,
    /// Events replayed.
    pub events: u64,
    /// Archive rows that could not be read (skipped).
    pub rows_unreadable: u64,
    /// Whether the replay stopped at its budget before the range was covered.
    pub truncated: bool,
    /// The candidate rules, in file order.
    pub rules: Vec<RuleFigures>,
    /// Rules in force that the candidate set lacks, with their firings.
    pub only_in_force: Vec<(String, u64)>,
}

/// Firings of one replay, per rule.
#[derive(Default)]
struct Tally {
    ids: HashSet<Uuid>,
    per_rule: BTreeMap<String, (u64, HashSet<String>, Vec<Example>)>,
}

impl Tally {
    fn add(&mut self, firings: &[Firing]) {
        for f in firings {
            // A batch archived twice replays the same firing twice: count it once.
            if !self.ids.insert(f.id) {
                continue;
            }
            let e = self.per_rule.entry(f.rule_id.to_string()).or_default();
            e.0 += 1;
            e.1.insert(f.fingerprint.clone());
            if e.2.len() < EXAMPLES {
                e.2.push(Example {
                    ts: f.event.ts.to_rfc3339(),
                    node: f.node.clone(),
                    title: f.title.clone(),
                    event_id: f.event_id,
                });
            }
        }
    }
}

/// One replay: a detector whose rules all fire as alerts (shadow ones included), on fresh
/// in-memory state.
struct Replay {
    detector: Detector,
    state: MemoryState,
    tally: Tally,
}

impl Replay {
    fn new(set: &RuleSet, lateness: std::time::Duration) -> Self {
        let mut rules = set.rules.clone();
        for r in &mut rules {
            r.mode = Mode::Alert;
        }
        let rules = RuleSet::from_rules(rules, set.version.clone());
        Self {
            detector: Detector::new(Arc::new(rules), lateness),
            state: MemoryState::new(),
            tally: Tally::default(),
        }
    }

    fn feed(&mut self, inputs: &[Input<'_>]) {
        let plan = self.detector.plan(inputs);
        let verdicts = self.state.apply_now(&plan.ops);
        let out = self.detector.finish(inputs, &plan, &verdicts);
        self.tally.add(&out.firings);
    }
}

/// Replays `[from, to]` (Unix ms) of the archive through `candidate` and `in_force`, at most
/// `max_events` events.
pub async fn run(
    store: &SharedStore,
    candidate: &RuleSet,
    in_force: &RuleSet,
    lateness: std::time::Duration,
    from: i64,
    to: i64,
    max_events: u64,
) -> anyhow::Result<Report> {
    let mut new = Replay::new(candidate, lateness);
    let mut old = Replay::new(in_force, lateness);
    let mut report = Report {
        from: crate::store::rfc3339(from),
        to: crate::store::rfc3339(to),
        ..Report::default()
    };
    let mut pages = Pages::new(ArchiveScan { from, to, ..ArchiveScan::default() });
    while let Some((rows, last)) = pages.next(store).await? {
        let decoded: Vec<_> =
            rows.iter().filter_map(|row| Some((row.node.as_str(), pages.decode(row)?))).collect();
        let inputs: Vec<Input<'_>> = decoded
            .iter()
            .flat_map(|(node, records)| {
                records.iter().filter_map(move |r| {
                    let ts = archive::ts_ms(&r.event);
                    (from..=to).contains(&ts).then(|| Input {
                        id: r.key.event_id(node),
                        node,
                        event: &r.event,
                    })
                })
            })
            .collect();
        report.events += inputs.len() as u64;
        new.feed(&inputs);
        old.feed(&inputs);
        if report.events >= max_events {
            report.truncated = !last;
            break;
        }
    }
    report.rows_unreadable = pages.unreadable;
    for rule in &candidate.rules {
        let (firings, groups, examples) = new.tally.per_rule.remove(&rule.id).unwrap_or_default();
        let in_force = in_force
            .rules
            .iter()
            .any(|r| r.id == rule.id)
            .then(|| old.tally.per_rule.get(&rule.id).map_or(0, |e| e.0));
        report.rules.push(RuleFigures {
            rule_id: rule.id.clone(),
            name: rule.name.clone(),
            mode: if rule.mode == Mode::Shadow { "shadow" } else { "alert" },
            firings,
            groups: groups.len() as u64,
            examples,
            in_force,
        });
    }
    report.only_in_force = in_force
        .rules
        .iter()
        .filter(|r| !candidate.rules.iter().any(|c| c.id == r.id))
        .map(|r| (r.id.clone(), old.tally.per_rule.get(&r.id).map_or(0, |e| e.0)))
        .collect();
    Ok(report)
}

/// The report as text: a line per rule, its examples under it, then the rules in force the
/// candidate set lacks, and a summary line last.
pub fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "backtest {} .. {}: {} events replayed", r.from, r.to, r.events);
    for f in &r.rules {
        let diff = match f.in_force {
            None => "new rule".to_owned(),
            Some(n) if n == f.firings => "same as in force".to_owned(),
            Some(n) => format!("in force: {n} ({:+})", f.firings as i64 - n as i64),
        };
        let _ = writeln!(
            out,
            "{:<28} {:<6} firings={:<8} groups={:<6} {diff}",
            f.rule_id, f.mode, f.firings, f.groups
        );
        for e in &f.examples {
            let _ = writeln!(out, "    {} {} {} (event {})", e.ts, e.node, e.title, e.event_id);
        }
    }
    for (id, n) in &r.only_in_force {
        let _ = writeln!(out, "{id:<28} only in force, firings={n}");
    }
    let fired = r.rules.iter().filter(|f| f.firings > 0).count();
    let _ = writeln!(
        out,
        "backtest: rules={} fired={} firings={} events={} unreadable_rows={}{}",
        r.rules.len(),
        fired,
        r.rules.iter().map(|f| f.firings).sum::<u64>(),
        r.events,
        r.rows_unreadable,
        if r.truncated { " truncated" } else { "" }
    );
    out
}
