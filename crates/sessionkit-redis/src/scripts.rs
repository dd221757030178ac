//! The Lua scripts: one per store operation that must read and write atomically, each one round trip.
//!
//! Each script is built from only the pieces of the prelude it uses (the
//! `lua_*!` macros below): Redis runs a script's whole text on every call,
//! so every helper defined but not needed would cost a closure per call.
//! Times come from `redis.call('TIME')`, Redis's own clock, so that app
//! servers with drifting clocks agree on expiry. Numbers are Lua doubles,
//! exact up to 2^53; idle lifetimes and lock TTLs are capped at 2^52 ms
//! before they get here (see [`MAX_MS`]) and computed expiries at 2^52 ms
//! after the epoch, so every sum stays exact.
//!
//! Replies are small arrays whose first element is a status code; the
//! callers in `store.rs` decode them.

use std::sync::LazyLock;

use redis::Script;

/// The largest idle lifetime or lock TTL, in milliseconds, that the scripts
/// are given (about 142,000 years): keeps every sum exact in Lua's doubles.
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

/// `meta(key, now)`: the live session at `key`, from its metadata field
/// alone.
macro_rules! lua_meta {
    () => {
        r"
-- The metadata of the live session at `key`: the field `\255` of layout 2,
-- '2 <created> <ttl> <deadline> <expires>'. Or nil and why not: 0 gone
-- (expired), -1 corrupt or foreign (not a hash: an error reply; a field
-- that is not layout 2), -2 no field (no key, or a hash that is not ours).
local function meta(key, now)
  local v = redis.pcall('HGET', key, '\255')
  if v == false then return nil, -2 end
  if type(v) ~= 'string' then return nil, -1 end
  local c, l, d, e = string.match(v, '^2 (%d+) (%d+) (%d+) (%d+)$')
  if not c then return nil, -1 end
  e = tonumber(e)
  -- Native expiry has removed such a key already (see expire_at); this
  -- covers a key whose TTL someone removed.
  if now >= e then return nil, 0 end
  return { raw = v, created = c, ttl = l, deadline = d, expires = e }
end
"
    };
}

/// `absent(key, why)`: tells a missing key from a foreign hash, where that
/// matters (a log line), after `meta` found no session.
macro_rules! lua_absent {
    () => {
        r"
-- Why a key has no live session: 0 absent, -1 corrupt or foreign.
local function absent(key, why)
  if why == -2 then
    if redis.call('EXISTS', key) == 1 then return -1 end
    return 0
  end
  return why
end
"
    };
}

/// `expire_at(key, at)`: sets the native expiry to agree with `expires`.
macro_rules! lua_expire_at {
    () => {
        r"
-- Past this, Lua's doubles stop being exact; no session lives that long
-- (it is in the year 144,683).
local MAX_EXPIRY = 4503599627370496

-- Redis deletes a key once its clock is past the expiry time; the contract
-- says expired once the clock reaches `expires`: hence one millisecond
-- less.
local function expire_at(key, at)
  redis.call('PEXPIREAT', key, string.format('%.0f', math.min(at, MAX_EXPIRY) - 1))
end
"
    };
}

/// `refreshed(now, ttl, deadline)` and `field(created, ttl, deadline,
/// at)`: the refreshed expiry and the metadata field that holds it. Needs
/// [`lua_expire_at`] first.
macro_rules! lua_refresh {
    () => {
        r"
-- Meta::refresh: now + ttl, never past the absolute deadline (0 = none).
local function refreshed(now, ttl, deadline)
  local at = now + tonumber(ttl)
  deadline = tonumber(deadline)
  if deadline > 0 and deadline < at then at = deadline end
  return math.min(at, MAX_EXPIRY)
end

local function field(created, ttl, deadline, at)
  return '2 ' .. created .. ' ' .. ttl .. ' ' .. deadline .. ' ' .. string.format('%.0f', at)
end
"
    };
}

