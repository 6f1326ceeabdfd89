//! The on-disk spool: every batch is appended here *before* it is sent, and removed only when
//! an acknowledgement covers it, so a reboot, a power cut or a week-long outage loses nothing.
//!
//! Layout of the spool directory:
//! * `state` — `epoch acked` as text, replaced atomically (write, fsync, rename). `epoch`
//!   changes only when the spool is lost (a new directory); `acked` is the exclusive upper
//!   bound of acknowledged sequence numbers.
//! * `seg-NNNNNNNNNNNNNNNNNNNN` — segment files named by their first record's sequence number.
//!   Each record is `len: u32 LE | crc32(payload): u32 LE | first_seq: u64 LE | count: u32 LE |
//!   payload`, the payload being the encoded envelope frame exactly as it is sent.
//!
//! On open, a record that is cut short or fails its checksum (a write torn by a power cut)
//! ends its segment: the rest is cut off and counted, never a crash loop. Sequence numbers
//! continue after the last intact record, so no gap appears downstream.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const HEADER: usize = 20;
const STATE: &str = "state";
const SEGMENT_PREFIX: &str = "seg-";
/// Largest record accepted on replay; anything claiming more is corrupt.
const MAX_RECORD: u32 = 16 << 20;

/// One spooled batch, located on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Segment it lives in (the segment's name).
    pub segment: u64,
    /// Byte offset of the record header in the segment.
    pub offset: u64,
    /// Payload length.
    pub len: u32,
    /// Sequence number of the batch's first event.
    pub first_seq: u64,
    /// Number of events in the batch.
    pub count: u32,
}

impl Record {
    /// One past the batch's last sequence number.
    pub fn end_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count)
    }

    fn bytes(&self) -> u64 {
        HEADER as u64 + u64::from(self.len)
    }
}

/// What opening the spool found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// True when no state existed and a new epoch was started.
    pub new_epoch: bool,
    /// Records cut off because they were torn or corrupt.
    pub torn_records: u64,
    /// Events in those records, where their header survived.
    pub torn_events: u64,
    /// True when the state file was unreadable and was replaced.
    pub state_corrupt: bool,
    /// Records found waiting for an acknowledgement.
    pub replay_records: usize,
}

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The spool is at its byte cap.
    #[error("spool full: {used} of {cap} bytes used, record needs {need}")]
    Full {
        /// Bytes in use.
        used: u64,
        /// The cap.
        cap: u64,
        /// What the record needs.
        need: u64,
    },
    /// The disk refused the write.
    #[error("spool write failed: {0}")]
    Io(#[from] io::Error),
}

