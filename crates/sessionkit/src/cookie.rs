//! The session cookie: its attributes, reading it from requests, writing it
//! to responses.
//!
//! # Why not the `cookie` crate
//!
//! Reading needs one thing: the value of one cookie name, from raw header
//! bytes that may not be UTF-8, without allocating in the common case, and
//! with duplicates detected (and tried in order: see `Presented`). Writing needs one line whose attributes never change after
//! start-up. Both are a few lines here; the attributes are validated once
//! when the layer is built and kept as a ready-made suffix, so a response
//! costs one `format!`.

use std::fmt::Write as _;
use std::time::Duration;

use http::HeaderValue;
use http::header::{CACHE_CONTROL, HeaderMap, SET_COOKIE};
use sessionkit_core::{Error, ErrorKind, Presented, SESSION_ID_LEN, SessionId};

use crate::signing::{self, Refused, SigningKey};

/// The `SameSite` attribute.
///
/// # Security
///
/// `Lax` (the default) keeps the cookie off cross-site subrequests and
/// cross-site `POST`s, which stops most CSRF; `Strict` also keeps it off
/// top-level cross-site navigation. `None` needs `Secure`
/// ([OWASP: SameSite](https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html#samesite-attribute)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SameSite {
    /// Sent on same-site requests and top-level cross-site navigation.
    #[default]
    Lax,
    /// Sent on same-site requests only.
    Strict,
    /// Sent everywhere; requires `Secure`.
    None,
}

impl SameSite {
    fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

/// The attributes of the session cookie.
///
/// Defaults: name `session`, `Path=/`, no `Domain`, `HttpOnly`, `Secure`,
/// `SameSite=Lax`, and a `Max-Age` equal to the time the server keeps the
/// session (so the browser never drops a live session, nor keeps a dead one
/// for long).
///
/// ```
/// use sessionkit::{CookieConfig, SameSite};
///
/// let cookie = CookieConfig::default()
///     .name("__Host-sid")
///     .same_site(SameSite::Strict);
/// assert!(cookie.validate().is_ok());
///
/// // `__Host-` demands Secure, Path=/ and no Domain.
/// let err = cookie.domain(Some("example.com".into())).validate().unwrap_err();
/// assert_eq!(err.kind(), sessionkit::ErrorKind::InvalidCookieName);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieConfig {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
    pub(crate) persistent: bool,
    pub(crate) signing_keys: Vec<SigningKey>,
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig {
            name: "session".into(),
            path: "/".into(),
            domain: None,
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            persistent: true,
            signing_keys: Vec::new(),
        }
    }
}

impl CookieConfig {
    /// The cookie name. Default `session`. Letters, digits, `_` and `-`, not
    /// all digits. The `__Host-` and `__Secure-` prefixes are honoured and
    /// their rules checked.
    ///
    /// # Security
    ///
    /// A generic name does not reveal the framework
    /// ([OWASP: Session ID Name Fingerprinting](https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html#session-id-name-fingerprinting)).
    ///
    /// Prefer a `__Host-` name (for example `__Host-session`) wherever the
    /// site is served over HTTPS: it pins the cookie to one host, and no
    /// sibling subdomain can then plant a cookie of the same name next to
    /// the user's (*cookie tossing*). Without it, a request may carry
    /// several cookies of the name; the layer then tries their ids in the
    /// order sent and never clears the cookie (see
    /// [`Presented`]), but it cannot tell which
    /// one the browser got from this host.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The `Path` attribute. Default `/`.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// The `Domain` attribute. Default none: the cookie goes back only to the
    /// host that set it, which is the safest choice.
    pub fn domain(mut self, domain: Option<String>) -> Self {
        self.domain = domain;
        self
    }

    /// The `Secure` attribute. Default on.
    ///
    /// # Security
    ///
    /// Without it the id travels in clear over plain HTTP. Turn it off only for
    /// local development over `http://`.
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// The `HttpOnly` attribute. Default on.
    ///
    /// # Security
    ///
    /// Keeps the id away from JavaScript, and so from XSS
    /// ([OWASP: HttpOnly](https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html#httponly-attribute)).
    pub fn http_only(mut self, http_only: bool) -> Self {
        self.http_only = http_only;
        self
    }

