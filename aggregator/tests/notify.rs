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
         [[notify.channels]]\nname = \"mail\"\nkind = \"email\"\nsmtp = \"127.0.0.1:{smtp_port}\"\nsmtp_tls = \"none\"\nfrom = \"af@example.org\"\nto = [\"ops@example.org\"]\ntags = [\"file-integrity\"]\n"
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
    assert_eq!(delivered["legacy"]["alert_name"], "Multiple Failed Login Attempts");
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

/// A CA and a certificate for `localhost` signed by it: (CA PEM, server chain DER, key DER).
fn test_pki(
    tag: &str,
) -> (String, rustls::pki_types::CertificateDer<'static>, rustls::pki_types::PrivateKeyDer<'static>)
{
    let (ca, cert, key, _, _) = test_pki_pem(tag);
    (ca, cert, key)
}

/// A CA made for the test and a `localhost` certificate it signed, as DER and as PEM (the
/// certificate, then its key).
fn test_pki_pem(
    tag: &str,
) -> (
    String,
    rustls::pki_types::CertificateDer<'static>,
    rustls::pki_types::PrivateKeyDer<'static>,
    String,
    String,
) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, format!("AuditFlow receiver CA {tag}"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert =
        CertificateParams::new(vec!["localhost".into()]).unwrap().signed_by(&key, &issuer).unwrap();
    (
        ca_cert.pem(),
        cert.der().clone(),
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        cert.pem(),
        key.serialize_pem(),
    )
}

/// An HTTPS receiver on its own thread: each request's headers (lower-cased) and body go to
/// the channel; answers 200.
fn https_receiver(tag: &str, out: std::sync::mpsc::Sender<(String, Vec<u8>)>) -> (u16, String) {
    use std::io::{BufRead, Read, Write};
    let (ca_pem, cert, key) = test_pki(tag);
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (config, out) = (config.clone(), out.clone());
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = std::io::BufReader::new(rustls::StreamOwned::new(conn, stream));
                let mut head = String::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    // A client that refuses our certificate ends the handshake here.
                    if tls.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line.to_ascii_lowercase());
                }
                let mut body = vec![0; len];
                tls.read_exact(&mut body).unwrap();
                let _ = out.send((head, body));
                let mut tls = tls.into_inner();
                let _ = tls.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (port, ca_pem)
}

/// Starts the aggregator with `top` and an operator token, and posts three failed logins of
/// `mallory` on `node` (ports from `port`), which fire ANLY-SEC-001.
fn start_and_brute_force(
    env: &Env,
    dir: &std::path::Path,
    name: &str,
    top: &str,
    node: &str,
    port: u32,
) -> Aggregator {
    let tokens = format!("ops:{OPERATOR}:operator");
    let a = Aggregator::start_with(env, dir, name, top, &[("AUDITFLOW_API_TOKENS", &tokens)]);
    post_events(a.http, (0..3).map(|i| failed_login("mallory", node, i * 5, port + i)).collect());
    a
}

/// Webhooks over HTTPS: the receiver's certificate is checked against the channel's
/// `ca_file` (a receiver with a certificate from another CA gets nothing and the delivery is
/// retried), and a generic webhook with a `secret_file` signs its body
/// (`X-AuditFlow-Signature: sha256=…`, verified here with the same secret).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_webhooks_check_the_receiver_and_sign_the_body() {
    let env = Env::new("notify_tls").await;
    let dir = tempfile::tempdir().unwrap();
    let (good_tx, good_rx) = std::sync::mpsc::channel();
    let (rogue_tx, rogue_rx) = std::sync::mpsc::channel();
    let (good_port, good_ca) = https_receiver("good", good_tx);
    let (rogue_port, _) = https_receiver("rogue", rogue_tx);
    let ca_file = dir.path().join("receiver-ca.pem");
    std::fs::write(&ca_file, &good_ca).unwrap();
    let secret = "receiver-shared-secret-0123456789";
    let secret_file = dir.path().join("hook.secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let top = format!(
        "[notify]\nmax_attempts = 20\n\
         [[notify.channels]]\nname = \"signed\"\nkind = \"webhook\"\nurl = \"https://localhost:{good_port}/in\"\n\
         ca_file = \"{}\"\nsecret_file = \"{}\"\n\
         [[notify.channels]]\nname = \"rogue\"\nkind = \"slack\"\nurl = \"https://localhost:{rogue_port}/services/x\"\n\
         ca_file = \"{}\"\n",
        ca_file.display(),
        secret_file.display(),
        ca_file.display()
    );
    let a = start_and_brute_force(&env, dir.path(), "notify_tls", &top, "pi-tls", 900);

    let (head, body) =
        tokio::task::spawn_blocking(move || good_rx.recv_timeout(Duration::from_secs(20)))
            .await
            .unwrap()
            .expect("the signed webhook arrived over HTTPS");
    let expected = {
        use hmac::{KeyInit, Mac};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&body);
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        format!("x-auditflow-signature: sha256={hex}")
    };
    assert!(head.contains(&expected), "no valid signature in:\n{head}");
    let payload: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(payload["alert"]["node"], "pi-tls", "{payload}");

    // The rogue receiver's certificate is not from the channel's CA: nothing reaches it, and
    // the delivery waits for a retry with the TLS error recorded.
    let id = payload["alert"]["id"].as_str().unwrap().to_owned();
    wait_until(Duration::from_secs(20), "the rogue delivery to fail", async || {
        let d = request(a.http, "GET", &format!("/api/v1/alerts/{id}"), Some(OPERATOR), None, &[])
            .json();
        d["deliveries"].as_array().into_iter().flatten().any(|x| {
            x["channel"] == "rogue"
                && x["state"] == "pending"
                && x["last_error"].as_str().is_some_and(|e| !e.is_empty())
        })
    })
    .await;
    assert!(rogue_rx.try_recv().is_err(), "an untrusted receiver got the alert");
}

