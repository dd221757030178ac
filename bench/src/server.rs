//! The contenders: one axum or actix-web app per variant, all serving the
//! same routes.
//!
//! Every variant is built with the library's defaults, as an application
//! would use it: sessionkit with `SessionLayer::new` (120-minute sliding
//! expiry, `Secure` cookie, touch when less than 75 % of the lifetime is
//! left), tower-sessions with `SessionManagerLayer::new` (its default
//! browser-session expiry), sessionkit on actix-web with
//! `SessionMiddleware::new`, actix-session with `SessionMiddleware::new`
//! (its defaults: a browser-session cookie, a signed or private cookie with
//! a key generated at start-up). The load generator sends cookies back
//! whatever their `Secure` attribute says. actix-web runs its default
//! number of workers (one per core), as axum's tokio runtime does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};

/// One contender of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Variant {
    /// axum without a session layer: the ceiling of the machine. The session
    /// work is emulated with one global atomic counter.
    Bare,
    /// `Bare` with a session's wire traffic: every `/incr` answers with the
    /// `Set-Cookie` and `Cache-Control: private` headers sessionkit sends
    /// (a constant id), so the load generator holds, sends and parses the
    /// same cookie bytes as for a session variant while the server does no
    /// session work. The ratio to it is what the session layer costs the
    /// server; the ratio to `Bare` adds what the cookie costs the client.
    BareCookie,
    /// sessionkit over its in-process `MemoryStore`.
    SessionkitMemory,
    /// sessionkit over `sessionkit-redis`.
    SessionkitRedis,
    /// sessionkit over `sessionkit-file` (its defaults: durable writes).
    SessionkitFile,
    /// sessionkit over `sessionkit-memcached`.
    SessionkitMemcached,
    /// tower-sessions over its `MemoryStore`.
    TowerSessionsMemory,
    /// tower-sessions over `tower-sessions-redis-store` (fred).
    TowerSessionsRedis,
    /// actix-web without a session middleware: the actix ceiling, with the
    /// same emulated session as `Bare`.
    BareActix,
    /// sessionkit's actix-web middleware over its `MemoryStore`.
    SessionkitActixMemory,
    /// sessionkit's actix-web middleware over `sessionkit-redis`.
    SessionkitActixRedis,
    /// actix-session 0.11 over its `RedisSessionStore` (redis-rs).
    ActixSessionRedis,
    /// actix-session 0.11 over its `CookieSessionStore` (the state in the
    /// cookie itself, encrypted: no store round trip, and no lock).
    ActixSessionCookie,
    /// sessionkit over `sessionkit-sql`'s `PgStore` (its `connect`
    /// defaults: 10 connections, no ping before each use).
    SessionkitPostgres,
    /// sessionkit over `sessionkit-sql`'s `SqliteStore` (its `connect`
    /// defaults: WAL, `synchronous = NORMAL`).
    SessionkitSqlite,
    /// `SessionkitSqlite` with `Durability::Full` (`synchronous = FULL`):
    /// the durability of the peer's defaults (an acknowledged write
    /// survives power loss), for a like-for-like comparison.
    SessionkitSqliteFull,
    /// tower-sessions over `tower-sessions-sqlx-store`'s `PostgresStore`, on
    /// a pool made as its README does (`PgPool::connect`: sqlx's defaults,
    /// 10 connections and a ping before each use).
    TowerSessionsPostgres,
    /// tower-sessions over `tower-sessions-sqlx-store`'s `SqliteStore`, on
    /// `SqlitePool::connect` (sqlx's defaults: rollback journal,
    /// `synchronous = FULL`).
    TowerSessionsSqlite,
}

/// A server process a variant needs besides itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// Nothing: the store is in the process.
    None,
    /// A `redis-server`.
    Redis,
    /// A `memcached`.
    Memcached,
    /// A PostgreSQL server.
    Postgres,
}

