//! The tailing sources: the auth log, dpkg's log and the Kubernetes audit log, read as they
//! grow, through log rotation, and from where they left off after a restart.
//!
//! * **Rotation by rename** (logrotate's default, rsyslog's): the path gets a new file (a new
//!   inode). The old file is still open here; it is read to its end before the new one is
//!   read from its start, so nothing written just before the rotation is lost.
//! * **copytruncate**: the same inode shrinks below the read position; reading restarts at
//!   its start. Lines written between logrotate's copy and its truncate are lost to every
//!   reader of the file; that is copytruncate's nature (prefer rename rotation).
//! * **Position across restarts**: `tail-<source>.pos` in the spool directory holds the inode
//!   and offset. It moves only after the batcher confirms (a [`Collected::Mark`]) that every
//!   event of the lines before it is in the spool, so a crash repeats lines, never skips
//!   them. After a restart the file at the path is matched by inode; when it was rotated
//!   while the agent was down, the rotated file (`PATH.1`) is finished first.
//! * **First start** (no saved position): `start_at = "end"` (the default) skips the history
//!   already in the file — a new agent reports from now on, it does not raise alerts for last
//!   week — and `"beginning"` reads it all.
//!
//! Growth, rotation and truncation are noticed by polling (every 250 ms): a copytruncate
//! after which the file grew past the old read position within one poll is not noticed.
//!
//! Lines longer than [`MAX_LINE`] are cut off, counted as unparsed and skipped. Bytes that
//! are not UTF-8 are replaced. A line the parser does not understand is counted
//! (`auditflow_agent_unparsed_lines_total{source}`), never fatal.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wire::Event;

use crate::parse::{Format, LineKind, auth::AuthParser, dpkg, k8s_audit};
use crate::pipeline::Collected;
use crate::telemetry::Metrics;

/// Longest line kept (longer ones are skipped and counted).
pub const MAX_LINE: usize = 64 * 1024;
/// Bytes read per step before the source hands over what it has.
const READ_CHUNK: usize = 256 * 1024;
/// How often the file is checked for growth and rotation.
const POLL: Duration = Duration::from_millis(250);

/// Settings of one tailing source.
#[derive(Clone, Debug)]
pub struct TailSettings {
    /// The source's name in metrics and in the position file (`auth`, `dpkg`, `k8s-audit`).
    pub name: &'static str,
    /// The log file.
    pub path: PathBuf,
    /// How its lines are read.
    pub format: Format,
    /// Where the position is kept.
    pub state_path: PathBuf,
    /// On first start, read the history already in the file.
    pub from_beginning: bool,
    /// When the source reports itself blind.
    pub blind: crate::blind::BlindConfig,
}

/// The saved position: which file (inode) and how far into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Inode of the file.
    pub ino: u64,
    /// Byte offset of the next unread line.
    pub offset: u64,
}

impl Position {
    /// Reads a position file; `None` when it is missing or unreadable (then the source starts
    /// as on first start and says so).
    pub fn load(path: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut parts = text.split_whitespace().map(str::parse::<u64>);
        match (parts.next(), parts.next()) {
            (Some(Ok(ino)), Some(Ok(offset))) => Some(Self { ino, offset }),
            _ => None,
        }
    }

    /// Writes it atomically (temporary file and rename).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("pos.tmp");
        std::fs::write(&tmp, format!("{} {}\n", self.ino, self.offset))?;
        std::fs::rename(&tmp, path)
    }
}

/// An open file being read: its inode, the offset of the next unread byte and the bytes of
/// an unfinished last line.
#[derive(Debug)]
struct Open {
    file: File,
    ino: u64,
    /// Offset just past the last complete line handed out.
    offset: u64,
    /// Offset of the next byte to read.
    read_pos: u64,
    partial: Vec<u8>,
    /// Skipping the rest of an overlong line.
    skipping: bool,
    buf: Vec<u8>,
}

impl Open {
    fn at(path: &Path, offset: u64) -> std::io::Result<Self> {
        let mut file = File::open(path)?;
        let ino = file.metadata()?.ino();
        file.seek(SeekFrom::Start(offset))?;
        Ok(Self {
            file,
            ino,
            offset,
            read_pos: offset,
            partial: Vec::new(),
            skipping: false,
            buf: vec![0; READ_CHUNK],
        })
    }

