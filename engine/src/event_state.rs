//! The engine's derived state about events: the grouper (templates and fingerprints),
//! the dedup keys and the recurrence statistics, and how they survive restarts.
//!
//! Files in `<data-dir>/events-state/` (formats in `docs/fingerprinting.md`):
//! - `state-<checkpoint>.bin`: the grouper and the recurrence statistics of every event
//!   at or below that checkpoint; one per checkpoint, older ones deleted once the
//!   manifest names a newer checkpoint.
//! - `dedup-<checkpoint>.keys`: the dedup keys of the events flushed at that checkpoint;
//!   deleted once all of them are older than the window.
//!
//! On start the state of the manifest's checkpoint is loaded, key files above it (left by
//! a flush that did not finish) are deleted, and the WAL replay adds the events after it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{Int32Type, TimestampNanosecondType, UInt64Type};
use parking_lot::Mutex;
use xxhash_rust::xxh3::xxh3_64;

use crate::dedup::{Dedup, Reservation, key_of};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::grouping::{DrainConfig, GroupInfo, Grouper, Reader, put_u64};
use crate::manifest::write_atomic;
use crate::recurrence::{Buckets, FingerprintStats, Recurrence, RecurrenceQuery, RecurrenceRow};

const STATE_MAGIC: &[u8; 8] = b"VIGILEVS";
const KEYS_MAGIC: &[u8; 8] = b"VIGILDDK";
const FORMAT_VERSION: u64 = 1;
/// Directory of the files, under the data directory.
pub const EVENTS_STATE_DIR: &str = "events-state";

/// Settings of fingerprinting and deduplication.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// Group messages into templates and fingerprints and keep recurrence statistics;
    /// default true. Off, `template` is the message, `fingerprint` its xxh3-64, and no
    /// statistics are kept (for comparison benchmarks).
    pub grouping: bool,
    /// An event whose key was stored this recently is a duplicate; default 15 minutes;
    /// zero turns deduplication off.
    pub dedup_window: Duration,
    /// Most dedup keys kept (oldest forgotten first); default 1,000,000 (about 64 MiB).
    pub dedup_max_keys: usize,
    /// Clustering tuning.
    pub drain: DrainConfig,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            grouping: true,
            dedup_window: Duration::from_secs(15 * 60),
            dedup_max_keys: 1_000_000,
            drain: DrainConfig::default(),
        }
    }
}

/// What preparing a batch of events decided.
#[derive(Debug)]
pub(crate) struct PreparedEvents {
    pub(crate) duplicates: usize,
    pub(crate) reservation: Option<Reservation>,
}

/// Grouper, dedup keys and recurrence statistics of one engine.
#[derive(Debug)]
pub(crate) struct EventState {
    config: EventsConfig,
    dir: PathBuf,
    grouper: Grouper,
    dedup: Arc<Mutex<Dedup>>,
    /// Every logged event.
    live: Mutex<Recurrence>,
    /// Every event at or below the checkpoint; changed only by the flusher.
    checkpointed: Mutex<Recurrence>,
    /// (checkpoint, newest ingest time) of every dedup key file.
    key_files: Mutex<Vec<(u64, i64)>>,
    duplicates: AtomicU64,
}

/// A checkpoint's state, saved but not yet named by the manifest.
#[derive(Debug)]
pub(crate) struct StagedState {
    recurrence: Recurrence,
    key_file: Option<(u64, i64)>,
}

impl EventState {
    /// Loads the state saved at `checkpoint` from `data_dir`.
    pub(crate) fn open(
        data_dir: &Path,
        config: EventsConfig,
        checkpoint: u64,
        now: i64,
    ) -> Result<Self> {
        let dir = data_dir.join(EVENTS_STATE_DIR);
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let window = i64::try_from(config.dedup_window.as_nanos()).unwrap_or(i64::MAX);
        let state = Self {
            grouper: Grouper::new(config.drain.clone()),
            dedup: Arc::new(Mutex::new(Dedup::new(window, config.dedup_max_keys))),
            live: Mutex::new(Recurrence::default()),
            checkpointed: Mutex::new(Recurrence::default()),
            key_files: Mutex::new(Vec::new()),
            duplicates: AtomicU64::new(0),
            dir,
            config,
        };
        if checkpoint > 0 {
            state.load_state(checkpoint)?;
        }
        state.load_keys(checkpoint, now)?;
        Ok(state)
    }

