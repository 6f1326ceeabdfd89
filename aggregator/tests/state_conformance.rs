//! One conformance suite for both `WindowState` implementations: the in-memory one and the
//! Redis one (the real Redis the test script brings up; `REDIS_URL` must be set — the Redis
//! half fails, never skips, without it).

use std::sync::Arc;

use aggregator::state::memory::MemoryState;
use aggregator::state::redis::RedisState;
use aggregator::state::{Op, Span, Verdict, WindowState};

const S: i64 = 1_000_000;
const T0: i64 = 1_767_225_600 * S;

fn window(key: &str, member: &str, at: i64, count: u32) -> Op {
    Op::Window {
        key: key.into(),
        member: member.into(),
        by: member.into(),
        ts: T0 + at * S,
        window: 60 * S,
        count,
        lateness: 300 * S,
        suppress: None,
    }
}

async fn redis_state() -> RedisState {
    let url = std::env::var("REDIS_URL")
        .expect("REDIS_URL is not set: these tests need the Redis that scripts/test.sh starts");
    let prefix = format!("aftest:{}:{}:", std::process::id(), uuid_like());
    RedisState::connect(&url, &prefix)
        .await
        .unwrap_or_else(|e| panic!("cannot reach Redis at {url}: {e}"))
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

async fn apply(s: &impl WindowState, ops: &[Op]) -> Vec<Verdict> {
    s.apply(ops).await.expect("state call")
}

async fn threshold_counts_in_event_time(s: &impl WindowState) {
    let v =
        apply(s, &[window("a", "e1", 0, 3), window("a", "e2", 30, 3), window("a", "e3", 60, 3)])
            .await;
    assert_eq!(v, [Verdict::Quiet, Verdict::Quiet, Verdict::Fired(3)]);
    // Spread over 61 s: no firing.
    let v =
        apply(s, &[window("b", "e1", 0, 3), window("b", "e2", 30, 3), window("b", "e3", 61, 3)])
            .await;
    assert_eq!(v, [Verdict::Quiet; 3]);
    // Redelivered: the trigger fires again (same firing id downstream), the others stay quiet,
    // and nothing new fires.
    let v =
        apply(s, &[window("a", "e1", 0, 3), window("a", "e2", 30, 3), window("a", "e3", 60, 3)])
            .await;
    assert_eq!(v, [Verdict::Quiet, Verdict::Quiet, Verdict::Fired(3)]);
    // After a firing the window starts afresh.
    let v =
        apply(s, &[window("a", "e4", 61, 3), window("a", "e5", 62, 3), window("a", "e6", 63, 3)])
            .await;
    assert_eq!(v, [Verdict::Quiet, Verdict::Quiet, Verdict::Fired(3)]);
    // A duplicate member does not count twice.
    let v = apply(s, &[window("c", "e1", 0, 2), window("c", "e1", 0, 2)]).await;
    assert_eq!(v, [Verdict::Quiet, Verdict::Quiet]);
    // Redelivered within the call that fired it: the same firing again, nothing new.
    let v = apply(s, &[window("r", "e1", 0, 2), window("r", "e2", 1, 2), window("r", "e2", 1, 2)])
        .await;
    assert_eq!(v, [Verdict::Quiet, Verdict::Fired(2), Verdict::Fired(2)]);
}

async fn arrival_order_does_not_matter(s: &impl WindowState) {
    // A later burst processed before an earlier one (two replicas, an agent's replay): both
    // fire, and a redelivered event of a fired window neither fires nor starts a new one.
    let later: Vec<Op> = (0..3).map(|i| window("ord", &format!("b{i}"), 200 + i, 3)).collect();
    let earlier: Vec<Op> = (0..3).map(|i| window("ord", &format!("a{i}"), 100 + i, 3)).collect();
    assert_eq!(apply(s, &later).await[2], Verdict::Fired(3));
    assert_eq!(apply(s, &earlier).await[2], Verdict::Fired(3));
    let again =
        [window("ord", "a0", 100, 3), window("ord", "b1", 201, 3), window("ord", "c0", 203, 3)];
    assert_eq!(apply(s, &again).await, [Verdict::Quiet; 3]);
}

async fn late_events_are_refused(s: &impl WindowState) {
    let v = apply(s, &[window("late", "e1", 1000, 3), window("late", "e2", 1000 - 361, 3)]).await;
    assert_eq!(v, [Verdict::Quiet, Verdict::Late]);
    // Within the allowed lateness an out-of-order event still completes a window.
    let v = apply(s, &[window("late", "e3", 990, 3), window("late", "e4", 995, 3)]).await;
    assert_eq!(v, [Verdict::Quiet, Verdict::Fired(3)]);
}

async fn pruning_takes_effect_within_one_call(s: &impl WindowState) {
    // The Redis script prunes a window physically only when its call ends; an op later in the
    // same call must already see the window as pruned, as the memory state does.
    let steps = [
        ("pr", "m1", 0),
        ("pr", "m2", 10),  // m1 and m2 fire; m2 is the trigger
        ("pr", "m3", 400), // the horizon moves to 400 - 60 - 300 = 40
        ("pr", "m2", 10),  // the trigger, redelivered behind the horizon: late
        ("pq", "p1", 0),
        ("pq", "p2", 400), // the horizon moves to 40: p1 is gone
        ("pq", "p3", 41),  // alone in its window (with p1 it would fire)
    ];
    let one_call: Vec<Op> = steps.iter().map(|(k, m, at)| window(k, m, *at, 2)).collect();
    let v = apply(s, &one_call).await;
    use Verdict::{Fired, Late, Quiet};
    assert_eq!(v, [Quiet, Fired(2), Quiet, Late, Quiet, Quiet, Quiet]);
    // Other windows, one call per op: the same verdicts.
    let mut split = Vec::new();
    for (k, m, at) in steps {
        split.push(apply(s, &[window(&format!("{k}-split"), m, at, 2)]).await[0]);
    }
    assert_eq!(split, v);
}

/// A distinct rule's op: `member` is the value counted, `by` the event.
fn distinct(key: &str, count: u32, member: &str, by: &str, at: i64) -> Op {
    Op::Window {
        key: key.into(),
        member: member.into(),
        by: by.into(),
        ts: T0 + at * S,
        window: 60 * S,
        count,
        lateness: 0,
        suppress: None,
    }
}

async fn distinct_counts_values(s: &impl WindowState) {
    let op = |member: &str, by: &str, at: i64| distinct("d", 3, member, by, at);
    let v = apply(
        s,
        &[op("alice", "e1", 0), op("alice", "e2", 1), op("bob", "e3", 2), op("carol", "e4", 3)],
    )
    .await;
    assert_eq!(v, [Verdict::Quiet, Verdict::Quiet, Verdict::Quiet, Verdict::Fired(3)]);
    // Values are anything an event carries, "!" included, and must not pass for the state's
    // own bookkeeping (the Redis script keeps a window's newest time and its triggers in the
    // same set as used-up values).
    let op2 = |member: &str, by: &str, at: i64| distinct("d2", 2, member, by, at);
    assert_eq!(apply(s, &[op2("x", "e1", 100)]).await, [Verdict::Quiet]);
    assert_eq!(apply(s, &[op2("!", "e2", 50)]).await, [Verdict::Fired(2)]);
    // Still behind the horizon of the newest time (100 - 60).
    assert_eq!(apply(s, &[op2("y", "e3", 39)]).await, [Verdict::Late]);
}

/// A sequence's first step (10 min window, no lateness).
fn seq_first(key: &str, member: &str, at: i64) -> Op {
    Op::SeqFirst {
        key: key.into(),
        member: member.into(),
        ts: T0 + at * S,
        window: 600 * S,
        lateness: 0,
    }
}

/// A sequence's closing step: two first steps within 10 min before it.
fn seq_then(key: &str, by: &str, at: i64) -> Op {
    Op::SeqThen {
        key: key.into(),
        by: by.into(),
        ts: T0 + at * S,
        window: 600 * S,
        count: 2,
        suppress: None,
    }
}

async fn sequences(s: &impl WindowState) {
    let first = |m: &str, at: i64| seq_first("s", m, at);
    let then = |by: &str, at: i64| seq_then("s", by, at);
    let v =
        apply(s, &[then("x0", 0), first("f1", 1), then("x1", 2), first("f2", 3), then("x2", 4)])
            .await;
    assert_eq!(
        v,
        [Verdict::Quiet, Verdict::Quiet, Verdict::Quiet, Verdict::Quiet, Verdict::Fired(2)]
    );
    // The steps were consumed; redelivering the closing event reports the same firing.
    let v = apply(s, &[then("x3", 5), then("x2", 4)]).await;
    assert_eq!(v, [Verdict::Quiet, Verdict::Fired(2)]);
    // The same within one call.
    let v = apply(s, &[first("f3", 10), first("f4", 11), then("x4", 12), then("x4", 12)]).await;
    assert_eq!(v, [Verdict::Quiet, Verdict::Quiet, Verdict::Fired(2), Verdict::Fired(2)]);
}

async fn new_values_and_cooldowns(s: &impl WindowState) {
    let nv = |value: &str, by: &str| Op::NewValue {
        key: "n".into(),
        value: value.into(),
        by: by.into(),
        ts: T0,
        ttl: 3600,
        suppress: None,
    };
    let v = apply(s, &[nv("vim", "e1"), nv("vim", "e2"), nv("vim", "e1"), nv("curl", "e3")]).await;
    assert_eq!(v, [Verdict::Fired(1), Verdict::Quiet, Verdict::Fired(1), Verdict::Fired(1)]);

    let gate = |by: &str, at: i64| Op::Gate {
        key: "g".into(),
        by: by.into(),
        ts: T0 + at * S,
        suppress: 600 * S,
    };
    let v = apply(s, &[gate("e1", 0), gate("e2", 10), gate("e1", 0), gate("e3", 601)]).await;
    assert_eq!(v, [Verdict::Fired(1), Verdict::Suppressed, Verdict::Fired(1), Verdict::Fired(1)]);
    // The next call sees the cooldown the last one left (e3 at 601).
    let v = apply(s, &[gate("e4", 700), gate("e3", 601), gate("e5", 1202)]).await;
    assert_eq!(v, [Verdict::Suppressed, Verdict::Fired(1), Verdict::Fired(1)]);
}

async fn processed_spans(s: &impl WindowState) {
    let span = |first, end| Span { node: "pi-1".into(), epoch: 7, first, end, single: None };
    assert_eq!(s.processed(&[span(0, 100)]).await.unwrap(), vec![vec![]]);
    s.mark_processed(&[span(0, 100), span(200, 300), span(100, 150)]).await.unwrap();
    let got = s.processed(&[span(0, 100), span(120, 250), span(150, 200), span(300, 400)]).await;
    assert_eq!(got.unwrap(), vec![vec![(0, 150)], vec![(0, 150), (200, 300)], vec![], vec![]]);
    // Another epoch and another node are separate.
    let other = Span { node: "pi-1".into(), epoch: 8, first: 0, end: 10, single: None };
    let legacy = Span { node: "legacy/abc".into(), epoch: 0, first: 0, end: 1, single: None };
    assert_eq!(s.processed(&[other, legacy.clone()]).await.unwrap(), vec![vec![], vec![]]);
    s.mark_processed(std::slice::from_ref(&legacy)).await.unwrap();
    assert_eq!(s.processed(&[legacy]).await.unwrap(), vec![vec![(0, 1)]]);
}

/// Single events (legacy JSON, the API): a whole batch of ids in one call, next to agents'
/// runs, and apart from them — a node named like a single span's node reaches no single event.
async fn single_spans(s: &impl WindowState) {
    let ids: Vec<uuid::Uuid> = (0..600u128)
        .map(|i| uuid::Uuid::from_u128(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i << 120))
        .collect();
    let singles: Vec<Span> = ids.iter().map(|&id| Span::single(id)).collect();
    let first: Vec<Span> = singles.iter().step_by(2).cloned().collect();
    assert!(s.processed(&singles).await.unwrap().iter().all(Vec::is_empty));
    let run = Span { node: "pi-9".into(), epoch: 1, first: 0, end: 5, single: None };
    let mut marked = first.clone();
    marked.push(run.clone());
    s.mark_processed(&marked).await.unwrap();
    let mut asked = singles.clone();
    asked.push(run);
    let got = s.processed(&asked).await.unwrap();
    for (i, runs) in got[..singles.len()].iter().enumerate() {
        let want: Vec<(u64, u64)> = if i % 2 == 0 { vec![(0, 1)] } else { vec![] };
        assert_eq!(runs, &want, "single {i}");
    }
    assert_eq!(got[singles.len()], vec![(0, 5)]);
    // An agent whose node id reads like a single span's node, marking that span: the single
    // event is still new.
    let unseen = &singles[1];
    let imitation = Span { single: None, ..unseen.clone() };
    s.mark_processed(std::slice::from_ref(&imitation)).await.unwrap();
    assert_eq!(s.processed(std::slice::from_ref(unseen)).await.unwrap(), vec![vec![]]);
    // Marking again is harmless.
    s.mark_processed(&first).await.unwrap();
    assert_eq!(s.processed(&first[..1]).await.unwrap(), vec![vec![(0, 1)]]);
}

/// The dedup record keeps about the newest `max` single events: 600 marked in three batches
/// with a bound of 32 leave between 16 and 36 of them remembered (Redis: 2 in each of its 16
/// sets; memory: the newest, trimmed once an eighth over), the last batch's among them, and
/// agents' runs untouched.
async fn single_spans_are_bounded(s: &impl WindowState) {
    let ids: Vec<Span> = (0..600u128)
        .map(|i| {
            Span::single(uuid::Uuid::from_u128(
                (i + 7).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
            ))
        })
        .collect();
    let run = Span { node: "pi-b".into(), epoch: 3, first: 0, end: 9, single: None };
    s.mark_processed(std::slice::from_ref(&run)).await.unwrap();
    for part in ids.chunks(200) {
        s.mark_processed(part).await.unwrap();
        // One second apart at least: Redis scores by the second.
        tokio::time::sleep(std::time::Duration::from_millis(1_050)).await;
    }
    let got = s.processed(&ids).await.unwrap();
    let kept = got.iter().filter(|r| !r.is_empty()).count();
    assert!((16..=36).contains(&kept), "{kept} of 600 kept");
    let newest = got[400..].iter().filter(|r| !r.is_empty()).count();
    assert_eq!(newest, kept, "only the last batch's ids are kept");
    assert_eq!(s.processed(&[run]).await.unwrap(), vec![vec![(0, 9)]]);
}

/// Two "replicas" applying interleaved batches to one state: 100 groups of three events, each
/// group's events split between the replicas, fire exactly 100 times in total — a lost update
/// (a read-modify-write race) would lose firings.
async fn replicas_agree<S: WindowState + 'static>(a: Arc<S>, b: Arc<S>) {
    let mut tasks = Vec::new();
    for (i, s) in [a, b].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut fired = 0;
            for batch in 0..30 {
                let ops: Vec<Op> = (0..5)
                    .map(|j| {
                        let n = batch * 10 + i * 5 + j;
                        window(&format!("rep{}", n / 3), &format!("e{n}"), n as i64 % 3, 3)
                    })
                    .collect();
                fired += s
                    .apply(&ops)
                    .await
                    .unwrap()
                    .iter()
                    .filter(|v| matches!(v, Verdict::Fired(_)))
                    .count();
            }
            fired
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 100);
}

