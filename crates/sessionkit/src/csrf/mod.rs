//! CSRF defence for cookie-carried sessions: where an unsafe request comes
//! from, and the session's synchronizer token.
//!
//! [`CsrfLayer`] (tower and axum) and
//! [`actix::CsrfMiddleware`](crate::actix::CsrfMiddleware) (actix-web) are
//! made from the session layer they go with, and run inside it. For a
//! request with an unsafe method (anything but `GET`, `HEAD`, `OPTIONS` and
//! `TRACE`) whose session travels in a cookie, two checks, after
//! [OWASP's CSRF cheat sheet]:
//!
//! 1. **Where it comes from**, before the handler and without a store call:
//!    refused with 403 when the browser says another site or origin sent
//!    it — a `Sec-Fetch-Site` other than `same-origin` or `none`
//!    ([Fetch Metadata]), or an `Origin` whose host and port are not the
//!    request's `Host` ([verifying the origin]), `null` included. `same-site`
//!    is refused too: a sibling subdomain is another application. An origin
//!    on the allow-list ([`CsrfLayerBuilder::trust_origin`]) passes both. A
//!    request with neither header is not one a page in a browser could make
//!    (browsers send `Origin` with every cross-origin `POST`) and passes this
//!    step.
//! 2. **The token**, when the request carries a session: the session's
//!    [`csrf_token`](crate::Session::csrf_token) must come back in the header
//!    `x-csrf-token` or, for a URL-encoded form, in its field `csrf_token`
//!    (both names configurable; the header wins; sent several times counts
//!    as not sent). The layer reads a form body for it, up to a limit
//!    (64 KiB by default, 413 past it), and hands the body on unchanged.
//!    The comparison takes the same time wherever the tokens differ.
//!
//! # Cost: no extra round trip
//!
//! Safe methods are not looked at. For unsafe ones the token is compared
//! when the handler first reads its session (or locks it: the lock reads in
//! the same store call), against the data that read brought: no store call
//! of its own. A handler whose first store call would not read — a blind
//! write flushed at the end, a `destroy`, a `regenerate` — has the session
//! read first: one round trip, the least a check against a token kept in the
//! session can cost. A handler that never touches its session is not
//! checked, and needs not be: it acts with no authority of the session's.
//!
//! Refused, the handler's session call fails with
//! [`ErrorKind::CsrfRejected`] (its
//! response is 403), so does every later one, nothing it changed is
//! written, a lock it took is released, and the layer answers 403 even if
//! the handler went on: see [`CsrfCheck`](sessionkit_core::CsrfCheck).
//!
//! A request without a session — the first login — has no token to show,
//! and step 1 alone judges it; so no page has to create a session just to
//! hand out a token (`GET` never creates one), and a login form works from
//! a fresh browser.
//!
//! # Sessions in a header are not checked
//!
//! With [`Transport::header`](crate::Transport::header) no check applies:
//! CSRF works because a browser attaches cookies to requests that another
//! site's page makes, and it never attaches a custom header, so a forged
//! request cannot carry the session at all. The layer then passes every
//! request through.
//!
//! # Security
//!
//! What it protects against: a page on another site (or another origin:
//! another port, a sibling subdomain) that makes the user's browser send a
//! form or a `fetch` with the session cookie — acting in the user's name
//! (forged transfers, logout), or logging the user in as the attacker
//! (login CSRF, stopped by step 1).
//!
//! What it does not:
//!
//! - **Cross-site scripting**: a script running on the application's own
//!   origin reads the token from the page and sends same-origin requests.
//!   No CSRF defence survives XSS; escape output and set a
//!   `Content-Security-Policy`.
//! - **Unsafe `GET` handlers**: safe methods are never checked, so a `GET`
//!   that changes state can be forged by a link or an image.
//! - A first login from a browser so old that it sends neither
//!   `Sec-Fetch-Site` nor `Origin` on a cross-site `POST`.
//! - **The scheme** is not compared (`http://host` and `https://host` both
//!   match `Host: host`): behind a proxy that ends TLS the application
//!   cannot tell which one it is served as, and browsers tell the two apart
//!   in `Sec-Fetch-Site` anyway. Serve over HTTPS only, with `Secure`
//!   cookies.
//! - `multipart/form-data` bodies are not read for the token: a multipart
//!   form must send the header (from a script) or carry the token in its
//!   URL-encoded sibling.
//! - A request the handler serves without touching its session is not
//!   checked for the token (step 1 still applies).
//!
//! # Examples
//!
//! ```
//! use axum::{Router, routing::post};
//! use sessionkit::{CsrfLayer, Session, SessionLayer};
//! use sessionkit::store::MemoryStore;
//!
//! async fn transfer(session: Session) -> Result<&'static str, sessionkit::Error> {
//!     // Forged (no or a wrong token): this read fails with 403.
//!     let user: Option<String> = session.get("user").await?;
//!     Ok(if user.is_some() { "sent" } else { "log in first" })
//! }
//!
//! let sessions = SessionLayer::new(MemoryStore::new());
//! let app: Router = Router::new()
//!     .route("/transfer", post(transfer))
//!     .layer(CsrfLayer::new(&sessions)) // inside…
//!     .layer(sessions); // …the session layer it was made from
//! ```
//!
//! [OWASP's CSRF cheat sheet]: https://cheatsheetseries.owasp.org/cheatsheets/Cross-Site_Request_Forgery_Prevention_Cheat_Sheet.html
//! [Fetch Metadata]: https://cheatsheetseries.owasp.org/cheatsheets/Cross-Site_Request_Forgery_Prevention_Cheat_Sheet.html#fetch-metadata-headers
//! [verifying the origin]: https://cheatsheetseries.owasp.org/cheatsheets/Cross-Site_Request_Forgery_Prevention_Cheat_Sheet.html#using-standard-headers-to-verify-origin

