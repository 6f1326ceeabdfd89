//! The in-memory state on disk (embedded mode, design.md §2.3): windows, first-seen values,
//! cooldowns, the dedup record and last heartbeats, written every minute and at a clean stop,
//! and read back at start, so that a restart does not forget the attempts a brute-force window
//! had counted, the packages a node already had, or which agents went silent meanwhile.
//!
//! A file is `AFSTATE` and a format byte, the CRC-32 of the rest (little endian), then the
//! postcard-encoded [`Snapshot`]. Expiry is kept as time left when the snapshot was taken;
//! restoring subtracts the time that passed since (by the wall clock), so a key does not
//! outlive the TTL it had. A file that does not read back whole (torn, damaged, another
//! format) is an error the caller reports; the state then starts empty and the archive's
//! replay (`archive::replay_since`) rebuilds what it can.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use super::{Expiring, Inner, MemoryState, Timed, Window};
use crate::state::Name;

const MAGIC: &[u8; 7] = b"AFSTATE";
const FORMAT: u8 = 1;
/// The header: magic, format, CRC-32.
const HEADER: usize = MAGIC.len() + 1 + 4;

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not a snapshot, or one of a format this build does not read.
    #[error("not a state snapshot of format {FORMAT}")]
    Format,
    /// The bytes are not what was written (torn or damaged).
    #[error("the checksum does not match: the file is damaged")]
    Checksum,
    /// The checksum matches but the contents do not decode.
    #[error("undecodable: {0}")]
    Decode(#[from] postcard::Error),
    /// Reading the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What a restore brought back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restored {
    /// When the snapshot was taken, Unix ms (wall clock).
    pub taken_ms: i64,
    /// Keys restored (windows, value sets, cooldowns, dedup runs, single events).
    pub keys: usize,
}

/// A first-seen value set: key, ms left, `(value, the event that first had it)`.
type ValuesSnap = (String, u64, Vec<(String, String)>);
/// A dedup record: node, epoch, ms left, processed runs.
type SpansSnap = (String, u64, u64, Vec<(u64, u64)>);

#[derive(Serialize, Deserialize)]
struct Snapshot {
    taken_ms: i64,
    windows: Vec<WindowSnap>,
    values: Vec<ValuesSnap>,
    /// Key, ms left, last firing let through (time, event).
    gates: Vec<(String, u64, i64, String)>,
    spans: Vec<SpansSnap>,
    /// Id, ms left, order marked.
    singles: Vec<([u8; 16], u64, u64)>,
    singles_marked: u64,
    seen: Vec<(String, i64)>,
}

#[derive(Serialize, Deserialize)]
struct WindowSnap {
    key: String,
    left_ms: u64,
    members: Vec<(i64, String)>,
    used: Vec<(i64, String)>,
    triggers: Vec<(i64, String)>,
    newest: Option<i64>,
}

