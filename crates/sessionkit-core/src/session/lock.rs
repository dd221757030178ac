//! Holding a store lock: background renewal and the bounded, jittered wait.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::LockConfig;
use crate::id::{LockToken, SessionId};
use crate::record::Record;
use crate::session::gate::{Gate, Handoff};
use crate::store::DynSessionStore;

/// A store lock held by a handle. Dropping it stops the renewal and lets the
/// next local waiter ask the store; the store lock itself is released by the
/// handle (or lapses after its TTL), so drop this only once that is done —
/// or hand the lock on with [`HeldLock::hand_off`].
#[derive(Debug)]
pub(crate) struct HeldLock {
    /// The id the lock was taken on. The lock carries it because the
    /// handle's current id can change under a held lock: a reload that finds
    /// the session destroyed clears it, and the commit must still go to the
    /// locked id (where the store then answers "gone").
    pub(crate) id: SessionId,
    pub(crate) token: LockToken,
    lost: Arc<AtomicBool>,
    /// When the store lock was last taken or renewed: a lock handed from
    /// holder to holder keeps its renewal schedule.
    renewed_at: Arc<Mutex<Instant>>,
    renewer: Option<JoinHandle<()>>,
    /// The front of this process's line for the session, if the lock was
    /// taken through it.
    gate: Option<Gate>,
}

impl HeldLock {
    /// Starts renewing `token`'s lock on `id`, `config.renew_every` after
    /// `renewed_at` and then every `config.renew_every`.
    pub(crate) fn start(
        store: Arc<dyn DynSessionStore>,
        id: SessionId,
        token: LockToken,
        config: &LockConfig,
        gate: Option<Gate>,
        renewed_at: Instant,
    ) -> Self {
        let lost = Arc::new(AtomicBool::new(false));
        let renewed_at = Arc::new(Mutex::new(renewed_at));
        let renewer = tokio::runtime::Handle::try_current().ok().map(|rt| {
            rt.spawn(renew(
                store,
                id,
                token,
                config.ttl,
                config.renew_every,
                lost.clone(),
                renewed_at.clone(),
            ))
        });
        HeldLock {
            id,
            token,
            lost,
            renewed_at,
            renewer,
            gate,
        }
    }

    /// Whether a renewal found that the lock was no longer ours.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// When the store lock was last taken or renewed.
    pub(crate) fn renewed_at(&self) -> Instant {
        *self.renewed_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether another request of this process waits for this lock.
    pub(crate) fn has_waiters(&self) -> bool {
        self.gate.as_ref().is_some_and(Gate::has_waiters)
    }

    /// Hands the store lock, unreleased, to the next local waiter, with
    /// `record`: the session as read under the lock. Only for a lock taken
    /// through the line (see [`HeldLock::has_waiters`]).
    pub(crate) fn hand_off(
        mut self,
        store: Arc<dyn DynSessionStore>,
        id: SessionId,
        record: Record,
    ) {
        let renewed_at = *self.renewed_at.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(gate) = self.gate.take() {
            gate.hand_off(Handoff::new(store, id, self.token, record, renewed_at));
        }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if let Some(task) = self.renewer.take() {
            task.abort();
        }
    }
}

async fn renew(
    store: Arc<dyn DynSessionStore>,
    id: SessionId,
    token: LockToken,
    ttl: Duration,
    every: Duration,
    lost: Arc<AtomicBool>,
    renewed_at: Arc<Mutex<Instant>>,
) {
    let mut next = *renewed_at.lock().unwrap_or_else(|p| p.into_inner()) + every;
    loop {
        tokio::time::sleep_until(next).await;
        let attempt = Instant::now();
        next = attempt + every;
        match store.renew_lock(&id, &token, ttl).await {
            Ok(true) => *renewed_at.lock().unwrap_or_else(|p| p.into_inner()) = attempt,
            Ok(false) => {
                lost.store(true, Ordering::Release);
                tracing::warn!(
                    session = %id.short_hash(),
                    store = store.name(),
                    "session lock lost: it expired or was taken before renewal"
                );
                return;
            }
            // A failed renewal is retried at the next tick; if the lock lapses
            // meanwhile, the fenced commit reports it.
            Err(err) => tracing::warn!(
                session = %id.short_hash(),
                error = %err,
                "session lock renewal failed; retrying"
            ),
        }
    }
}
