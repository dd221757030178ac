//! The owner index: one Redis hash per owner, handle → the session's data
//! key, next to the owner entries each session carries.
//!
//! ```text
//! sessionkit:{o.<SHA-1 of the stored owner, hex>}   HASH   <handle hex> → sessionkit:{<tag>}
//! ```
//!
//! The session itself carries its owner, handle and device label in
//! reserved entries (fields `\x01owner`, `\x01handle`, `\x01device`, the
//! values JSON as every entry), so they move with it on `change_id` and
//! end with it. An index entry is believed only when the session it names
//! is live and still carries that owner and handle; any other entry is
//! stale (the session was destroyed, expired, evicted, or given another
//! owner) and is dropped whenever that owner's index is used. The index
//! key has no expiry of its own: sessions without an absolute deadline
//! can live for ever through their touches, and an index that all its
//! sessions left is emptied by its next use, and Redis deletes an empty
//! hash.
//!
//! On one server every operation is one script over the index and the
//! sessions it names: atomic, one round trip (the scripts touch the data
//! keys the index names, which they cannot declare beforehand; one server
//! allows that, a cluster does not). In a cluster the index lives in its
//! own slot, so each step runs on one slot and the steps are not atomic
//! together: a login's entry carries a claim flag (`<handle hex>:claim` →
//! the time) between its claim and its last step, and a revocation leaves
//! a mark (`}revoked <ms> <data key>`) in place of the data key for a
//! minute; see the
//! [crate docs](crate#owners) for what holds there and what is repaired on
//! read.

use redis::Value;
use sessionkit_core::codec::{decode_value, encode_value};
use sessionkit_core::owner::{
    OwnedSession, Owner, OwnerCap, OwnerIndex, OwnerSet, SessionHandle, WhenFull,
};
use sessionkit_core::{Result, SessionId};

use super::{RedisStore, unexpected};
use crate::reply;

/// `owned(key, now, owner, handle)`: the session an index entry names, if
/// it is live and still carries that owner and handle (their JSON, as
/// stored): its creation time (hex, as the metadata holds it), expiry,
/// last use (the expiry less its idle lifetime: the last write, lock or
/// due touch) and device label (`''` for none); nil marks the entry stale.
/// Needs [`lua_live`] first.
macro_rules! lua_owned {
    () => {
        r"
local function owned(key, now, owner, handle)
  local live, c, e, l, _, _, entries = meta(key, now)
  if live ~= 'live' then return nil end
  local t = fields(entries)
  if not t or t['\1owner'] ~= owner or t['\1handle'] ~= handle then return nil end
  return c, e, e - ttl_ms(l), t['\1device'] or ''
end

-- An index entry's handle as the session stores it: its JSON string.
local function quoted(h) return '\34' .. h .. '\34' end
"
    };
}

/// `set_owner` on one server: KEYS data, index; ARGV owner, handle (both
/// as stored), handle hex, device as stored (`''`: none), cap (`''`:
/// none), `refuse` or `end`.
///
/// The owner's other entries are checked (stale ones dropped); over the
/// cap, `refuse` answers `{full}` and writes nothing, `end` deletes the
/// least recently used others (data and lock) and their entries. Then the
/// owner entries go into the session and the session into the index.
///
/// Reply: `{gone}`, `{full}`, or `{set, <ended handles>...}`.
static SET_OWNER: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(concat!(
        lua_live!(),
        lua_owned!(),
        r"
local live, c, e, l, d, m, entries = meta(KEYS[1], now)
if live ~= 'live' then return { 'gone' } end
local t = fields(entries)
if not t then return { 'gone' } end
local others = {}
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local h, k = entries[i], entries[i + 1]
  if k == KEYS[1] then
    -- This session under another handle: replaced below.
    if h ~= ARGV[3] then redis.call('HDEL', KEYS[2], h) end
  elseif h ~= ARGV[3] then
    local c, e, seen = owned(k, now, ARGV[1], quoted(h))
    if c then others[#others + 1] = { seen, h, k } else redis.call('HDEL', KEYS[2], h) end
  end
end
local reply = { 'set' }
if ARGV[5] ~= '' then
  local over = #others + 1 - tonumber(ARGV[5])
  if over > 0 then
    if ARGV[6] == 'refuse' then return { 'full' } end
    table.sort(others, function(a, b)
      if a[1] ~= b[1] then return a[1] < b[1] end
      return a[2] < b[2]
    end)
    for i = 1, over do
      local k = others[i][3]
      redis.call('DEL', k, k .. ':lock')
      redis.call('HDEL', KEYS[2], others[i][2])
      reply[#reply + 1] = others[i][2]
    end
  end
end
t['\1owner'] = ARGV[1]
t['\1handle'] = ARGV[2]
if ARGV[4] == '' then t['\1device'] = nil else t['\1device'] = ARGV[4] end
-- The owner does not refresh the expiry: written back with the same.
write(KEYS[1], m, cmsgpack.pack(t), e)
redis.call('HSET', KEYS[2], ARGV[3], KEYS[1])
return reply
"
    ))
});

