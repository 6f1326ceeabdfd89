//! The event archive (design.md §6.12): every evaluated event, kept for `[retention] events`
//! in the alert store's own database, so that replicas share it, embedded mode has it in
//! SQLite and retention is a range delete.
//!
//! A row holds one node's events from one batch (or, after compaction, from several), in
//! event-time order: the node, the event-time range, a bit per kind present, the count and a
//! frame — a format byte and a zstd frame of the postcard-encoded records. A row covers at most
//! [`MAX_ROW_EVENTS`] events and [`MAX_ROW_SPAN_MS`] of event time; the bound on its span is
//! what lets a search read rows in `ts_min` order and still give events in exact time order
//! (see [`Merge`]). This module holds no SQL: the store reads and writes the rows.

use std::collections::BTreeMap;
use std::io::Read as _;

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use wire::model::{Event, EventKind};

use crate::rules::field::{self, EventRef, FieldId, Val};

/// The frame's first byte for postcard records as they are: a batch's small row, which
/// compaction merges and compresses within minutes (compressing each of a fleet's many small
/// rows on the ingest path cost more than the rest of a batch).
pub const FORMAT_PLAIN: u8 = 0;
/// The frame's first byte for a zstd frame of postcard records.
pub const FORMAT_ZSTD: u8 = 1;
/// Events per row at most.
pub const MAX_ROW_EVENTS: usize = 4096;
/// Event time one row spans at most, ms.
pub const MAX_ROW_SPAN_MS: i64 = 300_000;
/// A decoded frame larger than this is refused (a row of [`MAX_ROW_EVENTS`] events is far
/// smaller; anything bigger is damage).
const MAX_DECODED_BYTES: u64 = 64 << 20;

/// The kinds, in the order of their bits in a row's `kinds` (the rule index's list: a kind
/// added there gets a bit here).
pub use crate::rules::KINDS;

/// The bit of a kind name in a row's `kinds`; `None` for a name no event has.
pub fn kind_bit(name: &str) -> Option<i64> {
    KINDS.iter().position(|k| *k == name).map(|i| 1 << i)
}

fn bit_of(kind: &EventKind) -> i64 {
    kind_bit(kind.name()).unwrap_or(0)
}

/// What identifies an archived event. Agent events are numbered `(epoch, seq)` by their node
/// (varints that compress well; the id is derived on reading, as the pipeline derives it);
/// others carry their id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Key {
    /// An agent event: its numbers (the first ones, for a rebased record).
    Seq {
        /// The spool epoch.
        epoch: u64,
        /// The sequence number.
        seq: u64,
    },
    /// An event with an id of its own (legacy, API, webhook, drop report).
    Id([u8; 16]),
}

impl Key {
    /// The event id the pipeline gave the event (firings name it as `event_id`).
    pub fn event_id(&self, node: &str) -> Uuid {
        match *self {
            Key::Seq { epoch, seq } => wire::legacy::event_uuid(node, epoch, seq),
            Key::Id(bytes) => Uuid::from_bytes(bytes),
        }
    }
}

/// An event to archive, as the pipeline has it.
#[derive(Clone, Copy, Debug)]
pub struct Pending<'a> {
    /// The node that sent it.
    pub node: &'a str,
    /// Its identity.
    pub key: Key,
    /// The event.
    pub event: &'a Event,
}

#[derive(Serialize)]
struct RecordRef<'a> {
    key: Key,
    event: &'a Event,
}

/// An archived event read back.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Record {
    /// Its identity.
    pub key: Key,
    /// The event.
    pub event: Event,
}

/// A row to store.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The node.
    pub node: String,
    /// The oldest event time, Unix ms.
    pub ts_min: i64,
    /// The newest event time, Unix ms.
    pub ts_max: i64,
    /// A bit per kind present ([`KINDS`]).
    pub kinds: i64,
    /// Events in the row.
    pub n: i32,
    /// The format byte, then the records.
    pub frame: Vec<u8>,
}