    /// The `SameSite` attribute. Default [`SameSite::Lax`].
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// Whether the cookie carries a `Max-Age` (default) or is a
    /// browser-session cookie that the browser drops when it closes. The
    /// server-side expiry applies either way. Sessions given a lifetime of
    /// their own with [`Session::set_lifetime`](crate::Session::set_lifetime)
    /// ("remember me") always get a persistent cookie.
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// Signs the cookie with the first key and accepts cookies signed with
    /// any of them (see [`signing`]). Default: no keys, an
    /// unsigned cookie.
    ///
    /// ```
    /// use sessionkit::CookieConfig;
    /// use sessionkit::signing::SigningKey;
    ///
    /// let new = SigningKey::new(*b"a new secret of at least 32 bytes")?;
    /// let old = SigningKey::new(*b"the old secret, kept to verify...")?;
    /// let cookie = CookieConfig::default().signing_keys(vec![new, old]);
    /// # let _ = cookie;
    /// # Ok::<(), sessionkit::Error>(())
    /// ```
    pub fn signing_keys(mut self, keys: Vec<SigningKey>) -> Self {
        self.signing_keys = keys;
        self
    }

    /// The cookie name.
    pub fn cookie_name(&self) -> &str {
        &self.name
    }

    /// Checks the name, its prefix rules and the attribute values.
    pub fn validate(&self) -> Result<(), Error> {
        validate_name(&self.name)?;
        let invalid =
            |detail: String| Err(Error::new(ErrorKind::InvalidCookieName).with_detail(detail));
        if self.name.starts_with("__Host-")
            && (!self.secure || self.path != "/" || self.domain.is_some())
        {
            return invalid(format!(
                "cookie `{}`: the __Host- prefix requires Secure, Path=/ and no Domain",
                self.name
            ));
        }
        if self.name.starts_with("__Secure-") && !self.secure {
            return invalid(format!(
                "cookie `{}`: the __Secure- prefix requires Secure",
                self.name
            ));
        }
        if self.same_site == SameSite::None && !self.secure {
            return Err(Error::invalid_config(
                "cookie.same_site",
                "SameSite=None requires Secure (browsers drop the cookie otherwise)",
            ));
        }
        if !self.path.starts_with('/') || !is_attribute_value(&self.path) {
            return Err(Error::invalid_config(
                "cookie.path",
                "must start with `/` and hold no control characters or `;`",
            ));
        }
        if let Some(domain) = &self.domain {
            let ok = !domain.is_empty()
                && domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                return Err(Error::invalid_config(
                    "cookie.domain",
                    "must be a host name (letters, digits, `-` and `.`)",
                ));
            }
        }
        Ok(())
    }
}

/// Checks a cookie name: letters, digits, `_` and `-`, not all digits
/// (a rule that keeps names portable across browsers, proxies and server
/// frameworks).
///
/// ```
/// assert!(sessionkit::cookie::validate_name("session").is_ok());
/// assert!(sessionkit::cookie::validate_name("__Host-sid").is_ok());
/// assert!(sessionkit::cookie::validate_name("123").is_err());
/// assert!(sessionkit::cookie::validate_name("a b").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<(), Error> {
    let fail = |why: &str| {
        Err(Error::new(ErrorKind::InvalidCookieName)
            .with_detail(format!("cookie name {name:?}: {why}")))
    };
    if name.is_empty() {
        return fail("must not be empty");
    }
    if name.len() > 128 {
        return fail("must be at most 128 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return fail("may hold only letters, digits, `_` and `-`");
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return fail("must not consist of digits only");
    }
    Ok(())
}

fn is_attribute_value(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b';')
}

/// What the request's `Cookie` headers say about the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Incoming {
    /// The ids presented, for the session to try.
    pub(crate) presented: Presented,
    /// Why a present cookie gave no id, or `Ambiguous` for several cookies.
    pub(crate) refused: Option<Refused>,
}

/// How many session cookies of one request are looked at, at most: the
/// work per request stays bounded whatever the client sends.
const EXAMINED: usize = 8;

