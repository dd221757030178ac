//! Decoding replies and session hashes into sessionkit's types, and the `\xff` metadata field.

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

/// The latest creation or expiry time the metadata field holds: 11 hex
/// digits, 2^44 - 1 ms after the epoch, in the year 2527. The scripts cap
/// the expiries they compute at the same time (`MAX_EXPIRY`).
pub(crate) const MAX_TIME: u64 = 0xfff_ffff_ffff;

/// The value of the metadata field: `<created><expires><ttl>:<deadline>`,
/// milliseconds in lowercase hex; created and expires exactly 11 digits
/// (zero-padded), ttl and deadline without padding, `0` for no deadline;
/// ttl prefixed with `r` when the session is
/// [remembered](Meta::remembered) (see [`format_ttl`]).
/// For example `19a7afd1e0019a7b6afb006ddd00:0`: 30 bytes for a two-hour
/// lifetime and no deadline, where decimals with separators took 39, and
/// which keeps a small session's hash within a 48-byte allocation (see the
/// crate docs, "Data layout").
///
/// An expiry past [`MAX_TIME`] is written as `MAX_TIME`, as the scripts
/// cap the expiries they compute (a session meant to live for centuries
/// lives until 2527); `None` if the creation time is past it (a clock in the
/// year 2527), which the callers refuse.
pub(crate) fn format_meta(meta: &Meta) -> Option<String> {
    let (created, expires) = (meta.created(), meta.expires().min(MAX_TIME));
    if created > MAX_TIME {
        return None;
    }
    Some(format!(
        "{created:011x}{expires:011x}{}:{:x}",
        format_ttl(meta.ttl_ms(), meta.remembered()),
        meta.deadline().unwrap_or(0)
    ))
}

/// The ttl part of the metadata field: the idle lifetime in hex, prefixed
/// with `r` for a remembered session (one whose lifetime is its own, set by
/// `Delta::set_ttl`). The scripts keep the part as it is when they rewrite
/// the field, so the mark survives every refresh.
pub(crate) fn format_ttl(ttl_ms: u64, remembered: bool) -> String {
    if remembered {
        format!("r{ttl_ms:x}")
    } else {
        format!("{ttl_ms:x}")
    }
}

/// Parses the metadata field; `None` unless it is exactly the grammar
/// [`format_meta`] writes: 11 and 11 lowercase hex digits, then an optional
/// `r` and 1 to 16 (what a `u64` holds), `:`, and 1 to 16 again; leading zeros allowed,
/// nothing else (no sign, no `0x`, no space, no upper case).
///
/// The same grammar as the scripts' Lua pattern
/// `^([0-9a-f]×11)([0-9a-f]×11)(r?[0-9a-f]+):([0-9a-f]+)$` with its check of
/// at most 16 digits, so that this process and the scripts always agree on
/// what is corrupt (tests/support/meta_cases.rs feeds both the same
/// values).
pub(crate) fn parse_meta(value: &[u8]) -> Option<Meta> {
    let (times, rest) = value.split_at_checked(22)?;
    let (created, expires) = times.split_at(11);
    let colon = rest.iter().position(|&b| b == b':')?;
    let (ttl, deadline) = (&rest[..colon], &rest[colon + 1..]);
    let (ttl, remembered) = match ttl {
        [b'r', digits @ ..] => (digits, true),
        digits => (digits, false),
    };
    Some(
        Meta::from_parts(
            hex(created)?,
            hex(ttl)?,
            Some(hex(deadline)?),
            hex(expires)?,
        )
        .with_remembered(remembered),
    )
}

/// 1 to 16 lowercase hex digits; 16 cannot overflow a `u64`.
fn hex(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 16 {
        return None;
    }
    b.iter().try_fold(0u64, |n, &c| {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        Some(n << 4 | u64::from(digit))
    })
}

