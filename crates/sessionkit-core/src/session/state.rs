//! The per-request state behind a `Session` handle, and its merged view.

use crate::error::{Error, ErrorKind, Result};
use crate::id::SessionId;
use crate::record::{Delta, Entries, Meta};
use crate::session::lock::HeldLock;
use crate::session::{Presented, csrf};

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

/// The lock a handle holds, if any, with the changes made under it.
#[derive(Debug)]
pub(crate) enum Lock {
    /// Not locked: writes are buffered in `State::pending`.
    Unlocked,
    /// Locked `depth` times (reentrant: each level needs its own commit,
    /// rollback or unlock; always at least 1), held as `hold`, with the
    /// `changes` made under it and not yet committed.
    Held {
        depth: u32,
        hold: Hold,
        changes: Delta,
    },
}

/// How a lock is held.
#[derive(Debug)]
pub(crate) enum Hold {
    /// Without a store lock: the session is new and its id unknown to
    /// everyone else, so there is nobody to exclude.
    Local,
    /// A store lock, renewed in the background.
    Store(HeldLock),
}

/// How many session cookies (or headers) the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    Nothing,
    One,
    Several,
}

/// Where the request stands with the CSRF check an HTTP integration asked
/// for (see [`CsrfCheck`](crate::CsrfCheck)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Csrf {
    /// No check asked for: a safe method, a session carried in a header, no
    /// CSRF layer, or a handle made outside a request.
    NotAsked,
    /// To be decided on the first read of the stored session, against the
    /// token the request sent (none yet when the CSRF layer has not run).
    Pending { sent: Option<String> },
    /// The request sent the session's token, or had no stored session.
    Passed,
    /// The request's token was missing or wrong: every operation fails, and
    /// nothing the request changed is written.
    Refused,
}

#[derive(Debug)]
pub(crate) struct State {
    /// The current id: the client's, a regenerated one, or one minted for a
    /// new session. `None` for a fresh session not yet written.
    pub(crate) id: Option<SessionId>,
    /// The id the client sent, if it was well-formed; with several cookies,
    /// the candidate being tried (then the one adopted).
    pub(crate) client_id: Option<SessionId>,
    /// The client's other well-formed ids, to try in turn when `client_id`
    /// is unknown to the store (several cookies of one name, see
    /// [`Presented::Several`]).
    pub(crate) candidates: Vec<SessionId>,
    /// How many session cookies the client sent.
    pub(crate) sent: Sent,
    pub(crate) stored: Stored,
    /// Buffered writes made outside a lock.
    pub(crate) pending: Delta,
    pub(crate) lock: Lock,
    /// The expiry to announce in the cookie, set whenever the server expiry
    /// moved during this request.
    pub(crate) expiry_moved: Option<Meta>,
    /// The response was produced; writes are refused from now on.
    pub(crate) finished: bool,
    /// The handler used the session (read, wrote, locked, …). An unused
    /// session needs no finishing: no store call, no cookie.
    pub(crate) used: bool,
    pub(crate) csrf: Csrf,
}

impl State {
    pub(crate) fn new(presented: Presented) -> Self {
        let (client_id, candidates, sent) = match presented {
            Presented::Nothing => (None, Vec::new(), Sent::Nothing),
            Presented::One(id) => (id, Vec::new(), Sent::One),
            Presented::Several(mut ids) => {
                ids.truncate(Presented::MAX_CANDIDATES);
                ids.reverse(); // popped from the back, in the order sent
                (ids.pop(), ids, Sent::Several)
            }
        };
        State {
            id: client_id,
            client_id,
            candidates,
            sent,
            stored: if client_id.is_some() {
                Stored::Unloaded
            } else {
                Stored::Fresh
            },
            pending: Delta::default(),
            lock: Lock::Unlocked,
            expiry_moved: None,
            finished: false,
            used: false,
            csrf: Csrf::NotAsked,
        }
    }

    /// Marks the session used by a change (a write or a lock); refused once
    /// the response was produced.
    pub(crate) fn begin_change(&mut self) -> Result<()> {
        self.used = true;
        self.csrf_verdict()?;
        if self.finished {
            return Err(Error::new(ErrorKind::ModificationDenied)
                .with_detail("the response was already produced"));
        }
        Ok(())
    }

