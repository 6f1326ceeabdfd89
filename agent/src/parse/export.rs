//! The systemd journal's export format (`journalctl --output=export`), read as a stream of
//! entries. An entry is a run of fields ended by an empty line; a field is `KEY=value\n`, or,
//! when the value may hold a newline or binary data, `KEY\n`, a 64-bit little-endian length,
//! the value and `\n` (systemd's `JOURNAL_EXPORT_FORMATS`). Only the fields the agent reads
//! are kept. Values over [`MAX_VALUE`] are skipped without being buffered and the entry is
//! marked `oversized`; input that breaks the format is an error, never a panic.

use std::io::{BufRead, Read};

/// Largest value kept, in bytes (a journal `MESSAGE` is at most 48 KiB by default).
pub const MAX_VALUE: u64 = 64 * 1024;
/// Longest `KEY=value` line read before the entry is given up as malformed.
const MAX_LINE: u64 = MAX_VALUE + 256;

/// The fields of an entry the agent uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// `__CURSOR`: where this entry is, to resume after it.
    pub cursor: String,
    /// `_SOURCE_REALTIME_TIMESTAMP`, else `__REALTIME_TIMESTAMP`, microseconds since the epoch.
    pub realtime_us: Option<i64>,
    /// `_TRANSPORT` (`syslog`, `journal`, `stdout`, `kernel`, …).
    pub transport: String,
    /// `SYSLOG_IDENTIFIER`, else `_COMM`.
    pub identifier: String,
    /// `SYSLOG_PID`, else `_PID`.
    pub pid: Option<u32>,
    /// `_UID`: the sender's user, which journald records itself (a trusted field: no
    /// program can set it for its own entries).
    pub uid: Option<u32>,
    /// `MESSAGE` (lossy UTF-8).
    pub message: String,
    /// A value was longer than [`MAX_VALUE`] and skipped.
    pub oversized: bool,
}

/// Builds an [`Entry`] from its fields, in any order, with the fallbacks applied at the end
/// (`SYSLOG_IDENTIFIER` over `_COMM`, `SYSLOG_PID` over `_PID`, the sender's own timestamp over
/// journald's). Shared by the export reader and the journal-file reader.
#[derive(Debug, Default)]
pub struct EntryBuilder {
    entry: Entry,
    comm: String,
    pid: Option<u32>,
    source_us: Option<i64>,
}

impl EntryBuilder {
    /// Keeps `value` if `key` is a field the agent uses.
    pub fn field(&mut self, key: &[u8], value: &[u8]) {
        let text = || String::from_utf8_lossy(value).into_owned();
        let number = || std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        let e = &mut self.entry;
        match key {
            b"__CURSOR" => e.cursor = text(),
            b"__REALTIME_TIMESTAMP" => e.realtime_us = number(),
            b"_SOURCE_REALTIME_TIMESTAMP" => self.source_us = number(),
            b"_TRANSPORT" => e.transport = text(),
            b"SYSLOG_IDENTIFIER" => e.identifier = text(),
            b"_COMM" => self.comm = text(),
            b"SYSLOG_PID" => e.pid = number().and_then(|n: i64| u32::try_from(n).ok()),
            b"_PID" => self.pid = number().and_then(|n: i64| u32::try_from(n).ok()),
            b"_UID" => e.uid = number().and_then(|n: i64| u32::try_from(n).ok()),
            b"MESSAGE" => e.message = text(),
            _ => {}
        }
    }

    /// Marks the entry as having had a value too long to keep.
    pub fn oversized(&mut self) {
        self.entry.oversized = true;
    }

    /// The entry, fallbacks applied.
    pub fn finish(self) -> Entry {
        let mut entry = self.entry;
        if entry.identifier.is_empty() {
            entry.identifier = self.comm;
        }
        if entry.pid.is_none() {
            entry.pid = self.pid;
        }
        if self.source_us.is_some() {
            entry.realtime_us = self.source_us;
        }
        entry
    }
}

/// Reads entries from export-format input.
#[derive(Debug)]
pub struct ExportReader<R> {
    input: R,
}

impl<R: BufRead> ExportReader<R> {
    /// A reader over `input`.
    pub fn new(input: R) -> Self {
        Self { input }
    }

    /// Whether the input has nothing buffered: the next read may wait for more.
    pub fn caught_up(&self) -> bool
    where
        R: Buffered,
    {
        self.input.buffered() == 0
    }