/// `sessions_of` on one server: KEYS index; ARGV owner as stored.
///
/// Reply: five elements per live session — handle hex, created (hex),
/// last seen, expires, device as stored (`''`: none); stale entries are
/// dropped.
static LIST: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(concat!(
        lua_live!(),
        lua_owned!(),
        r"
local out = {}
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local h = entries[i]
  local c, e, seen, device = owned(entries[i + 1], now, ARGV[1], quoted(h))
  if c then
    out[#out + 1] = h
    out[#out + 1] = c
    out[#out + 1] = seen
    out[#out + 1] = e
    out[#out + 1] = device
  else
    redis.call('HDEL', KEYS[1], h)
  end
end
return out
"
    ))
});

/// `revoke` and `revoke_all` on one server: KEYS index; ARGV owner as
/// stored, `one` and the handle hex, or `all` and the handle hex to spare
/// (`''`: none). Ends every named session that is live and still the
/// owner's under that handle (data and lock); drops the entries.
///
/// Reply: how many sessions it ended.
static REVOKE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(concat!(
        lua_live!(),
        lua_owned!(),
        r"
local function revoke(h, k)
  redis.call('HDEL', KEYS[1], h)
  if not owned(k, now, ARGV[1], quoted(h)) then return 0 end
  redis.call('DEL', k, k .. ':lock')
  return 1
end
if ARGV[2] == 'one' then
  local k = redis.call('HGET', KEYS[1], ARGV[3])
  if not k then return 0 end
  return revoke(ARGV[3], k)
end
local n = 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  if entries[i] ~= ARGV[3] then n = n + revoke(entries[i], entries[i + 1]) end
end
return n
"
    ))
});

/// An owner's stored form (what the session's owner entry holds, and what
/// names the index) and a handle's.
fn stored(owner: &Owner) -> Result<Vec<u8>> {
    encode_value(&owner.as_str())
}

fn stored_handle(handle: &SessionHandle) -> Result<Vec<u8>> {
    encode_value(&handle.to_string())
}

/// A bulk string of a reply as text.
fn text(value: Option<&Value>) -> Option<&str> {
    match value? {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

/// One listed session from its five reply elements: handle hex, created
/// (hex), last seen, expires, device as stored (`''`: none).
fn listed(five: &[Value]) -> Option<OwnedSession> {
    let handle = SessionHandle::parse(text(five.first())?).ok()?;
    let created = u64::from_str_radix(text(five.get(1))?, 16).ok()?;
    let last_seen = reply::number(five.get(2))?;
    let expires = reply::number(five.get(3))?;
    let device = match five.get(4)? {
        Value::BulkString(bytes) if !bytes.is_empty() => decode_value(bytes).ok(),
        _ => None,
    };
    Some(OwnedSession::new(
        handle, created, last_seen, expires, device,
    ))
}

/// Least recently used first, as [`OwnerIndex::sessions_of`] promises.
fn by_last_use(sessions: &mut [OwnedSession]) {
    sessions.sort_by_key(|s| (s.last_seen, s.handle));
}

impl RedisStore {
    /// What `change_id` does with an owned session's index entry: on one
    /// server the script moves it (`index` and the prefix), in a cluster it
    /// answers the owner and handle (`reply`) and [`Self::entry_moved`]
    /// moves it.
    pub(super) fn index_mode(&self) -> [&str; 2] {
        if self.inner.conn.is_cluster() {
            ["reply", ""]
        } else {
            ["index", self.inner.keys.prefix()]
        }
    }
}

impl OwnerIndex for RedisStore {
    async fn set_owner(
        &self,
        id: &SessionId,
        owner: &Owner,
        handle: &SessionHandle,
        device: Option<&str>,
        cap: Option<OwnerCap>,
    ) -> Result<OwnerSet> {
        const OP: &str = "set_owner";
        let owner_text = stored(owner)?;
        let device = device.map(encode_value).transpose()?.unwrap_or_default();
        if self.inner.conn.is_cluster() {
            #[cfg(feature = "cluster")]
            return self
                .cluster_set_owner(id, owner_text, handle, device, cap)
                .await;
        }
        let data = self.inner.keys.data_key(id);
        let (max, when_full) = match cap {
            Some(cap) => (
                cap.max.to_string(),
                match cap.when_full {
                    WhenFull::Refuse => "refuse",
                    _ => "end",
                },
            ),
            None => (String::new(), "end"),
        };
        let mut script = SET_OWNER.prepare_invoke();
        script
            .key(&data)
            .key(self.inner.keys.owner_key(&owner_text))
            .arg(&owner_text)
            .arg(stored_handle(handle)?)
            .arg(handle.to_string())
            .arg(device)
            .arg(max)
            .arg(when_full);
        let items = reply::array(self.run(OP, &script).await?).ok_or_else(|| unexpected(OP))?;
        match text(items.first()) {
            Some("gone") => Ok(OwnerSet::Gone),
            Some("full") => Ok(OwnerSet::Full),
            Some("set") => Ok(OwnerSet::Set {
                ended: items[1..]
                    .iter()
                    .map(|v| text(Some(v)).and_then(|h| SessionHandle::parse(h).ok()))
                    .collect::<Option<_>>()
                    .ok_or_else(|| unexpected(OP))?,
            }),
            _ => Err(unexpected(OP)),
        }
    }

    async fn sessions_of(&self, owner: &Owner) -> Result<Vec<OwnedSession>> {
        const OP: &str = "sessions_of";
        let owner_text = stored(owner)?;
        if self.inner.conn.is_cluster() {
            #[cfg(feature = "cluster")]
            return Ok(self
                .cluster_sessions_of(&owner_text)
                .await?
                .into_iter()
                .map(|(session, _)| session)
                .collect());
        }
        let mut script = LIST.prepare_invoke();
        script
            .key(self.inner.keys.owner_key(&owner_text))
            .arg(&owner_text);
        let items = reply::array(self.run(OP, &script).await?).ok_or_else(|| unexpected(OP))?;
        if items.len() % 5 != 0 {
            return Err(unexpected(OP));
        }
        let mut sessions = items
            .chunks_exact(5)
            .map(listed)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| unexpected(OP))?;
        by_last_use(&mut sessions);
        Ok(sessions)
    }

    async fn revoke(&self, owner: &Owner, handle: &SessionHandle) -> Result<bool> {
        let owner_text = stored(owner)?;
        if self.inner.conn.is_cluster() {
            #[cfg(feature = "cluster")]
            return Ok(self
                .cluster_revoke(&owner_text, Target::One(handle))
                .await?
                > 0);
        }
        Ok(self
            .revoke_script(&owner_text, "one", &handle.to_string())
            .await?
            > 0)
    }

    async fn revoke_all(&self, owner: &Owner, except: Option<&SessionHandle>) -> Result<u64> {
        let owner_text = stored(owner)?;
        if self.inner.conn.is_cluster() {
            #[cfg(feature = "cluster")]
            return self
                .cluster_revoke(&owner_text, Target::AllBut(except))
                .await;
        }
        let except = except.map(SessionHandle::to_string).unwrap_or_default();
        self.revoke_script(&owner_text, "all", &except).await
    }
}

impl RedisStore {
    async fn revoke_script(&self, owner_text: &[u8], mode: &str, handle: &str) -> Result<u64> {
        const OP: &str = "revoke";
        let mut script = REVOKE.prepare_invoke();
        script
            .key(self.inner.keys.owner_key(owner_text))
            .arg(owner_text)
            .arg(mode)
            .arg(handle);
        reply::number(Some(&self.run(OP, &script).await?)).ok_or_else(|| unexpected(OP))
    }
}

/// Which sessions a revocation ends.
#[cfg(feature = "cluster")]
#[derive(Clone, Copy)]
enum Target<'a> {
    One(&'a SessionHandle),
    AllBut(Option<&'a SessionHandle>),
}

#[cfg(feature = "cluster")]
use std::time::Duration;

/// How long a cluster's index keeps the mark of a revoked entry (see
/// `TOMBSTONE`): far longer than a `change_id` takes between its two
/// steps.
#[cfg(feature = "cluster")]
const TOMBSTONE_LIFE: Duration = Duration::from_secs(60);

/// The key that says, in the old key's slot, that an owned session's
/// `change_id` moved it and its index entry is about to follow (see
/// `READ`): `<old data key>:moved` → the new data key, for
/// [`MOVED_LIFE_MS`].
pub(super) fn moved_key(data: &str) -> String {
    format!("{data}:moved")
}

/// How long the marker of [`moved_key`] lives: far longer than a
/// `change_id` takes between its two steps. Written by `change_id` in a
/// cluster only.
pub(super) const MOVED_LIFE_MS: u64 = 60_000;

/// How long a list keeps a login's claimed entry without asking its
/// session (see `CLAIM`): far longer than a login takes between its
/// claim and its owner fields. After it, the entry is checked like any
/// other: kept if the session carries the owner (a login that stopped
/// after writing it), dropped if not (one that stopped before).
#[cfg(feature = "cluster")]
const CLAIM_LIFE: Duration = Duration::from_secs(60);

/// Whether an index value is a session's data key rather than the mark a
/// revocation leaves in a cluster (`}revoked <ms> <data key>`, see
/// [`mark_key`]) or a claim flag's time: every data key holds a `{` and
/// none starts with `}` (a prefix holds no brace).
#[cfg(feature = "cluster")]
macro_rules! lua_is_key {
    () => {
        r"
local function is_key(v)
  return v and string.byte(v) ~= 125 and string.find(v, '{', 1, true) ~= nil
end
-- The data key a revocation mark names, or nil.
local function marked_key(v) return v and string.match(v, '^}revoked %d+ (.+)$') end
"
    };
}

/// The revocation mark of an entry, as the scripts write it
/// (`}revoked <ms> <data key>`): when, and which session to end again if
/// ending it failed the first time.
#[cfg(feature = "cluster")]
fn mark_key(value: &str) -> Option<(u64, &str)> {
    let rest = value.strip_prefix("}revoked ")?;
    let (ms, key) = rest.split_once(' ')?;
    Some((ms.parse().ok()?, key))
}

/// Whether an index value names a session (see `lua_is_key`).
#[cfg(feature = "cluster")]
fn is_key(value: &str) -> bool {
    !value.starts_with('}') && value.contains('{')
}

/// Cluster, index slot: claims the owner's index entry for a session and
/// enforces the cap over the entries. KEYS index; ARGV handle hex, data
/// key, cap (`''`: none), `refuse` or `end`, [`CLAIM_LIFE`] in ms, then
/// the handles of the owner's other sessions the caller found live, least
/// recently used first.
///
/// The entry is written with its claim flag (`<handle hex>:claim` → the
/// time): until [`FINISH`] removes the flag, a list keeps the entry without
/// asking the session, which does not carry the owner yet (see
/// [`CLAIM_LIFE`]). Another entry of the same session under another handle
/// is not counted; it is dropped unless it is a claim in flight (a second
/// login of the same session at the same time: `SET_FIELDS` lets one of
/// the two handles win). A revocation mark on the handle itself is left in
/// place: that session is being revoked, and the claim answers
/// `{revoked}`.
///
/// Over the cap, `refuse` answers `{full}` and writes nothing; `end` marks
/// the least recently used others revoked (those the caller found live, in
/// its order, then any added since) and answers them for the caller to end.
///
/// Reply: `{full}`, `{revoked}`, or `{set, <other entries>, <handle hex,
/// data key of each session to end>...}`.
#[cfg(feature = "cluster")]
static CLAIM: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(concat!(
        lua_now!(),
        lua_is_key!(),
        r"
local own = redis.call('HGET', KEYS[1], ARGV[1])
if own and not is_key(own) then return { 'revoked' } end
local entries = redis.call('HGETALL', KEYS[1])
local flags = {}
for i = 1, #entries, 2 do
  local h = string.match(entries[i], '^(.*):claim$')
  if h then flags[h] = tonumber(entries[i + 1]) end
end
local others, count = {}, 0
for i = 1, #entries, 2 do
  local h, v = entries[i], entries[i + 1]
  if h ~= ARGV[1] and is_key(v) then
    if v == ARGV[2] then
      -- This session under another handle: a login of it in flight keeps
      -- its claim; one that never finished is replaced below.
      if not (flags[h] and flags[h] + tonumber(ARGV[5]) >= now) then
        redis.call('HDEL', KEYS[1], h, h .. ':claim')
      end
    else
      others[h] = v
      count = count + 1
    end
  end
end
local reply = { 'set', count }
if ARGV[3] ~= '' then
  local over = count + 1 - tonumber(ARGV[3])
  if over > 0 then
    if ARGV[4] == 'refuse' then return { 'full' } end
    local order, ranked = {}, {}
    for i = 6, #ARGV do
      if others[ARGV[i]] then order[#order + 1] = ARGV[i]; ranked[ARGV[i]] = true end
    end
    local rest = {}
    for h in pairs(others) do if not ranked[h] then rest[#rest + 1] = h end end
    table.sort(rest)
    for _, h in ipairs(rest) do order[#order + 1] = h end
    for i = 1, over do
      redis.call('HSET', KEYS[1], order[i], '}revoked ' .. now .. ' ' .. others[order[i]])
      redis.call('HDEL', KEYS[1], order[i] .. ':claim')
      reply[#reply + 1] = order[i]
      reply[#reply + 1] = others[order[i]]
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], ARGV[1] .. ':claim', now)
return reply
"
    ))
});

/// Cluster, index slot: the last step of a login, after the owner fields:
/// removes the claim flag and says what became of the entry meanwhile.
/// KEYS index; ARGV handle hex. Reply: `set` (it names a session: this
/// one, or this one under a new id), `revoked` (a cap or a revocation
/// marked it) or `gone` (it was dropped).
#[cfg(feature = "cluster")]
static FINISH: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(concat!(
        lua_is_key!(),
        r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1] .. ':claim')
if not v then return 'gone' end
if not is_key(v) then return 'revoked' end
return 'set'
"
    ))
});

