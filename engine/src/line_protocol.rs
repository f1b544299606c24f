//! InfluxDB line protocol decoder.
//!
//! `measurement[,tag=value...] field=value[,field=value...] [timestamp]`, one point per
//! line; blank lines and lines starting with `#` are skipped. Escapes follow InfluxDB:
//! in measurements `\,` and `\ `; in tag keys, tag values and field keys `\,`, `\=` and
//! `\ `; in string field values `\"` and `\\`. A backslash before any other character is
//! kept as is. Field values: floats (`1`, `-1.5e3`), integers (`1i`), unsigned integers
//! (`1u`), booleans (`t`, `true`, `F`, `FALSE`, ...) and double-quoted strings.

use std::borrow::Cow;

use crate::error::LineError;

/// Unit of the timestamps in a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
}

impl Precision {
    /// Parses `ns`, `us`, `ms`, `s`, and the InfluxDB v1 forms `n`, `u`, `µ`, `m`, `h`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ns" | "n" => Self::Nanoseconds,
            "us" | "u" | "µ" | "µs" => Self::Microseconds,
            "ms" => Self::Milliseconds,
            "s" => Self::Seconds,
            "m" => Self::Minutes,
            "h" => Self::Hours,
            _ => return None,
        })
    }

    fn nanos(self) -> i64 {
        match self {
            Self::Nanoseconds => 1,
            Self::Microseconds => 1_000,
            Self::Milliseconds => 1_000_000,
            Self::Seconds => 1_000_000_000,
            Self::Minutes => 60_000_000_000,
            Self::Hours => 3_600_000_000_000,
        }
    }
}

/// A field value as written.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    F64(f64),
    I64(i64),
    U64(u64),
    Bool(bool),
    Str(Cow<'a, str>),
}

/// One decoded point. Keys are not checked for repeats here: building a table batch
/// refuses a repeated tag key or a name used as tag and field, and keeps the last value of a
/// repeated field.
#[derive(Debug, Clone, PartialEq)]
pub struct Line<'a> {
    /// 1-based line number in the body.
    pub line_no: usize,
    pub measurement: Cow<'a, str>,
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub fields: Vec<(Cow<'a, str>, FieldValue<'a>)>,
    /// Nanoseconds since the Unix epoch, already scaled by the precision.
    pub timestamp: Option<i64>,
}

/// Decodes every point in `body`, stopping at nothing: each line yields a point or an error.
pub fn parse_lines(
    body: &str,
    precision: Precision,
) -> impl Iterator<Item = Result<Line<'_>, LineError>> {
    body.split('\n').enumerate().filter_map(move |(i, raw)| {
        let text = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = text.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return None;
        }
        let lead = text.len() - trimmed.len();
        let mut line = Line::empty();
        Some(
            Parser::new(trimmed, i + 1, lead, precision)
                .line_into(&mut line)
                .map(|()| line),
        )
    })
}

