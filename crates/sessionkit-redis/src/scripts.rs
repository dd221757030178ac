//! The Lua scripts: one per store operation that must read and write atomically, each one round trip.
//!
//! Each script is built from only the pieces of the prelude it uses (the
//! `lua_*!` macros below): Redis runs a script's whole text on every call,
//! so every helper defined but not needed would cost a closure per call.
//! Times come from `redis.call('TIME')`, Redis's own clock, so that app
//! servers with drifting clocks agree on expiry. Numbers are Lua doubles,
//! exact up to 2^53: computed expiries are capped at `MAX_EXPIRY`, the
//! latest time the metadata's 11 hex digits hold (2^44 - 1 ms, in the year
//! 2527), and lock TTLs at 2^52 ms before they get here (see [`MAX_MS`]),
//! so every time a script writes is exact. The metadata's idle lifetime and
//! deadline are kept as the hex digits they were stored as and only read
//! as numbers to compute an expiry, so they stay exact too.
//!
//! Replies are a [`Status`] word, or a small array that starts with one;
//! the callers in `store.rs` decode them. The words are spelled once in
//! each language, in [`Status::name`] and in the scripts' text; a word the
//! two spell differently is an "unexpected reply" error, which every
//! conformance test run on Redis would show.

use std::sync::LazyLock;

use redis::{Script, Value};

/// The largest idle lifetime or lock TTL, in milliseconds, that the scripts
/// are given (about 142,000 years): keeps `now + ttl` exact in Lua's
/// doubles, and within what Redis accepts for `PX`.
pub(crate) const MAX_MS: u64 = 1 << 52;

/// `now`: Redis's clock in Unix milliseconds, one clock for every app
/// server.
macro_rules! lua_now {
    () => {
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"
    };
}

/// What a script answers, first in its reply: one word, as the scripts
/// spell it ([`Status::name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// No live session under the key (none, or expired).
    Absent,
    /// Data under the key that is not a session of this layout.
    Foreign,
    /// A live session that the script did not change.
    Live,
    /// A live session whose expiry the script refreshed.
    Touched,
    /// A new session stored.
    Created,
    /// A new session stored over foreign data, which it replaced.
    Replaced,
    /// A live session under the new id: nothing written.
    IdTaken,
    /// The delta written.
    Applied,
    /// The fence token does not own the lock: nothing written.
    LockLost,
    /// The session moved to its new id.
    Changed,
    /// Another owner holds the lock.
    Held,
    /// The lock taken.
    Acquired,
    /// The lock renewed.
    Renewed,
    /// The token does not own the lock (renew, unlock).
    NotOwner,
    /// The lock released.
    Released,
}

impl Status {
    const ALL: [Status; 15] = [
        Status::Absent,
        Status::Foreign,
        Status::Live,
        Status::Touched,
        Status::Created,
        Status::Replaced,
        Status::IdTaken,
        Status::Applied,
        Status::LockLost,
        Status::Changed,
        Status::Held,
        Status::Acquired,
        Status::Renewed,
        Status::NotOwner,
        Status::Released,
    ];

    /// The word the scripts answer.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Status::Absent => "absent",
            Status::Foreign => "foreign",
            Status::Live => "live",
            Status::Touched => "touched",
            Status::Created => "created",
            Status::Replaced => "replaced",
            Status::IdTaken => "id_taken",
            Status::Applied => "applied",
            Status::LockLost => "lock_lost",
            Status::Changed => "changed",
            Status::Held => "held",
            Status::Acquired => "acquired",
            Status::Renewed => "renewed",
            Status::NotOwner => "not_owner",
            Status::Released => "released",
        }
    }

    /// The status a reply word names; `None` for anything else.
    pub(crate) fn of(value: Option<&Value>) -> Option<Status> {
        let word: &[u8] = match value? {
            Value::BulkString(bytes) => bytes,
            Value::SimpleString(text) => text.as_bytes(),
            _ => return None,
        };
        Status::ALL
            .into_iter()
            .find(|s| s.name().as_bytes() == word)
    }
}

