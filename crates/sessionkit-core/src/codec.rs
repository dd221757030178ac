//! Turning session values and whole records into bytes and back.
//!
//! Two layers:
//!
//! - **Values** are encoded one by one as JSON ([`encode_value`],
//!   [`decode_value`]), with serde_json's `float_roundtrip` so that every
//!   `f64` comes back bit for bit. One encoding per key is what lets stores apply deltas
//!   key by key (a Redis hash field per session key), and JSON keeps stored
//!   sessions readable when an operator inspects a store.
//! - **Records** (entries plus expiry metadata) are framed in a small binary
//!   format for stores that keep a session as one blob, such as files and
//!   memcached ([`encode_record`], [`decode_record`]).
//!
//! Decoding is written for hostile input: a corrupt or forged store value gives
//! an [`ErrorKind::Codec`](crate::ErrorKind::Codec) error, never a panic, and
//! no length field can make it allocate more than the input's size.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::record::{Entries, Meta, Record};

/// Encodes one session value.
///
/// The error does not say which key the value belongs to; the session uses
/// [`encode_value_of`], which does.
///
/// ```
/// let bytes = sessionkit_core::codec::encode_value(&vec![1, 2]).unwrap();
/// assert_eq!(bytes, b"[1,2]");
/// ```
pub fn encode_value<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| {
        Error::codec(
            "could not encode a session value",
            Some(Box::new(ValueError::from(e))),
        )
    })
}

/// Decodes one session value.
///
/// The error does not say which key the value belongs to; the session uses
/// [`decode_value_of`], which does.
///
/// ```
/// let n: u32 = sessionkit_core::codec::decode_value(b"7").unwrap();
/// assert_eq!(n, 7);
/// assert!(sessionkit_core::codec::decode_value::<u32>(b"\"seven\"").is_err());
/// ```
pub fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::codec(
            "could not decode a session value",
            Some(Box::new(ValueError::from(e))),
        )
    })
}

/// Encodes the value of session key `key`, like [`encode_value`]; an error
/// names the key.
///
/// Keys are not secrets and are named; values may be (a CSRF or OAuth token),
/// so neither the error nor its source ever quotes the value.
///
/// ```
/// use std::collections::HashMap;
/// use sessionkit_core::codec::encode_value_of;
///
/// assert_eq!(encode_value_of("n", &7).unwrap(), b"7");
/// // JSON object keys must be strings.
/// let err = encode_value_of("pairs", &HashMap::from([((1, 2), 3)])).unwrap_err();
/// assert_eq!(err.to_string(), "session codec error: could not encode the value of session key `pairs`");
/// ```
pub fn encode_value_of<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>, Error> {
    encode_value(value).map_err(|e| {
        e.with_detail(format!(
            "could not encode the value of session key `{}`",
            shown(key)
        ))
    })
}

/// Decodes the value of session key `key`, like [`decode_value`]; an error
/// names the key, and what was expected, never the value.
///
/// ```
/// use sessionkit_core::codec::decode_value_of;
///
/// assert_eq!(decode_value_of::<u32>("visits", b"7").unwrap(), 7);
/// let err = decode_value_of::<u32>("oauth_refresh", b"\"s3cr3t\"").unwrap_err();
/// assert_eq!(err.to_string(), "session codec error: could not decode the value of session key `oauth_refresh`");
/// let cause = std::error::Error::source(&err).unwrap().to_string();
/// assert!(cause.contains("expected u32") && !cause.contains("s3cr3t"), "{cause}");
/// ```
pub fn decode_value_of<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, Error> {
    decode_value(bytes).map_err(|e| {
        e.with_detail(format!(
            "could not decode the value of session key `{}`",
            shown(key)
        ))
    })
}

/// A session key as an error shows it: control characters escaped, long keys
/// cut, so that a key cannot forge log lines or flood them.
fn shown(key: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = key.chars().take(MAX).flat_map(char::escape_debug).collect();
    if key.chars().count() > MAX {
        out.push('…');
    }
    out
}

/// serde_json's error without the value it may quote.
///
/// serde's messages quote the offending value (`invalid type: string
/// "<a token>", expected u32`); a session value can be a secret, and errors
/// are logged. This keeps what helps (what was expected, where in the JSON)
/// and drops the value.
#[derive(Debug)]
struct ValueError {
    message: String,
    line: usize,
    column: usize,
}

