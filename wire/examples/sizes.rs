//! Size and speed of the wire format against the legacy JSON.
//!
//! `cargo run --release -p wire --example sizes` generates 100,000 events with the legacy
//! template mix (the seven templates with equal probability, fixed seed), encodes them in
//! envelopes of 1, 64 and 512 events and as legacy JSON (compact, one message per event, as
//! the legacy services send them but without the spaces Python's `json.dumps` adds, so the
//! JSON figure is a lower bound), and prints bytes per event and encode/decode rates.

use std::hint::black_box;
use std::time::Instant;

use wire::legacy::{event_uuid, to_legacy};
use wire::synth::Synth;
use wire::{Envelope, Event, Timestamp, decode, encode};

const EVENTS: usize = 100_000;
const NODE: &str = "k3s-node-1";
const EPOCH: u64 = 1;

fn main() {
    let mut synth = Synth::new(0x00a0_d17f);
    let start = Timestamp::from_unix(1_764_000_000, 0);
    let events: Vec<Event> =
        (0..EVENTS).map(|i| synth.next_event(Timestamp(start.0 + i as i64 * 1_000_000))).collect();

    let t = Instant::now();
    let json_bytes: usize = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let v = to_legacy(e, NODE, event_uuid(NODE, EPOCH, i as u64));
            serde_json::to_vec(&v).map_or(0, |b| b.len())
        })
        .sum();
    let json_secs = t.elapsed().as_secs_f64();
    let json_per_event = json_bytes as f64 / EVENTS as f64;

    println!("{EVENTS} events, legacy template mix, fixed seed");
    println!();
    println!(
        "| batch | postcard bytes/event | legacy JSON bytes/event | ratio | encode events/s | decode events/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut last = (0.0, 0.0);
    for batch in [1usize, 64, 512] {
        let envelopes: Vec<Envelope> = events
            .chunks(batch)
            .enumerate()
            .map(|(i, chunk)| Envelope {
                node_id: NODE.to_owned(),
                epoch: EPOCH,
                first_seq: (i * batch) as u64,
                events: chunk.to_vec(),
                dropped: Default::default(),
            })
            .collect();
        let t = Instant::now();
        let frames: Vec<Vec<u8>> = envelopes.iter().map(|e| encode(black_box(e))).collect();
        let encode_rate = EVENTS as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut decoded = 0usize;
        for frame in &frames {
            let env: Envelope = decode(black_box(frame)).expect("own frames decode");
            decoded += env.events.len();
        }
        let decode_rate = decoded as f64 / t.elapsed().as_secs_f64();
        assert_eq!(decoded, EVENTS);
        let bytes: usize = frames.iter().map(Vec::len).sum();
        let per_event = bytes as f64 / EVENTS as f64;
        println!(
            "| {batch} | {per_event:.1} | {json_per_event:.1} | {:.2} | {encode_rate:.0} | {decode_rate:.0} |",
            json_per_event / per_event
        );
        last = (per_event, json_per_event);
    }
    println!();
    println!("legacy JSON encode: {:.0} events/s", EVENTS as f64 / json_secs);
    println!(
        "wire: postcard_bytes_per_event={:.1} json_bytes_per_event={:.1} ratio={:.2}",
        last.0,
        last.1,
        last.1 / last.0
    );
}
