//! The one error type of sessionkit, with a kind, context and a source chain.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;

/// What went wrong, in a form code can match on.
///
/// New kinds may be added in minor releases, so a `match` needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A session id was malformed (wrong length or alphabet).
    InvalidId,
    /// A cookie name breaks the naming rules or its prefix rules.
    InvalidCookieName,
    /// A configuration value is out of range or unparsable; the error names
    /// the setting.
    InvalidConfig,
    /// A write was attempted where the policy forbids it, for example outside
    /// a lock under [`WritePolicy::LockedOnly`](crate::WritePolicy::LockedOnly).
    ModificationDenied,
    /// The session lock could not be acquired within the configured wait.
    LockTimeout,
    /// The lock expired or was taken by another request before the commit;
    /// nothing was written.
    LockLost,
    /// The session was destroyed (or expired) by the time a write reached the
    /// store; the write was refused rather than bringing the session back.
    SessionGone,
    /// A value could not be serialized or deserialized, or a stored record is
    /// corrupt.
    Codec,
    /// The store could not be reached or failed while doing an operation.
    StoreUnavailable,
    /// A file store's save path is not a writable directory.
    InvalidSavePath,
    /// No save path was given and none could be determined.
    SavePathUnavailable,
    /// A handler asked for the session but no session layer runs in front of
    /// it.
    MissingLayer,
    /// A request with an unsafe method was refused as a possible cross-site
    /// request forgery: it did not send the session's CSRF token, or it came
    /// from another site or origin (see the facade's `CsrfLayer`). Status
    /// 403; nothing the request changed in the session was written.
    CsrfRejected,
    /// An owner or a session handle is malformed (see
    /// [`owner`](crate::owner)); the error never repeats it.
    InvalidOwner,
    /// The store keeps no index of owners' sessions (see
    /// [`OwnerIndex`](crate::owner::OwnerIndex)).
    OwnersUnsupported,
    /// The owner has as many sessions as the cap allows, and the cap
    /// refuses more ([`WhenFull::Refuse`](crate::owner::WhenFull::Refuse)).
    OwnerFull,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidId => "invalid session id",
            ErrorKind::InvalidCookieName => "invalid cookie name",
            ErrorKind::InvalidConfig => "invalid configuration",
            ErrorKind::ModificationDenied => "session modification denied",
            ErrorKind::LockTimeout => "timed out waiting for the session lock",
            ErrorKind::LockLost => "session lock lost",
            ErrorKind::SessionGone => "session gone",
            ErrorKind::Codec => "session codec error",
            ErrorKind::StoreUnavailable => "session store unavailable",
            ErrorKind::InvalidSavePath => "invalid save path",
            ErrorKind::SavePathUnavailable => "save path unavailable",
            ErrorKind::MissingLayer => "session layer missing",
            ErrorKind::CsrfRejected => "request refused by the CSRF check",
            ErrorKind::InvalidOwner => "invalid session owner or handle",
            ErrorKind::OwnersUnsupported => "the store keeps no owner index",
            ErrorKind::OwnerFull => "the owner has as many sessions as allowed",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn StdError + Send + Sync + 'static>;

/// An error from sessionkit or one of its stores.
///
/// Carries an [`ErrorKind`], the operation and store it came from when known,
/// a detail message, and the underlying error as [`source`](StdError::source).
/// `Display` is one lowercase line without the source; walk the chain for the
/// cause.
///
/// Store implementations build errors with the public constructors:
///
/// ```
/// use sessionkit_core::{Error, ErrorKind};
///
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
/// let err = Error::store_unavailable("my-store", "load", io);
/// assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
/// assert_eq!(err.to_string(), "session store unavailable (load on my-store)");
/// assert!(std::error::Error::source(&err).is_some());
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    operation: Option<&'static str>,
    store: Option<&'static str>,
    detail: Option<Cow<'static, str>>,
    source: Option<Source>,
}

