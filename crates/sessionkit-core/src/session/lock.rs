//! Holding a store lock: background renewal and the bounded, jittered wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::config::LockConfig;
use crate::id::{LockToken, SessionId, random_u64};
use crate::session::gate::Gate;
use crate::store::DynSessionStore;

/// A store lock held by a handle. Dropping it stops the renewal and lets the
/// next local waiter ask the store; the store lock itself is released by the
/// handle (or lapses after its TTL), so drop this only once that is done.
#[derive(Debug)]
pub(crate) struct HeldLock {
    pub(crate) token: LockToken,
    lost: Arc<AtomicBool>,
    renewer: Option<JoinHandle<()>>,
    /// The front of this process's line for the session, if the lock was
    /// taken through it.
    _gate: Option<Gate>,
}

impl HeldLock {
    /// Starts renewing `token`'s lock on `id` every `config.renew_every`.
    pub(crate) fn start(
        store: Arc<dyn DynSessionStore>,
        id: SessionId,
        token: LockToken,
        config: &LockConfig,
        gate: Option<Gate>,
    ) -> Self {
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = tokio::runtime::Handle::try_current().ok().map(|rt| {
            rt.spawn(renew(
                store,
                id,
                token,
                config.ttl,
                config.renew_every,
                lost.clone(),
            ))
        });
        HeldLock {
            token,
            lost,
            renewer,
            _gate: gate,
        }
    }

    /// Whether a renewal found that the lock was no longer ours.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
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
) {
    loop {
        tokio::time::sleep(every).await;
        match store.renew_lock(&id, &token, ttl).await {
            Ok(true) => {}
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

/// The pauses between lock attempts: exponential from `initial_backoff` up to
/// `max_backoff`, each drawn uniformly from its upper half so that waiters
/// spread out instead of retrying in lockstep.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(config: &LockConfig) -> Self {
        Backoff {
            next: config.initial_backoff,
            max: config.max_backoff,
        }
    }

    pub(crate) fn next_pause(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = ceiling / 2;
        let spread = ceiling.saturating_sub(half).as_micros().max(1) as u64;
        half + Duration::from_micros(random_u64() % spread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let config = LockConfig::default();
        let mut backoff = Backoff::new(&config);
        let pauses: Vec<_> = (0..20).map(|_| backoff.next_pause()).collect();
        assert!(pauses[0] <= config.initial_backoff);
        assert!(pauses.iter().all(|p| *p <= config.max_backoff));
        assert!(pauses[19] >= config.max_backoff / 2);
    }
}
