//! The file store's owner index: one small file per owner, listing that
//! owner's sessions as `handle → session file name`, guarded by an owner
//! lock that works across processes.
//!
//! # Files
//!
//! ```text
//! <save path>/.owners/
//!   .locks/00 … ff          256 empty files; their flocks are the owner locks
//!   <prefix><owner>.owner   one owner's index (<owner>: hex SHA-256 of the owner)
//!   <prefix><owner>.tmp     its next version while it is written
//! ```
//!
//! An index file is a header line and one line per entry, `<handle>
//! <session file stem>`; it is written like a session file (a temporary
//! file, `fsync` when the store is durable, `rename`, `fsync` of the
//! directory), so a reader sees a whole version. The owner string itself
//! is never in a file name (nor in a log line); what is read back from an
//! index file is validated like a name found on disk (a handle of 32 hex
//! digits, a stem this store could have written) before it names a file.
//!
//! # The one lock order
//!
//! **Owner lock first, then session stripes**, never the other way round,
//! and never two owner locks at once. The owner lock of an owner is an
//! exclusive `flock` on `.owners/.locks/<first byte of the owner's hash>`,
//! through a file opened for that one critical section (like a stripe, so
//! it excludes threads of this process as well as other processes); the
//! owner locks are a set of their own, distinct from the session stripes,
//! so taking one never conflicts with a stripe already held.
//!
//! - `set_owner`, `sessions_of`, `revoke` and `revoke_all` take the
//!   owner's lock for the whole operation and, inside it, one session
//!   stripe at a time (the session being given the owner, then each
//!   session being ended).
//! - `change_id` takes its two stripes (in index order) as always; if the
//!   session carries an owner, it lets them go, takes that owner's lock,
//!   takes the stripes again and checks everything again (the owner may
//!   have changed meanwhile: then it starts over with the new owner's
//!   lock, never holding two). The entry of the moved session is added
//!   under its new name before the file moves.
//! - Reads, writes, locks, destroys and the sweep take no owner lock.
//!
//! So no operation waits for an owner lock while it holds a stripe, and
//! no two owner operations can deadlock, within a process or across
//! processes.
//!
//! # What the index promises
//!
//! Every live session that carries an owner and a handle is listed in that
//! owner's index under that handle and its current file name: an entry is
//! always written *before* the session carries it (`set_owner`) or moves
//! to it (`change_id`), so a crash at any point leaves at worst an entry
//! too many, never a session missing. An entry is *stale* when its session
//! is gone, expired, or no longer carries that owner and handle (given
//! another owner, destroyed, swept, moved): stale entries are recognised
//! by reading the session itself and dropped whenever the owner's index is
//! used, so they never outnumber what ended since its last use.
//!
//! Within one owner lock, the sessions carrying that owner can only go
//! away (end or get another owner), never arrive: so the cap's count, the
//! sessions ended for it and the write of the new owner are one atomic step
//! for every process sharing the save path. The victims are ended (and the
//! directory synced) before the new session carries the owner, so a crash
//! or an I/O error in between leaves the login undone, never the owner
//! over the cap.
//!
//! A torn or corrupt index file (a machine crash without durable writes,
//! tampering) is logged at `warn` (with the first 8 hex digits of its name,
//! never the owner) and rebuilt: its entries that still parse are kept, and
//! the save path is scanned once for live sessions that carry the owner.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use sessionkit_core::SessionId;
use sessionkit_core::codec::decode_value;
use sessionkit_core::owner::{
    OwnedSession, Owner, OwnerCap, OwnerSet, SessionHandle, WhenFull, device_in, owner_delta,
};
use sessionkit_core::record::{Record, now_ms};

use crate::disk::{Disk, LockKind, SESSION_SUFFIX, Stored, StripeGuard, create_new, open_read};
use crate::fail::{Context as _, Failure, path_place};
use crate::name::Name;