    /// The value of `key` as the handler sees it: changes under the lock, then
    /// buffered changes, then the stored data.
    pub(crate) fn value(&self, key: &str) -> Option<&[u8]> {
        for delta in [self.locked_changes(), Some(&self.pending)]
            .into_iter()
            .flatten()
        {
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
        if let Some(changes) = self.locked_changes() {
            entries.apply(changes);
        }
        entries
    }

    /// Forgets everything stored: the session is gone (destroyed, expired or
    /// unknown) and the next write starts a new one.
    pub(crate) fn become_fresh(&mut self) {
        self.id = None;
        self.stored = Stored::Fresh;
        self.pending = Delta::default();
        if let Lock::Held { changes, .. } = &mut self.lock {
            *changes = Delta::default();
        }
        self.expiry_moved = None;
    }

    /// Folds every level of the lock into the outermost one, so that one
    /// release ends it; returns whether a lock is held.
    pub(crate) fn fold_lock(&mut self) -> bool {
        match &mut self.lock {
            Lock::Held { depth, .. } => {
                *depth = 1;
                true
            }
            Lock::Unlocked => false,
        }
    }

    /// Whether the handle holds a lock (of any depth).
    pub(crate) fn is_locked(&self) -> bool {
        matches!(self.lock, Lock::Held { .. })
    }

    /// Takes a first level of the lock, held as `hold`.
    pub(crate) fn hold(&mut self, hold: Hold) {
        self.lock = Lock::Held {
            depth: 1,
            hold,
            changes: Delta::default(),
        };
    }

    /// The store lock held, if the lock is one.
    pub(crate) fn store_lock(&self) -> Option<&HeldLock> {
        match &self.lock {
            Lock::Held {
                hold: Hold::Store(held),
                ..
            } => Some(held),
            _ => None,
        }
    }

    /// The changes made under the lock, if one is held.
    pub(crate) fn locked_changes(&self) -> Option<&Delta> {
        match &self.lock {
            Lock::Held { changes, .. } => Some(changes),
            Lock::Unlocked => None,
        }
    }

    /// Where a write goes now: the lock's changes, or the buffered ones.
    pub(crate) fn changes_mut(&mut self) -> &mut Delta {
        match &mut self.lock {
            Lock::Held { changes, .. } => changes,
            Lock::Unlocked => &mut self.pending,
        }
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
        self.settle_csrf();
    }

    /// The session as the store holds it: the id is known, so the client's
    /// other candidate ids (if it sent several) are not needed any more.
    pub(crate) fn adopt_live(&mut self, entries: Entries, meta: Meta) {
        self.stored = Stored::Live { entries, meta };
        self.candidates = Vec::new();
        self.settle_csrf();
    }

    /// Decides a pending CSRF check now that the stored session is known:
    /// passed when the request sent the session's token or no session is
    /// stored (there is nothing to act on with a forged request, and no
    /// token could have been handed out); refused otherwise, and then the
    /// request's unwritten changes are dropped.
    pub(crate) fn settle_csrf(&mut self) {
        let Csrf::Pending { sent } = &self.csrf else {
            return;
        };
        let passed = match (&self.stored, self.id) {
            (Stored::Live { entries, .. }, Some(id)) => {
                csrf::token_matches(entries.get(csrf::SECRET_KEY), &id, sent.as_deref())
            }
            _ => true,
        };
        if passed {
            self.csrf = Csrf::Passed;
        } else {
            tracing::info!("request refused: missing or wrong CSRF token");
            self.csrf = Csrf::Refused;
            self.pending = Delta::default();
            if let Lock::Held { changes, .. } = &mut self.lock {
                *changes = Delta::default();
            }
        }
    }

    /// `Err` once the CSRF check refused the request.
    pub(crate) fn csrf_verdict(&self) -> Result<()> {
        match self.csrf {
            Csrf::Refused => Err(csrf::refusal()),
            _ => Ok(()),
        }
    }

    /// Whether a CSRF check waits for the stored session to be read.
    pub(crate) fn csrf_pending(&self) -> bool {
        matches!(self.csrf, Csrf::Pending { .. })
    }

    /// Moves on to the client's next candidate id after the current one
    /// turned out unknown, if there is one; the session is then unloaded
    /// again under that id.
    pub(crate) fn next_candidate(&mut self) -> Option<SessionId> {
        let next = self.candidates.pop()?;
        self.id = Some(next);
        self.client_id = Some(next);
        self.stored = Stored::Unloaded;
        Some(next)
    }

    /// The id for a write, minting one for a fresh session.
    pub(crate) fn id_for_write(&mut self) -> SessionId {
        *self.id.get_or_insert_with(SessionId::generate)
    }
}
