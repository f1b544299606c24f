//! The engine: write path (prepare, then commit through the WAL into the buffer), flush
//! to Parquet with the manifest and checkpoint, recovery and shutdown.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use vigil_wal::{FsStorage, Wal};

use crate::batch::{TableBatch, build_metric_batches_of, split_by_day};
use crate::buffer::{Buffer, Chunk};
use crate::config::EngineConfig;
use crate::dedup::Reservation;
use crate::error::{Error, Result};
use crate::event_state::EventState;
use crate::events::{events_batch, parse_events};
use crate::grouping::GroupInfo;
use crate::last_values::{CacheView, LastValues, newest_per_series, read_newest};
use crate::line_protocol::{Precision, line_pieces};
use crate::manifest::{FileMeta, MANIFEST_FILE, Manifest, TableManifest};
use crate::payload::{self, KIND_SHIPPED_BATCHES, KIND_TABLE_BATCHES, Origin};
use crate::persist::{PartitionRows, write_partition};
use crate::persist::{PartitionWriter, merge_rows};
use crate::recurrence::{FingerprintStats, Recurrence, RecurrenceQuery, RecurrenceRow};
use crate::schema::{Catalog, EVENTS_TABLE, TableSchema, choose_sort_key, events_schema};
use crate::snapshot::{BufferedPartition, DataFile, TableSnapshot};
use crate::time::TimeProvider;

/// A decoded, validated and encoded write, ready for [`Engine::commit`].
pub struct PreparedWrite {
    /// Per metric table: its batch schema and the line where each column first appeared.
    checks: Vec<(String, SchemaRef, HashMap<String, usize>)>,
    batches: Vec<TableBatch>,
    payload: Vec<u8>,
    rows: usize,
    /// Events dropped as duplicates.
    duplicates: usize,
    events: Option<LoggedEvents>,
}

/// What a write of events changes once it is logged.
struct LoggedEvents {
    recurrence: Recurrence,
    reservation: Option<Reservation>,
}

impl PreparedWrite {
    /// Rows in the write.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// Permission to decode one write ([`Engine::decode_slot`]); dropping it lets the next
/// writer decode.
#[derive(Debug)]
pub struct DecodeSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// What a committed write stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct WriteSummary {
    pub rows: usize,
    /// LSN of the WAL record, 0 for an empty write.
    pub lsn: u64,
    /// Events not stored because an equal one was stored within the dedup window.
    pub duplicates: usize,
}

/// What became of a shipped batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Stored now.
    Stored(WriteSummary),
    /// Its sequence was stored before (a resend after a lost acknowledgement); nothing
    /// was stored again. `stored_seq` is the highest sequence stored for its channel.
    Duplicate { stored_seq: u64 },
}

enum Submitted {
    Appended(vigil_wal::AppendTicket),
    Duplicate { stored_seq: u64, lsn: u64 },
}

/// A shipped batch on its way to durability ([`Engine::ship`]).
pub struct ShipTicket {
    inner: Arc<Inner>,
    submitted: Submitted,
    rows: usize,
    duplicates: usize,
}