    /// Reads up to [`READ_CHUNK`] bytes; complete lines go to `lines`. Returns whether it
    /// reached the end of the file.
    fn read(&mut self, lines: &mut Vec<String>, overlong: &mut u64) -> std::io::Result<bool> {
        let n = self.file.read(&mut self.buf)?;
        let base = self.read_pos;
        self.read_pos += n as u64;
        let mut start = 0;
        for i in 0..n {
            if self.buf[i] != b'\n' {
                continue;
            }
            if self.skipping {
                self.skipping = false;
            } else if self.partial.len() + (i - start) > MAX_LINE {
                *overlong += 1;
                self.partial.clear();
            } else {
                self.partial.extend_from_slice(&self.buf[start..i]);
                let line = std::mem::take(&mut self.partial);
                lines.push(String::from_utf8_lossy(&line).into_owned());
            }
            self.offset = base + i as u64 + 1;
            start = i + 1;
        }
        if !self.skipping {
            self.partial.extend_from_slice(&self.buf[start..n]);
            if self.partial.len() > MAX_LINE {
                // Too long to keep: skip to its end and count it.
                *overlong += 1;
                self.partial.clear();
                self.skipping = true;
            }
        }
        Ok(n < READ_CHUNK)
    }
}

/// Reads one log file as it grows and rotates. The I/O core of the source, without threads
/// or channels, so that tests can drive it step by step.
#[derive(Debug)]
pub struct Tailer {
    path: PathBuf,
    current: Option<Open>,
    /// A rotated file still to be finished before `current`.
    draining: Option<Open>,
    from_beginning: bool,
    /// Lines longer than [`MAX_LINE`] skipped.
    pub overlong: u64,
}

impl Tailer {
    /// A tailer starting from `saved` (or, without one, at the end or the beginning).
    pub fn new(path: &Path, saved: Option<Position>, from_beginning: bool) -> Self {
        let mut t = Self {
            path: path.to_owned(),
            current: None,
            draining: None,
            from_beginning,
            overlong: 0,
        };
        let Some(pos) = saved else {
            // A file that appears only after the start is new: read it whole.
            if !path.exists() {
                t.from_beginning = true;
            }
            return t;
        };
        let here = std::fs::metadata(path).ok();
        match here {
            Some(m) if m.ino() == pos.ino => {
                // The same file; shorter than the position means it was truncated meanwhile.
                let offset = if m.len() >= pos.offset { pos.offset } else { 0 };
                t.current = Open::at(path, offset).ok();
            }
            _ => {
                // Rotated while we were away: finish the rotated file when it is still there.
                let rotated = rotated_name(path);
                if std::fs::metadata(&rotated).is_ok_and(|m| m.ino() == pos.ino) {
                    t.draining = Open::at(&rotated, pos.offset).ok();
                }
                // The new file is read from its start.
                t.from_beginning = true;
            }
        }
        t
    }

    /// The position to save once everything read so far is spooled: in the file being
    /// drained while there is one (a restart then finishes it first).
    pub fn position(&self) -> Option<Position> {
        self.draining
            .as_ref()
            .or(self.current.as_ref())
            .map(|o| Position { ino: o.ino, offset: o.offset })
    }

    /// One step: complete lines read since the last step, and whether the files are read to
    /// their end (when `false`, call again at once).
    pub fn step(&mut self, lines: &mut Vec<String>) -> std::io::Result<bool> {
        if let Some(old) = &mut self.draining {
            if !old.read(lines, &mut self.overlong)? {
                return Ok(false);
            }
            self.draining = None;
        }
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            // Not there (yet, or between rename and create): nothing to read.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(e),
        };
        match &mut self.current {
            None => {
                let offset = if self.from_beginning { 0 } else { meta.len() };
                self.current = Some(Open::at(&self.path, offset)?);
                self.from_beginning = true; // every later file is new: read it whole
            }
            Some(cur) if cur.ino != meta.ino() => {
                // Renamed away and replaced: finish the old file, then the new one from 0.
                let old = self.current.take();
                self.draining = old;
                self.current = Some(Open::at(&self.path, 0)?);
                return Ok(false);
            }
            Some(cur) if meta.len() < cur.read_pos => {
                // copytruncate: start over at the beginning of the same file.
                *cur = Open::at(&self.path, 0)?;
            }
            Some(_) => {}
        }
        match &mut self.current {
            Some(cur) => cur.read(lines, &mut self.overlong),
            None => Ok(true),
        }
    }
}

