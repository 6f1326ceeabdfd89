//! The Redis [`WindowState`]. Redis holds the detection state every replica shares; each
//! replica evaluates ops in-process, on a cache of the state keys it has read or written, with
//! the in-memory state's own code, and writes back only what changed: Redis is single-threaded,
//! and evaluating every op in a Lua script there made it the ceiling of the cluster profile
//! (7 of 8.7 ms per 1,000 events went to Redis; docs/benchmarks.md, detection).
//!
//! Concurrency is optimistic. Every state key (`<rule>:<group>`) has a version, a random
//! token in `{prefix}v:<key>`. A call reads the keys its ops touch that are not cached yet
//! (`load.lua`, one round trip), evaluates its ops on the cache, and sends the changes with the
//! versions it read (`commit.lua`, one round trip). The script checks every version before it
//! writes anything: if another replica changed a key in between, nothing is written, the
//! call's keys are dropped from the cache, read again and the ops evaluated again. A script
//! runs atomically, so the verdicts are those of applying the calls one after another in
//! commit order, as before. With one replica, or replicas on different groups, a call is a
//! single round trip and Redis only stores.
//!
//! The cache mirrors Redis's TTLs: what this replica sets, it sets from the cache's expiry
//! times, and a cached key is read again before any of its parts could have expired in Redis
//! (and when another replica's write changed its version). Redis must not evict keys on its
//! own (`maxmemory-policy noeviction`, Redis's default), or a replica's cache would not notice.
//! Replicas from before versions existed do not bump versions: upgrade them all at once.
//!
//! Keys: `{prefix}w:{rule}:{group}` (sorted set, the window's live members), `…:h` (hash, the
//! used set: `=<member>` for members used up by a firing, `!<trigger>` for the firings'
//! triggers, each with its time, and `!` with the window's newest time; the older layout's
//! sorted set `…:u` is not read, see CHANGELOG.md for the upgrade), `{prefix}n:…` (hash, first-seen values),
//! `{prefix}g:…` (hash, cooldown: `ts`, `by`), `{prefix}v:…` (the version),
//! `{prefix}d:{node}:{epoch}` (sorted set, processed runs), `{prefix}fleet` (hash, nodes' last
//! heartbeat). Every key has a TTL. Sequence numbers and times must stay below 2^53 (Redis
//! scores are doubles); µs times and agent sequence numbers do by many orders of magnitude.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use redis::aio::ConnectionManager;
use redis::{Cmd, ErrorKind, Script, ServerErrorKind, Value};
use uuid::Uuid;

use super::memory::{Expiring, Inner, Journal, Window};
use super::{DEDUP_TTL_SECS, Name, Op, Span, StateError, Verdict, WindowState};

/// Ops per commit: keeps each commit's time in Redis's single thread short, so other
/// replicas' calls are not held up behind a huge batch.
const OPS_PER_CALL: usize = 2_000;

