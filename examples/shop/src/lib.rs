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
//! Every `POST` is guarded against cross-site request forgery ([`csrf`]): a
//! request from another site or origin (by `Sec-Fetch-Site` or `Origin`) is
//! refused with 403, and one that carries a session must carry the session's
//! token too, as the form field `csrf_token` or the header `x-csrf-token`
//! (403 otherwise). The page puts the token in every form; API clients read
//! it from `GET /api/session` (`null` without a session). A request without
//! a session yet (the first login) is judged by its origin alone.

use std::time::Duration;

use axum::extract::{Form, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use sessionkit::{Session, SessionLayer};

pub mod catalogue;
pub mod csrf;
mod page;

use crate::csrf::Guard;

/// Longest accepted basket item or user name, in characters.
const MAX_INPUT: usize = 64;

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

/// The shop's routes behind `layer`.
pub fn app(layer: SessionLayer) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/basket", post(add_to_basket))
        .route("/basket/remove", post(remove_from_basket))
        .route("/basket/clear", post(clear_basket))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/api/session", get(api_session))
        .route("/api/counter", post(counter_locked))
        .route("/api/counter/buffered", post(counter_buffered))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/assets/shop.css",
            get(|| async { asset("text/css; charset=utf-8", include_str!("assets/shop.css")) }),
        )
        .route(
            "/assets/shop.js",
            get(|| async {
                asset(
                    "text/javascript; charset=utf-8",
                    include_str!("assets/shop.js"),
                )
            }),
        )
        .layer(axum::middleware::from_fn(csrf::screen))
        .layer(layer)
}

/// Why a handler failed: the session (its store), or the CSRF defence.
#[derive(Debug)]
#[non_exhaustive]
pub enum Failure {
    /// The session failed; answered as sessionkit maps its errors.
    Session(sessionkit::Error),
    /// The request was refused by the CSRF defence.
    Refused(csrf::Refused),
    /// A form or query field is out of range (422); says what is accepted.
    Invalid(String),
}

impl From<sessionkit::Error> for Failure {
    fn from(e: sessionkit::Error) -> Self {
        Failure::Session(e)
    }
}

impl From<csrf::Refused> for Failure {
    fn from(r: csrf::Refused) -> Self {
        Failure::Refused(r)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Session(e) => e.into_response(),
            Failure::Refused(r) => r.into_response(),
            Failure::Invalid(why) => (StatusCode::UNPROCESSABLE_ENTITY, why).into_response(),
        }
    }
}

type Result<T> = std::result::Result<T, Failure>;

/// The flash entry that tells the next `GET /` it is the landing of a
/// browser's form `POST`, not a visit.
const LANDING: &str = "landing";

/// The session key recording that the login ticked "remember me".
const REMEMBERED: &str = "remembered";

async fn index(session: Session) -> Result<Response> {
    let flash = session.take_flash::<String>("notice").await?;
    let landing = session.take_flash::<bool>(LANDING).await?.is_some();
    let user = session.get::<String>("user").await?;
    let basket = session.get_or::<Vec<String>>("basket", Vec::new()).await?;
    let mut visits = session.get_or::<u64>("visits", 0).await?;
    // Only a session that exists counts its visits: a GET never creates one
    // (without a cookie, nothing above touched the store either).
    let exists = session.id().is_some();
    if exists && !landing {
        visits += 1;
        session.insert("visits", &visits)?;
    }
    let token = csrf::token(&session).await?;
    let expires_in = if exists {
        session.expires_in().await?
    } else {
        None
    };
    let html = page::render(&page::Page {
        session: exists,
        visits,
        user: user.as_deref(),
        remembered: session.get_or(REMEMBERED, false).await?,
        basket: &basket,
        n: session.get_or("n", 0).await?,
        flash: flash.as_deref(),
        token: token.as_deref(),
        expires_in,
    });
    Ok((
        [(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        )],
        Html(html),
    )
        .into_response())
}