/// Reads the session cookie from every `Cookie` header (the raw values,
/// in order: [`ResponseHeaders`] says why this takes bytes, not a map).
///
/// Works on raw bytes: a header that is not UTF-8 is scanned all the same.
/// Several cookies of the session's name (one may have been planted by a
/// sibling domain: see [`Presented`]'s `# Security`) give their well-formed
/// ids in the order sent, without repeats, from the first [`EXAMINED`] of
/// them, at most [`Presented::MAX_CANDIDATES`]. Nothing here panics, whatever the input,
/// and only the several-cookies case allocates.
pub(crate) fn read<'h>(
    cookie_headers: impl IntoIterator<Item = &'h [u8]>,
    name: &str,
    keys: &[SigningKey],
) -> Incoming {
    let found = find_pairs(cookie_headers, name.as_bytes());
    let parse = |value: &[u8]| {
        // RFC 6265 §4.1.1 allows the value in double quotes.
        let value = match value {
            [b'"', inner @ .., b'"'] => inner,
            v => v,
        };
        if keys.is_empty() {
            SessionId::parse_bytes(value).map_err(|_| Refused::Malformed)
        } else {
            signing::verify(keys, name, value)
        }
    };
    match found.values() {
        [] => Incoming {
            presented: Presented::Nothing,
            refused: None,
        },
        [value] if found.count == 1 => match parse(value) {
            Ok(id) => Incoming {
                presented: Presented::One(Some(id)),
                refused: None,
            },
            Err(why) => Incoming {
                presented: Presented::One(None),
                refused: Some(why),
            },
        },
        values => Incoming {
            presented: Presented::Several(values.iter().filter_map(|v| parse(v).ok()).fold(
                Vec::new(),
                |mut ids, id| {
                    if ids.len() < Presented::MAX_CANDIDATES && !ids.contains(&id) {
                        ids.push(id);
                    }
                    ids
                },
            )),
            refused: Some(Refused::Ambiguous),
        },
    }
}

/// The pairs named like the session cookie: how many, and the values of
/// the first [`EXAMINED`].
#[derive(Debug, PartialEq, Eq)]
struct Found<'h> {
    count: usize,
    first: [&'h [u8]; EXAMINED],
}

impl<'h> Found<'h> {
    fn values(&self) -> &[&'h [u8]] {
        &self.first[..self.count.min(EXAMINED)]
    }
}

/// How many pairs of the `Cookie` headers are named `name`, and the values of
/// the first [`EXAMINED`]: each header split at `;`, each pair trimmed of
/// spaces and tabs and split at its first `=`.
///
/// This runs for every request, so it looks at each pair once: `memchr`
/// finds the `;`, and a pair is only examined further when it starts with
/// the name. A cookie name holds no `=` nor blanks (letters, digits, `_`
/// and `-`: [`validate_name`]), so "the first `=` ends the name" is the same as "the name,
/// optional spaces or tabs, then `=`".
fn find_pairs<'h>(cookie_headers: impl IntoIterator<Item = &'h [u8]>, name: &[u8]) -> Found<'h> {
    let mut found = Found {
        count: 0,
        first: [&[]; EXAMINED],
    };
    for header in cookie_headers {
        let mut rest = header;
        loop {
            let (pair, next) = match memchr::memchr(b';', rest) {
                Some(at) => (&rest[..at], Some(&rest[at + 1..])),
                None => (rest, None),
            };
            if let Some(after) = trim_start(pair).strip_prefix(name)
                && let [b'=', value @ ..] = trim_start(after)
            {
                if let Some(slot) = found.first.get_mut(found.count) {
                    *slot = trim(value);
                }
                found.count += 1;
            }
            match next {
                Some(next) => rest = next,
                None => break,
            }
        }
    }
    found
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Writes `Set-Cookie` headers from a validated [`CookieConfig`].
#[derive(Debug, Clone)]
pub(crate) struct CookieWriter {
    name: String,
    /// `; Path=/; HttpOnly; Secure; SameSite=Lax`, built once.
    suffix: String,
    persistent: bool,
    keys: Vec<SigningKey>,
}