impl Error {
    /// An error of the given kind with no context yet.
    pub fn new(kind: ErrorKind) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                operation: None,
                store: None,
                detail: None,
                source: None,
            }),
        }
    }

    /// A store failure: `store` names the backend (`"redis"`), `operation`
    /// the store operation (`"load"`), `source` the cause.
    pub fn store_unavailable(
        store: &'static str,
        operation: &'static str,
        source: impl Into<Source>,
    ) -> Self {
        Error::new(ErrorKind::StoreUnavailable)
            .with_store(store)
            .with_operation(operation)
            .with_source(source)
    }

    /// An invalid configuration value; `setting` names it, `detail` says what
    /// was given and what is accepted.
    ///
    /// Credentials in `detail` (the password of an echoed URL) are replaced
    /// by `***` with [`redact_credentials`](crate::redact_credentials), as a
    /// safety net: callers should redact what they echo themselves.
    ///
    /// ```
    /// use sessionkit_core::{Error, ErrorKind};
    ///
    /// let err = Error::invalid_config("lifetime", "must be greater than zero");
    /// assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    /// assert_eq!(err.setting(), Some("lifetime"));
    ///
    /// let err = Error::invalid_config("url", "got redis://:hunter2@cache:6379, expected one URL");
    /// assert_eq!(err.detail(), Some("got redis://***@cache:6379, expected one URL"));
    /// ```
    pub fn invalid_config(setting: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        let detail = detail.into();
        let redacted = match crate::redact_credentials(&detail) {
            Cow::Owned(text) => Some(text),
            Cow::Borrowed(_) => None,
        };
        let mut err =
            Error::new(ErrorKind::InvalidConfig).with_detail(redacted.map_or(detail, Cow::Owned));
        err.inner.operation = Some(setting);
        err
    }

    /// Renames the setting of an [`ErrorKind::InvalidConfig`] error, for a
    /// layer that knows the setting by another name (the environment
    /// variable behind a store's builder setting). Other kinds are returned
    /// unchanged.
    ///
    /// ```
    /// use sessionkit_core::Error;
    ///
    /// let err = Error::invalid_config("url", "not a valid Redis URL").with_setting("SESSION_REDIS_URL");
    /// assert_eq!(err.setting(), Some("SESSION_REDIS_URL"));
    /// assert_eq!(err.to_string(), "invalid configuration for `SESSION_REDIS_URL`: not a valid Redis URL");
    /// ```
    pub fn with_setting(mut self, setting: &'static str) -> Self {
        if self.inner.kind == ErrorKind::InvalidConfig {
            self.inner.operation = Some(setting);
        }
        self
    }

    /// A codec failure with its cause.
    pub fn codec(detail: impl Into<Cow<'static, str>>, source: Option<Source>) -> Self {
        let err = Error::new(ErrorKind::Codec).with_detail(detail);
        match source {
            Some(s) => err.with_source(s),
            None => err,
        }
    }

    /// Adds the name of the store.
    pub fn with_store(mut self, store: &'static str) -> Self {
        self.inner.store = Some(store);
        self
    }

    /// Adds the name of the operation.
    pub fn with_operation(mut self, operation: &'static str) -> Self {
        self.inner.operation = Some(operation);
        self
    }

    /// Adds a detail message.
    pub fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.inner.detail = Some(detail.into());
        self
    }

    /// Adds the underlying cause.
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The operation that failed (`"load"`, `"apply"`, …), when known.
    ///
    /// For [`ErrorKind::InvalidConfig`] this is `None`; see
    /// [`Error::setting`].
    pub fn operation(&self) -> Option<&'static str> {
        match self.inner.kind {
            ErrorKind::InvalidConfig => None,
            _ => self.inner.operation,
        }
    }

    /// The configuration setting at fault, for
    /// [`ErrorKind::InvalidConfig`].
    pub fn setting(&self) -> Option<&'static str> {
        match self.inner.kind {
            ErrorKind::InvalidConfig => self.inner.operation,
            _ => None,
        }
    }

    /// The store that failed, when known.
    pub fn store(&self) -> Option<&'static str> {
        self.inner.store
    }

    /// The detail message, when there is one.
    pub fn detail(&self) -> Option<&str> {
        self.inner.detail.as_deref()
    }

    /// Whether the error means the store could not do its work, so that the
    /// request should be answered with `503 Service Unavailable` and may be
    /// retried.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::StoreUnavailable | ErrorKind::LockTimeout
        )
    }
}

