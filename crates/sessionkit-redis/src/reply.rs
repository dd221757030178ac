//! Decoding script replies and session hashes into sessionkit's types.

use redis::Value;
use sessionkit_core::record::{Entries, Meta, Record};

use crate::scripts::field;

/// Why a stored hash is not a session this crate can read.
pub(crate) type Corrupt = &'static str;

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

/// The bytes of a string reply.
fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// A timestamp or duration as the scripts write them: decimal digits only.
pub(crate) fn number(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => digits(bytes(other)?),
    }
}

fn digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Metadata from the four values an `apply` or `change_id` script returns
/// (`created, ttl, deadline, expires`).
pub(crate) fn meta(values: &[Value]) -> Option<Meta> {
    let [created, ttl, deadline, expires] = values else {
        return None;
    };
    Some(Meta::from_parts(
        number(Some(created))?,
        number(Some(ttl))?,
        Some(number(Some(deadline))?),
        number(Some(expires))?,
    ))
}

/// The raw parts of a stored session hash, as `HGETALL` returns it.
#[derive(Debug)]
pub(crate) struct RawSession {
    pub(crate) created: u64,
    pub(crate) ttl: u64,
    pub(crate) deadline: u64,
    pub(crate) expires: u64,
    /// User entries, sorted by key.
    pub(crate) entries: Vec<(String, Vec<u8>)>,
}

impl RawSession {
    /// Splits an `HGETALL` reply into metadata and entries.
    pub(crate) fn decode(items: Vec<Value>) -> Result<Self, Corrupt> {
        if !items.len().is_multiple_of(2) {
            return Err("odd number of hash elements");
        }
        let mut version = None;
        let (mut created, mut ttl, mut deadline, mut expires) = (None, None, None, None);
        // Five of the pairs are metadata.
        let mut entries = Vec::with_capacity((items.len() / 2).saturating_sub(5));
        let mut iter = items.into_iter();
        while let (Some(name), Some(value)) = (iter.next(), iter.next()) {
            let (Value::BulkString(name), Value::BulkString(value)) = (name, value) else {
                return Err("hash element is not a string");
            };
            if name.first() == Some(&0xff) {
                // Metadata: names no UTF-8 session key can have.
                let slot = match &name[..] {
                    n if n == field::VERSION => {
                        version = Some(value);
                        continue;
                    }
                    n if n == field::CREATED => &mut created,
                    n if n == field::TTL => &mut ttl,
                    n if n == field::DEADLINE => &mut deadline,
                    n if n == field::EXPIRES => &mut expires,
                    // Unknown metadata of this layout version: ignored, so
                    // that additions need no new layout.
                    _ => continue,
                };
                *slot = Some(digits(&value).ok_or("metadata field is not a number")?);
            } else {
                let key = String::from_utf8(name).map_err(|_| "session key is not UTF-8")?;
                entries.push((key, value));
            }
        }
        if version.as_deref() != Some(field::LAYOUT) {
            return Err("unknown layout version");
        }
        let (Some(created), Some(ttl), Some(deadline), Some(expires)) =
            (created, ttl, deadline, expires)
        else {
            return Err("metadata field missing");
        };
        // Sorted first, so that building `Entries` appends instead of
        // shifting.
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(RawSession {
            created,
            ttl,
            deadline,
            expires,
            entries,
        })
    }

    pub(crate) fn meta(&self) -> Meta {
        Meta::from_parts(self.created, self.ttl, Some(self.deadline), self.expires)
    }

    pub(crate) fn into_record(self) -> Record {
        let meta = self.meta();
        let entries: Entries = self.entries.into_iter().collect();
        Record { entries, meta }
    }
}

/// Decodes an `HGETALL` reply into a record.
pub(crate) fn record(value: Value) -> Result<Record, Corrupt> {
    let items = array(value).ok_or("hash reply is not an array")?;
    RawSession::decode(items).map(RawSession::into_record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(b: &[u8]) -> Value {
        Value::BulkString(b.to_vec())
    }

    fn hash(pairs: &[(&[u8], &[u8])]) -> Vec<Value> {
        pairs.iter().flat_map(|(k, v)| [bulk(k), bulk(v)]).collect()
    }

    const META: [(&[u8], &[u8]); 5] = [
        (field::VERSION, b"1"),
        (field::CREATED, b"10"),
        (field::TTL, b"20"),
        (field::DEADLINE, b"0"),
        (field::EXPIRES, b"30"),
    ];

    #[test]
    fn decodes_meta_and_sorted_entries() {
        let mut pairs = vec![(&b"zeta"[..], &b"1"[..]), (b"alpha", b"2")];
        pairs.extend(META);
        let raw = RawSession::decode(hash(&pairs)).unwrap();
        let record = raw.into_record();
        assert_eq!(record.meta, Meta::from_parts(10, 20, None, 30));
        assert_eq!(record.entries.keys().collect::<Vec<_>>(), ["alpha", "zeta"]);
    }

    #[test]
    fn rejects_foreign_or_broken_hashes() {
        let cases: Vec<Vec<(&[u8], &[u8])>> = vec![
            vec![(b"a", b"1")],
            META[1..].to_vec(),
            vec![
                (field::VERSION, b"2"),
                (field::CREATED, b"1"),
                (field::TTL, b"1"),
                (field::DEADLINE, b"0"),
                (field::EXPIRES, b"1"),
            ],
            {
                let mut v = META.to_vec();
                v[4] = (field::EXPIRES, b"-1");
                v
            },
            {
                let mut v = META.to_vec();
                v.push((b"\xc3\x28", b"not utf-8 key"));
                v
            },
        ];
        for pairs in cases {
            assert!(RawSession::decode(hash(&pairs)).is_err(), "{pairs:?}");
        }
        assert!(RawSession::decode(vec![bulk(b"odd")]).is_err());
        assert!(RawSession::decode(vec![Value::Int(1), Value::Int(2)]).is_err());
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
