//! `LegacyGenerator` makes the legacy Python generator's events: its templates, vocabularies,
//! details keys, severities and timestamp format (design.md §8.5), and every event survives
//! AuditFlow's legacy mapping unchanged (JSON → event → JSON is the identity).

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;
use wire::Timestamp;
use wire::synth::{LegacyGenerator, legacy_vocab, python_utc_iso};

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

#[test]
fn the_legacy_generators_events_exactly() {
    let mut g = LegacyGenerator::new(7);
    let now = Timestamp::parse_rfc3339("2025-07-20T11:30:00.123456Z").unwrap();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let mut hosts = BTreeSet::new();
    for _ in 0..7_000 {
        let e = g.next_json(now);
        assert_eq!(
            keys(&e),
            [
                "action_result",
                "details",
                "event_id",
                "event_type",
                "server_hostname",
                "severity",
                "source_service",
                "timestamp",
                "user_id"
            ]
        );
        let id = uuid::Uuid::parse_str(e["event_id"].as_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 4);
        assert_eq!(e["timestamp"], "2025-07-20T11:30:00.123456Z");
        assert_eq!(e["source_service"], "audit-event-generator");
        let host = e["server_hostname"].as_str().unwrap();
        assert!(legacy_vocab::HOSTS.contains(&host));
        hosts.insert(host.to_owned());
        assert!(legacy_vocab::USERS.contains(&e["user_id"].as_str().unwrap()));
        let (t, r, sev) = (
            e["event_type"].as_str().unwrap(),
            e["action_result"].as_str().unwrap(),
            e["severity"].as_str().unwrap(),
        );
        let d = &e["details"];
        match (t, r) {
            ("user_login", "FAILURE") => {
                assert_eq!(sev, "WARNING");
                assert_eq!(keys(d), ["ip_address", "protocol", "reason"]);
                assert_eq!(d["reason"], "Incorrect password");
                let last: u32 = d["ip_address"]
                    .as_str()
                    .unwrap()
                    .strip_prefix("192.168.1.")
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((100..=200).contains(&last));
                assert!(["ssh", "console"].contains(&d["protocol"].as_str().unwrap()));
            }
            ("user_login", "SUCCESS") => {
                assert_eq!(sev, "INFO");
                assert_eq!(keys(d), ["ip_address", "protocol"]);
            }
            ("sudo_command", "SUCCESS") => {
                assert_eq!(sev, "INFO");
                assert_eq!(keys(d), ["command", "cwd", "tty"]);
                assert!(legacy_vocab::COMMANDS.contains(&d["command"].as_str().unwrap()));
                assert_eq!(d["tty"], "/dev/pts/0");
                assert!(d["cwd"].as_str().unwrap().starts_with("/home/"));
            }
            ("file_modified", "MODIFIED") => {
                assert_eq!(sev, "CRITICAL");
                assert_eq!(
                    keys(d),
                    ["new_checksum", "old_checksum", "resource", "size_change_bytes"]
                );
                assert!(legacy_vocab::RESOURCES.contains(&d["resource"].as_str().unwrap()));
                assert_eq!(d["old_checksum"].as_str().unwrap().len(), 8);
                assert!((-1000..=1000).contains(&d["size_change_bytes"].as_i64().unwrap()));
            }
            ("service_status_change", "STARTED") => {
                assert_eq!(sev, "INFO");
                assert_eq!(keys(d), ["message", "previous_state", "resource"]);
                assert_eq!(d["message"], "Service successfully started.");
                assert!(["STOPPED", "FAILED"].contains(&d["previous_state"].as_str().unwrap()));
            }
            ("service_status_change", "STOPPED") => {
                assert_eq!(sev, "WARNING");
                assert_eq!(d["previous_state"], "RUNNING");
                assert_eq!(d["message"], "Service unexpectedly stopped.");
            }
            ("user_account_management", "CREATED") => {
                assert_eq!(sev, "INFO");
                assert_eq!(keys(d), ["group", "home_directory", "resource"]);
                assert!(d["resource"].as_str().unwrap().starts_with("new_user_"));
                assert!(d["home_directory"].as_str().unwrap().starts_with("/home/new_user_"));
            }
            other => panic!("not a legacy template: {other:?}"),
        }
        *seen.entry((t.to_owned(), r.to_owned())).or_default() += 1;

        // Through AuditFlow's mapping and back, unchanged.
        let event = wire::legacy::from_legacy(&e, now).unwrap();
        let back = wire::legacy::to_legacy(&event, host, id);
        assert_eq!(back, e);
    }
    // Seven templates, each about a seventh of the traffic.
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert!(seen.values().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    assert_eq!(hosts.len(), 4);
}

#[test]
fn timestamps_as_python_prints_them() {
    let t = |s: &str| python_utc_iso(Timestamp::parse_rfc3339(s).unwrap());
    assert_eq!(t("2025-07-20T11:30:00.123456Z"), "2025-07-20T11:30:00.123456Z");
    assert_eq!(t("2025-07-20T11:30:00.5Z"), "2025-07-20T11:30:00.500000Z");
    assert_eq!(t("2025-07-20T11:30:00Z"), "2025-07-20T11:30:00Z");
}