/// Decodes every point of a body into one reused [`Line`], handing each to `f`: no
/// allocation per line once the buffers have grown. The body comes in `pieces`, each but
/// the last ending with a newline (see [`line_pieces`]); line numbers run on across them.
pub(crate) fn for_each_line<'a>(
    pieces: &[&'a str],
    precision: Precision,
    mut f: impl FnMut(Result<&Line<'a>, LineError>) -> crate::error::Result<()>,
) -> crate::error::Result<()> {
    let mut line = Line::empty();
    // Line number of the first line of the current piece, less one.
    let mut before = 0;
    for piece in pieces {
        let mut last = 0;
        for (i, raw) in piece.split('\n').enumerate() {
            last = i;
            let text = raw.strip_suffix('\r').unwrap_or(raw);
            let trimmed = text.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let lead = text.len() - trimmed.len();
            match Parser::new(trimmed, before + i + 1, lead, precision).line_into(&mut line) {
                Ok(()) => f(Ok(&line))?,
                Err(e) => f(Err(e))?,
            }
        }
        // A piece ending with a newline splits into its lines and an empty rest.
        before += last;
    }
    Ok(())
}

/// Regroups a body that arrived in `chunks` cut anywhere (as a network stream delivers
/// it) into pieces that end at line ends, copying only the lines that straddle two chunks.
///
/// Returns the pieces in order, each but the last ending with `\n`, as ranges of the
/// chunks ([`Piece::Chunk`]) or of the returned buffer of joined lines ([`Piece::Joined`]).
pub(crate) fn line_pieces<C: AsRef<[u8]>>(chunks: &[C]) -> (Vec<Piece>, Vec<u8>) {
    let mut pieces = Vec::new();
    let mut joined = Vec::new();
    // Start in `joined` of a line still open at the end of the previous chunk.
    let mut open: Option<usize> = None;
    for (c, chunk) in chunks.iter().enumerate() {
        let bytes = chunk.as_ref();
        let mut start = 0;
        if let Some(from) = open {
            match memchr::memchr(b'\n', bytes) {
                None => {
                    joined.extend_from_slice(bytes);
                    continue;
                }
                Some(end) => {
                    joined.extend_from_slice(&bytes[..=end]);
                    pieces.push(Piece::Joined(from..joined.len()));
                    open = None;
                    start = end + 1;
                }
            }
        }
        let rest = &bytes[start..];
        let whole = match memchr::memrchr(b'\n', rest) {
            Some(end) => end + 1,
            None => 0,
        };
        if whole > 0 {
            pieces.push(Piece::Chunk(c, start..start + whole));
        }
        if whole < rest.len() {
            open = Some(joined.len());
            joined.extend_from_slice(&rest[whole..]);
        }
    }
    if let Some(from) = open {
        pieces.push(Piece::Joined(from..joined.len()));
    }
    (pieces, joined)
}

/// Where a piece of [`line_pieces`] lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Bytes of chunk `.0`.
    Chunk(usize, std::ops::Range<usize>),
    /// Bytes of the buffer of joined lines.
    Joined(std::ops::Range<usize>),
}

impl Piece {
    pub(crate) fn bytes<'a, C: AsRef<[u8]>>(&self, chunks: &'a [C], joined: &'a [u8]) -> &'a [u8] {
        match self {
            Piece::Chunk(c, r) => &chunks[*c].as_ref()[r.clone()],
            Piece::Joined(r) => &joined[r.clone()],
        }
    }
}

impl Line<'_> {
    fn empty() -> Self {
        Self {
            line_no: 0,
            measurement: Cow::Borrowed(""),
            tags: Vec::new(),
            fields: Vec::new(),
            timestamp: None,
        }
    }
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
    line_no: usize,
    lead: usize,
    precision: Precision,
}

/// Which characters end a token, and which may be escaped in it.
#[derive(Clone, Copy)]
enum Token {
    Measurement,
    TagKey,
    TagValue,
    FieldKey,
}

impl Token {
    fn ends_at(self, c: u8) -> bool {
        match self {
            Self::Measurement => c == b',' || c == b' ',
            Self::TagKey | Self::FieldKey => c == b'=' || c == b',' || c == b' ',
            Self::TagValue => c == b',' || c == b' ',
        }
    }

    fn escapes(self, c: u8) -> bool {
        match self {
            Self::Measurement => c == b',' || c == b' ',
            _ => c == b',' || c == b' ' || c == b'=',
        }
    }

    /// Bytes that end the token or start an escape.
    fn special(self) -> &'static [bool; 256] {
        const fn table(bytes: &[u8]) -> [bool; 256] {
            let mut t = [false; 256];
            let mut i = 0;
            while i < bytes.len() {
                t[bytes[i] as usize] = true;
                i += 1;
            }
            t
        }
        static MEASUREMENT: [bool; 256] = table(b", \\");
        static KEY: [bool; 256] = table(b",= \\");
        static TAG_VALUE: [bool; 256] = table(b", \\");
        match self {
            Self::Measurement => &MEASUREMENT,
            Self::TagKey | Self::FieldKey => &KEY,
            Self::TagValue => &TAG_VALUE,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Measurement => "measurement",
            Self::TagKey => "tag key",
            Self::TagValue => "tag value",
            Self::FieldKey => "field key",
        }
    }
}

