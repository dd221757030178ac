#!/usr/bin/env python3
"""What Redis spends per read, write and new session: the store's hash layout against one string per session.

Issue 18's Redis targets ask for less Redis CPU than tower-sessions per new
session and 1.3 x its throughput in a 90/10 read/write mix. The store keeps
a session as a hash (the metadata field `\\xff` and one field per entry),
so a new session needs a script (no command writes a hash only if two keys
are absent) and a read is `HGETALL`. The other layout measured here keeps
a session as one string, `<metadata>|<MessagePack map of the entries>`: a
new session is `SET ... NX PXAT` (one command, no script), a read one
`GET`, and a write a script that decodes, merges and encodes the map
(`cmsgpack`, bundled with Redis). This script measures both before anyone
rewrites the store: starts its own redis-server on a free loopback port
(stopped at the end), pipes N operations of each kind through
`redis-cli --pipe` in interleaved rounds, and prints Redis's CPU time per
operation (`used_cpu_user + used_cpu_sys`, parsing included) and the
`INFO commandstats` time of the commands sent.

Pipelined, a command's network cost is spread over many; in the load
benchmark each request is its own round trip, which adds the same few
microseconds to every option. So the differences, not the absolute
figures, carry over.

Usage: bench/redis-layout-options.py [N] [ROUNDS]   (default 30000 3)

"hash apply" and "hash create" are the APPLY and CREATE scripts of
crates/sessionkit-redis/src/scripts.rs, read from the source; the string
scripts keep the same contract (a live check on the metadata, the fence,
the expiry refreshed and capped).
"""
import os, sys, time

from redis_bench import cli, pipe, resp, script_from_source, start, stats, stop, tag

N = int(sys.argv[1]) if len(sys.argv) > 1 else 30000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
LIFETIME = 7200000

