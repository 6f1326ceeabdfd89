//! The spool keeps every batch until it is acknowledged, across crashes at any point: a
//! record torn by a power cut is cut off and counted, everything intact is replayed, and
//! sequence numbers continue without a gap.

use std::fs::OpenOptions;
use std::path::Path;

use agent::spool::{AppendError, Spool};
use proptest::prelude::*;

fn frame(first_seq: u64, count: u32) -> Vec<u8> {
    // An envelope (a rebase renumbers it), named after its batch so a mix-up is visible.
    let mut name = format!("batch {first_seq}+{count};");
    name.extend(std::iter::repeat_n('x', 32 + (first_seq % 50) as usize + count as usize * 3));
    wire::encode(&wire::Envelope {
        node_id: name,
        epoch: 1,
        first_seq,
        events: (0..count).map(|i| event(first_seq + u64::from(i))).collect(),
        dropped: Default::default(),
    })
}

fn event(seq: u64) -> wire::Event {
    wire::Event::new(
        wire::Timestamp(i64::try_from(seq).unwrap()),
        wire::Source::Synthetic,
        wire::Severity::Info,
        wire::EventKind::Generic { event_type: "spool_test".into(), fields: Vec::new() },
    )
}

/// The batch a spooled frame was written as (`frame`'s arguments), whatever it was renumbered
/// to since.
fn batch_of(bytes: &[u8]) -> (u64, u32) {
    let envelope: wire::Envelope = wire::decode(bytes).expect("an envelope");
    let (first, count) = envelope.node_id["batch ".len()..]
        .split_once(';')
        .and_then(|(b, _)| b.split_once('+'))
        .expect("a batch name");
    (first.parse().unwrap(), count.parse().unwrap())
}

fn last_segment(dir: &Path) -> Option<std::path::PathBuf> {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
        .collect();
    segs.sort();
    segs.pop()
}

#[derive(Clone, Debug)]
enum Op {
    Append(u32),
    /// Acknowledge up to the end of the n-th pending batch (modulo their number).
    Ack(usize),
    /// Stop without warning; with `Some(k)`, the last append was torn k bytes short.
    Crash(Option<usize>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u32..40).prop_map(Op::Append),
        2 => any::<usize>().prop_map(Op::Ack),
        2 => proptest::option::of(1usize..200).prop_map(Op::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn crash_anywhere_replays_everything_unacked_without_gaps(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        // Small cap and segments so that rolling and deletion are exercised.
        let open = || Spool::open(dir.path(), 1 << 20, false).unwrap();
        let (mut spool, report) = open();
        prop_assert!(report.new_epoch);
        let epoch = spool.epoch();
        // The model: batches (first_seq, count) not yet acknowledged, and the next sequence.
        let mut model: Vec<(u64, u32)> = Vec::new();
        let mut next = 0u64;
        for op in ops {
            match op {
                Op::Append(count) => {
                    let first = spool.next_seq();
                    prop_assert_eq!(first, next, "no gap, no reuse");
                    spool.append(count, &frame(first, count)).unwrap();
                    model.push((first, count));
                    next += u64::from(count);
                }
                Op::Ack(i) => {
                    if !model.is_empty() {
                        let i = i % model.len();
                        let up_to = model[i].0 + u64::from(model[i].1);
                        spool.ack(up_to).unwrap();
                        model.drain(..=i);
                    }
                }
                Op::Crash(tear) => {
                    drop(spool);
                    let mut torn = false;
                    if let (Some(k), Some(&(first, count))) = (tear, model.last()) {
                        // Tear the last record: it was being written when the power went.
                        if let Some(seg) = last_segment(dir.path()) {
                            let len = std::fs::metadata(&seg).unwrap().len();
                            let record = 20 + frame(first, count).len() as u64;
                            let cut = (k as u64).min(record);
                            if len >= record {
                                let f = OpenOptions::new().write(true).open(&seg).unwrap();
                                f.set_len(len - cut).unwrap();
                                model.pop();
                                next = first;
                                // Cutting the whole record is a crash just before the write.
                                torn = cut < record;
                            }
                        }
                    }
                    let (s, report) = open();
                    spool = s;
                    prop_assert_eq!(report.torn_records, u64::from(torn));
                    prop_assert!(!report.new_epoch);
                    prop_assert_eq!(spool.epoch(), epoch);
                }
            }
            // After every step the spool holds exactly the unacknowledged batches, intact.
            let pending: Vec<(u64, u32)> = spool.pending().map(|r| (r.first_seq, r.count)).collect();
            prop_assert_eq!(&pending, &model);
            for r in spool.pending() {
                prop_assert_eq!(spool.read(r).unwrap(), frame(r.first_seq, r.count));
            }
            prop_assert_eq!(spool.next_seq(), next);
        }
    }
}

#[test]
fn acknowledged_segments_are_deleted_and_bytes_return_to_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), 1 << 20, true).unwrap();
    for _ in 0..2000 {
        let first = spool.next_seq();
        spool.append(10, &frame(first, 10)).unwrap();
    }
    let segments = std::fs::read_dir(dir.path()).unwrap().count() - 1;
    assert!(segments > 1, "the spool rolled segments ({segments})");
    spool.ack(spool.next_seq()).unwrap();
    assert_eq!(spool.pending().count(), 0);
    assert_eq!(spool.bytes(), 0);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only the state file is left");
    // Appending after a full ack starts a fresh segment and keeps counting.
    let first = spool.next_seq();
    assert_eq!(first, 20_000);
    spool.append(1, &frame(first, 1)).unwrap();
    drop(spool);
    let (spool, report) = Spool::open(dir.path(), 1 << 20, true).unwrap();
    assert_eq!(report.replay_records, 1);
    assert_eq!(spool.next_seq(), 20_001);
}

