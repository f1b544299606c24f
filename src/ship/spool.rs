//! The agent's on-disk spool: every batch is written here, fsynced and checksummed,
//! before it is sent, and stays until the server has acknowledged it. After a restart
//! of the agent the unacknowledged batches are sent again with their sequence numbers
//! (the server stores each sequence once), and the files are read on from the offsets
//! recorded with the last batch.
//!
//! Layout: `<spool>/lock` (locked while an agent uses the spool), `<spool>/agent.id`
//! (the agent id, made on first start), `<spool>/rejected.*` (lines the server refused,
//! see [`Spool::keep_rejected`]) and segment files
//! `<spool>/NNNNNNNNNNNNNNNNNNNN.spool`, each a series of records:
//!
//! ```text
//! u32 len       bytes after the checksum
//! u64 checksum  xxh3-64 of those bytes
//! u64 seq, u8 format (bit 7 set: the record replaces a refused batch),
//! u16 n, n × { u16 path_len, path, u64 dev, u64 ino, u64 offset }   (every file's read position)
//! [u64 replaced]                                                  (with bit 7 of format)
//! body          the batch payload
//! ```
//! Integers are little-endian. A torn or corrupt record ends its segment: the rest is
//! cut off (it was never acknowledged, and its lines are read again from the files).
//!
//! Sequences run on by one from the spool's records; a spool without any starts at the
//! time in microseconds (see [`first_seq`]).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use parking_lot::Mutex;
use vigil_api::protocol::{Format, Precision};

/// Segment size past which a new segment starts.
const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// Where a file has been read up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FilePos {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) offset: u64,
}

/// Format-byte flag of a record that replaces a batch the server refused (its good
/// lines): between the read positions and the payload it holds the `u64` sequence of the
/// batch it replaces.
const REPLACES: u8 = 0x80;

/// What became of a refused batch ([`Spool::salvage`]).
pub(crate) struct Salvaged {
    /// Lines put in the rejected file.
    pub(crate) set_aside: usize,
    pub(crate) path: PathBuf,
    /// The new batch of the other lines, and their count.
    pub(crate) resent: Option<(u64, usize)>,
}

/// One spooled batch.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) seq: u64,
    /// Protocol batch format byte.
    pub(crate) format: u8,
    /// Shared with the stream that sends it (no copy per send).
    pub(crate) body: Bytes,
    pub(crate) lines: usize,
}

pub(crate) struct Spool {
    /// `<spool>/lock`, locked for the spool's life: two agents on one spool would send
    /// different batches under the same sequence numbers.
    _lock: File,
    dir: PathBuf,
    active: Arc<File>,
    active_id: u64,
    active_len: u64,
    /// Closed segments: id → highest sequence in it.
    closed: BTreeMap<u64, u64>,
    next_seq: u64,
    unacked: VecDeque<Arc<Record>>,
    unacked_bytes: usize,
    /// The batch [`Spool::append_shared`] is syncing: not to be sent yet.
    syncing: Option<u64>,
    acked: u64,
    /// Path → position, as of the last record.
    positions: BTreeMap<String, FilePos>,
}

