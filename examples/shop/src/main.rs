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

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let addr = shop::addr_from_env()?;
    let layer = shop::layer_from_env().await?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, shop::app(layer))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
