//! The response future: runs the inner service, then finishes the session.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Response, StatusCode};
use pin_project_lite::pin_project;
use sessionkit_core::{CookieChange, ErrorKind, Finished, Session};
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
            session: Option<Session>,
            shared: Arc<Shared>,
        },
        Finishing {
            #[pin]
            future: Finishing<B>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn new(future: F, session: Session, shared: Arc<Shared>) -> Self {
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
    B: Default + Send + 'static,
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
                    let response = ready!(future.poll(cx))?;
                    let session = session.take().expect("polled after completion");
                    if !session.needs_finish() {
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

async fn finish<B: Default>(
    session: Session,
    response: Response<B>,
    shared: Arc<Shared>,
) -> Response<B> {
    let finished = session.finish(response.status().is_server_error()).await;
    respond(finished, response, &shared)
}

/// The response once the session is finished: the handler's, with the
/// cookie change, or an error response if the session could not be saved.
fn respond<B: Default>(
    finished: Finished,
    mut response: Response<B>,
    shared: &Shared,
) -> Response<B> {
    if let Some(err) = finished.error {
        let status =
            StatusCode::from_u16(err.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(error = %err, source = ?std::error::Error::source(&err), "session could not be saved");
        } else {
            tracing::warn!(error = %err, "session could not be saved");
        }
        let mut failed = Response::new(B::default());
        *failed.status_mut() = status;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            failed.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        if err.kind() == ErrorKind::SessionGone {
            shared.cookie.remove(failed.headers_mut());
        }
        return failed;
    }
    match finished.cookie {
        CookieChange::Set {
            id,
            max_age,
            lifetime,
        } => {
            // A session with a lifetime of its own ("remember me") always
            // gets a persistent cookie, even where the default is a
            // browser-session cookie.
            let remembered = lifetime != shared.factory.config().lifetime();
            shared
                .cookie
                .set(response.headers_mut(), &id, max_age, remembered)
        }
        CookieChange::Remove => shared.cookie.remove(response.headers_mut()),
        _ => {}
    }
    response
}
