//! The soak driver: mixed load on a running shop for a bounded time, with 100k sessions and continuous expiry; reports RSS over time, errors and lost locked increments.
//!
//! Run by `scripts/soak.sh`, which starts the shop (and Redis) and passes:
//!
//! ```text
//! soak --url http://127.0.0.1:PORT --pid SHOP_PID [--store-pid REDIS_PID]
//!      [--seconds 300] [--sessions 100000] [--counters 1000] [--concurrency 64]
//! ```
//!
//! 1. Creates `--sessions` sessions (`POST /api/counter/buffered`).
//! 2. For `--seconds`, `--concurrency` workers send a mix of requests, each
//!    to a session picked uniformly: 45% `GET /api/session`, 15% `GET /`
//!    (a buffered write), 6% `POST /basket` (locked), 2% `POST
//!    /basket/clear` (so baskets stay bounded), 3% `POST /login`
//!    (regenerate), 1% `POST /logout` (destroy), 3% new sessions; the first
//!    `--counters` sessions only get `POST /api/counter` (locked increments,
//!    25% of requests). With the shop's lifetime set to one minute, sessions
//!    not picked for a minute expire on the server — continuous expiry — and
//!    are replaced by the fresh session the next request to them gets.
//! 3. Every 5 s it prints the shop's RSS (and the store's), requests per
//!    second, errors, and how many sessions were used in the last minute.
//! 4. At the end it reads every counter session and compares `n` with the
//!    increments acknowledged with a 200: any difference is a lost
//!    increment.
//!
//! Exits non-zero on any error response, transport error or lost increment.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reliability::{client, rss_kib, session_cookie};

#[derive(Debug)]
struct Args {
    url: String,
    pid: u32,
    store_pid: Option<u32>,
    seconds: u64,
    sessions: usize,
    counters: usize,
    concurrency: usize,
}

