//! Property tests of the frame codec: every message round-trips, and decoding arbitrary or
//! damaged bytes returns an error value instead of panicking.

mod common;

use std::net::IpAddr;

use proptest::prelude::*;
use wire::{
    Ack, DecodeError, Digest, DropCounts, DropReason, Envelope, Event, EventKind, FileOp,
    Heartbeat, Outcome, RunAck, Severity, Source, Timestamp, Value, decode, encode,
    frame::decode_with_limit,
};

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>().prop_filter("NaN never equals itself", |f| !f.is_nan()).prop_map(Value::Float),
        text().prop_map(Value::Str),
        text().prop_map(Value::Json),
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![Just(Outcome::Success), Just(Outcome::Failure)]
}

fn kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        (text(), proptest::option::of(any::<IpAddr>()), opt_text(), outcome(), opt_text())
            .prop_map(|(user, src_ip, method, outcome, reason)| EventKind::Login {
                user,
                src_ip,
                method,
                outcome,
                reason
            }),
        (text(), text(), opt_text(), opt_text(), opt_text(), outcome()).prop_map(
            |(user, target_user, command, tty, cwd, outcome)| EventKind::Privilege {
                user,
                target_user,
                command,
                tty,
                cwd,
                outcome
            }
        ),
        (
            text(),
            prop_oneof![
                Just(FileOp::Created),
                Just(FileOp::Modified),
                Just(FileOp::Deleted),
                Just(FileOp::Attrib),
                Just(FileOp::Renamed)
            ],
            proptest::option::of(any::<[u8; 32]>().prop_map(Digest)),
            proptest::option::of(any::<[u8; 32]>().prop_map(Digest)),
            proptest::option::of(any::<i64>())
        )
            .prop_map(|(path, op, old_hash, new_hash, size_delta)| EventKind::FileChange {
                path,
                op,
                old_hash,
                new_hash,
                size_delta
            }),
        (text(), text(), text()).prop_map(|(name, version, action)| EventKind::Package {
            name,
            version,
            action
        }),
        (text(), opt_text(), text()).prop_map(|(unit, from, to)| EventKind::Service {
            unit,
            from,
            to
        }),
        (text(), text(), opt_text()).prop_map(|(name, action, group)| EventKind::Account {
            name,
            action,
            group
        }),
        (
            (text(), text(), opt_text(), opt_text(), opt_text(), text()),
            proptest::collection::vec(text(), 0..3),
            proptest::collection::vec(text(), 0..3),
            any::<u16>()
        )
            .prop_map(
                |(
                    (verb, resource, subresource, namespace, name, user),
                    groups,
                    source_ips,
                    code,
                )| {
                    EventKind::K8sAudit {
                        verb,
                        resource,
                        subresource,
                        namespace,
                        name,
                        user,
                        groups,
                        source_ips,
                        code,
                    }
                }
            ),
        ((text(), text(), text(), text()), opt_text(), any::<bool>(), opt_text(), opt_text())
            .prop_map(
                |((provider, event, repo, actor), git_ref, forced, default_branch, action)| {
                    EventKind::Git {
                        provider,
                        event,
                        repo,
                        actor,
                        git_ref,
                        forced,
                        default_branch,
                        action,
                    }
                }
            ),
        (text(), proptest::collection::vec((text(), value()), 0..4))
            .prop_map(|(event_type, fields)| EventKind::Generic { event_type, fields }),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    (
        any::<i64>(),
        proptest::sample::select(Source::ALL.to_vec()),
        prop_oneof![Just(Severity::Info), Just(Severity::Warning), Just(Severity::Critical)],
        kind(),
        proptest::option::of(any::<[u8; 16]>()),
        opt_text(),
        opt_text(),
        proptest::collection::vec((text(), value()), 0..3),
    )
        .prop_map(|(ts, source, severity, kind, id, host, origin, attrs)| Event {
            ts: Timestamp(ts),
            source,
            severity,
            kind,
            id,
            host,
            origin,
            attrs,
        })
}