/// Cluster, session slot: writes the owner entries into a live session.
/// KEYS data; ARGV owner, handle, device (as stored; `''`: none).
/// Reply: `set`, `gone`, or `taken` when the session already carries this
/// owner under another handle (another login of it won; nothing written).
#[cfg(feature = "cluster")]
static SET_FIELDS: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(concat!(
        lua_now!(),
        lua_meta!(),
        lua_write!(),
        r"
local live, c, e, l, d, m, entries = meta(KEYS[1], now)
if live ~= 'live' then return 'gone' end
local t = fields(entries)
if not t then return 'gone' end
if t['\1owner'] == ARGV[1] and t['\1handle'] and t['\1handle'] ~= ARGV[2] then return 'taken' end
t['\1owner'] = ARGV[1]
t['\1handle'] = ARGV[2]
if ARGV[3] == '' then t['\1device'] = nil else t['\1device'] = ARGV[3] end
write(KEYS[1], m, cmsgpack.pack(t), e)
return 'set'
"
    ))
});

/// Cluster, session slot: one index entry's session, or that it is
/// stale. KEYS data, its [`moved_key`]; ARGV owner, handle (as stored).
/// Reply: `{created (hex), last seen, expires, device}`, `moved` (no
/// session under the key, which a `change_id` is moving: the entry is
/// kept, the session listed once the entry follows), or `{}`.
#[cfg(feature = "cluster")]
static READ: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(concat!(
        lua_live!(),
        lua_owned!(),
        r"
local c, e, seen, device = owned(KEYS[1], now, ARGV[1], ARGV[2])
if c then return { c, seen, e, device } end
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 1 then return 'moved' end
return {}
"
    ))
});

