//! The on-disk spool: every batch is appended here *before* it is sent, and removed only when
//! an acknowledgement covers it, so a reboot, a power cut or a week-long outage loses nothing.
//!
//! Layout of the spool directory:
//! * `state` — `epoch acked` as text, replaced atomically (write, fsync, rename). `epoch`
//!   changes only when the spool is lost (a new directory); `acked` is the exclusive upper
//!   bound of acknowledged sequence numbers.
//! * `seg-NNNNNNNNNNNNNNNNNNNN` — segment files named by their first record's sequence number.
//!   Each record is `len: u32 LE | crc32: u32 LE | first_seq: u64 LE | count: u32 LE |
//!   payload`, the payload being the encoded envelope frame exactly as it is sent. The CRC
//!   covers `first_seq`, `count` and the payload, which the top bit of `len` says
//!   ([`CRC_COVERS_HEADER`]); records without it, written by earlier agents, have a CRC of
//!   the payload alone and are still read.
//!
//! On open, every segment is scanned:
//! * a record cut short at the end of a segment (a write torn by a power cut) is cut off;
//! * a record that fails its checksum in the middle (a bad sector, a stray write) costs that
//!   record only: the scan resyncs to the next intact record (a header whose length fits,
//!   whose sequence number follows the last intact one and whose payload matches its checksum)
//!   and keeps everything after it. The damaged segment is copied to `quarantine/` for
//!   inspection first;
//! * a segment that cannot be read (an I/O error) is tried three times, then moved to
//!   `quarantine/`, and the agent starts without it.
//!
//! All of it is counted (records, events, bytes) and reported upstream as `spool_corrupt`
//! drops, never a crash loop. Sequence numbers continue after the last intact record.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const HEADER: usize = 20;
const STATE: &str = "state";
/// Where a rebase stages the renumbered records (see [`Spool::rebase`]).
const REBASE: &str = "rebase";
/// Where damaged and unreadable segments are kept for inspection.
pub const QUARANTINE: &str = "quarantine";
/// Most events one record may claim when resyncing (a batch is far smaller).
const MAX_COUNT: u32 = 1 << 20;
/// How far past the last intact record a resynced record's sequence number may start: the
/// events of the damaged records in between.
const MAX_SEQ_GAP: u64 = 1 << 32;
const SEGMENT_PREFIX: &str = "seg-";
/// Largest record accepted on replay; anything claiming more is corrupt.
const MAX_RECORD: u32 = 16 << 20;
/// In `len`: the CRC covers `first_seq` and `count` too (a damaged count would otherwise make
/// a record claim events it does not hold).
pub const CRC_COVERS_HEADER: u32 = 1 << 31;

/// The CRC of a record with its header's sequence number and count.
fn record_crc(first_seq: u64, count: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&first_seq.to_le_bytes());
    h.update(&count.to_le_bytes());
    h.update(payload);
    h.finalize()
}

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
    /// Bytes skipped over damage in the middle of segments (resynced past).
    pub skipped_bytes: u64,
    /// Segments with damage in the middle, copied to `quarantine/`.
    pub damaged_segments: u64,
    /// Segments that could not be read, moved to `quarantine/`.
    pub unreadable_segments: u64,
    /// Records moved to a new epoch because the damage left a hole in their sequence (see
    /// [`Spool::rebase`]).
    pub rebased_records: usize,
}