impl Row {
    /// Whether it is final: compressed, by compaction or from a batch large enough. A batch's
    /// small rows are not, and compaction merges them.
    pub fn packed(&self) -> bool {
        self.frame.first() == Some(&FORMAT_ZSTD)
    }
}

/// A stored row as a search reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRow {
    /// Its id (the order rows were written in).
    pub id: i64,
    /// The node.
    pub node: String,
    /// The oldest event time, Unix ms.
    pub ts_min: i64,
    /// The newest event time, Unix ms.
    pub ts_max: i64,
    /// Events in the row.
    pub n: i32,
    /// When it was written (or, for a compacted row, the newest of its parts), Unix ms.
    pub created_at: i64,
    /// The format byte, then the records.
    pub frame: Vec<u8>,
}

/// An event's time, Unix ms.
pub fn ts_ms(e: &Event) -> i64 {
    e.ts.as_nanos().div_euclid(1_000_000)
}

/// The rows for a batch's events: by node, in event-time order, cut at [`MAX_ROW_EVENTS`]
/// events or [`MAX_ROW_SPAN_MS`] of event time. Rows of [`SMALL_ROW`] events or more are
/// compressed and final; smaller ones are left for compaction.
pub fn rows(pending: Vec<Pending<'_>>) -> Vec<Row> {
    cut(pending, false)
}

/// [`rows`], every row compressed and final (compaction's output).
pub fn packed_rows(pending: Vec<Pending<'_>>) -> Vec<Row> {
    cut(pending, true)
}

fn cut(mut pending: Vec<Pending<'_>>, pack: bool) -> Vec<Row> {
    pending.sort_by(|a, b| a.node.cmp(b.node).then(a.event.ts.cmp(&b.event.ts)));
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=pending.len() {
        let cut = i == pending.len()
            || pending[i].node != pending[start].node
            || i - start >= MAX_ROW_EVENTS
            || ts_ms(pending[i].event) - ts_ms(pending[start].event) > MAX_ROW_SPAN_MS;
        if cut {
            let part = &pending[start..i];
            out.push(encode(part, pack || part.len() >= SMALL_ROW as usize));
            start = i;
        }
    }
    out
}