/// Cluster, session slot: ends a session if it is live and still the
/// owner's under that handle. KEYS data, lock; ARGV owner, handle (as
/// stored). Reply: 1 if it ended it, else 0.
#[cfg(feature = "cluster")]
static END: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(concat!(
        lua_live!(),
        lua_owned!(),
        r"
if not owned(KEYS[1], now, ARGV[1], ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"
    ))
});

/// Cluster, index slot: drops entries that still hold what the caller saw,
/// with their claim flags. KEYS index; ARGV field and value, pairwise.
/// Reply: how many.
#[cfg(feature = "cluster")]
static DROP: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[1], ARGV[i] .. ':claim')
  end
end
return n
",
    )
});

/// Cluster, index slot: marks entries revoked before their sessions are
/// ended, so that a `change_id` in between finds the mark instead of
/// putting the entry back (see [`MOVE`]). KEYS index; ARGV `one` and a
/// handle hex, or `all` and the handle hex to spare (`''`: none).
/// Reply: handle hex and data key of each entry marked, pairwise; an entry
/// marked before is answered again, so that a retry ends a session whose
/// end failed the first time.
#[cfg(feature = "cluster")]
static TOMBSTONE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(concat!(
        lua_now!(),
        lua_is_key!(),
        r"
local out = {}
local function mark(h, v)
  local key = v
  if is_key(v) then
    redis.call('HSET', KEYS[1], h, '}revoked ' .. now .. ' ' .. v)
    redis.call('HDEL', KEYS[1], h .. ':claim')
  else
    -- Marked before: its session is ended again, in case ending it failed.
    key = marked_key(v)
    if not key then return end
  end
  out[#out + 1] = h
  out[#out + 1] = key
end
if ARGV[1] == 'one' then
  mark(ARGV[2], redis.call('HGET', KEYS[1], ARGV[2]))
else
  local entries = redis.call('HGETALL', KEYS[1])
  for i = 1, #entries, 2 do
    if entries[i] ~= ARGV[2] then mark(entries[i], entries[i + 1]) end
  end
end
return out
"
    ))
});

/// Cluster, index slot: the second step of an owned session's
/// `change_id`. KEYS index; ARGV handle hex, old data key, new data key.
/// Points the entry at the new key (also when a repair dropped it in
/// between) unless a revocation marked it. Reply: `moved` or `revoked`.
#[cfg(feature = "cluster")]
static MOVE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(concat!(
        lua_is_key!(),
        r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and not is_key(v) then return 'revoked' end
if not v or v == ARGV[2] then redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
return 'moved'
"
    ))
});

/// `(handle hex, data key)` pairs from a flat reply.
#[cfg(feature = "cluster")]
fn entry_pairs(items: &[Value]) -> Option<Vec<(String, String)>> {
    items
        .chunks(2)
        .map(|pair| match pair {
            [h, v] => Some((text(Some(h))?.to_owned(), text(Some(v))?.to_owned())),
            _ => None,
        })
        .collect()
}

/// What a cluster index entry names, as `READ` finds it.
#[cfg(feature = "cluster")]
enum Entry {
    /// A live session of the owner under the entry's handle: listed.
    Live(OwnedSession),
    /// A session a `change_id` is moving: kept until the entry follows.
    Moving,
    /// Anything else: dropped.
    Stale,
}

/// What the first step of a cluster login got.
#[cfg(feature = "cluster")]
enum Claimed {
    /// The entry, to settle.
    Entry(Claim),
    /// A refusing cap is full; nothing was written.
    Full,
    /// The session's own entry carries a revocation mark.
    Revoked,
}

