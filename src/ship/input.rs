//! Reading lines: stdin, or files tailed like `tail -F` (rotation and truncation
//! followed, reading resumed from the spooled position after a restart), and turning
//! them into batch payloads.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;
use serde_json::{Map, Value};
use vigil_api::protocol::Format;

use super::spool::FilePos;

/// What a reader hands to the batcher.
pub(crate) enum Input {
    Line {
        /// The file, `None` for stdin.
        source: Option<Arc<str>>,
        text: String,
        /// Where the file is read up to after this line.
        pos: Option<FilePos>,
        /// The line was longer than `--max-line-size` and keeps only its beginning.
        cut: bool,
    },
    /// A reader is finished (stdin or a file at its end without `--follow`), or could not
    /// read its input: why (already reported on stderr).
    Done(Option<String>),
}

/// Reports on stderr that an input cannot be read, and tells the batcher.
fn unreadable(tx: &Sender<Input>, why: String) {
    eprintln!("vigil ship: {why}");
    let _ = tx.send(Input::Done(Some(why)));
}

/// Whether the server would take `line` (as batched, newline included) in a batch of
/// `format` (a protocol format byte): the server refuses a batch whole for one bad line.
pub(crate) fn valid_line(format: u8, line: &[u8]) -> bool {
    match Format::from_byte(format) {
        Some(Format::LineProtocol(precision)) => std::str::from_utf8(line)
            .is_ok_and(|text| vigil_engine::parse_lines(text, precision.into()).all(|l| l.is_ok())),
        Some(Format::Events) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64);
            vigil_engine::parse_events(line, now).is_ok()
        }
        None => false,
    }
}

/// Cuts a byte stream into lines of at most `max` bytes, holding no more than that: of a
/// longer line the first `max` bytes are kept and the rest, up to its newline, is read
/// and dropped. A line ends at `\n`; a `\r` before it is dropped too.
pub(crate) struct LineSplitter {
    max: usize,
    /// The beginning of the line being read.
    line: Vec<u8>,
    /// Bytes of the line read so far, dropped ones included.
    read: u64,
}

/// A whole line from a [`LineSplitter`].
pub(crate) struct Cut {
    pub(crate) text: String,
    /// Bytes the line took in the input, its newline included.
    pub(crate) len: u64,
    /// Longer than the limit: `text` holds its beginning.
    pub(crate) cut: bool,
}

impl LineSplitter {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            line: Vec::new(),
            read: 0,
        }
    }

    /// Feeds `bytes`, handing every line they finish to `f`; stops early, returning
    /// false, when `f` does.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], mut f: impl FnMut(Cut) -> bool) -> bool {
        while let Some(nl) = memchr::memchr(b'\n', bytes) {
            self.take(&bytes[..nl]);
            self.read += 1;
            if !f(self.finish_line(true)) {
                return false;
            }
            bytes = &bytes[nl + 1..];
        }
        self.take(bytes);
        true
    }

    /// Bytes read of a line not yet ended.
    pub(crate) fn pending(&self) -> u64 {
        self.read
    }

    /// The unfinished last line, if any (at the end of the input).
    pub(crate) fn finish(&mut self) -> Option<Cut> {
        (self.read > 0).then(|| self.finish_line(false))
    }

    /// Forgets the line being read (the file was truncated).
    pub(crate) fn reset(&mut self) {
        self.line.clear();
        self.read = 0;
    }

    fn take(&mut self, bytes: &[u8]) {
        let room = self.max - self.line.len();
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.read += bytes.len() as u64;
    }

    /// The line read so far; `newline`: it ended with one (counted in `read`).
    fn finish_line(&mut self, newline: bool) -> Cut {
        let cut = self.read - u64::from(newline) > self.line.len() as u64;
        let mut text: &[u8] = &self.line;
        if !cut {
            text = text.strip_suffix(b"\r").unwrap_or(text);
        }
        let line = Cut {
            text: String::from_utf8_lossy(text).into_owned(),
            len: self.read,
            cut,
        };
        self.reset();
        line
    }
}

/// A hand-over from a reader to the batcher that a stop takes all or nothing of.
///
/// Bytes read from a pipe cannot be put back (nor can the last lines of a rotated file,
/// which carry no position), so at a stop the batcher takes every line of a chunk a
/// reader has begun to hand over, and closes the gate only between chunks; a chunk read
/// after that is dropped (the process is exiting).
#[derive(Default)]
pub(crate) struct Gate {
    closed: parking_lot::Mutex<bool>,
}

