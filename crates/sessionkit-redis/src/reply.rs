//! The stored form of a session — `<metadata>|<entries>` — and decoding replies into sessionkit's types.

use redis::Value;
use sessionkit_core::record::{Entries, Meta, Record};

/// What separates the metadata from the entries in a stored session: a
/// byte the metadata's grammar never holds.
pub(crate) const SEPARATOR: u8 = b'|';

/// Why a stored value is not a session this crate can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Corrupt {
    /// Not a session of this layout: another type, no metadata, or
    /// metadata that does not parse. The scripts see it the same way, so
    /// every operation agrees that the session is absent.
    Foreign(&'static str),
    /// Valid metadata, but entries this process cannot read (not a
    /// MessagePack map of strings, or a key that is not UTF-8; this crate
    /// never writes one). The scripts that only refresh the metadata do not
    /// read the entries, so they would take it for a live session.
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
/// lifetime and no deadline, where decimals with separators took 39.
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

/// A session as stored: its metadata ([`format_meta`]), [`SEPARATOR`],
/// then its entries as a MessagePack map from key to value, both as
/// MessagePack strings (the value's bytes as they are) — what the `cmsgpack`
/// library bundled with Redis reads and writes, so that a script can merge
/// a write into the entries. `None` if an entry is 4 GiB or more, which
/// MessagePack cannot hold (and Redis, at 512 MB a value, would refuse).
pub(crate) fn encode_session(meta: &str, entries: &Entries) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(meta.len() + 8 + entries.len() * 16);
    out.extend_from_slice(meta.as_bytes());
    out.push(SEPARATOR);
    // Writing to a Vec cannot fail: only the lengths can be refused.
    rmp::encode::write_map_len(&mut out, u32::try_from(entries.len()).ok()?).ok()?;
    for (key, value) in entries.iter() {
        for bytes in [key.as_bytes(), value] {
            rmp::encode::write_str_len(&mut out, u32::try_from(bytes.len()).ok()?).ok()?;
            out.extend_from_slice(bytes);
        }
    }
    Some(out)
}

/// A session as it is stored, split into its parts.
#[derive(Debug)]
pub(crate) struct RawSession {
    pub(crate) meta: Meta,
    /// User entries, sorted by key.
    pub(crate) entries: Vec<(String, Vec<u8>)>,
}

impl RawSession {
    /// The session a `GET` (or a script) answered: `Ok(None)` for no key.
    pub(crate) fn from_reply(reply: Value) -> Result<Option<Self>, Corrupt> {
        match reply {
            Value::Nil => Ok(None),
            Value::BulkString(stored) => Self::decode(&stored).map(Some),
            _ => Err(Corrupt::Foreign("not a string")),
        }
    }