fn left(expires: Instant, now: Instant) -> u64 {
    u64::try_from(expires.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
}

fn timed_out(t: &Timed) -> Vec<(i64, String)> {
    t.by_time.iter().map(|(ts, n)| (*ts, n.to_string())).collect()
}

fn timed_in(entries: Vec<(i64, String)>) -> Timed {
    let mut t = Timed::default();
    for (ts, name) in entries {
        let name: Name = name.into();
        t.raise(&name, ts);
    }
    t
}

impl MemoryState {
    /// The state as a snapshot file's bytes, taken at `taken_ms` (wall clock, Unix ms). The
    /// state is copied under its lock and encoded after.
    pub fn snapshot(&self, taken_ms: i64) -> Vec<u8> {
        let snap = {
            let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let live = |e: Instant| e > now;
            Snapshot {
                taken_ms,
                windows: inner
                    .windows
                    .iter()
                    .filter(|(_, e)| live(e.expires))
                    .map(|(k, e)| WindowSnap {
                        key: k.clone(),
                        left_ms: left(e.expires, now),
                        members: timed_out(&e.value.members),
                        used: timed_out(&e.value.used),
                        triggers: timed_out(&e.value.triggers),
                        newest: e.value.newest,
                    })
                    .collect(),
                values: inner
                    .values
                    .iter()
                    .filter(|(_, e)| live(e.expires))
                    .map(|(k, e)| {
                        let set = e.value.iter().map(|(v, by)| (v.clone(), by.to_string()));
                        (k.clone(), left(e.expires, now), set.collect())
                    })
                    .collect(),
                gates: inner
                    .gates
                    .iter()
                    .filter(|(_, e)| live(e.expires))
                    .map(|(k, e)| {
                        (k.clone(), left(e.expires, now), e.value.0, e.value.1.to_string())
                    })
                    .collect(),
                spans: inner
                    .spans
                    .iter()
                    .filter(|(_, e)| live(e.expires))
                    .map(|((node, epoch), e)| {
                        (node.clone(), *epoch, left(e.expires, now), e.value.clone())
                    })
                    .collect(),
                singles: inner
                    .singles
                    .iter()
                    .filter(|(_, (e, _))| live(*e))
                    .map(|(id, (e, n))| (id.into_bytes(), left(*e, now), *n))
                    .collect(),
                singles_marked: inner.singles_marked,
                seen: inner.seen.iter().map(|(n, t)| (n.clone(), *t)).collect(),
            }
        };
        let body = postcard::to_allocvec(&snap).unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Loads a snapshot into this state (meant for a fresh one: what it holds is replaced key
    /// by key), as if `now_ms - taken_ms` had passed: keys that would have expired meanwhile
    /// are left out, the others keep the time they had left less that.
    pub fn restore(&self, bytes: &[u8], now_ms: i64) -> Result<Restored, SnapshotError> {
        let (head, body) = bytes.split_at_checked(HEADER).ok_or(SnapshotError::Format)?;
        if &head[..MAGIC.len()] != MAGIC || head[MAGIC.len()] != FORMAT {
            return Err(SnapshotError::Format);
        }
        let crc = u32::from_le_bytes(head[MAGIC.len() + 1..].try_into().unwrap_or_default());
        if crc32fast::hash(body) != crc {
            return Err(SnapshotError::Checksum);
        }
        let snap: Snapshot = postcard::from_bytes(body)?;
        let passed = u64::try_from(now_ms.saturating_sub(snap.taken_ms)).unwrap_or(0);
        let now = Instant::now();
        // Time left now, or None when the key would have expired while the process was down.
        let expires = |left_ms: u64| {
            left_ms.checked_sub(passed).filter(|l| *l > 0).map(|l| now + Duration::from_millis(l))
        };
        let mut keys = 0;
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner: &mut Inner = &mut inner;
        for w in snap.windows {
            let Some(expires) = expires(w.left_ms) else { continue };
            let value = Window {
                members: timed_in(w.members),
                used: timed_in(w.used),
                triggers: timed_in(w.triggers),
                newest: w.newest,
                delta: None,
            };
            inner.windows.insert(w.key, Expiring { value, expires });
            keys += 1;
        }
        for (key, left_ms, set) in snap.values {
            let Some(expires) = expires(left_ms) else { continue };
            let value: HashMap<String, Name> =
                set.into_iter().map(|(v, by)| (v, Name::from(by))).collect();
            inner.values.insert(key, Expiring { value, expires });
            keys += 1;
        }
        for (key, left_ms, ts, by) in snap.gates {
            let Some(expires) = expires(left_ms) else { continue };
            inner.gates.insert(key, Expiring { value: (ts, Name::from(by)), expires });
            keys += 1;
        }
        for (node, epoch, left_ms, runs) in snap.spans {
            let Some(expires) = expires(left_ms) else { continue };
            inner.spans.insert((node, epoch), Expiring { value: runs, expires });
            keys += 1;
        }
        for (id, left_ms, n) in snap.singles {
            let Some(expires) = expires(left_ms) else { continue };
            inner.singles.insert(uuid::Uuid::from_bytes(id), (expires, n));
            keys += 1;
        }
        inner.singles_marked = inner.singles_marked.max(snap.singles_marked);
        for (node, at) in snap.seen {
            let slot = inner.seen.entry(node).or_insert(at);
            *slot = (*slot).max(at);
        }
        Ok(Restored { taken_ms: snap.taken_ms, keys })
    }

    /// Writes a snapshot to `path` so that the file is always a whole snapshot, the old one
    /// or the new: a temporary file beside it, synced, renamed over it, the directory synced.
    /// Returns the bytes written.
    pub fn save(&self, path: &Path, now_ms: i64) -> std::io::Result<u64> {
        let bytes = self.snapshot(now_ms);
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = path.parent().unwrap_or(Path::new("."));
        // Two saves at once (the periodic one and the one at a stop) each use a file of
        // their own; the later rename wins, and either is a whole snapshot.
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.{}.tmp", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        let tmp = std::path::PathBuf::from(tmp);
        let written = (|| {
            let mut f =
                std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map(|()| bytes.len() as u64)
    }

    /// Restores the snapshot at `path`; `Ok(None)` when there is none.
    pub fn load(&self, path: &Path, now_ms: i64) -> Result<Option<Restored>, SnapshotError> {
        match std::fs::read(path) {
            Ok(bytes) => self.restore(&bytes, now_ms).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Op, Span, Verdict, WindowState};

    fn window(user: &str, id: &str, ts: i64) -> Op {
        Op::Window {
            key: format!("w:{user}").into(),
            member: id.into(),
            by: id.into(),
            ts,
            window: 60_000_000,
            count: 3,
            lateness: 0,
            suppress: None,
        }
    }

    fn value(v: &str, id: &str) -> Op {
        Op::NewValue {
            key: "v:pi-1".into(),
            value: v.to_owned(),
            by: id.into(),
            ts: 1,
            ttl: 3600,
            suppress: None,
        }
    }

    fn span(node: &str, first: u64, end: u64) -> Span {
        Span { node: node.into(), epoch: 7, first, end, single: None }
    }

    #[tokio::test]
    async fn a_restored_state_goes_on_where_the_saved_one_was() {
        let a = MemoryState::new();
        a.apply_now(&[window("alice", "e1", 1_000), window("alice", "e2", 2_000)]);
        a.apply_now(&[value("netcat", "p1")]);
        let single = uuid::Uuid::from_u128(42);
        a.mark_processed(&[span("pi-1", 0, 100), Span::single(single)]).await.unwrap();
        a.record_seen(&[("pi-1".into(), 1_700_000_000)]).await.unwrap();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let written = a.save(&path, 1_000_000).unwrap();
        assert!(written > HEADER as u64);
        let b = MemoryState::new();
        let r = b.load(&path, 1_000_500).unwrap().unwrap();
        assert_eq!(r, Restored { taken_ms: 1_000_000, keys: 4 });

        // The third attempt fires on both, the package is not new, the runs are processed.
        let third = [window("alice", "e3", 3_000)];
        assert_eq!(a.apply_now(&third), b.apply_now(&third));
        assert_eq!(b.apply_now(&[window("bob", "e9", 3_000)]), [Verdict::Quiet]);
        assert_eq!(b.apply_now(&[value("netcat", "p2")]), [Verdict::Quiet]);
        assert_eq!(b.apply_now(&[value("nmap", "p3")]), [Verdict::Fired(1)]);
        let asked = [span("pi-1", 50, 150), Span::single(single)];
        assert_eq!(b.processed(&asked).await.unwrap(), a.processed(&asked).await.unwrap());
        assert_eq!(b.last_seen().await.unwrap(), [("pi-1".to_owned(), 1_700_000_000)]);
        assert!(matches!(a.apply_now(&third)[0], Verdict::Fired(3)));
    }

    #[test]
    fn time_spent_down_counts_against_each_key() {
        let a = MemoryState::new();
        a.apply_now(&[value("netcat", "p1")]);
        let bytes = a.snapshot(0);
        // An hour's TTL, two hours down: gone.
        let b = MemoryState::new();
        assert_eq!(b.restore(&bytes, 7_200_000).unwrap().keys, 0);
        assert_eq!(b.apply_now(&[value("netcat", "p2")]), [Verdict::Fired(1)]);
        // A minute down: kept.
        let c = MemoryState::new();
        assert_eq!(c.restore(&bytes, 60_000).unwrap().keys, 1);
        assert_eq!(c.apply_now(&[value("netcat", "p2")]), [Verdict::Quiet]);
    }

    #[test]
    fn damage_is_an_error_never_a_panic() {
        let a = MemoryState::new();
        a.apply_now(&[window("alice", "e1", 1_000), value("netcat", "p1")]);
        let bytes = a.snapshot(0);
        for cut in 0..bytes.len() {
            assert!(MemoryState::new().restore(&bytes[..cut], 0).is_err(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 0x41;
            assert!(MemoryState::new().restore(&b, 0).is_err(), "byte {at} flipped");
        }
        assert!(matches!(
            MemoryState::new().restore(b"AFSTATE\x09abcd", 0),
            Err(SnapshotError::Format)
        ));
    }
}