impl Gate {
    /// Runs `hand_over` unless the gate is closed; it cannot close meanwhile. False when
    /// closed, or when `hand_over` says so.
    pub(crate) fn pass(&self, hand_over: impl FnOnce() -> bool) -> bool {
        let closed = self.closed.lock();
        !*closed && hand_over()
    }

    /// Closes the gate if no hand-over is under way and `drained()` holds then.
    pub(crate) fn close_if(&self, drained: impl FnOnce() -> bool) -> bool {
        match self.closed.try_lock() {
            Some(mut closed) if drained() => {
                *closed = true;
                true
            }
            _ => false,
        }
    }
}

/// Reads stdin to its end, or until `stop`, in lines of at most `max_line` bytes. A line
/// not yet ended at a stop is not sent.
pub(crate) fn read_stdin(tx: Sender<Input>, max_line: usize, stop: &AtomicBool, gate: &Gate) {
    let mut stdin = std::io::stdin().lock();
    let mut lines = LineSplitter::new(max_line);
    let mut chunk = vec![0u8; 256 * 1024];
    let send = |line: Cut| {
        tx.send(Input::Line {
            source: None,
            text: line.text,
            pos: None,
            cut: line.cut,
        })
        .is_ok()
    };
    while !stop.load(Ordering::SeqCst) {
        match stdin.read(&mut chunk) {
            Ok(0) => {
                if let Some(line) = lines.finish() {
                    gate.pass(|| send(line));
                }
                let _ = tx.send(Input::Done(None));
                return;
            }
            Ok(n) => {
                if !gate.pass(|| lines.feed(&chunk[..n], send)) {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return unreadable(&tx, format!("reading stdin: {e}")),
        }
    }
}

/// The file `pos` was read in, if it is no longer the one at `path` but still in its
/// directory under another name (rotated: `app.log` renamed to `app.log.1`), and open.
fn renamed_away(path: &Path, pos: FilePos) -> Option<(PathBuf, File)> {
    let same = |m: &std::fs::Metadata| m.dev() == pos.dev && m.ino() == pos.ino;
    if std::fs::metadata(path).is_ok_and(|m| same(&m)) {
        return None;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.metadata().is_ok_and(|m| m.is_file() && same(&m)))
        .find_map(|e| File::open(e.path()).ok().map(|f| (e.path(), f)))
}

/// Tails `path` from `start` (the spooled position, if the file is still the same one),
/// in lines of at most `max_line` bytes. Without `follow`, stops at the end of the file.
pub(crate) fn tail(
    path: PathBuf,
    start: Option<FilePos>,
    follow: bool,
    max_line: usize,
    stop: Arc<AtomicBool>,
    gate: Arc<Gate>,
    tx: Sender<Input>,
) {
    let source: Arc<str> = path.to_string_lossy().into();
    let poll = Duration::from_millis(100);
    let mut start = start;
    'files: loop {
        // The file read last may have been renamed away while the agent was stopped
        // (rotated): its rest comes first, then the file now at `path`.
        let renamed = start.and_then(|p| renamed_away(&path, p));
        let finishing = renamed.is_some();
        let mut file = match renamed {
            Some((old, f)) => {
                eprintln!(
                    "vigil ship: {source} was rotated while the agent was stopped: reading the rest of {} first",
                    old.display()
                );
                f
            }
            None => loop {
                match File::open(&path) {
                    Ok(f) => break f,
                    Err(e) if follow && !stop.load(Ordering::Relaxed) => {
                        tracing_wait(&source, &e);
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    Err(_) if stop.load(Ordering::Relaxed) => return,
                    Err(e) => return unreadable(&tx, format!("cannot read {source}: {e}")),
                }
            },
        };
        let meta = match file.metadata() {
            Ok(meta) => meta,
            Err(e) => return unreadable(&tx, format!("cannot read {source}: {e}")),
        };
        let (dev, ino) = (meta.dev(), meta.ino());
        // Where the line being read starts.
        let mut offset = match start.take() {
            Some(p) if p.dev == dev && p.ino == ino && p.offset <= meta.len() => p.offset,
            Some(p) if p.dev == dev && p.ino == ino => {
                eprintln!(
                    "vigil ship: {source} is shorter than when last read: reading it from the start"
                );
                0
            }
            Some(_) => {
                eprintln!(
                    "vigil ship: {source} is another file than when last read (rotated): reading it from the start"
                );
                0
            }
            None => 0,
        };
        if file.seek(SeekFrom::Start(offset)).is_err() {
            offset = 0;
        }
        let mut lines = LineSplitter::new(max_line);
        let mut chunk = vec![0u8; 256 * 1024];
        // Hands a line on, with the position after it (none for the rest of a rotated
        // file: its successor is read from the start).
        let send = |line: Cut, offset: &mut u64, positioned: bool| {
            *offset += line.len;
            tx.send(Input::Line {
                source: Some(Arc::clone(&source)),
                text: line.text,
                pos: positioned.then_some(FilePos {
                    dev,
                    ino,
                    offset: *offset,
                }),
                cut: line.cut,
            })
            .is_ok()
        };
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let n = match file.read(&mut chunk) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("vigil ship: reading {source}: {e}");
                    0
                }
            };
            if n > 0 {
                if !lines.feed(&chunk[..n], |line| send(line, &mut offset, true)) {
                    return;
                }
                continue;
            }
            // At the end of the file.
            if finishing {
                // The rest of a renamed file is read: on to the one at `path`.
                if lines
                    .finish()
                    .is_some_and(|line| !send(line, &mut offset, true))
                {
                    return;
                }
                continue 'files;
            }
            if !follow {
                if let Some(line) = lines.finish() {
                    send(line, &mut offset, true);
                }
                let _ = tx.send(Input::Done(None));
                return;
            }
            std::thread::sleep(poll);
            match std::fs::metadata(&path) {
                Ok(m) if m.dev() != dev || m.ino() != ino => {
                    // Rotated: finish the old file (the loop above reads on until it
                    // is dry), then open the new one from its start.
                    // Its last lines carry no position (a restart reads the new file
                    // from its start), so a stop takes them all or none.
                    let mut rest = Vec::new();
                    let _ = file.read_to_end(&mut rest);
                    let handed = gate.pass(|| {
                        lines.feed(&rest, |line| send(line, &mut offset, false))
                            && lines
                                .finish()
                                .is_none_or(|line| send(line, &mut offset, false))
                    });
                    if !handed {
                        return;
                    }
                    continue 'files;
                }
                Ok(m) if m.len() < offset + lines.pending() => {
                    eprintln!("vigil ship: {source} was truncated: reading it from the start");
                    let _ = file.seek(SeekFrom::Start(0));
                    offset = 0;
                    lines.reset();
                }
                _ => {}
            }
        }
    }
}

