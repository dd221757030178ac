//! Codec errors name the session key at fault and never print its value.

use std::collections::HashMap;

use sessionkit_core::store::MemoryStore;
use sessionkit_core::{Error, ErrorKind, SessionConfig, SessionFactory};

const SECRET: &str = "refresh-token-s3cr3t";

fn factory() -> SessionFactory {
    let store = MemoryStore::builder().sweep_interval(None).build();
    SessionFactory::new(store, SessionConfig::default())
}

/// Everything an error would print: its line, its `Debug` and every source.
fn printed(err: &Error) -> String {
    let mut text = format!("{err}\n{err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(&format!("\n{s}\n{s:?}"));
        source = s.source();
    }
    text
}

#[tokio::test]
async fn a_value_that_does_not_decode_names_its_key_not_its_value() {
    let session = factory().request(None);
    session.insert("oauth_refresh", &SECRET).unwrap();
    let err = session.get::<u64>("oauth_refresh").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);
    assert!(err.to_string().contains("`oauth_refresh`"), "{err}");
    let text = printed(&err);
    assert!(!text.contains(SECRET), "{text}");
    // What was expected is still said.
    assert!(text.contains("u64"), "{text}");

    session.insert("n", &"not a number").unwrap();
    let err = session
        .data()
        .await
        .map(|_| ())
        .and(session.get::<u8>("n").await.map(|_| ()));
    let err = err.unwrap_err();
    assert!(err.to_string().contains("`n`"), "{err}");
}

#[tokio::test]
async fn a_value_that_does_not_encode_names_its_key() {
    let session = factory().request(None);
    // JSON objects need string keys.
    let pairs: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
    let err = session.insert("pairs", &pairs).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);
    assert!(err.to_string().contains("`pairs`"), "{err}");
    let err = session.put("pairs", &pairs).await.unwrap_err();
    assert!(err.to_string().contains("`pairs`"), "{err}");
}