impl<'a> Parser<'a> {
    fn new(s: &'a str, line_no: usize, lead: usize, precision: Precision) -> Self {
        Self {
            s,
            b: s.as_bytes(),
            pos: 0,
            line_no,
            lead,
            precision,
        }
    }

    fn err(&self, reason: impl Into<String>) -> LineError {
        LineError {
            line: self.line_no,
            column: self.lead + self.pos + 1,
            reason: reason.into(),
        }
    }

    fn current_char(&self) -> char {
        self.s[self.pos..].chars().next().unwrap_or(' ')
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    /// Decodes the line into `out`, reusing its buffers.
    fn line_into(mut self, out: &mut Line<'a>) -> Result<(), LineError> {
        out.line_no = self.line_no;
        out.tags.clear();
        out.fields.clear();
        out.measurement = self.token(Token::Measurement)?;
        while self.peek() == Some(b',') {
            self.pos += 1;
            let key = self.token(Token::TagKey)?;
            self.expect_equals(Token::TagKey)?;
            let value = self.token(Token::TagValue)?;
            out.tags.push((key, value));
        }
        self.skip_spaces(true)?;
        self.fields(&mut out.fields)?;
        out.timestamp = self.timestamp()?;
        Ok(())
    }

    fn skip_spaces(&mut self, required: bool) -> Result<(), LineError> {
        let start = self.pos;
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
        if required && self.pos == start {
            return Err(match self.peek() {
                None => self.err("missing fields"),
                Some(_) => self.err(format!("expected a space, found '{}'", self.current_char())),
            });
        }
        Ok(())
    }

    fn expect_equals(&mut self, after: Token) -> Result<(), LineError> {
        if self.peek() == Some(b'=') {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(format!("expected '=' after {}", after.what())))
        }
    }

