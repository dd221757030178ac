//! The shop in a real browser: headless Chromium, driven through
//! chromedriver. One source for both shops: the test crate that includes it
//! names the binary (`crate::BIN`) and the prefix of the screenshots' file
//! names (`crate::NAME`): `tests/browser.rs` of `shop` and of `shop-actix`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fantoccini::cookies::Cookie;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The longest wait for any one thing: a page element, chromedriver, a process.
const WAIT: Duration = Duration::from_secs(10);
/// The longest the browser part of the test may take.
const WHOLE_TEST: Duration = Duration::from_secs(60);
/// How long a "remember me" cookie lasts (the shop's `REMEMBER_FOR`).
const THIRTY_DAYS: Duration = Duration::from_secs(30 * 24 * 3600);

/// The shop binary, started on a free port and killed on drop.
struct Shop {
    child: Child,
    base: String,
}

impl Shop {
    fn start(envs: &[(&str, &str)]) -> Shop {
        let mut child = Command::new(crate::BIN)
            .env("SHOP_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the shop binary");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Shop { child, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!("{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// chromedriver on a free loopback port; on drop it is asked to shut down,
/// which also quits the Chromium it started (killing chromedriver alone
/// would leave Chromium running), and killed if it does not.
struct ChromeDriver {
    child: Child,
    port: u16,
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        require_installed();
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--log-level=WARNING")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {CHROMEDRIVER}: {e}"));
        let mut driver = ChromeDriver { child, port };
        driver.wait_ready();
        driver
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Polls `/status` until chromedriver says it is ready.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("chromedriver exited before it was ready: {status}");
            }
            let ready = http_get(self.port, "/status")
                .ok()
                .and_then(|body| serde_json::from_str::<Value>(&body).ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready on port {} after {WAIT:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = http_get(self.port, "/shutdown");
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails (not skips) when the browser is missing: CI must run this test.
fn require_installed() {
    for (binary, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(binary).exists(),
            "{binary} is missing (Debian package {package}): run scripts/test.sh, \
             which installs it, or `apt-get install chromium chromium-driver`"
        );
    }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The body of a plain HTTP/1.1 GET to 127.0.0.1:`port`, bounded by
/// timeouts. chromedriver keeps the connection open, so the body is read by
/// its `Content-Length`.
fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let addr = (Ipv4Addr::LOCALHOST, port).into();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The arguments Chromium runs with: headless, in a fresh profile, and
/// talking to nothing but 127.0.0.1.
fn chromium_args(profile: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        "--no-default-browser-check",
        "--disable-extensions",
        "--window-size=1024,768",
        // No name resolves: nothing but the shop's IP literal is reachable.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ]
    .map(String::from)
    .into();
    args.push(format!("--user-data-dir={}", profile.display()));
    args
}

/// A Chromium session through `driver`; its profile lives in `profile`.
async fn open_browser(driver: &ChromeDriver, profile: &Path) -> Client {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": CHROMIUM, "args": chromium_args(profile) },
        "timeouts": { "pageLoad": 10_000, "script": 5_000, "implicit": 0 },
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url())
        .await
        .unwrap_or_else(|e| panic!("start Chromium through chromedriver: {e}"))
}

/// Waits for the element with `id`.
async fn element(c: &Client, id: &str) -> Element {
    match c.wait().at_most(WAIT).for_element(Locator::Id(id)).await {
        Ok(element) => element,
        Err(e) => fail(c, &format!("no #{id}: {e}")).await,
    }
}

/// Waits for the element with `id` whose text is `text`.
async fn wait_text(c: &Client, id: &str, text: &str) {
    assert!(!text.contains('\''), "no quotes in XPath literals: {text}");
    let xpath = format!("//*[@id='{id}' and normalize-space()='{text}']");
    if let Err(e) = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(&xpath))
        .await
    {
        fail(c, &format!("no #{id} reading {text:?}: {e}")).await;
    }
}

/// Panics with `what`, the page's address and its text.
async fn fail(c: &Client, what: &str) -> ! {
    let url = match c.current_url().await {
        Ok(url) => url.to_string(),
        Err(e) => format!("(unknown: {e})"),
    };
    let text = match c.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(e) => format!("(no body: {e})"),
    };
    panic!("{what}\non page {url}:\n{text}");
}

async fn text_of(c: &Client, id: &str) -> String {
    element(c, id).await.text().await.unwrap()
}

async fn visits(c: &Client) -> u64 {
    let text = text_of(c, "visits").await;
    text.parse()
        .unwrap_or_else(|_| panic!("#visits is not a number: {text:?}"))
}

/// Types `text` into the input `input` and clicks `button`.
async fn fill_and_click(c: &Client, input: &str, text: &str, button: &str) {
    let field = element(c, input).await;
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
    click(c, button).await;
}

async fn click(c: &Client, id: &str) {
    element(c, id).await.click().await.unwrap();
}

/// The basket's lines, as (item, quantity).
async fn basket(c: &Client) -> Vec<(String, u64)> {
    element(c, "basket").await;
    let mut lines = Vec::new();
    for row in c.find_all(Locator::Css("#basket tbody tr")).await.unwrap() {
        let item = row.attr("data-item").await.unwrap().unwrap_or_default();
        let quantity = row.attr("data-quantity").await.unwrap().unwrap_or_default();
        lines.push((item, quantity.parse().unwrap()));
    }
    lines
}

/// `lines` as [`basket`] returns them.
fn lines(lines: &[(&str, u64)]) -> Vec<(String, u64)> {
    lines.iter().map(|(i, q)| ((*i).to_owned(), *q)).collect()
}

/// The number in the element with `id`.
async fn number(c: &Client, id: &str) -> u64 {
    let text = text_of(c, id).await;
    text.parse()
        .unwrap_or_else(|_| panic!("#{id} is not a number: {text:?}"))
}

/// The session cookie as the browser keeps it (WebDriver sees HttpOnly ones).
async fn session_cookie(c: &Client) -> Cookie<'static> {
    match c.get_named_cookie("session").await {
        Ok(cookie) => cookie,
        Err(e) => fail(c, &format!("no session cookie: {e}")).await,
    }
}

