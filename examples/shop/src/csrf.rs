//! The shop's CSRF defence: an origin check on every unsafe request, and a
//! token kept in the session for the requests that carry one.
//!
//! Two steps, after [OWASP's CSRF cheat sheet]:
//!
//! 1. **Where the request comes from** ([`screen`], a middleware; no store
//!    call). A request with an unsafe method (`POST`, `PUT`, `PATCH`,
//!    `DELETE`, …) is refused with 403 when the browser says that another
//!    site or origin sent it: a `Sec-Fetch-Site` other than `same-origin`
//!    or `none` ([Fetch Metadata]), or an `Origin` whose host and port are
//!    not the request's `Host` ([verifying the origin]). `same-site` is
//!    refused too: a sibling subdomain or another port is not the shop. A
//!    request with neither header does not come from a browser that a page
//!    could drive (browsers send `Origin` with every cross-origin `POST`),
//!    and passes this step.
//! 2. **The synchronizer token** ([`Guard`]), for requests that carry a
//!    session: the session's token must come back as the form field
//!    `csrf_token` or the header `x-csrf-token` (the header wins when both
//!    are sent; several headers, or several fields, count as none), else
//!    403. The comparison takes the same time wherever the tokens differ
//!    ([`subtle`]). A request without a session — the first login — has no
//!    token to show: step 1 alone protects it, so that no `GET` has to create
//!    a session to hand out a token.
//!
//! The token: 256 bits from the operating system, in hex, kept in the
//! session under `csrf_token`. A session that a `POST` starts is born with
//! one (written with the session, no extra store call); login replaces it,
//! as it regenerates the session id; it is gone with the session at logout.
//! A session without one (from before this defence) gets it when a page
//! with a form is rendered for it or `GET /api/session` is read, the only
//! case in which that route writes. Clients read it from the page's forms
//! or from `GET /api/session`.
//!
//! # Cost
//!
//! The origin check makes no store call, and safe methods are not looked at
//! at all. The token check reads the session the way the handler's first
//! access would have — [`Guard::read`] loads it, [`Guard::lock`] locks it,
//! which reads it in the same store call — and the handler goes on with
//! that session, so the check adds no round trip to a handler that reads or
//! locks first. A handler whose first access would write blind
//! (`/basket/clear`, `/login` and `/logout` on a request with a session
//! cookie) now reads first: one round trip, the least that checking a token
//! kept in the session can cost.
//!
//! # Enforced, not remembered
//!
//! For unsafe methods [`screen`] moves the request's `Session` into the
//! [`Guard`], so a `POST` handler cannot reach the session without the
//! check: one that asks for `Session` itself fails at once, with a 500,
//! instead of quietly skipping it.
//!
//! # What it does not protect against
//!
//! - Cross-site scripting: a script running on the shop's own origin reads
//!   the token from the page and sends same-origin requests.
//! - A first login from a browser old enough to send neither
//!   `Sec-Fetch-Site` nor `Origin`.
//! - The scheme is not compared (`http://host` and `https://host` both
//!   pass step 1), because behind a proxy that ends TLS the shop cannot
//!   tell which one it is served as; browsers tell the two apart in
//!   `Sec-Fetch-Site` anyway.
//!
//! # Later
//!
//! The library's CSRF layer (issue 17) will do both steps for every
//! application. The shop then drops this module: [`screen`] becomes that
//! layer, [`Guard`] the plain `Session`, [`token`] and [`rotate`] the
//! session's own token; the names on the wire stay.
//!
//! [OWASP's CSRF cheat sheet]: https://cheatsheetseries.owasp.org/cheatsheets/Cross-Site_Request_Forgery_Prevention_Cheat_Sheet.html
//! [Fetch Metadata]: https://cheatsheetseries.owasp.org/cheatsheets/Cross-Site_Request_Forgery_Prevention_Cheat_Sheet.html#fetch-metadata-headers
//! [verifying the origin]: https://cheatsheetseries.owasp.org/cheatsheets/Cross-Site_Request_Forgery_Prevention_Cheat_Sheet.html#using-standard-headers-to-verify-origin