/// Where logrotate puts the previous file: `PATH.1`.
fn rotated_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Parses lines of one format, keeping the auth parser's state across steps.
#[derive(Debug)]
struct Parser {
    format: Format,
    auth: AuthParser,
}

impl Parser {
    fn push(&mut self, line: &str, out: &mut Vec<Event>) -> LineKind {
        match self.format {
            Format::Auth => self.auth.push_line(line, out),
            Format::Dpkg => dpkg::push_line(line, out),
            Format::K8sAudit => k8s_audit::push_line(line, out),
        }
    }

    /// Settles everything pending (PAM-only failures of the auth log).
    fn settle(&mut self, out: &mut Vec<Event>) {
        if self.format == Format::Auth {
            self.auth.finish(out);
        }
    }
}

/// Runs the source on its own thread until `cancel` fires or the pipeline closes.
pub fn spawn(
    settings: TailSettings,
    out: mpsc::Sender<Collected>,
    metrics: Metrics,
    cancel: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("tail-{}", settings.name)).spawn(move || {
        run(&settings, &out, &metrics, &cancel);
    })
}

fn run(
    s: &TailSettings,
    out: &mpsc::Sender<Collected>,
    metrics: &Metrics,
    cancel: &CancellationToken,
) {
    let saved = Position::load(&s.state_path);
    tracing::info!(source = s.name, path = %s.path.display(), saved = ?saved, "tailing");
    let mut tailer = Tailer::new(&s.path, saved, s.from_beginning);
    let mut parser =
        Parser { format: s.format, auth: AuthParser::new(time::OffsetDateTime::now_utc().year()) };
    let collected = metrics.collected.with_label_values(&[s.name]);
    let unparsed = metrics.unparsed.with_label_values(&[s.name]);
    let mut lines = Vec::new();
    let mut events = Vec::new();
    // Marks sent, oldest first, with the position each one makes safe to save.
    let mut pending: VecDeque<(oneshot::Receiver<bool>, Position)> = VecDeque::new();
    let mut saved_at = saved;
    let mut last_error = Instant::now() - Duration::from_secs(60);
    let mut overlong_seen = 0;
    let mut watch = crate::blind::Watch::new(s.name, s.blind.clone());
    while !cancel.is_cancelled() {
        let at_end = match tailer.step(&mut lines) {
            Ok(e) => e,
            Err(e) => {
                if last_error.elapsed() > Duration::from_secs(60) {
                    tracing::warn!(source = s.name, path = %s.path.display(), error = %e, "cannot read the log");
                    last_error = Instant::now();
                }
                true
            }
        };
        let read = lines.len() as u64 + (tailer.overlong - overlong_seen);
        for line in lines.drain(..) {
            let line = line.trim_end_matches('\r');
            if parser.push(line, &mut events) == LineKind::Unparsed {
                unparsed.inc();
                watch.unparsed(Some(line));
            }
        }
        for _ in overlong_seen..tailer.overlong {
            watch.unparsed(None);
        }
        unparsed.inc_by(tailer.overlong - overlong_seen);
        overlong_seen = tailer.overlong;
        if at_end {
            parser.settle(&mut events);
        }
        collected.inc_by(events.len() as u64);
        watch.read(read, events.len() as u64);
        if let Some(end) = watch.check(Instant::now()) {
            if let Some(blind) = end.blind {
                tracing::warn!(
                    source = s.name,
                    "the source understands too few of its lines; reporting it"
                );
                events.push(blind);
            }
            events.push(end.stats);
        }
        for e in events.drain(..) {
            if out.blocking_send(Collected::Event(e)).is_err() {
                return;
            }
        }
        if at_end
            && let Some(pos) = tailer.position()
            && saved_at != Some(pos)
        {
            let (tx, rx) = oneshot::channel();
            if out.blocking_send(Collected::Mark(tx)).is_err() {
                return;
            }
            pending.push_back((rx, pos));
        }
        // Save the newest position whose events are all spooled.
        let mut newest = None;
        while let Some((rx, pos)) = pending.front_mut() {
            match rx.try_recv() {
                Ok(true) => newest = Some(*pos),
                Ok(false) | Err(oneshot::error::TryRecvError::Closed) => {}
                Err(oneshot::error::TryRecvError::Empty) => break,
            }
            pending.pop_front();
        }
        if let Some(pos) = newest {
            match pos.save(&s.state_path) {
                Ok(()) => saved_at = Some(pos),
                Err(e) => tracing::warn!(source = s.name, error = %e, "cannot save the position"),
            }
        }
        if at_end {
            std::thread::sleep(POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Steps until the files are read to their end.
    fn drain(t: &mut Tailer) -> Vec<String> {
        let mut lines = Vec::new();
        while !t.step(&mut lines).unwrap() {}
        lines
    }

    #[test]
    fn starts_at_the_end_or_the_beginning_and_follows_growth() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("auth.log");
        append(&log, "old 1\nold 2\n");
        let mut from_end = Tailer::new(&log, None, false);
        let mut from_start = Tailer::new(&log, None, true);
        assert!(drain(&mut from_end).is_empty());
        assert_eq!(drain(&mut from_start), ["old 1", "old 2"]);
        append(&log, "new 1\nnew 2 unfinished");
        assert_eq!(drain(&mut from_end), ["new 1"]);
        append(&log, " now finished\n");
        assert_eq!(drain(&mut from_end), ["new 2 unfinished now finished"]);
    }

    #[test]
    fn rename_rotation_loses_and_repeats_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("auth.log");
        append(&log, "a\n");
        let mut t = Tailer::new(&log, None, true);
        assert_eq!(drain(&mut t), ["a"]);
        // Written just before the rotation, then renamed away, then a new file.
        append(&log, "b\n");
        std::fs::rename(&log, rotated_name(&log)).unwrap();
        append(&rotated_name(&log), "c (late write to the old file)\n");
        append(&log, "d\n");
        assert_eq!(drain(&mut t), ["b", "c (late write to the old file)", "d"]);
        append(&log, "e\n");
        assert_eq!(drain(&mut t), ["e"]);
    }

    #[test]
    fn copytruncate_starts_the_file_over() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dpkg.log");
        append(&log, "one\ntwo\n");
        let mut t = Tailer::new(&log, None, true);
        assert_eq!(drain(&mut t), ["one", "two"]);
        std::fs::copy(&log, rotated_name(&log)).unwrap();
        std::fs::OpenOptions::new().write(true).truncate(true).open(&log).unwrap();
        append(&log, "three\n");
        assert_eq!(drain(&mut t), ["three"]);
    }

    #[test]
    fn a_saved_position_resumes_in_the_same_file_or_finishes_the_rotated_one() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("auth.log");
        let state = dir.path().join("tail-auth.pos");
        append(&log, "1\n2\n");
        let mut t = Tailer::new(&log, None, true);
        assert_eq!(drain(&mut t), ["1", "2"]);
        t.position().unwrap().save(&state).unwrap();
        append(&log, "3\n");

        // Restart: the same file, from the saved position.
        let mut again = Tailer::new(&log, Position::load(&state), false);
        assert_eq!(drain(&mut again), ["3"]);

        // Rotated while the agent was down: the rest of the old file, then the new one.
        std::fs::rename(&log, rotated_name(&log)).unwrap();
        append(&log, "4\n");
        let mut after = Tailer::new(&log, Position::load(&state), false);
        assert_eq!(drain(&mut after), ["3", "4"]);
    }

    #[test]
    fn overlong_lines_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("k8s.log");
        append(&log, &format!("short\n{}\nafter\n", "x".repeat(MAX_LINE * 3)));
        append(&log, &format!("{}\nlast\n", "y".repeat(READ_CHUNK + 10)));
        let mut t = Tailer::new(&log, None, true);
        let lines = drain(&mut t);
        let short: Vec<&str> = lines.iter().map(|l| &l[..l.len().min(10)]).collect();
        assert_eq!(short, ["short", "after", "last"]);
        assert_eq!(t.overlong, 2);
    }

    #[test]
    fn a_missing_file_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("later.log");
        let mut t = Tailer::new(&log, None, false);
        assert!(drain(&mut t).is_empty());
        append(&log, "first\n");
        // A file that appears after the start is new: read from its beginning.
        assert_eq!(drain(&mut t), ["first"]);
        assert!(Position::load(&dir.path().join("nothing.pos")).is_none());
    }
}
