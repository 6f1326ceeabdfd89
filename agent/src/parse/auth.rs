//! The auth log: sshd (also as `sshd-session` and `sshd-auth`, OpenSSH 9.8 and later), sudo,
//! su, login, systemd-logind and the account tools → `Login`, `Privilege`, `Account` and
//! `Generic` (`session`) events. docs/agent.md has the table of families and what each yields.
//!
//! **One `Login` per authentication attempt**, so that a password brute force and one against a
//! key-only host count alike:
//! * each `Failed <method> for …` line is a failure and each `Accepted <method> for …` line a
//!   success; `message repeated N times: [ … ]` counts N times (at most [`MAX_REPEAT`]: the
//!   rest is not expanded but reported on the last event, `repeated` and `not_expanded`);
//! * PAM `authentication failure` lines (also in the `sshd(pam_unix)` form) and `Invalid user`
//!   only enrich the attempts of the same sshd process, except where that process logs no
//!   `Failed` line for a PAM failure (systems that log only the PAM lines): such a PAM failure
//!   becomes an attempt of its own when the process ends, is evicted, or the input ends;
//!   `PAM N more authentication failures` adds N for a process that logged no `Failed` line;
//! * a connection that ends before authenticating and names a user (`Connection closed by
//!   authenticating user root 1.2.3.4 port 22 [preauth]`, `… invalid user …`, `Disconnected
//!   from …`), or hits `error: maximum authentication attempts exceeded for …`, is one failed
//!   attempt, unless the same connection (address and port) already counted one: key-only
//!   hosts log nothing else for a rejected key. A connection that never names a user (a port
//!   scan) is no attempt.
//!
//! Lines this parser does not understand are counted, never fatal.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use wire::{Event, EventKind, Outcome, Severity, Source, Timestamp, Value};

use super::LineKind;
use super::syslog::{self, YearTracker};

/// Most sshd processes tracked at once; the oldest is resolved and forgotten beyond this.
const MAX_TRACKED: usize = 4096;

/// Most attempts one `message repeated N times` line expands to. A real repeat covers a few
/// identical consecutive messages; a thousand attempts already fire every brute-force rule,
/// and anyone may write such a line (`logger`), so a forged count must not cost more.
pub const MAX_REPEAT: u32 = 1_000;

/// Most PAM failures one sshd process may hold unmatched (sshd's MaxAuthTries is 6 by default);
/// beyond this the oldest becomes an attempt at once.
const MAX_PENDING: usize = 32;

/// sshd messages that end a process's authentication: its unmatched PAM failures resolve.
const ENDS_PROCESS: [&str; 8] = [
    "Received disconnect from ",
    "Disconnected from ",
    "Connection closed by ",
    "Connection reset by ",
    "Disconnecting",
    "error: Received disconnect from ",
    "Did not receive identification string",
    "pam_unix(sshd:session): session closed",
];

/// sshd messages understood as carrying nothing to report.
const KNOWN: [&str; 16] = [
    "reverse mapping checking",
    "pam_unix(sshd:auth): check pass",
    "pam_unix(sshd:session): session opened",
    "PAM service(",
    "Address ",
    "Server listening",
    "Received signal",
    "error: maximum authentication attempts exceeded",
    "Postponed ",
    "Connection from ",
    "Timeout before authentication",
    "Bad protocol version",
    "Unable to negotiate",
    "Protocol major versions differ",
    "fatal: ",
    "error: ",
];

/// Per-sshd-process state between lines.
#[derive(Debug, Default)]
struct Process {
    /// PAM failures not yet matched by a `Failed` line.
    pam_failures: VecDeque<PamFailure>,
    /// `Failed` lines seen for this process.
    failed_lines: u32,
    /// The user named by `Invalid user` / `input_userauth_request`.
    invalid_user: Option<String>,
    /// When this process was last heard from (insertion order for eviction).
    last_seen: u64,
}

#[derive(Debug, Clone)]
struct PamFailure {
    ts: Timestamp,
    user: Option<String>,
    rhost: String,
}

impl PamFailure {
    fn new(ts: Timestamp, fields: &PamFields<'_>) -> Self {
        Self {
            ts,
            user: fields.user.map(str::to_owned),
            rhost: fields.rhost.unwrap_or_default().to_owned(),
        }
    }
}

