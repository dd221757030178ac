//! `FileStore` and its builder: the async face of the store, running every
//! operation as one closure on Tokio's blocking pool.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use sessionkit_core::owner::{
    DynOwnerIndex, OwnedSession, Owner, OwnerCap, OwnerIndex, OwnerSet, SessionHandle,
};
use sessionkit_core::record::{Delta, Record, Touch};
use sessionkit_core::store::{
    Applied, Countable, Created, ExpiredDeletion, Fence, IdChanged, Loaded, Locked, SessionStore,
};
use sessionkit_core::{Error, LockToken, Result, SessionId};

use crate::disk::Disk;
use crate::fail::{Failure, STORE};
use crate::gc::{self, GcReport};
use crate::name::Naming;
use crate::savepath;

/// Sessions in files under a save path, one file per session.
///
/// Cheap to clone; clones share the directory, the settings and the locks
/// held through the store. See the [crate docs](crate) for the layout on
/// disk, the lock protocol and what is and is not guaranteed.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> sessionkit_core::Result<()> {
/// use std::time::Duration;
/// use sessionkit_core::record::{Entries, Meta, Record, now_ms};
/// use sessionkit_core::store::{Created, SessionStore};
/// use sessionkit_core::SessionId;
/// use sessionkit_file::FileStore;
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = FileStore::new(dir.path())?;
///
/// let id = SessionId::generate();
/// let record = Record {
///     entries: [("n", b"1".to_vec())].into_iter().collect::<Entries>(),
///     meta: Meta::new(now_ms(), Duration::from_secs(60), None),
/// };
/// assert_eq!(store.create(&id, &record).await?, Created::Created);
///
/// // Another store on the same directory — another process, say — sees it.
/// let other = FileStore::new(dir.path())?;
/// let loaded = other.load(&id, None).await?.unwrap();
/// assert_eq!(loaded.record, record);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FileStore {
    disk: Arc<Disk>,
    timeout: Option<Duration>,
}

/// Configures a [`FileStore`]; made by [`FileStore::builder`].
///
/// ```
/// use std::time::Duration;
/// use sessionkit_file::FileStore;
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = FileStore::builder()
///     .path(dir.path())
///     .prefix("shop-")
///     .sweep_interval(Some(Duration::from_secs(300)))
///     .build()
///     .unwrap();
/// assert_eq!(store.path(), dir.path());
/// ```
#[derive(Debug, Clone)]
pub struct FileStoreBuilder {
    path: Option<PathBuf>,
    hash_ids: bool,
    prefix: String,
    durable: bool,
    create_dir: bool,
    mtime_expiry: bool,
    sweep_interval: Option<Duration>,
    operation_timeout: Option<Duration>,
}

impl Default for FileStoreBuilder {
    fn default() -> Self {
        FileStoreBuilder {
            path: None,
            hash_ids: true,
            prefix: String::new(),
            durable: true,
            create_dir: true,
            mtime_expiry: true,
            sweep_interval: Some(Duration::from_secs(60)),
            operation_timeout: Some(DEFAULT_OPERATION_TIMEOUT),
        }
    }
}

/// The default of [`FileStoreBuilder::operation_timeout`].
const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

impl FileStoreBuilder {
    /// The save path: the directory that holds the session files.
    ///
    /// Default: none, so that [`build`](Self::build) uses
    /// [`FileStore::default_path`]. Give every app its own directory (or its
    /// own [`prefix`](Self::prefix)): an app accepts any session it finds in
    /// its save path.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = sessionkit_file::FileStore::builder().path(dir.path()).build().unwrap();
    /// assert_eq!(store.path(), dir.path());
    /// ```
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Whether file names are the SHA-256 of the id (64 hex digits) rather
    /// than the id itself. Default `true`.
    ///
    /// # Security
    ///
    /// With hashing, a listing or a backup of the save path holds no live
    /// session id, so it cannot be replayed as a cookie
    /// ([OWASP: session id protection at rest](https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html)).
    /// Turn it off only to inspect sessions by id while debugging. Every
    /// process that shares a save path must use the same setting: each sees
    /// the other's files as foreign.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = sessionkit_file::FileStore::builder()
    ///     .path(dir.path())
    ///     .hash_ids(true)
    ///     .build()
    ///     .unwrap();
    /// # drop(store);
    /// ```
    pub fn hash_ids(mut self, hash_ids: bool) -> Self {
        self.hash_ids = hash_ids;
        self
    }

