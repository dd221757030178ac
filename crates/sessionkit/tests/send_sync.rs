//! Compile-time checks: the handle, the layer, the service and its futures
//! can cross threads.

use std::convert::Infallible;
use std::future::Ready;

use http::Response;
use sessionkit::{ResponseFuture, Session, SessionLayer, SessionService};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn session_layer_service_and_futures_are_send_and_sync() {
    assert_send_sync::<Session>();
    assert_send_sync::<SessionLayer>();
    assert_send_sync::<SessionService<axum::Router>>();
    assert_send_sync::<ResponseFuture<Ready<Result<Response<String>, Infallible>>, String>>();
    assert_send_sync::<sessionkit::Error>();
}

#[test]
fn session_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let session = sessionkit::SessionFactory::new(
        sessionkit::store::MemoryStore::new(),
        sessionkit::SessionConfig::default(),
    )
    .request(None);
    assert_send(&session.get::<u8>("k"));
    assert_send(&session.lock());
    assert_send(&session.commit());
    assert_send(&session.transaction(|s| async move { s.insert("k", &1) }));
    assert_send(&session.save());
    assert_send(&session.regenerate());
    assert_send(&session.destroy());
    assert_send(&session.finish(sessionkit::Outcome::Success));
}

#[test]
fn the_request_handle_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<sessionkit::RequestSession>();
}

/// actix-web builds an app per worker thread from a `Send + Clone` factory,
/// so the middleware it captures must cross threads (its service and future
/// run on one worker and need not).
#[cfg(feature = "actix")]
#[test]
fn the_actix_middleware_is_send_sync_and_clone() {
    fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
    assert_send_sync_clone::<sessionkit::actix::SessionMiddleware>();
}
