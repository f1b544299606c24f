//! The message normaliser: masks the variable parts of a log message and keeps its
//! constant words. The rules are listed in `docs/fingerprinting.md`; changing what they
//! produce requires a new [`super::GROUPING_VERSION`].
//!
//! A message is split into words at ASCII whitespace. A quoted string that starts a word
//! (`"..."` or `'...'`, possibly spanning spaces) becomes `"<*>"`. Every other word is
//! split into leading punctuation, a core and trailing punctuation; the punctuation is
//! kept, and the core is masked when it is a variable:
//!
//! - `key=value` keeps `key=` and masks the value;
//! - a core containing a digit (numbers, hex, UUIDs, IPv4/IPv6, host:port, dates, times,
//!   durations, sizes, numbered ids) is masked, keeping a leading word that ends in
//!   `_`, `-`, `#`, `:`, `[` or `(` (`blk_-6952` → `blk_<*>`, `sshd[812]` → `sshd[<*>]`);
//! - paths (`/…`, `./…`, `../…`, `~/…`, `C:\…`), URLs (`…://…`) and e-mail addresses
//!   are masked;
//! - English month and weekday abbreviations (`Jan`, `Mon`, …), parts of dates, are masked.
//!
//! The output is the template: the words joined by single spaces.

/// The wildcard that stands for a masked value.
pub const WILDCARD: &str = "<*>";

/// A masked message: the template text and where each of its words ends.
#[derive(Debug, Default, Clone)]
pub(crate) struct Masked {
    pub text: String,
    ends: Vec<u32>,
}

impl Masked {
    /// The template's words.
    pub(crate) fn tokens(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        let text = self.text.as_str();
        self.ends.iter().enumerate().map(move |(i, &end)| {
            let start = if i == 0 {
                0
            } else {
                self.ends[i - 1] as usize + 1
            };
            &text[start..end as usize]
        })
    }

    /// The number of words.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    fn start_word(&mut self) {
        if !self.ends.is_empty() {
            self.text.push(' ');
        }
    }

    fn end_word(&mut self) {
        self.ends.push(self.text.len() as u32);
    }
}

/// Masks `message` into `out` (cleared first), reusing its allocations.
pub(crate) fn mask_into(message: &str, out: &mut Masked) {
    out.clear();
    let bytes = message.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        out.start_word();
        i = if let Some(close) = closing_quote(bytes, i) {
            out.text.push(b as char);
            out.text.push_str(WILDCARD);
            out.text.push(b as char);
            push_rest_of_word(message, close + 1, out)
        } else {
            let (end, shape) = scan_word(bytes, i);
            match shape
                .eq
                .and_then(|eq| closing_quote(bytes, eq + 1).map(|c| (eq, c)))
            {
                // `key="a value"`: the key stays, the quoted value is masked.
                Some((eq, close)) if eq > i => {
                    mask_word(&message[i..=eq], shape.up_to(eq - i + 1), &mut out.text);
                    out.text.push_str(WILDCARD);
                    push_rest_of_word(message, close + 1, out)
                }
                _ => {
                    mask_word(&message[i..end], shape.relative_to(i), &mut out.text);
                    end
                }
            }
        };
        out.end_word();
    }
}

/// Copies the rest of a word from `from`; returns where it ends.
fn push_rest_of_word(message: &str, from: usize, out: &mut Masked) -> usize {
    let end = word_end(message.as_bytes(), from);
    out.text.push_str(&message[from..end]);
    end
}

/// What one pass over a word found, for the masking rules.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    /// Position of the first `=`.
    eq: Option<usize>,
    digit: bool,
    colon: bool,
    at: bool,
    dot: bool,
}

impl Shape {
    fn relative_to(mut self, base: usize) -> Self {
        self.eq = self.eq.map(|e| e - base);
        self
    }

    /// The shape of the word's first `len` bytes, when the first `=` is its last byte.
    fn up_to(mut self, len: usize) -> Self {
        self.eq = Some(len - 1);
        self
    }
}

/// Finds the end of the word starting at `from` and its shape, in one pass.
fn scan_word(bytes: &[u8], from: usize) -> (usize, Shape) {
    let mut shape = Shape::default();
    let mut end = from;
    while end < bytes.len() {
        let c = bytes[end];
        match c {
            b'0'..=b'9' => shape.digit = true,
            b'=' if shape.eq.is_none() => shape.eq = Some(end),
            b':' => shape.colon = true,
            b'@' => shape.at = true,
            b'.' => shape.dot = true,
            c if c.is_ascii_whitespace() => break,
            _ => {}
        }
        end += 1;
    }
    (end, shape)
}

/// Splits a template (words joined by single spaces) back into its words.
pub(crate) fn split_template(template: &str, out: &mut Masked) {
    out.clear();
    for word in template.split(' ').filter(|w| !w.is_empty()) {
        out.start_word();
        out.text.push_str(word);
        out.end_word();
    }
}

