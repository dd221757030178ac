//! The session's CSRF token: a synchronizer token that lives in the session,
//! and the check an HTTP integration asks for on unsafe requests.

use sha2::{Digest, Sha256};

use crate::codec::decode_value_of;
use crate::error::{Error, ErrorKind, Result};
use crate::id::{SessionId, base64url_32};
use crate::session::state::{Csrf, Stored};
use crate::session::{RequestSession, Session};

/// The entry of the session's CSRF secret, in the reserved namespace (see
/// `session/keys.rs`): plain keys, bags and flash messages never meet it.
pub(super) const SECRET_KEY: &str = "\u{1}csrf";

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
        let secret = match self.entry::<String>(SECRET_KEY).await? {
            Some(secret) => secret,
            None => {
                let secret = SessionId::generate().expose();
                self.insert_entry(SECRET_KEY, &secret)?;
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
        let Some(secret) = self.entry::<String>(SECRET_KEY).await? else {
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

/// The CSRF check of one request, as an HTTP integration asks for it: the
/// handler's first read of the stored session (or, before a write, destroy
/// or regenerate that would not read, a read made for it) compares the
/// token the request sent with the session's, in the same store round trip
/// the handler needed anyway.
///
/// Made by [`RequestSession::require_csrf_token`] before the handler runs;
/// the integration then hands it the token the request sent with
/// [`CsrfCheck::present`] (a form field or a header: see the facade's
/// `CsrfLayer`). Until then, and if it never does, the request counts as
/// having sent none, so a check that is asked for but never fed refuses
/// instead of letting requests through.
///
/// The verdict:
///
/// - **passed** when the token is the session's current one
///   ([`Session::csrf_token`]), or when the request has no stored session
///   (no id, or one the store does not know): a forged request then has no
///   session to act on, and a session it starts is a new, empty one;
/// - **refused** otherwise, including for a session that never handed out
///   a token. Then the operation that read the session fails with
///   [`ErrorKind::CsrfRejected`] (status 403), so does every later one, a
///   lock taken by that read is released without writing, nothing the
///   request changed is written, and
///   [`RequestSession::finish`] reports the refusal, so the integration
///   answers 403 even when the handler swallowed the error.
///
/// A handler that never touches its session is not checked: it acts with no
/// authority of the session's, so a forged request can make it do nothing a
/// request without the cookie could not.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> sessionkit_core::Result<()> {
/// use sessionkit_core::{ErrorKind, Outcome, SessionFactory};
///
/// let factory = SessionFactory::for_tests();
/// let first = factory.session(None);
/// first.insert("user", &"ada")?;
/// let token = first.csrf_token().await?;
/// first.save().await?;
/// let id = first.id();
///
/// // A request with the right token.
/// let request = factory.request(id);
/// request.require_csrf_token().present(Some(token));
/// assert_eq!(request.get::<String>("user").await?.as_deref(), Some("ada"));
///
/// // A forged one: no token.
/// let request = factory.request(id);
/// request.require_csrf_token().present(None);
/// let refused = request.get::<String>("user").await.unwrap_err();
/// assert_eq!(refused.kind(), ErrorKind::CsrfRejected);
/// assert_eq!(refused.status_code(), 403);
/// let finished = request.finish(Outcome::Success).await;
/// assert_eq!(finished.error.map(|e| e.kind()), Some(ErrorKind::CsrfRejected));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a check that is never presented a token refuses every request with a session"]
pub struct CsrfCheck {
    session: Session,
}

impl RequestSession {
    /// Asks for the CSRF check of this request (see [`CsrfCheck`]): call it
    /// before the handler runs, for a request with an unsafe method whose
    /// session travels in a cookie. No store call.
    pub fn require_csrf_token(&self) -> CsrfCheck {
        let session = self.session().clone();
        {
            let mut state = session.state();
            if matches!(state.csrf, Csrf::NotAsked) {
                state.csrf = match state.stored {
                    // No id: there is no stored session to act on.
                    Stored::Fresh => Csrf::Passed,
                    _ => Csrf::Pending { sent: None },
                };
            }
        }
        CsrfCheck { session }
    }
}

impl CsrfCheck {
    /// Whether the check waits for a token: `false` when the request has no
    /// stored session to check against (it sent no id), so that an
    /// integration can skip looking for one (reading a form body, say).
    pub fn is_needed(&self) -> bool {
        matches!(self.session.state().csrf, Csrf::Pending { .. })
    }

    /// The token the request sent (`None`: it sent none, or several).
    /// Only a check still pending takes it.
    pub fn present(self, sent: Option<String>) {
        let mut state = self.session.state();
        if let Csrf::Pending { sent: slot } = &mut state.csrf {
            *slot = sent;
            if !matches!(state.stored, Stored::Unloaded) {
                // Read before the check was fed: decide it now.
                state.settle_csrf();
            }
        }
    }
}

/// Whether `sent` is the token of the session `id` whose stored secret
/// entry (encoded) is `secret`. A session without a secret matches nothing.
pub(super) fn token_matches(secret: Option<&[u8]>, id: &SessionId, sent: Option<&str>) -> bool {
    let (Some(secret), Some(sent)) = (secret, sent) else {
        return false;
    };
    match decode_value_of::<String>(SECRET_KEY, secret) {
        Ok(secret) => constant_time_eq(derive(&secret, id).as_bytes(), sent.as_bytes()),
        // A corrupt secret cannot be matched; the session itself is fine.
        Err(_) => false,
    }
}

/// The error of a refused CSRF check.
pub(super) fn refusal() -> Error {
    Error::new(ErrorKind::CsrfRejected)
        .with_detail("the request did not send the session's CSRF token")
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
