//! Golden bytes: the exact encoding of every message type is pinned here, so a change of
//! encoding (a reordered field, a new variant in the middle, a serde attribute) fails a test
//! instead of silently breaking agents in the field. If a change is intended, it needs a new
//! `WIRE_VERSION` and new golden bytes.

mod common;

use wire::{Ack, DecodeError, Envelope, Heartbeat, RunAck, decode, encode};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check<M: wire::Message + PartialEq + std::fmt::Debug>(message: &M, golden: &str) {
    let bytes = encode(message);
    assert_eq!(hex(&bytes), golden, "encoding of {} changed", M::NAME);
    assert_eq!(&decode::<M>(&bytes).unwrap(), message);
}

#[test]
fn ack_golden() {
    check(&common::ack(), GOLDEN_ACK);
}

#[test]
fn run_ack_golden() {
    check(&common::run_ack(), GOLDEN_RUN_ACK);
}

/// Why `RunAck` has a topic of its own: a reader of `Ack` (an agent of an earlier version)
/// refuses it, and a reader of `RunAck` refuses an `Ack`, so neither can mistake one for the
/// other even if one arrived on the wrong topic.
#[test]
fn ack_and_run_ack_are_not_mistaken_for_each_other() {
    assert_eq!(
        decode::<Ack>(&encode(&common::run_ack())),
        Err(DecodeError::TrailingBytes { message: "ack", count: 2 })
    );
    assert_eq!(
        decode::<RunAck>(&encode(&common::ack())),
        Err(DecodeError::Truncated { message: "run_ack" })
    );
}

#[test]
fn heartbeat_golden() {
    check(&common::heartbeat(), GOLDEN_HEARTBEAT);
}

#[test]
fn envelope_golden() {
    check(&common::envelope(), GOLDEN_ENVELOPE);
}

#[test]
fn empty_envelope_golden() {
    let e = Envelope {
        node_id: String::new(),
        epoch: 0,
        first_seq: 0,
        events: vec![],
        dropped: Default::default(),
    };
    check(&e, "010000000000");
}

#[test]
fn every_event_kind_golden() {
    // One frame per kind, so that a change names the kind it broke.
    for (event, golden) in common::one_of_each_kind().into_iter().zip(GOLDEN_KINDS) {
        let e = Envelope {
            node_id: "n".into(),
            epoch: 1,
            first_seq: 0,
            events: vec![event],
            dropped: Default::default(),
        };
        check(&e, golden);
    }
}

#[test]
fn version_byte_leads_every_frame() {
    assert_eq!(encode(&common::ack())[0], wire::WIRE_VERSION);
    assert_eq!(encode(&common::heartbeat())[0], wire::WIRE_VERSION);
    let _: Ack = decode(&encode(&common::ack())).unwrap();
    let _: Heartbeat = decode(&encode(&common::heartbeat())).unwrap();
}

const GOLDEN_ACK: &str = "0103f107";
const GOLDEN_RUN_ACK: &str = "0103e807f107";
const GOLDEN_HEARTBEAT: &str =
    "010470692d3105302e312e30901c8020c0c4070201ac02040702723180a8aef2eda9fefa30";
const GOLDEN_ENVELOPE: &str = "010470692d3103e8070980a8aef2eda9fefa3000010005616c6963650100cb007105010870617373776f726401010c696e76616c6964207573657201abababababababababababababababab01067765622d3031011561756469742d6576656e742d67656e657261746f72010c64657461696c732e706f7274022c82a8aef2eda9fefa3001010103626f6204726f6f74010b2f7573722f62696e2f696401057074732f3001092f686f6d652f626f62000000000084a8aef2eda9fefa300201020b2f6574632f736861646f770101010101010101010101010101010101010101010101010101010101010101010101020202020202020202020202020202020202020202020202020202020202020201170000000086a8aef2eda9fefa30030103146f70656e7373682d7365727665723a61726d363411313a392e3270312d322b6465623132753307757067726164650000000088a8aef2eda9fefa300401040b7373682e736572766963650106616374697665066661696c6564000000008aa8aef2eda9fefa30050105076d616c6c6f7279076372656174656401047375646f000000008ca8aef2eda9fefa3006010603676574077365637265747300010b6b7562652d73797374656d01096b33732d746f6b656e1f73797374656d3a736572766963656163636f756e743a64656661756c743a78011673797374656d3a736572766963656163636f756e7473010931302e34322e302e37c801000000008ea8aef2eda9fefa300701070667697468756204707573680861636d652f61707003657665010f726566732f68656164732f6d61696e0101046d61696e000000000090a8aef2eda9fefa3008010806637573746f6d06016e0205016603000000000000e03f01620101017a000173040178016a05055b312c325d000000000201ac020407";
const GOLDEN_KINDS: [&str; 9] = [
    "01016e01000180a8aef2eda9fefa3000010005616c6963650100cb007105010870617373776f726401010c696e76616c6964207573657201abababababababababababababababab01067765622d3031011561756469742d6576656e742d67656e657261746f72010c64657461696c732e706f7274022c00",
    "01016e01000182a8aef2eda9fefa3001010103626f6204726f6f74010b2f7573722f62696e2f696401057074732f3001092f686f6d652f626f62000000000000",
    "01016e01000184a8aef2eda9fefa300201020b2f6574632f736861646f770101010101010101010101010101010101010101010101010101010101010101010101020202020202020202020202020202020202020202020202020202020202020201170000000000",
    "01016e01000186a8aef2eda9fefa30030103146f70656e7373682d7365727665723a61726d363411313a392e3270312d322b6465623132753307757067726164650000000000",
    "01016e01000188a8aef2eda9fefa300401040b7373682e736572766963650106616374697665066661696c65640000000000",
    "01016e0100018aa8aef2eda9fefa30050105076d616c6c6f7279076372656174656401047375646f0000000000",
    "01016e0100018ca8aef2eda9fefa3006010603676574077365637265747300010b6b7562652d73797374656d01096b33732d746f6b656e1f73797374656d3a736572766963656163636f756e743a64656661756c743a78011673797374656d3a736572766963656163636f756e7473010931302e34322e302e37c8010000000000",
    "01016e0100018ea8aef2eda9fefa300701070667697468756204707573680861636d652f61707003657665010f726566732f68656164732f6d61696e0101046d61696e000000000000",
    "01016e01000190a8aef2eda9fefa3008010806637573746f6d06016e0205016603000000000000e03f01620101017a000173040178016a05055b312c325d0000000000",
];
