//! The REST API under `/api/v1` (design.md §6) and the legacy read API (design.md §8).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::{MethodRouter, delete, get, post};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;
use wire::model::Timestamp;

use super::auth::{Principal, Role};
use super::{ApiError, ApiState, RouteDoc};
use crate::detect::{Detector, Input};
use crate::legacy_alert;
use crate::pipeline::Item;
use crate::rules::{Mode, RuleSet, parse_duration, testcase};
use crate::state::memory::MemoryState;
use crate::store::{
    Action, AlertQuery, Cursor, Matcher, Silence, Status, Transitioned, now_ms, rfc3339,
};

/// Most alerts per page.
pub const MAX_PAGE: i64 = 500;
/// Most events per `POST /api/v1/events`.
pub const MAX_EVENTS: usize = 1000;
/// Longest comment on a lifecycle action or silence.
pub const MAX_COMMENT: usize = 2000;
/// Longest silence.
pub const MAX_SILENCE: Duration = Duration::from_secs(90 * 24 * 3600);

type ApiResult<T> = Result<T, ApiError>;
type Params = Result<Query<Vec<(String, String)>>, QueryRejection>;

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    match body {
        Ok(Json(v)) => Ok(v),
        // A well-formed body of the wrong shape is a 400 like every other validation error
        // here (axum says 422).
        Err(e) if e.status() == axum::http::StatusCode::UNPROCESSABLE_ENTITY => {
            Err(ApiError::BadRequest(e.body_text()))
        }
        Err(e) => Err(ApiError::Status(e.status(), e.body_text())),
    }
}

/// Query parameters, each allowed key at most once; unknown keys are refused so that a typo
/// does not silently widen a filter.
fn params(q: Params, allowed: &[&str]) -> ApiResult<Vec<(String, String)>> {
    let Query(pairs) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    for (i, (k, _)) in pairs.iter().enumerate() {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unknown parameter `{k}` (allowed: {})",
                allowed.join(", ")
            )));
        }
        if pairs[..i].iter().any(|(k2, _)| k2 == k) {
            return Err(ApiError::BadRequest(format!("parameter `{k}` given twice")));
        }
    }
    Ok(pairs)
}

fn get_param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

fn time_param(pairs: &[(String, String)], key: &str) -> ApiResult<Option<i64>> {
    get_param(pairs, key)
        .map(|v| {
            Timestamp::parse_rfc3339(v).map(|t| t.as_nanos() / 1_000_000).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`{key}` must be an RFC 3339 time like 2026-01-31T12:00:00Z"
                ))
            })
        })
        .transpose()
}

fn int_param(
    pairs: &[(String, String)],
    key: &str,
    default: i64,
    min: i64,
    max: i64,
) -> ApiResult<i64> {
    match get_param(pairs, key) {
        None => Ok(default),
        Some(v) => v.parse::<i64>().ok().filter(|n| (min..=max).contains(n)).ok_or_else(|| {
            ApiError::BadRequest(format!("`{key}` must be an integer from {min} to {max}"))
        }),
    }
}

fn alert_id(id: &str) -> ApiResult<Uuid> {
    Uuid::try_parse(id)
        .map_err(|_| ApiError::BadRequest(format!("`{id}` is not an alert id (a UUID)")))
}

const LIST_PARAMS: &[&str] =
    &["status", "severity", "node", "rule", "since", "until", "q", "limit", "cursor"];

