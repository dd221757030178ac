//! The Lua scripts: one per store operation, each one atomic round trip.
//!
//! Every script starts with the same prelude of helpers. Times come from
//! `redis.call('TIME')`, Redis's own clock, so that app servers with drifting
//! clocks agree on expiry. Numbers are handled as Lua doubles, exact up to
//! 2^53; idle lifetimes are capped at 2^52 ms before they get here (see
//! [`MAX_MS`]), so `now + ttl` stays exact.
//!
//! Replies are small arrays whose first element is a status code; the
//! callers in `store.rs` decode them.

use std::sync::LazyLock;

use redis::Script;

/// The largest idle lifetime or lock TTL, in milliseconds, that the scripts
/// are given (about 142,000 years): keeps every sum exact in Lua's doubles.
pub(crate) const MAX_MS: u64 = 1 << 52;

/// Names of the metadata fields of a session hash. They start with the byte
/// 0xFF, which never occurs in UTF-8, so no session key (a Rust `&str`) can
/// collide with them.
pub(crate) mod field {
    pub(crate) const VERSION: &[u8] = b"\xffversion";
    pub(crate) const CREATED: &[u8] = b"\xffcreated";
    pub(crate) const TTL: &[u8] = b"\xffttl";
    pub(crate) const DEADLINE: &[u8] = b"\xffdeadline";
    pub(crate) const EXPIRES: &[u8] = b"\xffexpires";
    /// The value of [`VERSION`]: the layout this crate reads and writes.
    pub(crate) const LAYOUT: &[u8] = b"1";
}

/// Prepends the helpers every script uses.
macro_rules! with_prelude {
    ($body:literal) => {
        concat!(
            r"
local VERSION, CREATED, TTL, DEADLINE, EXPIRES =
  '\255version', '\255created', '\255ttl', '\255deadline', '\255expires'
local LAYOUT = '1'
-- PEXPIREAT refuses times that overflow; no session lives that long anyway.
local MAX_EXPIRY = 4503599627370496

-- Redis's clock in Unix milliseconds: one clock for every app server.
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function fmt(n)
  return string.format('%.0f', n)
end

-- Only plain decimal digits, as this crate writes them.
local function num(s)
  if type(s) ~= 'string' or not string.find(s, '^%d+$') then return nil end
  return tonumber(s)
end

local function expire_at(key, at)
  redis.call('PEXPIREAT', key, fmt(math.min(at, MAX_EXPIRY)))
end

-- The metadata of the live session at `key`; or nil and why not:
-- 0 absent or expired, -1 corrupt or foreign (another type, another layout).
local function live(key, now)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then return nil, 0 end
  if kind ~= 'hash' then return nil, -1 end
  local f = redis.call('HMGET', key, VERSION, CREATED, TTL, DEADLINE, EXPIRES)
  local m = {
    created = f[2], ttl_raw = f[3], deadline_raw = f[4],
    ttl = num(f[3]), deadline = num(f[4]), expires = num(f[5]),
  }
  if f[1] ~= LAYOUT or not (num(f[2]) and m.ttl and m.deadline and m.expires) then
    return nil, -1
  end
  -- Native expiry removes the key a millisecond later than the contract
  -- says; the field decides.
  if now >= m.expires then return nil, 0 end
  return m
end

-- Meta::refresh: now + ttl, never past the absolute deadline (0 = none).
local function refreshed(m, now)
  local at = now + m.ttl
  if m.deadline > 0 and m.deadline < at then at = m.deadline end
  return at
end

-- The token in the lock key, or nil (no lock, or a foreign value).
local function lock_owner(key)
  local v = redis.pcall('GET', key)
  if type(v) ~= 'string' then return nil end
  return v
end

-- `command key ARGV[first..last]`, in slices: unpack() is bounded by Lua's
-- C stack. Slices are even, so field/value pairs stay together.
local function each_slice(command, key, first, last)
  while first <= last do
    local stop = math.min(first + 199, last)
    redis.call(command, key, unpack(ARGV, first, stop))
    first = stop + 1
  end
end
",
            $body
        )
    };
}

/// `load`: KEYS data; ARGV touch permille (`0`: no touch).
///
/// Reply: `{0}` absent, `{-1}` corrupt, `{1, touched, HGETALL}`.
pub(crate) static LOAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(with_prelude!(
        r"
local now = clock()
local m, why = live(KEYS[1], now)
if not m then return { why } end
local touched = 0
local permille = tonumber(ARGV[1])
if permille > 0 then
  -- Touch::is_due: less than permille/1000 of the idle lifetime is left.
  if permille >= 1000 or (m.expires - now) * 1000 < m.ttl * permille then
    local at = refreshed(m, now)
    if at ~= m.expires then
      redis.call('HSET', KEYS[1], EXPIRES, fmt(at))
      expire_at(KEYS[1], at)
      touched = 1
    end
  end
end
return { 1, touched, redis.call('HGETALL', KEYS[1]) }
"
    ))
});