impl ShipTicket {
    /// Waits until the batch (or, for a resend, its first copy) is durable.
    pub async fn wait(self) -> Result<Delivery> {
        match self.submitted {
            Submitted::Appended(ticket) => {
                let lsn = ticket.wait().await?;
                let c = &self.inner.counters;
                c.rows.fetch_add(self.rows as u64, Ordering::Relaxed);
                c.writes.fetch_add(1, Ordering::Relaxed);
                Ok(Delivery::Stored(WriteSummary {
                    rows: self.rows,
                    lsn,
                    duplicates: self.duplicates,
                }))
            }
            Submitted::Duplicate { stored_seq, lsn } => {
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while self.inner.wal.durable_lsn() < lsn {
                    if let Some(cause) = self.inner.wal.poisoned() {
                        return Err(Error::Wal(vigil_wal::Error::Poisoned { cause }));
                    }
                    if std::time::Instant::now() > deadline {
                        return Err(Error::NotDurable { lsn });
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok(Delivery::Duplicate { stored_seq })
            }
        }
    }
}

/// Counters since start.
#[derive(Debug, Default)]
struct Counters {
    rows: AtomicU64,
    writes: AtomicU64,
    flushes: AtomicU64,
    files: AtomicU64,
    flush_errors: AtomicU64,
}

/// A snapshot of the engine's state, for `/health` and `/metrics`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EngineStats {
    pub rows_written: u64,
    pub writes: u64,
    pub flushes: u64,
    pub parquet_files_written: u64,
    pub flush_errors: u64,
    pub buffered_rows: usize,
    pub buffered_bytes: usize,
    pub flushing_bytes: usize,
    pub max_buffer_bytes: usize,
    /// Decode slots ([`Engine::decode_slot`]) and how many are taken (by writes being
    /// decoded, or a flush).
    pub decode_slots: usize,
    pub decode_slots_busy: usize,
    pub wal_durable_lsn: u64,
    pub checkpoint_lsn: u64,
    pub parquet_files: usize,
    pub wal_poisoned: Option<String>,
    pub last_flush_error: Option<String>,
    /// Events dropped as duplicates since start.
    pub event_duplicates: u64,
    /// Dedup keys held.
    pub dedup_keys: usize,
    /// Message clusters (templates) learned.
    pub event_clusters: usize,
}

struct State {
    catalog: Catalog,
    buffer: Buffer,
    /// Buffers taken for flushing and not yet in the manifest, oldest first.
    flushing: Vec<Arc<Buffer>>,
    flushing_bytes: usize,
    shutting_down: bool,
    /// Highest sequence stored per (agent, channel), with the LSN of the record that
    /// stored it (0 when it came from the manifest).
    shipped: HashMap<(String, u32), (u64, u64)>,
}

enum FlusherMsg {
    Nudge,
    Stop,
}

struct Inner {
    config: EngineConfig,
    clock: Arc<dyn TimeProvider>,
    wal: Wal,
    state: Mutex<State>,
    /// Held for a whole flush and for every other manifest change (compaction,
    /// retention), so that changes made on a copy of the manifest cannot overwrite each
    /// other.
    flush_lock: Mutex<()>,
    /// Lock order: `state`, then `stored`.
    stored: Mutex<Stored>,
    /// Next number for a new file's name; flushes and compactions both draw from it.
    next_file_id: AtomicU64,
    wake: Sender<FlusherMsg>,
    /// One permit per write being decoded ([`Engine::decode_slot`]).
    decode_slots: Arc<tokio::sync::Semaphore>,
    /// Grouper, dedup keys and recurrence statistics of the events.
    events: EventState,
    counters: Counters,
    last_flush_error: Mutex<Option<String>>,
    stopped: AtomicBool,
    _dir_lock: File,
}

/// The storage engine of one data directory.
pub struct Engine {
    inner: Arc<Inner>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl Engine {
    /// Opens (or creates) the store in `config.data_dir`: loads the manifest, removes files
    /// it does not list, replays the WAL past its checkpoint into the buffer, and starts
    /// the background flusher.
    pub fn open(config: EngineConfig, clock: Arc<dyn TimeProvider>) -> Result<Self> {
        let wal_dir = config.data_dir.join("wal");
        Self::open_with_wal_storage(config, clock, Arc::new(FsStorage::open(wal_dir)?))
    }

    /// [`Engine::open`] with the WAL in `storage` instead of `<data-dir>/wal`; tests use it
    /// to inject I/O faults.
    pub fn open_with_wal_storage(
        config: EngineConfig,
        clock: Arc<dyn TimeProvider>,
        storage: Arc<dyn vigil_wal::Storage>,
    ) -> Result<Self> {
        config.validate()?;
        let dir = config.data_dir.clone();
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let dir_lock = lock_data_dir(&dir)?;
        let manifest = Manifest::load(&dir)?;
        remove_unlisted_files(&dir, &manifest)?;
        let mut catalog = manifest.catalog();
        let next_file_id = AtomicU64::new(manifest.next_file_id);
        let mut stored = Stored {
            manifest: Manifest::default(),
            files: HashMap::new(),
            last_values: LastValues::default(),
        };
        stored.install(&dir, manifest.clone());
        let mut buffer = Buffer::default();
        let mut shipped: HashMap<(String, u32), (u64, u64)> = manifest
            .shipped
            .iter()
            .flat_map(|(agent, channels)| {
                channels
                    .iter()
                    .map(move |(&channel, &seq)| ((agent.clone(), channel), (seq, 0)))
            })
            .collect();
        let events = EventState::open(
            &dir,
            config.events.clone(),
            manifest.checkpoint_lsn,
            clock.now_nanos(),
        )?;
        let (wal, report) = Wal::open(
            storage,
            config.wal.clone(),
            manifest.checkpoint_lsn,
            |lsn, kind, bytes| {
                let mut replay = Replay {
                    catalog: &mut catalog,
                    buffer: &mut buffer,
                    shipped: &mut shipped,
                    events: &events,
                };
                replay
                    .record(lsn, kind, bytes)
                    .map_err(|e| vigil_wal::Error::Replay {
                        lsn,
                        reason: e.to_string(),
                    })
            },
        )?;
        tracing::info!(
            data_dir = %dir.display(),
            checkpoint = manifest.checkpoint_lsn,
            replayed = report.replayed,
            rows = buffer.rows(),
            torn_tail = ?report.torn_tail,
            "recovered"
        );
        let (wake, rx) = crossbeam_channel::unbounded();
        let decode_slots = Arc::new(tokio::sync::Semaphore::new(config.decoders));
        let inner = Arc::new(Inner {
            config,
            clock,
            wal,
            state: Mutex::new(State {
                catalog,
                buffer,
                flushing: Vec::new(),
                flushing_bytes: 0,
                shutting_down: false,
                shipped,
            }),
            flush_lock: Mutex::new(()),
            stored: Mutex::new(stored),
            next_file_id,
            wake,
            decode_slots,
            events,
            counters: Counters::default(),
            last_flush_error: Mutex::new(None),
            stopped: AtomicBool::new(false),
            _dir_lock: dir_lock,
        });
        let flusher_inner = Arc::clone(&inner);
        let flusher = std::thread::Builder::new()
            .name("vigil-flusher".into())
            .spawn(move || flusher_inner.run_flusher(rx))
            .map_err(|e| Error::io("flusher thread", e))?;
        Ok(Self {
            inner,
            flusher: Mutex::new(Some(flusher)),
        })
    }

    /// Commits a batch an agent shipped, exactly once per (agent, channel, sequence):
    /// see [`Engine::ship`].
    pub async fn commit_shipped(&self, write: PreparedWrite, origin: &Origin) -> Result<Delivery> {
        self.ship(write, origin)?.wait().await
    }

    /// Submits a batch an agent shipped; the ticket tells once it is durable. A sequence
    /// at or below the highest stored for its channel is a resend and is not stored again
    /// (its ticket waits until the earlier copy is durable). The highest sequence per
    /// channel is logged with the batch and kept in the manifest, so it survives
    /// restarts.
    ///
    /// An agent sends a channel's batches in increasing sequence order and the caller
    /// submits them in that order; a lower sequence after a higher one counts as a
    /// resend. Submissions are ordered, so tickets of one channel can be awaited while
    /// the next batches are submitted.
    pub fn ship(&self, write: PreparedWrite, origin: &Origin) -> Result<ShipTicket> {
        let (rows, duplicates) = (write.rows, write.duplicates);
        let write = PreparedWrite {
            payload: payload::encode_origin(origin, &write.payload),
            ..write
        };
        let submitted = self.inner.submit_shipped(write, origin)?;
        Ok(ShipTicket {
            inner: Arc::clone(&self.inner),
            submitted,
            rows,
            duplicates,
        })
    }

    /// The highest sequence stored for an agent's channel (0 if none).
    pub fn shipped_seq(&self, agent: &str, channel: u32) -> u64 {
        self.inner
            .state
            .lock()
            .shipped
            .get(&(agent.to_string(), channel))
            .map_or(0, |&(seq, _)| seq)
    }

    /// Waits for a decode slot, in arrival order. Hold it while calling
    /// [`Engine::prepare_line_protocol`] or [`Engine::prepare_events`]: at most
    /// [`EngineConfig::decoders`] writes are decoded at once. Decoding is CPU work, and
    /// more decodes at once than cores only make each slower, raise every writer's latency
    /// and starve the flusher, which then refuses writes.
    pub async fn decode_slot(&self) -> Result<DecodeSlot> {
        Arc::clone(&self.inner.decode_slots)
            .acquire_owned()
            .await
            .map(|permit| DecodeSlot { _permit: permit })
            .map_err(|_| Error::ShuttingDown)
    }

    /// Decodes line protocol and prepares it for [`Engine::commit`]. CPU-bound: call it
    /// off the async runtime, holding a [`Engine::decode_slot`]. Any bad line rejects the
    /// whole request.
    pub fn prepare_line_protocol(
        &self,
        body: &[u8],
        precision: Precision,
    ) -> Result<PreparedWrite> {
        self.prepare_line_protocol_chunks(&[body], precision)
    }

    /// [`Engine::prepare_line_protocol`] of a body that arrived in `chunks` cut anywhere,
    /// as a network stream delivers it: the chunks are decoded where they lie, and only
    /// lines that straddle two chunks are copied.
    pub fn prepare_line_protocol_chunks<C: AsRef<[u8]>>(
        &self,
        chunks: &[C],
        precision: Precision,
    ) -> Result<PreparedWrite> {
        self.inner.check_capacity()?;
        let (pieces, joined) = line_pieces(chunks);
        let bytes: Vec<&[u8]> = pieces.iter().map(|p| p.bytes(chunks, &joined)).collect();
        let mut text = Vec::with_capacity(bytes.len());
        for (i, piece) in bytes.iter().enumerate() {
            text.push(std::str::from_utf8(piece).map_err(|e| {
                let before: usize = bytes[..i]
                    .iter()
                    .map(|b| memchr::memchr_iter(b'\n', b).count())
                    .sum();
                Error::NotUtf8 {
                    line: before + line_of(piece, e.valid_up_to()),
                }
            })?);
        }
        let metric = build_metric_batches_of(&text, precision, self.inner.clock.now_nanos())?;
        let rows = metric.iter().map(|m| m.batch.num_rows()).sum();
        let mut checks = Vec::with_capacity(metric.len());
        let mut batches = Vec::with_capacity(metric.len());
        for mb in metric {
            checks.push((mb.table.clone(), mb.batch.schema(), mb.first_line));
            batches.extend(split_by_day(&mb.table, mb.batch)?);
        }
        self.inner
            .check_catalog(&self.inner.state.lock().catalog, &checks)?;
        self.inner.prepared(checks, batches, rows)
    }

    /// Decodes events (NDJSON or a JSON array), fingerprints them, drops duplicates and
    /// prepares the rest for [`Engine::commit`].
    pub fn prepare_events(&self, body: &[u8]) -> Result<PreparedWrite> {
        self.inner.check_capacity()?;
        let now = self.inner.clock.now_nanos();
        let mut events = parse_events(body, now)?;
        let prepared = self.inner.events.prepare(&mut events, now);
        let (batches, recurrence) = if events.is_empty() {
            (Vec::new(), Recurrence::default())
        } else {
            let batch = events_batch(&events, now)?;
            let recurrence = if self.inner.events.grouping() {
                Recurrence::of_batch(&batch)?
            } else {
                Recurrence::default()
            };
            (split_by_day(EVENTS_TABLE, batch)?, recurrence)
        };
        let mut write = self.inner.prepared(Vec::new(), batches, events.len())?;
        write.duplicates = prepared.duplicates;
        write.events = Some(LoggedEvents {
            recurrence,
            reservation: prepared.reservation,
        });
        Ok(write)
    }

    /// Logs the write in the WAL, buffers it, and resolves once it is durable.
    pub async fn commit(&self, write: PreparedWrite) -> Result<WriteSummary> {
        let duplicates = write.duplicates;
        if write.rows == 0 {
            return Ok(WriteSummary {
                rows: 0,
                lsn: 0,
                duplicates,
            });
        }
        let rows = write.rows;
        let ticket = self.inner.submit(write)?;
        let lsn = ticket.wait().await?;
        self.inner
            .counters
            .rows
            .fetch_add(rows as u64, Ordering::Relaxed);
        self.inner.counters.writes.fetch_add(1, Ordering::Relaxed);
        Ok(WriteSummary {
            rows,
            lsn,
            duplicates,
        })
    }

    /// Recurrence of every fingerprint over a window (see [`RecurrenceQuery`]).
    pub fn recurrence(&self, query: &RecurrenceQuery) -> Vec<RecurrenceRow> {
        self.inner.events.recurrence(query)
    }

    /// Every fingerprint's statistics (without per-minute counts: see
    /// [`Engine::recurrence`]), with its grouping version and current template (`None` for
    /// a client's own fingerprint), in fingerprint order.
    pub fn fingerprints(&self) -> Vec<(u64, FingerprintStats, Option<GroupInfo>)> {
        self.inner.events.fingerprints()
    }

    /// The engine's clock, nanoseconds since the epoch.
    pub fn now_nanos(&self) -> i64 {
        self.inner.clock.now_nanos()
    }

    /// Writes every buffered row to Parquet and advances the checkpoint. Blocking.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    /// The schemas of every table.
    pub fn catalog(&self) -> Catalog {
        self.inner.state.lock().catalog.clone()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }

    /// The current manifest.
    pub fn manifest(&self) -> Manifest {
        self.inner.stored.lock().manifest.clone()
    }

    /// Names of every table: the metric tables and `events`, which always exists.
    pub fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .state
            .lock()
            .catalog
            .tables()
            .map(|(n, _)| n.to_string())
            .collect();
        if !names.iter().any(|n| n == EVENTS_TABLE) {
            names.push(EVENTS_TABLE.to_string());
        }
        names.sort();
        names
    }

