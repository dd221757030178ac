//! What the store writes into memcached: one item per session, its lock inside, and its exptime.
//!
//! A **session item** is a fixed 28-byte header followed by the record in
//! the [core blob format](sessionkit_core::codec::encode_record):
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `b"SKM\x02"` (format 2: lock inside the item) |
//! | 4..12 | lock expiry, `u64` little-endian, Unix milliseconds; `0` when unlocked |
//! | 12..28 | lock token (16 bytes); zeros when unlocked |
//! | 28.. | the record |
//!
//! The lock lives in the session item so that every check-and-write is one
//! compare-and-swap on one item: a fenced write checks the token it read
//! and writes with that read's CAS, so it lands only if nobody — in
//! particular nobody taking the lock over — wrote the item in between. The
//! header has a fixed size, so taking or releasing a lock never changes the
//! size of the item (a session at the item size limit can still be locked).
//!
//! Items of format 1 (magic `SKM\x01`, lock in a separate item) are not
//! read: they decode as errors and count as absent sessions.
//!
//! `change_id` writes two more kinds of item (see `store/change_id.rs`):
//!
//! - a **pending copy**, under the new id before the move commits: magic
//!   `SKP\x02`, the same 24-byte lock header, one byte for the length of the
//!   old key's part (the key without the prefix), that part, then the
//!   record. It is the session only once the old key holds a tombstone that
//!   names this key;
//! - a **tombstone**, under the old id once the move committed: magic
//!   `SKT\x02`, then the new key's part. It is no session.
//!
//! Versions before these kinds read both as undecodable, so as absent.

use sessionkit_core::codec::{decode_record, encode_record};
use sessionkit_core::record::Record;
use sessionkit_core::{Error, LockToken};

const MAGIC: &[u8; 4] = b"SKM\x02";

/// A session copied by `change_id`, not committed yet.
const PENDING_MAGIC: &[u8; 4] = b"SKP\x02";

/// The tombstone `change_id` leaves under the old id.
const MOVED_MAGIC: &[u8; 4] = b"SKT\x02";

/// The size of the header before the record blob.
pub(crate) const HEADER_LEN: usize = 4 + 8 + 16;

/// Memcached reads relative exptimes above 30 days as absolute Unix times.
pub(crate) const RELATIVE_EXPTIME_LIMIT: u64 = 60 * 60 * 24 * 30;

/// The exptime for an item that must live `remaining_ms` more milliseconds,
/// at Unix time `now_secs`.
///
/// Rounded up to whole seconds plus one, because memcached's clock ticks in
/// seconds and may expire an item up to a second early; the store decides
/// expiry itself from the millisecond timestamps in the items, so the native
/// TTL only has to never be *shorter*. Up to 30 days it is relative; beyond,
/// memcached would read the number as an absolute Unix time, so it is sent
/// as one (`now_secs + seconds`), capped at `i32::MAX` (January 2038), the
/// largest exptime memcached parses.
pub(crate) fn exptime(remaining_ms: u64, now_secs: u64) -> i64 {
    let secs = remaining_ms.div_ceil(1000).saturating_add(1);
    if secs <= RELATIVE_EXPTIME_LIMIT {
        secs as i64
    } else {
        now_secs.saturating_add(secs).min(i32::MAX as u64) as i64
    }
}

/// A session's lock, as kept in its item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lock {
    pub(crate) token: LockToken,
    /// Unix milliseconds; never 0 (0 means "no lock" in the item).
    pub(crate) expires_ms: u64,
}

impl Lock {
    /// Whether the lock is in force at `now_ms`.
    pub(crate) fn holds(&self, now_ms: u64) -> bool {
        self.expires_ms > now_ms
    }

    /// Whether `token` owns the lock and it is in force at `now_ms`.
    pub(crate) fn held_by(&self, token: &LockToken, now_ms: u64) -> bool {
        self.token == *token && self.holds(now_ms)
    }
}

/// A decoded session item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    pub(crate) lock: Option<Lock>,
    pub(crate) record: Record,
}