/// One row of one node's events, already in time order; compressed when `pack`.
fn encode(events: &[Pending<'_>], pack: bool) -> Row {
    let records: Vec<RecordRef<'_>> =
        events.iter().map(|p| RecordRef { key: p.key, event: p.event }).collect();
    // Serializing owned model types into a Vec cannot fail (no maps with non-string keys, no
    // I/O); an empty frame would only make the row unreadable, never panic.
    let frame = if pack {
        let plain = postcard::to_allocvec(&records).unwrap_or_default();
        let mut frame = vec![FORMAT_ZSTD];
        ruzstd::encoding::compress(
            plain.as_slice(),
            &mut frame,
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        frame
    } else {
        let mut frame = vec![FORMAT_PLAIN];
        frame.extend(postcard::to_allocvec(&records).unwrap_or_default());
        frame
    };
    Row {
        node: events.first().map_or_else(String::new, |p| p.node.to_owned()),
        ts_min: events.first().map_or(0, |p| ts_ms(p.event)),
        ts_max: events.last().map_or(0, |p| ts_ms(p.event)),
        kinds: events.iter().fold(0, |k, p| k | bit_of(&p.event.kind)),
        n: i32::try_from(events.len()).unwrap_or(i32::MAX),
        frame,
    }
}

/// Why a row cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The format byte is one this version does not know.
    #[error("archive row format {0} is unknown")]
    Format(u8),
    /// The frame is empty.
    #[error("archive row is empty")]
    Empty,
    /// The zstd frame is damaged or too large.
    #[error("archive row does not decompress: {0}")]
    Zstd(String),
    /// The records do not decode.
    #[error("archive row does not decode: {0}")]
    Postcard(#[from] postcard::Error),
}

/// The records of a row's frame.
pub fn decode(frame: &[u8]) -> Result<Vec<Record>, DecodeError> {
    let (&format, rest) = frame.split_first().ok_or(DecodeError::Empty)?;
    match format {
        FORMAT_PLAIN => return Ok(postcard::from_bytes(rest)?),
        FORMAT_ZSTD => {}
        other => return Err(DecodeError::Format(other)),
    }
    let decoder = ruzstd::decoding::StreamingDecoder::new(rest)
        .map_err(|e| DecodeError::Zstd(e.to_string()))?;
    let mut plain = Vec::new();
    decoder
        .take(MAX_DECODED_BYTES + 1)
        .read_to_end(&mut plain)
        .map_err(|e| DecodeError::Zstd(e.to_string()))?;
    if plain.len() as u64 > MAX_DECODED_BYTES {
        return Err(DecodeError::Zstd(format!("larger than {MAX_DECODED_BYTES} bytes")));
    }
    Ok(postcard::from_bytes(&plain)?)
}

/// Rows merged into fewer, larger, compressed ones (compaction): every record once (a batch
/// archived twice, by a crash between commit and mark or two replicas racing, keeps one copy),
/// by node and time, cut as [`rows`] cuts.
pub fn merge(parts: &[(String, Vec<Record>)]) -> Vec<Row> {
    let mut seen = std::collections::HashSet::new();
    let mut pending = Vec::new();
    for (node, records) in parts {
        for r in records {
            if seen.insert((node.as_str(), r.key)) {
                pending.push(Pending { node, key: r.key, event: &r.event });
            }
        }
    }
    packed_rows(pending)
}

/// The JSON form of an archived event: the fields rules name (the form rule tests and
/// `POST /api/v1/events` take), plus its id and time.
pub fn event_json(node: &str, record: &Record) -> serde_json::Value {
    use serde_json::{Map, Value};
    let mut m = Map::new();
    let e = &record.event;
    m.insert("id".into(), record.key.event_id(node).to_string().into());
    m.insert("ts".into(), e.ts.to_rfc3339().into());
    m.insert("node".into(), node.into());
    let r = EventRef { node, event: e };
    for (name, f) in field::plain() {
        let skip = match f {
            FieldId::Node | FieldId::Branch | FieldId::OnDefaultBranch => true,
            FieldId::Host => e.host.is_none(),
            FieldId::EventType => !matches!(e.kind, EventKind::Generic { .. }),
            _ => false,
        };
        if skip {
            continue;
        }
        let v = match r.get(f) {
            Val::Missing => continue,
            Val::Str(s) => Value::from(s.into_owned()),
            Val::Int(i) => Value::from(i),
            Val::Float(x) => serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number),
            Val::Bool(b) => Value::from(b),
            Val::Ip(ip) => Value::from(ip.to_string()),
            Val::List(items) => Value::from(items.to_vec()),
        };
        m.insert(name.into(), v);
    }
    if let EventKind::Generic { fields, .. } = &e.kind {
        let fields: Map<String, Value> =
            fields.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
        m.insert("fields".into(), fields.into());
    }
    if !e.attrs.is_empty() {
        let attrs: Map<String, Value> =
            e.attrs.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
        m.insert("attrs".into(), attrs.into());
    }
    Value::Object(m)
}

/// What a search asks for.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// One node only.
    pub node: Option<String>,
    /// Kinds wanted, as bits ([`KINDS`]); 0: every kind.
    pub kinds: i64,
    /// Fields that must equal these texts (case-insensitive).
    pub fields: Vec<(FieldId, String)>,
    /// Text the event's JSON must contain (case-insensitive).
    pub text: Option<String>,
    /// Event time from, Unix ms (inclusive).
    pub from: i64,
    /// Event time to, Unix ms (inclusive).
    pub to: i64,
    /// Events wanted at most.
    pub limit: usize,
    /// Newest first.
    pub desc: bool,
}

impl Query {
    /// Whether an event matches (the node is the row's, already filtered).
    pub fn matches(&self, node: &str, record: &Record) -> bool {
        let e = &record.event;
        let ts = ts_ms(e);
        if ts < self.from || ts > self.to {
            return false;
        }
        if self.kinds != 0 && self.kinds & bit_of(&e.kind) == 0 {
            return false;
        }
        let r = EventRef { node, event: e };
        self.fields.iter().all(|(f, want)| match r.get(f) {
            Val::List(items) => items.iter().any(|i| i.eq_ignore_ascii_case(want)),
            v => v.text().is_some_and(|t| t.eq_ignore_ascii_case(want)),
        })
    }
}

