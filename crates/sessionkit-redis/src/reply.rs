//! Decoding replies and session hashes into sessionkit's types, and the `\xff` metadata field of layout 2.

use redis::Value;
use sessionkit_core::record::{Entries, Meta, Record};

/// The name of the metadata field: the single byte 0xFF, which never occurs
/// in UTF-8, so no session key (a Rust `&str`) can collide with it.
pub(crate) const META_FIELD: &[u8] = b"\xff";

/// Why a stored hash is not a session this crate can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Corrupt {
    /// Not a session of this layout: another type, no metadata field, or
    /// one that does not parse. The scripts see it the same way, so every
    /// operation agrees that the session is absent.
    Foreign(&'static str),
    /// Valid metadata, but an entry this process cannot read (a field name
    /// that is not UTF-8; this crate never writes one). The scripts do not
    /// read entries, so they would take it for a live session.
    Entry(&'static str),
}

impl Corrupt {
    pub(crate) fn why(self) -> &'static str {
        match self {
            Corrupt::Foreign(why) | Corrupt::Entry(why) => why,
        }
    }
}

/// The value of the metadata field: `2 <created> <ttl> <deadline>
/// <expires>`, decimal milliseconds, `0` for no deadline.
pub(crate) fn format_meta(meta: &Meta) -> String {
    format!(
        "2 {} {} {} {}",
        meta.created(),
        meta.ttl_ms(),
        meta.deadline().unwrap_or(0),
        meta.expires()
    )
}

/// Parses the metadata field; `None` unless it is exactly layout 2: the
/// digit `2` and four decimal numbers (ASCII digits only), separated by
/// single spaces.
///
/// The same grammar as the scripts' Lua pattern `^2 (%d+) (%d+) (%d+)
/// (%d+)$`, so that this process and the scripts always agree on what is
/// corrupt. A number too large for a `u64` (this crate never writes one)
/// saturates, as it would in Lua's doubles, instead of being refused.
pub(crate) fn parse_meta(value: &[u8]) -> Option<Meta> {
    let mut parts = value.split(|&b| b == b' ');
    if parts.next()? != b"2" {
        return None;
    }
    let mut next = || saturating_digits(parts.next()?);
    let (created, ttl, deadline, expires) = (next()?, next()?, next()?, next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(Meta::from_parts(created, ttl, Some(deadline), expires))
}

/// A decimal number as this crate writes it: digits only, no sign, no
/// spaces.
fn digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// A decimal number of ASCII digits, saturating at `u64::MAX`.
fn saturating_digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() {
        return None;
    }
    b.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.saturating_mul(10).saturating_add(u64::from(d - b'0')))
    })
}

/// The elements of an array reply.
pub(crate) fn array(value: Value) -> Option<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// An integer reply (Lua numbers arrive as integers).
pub(crate) fn int(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// A timestamp as the scripts return it: an integer, or decimal digits.
pub(crate) fn number(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(b) => digits(b),
        Value::SimpleString(s) => digits(s.as_bytes()),
        _ => None,
    }
}

/// Metadata from a script reply that carries the metadata field's value.
pub(crate) fn meta(value: Option<&Value>) -> Option<Meta> {
    match value? {
        Value::BulkString(b) => parse_meta(b),
        _ => None,
    }
}

/// The raw parts of a stored session hash, as `HGETALL` returns it.
#[derive(Debug)]
pub(crate) struct RawSession {
    pub(crate) meta: Meta,
    /// User entries, sorted by key.
    pub(crate) entries: Vec<(String, Vec<u8>)>,
}

impl RawSession {
    /// Splits an `HGETALL` reply into metadata and entries: a flat array of
    /// names and values (RESP2, or from inside a script) or a map (RESP3).
    /// `Ok(None)` for an empty hash, which is how Redis answers for a key
    /// that does not exist.
    pub(crate) fn decode(reply: Value) -> Result<Option<Self>, Corrupt> {
        let pairs = reply
            .into_map_iter()
            .map_err(|_| Corrupt::Foreign("not a hash reply"))?;
        let mut meta = None;
        let mut entries = Vec::with_capacity(pairs.size_hint().0.saturating_sub(1));
        let mut empty = true;
        for (name, value) in pairs {
            empty = false;
            let (Value::BulkString(name), Value::BulkString(value)) = (name, value) else {
                // Redis only sends strings here; this is not a hash reply.
                return Err(Corrupt::Foreign("hash element is not a string"));
            };
            if name == META_FIELD {
                meta = Some(
                    parse_meta(&value).ok_or(Corrupt::Foreign("metadata is not of layout 2"))?,
                );
            } else if name.first() == Some(&0xff) {
                // Other names starting with 0xFF (no UTF-8 session key
                // can) are reserved for later metadata: ignored, so that
                // additions need no new layout.
                continue;
            } else {
                let key = String::from_utf8(name)
                    .map_err(|_| Corrupt::Entry("session key is not UTF-8"))?;
                entries.push((key, value));
            }
        }
        if empty {
            return Ok(None);
        }
        let meta = meta.ok_or(Corrupt::Foreign("no metadata field"))?;
        // Sorted first, so that building `Entries` appends instead of
        // shifting.
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(Some(RawSession { meta, entries }))
    }