impl Spool {
    /// Opens (or creates) the spool in `dir` and loads its records.
    pub(crate) fn open(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating spool {}", dir.display()))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => bail!(
                "spool {} is in use by another vigil ship; give each agent its own --spool",
                dir.display()
            ),
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", lock_path.display()));
            }
        }
        let mut ids: Vec<u64> = fs::read_dir(dir)
            .with_context(|| format!("reading spool {}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name.strip_suffix(".spool")?.parse().ok()
            })
            .collect();
        ids.sort_unstable();
        let mut unacked = VecDeque::new();
        let mut positions = BTreeMap::new();
        let mut closed = BTreeMap::new();
        let mut next_seq = None;
        for &id in &ids {
            let path = segment_path(dir, id);
            let (records, valid_len) = read_segment(&path)?;
            let total = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if valid_len < total {
                eprintln!(
                    "spool: {} has a torn or corrupt record at byte {valid_len}; cutting it off (it was never acknowledged)",
                    path.display()
                );
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(valid_len)?;
                f.sync_all()?;
            }
            let mut max_seq = 0;
            for (record, pos, replaces) in records {
                next_seq = next_seq.max(Some(record.seq + 1));
                max_seq = max_seq.max(record.seq);
                positions.extend(pos);
                if let Some(replaced) = replaces {
                    unacked.retain(|r: &Arc<Record>| r.seq != replaced);
                }
                unacked.push_back(Arc::new(record));
            }
            closed.insert(id, max_seq);
        }
        let unacked_bytes = unacked.iter().map(|r| r.body.len()).sum();
        let active_id = ids.last().map_or(1, |&id| id + 1);
        let active = create_segment(dir, active_id)?;
        Ok(Self {
            _lock: lock,
            dir: dir.to_path_buf(),
            active: Arc::new(active),
            active_id,
            active_len: 0,
            closed,
            next_seq: next_seq.unwrap_or_else(first_seq),
            unacked,
            unacked_bytes,
            syncing: None,
            acked: 0,
            positions,
        })
    }

    /// Where each file was read up to, as of the last spooled batch.
    pub(crate) fn positions(&self) -> &BTreeMap<String, FilePos> {
        &self.positions
    }

    /// Writes a batch durably and returns its sequence number: [`Spool::append_shared`]
    /// for a spool nobody shares (tests).
    #[cfg(test)]
    pub(crate) fn append(
        &mut self,
        format: u8,
        body: Vec<u8>,
        lines: usize,
        positions: &[(String, FilePos)],
    ) -> anyhow::Result<u64> {
        self.positions.extend(positions.iter().cloned());
        self.write(format, None, body, lines)
    }

    /// Writes a batch durably and returns its sequence number, on the spool the sender
    /// shares: the fsync runs without the lock, so that sends and acknowledgements need
    /// not wait for the disk, and the batch is not handed to the sender
    /// ([`Spool::after`]) before it is durable. One caller at a time (the batcher).
    pub(crate) fn append_shared(
        spool: &Mutex<Self>,
        format: u8,
        body: Vec<u8>,
        lines: usize,
        positions: &[(String, FilePos)],
    ) -> anyhow::Result<u64> {
        let (seq, file) = {
            let mut s = spool.lock();
            s.positions.extend(positions.iter().cloned());
            let written = s.write_unsynced(format, None, body, lines)?;
            s.syncing = Some(written.0);
            written
        };
        let synced = file.sync_data();
        let mut s = spool.lock();
        synced.with_context(|| format!("syncing the spool {}", s.dir.display()))?;
        s.syncing = None;
        Ok(seq)
    }

    /// Writes a record durably (replacing batch `replaces`, if given).
    fn write(
        &mut self,
        format: u8,
        replaces: Option<u64>,
        body: Vec<u8>,
        lines: usize,
    ) -> anyhow::Result<u64> {
        let (seq, file) = self.write_unsynced(format, replaces, body, lines)?;
        file.sync_data()
            .with_context(|| format!("syncing the spool {}", self.dir.display()))?;
        Ok(seq)
    }

    /// Writes a record with every file's position and queues its batch, without
    /// syncing: the segment to sync before the batch may be sent.
    fn write_unsynced(
        &mut self,
        format: u8,
        replaces: Option<u64>,
        body: Vec<u8>,
        lines: usize,
    ) -> anyhow::Result<(u64, Arc<File>)> {
        let seq = self.next_seq;
        // Every record carries the position of every file, so the newest record alone
        // tells where to read on.
        let mut head = Vec::with_capacity(64);
        head.extend_from_slice(&seq.to_le_bytes());
        head.push(if replaces.is_some() {
            format | REPLACES
        } else {
            format
        });
        head.extend_from_slice(&(self.positions.len() as u16).to_le_bytes());
        for (path, pos) in &self.positions {
            head.extend_from_slice(&(path.len() as u16).to_le_bytes());
            head.extend_from_slice(path.as_bytes());
            head.extend_from_slice(&pos.dev.to_le_bytes());
            head.extend_from_slice(&pos.ino.to_le_bytes());
            head.extend_from_slice(&pos.offset.to_le_bytes());
        }
        if let Some(replaced) = replaces {
            head.extend_from_slice(&replaced.to_le_bytes());
        }
        let mut sum = xxhash_rust::xxh3::Xxh3Default::new();
        sum.update(&head);
        sum.update(&body);
        let len = head.len() + body.len();
        let mut frame = Vec::with_capacity(12 + head.len());
        frame.extend_from_slice(&(len as u32).to_le_bytes());
        frame.extend_from_slice(&sum.digest().to_le_bytes());
        frame.extend_from_slice(&head);
        let size = (frame.len() + body.len()) as u64;
        if self.active_len > 0 && self.active_len + size > SEGMENT_BYTES {
            self.rotate()?;
        }
        let mut file = &*self.active;
        if let Err(e) = file.write_all(&frame).and_then(|()| file.write_all(&body)) {
            // No torn record stays for later ones to follow (a restart would cut them
            // off with it).
            let _ = file.set_len(self.active_len);
            return Err(e).with_context(|| format!("writing the spool {}", self.dir.display()));
        }
        self.active_len += size;
        self.next_seq += 1;
        self.unacked_bytes += body.len();
        self.unacked.push_back(Arc::new(Record {
            seq,
            format,
            body: Bytes::from(body),
            lines,
        }));
        Ok((seq, Arc::clone(&self.active)))
    }

    fn rotate(&mut self) -> anyhow::Result<()> {
        let max = self.next_seq.saturating_sub(1);
        self.closed.insert(self.active_id, max);
        self.active_id += 1;
        self.active = Arc::new(create_segment(&self.dir, self.active_id)?);
        self.active_len = 0;
        self.drop_acked_segments();
        Ok(())
    }

    /// The server holds every sequence up to `seq`: forget those batches.
    pub(crate) fn ack_through(&mut self, seq: u64) {
        self.acked = self.acked.max(seq);
        while self.unacked.front().is_some_and(|r| r.seq <= seq) {
            if let Some(r) = self.unacked.pop_front() {
                self.unacked_bytes -= r.body.len();
            }
        }
        self.drop_acked_segments();
    }

    /// The server refused batch `seq` (every batch before it is answered). The lines
    /// `valid` refuses go to the rejected file (see [`Spool::keep_rejected`]), and the
    /// others are spooled again as a new batch that replaces `seq`: one record, so that
    /// after a crash the spool holds either the old batch or the new one, never both. If
    /// no line is bad on its own (the batch is refused as a whole, say for a field type
    /// conflict with stored data) or none is good, the whole batch goes to the file.
    /// Either way `seq` is done: it is not sent again. `None` if `seq` is not spooled. If
    /// the lines cannot be written (disk full), `seq` stays spooled and the error is the
    /// caller's to stop on: the next start salvages it again.
    pub(crate) fn salvage(
        &mut self,
        seq: u64,
        valid: impl Fn(u8, &[u8]) -> bool,
    ) -> anyhow::Result<Option<Salvaged>> {
        let Some(record) = self.unacked.iter().find(|r| r.seq == seq).cloned() else {
            return Ok(None);
        };
        let salvaged = self.split(&record, valid)?;
        self.ack_through(seq);
        Ok(Some(salvaged))
    }

    fn split(
        &mut self,
        record: &Record,
        valid: impl Fn(u8, &[u8]) -> bool,
    ) -> anyhow::Result<Salvaged> {
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        let (mut good_lines, mut bad_lines) = (0, 0);
        for line in record.body.split_inclusive(|&b| b == b'\n') {
            if valid(record.format, line) {
                good.extend_from_slice(line);
                good_lines += 1;
            } else {
                bad.extend_from_slice(line);
                bad_lines += 1;
            }
        }
        if good_lines == 0 || bad_lines == 0 {
            let path = self.keep_rejected(record.format, &record.body)?;
            return Ok(Salvaged {
                set_aside: good_lines + bad_lines,
                path,
                resent: None,
            });
        }
        let path = self.keep_rejected(record.format, &bad)?;
        let resent = self.write(record.format, Some(record.seq), good, good_lines)?;
        Ok(Salvaged {
            set_aside: bad_lines,
            path,
            resent: Some((resent, good_lines)),
        })
    }

    /// Appends `lines` (whole lines, as batched) to `<spool>/rejected.<ext>` and syncs it:
    /// what the server will not take is kept for a person to fix and ship again. The
    /// file is named by the batch format (`rejected.ndjson`, `rejected.lp`, or
    /// `rejected.ms.lp` for another precision).
    pub(crate) fn keep_rejected(&self, format: u8, lines: &[u8]) -> anyhow::Result<PathBuf> {
        let path = self.rejected_path(format);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let end: &[u8] = if lines.ends_with(b"\n") { b"" } else { b"\n" };
        file.write_all(lines)
            .and_then(|()| file.write_all(end))
            .and_then(|()| file.sync_data())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The rejected file for batches of `format`.
    pub(crate) fn rejected_path(&self, format: u8) -> PathBuf {
        self.dir.join(match Format::from_byte(format) {
            Some(Format::Events) => "rejected.ndjson",
            Some(Format::LineProtocol(Precision::Microseconds)) => "rejected.us.lp",
            Some(Format::LineProtocol(Precision::Milliseconds)) => "rejected.ms.lp",
            Some(Format::LineProtocol(Precision::Seconds)) => "rejected.s.lp",
            _ => "rejected.lp",
        })
    }

    fn drop_acked_segments(&mut self) {
        if self.active_len == 0 {
            // The newest record (and with it the file positions) is in a closed segment.
            return;
        }
        let acked = self.acked;
        let done: Vec<u64> = self
            .closed
            .iter()
            .filter(|&(_, &max)| max <= acked)
            .map(|(&id, _)| id)
            .collect();
        for id in done {
            // The active segment holds a newer record with every file's position.
            if fs::remove_file(segment_path(&self.dir, id)).is_ok() {
                self.closed.remove(&id);
            }
        }
    }

    /// The server has stored up to `seq`: new batches must be numbered above it, even
    /// if this spool lost its records (they would be taken for resends otherwise).
    pub(crate) fn number_after(&mut self, seq: u64) {
        if self.next_seq <= seq {
            eprintln!(
                "vigil ship: the server has stored up to batch {seq}, this spool only knows {}; numbering on from {}",
                self.next_seq - 1,
                seq + 1
            );
            self.next_seq = seq + 1;
        }
    }

    /// Unacknowledged batches after sequence `after`, oldest first, at most `n`; none
    /// from a batch still being synced on.
    pub(crate) fn after(&self, after: u64, n: usize) -> Vec<Arc<Record>> {
        self.unacked
            .iter()
            .take_while(|r| Some(r.seq) != self.syncing)
            .filter(|r| r.seq > after)
            .take(n)
            .cloned()
            .collect()
    }

    pub(crate) fn unacked(&self) -> (usize, usize) {
        (self.unacked.len(), self.unacked_bytes)
    }

    pub(crate) fn first_unacked(&self) -> Option<u64> {
        self.unacked.front().map(|r| r.seq)
    }
}