/// Orders events read from rows in `ts_min` order (ascending, or descending for newest first)
/// into exact time order, keeping at most the events still wanted.
///
/// A row spans at most [`MAX_ROW_SPAN_MS`]. Reading ascending, no row still unread holds an
/// event older than the next row's `ts_min`, so every held event older than that can go out;
/// descending, none holds one newer than the next row's `ts_min` plus the span.
///
/// It also gives each event out once: a batch archived twice (a crash between commit and
/// mark, two replicas racing) is merged into one copy by compaction, and until then the
/// repeat is dropped here. Both copies have the same time, so a copy whose original was
/// pushed out would be pushed out too.
#[derive(Debug)]
pub struct Merge<T> {
    desc: bool,
    wanted: usize,
    held: BTreeMap<(i64, u64), (Uuid, T)>,
    /// Ids held or given out (at most twice the limit).
    ids: std::collections::HashSet<Uuid>,
    tiebreak: u64,
}

impl<T> Merge<T> {
    /// A merge that gives out at most `limit` events.
    pub fn new(limit: usize, desc: bool) -> Self {
        Self {
            desc,
            wanted: limit,
            held: BTreeMap::new(),
            ids: std::collections::HashSet::new(),
            tiebreak: 0,
        }
    }

    /// Whether no more events are wanted.
    pub fn done(&self) -> bool {
        self.wanted == 0
    }

    /// Whether a row starting at `ts_min` (the next in reading order) can still hold an
    /// event that would be given out; when not, neither can any row after it.
    pub fn wants_rows_from(&self, ts_min: i64) -> bool {
        if self.wanted == 0 {
            return false;
        }
        if self.held.len() < self.wanted {
            return true;
        }
        if self.desc {
            // Every held event is newer than what the row and its successors can hold.
            self.held.keys().next().is_none_or(|&(ts, _)| ts_min + MAX_ROW_SPAN_MS >= ts)
        } else {
            self.held.keys().next_back().is_none_or(|&(ts, _)| ts_min <= ts)
        }
    }

    /// Holds an event (unless it is held or was given out already).
    pub fn push(&mut self, ts: i64, id: Uuid, item: T) {
        if !self.ids.insert(id) {
            return;
        }
        self.tiebreak += 1;
        // Ties keep reading order: ascending, the earlier read first; descending, the later.
        let tb = if self.desc { u64::MAX - self.tiebreak } else { self.tiebreak };
        self.held.insert((ts, tb), (id, item));
        if self.held.len() > self.wanted {
            let out = if self.desc { self.held.pop_first() } else { self.held.pop_last() };
            if let Some((_, (id, _))) = out {
                self.ids.remove(&id);
            }
        }
    }

    /// The held events that no row from `ts_min` on can come before (`None`: no row is left).
    pub fn release(&mut self, next_ts_min: Option<i64>) -> Vec<T> {
        let mut out = Vec::new();
        loop {
            let entry = if self.desc { self.held.last_entry() } else { self.held.first_entry() };
            let Some(entry) = entry else { break };
            let ts = entry.key().0;
            let ready = match next_ts_min {
                None => true,
                Some(t) if self.desc => ts > t.saturating_add(MAX_ROW_SPAN_MS),
                Some(t) => ts < t,
            };
            if !ready || self.wanted == 0 {
                break;
            }
            out.push(entry.remove().1);
            self.wanted -= 1;
        }
        out
    }
}

/// A batch's rows with fewer events than this are written uncompressed and merged by
/// compaction.
pub const SMALL_ROW: i32 = 512;
/// Compaction leaves rows younger than this alone (their batch may still be retried).
const COMPACT_AFTER_MS: i64 = 60_000;
/// Small rows merged per compaction round at most.
const COMPACT_ROWS: i64 = 5_000;

