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

/// `meta(key, now)`: the live session at `key`, from its metadata field
/// alone, as a status and the field's parts.
macro_rules! lua_meta {
    () => {
        r"
-- The metadata of the session at `key`, from the field `\255`:
-- <created><expires><ttl>:<deadline> in lowercase hex, created and expires
-- exactly 11 digits each, ttl and deadline 1 to 16 (what a u64 holds, as
-- reply::parse_meta reads them); ttl is prefixed with `r` when the session
-- is remembered (its lifetime is its own: Meta::remembered).
-- Returns 'live', created, expires (a number), ttl, deadline (the other
-- three as their hex digits) and the whole field; or just why not:
-- 'expired', 'foreign' (not a hash: an error reply; a field of another
-- grammar), 'missing' (no field: no key, or a hash that is not ours).
-- Several values rather than a table: a table per call costs Redis
-- measurably more.
local function meta(key, now)
  local v = redis.pcall('HGET', key, '\255')
  if v == false then return 'missing' end
  if type(v) ~= 'string' then return 'foreign' end
  local c, e, l, d = string.match(v, '^([0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f])([0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f])(r?[0-9a-f]+):([0-9a-f]+)$')
  if not c or #l > 16 + (string.byte(l) == 114 and 1 or 0) or #d > 16 then return 'foreign' end
  e = tonumber(e, 16)
  -- Native expiry has removed such a key already (see expire_at); this
  -- covers a key whose TTL someone removed.
  if now >= e then return 'expired' end
  return 'live', c, e, l, d, v
end
"
    };
}

/// `absent(key, why)`: tells a missing key from a foreign hash, where that
/// matters (a log line), after `meta` found no session.
macro_rules! lua_absent {
    () => {
        r"
-- Why a key has no live session, as a reply says it: 'absent' (none, or
-- expired) or 'foreign'.
local function absent(key, why)
  if why == 'foreign' then return 'foreign' end
  if why == 'missing' and redis.call('EXISTS', key) == 1 then return 'foreign' end
  return 'absent'
end
"
    };
}

/// `expire_at(key, at)`: sets the native expiry to agree with `expires`.
macro_rules! lua_expire_at {
    () => {
        r"
-- The latest time the metadata holds (11 hex digits, in the year 2527);
-- computed expiries stop there.
local MAX_EXPIRY = 17592186044415

-- Redis deletes a key once its clock is past the expiry time; the contract
-- says expired once the clock reaches `expires`: hence one millisecond
-- less.
local function expire_at(key, at)
  redis.call('PEXPIREAT', key, string.format('%.0f', at - 1))
end
"
    };
}

/// `ttl_ms(ttl)`, `refreshed(now, ttl, deadline)` and `field(created, ttl,
/// deadline, at)`: the idle lifetime, the refreshed expiry and the metadata
/// field that holds it. `ttl` and `deadline` are the field's parts. Needs [`lua_expire_at`]
/// first.
macro_rules! lua_refresh {
    () => {
        r"
-- The idle lifetime in ms of the field's ttl part (`r` marks a remembered
-- session and is kept wherever the part is written back).
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
"
    };
}

/// `refresh(key, now, created, expires, ttl, deadline)`: moves the live
/// session at `key`, whose metadata `meta` returned, to `now + ttl` (capped
/// by its deadline), in the metadata field and the native expiry, as
/// `apply` does; returns the new field, or nil if the expiry did not move
/// (then nothing is written). Needs [`lua_expire_at`] and [`lua_refresh`]
/// first.
macro_rules! lua_refresh_meta {
    () => {
        r"
local function refresh(key, now, c, e, l, d)
  local at = refreshed(now, l, d)
  if at == e then return nil end
  local f = field(c, l, d, at)
  redis.call('HSET', key, '\255', f)
  expire_at(key, at)
  return f
end
"
    };
}

/// `hset(key, meta_field, first, last)`: writes the metadata field and the
/// field/value pairs `ARGV[first..last]`.
macro_rules! lua_hset {
    () => {
        r"
-- One HSET for the metadata and the first pairs (all of them in a small
-- session); then slices, because unpack() is bounded by Lua's C stack.
-- Slices are even, so field/value pairs stay together.
local function hset(key, meta_field, first, last)
  local stop = math.min(first + 199, last)
  redis.call('HSET', key, '\255', meta_field, unpack(ARGV, first, stop))
  first = stop + 1
  while first <= last do
    stop = math.min(first + 199, last)
    redis.call('HSET', key, unpack(ARGV, first, stop))
    first = stop + 1
  end
end
"
    };
}

