//! Signed session cookies: an HMAC next to the id, with key rotation.
//!
//! Opt-in with [`CookieConfig::signing_keys`](crate::CookieConfig::signing_keys).
//! The cookie then carries `<id>.<mac>`, where `mac` is HMAC-SHA256 over the
//! cookie name and the id, base64url-encoded. The first key signs; every key
//! verifies, so keys can be rotated without logging anyone out: add the new
//! key first, keep the old one until the longest session has expired, then
//! drop it.
//!
//! A cookie whose MAC matches no key is rejected before any store call. Ids
//! are 256 random bits and unknown ids are never adopted, so signing does not
//! make sessions harder to guess; what it buys is that forged or stale
//! cookies are refused without touching the store, and that a leaked store
//! dump of raw ids (with hashing at rest off) cannot be replayed without the
//! key.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sessionkit_core::{Error, SESSION_ID_LEN as ID_LEN, SessionId};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length in characters of an encoded MAC.
const MAC_LEN: usize = 43;

/// The shortest key accepted, in bytes: as long as the HMAC-SHA256 output.
pub const MIN_KEY_LEN: usize = 32;

/// A key for signing session cookies: at least 32 bytes of secret.
///
/// `Debug` never shows the key.
///
/// ```
/// use sessionkit::signing::SigningKey;
///
/// assert!(SigningKey::new(b"0123456789abcdef0123456789abcdef".to_vec()).is_ok());
/// let err = SigningKey::new(b"too short".to_vec()).unwrap_err();
/// assert_eq!(err.kind(), sessionkit::ErrorKind::InvalidConfig);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// A key from secret bytes; fewer than [`MIN_KEY_LEN`] is an
    /// [`InvalidConfig`](sessionkit_core::ErrorKind::InvalidConfig) error.
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, Error> {
        let secret = secret.into();
        if secret.len() < MIN_KEY_LEN {
            return Err(Error::invalid_config(
                "cookie.signing_keys",
                format!(
                    "a signing key has {} bytes; at least {MIN_KEY_LEN} are needed",
                    secret.len()
                ),
            ));
        }
        Ok(SigningKey(secret))
    }

    fn mac(&self, name: &str, id: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(name.as_bytes());
        mac.update(b"=");
        mac.update(id.as_bytes());
        mac
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({} bytes)", self.0.len())
    }
}

/// The cookie value for `id`, signed with the first key.
pub(crate) fn sign(keys: &[SigningKey], name: &str, id: &SessionId) -> String {
    let id = id.expose();
    let tag = keys[0].mac(name, &id).finalize().into_bytes();
    format!("{id}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// Why a signed cookie was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not `<id>.<mac>` with a well-formed id.
    Malformed,
    /// Well-formed, but no key made its MAC.
    BadSignature,
    /// Several cookies of the session's name.
    Ambiguous,
}

/// Checks a signed cookie value against every key (in constant time per
/// key) and returns its id.
pub(crate) fn verify(keys: &[SigningKey], name: &str, value: &[u8]) -> Result<SessionId, Refused> {
    if value.len() != ID_LEN + 1 + MAC_LEN || value[ID_LEN] != b'.' {
        return Err(Refused::Malformed);
    }
    let (text, mac) = (&value[..ID_LEN], &value[ID_LEN + 1..]);
    let id = SessionId::parse_bytes(text).map_err(|_| Refused::Malformed)?;
    let mut tag = [0u8; 32];
    match URL_SAFE_NO_PAD.decode_slice(mac, &mut tag) {
        Ok(32) => {}
        _ => return Err(Refused::Malformed),
    }
    // A parsed id is ASCII.
    let text = std::str::from_utf8(text).map_err(|_| Refused::Malformed)?;
    if keys
        .iter()
        .any(|key| key.mac(name, text).verify_slice(&tag).is_ok())
    {
        Ok(id)
    } else {
        Err(Refused::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: u8) -> SigningKey {
        SigningKey::new(vec![c; 32]).unwrap()
    }

    #[test]
    fn signed_values_verify_with_any_listed_key() {
        let id = SessionId::generate();
        let old = sign(&[key(1)], "session", &id);
        // After rotation: the new key signs, the old one still verifies.
        let rotated = [key(2), key(1)];
        assert_eq!(verify(&rotated, "session", old.as_bytes()), Ok(id));
        let new = sign(&rotated, "session", &id);
        assert_ne!(new, old);
        assert_eq!(verify(&rotated, "session", new.as_bytes()), Ok(id));
        // Once the old key is dropped, its cookies are refused.
        assert_eq!(
            verify(&[key(2)], "session", old.as_bytes()),
            Err(Refused::BadSignature)
        );
    }

    #[test]
    fn tampering_is_detected() {
        let id = SessionId::generate();
        let good = sign(&[key(1)], "session", &id);
        // Another id with the first one's MAC.
        let other = SessionId::generate().expose();
        let forged = format!("{other}{}", &good[43..]);
        assert_eq!(
            verify(&[key(1)], "session", forged.as_bytes()),
            Err(Refused::BadSignature)
        );
        // The same value under another cookie name.
        assert_eq!(
            verify(&[key(1)], "other", good.as_bytes()),
            Err(Refused::BadSignature)
        );
        // Flipped MAC characters.
        let mut bytes = good.clone().into_bytes();
        bytes[50] = if bytes[50] == b'A' { b'B' } else { b'A' };
        assert!(verify(&[key(1)], "session", &bytes).is_err());
    }

    #[test]
    fn malformed_values_are_refused() {
        let id = SessionId::generate().expose();
        for bad in [
            String::new(),
            id.clone(),
            format!("{id}."),
            format!("{id}.{}", "A".repeat(42)),
            format!("{id}!{}", "A".repeat(43)),
            format!("{id}.{}", "*".repeat(43)),
        ] {
            assert_eq!(
                verify(&[key(1)], "session", bad.as_bytes()),
                Err(Refused::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(format!("{:?}", key(7)), "SigningKey(32 bytes)");
    }
}