/// What one compaction round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Small rows read and replaced.
    pub merged: u64,
    /// Rows written instead.
    pub written: u64,
    /// Rows that could not be read (left in place, counted).
    pub unreadable: u64,
    /// Whether the round took as many rows as it may (more may be waiting).
    pub full: bool,
}

/// Merges a batch's small, uncompressed rows (at fleet rates a batch holds a few events per
/// node) into compressed rows of up to [`MAX_ROW_EVENTS`] events, node by node. One round
/// over at most [`COMPACT_ROWS`] rows, at `now` (Unix ms).
pub async fn compact_once(
    store: &crate::store::SharedStore,
    now: i64,
) -> anyhow::Result<Compacted> {
    let small = store.archive_unpacked_rows(now - COMPACT_AFTER_MS, COMPACT_ROWS).await?;
    let mut out = Compacted::default();
    let mut by_node: BTreeMap<&str, Vec<&StoredRow>> = BTreeMap::new();
    for row in &small {
        by_node.entry(row.node.as_str()).or_default().push(row);
    }
    for rows in by_node.into_values() {
        let mut parts = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        for row in rows {
            match decode(&row.frame) {
                Ok(records) => {
                    parts.push((row.node.clone(), records));
                    ids.push(row.id);
                }
                Err(e) => {
                    out.unreadable += 1;
                    tracing::warn!(row = row.id, error = %e, "archive row unreadable; left as it is");
                }
            }
        }
        if ids.is_empty() {
            continue;
        }
        let created = small.iter().filter(|r| ids.contains(&r.id)).map(|r| r.created_at).max();
        let merged = merge(&parts);
        if store.archive_replace(&ids, &merged, created.unwrap_or(now)).await? {
            out.merged += ids.len() as u64;
            out.written += merged.len() as u64;
        }
    }
    out.full = small.len() as i64 == COMPACT_ROWS;
    Ok(out)
}

/// Runs compaction every minute until cancelled: rounds one after the other (a pause between)
/// while they find a full selection, so that a fleet's rows never pile up.
pub async fn run_compaction(
    store: crate::store::SharedStore,
    metrics: crate::telemetry::Metrics,
    cancel: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
        }
        loop {
            match compact_once(&store, crate::store::now_ms()).await {
                Ok(c) => {
                    metrics.archive_compacted.inc_by(c.merged);
                    metrics.archive_unreadable.inc_by(c.unreadable);
                    if !c.full || cancel.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "archive compaction failed");
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// What a replay at start did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Rows read.
    pub rows: u64,
    /// Events evaluated again into the state.
    pub events: u64,
    /// Rows that could not be read (counted in `archive_unreadable`, skipped).
    pub unreadable: u64,
}

/// Rows per page of a replay: a compacted row holds up to 4,096 events, and a Pi decodes a
/// page at a time.
const REPLAY_ROWS: i64 = 16;

/// Replays the events archived at or after `since` (wall clock, Unix ms), in the order they
/// were written, into the pipeline's state (`Pipeline::replay`): embedded mode's catch-up
/// after its state snapshot, since its state lives in memory (design.md §2.3).
pub async fn replay_since<S: crate::state::WindowState, K: crate::store::AlertSink>(
    store: &crate::store::SharedStore,
    pipeline: &crate::pipeline::Pipeline<S, K>,
    since: i64,
) -> anyhow::Result<Replayed> {
    let mut out = Replayed::default();
    let mut after = 0;
    loop {
        let rows = store.archive_written_since(since, after, REPLAY_ROWS).await?;
        let Some(last) = rows.last() else { return Ok(out) };
        after = last.id;
        out.rows += rows.len() as u64;
        let mut events = Vec::new();
        for row in &rows {
            match decode(&row.frame) {
                Ok(records) => events.extend(records.into_iter().map(|r| (row.node.clone(), r))),
                Err(e) => {
                    out.unreadable += 1;
                    pipeline.metrics.archive_unreadable.inc();
                    tracing::warn!(row = row.id, error = %e, "archive row unreadable; not replayed");
                }
            }
        }
        out.events += pipeline.replay(&events).await?;
    }
}

/// What a search did, for its last line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SearchSummary {
    /// Events given out.
    pub returned: u64,
    /// Rows read.
    pub rows_read: u64,
    /// Events decoded.
    pub events_scanned: u64,
    /// Rows that could not be read (skipped, counted in
    /// `auditflow_aggregator_archive_unreadable_total`).
    pub rows_unreadable: u64,
    /// Whether the search stopped at its scan budget before its range was covered.
    pub truncated: bool,
}

