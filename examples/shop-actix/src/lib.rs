//! The sessionkit demo shop on actix-web: the routes of the `shop` crate
//! (its [`shop::routes`], CSRF checks, page and catalogue), mounted on
//! actix-web 4 behind sessionkit's [`SessionMiddleware`].
//!
//! The HTTP surface is `shop`'s, route for route (see the `shop` crate
//! docs): the same statuses, headers, bodies, cookies and store calls; the
//! shop's black-box tests run against both binaries. Both keep sessions in
//! the same format, so an axum shop and an actix shop on one store share
//! them, locks included.
//!
//! What this crate adds is actix-web glue only:
//!
//! - [`screen`]: the CSRF middleware, the twin of `shop::csrf::screen`,
//!   over the same checks ([`shop::csrf::check_origin`],
//!   [`shop::csrf::token_in_headers`], [`shop::csrf::token_in_form`]);
//! - extractors and responses: the CSRF guard as an extractor, and
//!   [`Answer`] and [`Failure`] as actix-web responses (a session error
//!   keeps its `sessionkit::Error`, so it answers through sessionkit's own
//!   `ResponseError`).
//!
//! Form bodies that do not deserialize answer 422, as axum's `Form` does,
//! and a known path asked with another method answers 405, as axum's router
//! does (each route is an actix-web `Resource`, whose default is 405).

use std::future::{Ready, ready};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, FromRequest, HttpMessage, HttpRequest, HttpResponse, web};
use sessionkit::Session;
use sessionkit::actix::SessionMiddleware;
use shop::csrf::{self, Guard, Headers, TokenIn};
use shop::routes::{self, Answer, Failure, ItemForm, LoginForm, Work};

/// The shop's routes behind `sessions`, on actix-web: for
/// `HttpServer::new(move || shop_actix::app(sessions.clone()))`.
///
/// ```
/// use sessionkit::actix::SessionMiddleware;
/// use sessionkit::store::MemoryStore;
///
/// let sessions = SessionMiddleware::new(MemoryStore::new());
/// let app = shop_actix::app(sessions);
/// # let _ = app;
/// ```
pub fn app(
    sessions: SessionMiddleware,
) -> App<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let mut app = App::new()
        .app_data(web::FormConfig::default().error_handler(|err, _| {
            // axum's `Form` answers 422 to a body that does not deserialize.
            let status = match &err {
                actix_web::error::UrlencodedError::Parse(_) => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::BAD_REQUEST,
            };
            InternalError::new(err, status).into()
        }))
        .service(web::resource("/").route(web::get().to(index)))
        .service(web::resource("/basket").route(web::post().to(add_to_basket)))
        .service(web::resource("/basket/remove").route(web::post().to(remove_from_basket)))
        .service(web::resource("/basket/clear").route(web::post().to(clear_basket)))
        .service(web::resource("/login").route(web::post().to(login)))
        .service(web::resource("/logout").route(web::post().to(logout)))
        .service(web::resource("/api/session").route(web::get().to(api_session)))
        .service(web::resource("/api/counter").route(web::post().to(counter_locked)))
        .service(web::resource("/api/counter/buffered").route(web::post().to(counter_buffered)))
        .service(web::resource("/healthz").route(web::get().to(|| async { "ok" })));
    for asset in routes::ASSETS {
        app = app.service(
            web::resource(asset.path)
                .route(web::get().to(move || async move { serve_asset(asset) })),
        );
    }
    app.wrap(from_fn(screen)).wrap(sessions)
}

/// actix-web's header map under the CSRF checks.
struct ActixHeaders<'a>(&'a HeaderMap);

impl Headers for ActixHeaders<'_> {
    fn values(&self, name: &str) -> Vec<&[u8]> {
        self.0.get_all(name).map(|v| v.as_bytes()).collect()
    }
}

