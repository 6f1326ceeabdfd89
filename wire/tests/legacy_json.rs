//! The legacy AuditFlow event JSON ↔ `Event` mapping: the seven templates round-trip exactly
//! and land in their typed kinds, the top-level forms of the address and the path are read,
//! and nothing a producer sends is lost, whatever its shape.

use serde_json::{Value as Json, json};
use uuid::Uuid;
use wire::legacy::{LegacyError, event_uuid, from_legacy, from_legacy_json, to_legacy};
use wire::synth::{Synth, Template};
use wire::{EventKind, Outcome, Severity, Source, Timestamp};

const RECEIVED: Timestamp = Timestamp(1_700_000_000_000_000_000);

fn round_trip(original: &Json) -> Json {
    let event = from_legacy(original, RECEIVED).unwrap();
    // The postcard form must carry everything too.
    let env = wire::Envelope {
        node_id: "n".into(),
        epoch: 0,
        first_seq: 0,
        events: vec![event],
        dropped: Default::default(),
    };
    let decoded: wire::Envelope = wire::decode(&wire::encode(&env)).unwrap();
    to_legacy(&decoded.events[0], "other-node", Uuid::nil())
}

#[test]
fn each_of_the_seven_templates_round_trips_into_its_typed_kind() {
    let mut synth = Synth::new(7);
    for template in Template::ALL {
        for i in 0..50 {
            let original =
                synth.legacy_json(template, Timestamp(1_764_000_000_000_000_000 + i * 1_234_567));
            let event = from_legacy(&original, RECEIVED).unwrap();
            assert!(
                !matches!(event.kind, EventKind::Generic { .. }),
                "{template:?} became generic: {original}"
            );
            assert!(
                event.attrs.is_empty(),
                "{template:?} needed attrs {:?} for {original}",
                event.attrs
            );
            assert_eq!(event.source, Source::Legacy);
            assert_eq!(
                Uuid::from_bytes(event.id.unwrap()).to_string(),
                original["event_id"].as_str().unwrap(),
                "event_id is kept as the correlation id"
            );
            assert_eq!(round_trip(&original), original, "{template:?}");
        }
    }
}

#[test]
fn login_fields_are_typed() {
    let original = json!({
        "event_id": "2f1b7f0e-8d4c-4a51-9d43-1b2f7c3e9a10",
        "timestamp": "2025-06-01T12:00:00.123456Z",
        "source_service": "audit-event-generator",
        "server_hostname": "web-01",
        "event_type": "user_login",
        "severity": "WARNING",
        "user_id": "alice",
        "action_result": "FAILURE",
        "details": {"ip_address": "203.0.113.5", "protocol": "SSH", "reason": "Invalid password"}
    });
    let e = from_legacy(&original, RECEIVED).unwrap();
    assert_eq!(e.ts, Timestamp::parse_rfc3339("2025-06-01T12:00:00.123456Z").unwrap());
    assert_eq!(e.severity, Severity::Warning);
    assert_eq!(e.host.as_deref(), Some("web-01"));
    assert_eq!(e.origin.as_deref(), Some("audit-event-generator"));
    match e.kind {
        EventKind::Login { user, src_ip, method, outcome, reason } => {
            assert_eq!(user, "alice");
            assert_eq!(src_ip.unwrap().to_string(), "203.0.113.5");
            assert_eq!(method.as_deref(), Some("SSH"));
            assert_eq!(outcome, Outcome::Failure);
            assert_eq!(reason.as_deref(), Some("Invalid password"));
        }
        other => panic!("not a login: {other:?}"),
    }
}

#[test]
fn top_level_address_and_resource_are_read() {
    let login = json!({
        "event_id": "2f1b7f0e-8d4c-4a51-9d43-1b2f7c3e9a10", "timestamp": "2025-06-01T12:00:00Z",
        "event_type": "user_login", "user_id": "bob", "action_result": "SUCCESS",
        "ip_address": "10.0.0.5"
    });
    let e = from_legacy(&login, RECEIVED).unwrap();
    assert!(
        matches!(&e.kind, EventKind::Login { src_ip: Some(ip), .. } if ip.to_string() == "10.0.0.5")
    );
    let back = to_legacy(&e, "n", Uuid::nil());
    assert_eq!(back["ip_address"], "10.0.0.5", "the original top-level key is kept");
    assert_eq!(back["details"]["ip_address"], "10.0.0.5", "and the canonical one is written");

    // `client_ip` at the top (our contract's name) is read too; the legacy placeholder
    // "N/A" is no address, not a reason to drop the login's type.
    for (value, want) in [("10.0.0.9", Some("10.0.0.9")), ("N/A", None)] {
        let login = json!({
            "event_id": "2f1b7f0e-8d4c-4a51-9d43-1b2f7c3e9a10", "timestamp": "2025-06-01T12:00:00Z",
            "event_type": "user_login", "user_id": "bob", "action_result": "FAILURE",
            "client_ip": value
        });
        let e = from_legacy(&login, RECEIVED).unwrap();
        let EventKind::Login { src_ip, .. } = &e.kind else { panic!("not a login: {e:?}") };
        assert_eq!(src_ip.map(|ip| ip.to_string()).as_deref(), want, "client_ip {value}");
    }

    let file = json!({
        "event_id": "2f1b7f0e-8d4c-4a51-9d43-1b2f7c3e9a10", "timestamp": "2025-06-01T12:00:00Z",
        "event_type": "file_modified", "user_id": "root", "action_result": "MODIFIED",
        "resource": "/etc/passwd"
    });
    let e = from_legacy(&file, RECEIVED).unwrap();
    assert!(matches!(&e.kind, EventKind::FileChange { path, .. } if path == "/etc/passwd"));
    let back = to_legacy(&e, "n", Uuid::nil());
    assert_eq!(back["resource"], "/etc/passwd");
    assert_eq!(back["user_id"], "root", "the file event's user is kept");
}

