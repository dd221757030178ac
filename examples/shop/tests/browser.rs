//! The shop in a real browser: headless Chromium, driven through chromedriver.

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
        let mut child = Command::new(env!("CARGO_BIN_EXE_shop"))
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

async fn basket(c: &Client) -> Vec<String> {
    element(c, "basket").await;
    let mut items = Vec::new();
    for li in c.find_all(Locator::Css("#basket li")).await.unwrap() {
        items.push(li.text().await.unwrap());
    }
    items
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

async fn a_visit_creates_no_session(c: &Client, shop: &Shop) {
    c.goto(&shop.url("/")).await.unwrap();
    c.refresh().await.unwrap();
    assert_eq!(visits(c).await, 0, "no session, no visits counted");
    if let Ok(cookie) = c.get_named_cookie("session").await {
        panic!("a GET set a session cookie: {cookie:?}");
    }
    assert_eq!(token_fields(c).await, Vec::<String>::new(), "no token yet");
    check("two visits without a session: #visits 0, no session cookie, no token in the forms");
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

async fn basket_persists_across_pages(c: &Client, shop: &Shop) {
    for item in ["tea", "scones"] {
        fill_and_click(c, "item-input", item, "add").await;
        wait_text(c, "flash", &format!("Added {item} to your basket.")).await;
        // The first add started the session; the page now carries its token
        // in every form, and the second add sent it.
        let tokens = token_fields(c).await;
        assert!(
            tokens.len() >= 3 && tokens.iter().all(|t| t.len() == 64 && *t == tokens[0]),
            "one token in every form: {tokens:?}"
        );
    }
    c.goto(&shop.url("/healthz")).await.unwrap();
    let health = c.find(Locator::Css("body")).await.unwrap().text().await;
    assert_eq!(health.unwrap(), "ok");
    c.goto(&shop.url("/")).await.unwrap();
    let items = basket(c).await;
    assert_eq!(items, ["tea", "scones"], "basket after navigating away");
    check(&format!(
        "a basket persists across pages: added tea (no session yet), then scones \
         (with the token the page embeds) via #add; \
         after /healthz and back #basket lists {items:?}"
    ));
}

async fn login_changes_the_session_cookie(c: &Client) {
    let before = session_cookie(c).await.value().to_owned();
    fill_and_click(c, "user-input", "ada", "login").await;
    wait_text(c, "user", "ada").await;
    wait_text(c, "flash", "Welcome, ada.").await;
    let after = session_cookie(c).await.value().to_owned();
    assert_ne!(before, after, "login must regenerate the session id");
    assert_eq!(basket(c).await, ["tea", "scones"], "basket survives login");
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

async fn screenshot_after_login(c: &Client) -> PathBuf {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    std::fs::create_dir_all(&target).unwrap();
    let path = target.canonicalize().unwrap().join("shop-after-login.png");
    std::fs::write(&path, &png).unwrap();
    check(&format!(
        "screenshot after login saved ({} bytes): {}",
        png.len(),
        path.display()
    ));
    path
}

async fn logout_clears_basket_and_login(c: &Client) {
    click(c, "logout").await;
    wait_text(c, "flash", "You are logged out.").await;
    element(c, "user-none").await;
    element(c, "basket-empty").await;
    assert_eq!(visits(c).await, 1, "a new session after logout");
    check(
        "logout (#logout) clears the login (#user-none) and the basket (#basket-empty), \
         flash \"You are logged out.\", visits back to 1",
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
    let refused = "//*[contains(normalize-space(), 'cross-site request refused')]";
    if let Err(e) = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(refused))
        .await
    {
        fail(c, &format!("the forged login was not refused: {e}")).await;
    }
    let landed = c.current_url().await.unwrap().to_string();
    assert_eq!(landed, shop.url("/login"), "the form reached the shop");
    c.goto(&shop.url("/")).await.unwrap();
    wait_text(c, "user", "ada").await;
    assert_eq!(basket(c).await, ["tea", "scones"], "nothing changed");
    check(
        "a page of another origin (data: URL) that auto-submits a login form to the shop \
         gets 403 \"cross-site request refused\"; still logged in as ada, basket kept",
    );
}

async fn drive(c: &Client, shop: &Shop, forgetful_shop: &Shop) {
    a_visit_creates_no_session(c, shop).await;
    basket_persists_across_pages(c, shop).await;
    visits_count_up(c, shop).await;
    login_changes_the_session_cookie(c).await;
    let screenshot = screenshot_after_login(c).await;
    cookie_is_http_only_and_lax(c).await;
    a_cross_site_form_is_refused(c, shop).await;
    logout_clears_basket_and_login(c).await;
    remember_me_is_persistent(c, forgetful_shop).await;
    println!("browser screenshot: {}", screenshot.display());
}

#[tokio::test]
async fn the_shop_works_in_a_real_browser() {
    let started = Instant::now();
    let shop = Shop::start(&[]);
    let forgetful_shop = Shop::start(&[("SESSION_PERSISTENT_COOKIE", "false")]);
    // Dropped in reverse order: chromedriver (and Chromium) before the profile.
    let profile = TempDir::new("shop-browser-profile");
    let driver = ChromeDriver::start();

    let run = async {
        let client = open_browser(&driver, &profile.0).await;
        drive(&client, &shop, &forgetful_shop).await;
        client.close().await.unwrap();
    };
    tokio::time::timeout(WHOLE_TEST, run)
        .await
        .unwrap_or_else(|_| panic!("the browser test took longer than {WHOLE_TEST:?}"));
    println!("browser checks took {:.1?}", started.elapsed());
}