async fn suite(s: &impl WindowState) {
    threshold_counts_in_event_time(s).await;
    arrival_order_does_not_matter(s).await;
    late_events_are_refused(s).await;
    pruning_takes_effect_within_one_call(s).await;
    distinct_counts_values(s).await;
    sequences(s).await;
    new_values_and_cooldowns(s).await;
    processed_spans(s).await;
    single_spans(s).await;
}

#[tokio::test]
async fn the_single_events_record_is_bounded() {
    single_spans_are_bounded(&MemoryState::new().with_single_events(32)).await;
    single_spans_are_bounded(&redis_state().await.with_single_events(32)).await;
}

#[tokio::test]
async fn memory_state_conforms() {
    suite(&MemoryState::new()).await;
    let shared = Arc::new(MemoryState::new());
    replicas_agree(shared.clone(), shared).await;
}

#[tokio::test]
async fn redis_state_conforms() {
    let s = redis_state().await;
    suite(&s).await;
    // Two connections to the same Redis and prefix, like two aggregator replicas.
    let b = RedisState::connect(&std::env::var("REDIS_URL").unwrap(), s.prefix()).await.unwrap();
    replicas_agree(Arc::new(s), Arc::new(b)).await;
}

/// Every call through a replica that has never seen the state: each verdict rests on what
/// earlier calls left in Redis, not on a replica's cache.
struct FreshEachCall {
    url: String,
    prefix: String,
}

