//! The append path: LSN assignment, the group-commit thread, poisoning, truncation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::config::{Durability, WalConfig};
use crate::error::{Error, Result};
use crate::format::{
    FRAME_HEADER_LEN, MAX_PAYLOAD_LEN, encode_frame, encode_segment_header, segment_name,
};
use crate::recovery::{RecoveryReport, list_segments, recover};
use crate::storage::{SegmentFile, Storage};

struct Append {
    lsn: u64,
    kind: u8,
    payload: Vec<u8>,
    done: oneshot::Sender<Result<()>>,
}

/// The submit side, guarded so that channel order equals LSN order.
struct Submitter {
    tx: Option<Sender<Append>>,
    next_lsn: u64,
}

struct Shared {
    storage: Arc<dyn Storage>,
    durable_lsn: AtomicU64,
    poison: Mutex<Option<String>>,
}

impl Shared {
    fn poisoned(&self) -> Option<Error> {
        self.poison.lock().as_ref().map(|cause| Error::Poisoned {
            cause: cause.clone(),
        })
    }
}

/// A write-ahead log. Cheap to share behind an `Arc`; appends may come from any thread.
pub struct Wal {
    shared: Arc<Shared>,
    submitter: Mutex<Submitter>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// A submitted append. [`AppendTicket::wait`] tells when it is durable.
#[must_use = "an append is not durable until its ticket resolves"]
pub struct AppendTicket {
    lsn: u64,
    rx: oneshot::Receiver<Result<()>>,
}

impl AppendTicket {
    /// The LSN assigned to the record.
    pub fn lsn(&self) -> u64 {
        self.lsn
    }

    /// Resolves once the record is durable (or written, with [`Durability::None`]).
    pub async fn wait(self) -> Result<u64> {
        let lsn = self.lsn;
        self.rx.await.map_err(|_| Error::Closed)?.map(|()| lsn)
    }

    /// Blocking form of [`AppendTicket::wait`]; must not be called on an async runtime.
    pub fn wait_blocking(self) -> Result<u64> {
        let lsn = self.lsn;
        self.rx
            .blocking_recv()
            .map_err(|_| Error::Closed)?
            .map(|()| lsn)
    }
}

impl Wal {
    /// Opens the log in `storage`: validates every segment, hands each record with an LSN
    /// above `after_lsn` to `replay` in LSN order, truncates a torn tail, deletes segments
    /// wholly at or below `after_lsn`, and starts the writer on a fresh segment.
    pub fn open(
        storage: Arc<dyn Storage>,
        config: WalConfig,
        after_lsn: u64,
        mut replay: impl FnMut(u64, u8, &[u8]) -> Result<()>,
    ) -> Result<(Self, RecoveryReport)> {
        config.validate()?;
        let report = recover(storage.as_ref(), config.recovery, after_lsn, &mut replay)?;
        let next_lsn = report.last_lsn.max(after_lsn) + 1;
        let shared = Arc::new(Shared {
            storage: Arc::clone(&storage),
            durable_lsn: AtomicU64::new(next_lsn - 1),
            poison: Mutex::new(None),
        });
        let segment = start_segment(storage.as_ref(), next_lsn, config.durability)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("vigil-wal-writer".into())
            .spawn(move || {
                GroupCommitter {
                    shared: thread_shared,
                    config,
                    segment,
                    segment_len: crate::SEGMENT_HEADER_LEN as u64,
                    buf: Vec::new(),
                }
                .run(rx)
            })
            .map_err(|e| Error::io("wal writer thread", e))?;
        let wal = Self {
            shared,
            submitter: Mutex::new(Submitter {
                tx: Some(tx),
                next_lsn,
            }),
            writer: Mutex::new(Some(writer)),
        };
        wal.truncate_through(after_lsn)?;
        Ok((wal, report))
    }

