//! The read-check-write machinery every operation is built from: the key of
//! a session, one batch of commands, what a read found, a create that never
//! overwrites, and the compare-and-swap cycle with its retries.

use std::time::Duration;

use sessionkit_core::record::now_ms;
use sessionkit_core::store::Backoff;
use sessionkit_core::{Error, ErrorKind, Result, SessionId};

use super::{ITEM_OVERHEAD, Inner, STORE};
use crate::client::proto::valid_key;
use crate::client::{ClientError, Cmd, Counters, Reply, SetMode};
use crate::ring::key_point;
use crate::value::{Item, Stored, decode, encode_item, exptime};

/// Where a session lives: its one item's key and the server that holds it.
pub(super) struct Key {
    pub(super) key: String,
    pub(super) server: usize,
}

/// A session item as read.
pub(super) enum Found {
    Missing,
    /// Present but no live session — expired, undecodable, a tombstone, a
    /// pending copy of a move that did not commit: absent for every
    /// purpose, but replacing it needs its CAS.
    Dead {
        cas: u64,
    },
    Live {
        item: Item,
        cas: u64,
    },
}

/// A reply to a `Get` of a session key, classified at a time.
pub(super) enum Read {
    Found(Found),
    /// A live copy written by `change_id`, live only if the move committed.
    Pending {
        item: Item,
        cas: u64,
        from: String,
    },
}

/// The outcome of [`Inner::put_new`].
pub(super) enum Put {
    /// Stored; the item's CAS, when the server gave it.
    Stored(Option<u64>),
    /// A live session holds the key; nothing was written.
    Taken,
}

/// What a read-check-write cycle does with the live item it read.
pub(super) enum Step<T> {
    /// Answer without writing.
    Answer(T),
    /// Write the item back, compare-and-swap against the read; answer once
    /// it is stored.
    Write(Item, T),
}

impl Inner {
    pub(super) fn key(&self, id: &SessionId) -> Key {
        self.key_of_part(&id.at_rest(self.hash_ids))
    }

    /// The key whose part (the key without the prefix) is `part`.
    pub(super) fn key_of_part(&self, part: &str) -> Key {
        let server = self.ring.locate(key_point(part));
        let key = format!("{}{part}", self.prefix);
        debug_assert!(valid_key(&key), "build() checks the key length");
        Key { key, server }
    }