use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sessionkit::Session;
use subtle::ConstantTimeEq;

/// The form field that carries the token.
pub const FIELD: &str = "csrf_token";
/// The header that carries the token.
pub const HEADER: &str = "x-csrf-token";
/// The session key that holds the token.
const KEY: &str = "csrf_token";
/// The largest form body read for its token. The shop's forms are a few
/// dozen bytes; a larger one is refused with 413 instead of being buffered.
pub const FORM_LIMIT: usize = 16 * 1024;

/// Why a request was refused; all of them answer 403 but the oversized form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refused {
    /// `Sec-Fetch-Site` names another site or origin.
    CrossSite,
    /// `Origin` is not the shop's own.
    ForeignOrigin,
    /// The request carries a session but not its token.
    Token,
    /// A form body too large to look for the token in (413), or one that
    /// could not be read.
    FormTooLarge,
}

impl Refused {
    /// The status the refusal answers with: 403, or 413 for the oversized form.
    pub fn status(self) -> u16 {
        match self {
            Refused::FormTooLarge => 413,
            _ => 403,
        }
    }

    /// The `text/plain` body of the answer: what went wrong, for the user.
    pub fn message(self) -> &'static str {
        match self {
            Refused::CrossSite => "cross-site request refused",
            Refused::ForeignOrigin => "request from another origin refused",
            Refused::Token => "missing or wrong CSRF token: reload the page and try again",
            Refused::FormTooLarge => "form too large",
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::FORBIDDEN);
        (status, self.message()).into_response()
    }
}

/// A request's headers as the checks below see them, whatever the web
/// framework: every value of one header, in order. `shop` (axum) uses the
/// impl for `http`'s map; `shop-actix` wraps actix-web's.
pub trait Headers {
    /// Every value of header `name` (lowercase), in order.
    fn values(&self, name: &str) -> Vec<&[u8]>;
}

impl Headers for HeaderMap {
    fn values(&self, name: &str) -> Vec<&[u8]> {
        self.get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect()
    }
}

/// The middleware: refuses unsafe requests from other origins, and hands the
/// handler a [`Guard`] holding the session and the token sent, in place of
/// the session. Goes inside the session layer.
pub async fn screen(mut request: Request, next: Next) -> Response {
    if request.method().is_safe() {
        return next.run(request).await;
    }
    if let Err(refused) = check_origin(request.headers()) {
        tracing::info!(reason = ?refused, path = %request.uri().path(), "request refused");
        return refused.into_response();
    }
    let sent = match sent_token(&mut request).await {
        Ok(sent) => sent,
        Err(refused) => return refused.into_response(),
    };
    let Some(session) = request.extensions_mut().remove::<Session>() else {
        tracing::error!("csrf::screen must run inside the session layer");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    request.extensions_mut().insert(Guard::new(session, sent));
    next.run(request).await
}

/// The value of a header whose `values` these are, if sent exactly once.
fn single(values: Vec<&[u8]>) -> Result<Option<&[u8]>, ()> {
    let mut values = values.into_iter();
    match (values.next(), values.next()) {
        (first, None) => Ok(first),
        _ => Err(()),
    }
}

/// Step 1: `Sec-Fetch-Site`, then `Origin` against `Host`. No store call.
pub fn check_origin(headers: &impl Headers) -> Result<(), Refused> {
    let site = single(headers.values("sec-fetch-site")).map_err(|()| Refused::CrossSite)?;
    if let Some(site) = site
        && !matches!(site, b"same-origin" | b"none")
    {
        return Err(Refused::CrossSite);
    }
    let origin = single(headers.values("origin")).map_err(|()| Refused::ForeignOrigin)?;
    if let Some(origin) = origin {
        let host = single(headers.values("host")).ok().flatten();
        if !same_host(origin, host) {
            return Err(Refused::ForeignOrigin);
        }
    }
    Ok(())
}

/// Whether `origin` (`scheme://host[:port]`, or `null`) names `host`.
fn same_host(origin: &[u8], host: Option<&[u8]>) -> bool {
    let authority = origin
        .strip_prefix(b"http://")
        .or_else(|| origin.strip_prefix(b"https://"));
    match (authority, host) {
        (Some(authority), Some(host)) => {
            !authority.is_empty() && authority.eq_ignore_ascii_case(host)
        }
        _ => false,
    }
}

/// Where the token of a request is: decided by its headers, or to be
/// looked for in its form body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenIn {
    /// Decided by the headers: the `x-csrf-token` header's value (none when
    /// it was sent several times, or the request is no form).
    Headers(Option<String>),
    /// A URL-encoded form without the header: read the body, up to
    /// [`FORM_LIMIT`] bytes (413 past that), and give it to [`token_in_form`].
    Form,
}