/// A decimal number as Redis writes one: digits only, no sign, no spaces.
fn digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// The elements of an array reply.
pub(crate) fn array(value: Value) -> Option<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
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
                    parse_meta(&value).ok_or(Corrupt::Foreign("metadata field does not parse"))?,
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

    // GARBAGE_META and VALID_META, shared with tests/standalone.rs, which
    // checks that the scripts judge them alike.
    include!("../tests/support/meta_cases.rs");

    /// created 0x10, expires 0x30, ttl 0x20, no deadline.
    const META: (&[u8], &[u8]) = (b"\xff", b"000000000100000000003020:0");

    #[test]
    fn meta_field_round_trips() {
        for meta in [
            Meta::from_parts(1_763_000_000_000, 7_200_000, None, 1_763_007_200_000),
            Meta::from_parts(1, 2, Some(3), 4),
            Meta::from_parts(0, 0, None, 0),
            Meta::from_parts(MAX_TIME, u64::MAX, Some(u64::MAX), MAX_TIME),
        ] {
            let text = format_meta(&meta).unwrap();
            assert_eq!(parse_meta(text.as_bytes()), Some(meta), "{text}");
        }
        // The example of the crate docs: 30 bytes for two hours, no deadline.
        let text = format_meta(&Meta::from_parts(
            1_763_000_000_000,
            7_200_000,
            None,
            1_763_007_200_000,
        ))
        .unwrap();
        assert_eq!(text, "19a7afd1e0019a7b6afb006ddd00:0");
        assert_eq!(text.len(), 30);
        assert_eq!(
            format_meta(&Meta::from_parts(16, 32, Some(64), 48)).unwrap(),
            "000000000100000000003020:40"
        );
        assert_eq!(parse_meta(META.1), Some(Meta::from_parts(16, 32, None, 48)));
    }

    #[test]
    fn expiries_past_the_year_2527_are_capped_and_creation_times_refused() {
        let ok = Meta::from_parts(MAX_TIME, 1, None, MAX_TIME);
        assert_eq!(format_meta(&ok).unwrap(), "ffffffffffffffffffffff1:0");
        for expires in [MAX_TIME + 1, u64::MAX] {
            let meta = Meta::from_parts(0, 1, None, expires);
            assert_eq!(
                format_meta(&meta).unwrap(),
                "00000000000fffffffffff1:0",
                "{meta:?}"
            );
        }
        let meta = Meta::from_parts(MAX_TIME + 1, 1, None, MAX_TIME);
        assert_eq!(format_meta(&meta), None, "{meta:?}");
    }

    #[test]
    fn garbage_meta_fields_are_refused() {
        for (bad, why) in GARBAGE_META {
            assert_eq!(parse_meta(bad), None, "{why}: {:?}", bad.escape_ascii());
        }
    }

    #[test]
    fn valid_meta_fields_are_read_as_the_scripts_read_them() {
        for (good, [created, ttl, deadline, expires]) in VALID_META {
            assert_eq!(
                parse_meta(good),
                Some(Meta::from_parts(*created, *ttl, Some(*deadline), *expires)),
                "{:?}",
                good.escape_ascii()
            );
        }
    }

    #[test]
    fn decodes_meta_and_sorted_entries() {
        let raw = RawSession::decode(hash(&[(b"zeta", b"1"), META, (b"alpha", b"2")]))
            .unwrap()
            .unwrap();
        let record = raw.into_record();
        assert_eq!(record.meta, Meta::from_parts(16, 32, None, 48));
        assert_eq!(record.entries.keys().collect::<Vec<_>>(), ["alpha", "zeta"]);
    }

    #[test]
    fn decodes_resp3_maps_and_ignores_reserved_names() {
        let map = Value::Map(vec![
            (bulk(b"\xff"), bulk(b"00000000001000000000024:3")),
            (bulk(b"\xffnext"), bulk(b"reserved")),
            (bulk(b"k"), bulk(b"v")),
        ]);
        let record = RawSession::decode(map).unwrap().unwrap().into_record();
        assert_eq!(record.meta, Meta::from_parts(1, 4, Some(3), 2));
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
            vec![(b"\xff", b"00000000001fffffffffff2:soon")],
            // The decimals of earlier development versions.
            vec![(b"\xff", b"2 1 2 0 3")],
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
