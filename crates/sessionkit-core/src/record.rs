//! What stores keep: a session's entries and its expiry metadata, and the
//! deltas that change them.
//!
//! Values are opaque bytes here (the [codec](crate::codec) turns them into
//! Rust values); stores deal only in bytes and timestamps. All timestamps are
//! milliseconds since the Unix epoch, taken from the store's clock, so that
//! several app servers agree on expiry even when their clocks drift.

use std::num::NonZeroU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod entries;

pub use self::entries::Entries;

/// Milliseconds since the Unix epoch, from the system clock.
///
/// ```
/// let now = sessionkit_core::record::now_ms();
/// assert!(now > 1_600_000_000_000);
/// ```
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A duration in whole milliseconds, saturating at `u64::MAX` (about 584
/// million years) instead of wrapping: the one conversion every store uses
/// for lifetimes and lock TTLs, so that `Duration::MAX` means "as long as
/// the store can keep it", never a short time.
///
/// ```
/// use std::time::Duration;
/// use sessionkit_core::record::duration_ms;
///
/// assert_eq!(duration_ms(Duration::from_secs(2)), 2_000);
/// assert_eq!(duration_ms(Duration::MAX), u64::MAX);
/// ```
pub fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The expiry metadata of a stored session.
///
/// A session expires at `expires`: the last refresh plus its idle lifetime
/// (`ttl`), but never later than its absolute `deadline`, which is fixed at
/// creation. Stores refresh `expires` on every write and, when due, on loads
/// (see [`Touch`]).
///
/// ```
/// use std::time::Duration;
/// use sessionkit_core::record::Meta;
///
/// let meta = Meta::new(1_000, Duration::from_secs(60), Some(Duration::from_secs(90)));
/// assert_eq!(meta.expires(), 61_000);
/// assert_eq!(meta.deadline(), Some(91_000));
///
/// let mut later = meta;
/// later.refresh(50_000);
/// assert_eq!(later.expires(), 91_000); // capped by the absolute deadline
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    created: u64,
    /// The idle lifetime in milliseconds, and in the top bit whether it is
    /// the session's own ([`Meta::remembered`]): one word instead of two
    /// keeps the memory store's idle session small, and lifetimes never come
    /// near 2^63 ms (stores cap them far lower).
    ttl: u64,
    deadline: Option<NonZeroU64>,
    expires: u64,
}

/// The bit of `Meta::ttl` that says "remembered".
const REMEMBERED: u64 = 1 << 63;

impl std::fmt::Debug for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meta")
            .field("created", &self.created)
            .field("ttl", &self.ttl_ms())
            .field("remembered", &self.remembered())
            .field("deadline", &self.deadline())
            .field("expires", &self.expires)
            .finish()
    }
}

impl Meta {
    /// Metadata for a session created at `now` with idle lifetime `ttl` and an
    /// optional absolute lifetime measured from `now`.
    pub fn new(now: u64, ttl: Duration, absolute: Option<Duration>) -> Self {
        let deadline = absolute
            .map(|a| now.saturating_add(duration_ms(a)))
            .and_then(NonZeroU64::new);
        let mut meta = Meta {
            created: now,
            ttl: duration_ms(ttl).min(!REMEMBERED),
            deadline,
            expires: 0,
        };
        meta.refresh(now);
        meta
    }

    /// Rebuilds metadata from stored parts (for store implementations).
    ///
    /// `deadline` of `None` (or `Some(0)`) means no absolute expiry.
    pub fn from_parts(created: u64, ttl_ms: u64, deadline: Option<u64>, expires: u64) -> Self {
        Meta {
            created,
            ttl: ttl_ms.min(!REMEMBERED),
            deadline: deadline.and_then(NonZeroU64::new),
            expires,
        }
    }

    /// The same metadata, marked as [remembered](Meta::remembered) or not
    /// (for store implementations that rebuild it from stored parts).
    ///
    /// ```
    /// use sessionkit_core::record::Meta;
    ///
    /// let meta = Meta::from_parts(0, 60_000, None, 60_000).with_remembered(true);
    /// assert!(meta.remembered());
    /// assert_eq!(meta.ttl_ms(), 60_000);
    /// ```
    pub fn with_remembered(mut self, remembered: bool) -> Self {
        if remembered {
            self.ttl |= REMEMBERED;
        } else {
            self.ttl &= !REMEMBERED;
        }
        self
    }