/// What every script on a live session starts with: the clock (`now`),
/// its metadata (`meta`) and refreshing its expiry (`expire_at`, `ttl_ms`,
/// `refreshed`, `field`).
macro_rules! lua_live {
    () => {
        concat!(lua_now!(), lua_meta!(), lua_expire_at!(), lua_refresh!())
    };
}

/// `touch` (the second round trip of a load, only when a touch is due):
/// KEYS data; ARGV touch permille.
///
/// Reply: `{absent|foreign, now}`, or `{live|touched, now, meta}` with the
/// metadata field as it is now (`touched`: the expiry moved).
pub(crate) static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_live!(),
        lua_absent!(),
        lua_refresh_meta!(),
        r"
local live, c, e, l, d, v = meta(KEYS[1], now)
if live ~= 'live' then return { absent(KEYS[1], live), now } end
-- Touch::is_due by Redis's clock: the caller's guess used an estimate.
local permille = tonumber(ARGV[1])
if permille < 1000 and (e - now) * 1000 >= ttl_ms(l) * permille then
  return { 'live', now, v }
end
local f = refresh(KEYS[1], now, c, e, l, d)
if not f then return { 'live', now, v } end
return { 'touched', now, f }
"
    ))
});

/// `create`: KEYS data, lock; ARGV metadata field, the native expiry
/// (`expires - 1`, as `expire_at` computes it, formatted by the caller),
/// then field/value pairs.
///
/// The usual case — nothing at all under a fresh random id, and a session
/// of at most 100 entries (`#ARGV <= 202`: its one `HSET` takes them all
/// through `unpack`, which the general path's slices keep bounded) — is
/// the script's first statement: `EXISTS` of both keys, one `HSET`,
/// `PEXPIREAT`, and nothing else. No Lua function is defined before it
/// (Redis runs a script's text from the top on every call, so a helper
/// defined above the fast path costs every new session a closure), no
/// number is parsed or formatted, no clock is read: an expiry already past
/// makes `PEXPIREAT` delete the key at once, which is what a session born
/// expired must come to. What Redis spends on a new session drops by about
/// a sixth; the script call itself is most of what is left (see the crate
/// docs, "Cost", for the options measured).
///
/// Only when something is under the id — a live session (`id_taken`), the
/// leftovers of an expired one, foreign data, a lock — or the session is
/// larger does the script go on, define its helpers, read the clock and
/// the metadata, and decide as before: a live session is never touched, and
/// whatever else is there is deleted before the new session is written, so
/// none of it is adopted.
///
/// Reply: `id_taken`, `created`, or `replaced` (created over foreign data).
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        r"
local free = redis.call('EXISTS', KEYS[1], KEYS[2]) == 0
if free and #ARGV <= 202 then
  redis.call('HSET', KEYS[1], '\255', ARGV[1], unpack(ARGV, 3))
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
  return 'created'
end
",
        lua_expire_at!(),
        lua_hset!(),
        r"
local at = tonumber(ARGV[2]) + 1
if free then
  if at > 1 then
    hset(KEYS[1], ARGV[1], 3, #ARGV)
    expire_at(KEYS[1], at)
  end
  return 'created'
end
",
        lua_now!(),
        lua_meta!(),
        r"
local live = meta(KEYS[1], now)
if live == 'live' then return 'id_taken' end
-- What is left under a free id (an expired or corrupt record, the lock of
-- an expired session) must not leak into the new session. The data key
-- alone first: whether it existed tells a foreign hash from no key.
local existed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
-- Born expired: accepted and gone at once, as the memory store does.
if at > now then
  hset(KEYS[1], ARGV[1], 3, #ARGV)
  expire_at(KEYS[1], at)
end
if live == 'foreign' or (live == 'missing' and existed == 1) then return 'replaced' end
return 'created'
"
    ))
});

/// `apply` and `apply_and_read`: KEYS data, lock; ARGV fence token (`''`:
/// none), what to do with the lock ([`AfterWrite::arg`]: `release`, `keep`,
/// or `read`: keep it and read the session back), `clear` or `merge`, new
/// ttl part as the field holds it (`r<hex>`, see `reply::format_ttl`;
/// `''`: keep), a deadline to cap the session's at (hex; `''`: none),
/// number of pairs, the field/value pairs to set, then the fields to
/// delete.
///
/// Reply: `{absent|foreign}`, `{lock_lost}`, `{applied, meta}`, or
/// `{applied, meta, HGETALL}` after `read`.
pub(crate) static APPLY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_live!(),
        lua_absent!(),
        lua_hset!(),
        r"