    /// A prefix for every file name, so that several apps can share one save
    /// path without seeing each other's sessions (`SESSION_PREFIX` through
    /// the `sessionkit` facade). Default: none.
    ///
    /// Up to 64 bytes, without `/`, NUL, whitespace or control characters;
    /// anything else fails [`build`](Self::build) with an
    /// [`InvalidConfig`](sessionkit_core::ErrorKind::InvalidConfig) error
    /// naming `prefix`. Each app sweeps only its own files.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use sessionkit_core::ErrorKind;
    /// use sessionkit_file::FileStore;
    ///
    /// let err = FileStore::builder().path(dir.path()).prefix("a/b").build().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    /// assert_eq!(err.setting(), Some("prefix"));
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Whether writes are durable: each write `fsync`s the new file before
    /// renaming it into place and the directory after. Default `true`.
    ///
    /// Without it writes are still atomic (a crash of the *process* never
    /// tears a session), but a crash of the *machine* may lose the last
    /// writes or leave an empty file, which then loads as absent. Turn it
    /// off for a save path on tmpfs, where `fsync` does nothing anyway, or
    /// in tests.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = sessionkit_file::FileStore::builder()
    ///     .path(dir.path())
    ///     .durable(false)
    ///     .build()
    ///     .unwrap();
    /// # drop(store);
    /// ```
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Whether [`build`](Self::build) creates a missing save path (and its
    /// missing parents) with mode 0700. Default `true`; with `false` a
    /// missing directory is an
    /// [`InvalidSavePath`](sessionkit_core::ErrorKind::InvalidSavePath)
    /// error. The [default path](FileStore::default_path) is always created
    /// when missing.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use sessionkit_core::ErrorKind;
    /// use sessionkit_file::FileStore;
    ///
    /// let missing = dir.path().join("missing");
    /// let err = FileStore::builder().path(&missing).create_dir(false).build().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidSavePath);
    /// ```
    pub fn create_dir(mut self, create_dir: bool) -> Self {
        self.create_dir = create_dir;
        self
    }

    /// Whether a touch (the lazy write of an unchanged session) only moves
    /// the file's mtime, which then carries the live expiry. Default `true`.
    ///
    /// It is honoured only when the file system keeps mtimes to the
    /// millisecond, which [`build`](Self::build) probes; elsewhere (and with
    /// `false`) a touch rewrites the file atomically, like any write. Turn
    /// it off if something else sets the mtimes of the save path's files.
    /// Every process that shares a save path should use the same setting.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = sessionkit_file::FileStore::builder()
    ///     .path(dir.path())
    ///     .mtime_expiry(false)
    ///     .build()
    ///     .unwrap();
    /// assert!(!store.mtime_expiry());
    /// ```
    pub fn mtime_expiry(mut self, mtime_expiry: bool) -> Self {
        self.mtime_expiry = mtime_expiry;
        self
    }

    /// How often a background task sweeps expired sessions
    /// ([`FileStore::gc`]); `None` turns it off. Default one minute.
    ///
    /// The task starts only if [`build`](Self::build) runs inside a Tokio
    /// runtime, and stops once the last clone of the store is dropped. Each
    /// sweep lists the save path and reads every session file's metadata, so
    /// with very many sessions a longer interval is kinder to the disk.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = sessionkit_file::FileStore::builder()
    ///     .path(dir.path())
    ///     .sweep_interval(None)
    ///     .build()
    ///     .unwrap();
    /// # drop(store);
    /// ```
    pub fn sweep_interval(mut self, interval: Option<Duration>) -> Self {
        self.sweep_interval = interval;
        self
    }

    /// How long a request waits for one file operation before it fails with
    /// [`StoreUnavailable`](sessionkit_core::ErrorKind::StoreUnavailable)
    /// (a 503), as a network store fails when its server does not answer.
    /// Default 5 s; `None` waits as long as the disk takes.
    ///
    /// File I/O runs on Tokio's blocking pool, where it cannot be cancelled:
    /// on a hung disk (a stale NFS mount, a failing device) the timeout frees
    /// the request, not the thread, and an operation that timed out may
    /// still complete later — like a write whose reply a network store never
    /// sent. Without it, every request for a session on that disk would hang
    /// with it.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use std::time::Duration;
    ///
    /// let store = sessionkit_file::FileStore::builder()
    ///     .path(dir.path())
    ///     .operation_timeout(Some(Duration::from_secs(2)))
    ///     .build()
    ///     .unwrap();
    /// # drop(store);
    /// ```
    pub fn operation_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Checks the settings and the save path and builds the store.
    ///
    /// Blocks briefly on file I/O (it creates the directory if needed and
    /// probes it with a test file); call it at start-up.
    ///
    /// # Errors
    ///
    /// - [`SavePathUnavailable`](sessionkit_core::ErrorKind::SavePathUnavailable)
    ///   when no path was given and [`FileStore::default_path`] finds none;
    /// - [`InvalidSavePath`](sessionkit_core::ErrorKind::InvalidSavePath),
    ///   naming the path and the reason, when it is not a writable directory
    ///   (or, for the default path, not private to this user);
    /// - [`InvalidConfig`](sessionkit_core::ErrorKind::InvalidConfig) for a
    ///   bad [`prefix`](Self::prefix).
    ///
    /// ```
    /// use sessionkit_core::ErrorKind;
    /// use sessionkit_file::FileStore;
    ///
    /// let file = tempfile::NamedTempFile::new().unwrap();
    /// let err = FileStore::builder().path(file.path()).build().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidSavePath);
    /// assert!(err.to_string().contains("not a directory"));
    /// ```
    pub fn build(self) -> Result<FileStore> {
        check_prefix(&self.prefix)?;
        let (path, private) = match self.path {
            Some(path) => (path, false),
            None => (savepath::default_path()?, true),
        };
        let prepared = savepath::prepare(&path, private, self.create_dir || private)?;
        if self.mtime_expiry && !prepared.mtime_exact {
            tracing::info!(
                dir = %path.display(),
                "the save path's file system does not keep mtimes to the millisecond; touches rewrite session files"
            );
        }
        let disk = Arc::new(Disk::new(
            path,
            prepared.handle,
            Naming {
                hashed: self.hash_ids,
                prefix: self.prefix,
            },
            self.durable,
            self.mtime_expiry && prepared.mtime_exact,
        ));
        if let (Some(every), Ok(rt)) = (self.sweep_interval, tokio::runtime::Handle::try_current())
        {
            rt.spawn(sweep_task(Arc::downgrade(&disk), every));
        }
        if self.operation_timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::invalid_config(
                "operation_timeout",
                "must be greater than zero (or None to wait as long as the disk takes)",
            ));
        }
        Ok(FileStore {
            disk,
            timeout: self.operation_timeout,
        })
    }
}