async fn list_alerts(State(s): State<ApiState>, q: Params) -> ApiResult<Json<Value>> {
    let p = params(q, LIST_PARAMS)?;
    let mut query = AlertQuery {
        limit: int_param(&p, "limit", 50, 1, MAX_PAGE)?,
        node: get_param(&p, "node").map(str::to_owned),
        rule: get_param(&p, "rule").map(str::to_owned),
        since: time_param(&p, "since")?,
        until: time_param(&p, "until")?,
        ..Default::default()
    };
    if let Some(list) = get_param(&p, "status") {
        for s in list.split(',') {
            query.status.push(Status::parse(s.trim()).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`status`: `{s}` is not open, acknowledged or resolved"
                ))
            })?);
        }
    }
    if let Some(list) = get_param(&p, "severity") {
        for s in list.split(',') {
            let upper = s.trim().to_ascii_uppercase();
            if !matches!(upper.as_str(), "INFO" | "WARNING" | "CRITICAL") {
                return Err(ApiError::BadRequest(format!(
                    "`severity`: `{s}` is not INFO, WARNING or CRITICAL"
                )));
            }
            query.severity.push(upper);
        }
    }
    if let Some(text) = get_param(&p, "q") {
        if text.chars().count() > 200 {
            return Err(ApiError::BadRequest("`q` is longer than 200 characters".into()));
        }
        query.text = Some(text.to_owned());
    }
    if let Some(c) = get_param(&p, "cursor") {
        query.after = Some(Cursor::decode(c).ok_or_else(|| {
            ApiError::BadRequest("`cursor` is not one this API handed out".into())
        })?);
    }
    let page = s.store.list_alerts(&query).await?;
    Ok(Json(json!({
        "alerts": page.alerts,
        "next_cursor": page.next.map(|c| c.encode()),
    })))
}

async fn get_alert(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let id = alert_id(&id)?;
    match s.store.alert(id).await? {
        Some(d) => Ok(Json(serde_json::to_value(d).map_err(anyhow::Error::from)?)),
        None => Err(ApiError::NotFound(format!("no alert {id}"))),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    #[serde(default)]
    comment: String,
}

async fn act(
    s: ApiState,
    who: Principal,
    id: String,
    body: Bytes,
    action: Action,
) -> ApiResult<Json<Value>> {
    let id = alert_id(&id)?;
    // The body is optional: no body means no comment.
    let body: CommentBody = if body.iter().all(u8::is_ascii_whitespace) {
        CommentBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!("body: expected {{\"comment\": \"…\"}}: {e}"))
        })?
    };
    if body.comment.chars().count() > MAX_COMMENT {
        return Err(ApiError::BadRequest(format!(
            "`comment` is longer than {MAX_COMMENT} characters"
        )));
    }
    match s.store.act(id, action, &who.name, &body.comment).await? {
        Transitioned::Done(a) => Ok(Json(serde_json::to_value(*a).map_err(anyhow::Error::from)?)),
        Transitioned::NotFound => Err(ApiError::NotFound(format!("no alert {id}"))),
        Transitioned::Conflict(m) => Err(ApiError::Conflict(m)),
    }
}

macro_rules! action_handler {
    ($name:ident, $action:expr) => {
        async fn $name(
            State(s): State<ApiState>,
            Extension(who): Extension<Principal>,
            Path(id): Path<String>,
            body: Bytes,
        ) -> ApiResult<Json<Value>> {
            act(s, who, id, body, $action).await
        }
    };
}
action_handler!(acknowledge, Action::Acknowledge);
action_handler!(resolve, Action::Resolve);
action_handler!(reopen, Action::Reopen);