impl OpenReport {
    /// Whether opening repaired anything.
    pub fn repaired(&self) -> bool {
        self.torn_records > 0
            || self.state_corrupt
            || self.damaged_segments > 0
            || self.unreadable_segments > 0
    }
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
    /// The state file is behind `acked` (its last replacement failed, e.g. on a full disk).
    state_behind: bool,
    /// The sequence position the last drop report was spooled at (see [`Spool::drops_welcome`]).
    drops_at: Option<u64>,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, repairing a torn tail.
    pub fn open(dir: &Path, max_bytes: u64, fsync: bool) -> io::Result<(Self, OpenReport)> {
        fs::create_dir_all(dir)?;
        finish_rebase(dir)?;
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
            state_behind: false,
            drops_at: None,
        };
        for (i, &name) in names.iter().enumerate() {
            let path = spool.segment_path(name);
            let Some(Scan { records, good_len, torn, skipped }) = scan_with_retries(&path, name)
            else {
                report.unreadable_segments += 1;
                report.torn_records += 1;
                // Its events: up to the next segment's first; unknown for the last one.
                let end = names.get(i + 1).copied().unwrap_or(name);
                report.torn_events += end.saturating_sub(name.max(spool.acked));
                quarantine(dir, &path, true);
                continue;
            };
            if skipped.bytes > 0 {
                report.damaged_segments += 1;
                report.skipped_bytes += skipped.bytes;
                report.torn_records += skipped.records;
                report.torn_events += skipped.events;
                quarantine(dir, &path, false);
            }
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
        if report.unreadable_segments > 0 && !report.new_epoch {
            // The lost segment's sequence numbers may have been sent already, and the ones
            // after the last intact record could be given out again: a new epoch keeps new
            // batches from looking like repeats upstream (the intact records keep theirs).
            spool.epoch = new_epoch();
            report.new_epoch = true;
        }
        if report.state_corrupt || report.new_epoch {
            write_state(dir, spool.epoch, spool.acked)?;
        }
        if spool.has_hole() || (report.unreadable_segments > 0 && !spool.records.is_empty()) {
            let moved = spool.records.len();
            let left_out = spool.rebase()?;
            report.torn_events += left_out;
            let (rebased, again) = Self::open(dir, max_bytes, fsync)?;
            spool = rebased;
            report.rebased_records = moved;
            report.new_epoch = true;
            report.replay_records = again.replay_records;
            return Ok((spool, report));
        }
        report.replay_records = spool.records.len();
        // A drop report of the run before may sit at this position (acknowledged and gone, so
        // unseen): the first drop report of this run waits for the next one. A new epoch has
        // no report anywhere yet.
        spool.drops_at = (!report.new_epoch).then_some(spool.next_seq);
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

    /// The waiting record after `last` in append order (the first one for `None`). A sender's
    /// cursor: by sequence number alone a record without events (a drop report) at the
    /// position the cursor already reached would be passed over, never sent, and then
    /// removed by the next acknowledgement with its counts.
    pub fn pending_after(&self, last: Option<&Record>) -> Option<Record> {
        match last {
            None => self.records.front().copied(),
            Some(l) => {
                self.records.iter().find(|r| (r.segment, r.offset) > (l.segment, l.offset)).copied()
            }
        }
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
        buf.extend_from_slice(&(len | CRC_COVERS_HEADER).to_le_bytes());
        buf.extend_from_slice(&record_crc(self.next_seq, count, frame).to_le_bytes());
        buf.extend_from_slice(&self.next_seq.to_le_bytes());
        buf.extend_from_slice(&count.to_le_bytes());
        buf.extend_from_slice(frame);
        if let Err(e) =
            file.write_all(&buf).and_then(|()| if self.fsync { file.sync_data() } else { Ok(()) })
        {
            // Leave no half record behind for the next append to follow.
            let _ = file.set_len(*size);
            if e.kind() == io::ErrorKind::StorageFull {
                // The disk is full before the cap is: the same as the cap (shed by priority,
                // smaller envelopes may still fit), and over once space returns.
                return Err(AppendError::Full { used: self.bytes, cap: self.bytes, need });
            }
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

    /// Whether the records waiting for an acknowledgement leave a hole in the sequence (a
    /// damaged record was resynced past).
    fn has_hole(&self) -> bool {
        let mut expected = self.acked;
        for r in &self.records {
            if r.first_seq > expected {
                return true;
            }
            expected = expected.max(r.end_seq());
        }
        false
    }

    /// Moves every waiting record to a new epoch, renumbered without holes. Upstream
    /// acknowledges only the end of a contiguous run (design.md §4.2): after a hole nothing
    /// would ever be acknowledged again and the spool would only grow. In a new epoch the
    /// records form a run of their own. They are written to `rebase/` first, with a state
    /// file as the commit mark, and then replace the segments ([`finish_rebase`], which also
    /// completes a rebase a crash interrupted). The new numbers start above every old one, so
    /// no segment name is reused. A record already delivered under its old numbers may be
    /// evaluated once more upstream, so each event names its old numbers
    /// ([`wire::model::REBASED_FROM`]) and upstream identifies it by them: the same event id and
    /// the same firing as the first time.
    /// Returns the events of records it had to leave out (counted as `spool_corrupt`).
    fn rebase(&mut self) -> io::Result<u64> {
        let staging = self.dir.join(REBASE);
        if staging.exists() {
            fs::remove_dir_all(&staging)?;
        }
        fs::create_dir_all(&staging)?;
        let epoch = new_epoch();
        let start = self.next_seq;
        let mut fresh = Self {
            dir: staging.clone(),
            max_bytes: u64::MAX,
            segment_bytes: self.segment_bytes,
            epoch,
            acked: start,
            next_seq: start,
            records: VecDeque::new(),
            segments: VecDeque::new(),
            active: None,
            bytes: 0,
            fsync: self.fsync,
            state_behind: false,
            drops_at: None,
        };
        let mut left_out = 0;
        for r in self.records.clone() {
            let frame = self.read(&r)?;
            let Ok(mut envelope) = wire::decode::<wire::Envelope>(&frame) else {
                left_out += u64::from(r.count);
                // Intact by its checksum yet not an envelope: nothing to carry over.
                tracing::warn!(
                    first_seq = r.first_seq,
                    "a spooled record does not decode; left out of the rebase"
                );
                continue;
            };
            for (i, event) in envelope.events.iter_mut().enumerate() {
                event.mark_rebased(self.epoch, r.first_seq + i as u64);
            }
            envelope.epoch = epoch;
            envelope.first_seq = fresh.next_seq;
            fresh.append(r.count, &wire::encode(&envelope)).map_err(|e| match e {
                AppendError::Io(e) => e,
                AppendError::Full { .. } => {
                    io::Error::new(io::ErrorKind::StorageFull, "spool full")
                }
            })?;
        }
        if let Some((file, _)) = &fresh.active {
            file.sync_all()?;
        }
        write_state(&staging, epoch, start)?;
        tracing::warn!(
            records = self.records.len(),
            epoch,
            "spool records moved to a new epoch past a hole in their sequence"
        );
        finish_rebase(&self.dir)?;
        Ok(left_out)
    }

    /// Whether a drop report may ride an envelope at [`Spool::next_seq`]. Upstream
    /// deduplicates a drop report by `(node, epoch, first_seq)` (design.md §4.3); an envelope
    /// without events does not move the position, so a second report there would be taken for
    /// a repeat of the first and its counts lost. One report per position: the next waits
    /// (carried in memory) for an envelope at a new position.
    pub fn drops_welcome(&self) -> bool {
        self.drops_at != Some(self.next_seq)
    }

    /// Notes that a drop report was spooled at `seq`.
    pub fn drops_spooled_at(&mut self, seq: u64) {
        self.drops_at = Some(seq);
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
    /// advance the watermark are ignored (unless the state file is behind: then it is retried).
    pub fn ack(&mut self, up_to_seq: u64) -> io::Result<()> {
        self.ack_where(up_to_seq, |_| true)
    }

    /// Like [`Spool::ack`], for a sender that has sent the records up to `sent_through` (in
    /// append order; `None`: nothing yet) and no further: a record it has not sent stays, even
    /// at or below the bound. By sequence number alone an acknowledgement of the records
    /// before a drop report without events, at the same position, would remove that report
    /// unsent.
    pub fn ack_sent(&mut self, up_to_seq: u64, sent_through: Option<&Record>) -> io::Result<()> {
        self.ack_where(up_to_seq, |r| {
            sent_through.is_some_and(|l| (r.segment, r.offset) <= (l.segment, l.offset))
        })
    }

    fn ack_where(&mut self, up_to_seq: u64, sent: impl Fn(&Record) -> bool) -> io::Result<()> {
        let up_to_seq = up_to_seq.min(self.next_seq);
        let before = self.records.len();
        let advance = up_to_seq > self.acked;
        self.acked = self.acked.max(up_to_seq);
        while self.records.front().is_some_and(|r| r.end_seq() <= self.acked && sent(r)) {
            self.records.pop_front();
        }
        if !advance && !self.state_behind {
            if self.records.len() != before {
                self.remove_acked_segments()?;
            }
            return Ok(());
        }
        // Segments go before the state file is replaced: on a full disk the replacement needs
        // the space they free (the other order never recovered). A crash in between is
        // harmless: on start the state is behind, the deleted segments held only acknowledged
        // records, and the later records are replayed (upstream deduplication absorbs them).
        self.state_behind = true;
        self.remove_acked_segments()?;
        write_state(&self.dir, self.epoch, self.acked)?;
        self.state_behind = false;
        Ok(())
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
    /// Length to keep: up to the end of the last intact record.
    good_len: u64,
    /// When the segment's end was cut short or corrupt: records and events lost there.
    torn: Option<(u64, u64)>,
    /// Damage in the middle that the scan resynced past.
    skipped: Skipped,
}

/// Damage in the middle of a segment, resynced past.
#[derive(Debug, Default)]
struct Skipped {
    bytes: u64,
    /// Damaged regions (each at least one record).
    records: u64,
    /// Events in them: the gap in sequence numbers.
    events: u64,
}

/// Scans a segment, trying again after an I/O error (a flaky SD card); `None` when it stays
/// unreadable.
fn scan_with_retries(path: &Path, name: u64) -> Option<Scan> {
    let mut wait = std::time::Duration::from_millis(100);
    for attempt in 1..=3 {
        match scan_segment(path, name) {
            Ok(scan) => return Some(scan),
            Err(e) => {
                tracing::warn!(segment = %path.display(), attempt, error = %e, "cannot read a spool segment");
                if attempt < 3 {
                    std::thread::sleep(wait);
                    wait *= 2;
                }
            }
        }
    }
    None
}

/// Keeps a damaged segment for inspection under `quarantine/`: a copy (the spool goes on
/// using the intact records in it), or the file itself when it cannot be read (`moved`).
/// Failing to is only logged: the spool must open.
fn quarantine(dir: &Path, path: &Path, moved: bool) {
    let to = dir.join(QUARANTINE);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let target = to.join(format!("{name}.{stamp}"));
    let result = fs::create_dir_all(&to).and_then(|()| {
        if moved { fs::rename(path, &target) } else { fs::copy(path, &target).map(drop) }
    });
    match result {
        Ok(()) => {
            tracing::warn!(segment = %path.display(), kept = %target.display(), "a damaged spool segment was quarantined")
        }
        Err(e) => {
            tracing::warn!(segment = %path.display(), error = %e, "cannot quarantine a damaged spool segment")
        }
    }
}

/// The record whose header starts `rest`, when it is intact: a length within the limits and
/// the data, and a payload that matches its checksum. `after`: when resyncing, the sequence
/// number the record must start at or after (a plausible successor of the last intact one).
fn intact_at(rest: &[u8], segment: u64, offset: usize, after: Option<u64>) -> Option<Record> {
    let h = rest.get(..HEADER)?;
    let raw_len = u32::from_le_bytes(h[0..4].try_into().ok()?);
    let (len, covers_header) = (raw_len & !CRC_COVERS_HEADER, raw_len & CRC_COVERS_HEADER != 0);
    let crc = u32::from_le_bytes(h[4..8].try_into().ok()?);
    let first_seq = u64::from_le_bytes(h[8..16].try_into().ok()?);
    let count = u32::from_le_bytes(h[16..20].try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    if let Some(min) = after
        && (count == 0 || count > MAX_COUNT || first_seq < min || first_seq - min > MAX_SEQ_GAP)
    {
        return None;
    }
    let payload = rest.get(HEADER..HEADER + len as usize)?;
    let expected = if covers_header {
        record_crc(first_seq, count, payload)
    } else {
        crc32fast::hash(payload)
    };
    (expected == crc).then_some(Record { segment, offset: offset as u64, len, first_seq, count })
}

/// Reads a segment's intact records, resyncing past damage in the middle.
fn scan_segment(path: &Path, name: u64) -> io::Result<Scan> {
    let mut file = File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
    }
    let total = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    // The capacity is a hint: a segment is at most a few MiB, whatever its size claims.
    let mut data = Vec::with_capacity(usize::try_from(total).unwrap_or(0).min(64 << 20));
    file.read_to_end(&mut data)?;
    let mut records: Vec<Record> = Vec::new();
    let mut skipped = Skipped::default();
    let mut pos = 0usize;
    while pos < data.len() {
        if let Some(r) = intact_at(&data[pos..], name, pos, None) {
            pos += r.bytes() as usize;
            records.push(r);
            continue;
        }
        // Damage at `pos`: look for the next intact record that follows the last good one.
        let expected = records.last().map_or(name, Record::end_seq);
        let next = (pos + 1..data.len().saturating_sub(HEADER - 1))
            .find_map(|at| intact_at(&data[at..], name, at, Some(expected)));
        let Some(r) = next else {
            // Nothing intact after it: a torn end, cut off. Events of the torn record, if
            // its header survived and looks sane.
            let events = data[pos..]
                .get(..HEADER)
                .map(|h| {
                    let len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes"))
                        & !CRC_COVERS_HEADER;
                    let count = u32::from_le_bytes(h[16..20].try_into().expect("4 bytes"));
                    if len <= MAX_RECORD { u64::from(count) } else { 0 }
                })
                .unwrap_or(0);
            return Ok(Scan { records, good_len: pos as u64, torn: Some((1, events)), skipped });
        };
        skipped.bytes += r.offset - pos as u64;
        skipped.records += 1;
        skipped.events += r.first_seq - expected;
        pos = r.offset as usize;
    }
    Ok(Scan { records, good_len: pos as u64, torn: None, skipped })
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

/// Completes a rebase ([`Spool::rebase`]): a staging directory with its state file is
/// complete and replaces the segments below its first sequence number (the old ones); one
/// without a state file was interrupted before its commit and is discarded (the old segments
/// are still whole).
fn finish_rebase(dir: &Path) -> io::Result<()> {
    let staging = dir.join(REBASE);
    if !staging.exists() {
        return Ok(());
    }
    let start = match read_state(&staging)? {
        Some(Some((_, start))) => start,
        _ => return fs::remove_dir_all(&staging),
    };
    let segments = |d: &Path| -> io::Result<Vec<u64>> {
        Ok(fs::read_dir(d)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_prefix(SEGMENT_PREFIX)?.parse().ok())
            .collect())
    };
    for name in segments(dir)? {
        if name < start {
            fs::remove_file(dir.join(format!("{SEGMENT_PREFIX}{name:020}")))?;
        }
    }
    for name in segments(&staging)? {
        let file = format!("{SEGMENT_PREFIX}{name:020}");
        fs::rename(staging.join(&file), dir.join(&file))?;
    }
    fs::rename(staging.join(STATE), dir.join(STATE))?;
    File::open(dir)?.sync_all()?;
    fs::remove_dir_all(&staging)
}

/// The spool, even if a thread panicked holding it: every operation leaves it consistent on
/// disk, and refusing it would stop the agent for good.
pub fn lock(spool: &std::sync::Mutex<Spool>) -> std::sync::MutexGuard<'_, Spool> {
    match spool.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// What a sender does with [`Spool::ack`]'s result: the acknowledgement holds in memory
/// whatever happened on disk, so a failure to persist it (a full disk) is reported and counted,
/// never fatal to the sender: the next acknowledgement retries it, and until then a restart
/// only replays acknowledged records (upstream deduplication absorbs them).
pub fn report_ack_write(result: io::Result<()>, metrics: &crate::telemetry::Metrics) {
    if let Err(e) = result {
        metrics.spool_ack_write_failures.inc();
        tracing::warn!(error = %e, "could not persist an acknowledgement in the spool; retried with the next one");
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