/// Calls alternate between two replicas: each finds its cache outdated by the other's writes.
struct Alternating {
    replicas: [RedisState; 2],
    next: std::sync::atomic::AtomicUsize,
}

impl Alternating {
    fn pick(&self) -> &RedisState {
        &self.replicas[self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2]
    }
}

impl WindowState for FreshEachCall {
    async fn apply(&self, ops: &[Op]) -> Result<Vec<Verdict>, aggregator::state::StateError> {
        RedisState::connect(&self.url, &self.prefix).await?.apply(ops).await
    }
    async fn processed(
        &self,
        spans: &[Span],
    ) -> Result<Vec<Vec<(u64, u64)>>, aggregator::state::StateError> {
        RedisState::connect(&self.url, &self.prefix).await?.processed(spans).await
    }
    async fn mark_processed(&self, spans: &[Span]) -> Result<(), aggregator::state::StateError> {
        RedisState::connect(&self.url, &self.prefix).await?.mark_processed(spans).await
    }
    async fn record_seen(
        &self,
        seen: &[(String, i64)],
    ) -> Result<(), aggregator::state::StateError> {
        RedisState::connect(&self.url, &self.prefix).await?.record_seen(seen).await
    }
    async fn last_seen(&self) -> Result<Vec<(String, i64)>, aggregator::state::StateError> {
        RedisState::connect(&self.url, &self.prefix).await?.last_seen().await
    }
}

