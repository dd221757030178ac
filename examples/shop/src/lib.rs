//! The sessionkit demo shop: a small web app whose HTTP surface is fixed, so
//! that tests, benchmarks and people can drive it.
//!
//! | route | behaviour |
//! |---|---|
//! | `GET /` | HTML page: catalogue, basket with totals, who is logged in, flash message, visit count, the race panel; forms for the routes below |
//! | `POST /basket` (form `item`, optional `quantity`, 1 to 99, default 1) | adds the item (`quantity` times) in a locked transaction; 303 to `/` |
//! | `POST /basket/remove` (form `item`, optional `quantity`, default 1) | removes up to `quantity` of the item in a locked transaction; 303 to `/` |
//! | `POST /basket/clear` | empties the basket (a blind buffered write); 303 to `/` |
//! | `POST /login` (form `user`, optional `remember`) | regenerates the id, stores the user (for 30 days with `remember`); 303 to `/` |
//! | `POST /logout` | destroys the session; 303 to `/` |
//! | `GET /api/session` | JSON `{"user", "basket", "visits", "n", "csrf_token"}`; reads only (but for giving a session from before the CSRF defence its token) |
//! | `POST /api/counter` (optional query `work_ms`, 0 to 50) | locked read-modify-write of `n`; JSON `{"n": N}` |
//! | `POST /api/counter/buffered` (optional query `work_ms`) | the same increment, buffered, no lock; JSON `{"n": N}` |
//! | `GET /api/sessions` | logged in: JSON `{"sessions": [{"handle", "current", "created", "last_seen", "expires", "user_agent"}]}` (times in ms since the Unix epoch), least recently used first; not logged in: 401 |
//! | `POST /api/sessions/revoke` (form `handle`) | signs out that session of the logged-in user: 204; a handle that is not theirs: 404, nothing revoked |
//! | `POST /api/sessions/revoke-others` | signs out every other session of the logged-in user: 204 |
//! | `GET /account` | HTML page: the user's sessions by device, "sign out" on each, "sign out everywhere else" |
//! | `GET /healthz` | `ok` |
//! | `GET /assets/shop.css`, `GET /assets/shop.js` | the page's style and script, compiled in; no session |
//!
//! The basket is kept as it always was, a list of item names with one entry
//! per unit; the page groups and prices it against the [`catalogue`].
//!
//! The locked counter is exact under any concurrency; the buffered one is
//! not (two requests that read the same `n` both write `n + 1`), which is the
//! point of showing both.
//!
//! A `GET` never creates a session: without a session cookie, `GET /` and
//! `GET /api/session` store nothing and set no cookie (the page shows 0
//! visits; only a session that exists counts them). Sessions start with the
//! first `POST` that writes.
//!
//! Visits count the page itself, not the redirects that bring a browser
//! back to it: a form `POST` from a browser (which sends `Origin` with every
//! `POST`) leaves a flash marker, and the `GET /` that follows its 303 takes
//! the marker instead of counting. A client that sends no `Origin` follows
//! the redirect or not as it pleases; its next `GET /` counts. (A browser
//! client that posts with `fetch` and does not follow the redirect leaves
//! the marker for its next visit, which then goes uncounted.)
//!
//! Every `POST` is guarded against cross-site request forgery by
//! sessionkit's CSRF layer ([`sessionkit::csrf`]): a request from another
//! site or origin (by `Sec-Fetch-Site` or `Origin`) is refused with 403, and
//! one that carries a session must carry the session's token too, as the
//! form field `csrf_token` or the header `x-csrf-token` (403 otherwise,
//! with nothing written). The page puts the token in every form; API
//! clients read it from `GET /api/session` (`null` without a session). A
//! request without a session yet (the first login) is judged by its origin
//! alone. With `SESSION_TRANSPORT=header` the session travels in the
//! `x-session-token` header instead of a cookie, and no CSRF check applies
//! (a browser never attaches that header to a forged request).
//!
//! # Crate layout
//!
//! The routes are written once, framework-agnostic, in [`routes`] (with the
//! page and the [`catalogue`]); [`app`] mounts them on axum behind the
//! session and CSRF layers. The `shop-actix` example mounts the same routes on
//! actix-web, so the two binaries serve one surface and share sessions on
//! one store.