/// Slack, Discord, ntfy and PagerDuty channels over HTTPS to a real local receiver: each gets
/// its own documented payload, with the link to the alert, ntfy its access token and
/// PagerDuty its integration key and the alert id as the dedup key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_receiver_kind_gets_its_payload_over_https() {
    let env = Env::new("notify_kinds").await;
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (port, ca) = https_receiver("kinds", tx);
    let ca_file = dir.path().join("receiver-ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let token_file = dir.path().join("ntfy.token");
    std::fs::write(&token_file, "tk_ntfy-access-token-0123456789\n").unwrap();
    let key_file = dir.path().join("pagerduty.key");
    std::fs::write(&key_file, "R0UTING-KEY-0123456789abcdef\n").unwrap();
    let ca = ca_file.display();
    let top = format!(
        "[notify]\nmax_attempts = 20\ndashboard_url = \"https://af.example.org\"\n\
         [[notify.channels]]\nname = \"slack\"\nkind = \"slack\"\nurl = \"https://localhost:{port}/slack/T0/B0/x\"\nca_file = \"{ca}\"\n\
         [[notify.channels]]\nname = \"discord\"\nkind = \"discord\"\nurl = \"https://localhost:{port}/api/webhooks/1/x\"\nca_file = \"{ca}\"\n\
         [[notify.channels]]\nname = \"ntfy\"\nkind = \"ntfy\"\nurl = \"https://localhost:{port}/ntfy/pi-alerts\"\nca_file = \"{ca}\"\nsecret_file = \"{}\"\n\
         [[notify.channels]]\nname = \"pd\"\nkind = \"pagerduty\"\nurl = \"https://localhost:{port}/v2/enqueue\"\nca_file = \"{ca}\"\nsecret_file = \"{}\"\n",
        token_file.display(),
        key_file.display()
    );
    let _aggregator =
        start_and_brute_force(&env, dir.path(), "notify_kinds", &top, "pi-kinds", 910);
    let got: Vec<(String, Vec<u8>)> = tokio::task::spawn_blocking(move || {
        (0..4).map(|_| rx.recv_timeout(Duration::from_secs(20)).expect("a delivery")).collect()
    })
    .await
    .unwrap();
    let find = |path: &str| {
        let (head, body) = got
            .iter()
            .find(|(h, _)| h.starts_with(&format!("post {path} ")))
            .unwrap_or_else(|| panic!("nothing arrived at {path}: {got:?}"));
        (head.clone(), serde_json::from_slice::<Value>(body).unwrap())
    };
    let (_, slack) = find("/slack/t0/b0/x"); // the receiver lower-cases the head
    let blocks = &slack["attachments"][0]["blocks"];
    assert!(slack["attachments"][0]["color"].as_str().unwrap().starts_with('#'), "{slack}");
    assert!(blocks.to_string().contains("pi-kinds"), "{slack}");
    let link = blocks[2]["elements"][0]["url"].as_str().unwrap().to_owned();
    assert!(link.starts_with("https://af.example.org/#/alerts/"), "{slack}");
    let (_, discord) = find("/api/webhooks/1/x");
    assert_eq!(discord["allowed_mentions"]["parse"], serde_json::json!([]), "{discord}");
    assert_eq!(discord["embeds"][0]["url"], link.as_str());
    let (head, ntfy) = find("/ntfy"); // JSON goes to the server root
    assert!(head.contains("authorization: bearer tk_ntfy-access-token-0123456789"), "{head}");
    assert_eq!(
        (ntfy["topic"].as_str(), ntfy["click"].as_str()),
        (Some("pi-alerts"), Some(link.as_str()))
    );
    let (_, pd) = find("/v2/enqueue");
    assert_eq!(pd["routing_key"], "R0UTING-KEY-0123456789abcdef");
    assert_eq!(pd["event_action"], "trigger");
    assert_eq!(pd["payload"]["source"], "pi-kinds");
    assert!(link.ends_with(pd["dedup_key"].as_str().unwrap()), "{pd}");
}