/// Step 2's first half: the `x-csrf-token` header, else whether the
/// `csrf_token` field of a form body is to be read.
pub fn token_in_headers(headers: &impl Headers) -> TokenIn {
    match single(headers.values(HEADER)) {
        Ok(Some(value)) => {
            return TokenIn::Headers(std::str::from_utf8(value).ok().map(str::to_owned));
        }
        Ok(None) => {}
        Err(()) => return TokenIn::Headers(None),
    }
    let is_form = headers
        .values("content-type")
        .first()
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if is_form {
        TokenIn::Form
    } else {
        TokenIn::Headers(None)
    }
}

/// The `csrf_token` field of a URL-encoded form body, if it holds exactly one.
pub fn token_in_form(body: &[u8]) -> Option<String> {
    let mut fields = form_urlencoded::parse(body).filter(|(name, _)| name == FIELD);
    match (fields.next(), fields.next()) {
        (Some((_, value)), None) => Some(value.into_owned()),
        _ => None,
    }
}

/// The token the request sends: the `x-csrf-token` header, else the
/// `csrf_token` field of a URL-encoded form, whose body is read here (up to
/// [`FORM_LIMIT`]) and put back for the handler.
async fn sent_token(request: &mut Request) -> Result<Option<String>, Refused> {
    if let TokenIn::Headers(sent) = token_in_headers(request.headers()) {
        return Ok(sent);
    }
    let body = std::mem::replace(request.body_mut(), Body::empty());
    let bytes = axum::body::to_bytes(body, FORM_LIMIT)
        .await
        .map_err(|_| Refused::FormTooLarge)?;
    let sent = token_in_form(&bytes);
    *request.body_mut() = Body::from(bytes);
    Ok(sent)
}

/// The session of an unsafe request, before its token is checked: the only
/// way a handler of one reaches the session.
///
/// Take it as an extractor, then call [`Guard::read`] or [`Guard::lock`],
/// whichever the handler would have done first with the session.
#[derive(Debug, Clone)]
pub struct Guard {
    session: Session,
    sent: Option<String>,
}

impl Guard {
    /// The guard of an unsafe request that carried `session` and sent the
    /// token `sent`: what [`screen`] (or another framework's equivalent, once
    /// [`check_origin`] has passed) hands the handler instead of the session.
    pub fn new(session: Session, sent: Option<String>) -> Guard {
        Guard { session, sent }
    }

    /// Reads the session (one store round trip when the request carries a
    /// session cookie, none otherwise) and checks the token.
    pub async fn read(self) -> Result<Session, crate::Failure> {
        // Read before the check: until then `id()` is the id the client
        // sent, whether or not the store knows it.
        self.session.get::<String>(KEY).await?;
        self.check().await
    }

    /// Locks the session, which reads it in the same store call, and checks
    /// the token. Refused, the lock is released and nothing written.
    pub async fn lock(self) -> Result<Session, crate::Failure> {
        self.session.lock().await?;
        let session = self.session.clone();
        match self.check().await {
            Ok(session) => Ok(session),
            Err(refused) => {
                session.rollback().await?;
                Err(refused)
            }
        }
    }

