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

/// A value of another type than the handler reads (a type changed by a
/// deploy) reads as absent, so the handler can go on and its next write
/// replaces it; before, every request of that client failed with a codec
/// error (a 500) until the session ended. The error the decoder met, which
/// the warning logs, names the key and never the value.
#[tokio::test]
async fn a_value_of_another_type_reads_as_absent_and_its_error_names_the_key_not_the_value() {
    let factory = factory();
    let session = factory.request(None);
    session.insert("oauth_refresh", &SECRET).unwrap();
    session.save().await.unwrap();
    let next = factory.request(session.id());
    assert_eq!(next.get::<u64>("oauth_refresh").await.unwrap(), None);
    assert_eq!(next.get_or::<u64>("oauth_refresh", 7).await.unwrap(), 7);
    assert_eq!(
        next.get::<String>("oauth_refresh")
            .await
            .unwrap()
            .as_deref(),
        Some(SECRET),
        "the value is still there for a reader of its type"
    );
    next.insert("oauth_refresh", &42u64).unwrap();
    assert_eq!(next.get::<u64>("oauth_refresh").await.unwrap(), Some(42));

    let err = sessionkit_core::codec::decode_value_of::<u64>(
        "oauth_refresh",
        &serde_json::to_vec(SECRET).unwrap(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);
    assert!(err.to_string().contains("`oauth_refresh`"), "{err}");
    let text = printed(&err);
    assert!(!text.contains(SECRET), "{text}");
    // What was expected is still said.
    assert!(text.contains("u64"), "{text}");
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