use axum::extract::{Form, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sessionkit::{CsrfLayer, Session, SessionLayer};

pub mod catalogue;
mod page;
pub mod routes;

pub use crate::routes::{Answer, Failure, MAX_QUANTITY, MAX_WORK_MS};
use crate::routes::{ItemForm, LoginForm, RevokeForm, Work};

/// The memory store's bound when `SHOP_MAX_SESSIONS` is not set: far above
/// what a demo sees, far below what would strain a laptop (the shop's
/// sessions hold a few hundred bytes each).
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;

/// The bound on the memory store from `SHOP_MAX_SESSIONS` (the variable's
/// value, if set) for the configured driver: the value, or
/// [`DEFAULT_MAX_SESSIONS`], for the memory store; `None` for the others,
/// for which setting the variable is an error rather than silently ignored.
///
/// ```
/// use sessionkit::Driver;
///
/// assert_eq!(shop::max_sessions(&Driver::Memory, None), Ok(Some(100_000)));
/// assert_eq!(shop::max_sessions(&Driver::Memory, Some("500")), Ok(Some(500)));
/// assert_eq!(shop::max_sessions(&Driver::Noop, None), Ok(None));
/// assert!(shop::max_sessions(&Driver::Noop, Some("500")).is_err());
/// assert!(shop::max_sessions(&Driver::Memory, Some("0")).is_err());
/// ```
pub fn max_sessions(
    driver: &sessionkit::Driver,
    value: Option<&str>,
) -> std::result::Result<Option<usize>, String> {
    let memory = matches!(driver, sessionkit::Driver::Memory);
    match value {
        None => Ok(memory.then_some(DEFAULT_MAX_SESSIONS)),
        Some(_) if !memory => Err(format!(
            "SHOP_MAX_SESSIONS bounds the memory store only, but SESSION_DRIVER is {}",
            driver.name()
        )),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .map(Some)
            .ok_or_else(|| {
                format!("invalid SHOP_MAX_SESSIONS: got {v:?}, expected a whole number, at least 1")
            }),
    }
}

/// The address from `SHOP_ADDR` (default `127.0.0.1:3000`), or why not.
pub fn addr_from_env() -> std::result::Result<std::net::SocketAddr, String> {
    std::env::var("SHOP_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()
        .map_err(|e| format!("SHOP_ADDR: expected host:port, {e}"))
}

/// The session stack from the `SESSION_*` variables (see the sessionkit
/// `config` module); with none set, sessions live in memory, bounded by
/// `SHOP_MAX_SESSIONS` ([`max_sessions`]). What both binaries, `shop` and
/// `shop-actix`, start with.
pub async fn layer_from_env() -> std::result::Result<SessionLayer, Box<dyn std::error::Error>> {
    let config = sessionkit::Config::from_env()?;
    let bound = std::env::var("SHOP_MAX_SESSIONS").ok();
    Ok(match max_sessions(&config.driver, bound.as_deref())? {
        Some(max) => {
            let store = sessionkit::store::MemoryStore::builder()
                .max_sessions(max)
                .build();
            config.layer_over(store)?
        }
        None => config.into_layer().await?,
    })
}

/// The shop's routes behind `layer`, on axum.
pub fn app(layer: SessionLayer) -> Router {
    let mut router = Router::new()
        .route("/", get(index))
        .route("/basket", post(add_to_basket))
        .route("/basket/remove", post(remove_from_basket))
        .route("/basket/clear", post(clear_basket))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/api/session", get(api_session))
        .route("/api/counter", post(counter_locked))
        .route("/api/counter/buffered", post(counter_buffered))
        .route("/api/sessions", get(api_sessions))
        .route("/api/sessions/revoke", post(revoke_session))
        .route("/api/sessions/revoke-others", post(revoke_other_sessions))
        .route("/account", get(account))
        .route("/healthz", get(|| async { "ok" }));
    for asset in routes::ASSETS {
        router = router.route(asset.path, get(move || async move { serve_asset(asset) }));
    }
    router.layer(csrf_layer(&layer)).layer(layer)
}

/// The largest form the shop reads for its CSRF token: its forms are a few
/// dozen bytes; a larger one is answered 413.
pub const FORM_LIMIT: usize = 16 * 1024;

/// The shop's CSRF layer, made from its session layer: sessionkit's
/// defaults (form field `csrf_token`, header `x-csrf-token`), forms up to
/// [`FORM_LIMIT`].
pub fn csrf_layer(sessions: &SessionLayer) -> CsrfLayer {
    CsrfLayer::builder(sessions)
        .form_limit(FORM_LIMIT)
        .build()
        .expect("the shop's CSRF settings are valid")
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Session(e) => e.into_response(),
            Failure::NotLoggedIn => (StatusCode::UNAUTHORIZED, "log in first").into_response(),
            Failure::NotFound => {
                (StatusCode::NOT_FOUND, "no such session of yours").into_response()
            }
            Failure::Unsupported => (
                StatusCode::NOT_IMPLEMENTED,
                "this session store keeps no list of a user's sessions",
            )
                .into_response(),
            Failure::Invalid(why) => (StatusCode::UNPROCESSABLE_ENTITY, why).into_response(),
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self {
            Answer::Page(html) => (
                [(header::CONTENT_SECURITY_POLICY, routes::PAGE_CSP)],
                Html(html),
            )
                .into_response(),
            Answer::BackToPage => Redirect::to("/").into_response(),
            Answer::Json(value) => Json(value).into_response(),
            Answer::Done => StatusCode::NO_CONTENT.into_response(),
        }
    }
}

type Result = std::result::Result<Answer, Failure>;

/// Whether the request came from a browser's form: browsers send `Origin`
/// with every `POST`.
fn from_browser(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ORIGIN)
}

