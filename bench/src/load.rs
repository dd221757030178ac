//! The load generator: virtual users, requests in flight, a route mix, lost updates.
//!
//! Virtual users have their own cookie jars; a fixed number of requests is
//! in flight; the route mix is weighted; a final read counts lost updates.
//!
//! Each of the `concurrency` workers owns one keep-alive HTTP/1.1 connection
//! and sends one request at a time, so exactly `concurrency` requests are in
//! flight. A worker picks the next user that has no request in flight
//! (round robin), or, with [`LoadConfig::same_user`] `K`, `K` workers share
//! each user so that `K` requests of one session are in flight at once.
//!
//! Every user starts with one `POST /incr` (not timed) so that it holds a
//! session cookie; a jar keeps the cookies the server sets, whatever their
//! `Secure` attribute. Each user counts the increments the server
//! acknowledged (a 2xx to `/incr` or `/incr-locked`); at the end one `GET
//! /read` per user gives the stored value, and the difference is the number
//! of lost updates.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper::header::{COOKIE, HOST, HeaderValue, SET_COOKIE};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

use crate::probe::{self, ProcStat, StoreStat};

/// A route of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /read`
    Read,
    /// `POST /incr`
    Incr,
    /// `POST /incr-locked`
    IncrLocked,
    /// `GET /plain`
    Plain,
}

impl Route {
    /// The route at `path`.
    pub fn from_path(path: &str) -> Option<Route> {
        Some(match path {
            "/read" => Route::Read,
            "/incr" => Route::Incr,
            "/incr-locked" => Route::IncrLocked,
            "/plain" => Route::Plain,
            _ => return None,
        })
    }

    /// The path.
    pub fn path(self) -> &'static str {
        match self {
            Route::Read => "/read",
            Route::Incr => "/incr",
            Route::IncrLocked => "/incr-locked",
            Route::Plain => "/plain",
        }
    }

    fn method(self) -> Method {
        match self {
            Route::Read | Route::Plain => Method::GET,
            Route::Incr | Route::IncrLocked => Method::POST,
        }
    }

    fn increments(self) -> bool {
        matches!(self, Route::Incr | Route::IncrLocked)
    }
}

/// Parses a route mix such as `/read:90,/incr:10`.
pub fn parse_mix(text: &str) -> Result<Vec<(Route, u32)>, String> {
    text.split(',')
        .map(|part| {
            let (path, weight) = part.split_once(':').unwrap_or((part, "1"));
            let route = Route::from_path(path).ok_or_else(|| format!("unknown route {path:?}"))?;
            let weight = weight
                .parse()
                .map_err(|_| format!("bad weight in {part:?}"))?;
            Ok((route, weight))
        })
        .collect()
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The server.
    pub addr: SocketAddr,
    /// Virtual users (sessions).
    pub users: usize,
    /// Requests in flight in total.
    pub concurrency: usize,
    /// Measured time, after the warm-up; ignored when `requests` is set.
    pub duration: Duration,
    /// Send this many requests per round (no warm-up), instead of running
    /// for `duration`.
    pub requests: Option<u64>,
    /// With `requests`: how many rounds, each with new users (so new
    /// sessions); the request rate reported is the median round's.
    pub rounds: usize,
    /// Unmeasured time before the measured one.
    pub warmup: Duration,
    /// Routes and their weights.
    pub mix: Vec<(Route, u32)>,
    /// `false`: every request goes without a cookie (a new-session storm);
    /// users are then not primed nor checked.
    pub cookies: bool,
    /// `K > 1`: `K` workers share each user, so that `K` requests of one
    /// session are in flight at once.
    pub same_user: usize,
    /// Compare each user's acknowledged increments with a final read.
    pub check: bool,
    /// The server's pid, for CPU time and memory.
    pub server_pid: Option<u32>,
    /// A Redis server to count commands and memory of.
    pub redis_port: Option<u16>,
    /// A memcached server to count commands and memory of.
    pub memcached_port: Option<u16>,
    /// Count the commands clients send to Redis with `MONITOR` (slows Redis
    /// down; for command counts only).
    pub monitor: bool,
}

