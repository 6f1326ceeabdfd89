//! When the broker may acknowledge a node's envelopes, and in which form.
//!
//! A [`wire::RunAck`] `{ epoch, from_seq, up_to_seq }` tells an agent that everything in
//! `[from_seq, up_to_seq)` is stored, so the broker may only acknowledge a contiguous run of
//! confirmed envelopes. Per `(node, epoch)` it keeps that run:
//!
//! * The first envelope seen from a stream starts the run. Usually that is where the agent's
//!   session started (its watermark), but not always: rumqttd drops a log segment the bridge
//!   has not read when the bridge falls too far behind, and a hop may lose a publish it has
//!   acknowledged. So the run's start travels in the ack, and the agent applies an ack only
//!   when the run starts at or below its watermark.
//! * An envelope that starts inside the run (or at its end) extends it; one that starts above it
//!   (an earlier envelope was lost on the way) does not, and the agent, seeing no progress,
//!   rewinds and resends from its watermark, which closes the gap.
//! * An envelope that starts below the run (that resend) lowers the run's start when it
//!   reaches the run, and starts a new run when it does not (the old run is forgotten: the
//!   resend covers it again).
//! * An envelope lost before its stream had a run (RabbitMQ failed under it) marks the stream:
//!   a later envelope cannot start the run, only one from at or below the loss.
//!
//! Agents of earlier versions take only [`wire::Ack`] `{ epoch, up_to_seq }`, which cannot say
//! where the run starts; they get it on their old topic (see [`AckForms`]) and keep the old
//! assumption that the run started at their watermark (docs/design.md §4.3).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

/// Most streams remembered; beyond this the table is cleared (every stream then restarts its
/// run from its next envelope, which the run's start in the ack makes safe).
const MAX_STREAMS: usize = 65_536;

#[derive(Clone, Copy, Debug, Default)]
struct Stream {
    /// The run `[from, up_to)` of confirmed envelopes.
    run: Option<(u64, u64)>,
    lost_from: Option<u64>,
}

/// A run of confirmed sequence numbers, `[from, up_to)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First sequence number of the run.
    pub from: u64,
    /// One past the last.
    pub up_to: u64,
}

/// The per-stream acknowledgement runs.
#[derive(Debug, Default)]
pub struct AckBook {
    streams: HashMap<(String, u64), Stream>,
}

impl AckBook {
    /// The envelope `[first, end)` of `(node, epoch)` was confirmed by RabbitMQ. Returns the
    /// run to acknowledge, or `None` when nothing may be acknowledged yet.
    pub fn confirmed(&mut self, node: &str, epoch: u64, first: u64, end: u64) -> Option<Run> {
        if self.streams.len() >= MAX_STREAMS
            && !self.streams.contains_key(&(node.to_owned(), epoch))
        {
            self.streams.clear();
        }
        let s = self.streams.entry((node.to_owned(), epoch)).or_default();
        let run = match s.run {
            None => {
                if s.lost_from.is_some_and(|lost| first > lost) {
                    return None;
                }
                s.lost_from = None;
                (first, end)
            }
            // Inside the run or at its end: extends it.
            Some((from, up_to)) if first >= from && first <= up_to => (from, up_to.max(end)),
            // Below the run and reaching it: the run now starts lower.
            Some((from, up_to)) if first < from && end >= from => (first, up_to.max(end)),
            // Below the run, not reaching it: a resend from an older watermark.
            Some((from, _)) if first < from && first < end => (first, end),
            // Above the run: something between was lost.
            Some(_) => return None,
        };
        s.run = Some(run);
        Some(Run { from: run.0, up_to: run.1 })
    }

    /// The envelope starting at `first` of `(node, epoch)` was lost before a confirm.
    pub fn lost(&mut self, node: &str, epoch: u64, first: u64) {
        let s = self.streams.entry((node.to_owned(), epoch)).or_default();
        if s.run.is_none() {
            s.lost_from = Some(s.lost_from.map_or(first, |l| l.min(first)));
        }
    }
}

/// Which form of acknowledgement each node takes: the nodes whose agents subscribed to
/// [`wire::run_ack_topic`] get [`wire::RunAck`]s there, every other node gets [`wire::Ack`]s on
/// [`wire::ack_topic`]. The topic ACL records every subscription it grants (the latest wins, so
/// a node whose agent is rolled back to an earlier version gets `Ack`s again). One entry per
/// authenticated node that ever subscribed, so it stays as small as the fleet.
#[derive(Clone, Debug, Default)]
pub struct AckForms(Arc<Mutex<HashSet<String>>>);