fn check_prefix(prefix: &str) -> Result<()> {
    let bad = prefix.len() > 64
        || prefix
            .chars()
            .any(|c| c == '/' || c == '\0' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(Error::invalid_config(
            "prefix",
            "at most 64 bytes, without `/`, NUL, whitespace or control characters",
        ));
    }
    Ok(())
}

async fn sweep_task(disk: Weak<Disk>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(disk) = disk.upgrade() else {
            return;
        };
        match tokio::task::spawn_blocking(move || gc::sweep(&disk)).await {
            Ok(Ok(report)) => {
                if report.deleted + report.stale_locks + report.stale_temp_files > 0 {
                    tracing::debug!(
                        scanned = report.scanned,
                        opened = report.opened,
                        deleted = report.deleted,
                        stale_locks = report.stale_locks,
                        stale_temp_files = report.stale_temp_files,
                        elapsed_ms = report.elapsed.as_millis() as u64,
                        "file store swept expired sessions"
                    );
                }
            }
            Ok(Err(failure)) => {
                let err = failure.into_error("gc");
                tracing::warn!(error = %err, source = ?std::error::Error::source(&err), "file store sweep failed; retrying at the next interval");
            }
            Err(err) => tracing::warn!(error = %err, "file store sweep did not finish"),
        }
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.disk.dir)
            .field("hash_ids", &self.disk.naming.hashed)
            .field("prefix", &self.disk.naming.prefix)
            .field("durable", &self.disk.durable)
            .field("mtime_expiry", &self.disk.mtime_expiry)
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// A store on `path` with the default settings; creates the directory
    /// (mode 0700) if it is missing.
    ///
    /// Same as `FileStore::builder().path(path).build()`; see
    /// [`FileStoreBuilder::build`] for the errors.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = sessionkit_file::FileStore::new(dir.path()).unwrap();
    /// assert_eq!(store.path(), dir.path());
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Result<FileStore> {
        FileStore::builder().path(path).build()
    }

    /// A store on [`FileStore::default_path`] with the default settings.
    ///
    /// The directory is created with mode 0700 if missing, and must be owned
    /// by this user and private to it (no access for group and others),
    /// because it sits in a directory that other users can write to. For
    /// production, give an explicit path that survives reboots.
    ///
    /// ```no_run
    /// let store = sessionkit_file::FileStore::from_default().unwrap();
    /// println!("sessions in {}", store.path().display());
    /// ```
    pub fn from_default() -> Result<FileStore> {
        FileStore::builder().build()
    }

    /// A builder for the settings.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = sessionkit_file::FileStore::builder().path(dir.path()).build().unwrap();
    /// # drop(store);
    /// ```
    pub fn builder() -> FileStoreBuilder {
        FileStoreBuilder::default()
    }

    /// The save path a store uses when none is given: `sessionkit` in
    /// `$XDG_RUNTIME_DIR` when that is an absolute path to a directory,
    /// otherwise `sessionkit-<uid>` in [`std::env::temp_dir`] (`$TMPDIR` or
    /// `/tmp`) when that is absolute.
    ///
    /// Both usually live in memory (tmpfs): sessions survive a restart of
    /// the app but not of the machine.
    ///
    /// # Errors
    ///
    /// [`SavePathUnavailable`](sessionkit_core::ErrorKind::SavePathUnavailable)
    /// when neither is usable.
    ///
    /// ```
    /// let path = sessionkit_file::FileStore::default_path().unwrap();
    /// assert!(path.is_absolute());
    /// ```
    pub fn default_path() -> Result<PathBuf> {
        savepath::default_path()
    }

    /// The save path.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = sessionkit_file::FileStore::new(dir.path()).unwrap();
    /// assert_eq!(store.path(), dir.path());
    /// ```
    pub fn path(&self) -> &Path {
        &self.disk.dir
    }

    /// Whether touches only set the mtime of session files (see
    /// [`FileStoreBuilder::mtime_expiry`]): `false` when it was turned off
    /// or the file system does not keep mtimes to the millisecond.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = sessionkit_file::FileStore::new(dir.path()).unwrap();
    /// println!("touches set only the mtime: {}", store.mtime_expiry());
    /// ```
    pub fn mtime_expiry(&self) -> bool {
        self.disk.mtime_expiry
    }

    /// Deletes every expired session now, and the lock and temporary files
    /// that crashes left behind; reports what it did.
    ///
    /// Costs one directory listing and one metadata read per session file;
    /// only the files whose mtime says they expired are opened (see
    /// [`GcReport`]). Runs on Tokio's blocking pool.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = sessionkit_file::FileStore::new(dir.path())?;
    /// let report = store.gc().await?;
    /// assert_eq!(report.deleted, 0);
    /// # Ok(()) }
    /// ```
    pub async fn gc(&self) -> Result<GcReport> {
        self.blocking("gc", gc::sweep).await
    }

    /// Runs `op` on the blocking pool (inline when no Tokio runtime runs).
    async fn blocking<T, F>(&self, operation: &'static str, op: F) -> Result<T>
    where
        F: FnOnce(&Disk) -> std::result::Result<T, Failure> + Send + 'static,
        T: Send + 'static,
    {
        let disk = self.disk.clone();
        let result = match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let task = rt.spawn_blocking(move || op(&disk));
                let joined = match self.timeout {
                    Some(limit) => tokio::time::timeout(limit, task).await.map_err(|_| {
                        tracing::warn!(
                            operation,
                            dir = %self.disk.dir.display(),
                            "file store operation timed out; is the save path's disk hung?"
                        );
                        Error::store_unavailable(
                            STORE,
                            operation,
                            std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                format!("the file operation did not finish within {limit:?}"),
                            ),
                        )
                    })?,
                    None => task.await,
                };
                joined.map_err(|e| Error::store_unavailable(STORE, operation, e))?
            }
            Err(_) => op(&disk),
        };
        result.map_err(|failure| failure.into_error(operation))
    }

    #[cfg(test)]
    pub(crate) fn disk(&self) -> &Arc<Disk> {
        &self.disk
    }
}

