//! Blindness is an alert (design.md §5.8): a tailing source that reads lines but understands
//! few of them — a daemon that changed its log format after an upgrade, a file that is now
//! something else — reports it, instead of counting unparsed lines no one looks at.
//!
//! Each source keeps counts over a window of `check_interval_s`: lines read, lines not
//! understood (overlong ones included), events produced, and the newest few lines it did not
//! understand. At the end of a window with at least `min_lines` lines of which less than
//! `min_understood` were understood, the source emits one `source_blind` event about its own
//! node (kind `generic`, source `agent`, critical to the rule FLEET-SOURCE-BLIND-001) with
//! those counts and samples. The event goes through the spool like any other, so a blind
//! source is on the dashboard within one window plus delivery.
//!
//! Every window, blind or not, also ends with a `source_stats` event (info): the source's
//! totals since the agent started (lines read, lines not understood, events produced), the
//! window's counts and the newest lines it did not understand, in this window or before. The aggregator keeps the newest per node and source for the
//! fleet page. They travel as events, not in the heartbeat, because the heartbeat's encoding is
//! positional: a new field there is a new wire version that every agent and aggregator would
//! have to take at once, while a `generic` event needs nothing new on either side.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wire::model::{Event, EventKind, Severity, Source, Timestamp, Value};

/// Lines not understood kept as samples per window, newest last.
pub const SAMPLES: usize = 3;
/// Characters of a sample kept (a line can be 64 KiB).
pub const SAMPLE_CHARS: usize = 200;

/// `[sources.blind]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlindConfig {
    /// Length of a window, seconds; 0 turns the check off.
    pub check_interval_s: u64,
    /// Fewer lines in a window say nothing.
    pub min_lines: u64,
    /// The share of lines a source must understand (0–1).
    pub min_understood: f64,
}

impl Default for BlindConfig {
    fn default() -> Self {
        Self { check_interval_s: 300, min_lines: 20, min_understood: 0.5 }
    }
}

impl BlindConfig {
    /// Every problem with the values.
    pub fn problems(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if !(0.0..=1.0).contains(&self.min_understood) {
            errors.push("sources.blind.min_understood: must be between 0 and 1".into());
        }
        if self.check_interval_s > 0 && self.min_lines == 0 {
            errors.push("sources.blind.min_lines: must be at least 1".into());
        }
        errors
    }
}

/// What a window's end yields.
#[derive(Debug)]
pub struct WindowEnd {
    /// The `source_stats` event.
    pub stats: Event,
    /// The `source_blind` event, when the source was blind in the window.
    pub blind: Option<Event>,
}

/// Since the agent started.
#[derive(Clone, Debug, Default)]
struct Totals {
    lines: u64,
    unparsed: u64,
    events: u64,
    /// The newest lines not understood, in any window.
    samples: Vec<String>,
}

/// One source's window.
#[derive(Debug)]
pub struct Watch {
    config: BlindConfig,
    source: &'static str,
    totals: Totals,
    started: Instant,
    lines: u64,
    unparsed: u64,
    events: u64,
    samples: Vec<String>,
}

impl Watch {
    /// A watch of the source named `source`.
    pub fn new(source: &'static str, config: BlindConfig) -> Self {
        Self {
            config,
            source,
            totals: Totals::default(),
            started: Instant::now(),
            lines: 0,
            unparsed: 0,
            events: 0,
            samples: Vec::new(),
        }
    }

    /// Counts lines read and events produced.
    pub fn read(&mut self, lines: u64, events: u64) {
        self.lines += lines;
        self.events += events;
    }

    /// Counts a line not understood (`Some`: a sample of it; `None`: an overlong line).
    pub fn unparsed(&mut self, line: Option<&str>) {
        self.unparsed += 1;
        if let Some(line) = line {
            if self.samples.len() == SAMPLES {
                self.samples.remove(0);
            }
            self.samples.push(line.chars().take(SAMPLE_CHARS).collect());
        }
    }