impl Variant {
    /// Every variant this build can serve, in table order.
    pub const ALL: &'static [Variant] = &[
        Variant::Bare,
        Variant::BareCookie,
        Variant::SessionkitMemory,
        Variant::TowerSessionsMemory,
        Variant::SessionkitRedis,
        Variant::TowerSessionsRedis,
        Variant::SessionkitMemcached,
        Variant::SessionkitFile,
        Variant::BareActix,
        Variant::SessionkitActixMemory,
        Variant::SessionkitActixRedis,
        Variant::ActixSessionRedis,
        Variant::ActixSessionCookie,
        Variant::SessionkitPostgres,
        Variant::TowerSessionsPostgres,
        Variant::SessionkitSqlite,
        Variant::SessionkitSqliteFull,
        Variant::TowerSessionsSqlite,
    ];

    /// The name used on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Bare => "bare",
            Variant::BareCookie => "bare-cookie",
            Variant::SessionkitMemory => "sessionkit-memory",
            Variant::SessionkitRedis => "sessionkit-redis",
            Variant::SessionkitFile => "sessionkit-file",
            Variant::SessionkitMemcached => "sessionkit-memcached",
            Variant::TowerSessionsMemory => "tower-sessions-memory",
            Variant::TowerSessionsRedis => "tower-sessions-redis",
            Variant::BareActix => "bare-actix",
            Variant::SessionkitActixMemory => "sessionkit-actix-memory",
            Variant::SessionkitActixRedis => "sessionkit-actix-redis",
            Variant::ActixSessionRedis => "actix-session-redis",
            Variant::ActixSessionCookie => "actix-session-cookie",
            Variant::SessionkitPostgres => "sessionkit-postgres",
            Variant::SessionkitSqlite => "sessionkit-sqlite",
            Variant::SessionkitSqliteFull => "sessionkit-sqlite-full",
            Variant::TowerSessionsPostgres => "tower-sessions-postgres",
            Variant::TowerSessionsSqlite => "tower-sessions-sqlite",
        }
    }

    /// The variant called `name`.
    pub fn from_name(name: &str) -> Option<Variant> {
        Variant::ALL.iter().copied().find(|v| v.name() == name)
    }

    /// The store process the variant talks to.
    pub fn backend(self) -> Backend {
        match self {
            Variant::SessionkitRedis
            | Variant::TowerSessionsRedis
            | Variant::SessionkitActixRedis
            | Variant::ActixSessionRedis => Backend::Redis,
            Variant::SessionkitMemcached => Backend::Memcached,
            Variant::SessionkitPostgres | Variant::TowerSessionsPostgres => Backend::Postgres,
            _ => Backend::None,
        }
    }

    /// Whether the variant is tower-sessions (which has no lock, so its
    /// `/incr-locked` is its plain `/incr`).
    pub fn is_tower_sessions(self) -> bool {
        matches!(
            self,
            Variant::TowerSessionsMemory
                | Variant::TowerSessionsRedis
                | Variant::TowerSessionsPostgres
                | Variant::TowerSessionsSqlite
        )
    }

    /// Whether the variant is actix-session (which has no lock either).
    pub fn is_actix_session(self) -> bool {
        matches!(
            self,
            Variant::ActixSessionRedis | Variant::ActixSessionCookie
        )
    }

    /// Whether the variant runs on actix-web (else on axum).
    pub fn is_actix(self) -> bool {
        matches!(
            self,
            Variant::BareActix | Variant::SessionkitActixMemory | Variant::SessionkitActixRedis
        ) || self.is_actix_session()
    }

    /// The axum app of this variant, over the stores `at` points to; an
    /// error for the actix-web variants, which [`serve`] serves.
    pub async fn app(self, at: &Backends) -> Result<Router, Box<dyn std::error::Error>> {
        Ok(match self {
            Variant::Bare => bare::app(),
            Variant::BareCookie => bare::cookie_app(),
            Variant::SessionkitMemory => sk::app(sessionkit::SessionLayer::new(
                sessionkit::store::MemoryStore::new(),
            )),
            Variant::SessionkitRedis => sk::app(sessionkit::SessionLayer::new(
                sessionkit_redis::RedisStore::connect(&at.redis_url).await?,
            )),
            Variant::SessionkitFile => sk::app(sessionkit::SessionLayer::new(
                sessionkit_file::FileStore::new(&at.file_path)?,
            )),
            Variant::SessionkitMemcached => sk::app(sessionkit::SessionLayer::new(
                sessionkit_memcached::MemcachedStore::new(&at.memcached_servers)?,
            )),
            Variant::TowerSessionsMemory => ts::memory_app(),
            Variant::TowerSessionsRedis => ts::redis_app(&at.redis_url).await?,
            Variant::SessionkitPostgres => {
                let mut builder = sessionkit::sql::PgStore::builder();
                if let Some(max) = pg_pool_size() {
                    builder = builder.max_connections(max);
                }
                let store = builder.connect(&at.postgres_url)?;
                store.migrate().await?;
                sk::app(sessionkit::SessionLayer::new(store))
            }
            Variant::SessionkitSqlite => {
                let store = sessionkit::sql::SqliteStore::connect(&sqlite_url(&at.sqlite_path))?;
                store.migrate().await?;
                sk::app(sessionkit::SessionLayer::new(store))
            }
            Variant::SessionkitSqliteFull => {
                let store = sessionkit::sql::SqliteStore::builder()
                    .synchronous(sessionkit::sql::Durability::Full)
                    .connect(&sqlite_url(&at.sqlite_path))?;
                store.migrate().await?;
                sk::app(sessionkit::SessionLayer::new(store))
            }
            Variant::TowerSessionsPostgres => ts::postgres_app(&at.postgres_url).await?,
            Variant::TowerSessionsSqlite => ts::sqlite_app(&sqlite_url(&at.sqlite_path)).await?,
            _ => return Err(format!("{} runs on actix-web: use serve", self.name()).into()),
        })
    }
}