async fn list_silences(State(s): State<ApiState>, q: Params) -> ApiResult<Json<Value>> {
    let p = params(q, &["expired"])?;
    let include = match get_param(&p, "expired") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::BadRequest("`expired` must be true or false".into())),
    };
    Ok(Json(json!({ "silences": s.store.silences(include, now_ms()).await? })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSilence {
    matchers: Vec<Matcher>,
    #[serde(default)]
    comment: String,
    /// How long, like `2h`; or `expires_at`.
    duration: Option<String>,
    expires_at: Option<String>,
}

async fn add_silence(
    State(s): State<ApiState>,
    Extension(who): Extension<Principal>,
    body: Result<Json<NewSilence>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let b = json_body(body)?;
    if b.matchers.is_empty() || b.matchers.len() > 20 {
        return Err(ApiError::BadRequest("`matchers`: give 1 to 20 matchers".into()));
    }
    for m in &b.matchers {
        if !Matcher::valid_field(&m.field) {
            return Err(ApiError::BadRequest(format!(
                "matcher field `{}`: use rule_id, node, severity or group.NAME",
                m.field
            )));
        }
        if m.value.is_empty() || m.value.len() > 500 {
            return Err(ApiError::BadRequest("matcher values must be 1 to 500 bytes".into()));
        }
    }
    if b.comment.chars().count() > MAX_COMMENT {
        return Err(ApiError::BadRequest(format!(
            "`comment` is longer than {MAX_COMMENT} characters"
        )));
    }
    let now = now_ms();
    let expires_at = match (&b.duration, &b.expires_at) {
        (Some(d), None) => {
            let d = parse_duration(d).filter(|d| !d.is_zero() && *d <= MAX_SILENCE).ok_or_else(
                || {
                    ApiError::BadRequest(
                        "`duration` must be like 30m, 2h or 7d, at most 90d".into(),
                    )
                },
            )?;
            now + d.as_millis() as i64
        }
        (None, Some(t)) => {
            let at =
                Timestamp::parse_rfc3339(t).map(|t| t.as_nanos() / 1_000_000).ok_or_else(|| {
                    ApiError::BadRequest("`expires_at` must be an RFC 3339 time".into())
                })?;
            if at <= now || at - now > MAX_SILENCE.as_millis() as i64 {
                return Err(ApiError::BadRequest(
                    "`expires_at` must be in the future, at most 90 days ahead".into(),
                ));
            }
            at
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of `duration` and `expires_at`".into(),
            ));
        }
    };
    let silence = Silence {
        id: Uuid::new_v4(),
        matchers: b.matchers,
        comment: b.comment,
        created_by: who.name,
        created_at: now,
        expires_at,
    };
    s.store.add_silence(&silence).await?;
    Ok(Json(serde_json::to_value(silence).map_err(anyhow::Error::from)?))
}

async fn expire_silence(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = Uuid::try_parse(&id).map_err(|_| ApiError::BadRequest("not a silence id".into()))?;
    if s.store.expire_silence(id, now_ms()).await? {
        Ok(Json(json!({"expired": id})))
    } else {
        Err(ApiError::NotFound(format!("no silence {id}")))
    }
}

