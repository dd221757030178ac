//! The sweep: deletes expired sessions, opening only the files whose mtime
//! says they expired.

use std::fs;
use std::io;
use std::time::{Duration, Instant};

use sessionkit_core::record::now_ms;

use crate::disk::{Collected, Disk, LOCK_SUFFIX, SESSION_SUFFIX, TEMP_MARK, mtime_ms};
use crate::fail::{Context as _, Failure, path_place};
use crate::name::Name;

/// What one sweep of the save path did, as [`FileStore::gc`] reports it.
///
/// The sweep lists the directory and reads the metadata (not the contents)
/// of every session file; only the files whose mtime — which carries the
/// session's expiry — is past are opened, checked and deleted. So `opened`
/// follows what expired, not what is stored.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> sessionkit_core::Result<()> {
/// use sessionkit_file::FileStore;
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = FileStore::new(dir.path())?;
/// let report = store.gc().await?;
/// assert_eq!((report.scanned, report.opened, report.deleted), (0, 0, 0));
/// # Ok(()) }
/// ```
///
/// [`FileStore::gc`]: crate::FileStore::gc
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcReport {
    /// Session files listed (their metadata read, not their contents).
    pub scanned: u64,
    /// Session files opened because their mtime said they had expired.
    pub opened: u64,
    /// Session files deleted: expired, or not sessions at all (torn or
    /// foreign files whose mtime had passed).
    pub deleted: u64,
    /// Lock files deleted because their session was gone.
    pub stale_locks: u64,
    /// Temporary files deleted, left by writes that a crash interrupted.
    pub stale_temp_files: u64,
    /// How long the sweep took.
    pub elapsed: Duration,
}

enum Kind {
    Session(Name),
    Lock(Name),
    Temp(Name, String),
}

fn classify(disk: &Disk, file_name: &str) -> Option<Kind> {
    if let Some(stem) = file_name.strip_suffix(SESSION_SUFFIX) {
        return disk.naming.parse(stem).map(Kind::Session);
    }
    if let Some(stem) = file_name.strip_suffix(LOCK_SUFFIX) {
        return disk.naming.parse(stem).map(Kind::Lock);
    }
    let at = file_name.rfind(TEMP_MARK)?;
    let suffix = &file_name[at + TEMP_MARK.len()..];
    if suffix.len() != 16 || !suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let name = disk.naming.parse(&file_name[..at])?;
    Some(Kind::Temp(name, file_name.to_owned()))
}

/// Sweeps the save path once.
pub(crate) fn sweep(disk: &Disk) -> Result<GcReport, Failure> {
    let start = Instant::now();
    let now = now_ms();
    disk.prune_held(now);
    let mut report = GcReport::default();
    let mut expired = Vec::new();
    let mut locks = Vec::new();
    let mut temps = Vec::new();

    let entries = fs::read_dir(&disk.dir).context("list", || path_place(&disk.dir))?;
    for entry in entries {
        let entry = entry.context("list", || path_place(&disk.dir))?;
        let file_name = entry.file_name();
        let Some(kind) = file_name.to_str().and_then(|n| classify(disk, n)) else {
            continue;
        };
        match kind {
            Kind::Session(name) => {
                report.scanned += 1;
                // `DirEntry::metadata` is an lstat relative to the directory:
                // no file is opened.
                let metadata = match entry.metadata() {
                    Ok(metadata) => metadata,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e).context("inspect", || disk.place(&name)),
                };
                if mtime_ms(&metadata) <= now {
                    expired.push(name);
                }
            }
            Kind::Lock(name) => locks.push(name),
            Kind::Temp(name, file_name) => temps.push((name, file_name)),
        }
    }

    for name in &expired {
        match disk.collect(name, now_ms())? {
            Collected::Missing => {}
            Collected::Kept => report.opened += 1,
            Collected::Deleted => {
                report.opened += 1;
                report.deleted += 1;
            }
        }
    }
    for name in &locks {
        if disk.collect_lock(name)? {
            report.stale_locks += 1;
        }
    }
    for (name, file_name) in &temps {
        if disk.collect_temp(name, file_name)? {
            report.stale_temp_files += 1;
        }
    }
    if report.deleted > 0 {
        disk.sync_dir()?;
    }
    report.elapsed = start.elapsed();
    Ok(report)
}