mod service;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{HeaderName, Method};
use sessionkit_core::{Error, ErrorKind};
use tower_layer::Layer;

use crate::middleware::SessionLayer;
use crate::middleware::layer::Shared;
use crate::transport::{Carrier, RequestHeaders};

pub use self::service::{CsrfFuture, CsrfService};

/// The CSRF layer for tower and axum: see the [module docs](self). Made from
/// the [`SessionLayer`] it goes with, and placed inside it.
///
/// It serves any `Clone` tower service whose request body can be rebuilt
/// from the bytes of a form it read (`From<Bytes>`: axum's `Body`,
/// `http_body_util::Full`); on plain hyper, put it behind a body that can.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct CsrfLayer {
    pub(crate) rules: Arc<Rules>,
}

/// The layer's settings and the checks made with them, shared by the tower
/// layer and the actix-web middleware.
#[derive(Debug)]
pub(crate) struct Rules {
    pub(crate) header: HeaderName,
    pub(crate) field: String,
    /// Trusted origins, as sent in `Origin` (`scheme://host[:port]`),
    /// lowercase.
    trusted: Vec<String>,
    pub(crate) form_limit: usize,
    /// The session layer's: which check slot to take, whether the session
    /// travels in a header, the error page.
    pub(crate) sessions: Arc<Shared>,
}

impl CsrfLayer {
    /// The layer with the default settings: header `x-csrf-token`, form
    /// field `csrf_token`, forms up to 64 KiB, no trusted origins.
    ///
    /// From now on the session layer asks for the token on every unsafe
    /// request with a session cookie, so place this layer inside it on every
    /// route it serves: where it is missing, such requests are refused when
    /// they touch their session (fail closed).
    ///
    /// ```
    /// use sessionkit::{CsrfLayer, SessionLayer};
    /// use sessionkit::store::MemoryStore;
    ///
    /// let sessions = SessionLayer::new(MemoryStore::new());
    /// let csrf = CsrfLayer::new(&sessions);
    /// # let _ = csrf;
    /// ```
    pub fn new(sessions: &SessionLayer) -> CsrfLayer {
        CsrfLayer::builder(sessions)
            .build()
            .expect("the default CSRF settings are valid")
    }

    /// A builder, for other names, a form limit or trusted origins.
    ///
    /// ```
    /// use sessionkit::{CsrfLayer, SessionLayer};
    /// use sessionkit::store::MemoryStore;
    ///
    /// let sessions = SessionLayer::new(MemoryStore::new());
    /// let csrf = CsrfLayer::builder(&sessions)
    ///     .header_name("x-xsrf-token")
    ///     .field_name("_token")
    ///     .form_limit(16 * 1024)
    ///     .trust_origin("https://admin.example.com")
    ///     .build()?;
    /// # let _ = csrf;
    /// # Ok::<(), sessionkit::Error>(())
    /// ```
    pub fn builder(sessions: &SessionLayer) -> CsrfLayerBuilder {
        CsrfLayerBuilder {
            sessions: sessions.shared.clone(),
            header: "x-csrf-token".to_owned(),
            field: "csrf_token".to_owned(),
            trusted: Vec::new(),
            form_limit: 64 * 1024,
        }
    }
}