    /// Reads a possibly escaped name up to its terminator.
    fn token(&mut self, kind: Token) -> Result<Cow<'a, str>, LineError> {
        let start = self.pos;
        let mut escaped = false;
        let special = kind.special();
        loop {
            // Skip ordinary bytes fast; stop at a terminator, a backslash or the end.
            while self.b.get(self.pos).is_some_and(|&c| !special[c as usize]) {
                self.pos += 1;
            }
            let Some(c) = self.peek() else { break };
            if c == b'\\'
                && self
                    .b
                    .get(self.pos + 1)
                    .is_some_and(|&n| kind.escapes(n) || n == b'\\')
            {
                escaped = true;
                self.pos += 2;
            } else if kind.ends_at(c) {
                break;
            } else {
                self.pos += 1;
            }
        }
        let raw = &self.s[start..self.pos];
        if raw.is_empty() {
            return Err(self.err(format!("empty {}", kind.what())));
        }
        Ok(if escaped {
            Cow::Owned(unescape(raw, kind))
        } else {
            Cow::Borrowed(raw)
        })
    }

    fn fields(
        &mut self,
        fields: &mut Vec<(Cow<'a, str>, FieldValue<'a>)>,
    ) -> Result<(), LineError> {
        loop {
            if self.peek().is_none() {
                return Err(self.err("missing fields"));
            }
            let key = self.token(Token::FieldKey)?;
            self.expect_equals(Token::FieldKey)?;
            let value = self.field_value(&key)?;
            fields.push((key, value));
            if self.peek() == Some(b',') {
                self.pos += 1;
            } else {
                return Ok(());
            }
        }
    }

    fn field_value(&mut self, key: &str) -> Result<FieldValue<'a>, LineError> {
        if self.peek() == Some(b'"') {
            return self.string_value(key);
        }
        let start = self.pos;
        while self.peek().is_some_and(|c| c != b',' && c != b' ') {
            self.pos += 1;
        }
        let raw = &self.s[start..self.pos];
        let bad = |p: &Self, what: &str| {
            let mut e = p.err(format!("invalid {what} value '{raw}' for field '{key}'"));
            e.column = p.lead + start + 1;
            e
        };
        if raw.is_empty() {
            return Err(bad(self, "empty"));
        }
        if let Some(digits) = raw.strip_suffix('i') {
            return digits
                .parse()
                .map(FieldValue::I64)
                .map_err(|_| bad(self, "integer"));
        }
        if let Some(digits) = raw.strip_suffix('u') {
            return digits
                .parse()
                .map(FieldValue::U64)
                .map_err(|_| bad(self, "unsigned integer"));
        }
        match raw {
            "t" | "T" | "true" | "True" | "TRUE" => return Ok(FieldValue::Bool(true)),
            "f" | "F" | "false" | "False" | "FALSE" => return Ok(FieldValue::Bool(false)),
            _ => {}
        }
        let numeric = raw
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'));
        match raw.parse::<f64>() {
            Ok(v) if numeric && v.is_finite() => Ok(FieldValue::F64(v)),
            _ => Err(bad(self, "field")),
        }
    }

    fn string_value(&mut self, key: &str) -> Result<FieldValue<'a>, LineError> {
        let open = self.pos;
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            match self.peek() {
                None => {
                    self.pos = open;
                    return Err(self.err(format!("unterminated string value for field '{key}'")));
                }
                Some(b'\\') if matches!(self.b.get(self.pos + 1), Some(b'"' | b'\\')) => {
                    escaped = true;
                    self.pos += 2;
                }
                Some(b'"') => break,
                Some(_) => self.pos += 1,
            }
        }
        let raw = &self.s[start..self.pos];
        self.pos += 1;
        Ok(FieldValue::Str(if escaped {
            Cow::Owned(raw.replace("\\\"", "\"").replace("\\\\", "\\"))
        } else {
            Cow::Borrowed(raw)
        }))
    }

    fn timestamp(&mut self) -> Result<Option<i64>, LineError> {
        match self.peek() {
            None => return Ok(None),
            Some(b' ') => self.skip_spaces(false)?,
            Some(_) => {
                return Err(self.err(format!(
                    "expected ',' or ' ' after a field, found '{}'",
                    self.current_char()
                )));
            }
        }
        if self.peek().is_none() {
            return Ok(None);
        }
        let start = self.pos;
        while self.peek().is_some_and(|c| c != b' ') {
            self.pos += 1;
        }
        let raw = &self.s[start..self.pos];
        let value: i64 = raw.parse().map_err(|_| {
            let mut e = self.err(format!("invalid timestamp '{raw}'"));
            e.column = self.lead + start + 1;
            e
        })?;
        self.skip_spaces(false)?;
        if self.peek().is_some() {
            return Err(self.err("unexpected text after the timestamp"));
        }
        value
            .checked_mul(self.precision.nanos())
            .map(Some)
            .ok_or_else(|| self.err(format!("timestamp '{raw}' overflows nanoseconds")))
    }
}