    /// Queues a record for the next commit group and assigns its LSN.
    pub fn submit(&self, kind: u8, payload: Vec<u8>) -> Result<AppendTicket> {
        if kind == 0 {
            return Err(Error::ReservedKind);
        }
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(Error::RecordTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        if let Some(e) = self.shared.poisoned() {
            return Err(e);
        }
        let (done, rx) = oneshot::channel();
        let mut sub = self.submitter.lock();
        let lsn = sub.next_lsn;
        let tx = sub.tx.as_ref().ok_or(Error::Closed)?;
        tx.send(Append {
            lsn,
            kind,
            payload,
            done,
        })
        .map_err(|_| Error::Closed)?;
        sub.next_lsn += 1;
        Ok(AppendTicket { lsn, rx })
    }

    /// Appends a record and waits until it is durable.
    pub async fn append(&self, kind: u8, payload: Vec<u8>) -> Result<u64> {
        self.submit(kind, payload)?.wait().await
    }

    /// Highest LSN known durable: every record up to it is on stable storage.
    pub fn durable_lsn(&self) -> u64 {
        self.shared.durable_lsn.load(Ordering::Acquire)
    }

    /// Highest LSN assigned so far.
    pub fn last_assigned_lsn(&self) -> u64 {
        self.submitter.lock().next_lsn - 1
    }

    /// The cause, if a failed write or fsync has poisoned the log.
    pub fn poisoned(&self) -> Option<String> {
        self.shared.poison.lock().clone()
    }

    /// Deletes segments whose records all have an LSN at or below `checkpoint`. The
    /// segment being written is never deleted. Returns how many files were removed.
    pub fn truncate_through(&self, checkpoint: u64) -> Result<usize> {
        let storage = self.shared.storage.as_ref();
        let segments = list_segments(storage)?;
        let mut removed = 0;
        for pair in segments.windows(2) {
            // Segment 0 ends where segment 1 starts.
            if pair[1].first_lsn <= checkpoint + 1 {
                storage.remove(&pair[0].name)?;
                removed += 1;
            }
        }
        if removed > 0 {
            storage.sync_dir()?;
        }
        Ok(removed)
    }

    /// Stops accepting appends, commits what is queued and stops the writer thread.
    pub fn close(&self) {
        self.submitter.lock().tx = None;
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.close();
    }
}

fn start_segment(
    storage: &dyn Storage,
    first_lsn: u64,
    durability: Durability,
) -> Result<Box<dyn SegmentFile>> {
    let name = segment_name(first_lsn);
    let mut file = storage.create(&name)?;
    file.write_all(&encode_segment_header(first_lsn))
        .map_err(|e| Error::io(storage.describe(&name), e))?;
    if durability == Durability::Fsync {
        file.sync()
            .map_err(|e| Error::io(storage.describe(&name), e))?;
        storage.sync_dir()?;
    }
    Ok(file)
}

struct GroupCommitter {
    shared: Arc<Shared>,
    config: WalConfig,
    segment: Box<dyn SegmentFile>,
    segment_len: u64,
    buf: Vec<u8>,
}

impl GroupCommitter {
    fn run(mut self, rx: Receiver<Append>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            let mut bytes = group[0].payload.len();
            while bytes < self.config.max_group_bytes {
                match rx.try_recv() {
                    Ok(next) => {
                        bytes += next.payload.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
        // Channel closed: the Wal was closed; everything queued has been committed.
    }

    fn commit(&mut self, group: Vec<Append>) {
        let result = match self.shared.poisoned() {
            Some(e) => Err(e),
            None => self.write_group(&group),
        };
        let last = group.last().map(|a| a.lsn).unwrap_or(0);
        match result {
            Ok(()) => {
                self.shared.durable_lsn.store(last, Ordering::Release);
                for a in group {
                    let _ = a.done.send(Ok(()));
                }
            }
            Err(e) => {
                let cause = e.to_string();
                tracing::error!(error = %cause, "WAL write failed; poisoning the log");
                self.shared.poison.lock().get_or_insert(cause);
                for a in group {
                    let _ = a
                        .done
                        .send(Err(self.shared.poisoned().unwrap_or(Error::Closed)));
                }
            }
        }
    }

    fn write_group(&mut self, group: &[Append]) -> Result<()> {
        self.buf.clear();
        for a in group {
            encode_frame(&mut self.buf, a.lsn, a.kind, &a.payload);
        }
        let io = |e| Error::io("active WAL segment", e);
        self.segment.write_all(&self.buf).map_err(io)?;
        if self.config.durability == Durability::Fsync {
            self.segment.sync().map_err(io)?;
        }
        self.segment_len += self.buf.len() as u64;
        if self.segment_len >= self.config.segment_size {
            let next = group.last().map(|a| a.lsn + 1).unwrap_or(1);
            self.segment =
                start_segment(self.shared.storage.as_ref(), next, self.config.durability)?;
            self.segment_len = crate::SEGMENT_HEADER_LEN as u64;
        }
        if self.buf.capacity() > 4 * self.config.max_group_bytes.max(FRAME_HEADER_LEN) {
            self.buf = Vec::new();
        }
        Ok(())
    }
}
