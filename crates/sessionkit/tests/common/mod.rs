//! A real HTTP server on 127.0.0.1 with a session layer over a counting
//! memory store, and the routes the HTTP tests drive — on axum or on
//! actix-web, from one source.
//!
//! The routes are written once, against [`Ctx`] and [`Reply`], and mounted
//! by one small adapter per framework ([`axum_app`], [`actix_app`]): each
//! adapter takes the `Session` with its framework's own extractor and turns
//! a handler's `Err(sessionkit::Error)` into a response through its
//! framework's own error path, which is what the tests are about.
//! [`http_tests!`] runs each test once per framework; [`Server`] serves the
//! framework of the test that builds it.

#![allow(dead_code, unreachable_pub, unused_macros)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use sessionkit::store::MemoryStore;
use sessionkit::{
    CookieConfig, CsrfLayer, Error, ErrorKind, Session, SessionConfig, SessionLayer,
    SessionLayerBuilder, SessionOf,
};
use sessionkit_core::testkit::CountingStore;

/// The web framework a server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framework {
    Axum,
    Actix,
}

tokio::task_local! {
    static FRAMEWORK: Framework;
}

/// The framework of the running test ([`http_tests!`]); axum outside it.
pub fn framework() -> Framework {
    FRAMEWORK.try_with(|f| *f).unwrap_or(Framework::Axum)
}

/// Runs `test` with [`framework`] answering `fw`.
pub async fn on<F: Future>(fw: Framework, test: F) -> F::Output {
    FRAMEWORK.scope(fw, test).await
}