#[test]
fn unknown_event_types_become_generic_without_losing_a_field() {
    let original = json!({
        "event_id": "2f1b7f0e-8d4c-4a51-9d43-1b2f7c3e9a10",
        "timestamp": "2025-06-01T12:00:00Z",
        "source_service": "firewall",
        "server_hostname": "gw",
        "event_type": "port_scan",
        "severity": "CRITICAL",
        "user_id": null,
        "action_result": "BLOCKED",
        "extra_top": {"nested": [1, 2, {"a": "b"}]},
        "details": {"ports": [22, 80], "count": 1000, "ratio": 0.25, "big": 18446744073709551615u64, "flag": false}
    });
    let e = from_legacy(&original, RECEIVED).unwrap();
    assert!(
        matches!(&e.kind, EventKind::Generic { event_type, fields } if event_type == "port_scan" && fields.len() == 5)
    );
    assert_eq!(round_trip(&original), original);
}

#[test]
fn known_types_that_do_not_fit_stay_whole() {
    let cases = [
        // Unknown result for a login.
        json!({"event_type": "user_login", "user_id": "a", "action_result": "LOCKED", "timestamp": "2025-06-01T12:00:00Z", "event_id": "2f1b7f0e-8d4c-4a51-9d43-1b2f7c3e9a10"}),
        // No user.
        json!({"event_type": "user_login", "action_result": "FAILURE", "details": {"ip_address": "1.2.3.4"}}),
        // Not an address.
        json!({"event_type": "user_login", "user_id": "a", "action_result": "FAILURE", "details": {"ip_address": "somewhere"}}),
        // Upper-case UUID, odd timestamp, severity and host types, details not an object.
        json!({"event_type": "sudo_command", "user_id": "a", "action_result": "SUCCESS", "event_id": "2F1B7F0E-8D4C-4A51-9D43-1B2F7C3E9A10", "timestamp": "yesterday", "severity": "high", "server_hostname": 7, "details": "sudo -i"}),
        // Checksums that are not SHA-256 hex.
        json!({"event_type": "file_modified", "action_result": "MODIFIED", "details": {"resource": "/etc/x", "checksum_before": "md5:abc"}}),
        // Non-UTC offset and nanoseconds.
        json!({"event_type": "service_status_change", "action_result": "STARTED", "timestamp": "2025-06-01T14:00:00.123456789+02:00", "details": {"service_name": "nginx"}}),
    ];
    for original in cases {
        let back = round_trip(&original);
        let back = back.as_object().unwrap();
        for (key, value) in original.as_object().unwrap() {
            if key == "details" && value.is_object() {
                for (dk, dv) in value.as_object().unwrap() {
                    assert_eq!(back["details"].get(dk), Some(dv), "details.{dk} of {original}");
                }
            } else {
                assert_eq!(back.get(key), Some(value), "{key} of {original}");
            }
        }
    }
}

#[test]
fn missing_timestamp_uses_receive_time() {
    let e = from_legacy(&json!({"event_type": "x"}), RECEIVED).unwrap();
    assert_eq!(e.ts, RECEIVED);
}

#[test]
fn bad_input_is_a_clear_error() {
    assert!(matches!(from_legacy_json(b"{not json", RECEIVED), Err(LegacyError::InvalidJson(_))));
    assert_eq!(from_legacy_json(b"[1,2]", RECEIVED), Err(LegacyError::NotAnObject));
    assert_eq!(
        from_legacy_json(b"{\"event_type\": 5}", RECEIVED),
        Err(LegacyError::MissingEventType)
    );
    assert_eq!(from_legacy_json(b"{}", RECEIVED), Err(LegacyError::MissingEventType));
}

#[test]
fn agent_events_get_stable_derived_ids() {
    let a = event_uuid("pi-1", 1, 42);
    assert_eq!(a, event_uuid("pi-1", 1, 42));
    assert_ne!(a, event_uuid("pi-1", 1, 43));
    assert_ne!(a, event_uuid("pi-1", 2, 42));
    assert_ne!(a, event_uuid("pi-2", 1, 42));
    let mut synth = Synth::new(1);
    let e = synth.next_event(RECEIVED);
    let json = to_legacy(&e, "pi-1", a);
    assert_eq!(json["event_id"], a.to_string());
    assert_eq!(json["server_hostname"], "pi-1");
    assert_eq!(json["source_service"], "auditflow-agent");
}