fn args() -> Args {
    let mut a = Args {
        url: String::new(),
        pid: 0,
        store_pid: None,
        seconds: 300,
        sessions: 100_000,
        counters: 1000,
        concurrency: 64,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let [flag, value] = pair else {
            panic!("flags take a value: {pair:?}");
        };
        match flag.as_str() {
            "--url" => a.url = value.clone(),
            "--pid" => a.pid = value.parse().expect("--pid"),
            "--store-pid" => a.store_pid = Some(value.parse().expect("--store-pid")),
            "--seconds" => a.seconds = value.parse().expect("--seconds"),
            "--sessions" => a.sessions = value.parse().expect("--sessions"),
            "--counters" => a.counters = value.parse().expect("--counters"),
            "--concurrency" => a.concurrency = value.parse().expect("--concurrency"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        !a.url.is_empty() && a.pid != 0,
        "--url and --pid are required"
    );
    assert!(a.counters < a.sessions);
    a
}

struct Slot {
    cookie: Mutex<String>,
    /// The session's CSRF token, which the shop wants on every POST; read
    /// from `GET /api/session` when the cookie changes.
    token: Mutex<Option<String>>,
    /// A request to this (browsing) session is in flight. Like a browser,
    /// the driver sends one request per browsing session at a time, so that
    /// a login or logout never races another request of the same session
    /// (that race rightly ends in 409 "session gone"). Counter sessions
    /// take concurrent requests: that is what their locks are for.
    busy: AtomicBool,
    /// Unix seconds of the last request to it.
    last_used: AtomicU64,
}

struct Shared {
    url: String,
    slots: Vec<Slot>,
    counters: usize,
    acked: Vec<AtomicU64>,
    requests: AtomicU64,
    errors: AtomicU64,
    renewed: AtomicU64,
    stop: AtomicBool,
    started: Instant,
}

impl Shared {
    fn now(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// xorshift64*: enough randomness to pick sessions and requests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The CSRF token of the session `cookie` names (`None`: no such session,
/// and a POST is then judged by its origin alone).
async fn csrf_token(http: &reqwest::Client, url: &str, cookie: &str) -> Option<String> {
    let body: serde_json::Value = http
        .get(format!("{url}/api/session"))
        .header("cookie", format!("session={cookie}"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["csrf_token"].as_str().map(str::to_owned)
}

async fn create(http: &reqwest::Client, url: &str) -> Option<String> {
    let res = http
        .post(format!("{url}/api/counter/buffered"))
        .send()
        .await
        .ok()?;
    if res.status() != 200 {
        return None;
    }
    session_cookie(&res)
}

async fn worker(shared: Arc<Shared>, seed: u64) {
    let http = client();
    let mut rng = Rng(seed | 1);
    while !shared.stop.load(Ordering::Relaxed) {
        let roll = rng.below(100);
        let (index, method, path, form): (usize, &str, &str, Option<(&str, String)>) = if roll < 25
        {
            (rng.below(shared.counters), "POST", "/api/counter", None)
        } else {
            let i = shared.counters + rng.below(shared.slots.len() - shared.counters);
            match roll {
                25..=69 => (i, "GET", "/api/session", None),
                70..=84 => (i, "GET", "/", None),
                85..=92 => (
                    i,
                    "POST",
                    "/basket",
                    Some(("item", format!("item{}", rng.below(50)))),
                ),
                93..=95 => (
                    i,
                    "POST",
                    "/login",
                    Some(("user", format!("user{}", rng.below(1000)))),
                ),
                96 => (i, "POST", "/logout", None),
                _ => (i, "NEW", "/api/counter/buffered", None),
            }
        };
        let slot = &shared.slots[index];
        let browsing = index >= shared.counters;
        if browsing
            && slot
                .busy
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            continue;
        }
        request(&shared, &http, index, method, path, form).await;
        if browsing {
            slot.busy.store(false, Ordering::Release);
        }
    }
}

async fn request(
    shared: &Shared,
    http: &reqwest::Client,
    index: usize,
    method: &str,
    path: &str,
    form: Option<(&str, String)>,
) {
    {
        let slot = &shared.slots[index];
        slot.last_used.store(shared.now(), Ordering::Relaxed);
        let cookie = slot.cookie.lock().unwrap().clone();
        let url = format!("{}{path}", shared.url);
        let mut req = match method {
            "GET" => http.get(url),
            "NEW" => http.post(url),
            _ => http.post(url),
        };
        if method != "NEW" {
            req = req.header("cookie", format!("session={cookie}"));
        }
        if method == "POST" {
            let known = slot.token.lock().unwrap().clone();
            let token = match known {
                Some(token) => Some(token),
                None => {
                    let token = csrf_token(http, &shared.url, &cookie).await;
                    slot.token.lock().unwrap().clone_from(&token);
                    token
                }
            };
            if let Some(token) = token {
                req = req.header("x-csrf-token", token);
            }
        }
        if let Some((name, value)) = &form {
            req = req.form(&[(*name, value.as_str())]);
        }
        shared.requests.fetch_add(1, Ordering::Relaxed);
        let res = match req.send().await {
            Ok(res) => res,
            Err(e) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("transport error on {path}: {e}");
                return;
            }
        };
        let status = res.status().as_u16();
        if status != 200 && status != 303 {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("{method} {path}: status {status}");
            return;
        }
        if let Some(new) = session_cookie(&res) {
            // A new id: minted at login or logout, a new session, or the
            // fresh one that replaced an expired session.
            if new != cookie {
                if index < shared.counters {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("a counter session was replaced: lost");
                }
                shared.renewed.fetch_add(1, Ordering::Relaxed);
                *slot.cookie.lock().unwrap() = new;
                *slot.token.lock().unwrap() = None;
            }
        }
        if index < shared.counters {
            let body: serde_json::Value = res.json().await.unwrap_or_default();
            if body["n"].as_u64().is_some() {
                shared.acked[index].fetch_add(1, Ordering::Relaxed);
            } else {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            let _ = res.bytes().await;
        }
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    let http = client();
    eprintln!("soak: {args:?}");

    // 1. Sessions.
    let t = Instant::now();
    let mut cookies = Vec::with_capacity(args.sessions);
    let mut pending = tokio::task::JoinSet::new();
    let mut made = 0;
    while cookies.len() < args.sessions {
        while pending.len() < args.concurrency && made < args.sessions {
            let http = http.clone();
            let url = args.url.clone();
            pending.spawn(async move { create(&http, &url).await });
            made += 1;
        }
        match pending.join_next().await {
            Some(Ok(Some(cookie))) => cookies.push(cookie),
            _ => made -= 1,
        }
    }
    let populate = t.elapsed();
    println!(
        "populate: {} sessions in {:.1} s ({:.0}/s); rss {} KiB",
        args.sessions,
        populate.as_secs_f64(),
        args.sessions as f64 / populate.as_secs_f64(),
        rss_kib(args.pid).unwrap_or(0)
    );

    // 2. Mixed load.
    let shared = Arc::new(Shared {
        url: args.url.clone(),
        slots: cookies
            .into_iter()
            .map(|c| Slot {
                cookie: Mutex::new(c),
                token: Mutex::new(None),
                busy: AtomicBool::new(false),
                last_used: AtomicU64::new(0),
            })
            .collect(),
        counters: args.counters,
        acked: (0..args.counters).map(|_| AtomicU64::new(1)).collect(),
        requests: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        renewed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        started: Instant::now(),
    });
    let workers: Vec<_> = (0..args.concurrency)
        .map(|i| {
            let seed =
                0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1) ^ std::process::id() as u64;
            tokio::spawn(worker(shared.clone(), seed))
        })
        .collect();
    println!("t_s,rss_kib,store_rss_kib,req_per_s,errors,used_last_60s,ids_renewed");
    let mut rss_series = Vec::new();
    let mut last_requests = 0;
    let interval = Duration::from_secs(5);
    let end = Instant::now() + Duration::from_secs(args.seconds);
    while Instant::now() < end {
        tokio::time::sleep(interval.min(end - Instant::now())).await;
        let requests = shared.requests.load(Ordering::Relaxed);
        let rate = (requests - last_requests) as f64 / interval.as_secs_f64();
        last_requests = requests;
        let now = shared.now();
        let used = shared
            .slots
            .iter()
            .filter(|s| now.saturating_sub(s.last_used.load(Ordering::Relaxed)) < 60)
            .count();
        let rss = rss_kib(args.pid).unwrap_or(0);
        let store_rss = args.store_pid.and_then(rss_kib).unwrap_or(0);
        rss_series.push(rss);
        println!(
            "{},{rss},{store_rss},{rate:.0},{},{used},{}",
            now,
            shared.errors.load(Ordering::Relaxed),
            shared.renewed.load(Ordering::Relaxed)
        );
    }
    shared.stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }

    // 3. Locked increments.
    let mut lost = 0u64;
    let mut checked = 0u64;
    for i in 0..args.counters {
        let cookie = shared.slots[i].cookie.lock().unwrap().clone();
        let res = http
            .get(format!("{}/api/session", args.url))
            .header("cookie", format!("session={cookie}"))
            .send()
            .await
            .expect("read a counter");
        let body: serde_json::Value = res.json().await.expect("json");
        let n = body["n"].as_u64().unwrap_or(0);
        let acked = shared.acked[i].load(Ordering::Relaxed);
        checked += acked;
        if n != acked {
            lost += acked.abs_diff(n);
            eprintln!("counter {i}: n = {n}, acknowledged {acked}");
        }
    }
    let requests = shared.requests.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    // Settling: the highest RSS of the last third of the run against that
    // of the middle third (the first third is the warm-up, while the first
    // sessions have not yet expired).
    let third = (rss_series.len() / 3).max(1);
    let middle_max = rss_series[third.min(rss_series.len() - 1)..(2 * third).min(rss_series.len())]
        .iter()
        .max()
        .copied()
        .unwrap_or(0);
    let last_max = rss_series[rss_series.len().saturating_sub(third)..]
        .iter()
        .max()
        .copied()
        .unwrap_or(0);
    println!(
        "summary: {requests} requests in {} s ({:.0}/s), {errors} errors, \
         {checked} locked increments acknowledged, {lost} lost; \
         rss max middle third {middle_max} KiB, last third {last_max} KiB ({:+.1}%)",
        args.seconds,
        requests as f64 / args.seconds as f64,
        (last_max as f64 - middle_max as f64) * 100.0 / middle_max.max(1) as f64
    );
    if errors > 0 || lost > 0 {
        std::process::exit(1);
    }
}
