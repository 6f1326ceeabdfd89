//! What a channel is told, and when (design.md §6.2): the alert's lifecycle, updates no more
//! often than `group_interval`, a rate cap with a digest, quiet hours.
//!
//! Each channel has one outbox row per alert. The store puts the row back to `pending` when
//! the alert changes (a firing folded into it, acknowledged, resolved, reopened); the notifier
//! then compares the alert with what the row says was last delivered (`sent_status`,
//! `sent_occurrences`) and works out the [`Change`] to announce, if the channel's kind and
//! settings want it. So however many firings fold into an alert between two looks, the
//! channel hears about it once, and a storm that folds 10,000 firings into one alert sends one
//! message plus at most `max_updates` updates, `group_interval` apart.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ChannelKind;
use crate::store::{Alert, OutboxItem, Status};

/// What changed since the channel last heard about the alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The channel has not heard of it yet.
    Created,
    /// More firings folded into it.
    Updated,
    /// Somebody acknowledged it.
    Acknowledged,
    /// It was resolved.
    Resolved,
    /// It was opened again after being acknowledged or resolved.
    Reopened,
    /// Nothing; an Alertmanager channel re-sends the alert's state so that Alertmanager keeps
    /// it (it forgets alerts that are not re-sent).
    Repeat,
}

impl Change {
    /// The word in payloads (`"event"` of a webhook body) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Acknowledged => "acknowledged",
            Change::Resolved => "resolved",
            Change::Reopened => "reopened",
            Change::Repeat => "repeat",
        }
    }
}

/// The change to announce for `a` on the row `item`.
pub fn change(item: &OutboxItem, a: &Alert) -> Change {
    match item.sent_status.as_deref() {
        None => Change::Created,
        Some(sent) if sent != a.status.as_str() => match a.status {
            Status::Resolved => Change::Resolved,
            Status::Acknowledged => Change::Acknowledged,
            Status::Open => Change::Reopened,
        },
        Some(_) if a.occurrences > item.sent_occurrences => Change::Updated,
        Some(_) => Change::Repeat,
    }
}

/// `[[notify.channels]] quiet_hours`: alerts of these severities wait out the hours (UTC).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// Start, `HH:MM` UTC.
    pub from: String,
    /// End, `HH:MM` UTC (before `from`: the hours span midnight).
    pub to: String,
    /// The severities that wait (`INFO`, `WARNING`, `CRITICAL`); empty: `INFO` and `WARNING`.
    #[serde(default)]
    pub severities: Vec<String>,
}

fn minutes(hhmm: &str) -> Option<i64> {
    let (h, m) = hhmm.trim().split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m) && m.to_string().len() <= 2).then_some(h * 60 + m)
}

impl QuietHours {
    /// Every problem with it.
    pub fn problems(&self, at: &str) -> Vec<String> {
        let mut errors = Vec::new();
        for (key, v) in [("from", &self.from), ("to", &self.to)] {
            if minutes(v).is_none() {
                errors.push(format!("{at}: quiet_hours.{key} must be HH:MM (UTC), not `{v}`"));
            }
        }
        if self
            .severities
            .iter()
            .any(|s| !matches!(s.to_ascii_uppercase().as_str(), "INFO" | "WARNING" | "CRITICAL"))
        {
            errors.push(format!("{at}: quiet_hours.severities are INFO, WARNING or CRITICAL"));
        }
        errors
    }

    /// When an alert of `severity` may be sent, if `now` (Unix ms) is inside the quiet hours:
    /// their end.
    pub fn until(&self, now: i64, severity: &str) -> Option<i64> {
        let applies = if self.severities.is_empty() {
            matches!(severity, "INFO" | "WARNING")
        } else {
            self.severities.iter().any(|s| s.eq_ignore_ascii_case(severity))
        };
        let (from, to) = (minutes(&self.from)?, minutes(&self.to)?);
        if !applies || from == to {
            return None;
        }
        let day = now.div_euclid(86_400_000) * 86_400_000;
        let minute = (now - day) / 60_000;
        let inside =
            if from < to { (from..to).contains(&minute) } else { minute >= from || minute < to };
        if !inside {
            return None;
        }
        let end = day + to * 60_000;
        Some(if end > now { end } else { end + 86_400_000 })
    }
}

