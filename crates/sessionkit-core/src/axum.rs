//! The axum extractor for [`Session`] and the error response of [`Error`].
//!
//! These impls live here, next to the types, because Rust's orphan rule
//! allows them nowhere else; they are behind the non-default `axum` feature
//! (which the `sessionkit` facade's `axum` feature turns on), so the core
//! crate depends on `axum-core` only when asked.

use axum_core::body::Body;
use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;

use crate::error::{Error, ErrorKind};
use crate::response::ReportedError;
use crate::session::{Session, SessionOf};

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

/// Takes the request's [`SessionOf<K>`] from the extensions the session layer
/// tagged `K` put it in.
///
/// Fails with an [`ErrorKind::MissingLayer`] error (a 500 response) when no
/// layer with that tag runs in front of the handler.
impl<K: ?Sized + 'static, S: Send + Sync> FromRequestParts<S> for SessionOf<K> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<SessionOf<K>>().cloned().ok_or_else(|| {
            Error::new(ErrorKind::MissingLayer).with_detail(format!(
                "the handler asked for a SessionOf<{}> but no sessionkit SessionLayer with that tag runs in front of it",
                std::any::type_name::<K>()
            ))
        })
    }
}

/// Answers with [`Error::to_response`], the same response the session layer
/// gives when a flush fails, and marks it with a [`ReportedError`] so that
/// the layer's `on_error` hook can replace it.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut response = self.to_response().map(Body::from);
        response.extensions_mut().insert(ReportedError::new(self));
        response
    }
}