/// The reserved entries the core keeps a session's owner and handle in
/// (`sessionkit_core::owner`); their values are JSON strings.
pub(crate) const OWNER_KEY: &str = "\u{1}owner";
pub(crate) const HANDLE_KEY: &str = "\u{1}handle";

/// The directory of the owner indexes, in the save path.
pub(crate) const OWNERS_DIR: &str = ".owners";
/// The directory of the owner locks, in [`OWNERS_DIR`].
const LOCKS_DIR: &str = ".locks";
/// The suffix of an index file.
const INDEX_SUFFIX: &str = ".owner";
/// The suffix of an index file being written.
const INDEX_TEMP_SUFFIX: &str = ".tmp";
/// The first line of every index file.
const HEADER: &str = "sessionkit-owner-index 1\n";
/// Index files larger than this are not indexes this store wrote (an entry
/// is under 200 bytes).
const MAX_INDEX: u64 = 16 << 20;

const OWNER_LOCK: LockKind = LockKind {
    open: "open the owner lock",
    lock: "lock the owner lock",
    create: "create the owners directory",
};

/// The owner and handle a session carries, if it has an owner.
pub(crate) fn carried(record: &Record) -> Option<(Owner, SessionHandle)> {
    let text = |key| -> Option<String> { decode_value(record.entries.get(key)?).ok() };
    let owner = Owner::new(text(OWNER_KEY)?).ok()?;
    let handle = SessionHandle::parse(&text(HANDLE_KEY)?).ok()?;
    Some((owner, handle))
}

/// One owner's files: its index, the index's temporary file, its lock.
pub(crate) struct OwnerFiles {
    dir: PathBuf,
    index: PathBuf,
    temp: PathBuf,
    lock: PathBuf,
    locks_dir: PathBuf,
    /// The first 8 hex digits of the owner's hash: the only form of the
    /// owner that may be logged.
    tag: String,
}

/// An index entry: a session file of the owner, by handle.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Entry {
    handle: SessionHandle,
    name: Name,
}

/// An entry whose session is live and carries the owner and the handle.
struct Listed {
    entry: Entry,
    session: OwnedSession,
}

/// The owner's index, checked against the sessions.
struct Checked {
    live: Vec<Listed>,
    /// Entries whose session looked expired when the caller could not
    /// confirm it under the session's stripe: kept, neither listed nor
    /// counted.
    kept: Vec<Entry>,
    /// Whether the file on disk differs from `live` (stale entries dropped,
    /// a corrupt file rebuilt), so that it is worth writing back.
    changed: bool,
}

/// What an index entry names, read without the session's stripe.
enum Read {
    /// A live session of the owner under the entry's handle.
    Live(OwnedSession),
    /// The owner's session under that handle, past its expiry by this read.
    LooksExpired,
    /// Anything else: no session, or another owner's or handle's.
    Stale,
}

/// What `record`, the session an index entry names, says of the entry.
fn read_of(owner: &Owner, entry: &Entry, record: &Record, now: u64) -> Read {
    if carried(record).as_ref() != Some(&(owner.clone(), entry.handle)) {
        return Read::Stale;
    }
    let meta = &record.meta;
    if meta.is_expired(now) {
        return Read::LooksExpired;
    }
    Read::Live(OwnedSession::new(
        entry.handle,
        meta.created(),
        meta.expires().saturating_sub(meta.ttl_ms()),
        meta.expires(),
        device_in(&record.entries),
    ))
}

impl Checked {
    fn entries(&self) -> Vec<Entry> {
        let live = self.live.iter().map(|l| l.entry.clone());
        live.chain(self.kept.iter().cloned()).collect()
    }

