//! The in-memory [`WindowState`]: one mutex around plain maps. Embedded mode and the rule
//! tests use it, and the Redis state evaluates its ops with the same code on its cache of the
//! Redis keys (see `redis.rs`): with a [`Journal`] switched on, [`Inner`] records what each
//! call changed, and that is what the Redis state writes back.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

// hashbrown's map with its default hasher, foldhash, instead of std's SipHash: hashing was the
// largest cost after allocation in the detection benchmark. foldhash seeds each process (and
// each map) at random; it is not meant to resist an attacker who studies the running
// process's timing to build colliding keys, and the cluster profile keeps its state in Redis.
use hashbrown::HashMap;
use hashbrown::hash_map::Entry;

pub mod snapshot;

use super::{
    DEDUP_TTL_SECS, Name, Op, Span, StateError, Verdict, WindowState, gate_ttl, window_ttl,
};

/// In-memory detection state.
#[derive(Debug, Default)]
pub struct MemoryState {
    inner: Mutex<Inner>,
    /// Single events the dedup record keeps at most (0: no bound).
    single_events: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub(crate) windows: HashMap<String, Expiring<Window>>,
    pub(crate) values: HashMap<String, Expiring<HashMap<String, Name>>>,
    pub(crate) gates: HashMap<String, Expiring<(i64, Name)>>,
    spans: HashMap<(String, u64), Expiring<Runs>>,
    /// Single events processed (`Span::single`): until when they are remembered, and the
    /// order they were marked in (for the bound on their number).
    singles: HashMap<uuid::Uuid, (Instant, u64)>,
    /// Single events marked so far.
    singles_marked: u64,
    seen: HashMap<String, i64>,
    /// Ops applied since the last sweep of expired keys.
    since_sweep: usize,
    /// What the ops changed, when recorded (the Redis state's cache; never in embedded mode).
    pub(crate) journal: Option<Journal>,
}

/// The keys a run of ops touched and the first-seen values it added; each touched window
/// carries its own [`Delta`].
#[derive(Debug, Default)]
pub(crate) struct Journal {
    /// Every op's key, once, in first-touched order (what the ops read).
    pub(crate) keys: Vec<Name>,
    seen: hashbrown::HashSet<Name>,
    /// Keys whose cooldown was set.
    pub(crate) gates: hashbrown::HashSet<Name>,
    /// Keys whose first-seen values were touched (their TTL is refreshed), with the values
    /// added and the event that first had each. (Touched windows carry a [`Delta`].)
    pub(crate) values: HashMap<Name, Vec<(String, Name)>>,
}

impl Journal {
    fn touch(&mut self, key: &Name) {
        if self.seen.insert(key.clone()) {
            self.keys.push(key.clone());
        }
    }
}

/// What ops changed in one window since its delta was started: members added, raised or
/// removed (their final state is in the window), each with whether it was a member when first
/// touched (so was stored before); entries added to the used set (`trigger` false: a used-up
/// member, true: a firing's trigger) and dropped from it by pruning; whether the newest time
/// moved (so everything older than `horizon` is gone) and whether that dropped live members;
/// and, from when the delta was started, whether the window had no members and no newest time
/// (then its stored sets did not exist, and get a TTL when made).
#[derive(Debug, Default)]
pub(crate) struct Delta {
    pub(crate) dirty: Vec<(Name, bool)>,
    pub(crate) newly: Vec<(i64, bool, Name)>,
    pub(crate) pruned: Vec<(bool, Name)>,
    pub(crate) horizon: Option<i64>,
    pub(crate) pruned_live: bool,
    pub(crate) had_members: bool,
    pub(crate) had_newest: bool,
}

/// Processed runs `[first, end)` of one node and epoch, sorted and disjoint.
type Runs = Vec<(u64, u64)>;

#[derive(Debug)]
pub(crate) struct Expiring<T> {
    pub(crate) value: T,
    pub(crate) expires: Instant,
}

/// A window: members with their times, the members already used up by a firing, and the
/// triggers of past firings (the Lua script keeps those in the used set as `!<trigger>`, next
/// to `=<member>` for used-up members; here they have a set of their own). A redelivered
/// used-up member is quiet and a redelivered trigger reports the same firing again, so arrival
/// order and redelivery do not change what fires. Each set is also kept in time order, so that
/// pruning and window queries cost O(log n) plus what they touch, not a scan of the whole
/// group (a brute-force storm makes groups large).
#[derive(Debug, Default)]
pub(crate) struct Window {
    pub(crate) members: Timed,
    pub(crate) used: Timed,
    pub(crate) triggers: Timed,
    /// The newest time ever added.
    pub(crate) newest: Option<i64>,
    /// What changed, when the state records it.
    pub(crate) delta: Option<Box<Delta>>,
}

