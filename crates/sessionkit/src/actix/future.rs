//! The response future: runs the wrapped service, then finishes the session.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use std::cell::RefCell;

use actix_web::body::EitherBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use pin_project_lite::pin_project;
use sessionkit_core::{Error, Finished, Outcome, RequestSession, into_actix_response};

use crate::middleware::layer::Shared;

type Finishing<B> =
    Pin<Box<dyn Future<Output = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>>>>;

pin_project! {
    /// The future of [`SessionMiddlewareService`](crate::actix::SessionMiddlewareService).
    ///
    /// A request that never used its session, or only read it, costs no
    /// allocation here.
    pub struct SessionFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Inner {
            #[pin]
            future: F,
            session: Option<RequestSession>,
            shared: Arc<Shared>,
        },
        Finishing {
            future: Finishing<B>,
        },
    }
}

impl<F, B> SessionFuture<F, B> {
    pub(crate) fn new(future: F, session: RequestSession, shared: Arc<Shared>) -> Self {
        SessionFuture {
            state: State::Inner {
                future,
                session: Some(session),
                shared,
            },
        }
    }
}

impl<F, B> std::fmt::Debug for SessionFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionFuture").finish_non_exhaustive()
    }
}

impl<F, B> Future for SessionFuture<F, B>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
    B: 'static,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner {
                    future,
                    session,
                    shared,
                } => {
                    let produced = match ready!(future.poll(cx)) {
                        Ok(response) => Produced::Response(on_handler_error(
                            shared,
                            response.map_into_left_body(),
                        )),
                        Err(err) => Produced::Error(err),
                    };
                    let session = session.take().expect("polled after completion");
                    if !session.is_used() {
                        return Poll::Ready(produced.into_result());
                    }
                    if let Some(finished) = session.finish_now() {
                        return Poll::Ready(produced.conclude(finished, shared));
                    }
                    let fut: Finishing<B> = Box::pin(finish(session, produced, shared.clone()));
                    this.state.set(State::Finishing { future: fut });
                }
                StateProj::Finishing { future } => {
                    return future.as_mut().poll(cx);
                }
            }
        }
    }
}

/// What the wrapped service produced: a response, or an error that
/// actix-web turns into a response after the middleware.
enum Produced<B> {
    Response(ServiceResponse<EitherBody<B>>),
    Error(actix_web::Error),
}

impl<B> Produced<B> {
    fn status(&self) -> u16 {
        match self {
            Produced::Response(response) => response.status().as_u16(),
            Produced::Error(error) => error.as_response_error().status_code().as_u16(),
        }
    }

    fn into_result(self) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
        match self {
            Produced::Response(response) => Ok(response),
            // Untouched session: the error passes as it came.
            Produced::Error(error) => Err(error),
        }
    }

    /// The response once the session is finished: the handler's, with the
    /// cookie change and a cache directive, or the error response if the
    /// session could not be saved.
    fn conclude(
        self,
        finished: Finished,
        shared: &Shared,
    ) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
        match self {
            Produced::Response(mut response) => {
                match shared.conclude(finished, response.headers_mut()) {
                    None => Ok(response),
                    Some(failed) => {
                        Ok(response
                            .into_response(into_actix_response(failed).map_into_right_body()))
                    }
                }
            }
            Produced::Error(error) => {
                let mut response = error.error_response();
                if let Some(failed) = shared.conclude(finished, response.headers_mut()) {
                    response = into_actix_response(failed);
                }
                Err(ErrorResponse::new(error, response).into())
            }
        }
    }
}

/// An error the wrapped service returned, for a request that used its
/// session, with its response made early so that the session's cookie
/// change lands on it (the middleware cannot keep a clone of the request
/// for [`ServiceResponse::from_err`]: actix-web's routing needs the only
/// reference). It answers with that response, once, and otherwise as the
/// error it wraps.
struct ErrorResponse {
    error: actix_web::Error,
    response: RefCell<Option<HttpResponse>>,
}

impl ErrorResponse {
    fn new(error: actix_web::Error, response: HttpResponse) -> Self {
        ErrorResponse {
            error,
            response: RefCell::new(Some(response)),
        }
    }
}

impl std::fmt::Debug for ErrorResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.error, f)
    }
}

impl std::fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.error, f)
    }
}

impl ResponseError for ErrorResponse {
    fn status_code(&self) -> StatusCode {
        match &*self.response.borrow() {
            Some(response) => response.status(),
            None => self.error.as_response_error().status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self.response.borrow_mut().take() {
            Some(response) => response,
            None => self.error.error_response(),
        }
    }
}

/// A handler's response: replaced by the application's page when it
/// reports a session error (a handler's `Err(sessionkit::Error)`, which
/// actix-web keeps on the response) and a hook is set.
fn on_handler_error<B>(
    shared: &Shared,
    response: ServiceResponse<EitherBody<B>>,
) -> ServiceResponse<EitherBody<B>> {
    let page = response
        .response()
        .error()
        .and_then(|e| e.as_error::<Error>())
        .and_then(|e| shared.handler_error_page(e));
    match page {
        Some(page) => response.into_response(into_actix_response(page).map_into_right_body()),
        None => response,
    }
}

async fn finish<B>(
    session: RequestSession,
    produced: Produced<B>,
    shared: Arc<Shared>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let outcome = Outcome::from_status(produced.status());
    let finished = session.finish(outcome).await;
    produced.conclude(finished, &shared)
}
