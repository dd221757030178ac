//! The response future: runs the inner service, then finishes the session.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use sessionkit_core::{Finished, Outcome, RequestSession};
use sync_wrapper::SyncFuture;

use crate::middleware::layer::Shared;

type Finishing<B> = SyncFuture<Pin<Box<dyn Future<Output = Response<B>> + Send>>>;

pin_project! {
    /// The future of [`SessionService`](crate::SessionService).
    ///
    /// `Send` and `Sync` when the inner future is; a request that never used
    /// its session costs no allocation here.
    pub struct ResponseFuture<F, B> {
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
            #[pin]
            future: Finishing<B>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn new(future: F, session: RequestSession, shared: Arc<Shared>) -> Self {
        ResponseFuture {
            state: State::Inner {
                future,
                session: Some(session),
                shared,
            },
        }
    }
}

impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: From<String> + Send + 'static,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner {
                    future,
                    session,
                    shared,
                } => {
                    let response = shared.on_handler_error(ready!(future.poll(cx))?);
                    let session = session.take().expect("polled after completion");
                    if !session.is_used() {
                        return Poll::Ready(Ok(response));
                    }
                    if let Some(finished) = session.finish_now() {
                        return Poll::Ready(Ok(respond(finished, response, shared)));
                    }
                    let fut: Pin<Box<dyn Future<Output = Response<B>> + Send>> =
                        Box::pin(finish(session, response, shared.clone()));
                    this.state.set(State::Finishing {
                        future: SyncFuture::new(fut),
                    });
                }
                StateProj::Finishing { future } => {
                    return future.poll(cx).map(Ok);
                }
            }
        }
    }
}

async fn finish<B: From<String>>(
    session: RequestSession,
    response: Response<B>,
    shared: Arc<Shared>,
) -> Response<B> {
    let outcome = Outcome::from_status(response.status().as_u16());
    let finished = session.finish(outcome).await;
    respond(finished, response, &shared)
}

/// The response once the session is finished: the handler's, with the
/// cookie change and a cache directive, or the error response if the
/// session could not be saved.
fn respond<B: From<String>>(
    finished: Finished,
    mut response: Response<B>,
    shared: &Shared,
) -> Response<B> {
    match shared.conclude(finished, response.headers_mut()) {
        None => response,
        Some(failed) => failed.map(B::from),
    }
}