/// Whether a channel of `kind` announces `change` at all (before its own settings).
pub fn announces(kind: Option<ChannelKind>, change: Change, send_resolved: bool) -> bool {
    use Change::*;
    let Some(kind) = kind else {
        // The `audit_alerts` feed: the new alert, and in mode `alert` the firings folded into
        // it (at most every `legacy.update_interval`, notify.rs); mode `firing` does not plan.
        return matches!(change, Created | Updated);
    };
    match (kind, change) {
        (_, Created) => true,
        (ChannelKind::Alertmanager, Resolved) => true,
        (_, Resolved) => send_resolved,
        (ChannelKind::Alertmanager, _) => true,
        (ChannelKind::Pagerduty, Acknowledged | Reopened) => true,
        (ChannelKind::Pagerduty, Updated | Repeat) => false,
        (ChannelKind::Webhook, Acknowledged | Reopened | Updated) => true,
        // People's channels: an update when more firings fold in, a word when it is reopened;
        // an acknowledgement is for the people who did it.
        (_, Updated | Reopened) => true,
        (_, Acknowledged | Repeat) => false,
    }
}

/// Whether a channel of `kind` is for people, whom the rate cap protects (machines, such as
/// webhooks, PagerDuty and Alertmanager, take every alert and do their own grouping).
pub fn for_people(kind: ChannelKind) -> bool {
    matches!(
        kind,
        ChannelKind::Slack | ChannelKind::Discord | ChannelKind::Ntfy | ChannelKind::Email
    )
}

/// Messages sent per channel in the last hour, on this replica: the rate cap's memory. With
/// several replicas each keeps its own count, so the fleet-wide cap is the sum (a replica is
/// where the notifier runs; docs/aggregator.md).
#[derive(Debug, Default)]
pub struct RateCap {
    sent: HashMap<String, VecDeque<i64>>,
}

/// An hour, in milliseconds.
const HOUR: i64 = 3_600_000;

impl RateCap {
    /// How many messages `channel` may still send in the hour before `now`, under `cap`.
    pub fn room(&mut self, channel: &str, cap: u32, now: i64) -> u32 {
        let sent = self.sent.entry(channel.to_owned()).or_default();
        while sent.front().is_some_and(|&t| t <= now - HOUR) {
            sent.pop_front();
        }
        cap.saturating_sub(u32::try_from(sent.len()).unwrap_or(u32::MAX))
    }

    /// When the oldest message of the hour leaves it (when there is room again).
    pub fn next_room(&self, channel: &str, now: i64) -> i64 {
        self.sent.get(channel).and_then(|s| s.front()).map_or(now, |&t| t + HOUR)
    }

    /// Counts a message sent.
    pub fn sent(&mut self, channel: &str, now: i64) {
        self.sent.entry(channel.to_owned()).or_default().push_back(now);
    }
}

/// The end of the `group_wait` window an alert created at `created_at` (Unix ms) falls in:
/// windows are aligned to multiples of `wait`, so every alert of a window becomes due at the
/// same moment and the notifier sees them together. `None` when grouping is off.
pub fn group_window_end(created_at: i64, wait: Duration) -> Option<i64> {
    let w = i64::try_from(wait.as_millis()).ok().filter(|w| *w > 0)?;
    Some((created_at.div_euclid(w) + 1) * w)
}

/// The messages a people's channel sends for `items` (due together): new alerts of one rule
/// in one message when `group` is on, everything else one message each, in order.
pub fn bundle<T>(items: Vec<(T, Alert, Change)>, group: bool) -> Vec<Vec<(T, Alert, Change)>> {
    let mut out: Vec<Vec<(T, Alert, Change)>> = Vec::new();
    for item in items {
        let joins = (group && item.2 == Change::Created)
            .then(|| {
                out.iter()
                    .position(|m| m[0].2 == Change::Created && m[0].1.rule_id == item.1.rule_id)
            })
            .flatten();
        match joins {
            Some(i) => out[i].push(item),
            None => out.push(vec![item]),
        }
    }
    out
}

/// The default `group_wait`: new alerts of a rule within 10 s go out as one message.
pub const GROUP_WAIT: Duration = Duration::from_secs(10);

