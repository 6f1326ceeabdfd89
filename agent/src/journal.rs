//! The journal source: auth and kernel messages straight from the systemd journal, for nodes
//! that keep no `/var/log/auth.log` (Debian 12 and later and Raspberry Pi OS without rsyslog,
//! where installing rsyslog only to read its copy doubles the log writes on an SD card).
//!
//! Two readers, one choice per node ([`Reader`], `[sources.journal] reader`):
//!
//! * **journalctl** runs `journalctl --output=export --follow` as a child process and reads its
//!   entries ([`crate::parse::export`]). journalctl is on every systemd host, reads every
//!   journal file version and compression systemd ever wrote (xz included), merges the system
//!   and user journals, follows rotation and vacuuming, and validates what it reads. The cost
//!   is one process and a pipe. Hosts (Ansible role, Pi image) use it.
//! * **files** reads the journal files under `/run/log/journal` and `/var/log/journal` (or
//!   `directory`) itself, with the `sdjournal` crate (pure Rust, bounded parsing of damaged
//!   files, inotify to follow). For the DaemonSet: the agent's image is a static binary FROM
//!   scratch, with no journalctl and no libsystemd to run one; the pod mounts the host's journal
//!   directories read-only. It reads lz4- and zstd-compressed fields (journald's since systemd
//!   229); an entry it cannot read is counted (`use="unreadable"`), never silently skipped.
//! * `auto` (the default) takes journalctl when the binary is there, the files otherwise.
//!
//! * Entries whose `SYSLOG_IDENTIFIER` (else `_COMM`) is one the auth parser reads go to it
//!   with their own timestamp and pid, exactly as the auth log's lines do: the same events,
//!   the same attempt counting, but only when journald recorded the sender as root (`_UID=0`,
//!   a field no program can set for itself): sshd, sudo, su, logind and the account tools all
//!   log as root, while any local user can send `logger -t sshd 'Accepted password for …'`.
//!   Such entries are counted (`use="untrusted"`) and dropped, so that a user on one node
//!   cannot forge logins (or bury real ones). `_TRANSPORT=kernel` entries (only the kernel
//!   writes those) go to the kernel parser ([`crate::parse::kernel`]). Everything else in the
//!   journal is not ours and is skipped (`use="skipped"`).
//! * **Cursor across restarts**: `journal.cursor` in the spool directory holds the cursor of
//!   the last entry whose events are all in the spool (the same [`Collected::Mark`] handshake
//!   as the tail source's file position), and the next start resumes after it. A crash repeats
//!   entries, never skips them. The files reader resumes after journalctl's cursors too; the
//!   other way round, and for a cursor the journal no longer holds (vacuumed past it), the
//!   refusal is reported and the source starts anew from `start_at`.
//! * **First start**: `start_at = "end"` (the default) reads from now on, `"beginning"` the
//!   whole journal.
//! * journalctl exiting, or the files reader failing (it should not), is logged and the
//!   reader is started again after a pause, from the last entry read.

use std::collections::VecDeque;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wire::{Event, Timestamp};

use crate::parse::LineKind;
use crate::parse::auth::AuthParser;
use crate::parse::export::{Entry, ExportReader};
use crate::pipeline::Collected;
use crate::telemetry::Metrics;

/// The source's name in metrics and logs.
pub const NAME: &str = "journal";
/// How long to wait before starting journalctl again after it exited.
const RESTART_PAUSE: Duration = Duration::from_secs(2);
/// How often the source wakes while the journal is quiet.
const POLL: Duration = Duration::from_millis(250);

/// How the journal is read (see the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    /// `journalctl --output=export --follow` as a child process.
    Journalctl,
    /// The journal files, read by the agent itself.
    Files,
}

impl Reader {
    /// `auto`'s choice: journalctl when `journalctl` names an executable (a path, or a name
    /// found on `PATH`), the files otherwise.
    pub fn auto(journalctl: &std::path::Path) -> Self {
        let executable = |p: &std::path::Path| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        let found = if journalctl.components().count() > 1 {
            executable(journalctl)
        } else {
            std::env::var_os("PATH").is_some_and(|path| {
                std::env::split_paths(&path).any(|d| executable(&d.join(journalctl)))
            })
        };
        if found { Self::Journalctl } else { Self::Files }
    }
}