/// The programs whose messages [`AuthParser`] reads.
const AUTH_PROGRAMS: &[&str] = &[
    "sshd",
    "sshd-session",
    "sshd-auth",
    "sudo",
    "su",
    "login",
    "systemd-logind",
    "passwd",
    "chpasswd",
    "useradd",
    "usermod",
    "userdel",
    "groupadd",
    "groupmod",
    "groupdel",
    "gpasswd",
];

/// Streaming parser of one auth log.
#[derive(Debug)]
pub struct AuthParser {
    years: YearTracker,
    processes: HashMap<u32, Process>,
    /// Connections (address, port) that counted an attempt, with when (the `clock`): a
    /// connection's closing line adds none then. OpenSSH 10 logs one connection under two
    /// processes (`sshd-session`, `sshd-auth`), so the connection, not the pid, is the key.
    counted: HashMap<(IpAddr, u16), u64>,
    clock: u64,
}

impl AuthParser {
    /// A parser whose classic syslog timestamps get `year`.
    pub fn new(year: i32) -> Self {
        Self {
            years: YearTracker::new(year),
            processes: HashMap::new(),
            counted: HashMap::new(),
            clock: 0,
        }
    }

    /// Parses one line, appending any events to `out`.
    pub fn push_line(&mut self, line: &str, out: &mut Vec<Event>) -> LineKind {
        let Some(header) = syslog::parse(line, &mut self.years) else {
            return LineKind::Unparsed;
        };
        self.push_message(header.ts, header.program, header.pid, header.message, out)
    }

    /// Whether `program` (a syslog tag or the journal's `SYSLOG_IDENTIFIER`) is one this
    /// parser reads.
    pub fn reads(program: &str) -> bool {
        let program = program.split_once('(').map_or(program, |(p, _)| p);
        AUTH_PROGRAMS.contains(&program)
    }

    /// Parses one message of `program` at `ts` (a syslog line's parts, or a journal entry's
    /// `SYSLOG_IDENTIFIER`, pid and `MESSAGE`), appending any events to `out`.
    pub fn push_message(
        &mut self,
        ts: Timestamp,
        program: &str,
        pid: Option<u32>,
        msg: &str,
        out: &mut Vec<Event>,
    ) -> LineKind {
        // `prog(module)`: older syslog daemons on Red Hat-family hosts tag PAM's lines so.
        let (program, module) = match program.split_once('(') {
            Some((p, m)) => (p, m.strip_suffix(')')),
            None => (program, None),
        };
        match (program, module) {
            ("sshd" | "sshd-session" | "sshd-auth", None) => {
                self.sshd(ts, pid.unwrap_or(0), msg, 1, out)
            }
            ("sshd" | "sshd-session" | "sshd-auth", Some(module)) => {
                // The same message pam_unix(sshd:auth) writes after its own prefix.
                let inner = format!("{module}(sshd:{}): {msg}", pam_facility(msg));
                self.sshd(ts, pid.unwrap_or(0), &inner, 1, out)
            }
            ("sudo", None) => sudo(ts, msg, out),
            ("su", None) => su(ts, msg, out),
            ("sudo" | "su", Some(_)) => pam_privilege(ts, program, msg, out),
            ("login", _) => login(ts, msg, out),
            ("systemd-logind", _) => logind(ts, msg, out),
            (
                "passwd" | "chpasswd" | "useradd" | "usermod" | "userdel" | "groupadd" | "groupmod"
                | "groupdel" | "gpasswd",
                _,
            ) => account(ts, program, msg, out),
            _ => LineKind::Unparsed,
        }
    }

    /// Whether connection `(ip, port)` already counted an attempt; marks it counted.
    fn count_connection(&mut self, ip: Option<IpAddr>, port: u16) -> bool {
        let Some(ip) = ip else { return false };
        self.clock += 1;
        if self.counted.len() >= MAX_TRACKED && !self.counted.contains_key(&(ip, port)) {
            // Forget the older half at once, so that eviction costs O(1) per line on average.
            let mut ages: Vec<u64> = self.counted.values().copied().collect();
            let (_, median, _) = ages.select_nth_unstable(MAX_TRACKED / 2);
            let median = *median;
            self.counted.retain(|_, seen| *seen > median);
        }
        self.counted.insert((ip, port), self.clock).is_some()
    }