fn unescape(raw: &str, kind: Token) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&n) = chars.peek()
            && n.is_ascii()
            && (kind.escapes(n as u8) || n == '\\')
        {
            out.push(n);
            chars.next();
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Line<'_> {
        let mut it = parse_lines(s, Precision::Nanoseconds);
        let line = it.next().expect("a line").expect("valid");
        assert!(it.next().is_none());
        line
    }

    fn error(s: &str) -> LineError {
        parse_lines(s, Precision::Nanoseconds)
            .find_map(Result::err)
            .expect("an error")
    }

    #[test]
    fn full_line() {
        let l = one(
            "cpu,host=a,region=eu usage=12.5,procs=301i,up=t,name=\"x y\",big=7u 1700000000000000000",
        );
        assert_eq!(l.measurement, "cpu");
        assert_eq!(
            l.tags,
            vec![("host".into(), "a".into()), ("region".into(), "eu".into())]
        );
        assert_eq!(
            l.fields,
            vec![
                ("usage".into(), FieldValue::F64(12.5)),
                ("procs".into(), FieldValue::I64(301)),
                ("up".into(), FieldValue::Bool(true)),
                ("name".into(), FieldValue::Str("x y".into())),
                ("big".into(), FieldValue::U64(7)),
            ]
        );
        assert_eq!(l.timestamp, Some(1_700_000_000_000_000_000));
    }

    #[test]
    fn escapes() {
        let l = one(r#"my\ meas\,ure,ta\=g\ k=v\,a\ l f\ k="q\"uo\\te" -5"#);
        assert_eq!(l.measurement, "my meas,ure");
        assert_eq!(l.tags, vec![("ta=g k".into(), "v,a l".into())]);
        assert_eq!(
            l.fields,
            vec![("f k".into(), FieldValue::Str("q\"uo\\te".into()))]
        );
        assert_eq!(l.timestamp, Some(-5));
        // A backslash before an ordinary character stays.
        assert_eq!(one(r"a\b f=1").measurement, r"a\b");
    }

    #[test]
    fn strings_may_hold_delimiters() {
        let l = one(r#"m s="a, b=c d",n=1"#);
        assert_eq!(l.fields[0].1, FieldValue::Str("a, b=c d".into()));
        assert_eq!(l.fields[1].1, FieldValue::F64(1.0));
    }

    #[test]
    fn comments_blank_lines_and_crlf() {
        let body = "# comment\n\n  \ncpu f=1 1\r\n   # indented comment\ncpu f=2 2\n";
        let lines: Vec<_> = parse_lines(body, Precision::Nanoseconds)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].line_no, 4);
        assert_eq!(lines[1].line_no, 6);
    }

    #[test]
    fn precision_scales_timestamps() {
        let l = parse_lines("m f=1 1700000000", Precision::Seconds)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(l.timestamp, Some(1_700_000_000_000_000_000));
        let l = parse_lines("m f=1 5", Precision::Microseconds)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(l.timestamp, Some(5_000));
        let e = parse_lines("m f=1 9223372036854775807", Precision::Seconds)
            .next()
            .unwrap()
            .unwrap_err();
        assert!(e.reason.contains("overflows"), "{e}");
    }

    #[test]
    fn optional_timestamp_and_numbers() {
        let l = one("m a=1,b=-1.5e3,c=-7i,d=F,e=+2");
        assert_eq!(l.timestamp, None);
        assert_eq!(l.fields[1].1, FieldValue::F64(-1500.0));
        assert_eq!(l.fields[2].1, FieldValue::I64(-7));
        assert_eq!(l.fields[3].1, FieldValue::Bool(false));
        assert_eq!(l.fields[4].1, FieldValue::F64(2.0));
    }

    #[test]
    fn errors_name_line_column_and_reason() {
        let e = error("cpu f=1\ncpu,host=a usage=abc 1");
        assert_eq!((e.line, e.column), (2, 18));
        assert!(e.reason.contains("usage"), "{e}");
        assert!(error("cpu").reason.contains("missing fields"));
        assert!(error("cpu ").reason.contains("missing fields"));
        assert!(error("cpu,host f=1").reason.contains("expected '='"));
        assert!(error("cpu,host= f=1").reason.contains("empty tag value"));
        assert!(error("cpu,=a f=1").reason.contains("empty tag key"));
        assert!(error(",a=b f=1").reason.contains("empty measurement"));
        assert!(error("cpu f=\"open").reason.contains("unterminated"));
        assert!(error("cpu f=1 12x").reason.contains("invalid timestamp"));
        assert!(error("cpu f=1 1 2").reason.contains("after the timestamp"));
        assert!(error("cpu f=1i2").reason.contains("invalid"));
        assert!(
            error("cpu f=99999999999999999999i")
                .reason
                .contains("integer")
        );
        assert!(error("cpu f=-1u").reason.contains("unsigned"));
        assert!(error("cpu f=inf").reason.contains("invalid"));
        assert!(error("cpu f=NaN").reason.contains("invalid"));
        assert!(error("cpu f=1,").reason.contains("missing fields"));
        assert!(error("cpu f=\"x\"y").reason.contains("expected ','"));
    }

    #[test]
    fn unicode_is_kept() {
        let l = one("température,lieu=Zürich valeur=1,note=\"été\"");
        assert_eq!(l.measurement, "température");
        assert_eq!(l.tags[0].1, "Zürich");
    }
}