/// One measured run, or one idle-memory measurement; a line of the results
/// file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Outcome {
    /// The variant's name.
    pub variant: String,
    /// The scenario's name.
    pub scenario: String,
    /// Requests completed in the measured time (2xx or not).
    pub requests: u64,
    /// Length of the measured time, in seconds.
    pub seconds: f64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Worst latency, ms.
    pub max_ms: f64,
    /// Non-2xx responses and failed requests in the measured time.
    pub errors: u64,
    /// Increments acknowledged in all (priming included), when checked.
    pub acked: Option<u64>,
    /// Acknowledged increments missing from the final reads, when checked.
    pub lost: Option<u64>,
    /// Final reads above the acknowledged count (an increment applied whose
    /// response failed), when checked.
    pub surplus: Option<u64>,
    /// Lost updates of each round, when checked and run in rounds.
    pub lost_rounds: Vec<u64>,
    /// Requests per second of each round, when run in rounds.
    pub rps_rounds: Vec<f64>,
    /// Responses that set a session cookie, in the measured time.
    pub new_sessions: u64,
    /// Server CPU time per request, µs.
    pub cpu_us_per_req: Option<f64>,
    /// Load generator CPU time per request, µs.
    pub client_cpu_us_per_req: Option<f64>,
    /// Store server (Redis, memcached) CPU time per request, µs.
    pub store_cpu_us_per_req: Option<f64>,
    /// Cores busy on average with other work than the server, the load
    /// generator and the store during the measured time (other processes on
    /// the machine: a noise indicator).
    pub other_cores: Option<f64>,
    /// Server peak RSS (`VmHWM`) at the end, bytes.
    pub peak_rss: Option<u64>,
    /// Server RSS growth over the measured time, bytes.
    pub rss_delta: Option<i64>,
    /// Server RSS growth per new session, bytes (memory stores, storms).
    pub rss_per_session: Option<f64>,
    /// Store commands per request, by command, as the store counts them
    /// (Redis: including the commands run inside Lua scripts).
    pub store_commands: BTreeMap<String, f64>,
    /// Commands clients sent to Redis per request, by command (`MONITOR`):
    /// the round trips.
    pub round_trips: BTreeMap<String, f64>,
    /// Store memory growth per new session, bytes.
    pub store_bytes_per_session: Option<f64>,
    /// Scenario (e): sessions created.
    pub idle_sessions: Option<u64>,
    /// Scenario (e): RSS per idle session, bytes.
    pub idle_bytes_per_session: Option<f64>,
    /// Scenario (e): expired sessions among them.
    pub expired: Option<u64>,
    /// Scenario (e): time of one sweep, ms.
    pub sweep_ms: Option<f64>,
    /// Scenario (e): sessions the sweep removed.
    pub swept: Option<u64>,
}

#[derive(Default)]
struct User {
    jar: Mutex<Jar>,
    acked: AtomicU64,
    busy: AtomicBool,
}

/// The cookies a user holds, and the `Cookie` header that sends them back.
#[derive(Default)]
struct Jar {
    cookies: Vec<(String, String)>,
    header: Option<HeaderValue>,
}

impl User {
    fn jar(&self) -> std::sync::MutexGuard<'_, Jar> {
        self.jar.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cookie_header(&self) -> Option<HeaderValue> {
        self.jar().header.clone()
    }

    fn store_cookies(&self, set_cookies: &[HeaderValue]) {
        if set_cookies.is_empty() {
            return;
        }
        let mut jar = self.jar();
        for header in set_cookies {
            let Some((name, value, removed)) = parse_set_cookie(header.as_bytes()) else {
                continue;
            };
            jar.cookies.retain(|(n, _)| *n != name);
            if !removed {
                jar.cookies.push((name, value));
            }
        }
        let text = jar
            .cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        jar.header = HeaderValue::from_str(&text)
            .ok()
            .filter(|_| !text.is_empty());
    }
}

