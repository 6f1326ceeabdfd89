//! Runs rules' inline tests (`[[rule.test]]`, parsed by [`crate::rules::testcase`]): each
//! rule alone, through the real [`Detector`], on fresh in-memory state. It lives beside the
//! rules and the detector rather than in either: the rule format must not depend on the
//! engine that evaluates it.

use std::sync::Arc;

use uuid::Uuid;

use crate::detect::{Detector, Input};
use crate::rules::{Rule, RuleSet};
use crate::state::memory::MemoryState;

/// The result of one rule's tests.
#[derive(Debug)]
pub struct Report {
    /// Rule id.
    pub rule: String,
    /// `(case name, expected, got)`.
    pub cases: Vec<(String, u32, u32)>,
}

impl Report {
    /// True when every case got what it expected.
    pub fn passed(&self) -> bool {
        self.cases.iter().all(|(_, want, got)| want == got)
    }
}

/// Runs every inline test of every rule, each rule alone on fresh in-memory state.
pub fn run_all(set: &RuleSet) -> Vec<Report> {
    set.rules.iter().map(run_rule).collect()
}

/// Runs one rule's tests.
pub fn run_rule(rule: &Rule) -> Report {
    let mut cases = Vec::new();
    for case in &rule.tests {
        let single = RuleSet::single(rule.clone());
        let detector = Detector::new(Arc::new(single), std::time::Duration::from_secs(300));
        let state = MemoryState::new();
        let mut fired = 0u32;
        for (i, (node, event)) in case.events.iter().enumerate() {
            let id = Uuid::from_u128(i as u128 + 1);
            let inputs = [Input { id, node, event }];
            let plan = detector.plan(&inputs);
            let verdicts = state.apply_now(&plan.ops);
            let out = detector.finish(&inputs, &plan, &verdicts);
            fired += out.per_rule.iter().map(|(_, n)| *n as u32).sum::<u32>();
        }
        cases.push((case.name.clone(), case.expect, fired));
    }
    Report { rule: rule.id.clone(), cases }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_rule_passes_its_tests() {
        for report in run_all(&RuleSet::shipped()) {
            assert!(report.passed(), "{report:?}");
        }
    }
}
