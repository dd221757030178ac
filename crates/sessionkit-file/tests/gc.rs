//! The sweep opens only the files that expired: a small run always, 100k sessions on demand.
//!
//! Run the large one with
//! `cargo test -p sessionkit-file --release --test gc -- --ignored --nocapture`.

use std::path::Path;
use std::time::{Duration, Instant};

use sessionkit_core::SessionId;
use sessionkit_core::record::{Entries, Meta, Record, now_ms};
use sessionkit_core::store::{Countable, SessionStore};
use sessionkit_file::{FileStore, GcReport};

fn record(lifetime: Duration) -> Record {
    Record {
        entries: [
            ("user", b"\"ada\"".to_vec()),
            ("basket", b"[1,2,3]".to_vec()),
        ]
        .into_iter()
        .collect::<Entries>(),
        meta: Meta::new(now_ms(), lifetime, None),
    }
}

/// Creates `count` sessions with `lifetime`, a few at a time.
async fn fill(store: &FileStore, count: usize, lifetime: Duration) -> Vec<SessionId> {
    let ids: Vec<SessionId> = (0..count).map(|_| SessionId::generate()).collect();
    for chunk in ids.chunks(64) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|id| {
                let (store, id) = (store.clone(), *id);
                tokio::spawn(async move { store.create(&id, &record(lifetime)).await.unwrap() })
            })
            .collect();
        for handle in handles {
            let _ = handle.await.unwrap();
        }
    }
    ids
}

/// `live` sessions that outlive the test and `expired` ones that are past
/// their expiry when the sweep runs; returns the two sweeps' reports.
async fn sweep(dir: &Path, live: usize, expired: usize) -> (GcReport, GcReport) {
    // Filling is not what is measured: skip the fsyncs.
    let filler = FileStore::builder()
        .path(dir)
        .durable(false)
        .sweep_interval(None)
        .build()
        .unwrap();
    let started = Instant::now();
    let short = fill(&filler, expired, Duration::from_millis(200)).await;
    let long = fill(&filler, live, Duration::from_secs(3600)).await;
    eprintln!(
        "filled {} sessions in {:?}",
        live + expired,
        started.elapsed()
    );
    let wait = Duration::from_millis(250).saturating_sub(started.elapsed());
    tokio::time::sleep(wait).await;
    assert!(filler.load(&short[0], None).await.unwrap().is_none());

    let store = FileStore::builder()
        .path(dir)
        .sweep_interval(None)
        .build()
        .unwrap();
    let first = store.gc().await.unwrap();
    let second = store.gc().await.unwrap();

    assert_eq!(first.scanned, (live + expired) as u64, "{first:?}");
    assert_eq!(
        first.opened, expired as u64,
        "the sweep must open exactly the expired files: {first:?}"
    );
    assert_eq!(first.deleted, expired as u64, "{first:?}");
    assert_eq!(store.count().await.unwrap(), live as u64);
    assert_eq!(
        (second.scanned, second.opened, second.deleted),
        (live as u64, 0, 0),
        "{second:?}"
    );
    assert!(store.load(&long[0], None).await.unwrap().is_some());
    assert!(store.load(&long[live - 1], None).await.unwrap().is_some());
    (first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_opens_only_the_expired_files() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = sweep(dir.path(), 2_000, 20).await;
    eprintln!("2k live + 20 expired: {first:?}; again: {second:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "creates 101k files; run on demand for the figures"]
async fn gc_of_100k_sessions_with_1k_expired() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = sweep(dir.path(), 100_000, 1_000).await;
    eprintln!(
        "100k live + 1k expired: scanned {}, opened {}, deleted {} in {:?}; \
         second sweep: scanned {}, opened {}, deleted {} in {:?}",
        first.scanned,
        first.opened,
        first.deleted,
        first.elapsed,
        second.scanned,
        second.opened,
        second.deleted,
        second.elapsed
    );

    // For comparison: what reading every file would cost.
    let started = Instant::now();
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "session") {
            bytes += std::fs::read(&path).unwrap().len();
        }
    }
    eprintln!(
        "reading all {} files instead ({bytes} bytes) takes {:?}",
        first.scanned - first.deleted,
        started.elapsed()
    );
}
