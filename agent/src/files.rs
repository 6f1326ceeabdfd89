//! The watched-files source: a `FileChange` event, with the SHA-256 of the content before and
//! after, whenever a watched file is created, modified, deleted or changes mode or owner.
//!
//! * **What is watched**: each configured path is a file, or a directory whose regular files
//!   (not its subdirectories) are watched. Symbolic links are followed.
//! * **inotify** (through the notify crate) watches the *parent directory* of each file and
//!   each watched directory: editors and tools like `vipw` replace a file by renaming a new
//!   one over it, which a watch on the file itself would lose. A change is checked once its
//!   burst of notifications has been quiet for [`SETTLE`].
//! * **The sweep** hashes every watched file every `sweep_interval_s` and reports what inotify
//!   missed: an overflowed inotify queue (which also triggers a sweep at once), a change on a
//!   mount inotify does not see, a directory created after the start.
//! * **The state** (hash, size, mode, owner per file) is kept in the spool directory
//!   (`files.state`) and, like a tailing source's position, saved only once the events that
//!   led to it are in the spool ([`Collected::Mark`]): a change made while the agent was
//!   stopped is reported at its next start, and a crash repeats a report, never loses one.
//!   The very first start (no state file) records the baseline and reports nothing.
//! * Files larger than [`MAX_HASH_BYTES`], and files the agent may not read, are compared by
//!   size, modification time, mode and owner only (their events carry no hashes); each such
//!   file is logged once.
//!
//! Which process made a change is not known to inotify; the auth log's sudo lines usually
//! tell.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use notify::Watcher as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wire::{Digest, Event, EventKind, FileOp, Severity, Source, Timestamp, Value};

use crate::pipeline::Collected;
use crate::telemetry::Metrics;

/// Files larger than this are not hashed.
pub const MAX_HASH_BYTES: u64 = 64 << 20;
/// A burst of inotify notifications is checked once it has been quiet this long.
pub const SETTLE: Duration = Duration::from_millis(200);

/// What is known of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileState {
    /// SHA-256 of the content; `None` when it could not be read or is too large.
    pub hash: Option<Digest>,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Permission bits and file type.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// The watched files and what is known of each: the source's core, without threads or
/// inotify, so that tests can drive it step by step.
#[derive(Debug)]
pub struct FileSet {
    roots: Vec<PathBuf>,
    /// Prefix taken off the paths in events (the host's root, in a container).
    host_root: PathBuf,
    known: BTreeMap<PathBuf, FileState>,
    /// Files already reported as unreadable (logged once each).
    unreadable: BTreeSet<PathBuf>,
}

impl FileSet {
    /// A set over `roots` (files or directories, as the host names them) read under
    /// `host_root` (`/` on the host itself), knowing `known` (by the paths it reads).
    pub fn new(roots: &[PathBuf], host_root: &Path, known: BTreeMap<PathBuf, FileState>) -> Self {
        let roots =
            roots.iter().map(|r| host_root.join(r.strip_prefix("/").unwrap_or(r))).collect();
        Self { roots, host_root: host_root.to_owned(), known, unreadable: BTreeSet::new() }
    }

    /// The path as the host names it.
    fn on_host(&self, path: &Path) -> String {
        match path.strip_prefix(&self.host_root) {
            Ok(rest) => Path::new("/").join(rest).to_string_lossy().into_owned(),
            Err(_) => path.to_string_lossy().into_owned(),
        }
    }

    /// What is known now (what a state file would hold).
    pub fn known(&self) -> &BTreeMap<PathBuf, FileState> {
        &self.known
    }

    /// The directories inotify should watch: each root directory and each root file's parent.
    pub fn watch_dirs(&self) -> BTreeSet<PathBuf> {
        self.roots
            .iter()
            .filter_map(
                |r| if r.is_dir() { Some(r.clone()) } else { r.parent().map(Path::to_owned) },
            )
            .collect()
    }