# A string-layout write: the same steps as the hash APPLY (clock, live
# check on the metadata, optional fence, merge, refreshed expiry), on
# `<metadata>|<msgpack map>`. KEYS data, lock; ARGV fence token ('' none),
# then field/value pairs to set.
STRING_APPLY = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('GET', KEYS[1])
if not v then return { 'absent' } end
local bar = string.find(v, '|', 1, true)
if not bar then return { 'foreign' } end
local c, e = string.sub(v, 1, 11), tonumber(string.sub(v, 12, 22), 16)
local l, d = string.match(string.sub(v, 23, bar - 1), '^(r?%x+):(%x+)$')
if not l or not e or now >= e then return { 'absent' } end
if ARGV[1] ~= '' and redis.pcall('GET', KEYS[2]) ~= ARGV[1] then return { 'lock_lost' } end
local entries = cmsgpack.unpack(string.sub(v, bar + 1))
for i = 2, #ARGV, 2 do entries[ARGV[i]] = ARGV[i + 1] end
local at = now + tonumber(l, 16)
local f = string.format('%s%011x%s:%s', c, at, l, d)
redis.call('SET', KEYS[1], f .. '|' .. cmsgpack.pack(entries), 'PXAT', at - 1)
return { 'applied', f }
"""

# The string value of a session, built by Redis's own cmsgpack.
PACK = "return ARGV[1] .. '|' .. cmsgpack.pack({ user = ARGV[2], count = ARGV[3] })"


def meta(now):
    return "%011x%011x%x:%x" % (now, now + LIFETIME, LIFETIME, 0)


USER, COUNT = '"user-123"', "41"


def seed(keys, layout, now):
    """N live sessions of two entries in `layout`, and their values."""
    buf = []
    if layout == "string":
        value = cli("EVAL", PACK, "0", meta(now), USER, COUNT).rstrip("\n")
    for k in keys:
        if layout == "hash":
            buf += [resp("HSET", k, "\xff", meta(now), "user", USER, "count", COUNT),
                    resp("PEXPIREAT", k, str(now + LIFETIME - 1))]
        elif layout == "string":
            buf.append(resp("SET", k, value.encode("latin-1"), "PXAT", str(now + LIFETIME - 1)))
        else:  # tower-sessions: a 16-byte random id, MessagePack record
            buf.append(resp("SET", k, os.urandom(90), "EXAT", str(now // 1000 + 7200)))
    pipe(b"".join(buf))


# option -> (layout it reads and writes, commands the client sends)
OPTIONS = {
    "hash read (HGETALL)": ("hash", ["hgetall"]),
    "string read (GET)": ("string", ["get"]),
    "tower-sessions read (GET)": ("tower", ["get"]),
    "hash apply (script)": ("hash", ["evalsha"]),
    "string apply (script)": ("string", ["evalsha"]),
    "tower-sessions save (SET)": ("tower", ["set"]),
    "hash create (script)": ("new", ["evalsha"]),
    "string create (SET NX PXAT)": ("new", ["set"]),
    "tower-sessions create (SET NX EXAT)": ("new", ["set"]),
}


def commands(option, keys, shas, now):
    at = str(now + LIFETIME - 1)
    buf = []
    string_value = None
    if option.startswith("string create"):
        string_value = cli("EVAL", PACK, "0", meta(now), USER, COUNT).rstrip("\n").encode("latin-1")
    for i, k in enumerate(keys):
        lock = k + ":lock"
        if option.endswith("(HGETALL)"):
            buf.append(resp("HGETALL", k))
        elif option.endswith("read (GET)"):
            buf.append(resp("GET", k))
        elif option == "hash apply (script)":
            buf.append(resp("EVALSHA", shas["APPLY"], "2", k, lock, "", "keep", "merge", "", "", "1",
                            "count", str(i)))
        elif option == "string apply (script)":
            buf.append(resp("EVALSHA", shas["STRING_APPLY"], "2", k, lock, "", "count", str(i)))
        elif option == "tower-sessions save (SET)":
            buf.append(resp("SET", k, os.urandom(90), "EXAT", str(now // 1000 + 7200)))
        elif option == "hash create (script)":
            buf.append(resp("EVALSHA", shas["CREATE"], "2", k, lock, meta(now), at,
                            "user", USER, "count", COUNT))
        elif option == "string create (SET NX PXAT)":
            buf.append(resp("SET", k, string_value, "NX", "PXAT", at))
        else:
            buf.append(resp("SET", k[:22], os.urandom(90), "NX", "EXAT", str(now // 1000 + 7200)))
    return b"".join(buf)


def main():
    server = start()
    try:
        sources = {"APPLY": script_from_source("APPLY"), "CREATE": script_from_source("CREATE"),
                   "STRING_APPLY": STRING_APPLY}
        print(f"{N} operations per option and round; µs per operation")
        print(f"{'round':>5} {'option':<36} {'Redis CPU':>10} {'commandstats':>13}")
        for r in range(1, ROUNDS + 1):
            for option, (layout, sent_commands) in OPTIONS.items():
                cli("FLUSHALL")
                shas = {name: cli("SCRIPT", "LOAD", src).strip() for name, src in sources.items()}
                now = int(time.time() * 1000)
                keys = ["sessionkit:{%s}" % tag() for _ in range(N)]
                if layout != "new":
                    seed(keys, layout, now)
                data = commands(option, keys, shas, now)
                cli("CONFIG", "RESETSTAT")
                _, cpu0 = stats()
                pipe(data)
                usec, cpu1 = stats()
                assert int(cli("DBSIZE").strip()) == N, f"{option}: {cli('DBSIZE')} keys"
                if option.startswith("string apply"):
                    probe = cli("EVAL", "local v = redis.call('GET', KEYS[1]); "
                                "return cmsgpack.unpack(string.sub(v, string.find(v, '|', 1, true) + 1)).count",
                                "1", keys[-1]).strip()
                    assert probe == str(N - 1), f"string apply did not merge: {probe!r}"
                if option.startswith("hash apply"):
                    assert cli("HGET", keys[-1], "count").strip() == str(N - 1), "hash apply did not merge"
                sent = sum(usec.get(c, 0) for c in sent_commands) / N
                print(f"{r:>5} {option:<36} {(cpu1 - cpu0) * 1e6 / N:>10.2f} {sent:>13.2f}")
    finally:
        stop(server)


main()
