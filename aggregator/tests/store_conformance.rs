//! One conformance suite for both alert stores: every case runs against SQLite (a file in a
//! temporary directory) and against the real PostgreSQL of `DATABASE_URL` (a database of its
//! own per case, dropped afterwards). Fails loudly, naming PostgreSQL, when it is missing.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use aggregator::detect::Firing;
use aggregator::store::{
    Action, AlertQuery, ChangeKind, Channel, Cursor, Matcher, SharedStore, Silence, Status,
    Transitioned,
};
use sqlx::PgPool;
use uuid::Uuid;
use wire::model::{Event, EventKind, Heartbeat, Outcome, Severity, Source, Timestamp};

const NOW: i64 = 1_790_000_000_000;

fn channels() -> Vec<Channel> {
    vec![
        Channel { name: "audit_alerts".into(), silenceable: false },
        Channel { name: "ops-webhook".into(), silenceable: true },
    ]
}

/// A firing of `rule` for `user` on `node` at `NOW + at_ms`, with an id of its own.
fn firing(rule: &str, user: &str, node: &str, at_ms: i64, n: u128) -> Firing {
    let ts = Timestamp::from_unix((NOW + at_ms) / 1000, ((NOW + at_ms) % 1000) as u32 * 1_000_000);
    let event = Event::new(
        ts,
        Source::AuthLog,
        Severity::Warning,
        EventKind::Login {
            user: user.into(),
            src_ip: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))),
            method: Some("password".into()),
            outcome: Outcome::Failure,
            reason: None,
        },
    );
    Firing {
        id: Uuid::from_u128(n),
        fingerprint: format!("{rule}/{user}/{node}"),
        rule_id: rule.into(),
        rule_name: format!("{rule} name").into(),
        rule_description: "a test rule".into(),
        severity: if rule.ends_with('1') { Severity::Critical } else { Severity::Warning },
        tags: vec!["auth".into()].into(),
        group: vec![("user".into(), user.into()), ("host".into(), node.into())],
        title: format!("failed logins for {user} on {node}"),
        count: 3,
        node: node.into(),
        event_id: Uuid::from_u128(n + 1_000_000),
        event,
        remediation: Some("look".into()),
        playbook_url: None,
    }
}

struct Pg {
    admin: PgPool,
    name: String,
}

impl Pg {
    async fn drop_db(&self) {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await;
    }
}

/// Runs `case` against a fresh SQLite store, then a fresh PostgreSQL one.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite:{}", dir.path().join("alerts.db").display());
                let store = aggregator::store::open(&url, super::channels()).await.unwrap();
                super::$name(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let (store, pg) = super::pg_store(stringify!($name)).await;
                super::$name(store).await;
                pg.drop_db().await;
            }
        }
    )*};
}

async fn pg_store(case: &str) -> (SharedStore, Pg) {
    let url = std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: PostgreSQL is required for this test; run scripts/test.sh",
    );
    let admin = PgPool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL: cannot connect to DATABASE_URL: {e}"));
    let name = format!("auditflow_agg_store_{case}_{}", std::process::id());
    let pg = Pg { admin, name };
    pg.drop_db().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{}\"", pg.name)))
        .execute(&pg.admin)
        .await
        .expect("create database");
    let (base, _) = url.rsplit_once('/').expect("DATABASE_URL has a database path");
    let store =
        aggregator::store::open(&format!("{base}/{}", pg.name), channels()).await.expect("open");
    (store, pg)
}

conformance!(
    folding,
    redelivery,
    lifecycle,
    filters_and_pages,
    hostile_filters,
    common_search_text,
    silences,
    fleet,
    stats_and_rule_counts,
    outbox,
    firing_feed,
    legacy_offsets,
    ninety_days,
    imports,
    archive,
    concurrent_writers,
);

async fn folding(store: SharedStore) {
    let batch = [firing("R-1", "alice", "pi-a", 0, 1), firing("R-1", "alice", "pi-a", 5_000, 2)];
    let c = store.commit_at(&batch, NOW).await.unwrap();
    assert_eq!((c.created, c.folded, c.duplicates), (1, 1, 0));
    assert_eq!(
        c.changed,
        [(Uuid::from_u128(1), ChangeKind::Created), (Uuid::from_u128(1), ChangeKind::Folded)]
    );
    // Earlier event time arriving later moves first_seen back.
    let c = store.commit_at(&[firing("R-1", "alice", "pi-a", -2_000, 3)], NOW + 10).await.unwrap();
    assert_eq!((c.created, c.folded), (0, 1));

    let page = store.list_alerts(&AlertQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(page.alerts.len(), 1);
    let a = &page.alerts[0];
    assert_eq!(a.id, Uuid::from_u128(1));
    assert_eq!(a.occurrences, 3);
    assert_eq!((a.first_seen, a.last_seen), (NOW - 2_000, NOW + 5_000));
    assert_eq!((a.created_at, a.updated_at), (NOW, NOW + 10));
    assert_eq!(a.status, Status::Open);
    assert_eq!(a.severity, "CRITICAL");
    assert_eq!(a.tags, ["auth"]);
    assert_eq!(a.group["user"], "alice");
    assert_eq!(a.correlation_id, Uuid::from_u128(1_000_001));
    assert_eq!(a.raw_event["user_id"], "alice");
    assert!(!a.silenced);

    let d = store.alert(a.id).await.unwrap().expect("detail");
    // Evidence: newest event time first.
    let ids: Vec<&str> = d.evidence.iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            Uuid::from_u128(1_000_002).to_string(),
            Uuid::from_u128(1_000_001).to_string(),
            Uuid::from_u128(1_000_003).to_string()
        ]
    );
    assert!(d.history.is_empty());
    let chans: Vec<(&str, &str)> =
        d.deliveries.iter().map(|d| (d.channel.as_str(), d.state.as_str())).collect();
    assert_eq!(chans, [("audit_alerts", "pending"), ("ops-webhook", "pending")]);

    // Another group is another alert.
    let c = store.commit_at(&[firing("R-1", "bob", "pi-a", 0, 4)], NOW).await.unwrap();
    assert_eq!(c.created, 1);
    assert!(store.alert(Uuid::from_u128(99)).await.unwrap().is_none());
}

