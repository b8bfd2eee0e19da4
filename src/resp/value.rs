//! The one decoder for whole RESP values, off the hot path.
//!
//! The proxy reads a few replies whole: cluster topology replies (to rewrite node addresses),
//! `COMMAND INFO` (to refuse a RESP2 subscriber's command as redis-server would), Pub/Sub
//! confirmations and stream probes. [`decode`] reads any RESP2 or RESP3 frame into a [`Value`]
//! tree that borrows from the input and that [`encode`] writes back byte for byte: every type
//! byte is kept (simple and blob strings, verbatim strings with their format, big numbers,
//! doubles, booleans, RESP2 and RESP3 nulls, attributes), so a rewritten reply differs from
//! the original only where it was changed. [`Reader`] is the same tokenizer for callers that
//! walk a frame without building a tree (redirect rewriting).
//!
//! Every length is checked against the bytes present, and nesting is bounded, so any input
//! gives a value or an error in linear time, never a panic.

use std::borrow::Cow;

/// Why bytes are not one well-formed RESP value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub &'static str);

type Result<T> = std::result::Result<T, DecodeError>;

fn malformed<T>(what: &'static str) -> Result<T> {
    Err(DecodeError(what))
}

/// Decodes the one value that `frame` must hold entirely (no bytes after it).
pub fn decode(frame: &[u8]) -> Result<Value<'_>> {
    let mut r = Reader::new(frame);
    let v = parse(&mut r, 0)?;
    if r.pos != frame.len() {
        return malformed("bytes after the frame");
    }
    Ok(v)
}

/// Deepest nesting accepted: deeper than any reply the proxy reads (SLOTS: array → range →
/// node → metadata).
pub const MAX_DEPTH: usize = 32;

/// One RESP2 or RESP3 value, borrowing from the bytes it was read from; each variant keeps
/// its type byte so that [`encode`] writes back what was read.
#[derive(Debug)]
pub enum Value<'a> {
    /// `+ - : _ , # (`: the line without its type byte and CRLF.
    Line(u8, Cow<'a, [u8]>),
    /// `$ ! =` with a length.
    Blob(u8, Cow<'a, [u8]>),
    /// `$-1` or `*-1` (RESP2 nulls), by type byte.
    Null(u8),
    /// `* ~ >`.
    List(u8, Vec<Value<'a>>),
    /// `%`.
    Map(Vec<(Value<'a>, Value<'a>)>),
    /// `|`: attributes, then the value they annotate.
    Attr(Vec<(Value<'a>, Value<'a>)>, Box<Value<'a>>),
}

/// A tokenizer over one frame: reads type bytes, lines, integers and blobs, bounded by the
/// bytes present.
pub struct Reader<'a> {
    buf: &'a [u8],
    /// How many bytes have been read.
    pub pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next byte (a type byte).
    pub fn byte(&mut self) -> Result<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(DecodeError("truncated frame"))?;
        self.pos += 1;
        Ok(b)
    }

    /// The bytes up to the next CRLF, which is consumed.
    pub fn line(&mut self) -> Result<&'a [u8]> {
        let rest = &self.buf[self.pos..];
        let Some(cr) = memchr::memchr(b'\r', rest) else {
            return malformed("truncated frame");
        };
        match rest.get(cr + 1) {
            Some(b'\n') => {}
            Some(_) => return malformed("CR without LF"),
            None => return malformed("truncated frame"),
        }
        self.pos += cr + 2;
        Ok(&rest[..cr])
    }

    /// A line holding a decimal integer (a length or a count).
    pub fn int(&mut self) -> Result<i64> {
        let line = self.line()?;
        let digits = line.strip_prefix(b"-").unwrap_or(line);
        if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
            return malformed("bad length");
        }
        // At most 18 digits: fits an i64.
        let v = digits
            .iter()
            .fold(0i64, |v, &c| v * 10 + i64::from(c - b'0'));
        Ok(if digits.len() < line.len() { -v } else { v })
    }

    /// `n` bytes of blob data and the CRLF after them.
    pub fn blob(&mut self, n: i64) -> Result<&'a [u8]> {
        let n = usize::try_from(n).or(malformed("bad blob length"))?;
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError("bad blob length"))?;
        if end.checked_add(2).is_none_or(|e| e > self.buf.len()) {
            return malformed("truncated frame");
        }
        if &self.buf[end..end + 2] != b"\r\n" {
            return malformed("blob not followed by CRLF");
        }
        let data = &self.buf[self.pos..end];
        self.pos = end + 2;
        Ok(data)
    }

    /// An aggregate's element count, bounded by the bytes left (each value takes at least 3).
    pub fn count(&mut self, per_entry: usize) -> Result<Option<usize>> {
        let n = self.int()?;
        if n == -1 {
            return Ok(None);
        }
        let n = usize::try_from(n).or(malformed("negative aggregate length"))?;
        if n.saturating_mul(per_entry) > self.remaining() / 3 {
            return malformed("truncated frame");
        }
        Ok(Some(n))
    }
}

