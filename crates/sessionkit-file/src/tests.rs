//! Unit tests of the store as a whole: files on disk, touches, locks across
//! store instances, errors.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sessionkit_core::codec::decode_record;
use sessionkit_core::record::{Delta, Entries, Meta, Record, Touch, now_ms};
use sessionkit_core::store::{Applied, Countable, Created, Fence, IdChanged, Locked, SessionStore};
use sessionkit_core::{ErrorKind, SessionId};

use crate::disk::mtime_ms;
use crate::{FileStore, FileStoreBuilder};

fn builder(dir: &Path) -> FileStoreBuilder {
    FileStore::builder().path(dir).sweep_interval(None)
}

fn record(lifetime: Duration) -> Record {
    Record {
        entries: [("k", b"\"v\"".to_vec())].into_iter().collect::<Entries>(),
        meta: Meta::new(now_ms(), lifetime, None),
    }
}

/// A record created `ago` in the past, so that a touch is due.
fn aged(lifetime: Duration, ago: Duration) -> Record {
    Record {
        entries: [("k", b"\"v\"".to_vec())].into_iter().collect::<Entries>(),
        meta: Meta::new(now_ms() - ago.as_millis() as u64, lifetime, None),
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn files_are_private_and_named_by_the_hash_of_the_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions");
    let store = builder(&path).build().unwrap();
    assert_eq!(mode(&path), 0o700);
    let id = SessionId::generate();
    assert_eq!(
        store.create(&id, &record(HOUR)).await.unwrap(),
        Created::Created
    );
    let stem = id.hashed_hex();
    assert_eq!(names(&path), [format!("{stem}.session")]);
    let session = path.join(format!("{stem}.session"));
    assert_eq!(mode(&session), 0o600);

    let Locked::Acquired { token, .. } = store.lock(&id, HOUR).await.unwrap() else {
        panic!("the lock is free");
    };
    assert_eq!(
        names(&path),
        [format!("{stem}.lock"), format!("{stem}.session")]
    );
    assert_eq!(mode(&path.join(format!("{stem}.lock"))), 0o600);
    for name in names(&path) {
        assert!(!name.contains(&id.expose()));
    }
    store.unlock(&id, &token).await.unwrap();
    assert_eq!(names(&path), [format!("{stem}.session")]);
    assert_eq!(store.count().await.unwrap(), 1);
}

#[tokio::test]
async fn hashing_off_names_files_by_the_id_and_prefixes_isolate_apps() {
    let dir = tempfile::tempdir().unwrap();
    let raw = builder(dir.path()).hash_ids(false).build().unwrap();
    let a = builder(dir.path()).prefix("a:").build().unwrap();
    let b = builder(dir.path()).prefix("b:").build().unwrap();
    let id = SessionId::generate();
    let _ = raw.create(&id, &record(HOUR)).await.unwrap();
    let _ = a.create(&id, &record(HOUR)).await.unwrap();
    let mut expected = [
        format!("{}.session", id.expose()),
        format!("a:{}.session", id.hashed_hex()),
    ];
    expected.sort();
    assert_eq!(names(dir.path()), expected);
    assert!(b.load(&id, None).await.unwrap().is_none());
    assert_eq!(b.count().await.unwrap(), 0);
    assert_eq!(a.count().await.unwrap(), 1);
    assert_eq!(raw.count().await.unwrap(), 1);
    // Each sweeps only its own files.
    assert_eq!(b.gc().await.unwrap().scanned, 0);
}

#[tokio::test]
async fn a_touch_moves_the_mtime_and_rewrites_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = builder(dir.path()).build().unwrap();
    assert!(
        store.mtime_expiry(),
        "the test directory's file system should keep millisecond mtimes"
    );
    let id = SessionId::generate();
    let created = aged(Duration::from_secs(100), Duration::from_secs(90));
    let _ = store.create(&id, &created).await.unwrap();
    let path = dir.path().join(format!("{}.session", id.hashed_hex()));
    let before = fs::metadata(&path).unwrap();
    let bytes = fs::read(&path).unwrap();
    assert_eq!(mtime_ms(&before), created.meta.expires());

    let loaded = store
        .load(&id, Some(Touch::when_remaining_below(0.5).unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert!(loaded.touched);
    let expires = loaded.record.meta.expires();
    assert!(expires > created.meta.expires());

    let after = fs::metadata(&path).unwrap();
    assert_eq!(
        after.ino(),
        before.ino(),
        "a touch must not replace the file"
    );
    assert_eq!(
        fs::read(&path).unwrap(),
        bytes,
        "a touch must not rewrite the data"
    );
    assert_eq!(mtime_ms(&after), expires);

    // Another store (another process) sees the touched expiry.
    let other = builder(dir.path()).build().unwrap();
    let seen = other.load(&id, None).await.unwrap().unwrap();
    assert_eq!(seen.record.meta, loaded.record.meta);
    // A write brings the blob in line with the mtime.
    let mut delta = Delta::default();
    delta.set("k", b"2".to_vec());
    let Applied::Applied(meta) = other.apply(&id, &delta, None).await.unwrap() else {
        panic!("the session is live");
    };
    let blob = decode_record(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(blob.meta, meta);
    assert_eq!(mtime_ms(&fs::metadata(&path).unwrap()), meta.expires());
}

#[tokio::test]
async fn without_mtime_expiry_a_touch_rewrites_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = builder(dir.path()).mtime_expiry(false).build().unwrap();
    assert!(!store.mtime_expiry());
    let id = SessionId::generate();
    let _ = store
        .create(
            &id,
            &aged(Duration::from_secs(100), Duration::from_secs(90)),
        )
        .await
        .unwrap();
    let path = dir.path().join(format!("{}.session", id.hashed_hex()));
    let before = fs::metadata(&path).unwrap().ino();
    let loaded = store
        .load(&id, Some(Touch::always()))
        .await
        .unwrap()
        .unwrap();
    assert!(loaded.touched);
    assert_ne!(fs::metadata(&path).unwrap().ino(), before);
    let blob = decode_record(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(blob.meta, loaded.record.meta);
}

#[tokio::test]
async fn a_stale_mtime_never_shortens_a_session_and_gc_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = builder(dir.path()).build().unwrap();
    let id = SessionId::generate();
    let created = record(HOUR);
    let _ = store.create(&id, &created).await.unwrap();
    let path = dir.path().join(format!("{}.session", id.hashed_hex()));
    // As after `cp` without `-p`: the mtime is now, the session lives on.
    let file = fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(5))
        .unwrap();
    drop(file);
    let loaded = store.load(&id, None).await.unwrap().unwrap();
    assert_eq!(loaded.record, created);
    let report = store.gc().await.unwrap();
    assert_eq!((report.opened, report.deleted), (1, 0));
    assert_eq!(
        mtime_ms(&fs::metadata(&path).unwrap()),
        created.meta.expires()
    );
    assert_eq!(store.gc().await.unwrap().opened, 0);
}

/// Collects the log lines written while it is the default subscriber.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[tokio::test]
async fn torn_and_foreign_files_load_as_absent_and_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let store = builder(dir.path()).build().unwrap();
    let good = {
        let id = SessionId::generate();
        let _ = store.create(&id, &record(HOUR)).await.unwrap();
        fs::read(dir.path().join(format!("{}.session", id.hashed_hex()))).unwrap()
    };
    type Make<'a> = Box<dyn Fn(&Path) + 'a>;
    let cases: Vec<(&str, Make<'_>)> = vec![
        (
            "torn",
            Box::new(|p: &Path| fs::write(p, &good[..good.len() / 2]).unwrap()),
        ),
        ("empty", Box::new(|p: &Path| fs::write(p, b"").unwrap())),
        (
            "foreign",
            Box::new(|p: &Path| fs::write(p, b"<?php echo 1;").unwrap()),
        ),
        (
            "symlink",
            Box::new(|p: &Path| std::os::unix::fs::symlink("/etc/hostname", p).unwrap()),
        ),
        ("directory", Box::new(|p: &Path| fs::create_dir(p).unwrap())),
    ];
    for (what, make) in cases {
        let id = SessionId::generate();
        let path = dir.path().join(format!("{}.session", id.hashed_hex()));
        make(&path);
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        // The blocking side, on this thread, so the subscriber sees it.
        let loaded = tracing::subscriber::with_default(subscriber, || {
            store.disk().load(&id, Some(Touch::always()))
        });
        assert!(loaded.unwrap().is_none(), "{what}: must load as absent");
        let text = logs.text();
        assert!(text.contains("WARN"), "{what}: {text}");
        assert!(text.contains(&id.short_hash()), "{what}: {text}");
        assert!(!text.contains(&id.expose()), "{what}: {text}");

        assert_eq!(
            store.apply(&id, &Delta::default(), None).await.unwrap(),
            Applied::Gone,
            "{what}"
        );
        assert_eq!(
            store.lock(&id, HOUR).await.unwrap(),
            Locked::Absent,
            "{what}"
        );
        if what != "directory" {
            // `create` replaces whatever was there.
            assert_eq!(
                store.create(&id, &record(HOUR)).await.unwrap(),
                Created::Created
            );
            assert!(store.load(&id, None).await.unwrap().is_some(), "{what}");
        }
    }
}