    /// At the end of a window: its `source_stats` event, and the `source_blind` event when
    /// the source was blind in it; a new window either way.
    pub fn check(&mut self, now: Instant) -> Option<WindowEnd> {
        let every = Duration::from_secs(self.config.check_interval_s);
        if every.is_zero() || now.duration_since(self.started) < every {
            return None;
        }
        let (lines, unparsed, events) = (self.lines, self.unparsed.min(self.lines), self.events);
        let samples = std::mem::take(&mut self.samples);
        let mut kept = std::mem::take(&mut self.totals.samples);
        kept.extend(samples.iter().cloned());
        let totals = Totals {
            lines: self.totals.lines + lines,
            unparsed: self.totals.unparsed + unparsed,
            events: self.totals.events + events,
            samples: kept.split_off(kept.len().saturating_sub(SAMPLES)),
        };
        *self = Self::new(self.source, self.config.clone());
        self.totals = totals;
        self.started = now;
        let understood = if lines == 0 { 1.0 } else { (lines - unparsed) as f64 / lines as f64 };
        let int = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
        let mut fields = vec![
            ("source".into(), Value::Str(self.source.into())),
            ("lines".into(), int(lines)),
            ("unparsed".into(), int(unparsed)),
            ("events".into(), int(events)),
            ("understood_pct".into(), Value::Int((understood * 100.0).round() as i64)),
            ("window_s".into(), int(every.as_secs())),
        ];
        let numbered = |samples: &[String]| {
            samples
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("sample_{}", i + 1), Value::Str(s.clone())))
                .collect::<Vec<_>>()
        };
        let event = |severity, event_type: &str, fields| {
            Event::new(
                Timestamp::now(),
                Source::Agent,
                severity,
                EventKind::Generic { event_type: event_type.into(), fields },
            )
        };
        let blind = (lines >= self.config.min_lines && understood < self.config.min_understood)
            .then(|| {
                let mut fields = fields.clone();
                fields.extend(numbered(&samples));
                event(Severity::Critical, "source_blind", fields)
            });
        fields.extend([
            ("lines_total".into(), int(self.totals.lines)),
            ("unparsed_total".into(), int(self.totals.unparsed)),
            ("events_total".into(), int(self.totals.events)),
        ]);
        fields.extend(numbered(&self.totals.samples));
        Some(WindowEnd { stats: event(Severity::Info, "source_stats", fields), blind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BlindConfig {
        BlindConfig { check_interval_s: 60, min_lines: 10, min_understood: 0.5 }
    }

    #[test]
    fn a_source_that_understands_too_little_reports_once_per_window() {
        let mut w = Watch::new("auth", config());
        let t0 = w.started;
        w.read(12, 1);
        for i in 0..9 {
            w.unparsed(Some(&format!("new format line {i}")));
        }
        assert!(w.check(t0 + Duration::from_secs(30)).is_none(), "the window is not over");
        let end = w.check(t0 + Duration::from_secs(61)).expect("a window's end");
        let e = end.blind.expect("blind");
        let EventKind::Generic { event_type, fields } = &e.kind else { panic!() };
        assert_eq!(event_type, "source_blind");
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("understood_pct"), Some(Value::Int(25)));
        assert_eq!(get("sample_3"), Some(Value::Str("new format line 8".into())));
        assert_eq!(get("sample_4"), None, "at most three samples");
        // A new window: nothing until it is over and blind again.
        assert!(w.check(t0 + Duration::from_secs(62)).is_none());
        // The window's statistics carry the totals across windows.
        w.read(8, 8);
        let end = w.check(t0 + Duration::from_secs(122)).expect("a window's end");
        assert!(end.blind.is_none(), "8 of 8 understood");
        let EventKind::Generic { event_type, fields } = &end.stats.kind else { panic!() };
        assert_eq!((event_type.as_str(), end.stats.severity), ("source_stats", Severity::Info));
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("lines"), Some(Value::Int(8)));
        assert_eq!(get("lines_total"), Some(Value::Int(20)));
        assert_eq!(get("unparsed_total"), Some(Value::Int(9)));
        assert_eq!(get("events_total"), Some(Value::Int(9)));
        assert_eq!(get("source"), Some(Value::Str("auth".into())));
        assert_eq!(get("sample_3"), Some(Value::Str("new format line 8".into())), "kept");
    }

    #[test]
    fn enough_understood_or_too_few_lines_say_nothing() {
        let mut w = Watch::new("auth", config());
        let t0 = w.started;
        w.read(100, 40);
        for _ in 0..50 {
            w.unparsed(None);
        }
        let end = w.check(t0 + Duration::from_secs(61)).expect("a window's end");
        assert!(end.blind.is_none(), "half understood is enough");
        let mut w = Watch::new("auth", config());
        w.read(5, 0);
        for _ in 0..5 {
            w.unparsed(None);
        }
        let end = w.check(w.started + Duration::from_secs(61)).expect("a window's end");
        assert!(end.blind.is_none(), "too few lines");
        let mut off = Watch::new("auth", BlindConfig { check_interval_s: 0, ..config() });
        off.read(100, 0);
        assert!(off.check(off.started + Duration::from_secs(10_000)).is_none());
    }
}