/// The first characters of a cookie value, enough to tell two apart.
fn short(value: &str) -> &str {
    &value[..value.len().min(8)]
}

fn check(what: &str) {
    println!("browser check: {what} ok");
}

/// The hidden `csrf_token` fields of the page's forms.
async fn token_fields(c: &Client) -> Vec<String> {
    let mut values = Vec::new();
    for input in c
        .find_all(Locator::Css(r#"input[name="csrf_token"]"#))
        .await
        .unwrap()
    {
        values.push(input.attr("value").await.unwrap().unwrap_or_default());
    }
    values
}

async fn a_visit_creates_no_session(c: &Client, shop: &Shop) -> PathBuf {
    c.goto(&shop.url("/")).await.unwrap();
    c.refresh().await.unwrap();
    assert_eq!(visits(c).await, 0, "no session, no visits counted");
    let first_visit = screenshot(c, 1280, "screenshot-first-visit.png").await;
    c.set_window_size(1024, 768).await.unwrap();
    if let Ok(cookie) = c.get_named_cookie("session").await {
        panic!("a GET set a session cookie: {cookie:?}");
    }
    assert_eq!(token_fields(c).await, Vec::<String>::new(), "no token yet");
    check("two visits without a session: #visits 0, no session cookie, no token in the forms");
    first_visit
}

async fn visits_count_up(c: &Client, shop: &Shop) {
    c.goto(&shop.url("/")).await.unwrap();
    let first = visits(c).await;
    c.refresh().await.unwrap();
    let second = visits(c).await;
    c.goto(&shop.url("/healthz")).await.unwrap();
    c.goto(&shop.url("/")).await.unwrap();
    let third = visits(c).await;
    assert_eq!([second, third], [first + 1, first + 2], "visits");
    check(&format!(
        "visits of a session count up across navigation (load, reload, /healthz and back): \
         {first} -> {second} -> {third}"
    ));
}

/// One lane of the race panel as the page shows it.
#[derive(Debug)]
struct Lane {
    acknowledged: u64,
    counted: u64,
    lost: u64,
    /// `n` before and after the burst.
    from: u64,
    to: u64,
}

async fn lane(c: &Client, name: &str) -> Lane {
    let span = text_of(c, &format!("{name}-span")).await;
    // "n went from A to B in T ms."
    let words: Vec<&str> = span.split_whitespace().collect();
    let (from, to) = match words[..] {
        ["n", "went", "from", from, "to", to, ..] => (from.parse().unwrap(), to.parse().unwrap()),
        _ => panic!("#{name}-span reads {span:?}"),
    };
    Lane {
        acknowledged: number(c, &format!("{name}-sent")).await,
        counted: number(c, &format!("{name}-counted")).await,
        lost: number(c, &format!("{name}-lost")).await,
        from,
        to,
    }
}

/// Picks `requests` and `work_ms` in the race panel, starts the race and
/// waits for its end; checks that the numbers add up and that the locked
/// counter lost nothing; returns the buffered and the locked lane.
async fn race(c: &Client, requests: u64, work_ms: u64) -> (Lane, Lane) {
    for (id, value) in [("race-n", requests), ("race-work", work_ms)] {
        element(c, id)
            .await
            .select_by_value(&value.to_string())
            .await
            .unwrap();
    }
    click(c, "race-run").await;
    let over = r#"#race[data-state="done"], #race[data-state="failed"]"#;
    if let Err(e) = c.wait().at_most(WAIT).for_element(Locator::Css(over)).await {
        fail(c, &format!("the race did not end: {e}")).await;
    }
    let state = element(c, "race").await.attr("data-state").await.unwrap();
    if state.as_deref() != Some("done") {
        fail(
            c,
            &format!("the race failed: {}", text_of(c, "race-status").await),
        )
        .await;
    }
    let (buffered, locked) = (lane(c, "buffered").await, lane(c, "locked").await);
    for (name, lane) in [("buffered", &buffered), ("locked", &locked)] {
        assert_eq!(
            lane.acknowledged, requests,
            "{name}: every request answered 200: {lane:?}"
        );
        assert_eq!(
            lane.counted + lane.lost,
            lane.acknowledged,
            "{name}: {lane:?}"
        );
        assert_eq!(lane.to - lane.from, lane.counted, "{name}: {lane:?}");
    }
    assert_eq!(
        locked.lost, 0,
        "the locked counter loses nothing: {locked:?}"
    );
    assert_eq!(
        locked.from, buffered.to,
        "one counter, read between the bursts"
    );
    assert_eq!(
        number(c, "counter-n").await,
        locked.to,
        "#counter-n follows the race"
    );
    (buffered, locked)
}

/// The race from a page without a session: its first POST starts one, the
/// bursts carry the token it reads, and the page's forms get that token.
async fn the_race_works_without_a_session(c: &Client, shop: &Shop) {
    c.goto(&shop.url("/")).await.unwrap();
    element(c, "no-session").await;
    let (buffered, locked) = race(c, 20, 0).await;
    let cookie = session_cookie(c).await;
    let tokens = token_fields(c).await;
    let forms = c.find_all(Locator::Css("form")).await.unwrap().len();
    assert!(
        tokens.len() == forms && tokens.iter().all(|t| t.len() == 43 && *t == tokens[0]),
        "the race armed every form with the new session's token: {tokens:?}"
    );
    check(&format!(
        "race of 20 (no work) from a page without a session: it started one (cookie {}...), \
         buffered {buffered:?}, locked {locked:?}; all {forms} forms now carry its token",
        short(cookie.value())
    ));
}

async fn catalogue_and_totals(c: &Client, shop: &Shop) {
    let before = visits(c).await;
    fill_and_click(c, "qty-tea", "2", "add-tea").await;
    wait_text(c, "flash", "Added 2 × tea to your basket.").await;
    click(c, "add-scones").await;
    wait_text(c, "flash", "Added scones to your basket.").await;
    assert_eq!(basket(c).await, lines(&[("tea", 2), ("scones", 1)]));
    // 2 × £6.50 + £3.80
    wait_text(c, "basket-total", "£16.80").await;
    wait_text(c, "basket-units", "3").await;
    click(c, "more-tea").await;
    wait_text(c, "flash", "Added tea to your basket.").await;
    click(c, "less-scones").await;
    wait_text(c, "flash", "Removed scones from your basket.").await;
    assert_eq!(basket(c).await, lines(&[("tea", 3)]));
    wait_text(c, "basket-total", "£19.50").await;
    click(c, "add-scones").await;
    wait_text(c, "flash", "Added scones to your basket.").await;
    wait_text(c, "basket-total", "£23.30").await;
    assert_eq!(
        visits(c).await,
        before,
        "the pages that form posts redirect to are not visits"
    );

    c.goto(&shop.url("/healthz")).await.unwrap();
    let health = c.find(Locator::Css("body")).await.unwrap().text().await;
    assert_eq!(health.unwrap(), "ok");
    c.goto(&shop.url("/")).await.unwrap();
    let items = basket(c).await;
    assert_eq!(
        items,
        lines(&[("tea", 3), ("scones", 1)]),
        "after navigating away"
    );
    wait_text(c, "basket-total", "£23.30").await;
    assert_eq!(visits(c).await, before + 1, "coming back is a visit");
    check(&format!(
        "catalogue: 2 tea (#qty-tea, #add-tea) and scones; totals £16.80 for 3 items; \
         + tea, − scones, + scones: £23.30; five form posts, visits still {before}; \
         after /healthz and back #basket lists {items:?} and visits is {}",
        before + 1
    ));
}

async fn login_changes_the_session_cookie(c: &Client) {
    let before = session_cookie(c).await.value().to_owned();
    fill_and_click(c, "user-input", "ada", "login").await;
    wait_text(c, "user", "ada").await;
    wait_text(c, "flash", "Welcome, ada.").await;
    let after = session_cookie(c).await.value().to_owned();
    assert_ne!(before, after, "login must regenerate the session id");
    assert_eq!(
        basket(c).await,
        lines(&[("tea", 3), ("scones", 1)]),
        "basket survives login"
    );
    check(&format!(
        "login changes the session cookie value: {}... -> {}...; \
         #user shows \"ada\", basket kept",
        short(&before),
        short(&after)
    ));
}

async fn cookie_is_http_only_and_lax(c: &Client) {
    let seen_by_js = c.execute("return document.cookie", vec![]).await.unwrap();
    let seen_by_js = seen_by_js.as_str().expect("document.cookie is a string");
    assert!(
        !seen_by_js.contains("session="),
        "document.cookie sees the session cookie: {seen_by_js:?}"
    );
    let cookie = session_cookie(c).await;
    assert_eq!(cookie.http_only(), Some(true), "HttpOnly: {cookie:?}");
    assert!(
        cookie.same_site().is_some_and(|s| s.is_lax()),
        "SameSite=Lax: {cookie:?}"
    );
    assert_eq!(cookie.secure(), Some(true), "Secure: {cookie:?}");
    check(&format!(
        "the session cookie is hidden from JS (document.cookie = {seen_by_js:?}); \
         WebDriver cookie: http_only = true, SameSite=Lax, secure = true"
    ));
}

/// Saves the whole page, `width` pixels wide, as `target/{NAME}-{name}`
/// (`target/shop-screenshot.png` for the axum shop).
async fn screenshot(c: &Client, width: u32, name: &str) -> PathBuf {
    c.set_window_size(width, 800).await.unwrap();
    // The window's height that shows the whole page: its height plus
    // whatever of the window is not viewport.
    let height = c
        .execute(
            "window.scrollTo(0, 0); return document.documentElement.scrollHeight \
             + window.outerHeight - window.innerHeight",
            vec![],
        )
        .await
        .unwrap()
        .as_u64()
        .expect("a height in pixels");
    c.set_window_size(width, u32::try_from(height).unwrap())
        .await
        .unwrap();
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    std::fs::create_dir_all(&target).unwrap();
    let path = target
        .canonicalize()
        .unwrap()
        .join(format!("{}-{name}", crate::NAME));
    std::fs::write(&path, &png).unwrap();
    check(&format!(
        "screenshot {width} px wide ({} bytes): {}",
        png.len(),
        path.display()
    ));
    path
}

/// The race again, in a session that exists, then the page as a person
/// sees it after a while: logged in, a basket, the race's result.
async fn race_and_screenshots(c: &Client) -> [PathBuf; 2] {
    let (buffered, locked) = race(c, 50, 5).await;
    // Six connections at a time, each request pausing 5 ms between its read
    // and its write: buffered requests overlap and overwrite each other.
    assert!(
        buffered.lost > 0,
        "the buffered counter loses: {buffered:?}"
    );
    check(&format!(
        "race of 50 with 5 ms of work, logged in: buffered lost {} of 50, locked lost 0 \
         ({buffered:?}, {locked:?})",
        buffered.lost
    ));
    let wide = screenshot(c, 1280, "screenshot.png").await;
    let phone = screenshot(c, 390, "screenshot-phone.png").await;
    c.set_window_size(1024, 768).await.unwrap();
    [wide, phone]
}

async fn logout_clears_basket_and_login(c: &Client) {
    click(c, "logout").await;
    wait_text(c, "flash", "You are logged out.").await;
    element(c, "user-none").await;
    element(c, "basket-empty").await;
    assert_eq!(
        visits(c).await,
        0,
        "a new session after logout, and the redirect is not a visit"
    );
    check(
        "logout (#logout) clears the login (#user-none) and the basket (#basket-empty), \
         flash \"You are logged out.\", visits back to 0",
    );
}

/// Seconds from now until `cookie` expires; `None` for a browser-session cookie.
fn expires_in(cookie: &Cookie<'_>) -> Option<i64> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    cookie
        .expires_datetime()
        .map(|at| at.unix_timestamp() - i64::try_from(now).unwrap())
}

/// With `SESSION_PERSISTENT_COOKIE=false`: a plain login keeps a
/// browser-session cookie, "remember me" gets a 30-day one.
async fn remember_me_is_persistent(c: &Client, shop: &Shop) {
    // Cookies are per host, not per port: start clean at the second shop.
    c.goto(&shop.url("/")).await.unwrap();
    c.delete_all_cookies().await.unwrap();
    c.goto(&shop.url("/")).await.unwrap();
    // A first login: no session, so no token; the origin check lets it in.
    fill_and_click(c, "user-input", "ada", "login").await;
    wait_text(c, "user", "ada").await;
    let plain = session_cookie(c).await;
    assert_eq!(
        expires_in(&plain),
        None,
        "browser-session cookie: {plain:?}"
    );

    click(c, "logout").await;
    wait_text(c, "flash", "You are logged out.").await;
    let remember = element(c, "remember").await;
    remember.click().await.unwrap();
    assert!(remember.is_selected().await.unwrap(), "#remember ticked");
    fill_and_click(c, "user-input", "bob", "login").await;
    wait_text(c, "user", "bob").await;
    let remembered = session_cookie(c).await;
    let secs = expires_in(&remembered).unwrap_or_else(|| panic!("no expiry: {remembered:?}"));
    let thirty_days = i64::try_from(THIRTY_DAYS.as_secs()).unwrap();
    assert!(
        (secs - thirty_days).abs() <= 120,
        "expiry ~30 days ahead, got {secs} s: {remembered:?}"
    );
    check(&format!(
        "with SESSION_PERSISTENT_COOKIE=false a plain login gets a browser-session \
         cookie (no expiry), a remember-me login (#remember ticked) a persistent one \
         expiring in {secs} s (30 days = {thirty_days} s)"
    ));
}

/// Waits for the shop's refusal page (sessionkit's 403 text).
async fn wait_refused(c: &Client, what: &str) {
    let refused = "//*[contains(normalize-space(), 'request refused')]";
    if let Err(e) = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(refused))
        .await
    {
        fail(c, &format!("{what} was not refused: {e}")).await;
    }
}

/// `text` percent-encoded for a `data:` URL.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A page of another origin (a `data:` URL, whose origin is opaque) that
/// submits a login form to the shop as soon as it loads: the login CSRF
/// that would log the victim in as the attacker. Chromium sends it with
/// `Sec-Fetch-Site: cross-site` and `Origin: null`, without the `SameSite=Lax`
/// cookie; the shop refuses it and the victim stays who they were.
async fn a_cross_site_form_is_refused(c: &Client, shop: &Shop) {
    let attack = format!(
        r#"<form method="post" action="{}"><input name="user" value="eve"></form>
<script>document.forms[0].submit()</script>"#,
        shop.url("/login")
    );
    c.goto(&format!("data:text/html,{}", percent_encoded(&attack)))
        .await
        .unwrap();
    wait_refused(c, "the forged login").await;
    let landed = c.current_url().await.unwrap().to_string();
    assert_eq!(landed, shop.url("/login"), "the form reached the shop");
    c.goto(&shop.url("/")).await.unwrap();
    wait_text(c, "user", "ada").await;
    assert_eq!(
        basket(c).await,
        lines(&[("tea", 3), ("scones", 1)]),
        "nothing changed"
    );
    check(
        "a page of another origin (data: URL) that auto-submits a login form to the shop \
         gets 403 \"request refused\"; still logged in as ada, basket kept",
    );
}

/// Serves `page` as HTML to every request, from a thread, on another port
/// of 127.0.0.1: the attacker's site. Returns its URL; the thread serves
/// until the test process ends.
fn attacker_site(page: String) -> String {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            // Read the request head, then answer and close.
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    url
}

/// A page on another port of the same loopback host — same *site* to the
/// browser, so it sends the `SameSite=Lax` session cookie along — that
/// auto-submits a form to the shop: adding to the basket, then logging out.
/// Chromium marks both `Sec-Fetch-Site: same-site` with the attacker's
/// `Origin`; the shop's CSRF layer refuses them with 403 before any store
/// call, and the victim's session is untouched.
async fn a_form_from_another_loopback_origin_is_refused(c: &Client, shop: &Shop) {
    for (path, fields) in [
        ("/basket", r#"<input name="item" value="eve">"#),
        ("/logout", ""),
    ] {
        let attack = format!(
            r#"<!doctype html><form method="post" action="{}">{fields}</form>
<script>document.forms[0].submit()</script>"#,
            shop.url(path)
        );
        c.goto(&attacker_site(attack)).await.unwrap();
        wait_refused(c, &format!("the forged POST {path}")).await;
        assert_eq!(
            c.current_url().await.unwrap().to_string(),
            shop.url(path),
            "the form reached the shop"
        );
    }
    c.goto(&shop.url("/")).await.unwrap();
    wait_text(c, "user", "ada").await;
    assert_eq!(
        basket(c).await,
        lines(&[("tea", 3), ("scones", 1)]),
        "nothing changed"
    );
    check(
        "a page on another port of 127.0.0.1 (same site: the cookie goes along) that \
         auto-submits POST /basket and POST /logout gets 403 both times; still logged in \
         as ada, basket kept",
    );
}

/// Two browser profiles (two devices) log in as the same user; the first
/// opens "Where you are logged in", sees both, and signs the other out;
/// the other is logged out on its next request.
async fn a_device_signs_out_another(first: &Client, second: &Client, shop: &Shop) {
    for c in [first, second] {
        c.goto(&shop.url("/")).await.unwrap();
        fill_and_click(c, "user-input", "grace", "login").await;
        wait_text(c, "user", "grace").await;
    }
    click(first, "sessions-link").await;
    element(first, "this-device").await;
    let others = first
        .find_all(Locator::Css("li.device:not(#this-device) button"))
        .await
        .unwrap();
    assert_eq!(others.len(), 1, "the other device is listed");
    others[0].click().await.unwrap();
    // The page reloads with this device alone.
    element(first, "only-this-device").await;
    second.goto(&shop.url("/")).await.unwrap();
    element(second, "user-none").await;
    first.goto(&shop.url("/")).await.unwrap();
    wait_text(first, "user", "grace").await;
    check(
        "two browser profiles log in as grace; the first opens #sessions-link, sees two \
         devices, signs the other out (its button on /account): the second profile is \
         logged out on its next page, the first is not",
    );
}

async fn drive(c: &Client, shop: &Shop, forgetful_shop: &Shop) {
    let first_visit = a_visit_creates_no_session(c, shop).await;
    the_race_works_without_a_session(c, shop).await;
    catalogue_and_totals(c, shop).await;
    visits_count_up(c, shop).await;
    login_changes_the_session_cookie(c).await;
    let screenshots = race_and_screenshots(c).await;
    cookie_is_http_only_and_lax(c).await;
    a_cross_site_form_is_refused(c, shop).await;
    a_form_from_another_loopback_origin_is_refused(c, shop).await;
    logout_clears_basket_and_login(c).await;
    remember_me_is_persistent(c, forgetful_shop).await;
    for path in [first_visit].iter().chain(&screenshots) {
        println!("browser screenshot: {}", path.display());
    }
}

#[tokio::test]
async fn the_shop_works_in_a_real_browser() {
    let started = Instant::now();
    let shop = Shop::start(&[]);
    let forgetful_shop = Shop::start(&[("SESSION_PERSISTENT_COOKIE", "false")]);
    // Dropped in reverse order: chromedriver (and Chromium) before the profile.
    let profile = TempDir::new("shop-browser-profile");
    let driver = ChromeDriver::start();

    let second_profile = TempDir::new("shop-browser-profile-2");
    let run = async {
        let client = open_browser(&driver, &profile.0).await;
        drive(&client, &shop, &forgetful_shop).await;
        let other_device = open_browser(&driver, &second_profile.0).await;
        let devices_shop = Shop::start(&[]);
        a_device_signs_out_another(&client, &other_device, &devices_shop).await;
        other_device.close().await.unwrap();
        client.close().await.unwrap();
    };
    tokio::time::timeout(WHOLE_TEST, run)
        .await
        .unwrap_or_else(|_| panic!("the browser test took longer than {WHOLE_TEST:?}"));
    println!("browser checks took {:.1?}", started.elapsed());
}