/// Each `async fn` inside, once on axum (module `on_axum`) and, with the
/// `actix` feature, once on actix-web (module `on_actix`), with the attributes given (`#[tokio::test]`,
/// a flavour, `#[should_panic]`, …).
macro_rules! http_tests {
    ($( $(#[$meta:meta])* async fn $name:ident() $body:block )*) => {
        mod bodies {
            #[allow(unused_imports)]
            use super::*;
            $( pub(super) async fn $name() $body )*
        }
        mod on_axum {
            $(
                $(#[$meta])*
                async fn $name() {
                    crate::common::on(crate::common::Framework::Axum, super::bodies::$name()).await
                }
            )*
        }
        #[cfg(feature = "actix")]
        mod on_actix {
            $(
                $(#[$meta])*
                async fn $name() {
                    crate::common::on(crate::common::Framework::Actix, super::bodies::$name()).await
                }
            )*
        }
    };
}

/// The store calls of a `CountingStore` with the given counts, zero for
/// the others: `calls!(load: 1, apply: 1)`.
macro_rules! calls {
    ($($op:ident: $n:expr),* $(,)?) => {
        sessionkit_core::testkit::Calls {
            $($op: $n,)*
            ..sessionkit_core::testkit::Calls::default()
        }
    };
}

/// A served app: its address, stopped when dropped.
pub struct Running {
    pub addr: SocketAddr,
    stop: Stop,
}

enum Stop {
    Task(tokio::task::JoinHandle<()>),
    #[cfg(feature = "actix")]
    Actix(actix_web::dev::ServerHandle),
}

impl Drop for Running {
    fn drop(&mut self) {
        match &self.stop {
            Stop::Task(task) => task.abort(),
            #[cfg(feature = "actix")]
            // The command is sent at once; the future only waits for it.
            Stop::Actix(handle) => drop(handle.stop(false)),
        }
    }
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// Serves [`ROUTES`] on the running test's framework, wrapped in `layers`
/// (the last one outermost, as `.layer(a).layer(b)` and `.wrap(a).wrap(b)`
/// both have it).
pub async fn serve(layers: Vec<SessionLayer>) -> Running {
    serve_with(layers, None).await
}

/// Where a test puts a CSRF layer.
#[derive(Clone)]
pub enum Csrf {
    /// Inside the (innermost) session layer, where it belongs.
    Inside(CsrfLayer),
    /// Outermost: misplaced.
    Outside(CsrfLayer),
}

/// [`serve`], with `csrf` inside the (innermost) session layer.
pub async fn serve_with(layers: Vec<SessionLayer>, csrf: Option<CsrfLayer>) -> Running {
    serve_csrf(layers, csrf.map(Csrf::Inside)).await
}

/// [`serve`], with the CSRF layer `csrf` wrapped outside `layer`.
pub async fn serve_with_outer_csrf(layer: SessionLayer, csrf: CsrfLayer) -> Running {
    serve_csrf(vec![layer], Some(Csrf::Outside(csrf))).await
}

/// [`serve`], with a CSRF layer where `csrf` says.
pub async fn serve_csrf(layers: Vec<SessionLayer>, csrf: Option<Csrf>) -> Running {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = match framework() {
        Framework::Axum => {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let mut app = axum_app();
            if let Some(Csrf::Inside(csrf)) = &csrf {
                app = app.layer(csrf.clone());
            }
            for layer in layers {
                app = app.layer(layer);
            }
            if let Some(Csrf::Outside(csrf)) = csrf {
                app = app.layer(csrf);
            }
            Stop::Task(tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            }))
        }
        #[cfg(not(feature = "actix"))]
        Framework::Actix => unreachable!("actix-web tests need the `actix` feature"),
        #[cfg(feature = "actix")]
        Framework::Actix => {
            let server = actix_web::HttpServer::new(move || {
                let middlewares: Vec<sessionkit::actix::SessionMiddleware> =
                    layers.iter().cloned().map(Into::into).collect();
                actix_app(middlewares, csrf.clone())
            })
            .workers(2)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
            let handle = server.handle();
            tokio::spawn(server);
            Stop::Actix(handle)
        }
    };
    Running { addr, stop }
}

pub struct Server {
    pub addr: SocketAddr,
    pub store: CountingStore<MemoryStore>,
    pub layer: SessionLayer,
    running: Running,
}

impl Server {
    pub async fn start() -> Server {
        Server::with(SessionConfig::default(), CookieConfig::default()).await
    }

    pub async fn with(config: SessionConfig, cookie: CookieConfig) -> Server {
        let store = CountingStore::new(MemoryStore::builder().sweep_interval(None).build());
        Server::over(store, config, cookie).await
    }

    /// A server over an existing store (to share it between servers).
    pub async fn over(
        store: CountingStore<MemoryStore>,
        config: SessionConfig,
        cookie: CookieConfig,
    ) -> Server {
        Server::built(store, |b| b.config(config).cookie(cookie)).await
    }

    /// A server whose layer `build` sets up.
    pub async fn built(
        store: CountingStore<MemoryStore>,
        build: impl FnOnce(SessionLayerBuilder) -> SessionLayerBuilder,
    ) -> Server {
        Server::guarded(store, build, |_| None).await
    }

    /// A server whose layer `build` sets up, with the CSRF layer that `csrf`
    /// makes from it (if any) inside.
    pub async fn guarded(
        store: CountingStore<MemoryStore>,
        build: impl FnOnce(SessionLayerBuilder) -> SessionLayerBuilder,
        csrf: impl FnOnce(&SessionLayer) -> Option<CsrfLayer>,
    ) -> Server {
        let layer = build(SessionLayer::builder(store.clone())).build().unwrap();
        let running = serve_with(vec![layer.clone()], csrf(&layer)).await;
        Server {
            addr: running.addr,
            store,
            layer,
            running,
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.running.url(path)
    }
}

type Res<T> = Result<T, sessionkit::Error>;

/// The marker of the tagged layer in the tests of [`SessionLayerBuilder::tag`].
pub struct Admin;

/// What a route's handler gets: the sessions as its framework's extractors
/// gave them (an error without the layer), the path's parameters in order,
/// and the query's `ms`.
pub struct Ctx {
    session: Res<Session>,
    admin: Res<SessionOf<Admin>>,
    params: Vec<String>,
    ms: u64,
    /// The request body, as text.
    body: String,
}

impl Ctx {
    /// The session, or the extractor's error again (same kind, same response).
    fn session(&self) -> Res<Session> {
        match &self.session {
            Ok(session) => Ok(session.clone()),
            Err(err) => Err(Error::new(err.kind())),
        }
    }

    fn param(&self, i: usize) -> String {
        self.params.get(i).cloned().unwrap_or_default()
    }
}

/// What a route answers: a status, an optional `Cache-Control` and a text body.
pub struct Reply {
    status: u16,
    cache_control: Option<&'static str>,
    body: String,
}

impl From<&str> for Reply {
    fn from(body: &str) -> Reply {
        Reply::from(body.to_owned())
    }
}

impl From<String> for Reply {
    fn from(body: String) -> Reply {
        Reply {
            status: 200,
            cache_control: None,
            body,
        }
    }
}

fn status(status: u16, body: &str) -> Reply {
    Reply {
        status,
        ..Reply::from(body)
    }
}

type Answer = Pin<Box<dyn Future<Output = Res<Reply>> + Send>>;
type Handler = fn(Ctx) -> Answer;

#[derive(Clone, Copy)]
enum Method {
    Get,
    Post,
}

macro_rules! route {
    ($method:ident $path:literal $handler:ident) => {
        (Method::$method, $path, |ctx| {
            Box::pin($handler(ctx)) as Answer
        })
    };
}

/// The routes of every test server (paths in the `{param}` syntax that
/// axum 0.8 and actix-web share). Handlers get the body as text, so that
/// none of them reads it as a form.
const ROUTES: &[(Method, &str, Handler)] = &[
    (Method::Get, "/plain", |_| {
        Box::pin(async { Ok("plain".into()) })
    }),
    route!(Get "/get/{key}" get_key),
    route!(Post "/set/{key}/{value}" set_key),
    route!(Post "/incr" incr_buffered),
    route!(Post "/incr-locked" incr_locked),
    route!(Post "/regenerate" regenerate),
    route!(Post "/destroy" destroy),
    route!(Post "/slow-read-write/{key}" slow_read_write),
    route!(Post "/slow-blind-write/{key}" slow_blind_write),
    route!(Post "/fail-after-write" fail_after_write),
    route!(Post "/remember/{secs}" remember),
    route!(Get "/cached-read/{key}" cached_read),
    route!(Post "/lock-then-400/{value}" lock_then_400),
    route!(Post "/fail/{kind}" fail),
    route!(Get "/id" show_id),
    route!(Post "/both" both),
    route!(Get "/csrf-token" csrf_token),
    route!(Post "/echo" echo),
    route!(Post "/swallow" swallow),
];

/// [`ROUTES`] on axum.
pub fn axum_app() -> axum::Router {
    use axum::extract::{RawPathParams, RawQuery};
    use axum::response::IntoResponse;

    let mut router = axum::Router::new();
    for &(method, path, handler) in ROUTES {
        let endpoint = move |session: Res<Session>,
                             admin: Res<SessionOf<Admin>>,
                             params: RawPathParams,
                             RawQuery(query): RawQuery,
                             body: String| async move {
            let ctx = Ctx {
                session,
                admin,
                params: params.iter().map(|(_, v)| v.to_owned()).collect(),
                ms: query_ms(query.as_deref()),
                body,
            };
            match handler(ctx).await {
                Ok(reply) => {
                    let mut res = (
                        axum::http::StatusCode::from_u16(reply.status).unwrap(),
                        reply.body,
                    )
                        .into_response();
                    if let Some(cc) = reply.cache_control {
                        res.headers_mut()
                            .insert("cache-control", cc.parse().unwrap());
                    }
                    res
                }
                Err(err) => err.into_response(),
            }
        };
        router = router.route(
            path,
            match method {
                Method::Get => axum::routing::get(endpoint),
                Method::Post => axum::routing::post(endpoint),
            },
        );
    }
    router
}

#[cfg(feature = "actix")]
/// [`ROUTES`] on actix-web, wrapped in `middlewares` (the last outermost).
pub fn actix_app(
    middlewares: Vec<sessionkit::actix::SessionMiddleware>,
    csrf: Option<Csrf>,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    use actix_web::{HttpRequest, HttpResponse, web};

    let mut scope = web::scope("");
    for &(method, path, handler) in ROUTES {
        let endpoint = move |session: Res<Session>,
                             admin: Res<SessionOf<Admin>>,
                             req: HttpRequest,
                             body: String| async move {
            let ctx = Ctx {
                session,
                admin,
                params: req.match_info().iter().map(|(_, v)| v.to_owned()).collect(),
                ms: query_ms(Some(req.query_string())),
                body,
            };
            handler(ctx).await.map(|reply| {
                let mut res = HttpResponse::build(
                    actix_web::http::StatusCode::from_u16(reply.status).unwrap(),
                );
                if let Some(cc) = reply.cache_control {
                    res.insert_header(("cache-control", cc));
                }
                res.body(reply.body)
            })
        };
        scope = scope.route(
            path,
            match method {
                Method::Get => web::get(),
                Method::Post => web::post(),
            }
            .to(endpoint),
        );
    }
    // One wrap per middleware, as an app with two session layers would
    // write it; at most two here.
    let mut middlewares = middlewares.into_iter();
    let (inner, outer) = (middlewares.next(), middlewares.next());
    assert!(middlewares.next().is_none(), "at most two session layers");
    use sessionkit::actix::CsrfMiddleware;
    let unused_csrf = || CsrfMiddleware::new(&unused_middleware());
    let (inside, outside) = match csrf {
        Some(Csrf::Inside(csrf)) => (Some(CsrfMiddleware::from(csrf)), None),
        Some(Csrf::Outside(csrf)) => (None, Some(CsrfMiddleware::from(csrf))),
        None => (None, None),
    };
    actix_web::App::new()
        .service(
            scope
                .wrap(actix_web::middleware::Condition::new(
                    inside.is_some(),
                    inside.unwrap_or_else(unused_csrf),
                ))
                .wrap(actix_web::middleware::Condition::new(
                    inner.is_some(),
                    inner.clone().unwrap_or_else(unused_middleware),
                )),
        )
        .wrap(actix_web::middleware::Condition::new(
            outer.is_some(),
            outer.unwrap_or_else(unused_middleware),
        ))
        .wrap(actix_web::middleware::Condition::new(
            outside.is_some(),
            outside.unwrap_or_else(unused_csrf),
        ))
}

#[cfg(feature = "actix")]
fn unused_middleware() -> sessionkit::actix::SessionMiddleware {
    sessionkit::actix::SessionMiddleware::new(MemoryStore::new())
}

fn query_ms(query: Option<&str>) -> u64 {
    query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn remember(ctx: Ctx) -> Res<Reply> {
    let session = ctx.session()?;
    session.insert("user", "ada")?;
    session.set_lifetime(Duration::from_secs(ctx.param(0).parse().unwrap_or(60)))?;
    Ok("ok".into())
}

/// A read whose handler chose its own caching.
async fn cached_read(ctx: Ctx) -> Res<Reply> {
    let value = ctx
        .session()?
        .get::<String>(&ctx.param(0))
        .await?
        .unwrap_or_default();
    Ok(Reply {
        cache_control: Some("public, max-age=60"),
        ..Reply::from(value)
    })
}

/// An early return with an error status after a locked change.
async fn lock_then_400(ctx: Ctx) -> Res<Reply> {
    let session = ctx.session()?;
    session.lock().await?;
    session.insert("qty", &ctx.param(0).parse::<i64>().unwrap_or(0))?;
    Ok(status(400, "refused"))
}

/// A handler that fails with a session error of `kind`.
async fn fail(ctx: Ctx) -> Res<Reply> {
    let _ = ctx.session()?.get::<String>("k").await?;
    Err(Error::new(match ctx.param(0).as_str() {
        "gone" => ErrorKind::SessionGone,
        _ => ErrorKind::StoreUnavailable,
    }))
}

async fn get_key(ctx: Ctx) -> Res<Reply> {
    Ok(match ctx
        .session()?
        .get::<serde_json::Value>(&ctx.param(0))
        .await?
    {
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => "<none>".into(),
    }
    .into())
}

async fn set_key(ctx: Ctx) -> Res<Reply> {
    ctx.session()?.insert(&ctx.param(0), &ctx.param(1))?;
    Ok("ok".into())
}

async fn incr_buffered(ctx: Ctx) -> Res<Reply> {
    let session = ctx.session()?;
    let n = session.get::<u64>("n").await?.unwrap_or(0) + 1;
    session.insert("n", &n)?;
    Ok(n.to_string().into())
}

async fn incr_locked(ctx: Ctx) -> Res<Reply> {
    let session = ctx.session()?;
    session.lock().await?;
    let n = session.get::<u64>("n").await?.unwrap_or(0) + 1;
    session.insert("n", &n)?;
    session.commit().await?;
    Ok(n.to_string().into())
}

async fn regenerate(ctx: Ctx) -> Res<Reply> {
    ctx.session()?.regenerate().await?;
    Ok("ok".into())
}

async fn destroy(ctx: Ctx) -> Res<Reply> {
    ctx.session()?.destroy().await?;
    Ok("ok".into())
}

async fn slow_read_write(ctx: Ctx) -> Res<Reply> {
    let session = ctx.session()?;
    let key = ctx.param(0);
    let _ = session.get::<String>(&key).await?;
    tokio::time::sleep(Duration::from_millis(ctx.ms)).await;
    session.insert(&key, "late")?;
    Ok("ok".into())
}

async fn slow_blind_write(ctx: Ctx) -> Res<Reply> {
    let session = ctx.session()?;
    tokio::time::sleep(Duration::from_millis(ctx.ms)).await;
    session.insert(&ctx.param(0), "late")?;
    Ok("ok".into())
}

async fn fail_after_write(ctx: Ctx) -> Res<Reply> {
    let session = ctx.session()?;
    session.lock().await?;
    session.insert("failed", "yes")?;
    Ok(status(500, "boom"))
}

/// The session's id, as `Debug` shows it (redacted): a handler that needs
/// the layer.
async fn show_id(ctx: Ctx) -> Res<Reply> {
    Ok(format!("{:?}", ctx.session()?.id()).into())
}

/// Two sessions in one request: the plain one and the one tagged [`Admin`].
async fn both(ctx: Ctx) -> Res<Reply> {
    let visitor = ctx.session()?;
    let admin = ctx.admin?;
    let v = visitor.get_or("n", 0u64).await? + 1;
    let a = admin.get_or("n", 100u64).await? + 1;
    visitor.insert("n", &v)?;
    admin.insert("n", &a)?;
    Ok(format!("{v} {a}").into())
}

/// The session's CSRF token (a buffered write when the session has none yet).
async fn csrf_token(ctx: Ctx) -> Res<Reply> {
    Ok(ctx.session()?.csrf_token().await?.into())
}

/// The body the handler got, after reading the session's `n`: what a form
/// handler behind the CSRF layer sees.
async fn echo(ctx: Ctx) -> Res<Reply> {
    let n = ctx.session()?.get_or("n", 0u64).await?;
    Ok(format!("{n} {}", ctx.body).into())
}

/// A handler that ignores its session's errors and answers 200 anyway.
async fn swallow(ctx: Ctx) -> Res<Reply> {
    let session = ctx.session()?;
    let _ = session.get::<String>("k").await;
    let _ = session.insert("k", "swallowed");
    let _ = session.destroy().await;
    Ok("ok".into())
}

/// A client that keeps cookies, like a browser.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

/// A client that keeps nothing; tests set `Cookie` by hand.
pub fn raw() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

/// The `Set-Cookie` headers of a response.
pub fn set_cookies(res: &reqwest::Response) -> Vec<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The session id a response set, if any.
pub fn cookie_id(res: &reqwest::Response) -> Option<String> {
    set_cookies(res).iter().find_map(|c| {
        let value = c.strip_prefix("session=")?.split(';').next()?;
        (!value.is_empty()).then(|| value.to_owned())
    })
}