/// Raises each node's last-seen time in the fleet hash (never lowers it); the hash lives 30
/// days after the last heartbeat of any node.
const SEEN_LUA: &str = "
for i = 2, #ARGV, 2 do
  local old = tonumber(redis.call('HGET', ARGV[1], ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > old then redis.call('HSET', ARGV[1], ARGV[i], ARGV[i + 1]) end
end
redis.call('EXPIRE', ARGV[1], 2592000)
return 0";

/// Redis-backed detection state.
#[derive(Clone)]
pub struct RedisState {
    conn: ConnectionManager,
    prefix: String,
    load: Script,
    commit: Script,
    spans: Script,
    seen: Script,
    /// Single events each of the [`SINGLE_SETS`] sets keeps at most (0: no bound).
    per_set: u64,
    /// Shared by clones: they are one replica.
    cache: Arc<tokio::sync::Mutex<Cache>>,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisState {
    /// Connects (the connection manager reconnects by itself after a failure; the call that
    /// failed returns an error and its batch is retried).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StateError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            load: Script::new(include_str!("load.lua")),
            commit: Script::new(include_str!("commit.lua")),
            spans: Script::new(include_str!("spans.lua")),
            seen: Script::new(SEEN_LUA),
            per_set: 0,
            cache: Arc::default(),
        })
    }

    /// Bounds the single events the dedup record keeps to about `max`, the newest
    /// (`[retention] dedup_single_events`; 0: no bound).
    pub fn with_single_events(mut self, max: u64) -> Self {
        self.per_set = max.div_ceil(u64::from(SINGLE_SETS));
        self
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Checks that Redis answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }

    /// One of the sets of single events processed (design.md §4.4).
    fn singles_key(&self, set: u8) -> String {
        format!("{}i:{set}", self.prefix)
    }

    async fn spans_call(&self, mode: &str, spans: &[&Span]) -> Result<Value, StateError> {
        let mut inv = self.spans.prepare_invoke();
        inv.arg(&self.prefix).arg(mode).arg(DEDUP_TTL_SECS);
        for s in spans {
            inv.arg(&s.node).arg(s.epoch).arg(s.first).arg(s.end);
        }
        let mut conn = self.conn.clone();
        Ok(inv.invoke_async(&mut conn).await?)
    }
}

/// The sets single events are recorded in: a few, so that no key grows without bound in one
/// place, and few enough that a batch costs one command per set.
const SINGLE_SETS: u8 = 16;

/// The single spans among `spans` (indices `singles`) grouped by their set, with their ids.
fn by_set(spans: &[Span], singles: &[usize]) -> Vec<(u8, Vec<(usize, uuid::Uuid)>)> {
    let mut sets: Vec<(u8, Vec<(usize, uuid::Uuid)>)> = Vec::new();
    for &i in singles {
        let Some(id) = spans[i].single else { continue };
        // The first byte is random in v4 and hashed in v5 ids.
        let set = id.as_bytes()[0] % SINGLE_SETS;
        match sets.iter_mut().find(|(s, _)| *s == set) {
            Some((_, members)) => members.push((i, id)),
            None => sets.push((set, vec![(i, id)])),
        }
    }
    sets
}

/// How close to expiring a cached key may be and still be used without reading it again: covers
/// the time between evaluating a call and Redis applying it, and clock drift.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// How often a call is evaluated again after other replicas changed its keys, before it gives
/// up (the batch is then retried as after any state error).
const ATTEMPTS: u32 = 20;

/// What this replica knows of the state in Redis.
#[derive(Default)]
struct Cache {
    /// The state keys' contents, with the in-memory state's code and expiry times.
    state: Inner,
    /// The version each cached key had when it was read or last written.
    units: HashMap<String, Unit>,
    /// Calls since the units were last swept.
    since_sweep: u32,
}

/// A cached state key: its version and when Redis expires each of its parts (the TTLs last
/// read or written; the cache's own expiry times may run up to [`TTL_REFRESH`] ahead).
#[derive(Default)]
struct Unit {
    /// `None`: the key had no version (nothing stored).
    version: Option<String>,
    /// The live and used sets.
    window: Option<Instant>,
    /// The cooldown.
    gate: Option<Instant>,
    /// The first-seen values.
    values: Option<Instant>,
    /// For a key that had nothing stored when it was read: until when that may be assumed
    /// without reading it again (a commit checks it anyway; this only bounds the cache).
    until: Option<Instant>,
}

impl Unit {
    fn parts(&self) -> impl Iterator<Item = Instant> {
        [self.window, self.gate, self.values].into_iter().flatten()
    }

    /// Whether the cached key can be used at `now`.
    fn valid(&self, now: Instant) -> bool {
        self.parts().chain(self.until).min().is_some_and(|t| t > now + EXPIRY_MARGIN)
    }
}

/// How long a key found empty is cached as empty.
const ABSENT_FOR: Duration = Duration::from_secs(3_600);

/// How far a key's TTL may lag behind the cache's before the commit refreshes it: a minute, so
/// a busy key's TTL is written once a minute, not with every batch.
const TTL_REFRESH: Duration = Duration::from_secs(60);