    /// Ends the input: every pending PAM-only failure becomes an attempt.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        let mut pids: Vec<(u64, u32)> =
            self.processes.iter().map(|(pid, p)| (p.last_seen, *pid)).collect();
        pids.sort_unstable();
        for (_, pid) in pids {
            if let Some(mut p) = self.processes.remove(&pid) {
                resolve(&mut p, out);
            }
        }
    }

    fn process(&mut self, pid: u32, out: &mut Vec<Event>) -> &mut Process {
        self.clock += 1;
        let evict = if !self.processes.contains_key(&pid) && self.processes.len() >= MAX_TRACKED {
            self.processes.iter().min_by_key(|(_, p)| p.last_seen).map(|(&oldest, _)| oldest)
        } else {
            None
        };
        if let Some(mut p) = evict.and_then(|oldest| self.processes.remove(&oldest)) {
            resolve(&mut p, out);
        }
        let clock = self.clock;
        let p = self.processes.entry(pid).or_default();
        p.last_seen = clock;
        p
    }

    fn sshd(
        &mut self,
        ts: Timestamp,
        pid: u32,
        msg: &str,
        times: u32,
        out: &mut Vec<Event>,
    ) -> LineKind {
        if let Some(rest) = msg.strip_prefix("message repeated ") {
            // "message repeated N times: [ inner]"
            let parsed = rest.split_once(" times: [").and_then(|(n, inner)| {
                Some((n.parse::<u32>().ok()?, inner.strip_suffix(']')?.trim_start()))
            });
            return match parsed {
                Some((n, inner)) => {
                    let times = times.saturating_mul(n);
                    let first = out.len();
                    let kind = self.sshd(ts, pid, inner, times.min(MAX_REPEAT), out);
                    if times > MAX_REPEAT {
                        // The line's whole count stays visible on the last event it gave.
                        if let Some(last) = out[first..].last_mut() {
                            last.attrs.push(("repeated".into(), Value::Int(i64::from(times))));
                            last.attrs.push((
                                "not_expanded".into(),
                                Value::Int(i64::from(times - MAX_REPEAT)),
                            ));
                        }
                    }
                    kind
                }
                None => LineKind::Unparsed,
            };
        }
        if let Some(rest) = msg.strip_prefix("Failed ").or_else(|| msg.strip_prefix("Accepted ")) {
            let success = msg.starts_with("Accepted ");
            let Some(attempt) = parse_attempt(rest) else { return LineKind::Unparsed };
            self.count_connection(attempt.ip, attempt.port);
            let p = self.process(pid, out);
            for _ in 0..times {
                let mut event = login_event(
                    ts,
                    &attempt.user,
                    attempt.ip,
                    Some(attempt.method.to_owned()),
                    if success { Outcome::Success } else { Outcome::Failure },
                    attempt.invalid.then(|| "invalid user".to_owned()),
                );
                event.attrs.push(("port".into(), Value::Int(i64::from(attempt.port))));
                event.attrs.push(("pid".into(), Value::Int(i64::from(pid))));
                if !success {
                    p.failed_lines += 1;
                    // This attempt is the one a pending PAM failure announced.
                    if let Some(pam) = p.pam_failures.pop_front() {
                        event.attrs.push(("rhost".into(), Value::Str(pam.rhost)));
                    }
                }
                out.push(event);
            }
            return LineKind::Event;
        }
        if let Some(rest) = msg.strip_prefix("pam_unix(sshd:auth): authentication failure;") {
            let failure = PamFailure::new(ts, &pam_fields(rest));
            let p = self.process(pid, out);
            for _ in 0..times.min(MAX_REPEAT) {
                push_pending(p, failure.clone(), out);
            }
            return LineKind::Event;
        }
        if let Some(rest) = msg
            .strip_prefix("PAM ")
            .filter(|r| r.as_bytes().first().is_some_and(u8::is_ascii_digit))
        {
            // "PAM N more authentication failures; … rhost=… user=…": a summary. It adds
            // attempts only for a process that logged no `Failed` lines.
            let Some((n, rest)) = rest.split_once(" more authentication failure") else {
                return LineKind::Unparsed;
            };
            let Ok(n) = n.parse::<u32>() else { return LineKind::Unparsed };
            let fields = pam_fields(rest);
            let p = self.process(pid, out);
            if p.failed_lines == 0 {
                let failure = PamFailure::new(ts, &fields);
                for _ in 0..n.saturating_mul(times).min(MAX_REPEAT) {
                    push_pending(p, failure.clone(), out);
                }
                return LineKind::Event;
            }
            return LineKind::Known;
        }
        if let Some(rest) = msg
            .strip_prefix("Invalid user ")
            .or_else(|| msg.strip_prefix("input_userauth_request: invalid user "))
        {
            let user = rest
                .rsplit_once(" from ")
                .map(|(u, _)| u)
                .or_else(|| rest.strip_suffix(" [preauth]"))
                .unwrap_or(rest);
            self.process(pid, out).invalid_user = Some(user.to_owned());
            return LineKind::Known;
        }
        if let Some(close) = preauth_close(msg) {
            let p = self.process(pid, out);
            let had_attempts = p.failed_lines > 0 || !p.pam_failures.is_empty();
            resolve(p, out);
            let first = !self.count_connection(close.ip, close.port);
            if first && !had_attempts {
                let mut event = login_event(
                    ts,
                    close.user,
                    close.ip,
                    None,
                    Outcome::Failure,
                    Some(close.reason.to_owned()),
                );
                if close.invalid {
                    event.attrs.push(("invalid_user".into(), Value::Bool(true)));
                }
                event.attrs.push(("port".into(), Value::Int(i64::from(close.port))));
                event.attrs.push(("pid".into(), Value::Int(i64::from(pid))));
                out.push(event);
                return LineKind::Event;
            }
            return LineKind::Known;
        }
        let ends_process = ENDS_PROCESS.iter().any(|p| msg.starts_with(p));
        if ends_process {
            if let Some(p) = self.processes.get_mut(&pid) {
                resolve(p, out);
            }
            return LineKind::Known;
        }
        if KNOWN.iter().any(|p| msg.starts_with(p)) { LineKind::Known } else { LineKind::Unparsed }
    }
}