async fn list_rules(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    let detector = s.rules.get();
    let counts = s.store.rule_counts().await?;
    let status = s.rule_status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let rules: Vec<Value> = detector
        .rules
        .rules
        .iter()
        .map(|r| {
            let c = counts.iter().find(|c| c.rule_id == r.id);
            json!({
                "id": r.id,
                "name": r.name,
                "description": r.description,
                "kind": r.spec.name(),
                "severity": r.severity.as_legacy(),
                "mode": if r.mode == Mode::Shadow { "shadow" } else { "alert" },
                "tags": r.tags,
                "file": r.file,
                "firings": c.map_or(0, |c| c.firings),
                "last_fired": c.and_then(|c| c.last_fired).map(rfc3339),
            })
        })
        .collect();
    Ok(Json(json!({
        "version": status.version,
        "last_error": status.last_error,
        "source": if s.reloader.is_some() { "directory" } else { "shipped" },
        "rules": rules,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestBody {
    event: Value,
}

/// Converts one submitted event: the rule-test format (it has `kind`) or legacy JSON.
fn event_item(value: &Value, now: Timestamp) -> Result<Item, String> {
    if value.get("kind").is_some() {
        let (node, event) = testcase::event_from_json(value, now)?;
        let id = Uuid::new_v5(&SUBMITTED_NAMESPACE, value.to_string().as_bytes());
        return Ok(Item::Single { id, node, event });
    }
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    let event = wire::legacy::from_legacy_json(&bytes, now).map_err(|e| e.to_string())?;
    let id = event.id.map_or_else(|| Uuid::new_v5(&SUBMITTED_NAMESPACE, &bytes), Uuid::from_bytes);
    let node = event.host.clone().unwrap_or_else(|| "api".to_owned());
    Ok(Item::Single { id, node, event })
}

/// Ids of submitted events without their own: derived from the JSON, so a resubmission is
/// recognised.
const SUBMITTED_NAMESPACE: Uuid = Uuid::from_u128(0x3f7c_9a10_5b2e_4d8f_a6c1_7e9d_0b2a_4c6e);

async fn test_rules(
    State(s): State<ApiState>,
    body: Result<Json<TestBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let b = json_body(body)?;
    let Item::Single { id, node, event } = event_item(&b.event, Timestamp::now())
        .map_err(|e| ApiError::BadRequest(format!("`event`: {e}")))?
    else {
        return Err(ApiError::BadRequest("`event`: expected one event".into()));
    };
    let detector = s.rules.get();
    let set: &RuleSet = &detector.rules;
    let ev = crate::rules::EventRef { node: &node, event: &event };
    let matched: Vec<&str> =
        set.rules.iter().filter(|r| r.when.eval(&ev)).map(|r| r.id.as_str()).collect();
    // Fired: on its own, with empty state (threshold rules need more events to fire).
    let fresh = Detector::new(detector.rules.clone(), Duration::from_secs(300));
    let inputs = [Input { id, node: &node, event: &event }];
    let plan = fresh.plan(&inputs);
    let verdicts = MemoryState::new().apply_now(&plan.ops);
    let outcome = fresh.finish(&inputs, &plan, &verdicts);
    let fired: Vec<Value> = outcome
        .firings
        .iter()
        .map(|f| json!({"rule_id": f.rule_id, "title": f.title, "severity": f.severity.as_legacy(), "fingerprint": f.fingerprint}))
        .collect();
    Ok(Json(json!({
        "event": wire::legacy::to_legacy(&event, &node, id),
        "matched": matched,
        "fired": fired,
    })))
}

async fn reload_rules(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    let Some(reloader) = s.reloader.clone() else {
        return Err(ApiError::Conflict(
            "the shipped rule pack is in use; set rules_dir to load rules from a directory".into(),
        ));
    };
    let changed =
        tokio::task::spawn_blocking(move || reloader.check()).await.map_err(anyhow::Error::from)?;
    let status = s.rule_status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(Json(json!({
        "changed": changed,
        "version": status.version,
        "last_error": status.last_error,
    })))
}

async fn list_agents(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    let now = now_ms();
    let silent_ms = s.silent_after.as_millis() as i64;
    let agents: Vec<Value> = s
        .store
        .agents()
        .await?
        .into_iter()
        .map(|a| {
            let state = if now - a.last_seen > silent_ms { "silent" } else { "ok" };
            let mut v = serde_json::to_value(&a).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.insert("state".into(), state.into());
                o.insert("dropping".into(), (a.dropped > 0).into());
            }
            v
        })
        .collect();
    Ok(Json(json!({ "agents": agents, "silent_after_secs": s.silent_after.as_secs() })))
}

async fn stats(State(s): State<ApiState>, q: Params) -> ApiResult<Json<Value>> {
    let p = params(q, &["from", "to", "bucket"])?;
    let now = now_ms();
    let to = time_param(&p, "to")?.unwrap_or(now);
    let from = time_param(&p, "from")?.unwrap_or(to - 24 * 3600 * 1000);
    let bucket = match get_param(&p, "bucket") {
        None => Duration::from_secs(3600),
        Some(b) => parse_duration(b).filter(|d| d.as_secs() >= 1).ok_or_else(|| {
            ApiError::BadRequest("`bucket` must be a duration like 1m or 1h".into())
        })?,
    };
    let bucket_ms = bucket.as_millis() as i64;
    if from >= to {
        return Err(ApiError::BadRequest("`from` must be before `to`".into()));
    }
    if (to - from) / bucket_ms > 2000 {
        return Err(ApiError::BadRequest("at most 2000 buckets; widen `bucket`".into()));
    }
    let buckets = s.store.stats(from, to, bucket_ms).await?;
    let m = &s.metrics;
    Ok(Json(json!({
        "from": rfc3339(from),
        "to": rfc3339(to),
        "bucket_secs": bucket.as_secs(),
        "buckets": buckets,
        "counters": {
            "events_in": m.events_in.get(),
            "duplicates": m.duplicates.get(),
            "invalid": m.invalid.get(),
            "firings": m.firings.get(),
            "shadow_firings": m.shadow_firings.get(),
        },
    })))
}

async fn stream(
    State(s): State<ApiState>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = s.store.subscribe();
    let hello = SseEvent::default().event("hello").data("{}");
    let state = (rx, s.clone(), Some(hello));
    let events = futures_util::stream::unfold(state, |(mut rx, s, hello)| async move {
        if let Some(hello) = hello {
            return Some((Ok(hello), (rx, s, None)));
        }
        loop {
            let change = tokio::select! {
                () = s.cancel.cancelled() => return None,
                c = rx.recv() => c,
            };
            let event = match change {
                Ok(change) => match s.store.find_alert(change.alert_id).await {
                    Ok(Some(alert)) => SseEvent::default()
                        .event("alert")
                        .id(change.alert_id.to_string())
                        .json_data(json!({"change": change.kind, "alert": alert}))
                        .unwrap_or_else(|_| SseEvent::default().event("resync").data("{}")),
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "live stream: read alert failed");
                        SseEvent::default().event("resync").data("{}")
                    }
                },
                // The client fell behind: tell it to reload instead of silently skipping.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    s.metrics.sse_lagged.inc_by(n);
                    SseEvent::default().event("resync").data(json!({"missed": n}).to_string())
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            };
            return Some((Ok(event), (rx, s, None)));
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn submit_events(
    State(s): State<ApiState>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let body = json_body(body)?;
    let list = match body {
        Value::Array(list) => list,
        one @ Value::Object(_) => vec![one],
        _ => return Err(ApiError::BadRequest("send one event object or an array of them".into())),
    };
    if list.is_empty() || list.len() > MAX_EVENTS {
        return Err(ApiError::BadRequest(format!("send 1 to {MAX_EVENTS} events")));
    }
    let now = Timestamp::now();
    let mut items = Vec::with_capacity(list.len());
    let mut errors = Vec::new();
    for (i, v) in list.iter().enumerate() {
        match event_item(v, now) {
            Ok(item) => items.push(item),
            Err(e) => errors.push(format!("event {i}: {e}")),
        }
    }
    // All or nothing: a batch with a bad event is refused whole, so a client can fix and
    // resend it without wondering which events counted.
    if !errors.is_empty() {
        errors.truncate(20);
        return Err(ApiError::BadRequest(errors.join("; ")));
    }
    let stats = s.intake.submit(items).await?;
    Ok(Json(json!({
        "accepted": stats.events,
        "duplicates": stats.duplicates,
        "firings": stats.firings,
    })))
}

async fn whoami(Extension(who): Extension<Principal>) -> Json<Principal> {
    Json(who)
}

/// `GET /alerts?limit=&offset=`: the legacy read API, newest first, flat legacy columns.
async fn legacy_list(State(s): State<ApiState>, q: Params) -> ApiResult<Json<Value>> {
    let Query(pairs) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let num = |key: &str, default: i64, min: i64, max: i64| -> ApiResult<i64> {
        match pairs.iter().find(|(k, _)| k == key) {
            None => Ok(default),
            Some((_, v)) => {
                v.parse::<i64>().ok().filter(|n| (min..=max).contains(n)).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "Invalid {key}: must be an integer from {min} to {max}"
                    ))
                })
            }
        }
    };
    let limit = num("limit", 100, 1, 1000)?;
    let offset = num("offset", 0, 0, i64::from(i32::MAX))?;
    let alerts = s.store.list_alerts_offset(limit, offset).await?;
    Ok(Json(Value::Array(alerts.iter().map(legacy_alert::flat).collect())))
}

/// `GET /alerts/{id}`: unknown or malformed ids are 404, as in the legacy service.
async fn legacy_get(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let not_found = || ApiError::NotFound("Alert not found".into());
    let id = Uuid::try_parse(&id).map_err(|_| not_found())?;
    match s.store.find_alert(id).await? {
        Some(a) => Ok(Json(legacy_alert::flat(&a))),
        None => Err(not_found()),
    }
}

const ID: (&str, &str, &str, &str) = ("id", "path", "string", "Alert id (UUID).");
const COMMENT_ERRORS: &[u16] = &[400, 404, 409, 413];

/// The API routes.
pub fn routes() -> Vec<(RouteDoc, MethodRouter<ApiState>)> {
    use Role::{Admin, Operator, Viewer};
    let doc = |method, path, role, summary, tag| RouteDoc {
        method,
        path,
        role: Some(role),
        summary,
        tag,
        params: &[],
        body: None,
        response: "Object",
        errors: &[],
    };
    vec![
        (
            RouteDoc {
                params: &[
                    ("status", "query", "string", "Comma-separated: open, acknowledged, resolved."),
                    ("severity", "query", "string", "Comma-separated: INFO, WARNING, CRITICAL."),
                    ("node", "query", "string", "Node name."),
                    ("rule", "query", "string", "Rule id."),
                    ("since", "query", "string", "last_seen at or after (RFC 3339)."),
                    ("until", "query", "string", "last_seen before (RFC 3339)."),
                    ("q", "query", "string", "Text in title, rule, node or group values."),
                    ("limit", "query", "integer", "Page size, 1 to 500 (default 50)."),
                    ("cursor", "query", "string", "next_cursor of the previous page."),
                ],
                response: "AlertPage",
                errors: &[400],
                ..doc(
                    "get",
                    "/api/v1/alerts",
                    Viewer,
                    "List alerts, newest last_seen first",
                    "alerts",
                )
            },
            get(list_alerts),
        ),
        (
            RouteDoc {
                params: &[ID],
                response: "AlertDetail",
                errors: &[400, 404],
                ..doc(
                    "get",
                    "/api/v1/alerts/{id}",
                    Viewer,
                    "An alert with evidence, history and deliveries",
                    "alerts",
                )
            },
            get(get_alert),
        ),
        (
            RouteDoc {
                params: &[ID],
                body: Some("Comment"),
                response: "Alert",
                errors: COMMENT_ERRORS,
                ..doc(
                    "post",
                    "/api/v1/alerts/{id}/ack",
                    Operator,
                    "Acknowledge an open alert",
                    "alerts",
                )
            },
            post(acknowledge),
        ),
        (
            RouteDoc {
                params: &[ID],
                body: Some("Comment"),
                response: "Alert",
                errors: COMMENT_ERRORS,
                ..doc("post", "/api/v1/alerts/{id}/resolve", Operator, "Resolve an alert", "alerts")
            },
            post(resolve),
        ),
        (
            RouteDoc {
                params: &[ID],
                body: Some("Comment"),
                response: "Alert",
                errors: COMMENT_ERRORS,
                ..doc(
                    "post",
                    "/api/v1/alerts/{id}/reopen",
                    Operator,
                    "Reopen an acknowledged or resolved alert",
                    "alerts",
                )
            },
            post(reopen),
        ),
        (
            RouteDoc {
                params: &[("expired", "query", "boolean", "Include expired silences.")],
                response: "Silences",
                errors: &[400],
                ..doc("get", "/api/v1/silences", Viewer, "List silences", "silences")
            },
            get(list_silences),
        ),
        (
            RouteDoc {
                body: Some("NewSilence"),
                response: "Silence",
                errors: &[400, 413],
                ..doc(
                    "post",
                    "/api/v1/silences",
                    Operator,
                    "Silence notifications of matching new alerts",
                    "silences",
                )
            },
            post(add_silence),
        ),
        (
            RouteDoc {
                params: &[("id", "path", "string", "Silence id (UUID).")],
                errors: &[400, 404],
                ..doc("delete", "/api/v1/silences/{id}", Operator, "End a silence now", "silences")
            },
            delete(expire_silence),
        ),
        (
            RouteDoc {
                response: "Rules",
                ..doc(
                    "get",
                    "/api/v1/rules",
                    Viewer,
                    "Loaded rules with fire counts and the last reload error",
                    "rules",
                )
            },
            get(list_rules),
        ),
        (
            RouteDoc {
                body: Some("RuleTest"),
                response: "RuleTestResult",
                errors: &[400, 413],
                ..doc(
                    "post",
                    "/api/v1/rules/test",
                    Viewer,
                    "Which loaded rules an event matches",
                    "rules",
                )
            },
            post(test_rules),
        ),
        (
            RouteDoc {
                errors: &[409],
                ..doc(
                    "post",
                    "/api/v1/rules/reload",
                    Admin,
                    "Re-read the rule directory now",
                    "rules",
                )
            },
            post(reload_rules),
        ),
        (
            RouteDoc {
                response: "Agents",
                ..doc(
                    "get",
                    "/api/v1/agents",
                    Viewer,
                    "The fleet: every agent's heartbeat figures",
                    "fleet",
                )
            },
            get(list_agents),
        ),
        (
            RouteDoc {
                params: &[
                    ("from", "query", "string", "Start (RFC 3339; default 24 h before `to`)."),
                    ("to", "query", "string", "End (RFC 3339; default now)."),
                    ("bucket", "query", "string", "Bucket width like 5m or 1h (default 1h)."),
                ],
                response: "Stats",
                errors: &[400],
                ..doc(
                    "get",
                    "/api/v1/stats",
                    Viewer,
                    "Alerts per time bucket and severity, and counters",
                    "stats",
                )
            },
            get(stats),
        ),
        (
            RouteDoc {
                response: "event-stream",
                ..doc(
                    "get",
                    "/api/v1/stream",
                    Viewer,
                    "Server-sent events: `alert` for new and changed alerts, `resync` when events were missed",
                    "alerts",
                )
            },
            get(stream),
        ),
        (
            RouteDoc {
                body: Some("Events"),
                response: "EventsResult",
                errors: &[400, 413],
                ..doc(
                    "post",
                    "/api/v1/events",
                    Operator,
                    "Submit events (legacy JSON or rule-test form) for detection",
                    "events",
                )
            },
            post(submit_events),
        ),
        (
            RouteDoc {
                response: "Principal",
                ..doc("get", "/api/v1/whoami", Viewer, "The calling token's name and role", "auth")
            },
            get(whoami),
        ),
        (
            RouteDoc {
                params: &[
                    ("limit", "query", "integer", "1 to 1000 (default 100)."),
                    ("offset", "query", "integer", "Alerts to skip (default 0)."),
                ],
                response: "LegacyAlerts",
                errors: &[400],
                ..doc(
                    "get",
                    "/alerts",
                    Viewer,
                    "Legacy read API: alerts newest first, flat legacy fields",
                    "legacy",
                )
            },
            get(legacy_list),
        ),
        (
            RouteDoc {
                params: &[ID],
                response: "LegacyAlert",
                errors: &[404],
                ..doc(
                    "get",
                    "/alerts/{id}",
                    Viewer,
                    "Legacy read API: one alert; unknown or malformed id is 404",
                    "legacy",
                )
            },
            get(legacy_get),
        ),
    ]
}