async fn redelivery(store: SharedStore) {
    let batch = [firing("R-1", "alice", "pi-a", 0, 1), firing("R-1", "alice", "pi-a", 1, 2)];
    store.commit_at(&batch, NOW).await.unwrap();
    let again = store.commit_at(&batch, NOW + 1).await.unwrap();
    assert_eq!((again.created, again.folded, again.duplicates), (0, 0, 2));
    assert!(again.changed.is_empty());
    let page = store.list_alerts(&AlertQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(page.alerts.len(), 1);
    assert_eq!(page.alerts[0].occurrences, 2);
    assert_eq!(page.alerts[0].updated_at, NOW);
    // The same firing twice in one batch is one firing.
    let twice = [firing("R-2", "bob", "pi-b", 5, 7), firing("R-2", "bob", "pi-b", 5, 7)];
    let c = store.commit_at(&twice, NOW + 2).await.unwrap();
    assert_eq!((c.created, c.folded, c.duplicates), (1, 0, 1));
    let page = store
        .list_alerts(&AlertQuery { rule: Some("R-2".into()), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(page.alerts.len(), 1);
    assert_eq!(page.alerts[0].occurrences, 1);
}

/// Writers committing overlapping batches at once (replicas, or two consumers, handed the same
/// redelivered firings): a writer that finds another stored some of its firings meanwhile fails
/// and is retried, as the pipeline retries a batch; in the end every firing is stored and
/// folded once, into one alert.
async fn concurrent_writers(store: SharedStore) {
    let all: Vec<Firing> =
        (0..40).map(|i| firing("R-9", "carol", "pi-c", i * 10, 500 + i as u128)).collect();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        let part = all[w * 3..(w * 3 + 19).min(all.len())].to_vec();
        tasks.push(tokio::spawn(async move {
            for _ in 0..100 {
                if let Ok(c) = store.commit_at(&part, NOW).await {
                    return (c.created, c.folded);
                }
            }
            panic!("writer {w} kept failing");
        }));
    }
    let (mut created, mut folded) = (0, 0);
    for t in tasks {
        let (c, f) = t.await.unwrap();
        (created, folded) = (created + c, folded + f);
    }
    assert_eq!(created, 1);
    // Writer 7 holds the last firing (w * 3 + 19 reaches 40 only from w = 7).
    assert_eq!(created + folded, all.len());
    let page = store
        .list_alerts(&AlertQuery { rule: Some("R-9".into()), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(page.alerts.len(), 1);
    assert_eq!(page.alerts[0].occurrences, all.len() as i64);
    let d = store.alert(page.alerts[0].id).await.unwrap().expect("detail");
    assert!(!d.evidence.is_empty());
}

async fn lifecycle(store: SharedStore) {
    store.commit_at(&[firing("R-1", "alice", "pi-a", 0, 1)], NOW).await.unwrap();
    let id = Uuid::from_u128(1);
    let t = store.transition(id, Action::Reopen, "ops", "no", NOW + 1).await.unwrap();
    assert!(matches!(t, Transitioned::Conflict(_)), "{t:?}");
    let t = store.transition(id, Action::Acknowledge, "ops", "looking", NOW + 2).await.unwrap();
    let Transitioned::Done(a) = t else { panic!("{t:?}") };
    assert_eq!((a.status, a.updated_at), (Status::Acknowledged, NOW + 2));
    let t = store.transition(id, Action::Acknowledge, "ops", "again", NOW + 3).await.unwrap();
    assert!(matches!(t, Transitioned::Conflict(_)), "{t:?}");
    // Acknowledged alerts still fold.
    let c = store.commit_at(&[firing("R-1", "alice", "pi-a", 10, 2)], NOW + 4).await.unwrap();
    assert_eq!(c.folded, 1);
    let t = store.transition(id, Action::Resolve, "admin", "fixed", NOW + 5).await.unwrap();
    assert!(matches!(t, Transitioned::Done(ref a) if a.status == Status::Resolved), "{t:?}");

    // A firing after resolution opens a new alert.
    let c = store.commit_at(&[firing("R-1", "alice", "pi-a", 20, 3)], NOW + 6).await.unwrap();
    assert_eq!(c.created, 1);
    // Reopening the old one would make two open alerts with one fingerprint.
    let t = store.transition(id, Action::Reopen, "ops", "", NOW + 7).await.unwrap();
    assert!(matches!(t, Transitioned::Conflict(ref m) if m.contains("same fingerprint")), "{t:?}");
    let t = store.transition(Uuid::from_u128(3), Action::Resolve, "ops", "", NOW + 8).await;
    assert!(matches!(t.unwrap(), Transitioned::Done(_)));
    let t = store.transition(id, Action::Reopen, "ops", "not fixed", NOW + 9).await.unwrap();
    assert!(matches!(t, Transitioned::Done(ref a) if a.status == Status::Open), "{t:?}");

    let d = store.alert(id).await.unwrap().unwrap();
    let h: Vec<(&str, &str, &str, &str, &str, i64)> = d
        .history
        .iter()
        .map(|h| {
            (
                h.actor.as_str(),
                h.action.as_str(),
                h.from_status.as_str(),
                h.to_status.as_str(),
                h.comment.as_str(),
                h.at,
            )
        })
        .collect();
    assert_eq!(
        h,
        [
            ("ops", "acknowledge", "open", "acknowledged", "looking", NOW + 2),
            ("admin", "resolve", "acknowledged", "resolved", "fixed", NOW + 5),
            ("ops", "reopen", "resolved", "open", "not fixed", NOW + 9),
        ]
    );
    let t = store.transition(Uuid::from_u128(77), Action::Resolve, "ops", "", NOW).await.unwrap();
    assert_eq!(t, Transitioned::NotFound);
}

async fn filters_and_pages(store: SharedStore) {
    let mut batch = Vec::new();
    for i in 0..25u128 {
        let node = if i % 2 == 0 { "pi-a" } else { "pi-b" };
        let rule = if i % 5 == 0 { "R-1" } else { "R-2" };
        batch.push(firing(rule, &format!("user{i}"), node, i as i64 * 1000, i + 1));
    }
    // Two alerts with the same last_seen: the id breaks the tie.
    batch.push(firing("R-2", "tie", "pi-c", 3000, 100));
    store.commit_at(&batch, NOW).await.unwrap();
    store.transition(Uuid::from_u128(2), Action::Acknowledge, "x", "", NOW).await.unwrap();

    let q = |f: &dyn Fn(&mut AlertQuery)| {
        let mut q = AlertQuery { limit: 100, ..Default::default() };
        f(&mut q);
        q
    };
    let count = |q: AlertQuery| {
        let store = store.clone();
        async move { store.list_alerts(&q).await.unwrap().alerts.len() }
    };
    assert_eq!(count(q(&|_| {})).await, 26);
    assert_eq!(count(q(&|q| q.node = Some("pi-a".into()))).await, 13);
    assert_eq!(count(q(&|q| q.rule = Some("R-1".into()))).await, 5);
    assert_eq!(count(q(&|q| q.severity = vec!["CRITICAL".into()])).await, 5);
    assert_eq!(count(q(&|q| q.severity = vec!["CRITICAL".into(), "WARNING".into()])).await, 26);
    assert_eq!(count(q(&|q| q.status = vec![Status::Acknowledged])).await, 1);
    assert_eq!(count(q(&|q| q.status = vec![Status::Open, Status::Resolved])).await, 25);
    assert_eq!(count(q(&|q| q.since = Some(NOW + 20_000))).await, 5);
    assert_eq!(count(q(&|q| q.until = Some(NOW + 2_000))).await, 2);
    assert_eq!(count(q(&|q| q.text = Some("USER1".into()))).await, 11);
    assert_eq!(count(q(&|q| q.text = Some("user12".into()))).await, 1);
    assert_eq!(
        count(q(&|q| {
            q.node = Some("pi-b".into());
            q.rule = Some("R-2".into());
            q.since = Some(NOW + 10_000);
        }))
        .await,
        6
    );

    // Pages of 4 walk every alert once, newest last_seen first.
    let mut seen = Vec::new();
    let mut after: Option<Cursor> = None;
    loop {
        let page =
            store.list_alerts(&AlertQuery { limit: 4, after, ..Default::default() }).await.unwrap();
        assert!(page.alerts.len() <= 4);
        seen.extend(page.alerts.iter().map(|a| (a.last_seen, a.id)));
        match page.next {
            Some(c) => after = Some(Cursor::decode(&c.encode()).unwrap()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 26);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted);
    sorted.dedup();
    assert_eq!(sorted.len(), 26);
}

async fn hostile_filters(store: SharedStore) {
    let mut f = firing("R-1", "o'brien%_\\", "pi-a", 0, 1);
    f.title = "50% of logins for o'brien_x".into();
    store.commit_at(&[f, firing("R-1", "bob", "pi-a", 0, 2)], NOW).await.unwrap();
    for text in ["'; DROP TABLE alerts; --", "\" OR 1=1 --", "%", "_", "\\", "' OR ''='"] {
        let q = AlertQuery { text: Some(text.into()), limit: 10, ..Default::default() };
        let found = store.list_alerts(&q).await.unwrap().alerts.len();
        let expected = usize::from(["%", "_", "\\"].contains(&text));
        assert_eq!(found, expected, "text {text:?}");
    }
    for node in ["pi-a' OR '1'='1", "pi-a\"; --"] {
        let q = AlertQuery { node: Some(node.into()), limit: 10, ..Default::default() };
        assert!(store.list_alerts(&q).await.unwrap().alerts.is_empty());
    }
    let q = AlertQuery { severity: vec!["x') OR 1=1 --".into()], limit: 10, ..Default::default() };
    assert!(store.list_alerts(&q).await.unwrap().alerts.is_empty());
    assert_eq!(
        store
            .list_alerts(&AlertQuery { limit: 10, ..Default::default() })
            .await
            .unwrap()
            .alerts
            .len(),
        2,
        "the table is still there"
    );
}

/// A text most alerts contain: more matches than SQLite's text index hands to the list
/// (2,000), so the list walks its order instead; pages still see every match once.
async fn common_search_text(store: SharedStore) {
    let batch: Vec<Firing> = (0..2_100u128)
        .map(|i| firing("R-2", &format!("many{i}"), "pi-a", i as i64, i + 1))
        .collect();
    store.commit_at(&batch, NOW).await.unwrap();
    store.commit_at(&[firing("R-2", "other", "pi-b", 0, 9_999)], NOW).await.unwrap();
    let search = |text: &str| {
        let store = store.clone();
        let text = text.to_owned();
        async move {
            let mut seen = std::collections::BTreeSet::new();
            let mut after = None;
            loop {
                let q = AlertQuery {
                    text: Some(text.clone()),
                    limit: 500,
                    after,
                    ..Default::default()
                };
                let page = store.list_alerts(&q).await.unwrap();
                for a in &page.alerts {
                    assert!(seen.insert(a.id), "{} twice", a.id);
                }
                match page.next {
                    Some(c) => after = Some(c),
                    None => break seen.len(),
                }
            }
        }
    };
    assert_eq!(search("many").await, 2_100);
    assert_eq!(search("MANY20").await, 111, "many20, many200..many209, many2000..many2099");
    assert_eq!(search("many2099").await, 1);
    assert_eq!(
        search("y2").await,
        211,
        "shorter than a trigram: many2, many20..29, many200..299, many2000..2099"
    );
    assert_eq!(search("other on pi-b").await, 1, "a phrase across words");
    assert_eq!(search("nowhere").await, 0);
}

async fn silences(store: SharedStore) {
    let m = |field: &str, value: &str| Matcher { field: field.into(), value: value.into() };
    let active = Silence {
        id: Uuid::from_u128(500),
        matchers: vec![m("rule_id", "R-1"), m("group.user", "ali*")],
        comment: "maintenance".into(),
        created_by: "ops".into(),
        created_at: NOW - 10,
        expires_at: NOW + 60_000,
    };
    let expired = Silence {
        id: Uuid::from_u128(501),
        matchers: vec![m("node", "pi-b")],
        expires_at: NOW - 1,
        ..active.clone()
    };
    store.add_silence(&active).await.unwrap();
    store.add_silence(&expired).await.unwrap();
    assert_eq!(store.silences(false, NOW).await.unwrap(), std::slice::from_ref(&active));
    assert_eq!(store.silences(true, NOW).await.unwrap().len(), 2);

    let batch = [
        firing("R-1", "alice", "pi-a", 0, 1),
        firing("R-1", "bob", "pi-a", 0, 2),
        firing("R-2", "alice", "pi-b", 0, 3),
    ];
    store.commit_at(&batch, NOW).await.unwrap();
    let state = |id: u128| {
        let store = store.clone();
        async move {
            let d = store.alert(Uuid::from_u128(id)).await.unwrap().unwrap();
            let chans: Vec<(String, String, Option<String>)> =
                d.deliveries.into_iter().map(|d| (d.channel, d.state, d.last_error)).collect();
            (d.alert.silenced, chans)
        }
    };
    let pending = |c: &str| (c.to_owned(), "pending".to_owned(), None);
    assert_eq!(
        state(1).await,
        (
            true,
            vec![
                pending("audit_alerts"),
                ("ops-webhook".into(), "skipped".into(), Some("silenced".into()))
            ]
        ),
        "stored, fed to audit_alerts, not notified"
    );
    assert_eq!(state(2).await, (false, vec![pending("audit_alerts"), pending("ops-webhook")]));
    assert_eq!(state(3).await, (false, vec![pending("audit_alerts"), pending("ops-webhook")]));

    assert!(store.expire_silence(active.id, NOW + 5).await.unwrap());
    assert!(!store.expire_silence(Uuid::from_u128(9), NOW + 5).await.unwrap());
    assert!(store.silences(false, NOW + 5).await.unwrap().is_empty());
    store.commit_at(&[firing("R-1", "alina", "pi-a", 0, 4)], NOW + 6).await.unwrap();
    assert!(!state(4).await.0);
}

async fn fleet(store: SharedStore) {
    let beat = |node: &str, sent: u64, dropped: u64| {
        let mut h = Heartbeat {
            node_id: node.into(),
            version: "0.1.0".into(),
            uptime_secs: 60,
            spool_bytes: 4096,
            events_sent: sent,
            dropped: Default::default(),
            rules_version: "abc".into(),
            ts: Timestamp::from_unix(0, 0),
        };
        h.dropped.add(wire::model::DropReason::RateLimited, dropped);
        h
    };
    store.record_heartbeats(&[beat("pi-b", 100, 0), beat("pi-a", 1000, 0)], NOW).await.unwrap();
    store.record_heartbeats(&[beat("pi-a", 1500, 7)], NOW + 10_000).await.unwrap();
    let agents = store.agents().await.unwrap();
    assert_eq!(agents.len(), 2);
    let a = &agents[0];
    assert_eq!((a.node.as_str(), a.first_seen, a.last_seen), ("pi-a", NOW, NOW + 10_000));
    assert_eq!((a.events_sent, a.dropped, a.spool_bytes), (1500, 7, 4096));
    assert!((a.events_per_s - 50.0).abs() < 1e-9, "{}", a.events_per_s);
    assert_eq!(a.drops["rate_limited"], 7);
    assert_eq!(agents[1].node, "pi-b");
    assert_eq!(agents[1].events_per_s, 0.0);

    // Source reports: the newest per node and source, beside the heartbeat's figures.
    let report = |node: &str, source: &'static str, lines: i64| aggregator::store::SourceReport {
        node: node.into(),
        source,
        stats: serde_json::json!({"lines_total": lines, "sample_1": "x"}),
    };
    store
        .record_source_reports(&[report("pi-a", "journal", 10), report("pi-a", "dpkg", 2)], NOW)
        .await
        .unwrap();
    store.record_source_reports(&[report("pi-a", "journal", 25)], NOW + 60_000).await.unwrap();
    let agents = store.agents().await.unwrap();
    let sources = &agents[0].sources;
    assert_eq!(sources["journal"]["lines_total"], 25, "{sources}");
    assert_eq!(sources["dpkg"]["lines_total"], 2, "{sources}");
    assert!(
        sources["journal"]["reported_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{sources}"
    );
    assert_eq!(agents[1].sources, serde_json::json!({}), "pi-b reported no source");
}

async fn stats_and_rule_counts(store: SharedStore) {
    let batch = [
        firing("R-1", "a", "pi-a", 0, 1),
        firing("R-1", "a", "pi-a", 1_000, 2),
        firing("R-2", "b", "pi-a", 30_000, 3),
        firing("R-2", "c", "pi-a", 61_000, 4),
        firing("R-2", "d", "pi-a", 600_000, 5),
    ];
    store.commit_at(&batch, NOW).await.unwrap();
    let buckets: Vec<(i64, String, i64, i64)> = store
        .stats(NOW, NOW + 120_000, 60_000)
        .await
        .unwrap()
        .into_iter()
        .map(|b| (b.start - NOW, b.severity, b.alerts, b.firings))
        .collect();
    assert_eq!(
        buckets,
        [
            (0, "CRITICAL".into(), 1, 2),
            (0, "WARNING".into(), 1, 1),
            (60_000, "WARNING".into(), 1, 1)
        ]
    );
    // A last bucket cut short by the window's end, which is not in the window.
    let cells = |from: i64, to: i64| {
        let store = store.clone();
        async move {
            let b = store.stats(NOW + from, NOW + to, 60_000).await.unwrap();
            b.into_iter().map(|b| (b.start - NOW, b.alerts)).collect::<Vec<_>>()
        }
    };
    assert_eq!(cells(0, 61_000).await, [(0, 1), (0, 1)]);
    assert_eq!(cells(0, 61_001).await, [(0, 1), (0, 1), (60_000, 1)]);
    assert_eq!(cells(1_000, 600_001).await, [(1_000, 1), (61_000, 1), (541_000, 1)]);
    let counts: Vec<(String, i64, Option<i64>)> = store
        .rule_counts()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.rule_id, c.firings, c.last_fired))
        .collect();
    assert_eq!(
        counts,
        [("R-1".into(), 2, Some(NOW + 1_000)), ("R-2".into(), 3, Some(NOW + 600_000))]
    );
}

async fn outbox(store: SharedStore) {
    store
        .commit_at(&[firing("R-1", "a", "pi-a", 0, 1), firing("R-2", "b", "pi-a", 0, 2)], NOW)
        .await
        .unwrap();
    assert!(store.claim_outbox(NOW - 1, 30_000, 10).await.unwrap().is_empty(), "not due yet");
    let claimed = store.claim_outbox(NOW, 30_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 4);
    assert!(claimed.iter().all(|c| c.attempts == 0));
    // Claimed rows are leased: a second claimer gets nothing until the lease ends.
    assert!(store.claim_outbox(NOW + 1, 30_000, 10).await.unwrap().is_empty());

    let sent = |at: i64| aggregator::store::Sent {
        status: aggregator::store::Status::Open,
        occurrences: 1,
        messaged_at: Some(at),
        update: false,
        again_at: None,
        firing: None,
    };
    let (ok, rest) = claimed.split_first().unwrap();
    assert_eq!((ok.sent_status.as_deref(), ok.delivered_at), (None, None), "not heard of yet");
    store.delivered(ok.id, &sent(NOW + 2)).await.unwrap();
    store.delivery_failed(rest[0].id, "connection refused", Some(NOW + 1_000)).await.unwrap();
    store.delivery_failed(rest[1].id, "HTTP 400", None).await.unwrap();
    store.delivery_skipped(rest[2].id, "filtered out").await.unwrap();

    let again = store.claim_outbox(NOW + 1_000, 30_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (rest[0].id, 1));
    store.delivered(again[0].id, &sent(NOW + 1_001)).await.unwrap();
    assert!(store.claim_outbox(NOW + 100_000, 30_000, 10).await.unwrap().is_empty());

    let mut states = Vec::new();
    for id in [1, 2] {
        let d = store.alert(Uuid::from_u128(id)).await.unwrap().unwrap();
        for x in d.deliveries {
            states.push((x.state, x.attempts, x.last_error, x.delivered_at.is_some()));
        }
    }
    states.sort();
    assert_eq!(
        states,
        [
            ("delivered".into(), 1, None, true),
            ("delivered".into(), 2, None, true),
            ("failed".into(), 1, Some("HTTP 400".into()), false),
            ("skipped".into(), 0, Some("filtered out".into()), false),
        ]
    );

    // The rows follow their alert: a firing folded into alert 1 puts its delivered row back
    // to pending, with what it last told the channel; the given-up and skipped rows stay.
    let delivered_row = ok.clone();
    store.commit_at(&[firing("R-1", "a", "pi-a", 5_000, 11)], NOW + 200_000).await.unwrap();
    let looked = store.claim_outbox(NOW + 200_000, 30_000, 10).await.unwrap();
    // Alert 1's two delivered rows (the first try and the retried one); alert 2's stay.
    let mine: Vec<_> = looked.iter().filter(|r| r.alert_id == delivered_row.alert_id).collect();
    assert_eq!(mine.len(), 2, "{looked:?}");
    assert_eq!(looked.len(), 2, "{looked:?}");
    let mine: Vec<_> = mine.into_iter().filter(|r| r.id == delivered_row.id).collect();
    assert_eq!(
        (mine[0].sent_status.as_deref(), mine[0].sent_occurrences, mine[0].delivered_at),
        (Some("open"), 1, Some(NOW + 2))
    );
    // Deferred (quiet hours, the cap, group_interval): pending, not due before its time.
    store.defer_delivery(mine[0].id, NOW + 500_000).await.unwrap();
    assert!(
        store
            .claim_outbox(NOW + 499_999, 30_000, 10)
            .await
            .unwrap()
            .iter()
            .all(|r| r.id != mine[0].id)
    );
    // A transition makes every channel of the alert look again at once.
    let actor = "tester";
    let t = store
        .transition(
            delivered_row.alert_id,
            aggregator::store::Action::Resolve,
            actor,
            "done",
            NOW + 300_000,
        )
        .await
        .unwrap();
    assert!(matches!(t, aggregator::store::Transitioned::Done(_)), "{t:?}");
    let now_due = store.claim_outbox(NOW + 300_000, 30_000, 10).await.unwrap();
    assert!(now_due.iter().any(|r| r.id == mine[0].id), "{now_due:?}");
    // An Alertmanager re-send: pending again at its time, its attempts counted anew.
    let again_sent =
        aggregator::store::Sent { again_at: Some(NOW + 400_000), ..sent(NOW + 300_001) };
    store.delivered(mine[0].id, &again_sent).await.unwrap();
    let resent = store.claim_outbox(NOW + 400_000, 30_000, 10).await.unwrap();
    let row = resent.iter().find(|r| r.id == mine[0].id).expect("due for its re-send");
    assert_eq!((row.attempts, row.delivered_at), (0, Some(NOW + 300_001)));
}

/// The `audit_alerts` feed in mode `firing` reads an alert's firings in the order they were
/// stored, from where it left off; and a delivery recorded after the alert changed leaves
/// the row due at once, so the change is still announced.
async fn firing_feed(store: SharedStore) {
    store.commit_at(&[firing("R-1", "a", "pi-a", 0, 1)], NOW).await.unwrap();
    store
        .commit_at(
            &[firing("R-1", "a", "pi-a", 1_000, 3), firing("R-1", "a", "pi-a", 2_000, 2)],
            NOW + 10,
        )
        .await
        .unwrap();
    let alert = Uuid::from_u128(1);
    let first = store.feed_firings(alert, None, 2).await.unwrap();
    let ids =
        |v: &[aggregator::store::FeedFiring]| v.iter().map(|f| f.id.as_u128()).collect::<Vec<_>>();
    // Stored at NOW, then two at NOW + 10 in id order.
    assert_eq!(ids(&first), [1, 2]);
    assert_eq!(first[0].created_at, NOW);
    assert_eq!(first[0].event_id, Uuid::from_u128(1_000_001));
    assert_eq!(first[0].event["user_id"], "a", "{}", first[0].event);
    let cursor = first.last().map(|f| (f.created_at, f.id));
    assert_eq!(ids(&store.feed_firings(alert, cursor, 2).await.unwrap()), [3]);
    assert!(
        store
            .feed_firings(alert, Some((NOW + 10, Uuid::from_u128(3))), 2)
            .await
            .unwrap()
            .is_empty()
    );

    // Progress is kept on the row, which stays pending and due.
    let rows = store.claim_outbox(NOW + 10, 30_000, 10).await.unwrap();
    let row = rows.iter().find(|r| r.channel == "audit_alerts").expect("the feed's row").clone();
    assert_eq!(row.sent_firing, None);
    store.feed_progress(row.id, cursor.unwrap(), NOW + 20).await.unwrap();
    let again = store.claim_outbox(NOW + 20, 30_000, 10).await.unwrap();
    let again = again.iter().find(|r| r.id == row.id).expect("still pending");
    assert_eq!(again.sent_firing, cursor);

    // Delivered as of 3 occurrences, but a fourth folded in meanwhile: still due.
    store.commit_at(&[firing("R-1", "a", "pi-a", 3_000, 4)], NOW + 30).await.unwrap();
    let sent = aggregator::store::Sent {
        status: aggregator::store::Status::Open,
        occurrences: 3,
        messaged_at: Some(NOW + 31),
        update: false,
        again_at: None,
        firing: Some((NOW + 10, Uuid::from_u128(3))),
    };
    store.delivered(row.id, &sent).await.unwrap();
    let due = store.claim_outbox(NOW + 32, 30_000, 10).await.unwrap();
    let due = due.iter().find(|r| r.id == row.id).expect("the fold after the send is announced");
    assert_eq!(due.sent_firing, Some((NOW + 10, Uuid::from_u128(3))));
    // Delivered as of what the alert now is: done.
    store.delivered(row.id, &aggregator::store::Sent { occurrences: 4, ..sent }).await.unwrap();
    assert!(
        store.claim_outbox(NOW + 100_000, 30_000, 10).await.unwrap().iter().all(|r| r.id != row.id)
    );
}

async fn legacy_offsets(store: SharedStore) {
    for i in 0..5u128 {
        store
            .commit_at(&[firing("R-1", &format!("u{i}"), "pi-a", 0, i + 1)], NOW + i as i64)
            .await
            .unwrap();
    }
    let ids = |v: Vec<aggregator::store::Alert>| {
        v.into_iter().map(|a| a.id.as_u128()).collect::<Vec<_>>()
    };
    assert_eq!(ids(store.list_alerts_offset(2, 0).await.unwrap()), [5, 4]);
    assert_eq!(ids(store.list_alerts_offset(2, 2).await.unwrap()), [3, 2]);
    assert_eq!(ids(store.list_alerts_offset(10, 4).await.unwrap()), [1]);
    assert!(store.list_alerts_offset(10, 5).await.unwrap().is_empty());
}

/// Ninety simulated days (event and wall-clock times spread over them): ten alerts a day with
/// four firings each, resolved three days later, a node that retires on day 0 and one that
/// reports daily, retention run every day. Afterwards nothing is older than its retention,
/// open and recent alerts are all there, and on SQLite a size bound is met on the spot.
async fn ninety_days(store: SharedStore) {
    const DAY: i64 = 86_400_000;
    let metrics = aggregator::telemetry::Metrics::new();
    let mut config = aggregator::config::RetentionConfig {
        resolved_alerts: Duration::from_secs(30 * 86_400),
        firings: Duration::from_secs(14 * 86_400),
        agents: Duration::from_secs(30 * 86_400),
        events: Duration::from_secs(7 * 86_400),
        max_db_mb: 0,
        interval: Duration::from_secs(600),
        batch: 50,
        ..Default::default()
    };
    let beat = |node: &str| Heartbeat {
        node_id: node.into(),
        version: "0.1.0".into(),
        uptime_secs: 60,
        spool_bytes: 0,
        events_sent: 1,
        dropped: Default::default(),
        rules_version: "abc".into(),
        ts: Timestamp::from_unix(0, 0),
    };
    store.record_heartbeats(&[beat("pi-retired")], NOW).await.unwrap();
    let alert_id = |day: i64, i: i64| Uuid::from_u128(((day * 10 + i) * 10) as u128 + 1);
    let mut deleted = (0, 0);
    for day in 0..90i64 {
        let wall = NOW + day * DAY;
        let mut batch = Vec::new();
        for i in 0..10i64 {
            for k in 0..4i64 {
                let n = ((day * 10 + i) * 10 + k) as u128 + 1;
                batch.push(firing("R-1", &format!("u{day}-{i}"), "pi-a", day * DAY + k * 1000, n));
            }
        }
        // The day's 50 events, a minute apart, archived with its firings.
        let events: Vec<Event> =
            (0..50).map(|k| login(day * DAY + k * 60_000, &format!("u{day}"), "failure")).collect();
        let rows = archive_rows("pi-a", &events, (day * 100) as u64);
        store.commit_batch_at(&batch, &rows, wall).await.unwrap();
        store.record_heartbeats(&[beat("pi-live")], wall).await.unwrap();
        if day >= 3 {
            for i in 0..10 {
                let done = store
                    .transition(
                        alert_id(day - 3, i),
                        aggregator::store::Action::Resolve,
                        "t",
                        "",
                        wall,
                    )
                    .await
                    .unwrap();
                assert!(matches!(done, aggregator::store::Transitioned::Done(_)), "{done:?}");
            }
        }
        let r = aggregator::retention::run_once(&store, &config, wall, &metrics).await.unwrap();
        deleted.0 += r.resolved_alerts;
        deleted.1 += r.firings;
    }
    let end = NOW + 89 * DAY;
    // Alerts resolved before day 59 (created up to day 55) are past their 30 days.
    assert_eq!(deleted.0, 56 * 10, "resolved alerts deleted");
    assert!(store.find_alert(alert_id(55, 0)).await.unwrap().is_none());
    for (day, open) in [(56, false), (70, false), (86, false), (87, true), (89, true)] {
        let a = store.find_alert(alert_id(day, 0)).await.unwrap().expect("kept");
        assert_eq!(a.status == aggregator::store::Status::Open, open, "day {day}");
    }
    // Firings stored before day 75 (14 days) are gone, whatever their alert; newer ones kept.
    assert_eq!(deleted.1, 75 * 10 * 4, "firings deleted by age");
    let detail = store.alert(alert_id(74, 0)).await.unwrap().unwrap();
    assert!(detail.evidence.is_empty(), "day 74's firings: {}", detail.evidence.len());
    let detail = store.alert(alert_id(75, 0)).await.unwrap().unwrap();
    assert_eq!(detail.evidence.len(), 4, "day 75's firings are 14 days old, not older");
    let agents = store.agents().await.unwrap();
    assert_eq!(agents.iter().map(|a| a.node.as_str()).collect::<Vec<_>>(), ["pi-live"]);
    // Archived events kept 7 days: those archived from day 82 on.
    let mut kept = Vec::new();
    let q = aggregator::archive::Query {
        from: NOW,
        to: end + DAY,
        limit: 10_000,
        ..Default::default()
    };
    aggregator::archive::search(&store, &q, u64::MAX, &mut kept).await.unwrap();
    assert_eq!(kept.len(), 8 * 50, "archived events kept");
    assert_eq!(kept[0]["user"], "u82");
    // The per-rule count follows retention's deletes; the search forgets deleted alerts.
    let counts = store.rule_counts().await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(
        (counts[0].firings, counts[0].last_fired),
        (15 * 10 * 4, Some(NOW + 89 * DAY + 3000))
    );
    let search =
        |text: &str| AlertQuery { text: Some(text.into()), limit: 50, ..Default::default() };
    assert!(store.list_alerts(&search("u55-0")).await.unwrap().alerts.is_empty());
    assert_eq!(store.list_alerts(&search("u89-0")).await.unwrap().alerts.len(), 1);
    assert_eq!(store.list_alerts(&search("u70-")).await.unwrap().alerts.len(), 10);
    assert!(metrics.store_bytes.get() > 0);
    assert_eq!(metrics.retention_deleted.with_label_values(&["resolved_alerts"]).get(), deleted.0);

    // A size bound, met at once where the size follows deletes (SQLite): the oldest resolved
    // alerts go first, then the oldest firings.
    if store.size_follows_deletes() {
        // A burst of firings into one open alert first, to be well over the bound.
        let burst: Vec<Firing> = (0..3000u128)
            .map(|k| firing("R-1", "u89-0", "pi-a", 89 * DAY + 10_000 + k as i64, 10_000_000 + k))
            .collect();
        store.commit_at(&burst, end).await.unwrap();
        let before = store.live_bytes().await.unwrap();
        assert!(before > 1 << 20, "{before} bytes: too few to test a bound");
        config.max_db_mb = 1;
        let r = aggregator::retention::run_once(&store, &config, end, &metrics).await.unwrap();
        assert!(
            r.live_bytes <= 1 << 20,
            "{} bytes over a 1 MiB bound (was {before})",
            r.live_bytes
        );
        assert!(store.find_alert(alert_id(89, 0)).await.unwrap().is_some(), "open alerts stay");
    }
}

/// A login event at `NOW + at_ms`.
fn login(at_ms: i64, user: &str, outcome: &str) -> Event {
    let ts = Timestamp::from_unix((NOW + at_ms) / 1000, ((NOW + at_ms) % 1000) as u32 * 1_000_000);
    Event::new(
        ts,
        Source::AuthLog,
        Severity::Info,
        EventKind::Login {
            user: user.into(),
            src_ip: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))),
            method: Some("password".into()),
            outcome: if outcome == "failure" { Outcome::Failure } else { Outcome::Success },
            reason: None,
        },
    )
}

