//! The shop's black-box tests (`examples/shop/tests/blackbox`, one source for
//! both shops) against the `shop-actix` binary, and in process on actix-web.

#[path = "../../shop/tests/blackbox/mod.rs"]
mod blackbox;
#[path = "../../shop/tests/support/mod.rs"]
mod support;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_shop-actix");

/// The actix shop in this process over `store`, on a free loopback port;
/// returns its base URL. For tests that look into the store.
async fn serve(store: impl sessionkit::store::SessionStore) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sessions = sessionkit::actix::SessionMiddleware::new(store);
    let server = actix_web::HttpServer::new(move || shop_actix::app(sessions.clone()))
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
    tokio::spawn(server);
    base
}
