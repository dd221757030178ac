//! The blocking side: the files of one save path and every store operation on
//! them, each inside its session's stripe lock.
//!
//! Everything here blocks; the store runs it on Tokio's blocking pool. The
//! protocol is described in the crate docs; this module implements it.

use std::collections::HashMap;
use std::fs::{self, File, Metadata, OpenOptions, TryLockError};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use sessionkit_core::codec::{decode_record, encode_record};
use sessionkit_core::owner::Owner;
use sessionkit_core::record::{Delta, Meta, Record, Touch, now_ms};
use sessionkit_core::store::{Applied, Created, IdChanged, Loaded, Locked};
use sessionkit_core::{LockToken, SessionId};

use crate::fail::{Context as _, Failure, path_place, session_place};
use crate::name::{Name, Naming};
use crate::owners;

/// Suffix of session files.
pub(crate) const SESSION_SUFFIX: &str = ".session";
/// Suffix of session lock files.
pub(crate) const LOCK_SUFFIX: &str = ".lock";
/// Marks a file being written: `<stem>.tmp-<16 hex digits>`.
pub(crate) const TEMP_MARK: &str = ".tmp-";
/// The directory of the stripe lock files.
pub(crate) const STRIPES_DIR: &str = ".stripes";

/// Files larger than this are not sessions this store wrote (a session is
/// sent whole in every request; 64 MiB is far beyond any sane one).
const MAX_FILE: u64 = 64 << 20;

/// Latest mtime the store sets (2400-01-01): far enough for any expiry,
/// early enough for every file system's timestamp range.
const MAX_MTIME_MS: u64 = 13_569_465_600_000;

const LOCK_MAGIC: &[u8; 4] = b"SKL\x01";
const LOCK_LEN: usize = 4 + 16 + 8 + 4;

/// One save path and the locks this process holds in it.
pub(crate) struct Disk {
    pub(crate) dir: PathBuf,
    stripes_dir: PathBuf,
    /// The save path itself, opened for `fsync` after renames and unlinks.
    dir_handle: File,
    pub(crate) naming: Naming,
    pub(crate) durable: bool,
    /// Whether a file's mtime carries its live expiry (touches set only the
    /// mtime); otherwise touches rewrite the file.
    pub(crate) mtime_expiry: bool,
    /// The session locks held through this store, by file-name stem. Each
    /// keeps its lock file open with an `flock` on it: the proof, for every
    /// other process, that the holder is alive.
    held: Mutex<HashMap<String, Held>>,
}

struct Held {
    token: LockToken,
    expires: u64,
    /// Open, with an exclusive `flock`; closing it releases the lock's life.
    _file: File,
}

/// A session file read from disk.
pub(crate) struct Current {
    /// The record, with its expiry as it is in force (see [`Disk::effective`]).
    pub(crate) record: Record,
    /// The file it was read from, still open.
    file: File,
    /// Its mtime in Unix milliseconds.
    mtime: u64,
}

/// What a session file name holds.
pub(crate) enum Stored {
    /// No such file.
    Missing,
    /// A file that is not a session this store wrote (torn, foreign, a
    /// symbolic link…); it was logged and counts as absent.
    Foreign,
    /// A session.
    Found(Current),
}

/// A session lock as its lock file records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LockState {
    pub(crate) token: LockToken,
    pub(crate) expires: u64,
}

/// An exclusive `flock` on a stripe file, released when dropped (the file
/// is closed).
pub(crate) struct StripeGuard {
    _file: File,
}

/// The actions of one kind of lock file, for errors.
pub(crate) struct LockKind {
    pub(crate) open: &'static str,
    pub(crate) lock: &'static str,
    pub(crate) create: &'static str,
}

const STRIPE_LOCK: LockKind = LockKind {
    open: "open the stripe lock",
    lock: "lock the stripe lock",
    create: "create the stripes directory",
};

