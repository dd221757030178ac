//! The axum shop served in this process (the `shop` package's tests only:
//! `shop-actix` serves its own).

/// The shop in this process over `store`, on a free loopback port; returns
/// its base URL. For tests that look into the store.
pub(crate) async fn serve(store: impl sessionkit::store::SessionStore) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = shop::app(sessionkit::SessionLayer::new(store));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}
