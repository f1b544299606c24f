//! Round trip: any point, written out as line protocol with the escapes InfluxDB clients
//! use, decodes back to itself.

use std::borrow::Cow;

use proptest::prelude::*;
use vigil_engine::{FieldValue, Precision, parse_lines};

#[derive(Debug, Clone)]
enum Value {
    F(f64),
    I(i64),
    U(u64),
    B(bool),
    S(String),
}

fn escape(s: &str, specials: &[char]) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if specials.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn name() -> impl Strategy<Value = String> {
    // Names may hold the delimiters; they must not start with '#' or hold '\\' or newlines
    // (InfluxDB cannot escape those).
    "[a-zA-Z_][a-zA-Z0-9_ ,=.é-]{0,12}"
        .prop_map(|s| s.trim_end_matches(' ').to_string())
        .prop_filter("non-empty", |s| !s.is_empty())
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-1e12f64..1e12).prop_map(Value::F),
        any::<i64>().prop_map(Value::I),
        any::<u64>().prop_map(Value::U),
        any::<bool>().prop_map(Value::B),
        "[a-zA-Z0-9 ,=\"\\\\é]{0,16}".prop_map(Value::S),
    ]
}

fn render(v: &Value) -> String {
    match v {
        Value::F(f) => format!("{f:?}"),
        Value::I(i) => format!("{i}i"),
        Value::U(u) => format!("{u}u"),
        Value::B(b) => b.to_string(),
        Value::S(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
    }
}

fn same(a: &FieldValue<'_>, b: &Value) -> bool {
    match (a, b) {
        (FieldValue::F64(x), Value::F(y)) => x == y,
        (FieldValue::I64(x), Value::I(y)) => x == y,
        (FieldValue::U64(x), Value::U(y)) => x == y,
        (FieldValue::Bool(x), Value::B(y)) => x == y,
        (FieldValue::Str(x), Value::S(y)) => x == &Cow::Borrowed(y.as_str()),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn written_points_decode_to_themselves(
        measurement in name(),
        tags in prop::collection::btree_map(name(), name(), 0..4),
        fields in prop::collection::btree_map(name(), value(), 1..5),
        ts in prop::option::of(any::<i64>()),
    ) {
        let tags: Vec<_> = tags.into_iter().filter(|(k, _)| !fields.contains_key(k)).collect();
        let mut line = escape(&measurement, &[',', ' ']);
        for (k, v) in &tags {
            line += &format!(",{}={}", escape(k, &[',', '=', ' ']), escape(v, &[',', '=', ' ']));
        }
        let rendered: Vec<String> = fields.iter().map(|(k, v)| format!("{}={}", escape(k, &[',', '=', ' ']), render(v))).collect();
        line += &format!(" {}", rendered.join(","));
        if let Some(ts) = ts {
            line += &format!(" {ts}");
        }
        let parsed = parse_lines(&line, Precision::Nanoseconds).next().unwrap();
        let point = parsed.map_err(|e| TestCaseError::fail(format!("{e} in {line:?}")))?;
        prop_assert_eq!(point.measurement.as_ref(), measurement.as_str());
        let got_tags: Vec<(String, String)> = point.tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        prop_assert_eq!(got_tags, tags);
        prop_assert_eq!(point.fields.len(), fields.len());
        for ((k, v), (gk, gv)) in fields.iter().zip(&point.fields) {
            prop_assert_eq!(k.as_str(), gk.as_ref());
            prop_assert!(same(gv, v), "{:?} != {:?} in {:?}", gv, v, line);
        }
        prop_assert_eq!(point.timestamp, ts);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        for line in parse_lines(&text, Precision::Seconds) {
            let _ = line;
        }
    }
}