/// Archive rows for `node`'s events, numbered from `first` in epoch 1.
fn archive_rows(node: &str, events: &[Event], first: u64) -> Vec<aggregator::archive::Row> {
    use aggregator::archive::{Key, Pending};
    aggregator::archive::rows(
        events
            .iter()
            .enumerate()
            .map(|(i, event)| Pending {
                node,
                key: Key::Seq { epoch: 1, seq: first + i as u64 },
                event,
            })
            .collect(),
    )
}

/// The event archive: rows written with a batch's firings (or alone), searched by node, kind,
/// field and text in exact time order both ways, a batch archived twice seen once, small rows
/// merged by compaction with the same answers, and retention by age.
async fn archive(store: SharedStore) {
    use aggregator::archive::{Query, kind_bit, search};
    use aggregator::rules::FieldId;
    // Two nodes, interleaved in time, over two batches; the second batch arrives twice.
    let a1: Vec<Event> = (0..30).map(|k| login(k * 10_000, "carol", "failure")).collect();
    let b1: Vec<Event> = (0..30).map(|k| login(k * 10_000 + 5_000, "dave", "success")).collect();
    let a2: Vec<Event> = (30..40).map(|k| login(k * 10_000, "carol", "success")).collect();
    let mut pkg = Event::new(
        Timestamp::from_unix((NOW + 42_000) / 1000, 0),
        Source::Dpkg,
        Severity::Info,
        EventKind::Package {
            name: "openssh-server".into(),
            version: "1:9.2".into(),
            action: "upgrade".into(),
        },
    );
    pkg.attrs.push(("note".into(), wire::model::Value::Str("Upgraded by unattended".into())));
    let mut first = archive_rows("pi-a", &a1, 0);
    first.extend(archive_rows("pi-b", &b1, 0));
    first.extend(archive_rows("pi-b", std::slice::from_ref(&pkg), 30));
    store.commit_batch_at(&[firing("R-1", "carol", "pi-a", 0, 1)], &first, NOW).await.unwrap();
    let second = archive_rows("pi-a", &a2, 30);
    store.commit_batch_at(&[], &second, NOW + 1).await.unwrap();
    store.commit_batch_at(&[], &second, NOW + 2).await.unwrap();

    let run = |q: Query| {
        let store = store.clone();
        async move {
            let mut out = Vec::new();
            let summary = search(&store, &q, u64::MAX, &mut out).await.unwrap();
            assert_eq!(summary.returned as usize, out.len());
            out
        }
    };
    let all = Query { from: NOW - 1, to: NOW + 3_600_000, limit: 1000, ..Default::default() };
    let got = run(all.clone()).await;
    assert_eq!(got.len(), 30 + 30 + 1 + 10, "every event once");
    let times: Vec<String> = got.iter().map(|e| e["ts"].as_str().unwrap().to_owned()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "in time order across rows and nodes");
    assert_eq!(got[1]["node"], "pi-b");
    assert_eq!(got[1]["user"], "dave");
    assert_eq!(got[0]["id"], wire::legacy::event_uuid("pi-a", 1, 0).to_string());

    let desc = run(Query { desc: true, limit: 5, ..all.clone() }).await;
    let users: Vec<&str> = desc.iter().map(|e| e["user"].as_str().unwrap()).collect();
    assert_eq!(users, ["carol"; 5], "the newest five are pi-a's second batch");
    assert_eq!(desc[0]["ts"], got.last().unwrap()["ts"]);

    let node = run(Query { node: Some("pi-b".into()), ..all.clone() }).await;
    assert_eq!(node.len(), 31);
    let kind = run(Query { kinds: kind_bit("package").unwrap(), ..all.clone() }).await;
    assert_eq!(kind.len(), 1);
    assert_eq!(kind[0]["name"], "openssh-server");
    let field = run(Query {
        fields: vec![(FieldId::User, "Carol".into()), (FieldId::Outcome, "success".into())],
        ..all.clone()
    })
    .await;
    assert_eq!(field.len(), 10);
    let text = run(Query { text: Some("unattended".into()), ..all.clone() }).await;
    assert_eq!(text.len(), 1);
    let window = run(Query { from: NOW + 100_000, to: NOW + 119_999, ..all.clone() }).await;
    assert_eq!(window.len(), 4, "{window:?}");
    let few = run(Query { limit: 3, ..all.clone() }).await;
    assert_eq!(few, got[..3]);

    // What embedded mode replays at start: rows written since a time, in the order written,
    // page by page; a compacted row counts as written when the newest of its parts was.
    let since = |at: i64| {
        let store = store.clone();
        async move {
            let (mut rows, mut after) = (Vec::new(), 0);
            loop {
                let page = store.archive_written_since(at, after, 2).await.unwrap();
                let Some(last) = page.last() else { return rows };
                after = last.id;
                rows.extend(page);
            }
        }
    };
    let written = since(NOW + 1).await;
    assert_eq!(written.len(), 2, "pi-a's second batch, twice: {written:?}");
    assert!(written.windows(2).all(|w| w[0].id < w[1].id));
    assert!(written.iter().all(|r| r.node == "pi-a" && r.n == 10));
    assert_eq!(since(NOW).await.len(), 5);
    assert!(since(NOW + 3).await.is_empty());

    // Compaction merges the small rows (each node's per batch) and drops the repeat.
    let c = aggregator::archive::compact_once(&store, NOW + 120_000).await.unwrap();
    assert!(c.merged >= 4 && c.written < c.merged, "{c:?}");
    assert_eq!(run(all.clone()).await, got, "the same answers after compaction");
    let scan = aggregator::store::ArchiveScan {
        from: NOW - 1,
        to: NOW + 3_600_000,
        max: 100,
        ..Default::default()
    };
    let rows = store.archive_rows(&scan).await.unwrap();
    assert_eq!(rows.iter().map(|r| i64::from(r.n)).sum::<i64>(), 71, "stored once");
    let merged = since(NOW + 2).await;
    assert_eq!(
        merged.iter().map(|r| r.n).sum::<i32>(),
        40,
        "pi-a's merged row carries its newest part's time: {merged:?}"
    );

    // Retention: everything archived before the cutoff goes.
    let n = store.retain_batch(aggregator::store::Retain::Events, NOW + 10, 1000).await.unwrap();
    assert_eq!(n as usize, rows.len());
    assert!(run(all).await.is_empty());
}