    /// The part of `key`: what pending copies and tombstones name.
    pub(super) fn part<'k>(&self, key: &'k Key) -> &'k str {
        &key.key[self.prefix.len()..]
    }

    pub(super) async fn exec<const N: usize>(
        &self,
        op: &'static str,
        server: usize,
        cmds: &[Cmd<'_>],
    ) -> Result<[Reply; N]> {
        debug_assert_eq!(cmds.len(), N);
        let replies = self
            .client
            .exec(server, cmds)
            .await
            .map_err(|e| self.client_error(op, e, largest_value(cmds)))?;
        replies.try_into().map_err(|_| self.unexpected(op, server))
    }

    pub(super) fn client_error(&self, op: &'static str, e: ClientError, size: usize) -> Error {
        if e.is_too_large() {
            let addr = e.addr.clone();
            return Error::codec(
                format!(
                    "value too large: {size} bytes refused by memcached server {addr} as over its item size; raise its -I or lower item_size_limit (now {} bytes)",
                    self.item_size_limit
                ),
                Some(Box::new(e)),
            )
            .with_store(STORE)
            .with_operation(op);
        }
        let detail = e.to_string();
        Error::store_unavailable(STORE, op, e).with_detail(detail)
    }

    pub(super) fn unexpected(&self, op: &'static str, server: usize) -> Error {
        Error::new(ErrorKind::StoreUnavailable)
            .with_store(STORE)
            .with_operation(op)
            .with_detail(format!(
                "server {}: unexpected reply",
                self.client.addr(server)
            ))
    }

    pub(super) fn contention(&self, op: &'static str, server: usize) -> Error {
        Error::new(ErrorKind::StoreUnavailable)
            .with_store(STORE)
            .with_operation(op)
            .with_detail(format!(
                "server {}: gave up after {} compare-and-swap conflicts",
                self.client.addr(server),
                self.cas_attempts
            ))
    }

    pub(super) fn conflict(&self) {
        Counters::bump(&self.client.counters.cas_conflicts, 1);
    }

    /// Fails unless `value` fits an item under `key`.
    pub(super) fn check_size(&self, op: &'static str, key: &str, value: &[u8]) -> Result<()> {
        let room = self
            .item_size_limit
            .saturating_sub(key.len() + ITEM_OVERHEAD);
        if value.len() > room {
            return Err(Error::codec(
                format!(
                    "value too large: the session is {} bytes stored, memcached items of {} bytes leave room for {room} under this key",
                    value.len(),
                    self.item_size_limit
                ),
                None,
            )
            .with_store(STORE)
            .with_operation(op));
        }
        Ok(())
    }

    /// Classifies the reply to a `Get` of a session item at `now`.
    pub(super) fn classify(
        &self,
        op: &'static str,
        server: usize,
        reply: Reply,
        now: u64,
        id: &SessionId,
    ) -> Result<Read> {
        match reply {
            Reply::Miss => Ok(Read::Found(Found::Missing)),
            Reply::Value { data, cas } => match decode(&data) {
                Ok(Stored::Session(item)) if !item.record.meta.is_expired(now) => {
                    Ok(Read::Found(Found::Live { item, cas }))
                }
                Ok(Stored::Pending { item, from }) if !item.record.meta.is_expired(now) => {
                    Ok(Read::Pending { item, cas, from })
                }
                Ok(_) => Ok(Read::Found(Found::Dead { cas })),
                Err(err) => {
                    tracing::warn!(
                        session = %id.short_hash(),
                        error = %err,
                        "memcached holds an undecodable session item; treating it as absent"
                    );
                    Ok(Read::Found(Found::Dead { cas }))
                }
            },
            _ => Err(self.unexpected(op, server)),
        }
    }

    /// Reads the session at `key` with its CAS (`mg … v c`). A pending copy
    /// of a `change_id` is resolved on the way (see [`change_id`]): if the
    /// move committed it is finished — rewritten as the session — and read
    /// again; otherwise it is absent. That costs two more round trips, only
    /// in that rare state.
    pub(super) async fn read(&self, op: &'static str, id: &SessionId, key: &Key) -> Result<Found> {
        let mut retries = self.retries();
        while retries.next().await {
            let [reply] = self
                .exec(op, key.server, &[Cmd::Get { key: &key.key }])
                .await?;
            let now = now_ms();
            match self.classify(op, key.server, reply, now, id)? {
                Read::Found(found) => return Ok(found),
                Read::Pending { item, cas, from } => {
                    // A part that makes no valid key is none of ours.
                    let source = valid_key(&format!("{}{from}", self.prefix))
                        .then(|| self.key_of_part(&from));
                    let committed = match source {
                        Some(source) => self.moved(op, &source, self.part(key)).await?,
                        None => false,
                    };
                    if !committed {
                        return Ok(Found::Dead { cas });
                    }
                    if let Some(cas) = self.finish_move(op, key, &item, Some(cas), now).await? {
                        return Ok(Found::Live { item, cas });
                    }
                    self.conflict();
                }
            }
        }
        Err(self.contention(op, key.server))
    }

    /// Stores `value` under `key` unless a live session holds it: `add`,
    /// and when the key holds a dead item (expired but not yet dropped by
    /// memcached, whose TTLs are rounded up; a tombstone; a pending copy
    /// that did not commit) a compare-and-swap over it.
    pub(super) async fn put_new(
        &self,
        op: &'static str,
        id: &SessionId,
        key: &Key,
        value: &[u8],
        exptime: i64,
    ) -> Result<Put> {
        let mut retries = self.retries();
        while retries.next().await {
            let [reply] = self
                .exec(
                    op,
                    key.server,
                    &[Cmd::Set {
                        key: &key.key,
                        value,
                        exptime,
                        mode: SetMode::Add,
                        cas: None,
                    }],
                )
                .await?;
            match reply {
                Reply::Stored { cas } => return Ok(Put::Stored(cas)),
                Reply::NotStored => {}
                _ => return Err(self.unexpected(op, key.server)),
            }
            let cas = match self.read(op, id, key).await? {
                Found::Live { .. } => return Ok(Put::Taken),
                Found::Missing => continue,
                Found::Dead { cas } => cas,
            };
            let [reply] = self
                .exec(
                    op,
                    key.server,
                    &[Cmd::Set {
                        key: &key.key,
                        value,
                        exptime,
                        mode: SetMode::Set,
                        cas: Some(cas),
                    }],
                )
                .await?;
            match reply {
                Reply::Stored { cas } => return Ok(Put::Stored(cas)),
                Reply::Exists | Reply::NotFound => self.conflict(),
                _ => return Err(self.unexpected(op, key.server)),
            }
        }
        Err(self.contention(op, key.server))
    }

    /// The exptime for an item that expires at `expires_ms`, at `now` (ms).
    pub(super) fn exptime_at(&self, expires_ms: u64, now: u64) -> i64 {
        exptime(expires_ms.saturating_sub(now), now / 1000)
    }

    /// The compare-and-swap attempts of one operation (see [`Retries`]).
    pub(super) fn retries(&self) -> Retries {
        Retries {
            left: self.cas_attempts,
            tried: 0,
            backoff: Backoff::new(Duration::from_micros(250), Duration::from_millis(8)),
        }
    }

    /// The read-check-write cycle behind every operation on one existing
    /// session: read the item with its CAS (`mg … v c`); answer `absent` if
    /// the session is missing or expired; otherwise let `step` decide, at
    /// `now`, from the live item — lock included — and write what it
    /// returns with that CAS (`ms … C<cas>`).
    ///
    /// The write lands only if nobody wrote the item since the read, so
    /// `step`'s checks (the lock's owner and expiry, the data it merges
    /// into) and the write are one atomic step. On a conflict (`EX`), or if
    /// the item vanished in between (`NF`), the cycle starts again on what
    /// is stored now.
    pub(super) async fn cycle<T>(
        &self,
        op: &'static str,
        id: &SessionId,
        key: &Key,
        absent: T,
        mut step: impl FnMut(Item, u64) -> Step<T>,
    ) -> Result<T> {
        let mut retries = self.retries();
        while retries.next().await {
            let Found::Live { item, cas } = self.read(op, id, key).await? else {
                return Ok(absent);
            };
            let now = now_ms();
            let (item, answer) = match step(item, now) {
                Step::Answer(answer) => return Ok(answer),
                Step::Write(item, answer) => (item, answer),
            };
            let value = encode_item(item.lock.as_ref(), &item.record);
            self.check_size(op, &key.key, &value)?;
            let [reply] = self
                .exec(
                    op,
                    key.server,
                    &[Cmd::Set {
                        key: &key.key,
                        value: &value,
                        exptime: self.exptime_at(item.record.meta.expires(), now),
                        mode: SetMode::Set,
                        cas: Some(cas),
                    }],
                )
                .await?;
            match reply {
                Reply::Stored { .. } => return Ok(answer),
                Reply::Exists | Reply::NotFound => self.conflict(),
                _ => return Err(self.unexpected(op, key.server)),
            }
        }
        Err(self.contention(op, key.server))
    }
}

/// The attempts of one compare-and-swap loop: `cas_attempts` of them, the
/// first two at once (a conflict is usually one other writer, done by
/// then), the rest after a jittered pause that grows from 250 µs to 8 ms.
pub(super) struct Retries {
    left: u32,
    tried: u32,
    backoff: Backoff,
}

impl Retries {
    /// Whether to make another attempt, after its pause.
    pub(super) async fn next(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        self.tried += 1;
        if self.tried > 2 {
            self.backoff.pause().await;
        }
        true
    }
}

/// The size of the largest value in `cmds`, for error messages.
fn largest_value(cmds: &[Cmd<'_>]) -> usize {
    cmds.iter()
        .map(|c| match c {
            Cmd::Set { value, .. } => value.len(),
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}
