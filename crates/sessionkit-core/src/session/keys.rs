//! Where a session's entries live: plain keys, and the reserved namespace of bags and flash messages.
//!
//! Bags and flash messages are ordinary entries of the session (so each is
//! read and written on its own and concurrent writes merge key by key), but
//! their keys start with [`RESERVED`], U+0001, which a plain key may not
//! start with. So a plain key `cart:apple` is never an entry of bag `cart`,
//! and `keys()`, `data()`, `is_empty()` and `clear()` of the session see
//! plain keys only.
//!
//! The layout: `\u{1}bag\u{1}<bag name>\u{1}<key>` for a bag's entry,
//! `\u{1}flash\u{1}<key>` for a flash message. U+0001 is a control
//! character no one types, valid UTF-8 and valid in every store's key (a
//! JSON string, a Redis hash field, a PostgreSQL `jsonb` key, where U+0000
//! would not be).

use crate::error::{Error, Result};

/// The first character of every reserved key.
pub(crate) const RESERVED: char = '\u{1}';

/// Whether `key` is a plain key (the handler's own, outside every bag).
pub(crate) fn is_plain(key: &str) -> bool {
    !key.starts_with(RESERVED)
}

/// Refuses a plain key that would enter the reserved namespace.
pub(crate) fn check_plain(key: &str) -> Result<()> {
    if is_plain(key) {
        Ok(())
    } else {
        Err(Error::invalid_config(
            "session key",
            "may not start with U+0001, which marks the entries of bags and flash messages",
        ))
    }
}

/// The prefix of the entries of bag `name`.
pub(crate) fn bag_prefix(name: &str) -> Result<String> {
    if name.is_empty() || name.contains(RESERVED) {
        return Err(Error::invalid_config(
            "bag name",
            format!("{:?}: must be non-empty and may not contain U+0001", name),
        ));
    }
    Ok(format!("{RESERVED}bag{RESERVED}{name}{RESERVED}"))
}

/// The prefix of flash messages.
pub(crate) const FLASH_PREFIX: &str = "\u{1}flash\u{1}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_keys_never_look_plain_and_bags_never_overlap() {
        let cart = bag_prefix("cart").unwrap();
        let typed = bag_prefix("my_app::Cart<u8>").unwrap();
        assert!(!is_plain(&cart) && !is_plain(&typed) && !is_plain(FLASH_PREFIX));
        assert!(is_plain("cart:apple"));
        // A bag's prefix ends with the separator, so no bag's entries start
        // with another bag's prefix.
        let car = bag_prefix("car").unwrap();
        assert!(!format!("{cart}x").starts_with(&car));
        assert!(check_plain("\u{1}x").is_err());
        assert!(bag_prefix("").is_err() && bag_prefix("a\u{1}b").is_err());
    }
}