/// The spool. Not thread-safe by itself; the agent keeps it behind a mutex and never holds
/// that across an `.await`.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    epoch: u64,
    acked: u64,
    next_seq: u64,
    /// Unacknowledged records, oldest first.
    records: VecDeque<Record>,
    /// Segment names, oldest first; the last one is appended to.
    segments: VecDeque<u64>,
    /// The open file of the last segment and its length.
    active: Option<(File, u64)>,
    /// Bytes of all segment files.
    bytes: u64,
    /// Whether appends are flushed to the device before they count as spooled.
    fsync: bool,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, repairing a torn tail.
    pub fn open(dir: &Path, max_bytes: u64, fsync: bool) -> io::Result<(Self, OpenReport)> {
        fs::create_dir_all(dir)?;
        let mut report = OpenReport::default();
        let (epoch, acked) = match read_state(dir)? {
            Some(Some(state)) => state,
            None => {
                report.new_epoch = true;
                (new_epoch(), 0)
            }
            Some(None) => {
                // A state file that is not ours any more. Refusing to start would
                // be a crash loop; the records below decide (after the scan) whether the old
                // epoch can be recovered.
                report.state_corrupt = true;
                (new_epoch(), 0)
            }
        };
        let mut names: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_prefix(SEGMENT_PREFIX)?.parse().ok())
            .collect();
        names.sort_unstable();

        let mut spool = Self {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes: (max_bytes / 16).clamp(64 << 10, 4 << 20),
            epoch,
            acked,
            next_seq: acked,
            records: VecDeque::new(),
            segments: VecDeque::new(),
            active: None,
            bytes: 0,
            fsync,
        };
        for name in names {
            let path = spool.segment_path(name);
            let Scan { records, good_len, torn } = scan_segment(&path, name)?;
            if let Some((torn_records, torn_events)) = torn {
                report.torn_records += torn_records;
                report.torn_events += torn_events;
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(good_len)?;
                file.sync_all()?;
            }
            if good_len == 0 {
                fs::remove_file(&path)?;
                continue;
            }
            for r in records {
                spool.next_seq = spool.next_seq.max(r.end_seq());
                if r.end_seq() > spool.acked {
                    spool.records.push_back(r);
                }
            }
            spool.bytes += good_len;
            spool.segments.push_back(name);
        }
        if report.state_corrupt {
            // The intact records know their epoch: continue it, replaying all of them
            // (downstream deduplication absorbs any repeat). With none left, start afresh.
            let recovered = spool.records.front().copied().and_then(|first| {
                let frame = spool.read(&first).ok()?;
                let envelope: wire::Envelope = wire::decode(&frame).ok()?;
                Some((envelope.epoch, first.first_seq))
            });
            match recovered {
                Some((epoch, acked)) => {
                    spool.epoch = epoch;
                    spool.acked = acked;
                }
                None => report.new_epoch = true,
            }
        }
        if report.state_corrupt || report.new_epoch {
            write_state(dir, spool.epoch, spool.acked)?;
        }
        report.replay_records = spool.records.len();
        spool.remove_acked_segments()?;
        Ok((spool, report))
    }

    /// The spool's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The sequence number the next batch starts at.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Exclusive upper bound of acknowledged sequence numbers.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The byte cap.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Unacknowledged records, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Record> {
        self.records.iter()
    }

    /// The first unacknowledged record at or after `seq`.
    pub fn pending_from(&self, seq: u64) -> Option<Record> {
        self.records.iter().find(|r| r.end_seq() > seq).copied()
    }

    /// Appends a batch of `count` events starting at [`Spool::next_seq`], whose encoded
    /// envelope is `frame`. On success the batch is on disk (and flushed when `fsync` is on).
    pub fn append(&mut self, count: u32, frame: &[u8]) -> Result<Record, AppendError> {
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|&l| l <= MAX_RECORD)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "record too large"))?;
        let need = HEADER as u64 + u64::from(len);
        if self.bytes + need > self.max_bytes {
            return Err(AppendError::Full { used: self.bytes, cap: self.max_bytes, need });
        }
        let roll = match &self.active {
            None => true,
            Some((_, size)) => *size + need > self.segment_bytes && *size > 0,
        };
        if roll {
            let name = self.next_seq;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(self.segment_path(name))?;
            let size = file.metadata()?.len();
            if self.segments.back() != Some(&name) {
                self.segments.push_back(name);
            }
            self.active = Some((file, size));
        }
        let (file, size) = self.active.as_mut().expect("an active segment was just ensured");
        let mut buf = Vec::with_capacity(HEADER + frame.len());
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(frame).to_le_bytes());
        buf.extend_from_slice(&self.next_seq.to_le_bytes());
        buf.extend_from_slice(&count.to_le_bytes());
        buf.extend_from_slice(frame);
        if let Err(e) =
            file.write_all(&buf).and_then(|()| if self.fsync { file.sync_data() } else { Ok(()) })
        {
            // Leave no half record behind for the next append to follow.
            let _ = file.set_len(*size);
            return Err(e.into());
        }
        let record = Record {
            segment: *self.segments.back().expect("segment pushed"),
            offset: *size,
            len,
            first_seq: self.next_seq,
            count,
        };
        *size += need;
        self.bytes += need;
        self.next_seq += u64::from(count);
        self.records.push_back(record);
        Ok(record)
    }

    /// Reads a record's payload (the envelope frame).
    pub fn read(&self, record: &Record) -> io::Result<Vec<u8>> {
        let file = File::open(self.segment_path(record.segment))?;
        let mut buf = vec![0u8; record.len as usize];
        file.read_exact_at(&mut buf, record.offset + HEADER as u64)?;
        Ok(buf)
    }

    /// Records that everything below `up_to_seq` is stored upstream: drops those records,
    /// deletes segments that hold nothing else and persists the watermark. Acks that do not
    /// advance the watermark are ignored.
    pub fn ack(&mut self, up_to_seq: u64) -> io::Result<()> {
        let up_to_seq = up_to_seq.min(self.next_seq);
        if up_to_seq <= self.acked {
            return Ok(());
        }
        self.acked = up_to_seq;
        while self.records.front().is_some_and(|r| r.end_seq() <= up_to_seq) {
            self.records.pop_front();
        }
        write_state(&self.dir, self.epoch, self.acked)?;
        self.remove_acked_segments()
    }

    /// Deletes every segment but the active one whose records are all acknowledged.
    fn remove_acked_segments(&mut self) -> io::Result<()> {
        let oldest_needed = self.records.front().map(|r| r.segment);
        while self.segments.len() > 1 || (self.records.is_empty() && !self.segments.is_empty()) {
            let name = self.segments[0];
            if oldest_needed.is_some_and(|n| n <= name) {
                break;
            }
            let is_active = self.segments.len() == 1;
            if is_active {
                // Everything is acknowledged: start the next segment afresh.
                self.active = None;
            }
            let path = self.segment_path(name);
            let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            self.bytes = self.bytes.saturating_sub(size);
            self.segments.pop_front();
        }
        Ok(())
    }

    fn segment_path(&self, name: u64) -> PathBuf {
        self.dir.join(format!("{SEGMENT_PREFIX}{name:020}"))
    }
}