impl Error {
    /// The HTTP status a response should carry when this error ends a
    /// request: 503 for store failures and lock timeouts (worth a retry), 409
    /// for a session that was lost to a concurrent request (gone, lock lost),
    /// 403 for a request the CSRF check refused and a login beyond the cap
    /// of sessions per owner, 500 for everything else.
    ///
    /// ```
    /// use sessionkit_core::{Error, ErrorKind};
    ///
    /// assert_eq!(Error::new(ErrorKind::StoreUnavailable).status_code(), 503);
    /// assert_eq!(Error::new(ErrorKind::SessionGone).status_code(), 409);
    /// assert_eq!(Error::new(ErrorKind::Codec).status_code(), 500);
    /// ```
    pub fn status_code(&self) -> u16 {
        match self.inner.kind {
            ErrorKind::StoreUnavailable | ErrorKind::LockTimeout => 503,
            ErrorKind::SessionGone | ErrorKind::LockLost => 409,
            ErrorKind::CsrfRejected | ErrorKind::OwnerFull => 403,
            _ => 500,
        }
    }

    /// A message safe to show a client: it names what happened, never the
    /// operation, store, id or cause (those go to the log).
    pub fn public_message(&self) -> &'static str {
        match self.inner.kind {
            ErrorKind::StoreUnavailable => "session store unavailable, try again later",
            ErrorKind::LockTimeout => "session busy, try again later",
            ErrorKind::SessionGone => "the session ended during the request; nothing was saved",
            ErrorKind::LockLost => "the session changed during the request; nothing was saved",
            ErrorKind::MissingLayer => "internal error: session layer missing",
            ErrorKind::OwnerFull => "too many sessions: sign out on another device first",
            ErrorKind::CsrfRejected => {
                "request refused: it came from another site, or without this page's CSRF token; reload the page and try again"
            }
            _ => "internal server error",
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        if let Some(op) = self.inner.operation {
            d.field(
                if self.inner.kind == ErrorKind::InvalidConfig {
                    "setting"
                } else {
                    "operation"
                },
                &op,
            );
        }
        if let Some(store) = self.inner.store {
            d.field("store", &store);
        }
        if let Some(detail) = &self.inner.detail {
            d.field("detail", detail);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        if inner.kind == ErrorKind::InvalidConfig {
            write!(f, "{}", inner.kind)?;
            if let Some(setting) = inner.operation {
                write!(f, " for `{setting}`")?;
            }
        } else {
            write!(f, "{}", inner.kind)?;
            match (inner.operation, inner.store) {
                (Some(op), Some(store)) => write!(f, " ({op} on {store})")?,
                (Some(op), None) => write!(f, " ({op})")?,
                (None, Some(store)) => write!(f, " ({store})")?,
                (None, None) => {}
            }
        }
        if let Some(detail) = &inner.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_lowercase_without_trailing_period() {
        let cases = [
            Error::new(ErrorKind::LockLost).with_operation("commit"),
            Error::invalid_config("lifetime", "must be greater than zero"),
            Error::store_unavailable("memory", "load", std::io::Error::other("x")),
        ];
        for err in cases {
            let text = err.to_string();
            assert!(!text.ends_with('.'), "{text}");
            assert_eq!(
                text.chars().next().unwrap().to_lowercase().next(),
                text.chars().next()
            );
        }
    }

    #[test]
    fn invalid_config_names_the_setting() {
        let err = Error::invalid_config("touch_threshold", "must be in (0, 1]");
        assert_eq!(
            err.to_string(),
            "invalid configuration for `touch_threshold`: must be in (0, 1]"
        );
        assert_eq!(err.setting(), Some("touch_threshold"));
        assert_eq!(err.operation(), None);
    }

    #[test]
    fn source_chain_is_kept() {
        let io = std::io::Error::other("boom");
        let err = Error::store_unavailable("file", "apply", io);
        let source = StdError::source(&err).unwrap();
        assert_eq!(source.to_string(), "boom");
    }

    #[test]
    fn error_is_send_sync_and_small() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Error>();
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }
}