    /// The next entry; `None` at the end of the input (a partial last entry is dropped).
    pub fn next_entry(&mut self) -> std::io::Result<Option<Entry>> {
        let mut entry = EntryBuilder::default();
        let mut any = false;
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut self.input).take(MAX_LINE).read_until(b'\n', &mut line)?;
            if n == 0 {
                return Ok(None);
            }
            if line.last() != Some(&b'\n') {
                if n as u64 >= MAX_LINE {
                    return Err(invalid("a field line longer than the limit"));
                }
                // The end of the input inside an entry.
                return Ok(None);
            }
            line.pop();
            if line.is_empty() {
                if !any {
                    continue;
                }
                break;
            }
            any = true;
            match line.iter().position(|&b| b == b'=') {
                Some(eq) => entry.field(&line[..eq], &line[eq + 1..]),
                None => {
                    let mut len = [0u8; 8];
                    self.input.read_exact(&mut len)?;
                    let len = u64::from_le_bytes(len);
                    if len > MAX_VALUE {
                        entry.oversized();
                        let skipped =
                            std::io::copy(&mut (&mut self.input).take(len), &mut std::io::sink())?;
                        if skipped < len {
                            return Ok(None);
                        }
                    } else {
                        let mut value = Vec::with_capacity(len as usize);
                        (&mut self.input).take(len).read_to_end(&mut value)?;
                        if (value.len() as u64) < len {
                            return Ok(None);
                        }
                        entry.field(&line, &value);
                    }
                    let mut nl = [0u8; 1];
                    self.input.read_exact(&mut nl)?;
                    if nl[0] != b'\n' {
                        return Err(invalid("a binary field not followed by a newline"));
                    }
                }
            }
        }
        Ok(Some(entry.finish()))
    }
}

/// Input that can say how much it holds already read (a `BufReader`).
pub trait Buffered {
    /// Bytes buffered and not yet consumed.
    fn buffered(&self) -> usize;
}

impl<R: Read> Buffered for std::io::BufReader<R> {
    fn buffered(&self) -> usize {
        self.buffer().len()
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("journal export: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary_field(key: &str, value: &[u8]) -> Vec<u8> {
        let mut v = format!("{key}\n").into_bytes();
        v.extend_from_slice(&(value.len() as u64).to_le_bytes());
        v.extend_from_slice(value);
        v.push(b'\n');
        v
    }

    #[test]
    fn text_and_binary_fields_and_fallbacks() {
        let mut input = b"__CURSOR=s=1;i=1\n__REALTIME_TIMESTAMP=1765000000000000\n_TRANSPORT=syslog\n_COMM=sshd-session\n_PID=42\n_HOSTNAME=pi-1\n".to_vec();
        input.extend(binary_field("MESSAGE", b"line one\nline two"));
        input.extend(b"\n__CURSOR=s=1;i=2\n_SOURCE_REALTIME_TIMESTAMP=5\n__REALTIME_TIMESTAMP=9\nSYSLOG_IDENTIFIER=sudo\nSYSLOG_PID=7\n_PID=8\nMESSAGE=x=y\n\n");
        let mut r = ExportReader::new(&input[..]);
        let a = r.next_entry().unwrap().unwrap();
        assert_eq!(
            (a.cursor.as_str(), a.identifier.as_str(), a.pid, a.realtime_us),
            ("s=1;i=1", "sshd-session", Some(42), Some(1_765_000_000_000_000))
        );
        assert_eq!(a.message, "line one\nline two");
        let b = r.next_entry().unwrap().unwrap();
        assert_eq!((b.identifier.as_str(), b.pid, b.realtime_us), ("sudo", Some(7), Some(5)));
        assert_eq!(b.message, "x=y");
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn oversized_values_are_skipped_and_broken_input_is_an_error_not_a_panic() {
        let mut input = b"__CURSOR=c1\n".to_vec();
        input.extend(binary_field("MESSAGE", &vec![b'a'; (MAX_VALUE + 1) as usize]));
        input.extend(b"\n");
        let mut r = ExportReader::new(&input[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert!(e.oversized && e.message.is_empty() && e.cursor == "c1");
        // A length that runs past the end, a missing newline, garbage, truncation.
        for bad in [
            b"MESSAGE\n\xff\xff\xff\xff\xff\xff\xff\x7f".to_vec(),
            b"MESSAGE\n\x01\x00\x00\x00\x00\x00\x00\x00ab".to_vec(),
            b"\x00\x01\x02".to_vec(),
            b"__CURSOR=x".to_vec(),
            Vec::new(),
        ] {
            let mut r = ExportReader::new(&bad[..]);
            let _ = r.next_entry();
        }
    }
}
