//! The session's CSRF token: a synchronizer token that lives in the session.

use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::id::{SessionId, base64url_32};
use crate::session::Session;

/// The entry of the session's CSRF secret, in the reserved namespace (see
/// `session/keys.rs`): plain keys, bags and flash messages never meet it.
const CSRF_SECRET: &str = "\u{1}csrf";

impl Session {
    /// The session's CSRF token (OWASP's synchronizer token), for a form
    /// field or a request header that the application's pages send back.
    ///
    /// The session keeps a random secret (created on first use, a buffered
    /// write like [`Session::insert`]); the token is derived from that
    /// secret and the session's id. So it changes with every
    /// [`Session::regenerate`] (a token from before a login is worthless
    /// after it) without a write, and dies with [`Session::destroy`]. Check
    /// a token with [`Session::csrf_token_matches`]; the facade's CSRF layer
    /// does it for every unsafe request.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// let token = session.csrf_token().await?;
    /// assert_eq!(session.csrf_token().await?, token); // stable within the session
    /// assert!(session.csrf_token_matches(&token).await?);
    /// session.regenerate().await?;
    /// assert!(!session.csrf_token_matches(&token).await?); // rotated with the id
    /// assert!(session.keys().await?.is_empty()); // not a plain key
    /// # Ok(()) }
    /// ```
    pub async fn csrf_token(&self) -> Result<String> {
        let secret = match self.entry::<String>(CSRF_SECRET).await? {
            Some(secret) => secret,
            None => {
                let secret = SessionId::generate().expose();
                self.insert_entry(CSRF_SECRET, &secret)?;
                secret
            }
        };
        let id = self.state().id_for_write();
        Ok(derive(&secret, &id))
    }

    /// Whether `presented` is the session's current CSRF token, compared in
    /// constant time. `false` when the session has no token yet (nothing
    /// stored, or [`Session::csrf_token`] never called): a request cannot
    /// match a token it was never given. Reads the session if it was not
    /// read yet (the read a handler would make anyway: it is cached).
    pub async fn csrf_token_matches(&self, presented: &str) -> Result<bool> {
        let Some(secret) = self.entry::<String>(CSRF_SECRET).await? else {
            return Ok(false);
        };
        let Some(id) = self.id() else {
            return Ok(false);
        };
        Ok(constant_time_eq(
            derive(&secret, &id).as_bytes(),
            presented.as_bytes(),
        ))
    }
}

/// The token of `secret` for the session `id`: base64url of
/// SHA-256(label, secret, id), 43 characters.
fn derive(secret: &str, id: &SessionId) -> String {
    let mut hash = Sha256::new();
    hash.update(b"sessionkit csrf token\0");
    hash.update(secret.as_bytes());
    hash.update(b"\0");
    hash.update(id.expose().as_bytes());
    base64url_32(hash.finalize().into())
}

/// `a == b` in time that depends on their lengths only, not on where they
/// first differ (a token guessed byte by byte learns nothing from timing).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn tokens_depend_on_secret_and_id() {
        let (a, b) = (SessionId::generate(), SessionId::generate());
        assert_eq!(derive("s", &a), derive("s", &a));
        assert_ne!(derive("s", &a), derive("s", &b));
        assert_ne!(derive("s", &a), derive("t", &a));
        assert_eq!(derive("s", &a).len(), 43);
    }
}
