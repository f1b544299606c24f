//! Events decoder: NDJSON, or one JSON array of objects, into the events schema.
//!
//! Recognised keys: `time` or `occurred_at` (RFC 3339 text, or an epoch number whose unit
//! is told by its size: below 1e11 seconds, below 1e14 milliseconds, below 1e17
//! microseconds, else nanoseconds; a fractional number is seconds), `event_id`,
//! `severity` (or `level`), `service`, `component`, `environment`, `system_id`,
//! `event_type`, `message` (or `msg`, required), `fingerprint` (a client's own grouping:
//! a list of strings). `template` and `fingerprint` are left for the engine's grouper
//! to fill. The whole object is kept as JSON text in
//! `attributes`, so no key is lost.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, RecordBatch, StringBuilder, StringDictionaryBuilder, TimestampNanosecondArray,
    UInt64Array,
};
use arrow::datatypes::Int32Type;
use serde_json::{Map, Value};
use xxhash_rust::xxh3::xxh3_128;

use crate::error::{Error, LineError, Result};
use crate::schema::events_schema;

/// One decoded event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When it occurred, nanoseconds since the epoch.
    pub time: i64,
    pub event_id: String,
    pub severity: &'static str,
    pub service: Option<String>,
    pub component: Option<String>,
    pub environment: Option<String>,
    pub system_id: Option<String>,
    pub event_type: Option<String>,
    pub message: String,
    pub template: String,
    pub fingerprint: u64,
    /// The client's own grouping (`fingerprint`: a list of strings, `{{default}}` standing
    /// for the computed fingerprint).
    pub custom_fingerprint: Option<Vec<String>>,
    /// The original object, as JSON.
    pub attributes: String,
}

/// Decodes a request body. `now` is the ingest time, used when an event has no time.
/// Returns every bad event's error when any is bad.
pub fn parse_events(body: &[u8], now: i64) -> Result<Vec<Event>> {
    let text = std::str::from_utf8(body).map_err(|e| Error::NotUtf8 {
        line: body[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1,
    })?;
    let mut events = Vec::new();
    let mut errors = Vec::new();
    if text.trim_start().starts_with('[') {
        let items: Vec<Value> = serde_json::from_str(text).map_err(|e| {
            Error::Parse(LineError {
                line: e.line(),
                column: e.column(),
                reason: format!("invalid JSON array: {e}"),
            })
        })?;
        for (i, item) in items.into_iter().enumerate() {
            match event_from_value(item, now) {
                Ok(ev) => events.push(ev),
                Err(reason) => errors.push(LineError {
                    line: 0,
                    column: 0,
                    reason: format!("array element {}: {reason}", i + 1),
                }),
            }
        }
    } else {
        for (i, line) in text.split('\n').enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let parsed = serde_json::from_str::<Value>(line)
                .map_err(|e| format!("invalid JSON: {e}"))
                .and_then(|v| event_from_value(v, now));
            match parsed {
                Ok(ev) => events.push(ev),
                Err(reason) => errors.push(LineError {
                    line: i + 1,
                    column: 0,
                    reason,
                }),
            }
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(Error::from_line_errors(errors))
    }
}

fn event_from_value(value: Value, now: i64) -> Result<Event, String> {
    let Value::Object(obj) = value else {
        return Err("an event must be a JSON object".into());
    };
    let time = match obj.get("time").or_else(|| obj.get("occurred_at")) {
        None | Some(Value::Null) => now,
        Some(v) => parse_time(v)?,
    };
    let message = match obj.get("message").or_else(|| obj.get("msg")) {
        Some(Value::String(s)) => s.clone(),
        Some(other) if !other.is_null() => return Err("'message' must be a string".into()),
        _ => return Err("missing 'message'".into()),
    };
    let severity = match obj.get("severity").or_else(|| obj.get("level")) {
        None | Some(Value::Null) => "info",
        Some(Value::String(s)) => {
            normalise_severity(s).ok_or_else(|| format!("unknown severity '{s}'"))?
        }
        Some(_) => return Err("'severity' must be a string".into()),
    };
    // serde_json's map is ordered by key (no `preserve_order`), so this text is canonical:
    // it is both the stored payload and what the content hash covers.
    let attributes = serde_json::to_string(&obj).map_err(|e| e.to_string())?;
    let event_id = match text(&obj, "event_id")? {
        Some(id) => id,
        None => format!("{:032x}", xxh3_128(attributes.as_bytes())),
    };
    Ok(Event {
        time,
        event_id,
        severity,
        service: text(&obj, "service")?,
        component: text(&obj, "component")?,
        environment: text(&obj, "environment")?,
        system_id: text(&obj, "system_id")?,
        event_type: text(&obj, "event_type")?,
        custom_fingerprint: custom_fingerprint(&obj)?,
        fingerprint: 0,
        template: String::new(),
        message,
        attributes,
    })
}

/// A client's `fingerprint`: a non-empty list of strings (or one string).
fn custom_fingerprint(obj: &Map<String, Value>) -> Result<Option<Vec<String>>, String> {
    const WHAT: &str = "'fingerprint' must be a non-empty list of strings";
    match obj.get("fingerprint") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| WHAT.to_string())
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(WHAT.into()),
    }
}