    /// Whether the session was given an idle lifetime of its own
    /// ([`Delta::set_ttl`], which `Session::set_lifetime` records: "remember
    /// me"). Stores keep this fact with the session, so the HTTP layer knows
    /// on every later request that the session's cookie must persist
    /// (carry `Max-Age`) even where the default is a browser-session cookie,
    /// without inferring it from the lifetime's value.
    pub fn remembered(&self) -> bool {
        self.ttl & REMEMBERED != 0
    }

    /// When the session was created.
    pub fn created(&self) -> u64 {
        self.created
    }

    /// The idle lifetime in milliseconds.
    pub fn ttl_ms(&self) -> u64 {
        self.ttl & !REMEMBERED
    }

    /// The idle lifetime.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms())
    }

    /// The absolute deadline, if the session has one.
    pub fn deadline(&self) -> Option<u64> {
        self.deadline.map(NonZeroU64::get)
    }

    /// When the session expires unless refreshed.
    pub fn expires(&self) -> u64 {
        self.expires
    }

    /// Whether the session has expired at `now`.
    pub fn is_expired(&self, now: u64) -> bool {
        now >= self.expires
    }

    /// Time left before expiry at `now` (zero once expired).
    pub fn remaining(&self, now: u64) -> Duration {
        Duration::from_millis(self.expires.saturating_sub(now))
    }

    /// Sets a new idle lifetime (the per-session override behind
    /// "remember me") and marks the session [remembered](Meta::remembered);
    /// takes effect at the next [`Meta::refresh`].
    pub fn set_ttl(&mut self, ttl_ms: u64) {
        self.ttl = ttl_ms.min(!REMEMBERED) | REMEMBERED;
    }

    /// Returns the session to the default idle lifetime `ttl_ms` and
    /// unmarks it [remembered](Meta::remembered) (the undoing of
    /// [`Meta::set_ttl`]); takes effect at the next [`Meta::refresh`].
    pub fn reset_ttl(&mut self, ttl_ms: u64) {
        self.ttl = ttl_ms.min(!REMEMBERED);
    }

    /// Brings the absolute deadline forward to `at` (Unix ms) if it is
    /// later or absent; never moves it later. Takes effect on the expiry at
    /// the next [`Meta::refresh`]. An `at` of 0 counts as 1 (0 would read
    /// as "no deadline").
    ///
    /// ```
    /// use std::time::Duration;
    /// use sessionkit_core::record::Meta;
    ///
    /// let mut meta = Meta::new(0, Duration::from_secs(100), Some(Duration::from_secs(60)));
    /// meta.cap_deadline(90_000); // later than the deadline: no change
    /// assert_eq!(meta.deadline(), Some(60_000));
    /// meta.cap_deadline(30_000);
    /// meta.refresh(10_000);
    /// assert_eq!((meta.deadline(), meta.expires()), (Some(30_000), 30_000));
    /// ```
    pub fn cap_deadline(&mut self, at: u64) {
        let at = NonZeroU64::new(at).unwrap_or(NonZeroU64::MIN);
        self.deadline = Some(self.deadline.map_or(at, |d| d.min(at)));
    }

    /// Moves the idle expiry to `now + ttl`, capped by the absolute deadline.
    pub fn refresh(&mut self, now: u64) {
        let idle = now.saturating_add(self.ttl_ms());
        self.expires = match self.deadline {
            Some(deadline) => idle.min(deadline.get()),
            None => idle,
        };
    }

    /// Refreshes the expiry if `touch` says it is due; returns whether the
    /// expiry moved.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sessionkit_core::record::{Meta, Touch};
    ///
    /// let mut meta = Meta::new(0, Duration::from_secs(100), None);
    /// let touch = Touch::when_remaining_below(0.5).unwrap();
    /// assert!(!meta.touch_if_due(40_000, touch)); // 60 s of 100 left
    /// assert!(meta.touch_if_due(60_000, touch)); // 40 s of 100 left
    /// assert_eq!(meta.expires(), 160_000);
    /// ```
    pub fn touch_if_due(&mut self, now: u64, touch: Touch) -> bool {
        if !touch.is_due(self, now) {
            return false;
        }
        let before = self.expires;
        self.refresh(now);
        self.expires != before
    }
}