/// `(name, value, removed)` of a `Set-Cookie` header: `removed` when the
/// value is empty or `Max-Age` is zero or negative.
fn parse_set_cookie(header: &[u8]) -> Option<(String, String, bool)> {
    let text = std::str::from_utf8(header).ok()?;
    let mut parts = text.split(';');
    let (name, value) = parts.next()?.trim().split_once('=')?;
    let removed = value.is_empty()
        || parts.any(|attr| {
            let attr = attr.trim();
            attr.len() > 8
                && attr[..8].eq_ignore_ascii_case("max-age=")
                && attr[8..].parse::<i64>().is_ok_and(|n| n <= 0)
        });
    Some((name.to_owned(), value.to_owned(), removed))
}

struct Shared {
    config: LoadConfig,
    users: Vec<User>,
    next_user: AtomicUsize,
    tickets: AtomicU64,
    /// The measured window; a request counts when it starts and ends in it.
    window: (Instant, Option<Instant>),
    total_weight: u32,
}

#[derive(Default)]
struct WorkerStats {
    latencies_us: Vec<u32>,
    errors: u64,
    new_sessions: u64,
}

struct Reply {
    ok: bool,
    set_cookies: Vec<HeaderValue>,
    body: Bytes,
}

struct Conn {
    addr: SocketAddr,
    host: HeaderValue,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            host: HeaderValue::from_str(&addr.to_string()).expect("an address is a valid header"),
            sender: None,
        }
    }

    async fn send(
        &mut self,
        route: Route,
        cookie: Option<HeaderValue>,
    ) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
        let mut sender = match self.sender.take() {
            Some(s) => s,
            None => {
                let stream = tokio::net::TcpStream::connect(self.addr).await?;
                stream.set_nodelay(true)?;
                let (sender, conn) = handshake(TokioIo::new(stream)).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender
            }
        };
        sender.ready().await?;
        let mut req = Request::builder()
            .method(route.method())
            .uri(route.path())
            .header(HOST, self.host.clone());
        if let Some(cookie) = cookie {
            req = req.header(COOKIE, cookie);
        }
        let resp = sender.send_request(req.body(Empty::new())?).await?;
        let ok = resp.status().is_success();
        let set_cookies = resp.headers().get_all(SET_COOKIE).iter().cloned().collect();
        let body = resp.into_body().collect().await?.to_bytes();
        // Only a connection that finished its exchange cleanly is reused.
        self.sender = Some(sender);
        Ok(Reply {
            ok,
            set_cookies,
            body,
        })
    }
}

/// A small, fast generator for the route mix (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn pick_route(shared: &Shared, rng: &mut Rng) -> Route {
    let mut roll = (rng.next() % u64::from(shared.total_weight)) as u32;
    for (route, weight) in &shared.config.mix {
        if roll < *weight {
            return *route;
        }
        roll -= weight;
    }
    shared.config.mix[0].0
}

/// Takes a user with no request in flight, round robin.
fn take_user(shared: &Shared) -> usize {
    loop {
        let u = shared.next_user.fetch_add(1, Ordering::Relaxed) % shared.users.len();
        if shared.users[u]
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return u;
        }
    }
}

