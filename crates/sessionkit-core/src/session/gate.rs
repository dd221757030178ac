//! Local lock queues: requests of one process that want the same session's
//! lock wait in line here instead of polling the store, and the lock is
//! handed from one to the next without being released in between.
//!
//! Without them, a request that finds the store lock held sleeps through a
//! backoff pause (2 ms at first) although the holder, in the same process,
//! may release it a few hundred microseconds later. With them, only the front
//! of each session's local line holds or asks for the store lock; the others
//! wait on a FIFO async mutex.
//!
//! When the holder commits and someone is waiting behind it, it keeps the
//! store lock: one atomic store step ([`apply_and_read`]) writes its changes,
//! checks that the lock is still its own and reads the session back, and the
//! token and that record go to the next in line, who starts its transaction
//! without a store call. A locked read-modify-write then costs one round
//! trip instead of two while the session is contended. The store lock stays
//! the authority: fencing is unchanged (the next holder's commit is fenced by
//! the same token), other processes still wait for the store lock, and a
//! handed lock nobody takes is released.
//!
//! [`apply_and_read`]: crate::store::SessionStore::apply_and_read

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use tokio::time::Instant;

use crate::id::{LockToken, SessionId};
use crate::record::Record;
use crate::store::DynSessionStore;

/// The lines of one factory (one HTTP layer), by session id.
///
/// An entry exists while someone is in its line; the last one out removes it.
#[derive(Debug, Default)]
pub(crate) struct Gates {
    lines: Mutex<HashMap<SessionId, Arc<Line>>>,
}

/// One session's line: the mutex its members queue on, which also holds a
/// lock handed on by the last holder.
#[derive(Debug, Default)]
struct Line {
    front: Arc<AsyncMutex<Option<Handoff>>>,
    /// Members of the line, the front included.
    members: AtomicUsize,
}

impl Gates {
    fn lines(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Arc<Line>>> {
        // The map is only touched by the short sections below, which cannot
        // leave it inconsistent.
        self.lines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the front of `id`'s line. Cancel-safe: a waiter dropped
    /// while waiting leaves the line.
    pub(crate) async fn enter(self: &Arc<Self>, id: SessionId) -> Gate {
        let line = self.lines().entry(id).or_default().clone();
        line.members.fetch_add(1, Ordering::AcqRel);
        let place = Place {
            gates: self.clone(),
            id,
            line,
        };
        let front = place.line.front.clone().lock_owned().await;
        Gate { front, place }
    }

    /// How many sessions have someone in line (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lines().len()
    }
}

/// A place in (or at the front of) one session's line. Dropping it removes
/// the line when nobody else is in it.
#[derive(Debug)]
struct Place {
    gates: Arc<Gates>,
    id: SessionId,
    line: Arc<Line>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.line.members.fetch_sub(1, Ordering::AcqRel);
        let mut lines = self.gates.lines();
        // Under the map's mutex nobody can join the line, so a count of two
        // (the map's and ours) means nobody else is in it. A handed lock
        // still inside goes with the line, which releases it.
        if Arc::strong_count(&self.line) == 2
            && lines
                .get(&self.id)
                .is_some_and(|l| Arc::ptr_eq(l, &self.line))
        {
            lines.remove(&self.id);
        }
    }
}

/// The front of a session's line, held with the store lock; dropping it lets
/// the next local waiter take a handed lock or ask the store.
#[derive(Debug)]
pub(crate) struct Gate {
    // Released before the place is given up: fields drop in order.
    front: OwnedMutexGuard<Option<Handoff>>,
    place: Place,
}

impl Gate {
    /// A lock the previous holder handed on, if any.
    pub(crate) fn take_handoff(&mut self) -> Option<Handoff> {
        self.front.take()
    }

    /// Whether another request of this process waits behind this one.
    pub(crate) fn has_waiters(&self) -> bool {
        self.place.line.members.load(Ordering::Acquire) > 1
    }

    /// Leaves the front, handing `lock` to the next in line (or, if nobody
    /// takes it, releasing it).
    pub(crate) fn hand_off(mut self, lock: Handoff) {
        *self.front = Some(lock);
    }
}

/// A store lock handed from one holder to the next: its token, the session
/// as the last holder's commit left it (read under the lock), and when the
/// lock was last taken or renewed. Released at the store if dropped
/// untaken.
#[derive(Debug)]
pub(crate) struct Handoff {
    token: LockToken,
    /// Always `Some` until taken by [`Handoff::accept`].
    record: Option<Record>,
    renewed_at: Instant,
    /// How to release the lock if nobody takes it.
    release: Option<(Arc<dyn DynSessionStore>, SessionId)>,
}

impl Handoff {
    pub(crate) fn new(
        store: Arc<dyn DynSessionStore>,
        id: SessionId,
        token: LockToken,
        record: Record,
        renewed_at: Instant,
    ) -> Self {
        Handoff {
            token,
            record: Some(record),
            renewed_at,
            release: Some((store, id)),
        }
    }

    /// Takes the lock over: it is the taker's to release from now on.
    pub(crate) fn accept(mut self) -> (LockToken, Record, Instant) {
        self.release = None;
        let record = self.record.take().expect("a handoff is accepted once");
        (self.token, record, self.renewed_at)
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        let Some((store, id)) = self.release.take() else {
            return;
        };
        let token = self.token;
        // Without a runtime (the process is shutting down) the lock lapses
        // after its TTL.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = store.unlock(&id, &token).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn waiters_of_one_session_go_one_at_a_time_in_order() {
        let gates = Arc::new(Gates::default());
        let id = SessionId::generate();
        let first = gates.enter(id).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for n in 0..3 {
            let (gates, order) = (gates.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _gate = gates.enter(id).await;
                order.lock().unwrap().push(n);
            }));
            // Let each task queue up before the next one.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(order.lock().unwrap().is_empty(), "nobody passes the holder");
        drop(first);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
        assert_eq!(gates.len(), 0, "the last one out removes the line");
    }

    #[tokio::test]
    async fn different_sessions_do_not_wait_for_each_other() {
        let gates = Arc::new(Gates::default());
        let _a = gates.enter(SessionId::generate()).await;
        let b = tokio::time::timeout(Duration::from_secs(1), gates.enter(SessionId::generate()));
        assert!(b.await.is_ok());
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_the_line() {
        let gates = Arc::new(Gates::default());
        let id = SessionId::generate();
        let holder = gates.enter(id).await;
        let waiting = tokio::time::timeout(Duration::from_millis(10), gates.enter(id)).await;
        assert!(waiting.is_err(), "the line is held");
        drop(holder);
        assert_eq!(gates.len(), 0);
        let _again = gates.enter(id).await;
        assert_eq!(gates.len(), 1);
    }
}