#[test]
fn the_cap_refuses_appends_and_an_ack_makes_room() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), 1 << 20, false).unwrap();
    let big = vec![7u8; 100_000];
    let mut n = 0;
    loop {
        match spool.append(1, &big) {
            Ok(_) => n += 1,
            Err(AppendError::Full { used, cap, need }) => {
                assert!(used + need > cap);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(n, 10);
    spool.ack(5).unwrap();
    spool.append(1, &big).expect("room after the ack");
}

fn three_batches_of_four(dir: &Path) -> std::path::PathBuf {
    let (mut spool, _) = Spool::open(dir, 1 << 20, false).unwrap();
    for _ in 0..3 {
        let first = spool.next_seq();
        spool.append(4, &frame(first, 4)).unwrap();
    }
    last_segment(dir).unwrap()
}

fn quarantined(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("quarantine")).map_or(0, |d| d.count())
}

#[test]
fn damage_in_the_middle_costs_that_record_only_and_the_segment_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let seg = three_batches_of_four(dir.path());
    let epoch = Spool::open(dir.path(), 1 << 20, false).unwrap().0.epoch();
    let mut bytes = std::fs::read(&seg).unwrap();
    let second = 20 + frame(0, 4).len();
    bytes[second + 25] ^= 0xff; // corrupt the second record's payload
    std::fs::write(&seg, &bytes).unwrap();
    let (spool, report) = Spool::open(dir.path(), 1 << 20, false).unwrap();
    assert_eq!((report.torn_records, report.torn_events), (1, 4), "{report:?}");
    assert_eq!(
        (report.damaged_segments, report.skipped_bytes),
        (1, (20 + frame(4, 4).len()) as u64)
    );
    // The hole at 4..8 would stop acknowledgements upstream for good: the intact records
    // move to a new epoch, renumbered without it, above every old number.
    assert!(report.new_epoch && report.rebased_records == 2, "{report:?}");
    assert_ne!(spool.epoch(), epoch);
    let kept: Vec<(u64, (u64, u32))> =
        spool.pending().map(|r| (r.first_seq, batch_of(&spool.read(r).unwrap()))).collect();
    assert_eq!(kept, [(12, (0, 4)), (16, (8, 4))], "the first and third batches are kept");
    let renumbered: wire::Envelope =
        wire::decode(&spool.read(spool.pending().last().unwrap()).unwrap()).unwrap();
    assert_eq!((renumbered.epoch, renumbered.first_seq), (spool.epoch(), 16));
    // It may have been delivered under its old numbers already: each event names them, and
    // upstream identifies it by them.
    let origins: Vec<_> = renumbered.events.iter().map(wire::Event::rebased_from).collect();
    assert_eq!(origins, (8..12).map(|seq| Some((epoch, seq))).collect::<Vec<_>>());
    assert_eq!(spool.next_seq(), 20);
    assert_eq!(quarantined(dir.path()), 1, "a copy kept for inspection");
    // The repaired spool opens clean next time.
    drop(spool);
    let (spool, again) = Spool::open(dir.path(), 1 << 20, false).unwrap();
    assert_eq!(spool.pending().count(), 2);
    assert!(!again.repaired() && !again.new_epoch, "{again:?}");
}