    /// The schema of `table`, `None` when there is no such table.
    pub fn table_schema(&self, table: &str) -> Option<TableSchema> {
        if table == EVENTS_TABLE {
            return Some(events_schema().clone());
        }
        self.inner.state.lock().catalog.table(table).cloned()
    }

    /// A consistent view of `table`: its Parquet files and its buffered rows (merged per
    /// day the way a flush would write them). `None` when there is no such table.
    ///
    /// The files stay on disk while the snapshot (or a clone of its `files`) is alive,
    /// even if a compaction replaces them meanwhile.
    pub fn snapshot(&self, table: &str) -> Result<Option<TableSnapshot>> {
        let (schema, days, files) = {
            let st = self.inner.state.lock();
            let stored = self.inner.stored.lock();
            let schema = if table == EVENTS_TABLE {
                events_schema().clone()
            } else {
                match st.catalog.table(table) {
                    Some(s) => s.clone(),
                    None => return Ok(None),
                }
            };
            let mut days: BTreeMap<i32, Vec<RecordBatch>> = BTreeMap::new();
            // Oldest first: buffers being flushed, then the live buffer.
            for buffer in st.flushing.iter().map(|b| &**b).chain([&st.buffer]) {
                for (t, day, chunks) in buffer.partitions() {
                    if t == table {
                        days.entry(day)
                            .or_default()
                            .extend(chunks.iter().map(|c| c.batch.clone()));
                    }
                }
            }
            (schema, days, stored.table_files(table))
        };
        let mut buffered = Vec::with_capacity(days.len());
        for (day, chunks) in days {
            let batch = merge_rows(&PartitionRows {
                table,
                day,
                schema: &schema,
                chunks,
                max_lsn: 0,
            })?;
            if batch.num_rows() == 0 {
                continue;
            }
            let (min_time, max_time) = crate::persist::time_range(&batch);
            buffered.push(BufferedPartition {
                day,
                batch,
                min_time,
                max_time,
            });
        }
        Ok(Some(TableSnapshot {
            name: table.to_string(),
            schema,
            files,
            buffered,
        }))
    }