impl Cache {
    /// Forgets `keys` (their contents may be ahead of or behind Redis).
    fn evict<'k>(&mut self, keys: impl IntoIterator<Item = &'k Name>) {
        for k in keys {
            self.state.windows.remove(&**k);
            self.state.gates.remove(&**k);
            self.state.values.remove(&**k);
            self.units.remove(&**k);
        }
    }

    /// Records what `load.lua` returned for `key`.
    fn load(&mut self, key: &str, reply: &Value, now: Instant) -> Result<(), StateError> {
        let bad = || StateError::Protocol(format!("load reply for {key}: {reply:?}"));
        let Value::Array(parts) = reply else { return Err(bad()) };
        let [version, live, live_ttl, used, used_ttl, gate, gate_ttl, values, values_ttl] =
            parts.as_slice()
        else {
            return Err(bad());
        };
        let name = Name::from(key);
        self.evict([&name]);
        let mut unit = Unit::default();
        let ms = |v: &Value| match v {
            Value::Int(t) => Ok(*t),
            _ => Err(bad()),
        };
        let at = |t: i64| now + Duration::from_millis(u64::try_from(t).unwrap_or(3_600_000));
        let (live_ttl, used_ttl) = (ms(live_ttl)?, ms(used_ttl)?);
        if live_ttl != -2 || used_ttl != -2 {
            let mut w = Window::default();
            for (m, score) in pairs(live).ok_or_else(bad)? {
                let score: f64 = score.parse().map_err(|_| bad())?;
                // Scores are µs times below 2^53, exact in a double.
                w.members.raise(&Name::from(m), score as i64);
            }
            for (m, t) in pairs(used).ok_or_else(bad)? {
                let score: i64 = t.parse().map_err(|_| bad())?;
                match (m.strip_prefix('='), m.strip_prefix('!')) {
                    (Some(m), _) => _ = w.used.raise(&Name::from(m), score),
                    (_, Some("")) => w.newest = Some(score),
                    (_, Some(by)) => _ = w.triggers.raise(&Name::from(by), score),
                    _ => return Err(bad()),
                }
            }
            // The set that expires first bounds how long the cache may use both.
            let ttl = match (live_ttl, used_ttl) {
                (-2, t) | (t, -2) => t,
                (a, b) => a.min(b),
            };
            unit.window = Some(at(ttl));
            self.state.windows.insert(key.to_owned(), Expiring { value: w, expires: at(ttl) });
        }
        let gate_ttl = ms(gate_ttl)?;
        if gate_ttl != -2 {
            let Value::Array(g) = gate else { return Err(bad()) };
            let (Some(ts), Some(by)) = (g.first().and_then(text), g.get(1).and_then(text)) else {
                return Err(bad());
            };
            let ts: i64 = ts.parse().map_err(|_| bad())?;
            let value = (ts, Name::from(by.as_str()));
            unit.gate = Some(at(gate_ttl));
            self.state.gates.insert(key.to_owned(), Expiring { value, expires: at(gate_ttl) });
        }
        let values_ttl = ms(values_ttl)?;
        if values_ttl != -2 {
            let map = pairs(values)
                .ok_or_else(bad)?
                .into_iter()
                .map(|(v, by)| (v, Name::from(by)))
                .collect();
            unit.values = Some(at(values_ttl));
            self.state
                .values
                .insert(key.to_owned(), Expiring { value: map, expires: at(values_ttl) });
        }
        unit.version = text(version).filter(|v| !v.is_empty());
        if unit.parts().next().is_none() {
            unit.until = Some(now + ABSENT_FOR);
        }
        self.units.insert(key.to_owned(), unit);
        Ok(())
    }
}

/// A flat reply of pairs (`ZRANGE … WITHSCORES`: member, score, …; `HGETALL`: field,
/// value, …).
fn pairs(v: &Value) -> Option<Vec<(String, String)>> {
    let Value::Array(flat) = v else { return None };
    flat.chunks_exact(2).map(|p| Some((text(&p[0])?, text(&p[1])?))).collect()
}

