//! The spool keeps every batch until it is acknowledged, across crashes at any point: a
//! record torn by a power cut is cut off and counted, everything intact is replayed, and
//! sequence numbers continue without a gap.

use std::fs::OpenOptions;
use std::path::Path;

use agent::spool::{AppendError, Spool};
use proptest::prelude::*;

fn frame(first_seq: u64, count: u32) -> Vec<u8> {
    // Any bytes do; make them depend on the batch so a mix-up is visible.
    let mut f = format!("batch {first_seq}+{count};").into_bytes();
    f.resize(32 + (first_seq % 50) as usize + count as usize * 3, b'x');
    f
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

#[test]
fn garbage_in_a_segment_is_cut_and_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = Spool::open(dir.path(), 1 << 20, false).unwrap();
        for _ in 0..3 {
            let first = spool.next_seq();
            spool.append(4, &frame(first, 4)).unwrap();
        }
    }
    let seg = last_segment(dir.path()).unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let second = 20 + frame(0, 4).len();
    bytes[second + 25] ^= 0xff; // corrupt the second record's payload
    std::fs::write(&seg, &bytes).unwrap();
    let (spool, report) = Spool::open(dir.path(), 1 << 20, false).unwrap();
    assert_eq!(report.torn_records, 1);
    assert_eq!(report.torn_events, 4);
    assert_eq!(spool.pending().count(), 1);
    assert_eq!(spool.next_seq(), 4, "sequence continues after the last intact record");
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
