//! Golden tests of the legacy views (design.md §8.3, §8.4): the `audit_alerts` message and
//! the legacy read API's row, key for key and value for value, as the legacy analysis and
//! notification services produced them (their alert builder, insert and read API, read from
//! the legacy code; design.md §8.3 and §8.4 list the fields): alert names, descriptions, rule
//! descriptions, tags, remediation texts and playbook URLs are the legacy services' strings.
//! AuditFlow's own fields follow the legacy keys in the message; the read API row has the 23
//! legacy columns only.

use aggregator::legacy_alert::{FLAT_KEYS, FeedChange, Firing, flat, nested};
use aggregator::store::{Alert, Status};
use serde_json::{Value, json};
use uuid::Uuid;

/// 2025-07-20T11:30:00.123Z
const CREATED: i64 = 1_753_011_000_123;

fn alert(rule_id: &str, rule_name: &str, title: &str, raw_event: Value) -> Alert {
    Alert {
        id: Uuid::from_u128(0x5b0c_0000_0000_4000_8000_0000_0000_0001),
        fingerprint: format!("{rule_id}/x"),
        rule_id: rule_id.into(),
        rule_name: rule_name.into(),
        rule_description: "AuditFlow's description of the rule".into(),
        severity: "CRITICAL".into(),
        title: title.into(),
        tags: vec!["ours".into()],
        node: "pi-node-1".into(),
        group: serde_json::Map::new(),
        status: Status::Open,
        occurrences: 7,
        first_seen: CREATED - 5_000,
        last_seen: CREATED,
        created_at: CREATED,
        updated_at: CREATED,
        correlation_id: Uuid::from_u128(0xc0e1_0000_0000_4000_8000_0000_0000_0002),
        remediation: Some("AuditFlow's remediation".into()),
        playbook_url: Some("https://auditflow.example/playbooks/x".into()),
        silenced: false,
        raw_event,
    }
}

/// The legacy keys of a message, without AuditFlow's.
fn legacy_part(message: &Value) -> Value {
    const KEYS: [&str; 15] = [
        "alert_id",
        "timestamp",
        "alert_name",
        "alert_type",
        "severity",
        "description",
        "source_service_name",
        "analysis_rule",
        "triggered_by",
        "impacted_resource",
        "action_observed",
        "correlation_id",
        "raw_event_data",
        "metadata",
        // Not a key of the legacy message: checked to be absent.
        "client_ip",
    ];
    let m = message.as_object().unwrap();
    Value::Object(
        KEYS.iter().filter_map(|k| m.get(*k).map(|v| ((*k).to_owned(), v.clone()))).collect(),
    )
}

fn generator_login_failure() -> Value {
    json!({
        "event_id": "c0e10000-0000-4000-8000-000000000002",
        "timestamp": "2025-07-20T11:29:59.500000Z",
        "source_service": "audit-event-generator",
        "server_hostname": "prod-web-01",
        "event_type": "user_login",
        "severity": "WARNING",
        "user_id": "attacker_bob",
        "action_result": "FAILURE",
        "details": {"reason": "Incorrect password", "ip_address": "192.168.1.150", "protocol": "ssh"}
    })
}

#[test]
fn failed_login_burst_message_is_the_legacy_one() {
    let raw = generator_login_failure();
    let a = alert(
        "ANLY-SEC-001",
        "Failed Login Burst Detection",
        "3 failed logins for attacker_bob on prod-web-01 within 60 s",
        raw.clone(),
    );
    let message = nested(&a, Firing::first(&a), FeedChange::Created, "DEVELOPMENT");
    assert_eq!(
        legacy_part(&message),
        json!({
            "alert_id": "5b0c0000-0000-4000-8000-000000000001",
            "timestamp": "2025-07-20T11:30:00+00:00Z",
            "alert_name": "Multiple Failed Login Attempts",
            "alert_type": "SECURITY",
            "severity": "CRITICAL",
            "description": "3 or more failed login attempts for user 'attacker_bob' on 'prod-web-01' within 60 seconds.",
            "source_service_name": "audit-event-generator",
            "analysis_rule": {
                "rule_id": "ANLY-SEC-001",
                "rule_name": "Failed Login Burst Detection",
                "rule_description": "Detects 3 failed logins within 60 seconds."
            },
            "triggered_by": {"actor_type": "USER", "actor_id": "attacker_bob", "client_ip": "192.168.1.150"},
            "impacted_resource": {
                "resource_type": "SERVER",
                "resource_id": "prod-web-01",
                "server_hostname": "prod-web-01"
            },
            "action_observed": "LOGIN_FAILURE",
            "correlation_id": "c0e10000-0000-4000-8000-000000000002",
            "raw_event_data": raw,
            "metadata": {
                "tags": ["brute-force", "authentication", "critical"],
                "environment": "DEVELOPMENT",
                "remediation_guidance": "Investigate user account activity, check for suspicious IP origins, consider temporary lockout.",
                "playbook_url": "https://example.com/playbooks/failed_login_burst"
            }
        })
    );
    // AuditFlow's own fields, under their own names.
    let ours: Vec<&str> = message
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|k| legacy_part(&message).get(*k).is_none())
        .collect();
    let mut ours = ours;
    ours.sort_unstable();
    assert_eq!(
        ours,
        [
            "auditflow_alert_id",
            "change",
            "fingerprint",
            "first_seen",
            "group",
            "last_seen",
            "node",
            "occurrences",
            "status"
        ]
    );
    assert_eq!(message["change"], "created");
    assert_eq!(message["occurrences"], 7);
}

