//! Reading the log back at start-up: validation, replay, torn-tail truncation.

use crate::config::RecoveryMode;
use crate::error::{Error, Result};
use crate::format::{
    FrameError, SEGMENT_HEADER_LEN, decode_frame, decode_segment_header, parse_segment_name,
};
use crate::storage::Storage;

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files read.
    pub segments: usize,
    /// Records handed to the replay callback (those after the checkpoint).
    pub replayed: u64,
    /// Highest valid LSN in the log, 0 if it holds no record.
    pub last_lsn: u64,
    /// A torn tail that was cut off: file and offset.
    pub torn_tail: Option<(String, u64)>,
    /// Corrupt regions skipped in [`RecoveryMode::SkipCorrupt`]: file, offset and length.
    pub skipped: Vec<(String, u64, u64)>,
}

/// A segment file: its name and the LSN of its first record.
#[derive(Debug, Clone)]
pub(crate) struct SegmentInfo {
    pub(crate) first_lsn: u64,
    pub(crate) name: String,
}

/// Callback receiving each replayed record: LSN, kind, payload.
pub(crate) type ReplayFn<'a> = dyn FnMut(u64, u8, &[u8]) -> Result<()> + 'a;

/// Segment files of `storage`, ordered by first LSN.
pub(crate) fn list_segments(storage: &dyn Storage) -> Result<Vec<SegmentInfo>> {
    let mut segments: Vec<SegmentInfo> = storage
        .list()?
        .into_iter()
        .filter_map(|name| {
            parse_segment_name(&name).map(|first_lsn| SegmentInfo { first_lsn, name })
        })
        .collect();
    segments.sort_by_key(|s| s.first_lsn);
    Ok(segments)
}

struct Scan<'a> {
    storage: &'a dyn Storage,
    mode: RecoveryMode,
    after_lsn: u64,
    report: RecoveryReport,
    /// LSN the next record must carry, once one record has been seen.
    expected: Option<u64>,
}

pub(crate) fn recover(
    storage: &dyn Storage,
    mode: RecoveryMode,
    after_lsn: u64,
    replay: &mut ReplayFn<'_>,
) -> Result<RecoveryReport> {
    let listed = list_segments(storage)?;
    let mut scan = Scan {
        storage,
        mode,
        after_lsn,
        report: RecoveryReport::default(),
        expected: None,
    };
    let count = listed.len();
    for (i, seg) in listed.into_iter().enumerate() {
        let is_last = i + 1 == count;
        scan.report.segments += 1;
        scan.segment(&seg, is_last, replay)?;
    }
    Ok(scan.report)
}

impl Scan<'_> {
    fn corruption(&self, name: &str, offset: usize, reason: impl Into<String>) -> Error {
        Error::Corruption {
            file: self.storage.describe(name),
            offset: offset as u64,
            reason: reason.into(),
        }
    }

    /// Scans one segment, replaying its records.
    fn segment(
        &mut self,
        seg: &SegmentInfo,
        is_last: bool,
        replay: &mut ReplayFn<'_>,
    ) -> Result<()> {
        let data = self.storage.read(&seg.name)?;
        let bytes = (*data).as_ref();
        let header = decode_segment_header(bytes).and_then(|lsn| {
            if lsn == seg.first_lsn {
                Ok(lsn)
            } else {
                Err(format!(
                    "header names first LSN {lsn}, file name says {}",
                    seg.first_lsn
                ))
            }
        });
        if let Err(reason) = header {
            if is_last && bytes.len() < SEGMENT_HEADER_LEN {
                // Crashed while creating the segment: nothing in it was ever acknowledged.
                tracing::warn!(file = %self.storage.describe(&seg.name), "removing torn segment header");
                self.report.torn_tail = Some((self.storage.describe(&seg.name), 0));
                self.storage.remove(&seg.name)?;
                self.storage.sync_dir()?;
                return Ok(());
            }
            return self.skip_or_fail(&seg.name, 0, bytes.len(), reason);
        }
        if let Some(expected) = self.expected
            && seg.first_lsn != expected
        {
            let reason = format!(
                "segment starts at LSN {}, expected {expected}",
                seg.first_lsn
            );
            self.skip_or_fail(&seg.name, 0, 0, reason)?;
            self.expected = Some(seg.first_lsn);
        }
        self.frames(seg, bytes, is_last, replay)?;
        if is_last && self.expected.is_none_or(|e| e <= seg.first_lsn) {
            // The last segment holds no record: drop it so a new one can take its name.
            self.storage.remove(&seg.name)?;
            self.storage.sync_dir()?;
        }
        Ok(())
    }

    fn frames(
        &mut self,
        seg: &SegmentInfo,
        bytes: &[u8],
        is_last: bool,
        replay: &mut ReplayFn<'_>,
    ) -> Result<()> {
        let mut pos = SEGMENT_HEADER_LEN;
        let mut expected = self.expected.unwrap_or(seg.first_lsn);
        while pos < bytes.len() {
            let failure = match decode_frame(&bytes[pos..]) {
                Ok(frame) if frame.lsn == expected => {
                    if frame.lsn > self.after_lsn {
                        replay(frame.lsn, frame.kind, frame.payload)?;
                        self.report.replayed += 1;
                    }
                    self.report.last_lsn = frame.lsn;
                    expected = frame.lsn + 1;
                    self.expected = Some(expected);
                    pos += frame.encoded_len();
                    continue;
                }
                Ok(frame) => format!("frame has LSN {}, expected {expected}", frame.lsn),
                Err(FrameError::Incomplete) => "frame extends past the end of the file".to_string(),
                Err(FrameError::Invalid(why)) => why.to_string(),
            };
            let resume = find_valid_frame(bytes, pos + 1, expected);
            if is_last && resume.is_none() {
                return self.truncate_tail(&seg.name, pos, &failure);
            }
            let end = resume.unwrap_or(bytes.len());
            self.skip_or_fail(&seg.name, pos, end - pos, failure)?;
            if let Some(next) = resume.and_then(|at| decode_frame(&bytes[at..]).ok()) {
                expected = next.lsn;
                self.expected = Some(expected);
            }
            pos = end;
        }
        Ok(())
    }

    fn truncate_tail(&mut self, name: &str, pos: usize, why: &str) -> Result<()> {
        let file = self.storage.describe(name);
        tracing::warn!(%file, offset = pos, reason = why, "truncating torn WAL tail");
        self.storage.truncate(name, pos as u64)?;
        self.report.torn_tail = Some((file, pos as u64));
        Ok(())
    }

    fn skip_or_fail(
        &mut self,
        name: &str,
        offset: usize,
        len: usize,
        reason: String,
    ) -> Result<()> {
        match self.mode {
            RecoveryMode::Strict => Err(self.corruption(name, offset, reason)),
            RecoveryMode::SkipCorrupt => {
                let file = self.storage.describe(name);
                tracing::error!(%file, offset, len, %reason, "SKIPPING CORRUPT WAL REGION: records in it are lost");
                self.report.skipped.push((file, offset as u64, len as u64));
                Ok(())
            }
        }
    }
}

/// Offset of the first valid frame at or after `from` with an LSN of at least `min_lsn`.
fn find_valid_frame(bytes: &[u8], from: usize, min_lsn: u64) -> Option<usize> {
    (from..bytes.len()).find(|&at| decode_frame(&bytes[at..]).is_ok_and(|f| f.lsn >= min_lsn))
}
