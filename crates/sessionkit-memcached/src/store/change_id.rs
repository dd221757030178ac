//! `change_id` on memcached: a move in three writes whose one commit point is a compare-and-swap, so that the session is under exactly one id whatever fails.
//!
//! Memcached has no write that spans two keys, even on one server, so a
//! session cannot change its key in one atomic step. Deleting the old item
//! and then writing the new one (what versions up to 0.1 did) leaves the
//! session under neither id when the second write fails or the process
//! dies in between; writing the new one first leaves it under both. This
//! module moves it with three writes, of which exactly one — a
//! compare-and-swap on the old item — decides, and makes every reader
//! decide the same way:
//!
//! 1. **Read** the old item with its CAS (`mg`): `Gone` if it holds no live
//!    session, `LockLost` if fenced and the token does not hold its lock.
//! 2. **Copy**: store the session under the new id as a *pending copy*
//!    that names the old key (`ms … ME`, add; over a dead item, a
//!    compare-and-swap): `IdTaken` if a live session holds the new id. A
//!    pending copy is no session by itself.
//! 3. **Commit**: replace the old item, compare-and-swap against the read
//!    of step 1, by a *tombstone* that names the new key (`ms … C<cas>`).
//!    From here the session is under the new id. A CAS mismatch (someone
//!    wrote or locked the session since step 1) deletes the copy and starts
//!    again from step 1; `NF` (destroyed meanwhile) deletes it and answers
//!    `Gone`.
//! 4. **Finish**: rewrite the copy as a plain session item (compare-and-swap
//!    against step 2). If this fails, the move still happened and
//!    `change_id` answers `Changed`: the next read of the new id finishes
//!    it.
//!
//! Every read of a session key applies the same rule (`Inner::read`): a
//! tombstone is no session (the old id answers absent, and `create` may
//! replace it); a pending copy is the session **only if the key it names
//! holds a tombstone that names it back**, and is then finished on the way
//! (two more round trips, only in this rare state); otherwise it is absent.
//! So the tombstone alone says where the session is.
//!
//! The new id is drawn on the old id's server ([`SessionStore::new_id_for`](sessionkit_core::SessionStore::new_id_for):
//! fresh ids until one's key lands there, N draws on average for N servers
//! of equal weight), so all of this happens on one server and that check is
//! local; a `change_id` between servers (an id from elsewhere, a ring that
//! changed) follows the same steps on two.
//!
//! The tombstone lives as long as the moved session (the same exptime): the
//! copy can only be pending as long as that, so a pending copy always finds
//! its tombstone unless memcached evicted it, and then it is lost as any
//! evicted session is. Its cost is a small item (the magic and the new
//! key's 64-character part) per regenerate, for the session's lifetime.
//!
//! # When a step fails
//!
//! Whatever stops the move, a reader finds the session under exactly one
//! id. Where it answers an error, the client keeps its old cookie, and the
//! session is under the old id unless the commit's outcome could not be
//! learnt (last rows).
//!
//! | what happens | old id | new id | `change_id` answers | the session is under |
//! |---|---|---|---|---|
//! | step 1 or 2 fails, or the process dies before step 3 is sent | session | nothing, or a copy that is absent (the old key holds no tombstone) | an error | the old id |
//! | step 3: CAS mismatch (a write or a lock since step 1) | session | copy deleted | (starts again) | the old id |
//! | step 3: `NF` (destroyed since step 1) | nothing | copy deleted | `Gone` | neither: it was destroyed |
//! | step 3 refused, or never sent | session | an absent copy | an error | the old id |
//! | step 3 times out; reading the old key shows the tombstone | tombstone | pending copy, then finished | `Changed` | the new id |
//! | step 3 times out; reading the old key shows no tombstone | session | an absent copy, kept (a commit still in flight would need it) | an error | the old id |
//! | step 3 times out, and so does that read | either | either | an error | exactly one of them, as the tombstone says; if the new one, the client does not know it and signs in again |
//! | the process dies after step 3 | tombstone | pending copy, finished by its first read | (nothing) | the new id, which no client has: as with any store whose commit lands and whose reply is lost |
//! | step 4 fails | tombstone | pending copy, finished by its first read | `Changed` | the new id |
//! | memcached evicts the tombstone before the copy is finished | nothing | an absent copy | — | neither: lost, as any evicted session |
//!
//! A copy that stays absent is never deleted by a reader (a move may be
//! between its steps 2 and 3); it expires with the session's exptime, or a
//! `create` of its id replaces it.
//!
//! # Round trips
//!
//! Four on one server (`mg`; `ms ME`; `ms C`; `ms C`), three when it answers
//! `IdTaken` after an add that found a live session (`mg`; `ms ME`; `mg`),
//! one for `Gone` and `LockLost`.

use sessionkit_core::record::now_ms;
use sessionkit_core::store::IdChanged;
use sessionkit_core::{LockToken, Result, SessionId};

use super::Inner;
use super::cycle::{Found, Key, Put};
use crate::client::{Cmd, Reply, SetMode};
use crate::value::{Item, Stored, decode, encode_item, encode_moved, encode_pending};

/// The most ids [`Inner::id_on_server_of`] draws before it settles for an
/// id on another server (a server with a tiny share of the ring); the move
/// then spans two servers and stays correct.
const MAX_DRAWS: u32 = 1024;

impl Inner {
    /// A fresh id whose key lives on the server of `old`'s key.
    ///
    /// # Security
    ///
    /// Each draw is a fresh [`SessionId::generate`]; keeping the first that
    /// lands on a server (rejection sampling) leaves it uniform among the
    /// ids of that server: 256 bits less the log2 of the number of servers,
    /// far above the 64 bits OWASP asks for.
    pub(super) fn id_on_server_of(&self, old: &SessionId) -> SessionId {
        let server = self.key(old).server;
        let mut id = SessionId::generate();
        for _ in 1..MAX_DRAWS {
            if self.key(&id).server == server {
                break;
            }
            id = SessionId::generate();
        }
        id
    }

