//! An axum shop and an actix shop on one store share sessions: a session
//! made by one is read, locked and updated by the other, and locked
//! increments sent to both alternately are exact. On a real Redis and a
//! real PostgreSQL.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

#[path = "../../shop/tests/support/mod.rs"]
mod support;

use support::shop::{Shop, alternate_400_increments, browser, post_header, state};

/// The binary of this package (the shared shop helpers start it by default).
const BIN: &str = env!("CARGO_BIN_EXE_shop-actix");

/// The axum shop's binary, next to this package's: built here, since a
/// test can only name its own package's binaries (`cargo build -p shop`,
/// the same profile, the same target directory; cargo holds no lock while
/// tests run).
fn axum_shop() -> String {
    let actix = PathBuf::from(BIN);
    let dir = actix.parent().unwrap();
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--quiet", "-p", "shop", "--bin", "shop"]);
    if dir.file_name().is_some_and(|d| d == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build -p shop");
    assert!(status.success(), "cargo build -p shop failed");
    let axum = dir.join(format!("shop{}", std::env::consts::EXE_SUFFIX));
    axum.to_str().expect("a UTF-8 target path").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_shop_and_an_actix_shop_on_one_redis_share_sessions_and_count_exactly() {
    let redis = support::redis();
    let url = redis.url();
    share_sessions(&[
        ("SESSION_DRIVER", "redis"),
        ("SESSION_REDIS_URL", url.as_str()),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_shop_and_an_actix_shop_on_one_postgres_share_sessions_and_count_exactly() {
    let pg = support::pg::PgServer::start();
    let url = pg.url();
    share_sessions(&[
        ("SESSION_DRIVER", "postgres"),
        ("SESSION_DATABASE_URL", url.as_str()),
    ])
    .await;
}

/// Both shops over the store `envs` name: a session made on axum is read,
/// locked and updated on actix; 400 locked increments from 16 clients
/// alternating between the two are exact; a logout on actix ends the
/// session on axum.
async fn share_sessions(envs: &[(&str, &str)]) {
    let axum = Shop::start_bin(&axum_shop(), envs);
    let actix = Shop::start_bin(BIN, envs);
    let client = browser();

    // Made on axum, read and updated on actix (and the other way round).
    let res = client
        .post(axum.url("/login"))
        .form(&[("user", "ada")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let on_actix = state(&client, &actix).await;
    assert_eq!(on_actix["user"], "ada", "actix reads axum's session");
    let token = on_actix["csrf_token"].as_str().unwrap().to_owned();
    let res = client
        .post(actix.url("/basket"))
        .form(&[("item", "tea"), ("quantity", "2"), ("csrf_token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "actix locks and updates axum's session");
    let on_axum = state(&client, &axum).await;
    assert_eq!(on_axum["basket"], serde_json::json!(["tea", "tea"]));
    assert_eq!(on_axum["csrf_token"], token.as_str());

    // 400 locked increments from 16 clients, alternating between the two.
    let urls = [axum.url("/api/counter"), actix.url("/api/counter")];
    alternate_400_increments(&client, &token, urls).await;
    assert_eq!(state(&client, &axum).await["n"], 400);
    assert_eq!(state(&client, &actix).await["n"], 400);

    // Logged out on actix: gone on axum too.
    let res = post_header(&client, actix.url("/logout"), "x-csrf-token", &token).await;
    assert_eq!(res.status(), 303);
    assert_eq!(state(&client, &axum).await["user"], Value::Null);
}
