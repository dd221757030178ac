//! What only the actix-web middleware has: an error returned by the service
//! it wraps (an inner middleware's), instead of a response, and
//! `SessionMiddleware::from_env`. Everything else runs on both frameworks
//! from one source (`tests/http.rs`, `hostile.rs`, `owasp.rs`, `redis.rs`).

#![cfg(feature = "actix")]

mod common;

use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpServer, web};
use common::{cookie_id, raw, set_cookies};
use sessionkit::Session;
use sessionkit::actix::SessionMiddleware;
use sessionkit::store::MemoryStore;

/// An inner middleware that runs the handler, then answers with an error
/// instead of its response when the query says `fail`.
async fn fail_after(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let fail = req.query_string().contains("fail");
    let res = next.call(req).await?;
    if fail {
        return Err(actix_web::error::ErrorServiceUnavailable(
            "inner middleware failed",
        ));
    }
    Ok(res)
}

async fn set(session: Session) -> Result<&'static str, sessionkit::Error> {
    session.insert("k", "v")?;
    Ok("ok")
}

async fn lock_set(session: Session) -> Result<&'static str, sessionkit::Error> {
    session.lock().await?;
    session.insert("qty", &7)?;
    Ok("ok")
}

async fn get(session: Session) -> Result<String, sessionkit::Error> {
    Ok(format!("{:?}", session.get::<i64>("qty").await?))
}

/// Serves the three routes, the failing middleware inside the session one.
fn serve(sessions: SessionMiddleware) -> (String, actix_web::dev::ServerHandle) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = HttpServer::new(move || {
        App::new()
            .route("/set", web::post().to(set))
            .route("/lock-set", web::post().to(lock_set))
            .route("/get", web::get().to(get))
            .wrap(from_fn(fail_after))
            .wrap(sessions.clone())
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    (base, handle)
}

#[tokio::test]
async fn an_error_from_the_wrapped_service_still_finishes_the_session_by_its_status() {
    let store = MemoryStore::new();
    let (base, handle) = serve(SessionMiddleware::new(store.clone()));

    // A write before the error: the session is saved, so its cookie rides
    // on the error's response (else the client would never learn its id).
    let res = raw().post(format!("{base}/set?fail")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let id = cookie_id(&res).expect("the error's response carries the new session's cookie");
    assert_eq!(res.headers()["cache-control"], "private");
    assert_eq!(res.text().await.unwrap(), "inner middleware failed");
    assert_eq!(store.len(), 1);

    // A locked change before the error: rolled back (a 503), and the lock
    // released at once, so the next locked request does not wait for it.
    let cookie = format!("session={id}");
    let res = raw()
        .post(format!("{base}/lock-set?fail"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(
        cookie_id(&res).is_none_or(|same| same == id),
        "the session keeps its id: {:?}",
        set_cookies(&res)
    );
    let res = raw()
        .get(format!("{base}/get"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "None", "rolled back");
    let started = Instant::now();
    let res = raw()
        .post(format!("{base}/lock-set"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the failed request's lock was released: {:?}",
        started.elapsed()
    );
    handle.stop(false).await;
}

#[tokio::test]
async fn from_env_without_session_variables_serves_sessions_in_memory() {
    if std::env::vars().any(|(k, _)| k.starts_with("SESSION_")) {
        eprintln!("skipped: SESSION_* variables are set in this environment");
        return;
    }
    let sessions = SessionMiddleware::from_env().await.unwrap();
    assert_eq!(
        sessions.factory().config().lifetime(),
        Duration::from_secs(7200)
    );
    let (base, handle) = serve(sessions);
    let client = common::browser();
    let res = client
        .post(format!("{base}/lock-set"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cookies = set_cookies(&res);
    assert!(
        cookies[0].ends_with("; Max-Age=7200; Path=/; HttpOnly; Secure; SameSite=Lax"),
        "{cookies:?}"
    );
    let res = client.get(format!("{base}/get")).send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "Some(7)");
    handle.stop(false).await;
}
