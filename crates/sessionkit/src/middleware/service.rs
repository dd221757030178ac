//! The service that hands each request its session.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::middleware::future::ResponseFuture;
use crate::middleware::layer::Shared;

/// The service made by [`SessionLayer`](crate::SessionLayer).
#[derive(Debug, Clone)]
pub struct SessionService<S> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let request = self.shared.start(req.headers());
        let check = self
            .shared
            .csrf_check(&request, req.method().as_str().as_bytes());
        (self.shared.insert.http)(req.extensions_mut(), request.session().clone(), check);
        ResponseFuture::new(self.inner.call(req), request, self.shared.clone())
    }
}