impl SessionStore for FileStore {
    fn name(&self) -> &'static str {
        STORE
    }

    fn owner_index(self: Arc<Self>) -> Option<Arc<dyn DynOwnerIndex>> {
        Some(self)
    }

    async fn load(&self, id: &SessionId, touch: Option<Touch>) -> Result<Option<Loaded>> {
        let id = *id;
        self.blocking("load", move |disk| disk.load(&id, touch))
            .await
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<Created> {
        let (id, record) = (*id, record.clone());
        self.blocking("create", move |disk| disk.create(&id, &record))
            .await
    }

    async fn apply(
        &self,
        id: &SessionId,
        delta: &Delta,
        fence: Option<Fence<'_>>,
    ) -> Result<Applied> {
        let (id, delta) = (*id, delta.clone());
        let fence = fence.map(|f| (*f.token, f.release));
        self.blocking("apply", move |disk| disk.apply(&id, &delta, fence))
            .await
    }

    async fn change_id(
        &self,
        old: &SessionId,
        new: &SessionId,
        fence: Option<&LockToken>,
    ) -> Result<IdChanged> {
        let (old, new, fence) = (*old, *new, fence.copied());
        self.blocking("change_id", move |disk| disk.change_id(&old, &new, fence))
            .await
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let id = *id;
        self.blocking("destroy", move |disk| disk.destroy(&id))
            .await
    }

    async fn lock(&self, id: &SessionId, ttl: Duration) -> Result<Locked> {
        let id = *id;
        self.blocking("lock", move |disk| disk.lock(&id, ttl)).await
    }

    async fn renew_lock(&self, id: &SessionId, token: &LockToken, ttl: Duration) -> Result<bool> {
        let (id, token) = (*id, *token);
        self.blocking("renew_lock", move |disk| disk.renew_lock(&id, &token, ttl))
            .await
    }

    async fn unlock(&self, id: &SessionId, token: &LockToken) -> Result<()> {
        let (id, token) = (*id, *token);
        self.blocking("unlock", move |disk| disk.unlock(&id, &token))
            .await
    }
}