/// What `APPLY` does with the lock after a fenced write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AfterWrite {
    /// Release it (the end of a locked request).
    Release,
    /// Keep it.
    Keep,
    /// Keep it and answer the whole session (`apply_and_read`).
    KeepAndRead,
}

impl AfterWrite {
    /// The argument the script reads.
    pub(crate) fn arg(self) -> &'static str {
        match self {
            AfterWrite::Release => "release",
            AfterWrite::Keep => "keep",
            AfterWrite::KeepAndRead => "read",
        }
    }
}

/// `meta(key, now)`: the live session at `key`, from its metadata alone,
/// as a status and the metadata's parts.
macro_rules! lua_meta {
    () => {
        r"
-- The session at `key`: a string, <metadata>|<entries>, the metadata
-- <created><expires><ttl>:<deadline> in lowercase hex, created and expires
-- exactly 11 digits each, ttl and deadline 1 to 16 (what a u64 holds, as
-- reply::parse_meta reads them); ttl is prefixed with `r` when the session
-- is remembered (its lifetime is its own: Meta::remembered). The entries
-- (a MessagePack map) are not decoded here: most scripts only move them.
-- Returns 'live', created, expires (a number), ttl, deadline (the other
-- three as their hex digits), the whole metadata and the entries; or just
-- why not: 'expired', 'foreign' (not a string: an error reply; no
-- metadata, or one of another grammar), 'missing' (no key).
-- Several values rather than a table: a table per call costs Redis
-- measurably more.
local function meta(key, now)
  local v = redis.pcall('GET', key)
  if v == false then return 'missing' end
  if type(v) ~= 'string' then return 'foreign' end
  -- One match splits the whole value (the metadata never holds a `|`).
  local m, c, e, l, d, entries = string.match(v, '^(([0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f])([0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f])(r?[0-9a-f]+):([0-9a-f]+))|(.*)$')
  if not m or #l > 16 + (string.byte(l) == 114 and 1 or 0) or #d > 16 then return 'foreign' end
  e = tonumber(e, 16)
  -- Native expiry has removed such a key already (see `write`); this
  -- covers a key whose TTL someone removed.
  if now >= e then return 'expired' end
  return 'live', c, e, l, d, m, entries
end
"
    };
}

/// `absent(why)`: what a reply says of a key `meta` found no session at.
macro_rules! lua_absent {
    () => {
        r"
-- Why a key has no live session, as a reply says it: 'absent' (none, or
-- expired) or 'foreign'.
local function absent(why)
  if why == 'foreign' then return 'foreign' end
  return 'absent'
end
"
    };
}

/// `write(key, meta, entries, at)`: stores a session with its native
/// expiry; `fields(entries)` and `pack(t)` decode and encode the entries.
macro_rules! lua_write {
    () => {
        r"
-- The latest time the metadata holds (11 hex digits, in the year 2527);
-- computed expiries stop there.
local MAX_EXPIRY = 17592186044415

-- Stores the session and returns it. Redis deletes a key once its clock is
-- past the expiry time; the contract says expired once the clock reaches
-- `expires`: hence one millisecond less (an expiry already past deletes
-- the key at once, as a session born expired must go).
local function write(key, m, entries, at)
  local v = m .. '|' .. entries
  redis.call('SET', key, v, 'PXAT', string.format('%.0f', math.max(at - 1, 1)))
  return v
end

-- The entries as a Lua table (key -> value, both strings); nil if they do
-- not decode (not written by this crate), which the callers treat as
-- foreign data.
local function fields(entries)
  local ok, t = pcall(cmsgpack.unpack, entries)
  if ok and type(t) == 'table' then return t end
  return nil
end
"
    };
}