    /// Whether `path` is one of the watched files (existing or not).
    pub fn covers(&self, path: &Path) -> bool {
        self.roots.iter().any(|r| r == path)
            || path.parent().is_some_and(|p| self.roots.iter().any(|r| r == p && r.is_dir()))
    }

    /// The regular files the roots name now.
    fn present(&self) -> BTreeSet<PathBuf> {
        let mut files = BTreeSet::new();
        for root in &self.roots {
            match std::fs::metadata(root) {
                Ok(m) if m.is_dir() => {
                    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
                        let path = entry.path();
                        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                            files.insert(path);
                        }
                    }
                }
                Ok(m) if m.is_file() => {
                    files.insert(root.clone());
                }
                _ => {}
            }
        }
        files
    }

    /// Checks `paths` (or, with `None`, every file known or present: a sweep), appends an
    /// event per change to `out` and remembers the new states. `detected_by` goes into each
    /// event's attributes (`inotify`, `sweep`, `start`).
    pub fn check(
        &mut self,
        paths: Option<&BTreeSet<PathBuf>>,
        detected_by: &str,
        out: &mut Vec<Event>,
    ) {
        let targets: BTreeSet<PathBuf> = match paths {
            Some(p) => p.iter().filter(|p| self.covers(p)).cloned().collect(),
            None => self.present().into_iter().chain(self.known.keys().cloned()).collect(),
        };
        for path in targets {
            let now = self.read_state(&path);
            let before = match now {
                Some(state) => self.known.insert(path.clone(), state),
                None => self.known.remove(&path),
            };
            if let Some(event) = change(&self.on_host(&path), before, now, detected_by) {
                out.push(event);
            }
        }
    }

    /// The file's state now; `None` when it is not there (or not a regular file).
    fn read_state(&mut self, path: &Path) -> Option<FileState> {
        let meta = std::fs::metadata(path).ok().filter(std::fs::Metadata::is_file)?;
        let hash = if meta.len() > MAX_HASH_BYTES {
            self.note_unreadable(path, "larger than the hashing limit");
            None
        } else {
            match hash_file(path) {
                Ok(h) => Some(h),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                Err(e) => {
                    self.note_unreadable(path, &e.to_string());
                    None
                }
            }
        };
        Some(FileState {
            hash,
            size: meta.len(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec()),
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
        })
    }

    fn note_unreadable(&mut self, path: &Path, why: &str) {
        if self.unreadable.insert(path.to_owned()) {
            tracing::warn!(path = %path.display(), reason = why, "watched file not hashed; compared by size, time, mode and owner");
        }
    }
}

/// SHA-256 of a file's content.
fn hash_file(path: &Path) -> std::io::Result<Digest> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Digest(hasher.finalize().into()))
}

/// The event for a file going from `before` to `now`, if that is a change.
fn change(
    path: &str,
    before: Option<FileState>,
    now: Option<FileState>,
    detected_by: &str,
) -> Option<Event> {
    let size = |s: &FileState| i64::try_from(s.size).unwrap_or(i64::MAX);
    let mut attrs = vec![("detected_by".to_owned(), Value::Str(detected_by.to_owned()))];
    let (op, old_hash, new_hash, size_delta) = match (before, now) {
        (None, None) => return None,
        (None, Some(n)) => (FileOp::Created, None, n.hash, Some(size(&n))),
        (Some(o), None) => (FileOp::Deleted, o.hash, None, Some(-size(&o))),
        (Some(o), Some(n)) => {
            // Without hashes on both sides, the modification time stands in for the content.
            let content_changed = o.hash != n.hash
                || o.size != n.size
                || ((o.hash.is_none() || n.hash.is_none()) && o.mtime_ns != n.mtime_ns);
            if content_changed {
                (FileOp::Modified, o.hash, n.hash, Some(size(&n) - size(&o)))
            } else if (o.mode, o.uid, o.gid) != (n.mode, n.uid, n.gid) {
                for (name, old, new) in [
                    ("mode", format!("{:o}", o.mode & 0o7777), format!("{:o}", n.mode & 0o7777)),
                    ("uid", o.uid.to_string(), n.uid.to_string()),
                    ("gid", o.gid.to_string(), n.gid.to_string()),
                ] {
                    if old != new {
                        attrs.push((format!("old_{name}"), Value::Str(old)));
                        attrs.push((format!("new_{name}"), Value::Str(new)));
                    }
                }
                (FileOp::Attrib, o.hash, n.hash, Some(0))
            } else {
                return None;
            }
        }
    };
    let kind = EventKind::FileChange { path: path.to_owned(), op, old_hash, new_hash, size_delta };
    let mut event = Event::new(Timestamp::now(), Source::FileWatch, Severity::Warning, kind);
    event.attrs = attrs;
    Some(event)
}

