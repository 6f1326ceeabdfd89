//! Rules: the loaded set, a dry run of one event against it, a backtest over the event
//! archive, and a reload from the rule directory.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use serde::Deserialize;
use serde_json::Value;
use serde_json::json;
use wire::model::Timestamp;

use super::events::event_item;
use super::{ApiResult, json_body};
use crate::detect::Detector;
use crate::detect::Input;
use crate::http::ApiError;
use crate::http::ApiState;
use crate::pipeline::Item;
use crate::rules::Mode;
use crate::rules::RuleSet;
use crate::state::memory::MemoryState;
use crate::store::rfc3339;

pub(super) async fn list_rules(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
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
                // A shadow rule's firings are never stored: counted live by this process.
                "shadow": (r.mode == Mode::Shadow).then(|| s.rules.shadow.get(&r.id).unwrap_or_default()),
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
pub(super) struct TestBody {
    event: Value,
}

pub(super) async fn test_rules(
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

pub(super) async fn reload_rules(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
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

/// Events one backtest replays at most.
const BACKTEST_BUDGET: u64 = 20_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BacktestBody {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    rules: Option<std::collections::BTreeMap<String, String>>,
}

/// `POST /api/v1/rules/backtest`: candidate rule files (or the rules in force) replayed over
/// the archive, compared with the rules in force.
pub(super) async fn backtest(
    State(s): State<ApiState>,
    body: Result<Json<BacktestBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let b = json_body(body)?;
    let since = match b.since.as_deref() {
        None => Duration::from_secs(86_400),
        Some(text) => crate::rules::parse_duration(text)
            .filter(|d| *d <= Duration::from_secs(31 * 86_400) && !d.is_zero())
            .ok_or_else(|| {
                ApiError::BadRequest(format!("`since`: `{text}` is not a duration from 1s to 31d"))
            })?,
    };
    let detector = s.rules.get();
    let candidate = match b.rules {
        None => None,
        Some(files) if files.is_empty() => {
            return Err(ApiError::BadRequest(
                "`rules`: give at least one file, or leave it out".into(),
            ));
        }
        Some(files) => {
            let files: Vec<(String, String)> = files.into_iter().collect();
            Some(
                RuleSet::parse(&files)
                    .map_err(|e| ApiError::BadRequest(format!("`rules`: {e}")))?,
            )
        }
    };
    let lateness = Duration::from_micros(u64::try_from(detector.lateness_us).unwrap_or(0));
    let to = crate::store::now_ms();
    let from = to.saturating_sub(i64::try_from(since.as_millis()).unwrap_or(i64::MAX));
    let in_force: &RuleSet = &detector.rules;
    let report = crate::backtest::run(
        &s.store,
        candidate.as_ref().unwrap_or(in_force),
        in_force,
        lateness,
        from,
        to,
        BACKTEST_BUDGET,
    )
    .await?;
    s.metrics.archive_unreadable.inc_by(report.rows_unreadable);
    Ok(Json(serde_json::to_value(report).map_err(anyhow::Error::from)?))
}
