//! Local lock queues: requests of one process that want the same session's
//! lock wait in line here instead of polling the store.
//!
//! Without them, a request that finds the store lock held sleeps through a
//! backoff pause (2 ms at first) although the holder, in the same process,
//! may release it a few hundred microseconds later. With them, only the head
//! of each session's local line asks the store; the others wait on a FIFO
//! async mutex and move up the moment the head releases the store lock. The
//! store lock stays the authority: the head still takes it with the store's
//! atomic lock operation (other processes may hold it; then the head polls
//! with backoff as before), and fencing is unchanged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::id::SessionId;

/// The lines of one factory (one HTTP layer), by session id.
///
/// An entry exists while someone is in its line; the last one out removes it.
#[derive(Debug, Default)]
pub(crate) struct Gates {
    lines: Mutex<HashMap<SessionId, Arc<AsyncMutex<()>>>>,
}

impl Gates {
    fn lines(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Arc<AsyncMutex<()>>>> {
        // The map is only touched by the short sections below, which cannot
        // leave it inconsistent.
        self.lines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the front of `id`'s line. Cancel-safe: a waiter dropped
    /// while waiting leaves the line.
    pub(crate) async fn enter(self: &Arc<Self>, id: SessionId) -> Gate {
        let place = Place {
            gates: self.clone(),
            id,
            line: self.lines().entry(id).or_default().clone(),
        };
        let guard = place.line.clone().lock_owned().await;
        Gate {
            _guard: guard,
            _place: place,
        }
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
    line: Arc<AsyncMutex<()>>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut lines = self.gates.lines();
        // Under the map's mutex nobody can clone the line, so a count of two
        // (the map's and ours) means nobody else is in it.
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
/// the next local waiter ask the store.
#[derive(Debug)]
pub(crate) struct Gate {
    // Released before the place is given up: fields drop in order.
    _guard: OwnedMutexGuard<()>,
    _place: Place,
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