    fn state_path(&self, checkpoint: u64) -> PathBuf {
        self.dir.join(format!("state-{checkpoint:020}.bin"))
    }

    fn keys_path(&self, checkpoint: u64) -> PathBuf {
        self.dir.join(format!("dedup-{checkpoint:020}.keys"))
    }

    fn load_state(&self, checkpoint: u64) -> Result<()> {
        let path = self.state_path(checkpoint);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(
                    checkpoint,
                    "no saved event state for this checkpoint: fingerprint statistics of \
                     events stored before it start empty"
                );
                return Ok(());
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let name = path.display().to_string();
        let body = checked_body(&bytes, STATE_MAGIC, &name)?;
        let mut r = Reader::new(body, &name);
        if r.u64()? != checkpoint {
            return Err(r.bad("checkpoint (file does not match its name)"));
        }
        self.grouper.decode(&mut r)?;
        let recurrence = Recurrence::decode(&mut r)?;
        *self.live.lock() = recurrence.clone();
        *self.checkpointed.lock() = recurrence;
        Ok(())
    }

    fn load_keys(&self, checkpoint: u64, now: i64) -> Result<()> {
        let mut dedup = self.dedup.lock();
        for (at, path) in self.files("dedup-", ".keys")? {
            if at > checkpoint || !dedup.enabled() {
                remove(&path);
                continue;
            }
            let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
            let name = path.display().to_string();
            let body = checked_body(&bytes, KEYS_MAGIC, &name)?;
            let mut r = Reader::new(body, &name);
            let mut newest = i64::MIN;
            for _ in 0..r.u64()? {
                let key = u128::from(r.u64()?) | (u128::from(r.u64()?) << 64);
                let ingested_at = r.i64()?;
                newest = newest.max(ingested_at);
                dedup.insert(key, ingested_at);
            }
            self.key_files.lock().push((at, newest));
        }
        dedup.evict(now);
        Ok(())
    }

