#!/usr/bin/env python3
"""What Redis spends on one new session, for each way `RedisStore::create` could be written.

Measures the options of the table "Why `create` is a script" in the docs of
sessionkit-redis (crates/sessionkit-redis/src/lib.rs): starts its own
redis-server on a free loopback port (stopped by PID at the end), and for
each option pipes N creates of a one-entry session through `redis-cli
--pipe`, in interleaved rounds, then reads `INFO commandstats` (the time of
the commands sent, a script's commands included) and `INFO cpu`
(`used_cpu_user + used_cpu_sys`: Redis's whole CPU time, parsing included)
per create.

Usage: bench/redis-create-options.py [N] [ROUNDS]   (default 30000 3)

"now" is the CREATE script of crates/sessionkit-redis/src/scripts.rs, read
from the source; "before" is the script as it was before issue 18. Only
"before", "now", "fast-only" and "fcall" keep the store's contract (never
overwrite a live session, never adopt an expired record or a stale lock);
the others are there to show what the contract costs, or what another
layout would: "multi-packed" / "pipe-packed" write the entries packed into
the metadata field with `HSETNX` as the guard and `PEXPIREAT … NX` (Redis
7), "string-set-nx" a session as one string (`SET … NX PXAT`).
"""
import os, sys, time

from redis_bench import cli, pipe, resp, script_from_source, start, stats, stop, tag

N = int(sys.argv[1]) if len(sys.argv) > 1 else 30000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3

BEFORE = r"""
-- The latest time the metadata holds (11 hex digits, in the year 2527);
-- computed expiries stop there.
local MAX_EXPIRY = 17592186044415

-- Redis deletes a key once its clock is past the expiry time; the contract
-- says expired once the clock reaches `expires`: hence one millisecond
-- less.
local function expire_at(key, at)
  redis.call('PEXPIREAT', key, string.format('%.0f', at - 1))
end

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

local at = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[1], KEYS[2]) == 0 then
  if at > 1 then
    hset(KEYS[1], ARGV[1], 3, #ARGV)
    expire_at(KEYS[1], at)
  end
  return 'created'
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

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
"""

# A fast path alone; the caller would run the full script when it answers
# 'occupied' (a second round trip, only for an occupied id).
FAST_ONLY = r"""
if redis.call('EXISTS', KEYS[1], KEYS[2]) == 0 then
  redis.call('HSET', KEYS[1], '\255', ARGV[2], unpack(ARGV, 3))
  redis.call('PEXPIREAT', KEYS[1], ARGV[1])
  return 'created'
end
return 'occupied'
"""

FCALL_LIB = "#!lua name=skbench\nredis.register_function('skcreate', function(KEYS, ARGV)" + FAST_ONLY + " end)"


def commands(kind, sha):
    now = int(time.time() * 1000)
    meta = "%011x%011x%x:%x" % (now, now + 7200000, 7200000, 0)
    at = str(now + 7200000 - 1)
    buf = []
    for i in range(N):
        d = "sessionkit:{%s}" % tag()
        lock, v = d + ":lock", str(i % 1000)
        if kind == "before":
            buf.append(resp("EVALSHA", sha, "2", d, lock, meta, str(now + 7200000), "n", v))
        elif kind == "now":
            buf.append(resp("EVALSHA", sha, "2", d, lock, meta, at, "n", v))
        elif kind == "fast-only":
            buf.append(resp("EVALSHA", sha, "2", d, lock, at, meta, "n", v))
        elif kind == "fcall":
            buf.append(resp("FCALL", "skcreate", "2", d, lock, at, meta, "n", v))
        elif kind == "multi-renamenx":
            stage = d + ":new"
            buf += [resp("MULTI"), resp("HSET", stage, "\xff", meta, "n", v),
                    resp("PEXPIREAT", stage, at), resp("RENAMENX", stage, d),
                    resp("DEL", stage), resp("EXEC")]
        elif kind == "multi-hsetnx":
            buf += [resp("MULTI"), resp("HSETNX", d, "\xff", meta), resp("HSET", d, "n", v),
                    resp("PEXPIREAT", d, at), resp("EXEC")]
        elif kind == "multi-packed":
            # The session's entries packed into its metadata field: one
            # HSETNX is the whole guard, and PEXPIREAT NX leaves a live
            # session's expiry alone when the guard fails.
            buf += [resp("MULTI"), resp("HSETNX", d, "\xff", meta + "|" + "n" + v),
                    resp("PEXPIREAT", d, at, "NX"), resp("EXEC")]
        elif kind == "pipe-packed":
            buf += [resp("HSETNX", d, "\xff", meta + "|" + "n" + v), resp("PEXPIREAT", d, at, "NX")]
        elif kind == "string-set-nx":
            buf.append(resp("SET", d, meta + "|" + "n" + v, "NX", "PXAT", at))
        elif kind == "no-guard":
            buf += [resp("HSET", d, "\xff", meta, "n", v), resp("PEXPIREAT", d, at)]
        elif kind == "tower-sessions-set":
            buf.append(resp("SET", tag()[:22], os.urandom(40).hex(), "NX", "EXAT", str(now // 1000 + 7200)))
    return b"".join(buf)


SENT = {"before": ["evalsha"], "now": ["evalsha"], "fast-only": ["evalsha"], "fcall": ["fcall"],
        "multi-renamenx": ["multi", "exec"], "multi-hsetnx": ["multi", "exec"],
        "multi-packed": ["multi", "exec"], "pipe-packed": ["hsetnx", "pexpireat"],
        "string-set-nx": ["set"], "no-guard": ["hset", "pexpireat"], "tower-sessions-set": ["set"]}


def main():
    server = start()
    try:
        scripts = {"before": BEFORE, "now": script_from_source("CREATE"), "fast-only": FAST_ONLY}
        print(f"{N} creates per option and round; µs per create")
        print(f"{'round':>5} {'option':<20} {'Redis CPU':>10} {'commandstats':>13}")
        for r in range(1, ROUNDS + 1):
            for kind in SENT:
                cli("FLUSHALL")
                sha = cli("SCRIPT", "LOAD", scripts[kind]).strip() if kind in scripts else None
                if kind == "fcall":
                    cli("FUNCTION", "LOAD", "REPLACE", FCALL_LIB)
                data = commands(kind, sha)
                cli("CONFIG", "RESETSTAT")
                _, cpu0 = stats()
                pipe(data)
                usec, cpu1 = stats()
                assert int(cli("DBSIZE").strip()) == N, f"{kind}: every create must have written a key"
                sent = sum(usec.get(c, 0) for c in SENT[kind]) / N
                print(f"{r:>5} {kind:<20} {(cpu1 - cpu0) * 1e6 / N:>10.2f} {sent:>13.2f}")
    finally:
        stop(server)


main()