async fn index(session: Session) -> Result {
    routes::index(session).await
}

async fn add_to_basket(session: Session, headers: HeaderMap, Form(form): Form<ItemForm>) -> Result {
    routes::add_to_basket(session, from_browser(&headers), form).await
}

async fn remove_from_basket(
    session: Session,
    headers: HeaderMap,
    Form(form): Form<ItemForm>,
) -> Result {
    routes::remove_from_basket(session, from_browser(&headers), form).await
}

async fn clear_basket(session: Session, headers: HeaderMap) -> Result {
    routes::clear_basket(session, from_browser(&headers)).await
}

async fn login(session: Session, headers: HeaderMap, Form(form): Form<LoginForm>) -> Result {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    routes::login(session, from_browser(&headers), user_agent, form).await
}

async fn api_sessions(session: Session) -> Result {
    routes::api_sessions(session).await
}

async fn revoke_session(session: Session, Form(form): Form<RevokeForm>) -> Result {
    routes::revoke_session(session, form).await
}

async fn revoke_other_sessions(session: Session) -> Result {
    routes::revoke_other_sessions(session).await
}

async fn account(session: Session) -> Result {
    routes::account(session).await
}

async fn logout(session: Session, headers: HeaderMap) -> Result {
    routes::logout(session, from_browser(&headers)).await
}

async fn api_session(session: Session) -> Result {
    routes::api_session(session).await
}

async fn counter_locked(session: Session, Query(work): Query<Work>) -> Result {
    routes::counter_locked(session, work).await
}

async fn counter_buffered(session: Session, Query(work): Query<Work>) -> Result {
    routes::counter_buffered(session, work).await
}

fn serve_asset(asset: routes::Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        asset.body,
    )
        .into_response()
}