    /// The move; see the [module docs](self).
    pub(super) async fn change_id(
        &self,
        old: &SessionId,
        new: &SessionId,
        fence: Option<&LockToken>,
    ) -> Result<IdChanged> {
        const OP: &str = "change_id";
        let from = self.key(old);
        let to = self.key(new);
        if old == new {
            return Ok(match self.read(OP, old, &from).await? {
                Found::Live { .. } => IdChanged::IdTaken,
                _ => IdChanged::Gone,
            });
        }
        let mut retries = self.retries();
        while retries.next().await {
            // 1. Read.
            let Found::Live { item, cas: old_cas } = self.read(OP, old, &from).await? else {
                return Ok(IdChanged::Gone);
            };
            let now = now_ms();
            // Fenced, the lock moves along (same token, same expiry);
            // unfenced, it stays behind and ends with the old item.
            let lock = match fence {
                Some(token) => match item.lock {
                    Some(lock) if lock.held_by(token, now) => Some(lock),
                    _ => return Ok(IdChanged::LockLost),
                },
                None => None,
            };
            let mut moved = Item {
                lock,
                record: item.record,
            };
            moved.record.meta.refresh(now);
            let exptime = self.exptime_at(moved.record.meta.expires(), now);

            // 2. Copy.
            let copy = encode_pending(moved.lock.as_ref(), &moved.record, self.part(&from));
            self.check_size(OP, &to.key, &copy)?;
            let copy_cas = match self.put_new(OP, new, &to, &copy, exptime).await? {
                Put::Stored(cas) => cas,
                Put::Taken => return Ok(IdChanged::IdTaken),
            };

            // 3. Commit.
            let tombstone = encode_moved(self.part(&to));
            let commit = Cmd::Set {
                key: &from.key,
                value: &tombstone,
                exptime,
                mode: SetMode::Set,
                cas: Some(old_cas),
            };
            match self.client.exec(from.server, &[commit]).await {
                Ok(replies) => match replies.as_slice() {
                    [Reply::Stored { .. }] => {}
                    [Reply::Exists] => {
                        self.conflict();
                        self.drop_copy(OP, &to, copy_cas).await?;
                        continue;
                    }
                    [Reply::NotFound] => {
                        self.drop_copy(OP, &to, copy_cas).await?;
                        return Ok(IdChanged::Gone);
                    }
                    _ => return Err(self.unexpected(OP, from.server)),
                },
                Err(e) => {
                    let surely_not_applied = e.surely_not_applied();
                    let err = self.client_error(OP, e, tombstone.len());
                    if surely_not_applied {
                        // The copy is absent either way; deleting it only
                        // saves memory.
                        let _ = self.drop_copy(OP, &to, copy_cas).await;
                        return Err(err);
                    }
                    // Whether the tombstone landed decides; ask the old key.
                    match self.moved(OP, &from, self.part(&to)).await {
                        Ok(true) => {}
                        Ok(false) => return Err(err),
                        Err(again) => {
                            tracing::warn!(
                                session = %old.short_hash(),
                                error = %again,
                                "memcached: change_id could not learn whether its commit landed; the session is under the old id or the new one, not both"
                            );
                            return Err(err);
                        }
                    }
                }
            }

            // 4. Finish. The move is done whatever this gives.
            if let Err(err) = self.finish_move(OP, &to, &moved, copy_cas, now).await {
                tracing::debug!(
                    session = %new.short_hash(),
                    error = %err,
                    "memcached: change_id left its copy pending; its first read finishes it"
                );
            }
            return Ok(IdChanged::Changed(moved.record.meta));
        }
        Err(self.contention(OP, from.server))
    }

    /// Whether the key `from` holds a tombstone that names the key part
    /// `to`: whether a move from `from` to `to` committed.
    pub(super) async fn moved(&self, op: &'static str, from: &Key, to: &str) -> Result<bool> {
        let [reply] = self
            .exec(op, from.server, &[Cmd::Get { key: &from.key }])
            .await?;
        Ok(match reply {
            Reply::Value { data, .. } => {
                matches!(decode(&data), Ok(Stored::Moved { to: named }) if named == to)
            }
            _ => false,
        })
    }

    /// Rewrites a pending copy at `key` as the session item `item`,
    /// compare-and-swap against `cas` when known; the new CAS, or `None` if
    /// the copy changed meanwhile (or the server gave no CAS): read it again.
    pub(super) async fn finish_move(
        &self,
        op: &'static str,
        key: &Key,
        item: &Item,
        cas: Option<u64>,
        now: u64,
    ) -> Result<Option<u64>> {
        let value = encode_item(item.lock.as_ref(), &item.record);
        let [reply] = self
            .exec(
                op,
                key.server,
                &[Cmd::Set {
                    key: &key.key,
                    value: &value,
                    exptime: self.exptime_at(item.record.meta.expires(), now),
                    mode: SetMode::Set,
                    cas,
                }],
            )
            .await?;
        match reply {
            Reply::Stored { cas } => Ok(cas),
            Reply::Exists | Reply::NotFound => Ok(None),
            _ => Err(self.unexpected(op, key.server)),
        }
    }

    /// Deletes the copy of a move that did not commit.
    async fn drop_copy(&self, op: &'static str, to: &Key, cas: Option<u64>) -> Result<()> {
        let _: [Reply; 1] = self
            .exec(op, to.server, &[Cmd::Delete { key: &to.key, cas }])
            .await?;
        Ok(())
    }
}
