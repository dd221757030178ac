//! Runs the demo shop: `cargo run -p shop`.
//!
//! Listens on `SHOP_ADDR` (default `127.0.0.1:3000`) with sessions in memory.
//! The cookie is `Secure` as by default; browsers and cookie-keeping clients
//! accept `Secure` cookies over plain HTTP from loopback addresses only, so to
//! try the demo from another machine over `http://`, set
//! `SESSION_SECURE_COOKIE=false`.

use std::net::SocketAddr;

use sessionkit::store::MemoryStore;
use sessionkit::{CookieConfig, SessionLayer};
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
    let secure = match std::env::var("SESSION_SECURE_COOKIE").as_deref() {
        Ok("true" | "1") | Err(_) => true,
        Ok("false" | "0") => false,
        Ok(other) => {
            return Err(
                format!("SESSION_SECURE_COOKIE: expected true or false, got {other:?}").into(),
            );
        }
    };
    match std::env::var("SESSION_DRIVER").as_deref() {
        Ok("memory" | "local") | Err(_) => {}
        Ok(other) => {
            return Err(format!(
                "SESSION_DRIVER: {other:?} is not available in this build; known drivers: memory (alias local)"
            )
            .into());
        }
    }

    let layer = SessionLayer::builder(MemoryStore::new())
        .cookie(CookieConfig::default().secure(secure))
        .build()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, shop::app(layer))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
