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
    fn braces_in_the_prefix_are_refused() {
        for prefix in ["a{", "}b", "{x}"] {
            let err = KeySpace::new(prefix.to_owned(), true).unwrap_err();
            assert_eq!(err.setting(), Some("prefix"));
        }
    }
}
