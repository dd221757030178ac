//! The shop's one HTML page: catalogue, basket, account, session and the race panel.
//!
//! Plain HTML; the style is `assets/shop.css` and the race panel's script
//! `assets/shop.js`, both compiled into the binary and served by the shop
//! itself (no build step, no CDN, no web fonts). Every form carries the
//! session's CSRF token once there is a session; without one the page holds
//! no token at all (and names none), since a `GET` never creates a session.

use std::fmt::Write as _;
use std::time::Duration;

use crate::catalogue::{Basket, CATALOGUE, Line, Product, money};

/// What the page shows.
#[derive(Debug)]
pub(crate) struct Page<'a> {
    /// Whether the request has a stored session.
    pub(crate) session: bool,
    pub(crate) visits: u64,
    pub(crate) user: Option<&'a str>,
    /// Whether the login ticked "remember me".
    pub(crate) remembered: bool,
    pub(crate) basket: &'a [String],
    /// The counter the race panel increments.
    pub(crate) n: u64,
    pub(crate) flash: Option<&'a str>,
    /// The session's CSRF token, put in every form; `None` without a session.
    pub(crate) token: Option<&'a str>,
    /// Time left before the session expires if left idle.
    pub(crate) expires_in: Option<Duration>,
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
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

/// The page for `page`.
pub(crate) fn render(page: &Page<'_>) -> String {
    let csrf = page
        .token
        .map(|t| {
            format!(
                r#"<input type="hidden" name="csrf_token" value="{}">"#,
                escape(t)
            )
        })
        .unwrap_or_default();
    let flash = page
        .flash
        .map(|f| {
            format!(
                r#"<p class="flash" id="flash" role="status">{}</p>"#,
                escape(f)
            )
        })
        .unwrap_or_default();
    let catalogue = catalogue(&csrf);
    let account = account(page, &csrf);
    let basket = basket(page.basket, &csrf);
    let session = session(page);
    let race = RACE;
    let head = head("sessionkit shop");
    format!(
        r##"{head}
<body>
<a class="skip" href="#main">Skip to the shop</a>
<header class="top">
<div class="wrap">
<p class="brand"><span class="logo" aria-hidden="true">sk</span> sessionkit <span class="brand-shop">shop</span></p>
<p class="tagline">A demo of server-side sessions in Rust. Your basket, your login and the counters below live on the server; your browser keeps only the session's id, in a cookie that scripts cannot read.</p>
</div>
</header>
<main id="main" class="wrap">
{flash}
<div class="layout">
{catalogue}
<div class="side">
{account}
{basket}
{session}
</div>
{race}
</div>
</main>
<footer class="wrap foot">
<p>Every <code>POST</code> is checked for its origin and for the session's CSRF token. The session as JSON: <a href="/api/session">/api/session</a>.</p>
</footer>
</body>
</html>
"##
    )
}

fn catalogue(csrf: &str) -> String {
    let mut cards = String::new();
    for Product {
        item,
        name,
        blurb,
        price,
    } in &CATALOGUE
    {
        let price = money(*price);
        let _ = write!(
            cards,
            r#"<li class="product" id="product-{item}">
<div class="swatch swatch-{item}" aria-hidden="true"><span>{item}</span></div>
<h3>{name}</h3>
<p class="blurb">{blurb}</p>
<form method="post" action="/basket" class="add">{csrf}<input type="hidden" name="item" value="{item}">
<p class="price">{price}</p>
<label for="qty-{item}" class="sr-only">Quantity of {name}</label>
<input type="number" id="qty-{item}" name="quantity" value="1" min="1" max="{max}" inputmode="numeric" required>
<button id="add-{item}" class="primary">Add<span class="sr-only"> {name}</span></button>
</form>
</li>
"#,
            max = crate::MAX_QUANTITY,
        );
    }
    format!(
        r#"<section class="catalogue" aria-labelledby="catalogue-title">
<h2 id="catalogue-title">Catalogue</h2>
<ul class="products">
{cards}</ul>
</section>"#
    )
}

