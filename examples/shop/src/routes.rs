//! The shop's routes, whatever the web framework: each handler takes the
//! session and the request's plain inputs, and gives an [`Answer`] or a
//! [`Failure`].
//!
//! Every `POST` runs behind sessionkit's CSRF layer (`CsrfLayer` on axum,
//! `CsrfMiddleware` on actix-web), inside the session layer: a request from
//! another site or origin is refused before it gets here, and a forged one
//! with a session cookie fails at its first session call with a 403
//! (`ErrorKind::CsrfRejected`), having written nothing.
//!
//! `shop` mounts them on axum ([`crate::app`]), `shop-actix` on actix-web;
//! each adapter only extracts the inputs and writes the answer, so both
//! serve the same surface byte for byte where it matters (statuses,
//! headers, bodies, cookies, store calls).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use sessionkit::Session;
use sessionkit::owner::{Owner, Owners, SessionHandle};

use crate::page;

/// Longest accepted basket item or user name, in characters.
pub const MAX_INPUT: usize = 64;

/// The page's `Content-Security-Policy`: its own style and script only.
pub const PAGE_CSP: &str =
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// What a route answers.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Answer {
    /// The HTML page, sent with [`PAGE_CSP`].
    Page(String),
    /// `303 See Other` to `/`, after a form.
    BackToPage,
    /// A JSON body.
    Json(serde_json::Value),
    /// `204 No Content`.
    Done,
}

/// A file of the page's, compiled in: its path, `Content-Type` and body.
/// Served with `Cache-Control: no-cache` (the browser revalidates, so a
/// rebuilt shop never runs with yesterday's script) and
/// `X-Content-Type-Options: nosniff`, without a session.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The route.
    pub path: &'static str,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The file.
    pub body: &'static str,
}

/// The page's style and script.
pub const ASSETS: [Asset; 2] = [
    Asset {
        path: "/assets/shop.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("assets/shop.css"),
    },
    Asset {
        path: "/assets/shop.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/shop.js"),
    },
];

/// Why a handler failed: the session (its store, or the CSRF check), or
/// the input.
#[derive(Debug)]
#[non_exhaustive]
pub enum Failure {
    /// The session failed, or refused a forged request; answered as
    /// sessionkit maps its errors (403 for a refused CSRF check).
    Session(sessionkit::Error),
    /// A form or query field is out of range (422); says what is accepted.
    Invalid(String),
    /// The route needs a logged-in user (401).
    NotLoggedIn,
    /// No such thing, for this user (404).
    NotFound,
    /// The session store keeps no index of a user's sessions (501).
    Unsupported,
}

impl From<sessionkit::Error> for Failure {
    fn from(e: sessionkit::Error) -> Self {
        Failure::Session(e)
    }
}

/// What a handler gives.
pub type Result<T> = std::result::Result<T, Failure>;

/// The flash entry that tells the next `GET /` it is the landing of a
/// browser's form `POST`, not a visit.
const LANDING: &str = "landing";

/// The session key recording that the login ticked "remember me".
const REMEMBERED: &str = "remembered";

/// `GET /`.
pub async fn index(session: Session) -> Result<Answer> {
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
    let token = token(&session).await?;
    let expires_in = if exists {
        session.expires_in().await?
    } else {
        None
    };
    Ok(Answer::Page(page::render(&page::Page {
        session: exists,
        visits,
        user: user.as_deref(),
        remembered: session.get_or(REMEMBERED, false).await?,
        basket: &basket,
        n: session.get_or("n", 0).await?,
        flash: flash.as_deref(),
        token: token.as_deref(),
        expires_in,
    })))
}

/// The CSRF token of a session that exists (`None` without one: a `GET`
/// never creates a session to hand out a token). The session must have
/// been read already: until then `id()` is merely the id the client sent.
async fn token(session: &Session) -> Result<Option<String>> {
    if session.id().is_none() {
        return Ok(None);
    }
    Ok(Some(session.csrf_token().await?))
}

/// Gives a session the secret of its CSRF token if it has none yet (one
/// this request starts, or one from before the CSRF defence), in the same
/// store write as the request's other changes: so the page that follows a
/// `POST` finds the token and its `GET` writes nothing. The token itself
/// changes with every new id (login), without a write.
async fn with_token(session: &Session) -> Result<()> {
    session.csrf_token().await?;
    Ok(())
}