/// A failed ssh login of `user` on `host` from `ip`, `secs` seconds after 10:00 (event id
/// from `id`).
fn failed_from(user: &str, host: &str, ip: &str, secs: u32, id: u32) -> Value {
    let mut e = failed_login(user, host, 0, id);
    let (h, m, s) = (10 + secs / 3600, secs / 60 % 60, secs % 60);
    e["timestamp"] = json!(format!("2026-11-20T{h:02}:{m:02}:{s:02}Z"));
    e["details"]["ip_address"] = json!(ip);
    e
}

fn post_events(http: u16, events: Vec<Value>) {
    let r = request(
        http,
        "POST",
        "/api/v1/events",
        Some(OPERATOR),
        Some(Value::Array(events).to_string().as_bytes()),
        &[],
    );
    assert_eq!(r.status, 200, "{r:?}");
}

/// No alert storm, and the lifecycle reaches the receivers: a brute force of 30,000 failed
/// logins that keeps folding firings (10,000) into one alert gives a Slack channel one message plus at
/// most `max_updates` updates, `group_interval` apart, and a resolved message; PagerDuty gets trigger,
/// acknowledge and resolve with one dedup key; Alertmanager the alert firing, re-sent every
/// `repeat_interval`, then resolved; a channel with a rate cap of 3 an hour that six new
/// alerts reach at once sends one of them and a digest of the rest; and a channel with a
/// `group_wait` sends the six as one message. Every receiver is a real
/// HTTPS server trusted through the channel's CA file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storms_fold_into_few_messages_and_the_lifecycle_reaches_the_receivers() {
    let env = Env::new("notify_storm").await;
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (port, ca) = https_receiver("storm", tx);
    let ca_file = dir.path().join("receiver-ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let key_file = dir.path().join("pagerduty.key");
    std::fs::write(&key_file, "R0UTING-KEY-0123456789abcdef\n").unwrap();
    let ca = ca_file.display();
    let top = format!(
        "[notify]\nmax_attempts = 20\n\
         [[notify.channels]]\nname = \"storm\"\nkind = \"slack\"\nurl = \"https://localhost:{port}/storm\"\nca_file = \"{ca}\"\n\
         tags = [\"brute-force\"]\ngroup_interval = \"2s\"\nmax_updates = 2\n\
         [[notify.channels]]\nname = \"capped\"\nkind = \"slack\"\nurl = \"https://localhost:{port}/capped\"\nca_file = \"{ca}\"\n\
         tags = [\"brute-force\"]\nmax_per_hour = 3\nmax_updates = 0\nsend_resolved = false\ngroup_wait = \"0s\"\n\
         [[notify.channels]]\nname = \"grouped\"\nkind = \"slack\"\nurl = \"https://localhost:{port}/grouped\"\nca_file = \"{ca}\"\n\
         tags = [\"brute-force\"]\nmax_updates = 0\nsend_resolved = false\ngroup_wait = \"5s\"\n\
         [[notify.channels]]\nname = \"pd\"\nkind = \"pagerduty\"\nurl = \"https://localhost:{port}/pd\"\nca_file = \"{ca}\"\nsecret_file = \"{}\"\n\
         tags = [\"brute-force\"]\n\
         [[notify.channels]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"https://localhost:{port}/am\"\nca_file = \"{ca}\"\n\
         tags = [\"brute-force\"]\nrepeat_interval = \"10s\"\n",
        key_file.display()
    );
    let tokens = format!("ops:{OPERATOR}:operator");
    let a = Aggregator::start_with(
        &env,
        dir.path(),
        "notify_storm",
        &top,
        &[("AUDITFLOW_API_TOKENS", &tokens)],
    );
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, Value)>::new()));
    {
        let got = got.clone();
        std::thread::spawn(move || {
            while let Ok((head, body)) = rx.recv() {
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                got.lock()
                    .unwrap()
                    .push((path, serde_json::from_slice(&body).unwrap_or(Value::Null)));
            }
        });
    }
    let at = |path: &str| -> Vec<Value> {
        got.lock().unwrap().iter().filter(|(p, _)| p == path).map(|(_, v)| v.clone()).collect()
    };

    // The storm: mallory's brute force on pi-storm, one alert, 30,000 more failed logins
    // folding in over ~10 s.
    post_events(
        a.http,
        (0..3).map(|i| failed_from("mallory", "pi-storm", "198.51.100.7", i, 1000 + i)).collect(),
    );
    wait_until(Duration::from_secs(20), "the first messages", async || {
        !at("/storm").is_empty()
            && !at("/pd").is_empty()
            && !at("/am/api/v2/alerts").is_empty()
            && !at("/capped").is_empty()
    })
    .await;
    let mut id = 1003;
    // ANLY-SEC-001 fires at every third failure: 30,000 failures, 10,000 firings.
    for round in 0..30u32 {
        let events = (0..1000)
            .map(|i| {
                id += 1;
                failed_from("mallory", "pi-storm", "198.51.100.7", 3 + round * 1000 + i, id)
            })
            .collect();
        post_events(a.http, events);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let alert_id = at("/pd")[0]["dedup_key"].as_str().unwrap().to_owned();
    let mut folded = 0;
    wait_until(Duration::from_secs(30), "the storm's firings folded into the alert", async || {
        let path = format!("/api/v1/alerts/{alert_id}");
        folded = request(a.http, "GET", &path, Some(OPERATOR), None, &[]).json()["occurrences"]
            .as_i64()
            .unwrap_or(0);
        folded >= 10_000
    })
    .await;
    // Alertmanager keeps hearing of it (every 10 s) while it fires.
    wait_until(Duration::from_secs(20), "an Alertmanager re-send", async || {
        at("/am/api/v2/alerts").len() >= 2
    })
    .await;

    // Acknowledged, then resolved, through the API.
    for action in ["ack", "resolve"] {
        let r = request(
            a.http,
            "POST",
            &format!("/api/v1/alerts/{alert_id}/{action}"),
            Some(OPERATOR),
            Some(b"{}"),
            &[],
        );
        assert_eq!(r.status, 200, "{r:?}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    wait_until(Duration::from_secs(20), "the resolution everywhere", async || {
        at("/pd").iter().any(|e| e["event_action"] == "resolve")
            && at("/storm")
                .iter()
                .any(|m| m["text"].as_str().is_some_and(|t| t.starts_with("[RESOLVED]")))
            && at("/am/api/v2/alerts").iter().any(|m| m[0]["annotations"]["status"] == "resolved")
    })
    .await;
    let storm = at("/storm");
    let texts: Vec<&str> = storm.iter().map(|m| m["text"].as_str().unwrap_or("")).collect();
    let updates = texts.iter().filter(|t| t.contains("still firing")).count();
    assert!(texts[0].starts_with("[WARNING]") || texts[0].starts_with("[CRITICAL]"), "{texts:?}");
    assert!((1..=2).contains(&updates), "{folded} folded firings, {updates} updates: {texts:?}");
    assert_eq!(storm.len(), 2 + updates, "created, updates, resolved: {texts:?}");
    let pd: Vec<String> =
        at("/pd").iter().map(|e| e["event_action"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(pd, ["trigger", "acknowledge", "resolve"], "PagerDuty follows the alert");
    assert!(at("/pd").iter().all(|e| e["dedup_key"] == alert_id.as_str()));
    let am = at("/am/api/v2/alerts");
    let last = am.last().unwrap();
    assert_eq!(last[0]["labels"]["auditflow_alert_id"], alert_id.as_str());
    assert!(
        am[..am.len() - 1].iter().all(|m| m[0]["annotations"]["status"] != "resolved"),
        "{am:?}"
    );

    // Six new alerts at once (six users, each from its own address) on the capped channel,
    // which has sent one message this hour: one goes out alone, the other five in a digest.
    let events: Vec<Value> = (0..6u32)
        .flat_map(|u| {
            (0..3u32).map(move |i| {
                failed_from(
                    &format!("user{u}"),
                    "pi-cap",
                    &format!("198.51.100.{}", 20 + u),
                    // After the storm in event time: earlier would be later than allowed.
                    30_100 + i,
                    100_000 + u * 10 + i,
                )
            })
        })
        .collect();
    post_events(a.http, events);
    wait_until(Duration::from_secs(20), "the capped channel's digest", async || {
        at("/capped").len() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let capped = at("/capped");
    let texts: Vec<String> =
        capped.iter().map(|m| m["text"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(capped.len(), 3, "the cap of 3 an hour: {texts:?}");
    assert!(texts[2].contains("5 alert notices over this channel's cap of 3 an hour"), "{texts:?}");
    assert_eq!(texts[2].matches("\n• ").count(), 5, "{texts:?}");
    assert!((1..6).all(|u| texts[2].contains(&format!("for user{u} on"))), "{texts:?}");
    // The grouping channel (group_wait 5 s): the six new alerts of one rule in one message.
    wait_until(Duration::from_secs(20), "the grouped message", async || at("/grouped").len() >= 2)
        .await;
    let grouped: Vec<String> =
        at("/grouped").iter().map(|m| m["text"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(grouped.len(), 2, "mallory's alert, then the six together: {grouped:?}");
    assert!(
        grouped[1].contains("6 new alerts of ANLY-SEC-001 (Failed Login Burst Detection)"),
        "{grouped:?}"
    );
    assert!((0..6).all(|u| grouped[1].contains(&format!("for user{u} on"))), "{grouped:?}");
}

/// An SMTP server over implicit TLS (port 465 style) that requires AUTH PLAIN with `user` and
/// `password`: each accepted message's data goes to the channel; a wrong login is answered 535.
fn smtps_sink(user: &str, password: &str, out: std::sync::mpsc::Sender<String>) -> (u16, String) {
    use std::io::{BufRead, Write};
    let (ca_pem, cert, key) = test_pki("smtp");
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap(),
    );
    let login = {
        let raw = format!("\0{user}\0{password}");
        // base64 of AUTH PLAIN's initial response
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in raw.as_bytes().chunks(3) {
            let n = c.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                s.push(if i <= c.len() {
                    char::from(A[(n >> (18 - 6 * i) & 63) as usize])
                } else {
                    '='
                });
            }
        }
        s
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (config, out, login) = (config.clone(), out.clone(), login.clone());
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = std::io::BufReader::new(rustls::StreamOwned::new(conn, stream));
                let say = |tls: &mut std::io::BufReader<rustls::StreamOwned<_, _>>, s: &[u8]| {
                    let w = tls.get_mut();
                    let _ = w.write_all(s);
                    let _ = w.flush();
                };
                say(&mut tls, b"220 smtps sink\r\n");
                let (mut authed, mut data): (bool, Option<String>) = (false, None);
                loop {
                    let mut line = String::new();
                    if tls.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end_matches(['\r', '\n']).to_owned();
                    if let Some(d) = data.as_mut() {
                        if line == "." {
                            let _ = out.send(data.take().unwrap_or_default());
                            say(&mut tls, b"250 queued\r\n");
                        } else {
                            d.push_str(&line);
                            d.push('\n');
                        }
                        continue;
                    }
                    let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
                    match verb.as_str() {
                        "EHLO" => say(&mut tls, b"250-sink\r\n250 AUTH PLAIN\r\n"),
                        "AUTH" if line.ends_with(&login) => {
                            authed = true;
                            say(&mut tls, b"235 ok\r\n");
                        }
                        "AUTH" => say(&mut tls, b"535 bad login\r\n"),
                        "MAIL" | "RCPT" if !authed => say(&mut tls, b"530 authenticate first\r\n"),
                        "DATA" => {
                            data = Some(String::new());
                            say(&mut tls, b"354 go on\r\n");
                        }
                        "QUIT" => {
                            say(&mut tls, b"221 bye\r\n");
                            return;
                        }
                        _ => say(&mut tls, b"250 OK\r\n"),
                    }
                }
            });
        }
    });
    (port, ca_pem)
}

/// E-mail through a real SMTP server, aiosmtpd (PyPI, installed by scripts/test.sh), that
/// requires STARTTLS before anything and AUTH over TLS: the mail arrives with its headers and
/// both parts after the server's certificate was checked against the channel's `ca_file`; a
/// channel with the wrong password is refused (535), and its delivery waits for a retry with
/// the server's answer recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_goes_through_a_real_smtp_server_with_starttls_and_auth() {
    let python = std::env::var("AIOSMTPD_PYTHON").unwrap_or_else(|_| {
        panic!("AIOSMTPD_PYTHON is not set: a real SMTP server (aiosmtpd) is required for this test; run scripts/test.sh")
    });
    let env = Env::new("notify_starttls").await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, _, cert, key) = test_pki_pem("smtpd");
    for (name, pem) in [("ca.pem", &ca), ("cert.pem", &cert), ("key.pem", &key)] {
        std::fs::write(dir.path().join(name), pem).unwrap();
    }
    std::fs::write(dir.path().join("good.password"), "smtp-password-0123456789\n").unwrap();
    std::fs::write(dir.path().join("bad.password"), "not-the-password\n").unwrap();
    let out = dir.path().join("mail");
    std::fs::create_dir(&out).unwrap();
    let port = free_port();
    let mut server = std::process::Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/smtpd.py"))
        .arg(port.to_string())
        .args([dir.path().join("cert.pem"), dir.path().join("key.pem")])
        .args(["alerts@example.org", "smtp-password-0123456789"])
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start aiosmtpd");
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready", "aiosmtpd did not start");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(server);
    let d = dir.path().display();
    let channel = |name: &str, password: &str| {
        format!(
            "[[notify.channels]]\nname = \"{name}\"\nkind = \"email\"\nsmtp = \"localhost:{port}\"\nsmtp_tls = \"starttls\"\n\
             ca_file = \"{d}/ca.pem\"\nsmtp_user = \"alerts@example.org\"\nsmtp_password_file = \"{d}/{password}\"\n\
             from = \"AuditFlow <alerts@example.org>\"\nto = [\"ops@example.org\"]\ngroup_wait = \"0s\"\n"
        )
    };
    let top = format!(
        "[notify]\nmax_attempts = 20\n{}{}",
        channel("mail", "good.password"),
        channel("badmail", "bad.password")
    );
    let a = start_and_brute_force(&env, dir.path(), "notify_starttls", &top, "pi-mail", 930);
    let first = out.join("1.eml");
    wait_until(Duration::from_secs(20), "the mail at the SMTP server", async || first.exists())
        .await;
    let mail = std::fs::read_to_string(&first).unwrap();
    for needle in [
        "Subject: [AuditFlow CRITICAL] 3 failed logins for mallory on pi-mail",
        "From: AuditFlow <alerts@example.org>",
        "To: ops@example.org",
        "Date: ",
        "Message-ID: <",
        "multipart/alternative",
        "Content-Type: text/plain",
        "Content-Type: text/html",
    ] {
        assert!(mail.contains(needle), "no `{needle}` in:\n{mail}");
    }
    // The wrong password: refused by the server, retried, its answer on the delivery.
    let list = request(a.http, "GET", "/api/v1/alerts", Some(OPERATOR), None, &[]).json();
    let id = list["alerts"][0]["id"].as_str().unwrap().to_owned();
    wait_until(Duration::from_secs(20), "the refused login recorded", async || {
        let d = request(a.http, "GET", &format!("/api/v1/alerts/{id}"), Some(OPERATOR), None, &[])
            .json();
        d["deliveries"].as_array().into_iter().flatten().any(|x| {
            x["channel"] == "badmail"
                && x["state"] == "pending"
                && x["last_error"].as_str().is_some_and(|e| e.contains("535"))
        })
    })
    .await;
    assert!(!out.join("2.eml").exists(), "a mail got through with the wrong password");
}