/// `BENCH_PG_POOL`: the connection pool size of both PostgreSQL variants,
/// to see whether the pool bounds them (default: each one's own default,
/// 10 for both).
fn pg_pool_size() -> Option<u32> {
    std::env::var("BENCH_PG_POOL").ok()?.parse().ok()
}

/// Where the stores outside the process are.
#[derive(Debug, Clone)]
pub struct Backends {
    /// The Redis server, for the Redis variants.
    pub redis_url: String,
    /// The save path, for the file variant.
    pub file_path: std::path::PathBuf,
    /// `host:port`, for the memcached variant.
    pub memcached_servers: String,
    /// `postgres://…`, for the PostgreSQL variants.
    pub postgres_url: String,
    /// The database file, for the SQLite variants (created if missing).
    pub sqlite_path: std::path::PathBuf,
}

fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// Serves `variant` on `addr` until the process is stopped; prints
/// `listening on http://ADDR` once the socket is bound.
pub async fn serve(
    variant: Variant,
    addr: SocketAddr,
    at: &Backends,
) -> Result<(), Box<dyn std::error::Error>> {
    if variant.is_actix() {
        return on_actix::serve(variant, addr, at).await;
    }
    let app = variant.app(at).await?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

fn routes<R1, R2, R3, T1, T2, T3>(read: R1, incr: R2, incr_locked: R3) -> Router
where
    R1: axum::handler::Handler<T1, ()>,
    R2: axum::handler::Handler<T2, ()>,
    R3: axum::handler::Handler<T3, ()>,
    T1: 'static,
    T2: 'static,
    T3: 'static,
{
    Router::new()
        .route("/read", get(read))
        .route("/incr", post(incr))
        .route("/incr-locked", post(incr_locked))
        .route("/plain", get(plain))
}

async fn plain() -> &'static str {
    "ok"
}

mod bare {
    use super::*;

    /// The emulated session: one counter for every client.
    static N: AtomicU64 = AtomicU64::new(0);

    pub(super) fn app() -> Router {
        routes(read, incr, incr)
    }

    async fn read() -> String {
        N.load(Ordering::Relaxed).to_string()
    }

    async fn incr() -> String {
        (N.fetch_add(1, Ordering::Relaxed) + 1).to_string()
    }

    pub(super) fn cookie_app() -> Router {
        routes(read, incr_with_cookie, incr_with_cookie)
    }

    /// The headers sessionkit's defaults put on a response that wrote the
    /// session, byte for byte but for the id.
    const SET_COOKIE: &str = "session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA; \
                              Max-Age=7200; Path=/; HttpOnly; Secure; SameSite=Lax";

