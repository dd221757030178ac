//! Scenario (e): memory per idle session and the time of one expiry sweep.
//!
//! Both memory stores are measured: sessionkit's and tower-sessions'.
//!
//! Run each store in a process of its own (`bench-idle --store NAME`), so
//! that the RSS growth belongs to that store alone.

use std::time::{Duration, Instant};

use sessionkit::store::MemoryStore;
use sessionkit::{SessionConfig, SessionFactory};

use crate::load::Outcome;
use crate::probe;

fn rss() -> u64 {
    probe::proc_stat(0, probe::clock_ticks())
        .map(|s| s.rss)
        .unwrap_or(0)
}

/// Creates `sessions` sessions holding one small integer each in a
/// sessionkit `MemoryStore`, through the session API as the layer does; one
/// in every `sessions / expiring` gets a one-second lifetime. Measures the
/// RSS growth per session, then waits for the short ones to expire and times
/// one `gc()`.
pub async fn sessionkit(sessions: u64, expiring: u64) -> Outcome {
    let store = MemoryStore::builder().sweep_interval(None).build();
    let factory = SessionFactory::new(store.clone(), SessionConfig::default());
    let every = (sessions / expiring.max(1)).max(1);
    let before = rss();
    let mut last_short = Instant::now();
    let mut short = 0;
    for i in 0..sessions {
        let session = factory.request(None);
        if i % every == 0 && short < expiring {
            session
                .set_lifetime(Duration::from_secs(1))
                .expect("one second is a valid lifetime");
            short += 1;
            last_short = Instant::now();
        }
        session
            .insert("n", &(i % 1000))
            .expect("an integer encodes");
        let finished = session.finish(sessionkit::Outcome::Success).await;
        assert!(finished.error.is_none(), "the memory store does not fail");
    }
    let after = rss();
    assert_eq!(store.len() as u64, sessions);
    tokio::time::sleep_until((last_short + Duration::from_millis(1100)).into()).await;
    let start = Instant::now();
    let swept = store.gc();
    let sweep = start.elapsed();
    Outcome {
        variant: "sessionkit-memory".into(),
        scenario: "e".into(),
        idle_sessions: Some(sessions),
        idle_bytes_per_session: Some((after as f64 - before as f64) / sessions as f64),
        expired: Some(short),
        sweep_ms: Some(sweep.as_secs_f64() * 1000.0),
        swept: Some(swept),
        ..Outcome::default()
    }
}

/// The same sessions in tower-sessions' `MemoryStore`, created through its
/// store API with the record the layer would save. It has no expiry sweep.
pub async fn tower_sessions(sessions: u64) -> Outcome {
    use tower_sessions::cookie::time::{self, OffsetDateTime};
    use tower_sessions::session::{Id, Record};
    use tower_sessions::{MemoryStore, SessionStore};

    let store = MemoryStore::default();
    let expiry = OffsetDateTime::now_utc() + time::Duration::weeks(2);
    let before = rss();
    for i in 0..sessions {
        let mut record = Record {
            id: Id::default(),
            data: [("n".to_owned(), serde_json::json!(i % 1000))]
                .into_iter()
                .collect(),
            expiry_date: expiry,
        };
        store
            .create(&mut record)
            .await
            .expect("the memory store does not fail");
    }
    let after = rss();
    Outcome {
        variant: "tower-sessions-memory".into(),
        scenario: "e".into(),
        idle_sessions: Some(sessions),
        idle_bytes_per_session: Some((after as f64 - before as f64) / sessions as f64),
        ..Outcome::default()
    }
}
