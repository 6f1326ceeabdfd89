//! Webhook receivers: `POST /hooks/github` and `POST /hooks/gitlab` turn provider events into
//! `Git` events in the same rule pipeline (design.md §6).
//!
//! Everything that can be checked without the body is checked first: a secret is configured,
//! the signature header is well formed (GitHub) or the token matches (GitLab), the event
//! header is there, the declared length is within [`MAX_HOOK_BYTES`]. Only then is the body
//! read, at most [`MAX_UNVERIFIED_BODIES`] at once and within [`BODY_TIMEOUT`], streamed into
//! the HMAC as it arrives, so unauthenticated requests cannot make the aggregator hold many
//! 8 MiB bodies. A wrong or missing signature or token is 401, logged and counted.
//!
//! Deliveries are deduplicated by the SHA-256 of the body, not by the delivery id: GitHub
//! signs the body only, so a captured delivery replayed with a new `X-GitHub-Delivery` is the
//! same event (and a redelivery, which repeats the body, is one too).

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{MethodRouter, post};
use futures_util::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use uuid::Uuid;
use wire::model::{Event, EventKind, Severity, Source, Timestamp};

use super::auth::constant_time_eq;
use super::{ApiError, ApiState, RouteDoc};
use crate::pipeline::Item;

/// Webhook secrets, per provider; a provider without one refuses every delivery.
#[derive(Clone, Default)]
pub struct HookSecrets {
    /// GitHub's webhook secret (HMAC key).
    pub github: Option<String>,
    /// GitLab's secret token.
    pub gitlab: Option<String>,
}

impl std::fmt::Debug for HookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookSecrets")
            .field("github", &self.github.is_some())
            .field("gitlab", &self.gitlab.is_some())
            .finish()
    }
}

/// Largest webhook body (GitHub caps payloads at 25 MB; pushes of many commits are large).
pub const MAX_HOOK_BYTES: usize = 8 << 20;

/// Webhook bodies read at once before their signature is known (so at most 4 × 8 MiB).
pub const MAX_UNVERIFIED_BODIES: usize = 4;

/// Time a sender has to deliver a body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Process-wide: the receivers share one budget.
static BODY_PERMITS: Semaphore = Semaphore::const_new(MAX_UNVERIFIED_BODIES);

const DELIVERY_NAMESPACE: Uuid = Uuid::from_u128(0x7d41_0c6a_93e2_4b57_8f1d_2a6b_c3e4_f5a6);

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The 32 bytes of a `sha256=HEX` signature header; `None` when malformed. An HMAC-SHA256 is
/// 32 bytes; GitHub sends it as 64 lower-case hex digits.
fn github_signature(signature: Option<&str>) -> Option<wire::model::Digest> {
    signature.and_then(|s| s.strip_prefix("sha256=")).and_then(wire::model::Digest::from_hex)
}

/// Whether `signature` (`sha256=HEX`) is the HMAC-SHA256 of `body` under `secret`; compared
/// in constant time.
pub fn github_signature_ok(secret: &str, body: &[u8], signature: Option<&str>) -> bool {
    let Some(sig) = github_signature(signature) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return false };
    mac.update(body);
    mac.verify_slice(&sig.0).is_ok()
}

/// Reads a webhook body: after the header checks, within the shared budget and time limit,
/// feeding each chunk to `on_chunk` (the HMAC) as it arrives.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    mut on_chunk: impl FnMut(&[u8]),
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::Status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("webhook bodies are limited to {MAX_HOOK_BYTES} bytes"),
        )
    };
    let declared = header(headers, "content-length").and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_HOOK_BYTES) {
        return Err(too_large());
    }
    let _permit = tokio::time::timeout(Duration::from_secs(5), BODY_PERMITS.acquire())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            ApiError::Status(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many webhook deliveries at once; retry".into(),
            )
        })?;
    let mut out = Vec::with_capacity(declared.unwrap_or(0).min(MAX_HOOK_BYTES));
    let mut stream = body.into_data_stream();
    let read = async {
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::BadRequest(format!("reading the body: {e}")))?;
            if out.len() + chunk.len() > MAX_HOOK_BYTES {
                return Err(too_large());
            }
            on_chunk(&chunk);
            out.extend_from_slice(&chunk);
        }
        Ok(())
    };
    tokio::time::timeout(BODY_TIMEOUT, read).await.map_err(|_| {
        ApiError::Status(StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time".into())
    })??;
    Ok(out)
}

