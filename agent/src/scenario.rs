//! Scripted scenarios: a short, exact script of events (`[[scenario]]` in the config) for
//! end-to-end tests and demos, e.g. "nine failed logins for admin from 203.0.113.9 within
//! three seconds". Unlike the synthetic source's random templates, a scenario says exactly
//! which alerts it must cause, and `normal` steps cause none with the shipped rule pack.
//!
//! Every event is stamped with the time it is emitted (event time is real time), so a step
//! spread `over_s` seconds really takes that long. A scenario is finite: an agent with
//! scenarios and no endless source stops by itself once every event is acknowledged.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wire::model::{Digest, EventKind, FileOp, Outcome, Severity};
use wire::{Event, Source, Timestamp};

use crate::telemetry::Metrics;

/// Largest `count` of one step (a scenario is a script, not a load generator).
const MAX_COUNT: u64 = 1_000_000;
/// Latest `at_s` and longest `over_s` of a step.
const MAX_SECS: f64 = 86_400.0;

/// One step of a scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// `count` failed SSH password logins for `user` from `src_ip`.
    FailedLogins {
        /// Seconds after the agent starts.
        #[serde(default)]
        at_s: f64,
        /// Seconds the attempts are spread over (evenly; 0: all at once).
        #[serde(default)]
        over_s: f64,
        /// The account tried.
        user: String,
        /// The client address.
        src_ip: IpAddr,
        /// How many attempts.
        count: u64,
    },
    /// One modification of `path` (the old and new hashes differ).
    FileChange {
        /// Seconds after the agent starts.
        #[serde(default)]
        at_s: f64,
        /// The file.
        path: String,
    },
    /// `count` ordinary events that no shipped rule fires on: successful logins and sudo by
    /// administrators, service restarts, changes of web content and `/etc/hosts`.
    Normal {
        /// Seconds after the agent starts.
        #[serde(default)]
        at_s: f64,
        /// Seconds the events are spread over (evenly; 0: all at once).
        #[serde(default)]
        over_s: f64,
        /// How many events.
        count: u64,
    },
}

impl Step {
    fn at_over_count(&self) -> (f64, f64, u64) {
        match self {
            Step::FailedLogins { at_s, over_s, count, .. } => (*at_s, *over_s, *count),
            Step::FileChange { at_s, .. } => (*at_s, 0.0, 1),
            Step::Normal { at_s, over_s, count } => (*at_s, *over_s, *count),
        }
    }

    /// Problems with this step, each prefixed with `at` (e.g. `scenario[2]`).
    pub fn validate(&self, at: &str) -> Vec<String> {
        let mut errors = Vec::new();
        let (at_s, over_s, count) = self.at_over_count();
        if !(0.0..=MAX_SECS).contains(&at_s) {
            errors.push(format!("{at}.at_s: must be between 0 and {MAX_SECS}"));
        }
        if !(0.0..=MAX_SECS).contains(&over_s) {
            errors.push(format!("{at}.over_s: must be between 0 and {MAX_SECS}"));
        }
        if !(1..=MAX_COUNT).contains(&count) {
            errors.push(format!("{at}.count: must be between 1 and {MAX_COUNT}"));
        }
        match self {
            Step::FailedLogins { user, .. } if user.is_empty() => {
                errors.push(format!("{at}.user: must not be empty"));
            }
            Step::FileChange { path, .. } if !path.starts_with('/') => {
                errors.push(format!("{at}.path: must be an absolute path"));
            }
            _ => {}
        }
        errors
    }