/// E-mail to a server that speaks only TLS and requires AUTH: the mail arrives with Date,
/// Message-ID, and plain-text and HTML parts, after the server's certificate was checked
/// against the channel's `ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_goes_over_tls_with_auth_and_both_parts() {
    let env = Env::new("notify_smtps").await;
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (port, ca) = smtps_sink("alerts@example.org", "smtp-password-0123456789", tx);
    let ca_file = dir.path().join("smtp-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let pw = dir.path().join("smtp.password");
    std::fs::write(&pw, "smtp-password-0123456789\n").unwrap();
    let top = format!(
        "[notify]\nmax_attempts = 20\n\
         [[notify.channels]]\nname = \"mail\"\nkind = \"email\"\nsmtp = \"localhost:{port}\"\nsmtp_tls = \"tls\"\n\
         smtp_user = \"alerts@example.org\"\nsmtp_password_file = \"{}\"\nca_file = \"{}\"\n\
         from = \"AuditFlow <alerts@example.org>\"\nto = [\"ops@example.org\"]\n",
        pw.display(),
        ca_file.display()
    );
    let tokens = format!("ops:{OPERATOR}:operator");
    let a = Aggregator::start_with(
        &env,
        dir.path(),
        "notify_smtps",
        &top,
        &[("AUDITFLOW_API_TOKENS", &tokens)],
    );
    let events: Vec<Value> =
        (0..3).map(|i| failed_login("<b>eve</b>", "pi-mail", i * 5, 950 + i)).collect();
    post_events(a.http, events);
    let mail = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("the mail arrived over TLS after AUTH");
    for header in
        ["Date: ", "Message-ID: <", "From: AuditFlow <alerts@example.org>", "To: ops@example.org"]
    {
        assert!(mail.contains(header), "no `{header}` in:\n{mail}");
    }
    assert!(mail.contains("multipart/alternative"), "{mail}");
    assert!(mail.contains("text/plain") && mail.contains("text/html"), "{mail}");
    assert!(mail.contains("pi-mail"), "{mail}");
    assert!(
        !mail.contains("<b>eve</b></td>"),
        "event text became markup in the HTML part:\n{mail}"
    );
}