/// A cluster login's claim on its owner's index entry, between the two
/// steps of `set_owner`.
#[cfg(feature = "cluster")]
struct Claim {
    /// The owner's index key.
    index: String,
    /// The session's data key, the entry's value.
    data: String,
    /// The handle, hex: the entry's field.
    hex: String,
    /// Whether the login is to check the owner's entries afterwards.
    repair: bool,
    /// `(handle hex, data key)` of the sessions the cap chose to end.
    evicted: Vec<(String, String)>,
}

/// When a cluster login without a cap checks the owner's index: when it
/// holds more entries than this (a login with a cap always does).
#[cfg(feature = "cluster")]
const REPAIR_OVER: u64 = 16;

#[cfg(feature = "cluster")]
impl RedisStore {
    fn fail(operation: &'static str) -> impl Fn(redis::RedisError) -> sessionkit_core::Error {
        move |err| sessionkit_core::Error::store_unavailable(super::NAME, operation, err)
    }

    /// The owner's live sessions with their data keys, least recently used
    /// first. Reads the index, then each session on its own node (at once);
    /// drops stale entries and revocation marks older than
    /// [`TOMBSTONE_LIFE`].
    async fn cluster_sessions_of(&self, owner_text: &[u8]) -> Result<Vec<(OwnedSession, String)>> {
        const OP: &str = "sessions_of";
        let index = self.inner.keys.owner_key(owner_text);
        let mut hgetall = redis::cmd("HGETALL");
        hgetall.arg(&index);
        let reply = self
            .inner
            .conn
            .query(&hgetall)
            .await
            .map_err(Self::fail(OP))?;
        let mut entries = Vec::new();
        for (h, v) in reply.into_map_iter().map_err(|_| unexpected(OP))? {
            match (text(Some(&h)), text(Some(&v))) {
                (Some(h), Some(v)) => entries.push((h.to_owned(), v.to_owned())),
                _ => return Err(unexpected(OP)),
            }
        }
        let now = self
            .inner
            .clock
            .now()
            .unwrap_or_else(sessionkit_core::record::now_ms);
        // Claim flags: `<handle hex>:claim` → when a login claimed the entry
        // (the value as stored, to drop the flag by).
        let claim_life = CLAIM_LIFE.as_millis() as u64;
        let mark_life = TOMBSTONE_LIFE.as_millis() as u64;
        let claimed: std::collections::HashMap<&str, &str> = entries
            .iter()
            .filter_map(|(h, v)| Some((h.strip_suffix(":claim")?, v.as_str())))
            .collect();
        let fields: std::collections::HashSet<&str> =
            entries.iter().map(|(h, _)| h.as_str()).collect();
        let young = |h: &str| {
            claimed
                .get(h)
                .and_then(|at| at.parse::<u64>().ok())
                .is_some_and(|at| at.saturating_add(claim_life) >= now)
        };
        let mut stale = Vec::new();
        let mut ended = Vec::new();
        let mut reads = Vec::new();
        for (h, v) in entries.iter().cloned() {
            if let Some(handle) = h.strip_suffix(":claim") {
                // A flag whose entry is gone, or that outlived its life, goes;
                // the entry itself is checked below.
                if !fields.contains(handle) && !young(handle) {
                    stale.push((h, v));
                }
            } else if is_key(&v) {
                if young(&h) {
                    // A login between its claim and its owner fields: kept,
                    // not yet listed.
                    continue;
                }
                reads.push(async move {
                    let found = self.read_entry(owner_text, &h, &v).await;
                    (h, v, found)
                });
            } else {
                match mark_key(&v) {
                    Some((at, _)) if at.saturating_add(mark_life) >= now => {}
                    Some((_, key)) => {
                        // An old mark: its session is ended (again: if the
                        // revocation's own end failed, this is the retry)
                        // before the mark goes.
                        ended.push((h.clone(), key.to_owned()));
                        stale.push((h, v));
                    }
                    None => stale.push((h, v)),
                }
            }
        }
        if !ended.is_empty() {
            self.end_entries(owner_text, &ended).await?;
        }
        let mut live = Vec::new();
        for (h, v, found) in futures_util::future::join_all(reads).await {
            match found? {
                Entry::Moving => {}
                Entry::Live(session) => {
                    // The flag of a login that stopped after writing the
                    // owner fields: the entry stands, the flag goes.
                    if let Some(at) = claimed.get(h.as_str()) {
                        stale.push((format!("{h}:claim"), (*at).to_owned()));
                    }
                    live.push((session, v));
                }
                Entry::Stale => stale.push((h, v)),
            }
        }
        if !stale.is_empty() {
            let mut script = DROP.prepare_invoke();
            script.key(&index);
            for (h, v) in &stale {
                script.arg(h).arg(v);
            }
            self.run(OP, &script).await?;
        }
        live.sort_by_key(|(s, _)| (s.last_seen, s.handle));
        Ok(live)
    }

    /// What one index entry names (`READ`).
    async fn read_entry(&self, owner_text: &[u8], handle: &str, data: &str) -> Result<Entry> {
        const OP: &str = "sessions_of";
        let mut script = READ.prepare_invoke();
        script
            .key(data)
            .key(moved_key(data))
            .arg(owner_text)
            .arg(format!("\"{handle}\""));
        let found = self.run(OP, &script).await?;
        if text(Some(&found)) == Some("moved") {
            return Ok(Entry::Moving);
        }
        let items = reply::array(found).ok_or_else(|| unexpected(OP))?;
        if items.is_empty() {
            return Ok(Entry::Stale);
        }
        let mut five = vec![Value::BulkString(handle.as_bytes().to_vec())];
        five.extend(items);
        listed(&five).map(Entry::Live).ok_or_else(|| unexpected(OP))
    }

    /// Ends the sessions of `(handle hex, data key)` entries, each on its
    /// node (at once), if they are still the owner's; how many it ended.
    async fn end_entries(&self, owner_text: &[u8], entries: &[(String, String)]) -> Result<u64> {
        const OP: &str = "revoke";
        let ends = entries.iter().map(|(h, data)| async move {
            let mut script = END.prepare_invoke();
            script
                .key(data)
                .key(format!("{data}:lock"))
                .arg(owner_text)
                .arg(format!("\"{h}\""));
            reply::number(Some(&self.run(OP, &script).await?)).ok_or_else(|| unexpected(OP))
        });
        let mut ended = 0;
        for result in futures_util::future::join_all(ends).await {
            ended += result?;
        }
        Ok(ended)
    }

