//! Hot reload of the rule directory. The directory is polled (every 2 s by default) and its
//! `*.toml` files read through any symlinks: a Kubernetes ConfigMap update swaps the `..data`
//! symlink atomically, which inotify reports only on the symlink, not on the files; a poll
//! that reads the files sees every way a directory can change, at the cost of reading a few
//! small files every couple of seconds. A changed set is validated as a whole and swapped
//! atomically; an invalid set keeps the last good one, is logged, counted and kept for the API.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::detect::Detector;
use crate::pipeline::Rules;
use crate::rules::{RuleSet, read_dir};
use crate::telemetry::Metrics;

/// The rule set's status, for the API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleStatus {
    /// Version (digest) of the active set.
    pub version: String,
    /// Why the newest version on disk was refused, if it was.
    pub last_error: Option<String>,
}

/// Watches a rule directory.
#[derive(Debug)]
pub struct Reloader {
    /// The directory.
    pub dir: PathBuf,
    /// How often to look.
    pub interval: Duration,
    /// Allowed lateness for the detectors it builds.
    pub lateness: Duration,
    /// Where the active rules live.
    pub rules: Arc<Rules>,
    /// Status for the API.
    pub status: Arc<Mutex<RuleStatus>>,
    /// Counters.
    pub metrics: Metrics,
    /// Digest of the files last read (valid or not), to notice changes.
    pub last: Mutex<Option<u32>>,
}

/// A digest of a rule directory's files, to notice changes.
pub fn digest(files: &[(String, String)]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for (n, t) in files {
        h.update(n.as_bytes());
        h.update(&[0]);
        h.update(t.as_bytes());
        h.update(&[0]);
    }
    h.finalize()
}

impl Reloader {
    /// Looks once; returns whether the active set changed.
    pub fn check(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        self.check_locked(&mut last)
    }

    fn check_locked(&self, last: &mut Option<u32>) -> bool {
        let files = match read_dir(&self.dir) {
            Ok(f) => f,
            Err(e) => {
                self.refuse(last, None, &e.to_string());
                return false;
            }
        };
        let d = digest(&files);
        if *last == Some(d) {
            return false;
        }
        match RuleSet::parse(&files) {
            Ok(set) => {
                *last = Some(d);
                let version = set.version.clone();
                self.metrics.rules_loaded.set(set.rules.len() as i64);
                self.rules.swap(Detector::new(Arc::new(set), self.lateness));
                self.metrics.rule_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(version = %version, dir = %self.dir.display(), "rules reloaded");
                *self.status.lock().unwrap_or_else(|p| p.into_inner()) =
                    RuleStatus { version, last_error: None };
                true
            }
            Err(e) => {
                self.refuse(last, Some(d), &e.to_string());
                false
            }
        }
    }

    fn refuse(&self, last: &mut Option<u32>, d: Option<u32>, error: &str) {
        if d.is_some() {
            *last = d;
        }
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        // Each problem is reported once, not every poll.
        if status.last_error.as_deref() == Some(error) {
            return;
        }
        status.last_error = Some(error.to_owned());
        drop(status);
        self.metrics.rule_reloads.with_label_values(&["invalid"]).inc();
        tracing::error!(dir = %self.dir.display(), error, "rule set refused; keeping the last good one");
    }

    /// Polls until cancelled.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
            }
            let me = self.clone();
            // Reading files blocks; keep it off the async workers.
            let _ = tokio::task::spawn_blocking(move || me.check()).await;
        }
    }
}