impl WindowState for Alternating {
    async fn apply(&self, ops: &[Op]) -> Result<Vec<Verdict>, aggregator::state::StateError> {
        self.pick().apply(ops).await
    }
    async fn processed(
        &self,
        spans: &[Span],
    ) -> Result<Vec<Vec<(u64, u64)>>, aggregator::state::StateError> {
        self.pick().processed(spans).await
    }
    async fn mark_processed(&self, spans: &[Span]) -> Result<(), aggregator::state::StateError> {
        self.pick().mark_processed(spans).await
    }
    async fn record_seen(
        &self,
        seen: &[(String, i64)],
    ) -> Result<(), aggregator::state::StateError> {
        self.pick().record_seen(seen).await
    }
    async fn last_seen(&self) -> Result<Vec<(String, i64)>, aggregator::state::StateError> {
        self.pick().last_seen().await
    }
}

#[tokio::test]
async fn redis_holds_the_whole_state() {
    // A replica keeps a cache of the state it works on; the state itself must be complete in
    // Redis (a restarted replica, or another one, carries on from it exactly).
    let s = redis_state().await;
    let fresh =
        FreshEachCall { url: std::env::var("REDIS_URL").unwrap(), prefix: s.prefix().into() };
    suite(&fresh).await;
}

#[tokio::test]
async fn replicas_see_each_others_changes() {
    let s = redis_state().await;
    let b = RedisState::connect(&std::env::var("REDIS_URL").unwrap(), s.prefix()).await.unwrap();
    let both = Alternating { replicas: [s, b], next: Default::default() };
    suite(&both).await;
}

