//! Parsers of the node's log formats (auth log, dpkg log, Kubernetes audit log) into events,
//! shared by the tailing sources and the `auditflow-agent parse` command. Parsers never panic
//! and never fail on a line: a line they do not understand is counted.

pub mod auth;
pub mod dpkg;
pub mod export;
pub mod k8s_audit;
pub mod kernel;
pub mod syslog;

use std::collections::BTreeMap;
use std::io::BufRead;

use wire::{Event, EventKind, Outcome};

/// How a line was handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    /// It produced (or will produce) events.
    Event,
    /// A known line that carries nothing to report (disconnects, session lines, …).
    Known,
    /// Not understood; counted.
    Unparsed,
}

/// A log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// sshd, sudo and su in the auth log.
    Auth,
    /// dpkg's log.
    Dpkg,
    /// The Kubernetes API server's audit log.
    K8sAudit,
}

impl Format {
    /// Parses the `--source` word.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "auth" => Some(Format::Auth),
            "dpkg" => Some(Format::Dpkg),
            "k8s-audit" => Some(Format::K8sAudit),
            _ => None,
        }
    }
}

/// What parsing a whole input found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Lines read.
    pub lines: u64,
    /// Lines that produced events.
    pub event_lines: u64,
    /// Known lines with nothing to report.
    pub known_lines: u64,
    /// Lines not understood.
    pub unparsed_lines: u64,
    /// Events per `kind/outcome` (or `kind/action`).
    pub events: BTreeMap<String, u64>,
    /// The first few lines not understood, for people to look at.
    pub unparsed_samples: Vec<String>,
}

/// How many unparsed lines [`Summary`] keeps.
const UNPARSED_SAMPLES: usize = 10;

impl Summary {
    /// Counts one line of `kind`.
    pub fn count(&mut self, kind: LineKind, line: &str) {
        self.lines += 1;
        match kind {
            LineKind::Event => self.event_lines += 1,
            LineKind::Known => self.known_lines += 1,
            LineKind::Unparsed => {
                self.unparsed_lines += 1;
                if self.unparsed_samples.len() < UNPARSED_SAMPLES {
                    self.unparsed_samples.push(line.trim_end().to_owned());
                }
            }
        }
    }
}

/// The label an event is counted under: `login/failure`, `privilege/success`,
/// `package/install`, `account/created`, `generic/session`, `k8s_audit/get`, …
pub fn label(event: &Event) -> String {
    let detail = match &event.kind {
        EventKind::Login { outcome, .. } | EventKind::Privilege { outcome, .. } => match outcome {
            Outcome::Success => "success".to_owned(),
            Outcome::Failure => "failure".to_owned(),
        },
        EventKind::Package { action, .. } | EventKind::Account { action, .. } => action.clone(),
        EventKind::Generic { event_type, .. } => event_type.clone(),
        EventKind::K8sAudit { verb, .. } => verb.clone(),
        _ => "other".to_owned(),
    };
    format!("{}/{detail}", event.kind.name())
}

/// Parses a whole input. Bytes that are not UTF-8 are replaced, never fatal.
pub fn parse_reader(
    format: Format,
    year: i32,
    mut input: impl BufRead,
    mut sink: impl FnMut(Event),
) -> std::io::Result<Summary> {
    let mut summary = Summary::default();
    let mut auth = auth::AuthParser::new(year);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf);
        let kind = match format {
            Format::Auth => auth.push_line(&line, &mut out),
            Format::Dpkg => dpkg::push_line(&line, &mut out),
            Format::K8sAudit => k8s_audit::push_line(&line, &mut out),
        };
        summary.count(kind, &line);
        for event in out.drain(..) {
            *summary.events.entry(label(&event)).or_default() += 1;
            sink(event);
        }
    }
    auth.finish(&mut out);
    for event in out.drain(..) {
        *summary.events.entry(label(&event)).or_default() += 1;
        sink(event);
    }
    Ok(summary)
}