/// A set of named times, by name and by time. A name is stored once and shared by both
/// indexes (the hot path of the benchmark was the allocator). The time index is a sorted
/// ring buffer, not a B-tree: members, used-up members and triggers arrive almost always in
/// time order, so an insert is a push at the back, pruning pops at the front, and a firing
/// takes a run near the back — no node allocations, and the entries of a window lie together
/// in memory. An event far out of order costs a shift of the entries after it.
#[derive(Debug, Default)]
pub(crate) struct Timed {
    pub(crate) by_name: HashMap<Name, i64>,
    by_time: VecDeque<(i64, Name)>,
}

impl Timed {
    /// Where `(ts, name)` is or would go in `by_time`.
    fn position(&self, ts: i64, name: &str) -> usize {
        self.by_time.partition_point(|(t, n)| *t < ts || (*t == ts && &**n < name))
    }

    /// The index range of the entries with times in `[a, b]`.
    fn span(&self, a: i64, b: i64) -> std::ops::Range<usize> {
        let start = self.by_time.partition_point(|(t, _)| *t < a);
        let end = self.by_time.partition_point(|(t, _)| *t <= b);
        start..end.max(start)
    }

    fn insert_time(&mut self, ts: i64, name: Name) {
        match self.by_time.back() {
            Some((t, n)) if *t > ts || (*t == ts && **n > *name) => {
                let at = self.position(ts, &name);
                self.by_time.insert(at, (ts, name));
            }
            _ => self.by_time.push_back((ts, name)),
        }
    }

