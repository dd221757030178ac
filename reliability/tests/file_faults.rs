//! File store faults under the shop: a full disk (a 2 MiB tmpfs), the save path removed while running. Kills during writes are covered by `crates/sessionkit-file/tests/processes.rs`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reliability::{App, client, session_cookie};
use sessionkit::{ErrorKind, SessionId, SessionLayer};
use sessionkit_core::codec::decode_record;
use sessionkit_core::record::{Meta, Record, now_ms};
use sessionkit_core::store::{Created, SessionStore};
use sessionkit_file::FileStore;

/// A tmpfs of `size` mounted on `dir`, unmounted when dropped (also while a
/// failing test unwinds).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts it; `None` when this process is not root (mounting needs it).
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        if !is_root() {
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t tmpfs failed although we are root"
        );
        Some(Tmpfs {
            dir: dir.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn record() -> Record {
    Record {
        entries: [("k", b"1".to_vec())].into_iter().collect(),
        meta: Meta::new(now_ms(), Duration::from_secs(600), None),
    }
}

/// Every session file decodes (none is torn); returns how many there are
/// and how many temporary files lie around.
fn audit(dir: &Path) -> (usize, usize) {
    let (mut sessions, mut temps) = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".session") {
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            decode_record(&bytes).unwrap_or_else(|e| panic!("torn session file {name}: {e}"));
            sessions += 1;
        } else if name.contains(".tmp-") {
            temps += 1;
        }
    }
    (sessions, temps)
}

async fn counter(http: &reqwest::Client, app: &App, cookie: Option<&str>) -> (u16, Option<u64>) {
    let mut req = http.post(app.url("/api/counter"));
    if let Some(c) = cookie {
        req = req.header("cookie", format!("session={c}"));
        if let Some(token) = app.csrf_token(http, c).await {
            req = req.header("x-csrf-token", token);
        }
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    let body: serde_json::Value = res.json().await.unwrap();
    (status, body["n"].as_u64())
}

async fn read_n(http: &reqwest::Client, app: &App, cookie: &str) -> (u16, Option<u64>) {
    let res = http
        .get(app.url("/api/session"))
        .header("cookie", format!("session={cookie}"))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    let body: serde_json::Value = res.json().await.unwrap();
    (status, body["n"].as_u64())
}

/// A disk that fills up under the shop: writes fail with 503 and a
/// `StoreUnavailable` error that names the store, the operation and the
/// cause (ENOSPC); reads keep working and see every acknowledged write; no
/// session file is torn; once space is freed, writes work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_writes_cleanly_and_recovers_when_space_is_freed() {
    let base = tempfile::tempdir().unwrap();
    let Some(_mount) = Tmpfs::mount(&base.path().join("mnt"), "2m") else {
        eprintln!("SKIPPED: mounting a tmpfs needs root; this process is not root");
        return;
    };
    let dir = base.path().join("mnt/sessions");
    let store = FileStore::new(&dir).unwrap();
    let app = App::serve(SessionLayer::new(store.clone())).await;
    let http = client();

    let mut sessions = Vec::new();
    for _ in 0..20 {
        let res = http.post(app.url("/api/counter")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        sessions.push(session_cookie(&res).unwrap());
    }

    // Fill the file system.
    let filler_path = base.path().join("mnt/filler");
    let mut filler = std::fs::File::create(&filler_path).unwrap();
    let chunk = vec![0u8; 4096];
    let err = loop {
        if let Err(e) = filler.write_all(&chunk) {
            break e;
        }
    };
    assert_eq!(err.raw_os_error(), Some(28), "ENOSPC: {err}");
    drop(filler);

    let mut refused = 0;
    for cookie in &sessions {
        let (status, _) = counter(&http, &app, Some(cookie)).await;
        assert!(
            status == 503 || status == 200,
            "only 503 (or a write that still fit): {status}"
        );
        refused += usize::from(status == 503);
        let (status, n) = read_n(&http, &app, cookie).await;
        assert_eq!(status, 200, "reads need no space");
        assert!(n >= Some(1), "acknowledged writes are kept: {n:?}");
    }
    assert!(
        refused >= sessions.len() / 2,
        "writes fail on a full disk: {refused}"
    );
    let (status, _) = counter(&http, &app, None).await;
    assert_eq!(status, 503, "a new session cannot be stored");

    let err = store
        .create(&SessionId::generate(), &record())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
    assert!(
        err.to_string().contains("(create on file)"),
        "names operation and store: {err}"
    );
    let source = std::error::Error::source(&err).expect("the I/O error is the source");
    assert!(
        source.to_string().contains("No space left on device"),
        "the cause: {source}"
    );
    let (files, temps_before_gc) = audit(&dir);
    assert_eq!(files, 20, "no session file was lost or torn");
    let _ = store.gc().await;
    let (_, temps) = audit(&dir);
    assert_eq!(temps, 0, "temporary files of failed writes are removed");

    // Free the space: writes work again, on top of what was acknowledged.
    std::fs::remove_file(&filler_path).unwrap();
    for cookie in &sessions {
        let (status, n) = counter(&http, &app, Some(cookie)).await;
        assert_eq!(status, 200, "writes work again once space is freed");
        assert!(n >= Some(2));
    }
    assert_eq!(counter(&http, &app, None).await.0, 200);
    eprintln!(
        "full disk: {refused} of 20 locked writes refused with 503, reads all 200, \
         {temps_before_gc} temporary files left before gc, recovered after freeing space"
    );
}

/// The save path deleted while the shop runs: no panic; sessions are gone
/// (their files were deleted), so reads start afresh; writes fail with 503
/// and an error naming the store, the operation and the directory; once the
/// directory exists again, a store built on it (an app restart) works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_save_path_fails_writes_cleanly_and_a_rebuilt_store_recovers() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("sessions");
    let store = FileStore::new(&dir).unwrap();
    let app = App::serve(SessionLayer::new(store.clone())).await;
    let http = client();
    let res = http.post(app.url("/api/counter")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let cookie = session_cookie(&res).unwrap();

    std::fs::remove_dir_all(&dir).unwrap();

    let (status, n) = read_n(&http, &app, &cookie).await;
    assert_eq!(
        (status, n),
        (200, Some(0)),
        "its file is gone: a fresh session"
    );
    let (status, _) = counter(&http, &app, Some(&cookie)).await;
    assert_eq!(status, 503, "nowhere to write");
    let (status, _) = counter(&http, &app, None).await;
    assert_eq!(status, 503, "nowhere to write");
    let err = store
        .create(&SessionId::generate(), &record())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
    assert!(err.to_string().contains("(create on file)"), "{err}");
    assert!(
        err.to_string().contains(dir.to_str().unwrap()),
        "names the directory: {err}"
    );

    std::fs::create_dir_all(&dir).unwrap();
    let rebuilt = FileStore::new(&dir).unwrap();
    let app = App::serve(SessionLayer::new(rebuilt)).await;
    let (status, n) = counter(&http, &app, None).await;
    assert_eq!((status, n), (200, Some(1)), "a restarted app works again");
}

/// Regression test for a gap found by this suite: a running store does not
/// recover when its save path is recreated, because it never recreates
/// `.stripes/` (see RELIABILITY.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_file_store_recovers_when_its_save_path_is_recreated() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("sessions");
    let store = FileStore::new(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        store
            .create(&SessionId::generate(), &record())
            .await
            .is_err()
    );
    std::fs::create_dir_all(&dir).unwrap();
    let created = store.create(&SessionId::generate(), &record()).await;
    assert!(
        matches!(created, Ok(Created::Created)),
        "the store works again once its directory exists: {created:?}"
    );
}