fn tracing_wait(source: &str, e: &std::io::Error) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!("vigil ship: waiting for {source} ({e})");
    }
}

/// How lines become a batch payload.
#[derive(Debug, Clone)]
pub(crate) struct Shaper {
    pub(crate) kind: LineFormat,
    /// Fields set on every event (`service`, `environment`, ...), unless present.
    pub(crate) fields: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LineFormat {
    /// JSON events, one object per line; a line that is not one becomes a text event.
    Ndjson,
    /// Plain text: every line becomes an event with the line as its message.
    Text,
    /// InfluxDB line protocol.
    Lp,
}

impl Shaper {
    /// Appends `line` to a payload. `now` (ns) stamps text events.
    pub(crate) fn push(&self, out: &mut Vec<u8>, line: &str, source: Option<&str>, now: i64) {
        match self.kind {
            LineFormat::Lp => {
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
            LineFormat::Ndjson => match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(mut obj))
                    if obj
                        .get("message")
                        .or_else(|| obj.get("msg"))
                        .is_some_and(Value::is_string) =>
                {
                    let mut changed = false;
                    for (k, v) in &self.fields {
                        if !obj.contains_key(k) {
                            obj.insert(k.clone(), v.clone());
                            changed = true;
                        }
                    }
                    if changed {
                        let _ = serde_json::to_writer(&mut *out, &obj);
                    } else {
                        out.extend_from_slice(line.as_bytes());
                    }
                    out.push(b'\n');
                }
                _ if line.trim().is_empty() => {}
                _ => self.text_event(out, line, source, now),
            },
            LineFormat::Text => {
                if !line.is_empty() {
                    self.text_event(out, line, source, now);
                }
            }
        }
    }

