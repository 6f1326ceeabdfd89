//! The auth log: sshd, sudo and su lines → `Login` and `Privilege` events.
//!
//! One `Login` per authentication attempt: each `Failed <method> for …` line is a failure and
//! each `Accepted <method> for …` line a success; `message repeated N times: [ … ]` counts N
//! times. PAM `authentication failure` lines (and `input_userauth_request`, `Invalid user`)
//! only enrich the attempts of the same sshd process — except where that process logs no
//! `Failed` line for a PAM failure (systems that log only the PAM lines): such a PAM failure
//! becomes an attempt of its own when the process ends, is evicted, or the input ends.
//! Lines this parser does not understand are counted, never fatal.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use wire::{Event, EventKind, Outcome, Severity, Source, Timestamp, Value};

use super::LineKind;
use super::syslog::{self, YearTracker};

/// Most sshd processes tracked at once; the oldest is resolved and forgotten beyond this.
const MAX_TRACKED: usize = 4096;

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
const KNOWN: [&str; 15] = [
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

/// Streaming parser of one auth log.
#[derive(Debug)]
pub struct AuthParser {
    years: YearTracker,
    processes: HashMap<u32, Process>,
    clock: u64,
}

impl AuthParser {
    /// A parser whose classic syslog timestamps get `year`.
    pub fn new(year: i32) -> Self {
        Self { years: YearTracker::new(year), processes: HashMap::new(), clock: 0 }
    }

    /// Parses one line, appending any events to `out`.
    pub fn push_line(&mut self, line: &str, out: &mut Vec<Event>) -> LineKind {
        let Some(header) = syslog::parse(line, &mut self.years) else {
            return LineKind::Unparsed;
        };
        let program = header.program;
        let ts = header.ts;
        match program {
            "sshd" => self.sshd(ts, header.pid.unwrap_or(0), header.message, 1, out),
            "sudo" => sudo(ts, header.message, out),
            "su" => su(ts, header.message, out),
            _ => LineKind::Unparsed,
        }
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
                Some((n, inner)) => self.sshd(ts, pid, inner, times.saturating_mul(n), out),
                None => LineKind::Unparsed,
            };
        }
        if let Some(rest) = msg.strip_prefix("Failed ").or_else(|| msg.strip_prefix("Accepted ")) {
            let success = msg.starts_with("Accepted ");
            let Some(attempt) = parse_attempt(rest) else { return LineKind::Unparsed };
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
            for _ in 0..times {
                p.pam_failures.push_back(failure.clone());
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
                for _ in 0..n.saturating_mul(times) {
                    p.pam_failures.push_back(failure.clone());
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
    event.attrs.push(("program".into(), Value::Str("su".into())));
    out.push(event);
    LineKind::Event
}