async fn worker(index: usize, shared: Arc<Shared>) -> WorkerStats {
    let config = &shared.config;
    let mut stats = WorkerStats::default();
    let mut conn = Conn::new(config.addr);
    let mut rng =
        Rng(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    let (from, to) = shared.window;
    loop {
        let now = Instant::now();
        match (config.requests, to) {
            (Some(total), _) if shared.tickets.fetch_add(1, Ordering::Relaxed) >= total => {
                break;
            }
            (None, Some(to)) if now >= to => break,
            _ => {}
        }
        let route = pick_route(&shared, &mut rng);
        let user = if !config.cookies {
            None
        } else if config.same_user > 1 {
            Some((index / config.same_user) % shared.users.len())
        } else {
            Some(take_user(&shared))
        };
        let cookie = user.and_then(|u| shared.users[u].cookie_header());
        let start = Instant::now();
        let reply = conn.send(route, cookie).await;
        let end = Instant::now();
        if let Some(u) = user {
            let user = &shared.users[u];
            if let Ok(reply) = &reply {
                user.store_cookies(&reply.set_cookies);
                if reply.ok && route.increments() {
                    user.acked.fetch_add(1, Ordering::Relaxed);
                }
            }
            if config.same_user <= 1 {
                user.busy.store(false, Ordering::Release);
            }
        }
        let measured = start >= from && to.is_none_or(|to| end <= to);
        if !measured {
            continue;
        }
        stats
            .latencies_us
            .push(end.duration_since(start).as_micros().min(u32::MAX as u128) as u32);
        match reply {
            Ok(reply) => {
                if !reply.ok {
                    stats.errors += 1;
                }
                if reply
                    .set_cookies
                    .iter()
                    .any(|h| parse_set_cookie(h.as_bytes()).is_some_and(|(_, _, gone)| !gone))
                {
                    stats.new_sessions += 1;
                }
            }
            Err(_) => stats.errors += 1,
        }
    }
    stats
}

/// Gives every user a session: one `POST /incr` each, `concurrency` at a time.
async fn prime(shared: &Arc<Shared>) -> u64 {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..shared.config.concurrency.min(shared.users.len()))
        .map(|_| {
            let shared = shared.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut conn = Conn::new(shared.config.addr);
                let mut errors = 0;
                loop {
                    let u = next.fetch_add(1, Ordering::Relaxed);
                    let Some(user) = shared.users.get(u) else {
                        break;
                    };
                    match conn.send(Route::Incr, user.cookie_header()).await {
                        Ok(reply) => {
                            user.store_cookies(&reply.set_cookies);
                            if reply.ok {
                                user.acked.fetch_add(1, Ordering::Relaxed);
                            } else {
                                errors += 1;
                            }
                        }
                        Err(_) => errors += 1,
                    }
                }
                errors
            })
        })
        .collect();
    let mut errors = 0;
    for t in tasks {
        errors += t.await.unwrap_or(1);
    }
    errors
}

/// Reads every user's `n`: `(lost, surplus)` against the acknowledged
/// increments.
async fn check(shared: &Arc<Shared>) -> (u64, u64) {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..shared.config.concurrency.min(shared.users.len()))
        .map(|_| {
            let shared = shared.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut conn = Conn::new(shared.config.addr);
                let (mut lost, mut surplus) = (0u64, 0u64);
                loop {
                    let u = next.fetch_add(1, Ordering::Relaxed);
                    let Some(user) = shared.users.get(u) else {
                        break;
                    };
                    let acked = user.acked.load(Ordering::Relaxed);
                    let stored = match conn.send(Route::Read, user.cookie_header()).await {
                        Ok(reply) if reply.ok => std::str::from_utf8(&reply.body)
                            .ok()
                            .and_then(|s| s.trim().parse::<u64>().ok())
                            .unwrap_or(0),
                        _ => 0,
                    };
                    lost += acked.saturating_sub(stored);
                    surplus += stored.saturating_sub(acked);
                }
                (lost, surplus)
            })
        })
        .collect();
    let (mut lost, mut surplus) = (0, 0);
    for t in tasks {
        let (l, s) = t.await.unwrap_or((0, 0));
        lost += l;
        surplus += s;
    }
    (lost, surplus)
}

struct Snapshot {
    at: Instant,
    machine_us: Option<u64>,
    server: Option<ProcStat>,
    client: Option<ProcStat>,
    store: Option<StoreStat>,
    store_proc: Option<ProcStat>,
}