/// Settings of a [`CsrfLayer`]; [`build`](CsrfLayerBuilder::build) checks them.
#[derive(Debug, Clone)]
pub struct CsrfLayerBuilder {
    sessions: Arc<Shared>,
    header: String,
    field: String,
    trusted: Vec<String>,
    form_limit: usize,
}

impl CsrfLayerBuilder {
    /// The request header that carries the token (default `x-csrf-token`).
    pub fn header_name(mut self, name: impl Into<String>) -> Self {
        self.header = name.into();
        self
    }

    /// The field of a URL-encoded form that carries the token (default
    /// `csrf_token`).
    pub fn field_name(mut self, name: impl Into<String>) -> Self {
        self.field = name.into();
        self
    }

    /// The largest URL-encoded form body read for its token (default 64 KiB);
    /// a larger one is answered 413 without reaching the handler.
    pub fn form_limit(mut self, bytes: usize) -> Self {
        self.form_limit = bytes;
        self
    }

    /// Trusts requests whose `Origin` is `origin` (`scheme://host[:port]`,
    /// e.g. `https://admin.example.com`): they pass the origin check even
    /// when `Sec-Fetch-Site` says `cross-site` or `same-site`. They still
    /// need the token. Compared exactly, but for the case of the host;
    /// `https://a.example` does not trust `http://a.example` nor
    /// `https://a.example:8443`.
    pub fn trust_origin(mut self, origin: impl Into<String>) -> Self {
        self.trusted.push(origin.into());
        self
    }

    /// Checks the settings and builds the layer, which from then on asks the
    /// session layer for checks (see [`CsrfLayer::new`]).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] naming `header_name` (not a header name,
    /// or `cookie`), `field_name` (empty) or `trust_origin` (not
    /// `http[s]://host[:port]`).
    pub fn build(self) -> Result<CsrfLayer, Error> {
        let header = HeaderName::from_bytes(self.header.as_bytes()).map_err(|_| {
            Error::invalid_config(
                "header_name",
                "must be a header name: letters, digits and !#$%&'*+-.^_`|~",
            )
        })?;
        if header == http::header::COOKIE {
            return Err(Error::invalid_config(
                "header_name",
                "the token header cannot be `cookie`: a browser sends that one by itself",
            ));
        }
        if self.field.is_empty() {
            return Err(Error::invalid_config("field_name", "must not be empty"));
        }
        let trusted = self
            .trusted
            .iter()
            .map(|origin| normal_origin(origin))
            .collect::<Result<Vec<_>, _>>()?;
        self.sessions.csrf_checked.store(true, Ordering::Relaxed);
        Ok(CsrfLayer {
            rules: Arc::new(Rules {
                header,
                field: self.field,
                trusted,
                form_limit: self.form_limit,
                sessions: self.sessions,
            }),
        })
    }
}

/// `origin` as browsers send it (lowercase, no path), or the error naming
/// the setting.
fn normal_origin(origin: &str) -> Result<String, Error> {
    let bad = || {
        Error::invalid_config(
            "trust_origin",
            "must be an origin: http:// or https://, a host and an optional port, no path",
        )
    };
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(bad)?;
    let valid = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !valid {
        return Err(bad());
    }
    Ok(origin.to_ascii_lowercase())
}

impl<S> Layer<S> for CsrfLayer {
    type Service = CsrfService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CsrfService {
            inner,
            rules: self.rules.clone(),
        }
    }
}

/// What the layer does with a request.
pub(crate) enum Step {
    /// Nothing to check: a safe method, or a session in a header.
    Pass,
    /// Refused by the origin check; the detail says why, for the log.
    Refuse(&'static str),
    /// Checked: the token is in this header value (`None`: absent or sent
    /// several times), or to be read from the URL-encoded form body.
    Token(TokenIn),
}

/// Where a request's token is.
pub(crate) enum TokenIn {
    Header(Option<String>),
    Form,
}

impl Rules {
    /// The first decision on a request, from its method, its headers and
    /// its URI's authority (what HTTP/2 sends instead of `Host`).
    pub(crate) fn step(
        &self,
        method: &[u8],
        headers: &impl RequestHeaders,
        authority: Option<&str>,
    ) -> Step {
        if is_safe(method) || matches!(self.sessions.carrier, Carrier::Header { .. }) {
            return Step::Pass;
        }
        let host = headers
            .values(&http::header::HOST)
            .next()
            .or(authority.map(str::as_bytes));
        if let Err(why) = self.check_origin(headers, host) {
            return Step::Refuse(why);
        }
        Step::Token(self.token_in(headers))
    }