#[test]
fn garbage_at_the_end_is_cut_and_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let seg = three_batches_of_four(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let third = 2 * 20 + frame(0, 4).len() + frame(4, 4).len();
    bytes[third + 25] ^= 0xff; // corrupt the last record's payload
    std::fs::write(&seg, &bytes).unwrap();
    let (spool, report) = Spool::open(dir.path(), 1 << 20, false).unwrap();
    assert_eq!((report.torn_records, report.torn_events, report.skipped_bytes), (1, 4, 0));
    assert_eq!(spool.pending().count(), 2);
    assert_eq!(spool.next_seq(), 8, "sequence continues after the last intact record");
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), third as u64, "the torn end is cut off");
}

#[test]
fn an_unreadable_segment_is_quarantined_and_the_spool_opens_in_a_new_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let (epoch, first_seg) = {
        let (mut spool, _) = Spool::open(dir.path(), 1 << 20, false).unwrap();
        spool.append(4, &frame(0, 4)).unwrap();
        (spool.epoch(), last_segment(dir.path()).unwrap())
    };
    // A "segment" that no read succeeds on (a directory: EISDIR, even for root), after the
    // readable one.
    std::fs::create_dir(dir.path().join("seg-00000000000000000100")).unwrap();
    let (spool, report) = Spool::open(dir.path(), 1 << 20, false).unwrap();
    assert_eq!(report.unreadable_segments, 1, "{report:?}");
    assert!(report.new_epoch && spool.epoch() != epoch, "new batches must not look like repeats");
    assert_eq!(spool.pending().count(), 1, "the readable segment's record is kept");
    let kept = spool.pending().next().copied().unwrap();
    assert_eq!(batch_of(&spool.read(&kept).unwrap()), (0, 4), "renumbered into the new epoch");
    assert!(!first_seg.exists(), "its segment replaced by the new epoch's");
    assert!(!dir.path().join("seg-00000000000000000100").exists(), "moved to quarantine");
    assert_eq!(quarantined(dir.path()), 1);
}

#[test]
fn a_corrupt_state_file_recovers_the_epoch_from_the_records_and_replays_everything() {
    let dir = tempfile::tempdir().unwrap();
    let epoch = {
        let (mut spool, _) = Spool::open(dir.path(), 1 << 20, false).unwrap();
        let envelope = wire::Envelope {
            node_id: "n".into(),
            epoch: spool.epoch(),
            first_seq: 0,
            events: Vec::new(),
            dropped: Default::default(),
        };
        spool.append(3, &wire::encode(&envelope)).unwrap();
        spool.append(2, &frame(3, 2)).unwrap();
        spool.ack(3).unwrap();
        spool.epoch()
    };
    std::fs::write(dir.path().join("state"), b"\xff garbage").unwrap();
    let (spool, report) = Spool::open(dir.path(), 1 << 20, false).unwrap();
    assert!(report.state_corrupt && !report.new_epoch);
    assert_eq!(spool.epoch(), epoch, "the epoch is read back from the first record");
    assert_eq!(spool.pending().count(), 2, "everything left is replayed");
    assert_eq!(spool.next_seq(), 5);

    // Without records to learn from, a new epoch starts.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("state"), b"nonsense").unwrap();
    let (spool, report) = Spool::open(empty.path(), 1 << 20, false).unwrap();
    assert!(report.state_corrupt && report.new_epoch);
    assert_eq!(spool.pending().count(), 0);
}

