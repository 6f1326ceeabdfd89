//! Syslog line headers: classic BSD (`Dec 10 06:55:46 host prog[pid]: msg`), RFC 3339
//! timestamps as rsyslog writes them by default on Debian (`2025-06-01T12:00:00.123456+02:00
//! host prog[pid]: msg`), ISO 8601 with a colon-less offset (`journalctl -o short-iso`) and
//! RFC 5424 (`<34>1 2025-06-01T12:00:00Z host prog pid - - msg`). The program may carry a
//! module in parentheses, as older syslog daemons on Red Hat-family hosts write PAM's lines
//! (`sshd(pam_unix)[812]: …`); it is kept as it is, for the parsers to read.
//!
//! Classic lines carry no year; [`YearTracker`] supplies one (from `--year`, the file's
//! modification time or the current year) and moves to the next year when the month goes
//! back (a December → January rollover inside one file).

use wire::Timestamp;

/// One parsed header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// Event time.
    pub ts: Timestamp,
    /// The host field.
    pub host: &'a str,
    /// The program (`sshd`, `sudo`, `su`).
    pub program: &'a str,
    /// The process id, when the line has one.
    pub pid: Option<u32>,
    /// The message after `prog[pid]: `.
    pub message: &'a str,
}

/// Supplies years to classic syslog timestamps.
#[derive(Clone, Debug)]
pub struct YearTracker {
    year: i32,
    last_month: Option<u8>,
}

impl YearTracker {
    /// Starts at `year`.
    pub fn new(year: i32) -> Self {
        Self { year, last_month: None }
    }

    /// The year for a line of `month` (1–12), advancing on a rollover.
    fn year_for(&mut self, month: u8) -> i32 {
        if self.last_month.is_some_and(|last| month + 6 < last) {
            self.year += 1;
        }
        self.last_month = Some(month);
        self.year
    }
}

const MONTHS: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Parses a header; `None` for a line in no known format.
pub fn parse<'a>(line: &'a str, years: &mut YearTracker) -> Option<Line<'a>> {
    let line = line.trim_end_matches(['\r', '\n']);
    if let Some(rest) = line.strip_prefix('<') {
        return parse_5424(rest);
    }
    if line.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        let (ts, rest) = line.split_once(' ')?;
        return parse_tail(iso8601(ts)?, rest);
    }
    // Classic: "Mmm dd HH:MM:SS " — day may be space-padded.
    let month = MONTHS.iter().position(|m| line.starts_with(m))? as u8 + 1;
    let rest = line.get(3..)?.trim_start();
    let (day, rest) = rest.split_once(' ')?;
    let day: u8 = day.parse().ok()?;
    let (clock, rest) = rest.split_once(' ')?;
    let mut hms = clock.split(':').map(str::parse::<u8>);
    let (h, m, s) = (hms.next()?.ok()?, hms.next()?.ok()?, hms.next()?.ok()?);
    if hms.next().is_some() {
        return None;
    }
    let year = years.year_for(month);
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    let dt = date.with_hms(h, m, s).ok()?.assume_utc();
    parse_tail(Timestamp::from(dt), rest)
}

/// An RFC 3339 time (rsyslog's high-precision format: fraction and offset), or ISO 8601 with
/// an offset written without a colon (`journalctl -o short-iso`: `2025-06-01T12:00:00+0200`).
fn iso8601(text: &str) -> Option<Timestamp> {
    if let Some(ts) = Timestamp::parse_rfc3339(text) {
        return Some(ts);
    }
    let split = text.len().checked_sub(5)?;
    let (head, offset) = (text.get(..split)?, text.get(split..)?);
    let bytes = offset.as_bytes();
    if matches!(bytes[0], b'+' | b'-') && bytes[1..].iter().all(u8::is_ascii_digit) {
        return Timestamp::parse_rfc3339(&format!("{head}{}:{}", &offset[..3], &offset[3..]));
    }
    None
}

/// `host prog[pid]: message`
fn parse_tail(ts: Timestamp, rest: &str) -> Option<Line<'_>> {
    let (host, rest) = rest.split_once(' ')?;
    let (tag, message) =
        rest.split_once(": ").or_else(|| rest.strip_suffix(':').map(|t| (t, "")))?;
    let (program, pid) = match tag.split_once('[') {
        Some((program, pid)) => (program, Some(pid.strip_suffix(']')?.parse().ok()?)),
        None => (tag, None),
    };
    if program.is_empty() || program.contains(' ') {
        return None;
    }
    Some(Line { ts, host, program, pid, message })
}