/// Queues a PAM failure for a `Failed` line of the same process to match; a full queue turns
/// its oldest into an attempt at once.
fn push_pending(p: &mut Process, failure: PamFailure, out: &mut Vec<Event>) {
    if p.pam_failures.len() >= MAX_PENDING {
        let oldest = p.pam_failures.pop_front();
        let mut one = Process { pam_failures: oldest.into_iter().collect(), ..Process::default() };
        one.invalid_user = p.invalid_user.clone();
        resolve(&mut one, out);
    }
    p.pam_failures.push_back(failure);
}

/// Which PAM facility a `prog(module)` message belongs to, for rebuilding the modern prefix.
fn pam_facility(msg: &str) -> &'static str {
    if msg.starts_with("session ") { "session" } else { "auth" }
}

/// A connection that ended before authenticating, naming the user it tried.
struct PreauthClose<'a> {
    user: &'a str,
    invalid: bool,
    ip: Option<IpAddr>,
    port: u16,
    reason: &'static str,
}

/// `Connection closed by authenticating user root 1.2.3.4 port 22 [preauth]`, `… by invalid
/// user …`, `Disconnected from authenticating user …`, `Disconnected from invalid user …`, and
/// `error: maximum authentication attempts exceeded for [invalid user ]root from 1.2.3.4 port
/// 22 ssh2 [preauth]`.
fn preauth_close(msg: &str) -> Option<PreauthClose<'_>> {
    if let Some(rest) = msg.strip_prefix("error: maximum authentication attempts exceeded for ") {
        let (invalid, rest) = match rest.strip_prefix("invalid user ") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let (user, rest) = rest.rsplit_once(" from ")?;
        let (addr, rest) = rest.split_once(" port ")?;
        let port = rest.split(' ').next()?.parse().ok()?;
        return Some(PreauthClose {
            user,
            invalid,
            ip: addr.parse().ok(),
            port,
            reason: "maximum authentication attempts exceeded",
        });
    }
    let rest = msg
        .strip_prefix("Connection closed by ")
        .or_else(|| msg.strip_prefix("Disconnected from "))?
        .strip_suffix(" [preauth]")?;
    let (invalid, rest) = if let Some(r) = rest.strip_prefix("authenticating user ") {
        (false, r)
    } else {
        (true, rest.strip_prefix("invalid user ")?)
    };
    // `<user> <address> port <port>`: the user may contain spaces, the address may not.
    let (head, port) = rest.rsplit_once(" port ")?;
    let (user, addr) = head.rsplit_once(' ')?;
    Some(PreauthClose {
        user,
        invalid,
        ip: addr.parse().ok(),
        port: port.trim().parse().ok()?,
        reason: if invalid { "invalid user" } else { "closed before authenticating" },
    })
}