/// When a load should also refresh the idle expiry.
///
/// A load refreshes the expiry only when less than `share` of the idle
/// lifetime remains, so most reads write nothing. The price is that the idle
/// timeout a user sees varies between `(1 - share) × lifetime` and `lifetime`.
///
/// ```
/// use sessionkit_core::record::Touch;
///
/// assert!(Touch::when_remaining_below(0.75).is_some());
/// assert!(Touch::when_remaining_below(0.0).is_none());
/// assert!(Touch::when_remaining_below(1.5).is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touch {
    permille: u16,
}

impl Touch {
    /// Refresh when less than `share` (in `(0, 1]`) of the idle lifetime
    /// remains. `1.0` refreshes on every load.
    pub fn when_remaining_below(share: f64) -> Option<Self> {
        if share > 0.0 && share <= 1.0 {
            Some(Touch {
                permille: (share * 1000.0).round().max(1.0) as u16,
            })
        } else {
            None
        }
    }

    /// Refresh on every load.
    pub fn always() -> Self {
        Touch { permille: 1000 }
    }

    /// The share in thousandths, for stores that compute the rule themselves
    /// (for example in a Lua script).
    pub fn permille(&self) -> u16 {
        self.permille
    }

    /// Whether a session with `meta` is due for a refresh at `now`.
    pub fn is_due(&self, meta: &Meta, now: u64) -> bool {
        if self.permille >= 1000 {
            return true;
        }
        let remaining = meta.expires.saturating_sub(now) as u128;
        remaining * 1000 < meta.ttl_ms() as u128 * self.permille as u128
    }
}

/// A stored session: its entries and expiry metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The session's entries.
    pub entries: Entries,
    /// When the session expires.
    pub meta: Meta,
}

/// A set of changes to a session, as one atomic store operation applies them.
///
/// Only the keys a request changed are listed, so two requests that change
/// different keys of one session both persist. `clear` removes every entry
/// first, then the changes apply; `ttl` sets a new idle lifetime (the
/// per-session override) before the expiry is refreshed.
///
/// ```
/// use sessionkit_core::record::{Delta, Entries};
///
/// let mut delta = Delta::default();
/// delta.set("n", b"1".to_vec());
/// delta.remove("old");
///
/// let mut entries: Entries = [("old", b"x".to_vec())].into_iter().collect();
/// entries.apply(&delta);
/// assert_eq!(entries.keys().collect::<Vec<_>>(), ["n"]);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Delta {
    clear: bool,
    changes: Vec<(String, Option<Vec<u8>>)>,
    ttl: Option<u64>,
    /// Whether `ttl` is the session's own (`set_ttl`) rather than the
    /// default again (`reset_ttl`).
    remembers: bool,
    deadline: Option<u64>,
}