/// `create`: KEYS data, lock; ARGV created, ttl, deadline, expires, then
/// field/value pairs.
///
/// Reply: `0` id taken, `1` created, `-1` created over corrupt data.
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(with_prelude!(
        r"
local now = clock()
local m, why = live(KEYS[1], now)
if m then return 0 end
-- What is left under a free id (an expired or corrupt record, the lock of
-- an expired session) must not leak into the new session.
redis.call('DEL', KEYS[1], KEYS[2])
local at = num(ARGV[4])
-- Born expired: accepted and gone at once, as the memory store does.
if at > now then
  redis.call('HSET', KEYS[1], VERSION, LAYOUT, CREATED, ARGV[1], TTL, ARGV[2],
    DEADLINE, ARGV[3], EXPIRES, ARGV[4])
  each_slice('HSET', KEYS[1], 5, #ARGV)
  expire_at(KEYS[1], at)
end
if why == -1 then return -1 end
return 1
"
    ))
});

/// `apply`: KEYS data, lock; ARGV fence token (`''`: none), release
/// (`1`/`0`), clear (`1`/`0`), new ttl (`''`: keep), number of pairs, the
/// field/value pairs to set, then the fields to delete.
///
/// Reply: `{0, why}` gone, `{2}` lock lost, `{1, created, ttl, deadline,
/// expires}` applied.
pub(crate) static APPLY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(with_prelude!(
        r"
local now = clock()
local m, why = live(KEYS[1], now)
if not m then return { 0, why } end
if ARGV[1] ~= '' then
  if lock_owner(KEYS[2]) ~= ARGV[1] then return { 2 } end
  if ARGV[2] == '1' then redis.call('DEL', KEYS[2]) end
end
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], VERSION, LAYOUT, CREATED, m.created, DEADLINE, m.deadline_raw)
end
local sets_end = 5 + 2 * tonumber(ARGV[5])
each_slice('HSET', KEYS[1], 6, sets_end)
each_slice('HDEL', KEYS[1], sets_end + 1, #ARGV)
if ARGV[4] ~= '' then
  m.ttl, m.ttl_raw = tonumber(ARGV[4]), ARGV[4]
end
local at = refreshed(m, now)
redis.call('HSET', KEYS[1], TTL, m.ttl_raw, EXPIRES, fmt(at))
expire_at(KEYS[1], at)
return { 1, m.created, m.ttl_raw, m.deadline_raw, fmt(at) }
"
    ))
});

/// `change_id` on one server (all four keys in one script): KEYS old data,
/// old lock, new data, new lock; ARGV fence token (`''`: none).
///
/// Reply: `{0}` gone, `{2}` id taken, `{3}` lock lost, `{1, created, ttl,
/// deadline, expires}` changed.
pub(crate) static CHANGE_ID: LazyLock<Script> = LazyLock::new(|| {
    Script::new(with_prelude!(
        r"
local now = clock()
local m = live(KEYS[1], now)
if not m then return { 0 } end
if live(KEYS[3], now) then return { 2 } end
if ARGV[1] ~= '' and lock_owner(KEYS[2]) ~= ARGV[1] then return { 3 } end
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('RENAME', KEYS[1], KEYS[3])
if ARGV[1] ~= '' then
  -- RENAME keeps the TTL: the lock moves with its token and its expiry.
  redis.call('RENAME', KEYS[2], KEYS[4])
else
  redis.call('DEL', KEYS[2])
end
local at = refreshed(m, now)
redis.call('HSET', KEYS[3], EXPIRES, fmt(at))
expire_at(KEYS[3], at)
return { 1, m.created, m.ttl_raw, m.deadline_raw, fmt(at) }
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
    Script::new(with_prelude!(
        r"
local now = clock()
local m = live(KEYS[1], now)
if not m then return { 0 } end
local lock_ms = 0
if ARGV[1] ~= '' then
  if lock_owner(KEYS[2]) ~= ARGV[1] then return { 3 } end
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
/// Reply: `{2}` id taken, `{0}` expired meanwhile, `{1, expires}` stored.
#[cfg(feature = "cluster")]
pub(crate) static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(with_prelude!(
        r"
local now = clock()
if live(KEYS[1], now) then return { 2 } end
redis.call('DEL', KEYS[1], KEYS[2])
local m = { ttl = num(ARGV[4]), deadline = num(ARGV[5]) }
local at
if ARGV[6] == '' then at = refreshed(m, now) else at = num(ARGV[6]) end
if at <= now then return { 0 } end
redis.call('HSET', KEYS[1], VERSION, LAYOUT, CREATED, ARGV[3], TTL, ARGV[4],
  DEADLINE, ARGV[5], EXPIRES, fmt(at))
each_slice('HSET', KEYS[1], 7, #ARGV)
expire_at(KEYS[1], at)
if ARGV[1] ~= '' and num(ARGV[2]) and num(ARGV[2]) > 0 then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
end
return { 1, fmt(at) }
"
    ))
});

/// `lock`: KEYS data, lock; ARGV token, ttl ms.
///
/// Reply: `{0, why}` absent, `{2}` held, `{1, HGETALL}` acquired.
pub(crate) static LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(with_prelude!(
        r"
local now = clock()
local m, why = live(KEYS[1], now)
if not m then return { 0, why } end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return { 2 } end
return { 1, redis.call('HGETALL', KEYS[1]) }
"
    ))
});

/// `renew_lock`: KEYS data, lock; ARGV token, ttl ms. Reply: `1` renewed,
/// `0` not the owner (or the session is gone).
pub(crate) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(with_prelude!(
        r"
local now = clock()
if not live(KEYS[1], now) then return 0 end
if lock_owner(KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"
    ))
});

/// `unlock`: KEYS lock; ARGV token. Compare-and-delete. Reply: `1` released,
/// `0` not the owner.
pub(crate) static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(with_prelude!(
        r"
if lock_owner(KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"
    ))
});