/// Milliseconds from `now` until `t`, at least 1 (Redis deletes a key given 0).
fn ms_until(t: Instant, now: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX).max(1)
}

/// What a committed record changes in its [`Unit`].
struct Written {
    key: Name,
    /// Whether the key gets the new version.
    wrote: bool,
    window: Option<Instant>,
    gate: Option<Instant>,
    values: Option<Instant>,
}

/// Whether a part whose Redis TTL ends at `written` (none: not stored) and whose cached copy
/// expires at `cached` needs its TTL written.
fn refresh(written: Option<Instant>, cached: Instant) -> bool {
    written.is_none_or(|w| cached > w + TTL_REFRESH)
}

/// Starts a section of a commit record: anything but the version's TTL is a write, so the key
/// gets the new version.
fn section<'c>(cmd: &'c mut Cmd, wrote: &mut bool, tag: &str) -> &'c mut Cmd {
    *wrote = true;
    cmd.arg(tag)
}

/// Adds a used-set field: `!<trigger>` or `=<member>` (made in `buf`, reused).
fn used_field<'c>(cmd: &'c mut Cmd, buf: &mut String, trigger: bool, m: &str) -> &'c mut Cmd {
    buf.clear();
    buf.push(if trigger { '!' } else { '=' });
    buf.push_str(m);
    cmd.arg(buf.as_str())
}

