//! `/var/log/dpkg.log` → `Package` events.
//!
//! Lines are `YYYY-MM-DD HH:MM:SS <what> …`. `install`, `upgrade`, `remove` and `purge` are
//! the package changes; `status`, `configure`, `trigproc`, `startup` and `conffile` lines are
//! known and carry nothing new. dpkg writes local time without a zone; it is read as UTC
//! (set the node's timezone to UTC, as k3s nodes usually are, for exact times).

use wire::{Event, EventKind, Severity, Source, Timestamp};

use super::LineKind;

/// Parses one line, appending an event for a package change.
pub fn push_line(line: &str, out: &mut Vec<Event>) -> LineKind {
    let line = line.trim_end_matches(['\r', '\n']);
    let mut parts = line.split(' ');
    let (Some(date), Some(clock), Some(what)) = (parts.next(), parts.next(), parts.next()) else {
        return LineKind::Unparsed;
    };
    let Some(ts) = Timestamp::parse_rfc3339(&format!("{date}T{clock}Z")) else {
        return LineKind::Unparsed;
    };
    let fields: Vec<&str> = parts.collect();
    match what {
        "install" | "upgrade" | "remove" | "purge" => {
            let [name, old, new] = fields[..] else { return LineKind::Unparsed };
            let version = if new == "<none>" { old } else { new };
            let mut event = Event::new(
                ts,
                Source::Dpkg,
                Severity::Info,
                EventKind::Package {
                    name: name.to_owned(),
                    version: version.to_owned(),
                    action: what.to_owned(),
                },
            );
            if what == "upgrade" {
                event.attrs.push(("previous_version".into(), wire::Value::Str(old.to_owned())));
            }
            out.push(event);
            LineKind::Event
        }
        "status" | "configure" | "trigproc" | "startup" | "conffile" => LineKind::Known,
        _ => LineKind::Unparsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_changes() {
        let mut out = Vec::new();
        let lines = [
            "2025-03-01 10:23:45 startup archives unpack",
            "2025-03-01 10:23:46 install openssh-server:arm64 <none> 1:9.2p1-2+deb12u3",
            "2025-03-01 10:23:46 status half-installed openssh-server:arm64 1:9.2p1-2+deb12u3",
            "2025-03-01 10:23:47 upgrade libc6:arm64 2.36-9+deb12u3 2.36-9+deb12u4",
            "2025-03-01 10:23:48 remove nano:arm64 7.2-1 <none>",
            "2025-03-01 10:23:49 purge nano:arm64 7.2-1 <none>",
            "2025-03-01 10:23:49 configure openssh-server:arm64 1:9.2p1-2+deb12u3 <none>",
            "garbage",
            "2025-03-01 10:23:49 install too few",
        ];
        let kinds: Vec<LineKind> = lines.iter().map(|l| push_line(l, &mut out)).collect();
        assert_eq!(kinds.iter().filter(|k| **k == LineKind::Event).count(), 4);
        assert_eq!(kinds.iter().filter(|k| **k == LineKind::Unparsed).count(), 2);
        match &out[1].kind {
            EventKind::Package { name, version, action } => {
                assert_eq!(
                    (name.as_str(), version.as_str(), action.as_str()),
                    ("libc6:arm64", "2.36-9+deb12u4", "upgrade")
                );
            }
            other => panic!("{other:?}"),
        }
        match &out[2].kind {
            EventKind::Package { version, action, .. } => {
                assert_eq!((version.as_str(), action.as_str()), ("7.2-1", "remove"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out[0].ts, Timestamp::parse_rfc3339("2025-03-01T10:23:46Z").unwrap());
    }
}