/// The template of `message`.
pub fn mask(message: &str) -> String {
    let mut out = Masked::default();
    mask_into(message, &mut out);
    out.text
}

fn word_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .map_or(bytes.len(), |p| from + p)
}

/// If a quoted string starts at `at`, the index of its closing quote: the next same quote
/// that is followed by whitespace, punctuation or the end.
fn closing_quote(bytes: &[u8], at: usize) -> Option<usize> {
    let quote = *bytes.get(at)?;
    if quote != b'"' && quote != b'\'' {
        return None;
    }
    let mut j = at + 1;
    while j < bytes.len() {
        if bytes[j] == quote {
            let next = bytes.get(j + 1).copied();
            if next.is_none_or(|b| b.is_ascii_whitespace() || is_trailing_punct(b)) {
                return Some(j);
            }
        }
        j += 1;
    }
    None
}

fn is_leading_punct(b: u8) -> bool {
    matches!(b, b'(' | b'[' | b'{' | b'<' | b'"' | b'\'')
}

fn is_trailing_punct(b: u8) -> bool {
    matches!(
        b,
        b')' | b']' | b'}' | b'>' | b',' | b';' | b'.' | b':' | b'!' | b'?' | b'"' | b'\''
    )
}

fn mask_word(word: &str, shape: Shape, out: &mut String) {
    let bytes = word.as_bytes();
    let mut start = 0;
    while start < bytes.len() && is_leading_punct(bytes[start]) {
        start += 1;
    }
    let mut end = bytes.len();
    while end > start && is_trailing_punct(bytes[end - 1]) {
        end -= 1;
    }
    if start == end {
        out.push_str(word);
        return;
    }
    // A trailing `]` or `)` that closes an opening inside the core belongs to the core.
    if end < bytes.len() && matches!(bytes[end], b']' | b')') {
        let open = if bytes[end] == b']' { b'[' } else { b'(' };
        if bytes[start..end].contains(&open) {
            end += 1;
        }
    }
    out.push_str(&word[..start]);
    let shape = Shape {
        eq: shape
            .eq
            .filter(|&e| e > start && e < end)
            .map(|e| e - start),
        ..shape
    };
    mask_core(&word[start..end], shape, out);
    out.push_str(&word[end..]);
}

fn mask_core(core: &str, shape: Shape, out: &mut String) {
    let bytes = core.as_bytes();
    if is_path(bytes) || (shape.colon && core.contains("://")) {
        out.push_str(WILDCARD);
        return;
    }
    if let Some(eq) = shape.eq {
        out.push_str(&core[..=eq]);
        if eq + 1 < bytes.len() {
            out.push_str(WILDCARD);
        }
        return;
    }
    if shape.digit {
        let keep = kept_prefix(bytes);
        out.push_str(&core[..keep]);
        out.push_str(WILDCARD);
        let close = match bytes.get(keep.wrapping_sub(1)) {
            Some(b'[') => Some(']'),
            Some(b'(') => Some(')'),
            _ => None,
        };
        if let Some(c) = close
            && bytes.last() == Some(&(c as u8))
        {
            out.push(c);
        }
        return;
    }
    if (shape.at && is_email(core))
        || (bytes.len() == 3 && is_date_word(core))
        || (shape.dot && is_file_name(core))
    {
        out.push_str(WILDCARD);
        return;
    }
    out.push_str(core);
}

/// Length of a leading word of at least two letters followed by a separator, kept in
/// front of a masked value.
fn kept_prefix(bytes: &[u8]) -> usize {
    let letters = bytes.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    match bytes.get(letters) {
        Some(b'_' | b'-' | b'#' | b':' | b'[' | b'(') if letters >= 2 => letters + 1,
        _ => 0,
    }
}

fn is_path(b: &[u8]) -> bool {
    (b[0] == b'/' && b.len() > 1)
        || b.starts_with(b"./")
        || b.starts_with(b"../")
        || b.starts_with(b"~/")
        || (b.len() > 2 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'\\')
}

fn is_email(core: &str) -> bool {
    core.find('@')
        .is_some_and(|at| at > 0 && core[at + 1..].contains('.'))
}

/// A file name with a common extension (`chrome.exe`, `app.log`).
fn is_file_name(core: &str) -> bool {
    let Some((name, ext)) = core.rsplit_once('.') else {
        return false;
    };
    !name.is_empty()
        && matches!(
            ext,
            "exe"
                | "dll"
                | "so"
                | "jar"
                | "py"
                | "sh"
                | "log"
                | "txt"
                | "conf"
                | "cfg"
                | "xml"
                | "json"
                | "yaml"
                | "yml"
                | "ini"
                | "html"
                | "htm"
                | "php"
                | "js"
                | "class"
                | "java"
                | "rb"
                | "go"
                | "rs"
                | "c"
                | "h"
                | "cpp"
                | "tmp"
                | "pid"
                | "sock"
                | "db"
                | "gz"
                | "zip"
                | "tar"
                | "csv"
                | "pdf"
                | "png"
                | "jpg"
                | "bat"
                | "ps1"
        )
}