    /// The smallest and largest `time` stored in `table`, in its files and buffers;
    /// `None` when it holds no rows (or does not exist).
    pub fn time_bounds(&self, table: &str) -> Option<(i64, i64)> {
        let (files, chunks) = {
            let st = self.inner.state.lock();
            let stored = self.inner.stored.lock();
            let mut chunks = Vec::new();
            for buffer in st.flushing.iter().map(|b| &**b).chain([&st.buffer]) {
                for (t, _, c) in buffer.partitions() {
                    if t == table {
                        chunks.extend(c.iter().map(|c| c.batch.clone()));
                    }
                }
            }
            (stored.table_files(table), chunks)
        };
        let files = files.iter().map(|f| (f.meta().min_time, f.meta().max_time));
        let buffered = chunks
            .iter()
            .filter(|c| c.num_rows() > 0)
            .map(crate::persist::time_range);
        files
            .chain(buffered)
            .reduce(|(lo, hi), (l, h)| (lo.min(l), hi.max(h)))
    }

    /// The newest row of every series of metric table `table` (largest `time`; of equal
    /// times the later write), buffered rows included, in the table's current schema.
    /// `None` for `events` and unknown tables.
    ///
    /// Answered from the last-value cache; the first call after a start or a retention
    /// pass rebuilds the cache by reading the table's files once. A table with more
    /// series than `last_value_max_series` is read in full at every call.
    pub fn last_rows(&self, table: &str) -> Result<Option<RecordBatch>> {
        if table == EVENTS_TABLE {
            return Ok(None);
        }
        let (schema, mut chunks, view) = {
            let st = self.inner.state.lock();
            let stored = self.inner.stored.lock();
            let Some(schema) = st.catalog.table(table).cloned() else {
                return Ok(None);
            };
            let mut chunks = Vec::new();
            for buffer in st.flushing.iter().map(|b| &**b).chain([&st.buffer]) {
                for (t, _day, cs) in buffer.partitions() {
                    if t == table {
                        chunks.extend(cs.iter().map(|c| (c.lsn, c.batch.clone())));
                    }
                }
            }
            let view = stored.last_values.view(table, stored.table_files(table));
            (schema, chunks, view)
        };
        let max_series = self.inner.config.last_value_max_series;
        let stored_rows = match view {
            CacheView::Ready(rows) => rows,
            CacheView::TooMany { files } => read_newest(&schema, &files)?,
            CacheView::Stale {
                files,
                delta,
                epoch,
            } => {
                let rows = read_newest(&schema, &files)?;
                let rows = match delta {
                    Some(delta) => newest_per_series(&schema, &[rows, delta])?,
                    None => rows,
                };
                if max_series > 0 {
                    self.inner.stored.lock().last_values.rebuilt(
                        table,
                        &schema,
                        rows.clone(),
                        epoch,
                        max_series,
                    )?;
                }
                rows
            }
        };
        // Buffered rows are newer than every file; among themselves, in write order.
        chunks.sort_by_key(|(lsn, _)| *lsn);
        let mut batches = Vec::with_capacity(chunks.len() + 1);
        batches.push(stored_rows);
        batches.extend(chunks.into_iter().map(|(_, b)| b));
        Ok(Some(newest_per_series(&schema, &batches)?))
    }

