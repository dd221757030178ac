//! Fuzzes the decoding of store values: a corrupt or hostile record or value is an error, never a panic or an unbounded allocation.
//!
//! Run with `-rss_limit_mb` and `-malloc_limit_mb` (scripts/fuzz.sh does) so
//! that an allocation driven by a forged length field fails the run.
//!
//! - `decode_record`: any input either fails with a codec error or decodes
//!   to a record that encodes back to exactly the same bytes (the format has
//!   one spelling per record, so a decoder that accepts more is lenient in a
//!   way worth knowing); a record of the older format 1 (still read, written
//!   as format 2) must survive its re-encoding.
//! - `decode_value` into a few types that sessions commonly hold: errors are
//!   codec errors; a decoded `serde_json::Value` encodes and decodes to
//!   exactly itself. (This target found that floats did not: serde_json
//!   parsed them exactly only with its `float_roundtrip` feature, which the
//!   workspace now enables; `crates/sessionkit-core/tests/fuzz_regressions.rs`
//!   replays the input.)
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use sessionkit_core::ErrorKind;
use sessionkit_core::codec::{decode_record, decode_value, encode_record, encode_value};

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Basket {
    user: Option<String>,
    items: Vec<(String, u32)>,
    total: f64,
}

fn value_as<T: serde::de::DeserializeOwned>(data: &[u8]) -> Option<T> {
    match decode_value::<T>(data) {
        Ok(v) => Some(v),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Codec, "{e}");
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match decode_record(data) {
        // Format 1 (no flags byte) is still read, and written as format 2:
        // the record, not the bytes, must survive.
        Ok(record) if data.starts_with(b"SK\x01") => assert_eq!(
            decode_record(&encode_record(&record)).expect("a re-encoded record decodes"),
            record,
            "a format-1 record must survive its re-encoding as format 2"
        ),
        Ok(record) => assert_eq!(
            encode_record(&record),
            data,
            "a decoded record must encode back to its input"
        ),
        Err(e) => assert_eq!(e.kind(), ErrorKind::Codec, "{e}"),
    }
    if let Some(v) = value_as::<serde_json::Value>(data) {
        let again = encode_value(&v).expect("a decoded value encodes");
        let back: serde_json::Value = decode_value(&again).expect("and decodes again");
        assert_eq!(back, v, "a value must survive an encode/decode round trip");
    }
    let _ = value_as::<String>(data);
    let _ = value_as::<u64>(data);
    let _ = value_as::<Vec<String>>(data);
    let _ = value_as::<BTreeMap<String, Vec<u8>>>(data);
    let _ = value_as::<Basket>(data);
});
