//! The actix-web extractor for [`Session`] and the error response of [`Error`].
//!
//! These impls live here, next to the types, for the same reason as the
//! axum ones: Rust's orphan rule allows them nowhere else. They are behind
//! the non-default `actix` feature (which the `sessionkit` facade's `actix`
//! feature turns on), so the core crate depends on actix-web only when asked.
//!
//! actix-web 4 speaks the `http` 0.2 types while the rest of sessionkit
//! speaks `http` 1; [`into_actix_response`] is the one bridge between them.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};

use crate::error::{Error, ErrorKind};
use crate::session::{Session, SessionOf};

/// Takes the request's [`Session`] from the extensions the session
/// middleware put it in.
///
/// Fails with an [`ErrorKind::MissingLayer`] error (a 500 response) when no
/// session middleware wraps the handler.
impl FromRequest for Session {
    type Error = Error;
    type Future = Ready<Result<Session, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(req.extensions().get::<Session>().cloned().ok_or_else(|| {
            Error::new(ErrorKind::MissingLayer).with_detail(
                "the handler asked for a Session but no sessionkit SessionMiddleware wraps it",
            )
        }))
    }
}

/// Takes the request's [`SessionOf<K>`] from the extensions the session
/// middleware tagged `K` put it in.
///
/// Fails with an [`ErrorKind::MissingLayer`] error (a 500 response) when no
/// middleware with that tag wraps the handler.
impl<K: ?Sized + 'static> FromRequest for SessionOf<K> {
    type Error = Error;
    type Future = Ready<Result<SessionOf<K>, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(req.extensions().get::<SessionOf<K>>().cloned().ok_or_else(|| {
            Error::new(ErrorKind::MissingLayer).with_detail(format!(
                "the handler asked for a SessionOf<{}> but no sessionkit SessionMiddleware with that tag wraps it",
                std::any::type_name::<K>()
            ))
        }))
    }
}

/// Answers with [`Error::to_response`], the same response the session
/// middleware gives when a flush fails. The middleware finds the error on
/// the response ([`HttpResponse::error`]) and lets the application's
/// `on_error` hook replace it.
impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        into_actix_response(self.to_response())
    }
}

/// An `http` 1 response as an actix-web response: status, headers and body.
///
/// A status or header that actix-web's `http` 0.2 types refuse (none that
/// sessionkit or a valid `http` 1 response makes) gives a 500 or is left
/// out; nothing here panics.
///
/// ```
/// use sessionkit_core::{Error, ErrorKind};
///
/// let response = sessionkit_core::into_actix_response(
///     Error::new(ErrorKind::StoreUnavailable).to_response(),
/// );
/// assert_eq!(response.status().as_u16(), 503);
/// assert_eq!(response.headers().get("retry-after").unwrap(), "1");
/// ```
pub fn into_actix_response(response: http::Response<String>) -> HttpResponse {
    let (parts, body) = response.into_parts();
    let status =
        StatusCode::from_u16(parts.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = HttpResponse::with_body(status, body).map_into_boxed_body();
    let headers = out.headers_mut();
    for (name, value) in &parts.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(name, value);
        }
    }
    out
}
