//! What the store writes into memcached: session items, lock items and their exptimes.
//!
//! A **session item** is `b"SKM\x01"`, the session's *birth* stamp (`u64`
//! little-endian, microseconds since the Unix epoch, set when the record is
//! stored under this key by `create` or `change_id`), then the record in
//! the [core blob format](sessionkit_core::codec::encode_record).
//!
//! A **lock item** is `b"SKL\x01"`, the 16 token bytes, the lock's expiry
//! (`u64` LE, Unix milliseconds) and the time it was taken (`u64` LE, Unix
//! microseconds).
//!
//! A lock counts only for the session it was taken on: one taken before the
//! session's birth belongs to an earlier session under the same key (one
//! that expired or was destroyed) and is void. That is how "a lock goes
//! with its session" holds although memcached keeps the two in separate
//! items with separate TTLs.

use std::time::{SystemTime, UNIX_EPOCH};

use sessionkit_core::codec::{decode_record, encode_record};
use sessionkit_core::record::Record;
use sessionkit_core::{Error, LockToken};

const DATA_MAGIC: &[u8; 4] = b"SKM\x01";
const LOCK_MAGIC: &[u8; 4] = b"SKL\x01";
const LOCK_LEN: usize = 4 + 16 + 8 + 8;

/// Memcached reads relative exptimes above 30 days as absolute Unix times.
pub(crate) const RELATIVE_EXPTIME_LIMIT: u64 = 60 * 60 * 24 * 30;

/// Microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

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

/// Unix seconds now.
pub(crate) fn now_secs() -> u64 {
    now_us() / 1_000_000
}

/// Encodes a session item.
pub(crate) fn encode_session(born_us: u64, record: &Record) -> Vec<u8> {
    let blob = encode_record(record);
    let mut out = Vec::with_capacity(12 + blob.len());
    out.extend_from_slice(DATA_MAGIC);
    out.extend_from_slice(&born_us.to_le_bytes());
    out.extend_from_slice(&blob);
    out
}

/// Decodes a session item: its birth stamp and record.
pub(crate) fn decode_session(bytes: &[u8]) -> Result<(u64, Record), Error> {
    if bytes.len() < 12 || &bytes[..4] != DATA_MAGIC {
        return Err(Error::codec(
            "not a sessionkit memcached session item",
            None,
        ));
    }
    let born = u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes"));
    Ok((born, decode_record(&bytes[12..])?))
}

/// A lock item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LockItem {
    pub(crate) token: LockToken,
    pub(crate) expires_ms: u64,
    pub(crate) taken_us: u64,
}

impl LockItem {
    pub(crate) fn encode(&self) -> [u8; LOCK_LEN] {
        let mut out = [0u8; LOCK_LEN];
        out[..4].copy_from_slice(LOCK_MAGIC);
        out[4..20].copy_from_slice(self.token.as_bytes());
        out[20..28].copy_from_slice(&self.expires_ms.to_le_bytes());
        out[28..36].copy_from_slice(&self.taken_us.to_le_bytes());
        out
    }

    /// Decodes a lock item; anything else is `None` (a void lock).
    pub(crate) fn decode(bytes: &[u8]) -> Option<LockItem> {
        if bytes.len() != LOCK_LEN || &bytes[..4] != LOCK_MAGIC {
            return None;
        }
        let token: [u8; 16] = bytes[4..20].try_into().ok()?;
        Some(LockItem {
            token: LockToken::from_bytes(token),
            expires_ms: u64::from_le_bytes(bytes[20..28].try_into().ok()?),
            taken_us: u64::from_le_bytes(bytes[28..36].try_into().ok()?),
        })
    }

    /// Whether the lock is in force at `now_ms` for the session born at
    /// `born_us`.
    pub(crate) fn holds(&self, now_ms: u64, born_us: u64) -> bool {
        self.expires_ms > now_ms && self.taken_us >= born_us
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use sessionkit_core::record::{Entries, Meta};

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
    fn session_items_round_trip_and_reject_garbage() {
        let record = Record {
            entries: [("k", b"v".to_vec())].into_iter().collect::<Entries>(),
            meta: Meta::new(5, Duration::from_secs(9), None),
        };
        let bytes = encode_session(42, &record);
        assert_eq!(decode_session(&bytes).unwrap(), (42, record));
        for len in 0..bytes.len() {
            assert!(decode_session(&bytes[..len]).is_err(), "len {len}");
        }
        assert!(decode_session(b"SKL\x01xxxxxxxxxxxxxxxxxxx").is_err());
    }

    #[test]
    fn lock_items_round_trip_and_reject_garbage() {
        let lock = LockItem {
            token: LockToken::generate(),
            expires_ms: 10,
            taken_us: 20,
        };
        let bytes = lock.encode();
        assert_eq!(LockItem::decode(&bytes), Some(lock));
        for len in 0..bytes.len() {
            assert_eq!(LockItem::decode(&bytes[..len]), None);
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(LockItem::decode(&longer), None);
    }

    #[test]
    fn a_lock_holds_only_unexpired_and_for_its_own_session() {
        let lock = LockItem {
            token: LockToken::generate(),
            expires_ms: 1_000,
            taken_us: 500,
        };
        assert!(lock.holds(999, 500));
        assert!(lock.holds(999, 400));
        assert!(!lock.holds(1_000, 400), "expired");
        assert!(!lock.holds(999, 501), "taken before the session was born");
    }
}