    /// Splits a stored value into metadata and entries (see
    /// [`encode_session`]).
    pub(crate) fn decode(stored: &[u8]) -> Result<Self, Corrupt> {
        let bar = stored
            .iter()
            .position(|&b| b == SEPARATOR)
            .ok_or(Corrupt::Foreign("no metadata"))?;
        let meta = parse_meta(&stored[..bar]).ok_or(Corrupt::Foreign("metadata does not parse"))?;
        let mut entries = decode_entries(&stored[bar + 1..])
            .ok_or(Corrupt::Entry("entries are not a map of strings"))?
            .into_iter()
            .map(|(key, value)| {
                String::from_utf8(key)
                    .map(|key| (key, value))
                    .map_err(|_| Corrupt::Entry("session key is not UTF-8"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Sorted first, so that building `Entries` appends instead of
        // shifting.
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(RawSession { meta, entries })
    }

    pub(crate) fn into_record(self) -> Record {
        let entries: Entries = self.entries.into_iter().collect();
        Record {
            entries,
            meta: self.meta,
        }
    }
}

/// The pairs of a MessagePack map of strings (`str` formats, as `cmsgpack`
/// writes them; `bin`, which Redis's `cmsgpack` cannot decode, is refused
/// as the scripts would), with nothing after it; an empty array counts as
/// the empty map, which is how `cmsgpack` writes an empty Lua table.
/// `None` for anything else.
fn decode_entries(mut bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    use rmp::Marker;
    use rmp::decode::{RmpRead as _, read_marker};

    let rd = &mut bytes;
    let len = match read_marker(rd).ok()? {
        Marker::FixArray(0) => 0,
        marker => rmp::decode::marker_to_len(rd, marker).ok()?,
    };
    // A forged length reserves nothing much: the vector grows with the
    // pairs actually read.
    let mut pairs = Vec::with_capacity((len as usize).min(64));
    let string = |rd: &mut &[u8]| -> Option<Vec<u8>> {
        let n = match read_marker(rd).ok()? {
            Marker::FixStr(n) => u32::from(n),
            Marker::Str8 => u32::from(rd.read_data_u8().ok()?),
            Marker::Str16 => u32::from(rd.read_data_u16().ok()?),
            Marker::Str32 => rd.read_data_u32().ok()?,
            _ => return None,
        };
        let (taken, rest) = rd.split_at_checked(n as usize)?;
        *rd = rest;
        Some(taken.to_vec())
    };
    for _ in 0..len {
        let key = string(rd)?;
        let value = string(rd)?;
        pairs.push((key, value));
    }
    rd.is_empty().then_some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(b: &[u8]) -> Value {
        Value::BulkString(b.to_vec())
    }

    // GARBAGE_META and VALID_META, shared with tests/standalone.rs, which
    // checks that the scripts judge them alike.
    include!("../tests/support/meta_cases.rs");

    /// created 0x10, expires 0x30, ttl 0x20, no deadline.
    const META: &[u8] = b"000000000100000000003020:0";

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
        assert_eq!(parse_meta(META), Some(Meta::from_parts(16, 32, None, 48)));
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

    /// The stored form of `pairs` under [`META`].
    fn stored(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        let entries: Entries = pairs.iter().map(|(k, v)| (*k, v.to_vec())).collect();
        encode_session(std::str::from_utf8(META).unwrap(), &entries).unwrap()
    }

    #[test]
    fn sessions_round_trip_with_sorted_entries() {
        let raw = RawSession::decode(&stored(&[("zeta", b"1"), ("alpha", b"\xff\x00|")])).unwrap();
        assert_eq!(raw.meta, Meta::from_parts(16, 32, None, 48));
        let record = raw.into_record();
        assert_eq!(record.entries.keys().collect::<Vec<_>>(), ["alpha", "zeta"]);
        assert_eq!(record.entries.get("alpha"), Some(&b"\xff\x00|"[..]));
        // An empty session, and the empty map as cmsgpack writes it (an
        // empty array).
        assert!(RawSession::decode(&stored(&[])).unwrap().entries.is_empty());
        let mut lua_empty = META.to_vec();
        lua_empty.extend_from_slice(b"|\x90");
        assert!(RawSession::decode(&lua_empty).unwrap().entries.is_empty());
    }

    #[test]
    fn every_string_length_format_round_trips() {
        for len in [0, 31, 32, 255, 256, 65_535, 65_536, 200_000] {
            let value = vec![b'v'; len];
            let key = "k".repeat(len.min(70_000));
            let raw = RawSession::decode(&stored(&[(&key, &value)])).unwrap();
            assert_eq!(raw.entries, vec![(key, value)], "{len}");
        }
        let many: Vec<(String, Vec<u8>)> =
            (0..70_000).map(|i| (format!("k{i:05}"), vec![1])).collect();
        let pairs: Vec<(&str, &[u8])> = many.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
        assert_eq!(
            RawSession::decode(&stored(&pairs)).unwrap().entries.len(),
            70_000
        );
    }

    #[test]
    fn reads_what_lua_cmsgpack_writes() {
        // cmsgpack.pack({a = string.rep('x', 40), b = '\255\0'}), as Redis
        // 7.0 answers it: a fixmap of str8 and fixstr.
        let mut value = META.to_vec();
        value.push(b'|');
        value.extend_from_slice(b"\x82\xa1a\xd9\x28");
        value.extend_from_slice(&[b'x'; 40]);
        value.extend_from_slice(b"\xa1b\xa2\xff\x00");
        let raw = RawSession::decode(&value).unwrap();
        assert_eq!(
            raw.entries,
            vec![
                ("a".to_owned(), vec![b'x'; 40]),
                ("b".to_owned(), b"\xff\x00".to_vec())
            ]
        );
    }

    #[test]
    fn no_key_is_absent() {
        assert!(RawSession::from_reply(Value::Nil).unwrap().is_none());
    }

    #[test]
    fn rejects_foreign_or_broken_sessions() {
        let with_meta = |tail: &[u8]| {
            let mut v = META.to_vec();
            v.push(b'|');
            v.extend_from_slice(tail);
            v
        };
        for foreign in [
            b"no separator".to_vec(),
            b"00000000001fffffffffff2:soon|\x80".to_vec(),
            // The decimals of earlier development versions.
            b"2 1 2 0 3|\x80".to_vec(),
            b"|\x80".to_vec(),
        ] {
            assert!(
                matches!(RawSession::decode(&foreign), Err(Corrupt::Foreign(_))),
                "{:?}",
                foreign.escape_ascii().to_string()
            );
        }
        for broken in [
            with_meta(b""),
            // Truncated: a map of two, one pair.
            with_meta(b"\x82\xa1k\xa1v"),
            // A length past the end.
            with_meta(b"\x81\xa1k\xdb\xff\xff\xff\xff"),
            // Not strings.
            with_meta(b"\x81\x01\x02"),
            // Trailing bytes.
            with_meta(b"\x80\x80"),
            // A non-empty array.
            with_meta(b"\x91\xa1k"),
            // bin8, which Redis's cmsgpack cannot decode.
            with_meta(b"\x81\xa1k\xc4\x01v"),
            // A map32 claiming four billion pairs, with none.
            with_meta(b"\xdf\xff\xff\xff\xff"),
        ] {
            assert!(
                matches!(RawSession::decode(&broken), Err(Corrupt::Entry(_))),
                "{:?}",
                broken.escape_ascii().to_string()
            );
        }
        let not_utf8 = with_meta(b"\x81\xa2\xc3\x28\xa1v");
        assert!(matches!(
            RawSession::decode(&not_utf8),
            Err(Corrupt::Entry(_))
        ));
        assert!(RawSession::from_reply(Value::Int(1)).is_err());
        assert!(RawSession::from_reply(Value::Array(vec![])).is_err());
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