/// Writes one key's record of a commit (the layout is in `commit.lua`) and ends its window's
/// delta.
fn commit_record(
    cmd: &mut Cmd,
    cache: &mut Cache,
    key: &Name,
    journal: &Journal,
    now: Instant,
) -> Written {
    let Cache { state, units, .. } = cache;
    let unit = units.get(&**key);
    let version = unit.and_then(|u| u.version.as_deref());
    let mut out = Written {
        key: key.clone(),
        wrote: false,
        window: unit.and_then(|u| u.window),
        gate: unit.and_then(|u| u.gate),
        values: unit.and_then(|u| u.values),
    };
    let mut ttl_moved = false;
    cmd.arg(&**key).arg(version.unwrap_or(""));
    if let Some(entry) = state.windows.get_mut(&**key)
        && let Some(mut delta) = entry.value.delta.take()
    {
        let w = &mut entry.value;
        // The first touch of a member says whether it was stored before this call.
        delta.dirty.sort_by(|a, b| a.0.cmp(&b.0));
        delta.dirty.dedup_by(|a, b| a.0 == b.0);
        let kept: Vec<(&Name, i64)> = delta
            .dirty
            .iter()
            .filter_map(|(m, _)| w.members.by_name.get(&**m).map(|t| (m, *t)))
            .collect();
        let made = !kept.is_empty() && !delta.had_members;
        if !kept.is_empty() {
            section(cmd, &mut out.wrote, "A").arg(kept.len());
            for (m, t) in kept {
                cmd.arg(t).arg(&**m);
            }
        }
        let gone: Vec<&Name> = delta
            .dirty
            .iter()
            .filter(|(m, stored)| *stored && !w.members.by_name.contains_key(&**m))
            .map(|(m, _)| m)
            .collect();
        if !gone.is_empty() {
            section(cmd, &mut out.wrote, "R").arg(gone.len());
            for m in gone {
                cmd.arg(&**m);
            }
        }
        // The used set mirrors the cache's used entries and triggers exactly: entries pruned
        // (and not back since) are deleted, then the ones added and still held (a later prune
        // in the same call may have dropped some) are written, with the newest time when it
        // moved.
        let held = |trigger: bool, m: &str| {
            let set = if trigger { &w.triggers } else { &w.used };
            set.by_name.get(m).copied()
        };
        let dropped: Vec<&(bool, Name)> =
            delta.pruned.iter().filter(|(trigger, m)| held(*trigger, m).is_none()).collect();
        let mut field = String::new();
        if !dropped.is_empty() {
            section(cmd, &mut out.wrote, "Q").arg(dropped.len());
            for (trigger, m) in dropped {
                used_field(cmd, &mut field, *trigger, m);
            }
        }
        let newly: Vec<&(i64, bool, Name)> =
            delta.newly.iter().filter(|(t, trigger, m)| held(*trigger, m) == Some(*t)).collect();
        let newest = delta.horizon.and(w.newest);
        let used = newly.len() + usize::from(newest.is_some());
        let made = made || (used > 0 && !delta.had_newest);
        if used > 0 {
            section(cmd, &mut out.wrote, "U").arg(used);
            for (t, trigger, m) in newly {
                used_field(cmd, &mut field, *trigger, m).arg(t);
            }
            if let Some(t) = newest {
                cmd.arg("!").arg(t);
            }
        }
        // Pruning what the cache did not hold would find nothing in Redis either.
        if let Some(h) = delta.horizon
            && delta.pruned_live
        {
            section(cmd, &mut out.wrote, "P").arg(format!("({h}"));
        }
        // A set made by this commit has no TTL yet. (The script adds members before it removes
        // any, so a set that keeps members is never emptied, deleted and made again.)
        if made || refresh(out.window, entry.expires) {
            section(cmd, &mut out.wrote, "W").arg(ms_until(entry.expires, now));
            out.window = Some(entry.expires);
            ttl_moved = true;
        }
    }
    if let Some(g) = state.gates.get(&**key)
        && journal.gates.contains(key)
    {
        section(cmd, &mut out.wrote, "G")
            .arg(g.value.0)
            .arg(&*g.value.1)
            .arg(ms_until(g.expires, now));
        out.gate = Some(g.expires);
        ttl_moved = true;
    }
    if let Some(v) = state.values.get(&**key)
        && let Some(added) = journal.values.get(key)
    {
        if !added.is_empty() {
            section(cmd, &mut out.wrote, "V").arg(added.len());
            for (value, by) in added {
                cmd.arg(value).arg(&**by);
            }
        }
        if refresh(out.values, v.expires) {
            section(cmd, &mut out.wrote, "N").arg(ms_until(v.expires, now));
            out.values = Some(v.expires);
            ttl_moved = true;
        }
    }
    // The version outlives every part, and a new version key needs a TTL of its own.
    if out.wrote && (ttl_moved || version.is_none()) {
        let last = [out.window, out.gate, out.values].into_iter().flatten().max();
        cmd.arg("S").arg(last.map_or(3_600_000, |t| ms_until(t, now)));
    }
    cmd.arg(".");
    out
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

impl RedisState {
    /// Runs `cmd` (an `EVALSHA` of `script`), loading the script first if Redis does not have
    /// it (first use, or after a restart or `SCRIPT FLUSH`), as `Script::invoke_async` does.
    async fn eval(&self, script: &Script, cmd: &Cmd) -> Result<Value, StateError> {
        let mut conn = self.conn.clone();
        match cmd.query_async(&mut conn).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                script.load_async(&mut conn).await?;
                Ok(cmd.query_async(&mut conn).await?)
            }
            other => Ok(other?),
        }
    }

    /// Reads `keys` into the cache.
    async fn load(&self, cache: &mut Cache, keys: &[&Name]) -> Result<(), StateError> {
        let mut cmd = Cmd::with_capacity(5 + keys.len(), 64 * keys.len());
        cmd.arg("EVALSHA").arg(self.load.get_hash()).arg(0).arg(&self.prefix);
        cmd.arg(Uuid::new_v4().simple().to_string());
        for k in keys {
            cmd.arg(&***k);
        }
        let reply = self.eval(&self.load, &cmd).await?;
        let now = Instant::now();
        let Value::Array(per_key) = &reply else {
            return Err(StateError::Protocol(format!("load: {reply:?}")));
        };
        if per_key.len() != keys.len() {
            return Err(StateError::Protocol("load: one answer per key expected".into()));
        }
        for (k, r) in keys.iter().zip(per_key) {
            cache.load(k, r, now)?;
        }
        Ok(())
    }

    /// One call's ops: read what is missing, evaluate, commit; again if another replica
    /// changed the keys in between.
    async fn apply_chunk(&self, cache: &mut Cache, ops: &[Op]) -> Result<Vec<Verdict>, StateError> {
        let mut keys: Vec<&Name> = Vec::new();
        {
            let mut seen = hashbrown::HashSet::new();
            for op in ops {
                let key = op.key();
                if seen.insert(&**key) {
                    keys.push(key);
                }
            }
        }
        for attempt in 0..ATTEMPTS {
            let now = Instant::now();
            let missing: Vec<&Name> = keys
                .iter()
                .copied()
                .filter(|k| !cache.units.get(&***k).is_some_and(|u| u.valid(now)))
                .collect();
            if !missing.is_empty() {
                self.load(cache, &missing).await?;
            }
            let now = Instant::now();
            cache.state.journal = Some(Journal::default());
            let verdicts = cache.state.apply_all(ops, now);
            let journal = cache.state.journal.take().unwrap_or_default();
            let token = Uuid::new_v4().simple().to_string();
            let mut cmd = Cmd::with_capacity(5 + ops.len() * 6, ops.len() * 80);
            cmd.arg("EVALSHA").arg(self.commit.get_hash()).arg(0).arg(&self.prefix).arg(&token);
            let written: Vec<Written> = journal
                .keys
                .iter()
                .map(|key| commit_record(&mut cmd, cache, key, &journal, now))
                .collect();
            let reply = match self.eval(&self.commit, &cmd).await {
                Ok(r) => r,
                Err(e) => {
                    // Whether it was applied is unknown: read the keys again next time.
                    cache.evict(&journal.keys);
                    return Err(e);
                }
            };
            let Value::Array(stale) = reply else {
                cache.evict(&journal.keys);
                return Err(StateError::Protocol(format!("commit: {reply:?}")));
            };
            if stale.is_empty() {
                for w in written {
                    let unit = cache.units.entry_ref(&*w.key).or_default();
                    if w.wrote {
                        unit.version = Some(token.clone());
                    }
                    (unit.window, unit.gate, unit.values) = (w.window, w.gate, w.values);
                    if unit.parts().next().is_some() {
                        unit.until = None;
                    }
                }
                return Ok(verdicts);
            }
            // Another replica got there first: evaluate again on what it wrote.
            cache.evict(&journal.keys);
            tokio::time::sleep(Duration::from_millis(u64::from(attempt))).await;
        }
        Err(StateError::Protocol(format!(
            "other replicas kept changing this call's state keys: gave up after {ATTEMPTS} attempts"
        )))
    }
}

