//! The per-request state behind a `Session` handle, and its merged view.

use crate::error::{Error, ErrorKind, Result};
use crate::id::SessionId;
use crate::record::{Delta, Entries, Meta};
use crate::session::lock::HeldLock;

/// What the handle knows about the stored session.
#[derive(Debug)]
pub(crate) enum Stored {
    /// The id came from the cookie and has not been read yet; whether it
    /// exists is unknown.
    Unloaded,
    /// Read from the store: the data as of the last read or write.
    Live { entries: Entries, meta: Meta },
    /// Nothing is stored for this session (yet): no cookie, an unknown id, or
    /// a destroyed session. The next write creates a new one.
    Fresh,
}

/// How the lock of this handle is held.
#[derive(Debug)]
pub(crate) enum LockHold {
    /// Not locked.
    None,
    /// Locked without a store lock: the session is new and its id unknown to
    /// everyone else, so there is nobody to exclude.
    Local,
    /// A store lock, renewed in the background.
    Store(HeldLock),
}

#[derive(Debug)]
pub(crate) struct State {
    /// The current id: the client's, a regenerated one, or one minted for a
    /// new session. `None` for a fresh session not yet written.
    pub(crate) id: Option<SessionId>,
    /// The id the client sent, if it was well-formed.
    pub(crate) client_id: Option<SessionId>,
    /// Whether the client sent a session cookie at all (even a malformed one).
    pub(crate) client_had_cookie: bool,
    pub(crate) stored: Stored,
    /// Buffered writes made outside a lock.
    pub(crate) pending: Delta,
    /// Writes made under the current lock, not yet committed.
    pub(crate) locked: Delta,
    pub(crate) lock: LockHold,
    pub(crate) lock_depth: u32,
    /// The expiry to announce in the cookie, set whenever the server expiry
    /// moved during this request.
    pub(crate) expiry_moved: Option<Meta>,
    /// The response was produced; writes are refused from now on.
    pub(crate) finished: bool,
    /// The handler used the session (read, wrote, locked, …). An unused
    /// session needs no finishing: no store call, no cookie.
    pub(crate) used: bool,
}

impl State {
    pub(crate) fn new(client_id: Option<SessionId>, client_had_cookie: bool) -> Self {
        State {
            id: client_id,
            client_id,
            client_had_cookie,
            stored: if client_id.is_some() {
                Stored::Unloaded
            } else {
                Stored::Fresh
            },
            pending: Delta::default(),
            locked: Delta::default(),
            lock: LockHold::None,
            lock_depth: 0,
            expiry_moved: None,
            finished: false,
            used: false,
        }
    }

    /// Marks the session used by a change (a write or a lock); refused once
    /// the response was produced.
    pub(crate) fn begin_change(&mut self) -> Result<()> {
        self.used = true;
        if self.finished {
            return Err(Error::new(ErrorKind::ModificationDenied)
                .with_detail("the response was already produced"));
        }
        Ok(())
    }

    /// The value of `key` as the handler sees it: changes under the lock, then
    /// buffered changes, then the stored data.
    pub(crate) fn value(&self, key: &str) -> Option<&[u8]> {
        for delta in [&self.locked, &self.pending] {
            if let Some(change) = delta.change(key) {
                return change;
            }
            if delta.clears() {
                return None;
            }
        }
        match &self.stored {
            Stored::Live { entries, .. } => entries.get(key),
            _ => None,
        }
    }

    /// All entries as the handler sees them.
    pub(crate) fn view(&self) -> Entries {
        let mut entries = match &self.stored {
            Stored::Live { entries, .. } => entries.clone(),
            _ => Entries::default(),
        };
        entries.apply(&self.pending);
        entries.apply(&self.locked);
        entries
    }

    /// Forgets everything stored: the session is gone (destroyed, expired or
    /// unknown) and the next write starts a new one.
    pub(crate) fn become_fresh(&mut self) {
        self.id = None;
        self.stored = Stored::Fresh;
        self.pending = Delta::default();
        self.locked = Delta::default();
        self.expiry_moved = None;
    }

    /// The store does not know the session (any more): never issued, expired
    /// or destroyed by another request. What was read and the id are
    /// forgotten; the request's own unwritten changes are kept: blind writes
    /// start a new session, and changes made under a store lock stay with
    /// that lock, which remembers its id, so that the commit asks the store
    /// and fails as "session gone" instead of writing them elsewhere.
    pub(crate) fn found_gone(&mut self) {
        self.id = None;
        self.stored = Stored::Fresh;
        self.expiry_moved = None;
    }

    /// The id for a write, minting one for a fresh session.
    pub(crate) fn id_for_write(&mut self) -> SessionId {
        *self.id.get_or_insert_with(SessionId::generate)
    }
}