/// The CSRF middleware: refuses unsafe requests from other origins, and
/// hands the handler a [`Guard`] holding the session and the token sent,
/// in place of the session. Goes inside the session middleware. The twin of
/// `shop::csrf::screen`.
pub async fn screen(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if req.method().is_safe() {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    if let Err(refused) = csrf::check_origin(&ActixHeaders(req.headers())) {
        tracing::info!(reason = ?refused, path = %req.path(), "request refused");
        return Ok(req.into_response(refusal(refused)));
    }
    let sent = match csrf::token_in_headers(&ActixHeaders(req.headers())) {
        TokenIn::Headers(sent) => sent,
        TokenIn::Form => {
            // Read the form for its token and put it back for the handler.
            let body = match req.extract::<web::Bytes>().await {
                Ok(body) if body.len() <= csrf::FORM_LIMIT => body,
                _ => return Ok(req.into_response(refusal(csrf::Refused::FormTooLarge))),
            };
            let sent = csrf::token_in_form(&body);
            req.set_payload(Payload::from(body));
            sent
        }
    };
    let Some(session) = req.extensions_mut().remove::<Session>() else {
        tracing::error!("shop_actix::screen must run inside the session middleware");
        return Ok(req.into_response(HttpResponse::InternalServerError().finish()));
    };
    req.extensions_mut().insert(Guard::new(session, sent));
    Ok(next.call(req).await?.map_into_boxed_body())
}

fn refusal(refused: csrf::Refused) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(refused.status()).unwrap_or(StatusCode::FORBIDDEN))
        .content_type("text/plain; charset=utf-8")
        .body(refused.message())
}

/// The [`Guard`] that [`screen`] put in place of the session, as an
/// extractor.
struct Csrf(Guard);

impl FromRequest for Csrf {
    type Error = actix_web::Error;
    type Future = Ready<Result<Csrf, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(req.extensions_mut().remove::<Guard>().map(Csrf).ok_or_else(|| {
            tracing::error!("a csrf::Guard needs shop_actix::screen around the route, for an unsafe method");
            InternalError::new("no CSRF guard", StatusCode::INTERNAL_SERVER_ERROR).into()
        }))
    }
}

/// An answer as an actix-web response, or a failure as an actix-web error.
fn respond(result: Result<Answer, Failure>) -> Result<HttpResponse, actix_web::Error> {
    match result {
        Ok(Answer::Page(html)) => Ok(HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CONTENT_SECURITY_POLICY, routes::PAGE_CSP))
            .body(html)),
        Ok(Answer::BackToPage) => Ok(HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/"))
            .finish()),
        Ok(Answer::Json(value)) => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(value.to_string())),
        Ok(_) => Ok(HttpResponse::InternalServerError().finish()),
        Err(Failure::Session(e)) => Err(e.into()),
        Err(Failure::Refused(r)) => {
            Err(InternalError::from_response(r.message(), refusal(r)).into())
        }
        Err(Failure::Invalid(why)) => Err(InternalError::from_response(
            why.clone(),
            HttpResponse::UnprocessableEntity()
                .content_type("text/plain; charset=utf-8")
                .body(why),
        )
        .into()),
        Err(_) => Ok(HttpResponse::InternalServerError().finish()),
    }
}

type Res = Result<HttpResponse, actix_web::Error>;

/// Whether the request came from a browser's form: browsers send `Origin`
/// with every `POST`.
fn from_browser(req: &HttpRequest) -> bool {
    req.headers().contains_key(header::ORIGIN)
}

async fn index(session: Session) -> Res {
    respond(routes::index(session).await)
}

async fn add_to_basket(Csrf(guard): Csrf, req: HttpRequest, form: web::Form<ItemForm>) -> Res {
    respond(routes::add_to_basket(guard, from_browser(&req), form.into_inner()).await)
}

async fn remove_from_basket(Csrf(guard): Csrf, req: HttpRequest, form: web::Form<ItemForm>) -> Res {
    respond(routes::remove_from_basket(guard, from_browser(&req), form.into_inner()).await)
}

async fn clear_basket(Csrf(guard): Csrf, req: HttpRequest) -> Res {
    respond(routes::clear_basket(guard, from_browser(&req)).await)
}

async fn login(Csrf(guard): Csrf, req: HttpRequest, form: web::Form<LoginForm>) -> Res {
    respond(routes::login(guard, from_browser(&req), form.into_inner()).await)
}

async fn logout(Csrf(guard): Csrf, req: HttpRequest) -> Res {
    respond(routes::logout(guard, from_browser(&req)).await)
}

async fn api_session(session: Session) -> Res {
    respond(routes::api_session(session).await)
}

async fn counter_locked(Csrf(guard): Csrf, work: web::Query<Work>) -> Res {
    respond(routes::counter_locked(guard, work.into_inner()).await)
}

async fn counter_buffered(Csrf(guard): Csrf, work: web::Query<Work>) -> Res {
    respond(routes::counter_buffered(guard, work.into_inner()).await)
}

fn serve_asset(asset: routes::Asset) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(asset.body)
}
