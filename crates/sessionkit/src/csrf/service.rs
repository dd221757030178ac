//! The tower service of [`CsrfLayer`](super::CsrfLayer).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use sessionkit_core::{CsrfCheck, Error};
use tower_service::Service;

use super::{Rules, Step, TokenIn};

/// The service made by [`CsrfLayer`](super::CsrfLayer).
#[derive(Debug, Clone)]
pub struct CsrfService<S> {
    pub(crate) inner: S,
    pub(crate) rules: Arc<Rules>,
}

type Boxed<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

pin_project! {
    /// The future of [`CsrfService`]: the inner service's own future for
    /// every request that needs no form body read, a boxed one for those.
    pub struct CsrfFuture<F, R, E> {
        #[pin]
        kind: Kind<F, R, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, R, E> {
        Inner { #[pin] future: F },
        Answer { response: Option<R> },
        Form { future: Boxed<R, E> },
    }
}

impl<F, R, E> std::fmt::Debug for CsrfFuture<F, R, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsrfFuture").finish_non_exhaustive()
    }
}

impl<F, R, E> Future for CsrfFuture<F, R, E>
where
    F: Future<Output = Result<R, E>>,
{
    type Output = Result<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future.poll(cx),
            KindProj::Answer { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            KindProj::Form { future } => future.as_mut().poll(cx),
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CsrfService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = CsrfFuture<S::Future, Response<ResBody>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let authority = req.uri().authority().map(|a| a.as_str());
        let step = self
            .rules
            .step(req.method().as_str().as_bytes(), req.headers(), authority);
        let kind = match step {
            Step::Pass => Kind::Inner {
                future: self.inner.call(req),
            },
            Step::Refuse(why) => self.answer(&Rules::refusal(why)),
            Step::Token(token_in) => {
                let Some(check) =
                    (self.rules.sessions.insert.take_check_http)(req.extensions_mut())
                else {
                    return CsrfFuture {
                        kind: self.answer(&Rules::misplaced()),
                    };
                };
                match token_in {
                    TokenIn::Header(sent) => {
                        check.present(sent);
                        Kind::Inner {
                            future: self.inner.call(req),
                        }
                    }
                    // No session id sent: no token to look for.
                    TokenIn::Form if !check.is_needed() => Kind::Inner {
                        future: self.inner.call(req),
                    },
                    TokenIn::Form => {
                        // The service made ready goes with the future; a
                        // clone stays for the next request.
                        let fresh = self.inner.clone();
                        let ready = std::mem::replace(&mut self.inner, fresh);
                        Kind::Form {
                            future: Box::pin(read_form(ready, self.rules.clone(), check, req)),
                        }
                    }
                }
            }
        };
        CsrfFuture { kind }
    }
}

impl<S> CsrfService<S> {
    fn answer<F, B: From<String>, E>(&self, err: &Error) -> Kind<F, Response<B>, E> {
        Kind::Answer {
            response: Some(self.rules.sessions.error_response(err).map(B::from)),
        }
    }
}

/// Reads a URL-encoded form body (up to the limit) for its token, presents
/// it, and calls `inner` with the same body.
async fn read_form<S, ReqBody, ResBody>(
    mut inner: S,
    rules: Arc<Rules>,
    check: CsrfCheck,
    req: Request<ReqBody>,
) -> Result<Response<ResBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: Body + From<Bytes>,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResBody: From<String>,
{
    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, rules.form_limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            // The handler never runs, so the session is never touched.
            let (status, message) = if err.downcast_ref::<LengthLimitError>().is_some() {
                (StatusCode::PAYLOAD_TOO_LARGE, "form too large")
            } else {
                (StatusCode::BAD_REQUEST, "the form body could not be read")
            };
            tracing::info!(%status, "CSRF layer: {message}");
            let mut response = Response::new(ResBody::from(message.to_owned()));
            *response.status_mut() = status;
            return Ok(response);
        }
    };
    check.present(rules.token_in_form(&bytes));
    inner
        .call(Request::from_parts(parts, ReqBody::from(bytes)))
        .await
}