/// Turns the unmatched PAM failures of a process into attempts of their own.
fn resolve(p: &mut Process, out: &mut Vec<Event>) {
    while let Some(pam) = p.pam_failures.pop_front() {
        let user = pam.user.clone().or_else(|| p.invalid_user.clone()).unwrap_or_default();
        let invalid = pam.user.is_none() && p.invalid_user.is_some();
        let ip = pam.rhost.parse::<IpAddr>().ok();
        let mut event = login_event(
            pam.ts,
            &user,
            ip,
            Some("pam".to_owned()),
            Outcome::Failure,
            Some(if invalid { "invalid user" } else { "authentication failure" }.to_owned()),
        );
        if ip.is_none() && !pam.rhost.is_empty() {
            event.attrs.push(("rhost".into(), Value::Str(pam.rhost)));
        }
        out.push(event);
    }
}

fn login_event(
    ts: Timestamp,
    user: &str,
    src_ip: Option<IpAddr>,
    method: Option<String>,
    outcome: Outcome,
    reason: Option<String>,
) -> Event {
    let severity = if outcome == Outcome::Failure { Severity::Warning } else { Severity::Info };
    Event::new(
        ts,
        Source::AuthLog,
        severity,
        EventKind::Login { user: user.to_owned(), src_ip, method, outcome, reason },
    )
}

struct Attempt<'a> {
    method: &'a str,
    user: String,
    invalid: bool,
    ip: Option<IpAddr>,
    port: u16,
}

/// `<method> for [invalid user ]<user> from <ip> port <port>[ ssh2[: …]]`
fn parse_attempt(rest: &str) -> Option<Attempt<'_>> {
    let (method, rest) = rest.split_once(" for ")?;
    let (user_part, rest) = rest.rsplit_once(" from ")?;
    let (invalid, user) = match user_part.strip_prefix("invalid user ") {
        Some(u) => (true, u),
        None => (false, user_part),
    };
    let (addr, rest) = rest.split_once(" port ")?;
    let port: u16 = rest.split(' ').next()?.parse().ok()?;
    Some(Attempt { method, user: user.to_owned(), invalid, ip: addr.parse().ok(), port })
}

struct PamFields<'a> {
    rhost: Option<&'a str>,
    user: Option<&'a str>,
}

/// `logname= uid=0 euid=0 tty=ssh ruser= rhost=<host> [user=<user>]`
fn pam_fields(rest: &str) -> PamFields<'_> {
    let mut fields = PamFields { rhost: None, user: None };
    for part in rest.split_whitespace() {
        if let Some(v) = part.strip_prefix("rhost=") {
            fields.rhost = Some(v).filter(|v| !v.is_empty());
        } else if let Some(v) = part.strip_prefix("user=") {
            fields.user = Some(v).filter(|v| !v.is_empty());
        }
    }
    fields
}

/// `alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id`, with an optional
/// failure clause before `TTY` (`3 incorrect password attempts ;`, `user NOT in sudoers ;`).
fn sudo(ts: Timestamp, msg: &str, out: &mut Vec<Event>) -> LineKind {
    let Some((user, rest)) = msg.split_once(" : ") else {
        return if msg.starts_with("pam_unix(sudo:") || msg.trim().is_empty() {
            LineKind::Known
        } else {
            LineKind::Unparsed
        };
    };
    let user = user.trim();
    let mut outcome = Outcome::Success;
    let mut reason = None;
    let (mut tty, mut cwd, mut target, mut command) = (None, None, None, None);
    for part in rest.split(" ; ") {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("TTY=") {
            tty = Some(v.to_owned());
        } else if let Some(v) = part.strip_prefix("PWD=") {
            cwd = Some(v.to_owned());
        } else if let Some(v) = part.strip_prefix("USER=") {
            target = Some(v.to_owned());
        } else if let Some(v) = part.strip_prefix("COMMAND=") {
            // The command is last and may itself contain " ; ".
            let at = rest.find("COMMAND=").map_or(v, |i| &rest[i + "COMMAND=".len()..]);
            command = Some(at.to_owned());
            break;
        } else if part.contains("incorrect password")
            || part.contains("NOT in sudoers")
            || part.contains("NOT allowed")
            || part.contains("authentication failure")
            || part.starts_with("command not allowed")
        {
            outcome = Outcome::Failure;
            reason = Some(part.to_owned());
        }
    }
    if tty.is_none() && cwd.is_none() && command.is_none() {
        return LineKind::Unparsed;
    }
    let mut event = Event::new(
        ts,
        Source::AuthLog,
        if outcome == Outcome::Failure { Severity::Warning } else { Severity::Info },
        EventKind::Privilege {
            user: user.to_owned(),
            target_user: target.unwrap_or_else(|| "root".to_owned()),
            command,
            tty,
            cwd,
            outcome,
        },
    );
    event.attrs.push(("program".into(), Value::Str("sudo".into())));
    if let Some(r) = reason {
        event.attrs.push(("reason".into(), Value::Str(r)));
    }
    out.push(event);
    LineKind::Event
}