impl CookieWriter {
    pub(crate) fn new(config: &CookieConfig) -> Result<Self, Error> {
        config.validate()?;
        let mut suffix = format!("; Path={}", config.path);
        if let Some(domain) = &config.domain {
            let _ = write!(suffix, "; Domain={domain}");
        }
        if config.http_only {
            suffix.push_str("; HttpOnly");
        }
        if config.secure {
            suffix.push_str("; Secure");
        }
        let _ = write!(suffix, "; SameSite={}", config.same_site.as_str());
        Ok(CookieWriter {
            name: config.name.clone(),
            suffix,
            persistent: config.persistent,
            keys: config.signing_keys.clone(),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// Sets the cookie to `id`, valid for `max_age` (rounded up to whole
    /// seconds, so the cookie never expires before the server's session).
    /// The cookie is persistent if the configuration says so or `persistent`
    /// asks for it.
    pub(crate) fn set(
        &self,
        headers: &mut impl ResponseHeaders,
        id: &SessionId,
        max_age: Duration,
        persistent: bool,
    ) {
        // One buffer of exactly the right size: this runs for every new
        // session, and a `String` whose length is its capacity becomes the
        // header value's `Bytes` without an allocation of its own (a spare
        // capacity costs `bytes` a shared header, allocated, and an atomic
        // count on drop).
        let signed = (!self.keys.is_empty()).then(|| signing::sign(&self.keys, &self.name, id));
        let secs = (self.persistent || persistent)
            .then(|| max_age.as_secs() + u64::from(max_age.subsec_nanos() > 0));
        let len = self.name.len()
            + 1
            + signed.as_ref().map_or(SESSION_ID_LEN, String::len)
            + secs.map_or(0, |s| MAX_AGE.len() + decimal_digits(s))
            + self.suffix.len();
        let mut value = String::with_capacity(len);
        value.push_str(&self.name);
        value.push('=');
        match &signed {
            None => id.expose_into(&mut value),
            Some(signed) => value.push_str(signed),
        }
        if let Some(secs) = secs {
            value.push_str(MAX_AGE);
            let _ = write!(value, "{secs}");
        }
        value.push_str(&self.suffix);
        debug_assert_eq!(value.len(), len, "the cookie's length computed ahead");
        headers.append_set_cookie(value);
        forbid_shared_caching(headers);
    }

    /// Expires the cookie in the browser.
    pub(crate) fn remove(&self, headers: &mut impl ResponseHeaders) {
        let value = format!(
            "{}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT{}",
            self.name, self.suffix
        );
        headers.append_set_cookie(value);
        forbid_shared_caching(headers);
    }
}

/// What precedes a cookie's lifetime in seconds.
const MAX_AGE: &str = "; Max-Age=";

/// The number of decimal digits of `n`.
fn decimal_digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// The response headers the cookie rules write: `http`'s `HeaderMap` for
/// the tower layer, actix-web's for its middleware (actix-web 4 has its own
/// map, over the `http` 0.2 types). The rules are written once, over this
/// trait, so both integrations answer byte for byte the same; the request
/// side needs no trait, as [`read`] takes the raw `Cookie` values.
pub(crate) trait ResponseHeaders {
    /// Appends a `Set-Cookie` line (visible ASCII: every part was
    /// validated when the layer was built).
    fn append_set_cookie(&mut self, value: String);
    /// The values of `Cache-Control`, raw.
    fn cache_control(&self) -> impl Iterator<Item = &[u8]>;
    /// Replaces `Cache-Control`.
    fn set_cache_control(&mut self, value: &str);
    /// Replaces the header `name` with `value` (visible ASCII: a token, or
    /// empty), for the header transport.
    fn set_header(&mut self, name: &http::HeaderName, value: &str);
}

impl ResponseHeaders for HeaderMap {
    fn append_set_cookie(&mut self, value: String) {
        if let Ok(value) = HeaderValue::try_from(value) {
            self.append(SET_COOKIE, value);
        }
    }

    fn cache_control(&self) -> impl Iterator<Item = &[u8]> {
        self.get_all(CACHE_CONTROL)
            .iter()
            .map(HeaderValue::as_bytes)
    }

    fn set_cache_control(&mut self, value: &str) {
        let value = match value {
            "private" => HeaderValue::from_static("private"),
            other => match HeaderValue::try_from(other) {
                Ok(v) => v,
                Err(_) => return,
            },
        };
        self.insert(CACHE_CONTROL, value);
    }

    fn set_header(&mut self, name: &http::HeaderName, value: &str) {
        if let Ok(value) = HeaderValue::try_from(value) {
            self.insert(name.clone(), value);
        }
    }
}

/// Marks a response that read or wrote the session, but sets no cookie, as
/// personal: `Cache-Control: private`, unless the handler chose its own
/// `Cache-Control` (then that stands: a handler that answers the same for
/// everyone may say `public`). A body that came from the session (a user's
/// name, a basket) must not be served by a shared cache to someone else.
pub(crate) fn keep_private(headers: &mut impl ResponseHeaders) {
    if headers.cache_control().next().is_none() {
        headers.set_cache_control("private");
    }
}

/// Makes a response that sets the session cookie uncacheable by shared
/// caches, so that a proxy never hands one user's cookie to another
/// ([OWASP: Web Content Caching](https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html#web-content-caching)).
///
/// Adds `private` to `Cache-Control` and drops `public` and `s-maxage`, whose
/// only purpose is shared caching; other directives the handler set stay.
pub(crate) fn forbid_shared_caching(headers: &mut impl ResponseHeaders) {
    if headers.cache_control().next().is_none() {
        // The common case: the handler said nothing about caching.
        headers.set_cache_control("private");
        return;
    }
    let existing = headers
        .cache_control()
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .collect::<Vec<_>>();
    let mut kept: Vec<String> = existing
        .into_iter()
        .filter(|d| {
            let lower = d.to_ascii_lowercase();
            lower != "public" && !lower.starts_with("s-maxage")
        })
        .collect();
    if !kept
        .iter()
        .any(|d| d.eq_ignore_ascii_case("private") || d.eq_ignore_ascii_case("no-store"))
    {
        kept.insert(0, "private".into());
    }
    headers.set_cache_control(&kept.join(", "));
}

#[cfg(test)]
mod tests {
    use http::header::COOKIE;

    use super::*;

    /// The raw values of a request's `Cookie` headers.
    fn cookie_headers(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
        headers.get_all(COOKIE).iter().map(HeaderValue::as_bytes)
    }

    /// The rule as first written, one byte at a time: the reference for
    /// `find_pairs`.
    fn find_pairs_reference<'h>(headers: &'h HeaderMap, name: &[u8]) -> (usize, Vec<&'h [u8]>) {
        let mut found = Vec::new();
        let mut count = 0;
        for header in headers.get_all(COOKIE) {
            for pair in header.as_bytes().split(|b| *b == b';') {
                let pair = trim(pair);
                let Some(eq) = pair.iter().position(|b| *b == b'=') else {
                    continue;
                };
                if trim(&pair[..eq]) == name {
                    count += 1;
                    if found.len() < EXAMINED {
                        found.push(trim(&pair[eq + 1..]));
                    }
                }
            }
        }
        (count, found)
    }

    #[test]
    fn find_pairs_agrees_with_the_byte_by_byte_rule() {
        // Pieces that sit on every edge of the rule, joined in every order
        // of three (with repeats) into one or two headers.
        let pieces: &[&[u8]] = &[
            b"session=abc",
            b" session = abc ",
            b"\tsession\t=\tabc",
            b"session=",
            b"session",
            b"sessionx=1",
            b"xsession=1",
            b"session x=1",
            b"session==1",
            b"=session",
            b"a=1",
            b"",
            b" ",
            b";",
            b";;",
            b"session=\"q\"",
            b"session=a;b",
            b"SESSION=1",
            b"session=a=b",
            b"\xffsession=1",
            b"session=\xff",
        ];
        let mut cases = 0;
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let joined = [*a, *b, *c].join(&b";"[..]);
                    let mut one = HeaderMap::new();
                    let mut two = HeaderMap::new();
                    let (Ok(all), Ok(first), Ok(rest)) = (
                        HeaderValue::from_bytes(&joined),
                        HeaderValue::from_bytes(a),
                        HeaderValue::from_bytes(&[*b, *c].join(&b"; "[..])),
                    ) else {
                        continue;
                    };
                    one.append(COOKIE, all);
                    two.append(COOKIE, first);
                    two.append(COOKIE, rest);
                    for h in [&one, &two] {
                        let found = find_pairs(cookie_headers(h), b"session");
                        assert_eq!(
                            (found.count, found.values().to_vec()),
                            find_pairs_reference(h, b"session"),
                            "{:?}",
                            h
                        );
                    }
                    cases += 1;
                }
            }
        }
        assert!(cases > 5000, "{cases}");
    }

    fn read_h(h: &HeaderMap, name: &str, keys: &[SigningKey]) -> Incoming {
        read(cookie_headers(h), name, keys)
    }

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn finds_the_one_session_cookie_among_others() {
        let id = SessionId::generate();
        let line = format!("a=1; session={}; b=2", id.expose());
        let got = read_h(&headers(&[line.as_bytes()]), "session", &[]);
        assert_eq!(
            (got.presented, got.refused),
            (Presented::One(Some(id)), None)
        );
    }

    #[test]
    fn quoted_values_are_accepted() {
        let id = SessionId::generate();
        let line = format!("session=\"{}\"", id.expose());
        assert_eq!(
            read_h(&headers(&[line.as_bytes()]), "session", &[]).presented,
            Presented::One(Some(id))
        );
    }

    #[test]
    fn several_cookies_give_their_well_formed_ids_in_order_bounded() {
        let ids: Vec<SessionId> = (0..6).map(|_| SessionId::generate()).collect();
        let a = format!("session={}; session=junk", ids[0].expose());
        let b = format!("session={}", ids[1].expose());
        let got = read_h(&headers(&[a.as_bytes(), b.as_bytes()]), "session", &[]);
        assert_eq!(
            (got.presented, got.refused),
            (
                Presented::Several(vec![ids[0], ids[1]]),
                Some(Refused::Ambiguous)
            )
        );
        // Many cookies: at most MAX_CANDIDATES ids, from the first ones.
        let line = ids
            .iter()
            .map(|id| format!("session={}", id.expose()))
            .collect::<Vec<_>>()
            .join("; ");
        let got = read_h(&headers(&[line.as_bytes()]), "session", &[]);
        assert_eq!(
            got.presented,
            Presented::Several(ids[..Presented::MAX_CANDIDATES].to_vec())
        );
        // Only malformed ones: several, none to try.
        let got = read_h(&headers(&[b"session=a; session=b"]), "session", &[]);
        assert_eq!(got.presented, Presented::Several(vec![]));
    }

    #[test]
    fn malformed_values_are_present_but_not_ids() {
        for bad in [
            &b"session="[..],
            b"session=abc",
            b"session=\xff\xfe",
            b"session==;;",
        ] {
            let got = read_h(&headers(&[bad]), "session", &[]);
            assert_eq!(
                (got.presented, got.refused),
                (Presented::One(None), Some(Refused::Malformed)),
                "{bad:?}"
            );
        }
        assert_eq!(
            read_h(&headers(&[b"sessionx=1; xsession=2"]), "session", &[]).presented,
            Presented::Nothing
        );
    }

    #[test]
    fn signed_cookies_round_trip_and_bad_signatures_are_refused() {
        let key = SigningKey::new(vec![9; 32]).unwrap();
        let config = CookieConfig::default().signing_keys(vec![key.clone()]);
        let writer = CookieWriter::new(&config).unwrap();
        let id = SessionId::generate();
        let mut h = HeaderMap::new();
        writer.set(&mut h, &id, Duration::from_secs(60), false);
        let set = h.get(SET_COOKIE).unwrap().to_str().unwrap();
        let pair = set.split(';').next().unwrap();
        let got = read_h(
            &headers(&[pair.as_bytes()]),
            "session",
            std::slice::from_ref(&key),
        );
        assert_eq!(got.presented, Presented::One(Some(id)));
        // An unsigned id is refused when signing is on.
        let bare = format!("session={}", id.expose());
        let got = read_h(
            &headers(&[bare.as_bytes()]),
            "session",
            std::slice::from_ref(&key),
        );
        assert_eq!(
            (got.presented, got.refused),
            (Presented::One(None), Some(Refused::Malformed))
        );
        // A signature made with another key is refused.
        let other = SigningKey::new(vec![8; 32]).unwrap();
        let got = read_h(&headers(&[pair.as_bytes()]), "session", &[other]);
        assert_eq!(
            (got.presented, got.refused),
            (Presented::One(None), Some(Refused::BadSignature))
        );
    }

    /// Headers that keep the `Set-Cookie` strings as they were handed over.
    #[derive(Default)]
    struct Captured(Vec<String>);

    impl ResponseHeaders for Captured {
        fn append_set_cookie(&mut self, value: String) {
            self.0.push(value);
        }
        fn cache_control(&self) -> impl Iterator<Item = &[u8]> {
            std::iter::empty()
        }
        fn set_cache_control(&mut self, _: &str) {}
        fn set_header(&mut self, _: &http::HeaderName, _: &str) {}
    }

    #[test]
    fn the_set_cookie_value_fills_its_buffer_exactly() {
        // So that `Bytes::from` takes it without allocating (see `set`).
        let key = SigningKey::new(vec![9; 32]).unwrap();
        let configs = [
            CookieConfig::default(),
            CookieConfig::default().persistent(false),
            CookieConfig::default().signing_keys(vec![key]),
            CookieConfig::default()
                .name("__Host-sid")
                .domain(None)
                .persistent(false),
        ];
        let ages = [0, 1, 999, 1_000, 7_200_000, u64::MAX / 1_000_000];
        for config in &configs {
            let writer = CookieWriter::new(config).unwrap();
            for ms in ages {
                for remembered in [false, true] {
                    let mut h = Captured::default();
                    writer.set(
                        &mut h,
                        &SessionId::generate(),
                        Duration::from_millis(ms),
                        remembered,
                    );
                    let value = &h.0[0];
                    assert_eq!(value.len(), value.capacity(), "{value}");
                }
            }
        }
    }

    #[test]
    fn decimal_digits_counts_every_digit() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, u64::MAX] {
            assert_eq!(decimal_digits(n), n.to_string().len(), "{n}");
        }
    }

    #[test]
    fn set_cookie_has_the_default_attributes() {
        let writer = CookieWriter::new(&CookieConfig::default()).unwrap();
        let mut h = HeaderMap::new();
        let id = SessionId::generate();
        writer.set(&mut h, &id, Duration::from_millis(1500), false);
        let v = h.get(SET_COOKIE).unwrap().to_str().unwrap();
        assert_eq!(
            v,
            format!(
                "session={}; Max-Age=2; Path=/; HttpOnly; Secure; SameSite=Lax",
                id.expose()
            )
        );
        assert_eq!(h.get(CACHE_CONTROL).unwrap(), "private");
    }

    #[test]
    fn shared_caching_directives_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60, s-maxage=600"),
        );
        forbid_shared_caching(&mut h);
        assert_eq!(h.get(CACHE_CONTROL).unwrap(), "private, max-age=60");
    }

    #[test]
    fn names_are_validated() {
        for bad in ["", "12345", "a;b", "a=b", "sp ace", "é"] {
            let err = validate_name(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidCookieName, "{bad:?}");
        }
        for good in ["session", "__Host-s", "__Secure-s", "a1", "1a", "_"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn prefix_rules_are_enforced() {
        let host = CookieConfig::default().name("__Host-s");
        assert!(host.clone().validate().is_ok());
        assert!(host.clone().secure(false).validate().is_err());
        assert!(host.clone().path("/app").validate().is_err());
        assert!(
            CookieConfig::default()
                .name("__Secure-s")
                .secure(false)
                .validate()
                .is_err()
        );
        assert!(
            CookieConfig::default()
                .same_site(SameSite::None)
                .secure(false)
                .validate()
                .is_err()
        );
    }
}