/// Key names and value sizes, never values (see [`Entries`]' `Debug`).
impl std::fmt::Debug for Delta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let changes: Vec<_> = self
            .changes
            .iter()
            .map(|(k, v)| (k, v.as_ref().map(|v| entries::ValueSize(v.len()))))
            .collect();
        f.debug_struct("Delta")
            .field("clear", &self.clear)
            .field("changes", &changes)
            .field("ttl", &self.ttl)
            .field("remembers", &self.remembers)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Delta {
    fn position(&self, key: &str) -> Result<usize, usize> {
        self.changes.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// Records `key = value`.
    pub fn set(&mut self, key: &str, value: Vec<u8>) {
        match self.position(key) {
            Ok(i) => self.changes[i].1 = Some(value),
            Err(i) => self.changes.insert(i, (key.to_owned(), Some(value))),
        }
    }

    /// Records the removal of `key`.
    pub fn remove(&mut self, key: &str) {
        match self.position(key) {
            Ok(i) => self.changes[i].1 = None,
            Err(i) => self.changes.insert(i, (key.to_owned(), None)),
        }
    }

    /// Records the removal of every entry (and forgets earlier changes).
    pub fn clear(&mut self) {
        self.clear = true;
        self.changes.clear();
    }

    /// Records a new idle lifetime for the session, its own from now on
    /// ([`Meta::remembered`]).
    pub fn set_ttl(&mut self, ttl: Duration) {
        self.ttl = Some(duration_ms(ttl));
        self.remembers = true;
    }

    /// Records the return to the default idle lifetime `ttl`: the session
    /// is no longer [remembered](Meta::remembered).
    pub fn reset_ttl(&mut self, ttl: Duration) {
        self.ttl = Some(duration_ms(ttl));
        self.remembers = false;
    }

    /// Records an absolute deadline of `at` (Unix ms) for the session,
    /// applied as [`Meta::cap_deadline`]: it can bring the deadline
    /// forward, never move it later. Of several, the earliest holds.
    pub fn cap_deadline(&mut self, at: u64) {
        let at = at.max(1);
        self.deadline = Some(self.deadline.map_or(at, |d| d.min(at)));
    }

    /// Adds every change of `later` on top of this delta.
    pub fn merge(&mut self, later: &Delta) {
        if later.clear {
            self.clear();
        }
        for (key, change) in &later.changes {
            match change {
                Some(v) => self.set(key, v.clone()),
                None => self.remove(key),
            }
        }
        if later.ttl.is_some() {
            self.ttl = later.ttl;
            self.remembers = later.remembers;
        }
        if let Some(at) = later.deadline {
            self.cap_deadline(at);
        }
    }

    /// Whether every entry is removed before the changes apply.
    pub fn clears(&self) -> bool {
        self.clear
    }

    /// The changed keys in order: `Some(value)` to set, `None` to remove.
    pub fn changes(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> + Clone {
        self.changes.iter().map(|(k, v)| (k.as_str(), v.as_deref()))
    }

    /// The change recorded for `key`: `Some(Some(v))` set, `Some(None)`
    /// removed, `None` unchanged by this delta.
    pub fn change(&self, key: &str) -> Option<Option<&[u8]>> {
        self.position(key)
            .ok()
            .map(|i| self.changes[i].1.as_deref())
    }

    /// The new idle lifetime in milliseconds, if the delta sets one.
    pub fn ttl_ms(&self) -> Option<u64> {
        self.ttl
    }

    /// Whether the session is [remembered](Meta::remembered) after this
    /// delta: `Some(true)` after [`Delta::set_ttl`], `Some(false)` after
    /// [`Delta::reset_ttl`], `None` if the delta sets no lifetime (the
    /// session keeps what it has).
    pub fn remembered(&self) -> Option<bool> {
        self.ttl.map(|_| self.remembers)
    }

    /// The absolute deadline (Unix ms) the delta caps the session's at, if
    /// any (see [`Delta::cap_deadline`]).
    pub fn deadline_cap(&self) -> Option<u64> {
        self.deadline
    }

    /// Whether the delta changes nothing.
    pub fn is_empty(&self) -> bool {
        !self.clear && self.changes.is_empty() && self.ttl.is_none() && self.deadline.is_none()
    }

    /// Applies the delta to a record and refreshes its expiry at `now`.
    pub fn apply_to(&self, record: &mut Record, now: u64) {
        record.entries.apply(self);
        self.apply_to_meta(&mut record.meta);
        record.meta.refresh(now);
    }

    /// Applies the delta's lifetime and deadline to `meta`, without the
    /// refresh (which [`Delta::apply_to`] adds).
    pub fn apply_to_meta(&self, meta: &mut Meta) {
        match (self.ttl, self.remembers) {
            (Some(ttl), true) => meta.set_ttl(ttl),
            (Some(ttl), false) => meta.reset_ttl(ttl),
            (None, _) => {}
        }
        if let Some(at) = self.deadline {
            meta.cap_deadline(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch_is_due_only_below_the_share() {
        let meta = Meta::new(0, Duration::from_secs(100), None);
        let touch = Touch::when_remaining_below(0.25).unwrap();
        assert!(!touch.is_due(&meta, 70_000));
        assert!(touch.is_due(&meta, 80_000));
        assert!(Touch::always().is_due(&meta, 0));
    }

    #[test]
    fn refresh_never_passes_the_deadline() {
        let mut meta = Meta::new(0, Duration::from_secs(10), Some(Duration::from_secs(15)));
        meta.refresh(9_000);
        assert_eq!(meta.expires(), 15_000);
        assert!(meta.is_expired(15_000));
        assert!(!meta.is_expired(14_999));
    }

    #[test]
    fn touch_at_the_deadline_reports_no_move() {
        let mut meta = Meta::new(0, Duration::from_secs(10), Some(Duration::from_secs(10)));
        assert!(!meta.touch_if_due(9_000, Touch::always()));
    }

    #[test]
    fn delta_clear_then_set() {
        let mut entries: Entries = [("a", b"1".to_vec()), ("b", b"2".to_vec())]
            .into_iter()
            .collect();
        let mut delta = Delta::default();
        delta.set("a", b"x".to_vec());
        delta.clear();
        delta.set("c", b"3".to_vec());
        entries.apply(&delta);
        assert_eq!(entries.keys().collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn delta_merge_keeps_the_later_change() {
        let mut a = Delta::default();
        a.set("k", b"1".to_vec());
        a.set("j", b"1".to_vec());
        let mut b = Delta::default();
        b.remove("k");
        b.set_ttl(Duration::from_secs(5));
        a.merge(&b);
        assert_eq!(a.change("k"), Some(None));
        assert_eq!(a.change("j"), Some(Some(&b"1"[..])));
        assert_eq!(a.ttl_ms(), Some(5_000));
    }

    #[test]
    fn reset_ttl_unmarks_remembered_and_merge_keeps_the_later_lifetime() {
        let mut remember = Delta::default();
        remember.set_ttl(Duration::from_secs(100));
        let mut forget = Delta::default();
        forget.reset_ttl(Duration::from_secs(10));
        let mut meta = Meta::new(0, Duration::from_secs(10), None);
        remember.apply_to_meta(&mut meta);
        assert!(meta.remembered());
        forget.apply_to_meta(&mut meta);
        assert!(!meta.remembered());
        assert_eq!(meta.ttl_ms(), 10_000);

        remember.merge(&forget);
        assert_eq!(remember.remembered(), Some(false));
        assert_eq!(remember.ttl_ms(), Some(10_000));
        assert_eq!(Delta::default().remembered(), None);
    }

    #[test]
    fn deadline_caps_only_bring_the_deadline_forward() {
        let mut delta = Delta::default();
        delta.cap_deadline(50_000);
        let mut later = Delta::default();
        later.cap_deadline(80_000);
        delta.merge(&later);
        assert_eq!(delta.deadline_cap(), Some(50_000), "the earliest cap holds");
        assert!(!delta.is_empty());

        let mut record = Record {
            entries: Entries::default(),
            meta: Meta::new(0, Duration::from_secs(100), Some(Duration::from_secs(40))),
        };
        delta.apply_to(&mut record, 10_000);
        assert_eq!(record.meta.deadline(), Some(40_000), "never later");
        let mut none = Record {
            entries: Entries::default(),
            meta: Meta::new(0, Duration::from_secs(100), None),
        };
        delta.apply_to(&mut none, 10_000);
        assert_eq!(none.meta.deadline(), Some(50_000));
        assert_eq!(none.meta.expires(), 50_000);
        let mut zero = Delta::default();
        zero.cap_deadline(0);
        assert_eq!(zero.deadline_cap(), Some(1), "0 would read as no deadline");
    }

    #[test]
    fn apply_to_sets_ttl_and_refreshes() {
        let mut record = Record {
            entries: Entries::default(),
            meta: Meta::new(0, Duration::from_secs(10), None),
        };
        let mut delta = Delta::default();
        delta.set_ttl(Duration::from_secs(100));
        delta.apply_to(&mut record, 5_000);
        assert_eq!(record.meta.expires(), 105_000);
        assert_eq!(record.meta.created(), 0);
    }
}
