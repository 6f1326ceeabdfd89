//! Any bytes given to the legacy JSON reader give an event or an error, never a panic; and an
//! event read renders back to JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::Timestamp;
use wire::legacy::{from_legacy_json, to_legacy};

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = from_legacy_json(data, Timestamp(0)) {
        let _ = to_legacy(&event, "node", uuid_nil());
    }
});

fn uuid_nil() -> wire::legacy::Uuid {
    wire::legacy::Uuid::nil()
}
