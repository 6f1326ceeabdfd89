//! Kernel messages (the journal's `_TRANSPORT=kernel` entries, `dmesg`) into events. Only the
//! few that matter to a security audit of a node become events, each an
//! [`EventKind::Generic`] of source `kernel` whose `event_type` says what happened
//! (docs/agent.md has the table):
//!
//! * `kernel_oom_kill`: `Out of memory: Killed process 1234 (java) …` (and the cgroup form
//!   `Memory cgroup out of memory: Killed process …`); fields `process`, `pid`;
//! * `kernel_segfault`: `java[1234]: segfault at 0 ip … error 4 in libc.so.6[…]`; fields
//!   `process`, `pid`, `detail`;
//! * `kernel_usb_device`: `usb 1-1: New USB device found, idVendor=0781, idProduct=5583, …`;
//!   fields `port`, `vendor`, `product`;
//! * `kernel_apparmor_denied`: `audit: type=1400 audit(…): apparmor="DENIED"
//!   operation="open" profile="…" name="…" pid=… comm="…"`; fields `operation`, `profile`,
//!   `name`, `process`, `pid`.
//!
//! Every other kernel message is [`LineKind::Known`]: the kernel says a great deal, and none of
//! the rest is a parser failure.

use wire::{Event, EventKind, Severity, Source, Timestamp, Value};

use super::LineKind;

/// Parses one kernel message, appending any event to `out`.
pub fn push_message(ts: Timestamp, msg: &str, out: &mut Vec<Event>) -> LineKind {
    let msg = msg.trim();
    if let Some(at) = msg.find("Killed process ")
        && msg[..at].to_ascii_lowercase().contains("out of memory")
    {
        let rest = &msg[at + "Killed process ".len()..];
        let (pid, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let process = rest.strip_prefix('(').and_then(|r| r.split_once(')')).map(|(p, _)| p);
        out.push(event(
            ts,
            Severity::Warning,
            "kernel_oom_kill",
            vec![("process", process.unwrap_or("").into()), ("pid", pid_value(pid))],
        ));
        return LineKind::Event;
    }
    if let Some((head, detail)) = msg.split_once(": segfault at ") {
        let (process, pid) = match head.rsplit_once('[') {
            Some((p, rest)) => (p, rest.trim_end_matches(']')),
            None => (head, ""),
        };
        out.push(event(
            ts,
            Severity::Warning,
            "kernel_segfault",
            vec![
                ("process", process.into()),
                ("pid", pid_value(pid)),
                ("detail", format!("segfault at {}", truncate(detail, 200))),
            ],
        ));
        return LineKind::Event;
    }
    if let Some(rest) = msg.strip_prefix("usb ")
        && let Some((port, found)) = rest.split_once(": New USB device found, ")
    {
        let vendor = key_value(found, "idVendor=").unwrap_or("");
        let product = key_value(found, "idProduct=").unwrap_or("");
        out.push(event(
            ts,
            Severity::Info,
            "kernel_usb_device",
            vec![("port", port.into()), ("vendor", vendor.into()), ("product", product.into())],
        ));
        return LineKind::Event;
    }
    if msg.contains("apparmor=\"DENIED\"") {
        let field = |k: &str| quoted(msg, k).unwrap_or("").to_owned();
        let pid = key_value(msg, " pid=").unwrap_or("");
        out.push(event(
            ts,
            Severity::Warning,
            "kernel_apparmor_denied",
            vec![
                ("operation", field("operation=")),
                ("profile", field("profile=")),
                ("name", field("name=")),
                ("process", field("comm=")),
                ("pid", pid_value(pid)),
            ],
        ));
        return LineKind::Event;
    }
    LineKind::Known
}

fn event(
    ts: Timestamp,
    severity: Severity,
    event_type: &str,
    fields: Vec<(&str, String)>,
) -> Event {
    let fields = fields
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::Str(truncate(&v, 256).into())))
        .collect();
    Event::new(
        ts,
        Source::Kernel,
        severity,
        EventKind::Generic { event_type: event_type.into(), fields },
    )
}