#[tokio::test]
async fn a_replica_notices_state_changed_behind_its_back() {
    // Keys deleted by hand (or expired, or lost in a Redis restart without persistence): the
    // replica's cache no longer matches the version in Redis, so it reads the state again
    // instead of building on what it remembers.
    let s = redis_state().await;
    let v = apply(&s, &[window("gone", "e1", 0, 2)]).await;
    assert_eq!(v, [Verdict::Quiet]);
    let client = redis::Client::open(std::env::var("REDIS_URL").unwrap()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}*", s.prefix())).query_async(&mut conn).await.unwrap();
    assert!(!keys.is_empty());
    let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
    // e1 is gone with the keys: e2 alone does not fire.
    assert_eq!(apply(&s, &[window("gone", "e2", 1, 2)]).await, [Verdict::Quiet]);
    // State written without a version (by an aggregator from before versions) is read too.
    let _: () = redis::cmd("ZADD")
        .arg(format!("{}w:old", s.prefix()))
        .arg(T0)
        .arg("e1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("EXPIRE")
        .arg(format!("{}w:old", s.prefix()))
        .arg(600)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(apply(&s, &[window("old", "e2", 1, 2)]).await, [Verdict::Fired(2)]);
}

#[tokio::test]
async fn a_replica_that_found_nothing_sees_what_another_wrote_since() {
    // Replica a reads a sequence's key and finds no window; replica b then starts one. a's
    // next closing step must see b's steps, not its own memory of an empty key.
    let a = redis_state().await;
    let b = RedisState::connect(&std::env::var("REDIS_URL").unwrap(), a.prefix()).await.unwrap();
    assert_eq!(apply(&a, &[seq_then("race", "x0", 0)]).await, [Verdict::Quiet]);
    apply(&b, &[seq_first("race", "f1", 1), seq_first("race", "f2", 2)]).await;
    assert_eq!(apply(&a, &[seq_then("race", "x1", 3)]).await, [Verdict::Fired(2)]);
}

#[tokio::test]
async fn redis_keys_all_expire() {
    let s = redis_state().await;
    suite(&s).await;
    // A window emptied by a firing is deleted by Redis; the member after it makes it again,
    // and that must come with a TTL too.
    apply(&s, &[window("refill", "x1", 0, 2), window("refill", "x2", 1, 2)]).await;
    assert_eq!(apply(&s, &[window("refill", "x3", 2, 2)]).await, [Verdict::Quiet]);
    let url = std::env::var("REDIS_URL").unwrap();
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}*", s.prefix())).query_async(&mut conn).await.unwrap();
    assert!(keys.len() >= 8, "{keys:?}");
    for k in keys {
        let ttl: i64 = redis::cmd("TTL").arg(&k).query_async(&mut conn).await.unwrap();
        assert!(ttl > 0, "{k} has no TTL ({ttl})");
    }
}

