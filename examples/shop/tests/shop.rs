//! The shop's HTTP surface through the real `shop` binary (axum). The tests
//! are in `blackbox/`, shared with `shop-actix`, whose `tests/shop.rs` runs
//! them against its own binary.

mod blackbox;
mod support;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_shop");

/// The shop in this process over `store`, on a free loopback port; returns
/// its base URL. For tests that look into the store.
async fn serve(store: impl sessionkit::store::SessionStore) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = shop::app(sessionkit::SessionLayer::new(store));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}