    /// `set_owner` in a cluster: [claim](Self::claim_entry) the index
    /// entry under the cap, then [settle](Self::settle_claim) it.
    async fn cluster_set_owner(
        &self,
        id: &SessionId,
        owner_text: Vec<u8>,
        handle: &SessionHandle,
        device: Vec<u8>,
        cap: Option<OwnerCap>,
    ) -> Result<OwnerSet> {
        match self.claim_entry(id, &owner_text, handle, cap).await? {
            Claimed::Entry(claim) => self.settle_claim(&owner_text, handle, device, claim).await,
            Claimed::Full => Ok(OwnerSet::Full),
            Claimed::Revoked => {
                // The session's own entry is marked: a revocation of this
                // session is under way, and it ends here if it has not yet.
                let data = self.inner.keys.data_key(id);
                self.end_entries(&owner_text, &[(handle.to_string(), data)])
                    .await?;
                Ok(OwnerSet::Gone)
            }
        }
    }

    /// The first step of a cluster `set_owner`: claims the owner's index
    /// entry for the session under the cap (index slot; with a cap, after
    /// checking the owner's sessions).
    async fn claim_entry(
        &self,
        id: &SessionId,
        owner_text: &[u8],
        handle: &SessionHandle,
        cap: Option<OwnerCap>,
    ) -> Result<Claimed> {
        const OP: &str = "set_owner";
        let index = self.inner.keys.owner_key(owner_text);
        let data = self.inner.keys.data_key(id);
        let hex = handle.to_string();
        let mut claim = CLAIM.prepare_invoke();
        claim.key(&index).arg(&hex).arg(&data);
        let life = CLAIM_LIFE.as_millis() as u64;
        match cap {
            Some(cap) => {
                let when_full = match cap.when_full {
                    WhenFull::Refuse => "refuse",
                    _ => "end",
                };
                claim.arg(cap.max.to_string()).arg(when_full).arg(life);
                for (session, key) in self.cluster_sessions_of(owner_text).await? {
                    if key != data {
                        claim.arg(session.handle.to_string());
                    }
                }
            }
            None => {
                claim.arg("").arg("end").arg(life);
            }
        }
        let items = reply::array(self.run(OP, &claim).await?).ok_or_else(|| unexpected(OP))?;
        let others = match text(items.first()) {
            Some("full") => return Ok(Claimed::Full),
            Some("revoked") => return Ok(Claimed::Revoked),
            Some("set") => reply::number(items.get(1)).ok_or_else(|| unexpected(OP))?,
            _ => return Err(unexpected(OP)),
        };
        let evicted = entry_pairs(&items[2..]).ok_or_else(|| unexpected(OP))?;
        Ok(Claimed::Entry(Claim {
            index,
            data,
            hex,
            repair: cap.is_none() && others > REPAIR_OVER,
            evicted,
        }))
    }

    /// The rest of a cluster `set_owner`: writes the owner entries into the
    /// session (its slot), ends the sessions the cap evicted (their slots),
    /// then reads its own index entry back (index slot) to learn whether
    /// anything ended or dropped it meanwhile.
    async fn settle_claim(
        &self,
        owner_text: &[u8],
        handle: &SessionHandle,
        device: Vec<u8>,
        claim: Claim,
    ) -> Result<OwnerSet> {
        const OP: &str = "set_owner";
        let mut fields = SET_FIELDS.prepare_invoke();
        fields
            .key(&claim.data)
            .arg(owner_text)
            .arg(stored_handle(handle)?)
            .arg(device);
        let fields = self.run(OP, &fields).await?;
        // The sessions the cap chose are marked revoked in the index: they
        // are ended even when this login's own session turned out gone, so
        // that no marked session lives on unlisted.
        self.end_entries(owner_text, &claim.evicted).await?;
        let ended = || {
            claim
                .evicted
                .iter()
                .map(|(h, _)| SessionHandle::parse(h).map_err(|_| unexpected(OP)))
                .collect::<Result<_>>()
        };
        match text(Some(&fields)) {
            Some("set") => {}
            // The session ended meanwhile (`gone`), or another login of it
            // set this owner under its own handle first (`taken`: the
            // session is the owner's under that handle): this login's claim
            // goes.
            Some(outcome @ ("gone" | "taken")) => {
                let mut drop = DROP.prepare_invoke();
                drop.key(&claim.index).arg(&claim.hex).arg(&claim.data);
                self.run(OP, &drop).await?;
                return Ok(match outcome {
                    "gone" => OwnerSet::Gone,
                    _ => OwnerSet::Set { ended: ended()? },
                });
            }
            _ => return Err(unexpected(OP)),
        }
        // Between the claim and the owner fields, another login's cap or a
        // revocation may have marked the entry, when its end of this
        // session found it not yet the owner's. The entry tells: unless it
        // still names a session, this one is ended here, so that no session
        // of an owner lives on unlisted.
        let mut finish = FINISH.prepare_invoke();
        finish.key(&claim.index).arg(&claim.hex);
        match text(Some(&self.run(OP, &finish).await?)) {
            Some("set") => {}
            Some(outcome @ ("revoked" | "gone")) => {
                self.end_entries(owner_text, &[(claim.hex.clone(), claim.data.clone())])
                    .await?;
                if outcome == "gone" {
                    return Ok(OwnerSet::Gone);
                }
                // Revoked: this login was set, then ended by what marked it.
            }
            _ => return Err(unexpected(OP)),
        }
        if claim.repair {
            self.cluster_sessions_of(owner_text).await?;
        }
        Ok(OwnerSet::Set { ended: ended()? })
    }