/// Whichever record in the middle is damaged (its header or its payload), every other record
/// survives, in order, with its own bytes.
#[test]
fn any_damaged_record_in_the_middle_costs_only_itself() {
    let counts = [3u32, 1, 7, 2, 5, 4, 6];
    let mut offsets = vec![0usize];
    for (i, c) in counts.iter().enumerate() {
        let first: u64 = counts[..i].iter().map(|c| u64::from(*c)).sum();
        offsets.push(offsets[i] + 20 + frame(first, *c).len());
    }
    for damaged in 0..counts.len() - 1 {
        for at in [0usize, 5, 17, 24] {
            let dir = tempfile::tempdir().unwrap();
            {
                let (mut spool, _) = Spool::open(dir.path(), 1 << 20, false).unwrap();
                for c in counts {
                    let first = spool.next_seq();
                    spool.append(c, &frame(first, c)).unwrap();
                }
            }
            let seg = last_segment(dir.path()).unwrap();
            let mut bytes = std::fs::read(&seg).unwrap();
            bytes[offsets[damaged] + at] ^= 0x5a;
            std::fs::write(&seg, &bytes).unwrap();
            let (spool, report) = Spool::open(dir.path(), 1 << 20, false).unwrap();
            let kept: Vec<(u64, u32)> =
                spool.pending().map(|r| batch_of(&spool.read(r).unwrap())).collect();
            let mut want = Vec::new();
            let mut seq = 0u64;
            for (i, c) in counts.iter().enumerate() {
                if i != damaged {
                    want.push((seq, *c));
                }
                seq += u64::from(*c);
            }
            assert_eq!(kept, want, "damage at byte {at} of record {damaged}: {report:?}");
            assert_eq!(report.torn_events, u64::from(counts[damaged]));
            // Renumbered without the hole, in a new epoch, above every old number.
            let numbers: Vec<(u64, u32)> =
                spool.pending().map(|r| (r.first_seq, r.count)).collect();
            let mut next = seq;
            let mut contiguous = Vec::new();
            for &(_, c) in &want {
                contiguous.push((next, c));
                next += u64::from(c);
            }
            assert_eq!(numbers, contiguous, "damage at byte {at} of record {damaged}");
            assert_eq!(spool.next_seq(), next);
        }
    }
}

/// A spool written by an earlier agent (a CRC of the payload alone, no flag in `len`) is
/// still read after an upgrade.
#[test]
fn records_of_the_earlier_format_are_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let payload = frame(0, 2);
    let mut record = (payload.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    record.extend_from_slice(&0u64.to_le_bytes());
    record.extend_from_slice(&2u32.to_le_bytes());
    record.extend_from_slice(&payload);
    std::fs::write(dir.path().join("seg-00000000000000000000"), &record).unwrap();
    std::fs::write(dir.path().join("state"), "7 0\n").unwrap();
    let (mut spool, report) = Spool::open(dir.path(), 1 << 20, false).unwrap();
    assert!(!report.repaired(), "{report:?}");
    assert_eq!(spool.epoch(), 7);
    let r = spool.pending().next().copied().expect("the old record");
    assert_eq!((r.first_seq, r.count), (0, 2));
    assert_eq!(spool.read(&r).unwrap(), payload);
    // New records follow in the new format, and both replay.
    spool.append(3, &frame(2, 3)).unwrap();
    drop(spool);
    let (spool, _) = Spool::open(dir.path(), 1 << 20, false).unwrap();
    assert_eq!(spool.pending().count(), 2);
}

/// A sender removes only what it sent: a drop report without events, appended at the position
/// an acknowledgement reaches, stays until it is sent, and a sender walks the spool in append
/// order, so it does get sent.
#[test]
fn an_acknowledgement_leaves_an_unsent_record_without_events() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), 1 << 20, false).unwrap();
    let first = spool.append(4, &frame(0, 4)).unwrap();
    let sent = spool.pending_after(None).unwrap();
    assert_eq!(sent, first);
    let report = spool.append(0, &frame(4, 0)).unwrap();
    assert_eq!(report.first_seq, 4);
    spool.ack_sent(4, Some(&sent)).unwrap();
    assert_eq!(spool.acked(), 4);
    let next = spool.pending_after(Some(&sent)).expect("the report, still to send");
    assert_eq!(next, report);
    spool.ack_sent(4, Some(&next)).unwrap();
    assert_eq!(spool.pending().count(), 0, "sent and acknowledged: gone");
    // A sender that has sent nothing (it rewound) removes nothing.
    let r = spool.append(2, &frame(4, 2)).unwrap();
    spool.ack_sent(6, None).unwrap();
    assert_eq!(spool.pending().next(), Some(&r));
}