impl WindowState for RedisState {
    async fn apply(&self, ops: &[Op]) -> Result<Vec<Verdict>, StateError> {
        // One call at a time per replica: the cache is evaluated and committed as a whole.
        let mut cache = self.cache.lock().await;
        cache.since_sweep += 1;
        if cache.since_sweep >= 1_000 {
            cache.since_sweep = 0;
            let now = Instant::now();
            cache.units.retain(|_, u| u.valid(now));
        }
        let mut out = Vec::with_capacity(ops.len());
        for chunk in ops.chunks(OPS_PER_CALL) {
            out.extend(self.apply_chunk(&mut cache, chunk).await?);
        }
        Ok(out)
    }

    async fn processed(&self, spans: &[Span]) -> Result<Vec<Vec<(u64, u64)>>, StateError> {
        let mut out = vec![Vec::new(); spans.len()];
        let (runs, singles): (Vec<usize>, Vec<usize>) =
            (0..spans.len()).partition(|&i| spans[i].single.is_none());
        if !runs.is_empty() {
            let asked: Vec<&Span> = runs.iter().map(|&i| &spans[i]).collect();
            let reply = self.spans_call("check", &asked).await?;
            let Value::Array(per_span) = reply else {
                return Err(StateError::Protocol(format!("{reply:?}")));
            };
            if per_span.len() != runs.len() {
                return Err(StateError::Protocol("one answer per span expected".into()));
            }
            for (&i, found) in runs.iter().zip(&per_span) {
                let Value::Array(items) = found else {
                    return Err(StateError::Protocol(format!("{found:?}")));
                };
                let nums: Option<Vec<u64>> =
                    items.iter().map(|v| text(v).and_then(|t| t.parse().ok())).collect();
                let nums = nums.ok_or_else(|| StateError::Protocol(format!("{items:?}")))?;
                out[i] = nums.chunks_exact(2).map(|p| (p[0], p[1])).collect();
            }
        }
        if !singles.is_empty() {
            let sets = by_set(spans, &singles);
            let mut pipe = redis::pipe();
            for (set, members) in &sets {
                let cmd = pipe.cmd("ZMSCORE").arg(self.singles_key(*set));
                for &(_, id) in members {
                    cmd.arg(id.as_bytes());
                }
            }
            let mut conn = self.conn.clone();
            let replies: Vec<Vec<Option<f64>>> = pipe.query_async(&mut conn).await?;
            if replies.len() != sets.len() {
                return Err(StateError::Protocol("one answer per set expected".into()));
            }
            for ((_, members), found) in sets.iter().zip(&replies) {
                if found.len() != members.len() {
                    return Err(StateError::Protocol("one answer per id expected".into()));
                }
                for (&(i, _), score) in members.iter().zip(found) {
                    if score.is_some() {
                        out[i] = vec![(0, 1)];
                    }
                }
            }
        }
        Ok(out)
    }