/// `auditflow-aggregator notify test NAME` sends a test message through a configured channel
/// (here Discord-style over HTTPS with the receiver's CA) and exits 0; a channel that cannot
/// be reached, or one that is not configured, exits 1 naming why.
#[test]
fn notify_test_sends_through_a_channel_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (port, ca) = https_receiver("cli", tx);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let config = dir.path().join("aggregator.toml");
    std::fs::write(
        &config,
        format!(
            "[[notify.channels]]\nname = \"team\"\nkind = \"discord\"\nurl = \"https://localhost:{port}/api/webhooks/9/y\"\nca_file = \"{}\"\n\
             [[notify.channels]]\nname = \"down\"\nkind = \"slack\"\nurl = \"https://127.0.0.1:1/x\"\n",
            ca_file.display()
        ),
    )
    .unwrap();
    let run = |name: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_auditflow-aggregator"))
            .args(["--config", config.to_str().unwrap(), "notify", "test", name])
            .env_remove("AMQP_URL")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .output()
            .unwrap()
    };
    let out = run("team");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (head, body) = rx.recv_timeout(Duration::from_secs(10)).expect("the test message");
    assert!(head.starts_with("post /api/webhooks/9/y "), "{head}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(body["embeds"][0]["title"].as_str().unwrap().contains("test notification"), "{body}");
    for (name, why) in [("down", "down"), ("nowhere", "no channel `nowhere`")] {
        let out = run(name);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{name}: {err}");
    }
}

