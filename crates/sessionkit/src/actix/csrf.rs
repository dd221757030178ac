//! The CSRF middleware for actix-web: the rules of [`crate::csrf`], run
//! over actix-web's request.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::HttpMessage;
use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::web::{Bytes, BytesMut};
use futures_core::Stream;
use sessionkit_core::{Error, into_actix_response};

use crate::actix::SessionMiddleware;
use crate::csrf::{CsrfLayer, Rules, Step, TokenIn};

/// The CSRF middleware for actix-web: the checks of [`crate::csrf`]
/// (origin, then the session's token on the first read of the session).
/// Made from the [`SessionMiddleware`] it goes with, and wrapped *inside*
/// it: in actix-web the last `wrap` is the outermost.
///
/// ```
/// use actix_web::{App, web};
/// use sessionkit::Session;
/// use sessionkit::actix::{CsrfMiddleware, SessionMiddleware};
/// use sessionkit::store::MemoryStore;
///
/// async fn transfer(session: Session) -> Result<&'static str, sessionkit::Error> {
///     let user: Option<String> = session.get("user").await?; // 403 when forged
///     Ok(if user.is_some() { "sent" } else { "log in first" })
/// }
///
/// let sessions = SessionMiddleware::new(MemoryStore::new());
/// let app = App::new()
///     .wrap(CsrfMiddleware::new(&sessions)) // inside…
///     .wrap(sessions.clone()) // …the session middleware
///     .route("/transfer", web::post().to(transfer));
/// # let _ = app;
/// ```
#[derive(Debug, Clone)]
pub struct CsrfMiddleware {
    rules: Arc<Rules>,
}

impl CsrfMiddleware {
    /// The middleware with the default settings of [`CsrfLayer::new`]. For
    /// other settings, build a [`CsrfLayer`] from
    /// [`SessionMiddleware::layer`] and convert it.
    pub fn new(sessions: &SessionMiddleware) -> Self {
        CsrfLayer::new(sessions.layer()).into()
    }
}

/// The middleware with the settings of a built layer.
///
/// ```
/// use sessionkit::CsrfLayer;
/// use sessionkit::actix::{CsrfMiddleware, SessionMiddleware};
/// use sessionkit::store::MemoryStore;
///
/// let sessions = SessionMiddleware::new(MemoryStore::new());
/// let csrf = CsrfMiddleware::from(
///     CsrfLayer::builder(sessions.layer())
///         .trust_origin("https://admin.example.com")
///         .build()?,
/// );
/// # let _ = csrf;
/// # Ok::<(), sessionkit::Error>(())
/// ```
impl From<CsrfLayer> for CsrfMiddleware {
    fn from(layer: CsrfLayer) -> Self {
        CsrfMiddleware { rules: layer.rules }
    }
}

impl<S, B> Transform<S, ServiceRequest> for CsrfMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = CsrfMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CsrfMiddlewareService {
            service: Rc::new(service),
            rules: self.rules.clone(),
        }))
    }
}

/// The service made by [`CsrfMiddleware`]. The response body is the wrapped
/// service's (left) or a refusal's (right).
#[derive(Debug)]
pub struct CsrfMiddlewareService<S> {
    service: Rc<S>,
    rules: Arc<Rules>,
}

type Answer<B> =
    Pin<Box<dyn Future<Output = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>>>>;

impl<S, B> Service<ServiceRequest> for CsrfMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Answer<B>;

    forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let authority = req.uri().authority().map(|a| a.as_str());
        let step = self
            .rules
            .step(req.method().as_str().as_bytes(), req.headers(), authority);
        let service = self.service.clone();
        let token_in = match step {
            Step::Pass => return pass(service, req),
            Step::Refuse(why) => return self.refuse(req, &Rules::refusal(why)),
            Step::Token(token_in) => token_in,
        };
        let taken = (self.rules.sessions.insert.take_check_actix)(&mut req.extensions_mut());
        let Some(check) = taken else {
            return self.refuse(req, &Rules::misplaced());
        };
        match token_in {
            TokenIn::Header(sent) => {
                check.present(sent);
                pass(service, req)
            }
            // No session id sent: no token to look for.
            TokenIn::Form if !check.is_needed() => pass(service, req),
            TokenIn::Form => {
                let rules = self.rules.clone();
                Box::pin(async move {
                    let mut payload = req.take_payload();
                    match read_limited(&mut payload, rules.form_limit).await {
                        Ok(body) => {
                            check.present(rules.token_in_form(&body));
                            req.set_payload(Payload::from(body));
                            service
                                .call(req)
                                .await
                                .map(ServiceResponse::map_into_left_body)
                        }
                        Err(status) => {
                            let message = match status {
                                413 => "form too large",
                                _ => "the form body could not be read",
                            };
                            tracing::info!(status, "CSRF middleware: {message}");
                            let response = actix_web::HttpResponse::build(
                                actix_web::http::StatusCode::from_u16(status)
                                    .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
                            )
                            .content_type("text/plain; charset=utf-8")
                            .body(message);
                            Ok(req.into_response(response).map_into_right_body())
                        }
                    }
                })
            }
        }
    }
}

impl<S> CsrfMiddlewareService<S> {
    fn refuse<B: 'static>(&self, req: ServiceRequest, err: &Error) -> Answer<B> {
        let response: actix_web::HttpResponse<BoxBody> =
            into_actix_response(self.rules.sessions.error_response(err));
        Box::pin(ready(Ok(req.into_response(response).map_into_right_body())))
    }
}

fn pass<S, B>(service: Rc<S>, req: ServiceRequest) -> Answer<B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    Box::pin(async move {
        service
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body)
    })
}

/// The whole payload, or the status to answer: 413 past `limit` bytes, 400
/// when the client broke off.
async fn read_limited(payload: &mut Payload, limit: usize) -> Result<Bytes, u16> {
    let mut body = BytesMut::new();
    loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut *payload).poll_next(cx)).await;
        match next {
            None => return Ok(body.freeze()),
            Some(Err(_)) => return Err(400),
            Some(Ok(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(413);
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}