    /// A writer for a new Parquet file in `table`'s `partition` (`yyyy-mm-dd`), for
    /// compaction. The file is not part of the store until [`Engine::replace_files`]
    /// lists it.
    pub fn partition_writer(&self, table: &str, partition: &str) -> Result<PartitionWriter> {
        let schema = self.table_schema(table).ok_or_else(|| Error::Manifest {
            path: MANIFEST_FILE.into(),
            reason: format!("no table '{table}'"),
        })?;
        let id = self.inner.next_file_id.fetch_add(1, Ordering::SeqCst);
        PartitionWriter::create(
            &self.inner.config.data_dir,
            self.inner.config.row_group_rows,
            id,
            table,
            partition,
            &schema,
        )
    }

    /// Atomically replaces the files `removed` of `table` with `added` (none for
    /// retention) in the manifest. Returns `false`, changing nothing, when one of
    /// `removed` is no longer listed (another change got there first); the caller then
    /// deletes `added`. Replaced files are deleted once no snapshot holds them.
    pub fn replace_files(
        &self,
        table: &str,
        removed: &[String],
        added: Option<FileMeta>,
    ) -> Result<bool> {
        let _guard = self.inner.flush_lock.lock();
        let mut manifest = self.manifest();
        let Some(t) = manifest.tables.get_mut(table) else {
            return Ok(false);
        };
        let before = t.files.len();
        t.files.retain(|f| !removed.contains(&f.path));
        if before - t.files.len() != removed.len() {
            return Ok(false);
        }
        let rows_removed = added.is_none();
        t.files.extend(added);
        manifest.next_file_id = self.inner.next_file_id.load(Ordering::SeqCst);
        manifest.save(&self.inner.config.data_dir)?;
        let mut stored = self.inner.stored.lock();
        stored.install(&self.inner.config.data_dir, manifest);
        if rows_removed {
            stored.last_values.rows_removed(table);
        }
        Ok(true)
    }

    pub fn stats(&self) -> EngineStats {
        self.inner.stats()
    }

    /// Stops accepting writes, flushes the buffer to Parquet and closes the WAL.
    pub fn shutdown(&self) -> Result<()> {
        if self.inner.stopped.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.state.lock().shutting_down = true;
        let _ = self.inner.wake.send(FlusherMsg::Stop);
        if let Some(h) = self.flusher.lock().take() {
            let _ = h.join();
        }
        let result = if self.inner.wal.poisoned().is_some() {
            // The WAL holds exactly what was acknowledged; recovery will replay it.
            Ok(())
        } else {
            self.inner.flush()
        };
        self.inner.wal.close();
        result
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "flush at shutdown failed; the WAL still holds the data");
        }
    }
}

impl Inner {
    fn check_capacity(&self) -> Result<()> {
        self.ensure_room(&self.state.lock())
    }

    /// Refuses writes while shutting down or while the buffer is over its limit (and then
    /// wakes the flusher).
    fn ensure_room(&self, st: &State) -> Result<()> {
        if st.shutting_down {
            return Err(Error::ShuttingDown);
        }
        let buffered = st.buffer.bytes() + st.flushing_bytes;
        if buffered > self.config.max_buffer_bytes {
            let _ = self.wake.send(FlusherMsg::Nudge);
            return Err(Error::Overloaded {
                buffered,
                limit: self.config.max_buffer_bytes,
            });
        }
        Ok(())
    }

    fn check_catalog(
        &self,
        catalog: &Catalog,
        checks: &[(String, SchemaRef, HashMap<String, usize>)],
    ) -> Result<()> {
        for (table, schema, first_line) in checks {
            catalog.check(table, schema, &|c| first_line.get(c).copied().unwrap_or(0))?;
        }
        Ok(())
    }

    fn prepared(
        &self,
        checks: Vec<(String, SchemaRef, HashMap<String, usize>)>,
        batches: Vec<TableBatch>,
        rows: usize,
    ) -> Result<PreparedWrite> {
        // Also for no rows: a shipped batch of only duplicates is still logged, for its
        // sequence number.
        let payload = payload::encode(&batches)?;
        Ok(PreparedWrite {
            checks,
            batches,
            payload,
            rows,
            duplicates: 0,
            events: None,
        })
    }

    /// Under one lock, so that buffer order is LSN order and the catalog check cannot race:
    /// re-check types, widen tables, assign the LSN, buffer the rows.
    fn submit(&self, write: PreparedWrite) -> Result<vigil_wal::AppendTicket> {
        let mut st = self.state.lock();
        self.append(&mut st, write, KIND_TABLE_BATCHES)
    }

    /// Appends a shipped batch to the WAL and buffers it, unless its sequence is already
    /// stored. The duplicate check and the append happen under one lock, so two sends of
    /// one sequence cannot both be stored.
    fn submit_shipped(&self, write: PreparedWrite, origin: &Origin) -> Result<Submitted> {
        let mut st = self.state.lock();
        let key = (origin.agent.clone(), origin.channel);
        if let Some(&(stored_seq, lsn)) = st.shipped.get(&key)
            && origin.seq <= stored_seq
        {
            return Ok(Submitted::Duplicate { stored_seq, lsn });
        }
        let ticket = self.append(&mut st, write, KIND_SHIPPED_BATCHES)?;
        st.shipped.insert(key, (origin.seq, ticket.lsn()));
        Ok(Submitted::Appended(ticket))
    }

