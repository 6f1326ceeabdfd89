//! The Redis [`WindowState`]: every call is one Lua script invocation (`EVALSHA`, loaded on
//! first use), so a batch's ops are applied atomically and in order with one round trip, and
//! replicas sharing the Redis agree. Keys live under one prefix and every key has a TTL.
//!
//! Keys: `{prefix}w:{rule}:{group}` (sorted set, the window's live members), `…:u` (sorted
//! set, members used up by firings, the firings' triggers, and the window's newest time; see
//! `window.lua`), `{prefix}n:…` (hash, first-seen values), `{prefix}g:…` (hash, cooldown),
//! `{prefix}d:{node}:{epoch}` (sorted set, processed runs), `{prefix}fleet` (hash, nodes' last
//! heartbeat). Sequence numbers and times must
//! stay below 2^53 (Redis scores and Lua numbers are doubles); µs times and agent sequence
//! numbers do by many orders of magnitude.

use hashbrown::HashMap;
use redis::aio::ConnectionManager;
use redis::{Cmd, ErrorKind, Script, ServerErrorKind, Value};

use super::{DEDUP_TTL_SECS, Op, Span, StateError, Verdict, WindowState, window_ttl};

/// Ops per script call: keeps each call's time in Redis's single thread short, so other
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
    window: Script,
    spans: Script,
    seen: Script,
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
            window: Script::new(include_str!("window.lua")),
            spans: Script::new(include_str!("spans.lua")),
            seen: Script::new(SEEN_LUA),
        })
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

    async fn spans_call(&self, mode: &str, spans: &[Span]) -> Result<Value, StateError> {
        let mut inv = self.spans.prepare_invoke();
        inv.arg(&self.prefix).arg(mode).arg(DEDUP_TTL_SECS);
        for s in spans {
            inv.arg(&s.node).arg(s.epoch).arg(s.first).arg(s.end);
        }
        let mut conn = self.conn.clone();
        Ok(inv.invoke_async(&mut conn).await?)
    }
}

/// A cooldown's key and length, or none (`""`).
fn gate_args(cmd: &mut Cmd, key: &str, suppress: Option<i64>) {
    match suppress {
        Some(s) => cmd.arg(key).arg(s),
        None => cmd.arg("").arg(0),
    };
}

/// What a window op needs besides its event: declared once per window and call (a `K`
/// record), and again only if a later op of the same window needs other values.
#[derive(Clone, Copy, PartialEq)]
struct WindowParams {
    window: i64,
    count: u32,
    lateness: i64,
    ttl: u64,
    suppress: Option<i64>,
}

/// One script call's arguments: the ops' records, with their windows' declarations. They are
/// written straight into one `EVALSHA` command: redis-rs's `ScriptInvocation` keeps each
/// argument in a buffer of its own, and those thousands of allocations and frees per call were
/// most of the benchmark's own time with Redis state.
struct Call<'a, 'c> {
    cmd: &'c mut Cmd,
    /// Window key -> the parameters last declared for it and that declaration's number.
    declared: HashMap<&'a str, (WindowParams, usize)>,
    /// Declarations so far (the script numbers them 1, 2, ...).
    decls: usize,
}