    /// `(checkpoint, path)` of the files named `<prefix><checkpoint><suffix>`, in order.
    fn files(&self, prefix: &str, suffix: &str) -> Result<Vec<(u64, PathBuf)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(at) = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|n| n.strip_suffix(suffix))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            out.push((at, entry.path()));
        }
        out.sort();
        Ok(out)
    }

    /// Groups the events and drops the duplicates among them (reserving their keys).
    pub(crate) fn prepare(&self, events: &mut Vec<Event>, now: i64) -> PreparedEvents {
        for e in events.iter_mut() {
            if self.config.grouping {
                let g = self.grouper.group(
                    e.service.as_deref(),
                    e.event_type.as_deref(),
                    &e.message,
                    e.custom_fingerprint.as_deref(),
                );
                e.fingerprint = g.fingerprint;
                e.template = g.template;
            } else {
                e.fingerprint = xxh3_64(e.message.as_bytes());
                e.template = e.message.clone();
            }
        }
        let mut dedup = self.dedup.lock();
        if !dedup.enabled() {
            return PreparedEvents {
                duplicates: 0,
                reservation: None,
            };
        }
        let mut keys = Vec::with_capacity(events.len());
        let before = events.len();
        events.retain(|e| {
            let key = key_of(&e.event_id);
            let duplicate = dedup.check_and_insert(key, now);
            if !duplicate {
                keys.push(key);
            }
            !duplicate
        });
        drop(dedup);
        let duplicates = before - events.len();
        self.duplicates
            .fetch_add(duplicates as u64, Ordering::Relaxed);
        PreparedEvents {
            duplicates,
            reservation: Some(Reservation::new(Arc::clone(&self.dedup), now, keys)),
        }
    }

    /// A write's events were logged: they count from now on.
    pub(crate) fn logged(&self, recurrence: Recurrence) {
        if !recurrence.by_fingerprint.is_empty() {
            self.live.lock().merge(recurrence);
        }
    }

    /// Whether events are grouped (and their statistics kept).
    pub(crate) fn grouping(&self) -> bool {
        self.config.grouping
    }

    /// An events batch replayed from the WAL: its clusters, keys and counts come back.
    pub(crate) fn replayed(&self, batch: &RecordBatch) -> Result<()> {
        let cols = EventColumns::of(batch)?;
        let mut dedup = self.dedup.lock();
        for row in 0..batch.num_rows() {
            dedup.insert(
                key_of(cols.event_id.value(row)),
                cols.ingested_at.value(row),
            );
            if self.config.grouping {
                let attributes = cols.attributes.value(row);
                self.grouper.learn(
                    cols.service(row),
                    cols.event_type(row),
                    cols.message.value(row),
                    cols.fingerprint.value(row),
                    cols.template.value(row),
                    has_custom_fingerprint(attributes),
                );
            }
        }
        drop(dedup);
        if self.config.grouping {
            self.live.lock().merge(Recurrence::of_batch(batch)?);
        }
        Ok(())
    }

    /// Saves the state at `checkpoint`, the flushed events being `flushed`; it takes
    /// effect with [`EventState::installed`] once the manifest names the checkpoint.
    pub(crate) fn save(&self, flushed: &[&RecordBatch], checkpoint: u64) -> Result<StagedState> {
        let mut recurrence = self.checkpointed.lock().clone();
        let mut keys: Vec<(u128, i64)> = Vec::new();
        for batch in flushed {
            if self.config.grouping {
                recurrence.add_batch(batch)?;
            }
            if self.dedup.lock().enabled() {
                let cols = EventColumns::of(batch)?;
                keys.extend((0..batch.num_rows()).map(|row| {
                    (
                        key_of(cols.event_id.value(row)),
                        cols.ingested_at.value(row),
                    )
                }));
            }
        }
        let key_file = keys
            .iter()
            .map(|(_, at)| *at)
            .max()
            .map(|newest| (checkpoint, newest));
        if !keys.is_empty() {
            let mut body = Vec::with_capacity(8 + keys.len() * 24);
            put_u64(&mut body, keys.len() as u64);
            for (key, at) in keys {
                put_u64(&mut body, key as u64);
                put_u64(&mut body, (key >> 64) as u64);
                put_u64(&mut body, at as u64);
            }
            write_atomic(&self.keys_path(checkpoint), &framed(KEYS_MAGIC, &body))?;
        }
        let mut body = Vec::new();
        put_u64(&mut body, checkpoint);
        self.grouper.encode(&mut body);
        recurrence.encode(&mut body);
        write_atomic(&self.state_path(checkpoint), &framed(STATE_MAGIC, &body))?;
        Ok(StagedState {
            recurrence,
            key_file,
        })
    }

    /// The manifest names `checkpoint`: installs its state and deletes the files it made
    /// obsolete (older states, key files the window has passed).
    pub(crate) fn installed(&self, staged: StagedState, checkpoint: u64, now: i64) {
        *self.checkpointed.lock() = staged.recurrence;
        if let Ok(states) = self.files("state-", ".bin") {
            for (at, path) in states {
                if at < checkpoint {
                    remove(&path);
                }
            }
        }
        let window = i64::try_from(self.config.dedup_window.as_nanos()).unwrap_or(i64::MAX);
        let mut key_files = self.key_files.lock();
        key_files.extend(staged.key_file);
        key_files.retain(|&(at, newest)| {
            let expired = now.saturating_sub(newest) >= window;
            if expired {
                remove(&self.keys_path(at));
            }
            !expired
        });
    }

    /// Duplicates dropped since start.
    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    pub(crate) fn dedup_keys(&self) -> usize {
        self.dedup.lock().len()
    }

    pub(crate) fn clusters(&self) -> usize {
        self.grouper.clusters()
    }

    pub(crate) fn recurrence(&self, q: &RecurrenceQuery) -> Vec<RecurrenceRow> {
        self.live.lock().query(q)
    }

    /// Every fingerprint's statistics (without the per-minute counts, which
    /// [`EventState::recurrence`] reads) with its grouping version (none for a client's
    /// own fingerprint).
    pub(crate) fn fingerprints(&self) -> Vec<(u64, FingerprintStats, Option<GroupInfo>)> {
        let live = self.live.lock();
        let mut out: Vec<_> = live
            .by_fingerprint
            .iter()
            .map(|(&fp, s)| {
                let summary = FingerprintStats {
                    count: s.count,
                    first_seen: s.first_seen,
                    last_seen: s.last_seen,
                    sample: s.sample.clone(),
                    template: s.template.clone(),
                    services: s.services.clone(),
                    systems: s.systems.clone(),
                    buckets: Buckets::default(),
                };
                (fp, summary, self.grouper.info(fp))
            })
            .collect();
        out.sort_by_key(|(fp, _, _)| *fp);
        out
    }
}