    /// Checks `write` against the catalog, appends it to the WAL and buffers it.
    fn append(
        &self,
        st: &mut State,
        write: PreparedWrite,
        kind: u8,
    ) -> Result<vigil_wal::AppendTicket> {
        self.ensure_room(st)?;
        self.check_catalog(&st.catalog, &write.checks)?;
        let ticket = self.wal.submit(kind, write.payload)?;
        if let Some(events) = write.events {
            if let Some(r) = events.reservation {
                r.keep();
            }
            self.events.logged(events.recurrence);
        }
        for (table, schema, _) in &write.checks {
            st.catalog.register(table, schema);
        }
        st.buffer.insert(ticket.lsn(), write.batches);
        if st.buffer.bytes() >= self.config.flush_bytes {
            let _ = self.wake.send(FlusherMsg::Nudge);
        }
        Ok(ticket)
    }

    fn run_flusher(&self, rx: Receiver<FlusherMsg>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match rx.recv_timeout(backoff) {
                Ok(FlusherMsg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(FlusherMsg::Nudge) | Err(RecvTimeoutError::Timeout) => {}
            }
            if !self.config.background_flush || !self.flush_due() {
                continue;
            }
            // A flush takes a decode slot: while it runs, one write fewer is decoded, so
            // that the flusher gets a core and keeps up with the writers instead of
            // sharing a core with them until the buffer is full and writes are refused.
            let slot = futures::executor::block_on(Arc::clone(&self.decode_slots).acquire_owned());
            let result = self.flush();
            drop(slot);
            match result {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::error!(error = %e, "flush failed; will retry");
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    fn flush_due(&self) -> bool {
        if self.wal.poisoned().is_some() {
            return false;
        }
        let st = self.state.lock();
        st.buffer.bytes() >= self.config.flush_bytes
            || st
                .buffer
                .oldest()
                .is_some_and(|t| t.elapsed() >= self.config.flush_age)
            || !st.flushing.is_empty()
    }

    fn flush(&self) -> Result<()> {
        let result = self.try_flush();
        match &result {
            Ok(()) => *self.last_flush_error.lock() = None,
            Err(e) => {
                self.counters.flush_errors.fetch_add(1, Ordering::Relaxed);
                *self.last_flush_error.lock() = Some(e.to_string());
            }
        }
        result
    }

    fn try_flush(&self) -> Result<()> {
        let _flushing = self.flush_lock.lock();
        let started = std::time::Instant::now();
        if let Some(cause) = self.wal.poisoned() {
            return Err(Error::Wal(vigil_wal::Error::Poisoned { cause }));
        }
        let (pending, checkpoint, mut catalog, shipped) = {
            let mut st = self.state.lock();
            if !st.buffer.is_empty() {
                let taken = std::mem::take(&mut st.buffer);
                st.flushing_bytes += taken.bytes();
                st.flushing.push(Arc::new(taken));
            }
            // Every LSN assigned so far is in the buffers taken: assignment and buffering
            // happen under this same lock.
            let mut shipped: BTreeMap<String, BTreeMap<u32, u64>> = BTreeMap::new();
            for ((agent, channel), (seq, _)) in &st.shipped {
                shipped
                    .entry(agent.clone())
                    .or_default()
                    .insert(*channel, *seq);
            }
            (
                st.flushing.clone(),
                self.wal.last_assigned_lsn(),
                st.catalog.clone(),
                shipped,
            )
        };
        let mut manifest = self.stored.lock().manifest.clone();
        if pending.is_empty() && checkpoint == manifest.checkpoint_lsn {
            return Ok(());
        }
        self.fix_sort_keys(&pending, &manifest, &mut catalog);
        let files_before = manifest.file_paths().count();
        let newest = self.write_files(&pending, &catalog, &mut manifest)?;
        let files = manifest.file_paths().count() - files_before;
        for (name, schema) in catalog.tables() {
            set_schema(&mut manifest, name, schema);
        }
        if manifest.tables.contains_key(EVENTS_TABLE) {
            set_schema(&mut manifest, EVENTS_TABLE, events_schema());
        }
        manifest.checkpoint_lsn = checkpoint;
        manifest.shipped = shipped;
        manifest.next_file_id = self.next_file_id.load(Ordering::SeqCst);
        let flushed_events: Vec<&RecordBatch> = table_batches(&pending, EVENTS_TABLE).collect();
        let events_state = self.events.save(&flushed_events, checkpoint)?;
        manifest.save(&self.config.data_dir)?;
        self.events
            .installed(events_state, checkpoint, self.clock.now_nanos());
        {
            // Both under the locks together, so that a snapshot sees these rows either
            // in the buffers being flushed or in the files, never in both or neither.
            let mut st = self.state.lock();
            let mut stored = self.stored.lock();
            stored.install(&self.config.data_dir, manifest);
            for (table, rows) in newest {
                stored.fold_flushed(&table, &catalog, rows, self.config.last_value_max_series);
            }
            drop(stored);
            let done: usize = st.flushing.drain(..pending.len()).map(|b| b.bytes()).sum();
            st.flushing_bytes -= done;
        }
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        self.counters
            .files
            .fetch_add(files as u64, Ordering::Relaxed);
        if let Err(e) = self.wal.truncate_through(checkpoint) {
            tracing::warn!(error = %e, "could not delete WAL segments behind the checkpoint");
        }
        let rows: usize = pending.iter().map(|b| b.rows()).sum();
        tracing::info!(
            rows,
            files,
            checkpoint,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "flushed to Parquet"
        );
        Ok(())
    }

    /// Records the series key order of every metric table about to get its first file,
    /// chosen from the rows being flushed (see [`choose_sort_key`]), in the engine's
    /// catalog and in `catalog`. A table that has files keeps its order (tables written
    /// before orders were recorded keep sorting every tag by name).
    ///
    /// Snapshots taken before this see no file of such a table, only buffers sorted the
    /// old way; snapshots after it sort buffers the new way; either is consistent.
    fn fix_sort_keys(&self, pending: &[Arc<Buffer>], manifest: &Manifest, catalog: &mut Catalog) {
        let unset: Vec<String> = catalog
            .tables()
            .filter(|(name, schema)| {
                schema.sort_key().is_none()
                    && manifest
                        .tables
                        .get(*name)
                        .is_none_or(|t| t.files.is_empty())
            })
            .map(|(name, _)| name.to_string())
            .collect();
        for table in unset {
            let Some(schema) = catalog.table(&table) else {
                continue;
            };
            let chunks: Vec<&RecordBatch> = table_batches(pending, &table).collect();
            if chunks.is_empty() {
                continue;
            }
            let key = choose_sort_key(schema, chunks);
            tracing::info!(table, key = key.join(","), "series key order fixed");
            let slice = self
                .config
                .time_slice
                .map(|w| w.as_nanos().min(i64::MAX as u128) as i64);
            self.state
                .lock()
                .catalog
                .set_sort_key(&table, key.clone(), slice);
            catalog.set_sort_key(&table, key, slice);
        }
    }

    /// Writes one Parquet file per (table, day) of the pending buffers into `manifest`.
    /// Returns the newest row of each series of each metric file written, for the
    /// last-value cache.
    fn write_files(
        &self,
        pending: &[Arc<Buffer>],
        catalog: &Catalog,
        manifest: &mut Manifest,
    ) -> Result<Vec<(String, RecordBatch)>> {
        let mut parts: BTreeMap<(&str, i32), Vec<&Chunk>> = BTreeMap::new();
        for buffer in pending {
            for (table, day, chunks) in buffer.partitions() {
                parts.entry((table, day)).or_default().extend(chunks);
            }
        }
        let mut newest = Vec::new();
        for ((table, day), chunks) in parts {
            let schema = catalog.table(table).ok_or_else(|| Error::Manifest {
                path: MANIFEST_FILE.into(),
                reason: format!("buffered table '{table}' has no schema"),
            })?;
            let part = PartitionRows {
                table,
                day,
                schema,
                max_lsn: chunks.iter().map(|c| c.lsn).max().unwrap_or(0),
                chunks: chunks
                    .iter()
                    .map(|c| c.batch.clone())
                    .collect::<Vec<RecordBatch>>(),
            };
            let file_id = self.next_file_id.fetch_add(1, Ordering::SeqCst);
            if let Some((meta, rows)) = write_partition(
                &self.config.data_dir,
                self.config.row_group_rows,
                file_id,
                &part,
            )? {
                set_schema(manifest, table, schema);
                if let Some(t) = manifest.tables.get_mut(table) {
                    t.files.push(meta);
                }
                if table != EVENTS_TABLE && self.config.last_value_max_series > 0 {
                    newest.push((table.to_string(), newest_per_series(schema, &[rows])?));
                }
            }
        }
        Ok(newest)
    }

    fn stats(&self) -> EngineStats {
        let (buffered_rows, buffered_bytes, flushing_bytes) = {
            let st = self.state.lock();
            (st.buffer.rows(), st.buffer.bytes(), st.flushing_bytes)
        };
        let (checkpoint_lsn, parquet_files) = {
            let s = self.stored.lock();
            (s.manifest.checkpoint_lsn, s.manifest.file_paths().count())
        };
        let c = &self.counters;
        EngineStats {
            rows_written: c.rows.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            parquet_files_written: c.files.load(Ordering::Relaxed),
            flush_errors: c.flush_errors.load(Ordering::Relaxed),
            buffered_rows,
            buffered_bytes,
            flushing_bytes,
            max_buffer_bytes: self.config.max_buffer_bytes,
            decode_slots: self.config.decoders,
            decode_slots_busy: self
                .config
                .decoders
                .saturating_sub(self.decode_slots.available_permits()),
            wal_durable_lsn: self.wal.durable_lsn(),
            checkpoint_lsn,
            parquet_files,
            wal_poisoned: self.wal.poisoned(),
            last_flush_error: self.last_flush_error.lock().clone(),
            event_duplicates: self.events.duplicates(),
            dedup_keys: self.events.dedup_keys(),
            event_clusters: self.events.clusters(),
        }
    }
}

/// The manifest in force and the files it lists.
struct Stored {
    manifest: Manifest,
    /// Path (relative to the data dir) → file.
    files: HashMap<String, Arc<DataFile>>,
    /// Newest row per series over these files.
    last_values: LastValues,
}

impl Stored {
    /// Makes `manifest` the one in force: files it newly lists join, files it no longer
    /// lists are marked obsolete (deleted when their last reader drops them).
    fn install(&mut self, data_dir: &Path, manifest: Manifest) {
        let listed: std::collections::HashSet<&str> = manifest.file_paths().collect();
        self.files.retain(|path, file| {
            let keep = listed.contains(path.as_str());
            if !keep {
                file.mark_obsolete();
            }
            keep
        });
        for t in manifest.tables.values() {
            for f in &t.files {
                if !self.files.contains_key(&f.path) {
                    self.files
                        .insert(f.path.clone(), Arc::new(DataFile::new(data_dir, f.clone())));
                }
            }
        }
        self.manifest = manifest;
    }

    /// The files of `table` in force, oldest write first.
    fn table_files(&self, table: &str) -> Vec<Arc<DataFile>> {
        let mut files: Vec<Arc<DataFile>> = self
            .manifest
            .tables
            .get(table)
            .map(|t| {
                t.files
                    .iter()
                    .filter_map(|f| self.files.get(&f.path).cloned())
                    .collect()
            })
            .unwrap_or_default();
        files.sort_by_key(|f| f.meta().max_lsn);
        files
    }

    /// Folds a flushed file's newest rows into the last-value cache. On failure the
    /// table's cache is dropped (rebuilt at its next use) rather than left wrong.
    fn fold_flushed(&mut self, table: &str, catalog: &Catalog, rows: RecordBatch, max: usize) {
        let folded = match catalog.table(table) {
            Some(schema) => self.last_values.flushed(table, schema, rows, max),
            None => Ok(()),
        };
        if let Err(e) = folded {
            tracing::warn!(table, error = %e, "last-value cache dropped");
            self.last_values.rows_removed(table);
        }
    }
}

/// The buffered batches of `table` in `buffers`, every day, oldest buffer first.
fn table_batches<'a>(
    buffers: &'a [Arc<Buffer>],
    table: &'a str,
) -> impl Iterator<Item = &'a RecordBatch> + 'a {
    buffers
        .iter()
        .flat_map(|b| b.partitions())
        .filter(move |(t, _, _)| *t == table)
        .flat_map(|(_, _, chunks)| chunks.iter().map(|c| &c.batch))
}

fn set_schema(manifest: &mut Manifest, table: &str, schema: &TableSchema) {
    manifest
        .tables
        .entry(table.to_string())
        .or_insert_with(|| TableManifest {
            schema: schema.clone(),
            files: Vec::new(),
        })
        .schema = schema.clone();
}

/// What WAL replay rebuilds.
struct Replay<'a> {
    catalog: &'a mut Catalog,
    buffer: &'a mut Buffer,
    shipped: &'a mut HashMap<(String, u32), (u64, u64)>,
    events: &'a EventState,
}

impl Replay<'_> {
    fn record(&mut self, lsn: u64, kind: u8, bytes: &[u8]) -> Result<()> {
        let batches = match kind {
            KIND_TABLE_BATCHES => payload::decode(lsn, bytes)?,
            KIND_SHIPPED_BATCHES => {
                let (origin, rest) = payload::decode_origin(lsn, bytes)?;
                let batches = payload::decode(lsn, rest)?;
                let slot = self
                    .shipped
                    .entry((origin.agent, origin.channel))
                    .or_insert((0, 0));
                if origin.seq > slot.0 {
                    *slot = (origin.seq, lsn);
                }
                batches
            }
            _ => {
                return Err(Error::BadRecord {
                    lsn,
                    reason: format!("unknown record kind {kind}"),
                });
            }
        };
        for tb in &batches {
            if tb.table == EVENTS_TABLE {
                self.events.replayed(&tb.batch)?;
            } else {
                self.catalog.register(&tb.table, &tb.batch.schema());
            }
        }
        self.buffer.insert(lsn, batches);
        Ok(())
    }
}

