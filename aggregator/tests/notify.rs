//! Notifications from the real aggregator binary (cluster profile): the `audit_alerts` queue
//! with the legacy fields, a generic webhook whose receiver is down at first (retried until it
//! comes back), a Slack-compatible webhook, e-mail to an SMTP sink, channel filters and
//! silences. The receivers are local servers started by the test.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Aggregator, Env, failed_login, free_port, message_count, request, wait_until};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const OPERATOR: &str = "operator-token-0123456789";

/// An HTTP receiver: every request body goes to the channel; answers 200.
async fn http_receiver(listener: TcpListener, out: mpsc::UnboundedSender<Value>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        let out = out.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).await.unwrap();
            let _ = out.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
            let _ = reader
                .into_inner()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        });
    }
}

/// An SMTP sink: each message's data goes to the channel.
async fn smtp_sink(listener: TcpListener, out: mpsc::UnboundedSender<String>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        let out = out.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"220 sink ready\r\n").await.unwrap();
            let mut data: Option<String> = None;
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(d) = data.as_mut() {
                    if line == "." {
                        let _ = out.send(data.take().unwrap_or_default());
                        write.write_all(b"250 queued\r\n").await.unwrap();
                    } else {
                        d.push_str(&line);
                        d.push('\n');
                    }
                    continue;
                }
                let reply: &[u8] = match line.split(' ').next().unwrap_or("") {
                    "EHLO" => b"250-sink\r\n250 OK\r\n",
                    "DATA" => {
                        data = Some(String::new());
                        b"354 go on\r\n"
                    }
                    "QUIT" => {
                        write.write_all(b"221 bye\r\n").await.unwrap();
                        return;
                    }
                    _ => b"250 OK\r\n",
                };
                write.write_all(reply).await.unwrap();
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_every_channel_with_retries_filters_and_silences() {
    let env = Env::new("notify").await;
    let dir = tempfile::tempdir().unwrap();
    let hook_port = free_port(); // nothing listens here yet
    let slack = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slack_port = slack.local_addr().unwrap().port();
    let smtp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp_port = smtp.local_addr().unwrap().port();
    let (hook_tx, mut hook_rx) = mpsc::unbounded_channel();
    let (slack_tx, mut slack_rx) = mpsc::unbounded_channel();
    let (mail_tx, mut mail_rx) = mpsc::unbounded_channel();
    tokio::spawn(http_receiver(slack, slack_tx));
    tokio::spawn(smtp_sink(smtp, mail_tx));
    let top = format!(
        "[notify]\nmax_attempts = 20\n\
         [[notify.channels]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/in\"\n\
         [[notify.channels]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"http://127.0.0.1:{slack_port}/services/x\"\nmin_severity = \"CRITICAL\"\n\
         [[notify.channels]]\nname = \"mail\"\nkind = \"email\"\nsmtp = \"127.0.0.1:{smtp_port}\"\nfrom = \"af@example.org\"\nto = [\"ops@example.org\"]\ntags = [\"file-integrity\"]\n"
    );
    let tokens = format!("ops:{OPERATOR}:operator");
    let a = Aggregator::start_with(
        &env,
        dir.path(),
        "notify",
        &top,
        &[("AUDITFLOW_API_TOKENS", &tokens)],
    );
    let post = |body: Value| {
        let r = request(
            a.http,
            "POST",
            "/api/v1/events",
            Some(OPERATOR),
            Some(body.to_string().as_bytes()),
            &[],
        );
        assert_eq!(r.status, 200, "{r:?}");
    };

    // Silence pi-quiet, then raise ANLY-SEC-001 on pi-a and on pi-quiet.
    let r = request(
        a.http,
        "POST",
        "/api/v1/silences",
        Some(OPERATOR),
        Some(
            json!({"matchers": [{"field": "node", "value": "pi-quiet"}], "duration": "1h"})
                .to_string()
                .as_bytes(),
        ),
        &[],
    );
    assert_eq!(r.status, 200, "{r:?}");
    post(Value::Array(
        (0..3)
            .map(|i| failed_login("alice", "pi-a", i, i))
            .chain((0..3).map(|i| failed_login("bob", "pi-quiet", i, 10 + i)))
            .collect(),
    ));

    // audit_alerts: both alerts (silences do not apply to the feed), legacy fields present.
    let (_conn, ch) = env.publisher().await;
    // Declared as the legacy notification service declares it (durable, no arguments).
    ch.queue_declare(
        "audit_alerts".into(),
        lapin::options::QueueDeclareOptions { durable: true, ..Default::default() },
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
    wait_until(Duration::from_secs(15), "two messages on audit_alerts", async || {
        message_count(&ch, "audit_alerts").await == 2
    })
    .await;
    let got = ch
        .basic_get("audit_alerts".into(), lapin::options::BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("a message");
    let msg: Value = serde_json::from_slice(&got.delivery.data).unwrap();
    for key in [
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
        "fingerprint",
        "status",
    ] {
        assert!(msg.get(key).is_some(), "audit_alerts message lacks {key}: {msg}");
    }
    assert_eq!(msg["analysis_rule"]["rule_id"], "ANLY-SEC-001");
    assert_eq!(msg["triggered_by"]["client_ip"], "203.0.113.9");
    assert_eq!(msg["alert_type"], "SECURITY");

    // Slack (CRITICAL only): pi-a's alert, not the silenced one.
    let slack_msg =
        tokio::time::timeout(Duration::from_secs(15), slack_rx.recv()).await.unwrap().unwrap();
    assert!(slack_msg["text"].as_str().unwrap().contains("alice"), "{slack_msg}");

    // The webhook receiver is down: attempts fail and are recorded; then it comes back.
    let alerts =
        request(a.http, "GET", "/api/v1/alerts?node=pi-a", Some(OPERATOR), None, &[]).json();
    let id = alerts["alerts"][0]["id"].as_str().unwrap().to_owned();
    let hook_state = || {
        let d = request(a.http, "GET", &format!("/api/v1/alerts/{id}"), Some(OPERATOR), None, &[])
            .json();
        d["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["channel"] == "hook")
            .cloned()
            .unwrap()
    };
    wait_until(Duration::from_secs(15), "a failed webhook attempt", async || {
        hook_state()["attempts"].as_i64().unwrap() >= 1
    })
    .await;
    let state = hook_state();
    assert_eq!(state["state"], "pending", "{state}");
    assert!(state["last_error"].as_str().unwrap().contains("connect"), "{state}");
    let listener = TcpListener::bind(("127.0.0.1", hook_port)).await.unwrap();
    tokio::spawn(http_receiver(listener, hook_tx));
    let delivered = tokio::time::timeout(Duration::from_secs(40), hook_rx.recv())
        .await
        .expect("the retry reaches the receiver")
        .unwrap();
    assert_eq!(delivered["alert"]["rule_id"], "ANLY-SEC-001");
    assert_eq!(delivered["legacy"]["alert_name"], "Failed Login Burst Detection");
    wait_until(Duration::from_secs(10), "the delivery recorded", async || {
        hook_state()["state"] == "delivered"
    })
    .await;

    // The silenced alert: stored, marked, its notifications skipped.
    let quiet =
        request(a.http, "GET", "/api/v1/alerts?node=pi-quiet", Some(OPERATOR), None, &[]).json();
    let quiet = &quiet["alerts"][0];
    assert_eq!(quiet["silenced"], true, "{quiet}");
    let d = request(
        a.http,
        "GET",
        &format!("/api/v1/alerts/{}", quiet["id"].as_str().unwrap()),
        Some(OPERATOR),
        None,
        &[],
    )
    .json();
    for x in d["deliveries"].as_array().unwrap() {
        let expected = if x["channel"] == "audit_alerts" { "delivered" } else { "skipped" };
        assert_eq!(x["state"], expected, "{x}");
    }

    // E-mail only for file-integrity alerts: the login alerts were skipped by the filter.
    let d =
        request(a.http, "GET", &format!("/api/v1/alerts/{id}"), Some(OPERATOR), None, &[]).json();
    let mail = d["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["channel"] == "mail")
        .unwrap()
        .clone();
    assert_eq!(mail["state"], "skipped", "{mail}");
    post(json!({
        "event_id": "00000000-0000-4000-8000-000000000777",
        "timestamp": "2026-11-20T10:01:00Z",
        "server_hostname": "pi-a",
        "event_type": "file_modified",
        "action_result": "MODIFIED",
        "details": {"resource": "/etc/sudoers"}
    }));
    let mail =
        tokio::time::timeout(Duration::from_secs(15), mail_rx.recv()).await.unwrap().unwrap();
    assert!(mail.contains("Subject: [AuditFlow CRITICAL] /etc/sudoers modified on pi-a"), "{mail}");
    assert!(mail.contains("To: ops@example.org"), "{mail}");
    assert!(
        a.metric("auditflow_aggregator_notifications_total{kind=\"webhook\",result=\"retry\"}")
            >= 1.0
    );
}