/// The 303 back to the page after a form `POST`. A browser (it sends
/// `Origin` with every `POST`; other clients need not: `from_browser` says
/// whether this request did) follows it by itself: the page it lands on
/// answers the form and is not a visit, which a flash marker tells the next
/// `GET /`.
async fn back_to_page(session: &Session, from_browser: bool) -> Result<Answer> {
    if from_browser {
        session.flash(LANDING, &true)?;
    }
    with_token(session).await?;
    Ok(Answer::BackToPage)
}

/// The most of one item that one form adds or removes.
pub const MAX_QUANTITY: usize = 99;

/// The form of `POST /basket` and `POST /basket/remove`.
#[derive(Debug, Deserialize)]
pub struct ItemForm {
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

/// `POST /basket`.
pub async fn add_to_basket(session: Session, from_browser: bool, form: ItemForm) -> Result<Answer> {
    let (item, quantity) = form.parse()?;
    session.lock().await?;
    let mut basket = session.get_or::<Vec<String>>("basket", Vec::new()).await?;
    basket.extend(std::iter::repeat_n(item.clone(), quantity));
    session.insert("basket", &basket)?;
    let added = times(quantity, &item);
    session.flash("notice", &format!("Added {added} to your basket."))?;
    let to = back_to_page(&session, from_browser).await?;
    session.commit().await?;
    Ok(to)
}

/// `POST /basket/remove`.
pub async fn remove_from_basket(
    session: Session,
    from_browser: bool,
    form: ItemForm,
) -> Result<Answer> {
    let (item, quantity) = form.parse()?;
    session.lock().await?;
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
    let to = back_to_page(&session, from_browser).await?;
    session.commit().await?;
    Ok(to)
}

/// `POST /basket/clear`.
pub async fn clear_basket(session: Session, from_browser: bool) -> Result<Answer> {
    session.discard("basket")?;
    session.flash("notice", "Your basket is empty.")?;
    back_to_page(&session, from_browser).await
}

/// The form of `POST /login`.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    user: String,
    /// The "remember me" checkbox: present (`on`) when ticked.
    remember: Option<String>,
}

/// How long a "remember me" login lasts without a visit.
const REMEMBER_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// The device label of a session: the browser's `User-Agent`, cut to 120
/// characters, control characters dropped.
fn device(user_agent: Option<&str>) -> String {
    let label: String = user_agent
        .unwrap_or("unknown browser")
        .chars()
        .filter(|c| !c.is_control())
        .take(120)
        .collect();
    if label.trim().is_empty() {
        "unknown browser".into()
    } else {
        label
    }
}

/// `POST /login`. `user_agent` labels the device in the user's list of
/// sessions.
pub async fn login(
    session: Session,
    from_browser: bool,
    user_agent: Option<&str>,
    form: LoginForm,
) -> Result<Answer> {
    let user = clean(&form.user).ok_or_else(|| invalid_text("user"))?;
    // A new id, and with it a new CSRF token, at every privilege change: an
    // id or a token planted or seen before the login is worthless after it.
    session.regenerate().await?;
    // The user owns the session: it shows in their list of sessions, and
    // can be signed out from another device. First, so that a login a cap
    // refuses writes nothing of the login. A store without an owner index
    // (memcached) serves the shop without that list.
    match session.set_owner_on(&user, &device(user_agent)).await {
        Err(e) if e.kind() == sessionkit::ErrorKind::OwnersUnsupported => {
            tracing::debug!("the store keeps no owner index: no list of sessions");
        }
        other => other?,
    }
    session.insert("user", &user)?;
    if form.remember.is_some() {
        // Kept server-side for 30 days of inactivity, with a persistent
        // cookie even when plain logins get a browser-session one. The
        // page shows it from the recorded fact, not from the lifetime.
        session.set_lifetime(REMEMBER_FOR)?;
        session.insert(REMEMBERED, &true)?;
    }
    session.flash("notice", &format!("Welcome, {user}."))?;
    back_to_page(&session, from_browser).await
}

/// `POST /logout`.
pub async fn logout(session: Session, from_browser: bool) -> Result<Answer> {
    session.destroy().await?;
    // A write after destroy starts a new, anonymous session for the
    // message, born with a token of its own (in `back_to_page`).
    session.flash("notice", "You are logged out.")?;
    back_to_page(&session, from_browser).await
}