    /// The `i`-th event of this step.
    fn event(&self, i: u64, ts: Timestamp) -> Event {
        match self {
            Step::FailedLogins { user, src_ip, .. } => Event::new(
                ts,
                Source::Synthetic,
                Severity::Warning,
                EventKind::Login {
                    user: user.clone(),
                    src_ip: Some(*src_ip),
                    method: Some("password".to_owned()),
                    outcome: Outcome::Failure,
                    reason: Some("Invalid password".to_owned()),
                },
            ),
            Step::FileChange { path, .. } => Event::new(
                ts,
                Source::Synthetic,
                Severity::Warning,
                EventKind::FileChange {
                    path: path.clone(),
                    op: FileOp::Modified,
                    old_hash: Some(digest(path, ts, 0)),
                    new_hash: Some(digest(path, ts, 1)),
                    size_delta: None,
                },
            ),
            Step::Normal { .. } => normal_event(i, ts),
        }
    }
}

/// The `i`-th ordinary event: a fixed rotation, so a run is reproducible.
pub(crate) fn normal_event(i: u64, ts: Timestamp) -> Event {
    const ADMINS: [&str; 3] = ["pi", "admin", "ansible"];
    const UNITS: [&str; 3] = ["nginx", "cron", "k3s-agent"];
    const FILES: [&str; 2] = ["/var/www/html/index.html", "/etc/hosts"];
    let pick = |items: &[&str]| items[(i / 5) as usize % items.len()].to_owned();
    let (severity, kind) = match i % 5 {
        0 => (
            Severity::Info,
            EventKind::Login {
                user: pick(&ADMINS),
                src_ip: "192.168.1.10".parse().ok(),
                method: Some("publickey".to_owned()),
                outcome: Outcome::Success,
                reason: None,
            },
        ),
        1 => (
            Severity::Info,
            EventKind::Privilege {
                user: pick(&ADMINS),
                target_user: "root".to_owned(),
                command: Some("/usr/bin/systemctl status nginx".to_owned()),
                tty: Some("pts/0".to_owned()),
                cwd: Some("/home/pi".to_owned()),
                outcome: Outcome::Success,
            },
        ),
        2 => (
            Severity::Info,
            EventKind::Service { unit: pick(&UNITS), from: None, to: "started".to_owned() },
        ),
        3 => (
            Severity::Info,
            EventKind::Service { unit: pick(&UNITS), from: None, to: "stopped".to_owned() },
        ),
        _ => {
            let path = pick(&FILES);
            (
                Severity::Info,
                EventKind::FileChange {
                    old_hash: Some(digest(&path, ts, 0)),
                    new_hash: Some(digest(&path, ts, 1)),
                    path,
                    op: FileOp::Modified,
                    size_delta: None,
                },
            )
        }
    };
    Event::new(ts, Source::Synthetic, severity, kind)
}

/// A made-up content hash, different for every (path, time, version).
fn digest(path: &str, ts: Timestamp, version: u8) -> Digest {
    let seed = path
        .bytes()
        .fold(ts.as_nanos() as u64 ^ u64::from(version), |h, b| h.rotate_left(5) ^ u64::from(b));
    wire::synth::Rng::new(seed).digest()
}

/// When each event of the script is due, in order: `(offset, step index, event index)`.
fn schedule(steps: &[Step]) -> Vec<(Duration, usize, u64)> {
    let mut out = Vec::new();
    for (s, step) in steps.iter().enumerate() {
        let (at_s, over_s, count) = step.at_over_count();
        for i in 0..count {
            let spread = if count > 1 { over_s * i as f64 / (count - 1) as f64 } else { 0.0 };
            out.push((Duration::from_secs_f64(at_s + spread), s, i));
        }
    }
    // Stable: events due at the same moment keep the script's order.
    out.sort_by_key(|(due, _, _)| *due);
    out
}