/// Reads a state file: one file per line, `HASH SIZE MTIME_NS MODE UID GID PATH` (`-` for no
/// hash; the path last, so it may hold spaces). `None` when there is no state file (first
/// start). Lines it cannot read are skipped: those files are then reported as created.
pub fn load_state(path: &Path) -> Option<BTreeMap<PathBuf, FileState>> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut known = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(7, ' ');
        let mut next = || parts.next();
        let parsed = (|| {
            let hash = match next()? {
                "-" => None,
                hex => Some(Digest::from_hex(hex)?),
            };
            let state = FileState {
                hash,
                size: next()?.parse().ok()?,
                mtime_ns: next()?.parse().ok()?,
                mode: next()?.parse().ok()?,
                uid: next()?.parse().ok()?,
                gid: next()?.parse().ok()?,
            };
            Some((PathBuf::from(next()?), state))
        })();
        if let Some((p, state)) = parsed {
            known.insert(p, state);
        }
    }
    Some(known)
}

/// Writes a state file atomically (temporary file and rename). Paths with a line break
/// cannot be written and are left out (they are reported as created after a restart).
pub fn save_state(path: &Path, known: &BTreeMap<PathBuf, FileState>) -> std::io::Result<()> {
    let mut text = String::new();
    for (p, s) in known {
        let p = p.to_string_lossy();
        if p.contains('\n') {
            continue;
        }
        let hash = s.hash.map_or_else(|| "-".to_owned(), |h| h.to_hex());
        text.push_str(&format!(
            "{hash} {} {} {} {} {} {p}\n",
            s.size, s.mtime_ns, s.mode, s.uid, s.gid
        ));
    }
    let tmp = path.with_extension("state.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Settings of the source.
#[derive(Clone, Debug)]
pub struct WatchSettings {
    /// Files and directories watched, as the host names them.
    pub paths: Vec<PathBuf>,
    /// Where the host's root is mounted (`/` on the host).
    pub host_root: PathBuf,
    /// Time between sweeps.
    pub sweep: Duration,
    /// Where the state is kept.
    pub state_path: PathBuf,
}

/// Runs the source on its own thread until `cancel` fires or the pipeline closes.
pub fn spawn(
    settings: WatchSettings,
    out: mpsc::Sender<Collected>,
    metrics: Metrics,
    cancel: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("watch-files".to_owned()).spawn(move || {
        run(&settings, &out, &metrics, &cancel);
    })
}

fn run(
    s: &WatchSettings,
    out: &mpsc::Sender<Collected>,
    metrics: &Metrics,
    cancel: &CancellationToken,
) {
    let saved = load_state(&s.state_path);
    let first_start = saved.is_none();
    let mut set = FileSet::new(&s.paths, &s.host_root, saved.unwrap_or_default());
    let collected = metrics.collected.with_label_values(&[Source::FileWatch.as_str()]);
    let mut events = Vec::new();
    set.check(None, "start", &mut events);
    if first_start {
        // The baseline: nothing to report, and nothing waits on the spool to save it.
        events.clear();
        if let Err(e) = save_state(&s.state_path, set.known()) {
            tracing::warn!(error = %e, "cannot save the watched files' state");
        }
    }
    tracing::info!(files = set.known().len(), first_start, "watching files");

    let (tx, rx) = std_mpsc::channel();
    // Without inotify (no watcher, or a directory that cannot be watched) the sweep still
    // reports every change, later.
    let _watcher = match notify::recommended_watcher(tx) {
        Ok(mut w) => {
            for dir in set.watch_dirs() {
                if let Err(e) = w.watch(&dir, notify::RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch; the sweep covers it");
                }
            }
            Some(w)
        }
        Err(e) => {
            tracing::warn!(error = %e, "inotify unavailable; only sweeps detect changes");
            None
        }
    };

    let mut dirty = BTreeSet::new();
    let mut dirty_since: Option<Instant> = None;
    let mut next_sweep = Instant::now() + s.sweep;
    while !cancel.is_cancelled() {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(event)) => {
                if event.need_rescan() {
                    next_sweep = Instant::now();
                }
                for path in event.paths {
                    if set.covers(&path) {
                        dirty.insert(path);
                        dirty_since.get_or_insert_with(Instant::now);
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "inotify error; sweeping");
                next_sweep = Instant::now();
            }
            Err(_) => {}
        }
        if dirty_since.is_some_and(|t| t.elapsed() >= SETTLE) {
            set.check(Some(&dirty), "inotify", &mut events);
            dirty.clear();
            dirty_since = None;
        }
        if Instant::now() >= next_sweep {
            set.check(None, "sweep", &mut events);
            next_sweep = Instant::now() + s.sweep;
        }
        if !events.is_empty() {
            collected.inc_by(events.len() as u64);
            for e in events.drain(..) {
                if out.blocking_send(Collected::Event(e)).is_err() {
                    return;
                }
            }
            let (done, spooled) = oneshot::channel();
            if out.blocking_send(Collected::Mark(done)).is_err() {
                return;
            }
            // File changes are rare: wait for the batch to be spooled (at most the batch age)
            // and save the state at once, so that a crash right after repeats as little as
            // possible. Not spooled (spool full, write error): the state stays as it was and
            // the next sweep or start reports the change again.
            match spooled.blocking_recv() {
                Ok(true) => {
                    if let Err(e) = save_state(&s.state_path, set.known()) {
                        tracing::warn!(error = %e, "cannot save the watched files' state");
                    }
                }
                Ok(false) => {
                    if let Some(saved) = load_state(&s.state_path) {
                        set = FileSet::new(&s.paths, &s.host_root, saved);
                    }
                }
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(events: &[Event]) -> Vec<(String, FileOp)> {
        events
            .iter()
            .map(|e| match &e.kind {
                EventKind::FileChange { path, op, .. } => {
                    (Path::new(path).file_name().unwrap().to_string_lossy().into_owned(), *op)
                }
                other => panic!("not a file change: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn reports_creation_change_attributes_and_deletion_with_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        let sudoers_d = dir.path().join("sudoers.d");
        std::fs::create_dir(&sudoers_d).unwrap();
        std::fs::write(&passwd, "root:x:0:0\n").unwrap();
        std::fs::create_dir(sudoers_d.join("subdir")).unwrap();
        let mut set =
            FileSet::new(&[passwd.clone(), sudoers_d.clone()], Path::new("/"), BTreeMap::new());
        let mut out = Vec::new();
        set.check(None, "start", &mut out);
        assert_eq!(ops(&out), [("passwd".to_owned(), FileOp::Created)]);
        assert_eq!(set.watch_dirs(), BTreeSet::from([dir.path().to_owned(), sudoers_d.clone()]));
        out.clear();

        // Nothing changed: nothing reported.
        set.check(None, "sweep", &mut out);
        assert!(out.is_empty());

        // Replaced by rename, the way vipw and editors do it.
        let old_hash = set.known()[&passwd].hash.unwrap();
        let tmp = dir.path().join("passwd.tmp");
        std::fs::write(&tmp, "root:x:0:0\nmallory:x:0:0\n").unwrap();
        std::fs::rename(&tmp, &passwd).unwrap();
        let rule = sudoers_d.join("90-mallory");
        std::fs::write(&rule, "mallory ALL=(ALL) NOPASSWD: ALL\n").unwrap();
        set.check(
            Some(&BTreeSet::from([passwd.clone(), rule.clone(), tmp.clone()])),
            "inotify",
            &mut out,
        );
        assert_eq!(
            ops(&out),
            [("passwd".to_owned(), FileOp::Modified), ("90-mallory".to_owned(), FileOp::Created)]
        );
        match &out[0].kind {
            EventKind::FileChange { old_hash: Some(o), new_hash: Some(n), size_delta, .. } => {
                assert_eq!(*o, old_hash);
                assert_eq!(n.to_hex(), {
                    let mut h = Sha256::new();
                    h.update(b"root:x:0:0\nmallory:x:0:0\n");
                    Digest(h.finalize().into()).to_hex()
                });
                assert_eq!(*size_delta, Some(14));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out[0].attrs, [("detected_by".to_owned(), Value::Str("inotify".into()))]);
        out.clear();

        // Mode only.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&rule, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(&passwd).unwrap();
        set.check(None, "sweep", &mut out);
        assert_eq!(
            ops(&out),
            [("passwd".to_owned(), FileOp::Deleted), ("90-mallory".to_owned(), FileOp::Attrib)]
        );
        assert!(out[1].attrs.contains(&("new_mode".to_owned(), Value::Str("600".into()))));
        match &out[0].kind {
            EventKind::FileChange { old_hash, new_hash: None, size_delta, .. } => {
                assert!(old_hash.is_some());
                assert_eq!(*size_delta, Some(-25));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_state_file_round_trips_and_finds_changes_made_while_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let watched = dir.path().join("with space");
        std::fs::write(&watched, "one").unwrap();
        let mut set = FileSet::new(std::slice::from_ref(&watched), Path::new("/"), BTreeMap::new());
        set.check(None, "start", &mut Vec::new());
        let state = dir.path().join("files.state");
        save_state(&state, set.known()).unwrap();
        let loaded = load_state(&state).unwrap();
        assert_eq!(&loaded, set.known());
        assert!(load_state(&dir.path().join("missing")).is_none());

        // Changed while "stopped": the next start reports it.
        std::fs::write(&watched, "two!").unwrap();
        let mut set = FileSet::new(std::slice::from_ref(&watched), Path::new("/"), loaded);
        let mut out = Vec::new();
        set.check(None, "start", &mut out);
        assert_eq!(ops(&out), [("with space".to_owned(), FileOp::Modified)]);

        // A torn line is skipped, the rest is kept.
        std::fs::write(&state, format!("garbage\n{}", std::fs::read_to_string(&state).unwrap()))
            .unwrap();
        assert_eq!(load_state(&state).unwrap().len(), 1);
    }

    #[test]
    fn in_a_container_paths_are_read_under_the_host_root_and_reported_as_on_the_host() {
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(host.path().join("etc")).unwrap();
        std::fs::write(host.path().join("etc/shadow"), "root:*:1::::::\n").unwrap();
        let mut set = FileSet::new(&[PathBuf::from("/etc/shadow")], host.path(), BTreeMap::new());
        let mut out = Vec::new();
        set.check(None, "start", &mut out);
        match &out[..] {
            [e] => match &e.kind {
                EventKind::FileChange { path, op: FileOp::Created, .. } => {
                    assert_eq!(path, "/etc/shadow")
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        assert!(set.known().contains_key(&host.path().join("etc/shadow")));
    }

    #[test]
    fn only_watched_paths_count() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shadow");
        let set = FileSet::new(
            &[file.clone(), dir.path().join("missing-dir")],
            Path::new("/"),
            BTreeMap::new(),
        );
        assert!(set.covers(&file));
        assert!(!set.covers(&dir.path().join("shadow-")));
        // A root that is not a directory (here: missing) does not cover files under it.
        assert!(!set.covers(&dir.path().join("missing-dir").join("x")));
    }
}