/// Rows read per query.
const PAGE_ROWS: i64 = 64;

/// An archive scan read page by page (keyset on `(ts_min, id)`), the rows decoded with those
/// that cannot be read skipped, logged and counted: what searches, evidence and backtests
/// share.
#[derive(Debug)]
pub struct Pages {
    scan: crate::store::ArchiveScan,
    done: bool,
    /// Rows that could not be read so far.
    pub unreadable: u64,
}

impl Pages {
    /// Pages of `scan` (its `after` and `max` are the reader's).
    pub fn new(scan: crate::store::ArchiveScan) -> Self {
        Self {
            scan: crate::store::ArchiveScan { after: None, max: PAGE_ROWS, ..scan },
            done: false,
            unreadable: 0,
        }
    }

    /// The next page and whether it is the last; `None` once everything was read.
    pub async fn next(
        &mut self,
        store: &crate::store::SharedStore,
    ) -> anyhow::Result<Option<(Vec<StoredRow>, bool)>> {
        if self.done {
            return Ok(None);
        }
        let rows = store.archive_rows(&self.scan).await?;
        let last = (rows.len() as i64) < self.scan.max;
        match rows.last() {
            Some(row) if !last => self.scan.after = Some((row.ts_min, row.id)),
            _ => self.done = true,
        }
        Ok((!rows.is_empty()).then_some((rows, last)))
    }

    /// A row's records; `None` (counted) when the row cannot be read.
    pub fn decode(&mut self, row: &StoredRow) -> Option<Vec<Record>> {
        match decode(&row.frame) {
            Ok(records) => Some(records),
            Err(e) => {
                self.unreadable += 1;
                tracing::warn!(row = row.id, error = %e, "archive row unreadable; skipped");
                None
            }
        }
    }
}

/// Where a search's events go.
pub trait Sink: Send {
    /// Takes one event; `false` ends the search (the client went away).
    fn put(&mut self, json: serde_json::Value) -> impl std::future::Future<Output = bool> + Send;
}

impl<T: Sink> Sink for &mut T {
    async fn put(&mut self, json: serde_json::Value) -> bool {
        (**self).put(json).await
    }
}

impl Sink for Vec<serde_json::Value> {
    async fn put(&mut self, json: serde_json::Value) -> bool {
        self.push(json);
        true
    }
}

/// NDJSON lines for a streamed response.
impl Sink for tokio::sync::mpsc::Sender<Result<String, std::io::Error>> {
    async fn put(&mut self, json: serde_json::Value) -> bool {
        self.send(Ok(format!("{json}\n"))).await.is_ok()
    }
}

/// Gives events to the sink and counts them.
struct Out<S> {
    sink: S,
    returned: u64,
}

impl<S: Sink> Out<S> {
    async fn give(&mut self, events: Vec<serde_json::Value>) -> bool {
        for json in events {
            self.returned += 1;
            if !self.sink.put(json).await {
                return false;
            }
        }
        true
    }
}