/// Emits the script's events at their times, then returns. Waits when the pipeline is full
/// (backpressure), never drops.
pub async fn run(
    steps: Vec<Step>,
    out: mpsc::Sender<crate::pipeline::Collected>,
    metrics: Metrics,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let plan = schedule(&steps);
    let counter = metrics.collected.with_label_values(&[Source::Synthetic.as_str()]);
    let start = Instant::now();
    for (due, s, i) in &plan {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep_until(start + *due) => {}
        }
        let event = steps[*s].event(*i, Timestamp::now());
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            sent = out.send(event.into()) => if sent.is_err() { return Ok(()) },
        }
        counter.inc();
    }
    tracing::info!(events = plan.len(), "scenario finished");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `[[scenario]]` part of an agent config file, read and checked as the agent's config
    /// loader does (`config.rs` validates each step with the same prefix), without the rest.
    #[derive(Debug, Default, Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct Steps {
        #[serde(default)]
        scenario: Vec<Step>,
    }

    impl runtime::config::Validate for Steps {
        fn validate(&self) -> Vec<String> {
            let mut errors = Vec::new();
            for (i, step) in self.scenario.iter().enumerate() {
                errors.extend(step.validate(&format!("scenario[{i}]")));
            }
            errors
        }
    }

    fn parse(text: &str) -> Result<Vec<Step>, Vec<String>> {
        runtime::config::parse::<Steps>(text, &runtime::config::no_env).map(|s| s.scenario)
    }

    #[test]
    fn steps_are_read_from_toml_and_scheduled_in_time_order() {
        let steps = parse(
            "[[scenario]]\nkind = \"normal\"\ncount = 3\nover_s = 2.0\n\
             [[scenario]]\nkind = \"failed_logins\"\nat_s = 0.5\nuser = \"admin\"\n\
             src_ip = \"203.0.113.9\"\ncount = 2\n\
             [[scenario]]\nkind = \"file_change\"\nat_s = 1.5\npath = \"/etc/shadow\"\n",
        )
        .unwrap();
        let plan: Vec<(u128, usize)> =
            schedule(&steps).into_iter().map(|(d, s, _)| (d.as_millis(), s)).collect();
        assert_eq!(plan, vec![(0, 0), (500, 1), (500, 1), (1000, 0), (1500, 2), (2000, 0)]);
    }

    #[test]
    fn bad_steps_are_reported() {
        let errors = parse(
            "[[scenario]]\nkind = \"normal\"\ncount = 0\nat_s = -1.0\n\
             [[scenario]]\nkind = \"file_change\"\npath = \"etc/shadow\"\n",
        )
        .unwrap_err();
        assert_eq!(
            errors,
            vec![
                "scenario[0].at_s: must be between 0 and 86400",
                "scenario[0].count: must be between 1 and 1000000",
                "scenario[1].path: must be an absolute path",
            ]
        );
        let unknown = parse("[[scenario]]\nkind = \"reboot\"\n").unwrap_err();
        assert!(unknown[0].contains("reboot"), "{unknown:?}");
    }

    #[test]
    fn failed_logins_and_file_changes_are_what_the_rules_expect() {
        let steps = parse(
            "[[scenario]]\nkind = \"failed_logins\"\nuser = \"admin\"\n\
             src_ip = \"203.0.113.9\"\ncount = 1\n\
             [[scenario]]\nkind = \"file_change\"\npath = \"/etc/shadow\"\n",
        )
        .unwrap();
        let ts = Timestamp::now();
        match steps[0].event(0, ts).kind {
            EventKind::Login { user, outcome, .. } => {
                assert_eq!((user.as_str(), outcome), ("admin", Outcome::Failure));
            }
            other => panic!("{other:?}"),
        }
        match steps[1].event(0, ts).kind {
            EventKind::FileChange { path, old_hash, new_hash, .. } => {
                assert_eq!(path, "/etc/shadow");
                assert_ne!(old_hash, new_hash);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn normal_traffic_uses_only_administrators_and_harmless_files() {
        for i in 0..50 {
            match normal_event(i, Timestamp::now()).kind {
                EventKind::Login { outcome, .. } => assert_eq!(outcome, Outcome::Success),
                EventKind::Privilege { user, .. } => {
                    assert!(["pi", "admin", "ansible"].contains(&user.as_str()))
                }
                EventKind::FileChange { path, .. } => assert!(!path.starts_with("/etc/s")),
                EventKind::Service { .. } => {}
                other => panic!("{other:?}"),
            }
        }
    }
}