impl<'a> Call<'a, '_> {
    /// The number of the declaration of `key` with `params`, declaring it if needed.
    fn window(&mut self, key: &'a str, params: WindowParams) -> usize {
        if let Some((p, n)) = self.declared.get(key)
            && *p == params
        {
            return *n;
        }
        self.decls += 1;
        let n = self.decls;
        self.cmd.arg("K").arg(key).arg(params.window).arg(params.count);
        self.cmd.arg(params.lateness).arg(params.ttl);
        gate_args(self.cmd, key, params.suppress);
        self.declared.insert(key, (params, n));
        n
    }

    fn push(&mut self, op: &'a Op) {
        match op {
            Op::Window { key, member, by, ts, window, count, lateness, suppress } => {
                let ttl = window_ttl(*window, *lateness);
                let params = WindowParams {
                    window: *window,
                    count: *count,
                    lateness: *lateness,
                    ttl,
                    suppress: *suppress,
                };
                let n = self.window(key, params);
                self.cmd.arg("W").arg(n).arg(&**member).arg(&**by).arg(ts);
            }
            Op::SeqFirst { key, member, ts, window, lateness } => {
                let ttl = window_ttl(*window, *lateness);
                let params = WindowParams {
                    window: *window,
                    count: 0,
                    lateness: *lateness,
                    ttl,
                    suppress: None,
                };
                let n = self.window(key, params);
                self.cmd.arg("F").arg(n).arg(&**member).arg(ts);
            }
            Op::SeqThen { key, by, ts, window, count, suppress } => {
                let ttl = window_ttl(*window, 0);
                let params = WindowParams {
                    window: *window,
                    count: *count,
                    lateness: 0,
                    ttl,
                    suppress: *suppress,
                };
                let n = self.window(key, params);
                self.cmd.arg("T").arg(n).arg(&**by).arg(ts);
            }
            Op::NewValue { key, value, by, ts, ttl, suppress } => {
                self.cmd.arg("N").arg(&**key).arg(value).arg(&**by).arg(ts).arg(ttl);
                gate_args(self.cmd, key, *suppress);
            }
            Op::Gate { key, by, ts, suppress } => {
                self.cmd.arg("G").arg(&**by).arg(ts);
                gate_args(self.cmd, key, Some(*suppress));
            }
        }
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

impl WindowState for RedisState {
    async fn apply(&self, ops: &[Op]) -> Result<Vec<Verdict>, StateError> {
        let mut out = Vec::with_capacity(ops.len());
        for chunk in ops.chunks(OPS_PER_CALL) {
            // Sized for about five arguments and 80 bytes an op, so the buffers rarely grow.
            let mut cmd = Cmd::with_capacity(3 + chunk.len() * 5, chunk.len() * 80);
            cmd.arg("EVALSHA").arg(self.window.get_hash()).arg(0).arg(&self.prefix);
            let mut call = Call { cmd: &mut cmd, declared: HashMap::new(), decls: 0 };
            for op in chunk {
                call.push(op);
            }
            let mut conn = self.conn.clone();
            // As Script::invoke_async does: load the script when Redis does not have it yet
            // (first use, or after a restart or SCRIPT FLUSH), then retry once.
            let codes: Vec<i64> = match cmd.query_async(&mut conn).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    self.window.load_async(&mut conn).await?;
                    cmd.query_async(&mut conn).await?
                }
                other => other?,
            };
            if codes.len() != chunk.len() {
                return Err(StateError::Protocol(format!(
                    "{} verdicts for {} ops",
                    codes.len(),
                    chunk.len()
                )));
            }
            out.extend(codes.into_iter().map(Verdict::from_code));
        }
        Ok(out)
    }

    async fn processed(&self, spans: &[Span]) -> Result<Vec<Vec<(u64, u64)>>, StateError> {
        if spans.is_empty() {
            return Ok(Vec::new());
        }
        let reply = self.spans_call("check", spans).await?;
        let Value::Array(per_span) = reply else {
            return Err(StateError::Protocol(format!("{reply:?}")));
        };
        if per_span.len() != spans.len() {
            return Err(StateError::Protocol("one answer per span expected".into()));
        }
        per_span
            .iter()
            .map(|runs| {
                let Value::Array(items) = runs else {
                    return Err(StateError::Protocol(format!("{runs:?}")));
                };
                let nums: Option<Vec<u64>> =
                    items.iter().map(|v| text(v).and_then(|t| t.parse().ok())).collect();
                let nums = nums.ok_or_else(|| StateError::Protocol(format!("{items:?}")))?;
                Ok(nums.chunks_exact(2).map(|p| (p[0], p[1])).collect())
            })
            .collect()
    }

    async fn mark_processed(&self, spans: &[Span]) -> Result<(), StateError> {
        if !spans.is_empty() {
            self.spans_call("mark", spans).await?;
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