fn text(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err(format!("'{key}' must be a string or a number")),
    }
}

fn parse_time(v: &Value) -> Result<i64, String> {
    match v {
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| format!("invalid RFC 3339 time '{s}': {e}"))?
            .timestamp_nanos_opt()
            .ok_or_else(|| format!("time '{s}' is out of range")),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                epoch_nanos(i).ok_or_else(|| format!("epoch time {i} is out of range"))
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                let nanos = f * 1e9;
                if nanos.is_finite() && nanos.abs() < 9.2e18 {
                    Ok(nanos as i64)
                } else {
                    Err(format!("epoch time {n} is out of range"))
                }
            }
        }
        _ => Err("time must be RFC 3339 text or an epoch number".into()),
    }
}

/// Scales an epoch integer by its magnitude (s, ms, us, ns).
fn epoch_nanos(i: i64) -> Option<i64> {
    let a = i.unsigned_abs();
    let scale = if a < 100_000_000_000 {
        1_000_000_000
    } else if a < 100_000_000_000_000 {
        1_000_000
    } else if a < 100_000_000_000_000_000 {
        1_000
    } else {
        1
    };
    i.checked_mul(scale)
}

/// Maps common level names to trace, debug, info, warning, error, critical.
pub fn normalise_severity(s: &str) -> Option<&'static str> {
    Some(match s.to_ascii_lowercase().as_str() {
        "trace" | "verbose" => "trace",
        "debug" | "dbg" => "debug",
        "info" | "information" | "informational" | "notice" | "ok" => "info",
        "warn" | "warning" => "warning",
        "error" | "err" | "fail" | "failure" => "error",
        "critical" | "crit" | "fatal" | "emerg" | "emergency" | "alert" | "panic" => "critical",
        _ => return None,
    })
}