/// Does with every message on `audit_alerts` what the legacy notification service does: parse
/// it, strip the `Z` after `+00:00`, map `"N/A"` to NULL, insert the
/// legacy columns; a duplicate `alert_id` is acknowledged and dropped. Any other failure
/// (the service would requeue the message for ever) fails the test. Returns the messages read.
async fn legacy_consumer(ch: &lapin::Channel, pool: &sqlx::PgPool) -> Vec<Value> {
    let mut seen = Vec::new();
    while let Some(m) = ch
        .basic_get("audit_alerts".into(), lapin::options::BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let p: Value = serde_json::from_slice(&m.delivery.data).expect("a JSON message");
        let mut ts = p["timestamp"].as_str().expect("timestamp").to_owned();
        if ts.ends_with("+00:00Z") || ts.ends_with("-00:00Z") {
            ts.pop();
        }
        let ip = match p["triggered_by"]["client_ip"].as_str() {
            None | Some("N/A") | Some("") => None,
            Some(ip) => Some(ip.to_owned()),
        };
        let s = |v: &Value| v.as_str().map(str::to_owned);
        let result = sqlx::query(
            "INSERT INTO public.alerts (alert_id, correlation_id, timestamp, alert_name,
                 alert_type, severity, description, source_service_name, rule_id, rule_name,
                 actor_type, actor_id, client_ip, resource_type, resource_id, server_hostname,
                 action_observed, analysis_rule_details, triggered_by_details,
                 impacted_resource_details, metadata, raw_event_data)
             VALUES ($1::uuid, $2::uuid, $3::timestamptz, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                 $13::inet, $14, $15, $16, $17, $18, $19, $20, $21, $22)",
        )
        .bind(s(&p["alert_id"]))
        .bind(s(&p["correlation_id"]))
        .bind(&ts)
        .bind(s(&p["alert_name"]))
        .bind(s(&p["alert_type"]))
        .bind(s(&p["severity"]))
        .bind(s(&p["description"]))
        .bind(s(&p["source_service_name"]))
        .bind(s(&p["analysis_rule"]["rule_id"]))
        .bind(s(&p["analysis_rule"]["rule_name"]))
        .bind(s(&p["triggered_by"]["actor_type"]))
        .bind(s(&p["triggered_by"]["actor_id"]))
        .bind(ip)
        .bind(s(&p["impacted_resource"]["resource_type"]))
        .bind(s(&p["impacted_resource"]["resource_id"]))
        .bind(s(&p["impacted_resource"]["server_hostname"]))
        .bind(s(&p["action_observed"]))
        .bind(sqlx::types::Json(&p["analysis_rule"]))
        .bind(sqlx::types::Json(&p["triggered_by"]))
        .bind(sqlx::types::Json(&p["impacted_resource"]))
        .bind(sqlx::types::Json(&p["metadata"]))
        .bind(sqlx::types::Json(&p["raw_event_data"]))
        .execute(pool)
        .await;
        match result {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {}
            Err(e) => panic!("the legacy consumer could not store {p}: {e}"),
        }
        seen.push(p);
    }
    seen
}

