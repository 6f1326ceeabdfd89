//! Limits on what one caller can hold or try (design.md §6.1):
//!
//! * **Bad tokens back off.** Each peer address has a budget of [`FAILURE_BURST`] failed
//!   token checks, refilled at one per [`REFILL`]. With the budget spent, token-protected
//!   routes answer `429` with `Retry-After` without looking at the token, so guessing runs at
//!   the refill rate and fills no logs. A valid token does not bypass it: the check would tell
//!   a guesser which guess was right. (Behind the dashboard's forwarder every browser shares
//!   the forwarder's address; its users share the budget, which 20 mistakes do not exhaust.)
//! * **Live streams per token.** A token holds at most [`MAX_STREAMS_PER_TOKEN`] open
//!   `/api/v1/stream` connections; each holds a broadcast receiver and a connection slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failed token checks an address may make before it must wait.
pub const FAILURE_BURST: f64 = 20.0;
/// One more failed check is allowed per this much time.
pub const REFILL: Duration = Duration::from_secs(3);
/// Open live streams per token.
pub const MAX_STREAMS_PER_TOKEN: usize = 8;
/// Addresses tracked at most; beyond, those whose budget is full again are forgotten.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug)]
struct Budget {
    left: f64,
    at: Instant,
}

impl Budget {
    fn refill(&mut self, now: Instant) {
        let earned = now.duration_since(self.at).as_secs_f64() / REFILL.as_secs_f64();
        self.left = (self.left + earned).min(FAILURE_BURST);
        self.at = now;
    }
}

/// The API's per-caller limits.
#[derive(Debug, Default)]
pub struct Guard {
    failures: Mutex<HashMap<IpAddr, Budget>>,
    streams: Mutex<HashMap<String, usize>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Guard {
    /// How long `addr` must wait before its next token check; `None` when it may go on.
    pub fn wait(&self, addr: IpAddr) -> Option<Duration> {
        let mut map = lock(&self.failures);
        let budget = map.get_mut(&addr)?;
        budget.refill(Instant::now());
        (budget.left < 1.0).then(|| REFILL.mul_f64(1.0 - budget.left).max(Duration::from_secs(1)))
    }

    /// Records a failed token check by `addr`.
    pub fn failed(&self, addr: IpAddr) {
        let now = Instant::now();
        let mut map = lock(&self.failures);
        if map.len() >= MAX_TRACKED && !map.contains_key(&addr) {
            map.retain(|_, b| {
                b.refill(now);
                b.left < FAILURE_BURST
            });
            if map.len() >= MAX_TRACKED {
                // Still full of active guessers: forget one rather than grow.
                if let Some(k) = map.keys().next().copied() {
                    map.remove(&k);
                }
            }
        }
        let budget = map.entry(addr).or_insert(Budget { left: FAILURE_BURST, at: now });
        budget.refill(now);
        budget.left = (budget.left - 1.0).max(0.0);
    }

    /// A live-stream slot for the token named `name`, or `None` when it holds the most.
    pub fn open_stream(self: &Arc<Self>, name: &str) -> Option<StreamSlot> {
        let mut map = lock(&self.streams);
        let n = map.entry(name.to_owned()).or_insert(0);
        if *n >= MAX_STREAMS_PER_TOKEN {
            return None;
        }
        *n += 1;
        Some(StreamSlot { guard: Arc::clone(self), name: name.to_owned() })
    }
}

/// An open live stream; closing it (dropping this) frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    guard: Arc<Guard>,
    name: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut map = lock(&self.guard.streams);
        if let Some(n) = map.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_per_address() {
        let g = Guard::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..FAILURE_BURST as usize {
            assert!(g.wait(a).is_none());
            g.failed(a);
        }
        let wait = g.wait(a).expect("the budget is spent");
        assert!(wait >= Duration::from_secs(1) && wait <= REFILL, "{wait:?}");
        assert!(g.wait(b).is_none(), "another address is not affected");
    }

    #[test]
    fn streams_are_capped_per_token_and_freed() {
        let g = Arc::new(Guard::default());
        let slots: Vec<_> =
            (0..MAX_STREAMS_PER_TOKEN).map(|_| g.open_stream("ops").expect("a slot")).collect();
        assert!(g.open_stream("ops").is_none());
        assert!(g.open_stream("viewer").is_some(), "another token has its own slots");
        drop(slots);
        assert!(g.open_stream("ops").is_some());
    }
}