/// The 303 back to the page after a form `POST`. A browser (it sends
/// `Origin` with every `POST`; other clients need not) follows it by
/// itself: the page it lands on answers the form and is not a visit, which
/// a flash marker tells the next `GET /`.
fn back_to_page(session: &Session, headers: &HeaderMap) -> Result<Redirect> {
    if headers.contains_key(header::ORIGIN) {
        session.flash(LANDING, &true)?;
    }
    Ok(Redirect::to("/"))
}

/// The most of one item that one form adds or removes.
pub const MAX_QUANTITY: usize = 99;

#[derive(Deserialize)]
struct ItemForm {
    item: String,
    /// How many; 1 when absent.
    quantity: Option<String>,
}

impl ItemForm {
    /// The item and the quantity, or why not.
    fn parse(&self) -> Result<(String, usize)> {
        let item = clean(&self.item).ok_or_else(|| invalid_text("item"))?;
        let quantity = match self.quantity.as_deref() {
            None => 1,
            Some(q) => q
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|q| (1..=MAX_QUANTITY).contains(q))
                .ok_or_else(|| {
                    Failure::Invalid(format!(
                        "`quantity` must be a whole number from 1 to {MAX_QUANTITY}"
                    ))
                })?,
        };
        Ok((item, quantity))
    }
}

/// `tea`, or `3 × tea`.
fn times(quantity: usize, item: &str) -> String {
    match quantity {
        1 => item.to_owned(),
        q => format!("{q} × {item}"),
    }
}

async fn add_to_basket(
    guard: Guard,
    headers: HeaderMap,
    Form(form): Form<ItemForm>,
) -> Result<Redirect> {
    let (item, quantity) = form.parse()?;
    let session = guard.lock().await?;
    let mut basket = session.get_or::<Vec<String>>("basket", Vec::new()).await?;
    basket.extend(std::iter::repeat_n(item.clone(), quantity));
    session.insert("basket", &basket)?;
    let added = times(quantity, &item);
    session.flash("notice", &format!("Added {added} to your basket."))?;
    let to = back_to_page(&session, &headers)?;
    session.commit().await?;
    Ok(to)
}

async fn remove_from_basket(
    guard: Guard,
    headers: HeaderMap,
    Form(form): Form<ItemForm>,
) -> Result<Redirect> {
    let (item, quantity) = form.parse()?;
    let session = guard.lock().await?;
    let mut basket = session.get_or::<Vec<String>>("basket", Vec::new()).await?;
    let mut removed = 0;
    // The latest first, so that the line keeps its place while any is left.
    while removed < quantity
        && let Some(at) = basket.iter().rposition(|i| *i == item)
    {
        basket.remove(at);
        removed += 1;
    }
    let notice = if removed == 0 {
        format!("There is no {item} in your basket.")
    } else {
        if basket.is_empty() {
            session.discard("basket")?;
        } else {
            session.insert("basket", &basket)?;
        }
        format!("Removed {} from your basket.", times(removed, &item))
    };
    session.flash("notice", &notice)?;
    let to = back_to_page(&session, &headers)?;
    session.commit().await?;
    Ok(to)
}

async fn clear_basket(guard: Guard, headers: HeaderMap) -> Result<Redirect> {
    let session = guard.read().await?;
    session.discard("basket")?;
    session.flash("notice", "Your basket is empty.")?;
    back_to_page(&session, &headers)
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    /// The "remember me" checkbox: present (`on`) when ticked.
    remember: Option<String>,
}

/// How long a "remember me" login lasts without a visit.
const REMEMBER_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

async fn login(guard: Guard, headers: HeaderMap, Form(form): Form<LoginForm>) -> Result<Redirect> {
    let user = clean(&form.user).ok_or_else(|| invalid_text("user"))?;
    let session = guard.read().await?;
    // A new id and a new CSRF token at every privilege change: an id or a
    // token planted or seen before the login is worthless after it.
    session.regenerate().await?;
    csrf::rotate(&session)?;
    session.insert("user", &user)?;
    if form.remember.is_some() {
        // Kept server-side for 30 days of inactivity, with a persistent
        // cookie even when plain logins get a browser-session one. The
        // page shows it from the recorded fact, not from the lifetime.
        session.set_lifetime(REMEMBER_FOR)?;
        session.insert(REMEMBERED, &true)?;
    }
    session.flash("notice", &format!("Welcome, {user}."))?;
    back_to_page(&session, &headers)
}