/// Runs the aggregator with `legacy_settings`, raises ANLY-SEC-001 three times for one user
/// (the second and third fold into the first alert), and lets a legacy consumer store the
/// feed. Returns the messages and the stored rows (`alert_id`, actor_type, action_observed,
/// client_ip, description, environment).
async fn legacy_feed(tag: &str, legacy_settings: &str) -> (Vec<Value>, Vec<Vec<String>>, Value) {
    let env = Env::new(tag).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = format!("ops:{OPERATOR}:operator");
    let a = Aggregator::start_with(
        &env,
        dir.path(),
        tag,
        &format!("[legacy]\n{legacy_settings}"),
        &[("AUDITFLOW_API_TOKENS", &tokens), ("ENVIRONMENT", "pilab")],
    );
    // The legacy table where the legacy service has it, in `public` of the same database:
    // AuditFlow's tables are in their own schema.
    let pool = env.pool().await;
    support::create_legacy_alerts(&pool, "public.alerts").await;
    let (_conn, ch) = env.publisher().await;
    ch.queue_declare(
        "audit_alerts".into(),
        lapin::options::QueueDeclareOptions { durable: true, ..Default::default() },
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
    let post = |from: u32| {
        let events: Vec<Value> =
            (from..from + 3).map(|i| failed_login("carol", "web-02", i, i)).collect();
        post_events(a.http, events);
    };
    let mut messages = Vec::new();
    // Three rounds of three failures, each round after the previous one's message: the alert
    // is created by the first, the other two fold into it.
    for round in 0..3 {
        post(round * 3);
        let want = messages.len() + 1;
        let start = std::time::Instant::now();
        while messages.len() < want && start.elapsed() < Duration::from_secs(20) {
            messages.extend(legacy_consumer(&ch, &pool).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Whatever else comes within two more seconds (updates, further firings).
    tokio::time::sleep(Duration::from_secs(2)).await;
    messages.extend(legacy_consumer(&ch, &pool).await);
    let rows: Vec<(String, String, String, Option<String>, String, String)> = sqlx::query_as(
        "SELECT alert_id::text, actor_type, action_observed, host(client_ip), description,
             metadata->>'environment'
         FROM public.alerts ORDER BY timestamp, alert_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let rows = rows
        .into_iter()
        .map(|(id, actor, action, ip, description, environment)| {
            vec![id, actor, action, ip.unwrap_or_default(), description, environment]
        })
        .collect();
    let api = request(a.http, "GET", "/alerts", Some(OPERATOR), None, &[]).json();
    (messages, rows, api)
}

const CAROL: &str =
    "3 or more failed login attempts for user 'carol' on 'web-02' within 60 seconds.";

/// Feed `alert`: one stored row per alert; the update messages (same `alert_id`, new
/// `occurrences`) are dropped by the legacy consumer as duplicates, as designed. The legacy
/// read API returns the row the legacy service would have returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_consumer_stores_the_alert_feed() {
    let (messages, rows, api) =
        legacy_feed("legacy_alert_feed", "alerts_feed = \"alert\"\nupdate_interval = \"1s\"\n")
            .await;
    assert_eq!(messages[0]["change"], "created", "{messages:?}");
    assert!(messages.len() >= 2, "no update message: {messages:?}");
    assert!(
        messages[1..]
            .iter()
            .all(|m| m["change"] == "updated" && m["alert_id"] == messages[0]["alert_id"])
    );
    assert_eq!(messages.last().unwrap()["occurrences"], 3, "{messages:?}");
    let id = messages[0]["alert_id"].as_str().unwrap();
    let expected: Vec<String> =
        [id, "USER", "LOGIN_FAILURE", "203.0.113.9", CAROL, "pilab"].map(String::from).into();
    assert_eq!(rows, [expected]);
    let row = &api.as_array().expect("legacy rows")[0];
    assert_eq!(row["alert_id"], id);
    assert_eq!(row["description"], CAROL);
    assert_eq!(row["alert_name"], "Multiple Failed Login Attempts");
    assert_eq!(row["client_ip"], "203.0.113.9");
    assert_eq!(row["metadata"]["environment"], "pilab");
}

/// Feed `firing`: one message, and one stored row, per firing, each with its own id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_consumer_stores_the_firing_feed() {
    let (messages, rows, _) = legacy_feed("legacy_firing_feed", "alerts_feed = \"firing\"\n").await;
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(messages.iter().all(|m| m["change"] == "firing"), "{messages:?}");
    assert!(messages.iter().all(|m| m["auditflow_alert_id"] == messages[0]["alert_id"]));
    assert_eq!(rows.len(), 3, "{rows:?}");
    // Each stored row is one message's firing (the primary key made them distinct).
    let mut stored: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    let mut sent: Vec<&str> = messages.iter().map(|m| m["alert_id"].as_str().unwrap()).collect();
    stored.sort_unstable();
    sent.sort_unstable();
    assert_eq!(stored, sent);
    for r in &rows {
        assert_eq!(r[1..], ["USER", "LOGIN_FAILURE", "203.0.113.9", CAROL, "pilab"]);
    }
}
