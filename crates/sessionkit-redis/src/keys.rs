//! Redis key names: prefix, hash tag, the id (hashed by default) and the lock suffix.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sessionkit_core::{Error, SessionId};

/// The default key prefix.
pub(crate) const DEFAULT_PREFIX: &str = "sessionkit:";

/// The suffix that turns a session's data key into its lock key.
const LOCK_SUFFIX: &str = ":lock";

/// What starts the tag of a key that carries the id itself. `.` is not in
/// the base64url alphabet, so no hashed tag (43 characters of base64url)
/// ever starts like this: a hashed key's tag, presented as a cookie to a
/// store with hashing off, names a key that does not exist.
const RAW_TAG: &str = "raw.";

/// How a store names its keys.
///
/// Data lives at `{prefix}{<tag>}` and the lock at `{prefix}{<tag>}:lock`,
/// where `<tag>` is the SHA-256 of the id in unpadded base64url, 43
/// characters (hashed at rest), or `raw.` and the 43-character id itself.
/// The braces make `<tag>` the Redis Cluster hash tag, so a session's data
/// and lock share one slot and one script can touch both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeySpace {
    prefix: String,
    hash_ids: bool,
}

impl KeySpace {
    /// Checks the prefix: braces would move or break the hash tag, so that a
    /// session's data and lock could land in different cluster slots.
    pub(crate) fn new(prefix: String, hash_ids: bool) -> Result<Self, Error> {
        if prefix.contains(['{', '}']) {
            return Err(Error::invalid_config(
                "prefix",
                "must not contain `{` or `}` (they would change the Redis Cluster hash tag)",
            ));
        }
        Ok(KeySpace { prefix, hash_ids })
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn hash_ids(&self) -> bool {
        self.hash_ids
    }

    /// The data key and the lock key of `id`.
    pub(crate) fn keys(&self, id: &SessionId) -> SessionKeys {
        let data = self.data_key(id);
        let mut lock = String::with_capacity(data.len() + LOCK_SUFFIX.len());
        lock.push_str(&data);
        lock.push_str(LOCK_SUFFIX);
        SessionKeys { data, lock }
    }

    /// The data key of `id` alone, for a read, which needs no lock key.
    pub(crate) fn data_key(&self, id: &SessionId) -> String {
        let mut data = String::with_capacity(self.prefix.len() + 2 + RAW_TAG.len() + 43);
        data.push_str(&self.prefix);
        data.push('{');
        if self.hash_ids {
            // Base64url rather than hex: 43 bytes instead of 64 in every
            // key, which Redis keeps in memory once per session.
            URL_SAFE_NO_PAD.encode_string(id.hashed(), &mut data);
        } else {
            data.push_str(RAW_TAG);
            id.expose_into(&mut data);
        }
        data.push('}');
        data
    }
}

impl KeySpace {
    /// The key of an owner's index: `{prefix}{o.<SHA-1 of the owner as
    /// stored>}`, the stored owner being its JSON text (what the session's
    /// reserved owner entry holds, byte for byte), SHA-1 in 40 lowercase
    /// hex digits.
    ///
    /// Hashed because owners are free text: braces in one would move the
    /// hash tag, and a long one would make a long key. SHA-1 because the
    /// scripts compute the same name (`redis.sha1hex`) when `change_id`
    /// moves an owned session; it is no security boundary here: every
    /// index entry is checked against the owner the session itself
    /// carries, so two owners whose names collide share a hash, not
    /// sessions. `o.` is not in the base64url alphabet and is not `raw.`,
    /// so an index key never names a session's key.
    pub(crate) fn owner_key(&self, stored_owner: &[u8]) -> String {
        let digest = sha1_smol::Sha1::from(stored_owner).digest();
        format!("{}{{o.{digest}}}", self.prefix)
    }
}

impl KeySpace {
    /// The Redis Cluster hash slot of `id`'s keys, as `CLUSTER KEYSLOT`
    /// computes it: the slot of the hash tag `<tag>`. No allocation: a
    /// regenerate in a cluster computes it some 16,000 times.
    pub(crate) fn slot(&self, id: &SessionId) -> u16 {
        let mut tag = [0u8; RAW_TAG.len() + 43];
        let len = if self.hash_ids {
            URL_SAFE_NO_PAD
                .encode_slice(id.hashed(), &mut tag)
                .expect("43 bytes hold a SHA-256 in base64url")
        } else {
            tag[..RAW_TAG.len()].copy_from_slice(RAW_TAG.as_bytes());
            // The id's text is the unpadded base64url of its bytes.
            RAW_TAG.len()
                + URL_SAFE_NO_PAD
                    .encode_slice(id.as_bytes(), &mut tag[RAW_TAG.len()..])
                    .expect("43 bytes hold an id in base64url")
        };
        slot_of_tag(&tag[..len])
    }