/// `ttl_ms(ttl)`, `refreshed(now, ttl, deadline)` and `field(created, ttl,
/// deadline, at)`: the idle lifetime, the refreshed expiry and the metadata
/// that holds it. `ttl` and `deadline` are the metadata's parts.
macro_rules! lua_refresh {
    () => {
        r"
-- The idle lifetime in ms of the metadata's ttl part (`r` marks a
-- remembered session and is kept wherever the part is written back).
local function ttl_ms(ttl)
  if string.byte(ttl) == 114 then ttl = string.sub(ttl, 2) end
  return tonumber(ttl, 16)
end

-- Meta::refresh: now + ttl, never past the absolute deadline (0 = none).
local function refreshed(now, ttl, deadline)
  local at = now + ttl_ms(ttl)
  deadline = tonumber(deadline, 16)
  if deadline > 0 and deadline < at then at = deadline end
  return math.min(at, MAX_EXPIRY)
end

-- reply::format_meta. %011x is exact here: Redis's Lua formats %x through
-- a C long, 64 bits, and `at` is an integer of at most 44 bits.
local function field(created, ttl, deadline, at)
  return string.format('%s%011x%s:%s', created, at, ttl, deadline)
end

-- A lock never outlives its session: a new session under the same id is a
-- plain `SET … NX` of the data key, which tests no lock. So a lock expires
-- at the latest when its session does (`at`, as `write` sets it).
local function lock_until(now, ttl, at)
  return string.format('%.0f', math.max(math.min(now + ttl, at - 1), 1))
end
"
    };
}

/// What every script on a live session starts with: the clock (`now`),
/// its metadata (`meta`), writing it (`write`, `fields`) and refreshing
/// its expiry (`ttl_ms`, `refreshed`, `field`, `lock_until`).
macro_rules! lua_live {
    () => {
        concat!(lua_now!(), lua_meta!(), lua_write!(), lua_refresh!())
    };
}

/// `touch` (the second round trip of a load, only when a touch is due):
/// KEYS data; ARGV touch permille.
///
/// Reply: `{absent|foreign, now}`, or `{live|touched, now, meta}` with the
/// metadata as it is now (`touched`: the expiry moved).
pub(crate) static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_live!(),
        lua_absent!(),
        r"
local live, c, e, l, d, m, entries = meta(KEYS[1], now)
if live ~= 'live' then return { absent(live), now } end
-- Touch::is_due by Redis's clock: the caller's guess used an estimate.
local permille = tonumber(ARGV[1])
if permille < 1000 and (e - now) * 1000 >= ttl_ms(l) * permille then
  return { 'live', now, m }
end
local at = refreshed(now, l, d)
-- Never earlier (a clock that stepped back): a lock must not outlive the
-- session.
if at <= e then return { 'live', now, m } end
local f = field(c, l, d, at)
write(KEYS[1], f, entries, at)
return { 'touched', now, f }
"
    ))
});

/// `create` when the id is not free: KEYS data, lock; ARGV the session as
/// stored ([`crate::reply::encode_session`]), its native expiry (`expires
/// - 1`, as `write` computes it, formatted by the caller).
///
/// A new session is first a plain `SET … NX PXAT` of the data key (see
/// `RedisStore::create`): one command, and nothing else under a fresh
/// random id. Only when that finds the key taken does this script run: a
/// live session is never touched (`id_taken`), and whatever else is there
/// (an expired record whose key lost its TTL, foreign data) is deleted,
/// with any lock under the id, before the new session is written, so none
/// of it is adopted.
///
/// Reply: `id_taken`, `created`, or `replaced` (created over foreign data).
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_now!(),
        lua_meta!(),
        r"
local live = meta(KEYS[1], now)
if live == 'live' then return 'id_taken' end
redis.call('DEL', KEYS[1], KEYS[2])
-- Born expired: accepted and gone at once, as the memory store does.
if tonumber(ARGV[2]) >= now then
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
end
if live == 'foreign' then return 'replaced' end
return 'created'
"
    ))
});

