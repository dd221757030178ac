//! File names of sessions: derived only from validated ids, hashed by default.

use sessionkit_core::SessionId;

/// The number of stripe locks. Part of the on-disk layout: every process
/// sharing a save path must map sessions to stripes the same way.
pub(crate) const STRIPES: usize = 256;

/// How ids become file names, fixed when the store is built.
#[derive(Debug, Clone)]
pub(crate) struct Naming {
    pub(crate) hashed: bool,
    pub(crate) prefix: String,
}

/// The file-name stem of one session, with its tag for logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Name {
    /// `prefix` followed by the hex SHA-256 of the id (or the id itself).
    pub(crate) stem: String,
    /// [`SessionId::short_hash`]: the only form of the id that may be logged.
    pub(crate) short: String,
}

impl Naming {
    /// The name of a (validated) session id.
    pub(crate) fn of(&self, id: &SessionId) -> Name {
        let short = id.short_hash();
        Name {
            stem: format!("{}{}", self.prefix, id.at_rest(self.hashed)),
            short,
        }
    }

    /// The name behind a file-name stem found on disk, if it is one this
    /// store could have written; anything else is a foreign file.
    pub(crate) fn parse(&self, stem: &str) -> Option<Name> {
        let key = stem.strip_prefix(&self.prefix)?;
        let short = if self.hashed {
            let ok = key.len() == 64
                && key
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !ok {
                return None;
            }
            // `short_hash` is the first 8 hex digits of the hash, which is
            // exactly how the name starts.
            key[..8].to_owned()
        } else {
            SessionId::parse(key).ok()?.short_hash()
        };
        Some(Name {
            stem: stem.to_owned(),
            short,
        })
    }
}

impl Name {
    /// The stripe lock that guards this session (FNV-1a of the stem).
    pub(crate) fn stripe(&self) -> usize {
        let mut h: u32 = 0x811c_9dc5;
        for b in self.stem.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        h as usize % STRIPES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naming(hashed: bool, prefix: &str) -> Naming {
        Naming {
            hashed,
            prefix: prefix.to_owned(),
        }
    }

    #[test]
    fn hashed_names_never_contain_the_id_and_parse_back() {
        let id = SessionId::generate();
        let n = naming(true, "");
        let name = n.of(&id);
        assert_eq!(name.stem, id.hashed_hex());
        assert!(!name.stem.contains(&id.expose()));
        assert_eq!(name.short, id.short_hash());
        assert_eq!(n.parse(&name.stem), Some(name.clone()));
        assert!(name.stripe() < STRIPES);
    }

    #[test]
    fn raw_names_parse_back_with_the_same_short_hash() {
        let id = SessionId::generate();
        let n = naming(false, "app:");
        let name = n.of(&id);
        assert_eq!(name.stem, format!("app:{}", id.expose()));
        assert_eq!(n.parse(&name.stem), Some(name));
    }

    #[test]
    fn foreign_stems_are_rejected() {
        let hashed = naming(true, "");
        let id = SessionId::generate();
        for stem in [
            "",
            "notes",
            &"A".repeat(64),
            &"a".repeat(63),
            &id.expose(),
            &format!("x{}", id.hashed_hex()),
        ] {
            assert_eq!(hashed.parse(stem), None, "{stem:?}");
        }
        let prefixed = naming(true, "a:");
        assert_eq!(prefixed.parse(&id.hashed_hex()), None);
        assert_eq!(naming(false, "").parse(&id.hashed_hex()), None);
    }
}
