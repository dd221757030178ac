// Values of the `\xff` metadata field that the scripts (Lua's pattern)
// and `load` (Rust's `reply::parse_meta`) must judge alike. Included with
// `include!` by the unit tests of src/reply.rs, which parse them in Rust,
// and by tests/standalone.rs, which stores each one in a real Redis and
// asks both.

/// Refused by both parsers, and why.
const GARBAGE_META: &[(&[u8], &str)] = &[
    (b"", "empty"),
    (b"19a7afd1e00fffffffffff6ddd00", "no `:`"),
    (b"19a7afd1e00fffffffffff6ddd00:", "no deadline"),
    (b"19a7afd1e00fffffffffff:0", "no ttl"),
    (b"19a7afd1e00ffffffffff:0", "expires of 10 digits"),
    (b"19a7afd1e00fffffffffff6ddd00:0:0", "two `:`"),
    (b"19a7afd1e00fffffffffff6ddd00::0", "`::`"),
    (b"19A7AFD1E00FFFFFFFFFFF6DDD00:0", "upper case"),
    (b"19a7afd1e00fffffffffff6DDD00:0", "upper case in the ttl"),
    (b"0x9a7afd1e0fffffffffff6ddd00:0", "`0x` in created"),
    (b"19a7afd1e00fffffffffff0x6ddd00:0", "`0x` in the ttl (Lua's tonumber would take it)"),
    (b"-9a7afd1e00fffffffffff6ddd00:0", "a sign in created"),
    (b"19a7afd1e00fffffffffff+6ddd00:0", "a sign in the ttl"),
    (b"19a7afd1e00fffffffffff6ddd00:-1", "a negative deadline (Lua's tonumber would take it)"),
    (b" 19a7afd1e00fffffffffff6ddd00:0", "a leading space"),
    (b"19a7afd1e00fffffffffff6ddd00:0 ", "a trailing space"),
    (b"19a7afd1e00fffffffffff 6ddd00:0", "a space inside"),
    (b"19a7afd1e00fffffffffff6ddd00:0\n", "a trailing newline"),
    (b"19a7afd1e00fffffffffff6ddd00:0\0", "a trailing NUL"),
    (b"19a7afd1e00fffffffffff6ddg00:0", "not a hex digit"),
    (b"19a7afd1e00fffffffffff10000000000000000:0", "a ttl of 17 digits (past u64)"),
    (b"19a7afd1e00fffffffffff6ddd00:10000000000000000", "a deadline of 17 digits (past u64)"),
    (b"19a7afd1e00fffffffffff000000000006ddd00:0", "17 digits of which leading zeros"),
    (b"2 1763000000000 7200000 0 17592186044415", "decimals, as earlier development versions wrote"),
    (b"\xff19a7afd1e00fffffffffff6ddd00:0", "a leading 0xFF"),
    (b"19a7afd1e00fffffffffff6ddd00:0\xc3\x28", "trailing non-UTF-8"),
];

/// Accepted by both parsers, with what they read: created, ttl, deadline
/// (0 for none), expires. Expiring in the year 2527, so that they are live.
const VALID_META: &[(&[u8], [u64; 4])] = &[
    (
        b"19a7afd1e00fffffffffff6ddd00:0",
        [0x19a_7afd_1e00, 7_200_000, 0, 0xfff_ffff_ffff],
    ),
    (b"00000000000fffffffffff0:0", [0, 0, 0, 0xfff_ffff_ffff]),
    (
        b"19a7afd1e00fffffffffff0006ddd00:00",
        [0x19a_7afd_1e00, 7_200_000, 0, 0xfff_ffff_ffff],
    ),
    (
        b"19a7afd1e00fffffffffffffffffffffffffff:ffffffffffffffff",
        [0x19a_7afd_1e00, u64::MAX, u64::MAX, 0xfff_ffff_ffff],
    ),
    (
        b"19a7afd1e00fffffffffff1:19a7b6afb00",
        [0x19a_7afd_1e00, 1, 0x19a_7b6a_fb00, 0xfff_ffff_ffff],
    ),
];
