//! Runs the demo shop on actix-web: `cargo run -p shop-actix`.
//!
//! The same binary contract as `cargo run -p shop`: listens on `SHOP_ADDR`
//! (default `127.0.0.1:3000`), prints `listening on http://ADDR`, and takes
//! its sessions from the `SESSION_*` variables of `sessionkit::config` (in
//! memory when none is set, bounded by `SHOP_MAX_SESSIONS`), read by the
//! same code as `shop`'s.

use sessionkit::actix::SessionMiddleware;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let addr = shop::addr_from_env()?;
    let sessions = SessionMiddleware::from(shop::layer_from_env().await?);
    let server =
        actix_web::HttpServer::new(move || shop_actix::app(sessions.clone())).bind(addr)?;
    for addr in server.addrs() {
        println!("listening on http://{addr}");
    }
    server.run().await?;
    Ok(())
}
