//! The sessionkit demo shop: a small web app whose HTTP surface is fixed, so
//! that tests, benchmarks and people can drive it.
//!
//! | route | behaviour |
//! |---|---|
//! | `GET /` | HTML page: visit count, basket, who is logged in, flash message, forms |
//! | `POST /basket` (form `item`) | adds the item in a locked transaction; 303 to `/` |
//! | `POST /basket/clear` | empties the basket (a blind buffered write); 303 to `/` |
//! | `POST /login` (form `user`, optional `remember`) | regenerates the id, stores the user (for 30 days with `remember`); 303 to `/` |
//! | `POST /logout` | destroys the session; 303 to `/` |
//! | `GET /api/session` | JSON `{"user", "basket", "visits", "n", "csrf_token"}`; reads only (but for giving a session from before the CSRF defence its token) |
//! | `POST /api/counter` | locked read-modify-write of `n`; JSON `{"n": N}` |
//! | `POST /api/counter/buffered` | the same increment, buffered, no lock; JSON `{"n": N}` |
//! | `GET /healthz` | `ok` |
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
//! Every `POST` is guarded against cross-site request forgery ([`csrf`]): a
//! request from another site or origin (by `Sec-Fetch-Site` or `Origin`) is
//! refused with 403, and one that carries a session must carry the session's
//! token too, as the form field `csrf_token` or the header `x-csrf-token`
//! (403 otherwise). The page puts the token in every form; API clients read
//! it from `GET /api/session` (`null` without a session). A request without
//! a session yet (the first login) is judged by its origin alone.

use std::time::Duration;

use axum::extract::Form;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use sessionkit::{Session, SessionLayer};

pub mod csrf;

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
        .route("/basket/clear", post(clear_basket))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/api/session", get(api_session))
        .route("/api/counter", post(counter_locked))
        .route("/api/counter/buffered", post(counter_buffered))
        .route("/healthz", get(|| async { "ok" }))
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
        }
    }
}

type Result<T> = std::result::Result<T, Failure>;

async fn index(session: Session) -> Result<Html<String>> {
    let flash = session.take_flash::<String>("notice").await?;
    let user = session.get::<String>("user").await?;
    let basket = session
        .get::<Vec<String>>("basket")
        .await?
        .unwrap_or_default();
    let mut visits = session.get::<u64>("visits").await?.unwrap_or(0);
    // Only a session that exists counts its visits: a GET never creates one
    // (without a cookie, nothing above touched the store either).
    if session.id().is_some() {
        visits += 1;
        session.insert("visits", &visits)?;
    }
    let token = csrf::token(&session).await?;
    Ok(Html(render(&Page {
        visits,
        user: user.as_deref(),
        basket: &basket,
        flash: flash.as_deref(),
        token: token.as_deref(),
    })))
}

#[derive(Deserialize)]
struct ItemForm {
    item: String,
}

async fn add_to_basket(guard: Guard, Form(form): Form<ItemForm>) -> Result<Response> {
    let Some(item) = clean(&form.item) else {
        return Ok(bad_input("item"));
    };
    let session = guard.lock().await?;
    let mut basket = session
        .get::<Vec<String>>("basket")
        .await?
        .unwrap_or_default();
    basket.push(item.clone());
    session.insert("basket", &basket)?;
    session.flash("notice", &format!("Added {item} to your basket."))?;
    session.commit().await?;
    Ok(Redirect::to("/").into_response())
}

async fn clear_basket(guard: Guard) -> Result<Redirect> {
    let session = guard.read().await?;
    session.discard("basket")?;
    session.flash("notice", "Your basket is empty.")?;
    Ok(Redirect::to("/"))
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    /// The "remember me" checkbox: present (`on`) when ticked.
    remember: Option<String>,
}

/// How long a "remember me" login lasts without a visit.
const REMEMBER_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

async fn login(guard: Guard, Form(form): Form<LoginForm>) -> Result<Response> {
    let Some(user) = clean(&form.user) else {
        return Ok(bad_input("user"));
    };
    let session = guard.read().await?;
    // A new id and a new CSRF token at every privilege change: an id or a
    // token planted or seen before the login is worthless after it.
    session.regenerate().await?;
    csrf::rotate(&session)?;
    session.insert("user", &user)?;
    if form.remember.is_some() {
        // Kept server-side for 30 days of inactivity, with a persistent
        // cookie even when plain logins get a browser-session one.
        session.set_lifetime(REMEMBER_FOR)?;
    }
    session.flash("notice", &format!("Welcome, {user}."))?;
    Ok(Redirect::to("/").into_response())
}

