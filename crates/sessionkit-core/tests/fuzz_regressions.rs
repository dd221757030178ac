//! Inputs found by the fuzz targets in `fuzz/`, replayed as plain tests.

use sessionkit_core::codec::{decode_value, encode_value};

/// Found by `fuzz/fuzz_targets/decode_record.rs` with the store value
/// `888…881` (74 eights, then 1): serde_json, without its `float_roundtrip`
/// feature, parses floats to within one unit in the last place only, so the
/// shortest spelling that `encode_value` writes for some `f64`s decodes to
/// a neighbour. `session.insert("x", &v)` then `session.get::<f64>("x")`
/// returned a different number for this `v` (8.888888888888889e74), until
/// the workspace turned on serde_json's `float_roundtrip`.
#[test]
fn f64_session_values_round_trip_exactly() {
    let v = f64::from_bits(5_728_422_037_377_932_434);
    let encoded = encode_value(&v).unwrap();
    let back: f64 = decode_value(&encoded).unwrap();
    assert_eq!(
        back.to_bits(),
        v.to_bits(),
        "{v:e} was stored as {} and came back as {back:e}",
        String::from_utf8_lossy(&encoded)
    );
}

/// The input as the fuzz target saw it: decoded into a `serde_json::Value`,
/// encoded again and decoded again, it changes.
#[test]
fn json_values_with_floats_round_trip_exactly() {
    let input = format!("{}1", "8".repeat(74));
    let value: serde_json::Value = decode_value(input.as_bytes()).unwrap();
    let back: serde_json::Value = decode_value(&encode_value(&value).unwrap()).unwrap();
    assert_eq!(back, value);
}

/// Found by `fuzz/fuzz_targets/decode_record.rs`: a record whose idle
/// lifetime has its top bit set (2^63 ms or more; the bit `Meta` keeps for
/// "remembered") decoded with the lifetime cut to 2^63 − 1 and encoded
/// back to other bytes. Such a lifetime is no record's: it is refused.
#[test]
fn a_record_with_an_idle_lifetime_past_2_pow_63_is_refused() {
    let input: [u8; 40] = [
        83, 75, 2, 0, 0, 0, 0, 0, 0, 39, 0, 0, 0, 0, 0, 0, 128, 128, 128, 128, 128, 128, 128, 128,
        128, 128, 128, 72, 238, 64, 0, 0, 0, 0, 72, 0, 0, 0, 0, 0,
    ];
    let err = sessionkit_core::codec::decode_record(&input).unwrap_err();
    assert_eq!(err.kind(), sessionkit_core::ErrorKind::Codec, "{err}");
}
