//! The in-memory [`WindowState`]: one mutex around plain maps. Embedded mode and the rule
//! tests use it; its semantics are the reference the Redis script follows.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{
    DEDUP_TTL_SECS, Gate, Op, Span, StateError, Verdict, WindowState, gate_ttl, window_ttl,
};

/// In-memory detection state.
#[derive(Debug, Default)]
pub struct MemoryState {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    windows: HashMap<String, Expiring<Window>>,
    values: HashMap<String, Expiring<HashMap<String, String>>>,
    gates: HashMap<String, Expiring<(i64, String)>>,
    spans: HashMap<(String, u64), Expiring<Runs>>,
    seen: HashMap<String, i64>,
    /// Ops applied since the last sweep of expired keys.
    since_sweep: usize,
}

/// Processed runs `[first, end)` of one node and epoch, sorted and disjoint.
type Runs = Vec<(u64, u64)>;

#[derive(Debug)]
struct Expiring<T> {
    value: T,
    expires: Instant,
}

/// A window: members with their times, the members already used up by a firing, and the
/// triggers of past firings (kept among the used-up ones as `!<trigger>`, as the Lua script
/// does). A redelivered used-up member is quiet and a redelivered trigger reports the same
/// firing again, so arrival order and redelivery do not change what fires. Each map has a
/// time-ordered twin so that pruning and window queries cost O(log n) plus what they touch,
/// not a scan of the whole group (a brute-force storm makes groups large).
#[derive(Debug, Default)]
struct Window {
    members: Timed,
    used: Timed,
    /// The newest time ever added.
    newest: Option<i64>,
}

/// A set of named times, by name and by time.
#[derive(Debug, Default)]
struct Timed {
    by_name: HashMap<String, i64>,
    by_time: BTreeSet<(i64, String)>,
}

/// A key of [`Timed::by_time`].
type TimeKey = (i64, String);

/// The keys with times in `[a, b]`.
fn time_range(a: i64, b: i64) -> (Bound<TimeKey>, Bound<TimeKey>) {
    (Bound::Included((a, String::new())), Bound::Excluded((b.saturating_add(1), String::new())))
}

impl Timed {
    /// Sets `name`'s time, keeping the later one if it is already there.
    fn raise(&mut self, name: &str, ts: i64) {
        match self.by_name.get_mut(name) {
            Some(t) if *t >= ts => {}
            Some(t) => {
                self.by_time.remove(&(*t, name.to_owned()));
                *t = ts;
                self.by_time.insert((ts, name.to_owned()));
            }
            None => {
                self.by_name.insert(name.to_owned(), ts);
                self.by_time.insert((ts, name.to_owned()));
            }
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Drops everything older than `horizon`.
    fn prune(&mut self, horizon: i64) {
        while let Some((t, _)) = self.by_time.first() {
            if *t >= horizon {
                break;
            }
            if let Some((_, name)) = self.by_time.pop_first() {
                self.by_name.remove(&name);
            }
        }
    }

    /// Times in `[a, b]`, ascending.
    fn times(&self, a: i64, b: i64) -> impl Iterator<Item = i64> + '_ {
        self.by_time.range(time_range(a, b)).map(|(t, _)| *t)
    }

    /// Removes and returns the entries with times in `[a, b]`.
    fn take(&mut self, a: i64, b: i64) -> Vec<(i64, String)> {
        let taken: Vec<(i64, String)> = self.by_time.range(time_range(a, b)).cloned().collect();
        for entry in &taken {
            self.by_time.remove(entry);
            self.by_name.remove(&entry.1);
        }
        taken
    }
}

impl Window {
    fn prune(&mut self, horizon: i64) {
        self.members.prune(horizon);
        self.used.prune(horizon);
    }

    /// Moves the members with times in `[a, b]` to `used` and records the trigger.
    fn use_up(&mut self, a: i64, b: i64, by: &str, ts: i64) {
        for (t, m) in self.members.take(a, b) {
            self.used.raise(&m, t);
        }
        self.used.raise(&format!("!{by}"), ts);
    }