async fn snapshot(config: &LoadConfig, ticks: u64) -> Snapshot {
    let (pid, redis, memcached) = (config.server_pid, config.redis_port, config.memcached_port);
    let at = Instant::now();
    tokio::task::spawn_blocking(move || {
        let machine_us = probe::machine_busy_us(ticks).ok();
        let server = pid.and_then(|p| probe::proc_stat(p, ticks).ok());
        let client = probe::proc_stat(0, ticks).ok();
        let store = match (redis, memcached) {
            (Some(port), _) => probe::redis_stat(port).ok(),
            (None, Some(port)) => probe::memcached_stat(port).ok(),
            _ => None,
        };
        let store_proc = store
            .as_ref()
            .filter(|s| s.pid != 0)
            .and_then(|s| probe::proc_stat(s.pid, ticks).ok());
        Snapshot {
            at,
            machine_us,
            server,
            client,
            store,
            store_proc,
        }
    })
    .await
    .expect("the snapshot task does not panic")
}

fn per(count: u64, total: f64) -> Option<f64> {
    (count > 0).then(|| total / count as f64)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[i]) / 1000.0
}

fn new_shared(config: &LoadConfig, window: (Instant, Option<Instant>)) -> Shared {
    let users = if config.cookies {
        config.users.max(1)
    } else {
        0
    };
    Shared {
        total_weight: config.mix.iter().map(|(_, w)| w).sum::<u32>().max(1),
        config: config.clone(),
        users: (0..users).map(|_| User::default()).collect(),
        next_user: AtomicUsize::new(0),
        tickets: AtomicU64::new(0),
        window,
    }
}

async fn run_workers(shared: &Arc<Shared>) -> Vec<tokio::task::JoinHandle<WorkerStats>> {
    (0..shared.config.concurrency)
        .map(|i| tokio::spawn(worker(i, shared.clone())))
        .collect()
}

async fn join_workers(workers: Vec<tokio::task::JoinHandle<WorkerStats>>, into: &mut WorkerStats) {
    for w in workers {
        let s = w.await.expect("a worker does not panic");
        into.latencies_us.extend(s.latencies_us);
        into.errors += s.errors;
        into.new_sessions += s.new_sessions;
    }
}

fn acked(shared: &Shared) -> u64 {
    shared
        .users
        .iter()
        .map(|u| u.acked.load(Ordering::Relaxed))
        .sum()
}