/// The first sequence of a spool without records: microseconds since 1970. A spool that
/// replaces a lost one under the same agent id (`--agent-id`) thus numbers above every
/// batch the old one sent (which would have needed more than a batch per microsecond to
/// catch up), and its batches are not taken for resends of those.
fn first_seq() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| {
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2).max(1)
        })
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.spool"))
}

fn create_segment(dir: &Path, id: u64) -> anyhow::Result<File> {
    let path = segment_path(dir, id);
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("creating spool segment {}", path.display()))?;
    File::open(dir).and_then(|d| d.sync_all()).ok();
    Ok(f)
}

/// A record read back: the batch, every file's position, the batch it replaces.
type Loaded = (Record, Vec<(String, FilePos)>, Option<u64>);

/// The valid records of a segment and the length they span.
fn read_segment(path: &Path) -> anyhow::Result<(Vec<Loaded>, u64)> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .with_context(|| format!("reading spool segment {}", path.display()))?;
    let mut out = Vec::new();
    let mut pos = 0usize;
    while let Some(rec) = bytes.get(pos..pos + 12) {
        let len = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]) as usize;
        let sum = u64::from_le_bytes(rec[4..12].try_into().unwrap_or([0; 8]));
        let Some(body) = bytes.get(pos + 12..pos + 12 + len) else {
            break;
        };
        if xxhash_rust::xxh3::xxh3_64(body) != sum {
            break;
        }
        match parse_record(body) {
            Ok(r) => out.push(r),
            Err(_) => break,
        }
        pos += 12 + len;
    }
    Ok((out, pos as u64))
}