    /// Step 1: `Origin` on the allow-list passes; else `Sec-Fetch-Site`, then
    /// `Origin` against `host`.
    fn check_origin(
        &self,
        headers: &impl RequestHeaders,
        host: Option<&[u8]>,
    ) -> Result<(), &'static str> {
        static SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
        let origin =
            single(headers.values(&http::header::ORIGIN)).map_err(|()| "several Origin headers")?;
        if let Some(origin) = origin
            && self
                .trusted
                .iter()
                .any(|t| t.as_bytes().eq_ignore_ascii_case(origin))
        {
            return Ok(());
        }
        let site = single(headers.values(&SEC_FETCH_SITE))
            .map_err(|()| "several Sec-Fetch-Site headers")?;
        if let Some(site) = site
            && !matches!(site, b"same-origin" | b"none")
        {
            return Err("Sec-Fetch-Site says another site or origin sent it");
        }
        if let Some(origin) = origin
            && !same_host(origin, host)
        {
            return Err("Origin is not this host");
        }
        Ok(())
    }

    /// Step 2's first half: the token header, else whether the body is a
    /// URL-encoded form to read.
    fn token_in(&self, headers: &impl RequestHeaders) -> TokenIn {
        match single(headers.values(&self.header)) {
            Ok(Some(value)) => {
                return TokenIn::Header(std::str::from_utf8(value).ok().map(str::to_owned));
            }
            Ok(None) => {}
            Err(()) => return TokenIn::Header(None),
        }
        let is_form = single(headers.values(&http::header::CONTENT_TYPE))
            .ok()
            .flatten()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if is_form {
            TokenIn::Form
        } else {
            TokenIn::Header(None)
        }
    }

    /// The token field of a URL-encoded form body, if it holds exactly one.
    pub(crate) fn token_in_form(&self, body: &[u8]) -> Option<String> {
        let mut fields =
            form_urlencoded::parse(body).filter(|(name, _)| name == self.field.as_str());
        match (fields.next(), fields.next()) {
            (Some((_, value)), None) => Some(value.into_owned()),
            _ => None,
        }
    }

    /// The error of a request refused by the origin check.
    pub(crate) fn refusal(why: &'static str) -> Error {
        tracing::info!(reason = why, "request refused by the CSRF origin check");
        Error::new(ErrorKind::CsrfRejected).with_detail(why)
    }

    /// The error of a CSRF layer placed outside its session layer.
    pub(crate) fn misplaced() -> Error {
        Error::new(ErrorKind::MissingLayer).with_detail(
            "the CSRF layer found no check to feed: place it inside the session layer it was made from",
        )
    }
}

/// Whether a method is safe (RFC 9110 §9.2.1): never checked.
pub(crate) fn is_safe(method: &[u8]) -> bool {
    [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE]
        .iter()
        .any(|safe| safe.as_str().as_bytes() == method)
}