/// `su(pam_unix)` and `sudo(pam_unix)`, as older syslog daemons tag PAM's lines:
/// `authentication failure; logname=alice uid=1000 euid=0 tty=pts/0 ruser=alice rhost= user=root`
/// and `session opened for user root by alice(uid=1000)`. For su these are the only lines such
/// hosts write, so they are the attempts; sudo writes its own line for every attempt
/// ([`sudo`]), so its PAM lines add nothing.
fn pam_privilege(ts: Timestamp, program: &str, msg: &str, out: &mut Vec<Event>) -> LineKind {
    if program != "su" {
        return LineKind::Known;
    }
    let (user, target, outcome) = if let Some(rest) = msg.strip_prefix("authentication failure;") {
        let mut ruser = None;
        let mut logname = None;
        let mut target = None;
        for part in rest.split_whitespace() {
            if let Some(v) = part.strip_prefix("ruser=") {
                ruser = Some(v).filter(|v| !v.is_empty());
            } else if let Some(v) = part.strip_prefix("logname=") {
                logname = Some(v).filter(|v| !v.is_empty());
            } else if let Some(v) = part.strip_prefix("user=") {
                target = Some(v).filter(|v| !v.is_empty());
            }
        }
        (ruser.or(logname).unwrap_or_default(), target.unwrap_or("root"), Outcome::Failure)
    } else if let Some(rest) = msg.strip_prefix("session opened for user ") {
        let Some((target, by)) = rest.split_once(" by ") else { return LineKind::Unparsed };
        // `by alice(uid=1000)`, or `by (uid=0)` with no name: uid 0 is root.
        let (name, uid) = by.split_once('(').unwrap_or((by, ""));
        let user = match name {
            "" if uid.starts_with("uid=0)") => "root",
            "" => uid.trim_end_matches(')'),
            name => name,
        };
        (user, target, Outcome::Success)
    } else if msg.starts_with("session closed for user ") {
        return LineKind::Known;
    } else {
        return LineKind::Unparsed;
    };
    out.push(privilege_event(ts, "su", user, target, None, outcome));
    LineKind::Event
}

fn privilege_event(
    ts: Timestamp,
    program: &str,
    user: &str,
    target: &str,
    tty: Option<String>,
    outcome: Outcome,
) -> Event {
    let mut event = Event::new(
        ts,
        Source::AuthLog,
        if outcome == Outcome::Failure { Severity::Warning } else { Severity::Info },
        EventKind::Privilege {
            user: user.to_owned(),
            target_user: target.to_owned(),
            command: None,
            tty,
            cwd: None,
            outcome,
        },
    );
    event.attrs.push(("program".into(), Value::Str(program.into())));
    event
}