    fn fired_by(&self, by: &str) -> bool {
        self.used.contains(&format!("!{by}"))
    }
}

const SWEEP_EVERY: usize = 50_000;

impl MemoryState {
    /// Empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies ops synchronously (the rule test runner needs no runtime).
    pub fn apply_now(&self, ops: &[Op]) -> Vec<Verdict> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        inner.since_sweep += ops.len();
        if inner.since_sweep >= SWEEP_EVERY {
            inner.sweep(now);
        }
        ops.iter().map(|op| inner.apply(op, now)).collect()
    }

    /// Number of keys held (for tests of expiry).
    pub fn len(&self) -> usize {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.sweep(Instant::now());
        inner.windows.len() + inner.values.len() + inner.gates.len() + inner.spans.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn ttl(now: Instant, secs: u64) -> Instant {
    now + Duration::from_secs(secs)
}

impl Inner {
    fn sweep(&mut self, now: Instant) {
        self.since_sweep = 0;
        self.windows.retain(|_, e| e.expires > now);
        self.values.retain(|_, e| e.expires > now);
        self.gates.retain(|_, e| e.expires > now);
        self.spans.retain(|_, e| e.expires > now);
    }

    fn apply(&mut self, op: &Op, now: Instant) -> Verdict {
        match op {
            Op::Window { key, member, by, ts, window, count, lateness, gate } => {
                let entry = self
                    .windows
                    .entry(key.clone())
                    .or_insert_with(|| Expiring { value: Window::default(), expires: now });
                entry.expires = ttl(now, window_ttl(*window, *lateness));
                let w = &mut entry.value;
                let verdict = window_add(w, member, by, *ts, *window, *count, *lateness, true);
                self.gated(verdict, gate.as_ref(), by, *ts, now)
            }
            Op::SeqFirst { key, member, ts, window, lateness } => {
                let entry = self
                    .windows
                    .entry(key.clone())
                    .or_insert_with(|| Expiring { value: Window::default(), expires: now });
                entry.expires = ttl(now, window_ttl(*window, *lateness));
                window_add(
                    &mut entry.value,
                    member,
                    member,
                    *ts,
                    *window,
                    u32::MAX,
                    *lateness,
                    false,
                )
            }
            Op::SeqThen { key, by, ts, window, count, gate } => {
                let verdict = match self.windows.get_mut(key) {
                    None => Verdict::Quiet,
                    Some(entry) => seq_then(&mut entry.value, by, *ts, *window, *count),
                };
                self.gated(verdict, gate.as_ref(), by, *ts, now)
            }
            Op::NewValue { key, value, by, ts, ttl: secs, gate } => {
                let entry = self
                    .values
                    .entry(key.clone())
                    .or_insert_with(|| Expiring { value: HashMap::new(), expires: now });
                entry.expires = ttl(now, *secs);
                let verdict = match entry.value.get(value) {
                    None => {
                        entry.value.insert(value.clone(), by.clone());
                        Verdict::Fired(1)
                    }
                    Some(first) if first == by => Verdict::Fired(1),
                    Some(_) => Verdict::Quiet,
                };
                self.gated(verdict, gate.as_ref(), by, *ts, now)
            }
            Op::Gate { by, ts, gate } => self.gated(Verdict::Fired(1), Some(gate), by, *ts, now),
        }
    }

    fn gated(
        &mut self,
        verdict: Verdict,
        gate: Option<&Gate>,
        by: &str,
        ts: i64,
        now: Instant,
    ) -> Verdict {
        let (Verdict::Fired(_), Some(gate)) = (verdict, gate) else { return verdict };
        if let Some(last) = self.gates.get(&gate.key).filter(|e| e.expires > now) {
            let (last_ts, last_by) = &last.value;
            if last_by == by {
                return verdict;
            }
            if (ts - last_ts).abs() < gate.suppress {
                return Verdict::Suppressed;
            }
        }
        self.gates.insert(
            gate.key.clone(),
            Expiring { value: (ts, by.to_owned()), expires: ttl(now, gate_ttl(gate.suppress)) },
        );
        verdict
    }

    fn covered(&self, span: &Span, now: Instant) -> Vec<(u64, u64)> {
        self.spans
            .get(&(span.node.clone(), span.epoch))
            .filter(|e| e.expires > now)
            .map(|e| {
                e.value.iter().copied().filter(|&(a, b)| a < span.end && b > span.first).collect()
            })
            .unwrap_or_default()
    }

    fn mark(&mut self, span: &Span, now: Instant) {
        let entry = self
            .spans
            .entry((span.node.clone(), span.epoch))
            .or_insert_with(|| Expiring { value: Vec::new(), expires: now });
        if entry.expires <= now {
            entry.value.clear();
        }
        entry.expires = ttl(now, DEDUP_TTL_SECS);
        merge_run(&mut entry.value, span.first, span.end);
    }
}

/// Adds `[first, end)` to a sorted list of disjoint runs, merging overlapping and adjacent
/// ones.
pub(crate) fn merge_run(runs: &mut Vec<(u64, u64)>, first: u64, end: u64) {
    if first >= end {
        return;
    }
    let (mut a, mut b) = (first, end);
    runs.retain(|&(x, y)| {
        let touches = x <= b && y >= a;
        if touches {
            a = a.min(x);
            b = b.max(y);
        }
        !touches
    });
    let at = runs.partition_point(|&(x, _)| x < a);
    runs.insert(at, (a, b));
}

/// The window algorithm shared (in Lua) with the Redis state; see [`Op::Window`].
/// `distinct` windows count values, which recur legitimately, so only their triggers are
/// checked for redelivery.
#[allow(clippy::too_many_arguments)]
fn window_add(
    w: &mut Window,
    member: &str,
    by: &str,
    ts: i64,
    window: i64,
    count: u32,
    lateness: i64,
    check: bool,
) -> Verdict {
    if w.fired_by(by) {
        return Verdict::Fired(count);
    }
    if member == by && w.used.contains(member) {
        return Verdict::Quiet;
    }
    if w.newest.is_some_and(|newest| ts < newest - window - lateness) {
        return Verdict::Late;
    }
    w.members.raise(member, ts);
    if w.newest.is_none_or(|n| ts > n) {
        w.newest = Some(ts);
        w.prune(ts - window - lateness);
    }
    if !check {
        return Verdict::Quiet;
    }
    let times: Vec<i64> = w.members.times(ts - window, ts + window).collect();
    let n = count as usize;
    for i in 0..times.len() {
        let Some(&last) = times.get(i + n - 1) else { break };
        if last - times[i] <= window && times[i] <= ts && ts <= last {
            let first = times[i];
            let within = times[i..].iter().take_while(|t| **t <= first + window).count();
            w.use_up(first, last, by, ts);
            return Verdict::Fired(within as u32);
        }
    }
    Verdict::Quiet
}

fn seq_then(w: &mut Window, by: &str, ts: i64, window: i64, count: u32) -> Verdict {
    if w.fired_by(by) {
        return Verdict::Fired(count);
    }
    let n = w.members.times(ts - window, ts).count();
    if n >= count as usize {
        w.use_up(ts - window, ts, by, ts);
        return Verdict::Fired(n as u32);
    }
    Verdict::Quiet
}

impl WindowState for MemoryState {
    async fn apply(&self, ops: &[Op]) -> Result<Vec<Verdict>, StateError> {
        Ok(self.apply_now(ops))
    }

    async fn processed(&self, spans: &[Span]) -> Result<Vec<Vec<(u64, u64)>>, StateError> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        Ok(spans.iter().map(|s| inner.covered(s, now)).collect())
    }

    async fn mark_processed(&self, spans: &[Span]) -> Result<(), StateError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        for s in spans {
            inner.mark(s, now);
        }
        Ok(())
    }

    async fn record_seen(&self, seen: &[(String, i64)]) -> Result<(), StateError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (node, at) in seen {
            let slot = inner.seen.entry(node.clone()).or_insert(*at);
            *slot = (*slot).max(*at);
        }
        Ok(())
    }

    async fn last_seen(&self) -> Result<Vec<(String, i64)>, StateError> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, i64)> = inner.seen.iter().map(|(n, t)| (n.clone(), *t)).collect();
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge() {
        let mut runs = Vec::new();
        merge_run(&mut runs, 10, 20);
        merge_run(&mut runs, 0, 5);
        merge_run(&mut runs, 30, 40);
        assert_eq!(runs, [(0, 5), (10, 20), (30, 40)]);
        merge_run(&mut runs, 5, 10);
        assert_eq!(runs, [(0, 20), (30, 40)]);
        merge_run(&mut runs, 15, 35);
        assert_eq!(runs, [(0, 40)]);
        merge_run(&mut runs, 3, 3);
        assert_eq!(runs, [(0, 40)]);
    }
}