impl AckForms {
    /// The ACL granted `node` a subscription to `topic`.
    pub fn subscribed(&self, node: &str, topic: &str) {
        let mut runs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if topic == wire::run_ack_topic(node) {
            runs.insert(node.to_owned());
        } else if topic == wire::ack_topic(node) {
            runs.remove(node);
        }
    }

    /// The topic and frame that acknowledge `run` of `(node, epoch)` in the form `node` takes.
    pub fn message(&self, node: &str, epoch: u64, run: Run) -> (String, Vec<u8>) {
        let runs = self.0.lock().unwrap_or_else(PoisonError::into_inner).contains(node);
        if runs {
            let ack = wire::RunAck { epoch, from_seq: run.from, up_to_seq: run.up_to };
            (wire::run_ack_topic(node), wire::encode(&ack))
        } else {
            (wire::ack_topic(node), wire::encode(&wire::Ack { epoch, up_to_seq: run.up_to }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(from: u64, up_to: u64) -> Option<Run> {
        Some(Run { from, up_to })
    }

    #[test]
    fn contiguous_runs_advance_and_gaps_do_not() {
        let mut b = AckBook::default();
        assert_eq!(b.confirmed("n", 1, 100, 150), run(100, 150));
        assert_eq!(b.confirmed("n", 1, 150, 200), run(100, 200));
        assert_eq!(b.confirmed("n", 1, 250, 300), None, "200..250 never arrived");
        assert_eq!(b.confirmed("n", 1, 120, 180), run(100, 200), "a resend re-acknowledges");
        assert_eq!(b.confirmed("n", 1, 200, 250), run(100, 250));
        assert_eq!(b.confirmed("n", 1, 250, 300), run(100, 300));
        assert_eq!(b.confirmed("n", 2, 0, 10), run(0, 10), "epochs are separate streams");
        assert_eq!(b.confirmed("m", 1, 5, 6), run(5, 6), "nodes are separate streams");
    }

    /// The broker never saw the agent's first envelopes (rumqttd dropped them): the run it
    /// starts says so, and the agent's resend from its watermark brings the start down.
    #[test]
    fn a_run_that_began_above_the_watermark_says_so_until_the_resend() {
        let mut b = AckBook::default();
        assert_eq!(b.confirmed("n", 1, 50, 100), run(50, 100), "0..50 never arrived");
        assert_eq!(b.confirmed("n", 1, 100, 150), run(50, 150));
        assert_eq!(b.confirmed("n", 1, 0, 25), run(0, 25), "the resend starts a new run");
        assert_eq!(b.confirmed("n", 1, 25, 50), run(0, 50));
        assert_eq!(b.confirmed("n", 1, 50, 100), run(0, 100));
        let mut b = AckBook::default();
        b.confirmed("n", 1, 50, 100);
        assert_eq!(b.confirmed("n", 1, 0, 60), run(0, 100), "a resend reaching the run joins it");
    }

    #[test]
    fn a_loss_before_the_first_confirm_blocks_later_starts() {
        let mut b = AckBook::default();
        b.lost("n", 1, 100);
        assert_eq!(b.confirmed("n", 1, 150, 200), None, "100..150 may be lost");
        assert_eq!(b.confirmed("n", 1, 100, 150), run(100, 150), "the resend from the watermark");
        assert_eq!(b.confirmed("n", 1, 150, 200), run(100, 200));
    }

    #[test]
    fn each_node_gets_the_form_it_subscribed_to() {
        let forms = AckForms::default();
        let r = Run { from: 10, up_to: 20 };
        let (topic, frame) = forms.message("pi-a", 1, r);
        assert_eq!(topic, "auditflow/v1/ack/pi-a", "a node never seen gets the old form");
        assert_eq!(wire::decode::<wire::Ack>(&frame), Ok(wire::Ack { epoch: 1, up_to_seq: 20 }));
        forms.subscribed("pi-a", "auditflow/v1/run-ack/pi-a");
        let (topic, frame) = forms.message("pi-a", 1, r);
        assert_eq!(topic, "auditflow/v1/run-ack/pi-a");
        assert_eq!(
            wire::decode::<wire::RunAck>(&frame),
            Ok(wire::RunAck { epoch: 1, from_seq: 10, up_to_seq: 20 })
        );
        assert_eq!(forms.message("pi-b", 1, r).0, "auditflow/v1/ack/pi-b", "per node");
        forms.subscribed("pi-a", "auditflow/v1/ack/pi-a");
        assert_eq!(forms.message("pi-a", 1, r).0, "auditflow/v1/ack/pi-a", "rolled back");
    }
}