/// Console logins (util-linux / shadow `login`): `FAILED LOGIN (1) on '/dev/tty1' FOR 'root',
/// Authentication failure` (also the older `FAILED LOGIN 1 FROM tty1 FOR root, …`) is a failed
/// attempt, and `pam_unix(login:session): session opened for user pi(uid=1000) by LOGIN(uid=0)`
/// a successful one; `ROOT LOGIN on …` and the PAM `auth` lines repeat what those say.
fn login(ts: Timestamp, msg: &str, out: &mut Vec<Event>) -> LineKind {
    if let Some(rest) = msg.strip_prefix("FAILED LOGIN ") {
        let Some((head, user_part)) = rest.split_once(" FOR ") else { return LineKind::Unparsed };
        let (user, reason) = match user_part.split_once(", ") {
            Some((u, r)) => (u, Some(r.to_owned())),
            None => (user_part, None),
        };
        let user = user.trim_matches('\'');
        let tty = head
            .split_once(" on ")
            .or_else(|| head.split_once(" FROM "))
            .map(|(_, t)| t.trim_matches('\'').to_owned());
        let mut event =
            login_event(ts, user, None, Some("console".into()), Outcome::Failure, reason);
        if let Some(tty) = tty {
            event.attrs.push(("tty".into(), Value::Str(tty)));
        }
        out.push(event);
        return LineKind::Event;
    }
    let opened = msg
        .strip_prefix("pam_unix(login:session): session opened for user ")
        .or_else(|| msg.strip_prefix("session opened for user "));
    if let Some(rest) = opened {
        let user = rest.split(['(', ' ']).next().unwrap_or_default();
        out.push(login_event(ts, user, None, Some("console".into()), Outcome::Success, None));
        return LineKind::Event;
    }
    if msg.starts_with("ROOT LOGIN")
        || msg.starts_with("LOGIN ON ")
        || msg.starts_with("pam_unix(login:")
        || msg.starts_with("session closed for user ")
        || msg.starts_with("authentication failure;")
    {
        return LineKind::Known;
    }
    LineKind::Unparsed
}

/// systemd-logind: `New session 3 of user pi.` and `Session 3 logged out. …` become `session`
/// events (`Generic`, with `action` opened or closed, `session`, and `user` when named): the
/// login that opened the session is counted by the line of the program that authenticated it.
fn logind(ts: Timestamp, msg: &str, out: &mut Vec<Event>) -> LineKind {
    let session = |action: &str, id: &str, user: Option<&str>| {
        let mut fields = vec![
            ("action".to_owned(), Value::Str(action.to_owned())),
            ("session".to_owned(), Value::Str(id.to_owned())),
        ];
        if let Some(u) = user {
            fields.push(("user".to_owned(), Value::Str(u.to_owned())));
        }
        Event::new(
            ts,
            Source::AuthLog,
            Severity::Info,
            EventKind::Generic { event_type: "session".into(), fields },
        )
    };
    if let Some(rest) = msg.strip_prefix("New session ") {
        let Some((id, user)) = rest.split_once(" of user ") else { return LineKind::Unparsed };
        out.push(session("opened", id, Some(user.trim_end_matches('.'))));
        return LineKind::Event;
    }
    if let Some((id, _)) =
        msg.strip_prefix("Session ").and_then(|rest| rest.split_once(" logged out."))
    {
        out.push(session("closed", id, None));
        return LineKind::Event;
    }
    const KNOWN_LOGIND: [&str; 6] = [
        "Removed session ",
        "New seat ",
        "Watching system buttons",
        "Session ",
        "Power key",
        "System is ",
    ];
    if KNOWN_LOGIND.iter().any(|p| msg.starts_with(p)) {
        LineKind::Known
    } else {
        LineKind::Unparsed
    }
}