/// Runs the load described by `config`; `variant` and `scenario` label the
/// result.
pub async fn run(config: LoadConfig, variant: &str, scenario: &str) -> Outcome {
    assert!(!config.mix.is_empty(), "the route mix is empty");
    assert!(
        !config.cookies || config.same_user > 1 || config.users >= config.concurrency,
        "round robin needs at least as many users as requests in flight"
    );
    let ticks = probe::clock_ticks();
    let mut stats = WorkerStats::default();
    let mut out = Outcome {
        variant: variant.to_owned(),
        scenario: scenario.to_owned(),
        ..Outcome::default()
    };
    let mut monitor = None;
    let (before, after, lost_surplus_acked);
    match config.requests {
        None => {
            // Prime, warm up, then measure for `duration`.
            let mut shared = new_shared(&config, (Instant::now(), None));
            if config.cookies {
                let arc = Arc::new(shared);
                stats.errors += prime(&arc).await;
                shared = Arc::into_inner(arc).expect("the priming tasks are done");
            }
            let from = Instant::now() + config.warmup;
            let to = from + config.duration;
            shared.window = (from, Some(to));
            let shared = Arc::new(shared);
            let workers = run_workers(&shared).await;
            tokio::time::sleep_until(from.into()).await;
            before = snapshot(&config, ticks).await;
            if let (true, Some(port)) = (config.monitor, config.redis_port) {
                monitor = probe::Monitor::start(port).ok();
            }
            tokio::time::sleep_until(to.into()).await;
            let trips = monitor.take().map(probe::Monitor::stop);
            after = snapshot(&config, ticks).await;
            join_workers(workers, &mut stats).await;
            lost_surplus_acked = if config.check && config.cookies {
                let (lost, surplus) = check(&shared).await;
                Some((vec![lost], surplus, acked(&shared)))
            } else {
                None
            };
            if let Some(trips) = trips {
                out.round_trips = per_request(trips, stats.latencies_us.len() as u64);
            }
            out.seconds = after.at.duration_since(before.at).as_secs_f64();
            out.rps = stats.latencies_us.len() as f64 / out.seconds.max(1e-9);
        }
        Some(_) => {
            // Rounds of `requests` each, each on new sessions.
            let mut lost_rounds = Vec::new();
            let (mut surplus, mut acked_all) = (0, 0);
            let mut snap = None;
            let mut seconds = 0.0;
            for _ in 0..config.rounds.max(1) {
                let mut shared = new_shared(&config, (Instant::now(), None));
                if config.cookies {
                    let arc = Arc::new(shared);
                    stats.errors += prime(&arc).await;
                    shared = Arc::into_inner(arc).expect("the priming tasks are done");
                }
                let s0 = snapshot(&config, ticks).await;
                let round_start = Instant::now();
                shared.window = (round_start, None);
                let shared = Arc::new(shared);
                let workers = run_workers(&shared).await;
                let mut round = WorkerStats::default();
                join_workers(workers, &mut round).await;
                let elapsed = round_start.elapsed().as_secs_f64();
                let s1 = snapshot(&config, ticks).await;
                seconds += elapsed;
                out.rps_rounds
                    .push(round.latencies_us.len() as f64 / elapsed.max(1e-9));
                // CPU and commands are summed over the rounds only, not
                // over the priming and checking between them.
                snap = Some(match snap.take() {
                    None => (s0, s1),
                    Some((first, prev)) => (first, accumulate(prev, s0, s1)),
                });
                stats.latencies_us.extend(round.latencies_us);
                stats.errors += round.errors;
                stats.new_sessions += round.new_sessions;
                if config.check && config.cookies {
                    let (lost, extra) = check(&shared).await;
                    lost_rounds.push(lost);
                    surplus += extra;
                    acked_all += acked(&shared);
                }
            }
            let (b, a) = snap.expect("at least one round");
            before = b;
            after = a;
            lost_surplus_acked = (config.check && config.cookies).then(|| {
                (
                    lost_rounds,
                    surplus,
                    acked_all / config.rounds.max(1) as u64,
                )
            });
            out.seconds = seconds;
            out.rps = median(&out.rps_rounds);
        }
    }

    stats.latencies_us.sort_unstable();
    let requests = stats.latencies_us.len() as u64;
    out.requests = requests;
    out.p50_ms = percentile(&stats.latencies_us, 0.50);
    out.p99_ms = percentile(&stats.latencies_us, 0.99);
    out.max_ms = stats
        .latencies_us
        .last()
        .map_or(0.0, |m| f64::from(*m) / 1000.0);
    out.errors = stats.errors;
    out.new_sessions = stats.new_sessions;
    // Sessions per byte only where every request makes a new one.
    let storm = !config.cookies && stats.new_sessions >= 1000;
    if let (Some(b), Some(a)) = (before.server, after.server) {
        out.cpu_us_per_req = per(requests, a.cpu_us.saturating_sub(b.cpu_us) as f64);
        out.peak_rss = Some(a.hwm);
        let delta = a.rss as i64 - b.rss as i64;
        out.rss_delta = Some(delta);
        if storm {
            out.rss_per_session = per(stats.new_sessions, delta as f64);
        }
    }
    if let (Some(b), Some(a)) = (before.client, after.client) {
        out.client_cpu_us_per_req = per(requests, a.cpu_us.saturating_sub(b.cpu_us) as f64);
    }
    if let (Some(b), Some(a)) = (before.store_proc, after.store_proc) {
        out.store_cpu_us_per_req = per(requests, a.cpu_us.saturating_sub(b.cpu_us) as f64);
    }
    if let (Some(b), Some(a)) = (&before.store, &after.store) {
        out.store_commands = per_request(a.commands_since(b), requests);
        if storm {
            out.store_bytes_per_session =
                per(stats.new_sessions, a.memory as f64 - b.memory as f64);
        }
    }
    if let (Some(b), Some(a)) = (before.machine_us, after.machine_us) {
        let ours = |x: Option<ProcStat>, y: Option<ProcStat>| match (x, y) {
            (Some(x), Some(y)) => y.cpu_us.saturating_sub(x.cpu_us),
            _ => 0,
        };
        let own = ours(before.server, after.server)
            + ours(before.client, after.client)
            + ours(before.store_proc, after.store_proc);
        let wall = after.at.duration_since(before.at).as_secs_f64();
        let other = a.saturating_sub(b).saturating_sub(own);
        out.other_cores = Some(other as f64 / 1e6 / wall.max(1e-9));
    }
    if let Some((lost_rounds, surplus, acked)) = lost_surplus_acked {
        out.lost = Some(median_u64(&lost_rounds));
        out.surplus = Some(surplus);
        out.acked = Some(acked);
        if lost_rounds.len() > 1 {
            out.lost_rounds = lost_rounds;
        }
    }
    if out.rps_rounds.len() <= 1 {
        out.rps_rounds.clear();
    }
    out
}