/// `refresh(key, m, now)`: moves the live session `m` at `key` to `now +
/// ttl` (capped by its deadline), in the metadata field and the native
/// expiry, as `apply` does; returns the new field, or nil if the expiry did
/// not move (then nothing is written). Needs [`lua_expire_at`] and
/// [`lua_refresh`] first.
macro_rules! lua_refresh_meta {
    () => {
        r"
local function refresh(key, m, now)
  local at = refreshed(now, m.ttl, m.deadline)
  if at == m.expires then return nil end
  local f = field(m.created, m.ttl, m.deadline, at)
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

/// `touch` (the second round trip of a load, only when a touch is due):
/// KEYS data; ARGV touch permille.
///
/// Reply: `{0, now}` absent, `{-1, now}` corrupt, `{1, now, touched,
/// meta}` live, with the metadata field as it is now.
pub(crate) static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_now!(),
        lua_meta!(),
        lua_absent!(),
        lua_expire_at!(),
        lua_refresh!(),
        lua_refresh_meta!(),
        r"
local m, why = meta(KEYS[1], now)
if not m then return { absent(KEYS[1], why), now } end
-- Touch::is_due by Redis's clock: the caller's guess used an estimate.
local permille = tonumber(ARGV[1])
if permille < 1000 and (m.expires - now) * 1000 >= tonumber(m.ttl) * permille then
  return { 1, now, 0, m.raw }
end
local f = refresh(KEYS[1], m, now)
if not f then return { 1, now, 0, m.raw } end
return { 1, now, 1, f }
"
    ))
});

/// `create`: KEYS data, lock; ARGV metadata field, expires, then
/// field/value pairs.
///
/// Reply: `0` id taken, `1` created, `-1` created over corrupt data.
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_now!(),
        lua_meta!(),
        lua_expire_at!(),
        lua_hset!(),
        r"
local m, why = meta(KEYS[1], now)
if m then return 0 end
-- What is left under a free id (an expired or corrupt record, the lock of
-- an expired session) must not leak into the new session. The data key
-- alone first: whether it existed tells a foreign hash from no key.
local existed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
local at = tonumber(ARGV[2])
-- Born expired: accepted and gone at once, as the memory store does.
if at > now then
  hset(KEYS[1], ARGV[1], 3, #ARGV)
  expire_at(KEYS[1], at)
end
if why == -1 or (why == -2 and existed == 1) then return -1 end
return 1
"
    ))
});

/// `apply`: KEYS data, lock; ARGV fence token (`''`: none), release
/// (`1`/`0`), clear (`1`/`0`), new ttl (`''`: keep), number of pairs, the
/// field/value pairs to set, then the fields to delete.
///
/// Reply: `{0, why}` gone, `{2}` lock lost, `{1, meta}` applied.
pub(crate) static APPLY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_now!(),
        lua_meta!(),
        lua_absent!(),
        lua_expire_at!(),
        lua_refresh!(),
        lua_hset!(),
        r"
local m, why = meta(KEYS[1], now)
if not m then return { 0, absent(KEYS[1], why) } end
if ARGV[1] ~= '' then
  -- pcall: a foreign value under the lock key is no owner, not an error.
  if redis.pcall('GET', KEYS[2]) ~= ARGV[1] then return { 2 } end
  if ARGV[2] == '1' then redis.call('DEL', KEYS[2]) end
end
-- A clear drops the hash; the metadata is written again below.
if ARGV[3] == '1' then redis.call('DEL', KEYS[1]) end
local ttl = m.ttl
if ARGV[4] ~= '' then ttl = ARGV[4] end
local at = refreshed(now, ttl, m.deadline)
local f = field(m.created, ttl, m.deadline, at)
local sets_end = 5 + 2 * tonumber(ARGV[5])
hset(KEYS[1], f, 6, sets_end)
local first = sets_end + 1
while first <= #ARGV do
  local stop = math.min(first + 199, #ARGV)
  redis.call('HDEL', KEYS[1], unpack(ARGV, first, stop))
  first = stop + 1
end
expire_at(KEYS[1], at)
return { 1, f }
"
    ))
});

/// `change_id` on one server (all four keys in one script): KEYS old data,
/// old lock, new data, new lock; ARGV fence token (`''`: none).
///
/// Reply: `{0}` gone, `{2}` id taken, `{3}` lock lost, `{1, meta}` changed.
pub(crate) static CHANGE_ID: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_now!(),
        lua_meta!(),
        lua_expire_at!(),
        lua_refresh!(),
        lua_refresh_meta!(),
        r"