/// Settings of the journal source.
#[derive(Clone, Debug)]
pub struct JournalSettings {
    /// How the journal is read.
    pub reader: Reader,
    /// The journalctl binary.
    pub journalctl: PathBuf,
    /// A journal directory to read instead of the system journal (`--directory`); empty: the
    /// system journal (`/run/log/journal` and `/var/log/journal`).
    pub directory: PathBuf,
    /// The host's `/` as the agent sees it; empty: `/`.
    pub host_root: PathBuf,
    /// Where the cursor is kept.
    pub state_path: PathBuf,
    /// On first start, read the whole journal.
    pub from_beginning: bool,
    /// When the source reports itself blind.
    pub blind: crate::blind::BlindConfig,
}

/// Runs the source on its own thread until `cancel` fires or the pipeline closes.
pub fn spawn(
    settings: JournalSettings,
    out: mpsc::Sender<Collected>,
    metrics: Metrics,
    cancel: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("journal".into()).spawn(move || {
        run(&settings, &out, &metrics, &cancel);
    })
}

/// The journalctl command line: export format, following, from `cursor` or `start`.
pub fn command(s: &JournalSettings, cursor: Option<&str>, from_beginning: bool) -> Command {
    let mut c = Command::new(&s.journalctl);
    c.args(["--output=export", "--follow", "--no-pager", "--quiet"]);
    if !s.directory.as_os_str().is_empty() {
        c.arg("--directory").arg(&s.directory);
    } else if !s.host_root.as_os_str().is_empty() {
        c.arg("--root").arg(&s.host_root);
    }
    // --follow alone shows only the last 10 entries, even after a cursor.
    match cursor {
        Some(cursor) => {
            c.arg(format!("--after-cursor={cursor}")).arg("--lines=all");
        }
        None if from_beginning => {
            c.arg("--lines=all");
        }
        None => {
            c.arg("--lines=0");
        }
    }
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn load_cursor(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let cursor = text.trim();
    (!cursor.is_empty() && !cursor.contains('\n')).then(|| cursor.to_owned())
}

fn save_cursor(path: &std::path::Path, cursor: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{cursor}\n"))?;
    std::fs::rename(&tmp, path)
}

/// An entry, and whether the reader had nothing more buffered after it (caught up with the
/// journal, for now).
type Read = std::io::Result<(Entry, bool)>;

/// Reads journalctl's output on a thread of its own; the channel closes at its end.
fn read_entries(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<Read> {
    // Bounded: a slow pipeline holds journalctl back rather than buffering the journal here.
    let (tx, rx) = std::sync::mpsc::sync_channel(256);
    std::thread::spawn(move || {
        let mut reader = ExportReader::new(BufReader::with_capacity(64 * 1024, stdout));
        loop {
            let item = match reader.next_entry() {
                Ok(Some(e)) => Ok((e, reader.caught_up())),
                Ok(None) => return,
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.send(item).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// Starts journalctl after `cursor` (else per `from_beginning`): its entries, and a handle that
/// ends with its exit status. `None` when it cannot be started (logged).
fn start_journalctl(
    s: &JournalSettings,
    cursor: Option<&str>,
    from_beginning: bool,
    cancel: &CancellationToken,
) -> Option<Feed> {
    let mut child = match command(s, cursor, from_beginning).spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(source = NAME, journalctl = %s.journalctl.display(), error = %e, "cannot start journalctl");
            return None;
        }
    };
    let stdout = child.stdout.take()?;
    let waiter = watch_child(child, cancel.clone());
    Some((read_entries(stdout), waiter))
}

/// A reader's entries, and a handle that ends with why the reader stopped.
type Feed = (std::sync::mpsc::Receiver<Read>, std::thread::JoinHandle<String>);

/// The journal directories the files reader follows.
fn journal_roots(s: &JournalSettings) -> Vec<PathBuf> {
    if s.directory.as_os_str().is_empty() {
        let root = if s.host_root.as_os_str().is_empty() {
            std::path::Path::new("/")
        } else {
            s.host_root.as_path()
        };
        ["run/log/journal", "var/log/journal"]
            .into_iter()
            .map(|d| root.join(d))
            .filter(|p| p.is_dir())
            .collect()
    } else {
        vec![s.directory.clone()]
    }
}

/// Reads the journal files on a thread of its own: the history after `cursor` (or all of it
/// with `from_beginning`) through a query, streamed, then new entries as the files grow. The
/// channel is bounded, so a slow pipeline holds the reader back; entries it cannot read are
/// counted in `unreadable` and skipped.
fn read_files(
    s: &JournalSettings,
    cursor: Option<String>,
    from_beginning: bool,
    cancel: CancellationToken,
    unreadable: prometheus::IntCounter,
) -> Feed {
    let (tx, rx) = std::sync::mpsc::sync_channel(256);
    let roots = journal_roots(s);
    let handle = std::thread::spawn(move || {
        match follow_files(&roots, cursor, from_beginning, &cancel, &tx, &unreadable) {
            Ok(()) => "stopped".to_owned(),
            Err(e) => e,
        }
    });
    (rx, handle)
}

fn follow_files(
    roots: &[PathBuf],
    cursor: Option<String>,
    from_beginning: bool,
    cancel: &CancellationToken,
    tx: &std::sync::mpsc::SyncSender<Read>,
    unreadable: &prometheus::IntCounter,
) -> Result<(), String> {
    use sdjournal::{Cursor, Journal, JournalConfig, SubscriptionOptions};
    let config = JournalConfig { poll_interval: POLL, ..JournalConfig::default() };
    let shown = || roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ");
    if roots.is_empty() {
        return Err("no journal directory (run/log/journal, var/log/journal under the host's root) is there".into());
    }
    let journal = Journal::open_dirs_with_config(roots, config)
        .map_err(|e| format!("cannot open the journal in {}: {e}", shown()))?;
    let mut last = match &cursor {
        Some(c) => Some(
            Cursor::parse(c)
                .map_err(|e| format!("the saved cursor is not one the files reader knows ({e})"))?,
        ),
        None => None,
    };
    // Sends an entry, with whether it is the last one known for now; false when the source is
    // gone or stopping.
    let send = |entry: &sdjournal::EntryRef, caught_up: bool, last: &mut Option<Cursor>| {
        let Some((converted, position)) = convert(entry) else {
            unreadable.inc();
            return true;
        };
        *last = Some(position);
        !cancel.is_cancelled() && tx.send(Ok((converted, caught_up))).is_ok()
    };
    // The history, streamed (a subscription would queue all of it in memory at once).
    if last.is_some() || from_beginning {
        let mut q = journal.query();
        if let Some(c) = &last {
            q.after_cursor(c.clone());
        }
        let mut items = q.iter().map_err(|e| format!("cannot read the journal: {e}"))?.peekable();
        while let Some(item) = items.next() {
            match item {
                Ok(entry) => {
                    if !send(&entry, items.peek().is_none(), &mut last) {
                        return Ok(());
                    }
                }
                Err(e) => {
                    unreadable.inc();
                    tracing::debug!(source = NAME, error = %e, "an unreadable journal entry");
                }
            }
        }
    }
    // Then what is appended: after the last entry read (what came in while the history was
    // read is replayed first), or from now on.
    let mut live = journal.live().map_err(|e| format!("cannot follow the journal: {e}"))?;
    let mut options = SubscriptionOptions::new(live.filter());
    if let Some(c) = &last {
        options.after_cursor(c.clone());
    }
    let sub = live
        .subscribe_with_options(options)
        .map_err(|e| format!("cannot follow the journal: {e}"))?;
    let mut held: Option<sdjournal::LiveEntry> = None;
    loop {
        loop {
            match sub.try_recv() {
                Ok(Ok(entry)) => {
                    if let Some(prev) = held.replace(entry)
                        && !send(&prev, false, &mut last)
                    {
                        return Ok(());
                    }
                }
                Ok(Err(e)) => {
                    unreadable.inc();
                    tracing::debug!(source = NAME, error = %e, "an unreadable journal entry");
                }
                Err(_) => break,
            }
        }
        if let Some(prev) = held.take()
            && !send(&prev, true, &mut last)
        {
            return Ok(());
        }
        if cancel.is_cancelled() {
            return Ok(());
        }
        // Waits for a change (inotify, at most POLL) and queues what was appended.
        live.poll_once().map_err(|e| format!("following the journal failed: {e}"))?;
    }
}

/// An entry of the journal files as the parsers take it, with its cursor; `None` when it has
/// no cursor (a damaged entry).
fn convert(entry: &sdjournal::EntryRef) -> Option<(Entry, sdjournal::Cursor)> {
    let position = entry.cursor().ok()?;
    let mut b = crate::parse::export::EntryBuilder::default();
    for (key, value) in entry.iter_fields() {
        if value.len() as u64 > crate::parse::export::MAX_VALUE {
            b.oversized();
        } else {
            b.field(key.as_bytes(), value);
        }
    }
    b.field(b"__REALTIME_TIMESTAMP", entry.realtime_usec().to_string().as_bytes());
    b.field(b"__CURSOR", position.to_string().as_bytes());
    Some((b.finish(), position))
}

/// What [`parse_directory`] read: entries per use, and the parsers' summary of those they read.
#[derive(Debug, Default)]
pub struct DirectorySummary {
    /// Entries read.
    pub entries: u64,
    /// Another program's.
    pub skipped: u64,
    /// An auth program's name from a sender that is not root.
    pub untrusted: u64,
    /// Entries the reader could not read.
    pub unreadable: u64,
    /// The entries a parser read, as lines (`lines` counts them).
    pub parsed: crate::parse::Summary,
}

/// Reads every entry of the journal files in `dir` once, the way the journal source does (the
/// files reader, the same parsers and trust rules), without following: `auditflow-agent parse
/// --source journal` and the parse benchmark.
pub fn parse_directory(
    dir: &std::path::Path,
    sink: impl FnMut(Event),
) -> Result<DirectorySummary, String> {
    let journal = sdjournal::Journal::open_dir(dir)
        .map_err(|e| format!("cannot open the journal in {}: {e}", dir.display()))?;
    let items = journal.query().iter().map_err(|e| format!("cannot read the journal: {e}"))?;
    Ok(parse_entries(items.map(|item| item.ok().as_ref().and_then(convert).map(|(e, _)| e)), sink))
}

/// The same as [`parse_directory`], with the entries read through `journalctl --directory
/// DIR --output=export` (the journalctl reader's path: the export stream and its reader).
pub fn parse_directory_with_journalctl(
    journalctl: &std::path::Path,
    dir: &std::path::Path,
    sink: impl FnMut(Event),
) -> Result<DirectorySummary, String> {
    let mut child = Command::new(journalctl)
        .args(["--output=export", "--no-pager", "--quiet", "--directory"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", journalctl.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut reader = ExportReader::new(BufReader::with_capacity(64 * 1024, stdout));
    let mut failed = None;
    let entries = std::iter::from_fn(|| match reader.next_entry() {
        Ok(e) => e.map(Some),
        Err(e) => {
            failed = Some(e.to_string());
            None
        }
    });
    let summary = parse_entries(entries, sink);
    let status = child.wait().map_err(|e| e.to_string())?;
    match failed {
        Some(e) => Err(format!("the export stream is broken: {e}")),
        None if !status.success() => Err(format!("journalctl: {status}")),
        None => Ok(summary),
    }
}

/// Counts and parses `entries` (`None`: one the reader could not read).
fn parse_entries(
    entries: impl Iterator<Item = Option<Entry>>,
    mut sink: impl FnMut(Event),
) -> DirectorySummary {
    let mut parsers = Parsers { auth: AuthParser::new(time::OffsetDateTime::now_utc().year()) };
    let mut s = DirectorySummary::default();
    let mut out = Vec::new();
    let mut drain = |out: &mut Vec<Event>, s: &mut DirectorySummary| {
        for event in out.drain(..) {
            *s.parsed.events.entry(crate::parse::label(&event)).or_default() += 1;
            sink(event);
        }
    };
    for entry in entries {
        let Some(entry) = entry else {
            s.unreadable += 1;
            continue;
        };
        s.entries += 1;
        match parsers.push(&entry, &mut out) {
            Use::Skipped => s.skipped += 1,
            Use::Untrusted => s.untrusted += 1,
            Use::Parsed(kind) => s.parsed.count(kind, &entry.message),
        }
        drain(&mut out, &mut s);
    }
    parsers.auth.finish(&mut out);
    drain(&mut out, &mut s);
    s
}

/// Ends the child when the source is cancelled, so that the blocked read returns, and returns
/// its exit status with the end of what it wrote to stderr. stderr is read all along (a full
/// pipe would stop journalctl), keeping the last 4 KiB.
fn watch_child(mut child: Child, cancel: CancellationToken) -> std::thread::JoinHandle<String> {
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            use std::io::Read;
            let (mut kept, mut buf) = (Vec::new(), [0u8; 1024]);
            while let Ok(n) = e.read(&mut buf) {
                if n == 0 {
                    break;
                }
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 4096 {
                    kept.drain(..kept.len() - 4096);
                }
            }
            String::from_utf8_lossy(&kept).trim().to_owned()
        })
    });
    std::thread::spawn(move || {
        let status = loop {
            if cancel.is_cancelled() {
                let _ = child.kill();
            }
            match child.try_wait() {
                Ok(Some(status)) => break status.to_string(),
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => break format!("wait: {e}"),
            }
        };
        let text = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
        format!("{status}: {text}")
    })
}

/// What became of an entry.
#[derive(Debug)]
enum Use {
    /// Read by a parser.
    Parsed(LineKind),
    /// Another program's: not ours.
    Skipped,
    /// An auth program's name from a sender that is not root.
    Untrusted,
}

/// Turns entries into events: the auth parser for the auth programs, the kernel parser for
/// kernel messages.
#[derive(Debug)]
struct Parsers {
    auth: AuthParser,
}

impl Parsers {
    fn push(&mut self, e: &Entry, out: &mut Vec<Event>) -> Use {
        let ts = Timestamp(e.realtime_us.unwrap_or(0).saturating_mul(1000));
        let ts = if ts.0 == 0 { Timestamp::now() } else { ts };
        if e.transport == "kernel" {
            return Use::Parsed(crate::parse::kernel::push_message(ts, &e.message, out));
        }
        if AuthParser::reads(&e.identifier) {
            if e.uid != Some(0) {
                return Use::Untrusted;
            }
            // The journal keeps one message per entry; a multi-line one is read by its first
            // line, as a syslog daemon would have written it.
            let msg = e.message.lines().next().unwrap_or("");
            return Use::Parsed(self.auth.push_message(ts, &e.identifier, e.pid, msg, out));
        }
        Use::Skipped
    }
}

fn run(
    s: &JournalSettings,
    out: &mpsc::Sender<Collected>,
    metrics: &Metrics,
    cancel: &CancellationToken,
) {
    let saved = load_cursor(&s.state_path);
    tracing::info!(source = NAME, reader = ?s.reader, cursor = ?saved, directory = %s.directory.display(), "following the journal");
    let mut parsers = Parsers { auth: AuthParser::new(time::OffsetDateTime::now_utc().year()) };
    let collected = metrics.collected.with_label_values(&[NAME]);
    let unparsed = metrics.unparsed.with_label_values(&[NAME]);
    let entries = |what: &str| metrics.journal_entries.with_label_values(&[what]);
    let (used, skipped, oversized) = (entries("used"), entries("skipped"), entries("oversized"));
    let (untrusted, unreadable) = (entries("untrusted"), entries("unreadable"));
    let mut watch = crate::blind::Watch::new(NAME, s.blind.clone());
    // The cursor of the last entry read (where a restarted journalctl resumes) and the marks
    // sent, oldest first, with the cursor each one makes safe to save.
    let mut read_at = saved.clone();
    let mut saved_at = saved;
    let mut pending: VecDeque<(oneshot::Receiver<bool>, String)> = VecDeque::new();
    let mut events = Vec::new();
    let mut from_beginning = s.from_beginning;
    while !cancel.is_cancelled() {
        let started = Instant::now();
        let (entries_rx, waiter) = match s.reader {
            Reader::Journalctl => {
                match start_journalctl(s, read_at.as_deref(), from_beginning, cancel) {
                    Some(feed) => feed,
                    None => {
                        pause(cancel, RESTART_PAUSE * 15);
                        continue;
                    }
                }
            }
            Reader::Files => {
                read_files(s, read_at.clone(), from_beginning, cancel.clone(), unreadable.clone())
            }
        };
        let mut since_mark = 0u64;
        loop {
            // Woken at least every POLL, so that confirmed cursors are saved and the blindness
            // check runs while the journal is quiet.
            let (entry, caught_up) = match entries_rx.recv_timeout(POLL) {
                Ok(Ok(e)) => e,
                Ok(Err(e)) => {
                    tracing::warn!(source = NAME, error = %e, "the journal's export stream is broken; restarting the reader");
                    break;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    save_confirmed(s, &mut pending, &mut saved_at);
                    if cancel.is_cancelled() {
                        break;
                    }
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            if entry.oversized {
                oversized.inc();
            }
            match parsers.push(&entry, &mut events) {
                Use::Skipped => skipped.inc(),
                Use::Untrusted => {
                    untrusted.inc();
                    tracing::debug!(source = NAME, uid = ?entry.uid, program = %entry.identifier, "an auth program's entry from a sender that is not root; dropped");
                }
                Use::Parsed(kind) => {
                    used.inc();
                    watch.read(1, 0);
                    if kind == LineKind::Unparsed {
                        unparsed.inc();
                        watch.unparsed(Some(&entry.message));
                    }
                }
            }
            if !entry.cursor.is_empty() {
                read_at = Some(entry.cursor);
                since_mark += 1;
            }
            if caught_up {
                parsers.auth.finish(&mut events);
            }
            collected.inc_by(events.len() as u64);
            watch.read(0, events.len() as u64);
            if let Some(end) = watch.check(Instant::now()) {
                if let Some(blind) = end.blind {
                    tracing::warn!(
                        source = NAME,
                        "the source understands too few of its entries; reporting it"
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
            if (caught_up || since_mark >= 4096)
                && since_mark > 0
                && let Some(cursor) = &read_at
            {
                let (tx, rx) = oneshot::channel();
                if out.blocking_send(Collected::Mark(tx)).is_err() {
                    return;
                }
                pending.push_back((rx, cursor.clone()));
                since_mark = 0;
            }
            save_confirmed(s, &mut pending, &mut saved_at);
        }
        // Dropped first: a reader blocked on a full channel then ends.
        drop(entries_rx);
        let exit = waiter.join().unwrap_or_else(|_| "the reader panicked".into());
        save_confirmed(s, &mut pending, &mut saved_at);
        if cancel.is_cancelled() {
            break;
        }
        if read_at.is_some()
            && started.elapsed() < Duration::from_secs(5)
            && exit.contains("cursor")
        {
            // The reader refused the cursor: the journal no longer holds that entry, or it is
            // the other reader's.
            tracing::warn!(source = NAME, exit = %exit, "the saved journal cursor is gone; starting anew");
            read_at = None;
            from_beginning = s.from_beginning;
            pause(cancel, RESTART_PAUSE);
        } else {
            tracing::warn!(source = NAME, reader = ?s.reader, exit = %exit, "the journal reader stopped; starting it again");
            // A reader that fails as it starts (no journal on this node yet, no permission)
            // is retried less often than one that ran for a while.
            let quick = started.elapsed() < Duration::from_secs(5);
            pause(cancel, if quick { RESTART_PAUSE * 15 } else { RESTART_PAUSE });
        }
    }
    // Wait briefly for the last marks, so that a clean stop saves where it got to.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !pending.is_empty() && Instant::now() < deadline {
        save_confirmed(s, &mut pending, &mut saved_at);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Saves the newest cursor whose events are all spooled.
fn save_confirmed(
    s: &JournalSettings,
    pending: &mut VecDeque<(oneshot::Receiver<bool>, String)>,
    saved_at: &mut Option<String>,
) {
    let mut newest = None;
    while let Some((rx, cursor)) = pending.front_mut() {
        match rx.try_recv() {
            Ok(true) => newest = Some(std::mem::take(cursor)),
            Ok(false) | Err(oneshot::error::TryRecvError::Closed) => {}
            Err(oneshot::error::TryRecvError::Empty) => break,
        }
        pending.pop_front();
    }
    if let Some(cursor) = newest {
        match save_cursor(&s.state_path, &cursor) {
            Ok(()) => *saved_at = Some(cursor),
            Err(e) => tracing::warn!(source = NAME, error = %e, "cannot save the journal cursor"),
        }
    }
}

fn pause(cancel: &CancellationToken, d: Duration) {
    let until = Instant::now() + d;
    while !cancel.is_cancelled() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_journalctl_only_when_it_is_there() {
        assert_eq!(Reader::auto(std::path::Path::new("sh")), Reader::Journalctl);
        assert_eq!(Reader::auto(std::path::Path::new("/bin/sh")), Reader::Journalctl);
        assert_eq!(Reader::auto(std::path::Path::new("no-such-journalctl")), Reader::Files);
        assert_eq!(Reader::auto(std::path::Path::new("/nonexistent/journalctl")), Reader::Files);
        // A directory or a file without the execute bit is not a journalctl.
        assert_eq!(Reader::auto(std::path::Path::new("/tmp")), Reader::Files);
        let dir = std::env::temp_dir().join(format!("auditflow-auto-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("journalctl");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        assert_eq!(Reader::auto(&plain), Reader::Files);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