/// The default `group_interval`: updates of one alert at most every 5 minutes.
pub const GROUP_INTERVAL: Duration = Duration::from_secs(300);
/// The default `repeat_interval` of an Alertmanager channel.
pub const REPEAT_INTERVAL: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    fn row(sent_status: Option<&str>, sent_occurrences: i64) -> OutboxItem {
        OutboxItem {
            id: 1,
            alert_id: uuid::Uuid::nil(),
            channel: "c".into(),
            attempts: 0,
            sent_status: sent_status.map(str::to_owned),
            sent_occurrences,
            updates_sent: 0,
            delivered_at: None,
            sent_firing: None,
        }
    }

    #[test]
    fn the_change_is_what_the_channel_has_not_heard() {
        let mut a = crate::notify::tests::alert("t", "n", "WARNING");
        a.occurrences = 3;
        assert_eq!(change(&row(None, 0), &a), Change::Created);
        assert_eq!(change(&row(Some("open"), 1), &a), Change::Updated);
        assert_eq!(change(&row(Some("open"), 3), &a), Change::Repeat);
        a.status = Status::Resolved;
        assert_eq!(change(&row(Some("open"), 1), &a), Change::Resolved);
        a.status = Status::Acknowledged;
        assert_eq!(change(&row(Some("open"), 3), &a), Change::Acknowledged);
        a.status = Status::Open;
        assert_eq!(change(&row(Some("resolved"), 3), &a), Change::Reopened);
    }

    #[test]
    fn kinds_announce_what_their_receivers_understand() {
        use ChannelKind::*;
        assert!(announces(None, Change::Created, true));
        assert!(announces(None, Change::Updated, true));
        assert!(!announces(None, Change::Resolved, true), "audit_alerts: no lifecycle messages");
        assert!(announces(Some(Pagerduty), Change::Acknowledged, true));
        assert!(!announces(Some(Pagerduty), Change::Updated, true));
        assert!(announces(Some(Alertmanager), Change::Repeat, false));
        assert!(
            announces(Some(Alertmanager), Change::Resolved, false),
            "always: it ends the alert"
        );
        assert!(!announces(Some(Slack), Change::Resolved, false));
        assert!(announces(Some(Slack), Change::Resolved, true));
        assert!(!announces(Some(Slack), Change::Acknowledged, true));
        assert!(announces(Some(Webhook), Change::Acknowledged, true));
    }

    #[test]
    fn quiet_hours_hold_the_severities_they_name_until_they_end() {
        let q = QuietHours { from: "22:00".into(), to: "07:00".into(), severities: Vec::new() };
        let day = 1_765_000_000_000 / 86_400_000 * 86_400_000;
        let at = |h: i64, m: i64| day + (h * 60 + m) * 60_000;
        assert_eq!(q.until(at(23, 30), "WARNING"), Some(at(31, 0)), "to 07:00 the next day");
        assert_eq!(q.until(at(3, 0), "INFO"), Some(at(7, 0)));
        assert_eq!(q.until(at(12, 0), "INFO"), None, "daytime");
        assert_eq!(q.until(at(23, 30), "CRITICAL"), None, "critical is not held by default");
        let day_q = QuietHours {
            from: "09:00".into(),
            to: "17:30".into(),
            severities: vec!["critical".into()],
        };
        assert_eq!(day_q.until(at(10, 0), "CRITICAL"), Some(at(17, 30)));
        assert!(q.problems("c").is_empty());
        let bad =
            QuietHours { from: "25:00".into(), to: "7".into(), severities: vec!["LOUD".into()] };
        assert_eq!(bad.problems("c").len(), 3, "{:?}", bad.problems("c"));
    }

    #[test]
    fn group_windows_are_aligned_and_bundles_hold_one_rules_new_alerts() {
        let w = Duration::from_secs(10);
        assert_eq!(group_window_end(12_345, w), Some(20_000));
        assert_eq!(group_window_end(19_999, w), Some(20_000), "same window, same moment");
        assert_eq!(group_window_end(20_000, w), Some(30_000));
        assert_eq!(group_window_end(12_345, Duration::ZERO), None);
        let a = |rule: &str| {
            let mut a = crate::notify::tests::alert("t", "n", "WARNING");
            a.rule_id = rule.into();
            a
        };
        let items = vec![
            (1, a("R-1"), Change::Created),
            (2, a("R-2"), Change::Created),
            (3, a("R-1"), Change::Created),
            (4, a("R-1"), Change::Resolved),
        ];
        let ids = |b: &Vec<Vec<(i32, Alert, Change)>>| {
            b.iter().map(|m| m.iter().map(|x| x.0).collect::<Vec<_>>()).collect::<Vec<_>>()
        };
        assert_eq!(ids(&bundle(items.clone(), true)), [vec![1, 3], vec![2], vec![4]]);
        assert_eq!(ids(&bundle(items, false)), [vec![1], vec![2], vec![3], vec![4]]);
    }

    #[test]
    fn the_cap_counts_an_hour_back() {
        let mut cap = RateCap::default();
        assert_eq!(cap.room("c", 2, 0), 2);
        cap.sent("c", 1_000);
        cap.sent("c", 2_000);
        assert_eq!(cap.room("c", 2, 3_000), 0);
        assert_eq!(cap.next_room("c", 3_000), 1_000 + HOUR);
        assert_eq!(cap.room("c", 2, 1_000 + HOUR), 1, "the first left the hour");
        assert_eq!(cap.room("other", 2, 3_000), 2);
    }
}