/// One small index file per owner under `.owners/`, guarded by an owner
/// lock that works across processes; see the [crate docs](crate#owners).
impl OwnerIndex for FileStore {
    async fn set_owner(
        &self,
        id: &SessionId,
        owner: &Owner,
        handle: &SessionHandle,
        device: Option<&str>,
        cap: Option<OwnerCap>,
    ) -> Result<OwnerSet> {
        let (id, owner, handle) = (*id, owner.clone(), *handle);
        let device = device.map(str::to_owned);
        self.blocking("set_owner", move |disk| {
            disk.set_owner(&id, &owner, &handle, device.as_deref(), cap)
        })
        .await
    }

    async fn sessions_of(&self, owner: &Owner) -> Result<Vec<OwnedSession>> {
        let owner = owner.clone();
        self.blocking("sessions_of", move |disk| disk.sessions_of(&owner))
            .await
    }

    async fn revoke(&self, owner: &Owner, handle: &SessionHandle) -> Result<bool> {
        let (owner, handle) = (owner.clone(), *handle);
        let ended = self
            .blocking("revoke", move |disk| {
                disk.revoke_where(&owner, |h| *h == handle)
            })
            .await?;
        Ok(ended > 0)
    }

    async fn revoke_all(&self, owner: &Owner, except: Option<&SessionHandle>) -> Result<u64> {
        let (owner, except) = (owner.clone(), except.copied());
        self.blocking("revoke_all", move |disk| {
            disk.revoke_where(&owner, |h| Some(*h) != except)
        })
        .await
    }
}

impl ExpiredDeletion for FileStore {
    async fn delete_expired(&self) -> Result<u64> {
        Ok(self.gc().await?.deleted)
    }
}

impl Countable for FileStore {
    /// The number of session files, expired ones not yet swept included (an
    /// upper bound). Lists the directory; opens no file.
    async fn count(&self) -> Result<u64> {
        self.blocking("count", |disk| disk.count()).await
    }
}