    pub(crate) fn into_record(self) -> Record {
        let entries: Entries = self.entries.into_iter().collect();
        Record {
            entries,
            meta: self.meta,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(b: &[u8]) -> Value {
        Value::BulkString(b.to_vec())
    }

    fn hash(pairs: &[(&[u8], &[u8])]) -> Value {
        Value::Array(pairs.iter().flat_map(|(k, v)| [bulk(k), bulk(v)]).collect())
    }

    const META: (&[u8], &[u8]) = (b"\xff", b"2 10 20 0 30");

    #[test]
    fn meta_field_round_trips() {
        for meta in [
            Meta::from_parts(1_700_000_000_000, 7_200_000, None, 1_700_007_200_000),
            Meta::from_parts(1, 2, Some(3), 4),
            Meta::from_parts(0, 0, None, 0),
            Meta::from_parts(u64::MAX, u64::MAX, Some(u64::MAX), u64::MAX),
        ] {
            let text = format_meta(&meta);
            assert_eq!(parse_meta(text.as_bytes()), Some(meta), "{text}");
        }
        assert_eq!(
            format_meta(&Meta::from_parts(10, 20, Some(40), 30)),
            "2 10 20 40 30"
        );
        assert_eq!(
            parse_meta(b"2 10 20 0 30"),
            Some(Meta::from_parts(10, 20, None, 30))
        );
        assert_eq!(
            parse_meta(b"2 010 20 0 30"),
            Some(Meta::from_parts(10, 20, None, 30)),
            "leading zeros are digits too, for Lua's %d+"
        );
        // Too large for a u64 (never written): saturates, as in Lua.
        assert_eq!(
            parse_meta(b"2 10 20 0 99999999999999999999999").map(|m| m.expires()),
            Some(u64::MAX)
        );
    }

    #[test]
    fn garbage_meta_fields_are_refused() {
        for bad in [
            &b""[..],
            b"2",
            b"2 ",
            b"1 10 20 0 30",
            b"3 10 20 0 30",
            b"20 10 20 0 30",
            b"2 10 20 0",
            b"2 10 20 0 30 40",
            b"2 10 20 0 30 ",
            b" 2 10 20 0 30",
            b"2  10 20 0 30",
            b"2 10 20 0 -30",
            b"2 10 20 0 +30",
            b"2 10 20 0 3e1",
            b"2 10 20 0 30.0",
            b"2 10 20 0 0x1e",
            b"2\t10 20 0 30",
            b"2 10 20 0 30\n",
            b"2 \xc3\x28 20 0 30",
            b"version 1",
        ] {
            assert_eq!(parse_meta(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn decodes_meta_and_sorted_entries() {
        let raw = RawSession::decode(hash(&[(b"zeta", b"1"), META, (b"alpha", b"2")]))
            .unwrap()
            .unwrap();
        let record = raw.into_record();
        assert_eq!(record.meta, Meta::from_parts(10, 20, None, 30));
        assert_eq!(record.entries.keys().collect::<Vec<_>>(), ["alpha", "zeta"]);
    }

    #[test]
    fn decodes_resp3_maps_and_ignores_reserved_names() {
        let map = Value::Map(vec![
            (bulk(b"\xff"), bulk(b"2 1 2 3 4")),
            (bulk(b"\xffnext"), bulk(b"reserved")),
            (bulk(b"k"), bulk(b"v")),
        ]);
        let record = RawSession::decode(map).unwrap().unwrap().into_record();
        assert_eq!(record.meta, Meta::from_parts(1, 2, Some(3), 4));
        assert_eq!(record.entries.keys().collect::<Vec<_>>(), ["k"]);
    }

    #[test]
    fn an_empty_hash_is_absent() {
        assert!(RawSession::decode(Value::Array(vec![])).unwrap().is_none());
        assert!(RawSession::decode(Value::Map(vec![])).unwrap().is_none());
    }

    #[test]
    fn rejects_foreign_or_broken_hashes() {
        let foreign: Vec<Vec<(&[u8], &[u8])>> = vec![
            vec![(b"a", b"1")],
            // Layout 1.
            vec![
                (b"\xffversion", b"1"),
                (b"\xffcreated", b"1"),
                (b"\xffttl", b"1"),
                (b"\xffdeadline", b"0"),
                (b"\xffexpires", b"1"),
            ],
            vec![(b"\xff", b"2 1 2 0 soon")],
            vec![(b"\xff", b"1 1 2 0 3")],
        ];
        for pairs in foreign {
            assert!(
                matches!(RawSession::decode(hash(&pairs)), Err(Corrupt::Foreign(_))),
                "{pairs:?}"
            );
        }
        let broken_entry = hash(&[META, (b"\xc3\x28", b"not utf-8 key")]);
        assert!(matches!(
            RawSession::decode(broken_entry),
            Err(Corrupt::Entry(_))
        ));
        assert!(RawSession::decode(Value::Array(vec![bulk(b"odd")])).is_err());
        assert!(RawSession::decode(Value::Array(vec![Value::Int(1), Value::Int(2)])).is_err());
        assert!(RawSession::decode(Value::Int(1)).is_err());
    }

    #[test]
    fn numbers_are_digits_only() {
        assert_eq!(number(Some(&bulk(b"123"))), Some(123));
        assert_eq!(number(Some(&Value::Int(5))), Some(5));
        for bad in [&b""[..], b"+1", b"1e3", b" 1", b"99999999999999999999999"] {
            assert_eq!(number(Some(&bulk(bad))), None, "{bad:?}");
        }
        assert_eq!(number(Some(&Value::Int(-1))), None);
    }
}