/// The logged-in user of `session`, the registry of their sessions, and
/// this session's handle among them.
async fn signed_in(session: &Session) -> Result<(Owners, Owner, Option<SessionHandle>)> {
    let user = session
        .get::<String>("user")
        .await?
        .ok_or(Failure::NotLoggedIn)?;
    let owners = session.owners().ok_or(Failure::Unsupported)?;
    let owner = Owner::new(user)?;
    Ok((owners, owner, session.handle().await?))
}

/// Milliseconds since the Unix epoch.
fn ms(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The user's sessions as `GET /api/sessions` shows them.
async fn sessions_json(session: &Session) -> Result<serde_json::Value> {
    let (owners, owner, current) = signed_in(session).await?;
    let sessions: Vec<_> = owners
        .list(&owner)
        .await?
        .into_iter()
        .map(|s| {
            json!({
                "handle": s.handle.to_string(),
                "current": Some(s.handle) == current,
                "created": ms(s.created),
                "last_seen": ms(s.last_seen),
                "expires": ms(s.expires),
                "user_agent": s.device,
            })
        })
        .collect();
    Ok(json!({ "sessions": sessions }))
}

/// `GET /api/sessions`: the logged-in user's sessions (401 otherwise).
pub async fn api_sessions(session: Session) -> Result<Answer> {
    Ok(Answer::Json(sessions_json(&session).await?))
}

/// The form of `POST /api/sessions/revoke`.
#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    handle: String,
}

/// `POST /api/sessions/revoke`: signs out one of the user's sessions by
/// handle (204); a handle that is not theirs revokes nothing (404).
pub async fn revoke_session(session: Session, form: RevokeForm) -> Result<Answer> {
    let (owners, owner, _) = signed_in(&session).await?;
    let handle = SessionHandle::parse(form.handle.trim()).map_err(|_| Failure::NotFound)?;
    if owners.revoke(&owner, &handle).await? {
        Ok(Answer::Done)
    } else {
        Err(Failure::NotFound)
    }
}

/// `POST /api/sessions/revoke-others`: signs out every other session of the
/// user (204).
pub async fn revoke_other_sessions(session: Session) -> Result<Answer> {
    let (owners, owner, current) = signed_in(&session).await?;
    match current {
        Some(current) => owners.revoke_all_except(&owner, &current).await?,
        None => owners.revoke_all(&owner).await?,
    };
    Ok(Answer::Done)
}

/// `GET /account`: the user's sessions, each with a button that signs it
/// out, and one that signs out every other.
pub async fn account(session: Session) -> Result<Answer> {
    let listed = match sessions_json(&session).await {
        Err(Failure::NotLoggedIn) => None,
        other => Some(other?),
    };
    let token = token(&session).await?;
    Ok(Answer::Page(page::render_account(
        listed.as_ref(),
        token.as_deref(),
    )))
}

/// `GET /api/session`.
pub async fn api_session(session: Session) -> Result<Answer> {
    let user = session.get::<String>("user").await?;
    Ok(Answer::Json(json!({
        "user": user,
        "basket": session.get::<Vec<String>>("basket").await?.unwrap_or_default(),
        "visits": session.get::<u64>("visits").await?.unwrap_or(0),
        "n": session.get::<u64>("n").await?.unwrap_or(0),
        "csrf_token": token(&session).await?,
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
pub struct Work {
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

/// `POST /api/counter`.
pub async fn counter_locked(session: Session, work: Work) -> Result<Answer> {
    let pause = work.pause()?;
    session.lock().await?;
    let n = session.get::<u64>("n").await?.unwrap_or(0) + 1;
    if let Some(pause) = pause {
        tokio::time::sleep(pause).await;
    }
    session.insert("n", &n)?;
    with_token(&session).await?;
    session.commit().await?;
    Ok(Answer::Json(json!({ "n": n })))
}

/// `POST /api/counter/buffered`.
pub async fn counter_buffered(session: Session, work: Work) -> Result<Answer> {
    let pause = work.pause()?;
    let n = session.get::<u64>("n").await?.unwrap_or(0) + 1;
    if let Some(pause) = pause {
        tokio::time::sleep(pause).await;
    }
    session.insert("n", &n)?;
    with_token(&session).await?;
    Ok(Answer::Json(json!({ "n": n })))
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