/// The shadow tools' account changes → `Account` events: `created`, `deleted`, `modified`,
/// `password_changed`, `group_created`, `group_deleted`, `added_to_group`,
/// `removed_from_group`. Each change yields one event even where a tool logs it twice
/// (`/etc/group` and `/etc/gshadow`, or shadow's and PAM's line for a password).
fn account(ts: Timestamp, program: &str, msg: &str, out: &mut Vec<Event>) -> LineKind {
    let quoted = |s: &str| s.trim().trim_matches('\'').to_owned();
    let field = |s: &str, key: &str| {
        s.split([',', ' ']).find_map(|part| part.trim().strip_prefix(key).map(str::to_owned))
    };
    let (name, action, group): (String, &str, Option<String>) = if let Some(rest) =
        msg.strip_prefix("new user: ")
    {
        let Some(name) = field(rest, "name=") else { return LineKind::Unparsed };
        (name, "created", None)
    } else if let Some(rest) = msg.strip_prefix("new group: ") {
        let Some(name) = field(rest, "name=") else { return LineKind::Unparsed };
        (name.clone(), "group_created", Some(name))
    } else if let Some(rest) = msg.strip_prefix("add '") {
        // usermod/useradd: `add 'bob' to group 'sudo'` (and `… to shadow group …`, the same
        // change again).
        if rest.contains(" to shadow group ") {
            return LineKind::Known;
        }
        let Some((user, group)) = rest.split_once("' to group ") else { return LineKind::Unparsed };
        (quoted(user), "added_to_group", Some(quoted(group)))
    } else if let Some(rest) = msg.strip_prefix("user ").filter(|_| program == "gpasswd") {
        // gpasswd: `user bob added by root to group sudo`, `user bob removed by root from …`
        let Some((user, rest)) = rest.split_once(' ') else { return LineKind::Unparsed };
        let (action, group) = if let Some(r) = rest.strip_prefix("added by ") {
            ("added_to_group", r.split_once(" to group ").map(|(_, g)| g))
        } else if let Some(r) = rest.strip_prefix("removed by ") {
            ("removed_from_group", r.split_once(" from group ").map(|(_, g)| g))
        } else {
            return LineKind::Unparsed;
        };
        (user.to_owned(), action, group.map(str::to_owned))
    } else if let Some(rest) = msg.strip_prefix("delete user '") {
        (quoted(rest), "deleted", None)
    } else if let Some(rest) = msg.strip_prefix("group '").filter(|r| r.ends_with("' removed")) {
        let name = quoted(rest.trim_end_matches(" removed"));
        (name.clone(), "group_deleted", Some(name))
    } else if let Some(rest) = msg.strip_prefix("password for '") {
        // shadow's passwd: `password for 'bob' changed by 'root'`
        let Some((user, _)) = rest.split_once("' changed") else { return LineKind::Unparsed };
        (user.to_owned(), "password_changed", None)
    } else if let Some(rest) = msg.strip_prefix("change user '") {
        // usermod: `change user 'bob' password`, `… shell from …`, `… home from …`
        let Some((user, what)) = rest.split_once("' ") else { return LineKind::Unparsed };
        let action = if what.starts_with("password") { "password_changed" } else { "modified" };
        (user.to_owned(), action, None)
    } else if let Some(rest) =
        msg.strip_prefix("lock user '").or_else(|| msg.strip_prefix("unlock user '"))
    {
        (quoted(rest.split(' ').next().unwrap_or_default()), "modified", None)
    } else if let Some(rest) = msg.split_once("chauthtok): password changed for ").map(|(_, r)| r) {
        // PAM's line: the change itself for chpasswd; for passwd, shadow's line said it.
        if program == "passwd" {
            return LineKind::Known;
        }
        (rest.trim().to_owned(), "password_changed", None)
    } else if msg.starts_with("removed group ")
        || msg.starts_with("removed shadow group ")
        || msg.starts_with("group added to /etc/")
        || msg.contains("removed from /etc/")
        || msg.starts_with("pam_unix(")
        || msg.starts_with("delete '")
    {
        return LineKind::Known;
    } else {
        return LineKind::Unparsed;
    };
    if name.is_empty() {
        return LineKind::Unparsed;
    }
    let mut event = Event::new(
        ts,
        Source::AuthLog,
        Severity::Warning,
        EventKind::Account { name, action: action.to_owned(), group },
    );
    event.attrs.push(("program".into(), Value::Str(program.to_owned())));
    out.push(event);
    LineKind::Event
}

/// util-linux su: `(to root) alice on pts/0` and `FAILED SU (to root) alice on pts/0`.
fn su(ts: Timestamp, msg: &str, out: &mut Vec<Event>) -> LineKind {
    let (outcome, rest) = match msg.strip_prefix("FAILED SU ") {
        Some(rest) => (Outcome::Failure, rest),
        None => (Outcome::Success, msg),
    };
    let Some(rest) = rest.strip_prefix("(to ") else {
        return if msg.starts_with("pam_unix(su") || msg.starts_with("Successful su") {
            LineKind::Known
        } else {
            LineKind::Unparsed
        };
    };
    let Some((target, rest)) = rest.split_once(") ") else { return LineKind::Unparsed };
    let (user, tty) = match rest.split_once(" on ") {
        Some((u, t)) => (u, Some(t.to_owned())),
        None => (rest, None),
    };
    out.push(privilege_event(ts, "su", user, target, tty, outcome));
    LineKind::Event
}