/// Milliseconds of a duration, saturating.
pub(crate) fn ms(d: Duration) -> u64 {
    sessionkit_core::record::duration_ms(d)
}

/// The mtime of `metadata` in Unix milliseconds (0 if unknown).
pub(crate) fn mtime_ms(metadata: &Metadata) -> u64 {
    metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, ms)
}

/// Sets the mtime of `file` to `at_ms` (capped at [`MAX_MTIME_MS`]).
pub(crate) fn set_mtime(file: &File, at_ms: u64) -> io::Result<()> {
    file.set_modified(UNIX_EPOCH + Duration::from_millis(at_ms.min(MAX_MTIME_MS)))
}

fn nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Whether `err` is the `ELOOP` that `O_NOFOLLOW` gives for a symbolic link.
fn is_symlink_error(err: &io::Error) -> bool {
    err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

/// Opens a file for reading, refusing symbolic links, without waiting: a
/// FIFO planted in the save path opens at once (and is then refused as no
/// regular file, or reads empty) instead of waiting for a writer with a
/// lock held that others wait on. Reads of regular files ignore the flag.
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nofollow() | rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
}

/// Creates a new file with mode 0600; fails if anything exists at `path`.
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nofollow())
        .open(path)
}

/// A random suffix for a temporary file.
pub(crate) fn random_suffix() -> String {
    let mut token = LockToken::generate().to_hex();
    token.truncate(16);
    token
}

fn encode_lock(state: &LockState) -> [u8; LOCK_LEN] {
    let mut out = [0u8; LOCK_LEN];
    out[..4].copy_from_slice(LOCK_MAGIC);
    out[4..20].copy_from_slice(state.token.as_bytes());
    out[20..28].copy_from_slice(&state.expires.to_le_bytes());
    // The holder's pid, for operators; the protocol never reads it.
    out[28..32].copy_from_slice(&std::process::id().to_le_bytes());
    out
}

fn decode_lock(bytes: &[u8]) -> Option<LockState> {
    if bytes.len() != LOCK_LEN || &bytes[..4] != LOCK_MAGIC {
        return None;
    }
    let mut token = [0u8; 16];
    token.copy_from_slice(&bytes[4..20]);
    let mut expires = [0u8; 8];
    expires.copy_from_slice(&bytes[20..28]);
    Some(LockState {
        token: LockToken::from_bytes(token),
        expires: u64::from_le_bytes(expires),
    })
}

impl Disk {
    pub(crate) fn new(
        dir: PathBuf,
        dir_handle: File,
        naming: Naming,
        durable: bool,
        mtime_expiry: bool,
    ) -> Disk {
        Disk {
            stripes_dir: dir.join(STRIPES_DIR),
            dir,
            dir_handle,
            naming,
            durable,
            mtime_expiry,
            held: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn session_path(&self, name: &Name) -> PathBuf {
        self.dir.join(format!("{}{SESSION_SUFFIX}", name.stem))
    }

    pub(crate) fn lock_path(&self, name: &Name) -> PathBuf {
        self.dir.join(format!("{}{LOCK_SUFFIX}", name.stem))
    }

    fn temp_path(&self, name: &Name) -> PathBuf {
        self.dir
            .join(format!("{}{TEMP_MARK}{}", name.stem, random_suffix()))
    }

    pub(crate) fn place(&self, name: &Name) -> String {
        session_place(&self.dir, &name.short)
    }

    // ----- stripes -----

    /// Takes the stripe lock of `index`: an exclusive `flock` on
    /// `.stripes/<index as 2 hex digits>`, through a file opened for this one
    /// critical section, so that it excludes other threads of this process
    /// as well as other processes.
    pub(crate) fn stripe(&self, index: usize) -> Result<StripeGuard, Failure> {
        let path = self.stripes_dir.join(format!("{index:02x}"));
        self.flock(&path, &self.stripes_dir, &STRIPE_LOCK)
    }

    /// Takes an exclusive `flock` on the lock file at `path` in `dir`
    /// (created empty if missing, and `dir` with it), through a file opened
    /// for this one critical section, so that it excludes other threads of
    /// this process as well as other processes.
    pub(crate) fn flock(
        &self,
        path: &Path,
        dir: &Path,
        kind: &LockKind,
    ) -> Result<StripeGuard, Failure> {
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(nofollow())
                .open(path)
        };
        let file = match open() {
            // The save path was removed and made again while the store ran
            // (or, for owner locks, this is their first use): make the lock
            // directory, so the store recovers by itself once its save path
            // exists (it never recreates the save path itself, whose absence
            // is an operator's error to see).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.dir.is_dir() => {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .recursive(true)
                    .create(dir)
                    .context(kind.create, || path_place(dir))?;
                open()
            }
            other => other,
        }
        .context(kind.open, || path_place(path))?;
        file.lock().context(kind.lock, || path_place(path))?;
        Ok(StripeGuard { _file: file })
    }