async fn logout(guard: Guard, headers: HeaderMap) -> Result<Redirect> {
    let session = guard.read().await?;
    session.destroy().await?;
    // A write after destroy starts a new, anonymous session for the
    // message, born with a token of its own.
    session.flash("notice", "You are logged out.")?;
    csrf::rotate(&session)?;
    back_to_page(&session, &headers)
}

async fn api_session(session: Session) -> Result<Json<serde_json::Value>> {
    let user = session.get::<String>("user").await?;
    Ok(Json(json!({
        "user": user,
        "basket": session.get::<Vec<String>>("basket").await?.unwrap_or_default(),
        "visits": session.get::<u64>("visits").await?.unwrap_or(0),
        "n": session.get::<u64>("n").await?.unwrap_or(0),
        "csrf_token": csrf::token(&session).await?,
    })))
}

/// The most simulated work a counter request may ask for.
pub const MAX_WORK_MS: u64 = 50;

/// The counters' optional query: `work_ms`, simulated work between the
/// read of `n` and the write of `n + 1` (a real handler would query a
/// database there), 0 to [`MAX_WORK_MS`], default 0.
///
/// On the memory store the read and the write of a bare increment happen
/// microseconds apart, so concurrent requests rarely overlap in between and
/// the buffered counter seldom loses anything; with a few milliseconds of
/// work they overlap as they do in real applications, and the race panel
/// shows what the lock is for. Without the parameter the routes do exactly
/// what they always did.
#[derive(Debug, Default, Deserialize)]
struct Work {
    #[serde(default)]
    work_ms: u64,
}

impl Work {
    /// The pause, if any, or why not.
    fn pause(&self) -> Result<Option<Duration>> {
        match self.work_ms {
            0 => Ok(None),
            ms if ms <= MAX_WORK_MS => Ok(Some(Duration::from_millis(ms))),
            _ => Err(Failure::Invalid(format!(
                "`work_ms` must be a whole number from 0 to {MAX_WORK_MS}"
            ))),
        }
    }
}

async fn counter_locked(guard: Guard, Query(work): Query<Work>) -> Result<Json<serde_json::Value>> {
    let pause = work.pause()?;
    let session = guard.lock().await?;
    let n = session.get::<u64>("n").await?.unwrap_or(0) + 1;
    if let Some(pause) = pause {
        tokio::time::sleep(pause).await;
    }
    session.insert("n", &n)?;
    session.commit().await?;
    Ok(Json(json!({ "n": n })))
}

async fn counter_buffered(
    guard: Guard,
    Query(work): Query<Work>,
) -> Result<Json<serde_json::Value>> {
    let pause = work.pause()?;
    let session = guard.read().await?;
    let n = session.get::<u64>("n").await?.unwrap_or(0) + 1;
    if let Some(pause) = pause {
        tokio::time::sleep(pause).await;
    }
    session.insert("n", &n)?;
    Ok(Json(json!({ "n": n })))
}

/// A file of the page's, compiled in. `no-cache`: the browser revalidates,
/// so a rebuilt shop never runs with yesterday's script.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

fn clean(input: &str) -> Option<String> {
    let trimmed = input.trim();
    let ok = !trimmed.is_empty()
        && trimmed.chars().count() <= MAX_INPUT
        && !trimmed.chars().any(char::is_control);
    ok.then(|| trimmed.to_owned())
}

/// Why a text field was refused.
fn invalid_text(field: &str) -> Failure {
    Failure::Invalid(format!(
        "`{field}` must be 1 to {MAX_INPUT} printable characters"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_rejects_empty_long_and_control_input() {
        assert_eq!(clean("  tea "), Some("tea".into()));
        assert_eq!(clean("   "), None);
        assert_eq!(clean(&"x".repeat(MAX_INPUT + 1)), None);
        assert_eq!(clean("a\nb"), None);
    }
}