local m = meta(KEYS[1], now)
if not m then return { 0 } end
if meta(KEYS[3], now) then return { 2 } end
if ARGV[1] ~= '' and redis.pcall('GET', KEYS[2]) ~= ARGV[1] then return { 3 } end
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
return { 1, refresh(KEYS[3], m, now) or m.raw }
"
    ))
});

/// First step of `change_id` in a cluster, on the old id's slot: checks,
/// reads and deletes the session (and its lock). KEYS data, lock; ARGV fence
/// token (`''`: none).
///
/// Reply: `{0}` gone, `{3}` lock lost, `{1, lock_ms, HGETALL}` taken.
#[cfg(feature = "cluster")]
pub(crate) static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_now!(),
        lua_meta!(),
        r"
local m = meta(KEYS[1], now)
if not m then return { 0 } end
local lock_ms = 0
if ARGV[1] ~= '' then
  if redis.pcall('GET', KEYS[2]) ~= ARGV[1] then return { 3 } end
  lock_ms = redis.call('PTTL', KEYS[2])
end
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2])
return { 1, lock_ms, all }
"
    ))
});

/// Second step of `change_id` in a cluster (and the undo of the first):
/// stores a taken session under an id unless that id is live. KEYS data,
/// lock; ARGV lock token (`''`: none), lock ms, created, ttl, deadline,
/// expires (`''`: refresh now), then field/value pairs.
///
/// Reply: `{2}` id taken, `{0}` expired meanwhile, `{1, meta}` stored.
#[cfg(feature = "cluster")]
pub(crate) static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_now!(),
        lua_meta!(),
        lua_expire_at!(),
        lua_refresh!(),
        lua_hset!(),
        r"
if meta(KEYS[1], now) then return { 2 } end
redis.call('DEL', KEYS[1], KEYS[2])
local at, f
if ARGV[6] == '' then
  at = refreshed(now, ARGV[4], ARGV[5])
  f = field(ARGV[3], ARGV[4], ARGV[5], at)
else
  -- Put back as it was, to the digit.
  at = tonumber(ARGV[6])
  f = '2 ' .. ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. ARGV[5] .. ' ' .. ARGV[6]
end
if at <= now then return { 0 } end
hset(KEYS[1], f, 7, #ARGV)
expire_at(KEYS[1], at)
local lock_ms = tonumber(ARGV[2])
if ARGV[1] ~= '' and lock_ms and lock_ms > 0 then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
end
return { 1, f }
"
    ))
});

/// `lock`: KEYS data, lock; ARGV token, ttl ms.
///
/// Taking the lock refreshes the idle expiry (a session is not idle while a
/// request holds its lock), before the `HGETALL`, so the record returned
/// carries the refreshed metadata.
///
/// Reply: `{0, why}` absent, `{2}` held, `{1, HGETALL}` acquired.
pub(crate) static LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_now!(),
        lua_meta!(),
        lua_absent!(),
        lua_expire_at!(),
        lua_refresh!(),
        lua_refresh_meta!(),
        r"
local m, why = meta(KEYS[1], now)
if not m then return { 0, absent(KEYS[1], why) } end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return { 2 } end
refresh(KEYS[1], m, now)
return { 1, redis.call('HGETALL', KEYS[1]) }
"
    ))
});

/// `renew_lock`: KEYS data, lock; ARGV token, ttl ms. Renewing refreshes
/// the idle expiry too. Reply: `1` renewed, `0` not the owner (or the
/// session is gone).
pub(crate) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_now!(),
        lua_meta!(),
        lua_expire_at!(),
        lua_refresh!(),
        lua_refresh_meta!(),
        r"
local m = meta(KEYS[1], now)
if not m then return 0 end
if redis.pcall('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
refresh(KEYS[1], m, now)
return 1
"
    ))
});

/// `unlock`: KEYS lock; ARGV token. Compare-and-delete. Reply: `1` released,
/// `0` not the owner.
pub(crate) static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.pcall('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
",
    )
});