async fn logout(guard: Guard) -> Result<Redirect> {
    let session = guard.read().await?;
    session.destroy().await?;
    // A write after destroy starts a new, anonymous session for the
    // message, born with a token of its own.
    session.flash("notice", "You are logged out.")?;
    csrf::rotate(&session)?;
    Ok(Redirect::to("/"))
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

async fn counter_locked(guard: Guard) -> Result<Json<serde_json::Value>> {
    let session = guard.lock().await?;
    let n = session.get::<u64>("n").await?.unwrap_or(0) + 1;
    session.insert("n", &n)?;
    session.commit().await?;
    Ok(Json(json!({ "n": n })))
}

async fn counter_buffered(guard: Guard) -> Result<Json<serde_json::Value>> {
    let session = guard.read().await?;
    let n = session.get::<u64>("n").await?.unwrap_or(0) + 1;
    session.insert("n", &n)?;
    Ok(Json(json!({ "n": n })))
}

fn clean(input: &str) -> Option<String> {
    let trimmed = input.trim();
    let ok = !trimmed.is_empty()
        && trimmed.chars().count() <= MAX_INPUT
        && !trimmed.chars().any(char::is_control);
    ok.then(|| trimmed.to_owned())
}

fn bad_input(field: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("`{field}` must be 1 to {MAX_INPUT} printable characters"),
    )
        .into_response()
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What the page shows.
struct Page<'a> {
    visits: u64,
    user: Option<&'a str>,
    basket: &'a [String],
    flash: Option<&'a str>,
    /// The session's CSRF token, put in every form; `None` without a session.
    token: Option<&'a str>,
}

fn render(page: &Page<'_>) -> String {
    let Page {
        visits,
        user,
        basket,
        flash,
        token,
    } = *page;
    let flash = flash
        .map(|f| format!(r#"<p class="flash" id="flash">{}</p>"#, escape(f)))
        .unwrap_or_default();
    let csrf = token
        .map(|t| {
            format!(
                r#"<input type="hidden" name="{}" value="{}">"#,
                csrf::FIELD,
                escape(t)
            )
        })
        .unwrap_or_default();
    let who = match user {
        Some(u) => format!(
            r#"<p>Logged in as <strong id="user">{}</strong>.</p>
<form method="post" action="/logout">{csrf}<button id="logout">Log out</button></form>"#,
            escape(u)
        ),
        None => format!(
            r#"<p id="user-none">Not logged in.</p>
<form method="post" action="/login">{csrf}
  <label>Name <input name="user" id="user-input" maxlength="64" required></label>
  <label><input type="checkbox" name="remember" id="remember"> Remember me for 30 days</label>
  <button id="login">Log in</button>
</form>"#
        ),
    };
    let items = if basket.is_empty() {
        r#"<p id="basket-empty">Your basket is empty.</p>"#.to_owned()
    } else {
        let lis: String = basket
            .iter()
            .map(|i| format!("<li>{}</li>", escape(i)))
            .collect();
        format!(r#"<ul id="basket">{lis}</ul>"#)
    };
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>sessionkit shop</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}
.flash {{ background: #e8f4ea; border: 1px solid #9c9; padding: .5rem 1rem; border-radius: 4px; }}
section {{ border-top: 1px solid #ddd; padding: .5rem 0; }}
</style>
</head>
<body>
<h1>sessionkit shop</h1>
{flash}
<p>Visits in this session: <strong id="visits">{visits}</strong></p>
<section><h2>Account</h2>
{who}
</section>
<section><h2>Basket</h2>
{items}
<form method="post" action="/basket">{csrf}
  <label>Item <input name="item" id="item-input" maxlength="64" required></label>
  <button id="add">Add to basket</button>
</form>
<form method="post" action="/basket/clear">{csrf}<button id="clear">Empty basket</button></form>
</section>
</body>
</html>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralizes_markup() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn clean_rejects_empty_long_and_control_input() {
        assert_eq!(clean("  tea "), Some("tea".into()));
        assert_eq!(clean("   "), None);
        assert_eq!(clean(&"x".repeat(MAX_INPUT + 1)), None);
        assert_eq!(clean("a\nb"), None);
    }
}