fn is_date_word(core: &str) -> bool {
    matches!(
        core,
        "Jan"
            | "Feb"
            | "Mar"
            | "Apr"
            | "May"
            | "Jun"
            | "Jul"
            | "Aug"
            | "Sep"
            | "Oct"
            | "Nov"
            | "Dec"
            | "Mon"
            | "Tue"
            | "Wed"
            | "Thu"
            | "Fri"
            | "Sat"
            | "Sun"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> String {
        mask(s)
    }

    #[test]
    fn numbers_and_ids() {
        assert_eq!(m("took 15 ms, retry 3.5"), "took <*> ms, retry <*>");
        assert_eq!(m("value -42 and +7"), "value <*> and <*>");
        assert_eq!(m("hex 0xDEADbeef id 9f3c2a1b"), "hex <*> id <*>");
        assert_eq!(
            m("req 123e4567-e89b-12d3-a456-426614174000 done"),
            "req <*> done"
        );
        assert_eq!(
            m("Receiving block blk_-6952295868487656571"),
            "Receiving block blk_<*>"
        );
        assert_eq!(m("job_1445144423722_0020 started"), "job_<*> started");
        assert_eq!(m("sshd[24200]: closed"), "sshd[<*>]: closed");
        assert_eq!(m("worker#12 up"), "worker#<*> up");
    }

    #[test]
    fn addresses() {
        assert_eq!(m("from 10.0.0.12 port 22"), "from <*> port <*>");
        assert_eq!(m("src: /10.250.19.102:54106"), "src: <*>");
        assert_eq!(m("peer [fe80::1ff:fe23:4567:890a]:443"), "peer [<*>");
        assert_eq!(m("via fe80::1"), "via <*>");
        assert_eq!(m("mail to alice@example.com"), "mail to <*>");
        assert_eq!(m("GET https://example.com/a?b=c"), "GET <*>");
        assert_eq!(m("connect db.internal:5432"), "connect <*>");
    }

    #[test]
    fn paths() {
        assert_eq!(m("open /var/log/syslog failed"), "open <*> failed");
        assert_eq!(m("read ./conf/app.toml"), "read <*>");
        assert_eq!(m(r"load C:\Windows\System32\x.dll"), "load <*>");
        assert_eq!(m("ratio a/b"), "ratio a/b");
        assert_eq!(
            m("chrome.exe opened app.log, not v.next"),
            "<*> opened <*>, not v.next"
        );
    }

    #[test]
    fn dates_times_durations_sizes() {
        assert_eq!(
            m("Mon Nov 23 03:38:14 UTC 2026 at 2026-11-23T03:38:14.5Z"),
            "<*> <*> <*> <*> UTC <*> at <*>"
        );
        assert_eq!(
            m("gc took 1.5s freed 512MB of 2GiB"),
            "gc took <*> freed <*> of <*>"
        );
        assert_eq!(m("uptime 3d4h12m"), "uptime <*>");
    }

    #[test]
    fn quoted_strings_and_key_values() {
        assert_eq!(
            m(r#"user "john smith" not found, 'x y' bad"#),
            r#"user "<*>" not found, '<*>' bad"#
        );
        assert_eq!(m(r#"said "hi"."#), r#"said "<*>"."#);
        assert_eq!(m("it's the user's file"), "it's the user's file");
        assert_eq!(
            m("status=ok user=alice empty="),
            "status=<*> user=<*> empty="
        );
        assert_eq!(m("(pid=812) done"), "(pid=<*>) done");
        assert_eq!(
            m(r#"tag="View Lock", name=x comm='a b'"#),
            "tag=<*>, name=<*> comm=<*>"
        );
    }

    #[test]
    fn constant_words_and_punctuation_stay() {
        assert_eq!(
            m("Connection closed by authenticating user root"),
            "Connection closed by authenticating user root"
        );
        assert_eq!(m("  spaced\tout \n words  "), "spaced out words");
        assert_eq!(m("(12, 13)"), "(<*>, <*>)");
        assert_eq!(m("... ---"), "... ---");
        assert_eq!(m(""), "");
        assert_eq!(m("naïve café 42"), "naïve café <*>");
    }

    #[test]
    fn tokens_match_the_text() {
        let mut out = Masked::default();
        mask_into("a 1 \"b c\" d=2", &mut out);
        assert_eq!(
            out.tokens().collect::<Vec<_>>(),
            ["a", "<*>", "\"<*>\"", "d=<*>"]
        );
        assert_eq!(out.len(), 4);
    }
}