    async fn incr_with_cookie() -> ([(axum::http::HeaderName, &'static str); 2], String) {
        (
            [
                (axum::http::header::SET_COOKIE, SET_COOKIE),
                (axum::http::header::CACHE_CONTROL, "private"),
            ],
            incr().await,
        )
    }
}

mod sk {
    use super::*;
    use sessionkit::{Session, SessionLayer};

    type Res = Result<String, sessionkit::Error>;

    pub(super) fn app(layer: SessionLayer) -> Router {
        routes(read, incr, incr_locked).layer(layer)
    }

    async fn read(session: Session) -> Res {
        Ok(session.get::<u64>("n").await?.unwrap_or(0).to_string())
    }

    async fn incr(session: Session) -> Res {
        let n = session.get::<u64>("n").await?.unwrap_or(0) + 1;
        session.insert("n", &n)?;
        Ok(n.to_string())
    }

    async fn incr_locked(session: Session) -> Res {
        session.lock().await?;
        let n = session.get::<u64>("n").await?.unwrap_or(0) + 1;
        session.insert("n", &n)?;
        session.commit().await?;
        Ok(n.to_string())
    }
}

mod ts {
    use super::*;
    use tower_sessions::{Session, SessionManagerLayer, SessionStore};
    use tower_sessions_redis_store::RedisStore;
    use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
    use tower_sessions_sqlx_store::sqlx;

    type Res = Result<String, StatusCode>;

    fn app<S: SessionStore + Clone>(store: S) -> Router {
        // tower-sessions has no lock: `/incr-locked` is its plain `/incr`.
        routes(read, incr, incr).layer(SessionManagerLayer::new(store))
    }

    pub(super) fn memory_app() -> Router {
        app(tower_sessions::MemoryStore::default())
    }

    pub(super) async fn postgres_app(url: &str) -> Result<Router, Box<dyn std::error::Error>> {
        let mut options = sqlx::postgres::PgPoolOptions::new();
        if let Some(max) = super::pg_pool_size() {
            options = options.max_connections(max);
        }
        let pool = options.connect(url).await?;
        let store = tower_sessions_sqlx_store::PostgresStore::new(pool);
        store.migrate().await?;
        Ok(app(store))
    }

    pub(super) async fn sqlite_app(url: &str) -> Result<Router, Box<dyn std::error::Error>> {
        let pool = sqlx::SqlitePool::connect(url).await?;
        let store = tower_sessions_sqlx_store::SqliteStore::new(pool);
        store.migrate().await?;
        Ok(app(store))
    }

    pub(super) async fn redis_app(url: &str) -> Result<Router, Box<dyn std::error::Error>> {
        // The pool size of the store's own example.
        let pool = Pool::new(Config::from_url(url)?, None, None, None, 6)?;
        pool.connect();
        pool.wait_for_connect().await?;
        Ok(app(RedisStore::new(pool)))
    }

    fn fail(e: tower_sessions::session::Error) -> StatusCode {
        eprintln!("tower-sessions: {e}");
        StatusCode::INTERNAL_SERVER_ERROR
    }

    async fn read(session: Session) -> Res {
        let n: u64 = session.get("n").await.map_err(fail)?.unwrap_or(0);
        Ok(n.to_string())
    }

    async fn incr(session: Session) -> Res {
        let n: u64 = session.get("n").await.map_err(fail)?.unwrap_or(0) + 1;
        session.insert("n", n).await.map_err(fail)?;
        Ok(n.to_string())
    }
}

/// The actix-web variants: the same routes, the same handlers' work.
mod on_actix {
    use actix_web::{App, HttpResponse, HttpServer, web};

    use super::*;

    /// Binds `addr`, prints `listening on http://ADDR`, serves the app that
    /// `$factory` makes (once per worker) until killed.
    macro_rules! run {
        ($addr:expr, $factory:expr) => {{
            let server = HttpServer::new($factory).bind($addr)?;
            for addr in server.addrs() {
                println!("listening on http://{addr}");
            }
            server.run().await?;
            Ok(())
        }};
    }

    /// The routes of every variant, with `read`, `incr` and `incr_locked`
    /// from the variant's module.
    macro_rules! routes {
        ($module:ident) => {
            |cfg: &mut web::ServiceConfig| {
                cfg.route("/read", web::get().to($module::read))
                    .route("/incr", web::post().to($module::incr))
                    .route("/incr-locked", web::post().to($module::incr_locked))
                    .route("/plain", web::get().to(plain));
            }
        };
    }

    pub(super) async fn serve(
        variant: Variant,
        addr: SocketAddr,
        at: &Backends,
    ) -> Result<(), Box<dyn std::error::Error>> {
        use sessionkit::actix::SessionMiddleware;
        match variant {
            Variant::BareActix => run!(addr, || App::new().configure(routes!(bare))),
            Variant::SessionkitActixMemory => {
                let sessions = SessionMiddleware::new(sessionkit::store::MemoryStore::new());
                run!(addr, move || App::new()
                    .wrap(sessions.clone())
                    .configure(routes!(sk)))
            }
            Variant::SessionkitActixRedis => {
                let sessions = SessionMiddleware::new(
                    sessionkit_redis::RedisStore::connect(&at.redis_url).await?,
                );
                run!(addr, move || App::new()
                    .wrap(sessions.clone())
                    .configure(routes!(sk)))
            }
            Variant::ActixSessionRedis => {
                let store = actix_session::storage::RedisSessionStore::new(at.redis_url.clone())
                    .await
                    .map_err(|e| format!("actix-session RedisSessionStore: {e}"))?;
                let key = actix_web::cookie::Key::generate();
                run!(addr, move || App::new()
                    .wrap(actix_session::SessionMiddleware::new(
                        store.clone(),
                        key.clone()
                    ))
                    .configure(routes!(peer)))
            }
            Variant::ActixSessionCookie => {
                let key = actix_web::cookie::Key::generate();
                run!(addr, move || App::new()
                    .wrap(actix_session::SessionMiddleware::new(
                        actix_session::storage::CookieSessionStore::default(),
                        key.clone()
                    ))
                    .configure(routes!(peer)))
            }
            other => Err(format!("{} runs on axum", other.name()).into()),
        }
    }

    async fn plain() -> &'static str {
        "ok"
    }

    mod bare {
        use std::sync::atomic::{AtomicU64, Ordering};

        /// The emulated session: one counter for every client.
        static N: AtomicU64 = AtomicU64::new(0);

        pub(super) async fn read() -> String {
            N.load(Ordering::Relaxed).to_string()
        }

        pub(super) async fn incr() -> String {
            (N.fetch_add(1, Ordering::Relaxed) + 1).to_string()
        }

        pub(super) async fn incr_locked() -> String {
            incr().await
        }
    }

    mod sk {
        use sessionkit::Session;

        type Res = Result<String, sessionkit::Error>;

        pub(super) async fn read(session: Session) -> Res {
            Ok(session.get::<u64>("n").await?.unwrap_or(0).to_string())
        }

        pub(super) async fn incr(session: Session) -> Res {
            let n = session.get::<u64>("n").await?.unwrap_or(0) + 1;
            session.insert("n", &n)?;
            Ok(n.to_string())
        }

        pub(super) async fn incr_locked(session: Session) -> Res {
            session.lock().await?;
            let n = session.get::<u64>("n").await?.unwrap_or(0) + 1;
            session.insert("n", &n)?;
            session.commit().await?;
            Ok(n.to_string())
        }
    }

    /// actix-session: no lock, so `/incr-locked` is its plain `/incr`.
    mod peer {
        use actix_session::Session;

        use super::HttpResponse;

        fn fail(e: impl std::fmt::Display) -> HttpResponse {
            eprintln!("actix-session: {e}");
            HttpResponse::InternalServerError().finish()
        }

        pub(super) async fn read(session: Session) -> HttpResponse {
            match session.get::<u64>("n") {
                Ok(n) => HttpResponse::Ok().body(n.unwrap_or(0).to_string()),
                Err(e) => fail(e),
            }
        }

        pub(super) async fn incr(session: Session) -> HttpResponse {
            let n = match session.get::<u64>("n") {
                Ok(n) => n.unwrap_or(0) + 1,
                Err(e) => return fail(e),
            };
            match session.insert("n", n) {
                Ok(()) => HttpResponse::Ok().body(n.to_string()),
                Err(e) => fail(e),
            }
        }

        pub(super) async fn incr_locked(session: Session) -> HttpResponse {
            incr(session).await
        }
    }
}