fn text(v: &Value, path: &[&str]) -> Option<String> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str().map(str::to_owned)
}

/// A GitHub delivery as a `Git` event; `None` for events that carry nothing to detect on
/// (`ping`).
pub fn github_event(event: &str, p: &Value) -> Option<EventKind> {
    if event == "ping" {
        return None;
    }
    let repo = text(p, &["repository", "full_name"])
        .or_else(|| text(p, &["organization", "login"]))
        .unwrap_or_default();
    let actor =
        text(p, &["sender", "login"]).or_else(|| text(p, &["pusher", "name"])).unwrap_or_default();
    let mut action = text(p, &["action"]);
    let git_ref = match event {
        "create" | "delete" => {
            let r = text(p, &["ref"]).unwrap_or_default();
            Some(match text(p, &["ref_type"]).as_deref() {
                Some("tag") => format!("refs/tags/{r}"),
                _ => format!("refs/heads/{r}"),
            })
        }
        _ => text(p, &["ref"]).or_else(|| text(p, &["workflow_run", "head_branch"])),
    };
    if event == "push" && action.is_none() {
        if p.get("deleted").and_then(Value::as_bool) == Some(true) {
            action = Some("deleted".into());
        } else if p.get("created").and_then(Value::as_bool) == Some(true) {
            action = Some("created".into());
        }
    }
    Some(EventKind::Git {
        provider: "github".into(),
        event: event.into(),
        repo,
        actor,
        git_ref,
        forced: p.get("forced").and_then(Value::as_bool).unwrap_or(false),
        default_branch: text(p, &["repository", "default_branch"]),
        action,
    })
}

/// A GitLab delivery as a `Git` event.
pub fn gitlab_event(event: &str, p: &Value) -> EventKind {
    let actor = text(p, &["user_username"])
        .or_else(|| text(p, &["user", "username"]))
        .or_else(|| text(p, &["user_name"]))
        .unwrap_or_default();
    EventKind::Git {
        provider: "gitlab".into(),
        event: event.into(),
        repo: text(p, &["project", "path_with_namespace"]).unwrap_or_default(),
        actor,
        git_ref: text(p, &["ref"]).or_else(|| text(p, &["object_attributes", "ref"])),
        // GitLab push payloads do not say whether a push was forced.
        forced: false,
        default_branch: text(p, &["project", "default_branch"]),
        action: text(p, &["object_attributes", "action"]).or_else(|| text(p, &["event_name"])),
    }
}

/// The event id of a delivery: from the SHA-256 of its body (see the module's doc).
fn delivery_id(provider: &str, body: &[u8]) -> Uuid {
    let digest = Sha256::digest(body);
    let mut name = Vec::with_capacity(provider.len() + 1 + digest.len());
    name.extend_from_slice(provider.as_bytes());
    name.push(b':');
    name.extend_from_slice(&digest);
    Uuid::new_v5(&DELIVERY_NAMESPACE, &name)
}

async fn deliver(
    s: &ApiState,
    provider: &'static str,
    body: &[u8],
    kind: EventKind,
) -> Result<Json<Value>, ApiError> {
    let id = delivery_id(provider, body);
    let mut event = Event::new(Timestamp::now(), Source::Webhook, Severity::Info, kind);
    event.origin = Some(format!("{provider}-webhook"));
    let node = format!("{provider}-webhook");
    let stats = s.intake.submit(vec![Item::Single { id, node, event }]).await?;
    Ok(Json(json!({
        "accepted": stats.events,
        "duplicate": stats.duplicates > 0,
        "firings": stats.firings,
    })))
}

fn refuse(s: &ApiState, provider: &'static str, why: &str) -> ApiError {
    s.metrics.hooks.with_label_values(&[provider, "refused"]).inc();
    tracing::warn!(provider, why, "webhook refused");
    ApiError::Unauthorized
}

fn parse(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the payload is not JSON: {e}")))
}

