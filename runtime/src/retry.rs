//! Reconnection delays shared by every process that talks to a service: exponential backoff
//! with jitter, so that a fleet of agents does not reconnect in lockstep after an outage.
//! Pure computation; the callers sleep.

use std::time::Duration;

/// Exponential backoff from 200 ms to 30 s with ±25 % jitter.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    seed: u64,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.subsec_nanos().into());
        Self { attempt: 0, seed }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base_ms = (200u64 << self.attempt.min(8)).min(30_000);
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
}