/// Alerts copied in (the legacy history): stored resolved with their history entry and no
/// outbox rows; an id already an alert's or a firing's is skipped, and so is one imported
/// before, even after retention deleted it.
async fn imports(store: SharedStore) {
    store
        .commit_at(&[firing("R-1", "ann", "pi-a", 0, 1), firing("R-1", "ann", "pi-a", 1, 2)], NOW)
        .await
        .unwrap();
    let copied = |n: u128| aggregator::store::Alert {
        id: Uuid::from_u128(n),
        fingerprint: format!("ANLY-SEC-001/legacy/{n}"),
        rule_id: "ANLY-SEC-001".into(),
        rule_name: "Failed Login Burst Detection".into(),
        rule_description: String::new(),
        severity: "CRITICAL".into(),
        title: format!("legacy alert {n}"),
        tags: vec!["legacy".into()],
        node: "web-01".into(),
        group: serde_json::json!({"user": "bob", "host": "web-01"}).as_object().unwrap().clone(),
        status: Status::Resolved,
        occurrences: 1,
        first_seen: NOW - 10_000,
        last_seen: NOW - 10_000,
        created_at: NOW - 9_000,
        updated_at: NOW,
        correlation_id: Uuid::from_u128(n + 500),
        remediation: None,
        playbook_url: Some("https://example.com/p".into()),
        silenced: false,
        raw_event: serde_json::json!({"event_type": "user_login", "user_id": "bob"}),
    };
    let note = aggregator::legacy_import::note(NOW);
    // 1 is an alert of ours, 2 a firing of ours (the legacy rows of AuditFlow's own feed).
    let batch: Vec<_> = [1, 2, 100, 101].into_iter().map(copied).collect();
    assert_eq!(store.import_alerts(&batch, &note).await.unwrap(), 2);
    assert_eq!(store.import_alerts(&batch, &note).await.unwrap(), 0);
    let a = store.alert(Uuid::from_u128(100)).await.unwrap().expect("imported");
    assert_eq!(a.alert, copied(100));
    assert!(a.deliveries.is_empty(), "{:?}", a.deliveries);
    assert_eq!(
        (a.history.len(), a.history[0].actor.as_str(), a.history[0].to_status.as_str()),
        (1, "import-legacy", "resolved")
    );
    assert_eq!(
        store.find_alert(Uuid::from_u128(1)).await.unwrap().unwrap().title,
        "failed logins for ann on pi-a"
    );
    let search =
        AlertQuery { text: Some("legacy alert 10".into()), limit: 10, ..Default::default() };
    assert_eq!(store.list_alerts(&search).await.unwrap().alerts.len(), 2);
    // Retention deletes resolved history like any other; it is not imported again.
    let gone =
        store.retain_batch(aggregator::store::Retain::ResolvedAlerts, NOW + 1, 100).await.unwrap();
    assert_eq!(gone, 2);
    assert_eq!(store.import_alerts(&batch, &note).await.unwrap(), 0);
    assert!(store.find_alert(Uuid::from_u128(100)).await.unwrap().is_none());
}