#[tokio::test]
async fn dropping_the_holding_store_frees_its_locks_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let holder = builder(dir.path()).build().unwrap();
    let other = builder(dir.path()).build().unwrap();
    let id = SessionId::generate();
    let _ = holder.create(&id, &record(HOUR)).await.unwrap();
    let Locked::Acquired { token, .. } = holder.lock(&id, HOUR).await.unwrap() else {
        panic!("the lock is free");
    };
    assert_eq!(holder.disk().held_count(), 1);
    assert_eq!(other.lock(&id, HOUR).await.unwrap(), Locked::Held);
    assert_eq!(holder.lock(&id, HOUR).await.unwrap(), Locked::Held);
    // The other store cannot write with a guessed token, nor release it.
    let stranger = sessionkit_core::LockToken::generate();
    other.unlock(&id, &stranger).await.unwrap();
    assert_eq!(other.lock(&id, HOUR).await.unwrap(), Locked::Held);

    // A clone keeps the lock alive; the last drop ends it.
    let clone = holder.clone();
    drop(holder);
    assert_eq!(other.lock(&id, HOUR).await.unwrap(), Locked::Held);
    drop(clone);
    let Locked::Acquired { token: next, .. } = other.lock(&id, HOUR).await.unwrap() else {
        panic!("the holder's store is gone: the lock must be free at once");
    };
    assert_ne!(next, token);
}