    /// The owner's sessions as the list shows them: one per handle (should
    /// a handle stand on several files, the one that lives longest), least
    /// recently used first, ties broken by handle.
    fn sessions(&self, skip: impl Fn(&Listed) -> bool) -> Vec<OwnedSession> {
        let mut by_handle: BTreeMap<SessionHandle, &OwnedSession> = BTreeMap::new();
        for listed in self.live.iter().filter(|l| !skip(l)) {
            let best = by_handle
                .entry(listed.entry.handle)
                .or_insert(&listed.session);
            if listed.session.expires > best.expires {
                *best = &listed.session;
            }
        }
        let mut sessions: Vec<OwnedSession> = by_handle.into_values().cloned().collect();
        sessions.sort_by_key(|s| (s.last_seen, s.handle));
        sessions
    }
}

impl Disk {
    /// The files of `owner`'s index.
    pub(crate) fn owner_files(&self, owner: &Owner) -> OwnerFiles {
        let digest = Sha256::digest(owner.as_str().as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let dir = self.dir.join(OWNERS_DIR);
        let locks_dir = dir.join(LOCKS_DIR);
        let stem = format!("{}{hex}", self.naming.prefix);
        OwnerFiles {
            index: dir.join(format!("{stem}{INDEX_SUFFIX}")),
            temp: dir.join(format!("{stem}{INDEX_TEMP_SUFFIX}")),
            lock: locks_dir.join(&hex[..2]),
            locks_dir,
            dir,
            tag: hex[..8].to_owned(),
        }
    }

    /// Takes the owner lock of `files` (see the module docs for the order).
    pub(crate) fn owner_lock(&self, files: &OwnerFiles) -> Result<StripeGuard, Failure> {
        self.flock(&files.lock, &files.locks_dir, &OWNER_LOCK)
    }

    fn index_place(&self, files: &OwnerFiles) -> String {
        format!("the owner index {} in {}", files.tag, self.dir.display())
    }

    /// The entries of the index file that parse, and whether the whole
    /// file did (`false`: torn or corrupt — a symbolic link, not a regular
    /// file, too large, a bad line). A missing file is whole and empty.
    fn read_index(&self, files: &OwnerFiles) -> Result<(Vec<Entry>, bool), Failure> {
        let file = match open_read(&files.index) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), true)),
            // A symbolic link (ELOOP) or anything else that is no index file.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                return Ok((Vec::new(), false));
            }
            Err(e) => return Err(e).context("open", || self.index_place(files)),
        };
        let metadata = file
            .metadata()
            .context("inspect", || self.index_place(files))?;
        if !metadata.is_file() || metadata.len() > MAX_INDEX {
            return Ok((Vec::new(), false));
        }
        let mut bytes = Vec::with_capacity(metadata.len() as usize);
        (&file)
            .take(MAX_INDEX + 1)
            .read_to_end(&mut bytes)
            .context("read", || self.index_place(files))?;
        Ok(self.parse_index(&bytes))
    }

    /// Parses an index file: the entries that parse, and whether all did.
    fn parse_index(&self, bytes: &[u8]) -> (Vec<Entry>, bool) {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return (Vec::new(), false);
        };
        let Some(body) = text.strip_prefix(HEADER) else {
            return (Vec::new(), false);
        };
        let mut whole = true;
        let mut entries = Vec::new();
        let mut seen = HashSet::new();
        let mut lines = body.split('\n').peekable();
        while let Some(line) = lines.next() {
            if lines.peek().is_none() {
                // After the last newline: empty unless the file is torn.
                whole &= line.is_empty();
                break;
            }
            let entry = line.split_once(' ').and_then(|(handle, stem)| {
                Some(Entry {
                    handle: SessionHandle::parse(handle).ok()?,
                    name: self.naming.parse(stem)?,
                })
            });
            match entry {
                Some(entry) => {
                    // A set: an index of many entries costs in proportion
                    // to them, not to their square.
                    if seen.insert(entry.clone()) {
                        entries.push(entry);
                    }
                }
                None => whole = false,
            }
        }
        (entries, whole)
    }

    /// Writes `entries` as the index of `files`, atomically (and durably
    /// when the store is); no entries removes the file. Call with the
    /// owner lock held: its temporary file has a fixed name.
    fn write_index(&self, files: &OwnerFiles, entries: &[Entry]) -> Result<(), Failure> {
        if entries.is_empty() {
            let removed = match fs::remove_file(&files.index) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(e).context("remove", || self.index_place(files)),
            };
            if removed {
                self.sync_owners_dir(files)?;
            }
            return Ok(());
        }
        let mut text = String::with_capacity(HEADER.len() + entries.len() * 100);
        text.push_str(HEADER);
        for entry in entries {
            text.push_str(&entry.handle.to_string());
            text.push(' ');
            text.push_str(&entry.name.stem);
            text.push('\n');
        }
        let written = (|| {
            // Left by a crash, or by a write that failed: ours to replace,
            // as the owner lock is held.
            match fs::remove_file(&files.temp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut file = create_new(&files.temp)?;
            file.write_all(text.as_bytes())?;
            if self.durable {
                file.sync_all()?;
            }
            fs::rename(&files.temp, &files.index)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&files.temp);
        }
        written.context("write", || self.index_place(files))?;
        self.sync_owners_dir(files)
    }

    fn sync_owners_dir(&self, files: &OwnerFiles) -> Result<(), Failure> {
        if !self.durable {
            return Ok(());
        }
        let dir = fs::File::open(&files.dir).context("open", || path_place(&files.dir))?;
        match dir.sync_all() {
            Err(e)
                if e.kind() == io::ErrorKind::InvalidInput
                    || e.kind() == io::ErrorKind::Unsupported =>
            {
                Ok(())
            }
            other => other.context("sync the directory", || path_place(&files.dir)),
        }
    }

    /// The entries of live sessions that carry `owner`, found by reading
    /// every session file of the save path: how a corrupt index is rebuilt.
    fn scan_for(&self, owner: &Owner, now: u64) -> Result<Vec<Entry>, Failure> {
        let mut found = Vec::new();
        let listing = fs::read_dir(&self.dir).context("list", || path_place(&self.dir))?;
        for item in listing {
            let item = item.context("list", || path_place(&self.dir))?;
            let Some(name) = item
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(SESSION_SUFFIX))
                .and_then(|stem| self.naming.parse(stem))
            else {
                continue;
            };
            if let Stored::Found(current) = self.read_session(&name)?
                && !current.record.meta.is_expired(now)
                && let Some((carrier, handle)) = carried(&current.record)
                && carrier == *owner
            {
                found.push(Entry { handle, name });
            }
        }
        Ok(found)
    }

    /// The session of an index entry as the list shows it, if it is live
    /// and still carries that owner and handle; `None` marks the entry
    /// stale. Takes no lock: session files are only replaced by `rename`.
    fn listed(&self, owner: &Owner, entry: &Entry, now: u64) -> Result<Read, Failure> {
        let Stored::Found(current) = self.read_session(&entry.name)? else {
            return Ok(Read::Stale);
        };
        Ok(read_of(owner, entry, &current.record, now))
    }

    /// The owner's index checked against the sessions (the owner lock is
    /// held); a corrupt file is logged and rebuilt.
    fn checked(
        &self,
        owner: &Owner,
        files: &OwnerFiles,
        now: u64,
        stripes_held: bool,
    ) -> Result<Checked, Failure> {
        let (mut entries, whole) = self.read_index(files)?;
        if !whole {
            tracing::warn!(
                owner_index = %files.tag,
                store = "file",
                dir = %self.dir.display(),
                "owner index file is torn or corrupt; rebuilding it from the sessions in the save path"
            );
            let mut seen: HashSet<Entry> = entries.iter().cloned().collect();
            for entry in self.scan_for(owner, now)? {
                if seen.insert(entry.clone()) {
                    entries.push(entry);
                }
            }
        }
        let mut checked = Checked {
            live: Vec::with_capacity(entries.len()),
            kept: Vec::new(),
            changed: !whole,
        };
        for entry in entries {
            let read = match self.listed(owner, &entry, now)? {
                // A write that found the session live just before its expiry
                // may be renewing it this moment, under its stripe: only
                // there is "expired" final (and `live` then removes the
                // file, so that it cannot come back unlisted).
                Read::LooksExpired if !stripes_held => {
                    let _stripe = self.stripe(entry.name.stripe())?;
                    match self.live(&entry.name, now)? {
                        Some(current) => read_of(owner, &entry, &current.record, now),
                        None => Read::Stale,
                    }
                }
                read => read,
            };
            match read {
                Read::Live(session) => checked.live.push(Listed { entry, session }),
                Read::LooksExpired => checked.kept.push(entry),
                Read::Stale => checked.changed = true,
            }
        }
        Ok(checked)
    }

    /// Ends the session of `entry` if it is live and still carries `owner`
    /// and the entry's handle, under its stripe (the owner lock is held);
    /// returns whether it did. Its lock goes with it, so a request holding
    /// it fails its commit as "session gone".
    fn end_owned(&self, owner: &Owner, entry: &Entry) -> Result<bool, Failure> {
        let _stripe = self.stripe(entry.name.stripe())?;
        let Some(current) = self.live(&entry.name, now_ms())? else {
            return Ok(false);
        };
        if carried(&current.record).as_ref() != Some(&(owner.clone(), entry.handle)) {
            return Ok(false);
        }
        drop(current);
        self.remove_session(&entry.name)
    }

    /// `OwnerIndex::set_owner`.
    pub(crate) fn set_owner(
        &self,
        id: &SessionId,
        owner: &Owner,
        handle: &SessionHandle,
        device: Option<&str>,
        cap: Option<OwnerCap>,
    ) -> Result<OwnerSet, Failure> {
        let files = self.owner_files(owner);
        let _owner = self.owner_lock(&files)?;
        let this = self.naming.of(id);
        let now = now_ms();
        let checked = self.checked(owner, &files, now, false)?;
        // The owner's other sessions (another file and another handle),
        // least recently used first.
        let others = checked.sessions(|l| l.entry.name == this || l.entry.handle == *handle);
        let over = cap.map_or(0, |cap| {
            (others.len() + 1).saturating_sub(cap.max.get() as usize)
        });
        if over > 0 && cap.is_some_and(|c| c.when_full == WhenFull::Refuse) {
            return Ok(OwnerSet::Full);
        }
        {
            let _stripe = self.stripe(this.stripe())?;
            if self.live(&this, now)?.is_none() {
                return Ok(OwnerSet::Gone);
            }
        }
        // The entry first: a crash after it leaves a stale entry, never a
        // session of the owner missing from the index.
        let mut entries = checked.entries();
        let entry = Entry {
            handle: *handle,
            name: this.clone(),
        };
        if !entries.contains(&entry) {
            entries.push(entry);
            self.write_index(&files, &entries)?;
        } else if checked.changed {
            self.write_index(&files, &entries)?;
        }
        // Then the least recently used others make room.
        let mut ended = Vec::with_capacity(over);
        for victim in others.iter().take(over) {
            let mut any = false;
            for listed in checked
                .live
                .iter()
                .filter(|l| l.entry.handle == victim.handle)
            {
                any |= self.end_owned(owner, &listed.entry)?;
            }
            if any {
                ended.push(victim.handle);
            }
        }
        if !ended.is_empty() {
            self.sync_dir()?;
            entries.retain(|e| !ended.contains(&e.handle));
            self.write_index(&files, &entries)?;
        }
        // Then the session, once the cap holds without it: a crash or an
        // I/O error before this point leaves the login undone (and maybe
        // fewer sessions), never more sessions than the cap.
        {
            let _stripe = self.stripe(this.stripe())?;
            let Some(current) = self.live(&this, now_ms())? else {
                // Ended meanwhile; its entry is stale and goes next time.
                return Ok(OwnerSet::Gone);
            };
            let mut record = current.record;
            let delta = owner_delta(owner, handle, device)
                .map_err(io::Error::other)
                .context("encode the owner of", || self.place(&this))?;
            record.entries.apply(&delta);
            self.write_session(&this, &record)?;
        }
        Ok(OwnerSet::Set { ended })
    }

    /// `OwnerIndex::sessions_of`.
    pub(crate) fn sessions_of(&self, owner: &Owner) -> Result<Vec<OwnedSession>, Failure> {
        let files = self.owner_files(owner);
        let _owner = self.owner_lock(&files)?;
        let checked = self.checked(owner, &files, now_ms(), false)?;
        if checked.changed {
            self.write_index(&files, &checked.entries())?;
        }
        Ok(checked.sessions(|_| false))
    }

    /// `OwnerIndex::revoke` and `revoke_all`: ends the owner's live
    /// sessions whose handle `pick` accepts; returns how many handles.
    pub(crate) fn revoke_where(
        &self,
        owner: &Owner,
        pick: impl Fn(&SessionHandle) -> bool,
    ) -> Result<u64, Failure> {
        let files = self.owner_files(owner);
        let _owner = self.owner_lock(&files)?;
        let checked = self.checked(owner, &files, now_ms(), false)?;
        let mut ended: Vec<SessionHandle> = Vec::new();
        let mut kept = Vec::with_capacity(checked.live.len());
        for listed in &checked.live {
            if !pick(&listed.entry.handle) {
                kept.push(listed.entry.clone());
            } else if self.end_owned(owner, &listed.entry)? && !ended.contains(&listed.entry.handle)
            {
                ended.push(listed.entry.handle);
            }
        }
        if !ended.is_empty() {
            self.sync_dir()?;
        }
        if checked.changed || kept.len() != checked.live.len() {
            self.write_index(&files, &kept)?;
        }
        Ok(ended.len() as u64)
    }

    /// For `change_id`, with `owner`'s lock and both stripes held: lists
    /// the session carrying `owner` and `handle` under its new name `to`
    /// too, before it moves there (the old entry goes stale with the move
    /// and is dropped at the next use).
    pub(crate) fn index_moved(
        &self,
        owner: &Owner,
        handle: &SessionHandle,
        to: &Name,
    ) -> Result<(), Failure> {
        let files = self.owner_files(owner);
        let checked = self.checked(owner, &files, now_ms(), true)?;
        let mut entries = checked.entries();
        entries.push(Entry {
            handle: *handle,
            name: to.clone(),
        });
        self.write_index(&files, &entries)
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use sessionkit_core::record::Entries;

    use super::*;
    use crate::name::Naming;

    fn disk(dir: &std::path::Path, prefix: &str) -> Disk {
        Disk::new(
            dir.to_owned(),
            File::open(dir).unwrap(),
            Naming {
                hashed: true,
                prefix: prefix.to_owned(),
            },
            false,
            true,
        )
    }

    /// A write that found an owned session live just before its expiry
    /// renews it under its stripe while the expiry passes: a list of the
    /// owner in that moment waits for the stripe instead of dropping the
    /// entry, and the session stays in its owner's index.
    #[test]
    fn an_owned_session_renewed_at_its_expiry_stays_listed() {
        use std::sync::Arc;
        use std::time::Duration;

        use sessionkit_core::record::Meta;

        let dir = tempfile::tempdir().unwrap();
        let disk = Arc::new(disk(dir.path(), ""));
        let id = SessionId::generate();
        let name = disk.naming.of(&id);
        let (ada, handle) = (Owner::new("ada").unwrap(), SessionHandle::generate());
        let mut entries = Entries::default();
        entries.insert("k", b"v".to_vec());
        let short = Meta::new(now_ms(), Duration::from_millis(200), None);
        disk.write_session(
            &name,
            &Record {
                entries,
                meta: short,
            },
        )
        .unwrap();
        let set = disk.set_owner(&id, &ada, &handle, None, None).unwrap();
        assert!(matches!(set, OwnerSet::Set { .. }), "{set:?}");

        let stripe = disk.stripe(name.stripe()).unwrap();
        let found = disk
            .live(&name, now_ms())
            .unwrap()
            .expect("live before its expiry");
        std::thread::sleep(Duration::from_millis(300));
        let lister = {
            let (disk, ada) = (Arc::clone(&disk), ada.clone());
            std::thread::spawn(move || disk.sessions_of(&ada).unwrap())
        };
        std::thread::sleep(Duration::from_millis(200));
        let renewed = Record {
            entries: found.record.entries,
            meta: Meta::new(now_ms(), Duration::from_secs(60), None),
        };
        disk.write_session(&name, &renewed).unwrap();
        drop(stripe);
        assert_eq!(lister.join().unwrap().len(), 1, "listed once renewed");
        assert_eq!(
            disk.sessions_of(&ada).unwrap().len(),
            1,
            "still in the index"
        );
    }

    /// A capped login whose victim cannot be ended (here its stripe lock
    /// cannot be opened: a directory stands where the lock file belongs)
    /// fails without leaving the new session owned: the owner never has
    /// more sessions than the cap, whatever step fails.
    #[test]
    fn a_login_whose_victim_cannot_be_ended_leaves_the_cap_held() {
        use std::num::NonZeroU32;
        use std::time::Duration;

        use sessionkit_core::record::Meta;

        let dir = tempfile::tempdir().unwrap();
        let disk = disk(dir.path(), "");
        let ada = Owner::new("ada").unwrap();
        let cap = OwnerCap {
            max: NonZeroU32::new(1).unwrap(),
            when_full: WhenFull::EndLeastRecent,
        };
        let live = || Record {
            entries: Entries::default(),
            meta: Meta::new(now_ms(), Duration::from_secs(60), None),
        };
        let first = SessionId::generate();
        let first_name = disk.naming.of(&first);
        let second = std::iter::repeat_with(SessionId::generate)
            .find(|id| disk.naming.of(id).stripe() != first_name.stripe())
            .unwrap();
        for id in [&first, &second] {
            disk.write_session(&disk.naming.of(id), &live()).unwrap();
        }
        let set = disk.set_owner(&first, &ada, &SessionHandle::generate(), None, Some(cap));
        assert!(matches!(set, Ok(OwnerSet::Set { .. })), "{set:?}");

        let stripe = dir
            .path()
            .join(crate::disk::STRIPES_DIR)
            .join(format!("{:02x}", first_name.stripe()));
        fs::remove_file(&stripe).unwrap();
        fs::create_dir(&stripe).unwrap();
        let set = disk.set_owner(&second, &ada, &SessionHandle::generate(), None, Some(cap));
        assert!(set.is_err(), "the victim could not be ended: {set:?}");
        fs::remove_dir(&stripe).unwrap();

        let listed = disk.sessions_of(&ada).unwrap();
        assert_eq!(listed.len(), 1, "over the cap after a failed login");
        let second_record = disk.live(&disk.naming.of(&second), now_ms()).unwrap();
        assert_eq!(
            carried(&second_record.unwrap().record),
            None,
            "the failed login left its session owned"
        );
    }

    /// A FIFO planted where an owner's index belongs is refused as no index
    /// (the index is rebuilt over it), never waited on with the owner's
    /// lock held.
    #[test]
    fn a_fifo_at_an_index_path_is_replaced_not_waited_on() {
        use std::os::unix::fs::FileTypeExt as _;
        use std::sync::Arc;
        use std::time::Duration;

        let dir = tempfile::tempdir().unwrap();
        let disk = Arc::new(disk(dir.path(), ""));
        let ada = Owner::new("ada").unwrap();
        let index = disk.owner_files(&ada).index;
        fs::create_dir_all(index.parent().unwrap()).unwrap();
        let made = std::process::Command::new("mkfifo").arg(&index).status();
        assert!(made.unwrap().success(), "mkfifo");
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let (disk, ada) = (Arc::clone(&disk), ada.clone());
            std::thread::spawn(move || tx.send(disk.sessions_of(&ada).map(|l| l.len())));
        }
        let listed = rx.recv_timeout(Duration::from_secs(10));
        assert_eq!(listed.expect("the list waited on the FIFO").unwrap(), 0);
        let left = fs::symlink_metadata(&index).map(|m| m.file_type().is_fifo());
        assert!(!left.unwrap_or(false), "the FIFO is still there");
    }

    #[test]
    fn the_reserved_keys_are_the_ones_the_core_writes() {
        let owner = Owner::new("ada").unwrap();
        let handle = SessionHandle::generate();
        let mut entries = Entries::default();
        entries.apply(&owner_delta(&owner, &handle, None).unwrap());
        let record = Record {
            entries,
            meta: sessionkit_core::record::Meta::new(
                now_ms(),
                std::time::Duration::from_secs(60),
                None,
            ),
        };
        assert_eq!(carried(&record), Some((owner, handle)));
    }

    #[test]
    fn index_files_are_named_by_the_owners_hash_and_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let plain = disk(dir.path(), "").owner_files(&Owner::new("ada@example.org").unwrap());
        let name = plain
            .index
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(name.len(), 64 + INDEX_SUFFIX.len());
        assert!(!name.contains("ada@example.org"));
        assert!(
            name[..64]
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        );
        assert!(name.starts_with(&plain.tag));
        assert_eq!(plain.index.parent().unwrap(), dir.path().join(OWNERS_DIR));
        let prefixed =
            disk(dir.path(), "shop-").owner_files(&Owner::new("ada@example.org").unwrap());
        let prefixed_name = prefixed.index.file_name().unwrap().to_str().unwrap();
        assert_eq!(prefixed_name, format!("shop-{name}"));
        assert_eq!(prefixed.lock, plain.lock, "one owner, one lock");
    }

    #[test]
    fn index_files_round_trip_and_refuse_what_they_did_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let disk = disk(dir.path(), "");
        let files = disk.owner_files(&Owner::new("ada").unwrap());
        let _lock = disk.owner_lock(&files).unwrap();
        let entries: Vec<Entry> = (0..3)
            .map(|_| Entry {
                handle: SessionHandle::generate(),
                name: disk.naming.of(&SessionId::generate()),
            })
            .collect();
        disk.write_index(&files, &entries).unwrap();
        assert_eq!(disk.read_index(&files).unwrap(), (entries.clone(), true));
        assert!(!files.temp.exists());

        let bytes = fs::read(&files.index).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        // Torn: the entries before the tear are kept.
        assert_eq!(
            disk.parse_index(&bytes[..bytes.len() - 3]),
            (entries[..2].to_vec(), false)
        );
        // Lines that name no file this store could have written are dropped.
        let handle = SessionHandle::generate();
        for bad in [
            format!("{handle} ../../etc/passwd\n"),
            format!("{handle} {}\n", "A".repeat(64)),
            format!("{handle} \n"),
            format!("NOTAHANDLE {}\n", entries[0].name.stem),
            "\n".to_owned(),
        ] {
            let (kept, whole) = disk.parse_index(format!("{text}{bad}").as_bytes());
            assert_eq!(kept, entries, "{bad:?}");
            assert!(!whole, "{bad:?}");
        }
        // Without the header, nothing.
        assert_eq!(
            disk.parse_index(&text.as_bytes()[HEADER.len()..]),
            (Vec::new(), false)
        );
        // No entries: no file.
        disk.write_index(&files, &[]).unwrap();
        assert!(!files.index.exists());
        assert_eq!(disk.read_index(&files).unwrap(), (Vec::new(), true));
    }
}