/// `PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG` (after the `<`).
fn parse_5424(rest: &str) -> Option<Line<'_>> {
    let (_pri, rest) = rest.split_once('>')?;
    let rest = rest.strip_prefix("1 ")?;
    let mut fields = rest.splitn(6, ' ');
    let ts = Timestamp::parse_rfc3339(fields.next()?)?;
    let host = fields.next()?;
    let program = fields.next()?;
    let pid = fields.next()?.parse().ok();
    let _msgid = fields.next()?;
    let rest = fields.next().unwrap_or("");
    // Structured data: "-" or one or more [..] elements.
    let message = if let Some(m) = rest.strip_prefix("- ") {
        m
    } else if rest == "-" {
        ""
    } else if rest.starts_with('[') {
        let end = rest.find("] ").map_or(rest.len(), |i| i + 2);
        rest.get(end..).unwrap_or("")
    } else {
        rest
    };
    Some(Line { ts, host, program, pid, message: message.trim_start_matches('\u{feff}') })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn years() -> YearTracker {
        YearTracker::new(2025)
    }

    #[test]
    fn classic_line() {
        let l =
            parse("Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user x from 1.2.3.4", &mut years())
                .unwrap();
        assert_eq!(l.ts, Timestamp::parse_rfc3339("2025-12-10T06:55:46Z").unwrap());
        assert_eq!((l.host, l.program, l.pid), ("LabSZ", "sshd", Some(24200)));
        assert_eq!(l.message, "Invalid user x from 1.2.3.4");
    }

    #[test]
    fn space_padded_day_and_no_pid() {
        let l = parse("Jan  2 03:04:05 pi sudo: alice : TTY=pts/0", &mut years()).unwrap();
        assert_eq!(l.ts, Timestamp::parse_rfc3339("2025-01-02T03:04:05Z").unwrap());
        assert_eq!((l.program, l.pid), ("sudo", None));
    }

    #[test]
    fn rfc3339_line() {
        let l = parse("2025-06-01T12:00:00.5+02:00 pi sshd[7]: Accepted x", &mut years()).unwrap();
        assert_eq!(l.ts, Timestamp::parse_rfc3339("2025-06-01T10:00:00.5Z").unwrap());
        assert_eq!(l.pid, Some(7));
    }

    #[test]
    fn iso8601_offsets_with_and_without_colon() {
        for line in [
            "2025-06-01T12:00:00.123456+02:00 pi sshd-session[7]: x",
            "2025-06-01T12:00:00.123456+0200 pi sshd-session[7]: x",
        ] {
            let l = parse(line, &mut years()).unwrap();
            assert_eq!(l.ts, Timestamp::parse_rfc3339("2025-06-01T10:00:00.123456Z").unwrap());
            assert_eq!((l.program, l.pid), ("sshd-session", Some(7)));
        }
        assert!(parse("2025-06-01T12:00:00+02x0 pi p: m", &mut years()).is_none());
    }

    #[test]
    fn module_tag() {
        let l =
            parse("Jun  1 12:00:00 rh sshd(pam_unix)[812]: authentication failure;", &mut years())
                .unwrap();
        assert_eq!((l.program, l.pid), ("sshd(pam_unix)", Some(812)));
    }

    #[test]
    fn rfc5424_line() {
        let l = parse("<38>1 2025-06-01T12:00:00Z pi sshd 812 - - Failed password", &mut years())
            .unwrap();
        assert_eq!((l.program, l.pid, l.message), ("sshd", Some(812), "Failed password"));
        let l = parse("<38>1 2025-06-01T12:00:00Z pi sshd 812 ID1 [a b=\"c\"] msg", &mut years())
            .unwrap();
        assert_eq!(l.message, "msg");
    }

    #[test]
    fn year_rolls_over_in_january() {
        let mut y = years();
        let dec = parse("Dec 31 23:59:59 h p: m", &mut y).unwrap();
        let jan = parse("Jan  1 00:00:01 h p: m", &mut y).unwrap();
        assert!(jan.ts > dec.ts);
        assert_eq!(jan.ts, Timestamp::parse_rfc3339("2026-01-01T00:00:01Z").unwrap());
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        for line in [
            "",
            "x",
            "Dec",
            "Dec 99 1:2:3 h p: m",
            "<>",
            "<1>1",
            "2025- h p: m",
            "Feb 30 00:00:00 h p: m",
            "Dec 10 06:55:46 LabSZ",
        ] {
            assert!(parse(line, &mut years()).is_none(), "{line:?}");
        }
    }
}