#[tokio::test]
async fn a_fenced_change_id_moves_the_lock_with_its_flock() {
    let dir = tempfile::tempdir().unwrap();
    let a = builder(dir.path()).build().unwrap();
    let b = builder(dir.path()).build().unwrap();
    let (old, new) = (SessionId::generate(), SessionId::generate());
    let _ = a.create(&old, &record(HOUR)).await.unwrap();
    let Locked::Acquired { token, .. } = a.lock(&old, HOUR).await.unwrap() else {
        panic!("the lock is free");
    };
    assert!(matches!(
        a.change_id(&old, &new, Some(&token)).await.unwrap(),
        IdChanged::Changed(_)
    ));
    assert_eq!(b.lock(&new, HOUR).await.unwrap(), Locked::Held);
    assert!(b.lock(&old, HOUR).await.unwrap() == Locked::Absent);
    let fence = Fence {
        token: &token,
        release: true,
    };
    assert!(matches!(
        a.apply(&new, &Delta::default(), Some(fence)).await.unwrap(),
        Applied::Applied(_)
    ));
    assert_eq!(a.disk().held_count(), 0);
    assert!(matches!(
        b.lock(&new, HOUR).await.unwrap(),
        Locked::Acquired { .. }
    ));
}

#[tokio::test]
async fn expired_locks_release_their_handles_and_gc_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = builder(dir.path()).build().unwrap();
    let id = SessionId::generate();
    let _ = store.create(&id, &record(HOUR)).await.unwrap();
    let Locked::Acquired { .. } = store.lock(&id, Duration::from_millis(30)).await.unwrap() else {
        panic!("the lock is free");
    };
    tokio::time::sleep(Duration::from_millis(60)).await;
    let report = store.gc().await.unwrap();
    assert_eq!(store.disk().held_count(), 0);
    assert_eq!(
        report.stale_locks, 0,
        "the session lives: its lock file stays"
    );

    // Leftovers of crashes: a lock without a session, a temporary file.
    let gone = SessionId::generate();
    let stem = gone.hashed_hex();
    fs::write(dir.path().join(format!("{stem}.lock")), b"x").unwrap();
    fs::write(
        dir.path().join(format!("{stem}.tmp-0123456789abcdef")),
        b"x",
    )
    .unwrap();
    fs::write(dir.path().join("notes.txt"), b"not ours").unwrap();
    let report = store.gc().await.unwrap();
    assert_eq!((report.stale_locks, report.stale_temp_files), (1, 1));
    assert!(
        dir.path().join("notes.txt").exists(),
        "foreign files are left alone"
    );
}

#[tokio::test]
async fn expired_sessions_vanish_and_gc_deletes_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = builder(dir.path()).build().unwrap();
    let short = SessionId::generate();
    let long = SessionId::generate();
    let _ = store
        .create(&short, &record(Duration::from_millis(30)))
        .await
        .unwrap();
    let _ = store.create(&long, &record(HOUR)).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 2);
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(store.load(&short, None).await.unwrap().is_none());
    let report = store.gc().await.unwrap();
    assert_eq!(
        (report.scanned, report.opened, report.deleted),
        (2, 1, 1),
        "{report:?}"
    );
    assert_eq!(store.count().await.unwrap(), 1);
    assert_eq!(store.delete_expired_now().await, 0);
}

