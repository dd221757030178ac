//! Waking PostgreSQL lock waiters with `LISTEN`/`NOTIFY`: a released lock wakes the requests, in every process, that wait for it.
//!
//! The statements that release a lock (a fenced `apply` with release,
//! `unlock`) end with a `pg_notify` on the table's channel, payload the
//! row key in hex — but only when someone waits: a waiter holds a shared
//! advisory lock on the session's pair of keys ([`Wakeups::keys_sql`])
//! while it waits, and the releasing statement notifies only if it cannot
//! take that advisory lock exclusively. Most releases have no waiter, and
//! then nothing is sent: a `NOTIFY` makes its commit take a lock that
//! serialises every notifying commit of the server.
//!
//! Each store (with its clones) opens, at its first wait, one connection
//! from its pool that `LISTEN`s (sqlx's `PgListener`, which reconnects and
//! listens again by itself) and one connection of its own for the waiters'
//! advisory locks. Anything that fails here makes the waiter sleep its
//! pause, as without wake-ups: a missed notification costs at most one
//! backoff pause, never a lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnection, PgListener, PgPool};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::{Mutex as AsyncMutex, Notify, OnceCell};

use crate::common::Table;

/// The wake-ups of one table.
pub(crate) struct Wakeups {
    pool: PgPool,
    channel: String,
    class: i32,
    running: OnceCell<Option<Running>>,
}

struct Running {
    /// The waiters of this process, by row key.
    waiting: Arc<Mutex<HashMap<Vec<u8>, Arc<Notify>>>>,
    /// The connection on which waiters hold their advisory locks; `None`
    /// after it failed, until the next waiter opens another.
    interest: AsyncMutex<Option<PgConnection>>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Wakeups {
    pub(crate) fn new(pool: PgPool, table: &Table) -> Wakeups {
        Wakeups {
            pool,
            channel: channel(table),
            class: class(table),
            running: OnceCell::new(),
        }
    }

    /// The query that a statement releasing the lock of row `$1` runs for
    /// each row of `released` when `condition` holds: a `pg_notify` when a
    /// waiter holds the session's advisory lock (then taking it
    /// exclusively fails).
    pub(crate) fn notify_sql(table: &Table, released: &str, condition: &str) -> String {
        format!(
            "SELECT pg_notify('{channel}', encode($1, 'hex')) FROM {released}
             WHERE {condition} AND NOT pg_try_advisory_xact_lock({class}, {OBJ_SQL})",
            channel = channel(table),
            class = class(table),
        )
    }

    /// Waits at most `pause` for the release of the lock of row `key`.
    pub(crate) async fn wait(&self, key: &[u8], pause: Duration) {
        let Some(running) = self.running().await else {
            tokio::time::sleep(pause).await;
            return;
        };
        let notify = running.waiting().entry(key.to_vec()).or_default().clone();
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let obj = obj(key);
        let interested = self.interest(running, "pg_advisory_lock_shared", obj).await;
        if interested {
            let _ = tokio::time::timeout(pause, notified).await;
            self.interest(running, "pg_advisory_unlock_shared", obj)
                .await;
        } else {
            tokio::time::sleep(pause).await;
        }
        let mut waiting = running.waiting();
        // Ours and the map's: nobody else of this process waits for it.
        if Arc::strong_count(&notify) == 2 {
            waiting.remove(key);
        }
    }

    /// Runs `function(class, obj)` on the interest connection; whether it
    /// succeeded.
    async fn interest(&self, running: &Running, function: &str, obj: i32) -> bool {
        let mut conn = running.interest.lock().await;
        if conn.is_none() {
            *conn = self.pool.connect_options().connect().await.ok();
        }
        let Some(c) = conn.as_mut() else {
            return false;
        };
        let done = sqlx::query(&format!("SELECT {function}($1, $2)"))
            .bind(self.class)
            .bind(obj)
            .execute(&mut *c)
            .await;
        if done.is_err() {
            // Its advisory locks go with it.
            if let Some(c) = conn.take() {
                let _ = c.close().await;
            }
            return false;
        }
        true
    }

    /// Starts listening at the first wait; `None` if that failed (then
    /// every waiter polls: it is not tried again for this store).
    async fn running(&self) -> Option<&Running> {
        self.running
            .get_or_init(|| async {
                let mut listener = match PgListener::connect_with(&self.pool).await {
                    Ok(l) => l,
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot listen for lock releases; waiters poll");
                        return None;
                    }
                };
                if let Err(err) = listener.listen(&self.channel).await {
                    tracing::warn!(error = %err, "cannot listen for lock releases; waiters poll");
                    return None;
                }
                let waiting: Arc<Mutex<HashMap<Vec<u8>, Arc<Notify>>>> = Arc::default();
                let task = tokio::spawn(listen(listener, waiting.clone()));
                Some(Running {
                    waiting,
                    interest: AsyncMutex::new(None),
                    listener: task,
                })
            })
            .await
            .as_ref()
    }
}

impl Running {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Arc<Notify>>> {
        // Only short sections touch the map; none can leave it inconsistent.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Wakes the waiters of each key notified, until the store is dropped.
async fn listen(mut listener: PgListener, waiting: Arc<Mutex<HashMap<Vec<u8>, Arc<Notify>>>>) {
    loop {
        match listener.recv().await {
            Ok(note) => {
                let Some(key) = unhex(note.payload()) else {
                    continue;
                };
                let map = waiting.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(notify) = map.get(&key) {
                    notify.notify_waiters();
                }
            }
            // The pool closed, or reconnecting failed: waiters time out
            // into polling meanwhile.
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// The channel of a table: one per table, so that apps sharing a database
/// hear only their own releases; named by the table's hash, as channel
/// names are at most 63 bytes.
fn channel(table: &Table) -> String {
    format!("sessionkit_{:08x}", class(table) as u32)
}

/// The first advisory-lock key: a hash of the table name (FNV-1a), so that
/// two tables' sessions do not share keys.
fn class(table: &Table) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in "sessionkit:".bytes().chain(table.name.bytes()) {
        hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    hash as i32
}

/// The second key, from the row key's first four bytes (of a SHA-256 when
/// ids are hashed). Two sessions sharing it only wake each other's waiters
/// needlessly.
const OBJ_SQL: &str = "('x' || encode(substring($1 FROM 1 FOR 4), 'hex'))::bit(32)::int";

fn obj(key: &[u8]) -> i32 {
    let mut four = [0u8; 4];
    for (i, b) in key.iter().take(4).enumerate() {
        four[i] = *b;
    }
    i32::from_be_bytes(four)
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_payloads() {
        assert_eq!(
            obj(&[0x80, 0, 0, 1, 9]),
            i32::from_be_bytes([0x80, 0, 0, 1])
        );
        assert_eq!(obj(&[1]), 0x0100_0000);
        assert_eq!(unhex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
        let a = Table::parse("a", true).unwrap();
        let b = Table::parse("b", true).unwrap();
        assert_ne!(class(&a), class(&b));
    }
}
