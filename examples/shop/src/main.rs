//! Runs the demo shop: `cargo run -p shop`.
//!
//! Listens on `SHOP_ADDR` (default `127.0.0.1:3000`). Sessions are configured
//! by the `SESSION_*` variables of `sessionkit::config` (in memory when none
//! is set; `SESSION_DRIVER=redis SESSION_REDIS_URL=…` runs it on Redis when
//! sessionkit is built with that store).
//! The cookie is `Secure` as by default; browsers and cookie-keeping clients
//! accept `Secure` cookies over plain HTTP from loopback addresses only, so to
//! try the demo from another machine over `http://`, set
//! `SESSION_SECURE_COOKIE=false`.
//!
//! On the memory store the shop holds at most `SHOP_MAX_SESSIONS` sessions
//! (default 100,000; a whole number, at least 1): past that, each new session
//! evicts the one closest to expiry, never one in the middle of a locked
//! transaction (see `MemoryStoreBuilder::max_sessions`). Setting it with
//! another `SESSION_DRIVER` is an error: those stores are bounded by their
//! own servers.

use std::net::SocketAddr;

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let addr: SocketAddr = std::env::var("SHOP_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()
        .map_err(|e| format!("SHOP_ADDR: expected host:port, {e}"))?;
    // The whole session stack from SESSION_* variables (see the sessionkit
    // `config` module); with none set, sessions live in memory, bounded.
    let config = sessionkit::Config::from_env()?;
    let bound = std::env::var("SHOP_MAX_SESSIONS").ok();
    let layer = match shop::max_sessions(&config.driver, bound.as_deref())? {
        Some(max) => {
            let store = sessionkit::store::MemoryStore::builder()
                .max_sessions(max)
                .build();
            sessionkit::SessionLayer::builder(store)
                .config(config.session.clone())
                .cookie(config.cookie.clone())
                .build()?
        }
        None => config.into_layer().await?,
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, shop::app(layer))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