/// What an item under a session key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stored {
    /// A session.
    Session(Item),
    /// A copy written by `change_id` under the new id, from the old key
    /// whose part is `from`; the session only if the move committed.
    Pending { item: Item, from: String },
    /// A tombstone: the session moved to the key whose part is `to`.
    Moved { to: String },
}

/// Encodes a session item.
pub(crate) fn encode_item(lock: Option<&Lock>, record: &Record) -> Vec<u8> {
    encode_with(MAGIC, lock, None, record)
}

/// Encodes the pending copy of a session moved from the key part `from`
/// (at most 250 bytes: a memcached key).
pub(crate) fn encode_pending(lock: Option<&Lock>, record: &Record, from: &str) -> Vec<u8> {
    encode_with(PENDING_MAGIC, lock, Some(from), record)
}

/// Encodes the tombstone of a session moved to the key part `to`.
pub(crate) fn encode_moved(to: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + to.len());
    out.extend_from_slice(MOVED_MAGIC);
    out.extend_from_slice(to.as_bytes());
    out
}

fn encode_with(
    magic: &[u8; 4],
    lock: Option<&Lock>,
    from: Option<&str>,
    record: &Record,
) -> Vec<u8> {
    let blob = encode_record(record);
    let from_len = from.map_or(0, |f| 1 + f.len());
    let mut out = Vec::with_capacity(HEADER_LEN + from_len + blob.len());
    out.extend_from_slice(magic);
    match lock {
        // A lock always expires after the epoch; clamp so that it can never
        // be written as "no lock".
        Some(lock) => {
            out.extend_from_slice(&lock.expires_ms.max(1).to_le_bytes());
            out.extend_from_slice(lock.token.as_bytes());
        }
        None => out.extend_from_slice(&[0u8; 24]),
    }
    if let Some(from) = from {
        let len = u8::try_from(from.len()).expect("a key part is at most 250 bytes");
        out.push(len);
        out.extend_from_slice(from.as_bytes());
    }
    out.extend_from_slice(&blob);
    out
}

/// Decodes a session item.
#[cfg(test)]
pub(crate) fn decode_item(bytes: &[u8]) -> Result<Item, Error> {
    match decode(bytes)? {
        Stored::Session(item) => Ok(item),
        _ => Err(not_ours()),
    }
}

fn not_ours() -> Error {
    Error::codec("not a sessionkit memcached session item (format 2)", None)
}