    async fn mark_processed(&self, spans: &[Span]) -> Result<(), StateError> {
        let (runs, singles): (Vec<usize>, Vec<usize>) =
            (0..spans.len()).partition(|&i| spans[i].single.is_none());
        if !runs.is_empty() {
            let marked: Vec<&Span> = runs.iter().map(|&i| &spans[i]).collect();
            self.spans_call("mark", &marked).await?;
        }
        if !singles.is_empty() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let mut pipe = redis::pipe();
            for (set, members) in by_set(spans, &singles) {
                let key = self.singles_key(set);
                let cmd = pipe.cmd("ZADD").arg(&key);
                for (_, id) in members {
                    cmd.arg(now).arg(id.as_bytes());
                }
                pipe.ignore();
                // What was processed more than the record's lifetime ago is forgotten here,
                // a little with every batch (a set's members have no expiry of their own).
                let horizon = now.saturating_sub(DEDUP_TTL_SECS);
                pipe.cmd("ZREMRANGEBYSCORE").arg(&key).arg("-inf").arg(format!("({horizon}"));
                if self.per_set > 0 {
                    // And beyond the bound, the oldest.
                    let keep = i64::try_from(self.per_set).unwrap_or(i64::MAX);
                    pipe.ignore().cmd("ZREMRANGEBYRANK").arg(&key).arg(0).arg(-keep - 1);
                }
                pipe.ignore().cmd("EXPIRE").arg(&key).arg(DEDUP_TTL_SECS).ignore();
            }
            let mut conn = self.conn.clone();
            let () = pipe.query_async(&mut conn).await?;
        }
        Ok(())
    }

    async fn record_seen(&self, seen: &[(String, i64)]) -> Result<(), StateError> {
        if seen.is_empty() {
            return Ok(());
        }
        // Only forward: a late heartbeat must not make a node look older than it is.
        let mut inv = self.seen.prepare_invoke();
        inv.arg(format!("{}fleet", self.prefix));
        for (node, at) in seen {
            inv.arg(node).arg(at);
        }
        let mut conn = self.conn.clone();
        let _: i64 = inv.invoke_async(&mut conn).await?;
        Ok(())
    }

    async fn last_seen(&self) -> Result<Vec<(String, i64)>, StateError> {
        let mut conn = self.conn.clone();
        let map: std::collections::HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(format!("{}fleet", self.prefix))
            .query_async(&mut conn)
            .await?;
        let mut out: Vec<(String, i64)> = map.into_iter().collect();
        out.sort();
        Ok(out)
    }
}