    /// `revoke` and `revoke_all` in a cluster: mark the entries revoked
    /// (index slot), then end their sessions (their slots).
    async fn cluster_revoke(&self, owner_text: &[u8], target: Target<'_>) -> Result<u64> {
        const OP: &str = "revoke";
        let mut mark = TOMBSTONE.prepare_invoke();
        mark.key(self.inner.keys.owner_key(owner_text));
        match target {
            Target::One(handle) => mark.arg("one").arg(handle.to_string()),
            Target::AllBut(except) => mark
                .arg("all")
                .arg(except.map(SessionHandle::to_string).unwrap_or_default()),
        };
        let items = reply::array(self.run(OP, &mark).await?).ok_or_else(|| unexpected(OP))?;
        let marked = entry_pairs(&items).ok_or_else(|| unexpected(OP))?;
        self.end_entries(owner_text, &marked).await
    }

    /// The second step of `change_id` for an owned session in a cluster:
    /// its index entry follows it to `new`; `false` if a revocation marked
    /// the entry meanwhile, and the session (now under `new`) was ended.
    pub(super) async fn entry_moved(
        &self,
        owner_text: &[u8],
        handle: &str,
        old: &str,
        new: &crate::keys::SessionKeys,
    ) -> Result<bool> {
        const OP: &str = "change_id";
        let mut script = MOVE.prepare_invoke();
        script
            .key(self.inner.keys.owner_key(owner_text))
            .arg(handle)
            .arg(old)
            .arg(&new.data);
        if text(Some(&self.run(OP, &script).await?)) == Some("moved") {
            return Ok(true);
        }
        let mut del = redis::cmd("DEL");
        del.arg(&new.data).arg(&new.lock);
        self.inner.conn.query(&del).await.map_err(Self::fail(OP))?;
        Ok(false)
    }
}

/// A cluster `set_owner` is two steps on two slots: these tests run
/// another login, a revocation and a list between them, in each order a
/// real race can take, on the shared test cluster.
#[cfg(all(test, feature = "cluster"))]
mod cluster_interleavings {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use sessionkit_core::SessionId;
    use sessionkit_core::owner::{Owner, OwnerCap, OwnerIndex, OwnerSet, SessionHandle, WhenFull};
    use sessionkit_core::record::now_ms;
    use sessionkit_core::store::{Created, IdChanged, SessionStore};
    use sessionkit_core::testkit::fixtures;

    use super::stored;
    use crate::RedisStore;

    async fn store() -> RedisStore {
        RedisStore::builder()
            .connect_cluster(sessionkit_test_servers::redis::shared_cluster().urls())
            .await
            .expect("connect to the shared cluster")
    }

    /// A new owner for each test: the cluster is shared.
    fn ada() -> Owner {
        Owner::new(format!("ada-{}", SessionId::generate().short_hash())).unwrap()
    }

    const CAP_OF_ONE: Option<OwnerCap> = Some(OwnerCap {
        max: NonZeroU32::MIN,
        when_full: WhenFull::EndLeastRecent,
    });

    /// A live session nobody owns yet, as a login finds its own.
    async fn session(store: &RedisStore) -> SessionId {
        let id = SessionId::generate();
        let record = fixtures::record(Duration::from_secs(60), fixtures::entries(&[("k", b"v")]));
        assert_eq!(store.create(&id, &record).await.unwrap(), Created::Created);
        id
    }

    async fn alive(store: &RedisStore, id: &SessionId) -> bool {
        store.load(id, None).await.unwrap().is_some()
    }

    /// Gives the session `id` to `owner` under `handle`, in one go.
    async fn own(store: &RedisStore, id: &SessionId, owner: &Owner, handle: &SessionHandle) {
        let set = store.set_owner(id, owner, handle, None, None).await;
        assert!(matches!(set, Ok(OwnerSet::Set { .. })), "{set:?}");
    }

    /// A login of `id` as `owner` in its two steps, with `between` run
    /// after the claim and before the owner fields; what the login reports.
    async fn login_around(
        store: &RedisStore,
        id: &SessionId,
        owner: &Owner,
        handle: &SessionHandle,
        cap: Option<OwnerCap>,
        between: impl Future<Output = ()>,
    ) -> OwnerSet {
        let owner_text = stored(owner).unwrap();
        let super::Claimed::Entry(claim) = store
            .claim_entry(id, &owner_text, handle, cap)
            .await
            .unwrap()
        else {
            panic!("the claim was refused");
        };
        between.await;
        store
            .settle_claim(&owner_text, handle, Vec::new(), claim)
            .await
            .unwrap()
    }