fn line_of(body: &[u8], offset: usize) -> usize {
    body[..offset].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Takes an exclusive lock on `<dir>/LOCK` so that two servers cannot share a directory.
fn lock_data_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    file.try_lock().map_err(|e| {
        Error::io(
            &path,
            std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!("data directory is in use by another process ({e})"),
            ),
        )
    })?;
    Ok(file)
}

/// Deletes Parquet files the manifest does not list (left by a crash during a flush) and
/// temp files.
fn remove_unlisted_files(dir: &Path, manifest: &Manifest) -> Result<()> {
    let listed: std::collections::HashSet<&str> = manifest.file_paths().collect();
    let tables = dir.join("tables");
    let mut stack = vec![tables.clone()];
    let _ = fs::remove_file(crate::manifest::tmp_path(&dir.join(MANIFEST_FILE)));
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(dir)
                .map(|p| p.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            if !listed.contains(rel.as_str()) {
                tracing::info!(file = %path.display(), "removing file not listed in the manifest");
                fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::MockTimeProvider;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    /// What a prepared write holds, or its error, for comparing two decodes.
    fn outcome(r: Result<PreparedWrite>) -> std::result::Result<(Vec<String>, Vec<u8>), String> {
        r.map(|w| {
            let batches = w
                .batches
                .iter()
                .map(|b| format!("{} {} {:?}", b.table, b.day, b.batch))
                .collect();
            (batches, w.payload)
        })
        .map_err(|e| e.to_string())
    }

    fn line() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => (0..3u8, 0..4u8, -100i64..100, 0..3u8).prop_map(|(m, h, v, t)| {
                let m = ["cpu", "mém", "disk"][m as usize];
                let ts = ["", " 1700000000000000000", " 1700086400000000001"][t as usize];
                format!("{m},host=h{h} u={v}.5,n={v}i{ts}").into_bytes()
            }),
            1 => Just(b"# a comment".to_vec()),
            1 => Just(Vec::new()),
            1 => Just(b"cpu,host=h1 u=1 1700000000000000000\r".to_vec()),
            1 => Just(b"cpu u=".to_vec()),
            1 => Just(b"cpu,host=h\xff u=1".to_vec()),
            1 => Just("cpu,host=é s=\"ü\"".as_bytes().to_vec()),
        ]
    }

    #[test]
    fn a_body_cut_into_chunks_anywhere_decodes_as_the_whole_does() {
        let dir = tempfile::tempdir().unwrap();
        let config = EngineConfig {
            data_dir: dir.path().to_path_buf(),
            ..EngineConfig::default()
        };
        let engine = Engine::open(
            config,
            Arc::new(MockTimeProvider::new(1_700_000_000_000_000_000)),
        )
        .unwrap();
        let case = (
            proptest::collection::vec(line(), 0..16),
            any::<bool>(),
            proptest::collection::vec(any::<proptest::sample::Index>(), 0..10),
        );
        TestRunner::new(Config::with_cases(256))
            .run(&case, |(lines, newline_at_end, cuts)| {
                let mut body = lines.join(&b'\n');
                if newline_at_end {
                    body.push(b'\n');
                }
                let mut at: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
                at.sort_unstable();
                at.push(body.len());
                let mut chunks = Vec::new();
                let mut from = 0;
                for to in at {
                    chunks.push(&body[from..to]);
                    from = to;
                }
                let whole = outcome(engine.prepare_line_protocol(&body, Precision::Nanoseconds));
                let cut =
                    outcome(engine.prepare_line_protocol_chunks(&chunks, Precision::Nanoseconds));
                prop_assert_eq!(cut, whole);
                Ok(())
            })
            .unwrap();
    }
}