local live, c, e, l, d = meta(KEYS[1], now)
if live ~= 'live' then return { absent(KEYS[1], live) } end
if ARGV[1] ~= '' then
  -- pcall: a foreign value under the lock key is no owner, not an error.
  if redis.pcall('GET', KEYS[2]) ~= ARGV[1] then return { 'lock_lost' } end
  if ARGV[2] == 'release' then redis.call('DEL', KEYS[2]) end
end
-- A clear drops the hash; the metadata is written again below.
if ARGV[3] == 'clear' then redis.call('DEL', KEYS[1]) end
if ARGV[4] ~= '' then l = ARGV[4] end
-- Meta::cap_deadline: only ever earlier (a deadline of 0 is none).
if ARGV[5] ~= '' then
  local was = tonumber(d, 16)
  if was == 0 or tonumber(ARGV[5], 16) < was then d = ARGV[5] end
end
local at = refreshed(now, l, d)
local f = field(c, l, d, at)
local sets_end = 6 + 2 * tonumber(ARGV[6])
hset(KEYS[1], f, 7, sets_end)
local first = sets_end + 1
while first <= #ARGV do
  local stop = math.min(first + 199, #ARGV)
  redis.call('HDEL', KEYS[1], unpack(ARGV, first, stop))
  first = stop + 1
end
expire_at(KEYS[1], at)
if ARGV[2] == 'read' then return { 'applied', f, redis.call('HGETALL', KEYS[1]) } end
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
        lua_refresh_meta!(),
        r"
local live, c, e, l, d, v = meta(KEYS[1], now)
if live ~= 'live' then return { 'absent' } end
if meta(KEYS[3], now) == 'live' then return { 'id_taken' } end
if ARGV[1] ~= '' and redis.pcall('GET', KEYS[2]) ~= ARGV[1] then return { 'lock_lost' } end
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('RENAME', KEYS[1], KEYS[3])
if ARGV[1] ~= '' then
  -- RENAME keeps the TTL: the lock moves with its token and its expiry.
  redis.call('RENAME', KEYS[2], KEYS[4])
else
  redis.call('DEL', KEYS[2])
end
-- RENAME kept the native expiry, so an expiry that does not move needs no
-- write.
local f = refresh(KEYS[3], now, c, e, l, d) or v
-- An owned session's entry in its owner's index follows it (see
-- store/owners.rs for the index).
local o = redis.call('HMGET', KEYS[3], '\1owner', '\1handle')
if not (o[1] and o[2]) then return { 'changed', f } end
local h = string.sub(o[2], 2, -2)
if ARGV[2] == 'reply' then
  -- Until the caller's second step moves the entry, a list that finds no
  -- session under the old key learns from this marker that it moved.
  redis.call('SET', KEYS[5], KEYS[3], 'PX', ARGV[4])
  return { 'changed', f, o[1], h }
end
local idx = ARGV[3] .. '{o.' .. redis.sha1hex(o[1]) .. '}'
if redis.call('HGET', idx, h) == KEYS[1] then redis.call('HSET', idx, h, KEYS[3]) end
return { 'changed', f }
"
    ))
});

/// `lock`: KEYS data, lock; ARGV token, ttl ms.
///
/// Taking the lock refreshes the idle expiry (a session is not idle while a
/// request holds its lock), before the `HGETALL`, so the record returned
/// carries the refreshed metadata.
///
/// Reply: `{absent|foreign}`, `{held}`, or `{acquired, HGETALL}`.
pub(crate) static LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_live!(),
        lua_absent!(),
        lua_refresh_meta!(),
        r"
local live, c, e, l, d = meta(KEYS[1], now)
if live ~= 'live' then return { absent(KEYS[1], live) } end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return { 'held' } end
refresh(KEYS[1], now, c, e, l, d)
return { 'acquired', redis.call('HGETALL', KEYS[1]) }
"
    ))
});

/// `renew_lock`: KEYS data, lock; ARGV token, ttl ms. Renewing refreshes
/// the idle expiry too. Reply: `renewed`, or `not_owner` (also when the
/// session is gone).
pub(crate) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_live!(),
        lua_refresh_meta!(),
        r"
local live, c, e, l, d = meta(KEYS[1], now)
if live ~= 'live' then return 'not_owner' end
if redis.pcall('GET', KEYS[2]) ~= ARGV[1] then return 'not_owner' end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
refresh(KEYS[1], now, c, e, l, d)
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