impl FileStore {
    async fn delete_expired_now(&self) -> u64 {
        sessionkit_core::store::ExpiredDeletion::delete_expired(self)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn the_background_sweep_runs_and_stops_with_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::builder()
        .path(dir.path())
        .sweep_interval(Some(Duration::from_millis(20)))
        .build()
        .unwrap();
    let _ = store
        .create(&SessionId::generate(), &record(Duration::from_millis(10)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(store.count().await.unwrap(), 0);
    let weak = Arc::downgrade(store.disk());
    drop(store);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(weak.upgrade().is_none());
}

#[tokio::test]
async fn io_failures_name_the_operation_and_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = builder(&path).build().unwrap();
    let id = SessionId::generate();
    fs::remove_dir_all(&path).unwrap();
    let err = store.create(&id, &record(HOUR)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
    assert_eq!(err.operation(), Some("create"));
    assert_eq!(err.store(), Some("file"));
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(!text.contains(&id.expose()), "{text}");
    assert!(std::error::Error::source(&err).is_some());
    // A load of a missing directory finds nothing: not an error.
    assert!(store.load(&id, None).await.unwrap().is_none());
    assert_eq!(
        store.gc().await.unwrap_err().kind(),
        ErrorKind::StoreUnavailable
    );
}

/// Polls a future on this thread, with no Tokio runtime around.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

#[test]
fn without_a_tokio_runtime_operations_run_inline() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path()).unwrap();
    let id = SessionId::generate();
    block_on(async {
        assert_eq!(
            store.create(&id, &record(HOUR)).await.unwrap(),
            Created::Created
        );
        assert!(store.load(&id, None).await.unwrap().is_some());
        store.destroy(&id).await.unwrap();
        assert!(store.load(&id, None).await.unwrap().is_none());
    });
}

#[test]
fn debug_shows_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::builder()
        .path(dir.path())
        .prefix("app:")
        .durable(false)
        .build()
        .unwrap();
    let text = format!("{store:?}");
    assert!(text.contains("prefix: \"app:\""), "{text}");
    assert!(text.contains("durable: false"), "{text}");
}

#[test]
fn bad_prefixes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for prefix in ["a/b", "a b", "a\0", "\n", &"x".repeat(65)] {
        let err = FileStore::builder()
            .path(dir.path())
            .prefix(prefix)
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{prefix:?}");
        assert_eq!(err.setting(), Some("prefix"));
    }
    FileStore::builder()
        .path(dir.path())
        .prefix("shop:v2.")
        .build()
        .unwrap();
}

/// A file operation that hangs (here: another process holds the session's
/// stripe lock and never lets go, so taking it blocks, as an operation on
/// a hung disk would) fails the request with StoreUnavailable after the
/// operation timeout instead of holding it; other sessions are served
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_file_operation_fails_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let store = builder(dir.path())
        .operation_timeout(Some(Duration::from_millis(200)))
        .build()
        .unwrap();
    let id = SessionId::generate();
    let stripe = store.disk().naming.of(&id).stripe();
    // Held by this test through a file of its own, as another process
    // would; dropped at the end, which lets the hung operation finish (or
    // the runtime would wait for its blocking thread forever).
    let _held = store.disk().stripe(stripe).unwrap();

    let start = std::time::Instant::now();
    let err = store
        .create(&id, &record(Duration::from_secs(60)))
        .await
        .unwrap_err();
    let waited = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
    assert_eq!(err.operation(), Some("create"));
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        source
            .as_deref()
            .is_some_and(|s| s.contains("did not finish within")),
        "{source:?}"
    );
    assert!(
        waited >= Duration::from_millis(190) && waited < Duration::from_secs(2),
        "{waited:?}"
    );

    // Another session is served while the first operation still hangs.
    let other = std::iter::repeat_with(SessionId::generate)
        .find(|other| store.disk().naming.of(other).stripe() != stripe)
        .unwrap();
    assert_eq!(
        store
            .create(&other, &record(Duration::from_secs(60)))
            .await
            .unwrap(),
        Created::Created
    );
    assert!(store.load(&other, None).await.unwrap().is_some());
}

/// A FIFO planted where a session file belongs is no session: reading it
/// answers at once (absent) instead of waiting for a writer.
#[test]
fn a_fifo_at_a_session_path_reads_as_absent_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let store = builder(dir.path()).build().unwrap();
    let id = SessionId::generate();
    let fifo = store.disk().session_path(&store.disk().naming.of(&id));
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.expect("mkfifo runs").success());
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let disk = Arc::clone(store.disk());
        std::thread::spawn(move || tx.send(disk.load(&id, None).map(|l| l.is_some())));
    }
    let loaded = rx.recv_timeout(Duration::from_secs(10));
    assert!(!loaded.expect("the read waited on the FIFO").unwrap());
}

#[test]
fn a_zero_operation_timeout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = builder(dir.path())
        .operation_timeout(Some(Duration::ZERO))
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), Some("operation_timeout"));
}