/// Adds the counters of one more round (`s0` to `s1`) to `total`, the
/// snapshot "after" the rounds so far, so that `first`..result spans only
/// the rounds themselves.
fn accumulate(total: Snapshot, s0: Snapshot, s1: Snapshot) -> Snapshot {
    let add = |t: Option<ProcStat>, a: Option<ProcStat>, b: Option<ProcStat>| match (t, a, b) {
        (Some(t), Some(a), Some(b)) => Some(ProcStat {
            cpu_us: t.cpu_us + b.cpu_us.saturating_sub(a.cpu_us),
            rss: b.rss,
            hwm: b.hwm,
        }),
        _ => b,
    };
    let store = match (total.store, s0.store, s1.store) {
        (Some(mut t), Some(a), Some(b)) => {
            for (name, n) in b.commands_since(&a) {
                *t.commands.entry(name).or_default() += n;
            }
            t.memory = b.memory;
            Some(t)
        }
        (_, _, b) => b,
    };
    Snapshot {
        at: total.at + s1.at.duration_since(s0.at),
        machine_us: match (total.machine_us, s0.machine_us, s1.machine_us) {
            (Some(t), Some(a), Some(b)) => Some(t + b.saturating_sub(a)),
            (_, _, b) => b,
        },
        server: add(total.server, s0.server, s1.server),
        client: add(total.client, s0.client, s1.client),
        store,
        store_proc: add(total.store_proc, s0.store_proc, s1.store_proc),
    }
}

fn per_request(counts: BTreeMap<String, u64>, requests: u64) -> BTreeMap<String, f64> {
    counts
        .into_iter()
        .map(|(name, n)| (name, n as f64 / requests.max(1) as f64))
        .collect()
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn median_u64(values: &[u64]) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_cookie_values_and_removals() {
        assert_eq!(
            parse_set_cookie(b"session=abc; Path=/; Max-Age=7200; HttpOnly"),
            Some(("session".into(), "abc".into(), false))
        );
        assert!(parse_set_cookie(b"session=; Max-Age=0").unwrap().2);
        assert!(parse_set_cookie(b"id=x; max-age=0").unwrap().2);
        assert_eq!(parse_set_cookie(b"garbage"), None);
    }

    #[test]
    fn mixes_parse() {
        let mix = parse_mix("/read:90,/incr:10").unwrap();
        assert_eq!(mix, [(Route::Read, 90), (Route::Incr, 10)]);
        assert!(parse_mix("/nope:1").is_err());
    }

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
    }
}