/// Reads one value at the reader's position; `depth` is the nesting so far.
pub fn parse<'a>(r: &mut Reader<'a>, depth: usize) -> Result<Value<'a>> {
    if depth > MAX_DEPTH {
        return malformed("nested too deep");
    }
    let kind = r.byte()?;
    Ok(match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
            Value::Line(kind, Cow::Borrowed(r.line()?))
        }
        b'$' | b'!' | b'=' => {
            let n = r.int()?;
            if n == -1 && kind == b'$' {
                Value::Null(kind)
            } else {
                Value::Blob(kind, Cow::Borrowed(r.blob(n)?))
            }
        }
        b'*' | b'~' | b'>' => match r.count(1)? {
            None if kind == b'*' => Value::Null(kind),
            None => return malformed("negative aggregate length"),
            Some(n) => {
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(parse(r, depth + 1)?);
                }
                Value::List(kind, items)
            }
        },
        b'%' | b'|' => {
            let n = r.count(2)?.ok_or(DecodeError("negative map length"))?;
            let mut pairs = Vec::with_capacity(n);
            for _ in 0..n {
                let k = parse(r, depth + 1)?;
                let v = parse(r, depth + 1)?;
                pairs.push((k, v));
            }
            if kind == b'%' {
                Value::Map(pairs)
            } else {
                Value::Attr(pairs, Box::new(parse(r, depth + 1)?))
            }
        }
        _ => return malformed("unknown RESP type byte"),
    })
}

/// Appends the RESP bytes of `v` to `out`.
pub fn encode(v: &Value<'_>, out: &mut Vec<u8>) {
    fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
        out.push(kind);
        out.extend_from_slice(n.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match v {
        Value::Line(kind, data) => {
            out.push(*kind);
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        Value::Blob(kind, data) => push_blob(out, *kind, data),
        Value::Null(kind) => {
            out.push(*kind);
            out.extend_from_slice(b"-1\r\n");
        }
        Value::List(kind, items) => {
            header(out, *kind, items.len());
            for item in items {
                encode(item, out);
            }
        }
        Value::Map(pairs) => {
            header(out, b'%', pairs.len());
            for (k, v) in pairs {
                encode(k, out);
                encode(v, out);
            }
        }
        Value::Attr(pairs, inner) => {
            header(out, b'|', pairs.len());
            for (k, v) in pairs {
                encode(k, out);
                encode(v, out);
            }
            encode(inner, out);
        }
    }
}

/// The value under any attributes.
pub fn peel<'v, 'a>(mut v: &'v Value<'a>) -> &'v Value<'a> {
    while let Value::Attr(_, inner) = v {
        v = inner;
    }
    v
}

/// The value under any attributes, mutably.
pub fn peel_mut<'v, 'a>(mut v: &'v mut Value<'a>) -> &'v mut Value<'a> {
    while let Value::Attr(_, inner) = v {
        v = inner;
    }
    v
}

/// Appends a blob value (`$`, `!` or `=`) with its length header.
pub fn push_blob(out: &mut Vec<u8>, kind: u8, data: &[u8]) {
    out.push(kind);
    out.extend_from_slice(data.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The bytes of a string value (blob, simple or verbatim, the latter without its format
/// prefix), under any attributes; `None` for any other value.
pub fn string_bytes<'v>(v: &'v Value<'_>) -> Option<&'v [u8]> {
    match peel(v) {
        Value::Blob(b'$', d) | Value::Line(b'+', d) => Some(d),
        Value::Blob(b'=', d) if d.len() >= 4 => Some(&d[4..]),
        _ => None,
    }
}

/// The value of an integer reply (`:`), under any attributes.
pub fn integer(v: &Value<'_>) -> Option<i64> {
    match peel(v) {
        Value::Line(b':', d) => std::str::from_utf8(d).ok()?.parse().ok(),
        _ => None,
    }
}