    /// A fresh random id whose keys share the hash slot of `old`'s keys, and
    /// how many ids it drew. One in 16,384 fresh ids falls in a given slot,
    /// so it draws 16,384 on average (rejection sampling: the id is uniform
    /// among the ids of that slot); see the [crate docs](crate#redis-cluster)
    /// for the time it takes and the `# Security` note.
    ///
    /// Gives up after [`MAX_DRAWS`] (a chance of e^-128) and returns an id
    /// of another slot, which `change_id` refuses.
    pub(crate) fn id_in_slot_of(&self, old: &SessionId) -> (SessionId, u32) {
        let slot = self.slot(old);
        let mut id = SessionId::generate();
        let mut draws = 1;
        while self.slot(&id) != slot && draws < MAX_DRAWS {
            id = SessionId::generate();
            draws += 1;
        }
        (id, draws)
    }
}

/// The most ids [`KeySpace::id_in_slot_of`] draws: 128 × 16,384, so it
/// fails with a chance of (1 − 1/16384)^(128 × 16384) ≈ e^-128.
const MAX_DRAWS: u32 = 128 * SLOTS as u32;

/// The number of hash slots of a Redis Cluster.
const SLOTS: u16 = 16384;

/// The hash slot of a key whose hash tag is `tag`: CRC16 (the XMODEM
/// variant: polynomial 0x1021, initial value 0, no reflection) modulo 16,384,
/// as in the [Redis Cluster specification](https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#hash-slots-and-hash-tags).
pub(crate) fn slot_of_tag(tag: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in tag {
        crc = (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ byte)];
    }
    crc % SLOTS
}

