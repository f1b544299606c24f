//! Reading lines: stdin, or files tailed like `tail -F` (rotation and truncation
//! followed, reading resumed from the spooled position after a restart), and turning
//! them into batch payloads.

use std::fs::File;
use std::io::{BufRead, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;
use serde_json::{Map, Value};

use super::spool::FilePos;

/// What a reader hands to the batcher.
pub(crate) enum Input {
    Line {
        /// The file, `None` for stdin.
        source: Option<Arc<str>>,
        text: String,
        /// Where the file is read up to after this line.
        pos: Option<FilePos>,
    },
    /// A reader is finished (stdin or a file at its end without `--follow`).
    Done,
}

/// Reads stdin to its end.
pub(crate) fn read_stdin(tx: Sender<Input>) {
    let stdin = std::io::stdin();
    let mut lock = stdin.lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match lock.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(trim_newline(&buf)).into_owned();
                if tx
                    .send(Input::Line {
                        source: None,
                        text,
                        pos: None,
                    })
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                eprintln!("vigil ship: reading stdin: {e}");
                break;
            }
        }
    }
    let _ = tx.send(Input::Done);
}

fn trim_newline(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

/// Tails `path` from `start` (the spooled position, if the file is still the same one).
/// Without `follow`, stops at the end of the file.
pub(crate) fn tail(
    path: PathBuf,
    start: Option<FilePos>,
    follow: bool,
    stop: Arc<AtomicBool>,
    tx: Sender<Input>,
) {
    let source: Arc<str> = path.to_string_lossy().into();
    let poll = Duration::from_millis(100);
    let mut start = start;
    'files: loop {
        let mut file = loop {
            match File::open(&path) {
                Ok(f) => break f,
                Err(e) if follow && !stop.load(Ordering::Relaxed) => {
                    tracing_wait(&source, &e);
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => {
                    eprintln!("vigil ship: cannot read {source}: {e}");
                    let _ = tx.send(Input::Done);
                    return;
                }
            }
        };
        let Ok(meta) = file.metadata() else {
            let _ = tx.send(Input::Done);
            return;
        };
        let (dev, ino) = (meta.dev(), meta.ino());
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
        let mut pending: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 256 * 1024];
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
                pending.extend_from_slice(&chunk[..n]);
                let mut consumed = 0;
                while let Some(nl) = pending[consumed..].iter().position(|&b| b == b'\n') {
                    let line = &pending[consumed..consumed + nl + 1];
                    consumed += nl + 1;
                    let text = String::from_utf8_lossy(trim_newline(line)).into_owned();
                    let pos = FilePos {
                        dev,
                        ino,
                        offset: offset + consumed as u64,
                    };
                    if tx
                        .send(Input::Line {
                            source: Some(Arc::clone(&source)),
                            text,
                            pos: Some(pos),
                        })
                        .is_err()
                    {
                        return;
                    }
                }
                offset += consumed as u64;
                pending.drain(..consumed);
                continue;
            }
            // At the end of the file.
            if !follow {
                if !pending.is_empty() {
                    let text = String::from_utf8_lossy(&pending).into_owned();
                    offset += pending.len() as u64;
                    let _ = tx.send(Input::Line {
                        source: Some(Arc::clone(&source)),
                        text,
                        pos: Some(FilePos { dev, ino, offset }),
                    });
                }
                let _ = tx.send(Input::Done);
                return;
            }
            std::thread::sleep(poll);
            match std::fs::metadata(&path) {
                Ok(m) if m.dev() != dev || m.ino() != ino => {
                    // Rotated: finish the old file (the loop above reads on until it
                    // is dry), then open the new one from its start.
                    let mut rest = Vec::new();
                    if file.read_to_end(&mut rest).is_ok() && !rest.is_empty() {
                        pending.extend_from_slice(&rest);
                        for line in pending.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                            let _ = tx.send(Input::Line {
                                source: Some(Arc::clone(&source)),
                                text: String::from_utf8_lossy(line).into_owned(),
                                pos: None,
                            });
                        }
                    }
                    continue 'files;
                }
                Ok(m) if m.len() < offset => {
                    eprintln!("vigil ship: {source} was truncated: reading it from the start");
                    let _ = file.seek(SeekFrom::Start(0));
                    offset = 0;
                    pending.clear();
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