    /// Sets `name`'s time, keeping the later one if it is already there. True if `name` was
    /// there.
    pub(crate) fn raise(&mut self, name: &Name, ts: i64) -> bool {
        match self.by_name.entry(name.clone()) {
            Entry::Occupied(mut e) => {
                let old = *e.get();
                if old < ts {
                    e.insert(ts);
                    let at = self.position(old, name);
                    if let Some((_, entry)) = self.by_time.remove(at) {
                        self.insert_time(ts, entry);
                    }
                }
                true
            }
            Entry::Vacant(e) => {
                e.insert(ts);
                self.insert_time(ts, name.clone());
                false
            }
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Drops everything older than `horizon`, handing each name dropped to `gone`; true if
    /// anything was.
    fn prune(&mut self, horizon: i64, mut gone: impl FnMut(Name)) -> bool {
        let before = self.by_time.len();
        while self.by_time.front().is_some_and(|(t, _)| *t < horizon) {
            if let Some((_, name)) = self.by_time.pop_front() {
                self.by_name.remove(&*name);
                gone(name);
            }
        }
        self.by_time.len() < before
    }
}

impl Window {
    fn prune(&mut self, horizon: i64) {
        let live = self.members.prune(horizon, |_| {});
        let delta = &mut self.delta;
        self.used.prune(horizon, |m| {
            if let Some(d) = delta {
                d.pruned.push((false, m));
            }
        });
        self.triggers.prune(horizon, |m| {
            if let Some(d) = delta {
                d.pruned.push((true, m));
            }
        });
        if let Some(d) = delta {
            d.horizon = Some(horizon);
            d.pruned_live |= live;
        }
    }

    /// Moves the members with times in `[a, b]` to `used` and records the trigger. (The
    /// trigger itself, when it is a member, is not also recorded as used: a redelivered
    /// trigger is recognised as one first, and both would be pruned at the same time.)
    fn use_up(&mut self, a: i64, b: i64, by: &Name, ts: i64) {
        let span = self.members.span(a, b);
        for (t, m) in self.members.by_time.drain(span) {
            self.members.by_name.remove(&*m);
            if m != *by {
                self.used.raise(&m, t);
                if let Some(d) = &mut self.delta {
                    d.newly.push((t, false, m.clone()));
                }
            }
            if let Some(d) = &mut self.delta {
                d.dirty.push((m, true));
            }
        }
        self.triggers.raise(by, ts);
        if let Some(d) = &mut self.delta {
            d.newly.push((ts, true, by.clone()));
        }
    }

    fn fired_by(&self, by: &str) -> bool {
        self.triggers.contains(by)
    }
}

const SWEEP_EVERY: usize = 50_000;

impl MemoryState {
    /// Empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bounds the single events the dedup record keeps to about `max`, the newest
    /// (`[retention] dedup_single_events`; 0: no bound).
    pub fn with_single_events(mut self, max: u64) -> Self {
        self.single_events = usize::try_from(max).unwrap_or(usize::MAX);
        self
    }

    /// Applies ops synchronously (the rule test runner needs no runtime).
    pub fn apply_now(&self, ops: &[Op]) -> Vec<Verdict> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.apply_all(ops, Instant::now())
    }

    /// Number of keys held (for tests of expiry).
    pub fn len(&self) -> usize {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.sweep(Instant::now());
        inner.windows.len()
            + inner.values.len()
            + inner.gates.len()
            + inner.spans.len()
            + inner.singles.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The window of `key`, made if missing (without copying the key when it exists: most ops
/// touch an existing window).
fn window_entry<'a>(
    windows: &'a mut HashMap<String, Expiring<Window>>,
    key: &str,
    now: Instant,
) -> &'a mut Expiring<Window> {
    windows.entry_ref(key).or_insert_with(|| Expiring { value: Window::default(), expires: now })
}

fn ttl(now: Instant, secs: u64) -> Instant {
    now + Duration::from_secs(secs)
}

impl Inner {
    /// Applies ops in order, sweeping expired keys now and then.
    pub(crate) fn apply_all(&mut self, ops: &[Op], now: Instant) -> Vec<Verdict> {
        self.since_sweep += ops.len();
        if self.since_sweep >= SWEEP_EVERY {
            self.sweep(now);
        }
        ops.iter().map(|op| self.apply(op, now)).collect()
    }

    /// The window of `key` for an op, made if missing, with its expiry set to `secs` from now
    /// (if given), and with a delta started when the state records one.
    fn window(&mut self, key: &Name, now: Instant, secs: Option<u64>) -> &mut Window {
        let entry = window_entry(&mut self.windows, key, now);
        if let Some(secs) = secs {
            entry.expires = ttl(now, secs);
        }
        let w = &mut entry.value;
        if self.journal.is_some() && w.delta.is_none() {
            w.delta = Some(Box::new(Delta {
                had_members: !w.members.by_name.is_empty(),
                had_newest: w.newest.is_some(),
                ..Delta::default()
            }));
        }
        &mut entry.value
    }

    fn sweep(&mut self, now: Instant) {
        self.since_sweep = 0;
        self.windows.retain(|_, e| e.expires > now);
        self.values.retain(|_, e| e.expires > now);
        self.gates.retain(|_, e| e.expires > now);
        self.spans.retain(|_, e| e.expires > now);
        self.singles.retain(|_, (expires, _)| *expires > now);
    }

    fn apply(&mut self, op: &Op, now: Instant) -> Verdict {
        // Every op reads its key, even one that finds nothing there (a sequence's closing step
        // without a window): its verdict holds only if no one else changed the key meanwhile.
        if let Some(j) = &mut self.journal {
            j.touch(op.key());
        }
        match op {
            Op::Window { key, member, by, ts, window, count, lateness, suppress } => {
                let w = self.window(key, now, Some(window_ttl(*window, *lateness)));
                let verdict = window_add(w, member, by, *ts, *window, *count, *lateness, true);
                self.gated(verdict, key, *suppress, by, *ts, now)
            }
            Op::SeqFirst { key, member, ts, window, lateness } => window_add(
                self.window(key, now, Some(window_ttl(*window, *lateness))),
                member,
                member,
                *ts,
                *window,
                u32::MAX,
                *lateness,
                false,
            ),
            Op::SeqThen { key, by, ts, window, count, suppress } => {
                let verdict = if self.windows.contains_key(&**key) {
                    seq_then(self.window(key, now, None), by, *ts, *window, *count)
                } else {
                    Verdict::Quiet
                };
                self.gated(verdict, key, *suppress, by, *ts, now)
            }
            Op::NewValue { key, value, by, ts, ttl: secs, suppress } => {
                if let Some(j) = &mut self.journal {
                    j.values.entry(key.clone()).or_default();
                }
                let entry = self
                    .values
                    .entry_ref(&**key)
                    .or_insert_with(|| Expiring { value: HashMap::new(), expires: now });
                entry.expires = ttl(now, *secs);
                let verdict = match entry.value.get(value) {
                    None => {
                        entry.value.insert(value.clone(), by.clone());
                        if let Some(j) = &mut self.journal {
                            j.values
                                .entry(key.clone())
                                .or_default()
                                .push((value.clone(), by.clone()));
                        }
                        Verdict::Fired(1)
                    }
                    Some(first) if first == by => Verdict::Fired(1),
                    Some(_) => Verdict::Quiet,
                };
                self.gated(verdict, key, *suppress, by, *ts, now)
            }
            Op::Gate { key, by, ts, suppress } => {
                self.gated(Verdict::Fired(1), key, Some(*suppress), by, *ts, now)
            }
        }
    }

    fn gated(
        &mut self,
        verdict: Verdict,
        key: &Name,
        suppress: Option<i64>,
        by: &Name,
        ts: i64,
        now: Instant,
    ) -> Verdict {
        let (Verdict::Fired(_), Some(suppress)) = (verdict, suppress) else { return verdict };
        if let Some(last) = self.gates.get(&**key).filter(|e| e.expires > now) {
            let (last_ts, last_by) = &last.value;
            if last_by == by {
                return verdict;
            }
            if (ts - last_ts).abs() < suppress {
                return Verdict::Suppressed;
            }
        }
        let expires = ttl(now, gate_ttl(suppress));
        match self.gates.get_mut(&**key) {
            Some(e) => *e = Expiring { value: (ts, by.clone()), expires },
            None => {
                self.gates
                    .insert((**key).to_owned(), Expiring { value: (ts, by.clone()), expires });
            }
        }
        if let Some(j) = &mut self.journal {
            j.gates.insert(key.clone());
        }
        verdict
    }

    fn covered(&self, span: &Span, now: Instant) -> Vec<(u64, u64)> {
        if let Some(id) = span.single {
            let seen = self.singles.get(&id).is_some_and(|&(t, _)| t > now);
            return if seen { vec![(0, 1)] } else { Vec::new() };
        }
        self.spans
            .get(&(span.node.clone(), span.epoch))
            .filter(|e| e.expires > now)
            .map(|e| {
                e.value.iter().copied().filter(|&(a, b)| a < span.end && b > span.first).collect()
            })
            .unwrap_or_default()
    }

    fn mark(&mut self, span: &Span, now: Instant) {
        if let Some(id) = span.single {
            self.singles_marked += 1;
            self.singles.insert(id, (ttl(now, DEDUP_TTL_SECS), self.singles_marked));
            return;
        }
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
    member: &Name,
    by: &Name,
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
    let was = w.members.raise(member, ts);
    if let Some(d) = &mut w.delta {
        d.dirty.push((member.clone(), was));
    }
    if w.newest.is_none_or(|n| ts > n) {
        w.newest = Some(ts);
        w.prune(ts - window - lateness);
    }
    if !check {
        return Verdict::Quiet;
    }
    let n = count as usize;
    if n == 0 {
        return Verdict::Quiet;
    }
    let span = w.members.span(ts - window, ts + window);
    let q = &w.members.by_time;
    let time = |k: usize| q[k].0;
    let mut fired = None;
    for i in span.clone() {
        let j = i + n - 1;
        if j >= span.end {
            break;
        }
        let (first, last) = (time(i), time(j));
        if last - first <= window && first <= ts && ts <= last {
            let within = (i..span.end).take_while(|&k| time(k) <= first + window).count();
            fired = Some((first, last, within));
            break;
        }
    }
    let Some((first, last, within)) = fired else { return Verdict::Quiet };
    w.use_up(first, last, by, ts);
    Verdict::Fired(within as u32)
}

fn seq_then(w: &mut Window, by: &Name, ts: i64, window: i64, count: u32) -> Verdict {
    if w.fired_by(by) {
        return Verdict::Fired(count);
    }
    let n = w.members.span(ts - window, ts).len();
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
        // Past the bound by an eighth, the oldest go (the newest `single_events` stay), so
        // the cost is a few steps per event marked.
        let max = self.single_events;
        if max > 0 && inner.singles.len() > max + max / 8 {
            let mut order: Vec<u64> = inner.singles.values().map(|&(_, n)| n).collect();
            let cut = order.len() - max;
            let (_, &mut oldest_kept, _) = order.select_nth_unstable(cut);
            inner.singles.retain(|_, &mut (_, n)| n >= oldest_kept);
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