    fn text_event(&self, out: &mut Vec<u8>, line: &str, source: Option<&str>, now: i64) {
        let mut obj = self.fields.clone();
        obj.insert("message".into(), Value::String(line.to_string()));
        obj.entry("time").or_insert(Value::from(now));
        if let Some(s) = source {
            obj.entry("source").or_insert(Value::String(s.to_string()));
        }
        let _ = serde_json::to_writer(&mut *out, &obj);
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_line_is_checked_with_the_servers_parser() {
        use vigil_api::protocol::Precision;
        let lp = Format::LineProtocol(Precision::Nanoseconds).to_byte();
        let lp_s = Format::LineProtocol(Precision::Seconds).to_byte();
        let events = Format::Events.to_byte();
        assert!(valid_line(lp, b"cpu,host=a usage=1.5 1\n"));
        assert!(!valid_line(lp, b"cpu,host=a usage=oops 1\n"));
        assert!(!valid_line(lp, b"just some text\n"));
        assert!(!valid_line(lp, b"cpu v=1 \xff\n"), "not UTF-8");
        assert!(valid_line(lp_s, b"cpu v=1 1700000000\n"));
        assert!(valid_line(events, br#"{"message":"m","service":"s"}"#));
        assert!(!valid_line(
            events,
            br#"{"message":"m","time":"yesterday"}"#
        ));
        assert!(!valid_line(events, b"[1, 2"));
        assert!(!valid_line(99, b"cpu v=1 1\n"), "an unknown format");
    }

    fn split(chunks: &[&[u8]], max: usize) -> Vec<(String, u64, bool)> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |l| {
                out.push((l.text, l.len, l.cut));
                true
            });
            assert!(s.line.len() <= max, "holds at most max bytes");
        }
        out.extend(s.finish().map(|l| (l.text, l.len, l.cut)));
        out
    }

    #[test]
    fn long_lines_keep_their_beginning_and_the_rest_is_skipped() {
        let lines = split(&[b"ab\r\nabcdefg", b"hij\nxy", b"z"], 4);
        assert_eq!(
            lines,
            [
                ("ab".to_string(), 4, false),
                ("abcd".to_string(), 11, true),
                ("xyz".to_string(), 3, false),
            ]
        );
    }

    proptest! {
        /// However the input is cut into reads, the lines are the input's lines (each
        /// at most `max` bytes), and their lengths add up to the input's.
        #[test]
        fn lines_and_positions_do_not_depend_on_the_reads(
            input in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'\r'), Just(b'\n')], 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..10),
            max in 1usize..8,
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for c in cuts.into_iter().chain([input.len()]) {
                chunks.push(&input[from..c]);
                from = c;
            }
            let lines = split(&chunks, max);
            prop_assert_eq!(lines.iter().map(|l| l.1).sum::<u64>(), input.len() as u64);
            let mut expected: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
            if input.last() == Some(&b'\n') || input.is_empty() {
                expected.pop();
            }
            prop_assert_eq!(lines.len(), expected.len());
            for (got, want) in lines.iter().zip(expected) {
                let cut = want.len() > max;
                let want = if cut { &want[..max] } else { want.strip_suffix(b"\r").unwrap_or(want) };
                prop_assert_eq!(got.0.as_bytes(), want);
                prop_assert_eq!(got.2, cut);
            }
        }
    }

    #[test]
    fn lines_become_events_with_the_given_fields() {
        let mut fields = Map::new();
        fields.insert("service".into(), "api".into());
        let text = Shaper {
            kind: LineFormat::Text,
            fields: fields.clone(),
        };
        let mut out = Vec::new();
        text.push(&mut out, "disk full", Some("/var/log/x"), 7);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["message"], "disk full");
        assert_eq!(v["service"], "api");
        assert_eq!(v["time"], 7);
        assert_eq!(v["source"], "/var/log/x");

        let nd = Shaper {
            kind: LineFormat::Ndjson,
            fields,
        };
        let mut out = Vec::new();
        nd.push(&mut out, r#"{"message":"m","service":"own"}"#, None, 7);
        nd.push(&mut out, "not json", None, 8);
        nd.push(&mut out, "", None, 9);
        let lines: Vec<Value> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["service"], "own", "the event's own field wins");
        assert_eq!(lines[1]["message"], "not json");
    }
}