fn drops() -> impl Strategy<Value = DropCounts> {
    proptest::collection::vec(
        (proptest::sample::select(DropReason::ALL.to_vec()), any::<u64>()),
        0..4,
    )
    .prop_map(|pairs| {
        let mut d = DropCounts::default();
        for (r, n) in pairs {
            d.add(r, n);
        }
        d
    })
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (text(), any::<u64>(), any::<u64>(), proptest::collection::vec(event(), 0..6), drops())
        .prop_map(|(node_id, epoch, first_seq, events, dropped)| Envelope {
            node_id,
            epoch,
            first_seq,
            events,
            dropped,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn envelope_round_trips(e in envelope()) {
        prop_assert_eq!(decode::<Envelope>(&encode(&e)).unwrap(), e);
    }

    #[test]
    fn ack_round_trips(epoch in any::<u64>(), up_to_seq in any::<u64>()) {
        let a = Ack { epoch, up_to_seq };
        prop_assert_eq!(decode::<Ack>(&encode(&a)).unwrap(), a);
    }

    #[test]
    fn run_ack_round_trips(epoch in any::<u64>(), from_seq in any::<u64>(), up_to_seq in any::<u64>()) {
        let a = RunAck { epoch, from_seq, up_to_seq };
        prop_assert_eq!(decode::<RunAck>(&encode(&a)).unwrap(), a);
    }

    #[test]
    fn heartbeat_round_trips(node_id in text(), version in text(), n in any::<[u64; 3]>(), dropped in drops(), rules_version in text(), ts in any::<i64>()) {
        let h = Heartbeat { node_id, version, uptime_secs: n[0], spool_bytes: n[1], events_sent: n[2], dropped, rules_version, ts: Timestamp(ts) };
        prop_assert_eq!(decode::<Heartbeat>(&encode(&h)).unwrap(), h);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode::<Envelope>(&bytes);
        let _ = decode::<Ack>(&bytes);
        let _ = decode::<RunAck>(&bytes);
        let _ = decode::<Heartbeat>(&bytes);
    }

    #[test]
    fn versioned_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut frame = vec![wire::WIRE_VERSION];
        frame.extend(bytes);
        let _ = decode::<Envelope>(&frame);
        let _ = decode::<RunAck>(&frame);
        let _ = decode::<Heartbeat>(&frame);
    }

    #[test]
    fn every_truncation_is_an_error(e in envelope(), cut in any::<proptest::sample::Index>()) {
        let bytes = encode(&e);
        let at = cut.index(bytes.len());
        match decode::<Envelope>(&bytes[..at]) {
            Err(DecodeError::Empty | DecodeError::Truncated { .. } | DecodeError::Malformed { .. }) => {}
            other => prop_assert!(false, "truncated at {} of {}: {:?}", at, bytes.len(), other),
        }
    }

    #[test]
    fn flipped_bytes_never_panic(e in envelope(), at in any::<proptest::sample::Index>(), bit in 0u8..8) {
        let mut bytes = encode(&e);
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let _ = decode::<Envelope>(&bytes);
    }
}

#[test]
fn decode_errors_are_precise() {
    let good = encode(&common::envelope());
    assert_eq!(decode::<Envelope>(&[]), Err(DecodeError::Empty));
    assert_eq!(
        decode::<Envelope>(&[9, 0, 0]),
        Err(DecodeError::UnknownVersion { found: 9, expected: wire::WIRE_VERSION })
    );
    assert_eq!(
        decode::<Envelope>(&good[..good.len() - 1]),
        Err(DecodeError::Truncated { message: "envelope" })
    );
    let mut trailing = good.clone();
    trailing.extend([0, 0, 0]);
    assert_eq!(
        decode::<Envelope>(&trailing),
        Err(DecodeError::TrailingBytes { message: "envelope", count: 3 })
    );
    assert_eq!(
        decode_with_limit::<Envelope>(&good, 16),
        Err(DecodeError::Oversize { len: good.len(), max: 16 })
    );
    // A bool byte of 7 is not a valid encoding.
    let bad_bool = [wire::WIRE_VERSION, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7];
    assert!(matches!(
        decode::<Envelope>(&bad_bool),
        Err(DecodeError::Malformed { .. }) | Err(DecodeError::Truncated { .. })
    ));
    // A hostile length prefix does not allocate its claim: 2^63 events announced, none sent.
    let hostile =
        [wire::WIRE_VERSION, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
    assert!(decode::<Envelope>(&hostile).is_err());
}