/// A pid as text (kept as the kernel wrote it; empty when absent or not a number).
fn pid_value(pid: &str) -> String {
    if pid.chars().all(|c| c.is_ascii_digit()) { pid.to_owned() } else { String::new() }
}

/// The value after `key` up to the next space or comma.
fn key_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(key)? + key.len();
    let rest = &text[at..];
    Some(rest.split([' ', ',']).next().unwrap_or(rest))
}

/// The double-quoted value after `key`.
fn quoted<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let rest = &text[text.find(key)? + key.len()..];
    let rest = rest.strip_prefix('"')?;
    rest.split_once('"').map(|(v, _)| v)
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(msg: &str) -> (LineKind, Vec<(String, String)>, String) {
        let mut out = Vec::new();
        let kind = push_message(Timestamp(0), msg, &mut out);
        let Some(e) = out.pop() else { return (kind, Vec::new(), String::new()) };
        assert_eq!(e.source, Source::Kernel);
        let EventKind::Generic { event_type, fields } = e.kind else { panic!("generic") };
        let fields = fields
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
            .collect();
        (kind, fields, event_type)
    }

    fn get(fields: &[(String, String)], key: &str) -> String {
        fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default()
    }

    #[test]
    fn the_messages_that_matter_become_events() {
        let (k, f, t) = one(
            "Out of memory: Killed process 1234 (java) total-vm:8123456kB, anon-rss:2345678kB, file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:5000kB oom_score_adj:0",
        );
        assert_eq!((k, t.as_str()), (LineKind::Event, "kernel_oom_kill"));
        assert_eq!((get(&f, "process"), get(&f, "pid")), ("java".into(), "1234".into()));
        let (_, f, t) = one("Memory cgroup out of memory: Killed process 777 (node) total-vm:1kB");
        assert_eq!((t.as_str(), get(&f, "process")), ("kernel_oom_kill", "node".into()));
        let (_, f, t) = one(
            "python3[4242]: segfault at 0 ip 00007f1c2a3b4c5d sp 00007ffd1e2f3a40 error 4 in libc.so.6[7f1c2a300000+195000] likely on CPU 2 (core 2, socket 0)",
        );
        assert_eq!(
            (t.as_str(), get(&f, "process"), get(&f, "pid")),
            ("kernel_segfault", "python3".into(), "4242".into())
        );
        let (_, f, t) =
            one("usb 1-1.2: New USB device found, idVendor=0781, idProduct=5583, bcdDevice= 1.00");
        assert_eq!(
            (t.as_str(), get(&f, "port"), get(&f, "vendor"), get(&f, "product")),
            ("kernel_usb_device", "1-1.2".into(), "0781".into(), "5583".into())
        );
        let (_, f, t) = one(
            "audit: type=1400 audit(1733480000.123:456): apparmor=\"DENIED\" operation=\"open\" class=\"file\" profile=\"/usr/sbin/cupsd\" name=\"/etc/shadow\" pid=2345 comm=\"cupsd\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0",
        );
        assert_eq!(
            (t.as_str(), get(&f, "profile"), get(&f, "name"), get(&f, "process"), get(&f, "pid")),
            (
                "kernel_apparmor_denied",
                "/usr/sbin/cupsd".into(),
                "/etc/shadow".into(),
                "cupsd".into(),
                "2345".into()
            )
        );
    }

    #[test]
    fn everything_else_is_known_and_nothing_panics() {
        for msg in [
            "",
            "Booting Linux on physical CPU 0x0000000000 [0x414fd0b1]",
            "usb 1-1: USB disconnect, device number 2",
            "Killed process",
            "Out of memory: Killed process ",
            ": segfault at ",
            "[: segfault at x",
            "apparmor=\"DENIED\" profile=\"unterminated",
            "usb : New USB device found, idVendor=",
            "é: segfault at é",
        ] {
            let mut out = Vec::new();
            let kind = push_message(Timestamp(0), msg, &mut out);
            assert!(kind != LineKind::Unparsed, "{msg}");
        }
    }
}
