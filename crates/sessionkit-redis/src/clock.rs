//! Redis's clock as this process sees it: an offset learned from `TIME` and from touch replies.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use redis::Value;

/// Means "no offset measured yet".
const UNKNOWN: i64 = i64::MIN;

/// An estimate of Redis's clock, in Unix milliseconds, for deciding in this
/// process whether a touch is due, without asking Redis.
///
/// Holds the offset between Redis's clock and a local *monotonic* clock
/// (milliseconds since this value was made), so that a step of the app
/// server's wall clock (an NTP correction, a manual change) does not move
/// the estimate. The offset is measured as the midpoint of a round trip
/// that returned Redis's time: the estimate is off by at most half that
/// round trip, plus whatever Redis's clock did since the last measurement.
/// The estimate only decides whether to *ask* Redis for a touch; Redis
/// decides the touch itself by its own clock.
#[derive(Debug)]
pub(crate) struct RedisClock {
    start: Instant,
    /// Redis Unix ms minus ms since `start`; [`UNKNOWN`] before the first
    /// measurement.
    offset: AtomicI64,
}

impl RedisClock {
    pub(crate) fn new() -> Self {
        RedisClock {
            start: Instant::now(),
            offset: AtomicI64::new(UNKNOWN),
        }
    }

    /// Milliseconds since `start` at `at`.
    fn local_ms(&self, at: Instant) -> i64 {
        i64::try_from(at.saturating_duration_since(self.start).as_millis()).unwrap_or(i64::MAX)
    }

    /// Redis's clock now, estimated; `None` before the first measurement.
    pub(crate) fn now(&self) -> Option<u64> {
        let offset = self.offset.load(Ordering::Relaxed);
        if offset == UNKNOWN {
            return None;
        }
        u64::try_from(self.local_ms(Instant::now()).saturating_add(offset)).ok()
    }

    /// Learns the offset from Redis's time `redis_ms`, read by a command
    /// sent at `sent` whose reply came at `received`: Redis read its clock
    /// somewhere in between, the midpoint is the best guess.
    pub(crate) fn observe(&self, redis_ms: u64, sent: Instant, received: Instant) {
        let half = received.saturating_duration_since(sent) / 2;
        let local = self.local_ms(sent + half);
        let Ok(redis_ms) = i64::try_from(redis_ms) else {
            return;
        };
        self.offset
            .store(redis_ms.saturating_sub(local), Ordering::Relaxed);
    }
}

/// Redis's time in Unix milliseconds from a `TIME` reply (seconds and
/// microseconds, as strings).
pub(crate) fn time_reply_ms(value: &Value) -> Option<u64> {
    let Value::Array(parts) = value else {
        return None;
    };
    let [secs, micros] = &parts[..] else {
        return None;
    };
    let number = |v: &Value| -> Option<u64> {
        match v {
            Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            Value::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        }
    };
    number(secs)?
        .checked_mul(1000)?
        .checked_add(number(micros)? / 1000)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn unknown_until_observed() {
        let clock = RedisClock::new();
        assert_eq!(clock.now(), None);
        let sent = Instant::now();
        clock.observe(1_000_000, sent, sent);
        let now = clock.now().unwrap();
        // The estimate moves with the local monotonic clock from there.
        assert!((1_000_000..1_000_000 + 1_000).contains(&now), "{now}");
    }

    #[test]
    fn the_midpoint_of_the_round_trip_is_taken() {
        let clock = RedisClock::new();
        let sent = clock.start + Duration::from_millis(100);
        let received = sent + Duration::from_millis(40);
        clock.observe(5_000, sent, received);
        // Redis read 5000 at local 120 ms: offset 4880.
        assert_eq!(clock.offset.load(Ordering::Relaxed), 4_880);
        // A later observation replaces it.
        clock.observe(9_000, received, received);
        assert_eq!(clock.offset.load(Ordering::Relaxed), 9_000 - 140);
    }

    #[test]
    fn time_replies_are_decoded() {
        let reply = Value::Array(vec![
            Value::BulkString(b"1700000000".to_vec()),
            Value::BulkString(b"123456".to_vec()),
        ]);
        assert_eq!(time_reply_ms(&reply), Some(1_700_000_000_123));
        for bad in [
            Value::Nil,
            Value::Array(vec![Value::BulkString(b"1".to_vec())]),
            Value::Array(vec![
                Value::BulkString(b"x".to_vec()),
                Value::BulkString(b"1".to_vec()),
            ]),
        ] {
            assert_eq!(time_reply_ms(&bad), None, "{bad:?}");
        }
    }
}
