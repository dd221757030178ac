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
//! | `GET /api/session` | JSON `{"user", "basket", "visits", "n"}`; reads only |
//! | `POST /api/counter` | locked read-modify-write of `n`; JSON `{"n": N}` |
//! | `POST /api/counter/buffered` | the same increment, buffered, no lock; JSON `{"n": N}` |
//! | `GET /healthz` | `ok` |
//!
//! The locked counter is exact under any concurrency; the buffered one is
//! not (two requests that read the same `n` both write `n + 1`), which is the
//! point of showing both.

use std::time::Duration;

use axum::extract::Form;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use sessionkit::{Session, SessionLayer};

/// Longest accepted basket item or user name, in characters.
const MAX_INPUT: usize = 64;

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
        .layer(layer)
}

type Result<T> = std::result::Result<T, sessionkit::Error>;

async fn index(session: Session) -> Result<Html<String>> {
    let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", &visits)?;
    let flash = session.take_flash::<String>("notice").await?;
    let user = session.get::<String>("user").await?;
    let basket = session
        .get::<Vec<String>>("basket")
        .await?
        .unwrap_or_default();
    Ok(Html(render(
        visits,
        user.as_deref(),
        &basket,
        flash.as_deref(),
    )))
}

#[derive(Deserialize)]
struct ItemForm {
    item: String,
}

async fn add_to_basket(session: Session, Form(form): Form<ItemForm>) -> Result<Response> {
    let Some(item) = clean(&form.item) else {
        return Ok(bad_input("item"));
    };
    session.lock().await?;
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

async fn clear_basket(session: Session) -> Result<Redirect> {
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

async fn login(session: Session, Form(form): Form<LoginForm>) -> Result<Response> {
    let Some(user) = clean(&form.user) else {
        return Ok(bad_input("user"));
    };
    // A new id at every privilege change: an id planted or seen before the
    // login is worthless after it.
    session.regenerate().await?;
    session.insert("user", &user)?;
    if form.remember.is_some() {
        // Kept server-side for 30 days of inactivity, with a persistent
        // cookie even when plain logins get a browser-session one.
        session.set_lifetime(REMEMBER_FOR)?;
    }
    session.flash("notice", &format!("Welcome, {user}."))?;
    Ok(Redirect::to("/").into_response())
}

async fn logout(session: Session) -> Result<Redirect> {
    session.destroy().await?;
    // A write after destroy starts a new, anonymous session for the message.
    session.flash("notice", "You are logged out.")?;
    Ok(Redirect::to("/"))
}

async fn api_session(session: Session) -> Result<Json<serde_json::Value>> {
    Ok(Json(json!({
        "user": session.get::<String>("user").await?,
        "basket": session.get::<Vec<String>>("basket").await?.unwrap_or_default(),
        "visits": session.get::<u64>("visits").await?.unwrap_or(0),
        "n": session.get::<u64>("n").await?.unwrap_or(0),
    })))
}

async fn counter_locked(session: Session) -> Result<Json<serde_json::Value>> {
    session.lock().await?;
    let n = session.get::<u64>("n").await?.unwrap_or(0) + 1;
    session.insert("n", &n)?;
    session.commit().await?;
    Ok(Json(json!({ "n": n })))
}

async fn counter_buffered(session: Session) -> Result<Json<serde_json::Value>> {
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

fn render(visits: u64, user: Option<&str>, basket: &[String], flash: Option<&str>) -> String {
    let flash = flash
        .map(|f| format!(r#"<p class="flash" id="flash">{}</p>"#, escape(f)))
        .unwrap_or_default();
    let who = match user {
        Some(u) => format!(
            r#"<p>Logged in as <strong id="user">{}</strong>.</p>
<form method="post" action="/logout"><button id="logout">Log out</button></form>"#,
            escape(u)
        ),
        None => r#"<p id="user-none">Not logged in.</p>
<form method="post" action="/login">
  <label>Name <input name="user" id="user-input" maxlength="64" required></label>
  <label><input type="checkbox" name="remember" id="remember"> Remember me for 30 days</label>
  <button id="login">Log in</button>
</form>"#
            .to_owned(),
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
<form method="post" action="/basket">
  <label>Item <input name="item" id="item-input" maxlength="64" required></label>
  <button id="add">Add to basket</button>
</form>
<form method="post" action="/basket/clear"><button id="clear">Empty basket</button></form>
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
