//! How the session id travels: in a cookie (browsers), or in a request and
//! response header (API and native clients).
//!
//! Both integrations (the tower layer, the actix-web middleware) read and
//! write the id through [`Carrier`], so a session carried in a header keeps
//! every other rule: strict ids, signing, hashing at rest, locks.

use std::time::Duration;

use http::HeaderValue;
use http::header::{COOKIE, HeaderMap, HeaderName};
use sessionkit_core::{Error, Presented, SessionId};

use crate::cookie::{self, CookieWriter, Incoming, ResponseHeaders};
use crate::signing::{self, Refused, SigningKey};

/// How a session's id travels between client and server.
///
/// - [`Transport::Cookie`] (the default): the cookie of
///   [`CookieConfig`](crate::CookieConfig), for browsers.
/// - [`Transport::Header`]: a header of the given name, for API and native
///   clients that keep no cookies (Spring Session's `X-Auth-Token`). The
///   request carries the token in that header; a response carries the
///   token in the same header whenever the cookie transport would set the
///   cookie (the session was created, its id changed, or its expiry moved:
///   a client keeps the latest token it was sent), the header with an empty
///   value when the session was destroyed or the token is not known (the
///   client forgets it), and no such header otherwise. No cookie is read or
///   set. Tokens are signed
///   when the cookie settings have signing keys. Environment:
///   `SESSION_TRANSPORT=header`, `SESSION_HEADER_NAME` (default
///   `x-session-token`).
///
/// ```
/// use sessionkit::store::MemoryStore;
/// use sessionkit::{SessionLayer, Transport};
///
/// let layer = SessionLayer::builder(MemoryStore::new())
///     .transport(Transport::header("x-session-token"))
///     .build()
///     .unwrap();
/// # let _ = layer;
/// ```
///
/// # Security
///
/// A browser attaches cookies to every request to their site, also to
/// requests that another site's page makes (cross-site request forgery); it
/// never attaches a custom header on its own, and a page of another origin
/// can only send one after a CORS preflight that the application allows.
/// That is why CSRF defences do not apply to sessions carried in a header.
/// The price is that the client must keep the token itself: in a browser
/// that means script-readable storage, which an XSS flaw can read, while an
/// `HttpOnly` cookie cannot be. Use the header for non-browser clients; for
/// a browser front end served from its own origin, prefer the cookie. A
/// browser front end on another origin must be allowed to read the header
/// (`Access-Control-Expose-Headers: x-session-token` in the application's
/// CORS settings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// The session cookie (see [`CookieConfig`](crate::CookieConfig)).
    #[default]
    Cookie,
    /// A header of this name (lowercase).
    Header(String),
}

impl Transport {
    /// The id in the header `name` (checked when the layer is built: a
    /// valid header name, not `cookie` or `set-cookie`). The name is
    /// case-insensitive, as every HTTP header name.
    pub fn header(name: impl Into<String>) -> Transport {
        Transport::Header(name.into().to_ascii_lowercase())
    }

    /// Checks the header name. Errors name the setting `header_name`.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Transport::Cookie => Ok(()),
            Transport::Header(name) => header_name(name).map(|_| ()),
        }
    }
}

fn header_name(name: &str) -> Result<HeaderName, Error> {
    let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        Error::invalid_config(
            "header_name",
            "must be a header name: letters, digits and !#$%&'*+-.^_`|~",
        )
    })?;
    if parsed == COOKIE || parsed == http::header::SET_COOKIE {
        return Err(Error::invalid_config(
            "header_name",
            "cookie and set-cookie are the cookie transport's; choose another name",
        ));
    }
    Ok(parsed)
}

/// The raw values of a request's headers: `http`'s map for the tower layer,
/// actix-web's for its middleware.
pub(crate) trait RequestHeaders {
    /// The values of every header named `name` (lowercase), in order.
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]>;
}

impl RequestHeaders for HeaderMap {
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> {
        self.get_all(name).iter().map(HeaderValue::as_bytes)
    }
}

/// Reads and writes the id as the [`Transport`] says.
#[derive(Debug, Clone)]
pub(crate) enum Carrier {
    Cookie(CookieWriter),
    Header {
        name: HeaderName,
        keys: Vec<SigningKey>,
    },
}

impl Carrier {
    /// The carrier of `transport`, signing with the cookie settings' keys.
    pub(crate) fn new(transport: &Transport, cookie: CookieWriter) -> Result<Carrier, Error> {
        Ok(match transport {
            Transport::Cookie => Carrier::Cookie(cookie),
            Transport::Header(name) => Carrier::Header {
                name: header_name(name)?,
                keys: cookie.keys().to_vec(),
            },
        })
    }

    /// The ids a request presents.
    pub(crate) fn read(&self, headers: &impl RequestHeaders) -> Incoming {
        match self {
            Carrier::Cookie(writer) => {
                cookie::read(headers.values(&COOKIE), writer.name(), writer.keys())
            }
            Carrier::Header { name, keys } => read_header(headers.values(name), name, keys),
        }
    }

    /// Hands the client `id`, valid for `max_age` (`persistent`: see
    /// [`CookieWriter::set`]; a header has no lifetime of its own).
    pub(crate) fn set(
        &self,
        headers: &mut impl ResponseHeaders,
        id: &SessionId,
        max_age: Duration,
        persistent: bool,
    ) {
        match self {
            Carrier::Cookie(writer) => writer.set(headers, id, max_age, persistent),
            Carrier::Header { name, keys } => {
                let token = if keys.is_empty() {
                    id.expose()
                } else {
                    signing::sign(keys, name.as_str(), id)
                };
                headers.set_header(name, &token);
                cookie::forbid_shared_caching(headers);
            }
        }
    }

    /// Tells the client to forget its id.
    pub(crate) fn remove(&self, headers: &mut impl ResponseHeaders) {
        match self {
            Carrier::Cookie(writer) => writer.remove(headers),
            Carrier::Header { name, .. } => {
                headers.set_header(name, "");
                cookie::forbid_shared_caching(headers);
            }
        }
    }
}

/// The id in the session header: one header with one well-formed (or
/// well-signed) token. Several headers, or a value with a comma (several
/// values folded into one), are refused as ambiguous and present nothing: a
/// client that sends two tokens has no session to guess at.
fn read_header<'h>(
    mut values: impl Iterator<Item = &'h [u8]>,
    name: &HeaderName,
    keys: &[SigningKey],
) -> Incoming {
    let value = match (values.next(), values.next()) {
        (None, _) => {
            return Incoming {
                presented: Presented::Nothing,
                refused: None,
            };
        }
        (Some(_), Some(_)) => {
            return Incoming {
                presented: Presented::Nothing,
                refused: Some(Refused::Ambiguous),
            };
        }
        (Some(value), None) => value,
    };
    let value = value.trim_ascii();
    if value.is_empty() {
        return Incoming {
            presented: Presented::Nothing,
            refused: None,
        };
    }
    if value.contains(&b',') {
        return Incoming {
            presented: Presented::Nothing,
            refused: Some(Refused::Ambiguous),
        };
    }
    let parsed = if keys.is_empty() {
        SessionId::parse_bytes(value).map_err(|_| Refused::Malformed)
    } else {
        signing::verify(keys, name.as_str(), value)
    };
    match parsed {
        Ok(id) => Incoming {
            presented: Presented::One(Some(id)),
            refused: None,
        },
        Err(why) => Incoming {
            presented: Presented::One(None),
            refused: Some(why),
        },
    }
}
