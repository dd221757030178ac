//! The axum extractor for [`Session`] and the error response of [`Error`].
//!
//! These impls live here, next to the types, because Rust's orphan rule
//! allows them nowhere else; they are behind the non-default `axum` feature
//! (which the `sessionkit` facade's `axum` feature turns on), so the core
//! crate depends on `axum-core` only when asked.

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use crate::error::{Error, ErrorKind};
use crate::session::Session;

/// Takes the request's [`Session`] from the extensions the session layer put
/// it in.
///
/// Fails with an [`ErrorKind::MissingLayer`] error (a 500 response) when no
/// session layer runs in front of the handler.
impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Session>().cloned().ok_or_else(|| {
            Error::new(ErrorKind::MissingLayer).with_detail(
                "the handler asked for a Session but no sessionkit SessionLayer runs in front of it",
            )
        })
    }
}

/// Answers with [`Error::status_code`] and [`Error::public_message`]; the
/// details are logged, never sent.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(error = %self, source = ?std::error::Error::source(&self), "session error");
        } else {
            tracing::info!(error = %self, "session error");
        }
        let mut response = (status, self.public_message()).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}
