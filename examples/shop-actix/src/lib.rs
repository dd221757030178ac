//! The sessionkit demo shop on actix-web: the routes of the `shop` crate
//! (its [`shop::routes`], page and catalogue), mounted on actix-web 4
//! behind sessionkit's [`SessionMiddleware`] and [`CsrfMiddleware`].
//!
//! The HTTP surface is `shop`'s, route for route (see the `shop` crate
//! docs): the same statuses, headers, bodies, cookies and store calls; the
//! shop's black-box tests run against both binaries. Both keep sessions in
//! the same format, so an axum shop and an actix shop on one store share
//! them, locks included.
//!
//! What this crate adds is actix-web glue only: [`Answer`] and [`Failure`]
//! as actix-web responses (a session error keeps its `sessionkit::Error`,
//! so it answers through sessionkit's own `ResponseError`, 403 for a
//! refused CSRF check).
//!
//! Form bodies that do not deserialize answer 422, as axum's `Form` does,
//! and a known path asked with another method answers 405, as axum's router
//! does (each route is an actix-web `Resource`, whose default is 405).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{App, HttpRequest, HttpResponse, web};
use sessionkit::Session;
use sessionkit::actix::{CsrfMiddleware, SessionMiddleware};
use shop::routes::{self, Answer, Failure, ItemForm, LoginForm, RevokeForm, Work};

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
        .service(web::resource("/api/sessions").route(web::get().to(api_sessions)))
        .service(web::resource("/api/sessions/revoke").route(web::post().to(revoke_session)))
        .service(
            web::resource("/api/sessions/revoke-others")
                .route(web::post().to(revoke_other_sessions)),
        )
        .service(web::resource("/account").route(web::get().to(account)))
        .service(web::resource("/healthz").route(web::get().to(|| async { "ok" })));
    for asset in routes::ASSETS {
        app = app.service(
            web::resource(asset.path)
                .route(web::get().to(move || async move { serve_asset(asset) })),
        );
    }
    let csrf = CsrfMiddleware::from(shop::csrf_layer(sessions.layer()));
    app.wrap(csrf).wrap(sessions)
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
        Ok(Answer::Done) => Ok(HttpResponse::NoContent().finish()),
        Ok(_) => Ok(HttpResponse::InternalServerError().finish()),
        Err(Failure::Session(e)) => Err(e.into()),
        Err(Failure::NotLoggedIn) => Ok(text(StatusCode::UNAUTHORIZED, "log in first")),
        Err(Failure::NotFound) => Ok(text(StatusCode::NOT_FOUND, "no such session of yours")),
        Err(Failure::Unsupported) => Ok(text(
            StatusCode::NOT_IMPLEMENTED,
            "this session store keeps no list of a user's sessions",
        )),
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

/// A `text/plain` answer with `status`, as axum gives `(status, &str)`.
fn text(status: StatusCode, body: &'static str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(body)
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

async fn add_to_basket(session: Session, req: HttpRequest, form: web::Form<ItemForm>) -> Res {
    respond(routes::add_to_basket(session, from_browser(&req), form.into_inner()).await)
}

async fn remove_from_basket(session: Session, req: HttpRequest, form: web::Form<ItemForm>) -> Res {
    respond(routes::remove_from_basket(session, from_browser(&req), form.into_inner()).await)
}

async fn clear_basket(session: Session, req: HttpRequest) -> Res {
    respond(routes::clear_basket(session, from_browser(&req)).await)
}

async fn login(session: Session, req: HttpRequest, form: web::Form<LoginForm>) -> Res {
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    respond(routes::login(session, from_browser(&req), user_agent, form.into_inner()).await)
}

async fn api_sessions(session: Session) -> Res {
    respond(routes::api_sessions(session).await)
}

async fn revoke_session(session: Session, form: web::Form<RevokeForm>) -> Res {
    respond(routes::revoke_session(session, form.into_inner()).await)
}

async fn revoke_other_sessions(session: Session) -> Res {
    respond(routes::revoke_other_sessions(session).await)
}

async fn account(session: Session) -> Res {
    respond(routes::account(session).await)
}

async fn logout(session: Session, req: HttpRequest) -> Res {
    respond(routes::logout(session, from_browser(&req)).await)
}

async fn api_session(session: Session) -> Res {
    respond(routes::api_session(session).await)
}

async fn counter_locked(session: Session, work: web::Query<Work>) -> Res {
    respond(routes::counter_locked(session, work.into_inner()).await)
}

async fn counter_buffered(session: Session, work: web::Query<Work>) -> Res {
    respond(routes::counter_buffered(session, work.into_inner()).await)
}

fn serve_asset(asset: routes::Asset) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(asset.body)
}
