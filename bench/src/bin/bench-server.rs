//! Serves the benchmark routes with one contender: `bench-server --variant NAME`.
//!
//! Options: `--variant` (see `--list`), `--addr` (default `127.0.0.1:0`),
//! `--redis-url` (default `redis://127.0.0.1:6379`), `--file-path` (the file
//! store's save path, default `sessionkit-bench` in the temporary directory),
//! `--memcached-servers` (default `127.0.0.1:11211`), `--postgres-url`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`), `--sqlite-path`
//! (the SQLite variants' database file, default `sessionkit-bench.db` in the
//! temporary directory).
//! Prints `listening on
//! http://ADDR` once bound, then serves until killed.

use std::net::SocketAddr;

use bench::args::Args;
use bench::server::{self, Variant};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::from_env(&["list"]);
    if args.flag("list") {
        for v in Variant::ALL {
            println!("{}", v.name());
        }
        return Ok(());
    }
    let name = args
        .str("variant")
        .ok_or("--variant is required (see --list)")?;
    let variant = Variant::from_name(name).ok_or_else(|| format!("unknown variant {name:?}"))?;
    let addr: SocketAddr = args.get("addr", "127.0.0.1:0".parse()?);
    if !addr.ip().is_loopback() {
        return Err("the benchmark serves on loopback addresses only".into());
    }
    let at = server::Backends {
        redis_url: args
            .str("redis-url")
            .unwrap_or("redis://127.0.0.1:6379")
            .to_owned(),
        memcached_servers: args
            .str("memcached-servers")
            .unwrap_or("127.0.0.1:11211")
            .to_owned(),
        file_path: args
            .str("file-path")
            .map(Into::into)
            .unwrap_or_else(|| std::env::temp_dir().join("sessionkit-bench")),
        postgres_url: args
            .str("postgres-url")
            .unwrap_or("postgres://postgres@127.0.0.1:5432/postgres")
            .to_owned(),
        sqlite_path: args
            .str("sqlite-path")
            .map(Into::into)
            .unwrap_or_else(|| std::env::temp_dir().join("sessionkit-bench.db")),
    };
    server::serve(variant, addr, &at).await
}
