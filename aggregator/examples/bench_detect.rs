//! Rule-evaluation throughput: the legacy event mix (the seven templates of the legacy
//! generator, as legacy JSON parsed the way the legacy consumer parses it) against the shipped
//! rule pack, on one thread, with in-memory state and with Redis. Run through
//! `scripts/bench.sh detect [SECONDS]`; the last line is
//! `detect: memory_events_per_s=<n> redis_events_per_s=<m>`.

#[path = "common/redis_keys.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregator::detect::{Detector, Input};
use aggregator::rules::RuleSet;
use aggregator::state::memory::MemoryState;
use aggregator::state::redis::RedisState;
use aggregator::state::{Op, WindowState};
use uuid::Uuid;
use wire::model::{Event, Timestamp};
use wire::synth::{Synth, Template};

const EVENTS: usize = 200_000;
const BATCH: usize = 1_000;

/// The mix: templates in turn, hosts from the legacy vocabulary, 2,000 events per second of
/// event time.
fn mix() -> Vec<(String, Event)> {
    let mut synth = Synth::new(7);
    let t0 = 1_767_225_600_000_000_000i64;
    (0..EVENTS)
        .map(|i| {
            let template = Template::ALL[i % Template::ALL.len()];
            let ts = Timestamp(t0 + i as i64 * 500_000);
            let json = synth.legacy_json(template, ts);
            let event = wire::legacy::from_legacy(&json, ts).expect("legacy JSON parses");
            (event.host.clone().unwrap_or_default(), event)
        })
        .collect()
}

/// Shifts every event one pass later in event time, so each pass is new traffic.
fn next_pass(events: &mut [(String, Event)]) {
    let span = EVENTS as i64 * 500_000;
    for (_, e) in events {
        e.ts = Timestamp(e.ts.0 + span);
    }
}

/// Detects on the mix, batch after batch, for `seconds` of detection time; returns events per
/// second of detection time and the firings.
///
/// Each batch is copied just before it is detected, outside the timed part: the aggregator
/// detects on a batch it has just decoded, so the events are in the cache, while the mix as a
/// whole (200,000 events) is not — timing detection on it directly would charge a cache
/// miss at the first touch of every event's texts, which the aggregator does not pay.
async fn measure<S: WindowState>(
    state: &S,
    detector: &Detector,
    events: &mut [(String, Event)],
    seconds: u64,
) -> (f64, u64) {
    let limit = Duration::from_secs(seconds);
    let mut busy = Duration::ZERO;
    let (mut done, mut fired, mut pass) = (0u64, 0u64, 0u128);
    while busy < limit {
        for (b, chunk) in events.chunks(BATCH).enumerate() {
            let batch = chunk.to_vec();
            let start = Instant::now();
            let inputs: Vec<Input<'_>> = batch
                .iter()
                .enumerate()
                .map(|(i, (node, event))| Input {
                    id: Uuid::from_u128((pass << 64) | (b * BATCH + i) as u128),
                    node,
                    event,
                })
                .collect();
            let plan = detector.plan(&inputs);
            let verdicts = state.apply(&plan.ops).await.expect("state");
            fired += detector
                .finish(&inputs, &plan, &verdicts)
                .per_rule
                .iter()
                .map(|r| r.1)
                .sum::<u64>();
            drop(inputs);
            busy += start.elapsed();
            done += batch.len() as u64;
            if busy >= limit {
                break;
            }
        }
        pass += 1;
        next_pass(events);
    }
    (done as f64 / busy.as_secs_f64(), fired)
}

/// What the state is asked to do per 1,000 events of the mix: ops by kind, and the distinct
/// windows (rule and group keys) a batch touches, which set the Redis script's cost.
fn census(detector: &Detector, events: &[(String, Event)]) {
    let (mut kinds, mut windows) = ([0usize; 5], 0usize);
    for (b, chunk) in events.chunks(BATCH).enumerate() {
        let inputs: Vec<Input<'_>> = chunk
            .iter()
            .enumerate()
            .map(|(i, (node, event))| Input {
                id: Uuid::from_u128((b * BATCH + i) as u128),
                node,
                event,
            })
            .collect();
        let plan = detector.plan(&inputs);
        let mut keys = std::collections::HashSet::new();
        for op in &plan.ops {
            let (k, key) = match op {
                Op::Window { key, .. } => (0, Some(key)),
                Op::SeqFirst { key, .. } => (1, Some(key)),
                Op::SeqThen { key, .. } => (2, Some(key)),
                Op::NewValue { key, .. } => (3, Some(key)),
                Op::Gate { .. } => (4, None),
            };
            kinds[k] += 1;
            keys.extend(key);
        }
        windows += keys.len();
    }
    let per = |n: usize| n as f64 * 1_000.0 / events.len() as f64;
    println!(
        "ops per 1,000 events: window {:.0}, sequence first {:.0}, sequence then {:.0}, \
         new value {:.0}, cooldown only {:.0}; state keys touched {:.0}",
        per(kinds[0]),
        per(kinds[1]),
        per(kinds[2]),
        per(kinds[3]),
        per(kinds[4]),
        per(windows)
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let rules = RuleSet::shipped();
    println!(
        "rules: {} (shipped pack), events in the mix: {EVENTS}, batch: {BATCH}",
        rules.rules.len()
    );
    let detector = Detector::new(Arc::new(rules), Duration::from_secs(300));
    let mut events = mix();
    census(&detector, &events);

    let memory = MemoryState::new();
    let (mem_rate, mem_fired) = measure(&memory, &detector, &mut events, seconds).await;
    println!("memory: {mem_rate:.0} events/s, {mem_fired} firings in {seconds} s");

    let url =
        std::env::var("REDIS_URL").expect("REDIS_URL is not set: run through scripts/bench.sh");
    let prefix = format!("afbench:{}:", std::process::id());
    let redis = RedisState::connect(&url, &prefix).await.expect("connect to Redis");
    let (redis_rate, redis_fired) = measure(&redis, &detector, &mut events, seconds).await;
    println!("redis: {redis_rate:.0} events/s, {redis_fired} firings in {seconds} s");
    // The run leaves hundreds of MB of windows behind (they would expire within hours);
    // freeing them now keeps them from weighing on the next benchmark.
    let removed = common::unlink_prefix(&url, &prefix).expect("remove the benchmark's keys");
    println!("removed the run's {removed} Redis keys");
    println!("detect: memory_events_per_s={mem_rate:.0} redis_events_per_s={redis_rate:.0}");
}
