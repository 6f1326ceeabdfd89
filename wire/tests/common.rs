//! Sample messages shared by the wire tests: one event of every kind, with every optional
//! field used somewhere.

#![allow(dead_code)]

use wire::{
    Ack, Digest, DropCounts, DropReason, Envelope, Event, EventKind, FileOp, Heartbeat, Outcome,
    RunAck, Severity, Source, Timestamp, Value,
};

pub const TS: Timestamp = Timestamp(1_764_000_000_123_456_000);

pub fn one_of_each_kind() -> Vec<Event> {
    let kinds = vec![
        EventKind::Login {
            user: "alice".into(),
            src_ip: Some("203.0.113.5".parse().unwrap()),
            method: Some("password".into()),
            outcome: Outcome::Failure,
            reason: Some("invalid user".into()),
        },
        EventKind::Privilege {
            user: "bob".into(),
            target_user: "root".into(),
            command: Some("/usr/bin/id".into()),
            tty: Some("pts/0".into()),
            cwd: Some("/home/bob".into()),
            outcome: Outcome::Success,
        },
        EventKind::FileChange {
            path: "/etc/shadow".into(),
            op: FileOp::Modified,
            old_hash: Some(Digest([1; 32])),
            new_hash: Some(Digest([2; 32])),
            size_delta: Some(-12),
        },
        EventKind::Package {
            name: "openssh-server:arm64".into(),
            version: "1:9.2p1-2+deb12u3".into(),
            action: "upgrade".into(),
        },
        EventKind::Service {
            unit: "ssh.service".into(),
            from: Some("active".into()),
            to: "failed".into(),
        },
        EventKind::Account {
            name: "mallory".into(),
            action: "created".into(),
            group: Some("sudo".into()),
        },
        EventKind::K8sAudit {
            verb: "get".into(),
            resource: "secrets".into(),
            subresource: None,
            namespace: Some("kube-system".into()),
            name: Some("k3s-token".into()),
            user: "system:serviceaccount:default:x".into(),
            groups: vec!["system:serviceaccounts".into()],
            source_ips: vec!["10.42.0.7".into()],
            code: 200,
        },
        EventKind::Git {
            provider: "github".into(),
            event: "push".into(),
            repo: "acme/app".into(),
            actor: "eve".into(),
            git_ref: Some("refs/heads/main".into()),
            forced: true,
            default_branch: Some("main".into()),
            action: None,
        },
        EventKind::Generic {
            event_type: "custom".into(),
            fields: vec![
                ("n".into(), Value::Int(-3)),
                ("f".into(), Value::Float(0.5)),
                ("b".into(), Value::Bool(true)),
                ("z".into(), Value::Null),
                ("s".into(), Value::Str("x".into())),
                ("j".into(), Value::Json("[1,2]".into())),
            ],
        },
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            let mut e =
                Event::new(Timestamp(TS.0 + i as i64), Source::ALL[i % 9], Severity::Warning, kind);
            if i == 0 {
                e.id = Some([0xab; 16]);
                e.host = Some("web-01".into());
                e.origin = Some("audit-event-generator".into());
                e.attrs = vec![("details.port".into(), Value::Int(22))];
            }
            e
        })
        .collect()
}

pub fn drops() -> DropCounts {
    let mut d = DropCounts::default();
    d.add(DropReason::SpoolFull, 7);
    d.add(DropReason::Sampled, 300);
    d
}

pub fn envelope() -> Envelope {
    Envelope {
        node_id: "pi-1".into(),
        epoch: 3,
        first_seq: 1000,
        events: one_of_each_kind(),
        dropped: drops(),
    }
}

pub fn ack() -> Ack {
    Ack { epoch: 3, up_to_seq: 1009 }
}

pub fn run_ack() -> RunAck {
    RunAck { epoch: 3, from_seq: 1000, up_to_seq: 1009 }
}

pub fn heartbeat() -> Heartbeat {
    Heartbeat {
        node_id: "pi-1".into(),
        version: "0.1.0".into(),
        uptime_secs: 3600,
        spool_bytes: 4096,
        events_sent: 123_456,
        dropped: drops(),
        rules_version: "r1".into(),
        ts: TS,
    }
}