/// Decodes what a session key holds.
pub(crate) fn decode(bytes: &[u8]) -> Result<Stored, Error> {
    let magic = bytes.get(..4).ok_or_else(not_ours)?;
    if magic == MOVED_MAGIC {
        let to = std::str::from_utf8(&bytes[4..]).map_err(|_| not_ours())?;
        return Ok(Stored::Moved { to: to.to_owned() });
    }
    if bytes.len() < HEADER_LEN || (magic != MAGIC && magic != PENDING_MAGIC) {
        return Err(not_ours());
    }
    let expires_ms = u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes"));
    let token: [u8; 16] = bytes[12..28].try_into().expect("16 bytes");
    let lock = (expires_ms != 0).then(|| Lock {
        token: LockToken::from_bytes(token),
        expires_ms,
    });
    if magic == MAGIC {
        let record = decode_record(&bytes[HEADER_LEN..])?;
        return Ok(Stored::Session(Item { lock, record }));
    }
    let len = usize::from(*bytes.get(HEADER_LEN).ok_or_else(not_ours)?);
    let from = bytes
        .get(HEADER_LEN + 1..HEADER_LEN + 1 + len)
        .and_then(|f| std::str::from_utf8(f).ok())
        .ok_or_else(not_ours)?;
    let record = decode_record(&bytes[HEADER_LEN + 1 + len..])?;
    Ok(Stored::Pending {
        item: Item { lock, record },
        from: from.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use sessionkit_core::record::{Entries, Meta};

    fn record() -> Record {
        Record {
            entries: [("k", b"v".to_vec())].into_iter().collect::<Entries>(),
            meta: Meta::new(5, Duration::from_secs(9), None),
        }
    }

    #[test]
    fn exptime_rounds_up_and_adds_a_second() {
        assert_eq!(exptime(0, 1_700_000_000), 1);
        assert_eq!(exptime(1, 1_700_000_000), 2);
        assert_eq!(exptime(1000, 1_700_000_000), 2);
        assert_eq!(exptime(1001, 1_700_000_000), 3);
        assert_eq!(exptime(7_200_000, 1_700_000_000), 7201);
    }

    #[test]
    fn exptime_beyond_thirty_days_is_absolute() {
        let now = 1_700_000_000;
        // Exactly 30 days (after the +1 s margin) is still relative.
        assert_eq!(exptime((RELATIVE_EXPTIME_LIMIT - 1) * 1000, now), 2_592_000);
        // One second more would be read as a date in 1970: send an absolute time.
        assert_eq!(
            exptime(RELATIVE_EXPTIME_LIMIT * 1000, now),
            (now + RELATIVE_EXPTIME_LIMIT + 1) as i64
        );
        let sixty_days = 60 * 24 * 3600 * 1000;
        assert_eq!(exptime(sixty_days, now), (now + 5_184_001) as i64);
        assert_eq!(exptime(u64::MAX, now), i32::MAX as i64);
    }

    #[test]
    fn items_round_trip_with_and_without_a_lock() {
        let unlocked = encode_item(None, &record());
        assert_eq!(
            decode_item(&unlocked).unwrap(),
            Item {
                lock: None,
                record: record()
            }
        );
        let lock = Lock {
            token: LockToken::generate(),
            expires_ms: 1_700_000_000_123,
        };
        let locked = encode_item(Some(&lock), &record());
        assert_eq!(
            decode_item(&locked).unwrap(),
            Item {
                lock: Some(lock),
                record: record()
            }
        );
        // Taking or releasing the lock never changes the item's size.
        assert_eq!(locked.len(), unlocked.len());
        assert_eq!(locked.len(), HEADER_LEN + encode_record(&record()).len());
    }

    #[test]
    fn a_lock_at_the_epoch_is_still_a_lock() {
        let lock = Lock {
            token: LockToken::generate(),
            expires_ms: 0,
        };
        let item = decode_item(&encode_item(Some(&lock), &record())).unwrap();
        assert_eq!(item.lock.map(|l| l.token), Some(lock.token));
    }

    #[test]
    fn garbage_and_old_formats_are_refused() {
        let bytes = encode_item(None, &record());
        for len in 0..bytes.len() {
            assert!(decode_item(&bytes[..len]).is_err(), "len {len}");
        }
        let mut v1 = bytes.clone();
        v1[3] = 1;
        assert!(decode_item(&v1).is_err(), "format 1 items are not read");
        assert!(decode_item(b"SKL\x01xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx").is_err());
    }

    #[test]
    fn pending_copies_and_tombstones_round_trip_and_are_no_sessions() {
        let lock = Lock {
            token: LockToken::generate(),
            expires_ms: 1_700_000_000_123,
        };
        let from = "ab".repeat(32);
        for lock in [None, Some(lock)] {
            let pending = encode_pending(lock.as_ref(), &record(), &from);
            assert_eq!(
                decode(&pending).unwrap(),
                Stored::Pending {
                    item: Item {
                        lock,
                        record: record()
                    },
                    from: from.clone()
                }
            );
            assert!(
                decode_item(&pending).is_err(),
                "a pending copy is no session"
            );
            for len in 0..pending.len() {
                assert!(decode(&pending[..len]).is_err(), "len {len}");
            }
        }
        let moved = encode_moved(&from);
        assert_eq!(decode(&moved).unwrap(), Stored::Moved { to: from });
        assert!(decode_item(&moved).is_err(), "a tombstone is no session");
        assert!(decode(b"SKT\x02\xff").is_err(), "a key part is text");
    }

    #[test]
    fn a_lock_holds_only_until_it_expires_and_only_for_its_token() {
        let token = LockToken::generate();
        let lock = Lock {
            token,
            expires_ms: 1_000,
        };
        assert!(lock.holds(999));
        assert!(!lock.holds(1_000), "expired");
        assert!(lock.held_by(&token, 999));
        assert!(!lock.held_by(&token, 1_000));
        assert!(!lock.held_by(&LockToken::generate(), 999));
    }
}