    /// Step 2, on a session already read: no store call.
    async fn check(self) -> Result<Session, crate::Failure> {
        if self.session.id().is_none() {
            // No session (none sent, or the one sent is unknown): nothing
            // to forge with, and no token to show. The session this request
            // starts is born with its token, in the same store write.
            rotate(&self.session)?;
            return Ok(self.session);
        }
        let expected = self.session.get::<String>(KEY).await?;
        match (expected, self.sent) {
            (Some(expected), Some(sent)) if equal(&expected, &sent) => Ok(self.session),
            _ => {
                tracing::info!("request refused: missing or wrong CSRF token");
                Err(Refused::Token.into())
            }
        }
    }
}

/// Compares in time that depends on the length only (which is public: every
/// token is 64 characters), so that response times tell an attacker nothing
/// about how many leading characters were right.
fn equal(expected: &str, sent: &str) -> bool {
    bool::from(expected.as_bytes().ct_eq(sent.as_bytes()))
}

impl<S: Send + Sync> FromRequestParts<S> for Guard {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.remove::<Guard>().ok_or_else(|| {
            tracing::error!(
                "a csrf::Guard needs csrf::screen around the route, for an unsafe method"
            );
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        })
    }
}

/// The token of a session that exists, created if it has none yet (a
/// session from before this defence); `None` without a session. For pages
/// with forms and for `GET /api/session`; the session must have been read
/// already, since until then `id()` is merely the id the client sent.
pub async fn token(session: &Session) -> sessionkit::Result<Option<String>> {
    if session.id().is_none() {
        return Ok(None);
    }
    if let Some(token) = session.get::<String>(KEY).await? {
        return Ok(Some(token));
    }
    rotate(session).map(Some)
}

/// Gives the session a new token and returns it. Call after
/// `regenerate()`: a token seen before a login is void after it.
pub fn rotate(session: &Session) -> sessionkit::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system CSPRNG failed");
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    session.insert(KEY, &token)?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn the_origin_check_follows_fetch_metadata_then_origin() {
        let ok = [
            &[][..],
            &[("host", "127.0.0.1:3000")],
            &[("sec-fetch-site", "same-origin")],
            &[("sec-fetch-site", "none")],
            &[
                ("host", "127.0.0.1:3000"),
                ("origin", "http://127.0.0.1:3000"),
            ],
            &[("host", "Shop.Example"), ("origin", "https://shop.example")],
        ];
        for h in ok {
            assert_eq!(check_origin(&headers(h)), Ok(()), "{h:?}");
        }
        let refused = [
            (&[("sec-fetch-site", "cross-site")][..], Refused::CrossSite),
            (&[("sec-fetch-site", "same-site")], Refused::CrossSite),
            (&[("sec-fetch-site", "Same-Origin")], Refused::CrossSite),
            (
                &[
                    ("sec-fetch-site", "same-origin"),
                    ("sec-fetch-site", "same-origin"),
                ],
                Refused::CrossSite,
            ),
            (
                &[("host", "127.0.0.1:3000"), ("origin", "null")],
                Refused::ForeignOrigin,
            ),
            (
                &[
                    ("host", "127.0.0.1:3000"),
                    ("origin", "http://127.0.0.1:3001"),
                ],
                Refused::ForeignOrigin,
            ),
            (
                &[("host", "127.0.0.1:3000"), ("origin", "http://127.0.0.1")],
                Refused::ForeignOrigin,
            ),
            (
                &[
                    ("host", "shop.example"),
                    ("origin", "http://shop.example.evil"),
                ],
                Refused::ForeignOrigin,
            ),
            (
                &[("origin", "http://127.0.0.1:3000")],
                Refused::ForeignOrigin,
            ),
            (
                &[("host", ""), ("origin", "http://")],
                Refused::ForeignOrigin,
            ),
            (
                &[("host", "a"), ("origin", "ftp://a")],
                Refused::ForeignOrigin,
            ),
        ];
        for (h, why) in refused {
            assert_eq!(check_origin(&headers(h)), Err(why), "{h:?}");
        }
    }

    #[test]
    fn tokens_are_compared_whole() {
        let a = "ab".repeat(32);
        assert!(equal(&a, &a.clone()));
        assert!(!equal(&a, &a[..63]));
        assert!(!equal(&a, ""));
        assert!(!equal(&a, &format!("{}c", &a[..63])));
    }
}