/// `apply` and `apply_and_read`: KEYS data, lock; ARGV fence token (`''`:
/// none), what to do with the lock ([`AfterWrite::arg`]: `release`, `keep`,
/// or `read`: keep it and read the session back), `clear` or `merge`, new
/// ttl part as the metadata holds it (`r<hex>`, see `reply::format_ttl`;
/// `''`: keep), a deadline to cap the session's at (hex; `''`: none),
/// number of pairs, the key/value pairs to set, then the keys to delete.
///
/// The entries are decoded (`cmsgpack`), merged and encoded again, in the
/// script: concurrent writes of different keys never lose each other.
///
/// Reply: `{absent|foreign}`, `{lock_lost}`, `{applied, meta}`, or
/// `{applied, meta, session as stored}` after `read` (nil in its place if
/// the refresh expired the session at once).
pub(crate) static APPLY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_live!(),
        lua_absent!(),
        r"
local live, c, e, l, d, m, entries = meta(KEYS[1], now)
if live ~= 'live' then return { absent(live) } end
local t = {}
if ARGV[3] ~= 'clear' then
  t = fields(entries)
  if not t then return { 'foreign' } end
end
if ARGV[1] ~= '' then
  -- pcall: a foreign value under the lock key is no owner, not an error.
  if redis.pcall('GET', KEYS[2]) ~= ARGV[1] then return { 'lock_lost' } end
  if ARGV[2] == 'release' then redis.call('DEL', KEYS[2]) end
end
if ARGV[4] ~= '' then l = ARGV[4] end
-- Meta::cap_deadline: only ever earlier (a deadline of 0 is none).
if ARGV[5] ~= '' then
  local was = tonumber(d, 16)
  if was == 0 or tonumber(ARGV[5], 16) < was then d = ARGV[5] end
end
local at = refreshed(now, l, d)
local f = field(c, l, d, at)
local sets_end = 6 + 2 * tonumber(ARGV[6])
for i = 7, sets_end, 2 do t[ARGV[i]] = ARGV[i + 1] end
for i = sets_end + 1, #ARGV do t[ARGV[i]] = nil end
local v = write(KEYS[1], f, cmsgpack.pack(t), at)
-- An expiry brought forward (a shorter lifetime, a deadline) takes the
-- lock's with it: a lock never outlives its session.
if at < e then
  local left = redis.call('PTTL', KEYS[2])
  if left > 0 and now + left > at - 1 then
    redis.call('PEXPIREAT', KEYS[2], lock_until(now, left, at))
  end
end
if ARGV[2] == 'read' then
  -- A refresh that expired the session at once (an idle lifetime of a
  -- millisecond) left nothing to read back.
  if at - 1 <= now then return { 'applied', f, false } end
  return { 'applied', f, v }
end
return { 'applied', f }
"
    ))
});

/// `change_id` on one server (all four keys in one script): KEYS old data,
/// old lock, new data, new lock, the old data key's moved marker; ARGV
/// fence token (`''`: none), then what to do with an owned session's entry
/// in its owner's index: `index` and the key prefix (move it here: one
/// server, where a script may touch the index's key too), or `reply` and
/// `''` (answer the owner and handle: in a cluster the index lives in
/// another slot, and the caller moves it; until then the marker, alive for
/// ARGV[4] ms, tells a list that the session moved).
///
/// Reply: `{absent}`, `{id_taken}`, `{lock_lost}`, `{changed, meta}`, or
/// `{changed, meta, owner, handle}` (the stored owner and the handle's hex
/// digits) after `reply` for an owned session.
pub(crate) static CHANGE_ID: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_live!(),
        r"