fn parse_record(b: &[u8]) -> anyhow::Result<Loaded> {
    let mut r = b;
    let mut take = |n: usize| -> anyhow::Result<&[u8]> {
        if r.len() < n {
            bail!("truncated spool record");
        }
        let (h, t) = r.split_at(n);
        r = t;
        Ok(h)
    };
    let u64_of = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or([0; 8]));
    let seq = u64_of(take(8)?);
    let format = take(1)?[0];
    let n = u16::from_le_bytes(take(2)?.try_into().unwrap_or([0; 2])) as usize;
    let mut positions = Vec::with_capacity(n);
    for _ in 0..n {
        let len = u16::from_le_bytes(take(2)?.try_into().unwrap_or([0; 2])) as usize;
        let path = String::from_utf8(take(len)?.to_vec())?;
        let dev = u64_of(take(8)?);
        let ino = u64_of(take(8)?);
        let offset = u64_of(take(8)?);
        positions.push((path, FilePos { dev, ino, offset }));
    }
    let replaces = if format & REPLACES != 0 {
        Some(u64_of(take(8)?))
    } else {
        None
    };
    let body = Bytes::copy_from_slice(r);
    let lines = body.iter().filter(|&&c| c == b'\n').count();
    Ok((
        Record {
            seq,
            format: format & !REPLACES,
            body,
            lines,
        },
        positions,
        replaces,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let pos = FilePos {
            dev: 1,
            ino: 2,
            offset: 30,
        };
        let first = {
            let mut s = Spool::open(dir.path()).unwrap();
            let first = s.append(1, b"a\n".to_vec(), 1, &[]).unwrap();
            assert_eq!(
                s.append(1, b"b\nc\n".to_vec(), 2, &[("f".into(), pos)])
                    .unwrap(),
                first + 1
            );
            first
        };
        // Tear the last record.
        let seg = segment_path(dir.path(), 1);
        let len = fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 1)
            .unwrap();
        let mut s = Spool::open(dir.path()).unwrap();
        assert_eq!(s.unacked().0, 1, "the torn record is gone");
        assert!(s.positions().is_empty());
        assert_eq!(
            s.append(1, b"b\n".to_vec(), 1, &[("f".into(), pos)])
                .unwrap(),
            first + 1
        );
        s.ack_through(first);
        assert_eq!(s.first_unacked(), Some(first + 1));
        drop(s);
        // The closed segment held only acknowledged batches: it is gone; the batch in the
        // active segment and the file positions remain.
        let s = Spool::open(dir.path()).unwrap();
        assert_eq!(s.positions()["f"], pos);
        let left: Vec<u64> = s.after(0, 10).iter().map(|r| r.seq).collect();
        assert_eq!(left, [first + 1]);
        assert_eq!(
            s.next_seq,
            first + 2,
            "numbering goes on after the last batch"
        );
    }

    /// A refused batch: its bad lines go to the rejected file and the rest to a new
    /// batch that replaces it, also after a restart (where the old one stays gone); a
    /// batch with no bad line goes to the file whole.
    #[test]
    fn a_refused_batch_is_split_into_set_aside_and_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let no_x = |_: u8, line: &[u8]| !line.starts_with(b"x");
        let (refused, next) = {
            let mut s = Spool::open(dir.path()).unwrap();
            let refused = s.append(1, b"a\nx1\nb\nx2".to_vec(), 4, &[]).unwrap();
            let next = s.append(1, b"c\n".to_vec(), 1, &[]).unwrap();
            let salvaged = s.salvage(refused, no_x).unwrap().unwrap();
            assert_eq!(salvaged.set_aside, 2);
            let (resent, lines) = salvaged.resent.unwrap();
            assert_eq!((resent, lines), (next + 1, 2));
            assert_eq!(salvaged.path, dir.path().join("rejected.lp"));
            assert!(s.salvage(refused, no_x).unwrap().is_none(), "done once");
            (refused, next)
        };
        let mut s = Spool::open(dir.path()).unwrap();
        let left: Vec<(u64, Bytes)> = s
            .after(0, 10)
            .iter()
            .map(|r| (r.seq, r.body.clone()))
            .collect();
        assert_eq!(
            left,
            [
                (next, Bytes::from("c\n")),
                (next + 1, Bytes::from("a\nb\n"))
            ],
            "the refused batch {refused} is replaced"
        );
        // No line bad on its own: the whole batch is set aside.
        let salvaged = s.salvage(next, |_, _| true).unwrap().unwrap();
        assert_eq!((salvaged.set_aside, salvaged.resent), (1, None));
        assert_eq!(
            fs::read_to_string(dir.path().join("rejected.lp")).unwrap(),
            "x1\nx2\nc\n"
        );
    }

    #[test]
    fn a_batch_whose_lines_cannot_be_set_aside_stays_spooled() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the rejected file would go: appending to it fails.
        fs::create_dir(dir.path().join("rejected.lp")).unwrap();
        let mut s = Spool::open(dir.path()).unwrap();
        let refused = s.append(1, b"a\nx1\n".to_vec(), 2, &[]).unwrap();
        let err = s
            .salvage(refused, |_, line| !line.starts_with(b"x"))
            .err()
            .expect("the rejected file cannot be written");
        assert!(format!("{err:#}").contains("rejected.lp"), "{err:#}");
        let left: Vec<u64> = s.after(0, 10).iter().map(|r| r.seq).collect();
        assert_eq!(
            left,
            [refused],
            "still spooled, to be salvaged at the next start"
        );
    }

    #[test]
    fn a_spool_has_one_agent_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = Spool::open(dir.path()).unwrap();
        let second = Spool::open(dir.path()).err().expect("the spool is in use");
        assert!(second.to_string().contains("in use"), "{second}");
        drop(first);
        Spool::open(dir.path()).expect("free again once the first agent is gone");
    }

    /// A spool that replaces a lost one numbers above everything the old one used.
    #[test]
    fn a_new_spool_numbers_above_an_older_one() {
        let (old, new) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut s = Spool::open(old.path()).unwrap();
        let mut last = 0;
        for _ in 0..100 {
            last = s.append(1, b"a\n".to_vec(), 1, &[]).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        let mut fresh = Spool::open(new.path()).unwrap();
        let first = fresh.append(1, b"b\n".to_vec(), 1, &[]).unwrap();
        assert!(first > last, "{first} after {last}");
    }
}