/// The one value of a header, if sent at most once.
fn single<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Result<Option<&'a [u8]>, ()> {
    match (values.next(), values.next()) {
        (first, None) => Ok(first),
        _ => Err(()),
    }
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

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};
    use sessionkit_core::store::MemoryStore;

    use super::*;

    fn rules(trusted: &[&str]) -> Arc<Rules> {
        let sessions = SessionLayer::new(MemoryStore::new());
        let mut builder = CsrfLayer::builder(&sessions);
        for origin in trusted {
            builder = builder.trust_origin(*origin);
        }
        builder.build().unwrap().rules
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    fn origin_check(rules: &Rules, pairs: &[(&'static str, &'static str)]) -> Result<(), ()> {
        let map = headers(pairs);
        let host = map.get("host").map(HeaderValue::as_bytes);
        rules.check_origin(&map, host).map_err(|_| ())
    }

    #[test]
    fn the_origin_check_follows_fetch_metadata_then_origin() {
        let rules = rules(&["https://admin.example"]);
        let passes: &[&[(&str, &str)]] = &[
            &[],
            &[("host", "127.0.0.1:3000")],
            &[("sec-fetch-site", "same-origin")],
            &[("sec-fetch-site", "none")],
            &[
                ("host", "127.0.0.1:3000"),
                ("origin", "http://127.0.0.1:3000"),
            ],
            &[("host", "Shop.Example"), ("origin", "https://shop.example")],
            &[
                ("host", "shop.example"),
                ("sec-fetch-site", "same-site"),
                ("origin", "https://Admin.example"),
            ],
        ];
        for pairs in passes {
            assert_eq!(origin_check(&rules, pairs), Ok(()), "{pairs:?}");
        }
        let refused: &[&[(&str, &str)]] = &[
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "same-site")],
            &[("sec-fetch-site", "Same-Origin")],
            &[
                ("sec-fetch-site", "same-origin"),
                ("sec-fetch-site", "same-origin"),
            ],
            &[("host", "127.0.0.1:3000"), ("origin", "null")],
            &[
                ("host", "127.0.0.1:3000"),
                ("origin", "http://127.0.0.1:3001"),
            ],
            &[("host", "127.0.0.1:3000"), ("origin", "http://127.0.0.1")],
            &[
                ("host", "shop.example"),
                ("origin", "http://shop.example.evil"),
            ],
            &[("origin", "http://127.0.0.1:3000")],
            &[("host", ""), ("origin", "http://")],
            &[("host", "a"), ("origin", "ftp://a")],
            &[
                ("host", "a"),
                ("origin", "http://a"),
                ("origin", "http://a"),
            ],
            // Trusted is exact: not another scheme, port or a suffix.
            &[("host", "shop.example"), ("origin", "http://admin.example")],
            &[
                ("host", "shop.example"),
                ("origin", "https://admin.example:8443"),
            ],
            &[
                ("host", "shop.example"),
                ("origin", "https://admin.example.evil"),
            ],
        ];
        for pairs in refused {
            assert_eq!(origin_check(&rules, pairs), Err(()), "{pairs:?}");
        }
    }

    #[test]
    fn safe_methods_pass_and_the_header_wins_over_the_form() {
        let rules = rules(&[]);
        let form = headers(&[(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )]);
        assert!(matches!(rules.step(b"GET", &form, None), Step::Pass));
        let other = headers(&[("origin", "http://a.example")]);
        assert!(matches!(
            rules.step(b"POST", &other, Some("a.example")),
            Step::Token(_)
        ));
        assert!(matches!(
            rules.step(b"POST", &other, Some("b.example")),
            Step::Refuse(_)
        ));
        assert!(matches!(rules.step(b"OPTIONS", &form, None), Step::Pass));
        assert!(matches!(
            rules.step(b"POST", &form, None),
            Step::Token(TokenIn::Form)
        ));
        let both = headers(&[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-csrf-token", "abc"),
        ]);
        assert!(matches!(
            rules.step(b"DELETE", &both, None),
            Step::Token(TokenIn::Header(Some(t))) if t == "abc"
        ));
        let twice = headers(&[("x-csrf-token", "a"), ("x-csrf-token", "a")]);
        assert!(matches!(
            rules.step(b"PUT", &twice, None),
            Step::Token(TokenIn::Header(None))
        ));
        let json = headers(&[("content-type", "application/json")]);
        assert!(matches!(
            rules.step(b"PATCH", &json, None),
            Step::Token(TokenIn::Header(None))
        ));
    }

    #[test]
    fn the_form_field_counts_once() {
        let rules = rules(&[]);
        assert_eq!(
            rules.token_in_form(b"a=1&csrf_token=x%2By"),
            Some("x+y".to_owned())
        );
        assert_eq!(rules.token_in_form(b"csrf_token=a&csrf_token=a"), None);
        assert_eq!(rules.token_in_form(b"a=1"), None);
        assert_eq!(rules.token_in_form(&[0xff, 0xfe, b'=']), None);
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let sessions = SessionLayer::new(MemoryStore::new());
        let cases = [
            (
                CsrfLayer::builder(&sessions).header_name("x csrf"),
                "header_name",
            ),
            (
                CsrfLayer::builder(&sessions).header_name("Cookie"),
                "header_name",
            ),
            (CsrfLayer::builder(&sessions).field_name(""), "field_name"),
            (
                CsrfLayer::builder(&sessions).trust_origin("admin.example"),
                "trust_origin",
            ),
            (
                CsrfLayer::builder(&sessions).trust_origin("https://a.example/path"),
                "trust_origin",
            ),
        ];
        for (builder, setting) in cases {
            let err = builder.build().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig);
            assert!(err.to_string().contains(setting), "{err}");
        }
    }
}
