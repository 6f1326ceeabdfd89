//! Reconnection delays shared by every process that talks to a service: exponential backoff
//! with jitter, so that a fleet of agents does not reconnect in lockstep after an outage.
//! Pure computation; the callers sleep.
//!
//! Two ceilings. Agents ([`Backoff::new`]) wait up to 30 s: a fleet of hundreds of nodes must
//! not hammer a broker that is coming back. A service's own few connections to another
//! service ([`Backoff::service`]: the broker's bridge to RabbitMQ, the aggregator's consumers
//! and its retries against Redis and PostgreSQL) wait at most 5 s: a handful of clients
//! retrying every 5 s costs the server nothing, and with a 30 s ceiling the whole pipeline
//! stood still for up to 37 s after RabbitMQ (or a store) was back.

use std::time::Duration;

/// Exponential backoff from 200 ms to a ceiling (30 s, or 5 s for a service), ±25 % jitter.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    seed: u64,
    max_ms: u64,
}

impl Backoff {
    /// An agent's backoff: up to 30 s.
    pub fn new() -> Self {
        Self::with_max_ms(30_000)
    }

    /// A service's backoff towards another service: up to 5 s.
    pub fn service() -> Self {
        Self::with_max_ms(5_000)
    }

    fn with_max_ms(max_ms: u64) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.subsec_nanos().into());
        Self { attempt: 0, seed, max_ms }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base_ms = (200u64 << self.attempt.min(8)).min(self.max_ms);
        self.attempt = self.attempt.saturating_add(1);
        let jitter = splitmix64(self.seed ^ u64::from(self.attempt)) % (base_ms / 2 + 1);
        Duration::from_millis(base_ms - base_ms / 4 + jitter)
    }

    /// Back to the shortest delay after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// One step of SplitMix64: well-spread bits from any seed, enough for jitter.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_resets() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(150) && first <= Duration::from_millis(250));
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(37_500), "{d:?}");
        }
        assert!(b.next_delay() >= Duration::from_millis(22_500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(250));
    }

    #[test]
    fn a_service_waits_at_most_five_seconds() {
        let mut b = Backoff::service();
        let delays: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(250), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(6_250)), "{delays:?}");
        assert!(delays[19] >= Duration::from_millis(3_750), "{delays:?}");
    }
}