/// Whether an event's original JSON carried its own `fingerprint`.
fn has_custom_fingerprint(attributes: &str) -> bool {
    attributes.contains("\"fingerprint\"")
        && serde_json::from_str::<serde_json::Value>(attributes)
            .ok()
            .is_some_and(|v| v.get("fingerprint").is_some_and(|f| !f.is_null()))
}

/// `magic`, the format version, `body`, then xxh3-64 of everything before it.
fn framed(magic: &[u8; 8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 24);
    out.extend_from_slice(magic);
    put_u64(&mut out, FORMAT_VERSION);
    out.extend_from_slice(body);
    let sum = xxh3_64(&out);
    put_u64(&mut out, sum);
    out
}

/// Checks magic, version and checksum of a [`framed`] file; returns its body.
fn checked_body<'a>(bytes: &'a [u8], magic: &[u8; 8], name: &str) -> Result<&'a [u8]> {
    let bad = |reason: String| Error::State {
        path: name.to_string(),
        reason,
    };
    if bytes.len() < 24 || &bytes[..8] != magic {
        return Err(bad(
            "not an event state file (bad magic or too short)".into()
        ));
    }
    let (content, sum) = bytes.split_at(bytes.len() - 8);
    let mut s = [0u8; 8];
    s.copy_from_slice(sum);
    if xxh3_64(content) != u64::from_le_bytes(s) {
        return Err(bad("checksum mismatch".into()));
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&content[8..16]);
    let version = u64::from_le_bytes(v);
    if version != FORMAT_VERSION {
        return Err(bad(format!("unsupported format version {version}")));
    }
    Ok(&content[16..])
}

fn remove(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        tracing::warn!(file = %path.display(), error = %e, "could not delete event state file");
    }
}

/// The columns of an events batch that the state reads.
struct EventColumns<'a> {
    ingested_at: &'a arrow::array::TimestampNanosecondArray,
    event_id: &'a StringArray,
    message: &'a StringArray,
    template: &'a StringArray,
    attributes: &'a StringArray,
    fingerprint: &'a arrow::array::UInt64Array,
    service: &'a arrow::array::DictionaryArray<Int32Type>,
    event_type: &'a arrow::array::DictionaryArray<Int32Type>,
}

impl<'a> EventColumns<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Self> {
        let col = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| Error::State {
                path: "events batch".into(),
                reason: format!("no column '{name}'"),
            })
        };
        let text = |name: &str| -> Result<&'a StringArray> {
            col(name)?
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| Error::State {
                    path: "events batch".into(),
                    reason: format!("column '{name}' is not Utf8"),
                })
        };
        Ok(Self {
            ingested_at: col("ingested_at")?.as_primitive::<TimestampNanosecondType>(),
            event_id: text("event_id")?,
            message: text("message")?,
            template: text("template")?,
            attributes: text("attributes")?,
            fingerprint: col("fingerprint")?.as_primitive::<UInt64Type>(),
            service: col("service")?.as_dictionary::<Int32Type>(),
            event_type: col("event_type")?.as_dictionary::<Int32Type>(),
        })
    }

    fn dict_value(d: &'a arrow::array::DictionaryArray<Int32Type>, row: usize) -> Option<&'a str> {
        if !d.is_valid(row) {
            return None;
        }
        let values = d.values().as_any().downcast_ref::<StringArray>()?;
        Some(values.value(d.keys().value(row) as usize))
    }

    fn service(&self, row: usize) -> Option<&'a str> {
        Self::dict_value(self.service, row)
    }

    fn event_type(&self, row: usize) -> Option<&'a str> {
        Self::dict_value(self.event_type, row)
    }
}
