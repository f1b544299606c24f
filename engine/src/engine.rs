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

use crate::batch::{TableBatch, build_metric_batches, split_by_day};
use crate::buffer::{Buffer, Chunk};
use crate::config::EngineConfig;
use crate::error::{Error, Result};
use crate::events::{events_batch, parse_events};
use crate::line_protocol::Precision;
use crate::manifest::{MANIFEST_FILE, Manifest, TableManifest};
use crate::payload::{self, KIND_TABLE_BATCHES};
use crate::persist::{PartitionRows, write_partition};
use crate::schema::{Catalog, EVENTS_TABLE, TableSchema, events_schema};
use crate::time::TimeProvider;

/// A decoded, validated and encoded write, ready for [`Engine::commit`].
pub struct PreparedWrite {
    /// Per metric table: its batch schema and the line where each column first appeared.
    checks: Vec<(String, SchemaRef, HashMap<String, usize>)>,
    batches: Vec<TableBatch>,
    payload: Vec<u8>,
    rows: usize,
}

impl PreparedWrite {
    /// Rows in the write.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// What a committed write stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct WriteSummary {
    pub rows: usize,
    /// LSN of the WAL record, 0 for an empty write.
    pub lsn: u64,
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
    pub wal_durable_lsn: u64,
    pub checkpoint_lsn: u64,
    pub parquet_files: usize,
    pub wal_poisoned: Option<String>,
    pub last_flush_error: Option<String>,
}