#[tokio::test]
async fn redis_ttls_cover_the_allowed_lateness() {
    // A window's newest time lives in its used set, so that set must outlive the window plus
    // its lateness even when a later call (a sequence's closing step, which knows only the
    // window) touches it alone.
    let s = redis_state().await;
    let first = |m: &str, at: i64| Op::SeqFirst {
        key: "ttl".into(),
        member: m.into(),
        ts: T0 + at * S,
        window: 600 * S,
        lateness: 3_000 * S,
    };
    let then = Op::SeqThen {
        key: "ttl".into(),
        by: "x".into(),
        ts: T0 + 3 * S,
        window: 600 * S,
        count: 2,
        suppress: None,
    };
    apply(&s, &[first("f1", 1), first("f2", 2)]).await;
    assert_eq!(apply(&s, &[then]).await, [Verdict::Fired(2)]);
    let client = redis::Client::open(std::env::var("REDIS_URL").unwrap()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}w:ttl:h", s.prefix());
    let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut conn).await.unwrap();
    // window_ttl: window + lateness + one hour.
    assert!(ttl > 7_000, "{key} lives {ttl} s, less than window and lateness");
}

#[tokio::test]
async fn redis_state_reloads_its_script() {
    // After a Redis restart or SCRIPT FLUSH, Redis no longer has the script: the next call
    // loads it again instead of failing.
    let s = redis_state().await;
    let client = redis::Client::open(std::env::var("REDIS_URL").unwrap()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    let v = apply(&s, &[window("flush", "e1", 0, 2), window("flush", "e2", 1, 2)]).await;
    assert_eq!(v, [Verdict::Quiet, Verdict::Fired(2)]);
}