/// Runs a search, handing each matching event's JSON to `sink` in time order (oldest first,
/// or newest with `q.desc`) until `q.limit` events or `max_scanned` events decoded.
pub async fn search(
    store: &crate::store::SharedStore,
    q: &Query,
    max_scanned: u64,
    sink: &mut impl Sink,
) -> anyhow::Result<SearchSummary> {
    let mut summary = SearchSummary::default();
    let mut out = Out { sink, returned: 0 };
    let mut merge = Merge::new(q.limit, q.desc);
    let mut gone = false;
    let mut pages = Pages::new(crate::store::ArchiveScan {
        node: q.node.clone(),
        kinds: q.kinds,
        from: q.from,
        to: q.to,
        desc: q.desc,
        ..Default::default()
    });
    'pages: while let Some((rows, last_page)) = pages.next(store).await? {
        for (i, row) in rows.iter().enumerate() {
            if !merge.wants_rows_from(row.ts_min) {
                break 'pages;
            }
            if summary.events_scanned >= max_scanned {
                summary.truncated = true;
                break 'pages;
            }
            summary.rows_read += 1;
            for r in pages.decode(row).unwrap_or_default() {
                summary.events_scanned += 1;
                if !q.matches(&row.node, &r) {
                    continue;
                }
                let json = event_json(&row.node, &r);
                if let Some(text) = &q.text
                    && !json.to_string().to_lowercase().contains(text.as_str())
                {
                    continue;
                }
                merge.push(ts_ms(&r.event), r.key.event_id(&row.node), json);
            }
            // What no later row can precede goes out now; at a page's end the next row's
            // start is not known yet, so it waits for the next page.
            let next = rows.get(i + 1).map(|r| r.ts_min);
            if (next.is_some() || last_page) && !out.give(merge.release(next)).await {
                gone = true;
                break 'pages;
            }
        }
    }
    if !gone {
        out.give(merge.release(None)).await;
    }
    summary.returned = out.returned;
    summary.rows_unreadable = pages.unreadable;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::model::{Outcome, Severity, Source, Timestamp};

    fn login(ms: i64, user: &str) -> Event {
        Event::new(
            Timestamp::from_unix(ms / 1000, ((ms % 1000) * 1_000_000) as u32),
            Source::AuthLog,
            Severity::Info,
            EventKind::Login {
                user: user.into(),
                src_ip: Some("10.0.0.7".parse().unwrap()),
                method: Some("password".into()),
                outcome: Outcome::Failure,
                reason: None,
            },
        )
    }

    #[test]
    fn rows_round_trip_by_node_in_time_order_and_cut_at_the_span() {
        let events: Vec<Event> = [5_000, 1_000, 400_000, 2_000].map(|t| login(t, "carol")).into();
        let pending = vec![
            Pending { node: "b", key: Key::Seq { epoch: 1, seq: 0 }, event: &events[0] },
            Pending { node: "a", key: Key::Seq { epoch: 1, seq: 7 }, event: &events[1] },
            Pending { node: "a", key: Key::Id([9; 16]), event: &events[2] },
            Pending { node: "a", key: Key::Seq { epoch: 1, seq: 8 }, event: &events[3] },
        ];
        let rows = rows(pending);
        let shape: Vec<(&str, i64, i64, i32)> =
            rows.iter().map(|r| (r.node.as_str(), r.ts_min, r.ts_max, r.n)).collect();
        // Node a's 400 s event is more than the span after its first: a row of its own.
        assert_eq!(
            shape,
            [("a", 1_000, 2_000, 2), ("a", 400_000, 400_000, 1), ("b", 5_000, 5_000, 1)]
        );
        assert_eq!(rows[0].kinds, kind_bit("login").unwrap());
        let back = decode(&rows[0].frame).unwrap();
        assert_eq!(
            back.iter().map(|r| r.key).collect::<Vec<_>>(),
            [Key::Seq { epoch: 1, seq: 7 }, Key::Seq { epoch: 1, seq: 8 }]
        );
        assert_eq!(back[0].event, events[1]);
        assert_eq!(
            back[0].key.event_id("a"),
            wire::legacy::event_uuid("a", 1, 7),
            "the id a firing names"
        );
    }

    #[test]
    fn damaged_frames_are_errors_not_panics() {
        let events = [login(1_000, "carol")];
        assert!(matches!(decode(&[]), Err(DecodeError::Empty)));
        assert!(matches!(decode(&[7, 1, 2]), Err(DecodeError::Format(7))));
        let one = vec![Pending { node: "a", key: Key::Id([1; 16]), event: &events[0] }];
        for row in [rows(one.clone()).remove(0), packed_rows(one).remove(0)] {
            for cut in 1..row.frame.len() {
                let _ = decode(&row.frame[..cut]);
            }
            let mut flipped = row.frame.clone();
            for i in 1..flipped.len() {
                flipped[i] ^= 0x5a;
                let _ = decode(&flipped);
                flipped[i] ^= 0x5a;
            }
            assert!(decode(&row.frame).is_ok());
        }
    }

    #[test]
    fn small_rows_are_plain_for_compaction_and_large_or_merged_ones_compressed() {
        let events: Vec<Event> = (0..600).map(|t| login(t, "carol")).collect();
        let pending = |n: usize| -> Vec<Pending<'_>> {
            events[..n]
                .iter()
                .enumerate()
                .map(|(i, e)| Pending {
                    node: "a",
                    key: Key::Seq { epoch: 1, seq: i as u64 },
                    event: e,
                })
                .collect()
        };
        let small = rows(pending(10)).remove(0);
        assert_eq!((small.frame[0], small.packed()), (FORMAT_PLAIN, false));
        let large = rows(pending(600)).remove(0);
        assert_eq!((large.frame[0], large.packed()), (FORMAT_ZSTD, true));
        let merged = packed_rows(pending(10)).remove(0);
        assert_eq!((merged.frame[0], merged.packed()), (FORMAT_ZSTD, true));
        assert!(large.frame.len() < 600 * 20, "{} bytes: compressed", large.frame.len());
        for row in [small, large, merged] {
            let back = decode(&row.frame).unwrap();
            assert_eq!(back.len(), row.n as usize);
            assert_eq!(back[3].event, events[3]);
        }
    }

    #[test]
    fn merging_keeps_one_copy_of_each_event() {
        let events = [login(1_000, "carol"), login(2_000, "carol")];
        let row = rows(vec![
            Pending { node: "a", key: Key::Seq { epoch: 1, seq: 0 }, event: &events[0] },
            Pending { node: "a", key: Key::Seq { epoch: 1, seq: 1 }, event: &events[1] },
        ])
        .remove(0);
        let records = decode(&row.frame).unwrap();
        let merged = merge(&[("a".into(), records.clone()), ("a".into(), records)]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].n, 2);
        assert!(merged[0].packed());
    }

    #[test]
    fn the_merge_gives_exact_time_order_from_overlapping_rows() {
        for desc in [false, true] {
            let mut m = Merge::new(3, desc);
            let mut out = Vec::new();
            // Rows in reading order, each (ts_min, its event times).
            let mut rows: Vec<(i64, Vec<i64>)> = vec![
                (0, vec![0, 50, 250]),
                (10, vec![10, 20]),
                (100, vec![100, 260]),
                (900_000, vec![900_000]),
            ];
            if desc {
                rows.reverse();
            }
            for (i, (_, times)) in rows.iter().enumerate() {
                for &t in times {
                    m.push(t, Uuid::from_u128(t as u128), t);
                }
                out.extend(m.release(rows.get(i + 1).map(|r| r.0)));
            }
            out.extend(m.release(None));
            if desc {
                assert_eq!(out, [900_000, 260, 250]);
            } else {
                assert_eq!(out, [0, 10, 20]);
            }
        }
    }

    #[test]
    fn event_json_names_fields_as_rules_do() {
        let events = [login(1_000, "carol")];
        let r = Record { key: Key::Seq { epoch: 2, seq: 3 }, event: events[0].clone() };
        let v = event_json("web-02", &r);
        assert_eq!(v["node"], "web-02");
        assert_eq!(v["kind"], "login");
        assert_eq!(v["user"], "carol");
        assert_eq!(v["src_ip"], "10.0.0.7");
        assert_eq!(v["outcome"], "failure");
        assert_eq!(v["id"], wire::legacy::event_uuid("web-02", 2, 3).to_string());
        assert!(v.get("host").is_none());
        let q = Query {
            fields: vec![(FieldId::User, "CAROL".into())],
            from: 0,
            to: 10_000,
            limit: 10,
            ..Query::default()
        };
        assert!(q.matches("web-02", &r));
        let q = Query { kinds: kind_bit("package").unwrap(), ..q };
        assert!(!q.matches("web-02", &r));
    }
}