/// A file event submitted with a top-level `resource` (how the legacy rule read the path) and
/// no address: `client_ip` is the legacy "N/A"; the environment is the configured one.
#[test]
fn sensitive_file_message_and_row_are_the_legacy_ones() {
    let raw = json!({
        "event_id": "c0e10000-0000-4000-8000-000000000002",
        "timestamp": "2025-07-20T11:29:59Z",
        "source_service": "audit-event-generator-api",
        "server_hostname": "prod-db-02",
        "event_type": "file_modified",
        "severity": "CRITICAL",
        "user_id": "devops_admin",
        "action_result": "MODIFIED",
        "resource": "/etc/shadow",
        "details": {}
    });
    let a = alert("ANLY-SEC-002", "Sensitive File Modification Detection", "ours", raw.clone());
    let message = nested(&a, Firing::first(&a), FeedChange::Created, "pilab");
    let expected_rule = json!({
        "rule_id": "ANLY-SEC-002",
        "rule_name": "Sensitive File Modification Detection",
        "rule_description": "Detects modifications to predefined sensitive system files."
    });
    let expected_resource = json!({
        "resource_type": "FILE",
        "resource_id": "/etc/shadow",
        "server_hostname": "prod-db-02"
    });
    let expected_metadata = json!({
        "tags": ["data-integrity", "compliance", "critical-infrastructure"],
        "environment": "pilab",
        "remediation_guidance": "Verify integrity of the file, check for unauthorized access, restore from known good backup if compromised. Review user privileges.",
        "playbook_url": "https://example.com/playbooks/sensitive_file_modified"
    });
    assert_eq!(
        legacy_part(&message),
        json!({
            "alert_id": "5b0c0000-0000-4000-8000-000000000001",
            "timestamp": "2025-07-20T11:30:00+00:00Z",
            "alert_name": "Sensitive File Modification Detected",
            "alert_type": "SECURITY",
            "severity": "CRITICAL",
            "description": "Sensitive file '/etc/shadow' modified by 'devops_admin' on 'prod-db-02'.",
            "source_service_name": "audit-event-generator-api",
            "analysis_rule": expected_rule,
            "triggered_by": {"actor_type": "USER", "actor_id": "devops_admin", "client_ip": "N/A"},
            "impacted_resource": expected_resource,
            "action_observed": "FILE_MODIFIED",
            "correlation_id": "c0e10000-0000-4000-8000-000000000002",
            "raw_event_data": raw,
            "metadata": expected_metadata
        })
    );

    // The read API's row: what the legacy notification service stored from that message and
    // returned (client_ip "N/A" became NULL; times as Python printed them).
    let row = flat(&a, "pilab");
    assert_eq!(
        row,
        json!({
            "alert_id": "5b0c0000-0000-4000-8000-000000000001",
            "correlation_id": "c0e10000-0000-4000-8000-000000000002",
            "timestamp": "2025-07-20 11:30:00+00:00",
            "received_at": "2025-07-20 11:30:00.123000+00:00",
            "alert_name": "Sensitive File Modification Detected",
            "alert_type": "SECURITY",
            "severity": "CRITICAL",
            "description": "Sensitive file '/etc/shadow' modified by 'devops_admin' on 'prod-db-02'.",
            "source_service_name": "audit-event-generator-api",
            "rule_id": "ANLY-SEC-002",
            "rule_name": "Sensitive File Modification Detection",
            "actor_type": "USER",
            "actor_id": "devops_admin",
            "client_ip": null,
            "resource_type": "FILE",
            "resource_id": "/etc/shadow",
            "server_hostname": "prod-db-02",
            "action_observed": "FILE_MODIFIED",
            "analysis_rule_details": expected_rule,
            "triggered_by_details": {"actor_type": "USER", "actor_id": "devops_admin", "client_ip": "N/A"},
            "impacted_resource_details": expected_resource,
            "metadata": expected_metadata,
            "raw_event_data": raw
        })
    );
    let keys: Vec<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = FLAT_KEYS.to_vec();
    expected.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, expected);
}