local live, c, e, l, d, m, entries = meta(KEYS[1], now)
if live ~= 'live' then return { 'absent' } end
if meta(KEYS[3], now) == 'live' then return { 'id_taken' } end
if ARGV[1] ~= '' and redis.pcall('GET', KEYS[2]) ~= ARGV[1] then return { 'lock_lost' } end
redis.call('DEL', KEYS[3], KEYS[4])
-- Refreshed, never earlier (a clock that stepped back): the lock keeps its
-- expiry, which must not outlive the session.
local at = math.max(refreshed(now, l, d), e)
local f = field(c, l, d, at)
write(KEYS[3], f, entries, at)
redis.call('DEL', KEYS[1])
if ARGV[1] ~= '' then
  -- RENAME keeps the TTL: the lock moves with its token and its expiry
  -- (the session's expiry only moved later).
  redis.call('RENAME', KEYS[2], KEYS[4])
else
  redis.call('DEL', KEYS[2])
end
-- An owned session's entry in its owner's index follows it (see
-- store/owners.rs for the index).
local t = fields(entries)
local o = t and t['\1owner']
local h = t and t['\1handle']
if not (o and h) then return { 'changed', f } end
h = string.sub(h, 2, -2)
if ARGV[2] == 'reply' then
  -- Until the caller's second step moves the entry, a list that finds no
  -- session under the old key learns from this marker that it moved.
  redis.call('SET', KEYS[5], KEYS[3], 'PX', ARGV[4])
  return { 'changed', f, o, h }
end
local idx = ARGV[3] .. '{o.' .. redis.sha1hex(o) .. '}'
if redis.call('HGET', idx, h) == KEYS[1] then redis.call('HSET', idx, h, KEYS[3]) end
return { 'changed', f }
"
    ))
});

/// `lock`: KEYS data, lock; ARGV token, ttl ms.
///
/// Taking the lock refreshes the idle expiry (a session is not idle while a
/// request holds its lock), and the session returned carries the
/// refreshed metadata. The lock expires at the latest with the session.
///
/// Reply: `{absent|foreign}`, `{held}`, or `{acquired, session as stored}`
/// (nil in its place if the refresh expired the session at once).
pub(crate) static LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_live!(),
        lua_absent!(),
        r"
local live, c, e, l, d, m, entries = meta(KEYS[1], now)
if live ~= 'live' then return { absent(live) } end
-- Refreshed, never earlier (see CHANGE_ID).
local at = math.max(refreshed(now, l, d), e)
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PXAT', lock_until(now, tonumber(ARGV[2]), at)) then
  return { 'held' }
end
if at == e then return { 'acquired', m .. '|' .. entries } end
local v = write(KEYS[1], field(c, l, d, at), entries, at)
-- Expired at once by the refresh (see APPLY): nothing to hand over.
if at - 1 <= now then return { 'acquired', false } end
return { 'acquired', v }
"
    ))
});

/// `renew_lock`: KEYS data, lock; ARGV token, ttl ms. Renewing refreshes
/// the idle expiry too; the lock expires at the latest with the session.
/// Reply: `renewed`, or `not_owner` (also when the session is gone).
pub(crate) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_live!(),
        r"
local live, c, e, l, d, m, entries = meta(KEYS[1], now)
if live ~= 'live' then return 'not_owner' end
if redis.pcall('GET', KEYS[2]) ~= ARGV[1] then return 'not_owner' end
-- Refreshed, never earlier (see CHANGE_ID).
local at = math.max(refreshed(now, l, d), e)
redis.call('PEXPIREAT', KEYS[2], lock_until(now, tonumber(ARGV[2]), at))
if at ~= e then write(KEYS[1], field(c, l, d, at), entries, at) end
return 'renewed'
"
    ))
});

/// `unlock`: KEYS lock; ARGV token. Compare-and-delete. Reply: `released`
/// or `not_owner`.
pub(crate) static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.pcall('GET', KEYS[1]) ~= ARGV[1] then return 'not_owner' end
redis.call('DEL', KEYS[1])
return 'released'
",
    )
});