/// The events as a batch of the events schema.
pub(crate) fn events_batch(events: &[Event], ingested_at: i64) -> Result<RecordBatch> {
    let n = events.len();
    let dict = |f: &dyn Fn(&Event) -> Option<&str>| -> ArrayRef {
        let mut b = StringDictionaryBuilder::<Int32Type>::new();
        for e in events {
            b.append_option(f(e));
        }
        Arc::new(b.finish())
    };
    let string = |f: &dyn Fn(&Event) -> &str| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 32);
        for e in events {
            b.append_value(f(e));
        }
        Arc::new(b.finish())
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampNanosecondArray::from_iter_values(events.iter().map(|e| e.time))
                .with_timezone("UTC"),
        ),
        Arc::new(TimestampNanosecondArray::from(vec![ingested_at; n]).with_timezone("UTC")),
        string(&|e| &e.event_id),
        dict(&|e| Some(e.severity)),
        dict(&|e| e.service.as_deref()),
        dict(&|e| e.component.as_deref()),
        dict(&|e| e.environment.as_deref()),
        dict(&|e| e.system_id.as_deref()),
        dict(&|e| e.event_type.as_deref()),
        string(&|e| &e.message),
        string(&|e| &e.template),
        Arc::new(UInt64Array::from_iter_values(
            events.iter().map(|e| e.fingerprint),
        )),
        string(&|e| &e.attributes),
    ];
    Ok(RecordBatch::try_new(
        events_schema().arrow_schema(),
        columns,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_with_every_time_form() {
        let body = br#"{"time":"2026-11-22T10:00:00Z","message":"a","severity":"WARN","service":"api","extra":{"k":1}}
{"occurred_at":1700000000,"msg":"b","system_id":42}

{"time":1700000000123,"message":"c","event_id":"e-1"}
{"time":1700000000.5,"message":"d"}
{"message":"e"}"#;
        let ev = parse_events(body, 99).unwrap();
        assert_eq!(ev.len(), 5);
        assert_eq!(ev[0].time, 1_795_341_600_000_000_000);
        assert_eq!(ev[0].severity, "warning");
        assert_eq!(ev[0].service.as_deref(), Some("api"));
        assert!(ev[0].attributes.contains(r#""extra":{"k":1}"#));
        assert_eq!(ev[1].time, 1_700_000_000_000_000_000);
        assert_eq!(ev[1].system_id.as_deref(), Some("42"));
        assert_eq!(ev[2].time, 1_700_000_000_123_000_000);
        assert_eq!(ev[2].event_id, "e-1");
        assert_eq!(ev[3].time, 1_700_000_000_500_000_000);
        assert_eq!(ev[4].time, 99);
        assert_eq!(ev[4].event_id.len(), 32, "content hash");
    }

    #[test]
    fn json_array() {
        let ev = parse_events(br#" [{"message":"x"},{"message":"y","level":"fatal"}]"#, 1).unwrap();
        assert_eq!(ev[1].severity, "critical");
    }

    #[test]
    fn content_hash_ignores_key_order() {
        let a = parse_events(br#"{"message":"x","service":"s"}"#, 1).unwrap();
        let b = parse_events(br#"{"service":"s","message":"x"}"#, 2).unwrap();
        assert_eq!(a[0].event_id, b[0].event_id);
    }

    #[test]
    fn errors_name_the_line_or_element() {
        let err = parse_events(b"{\"message\":\"ok\"}\n{\"nope\":1}\nnot json\n", 0).unwrap_err();
        match err {
            Error::ParseMany { count, errors, .. } => {
                assert_eq!(count, 2);
                assert_eq!(errors[0].line, 2);
                assert!(errors[0].reason.contains("missing 'message'"));
                assert_eq!(errors[1].line, 3);
            }
            other => panic!("{other}"),
        }
        let err = parse_events(
            br#"[{"message":"a"},{"message":"b","time":"yesterday"}]"#,
            0,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("array element 2: invalid RFC 3339"),
            "{err}"
        );
        let err = parse_events(br#"[{"message":"a"},"#, 0).unwrap_err();
        assert!(err.to_string().contains("invalid JSON array"), "{err}");
        assert!(parse_events(br#"{"message":"a","severity":"loud"}"#, 0).is_err());
        assert!(parse_events(br#"{"message":"a","service":{"x":1}}"#, 0).is_err());
        assert!(parse_events(br#"{"message":"a","time":1e300}"#, 0).is_err());
        assert!(parse_events(b"{\"message\":\"\xff\"}", 0).is_err());
        assert!(parse_events(br#"{"message":"a","fingerprint":[]}"#, 0).is_err());
        assert!(parse_events(br#"{"message":"a","fingerprint":[1]}"#, 0).is_err());
        let ev = parse_events(br#"{"message":"a","fingerprint":["{{default}}","x"]}"#, 0).unwrap();
        assert_eq!(ev[0].custom_fingerprint.as_deref().unwrap().len(), 2);
        assert!(parse_events(br#"{"message":"a","fingerprint":[]}"#, 0).is_err());
        assert!(parse_events(br#"{"message":"a","fingerprint":[1]}"#, 0).is_err());
        let ev = parse_events(br#"{"message":"a","fingerprint":["{{default}}","x"]}"#, 0).unwrap();
        assert_eq!(ev[0].custom_fingerprint.as_deref().unwrap().len(), 2);
    }

    #[test]
    fn batch_has_the_events_schema() {
        let ev = parse_events(br#"{"message":"x","service":"s"}"#, 5).unwrap();
        let b = events_batch(&ev, 6).unwrap();
        assert_eq!(b.schema(), events_schema().arrow_schema());
        assert_eq!(b.num_rows(), 1);
    }
}