/// Rules the legacy services did not have keep AuditFlow's names and texts, in the legacy
/// enumerations' style; an event from an agent (no `source_service` of a legacy producer)
/// names the agent.
#[test]
fn other_rules_use_the_legacy_enumerations() {
    let raw = json!({
        "event_id": "c0e10000-0000-4000-8000-000000000002",
        "timestamp": "2025-07-20T11:29:59Z",
        "source_service": "auditflow-agent",
        "server_hostname": "pi-node-1",
        "event_type": "sudo_command",
        "severity": "INFO",
        "user_id": "alice",
        "action_result": "SUCCESS",
        "details": {"command": "/bin/rm -rf /", "tty": "pts/0", "cwd": "/home/alice", "run_as": "root"}
    });
    let a = alert("HOST-SUDO-001", "Destructive command through sudo", "alice ran rm", raw);
    let m = nested(&a, Firing::first(&a), FeedChange::Updated, "DEVELOPMENT");
    assert_eq!(m["alert_name"], "Destructive command through sudo");
    assert_eq!(m["description"], "alice ran rm");
    assert_eq!(m["analysis_rule"]["rule_description"], "AuditFlow's description of the rule");
    assert_eq!(m["source_service_name"], "auditflow-agent");
    assert_eq!(
        m["triggered_by"],
        json!({"actor_type": "USER", "actor_id": "alice", "client_ip": "N/A"})
    );
    assert_eq!(
        m["impacted_resource"],
        json!({"resource_type": "SERVER", "resource_id": "pi-node-1", "server_hostname": "pi-node-1"})
    );
    assert_eq!(m["action_observed"], "SUDO_COMMAND_SUCCESS");
    assert_eq!(m["metadata"]["tags"], json!(["ours"]));
    assert_eq!(m["metadata"]["remediation_guidance"], "AuditFlow's remediation");
    assert_eq!(m["change"], "updated");

    // No user: a system actor; no source: the legacy default.
    let a = alert(
        "FLEET-AGENT-SILENT-001",
        "Agent silent",
        "pi-node-1 is silent",
        json!({"event_type": "agent_silent", "server_hostname": "pi-node-1"}),
    );
    let m = nested(&a, Firing::first(&a), FeedChange::Created, "DEVELOPMENT");
    assert_eq!(
        m["triggered_by"],
        json!({"actor_type": "SYSTEM", "actor_id": "unknown", "client_ip": "N/A"})
    );
    assert_eq!(m["source_service_name"], "unknown-event-source");
    assert_eq!(m["action_observed"], "AGENT_SILENT");
}

/// Feed mode `firing`: each message is one firing, with the firing's own id, event and time.
#[test]
fn a_firing_message_describes_its_own_firing() {
    let a = alert("ANLY-SEC-001", "Failed Login Burst Detection", "t", generator_login_failure());
    let mut later = generator_login_failure();
    later["user_id"] = json!("guest_user");
    later["server_hostname"] = json!("dev-api-03");
    later["details"]["ip_address"] = json!("192.168.1.111");
    let f = Firing {
        id: Uuid::from_u128(9),
        event_id: Uuid::from_u128(10),
        event: &later,
        at: CREATED + 61_000,
    };
    let m = nested(&a, f, FeedChange::Firing, "DEVELOPMENT");
    assert_eq!(m["alert_id"], "00000000-0000-0000-0000-000000000009");
    assert_eq!(m["correlation_id"], "00000000-0000-0000-0000-00000000000a");
    assert_eq!(m["timestamp"], "2025-07-20T11:31:01+00:00Z");
    assert_eq!(
        m["description"],
        "3 or more failed login attempts for user 'guest_user' on 'dev-api-03' within 60 seconds."
    );
    assert_eq!(m["triggered_by"]["client_ip"], "192.168.1.111");
    assert_eq!(m["raw_event_data"], later);
    assert_eq!(m["auditflow_alert_id"], "5b0c0000-0000-4000-8000-000000000001");
    assert_eq!(m["change"], "firing");
}
