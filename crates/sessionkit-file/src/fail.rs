//! I/O failures with the action and the place they happened, turned into
//! sessionkit errors.

use std::io;
use std::path::Path;

use sessionkit_core::Error;

/// The store's name in errors and logs.
pub(crate) const STORE: &str = "file";

/// An I/O error with what was being done and where.
///
/// `place` never holds a raw session id: sessions are named by their short
/// hash, so an error message can go to a log as it is.
#[derive(Debug)]
pub(crate) struct Failure {
    action: &'static str,
    place: String,
    source: io::Error,
}

impl Failure {
    /// Turns the failure into a [`StoreUnavailable`] error of `operation`,
    /// naming the action and place in the detail and keeping the I/O error
    /// as the source.
    ///
    /// [`StoreUnavailable`]: sessionkit_core::ErrorKind::StoreUnavailable
    pub(crate) fn into_error(self, operation: &'static str) -> Error {
        Error::store_unavailable(STORE, operation, self.source)
            .with_detail(format!("could not {} {}", self.action, self.place))
    }
}

/// Where a session's files live, for messages: the directory and the
/// session's short hash, never its file name (which, with hashing turned
/// off, is the id itself).
pub(crate) fn session_place(dir: &Path, short: &str) -> String {
    format!("the files of session {short} in {}", dir.display())
}

/// A path, for messages.
pub(crate) fn path_place(path: &Path) -> String {
    path.display().to_string()
}

/// Adds the action and place to an I/O result.
pub(crate) trait Context<T> {
    fn context(self, action: &'static str, place: impl FnOnce() -> String) -> Result<T, Failure>;
}

impl<T> Context<T> for io::Result<T> {
    fn context(self, action: &'static str, place: impl FnOnce() -> String) -> Result<T, Failure> {
        self.map_err(|source| Failure {
            action,
            place: place(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use sessionkit_core::ErrorKind;

    use super::*;

    #[test]
    fn errors_name_the_operation_action_and_place() {
        let failure: Result<(), Failure> = Err(io::Error::from(io::ErrorKind::PermissionDenied))
            .context("write", || session_place(Path::new("/srv/s"), "1a2b3c4d"));
        let err = failure.unwrap_err().into_error("apply");
        assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
        assert_eq!(err.store(), Some("file"));
        assert_eq!(err.operation(), Some("apply"));
        assert_eq!(
            err.to_string(),
            "session store unavailable (apply on file): could not write the files of session 1a2b3c4d in /srv/s"
        );
        assert!(err.source().is_some());
    }
}