    /// The stripe locks of two sessions, taken in index order so that two
    /// `change_id`s in opposite directions cannot deadlock.
    pub(crate) fn stripes(
        &self,
        a: &Name,
        b: &Name,
    ) -> Result<(StripeGuard, Option<StripeGuard>), Failure> {
        let (x, y) = (a.stripe(), b.stripe());
        if x == y {
            return Ok((self.stripe(x)?, None));
        }
        let first = self.stripe(x.min(y))?;
        let second = self.stripe(x.max(y))?;
        Ok((first, Some(second)))
    }

    // ----- session files -----

    /// Reads the session file of `name`.
    pub(crate) fn read_session(&self, name: &Name) -> Result<Stored, Failure> {
        let path = self.session_path(name);
        let file = match open_read(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Stored::Missing),
            Err(e) if is_symlink_error(&e) => {
                self.foreign(name, "it is a symbolic link");
                return Ok(Stored::Foreign);
            }
            Err(e) => return Err(e).context("open", || self.place(name)),
        };
        let metadata = file.metadata().context("inspect", || self.place(name))?;
        if !metadata.is_file() {
            self.foreign(name, "it is not a regular file");
            return Ok(Stored::Foreign);
        }
        if metadata.len() > MAX_FILE {
            self.foreign(name, "it is larger than any session");
            return Ok(Stored::Foreign);
        }
        let mut bytes = Vec::with_capacity(metadata.len() as usize);
        (&file)
            .take(MAX_FILE + 1)
            .read_to_end(&mut bytes)
            .context("read", || self.place(name))?;
        let mut record = match decode_record(&bytes) {
            Ok(record) => record,
            Err(err) => {
                tracing::warn!(
                    session = %name.short,
                    store = "file",
                    dir = %self.dir.display(),
                    error = %err,
                    "session file does not decode (torn or foreign); treated as absent"
                );
                return Ok(Stored::Foreign);
            }
        };
        let mtime = mtime_ms(&metadata);
        record.meta = self.effective(record.meta, mtime);
        Ok(Stored::Found(Current {
            record,
            file,
            mtime,
        }))
    }

    fn foreign(&self, name: &Name, why: &str) {
        tracing::warn!(
            session = %name.short,
            store = "file",
            dir = %self.dir.display(),
            "session file is not one this store wrote ({why}); treated as absent"
        );
    }

    /// The metadata in force: with `mtime_expiry`, a touch moved the expiry
    /// into the mtime only, so the later of the two counts — but never past
    /// the absolute deadline. (Only touches move the mtime past the stored
    /// expiry, and touches only move it forward; a file copied without its
    /// mtime gets an older mtime, which the stored expiry then outweighs.)
    fn effective(&self, meta: Meta, mtime: u64) -> Meta {
        if !self.mtime_expiry || mtime <= meta.expires() {
            return meta;
        }
        let expires = match meta.deadline() {
            Some(deadline) => mtime.min(deadline).max(meta.expires()),
            None => mtime,
        };
        Meta::from_parts(meta.created(), meta.ttl_ms(), meta.deadline(), expires)
            .with_remembered(meta.remembered())
    }

    /// The live session of `name`, removing it (and its lock) if it has
    /// expired. Call with the stripe lock held.
    pub(crate) fn live(&self, name: &Name, now: u64) -> Result<Option<Current>, Failure> {
        match self.read_session(name)? {
            Stored::Found(current) if !current.record.meta.is_expired(now) => Ok(Some(current)),
            Stored::Found(_) => {
                self.remove_session(name)?;
                Ok(None)
            }
            Stored::Missing | Stored::Foreign => Ok(None),
        }
    }

    /// Writes `record` as the session of `name`, atomically: a temporary
    /// file in the same directory, its mtime set to the expiry, `fsync`,
    /// `rename` over the old file, `fsync` of the directory.
    pub(crate) fn write_session(&self, name: &Name, record: &Record) -> Result<(), Failure> {
        let bytes = encode_record(record);
        let temp = self.temp_path(name);
        let written = (|| {
            let mut file = create_new(&temp)?;
            file.write_all(&bytes)?;
            set_mtime(&file, record.meta.expires())?;
            if self.durable {
                file.sync_all()?;
            }
            fs::rename(&temp, self.session_path(name))
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written.context("write", || self.place(name))?;
        self.sync_dir()
    }

    /// Makes a refreshed expiry of `current` stick: by setting the mtime
    /// alone when it carries the expiry, by rewriting the file otherwise.
    fn persist_expiry(&self, name: &Name, current: &Current) -> Result<(), Failure> {
        if self.mtime_expiry {
            match set_mtime(&current.file, current.record.meta.expires()) {
                Ok(()) => return Ok(()),
                Err(err) => tracing::debug!(
                    session = %name.short,
                    error = %err,
                    "could not set the mtime of a session file; rewriting it instead"
                ),
            }
        }
        self.write_session(name, &current.record)
    }

    /// Removes the session file and the lock file of `name`; returns whether
    /// there was a session file.
    pub(crate) fn remove_session(&self, name: &Name) -> Result<bool, Failure> {
        let removed = remove(&self.session_path(name)).context("remove", || self.place(name))?;
        remove(&self.lock_path(name)).context("remove the lock of", || self.place(name))?;
        self.forget(&name.stem, None);
        Ok(removed)
    }

    pub(crate) fn sync_dir(&self) -> Result<(), Failure> {
        if !self.durable {
            return Ok(());
        }
        match self.dir_handle.sync_all() {
            // Some systems cannot fsync a directory; the rename is then as
            // durable as the system makes it.
            Err(e)
                if e.kind() == io::ErrorKind::InvalidInput
                    || e.kind() == io::ErrorKind::Unsupported =>
            {
                Ok(())
            }
            other => other.context("sync the directory", || path_place(&self.dir)),
        }
    }

    // ----- lock files -----

    /// The lock recorded for `name` and its lock file, open. A missing,
    /// unreadable or foreign lock file records no lock.
    fn lock_file(&self, name: &Name) -> Result<Option<(LockState, File)>, Failure> {
        let path = self.lock_path(name);
        let file = match open_read(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound || is_symlink_error(&e) => {
                return Ok(None);
            }
            Err(e) => return Err(e).context("open the lock of", || self.place(name)),
        };
        let mut bytes = Vec::with_capacity(LOCK_LEN);
        (&file)
            .take(LOCK_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .context("read the lock of", || self.place(name))?;
        Ok(decode_lock(&bytes).map(|state| (state, file)))
    }

    /// The lock of `name` if it is in force: recorded, unexpired, and its
    /// holder alive — it still has the lock file open with an `flock` on it.
    /// If this process can take that `flock`, the holder has died (or
    /// dropped its store) and the lock is free, whatever its TTL says.
    pub(crate) fn lock_in_force(
        &self,
        name: &Name,
        now: u64,
    ) -> Result<Option<LockState>, Failure> {
        let Some((state, file)) = self.lock_file(name)? else {
            return Ok(None);
        };
        if state.expires <= now {
            return Ok(None);
        }
        match file.try_lock() {
            Err(TryLockError::WouldBlock) => Ok(Some(state)),
            // Ours now, so nobody holds it: the holder is gone. Closing the
            // file releases the test lock.
            Ok(()) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e).context("test the lock of", || self.place(name)),
        }
    }

    /// The lock of `name` if `token` owns it and it has not expired.
    fn owned(
        &self,
        name: &Name,
        token: &LockToken,
        now: u64,
    ) -> Result<Option<LockState>, Failure> {
        Ok(self
            .lock_file(name)?
            .map(|(state, _)| state)
            .filter(|state| state.token == *token && state.expires > now))
    }

    /// Records `state` as the lock of `name`, atomically (a temporary file
    /// renamed over the lock file), and keeps the new lock file open with an
    /// exclusive `flock` in this process's table of held locks. The `flock`
    /// is taken before the rename, so the lock is never visible without it.
    fn write_lock(&self, name: &Name, state: LockState) -> Result<(), Failure> {
        let temp = self.temp_path(name);
        let written = (|| {
            let mut file = create_new(&temp)?;
            file.write_all(&encode_lock(&state))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(io::Error::other(
                        "a new lock file is locked by someone else",
                    ));
                }
                Err(TryLockError::Error(e)) => return Err(e),
            }
            // Lock files are not fsynced: after a crash no holder is alive,
            // so every lock is free whatever the file holds.
            fs::rename(&temp, self.lock_path(name))?;
            Ok(file)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        let file = written.context("write the lock of", || self.place(name))?;
        self.held_table().insert(
            name.stem.clone(),
            Held {
                token: state.token,
                expires: state.expires,
                _file: file,
            },
        );
        Ok(())
    }

    /// Deletes the lock file of `name` and forgets the lock if this process
    /// holds it with `token`.
    fn release(&self, name: &Name, token: &LockToken) -> Result<(), Failure> {
        remove(&self.lock_path(name)).context("remove the lock of", || self.place(name))?;
        self.forget(&name.stem, Some(token));
        Ok(())
    }

    fn held_table(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        // Every table operation leaves it consistent before it could panic.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the held lock file of `stem` (if `token` is given, only when
    /// the lock held is that token's).
    fn forget(&self, stem: &str, token: Option<&LockToken>) {
        let mut table = self.held_table();
        if table
            .get(stem)
            .is_some_and(|held| token.is_none_or(|t| held.token == *t))
        {
            table.remove(stem);
        }
    }

    /// Closes the lock files of every held lock that has expired: nobody
    /// needs proof that their holder is alive any more.
    pub(crate) fn prune_held(&self, now: u64) {
        self.held_table().retain(|_, held| held.expires > now);
    }

    /// The number of locks held through this store.
    #[cfg(test)]
    pub(crate) fn held_count(&self) -> usize {
        self.held_table().len()
    }

    // ----- operations -----

    /// `SessionStore::load`. Reads without the stripe lock: files are only
    /// ever replaced by `rename`, so an open sees one whole version. Only a
    /// due touch takes the lock, and re-reads under it.
    pub(crate) fn load(
        &self,
        id: &SessionId,
        touch: Option<Touch>,
    ) -> Result<Option<Loaded>, Failure> {
        let name = self.naming.of(id);
        let now = now_ms();
        let Stored::Found(current) = self.read_session(&name)? else {
            return Ok(None);
        };
        if current.record.meta.is_expired(now) {
            return Ok(None);
        }
        let Some(touch) = touch.filter(|t| t.is_due(&current.record.meta, now)) else {
            return Ok(Some(Loaded {
                record: current.record,
                touched: false,
            }));
        };
        drop(current);

        let _stripe = self.stripe(name.stripe())?;
        let now = now_ms();
        let Some(mut current) = self.live(&name, now)? else {
            return Ok(None);
        };
        let touched = current.record.meta.touch_if_due(now, touch);
        if touched {
            self.persist_expiry(&name, &current)?;
        }
        Ok(Some(Loaded {
            record: current.record,
            touched,
        }))
    }

    /// `SessionStore::create`.
    pub(crate) fn create(&self, id: &SessionId, record: &Record) -> Result<Created, Failure> {
        let name = self.naming.of(id);
        let _stripe = self.stripe(name.stripe())?;
        let now = now_ms();
        if self.live(&name, now)?.is_some() {
            return Ok(Created::IdTaken);
        }
        // No live session, so any lock file left is stale.
        remove(&self.lock_path(&name)).context("remove the lock of", || self.place(&name))?;
        self.forget(&name.stem, None);
        if record.meta.is_expired(now) {
            // Born expired: accepted and gone at once, as in a TTL store.
            return Ok(Created::Created);
        }
        self.write_session(&name, record)?;
        Ok(Created::Created)
    }

    /// `SessionStore::apply`; `fence` is the token and whether to release.
    pub(crate) fn apply(
        &self,
        id: &SessionId,
        delta: &Delta,
        fence: Option<(LockToken, bool)>,
    ) -> Result<Applied, Failure> {
        let name = self.naming.of(id);
        let _stripe = self.stripe(name.stripe())?;
        let now = now_ms();
        let Some(current) = self.live(&name, now)? else {
            return Ok(Applied::Gone);
        };
        if let Some((token, _)) = &fence
            && self.owned(&name, token, now)?.is_none()
        {
            return Ok(Applied::LockLost);
        }
        let mut record = current.record;
        delta.apply_to(&mut record, now);
        self.write_session(&name, &record)?;
        if let Some((token, true)) = fence {
            self.release(&name, &token)?;
        }
        Ok(Applied::Applied(record.meta))
    }

    /// `SessionStore::change_id`.
    ///
    /// The data moves with one `rename`, so a crash leaves the session under
    /// the old id or the new one, never both and never neither. The expiry
    /// is refreshed at the old name first (a touch), then the file moves.
    pub(crate) fn change_id(
        &self,
        old: &SessionId,
        new: &SessionId,
        fence: Option<LockToken>,
    ) -> Result<IdChanged, Failure> {
        // An owned session's index entry must follow it, under its owner's
        // lock, which is taken before any stripe: so the stripes are let go,
        // the owner lock taken and the stripes taken again (see `owners`).
        let mut owner_lock: Option<(Owner, StripeGuard)> = None;
        loop {
            let held = owner_lock.as_ref().map(|(owner, _)| owner);
            match self.change_id_with(old, new, fence, held)? {
                Moved::Done(changed) => return Ok(changed),
                Moved::NeedsOwner(owner) => {
                    // Never two owner locks at once.
                    drop(owner_lock.take());
                    let guard = self.owner_lock(&self.owner_files(&owner))?;
                    owner_lock = Some((owner, guard));
                }
            }
        }
    }

    /// One attempt at `change_id`, holding the lock of `held_owner` (if
    /// any); asks for the owner lock of an owned session if it is not the
    /// one held.
    fn change_id_with(
        &self,
        old: &SessionId,
        new: &SessionId,
        fence: Option<LockToken>,
        held_owner: Option<&Owner>,
    ) -> Result<Moved, Failure> {
        let from = self.naming.of(old);
        let to = self.naming.of(new);
        let _stripes = self.stripes(&from, &to)?;
        let now = now_ms();
        if old == new {
            return Ok(Moved::Done(match self.live(&from, now)? {
                Some(_) => IdChanged::IdTaken,
                None => IdChanged::Gone,
            }));
        }
        let Some(mut current) = self.live(&from, now)? else {
            return Ok(Moved::Done(IdChanged::Gone));
        };
        if self.live(&to, now)?.is_some() {
            return Ok(Moved::Done(IdChanged::IdTaken));
        }
        if let Some(token) = &fence
            && self.owned(&from, token, now)?.is_none()
        {
            return Ok(Moved::Done(IdChanged::LockLost));
        }
        if let Some((owner, handle)) = owners::carried(&current.record) {
            if held_owner != Some(&owner) {
                return Ok(Moved::NeedsOwner(owner));
            }
            // Listed under the new name before it moves there.
            self.index_moved(&owner, &handle, &to)?;
        }
        current.record.meta.refresh(now);
        self.persist_expiry(&from, &current)?;
        drop(current.file);
        fs::rename(self.session_path(&from), self.session_path(&to))
            .context("move", || self.place(&from))?;
        match fence {
            // The lock file moves as it is — same inode, so the holder's
            // flock moves too; same token and expiry.
            Some(token) => {
                fs::rename(self.lock_path(&from), self.lock_path(&to))
                    .context("move the lock of", || self.place(&from))?;
                let mut table = self.held_table();
                if let Some(held) = table.remove(&from.stem)
                    && held.token == token
                {
                    table.insert(to.stem.clone(), held);
                }
            }
            // An unfenced move leaves every lock behind, as it would be on
            // a destroyed session.
            None => {
                remove(&self.lock_path(&from))
                    .context("remove the lock of", || self.place(&from))?;
                remove(&self.lock_path(&to)).context("remove the lock of", || self.place(&to))?;
                self.forget(&from.stem, None);
                self.forget(&to.stem, None);
            }
        }
        self.sync_dir()?;
        Ok(Moved::Done(IdChanged::Changed(current.record.meta)))
    }

    /// `SessionStore::destroy`.
    pub(crate) fn destroy(&self, id: &SessionId) -> Result<(), Failure> {
        let name = self.naming.of(id);
        let _stripe = self.stripe(name.stripe())?;
        if self.remove_session(&name)? {
            self.sync_dir()?;
        }
        Ok(())
    }

    /// `SessionStore::lock`.
    pub(crate) fn lock(&self, id: &SessionId, ttl: Duration) -> Result<Locked, Failure> {
        let name = self.naming.of(id);
        let _stripe = self.stripe(name.stripe())?;
        let now = now_ms();
        self.prune_held(now);
        let Some(mut current) = self.live(&name, now)? else {
            // A lock file without a live session is stale.
            remove(&self.lock_path(&name)).context("remove the lock of", || self.place(&name))?;
            return Ok(Locked::Absent);
        };
        if self.lock_in_force(&name, now)?.is_some() {
            return Ok(Locked::Held);
        }
        // A session is not idle while a request holds its lock.
        if current.record.meta.touch_if_due(now, Touch::always()) {
            self.persist_expiry(&name, &current)?;
        }
        let token = LockToken::generate();
        self.write_lock(
            &name,
            LockState {
                token,
                expires: now.saturating_add(ms(ttl)),
            },
        )?;
        Ok(Locked::Acquired {
            token,
            record: current.record,
        })
    }

    /// `SessionStore::renew_lock`.
    pub(crate) fn renew_lock(
        &self,
        id: &SessionId,
        token: &LockToken,
        ttl: Duration,
    ) -> Result<bool, Failure> {
        let name = self.naming.of(id);
        let _stripe = self.stripe(name.stripe())?;
        let now = now_ms();
        let Some(mut current) = self.live(&name, now)? else {
            return Ok(false);
        };
        if self.owned(&name, token, now)?.is_none() {
            return Ok(false);
        }
        if current.record.meta.touch_if_due(now, Touch::always()) {
            self.persist_expiry(&name, &current)?;
        }
        self.write_lock(
            &name,
            LockState {
                token: *token,
                expires: now.saturating_add(ms(ttl)),
            },
        )?;
        Ok(true)
    }

    /// `SessionStore::unlock`.
    pub(crate) fn unlock(&self, id: &SessionId, token: &LockToken) -> Result<(), Failure> {
        let name = self.naming.of(id);
        let _stripe = self.stripe(name.stripe())?;
        if let Some((state, _)) = self.lock_file(&name)?
            && state.token == *token
        {
            self.release(&name, token)?;
            return Ok(());
        }
        self.forget(&name.stem, Some(token));
        Ok(())
    }

    /// `Countable::count`: the session files in the save path, expired ones
    /// not yet swept included. Reads the directory only.
    pub(crate) fn count(&self) -> Result<u64, Failure> {
        let mut count = 0;
        let entries = fs::read_dir(&self.dir).context("list", || path_place(&self.dir))?;
        for entry in entries {
            let entry = entry.context("list", || path_place(&self.dir))?;
            if let Some(stem) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(SESSION_SUFFIX))
                && self.naming.parse(stem).is_some()
            {
                count += 1;
            }
        }
        Ok(count)
    }

    // ----- for the sweep -----

    /// Deletes the session of `name` if it has expired (or is not a session
    /// at all), under its stripe lock; returns what it found. Repairs an
    /// mtime that lags behind the stored expiry, so the next sweep does not
    /// open the file again.
    pub(crate) fn collect(&self, name: &Name, now: u64) -> Result<Collected, Failure> {
        let _stripe = self.stripe(name.stripe())?;
        match self.read_session(name)? {
            Stored::Missing => Ok(Collected::Missing),
            Stored::Foreign => {
                self.remove_session(name)?;
                Ok(Collected::Deleted)
            }
            Stored::Found(current) if current.record.meta.is_expired(now) => {
                self.remove_session(name)?;
                Ok(Collected::Deleted)
            }
            Stored::Found(current) => {
                let expires = current.record.meta.expires();
                if current.mtime < expires.min(MAX_MTIME_MS) {
                    set_mtime(&current.file, expires)
                        .context("set the mtime of", || self.place(name))?;
                }
                Ok(Collected::Kept)
            }
        }
    }

    /// Removes the lock file of `name` if its session file is gone.
    pub(crate) fn collect_lock(&self, name: &Name) -> Result<bool, Failure> {
        let _stripe = self.stripe(name.stripe())?;
        match fs::symlink_metadata(self.session_path(name)) {
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                remove(&self.lock_path(name)).context("remove the lock of", || self.place(name))
            }
            Err(e) => Err(e).context("inspect", || self.place(name)),
        }
    }

    /// Removes a temporary file of `name` left by a crash. Under the stripe
    /// lock no write of that session is in flight, so any temporary file of
    /// it is garbage.
    pub(crate) fn collect_temp(&self, name: &Name, file_name: &str) -> Result<bool, Failure> {
        let _stripe = self.stripe(name.stripe())?;
        remove(&self.dir.join(file_name)).context("remove a temporary file of", || self.place(name))
    }
}

/// What one attempt at `change_id` did.
enum Moved {
    Done(IdChanged),
    /// The session carries this owner, whose lock must be held.
    NeedsOwner(Owner),
}

/// What [`Disk::collect`] found.
pub(crate) enum Collected {
    Missing,
    Kept,
    Deleted,
}

/// Removes a file; returns whether it was there.
fn remove(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_state_round_trips_and_rejects_garbage() {
        let state = LockState {
            token: LockToken::generate(),
            expires: 1_234_567,
        };
        let bytes = encode_lock(&state);
        assert_eq!(decode_lock(&bytes), Some(state));
        assert_eq!(decode_lock(&bytes[..LOCK_LEN - 1]), None);
        let mut bad = bytes;
        bad[0] = b'X';
        assert_eq!(decode_lock(&bad), None);
        assert_eq!(decode_lock(b""), None);
    }
}