struct State {
    catalog: Catalog,
    buffer: Buffer,
    /// Buffers taken for flushing and not yet in the manifest, oldest first.
    flushing: Vec<Arc<Buffer>>,
    flushing_bytes: usize,
    shutting_down: bool,
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
    /// Held for a whole flush; guards `manifest` changes.
    flush_lock: Mutex<()>,
    manifest: Mutex<Manifest>,
    wake: Sender<FlusherMsg>,
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
        let mut buffer = Buffer::default();
        let (wal, report) = Wal::open(
            storage,
            config.wal.clone(),
            manifest.checkpoint_lsn,
            |lsn, kind, bytes| {
                replay_record(&mut catalog, &mut buffer, lsn, kind, bytes).map_err(|e| {
                    vigil_wal::Error::Replay {
                        lsn,
                        reason: e.to_string(),
                    }
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
            }),
            flush_lock: Mutex::new(()),
            manifest: Mutex::new(manifest),
            wake,
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

    /// Decodes line protocol and prepares it for [`Engine::commit`]. CPU-bound: call it
    /// off the async runtime. Any bad line rejects the whole request.
    pub fn prepare_line_protocol(
        &self,
        body: &[u8],
        precision: Precision,
    ) -> Result<PreparedWrite> {
        self.inner.check_capacity()?;
        let text = std::str::from_utf8(body).map_err(|e| Error::NotUtf8 {
            line: line_of(body, e.valid_up_to()),
        })?;
        let metric = build_metric_batches(text, precision, self.inner.clock.now_nanos())?;
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

    /// Decodes events (NDJSON or a JSON array) and prepares them for [`Engine::commit`].
    pub fn prepare_events(&self, body: &[u8]) -> Result<PreparedWrite> {
        self.inner.check_capacity()?;
        let now = self.inner.clock.now_nanos();
        let events = parse_events(body, now)?;
        let batches = if events.is_empty() {
            Vec::new()
        } else {
            split_by_day(EVENTS_TABLE, events_batch(&events, now)?)?
        };
        self.inner.prepared(Vec::new(), batches, events.len())
    }

    /// Logs the write in the WAL, buffers it, and resolves once it is durable.
    pub async fn commit(&self, write: PreparedWrite) -> Result<WriteSummary> {
        if write.rows == 0 {
            return Ok(WriteSummary { rows: 0, lsn: 0 });
        }
        let rows = write.rows;
        let ticket = self.inner.submit(write)?;
        let lsn = ticket.wait().await?;
        self.inner
            .counters
            .rows
            .fetch_add(rows as u64, Ordering::Relaxed);
        self.inner.counters.writes.fetch_add(1, Ordering::Relaxed);
        Ok(WriteSummary { rows, lsn })
    }

    /// Writes every buffered row to Parquet and advances the checkpoint. Blocking.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    /// The schemas of every table.
    pub fn catalog(&self) -> Catalog {
        self.inner.state.lock().catalog.clone()
    }

    /// The current manifest.
    pub fn manifest(&self) -> Manifest {
        self.inner.manifest.lock().clone()
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
        let payload = if rows == 0 {
            Vec::new()
        } else {
            payload::encode(&batches)?
        };
        Ok(PreparedWrite {
            checks,
            batches,
            payload,
            rows,
        })
    }

    /// Under one lock, so that buffer order is LSN order and the catalog check cannot race:
    /// re-check types, widen tables, assign the LSN, buffer the rows.
    fn submit(&self, write: PreparedWrite) -> Result<vigil_wal::AppendTicket> {
        let mut st = self.state.lock();
        self.ensure_room(&st)?;
        self.check_catalog(&st.catalog, &write.checks)?;
        let ticket = self.wal.submit(KIND_TABLE_BATCHES, write.payload)?;
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
            match self.flush() {
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
        let (pending, checkpoint, catalog) = {
            let mut st = self.state.lock();
            if !st.buffer.is_empty() {
                let taken = std::mem::take(&mut st.buffer);
                st.flushing_bytes += taken.bytes();
                st.flushing.push(Arc::new(taken));
            }
            // Every LSN assigned so far is in the buffers taken: assignment and buffering
            // happen under this same lock.
            (
                st.flushing.clone(),
                self.wal.last_assigned_lsn(),
                st.catalog.clone(),
            )
        };
        let mut manifest = self.manifest.lock().clone();
        if pending.is_empty() && checkpoint == manifest.checkpoint_lsn {
            return Ok(());
        }
        let files = self.write_files(&pending, &catalog, &mut manifest)?;
        for (name, schema) in catalog.tables() {
            set_schema(&mut manifest, name, schema);
        }
        if manifest.tables.contains_key(EVENTS_TABLE) {
            set_schema(&mut manifest, EVENTS_TABLE, events_schema());
        }
        manifest.checkpoint_lsn = checkpoint;
        manifest.save(&self.config.data_dir)?;
        *self.manifest.lock() = manifest;
        {
            let mut st = self.state.lock();
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

    /// Writes one Parquet file per (table, day) of the pending buffers into `manifest`.
    fn write_files(
        &self,
        pending: &[Arc<Buffer>],
        catalog: &Catalog,
        manifest: &mut Manifest,
    ) -> Result<usize> {
        let mut parts: BTreeMap<(&str, i32), Vec<&Chunk>> = BTreeMap::new();
        for buffer in pending {
            for (table, day, chunks) in buffer.partitions() {
                parts.entry((table, day)).or_default().extend(chunks);
            }
        }
        let mut written = 0;
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
            let file_id = manifest.next_file_id;
            manifest.next_file_id += 1;
            if let Some(meta) = write_partition(&self.config.data_dir, file_id, &part)? {
                set_schema(manifest, table, schema);
                if let Some(t) = manifest.tables.get_mut(table) {
                    t.files.push(meta);
                }
                written += 1;
            }
        }
        Ok(written)
    }

    fn stats(&self) -> EngineStats {
        let (buffered_rows, buffered_bytes, flushing_bytes) = {
            let st = self.state.lock();
            (st.buffer.rows(), st.buffer.bytes(), st.flushing_bytes)
        };
        let (checkpoint_lsn, parquet_files) = {
            let m = self.manifest.lock();
            (m.checkpoint_lsn, m.file_paths().count())
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
            wal_durable_lsn: self.wal.durable_lsn(),
            checkpoint_lsn,
            parquet_files,
            wal_poisoned: self.wal.poisoned(),
            last_flush_error: self.last_flush_error.lock().clone(),
        }
    }
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

fn replay_record(
    catalog: &mut Catalog,
    buffer: &mut Buffer,
    lsn: u64,
    kind: u8,
    bytes: &[u8],
) -> Result<()> {
    if kind != KIND_TABLE_BATCHES {
        return Err(Error::BadRecord {
            lsn,
            reason: format!("unknown record kind {kind}"),
        });
    }
    let batches = payload::decode(lsn, bytes)?;
    for tb in &batches {
        if tb.table != EVENTS_TABLE {
            catalog.register(&tb.table, &tb.batch.schema());
        }
    }
    buffer.insert(lsn, batches);
    Ok(())
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