/// What scanning a segment found.
struct Scan {
    /// The intact records, in order.
    records: Vec<Record>,
    /// Length of the intact prefix.
    good_len: u64,
    /// When the segment was cut short or corrupt: records and events lost.
    torn: Option<(u64, u64)>,
}

/// Reads a segment's intact records.
fn scan_segment(path: &Path, name: u64) -> io::Result<Scan> {
    let mut file = File::open(path)?;
    let total = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    let mut data = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    file.read_to_end(&mut data)?;
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = &data[pos..];
        let header = rest.get(..HEADER);
        let parsed = header.map(|h| {
            let len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
            let first_seq = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
            let count = u32::from_le_bytes(h[16..20].try_into().expect("4 bytes"));
            (len, crc, first_seq, count)
        });
        let intact = parsed.and_then(|(len, crc, first_seq, count)| {
            let payload = rest.get(HEADER..HEADER + len as usize)?;
            (len <= MAX_RECORD && crc32fast::hash(payload) == crc).then_some(Record {
                segment: name,
                offset: pos as u64,
                len,
                first_seq,
                count,
            })
        });
        match intact {
            Some(r) => {
                pos += r.bytes() as usize;
                records.push(r);
            }
            None => {
                // Events of the torn record, if its header survived and looks sane.
                let events = parsed
                    .filter(|(len, ..)| *len <= MAX_RECORD)
                    .map_or(0, |(.., count)| u64::from(count));
                return Ok(Scan { records, good_len: pos as u64, torn: Some((1, events)) });
            }
        }
    }
    Ok(Scan { records, good_len: pos as u64, torn: None })
}

/// `None`: no state file; `Some(None)`: a state file that does not parse.
fn read_state(dir: &Path) -> io::Result<Option<Option<(u64, u64)>>> {
    match fs::read(dir.join(STATE)) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let mut parts = text.split_whitespace().map(str::parse::<u64>);
            match (parts.next(), parts.next()) {
                (Some(Ok(epoch)), Some(Ok(acked))) => Ok(Some(Some((epoch, acked)))),
                _ => Ok(Some(None)),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_state(dir: &Path, epoch: u64, acked: u64) -> io::Result<()> {
    let tmp = dir.join("state.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(format!("{epoch} {acked}\n").as_bytes())?;
    file.sync_data()?;
    fs::rename(&tmp, dir.join(STATE))?;
    Ok(())
}

/// A fresh epoch: the wall clock in nanoseconds, so a node that loses its spool never reuses
/// an epoch (even without a real-time clock, boot-time clocks only go forward across restarts
/// of one install in practice; a collision would need the same nanosecond).
fn new_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