async fn github(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let Some(secret) = s.hooks.github.as_deref() else {
        return Err(refuse(&s, "github", "no secret configured"));
    };
    let Some(signature) = github_signature(header(&headers, "x-hub-signature-256")) else {
        return Err(refuse(&s, "github", "missing or malformed X-Hub-Signature-256"));
    };
    let Some(event) = header(&headers, "x-github-event") else {
        return Err(ApiError::BadRequest("X-GitHub-Event is missing".into()));
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return Err(refuse(&s, "github", "unusable secret"));
    };
    let body = read_body(&headers, body, |chunk| mac.update(chunk)).await?;
    if mac.verify_slice(&signature.0).is_err() {
        return Err(refuse(&s, "github", "wrong X-Hub-Signature-256"));
    }
    let payload = parse(&body)?;
    s.metrics.hooks.with_label_values(&["github", "accepted"]).inc();
    match github_event(event, &payload) {
        Some(kind) => deliver(&s, "github", &body, kind).await,
        None => Ok(Json(json!({"accepted": 0, "duplicate": false, "firings": 0}))),
    }
}

async fn gitlab(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let Some(secret) = s.hooks.gitlab.as_deref() else {
        return Err(refuse(&s, "gitlab", "no token configured"));
    };
    match header(&headers, "x-gitlab-token") {
        Some(t) if constant_time_eq(t.as_bytes(), secret.as_bytes()) => {}
        _ => return Err(refuse(&s, "gitlab", "missing or wrong X-Gitlab-Token")),
    }
    let Some(event) = header(&headers, "x-gitlab-event") else {
        return Err(ApiError::BadRequest("X-Gitlab-Event is missing".into()));
    };
    let body = read_body(&headers, body, |_| {}).await?;
    let payload = parse(&body)?;
    s.metrics.hooks.with_label_values(&["gitlab", "accepted"]).inc();
    deliver(&s, "gitlab", &body, gitlab_event(event, &payload)).await
}

/// The webhook routes (authenticated by their signatures, not by API tokens).
pub fn routes() -> Vec<(RouteDoc, MethodRouter<ApiState>)> {
    let doc = |path, summary| RouteDoc {
        method: "post",
        path,
        role: None,
        summary,
        tag: "webhooks",
        params: &[],
        body: Some("WebhookPayload"),
        response: "EventsResult",
        errors: &[400, 401, 408, 413, 503],
    };
    vec![
        (
            doc(
                "/hooks/github",
                "GitHub webhook (X-Hub-Signature-256 HMAC, X-GitHub-Event, X-GitHub-Delivery)",
            ),
            post(github).layer(DefaultBodyLimit::max(MAX_HOOK_BYTES)),
        ),
        (
            doc("/hooks/gitlab", "GitLab webhook (X-Gitlab-Token, X-Gitlab-Event)"),
            post(gitlab).layer(DefaultBodyLimit::max(MAX_HOOK_BYTES)),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUSH: &str = include_str!("../../../tests/fixtures/github-webhooks/push-payload.json");

    #[test]
    fn signatures() {
        // GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(github_signature_ok("It's a Secret to Everybody", b"Hello, World!", Some(sig)));
        assert!(!github_signature_ok("It's a Secret to Everybody", b"Hello, World?", Some(sig)));
        assert!(!github_signature_ok("other", b"Hello, World!", Some(sig)));
        assert!(!github_signature_ok("x", b"", None));
        assert!(!github_signature_ok("x", b"", Some("sha1=00")));
        assert!(!github_signature_ok("x", b"", Some("sha256=zz")));
        assert!(!github_signature_ok("x", b"", Some("sha256=abc")));
    }

    #[test]
    fn github_push_fixture() {
        // The fixture is the push that deleted the tag `simple-tag`.
        let p: Value = serde_json::from_str(PUSH).unwrap();
        let Some(EventKind::Git {
            provider,
            event,
            repo,
            actor,
            git_ref,
            forced,
            default_branch,
            action,
        }) = github_event("push", &p)
        else {
            panic!("not a git event")
        };
        assert_eq!((provider.as_str(), event.as_str()), ("github", "push"));
        assert_eq!(repo, "Codertocat/Hello-World");
        assert_eq!(actor, "Codertocat");
        assert_eq!(git_ref.as_deref(), Some("refs/tags/simple-tag"));
        assert!(!forced);
        assert_eq!(default_branch.as_deref(), Some("master"));
        assert_eq!(action.as_deref(), Some("deleted"));
        assert!(github_event("ping", &p).is_none());
    }

    #[test]
    fn create_and_delete_name_the_ref() {
        let p = json!({"ref": "v1", "ref_type": "tag", "repository": {"full_name": "a/b"}, "sender": {"login": "x"}});
        let Some(EventKind::Git { git_ref, .. }) = github_event("delete", &p) else { panic!() };
        assert_eq!(git_ref.as_deref(), Some("refs/tags/v1"));
    }
}
