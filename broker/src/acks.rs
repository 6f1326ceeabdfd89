//! When the broker may acknowledge a node's envelopes.
//!
//! An `Ack { epoch, up_to_seq }` tells an agent that *everything* below `up_to_seq` is stored,
//! so the broker may only acknowledge the end of a contiguous run of confirmed envelopes. Per
//! `(node, epoch)` it keeps the bound of that run:
//!
//! * The first envelope seen from a stream starts the run. That is safe because agents
//!   (re)start sending at their acknowledged watermark whenever their MQTT session begins, and
//!   a broker restart ends every session.
//! * An envelope that starts at or below the bound extends it; one that starts above it (an
//!   earlier envelope was lost on the way) does not, and the agent, seeing no progress,
//!   rewinds and resends from its watermark, which closes the gap.
//! * An envelope lost before its stream had a run (RabbitMQ failed under it) marks the stream:
//!   a later envelope cannot start the run, only one from at or below the loss.

use std::collections::HashMap;

/// Most streams remembered; beyond this the table is cleared (every stream then restarts its
/// run from its next envelope, which the agents' resend-from-watermark makes safe).
const MAX_STREAMS: usize = 65_536;

#[derive(Clone, Copy, Debug, Default)]
struct Stream {
    confirmed_up_to: Option<u64>,
    lost_from: Option<u64>,
}

/// The per-stream acknowledgement bounds.
#[derive(Debug, Default)]
pub struct AckBook {
    streams: HashMap<(String, u64), Stream>,
}

impl AckBook {
    /// The envelope `[first, end)` of `(node, epoch)` was confirmed by RabbitMQ. Returns the
    /// bound to acknowledge, or `None` when nothing may be acknowledged yet.
    pub fn confirmed(&mut self, node: &str, epoch: u64, first: u64, end: u64) -> Option<u64> {
        if self.streams.len() >= MAX_STREAMS
            && !self.streams.contains_key(&(node.to_owned(), epoch))
        {
            self.streams.clear();
        }
        let s = self.streams.entry((node.to_owned(), epoch)).or_default();
        match s.confirmed_up_to {
            None => {
                if s.lost_from.is_some_and(|lost| first > lost) {
                    return None;
                }
                s.lost_from = None;
                s.confirmed_up_to = Some(end);
                Some(end)
            }
            Some(bound) if first <= bound => {
                let bound = bound.max(end);
                s.confirmed_up_to = Some(bound);
                Some(bound)
            }
            Some(_) => None,
        }
    }

    /// The envelope starting at `first` of `(node, epoch)` was lost before a confirm.
    pub fn lost(&mut self, node: &str, epoch: u64, first: u64) {
        let s = self.streams.entry((node.to_owned(), epoch)).or_default();
        if s.confirmed_up_to.is_none() {
            s.lost_from = Some(s.lost_from.map_or(first, |l| l.min(first)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_runs_advance_and_gaps_do_not() {
        let mut b = AckBook::default();
        assert_eq!(b.confirmed("n", 1, 100, 150), Some(150));
        assert_eq!(b.confirmed("n", 1, 150, 200), Some(200));
        assert_eq!(b.confirmed("n", 1, 250, 300), None, "200..250 never arrived");
        assert_eq!(b.confirmed("n", 1, 120, 180), Some(200), "a resend re-acknowledges");
        assert_eq!(b.confirmed("n", 1, 200, 250), Some(250));
        assert_eq!(b.confirmed("n", 1, 250, 300), Some(300));
        assert_eq!(b.confirmed("n", 2, 0, 10), Some(10), "epochs are separate streams");
        assert_eq!(b.confirmed("m", 1, 5, 6), Some(6), "nodes are separate streams");
    }

    #[test]
    fn a_loss_before_the_first_confirm_blocks_later_starts() {
        let mut b = AckBook::default();
        b.lost("n", 1, 100);
        assert_eq!(b.confirmed("n", 1, 150, 200), None, "100..150 may be lost");
        assert_eq!(b.confirmed("n", 1, 100, 150), Some(150), "the resend from the watermark");
        assert_eq!(b.confirmed("n", 1, 150, 200), Some(200));
    }
}