/// CRC16-XMODEM of each byte value, computed at compile time.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// The two keys of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionKeys {
    pub(crate) data: String,
    pub(crate) lock: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_keys_share_a_hash_tag_and_hide_the_id() {
        let space = KeySpace::new(DEFAULT_PREFIX.to_owned(), true).unwrap();
        let id = SessionId::generate();
        let keys = space.keys(&id);
        assert!(keys.data.starts_with("sessionkit:{"));
        assert!(keys.data.ends_with('}'));
        assert_eq!(keys.lock, format!("{}:lock", keys.data));
        assert_eq!(space.data_key(&id), keys.data);
        assert_eq!(keys.data.len(), "sessionkit:{}".len() + 43);
        assert!(!keys.data.contains(&id.expose()));
        let tag = &keys.data["sessionkit:{".len()..keys.data.len() - 1];
        assert_eq!(URL_SAFE_NO_PAD.decode(tag).unwrap(), id.hashed());
    }

    #[test]
    fn hashed_tag_is_base64url_of_the_sha256_of_the_id_text() {
        // A fixed id, so that the naming cannot change unnoticed: stored
        // sessions are found by it.
        let id = SessionId::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        let space = KeySpace::new("p:".to_owned(), true).unwrap();
        // printf %s AAA…A (43 A) | sha256sum | xxd -r -p | basenc --base64url,
        // without the trailing `=`.
        assert_eq!(
            space.keys(&id).data,
            "p:{DwBzhbb51LfusnSGBa_hqYSgo7-j8BTQnip4TOnlzRo}"
        );
    }

    #[test]
    fn raw_keys_carry_the_id_after_raw_dot() {
        let space = KeySpace::new("app:".to_owned(), false).unwrap();
        let id = SessionId::generate();
        let keys = space.keys(&id);
        assert_eq!(keys.data, format!("app:{{raw.{}}}", id.expose()));
        assert_eq!(keys.lock, format!("app:{{raw.{}}}:lock", id.expose()));
        assert_eq!(space.data_key(&id), keys.data);
    }

    #[test]
    fn a_hashed_tag_presented_as_an_id_never_names_a_key() {
        // The operator's mistake this guards against: a prefix that holds
        // hashed sessions, served by a store with hashing off. The key names
        // of a leaked dump are well-formed ids; as cookies they must find
        // nothing.
        let hashed = KeySpace::new("p:".to_owned(), true).unwrap();
        let raw = KeySpace::new("p:".to_owned(), false).unwrap();
        for _ in 0..100 {
            let victim = SessionId::generate();
            let leaked = hashed.data_key(&victim);
            let tag = &leaked["p:{".len()..leaked.len() - 1];
            assert!(!tag.contains('.'), "{tag}");
            let presented = SessionId::parse(tag).expect("a hashed tag has the form of an id");
            assert_ne!(raw.data_key(&presented), leaked);
            assert!(raw.data_key(&presented).starts_with("p:{raw."));
            // The other way round: a raw tag is not an id at all.
            let raw_tag = &raw.data_key(&victim)["p:{".len()..];
            assert!(SessionId::parse(raw_tag.trim_end_matches('}')).is_err());
        }
    }

    #[test]
    fn crc16_is_xmodem_and_slots_match_the_cluster_spec() {
        // The check value of CRC-16/XMODEM, and the example of the Redis
        // Cluster specification (`CLUSTER KEYSLOT` is tested against a real
        // cluster in tests/cluster.rs).
        let mut crc: u16 = 0;
        for &byte in b"123456789" {
            crc = (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ byte)];
        }
        assert_eq!(crc, 0x31c3);
        assert_eq!(slot_of_tag(b"123456789"), 12739);
        assert_eq!(slot_of_tag(b"somekey"), 11058);
        assert_eq!(slot_of_tag(b"hash_tag"), 2515);
        assert_eq!(slot_of_tag(b""), 0);
    }

    #[test]
    fn the_slot_is_the_slot_of_the_tag_in_the_key() {
        for hash_ids in [true, false] {
            let space = KeySpace::new("p:".to_owned(), hash_ids).unwrap();
            for _ in 0..50 {
                let id = SessionId::generate();
                let data = space.data_key(&id);
                let tag = &data["p:{".len()..data.len() - 1];
                assert_eq!(space.slot(&id), slot_of_tag(tag.as_bytes()), "{data}");
            }
        }
    }

    #[test]
    fn ids_drawn_for_a_slot_land_in_it() {
        for hash_ids in [true, false] {
            let space = KeySpace::new("p:".to_owned(), hash_ids).unwrap();
            let old = SessionId::generate();
            let (new, draws) = space.id_in_slot_of(&old);
            assert_ne!(new, old);
            assert_eq!(space.slot(&new), space.slot(&old));
            assert!((1..MAX_DRAWS).contains(&draws), "{draws}");
        }
    }

    /// The time a regenerate in a cluster spends drawing ids. Run with
    /// `cargo test -p sessionkit-redis --release --lib -- --ignored --nocapture drawing`.
    #[test]
    #[ignore = "a measurement, for the crate docs"]
    fn drawing_an_id_in_a_slot_costs() {
        for hash_ids in [true, false] {
            let space = KeySpace::new(DEFAULT_PREFIX.to_owned(), hash_ids).unwrap();
            let runs = 2000u32;
            let start = std::time::Instant::now();
            let mut draws = Vec::with_capacity(runs as usize);
            for _ in 0..runs {
                draws.push(space.id_in_slot_of(&SessionId::generate()).1);
            }
            let elapsed = start.elapsed();
            let total: u64 = draws.iter().map(|&d| u64::from(d)).sum();
            draws.sort_unstable();
            eprintln!(
                "hash_ids {hash_ids}: {runs} ids, {:.0} draws on average (median {}, p99 {}), {:.2} ms per id, {:.0} ns per draw",
                total as f64 / f64::from(runs),
                draws[draws.len() / 2],
                draws[draws.len() * 99 / 100],
                elapsed.as_secs_f64() * 1000.0 / f64::from(runs),
                elapsed.as_nanos() as f64 / total as f64,
            );
        }
    }

    #[test]
    fn braces_in_the_prefix_are_refused() {
        for prefix in ["a{", "}b", "{x}"] {
            let err = KeySpace::new(prefix.to_owned(), true).unwrap_err();
            assert_eq!(err.setting(), Some("prefix"));
        }
    }
}