impl From<serde_json::Error> for ValueError {
    fn from(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        let full = e.to_string();
        // serde_json appends " at line L column C" when it knows the place.
        let text = match full.rfind(" at line ") {
            Some(i) if e.line() != 0 => &full[..i],
            _ => full.as_str(),
        };
        let message = match e.classify() {
            // Syntax and end-of-input messages describe the JSON, not its
            // content ("expected `,` or `]`", "EOF while parsing a string").
            Category::Syntax | Category::Eof | Category::Io => text.to_owned(),
            Category::Data => match text.find(", expected ") {
                Some(i) => format!("the value does not fit the type: {}", &text[i + 2..]),
                None if text.starts_with("missing field `")
                    || text.starts_with("duplicate field `") =>
                {
                    text.to_owned()
                }
                None => "the value does not fit the type".to_owned(),
            },
        };
        ValueError {
            message,
            line: e.line(),
            column: e.column(),
        }
    }
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if self.line != 0 {
            write!(f, " at line {} column {}", self.line, self.column)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValueError {}

/// Format 2: format 1 plus a flags byte after the metadata.
const MAGIC: &[u8; 3] = b"SK\x02";
/// Format 1 (no flags), still read: a session it holds is not remembered.
const MAGIC_1: &[u8; 3] = b"SK\x01";
const HEADER_LEN: usize = 3 + 8 * 4 + 1 + 4;

/// The bit of the flags byte that says the session is
/// [remembered](Meta::remembered).
const FLAG_REMEMBERED: u8 = 1;

/// Encodes a record as one blob.
///
/// Layout (all integers little-endian): `b"SK\x02"`, created, ttl (ms),
/// deadline (0 = none), expires, a flags byte (bit 0: [remembered](Meta::remembered);
/// the other bits are zero), entry count (`u32`), then per entry the key
/// length (`u32`), the key (UTF-8), the value length (`u32`), the value.
/// Blobs of format 1 (`b"SK\x01"`, no flags byte) are still read.
///
/// ```
/// use std::time::Duration;
/// use sessionkit_core::codec::{decode_record, encode_record};
/// use sessionkit_core::record::{Entries, Meta, Record};
///
/// let record = Record {
///     entries: [("n", b"1".to_vec())].into_iter().collect::<Entries>(),
///     meta: Meta::new(1_000, Duration::from_secs(60), None),
/// };
/// assert_eq!(decode_record(&encode_record(&record)).unwrap(), record);
/// ```
pub fn encode_record(record: &Record) -> Vec<u8> {
    let body: usize = record
        .entries
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len())
        .sum();
    let mut out = Vec::with_capacity(HEADER_LEN + body);
    out.extend_from_slice(MAGIC);
    let meta = &record.meta;
    for n in [
        meta.created(),
        meta.ttl_ms(),
        meta.deadline().unwrap_or(0),
        meta.expires(),
    ] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.push(if meta.remembered() {
        FLAG_REMEMBERED
    } else {
        0
    });
    out.extend_from_slice(&len_u32(record.entries.len()).to_le_bytes());
    for (k, v) in record.entries.iter() {
        out.extend_from_slice(&len_u32(k.len()).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&len_u32(v.len()).to_le_bytes());
        out.extend_from_slice(v);
    }
    out
}

fn len_u32(len: usize) -> u32 {
    // A session entry over 4 GiB cannot be built by the session API (values
    // are held in memory and sent in one store call); saturating keeps the
    // encoder total, and the decoder then rejects the truncated frame.
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Decodes a blob written by [`encode_record`].
///
/// Any deviation (wrong magic, a length past the end, a non-UTF-8 key,
/// duplicate or unsorted keys, trailing bytes, an idle lifetime of 2^63
/// ms or more) is a codec error.
pub fn decode_record(bytes: &[u8]) -> Result<Record, Error> {
    let mut r = Reader { bytes, pos: 0 };
    let with_flags = match r.take(MAGIC.len())? {
        magic if magic == MAGIC => true,
        magic if magic == MAGIC_1 => false,
        _ => return Err(Error::codec("not a sessionkit record (bad magic)", None)),
    };
    let created = r.u64()?;
    let ttl = r.u64()?;
    let deadline = r.u64()?;
    let expires = r.u64()?;
    // The top bit of a lifetime is `Meta`'s "remembered" mark, never part
    // of a lifetime: such a record would not encode back to itself.
    if ttl > i64::MAX as u64 {
        return Err(Error::codec("record idle lifetime is out of range", None));
    }
    let flags = if with_flags { r.take(1)?[0] } else { 0 };
    if flags & !FLAG_REMEMBERED != 0 {
        return Err(Error::codec("record has unknown flags", None));
    }
    let count = r.u32()? as usize;
    // Each entry takes at least 8 bytes, which bounds the count by the input.
    if count > r.remaining() / 8 {
        return Err(Error::codec("record entry count exceeds its size", None));
    }
    let mut list: Vec<(Box<str>, Box<[u8]>)> = Vec::with_capacity(count);
    for _ in 0..count {
        let klen = r.u32()? as usize;
        let key = std::str::from_utf8(r.take(klen)?)
            .map_err(|e| Error::codec("record key is not UTF-8", Some(Box::new(e))))?;
        if let Some((prev, _)) = list.last()
            && **prev >= *key
        {
            return Err(Error::codec("record keys are not sorted and unique", None));
        }
        let vlen = r.u32()? as usize;
        let value = r.take(vlen)?;
        list.push((key.into(), value.into()));
    }
    if r.remaining() != 0 {
        return Err(Error::codec("trailing bytes after record", None));
    }
    let entries: Entries = list.into_iter().collect();
    Ok(Record {
        entries,
        meta: Meta::from_parts(created, ttl, Some(deadline), expires)
            .with_remembered(flags & FLAG_REMEMBERED != 0),
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.remaining() {
            return Err(Error::codec("record is truncated", None));
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, Error> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ErrorKind;

    fn sample() -> Record {
        Record {
            entries: [("a", b"1".to_vec()), ("basket", b"[\"x\"]".to_vec())]
                .into_iter()
                .collect(),
            meta: Meta::new(5, Duration::from_secs(7), Some(Duration::from_secs(9))),
        }
    }

    #[test]
    fn round_trip_keeps_everything() {
        let record = sample();
        assert_eq!(decode_record(&encode_record(&record)).unwrap(), record);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode_record(&sample());
        for len in 0..bytes.len() {
            let err = decode_record(&bytes[..len]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Codec, "len {len}");
        }
    }

    #[test]
    fn huge_count_does_not_allocate() {
        let mut bytes = encode_record(&sample());
        bytes[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_record(&bytes).is_err());
    }

    #[test]
    fn trailing_bytes_and_bad_magic_are_rejected() {
        let mut bytes = encode_record(&sample());
        bytes.push(0);
        assert!(decode_record(&bytes).is_err());
        let mut bytes = encode_record(&sample());
        bytes[0] = b'X';
        assert!(decode_record(&bytes).is_err());
    }

    #[test]
    fn every_single_byte_flip_decodes_or_errors() {
        let bytes = encode_record(&sample());
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut copy = bytes.clone();
                copy[i] ^= 1 << bit;
                let _ = decode_record(&copy);
            }
        }
    }

    #[test]
    fn value_errors_never_quote_the_value() {
        type Decode = fn(&[u8]) -> Result<(), Error>;
        let cases: [(&[u8], Decode); 5] = [
            (b"\"s3cr3t\"", |b| decode_value::<u32>(b).map(drop)),
            (b"99999s3cr3t", |b| decode_value::<u8>(b).map(drop)),
            (b"[\"s3cr3t\"]", |b| decode_value::<(u8, u8)>(b).map(drop)),
            (b"{\"s3cr3t\":1}", |b| {
                decode_value::<std::collections::BTreeMap<u8, u8>>(b).map(drop)
            }),
            (b"\"s3cr3t\"", |b| decode_value::<bool>(b).map(drop)),
        ];
        for (bytes, decode) in cases {
            let err = decode(bytes).unwrap_err();
            let source = std::error::Error::source(&err).unwrap();
            let text = format!("{err} {err:?} {source} {source:?}");
            assert!(!text.contains("s3cr3t"), "{text}");
        }
        let err = decode_value::<u32>(b"\"x\"").unwrap_err();
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert_eq!(
            source,
            "the value does not fit the type: expected u32 at line 1 column 3"
        );
    }

    #[test]
    fn keys_are_shown_escaped_and_cut() {
        assert_eq!(shown("basket"), "basket");
        assert_eq!(shown("a\nb"), "a\\nb");
        assert_eq!(shown(&"k".repeat(100)).chars().count(), 65);
    }

    #[test]
    fn value_errors_are_codec_errors() {
        let err = decode_value::<Vec<u8>>(b"{").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        assert!(std::error::Error::source(&err).is_some());
    }
}