fn account(page: &Page<'_>, csrf: &str) -> String {
    let body = match page.user {
        Some(user) => {
            let remembered = if page.remembered {
                r#"<p class="note" id="remembered">Remembered on this browser for 30 days.</p>"#
            } else {
                ""
            };
            format!(
                r#"<p class="who">Logged in as <strong id="user">{}</strong></p>
{remembered}
<p><a id="sessions-link" href="/account">Where you are logged in</a></p>
<form method="post" action="/logout">{csrf}<button id="logout" class="secondary">Log out</button></form>"#,
                escape(user)
            )
        }
        None => format!(
            r#"<p id="user-none" class="who">Not logged in.</p>
<form method="post" action="/login" class="login">{csrf}
<label for="user-input">Name</label>
<div class="row">
<input name="user" id="user-input" maxlength="64" required autocomplete="username">
<button id="login" class="primary">Log in</button>
</div>
<label class="check"><input type="checkbox" name="remember" id="remember"> Remember me for 30 days</label>
</form>
<p class="note">Logging in gives the session a new id and the forms a new token; the basket comes along.</p>"#
        ),
    };
    format!(
        r#"<section class="card account" aria-labelledby="account-title">
<h2 id="account-title">Account</h2>
{body}
</section>"#
    )
}

fn basket(items: &[String], csrf: &str) -> String {
    let basket = Basket::of(items);
    let body = if basket.lines.is_empty() {
        r#"<p id="basket-empty" class="empty">Your basket is empty.</p>"#.to_owned()
    } else {
        let rows: String = basket.lines.iter().map(|l| line(l, csrf)).collect();
        let units = basket.units();
        let unit_word = if units == 1 { "item" } else { "items" };
        let unpriced = match basket.unpriced() {
            0 => String::new(),
            k => format!(r#"<p class="note">Plus {k} not in the catalogue, without a price.</p>"#),
        };
        format!(
            r#"<table id="basket">
<caption class="sr-only">Items in your basket</caption>
<thead><tr><th scope="col">Item</th><th scope="col">Quantity</th><th scope="col" class="num">Price</th></tr></thead>
<tbody>
{rows}</tbody>
<tfoot><tr><th scope="row" colspan="2">Total, <span id="basket-units">{units}</span> {unit_word}</th><td class="num" id="basket-total">{total}</td></tr></tfoot>
</table>
{unpriced}
<form method="post" action="/basket/clear" class="clear">{csrf}<button id="clear" class="secondary">Empty basket</button></form>"#,
            total = money(basket.total()),
        )
    };
    format!(
        r#"<section class="card basket" aria-labelledby="basket-title">
<h2 id="basket-title">Basket</h2>
{body}
</section>"#
    )
}

/// One row of the basket: name, a − / + stepper (each a form, so that it
/// works without JavaScript), and the line's price.
fn line(line: &Line<'_>, csrf: &str) -> String {
    let item = escape(line.item);
    let quantity = line.quantity;
    let (name, each, total) = match line.product {
        Some(p) => (
            escape(p.name),
            format!(r#"<span class="each">{} each</span>"#, money(p.price)),
            money(p.price * quantity),
        ),
        None => (item.clone(), String::new(), "—".to_owned()),
    };
    // Ids only for catalogue items, whose names are safe in an id.
    let id = |prefix: &str| {
        line.product
            .map(|p| format!(r#" id="{prefix}-{}""#, p.item))
            .unwrap_or_default()
    };
    let (less, more, count) = (id("less"), id("more"), id("count"));
    format!(
        r#"<tr data-item="{item}" data-quantity="{quantity}">
<th scope="row">{name}{each}</th>
<td><div class="stepper">
<form method="post" action="/basket/remove">{csrf}<input type="hidden" name="item" value="{item}"><button{less} aria-label="One {name} fewer">−</button></form>
<span class="count"{count}>{quantity}</span>
<form method="post" action="/basket">{csrf}<input type="hidden" name="item" value="{item}"><button{more} aria-label="One more {name}">+</button></form>
</div></td>
<td class="num">{total}</td>
</tr>
"#
    )
}

fn session(page: &Page<'_>) -> String {
    let Page { visits, n, .. } = *page;
    let expires = page
        .expires_in
        .map(|d| {
            format!(
                r#"<dt>Ends if idle</dt><dd id="expires">in {}</dd>"#,
                duration(d)
            )
        })
        .unwrap_or_default();
    let note = if page.session {
        r#"<p class="note">A visit counts when you open or reload this page, not when a button brings you back to it.</p>"#
    } else {
        r#"<p class="note" id="no-session">No session yet, so nothing is stored and no cookie is set: looking is free. The first button you press starts a session.</p>"#
    };
    format!(
        r#"<section class="card session" aria-labelledby="session-title">
<h2 id="session-title">Your session</h2>
<dl class="facts">
<dt>Visits to this page</dt><dd><strong id="visits">{visits}</strong></dd>
<dt>Counter <code>n</code></dt><dd id="counter-n">{n}</dd>
{expires}</dl>
{note}
</section>"#
    )
}

/// A duration as a person reads it: `29 days 23 h`, `1 h 59 min`, `4 min`.
fn duration(d: Duration) -> String {
    let minutes = d.as_secs() / 60;
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    match (days, hours) {
        (0, 0) => format!("{minutes} min"),
        (0, _) => format!("{hours} h {minutes} min"),
        (1, _) => format!("1 day {hours} h"),
        _ => format!("{days} days {hours} h"),
    }
}

/// The race panel; `assets/shop.js` runs it.
const RACE: &str = r#"<section class="card race" id="race" aria-labelledby="race-title">
<h2 id="race-title">The race: lock or lose</h2>
<p class="lead">Two ways to add one to the session's counter <code>n</code>. A <strong>buffered write</strong> reads <code>n</code> and writes <code>n + 1</code> when the response goes out, without a lock: requests that overlap read the same <code>n</code>, and all but one of their increments are lost. A <strong>locked transaction</strong> holds the session's lock from the read to the write, so each request sees the one before it.</p>
<p>The button fires a burst of concurrent <code>POST /api/counter/buffered</code>, then of <code>POST /api/counter</code>, and reads <code>n</code> before and after each. The work is a pause between the read and the write, as a handler that queries a database would have; without it a read and a write in memory are microseconds apart and rarely overlap.</p>
<div class="race-controls">
<div class="field"><label for="race-n">Requests per burst</label>
<select id="race-n"><option value="20">20</option><option value="50" selected>50</option><option value="100">100</option></select></div>
<div class="field"><label for="race-work">Work per request</label>
<select id="race-work"><option value="0">none</option><option value="5" selected>5 ms</option><option value="20">20 ms</option></select></div>
<button type="button" id="race-run" class="primary">Start the race</button>
</div>
<p id="race-status" class="race-status" role="status">Not run yet.</p>
<div class="lanes">
<div class="lane" id="lane-buffered">
<h3>Buffered, no lock <code>POST /api/counter/buffered</code></h3>
<div class="bar" aria-hidden="true"><span class="fill"></span></div>
<dl class="figures">
<div><dt>answered</dt><dd id="buffered-sent">–</dd></div>
<div><dt>counted</dt><dd id="buffered-counted">–</dd></div>
<div class="lost"><dt>lost</dt><dd id="buffered-lost">–</dd></div>
</dl>
<p class="span" id="buffered-span"></p>
</div>
<div class="lane" id="lane-locked">
<h3>Locked transaction <code>POST /api/counter</code></h3>
<div class="bar" aria-hidden="true"><span class="fill"></span></div>
<dl class="figures">
<div><dt>answered</dt><dd id="locked-sent">–</dd></div>
<div><dt>counted</dt><dd id="locked-counted">–</dd></div>
<div class="lost"><dt>lost</dt><dd id="locked-lost">–</dd></div>
</dl>
<p class="span" id="locked-span"></p>
</div>
</div>
<noscript><p class="note">The race runs in your browser and needs JavaScript.</p></noscript>
</section>"#;

/// The account page (`GET /account`): the logged-in user's sessions as
/// `GET /api/sessions` gives them (`None`: not logged in), each with a
/// button that signs it out, and one that signs out all the others.
pub(crate) fn render_account(sessions: Option<&serde_json::Value>, token: Option<&str>) -> String {
    let csrf = token
        .map(|t| {
            format!(
                r#"<input type="hidden" name="csrf_token" value="{}">"#,
                escape(t)
            )
        })
        .unwrap_or_default();
    let body = match sessions.and_then(|v| v["sessions"].as_array()) {
        None => r#"<p id="not-logged-in">Log in on <a href="/">the shop's page</a> to see where you are logged in.</p>"#.to_owned(),
        Some(list) => {
            let mut rows = String::new();
            for s in list {
                let handle = escape(s["handle"].as_str().unwrap_or_default());
                let device = escape(s["user_agent"].as_str().unwrap_or("unknown browser"));
                let seen = s["last_seen"].as_u64().unwrap_or(0);
                let current = s["current"].as_bool().unwrap_or(false);
                let action = if current {
                    r#"<span class="this-device">this device</span>"#.to_owned()
                } else {
                    format!(
                        r#"<form method="post" action="/api/sessions/revoke" data-reload>{csrf}<input type="hidden" name="handle" value="{handle}"><button class="secondary">Sign out</button></form>"#
                    )
                };
                let _ = writeln!(
                    rows,
                    r#"<li class="device" data-handle="{handle}"{mark}><span class="what">{device}</span> <span class="when" data-ms="{seen}">last seen {seen_text}</span> {action}</li>"#,
                    mark = if current { r#" id="this-device""# } else { "" },
                    seen_text = ago(seen),
                );
            }
            let others = list.iter().filter(|s| s["current"] != true).count();
            let all = if others > 0 {
                format!(
                    r#"<form method="post" action="/api/sessions/revoke-others" data-reload>{csrf}<button id="revoke-others" class="primary">Sign out everywhere else ({others})</button></form>"#
                )
            } else {
                r#"<p class="note" id="only-this-device">You are logged in on this device only.</p>"#.to_owned()
            };
            format!("<ul class=\"devices\" id=\"devices\">\n{rows}</ul>\n{all}")
        }
    };
    let head = head("Your sessions · sessionkit shop");
    format!(
        r##"{head}
<body>
<header class="top">
<div class="wrap">
<p class="brand"><span class="logo" aria-hidden="true">sk</span> sessionkit <span class="brand-shop">shop</span></p>
<p class="tagline">Where you are logged in: every session the server keeps for you, by device. Signing one out ends it on the server at once.</p>
</div>
</header>
<main id="main" class="wrap">
<section class="card account" aria-labelledby="sessions-title">
<h2 id="sessions-title">Your sessions</h2>
{body}
<p class="note" id="account-status" role="status"></p>
<p><a href="/">Back to the shop</a></p>
</section>
</main>
</body>
</html>
"##
    )
}

/// The start of a page, to its `<head>`'s end: the page's style and script.
fn head(title: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="/assets/shop.css">
<script src="/assets/shop.js" defer></script>
</head>"#
    )
}

/// How long ago `ms` (milliseconds since the Unix epoch) was, as a person
/// reads it.
fn ago(ms: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let secs = now.saturating_sub(ms) / 1000;
    if secs < 60 {
        "just now".to_owned()
    } else {
        format!("{} ago", duration(Duration::from_secs(secs)))
    }
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
    fn durations_read_as_days_hours_and_minutes() {
        let min = |m: u64| Duration::from_secs(m * 60 + 59);
        assert_eq!(duration(min(4)), "4 min");
        assert_eq!(duration(min(119)), "1 h 59 min");
        assert_eq!(duration(min(1440 + 60)), "1 day 1 h");
        assert_eq!(duration(min(30 * 1440 - 1)), "29 days 23 h");
    }

    fn page(basket: &[String], token: Option<&str>) -> String {
        render(&Page {
            session: token.is_some(),
            visits: 3,
            user: Some("<ada>"),
            remembered: true,
            basket,
            n: 7,
            flash: Some("Added <x>."),
            token,
            expires_in: Some(Duration::from_secs(3600)),
        })
    }

    #[test]
    fn every_form_carries_the_token_and_text_is_escaped() {
        let basket: Vec<String> = ["tea", "tea", "<b>"].map(String::from).into();
        let html = page(&basket, Some("t0k"));
        let field = r#"<input type="hidden" name="csrf_token" value="t0k">"#;
        assert_eq!(html.matches(field).count(), html.matches("<form").count());
        assert!(html.contains(r#"<strong id="user">&lt;ada&gt;</strong>"#));
        assert!(html.contains(r#"data-item="&lt;b&gt;" data-quantity="1""#));
        assert!(html.contains(r#"data-item="tea" data-quantity="2""#));
        assert!(html.contains(r#"<td class="num" id="basket-total">£13.00</td>"#));
        assert!(!html.contains("<b>") && !html.contains("<ada>") && !html.contains("<x>"));
    }

    #[test]
    fn without_a_session_the_page_names_no_token() {
        let html = page(&[], None);
        assert!(!html.contains("csrf_token"), "{html}");
        assert!(html.contains(r#"id="basket-empty""#));
    }
}