    /// Another login's cap chooses this login's session between its claim
    /// and its owner fields: exactly one session is left, and listed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_login_that_a_later_capped_login_ends_between_its_steps_does_not_live_on() {
        let store = store().await;
        let ada = ada();
        let (first, second) = (session(&store).await, session(&store).await);
        let (one, two) = (SessionHandle::generate(), SessionHandle::generate());
        let later = async {
            let set = store.set_owner(&second, &ada, &two, None, CAP_OF_ONE).await;
            assert!(matches!(set, Ok(OwnerSet::Set { .. })), "{set:?}");
        };
        let set = login_around(&store, &first, &ada, &one, CAP_OF_ONE, later).await;
        assert!(matches!(set, OwnerSet::Set { .. }), "{set:?}");
        assert!(!alive(&store, &first).await, "the earlier login was ended");
        assert!(alive(&store, &second).await, "the later login lives");
        let listed = store.sessions_of(&ada).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].handle, two);
    }

    /// `revoke_all` between a login's claim and its owner fields ends that
    /// session too: no session of the owner lives on unlisted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_login_revoked_between_its_steps_does_not_live_on() {
        let store = store().await;
        let ada = ada();
        let id = session(&store).await;
        let revoke = async {
            store.revoke_all(&ada, None).await.unwrap();
        };
        let set = login_around(&store, &id, &ada, &SessionHandle::generate(), None, revoke).await;
        assert!(matches!(set, OwnerSet::Set { .. }), "{set:?}");
        assert!(!alive(&store, &id).await, "the revoked login was ended");
        assert!(store.sessions_of(&ada).await.unwrap().is_empty());
    }

    /// A list between a login's claim and its owner fields neither shows
    /// the session nor drops its entry: the login ends listed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_list_between_a_logins_steps_keeps_its_entry() {
        let store = store().await;
        let ada = ada();
        let id = session(&store).await;
        let handle = SessionHandle::generate();
        let list = async {
            assert!(store.sessions_of(&ada).await.unwrap().is_empty());
        };
        let set = login_around(&store, &id, &ada, &handle, None, list).await;
        assert!(matches!(set, OwnerSet::Set { .. }), "{set:?}");
        let listed = store.sessions_of(&ada).await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].handle, handle);
    }

    /// A session whose owner entries a clear removed (a logout by
    /// `clear_all`) holds no place under a refusing cap: its entry is
    /// stale, not a login in flight.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cleared_session_holds_no_place_under_a_refusing_cap() {
        let store = store().await;
        let ada = ada();
        let (first, second) = (session(&store).await, session(&store).await);
        let handle = SessionHandle::generate();
        own(&store, &first, &ada, &handle).await;
        let mut clear = sessionkit_core::record::Delta::default();
        clear.clear();
        clear.set("k", b"v".to_vec());
        let applied = store.apply(&first, &clear, None).await.unwrap();
        assert!(matches!(
            applied,
            sessionkit_core::store::Applied::Applied(_)
        ));
        let refuse_over_one = Some(OwnerCap {
            max: NonZeroU32::MIN,
            when_full: WhenFull::Refuse,
        });
        let set = store
            .set_owner(
                &second,
                &ada,
                &SessionHandle::generate(),
                None,
                refuse_over_one,
            )
            .await;
        assert!(matches!(set, Ok(OwnerSet::Set { .. })), "{set:?}");
        assert!(
            alive(&store, &first).await,
            "the cleared session is not the owner's to end"
        );
    }

    /// A session that changes owner keeps its handle; a list of the new
    /// owner between the login's steps keeps the claimed entry, and the
    /// login ends listed, not ended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_list_between_the_steps_of_a_change_of_owner_keeps_the_entry() {
        let store = store().await;
        let (ada, bob) = (ada(), ada());
        let id = session(&store).await;
        let handle = SessionHandle::generate();
        own(&store, &id, &ada, &handle).await;
        let list = async {
            assert!(store.sessions_of(&bob).await.unwrap().is_empty());
        };
        let set = login_around(&store, &id, &bob, &handle, None, list).await;
        assert!(matches!(set, OwnerSet::Set { .. }), "{set:?}");
        assert!(alive(&store, &id).await);
        let listed = store.sessions_of(&bob).await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].handle, handle);
        assert!(store.sessions_of(&ada).await.unwrap().is_empty());
    }

    /// What a revocation leaves when ending a session failed after the
    /// mark (a node failing over): the mark, and the session. A retry ends
    /// it, and so does a list once the mark is a minute old.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revocation_whose_end_failed_is_finished_by_a_retry_or_a_list() {
        let store = store().await;
        let ada = ada();
        let (one, two) = (session(&store).await, session(&store).await);
        let (first, second) = (SessionHandle::generate(), SessionHandle::generate());
        own(&store, &one, &ada, &first).await;
        own(&store, &two, &ada, &second).await;
        let index = store.inner.keys.owner_key(&stored(&ada).unwrap());
        for (id, handle, at) in [(&one, &first, now_ms()), (&two, &second, 0)] {
            let mark = format!("}}revoked {at} {}", store.inner.keys.data_key(id));
            let mut hset = redis::cmd("HSET");
            hset.arg(&index).arg(handle.to_string()).arg(mark);
            store.inner.conn.query(&hset).await.unwrap();
        }
        assert!(alive(&store, &one).await && alive(&store, &two).await);
        assert!(
            store.revoke(&ada, &first).await.unwrap(),
            "the retry ends it"
        );
        assert!(!alive(&store, &one).await);
        assert!(store.sessions_of(&ada).await.unwrap().is_empty());
        assert!(
            !alive(&store, &two).await,
            "the list ended the old mark's session"
        );
    }

    /// A list between the two steps of an owned session's `change_id`
    /// keeps its entry (the marker in the old key's slot says it moved),
    /// so a `revoke_all` right after still ends the session: the second
    /// step finds the mark. The state between the steps is set up by hand.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_list_between_the_steps_of_a_change_id_keeps_the_entry_for_a_revocation() {
        let store = store().await;
        let ada = ada();
        let owner_text = stored(&ada).unwrap();
        let old = session(&store).await;
        let handle = SessionHandle::generate();
        own(&store, &old, &ada, &handle).await;
        let new = store.new_id_for(&old);
        let changed = store.change_id(&old, &new, None).await.unwrap();
        assert!(matches!(changed, IdChanged::Changed(_)), "{changed:?}");
        // Back to between the steps: the session under the new key, its
        // entry still naming the old one.
        let (from, to) = (store.keys(&old), store.keys(&new));
        let mut hset = redis::cmd("HSET");
        hset.arg(store.inner.keys.owner_key(&owner_text))
            .arg(handle.to_string())
            .arg(&from.data);
        store.inner.conn.query(&hset).await.unwrap();

        assert!(
            store.sessions_of(&ada).await.unwrap().is_empty(),
            "not listed while it moves"
        );
        store.revoke_all(&ada, None).await.unwrap();
        let moved = store
            .entry_moved(&owner_text, &handle.to_string(), &from.data, &to)
            .await
            .unwrap();
        assert!(!moved, "the second step finds the revocation's mark");
        assert!(
            !alive(&store, &new).await,
            "the revoked session ended under its new id"
        );
    }

    /// Two logins of one session at once (a login form sent twice), each
    /// with its own handle: the session stays, the owner's, under one of
    /// the two handles, listed once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_logins_of_one_session_at_once_leave_it_listed_once() {
        let store = store().await;
        let ada = ada();
        let id = session(&store).await;
        let (one, two) = (SessionHandle::generate(), SessionHandle::generate());
        let other = own(&store, &id, &ada, &two);
        let set = login_around(&store, &id, &ada, &one, None, other).await;
        assert!(matches!(set, OwnerSet::Set { .. }), "{set:?}");
        assert!(alive(&store, &id).await, "the session was ended");
        let listed = store.sessions_of(&ada).await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(
            listed[0].handle, two,
            "the login that wrote first keeps its handle"
        );
    }
}
