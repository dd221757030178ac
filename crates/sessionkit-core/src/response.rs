//! The one mapping from an [`Error`] to an HTTP response.
//!
//! Every place that turns a session error into a response uses it: the axum
//! `IntoResponse` impl of [`Error`] (a handler that returns `Err(e)`) and the
//! session layer when the flush at the end of a request fails. Both give the
//! same status, the same headers and the same short text body; an
//! application that wants its own error page sets the layer's `on_error`
//! hook, which then replaces both.

use std::sync::Arc;

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use crate::error::Error;

impl Error {
    /// The response that reports this error to a client: the status of
    /// [`Error::status_code`] (503 for an unavailable store or a lock
    /// timeout, with `Retry-After: 1`; 409 for a session lost to a concurrent
    /// request; 500 otherwise) and [`Error::public_message`] as a
    /// `text/plain` body. The details (operation, store, cause) go to the
    /// log, at `error` level for 5xx and `info` otherwise, never to the
    /// client.
    ///
    /// ```
    /// use sessionkit_core::{Error, ErrorKind};
    ///
    /// let response = Error::new(ErrorKind::StoreUnavailable).to_response();
    /// assert_eq!(response.status(), 503);
    /// assert_eq!(response.headers()["retry-after"], "1");
    /// assert_eq!(response.headers()["content-type"], "text/plain; charset=utf-8");
    /// assert_eq!(response.body(), "session store unavailable, try again later");
    /// ```
    pub fn to_response(&self) -> Response<String> {
        let status =
            StatusCode::from_u16(self.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(error = %self, source = ?std::error::Error::source(self), "session error");
        } else {
            tracing::info!(error = %self, "session error");
        }
        let mut response = Response::new(self.public_message().to_owned());
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The response extension that marks a response made from an [`Error`] by
/// a handler (through axum's `IntoResponse`), so that the session layer's
/// `on_error` hook can replace it with the application's own page.
///
/// ```
/// use sessionkit_core::{Error, ErrorKind, ReportedError};
///
/// let reported = ReportedError::new(Error::new(ErrorKind::LockTimeout));
/// assert_eq!(reported.error().kind(), ErrorKind::LockTimeout);
/// ```
#[derive(Debug, Clone)]
pub struct ReportedError(Arc<Error>);

impl ReportedError {
    /// Marks `error` as the cause of a response.
    pub fn new(error: Error) -> Self {
        ReportedError(Arc::new(error))
    }

    /// The error the response reports.
    pub fn error(&self) -> &Error {
        &self.0
    }
}
