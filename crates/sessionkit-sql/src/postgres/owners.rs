//! The PostgreSQL store's owner index: the `owner` and `handle` columns of
//! the session's row (schema version 2), with a partial index on `owner`.
//!
//! Without a cap, setting the owner is one `UPDATE`. With a cap, the count
//! of the owner's sessions and the write must not interleave with another
//! login of the same owner, and one statement cannot see a login that
//! commits while it waits (a statement reads one snapshot, taken when it
//! starts). So a capped `set_owner` is a transaction that first takes a
//! transaction-scoped advisory lock on the owner (keyed by the table's
//! oid and a hash of the owner), then counts, ends the least recently used, and
//! writes: four more round trips than without a cap, only at login, and
//! only where a cap is configured. Rows of ended sessions go with their
//! sessions; expired ones are never counted nor listed.

use sessionkit_core::owner::{
    OwnedSession, Owner, OwnerCap, OwnerIndex, OwnerSet, SessionHandle, WhenFull, owner_delta,
};
use sessionkit_core::{Result, SessionId};
use sqlx::Row as _;

use super::{NOW, PgStore, STORE};
use crate::common::{self, failed};

impl PgStore {
    /// The statement that writes the owner into the live session `$1`.
    fn set_owner_sql(&self) -> String {
        let t = &self.inner.table.quoted;
        format!(
            "UPDATE {t} s SET data = (s.data - $2::text[]) || $3::jsonb, owner = $4, handle = $5
             WHERE s.id = $1 AND s.expires > {NOW} AND jsonb_typeof(s.data) = 'object'
             RETURNING 1"
        )
    }
}

impl OwnerIndex for PgStore {
    async fn set_owner(
        &self,
        id: &SessionId,
        owner: &Owner,
        handle: &SessionHandle,
        device: Option<&str>,
        cap: Option<OwnerCap>,
    ) -> Result<OwnerSet> {
        let fail = |e| failed(STORE, "set_owner", e);
        let t = &self.inner.table.quoted;
        let key = self.key(id);
        let (removed, set) = common::delta_removed_and_set(&owner_delta(owner, handle, device)?)?;
        let write = self.set_owner_sql();
        let Some(cap) = cap else {
            let written = sqlx::query(&write)
                .bind(&key)
                .bind(&removed)
                .bind(&set)
                .bind(owner.as_str())
                .bind(handle.to_string())
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(fail)?;
            return Ok(match written {
                Some(_) => OwnerSet::Set { ended: Vec::new() },
                None => OwnerSet::Gone,
            });
        };
        // READ COMMITTED whatever the database's default: each statement
        // below must see the logins that committed while this one waited
        // for the lock (a snapshot taken at the lock, as REPEATABLE READ
        // would, counts without them).
        let mut tx = self
            .inner
            .pool
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(fail)?;
        // The owner's lock in this table, one `bigint` key: the table's oid
        // (so that every spelling of its name, `sessions` or
        // `public.sessions`, takes the same lock) and a 32-bit hash of the
        // owner (two owners that share it only wait for each other). The
        // waiters' locks (`wake`) are in the other, two-`int4`, key space.
        sqlx::query(
            "SELECT pg_advisory_xact_lock(
                ($1::regclass::oid::int8 << 32) | (hashtext($2)::int8 & 4294967295))",
        )
        .bind(&self.inner.table.quoted)
        .bind(owner.as_str())
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
        // A snapshot taken after the lock: it sees every login of this
        // owner that committed before.
        let others = sqlx::query(&format!(
            "SELECT handle FROM {t} WHERE owner = $1 AND expires > {NOW} AND id <> $2
             ORDER BY expires - ttl, handle"
        ))
        .bind(owner.as_str())
        .bind(&key)
        .fetch_all(&mut *tx)
        .await
        .map_err(fail)?;
        let over = (others.len() + 1).saturating_sub(cap.max.get() as usize);
        if over > 0 && cap.when_full == WhenFull::Refuse {
            return Ok(OwnerSet::Full);
        }
        let written = sqlx::query(&write)
            .bind(&key)
            .bind(&removed)
            .bind(&set)
            .bind(owner.as_str())
            .bind(handle.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(fail)?;
        if written.is_none() {
            return Ok(OwnerSet::Gone);
        }
        // The victims are deleted by owner and handle, not by id: a victim
        // whose id changes meanwhile (`change_id` updates the row in
        // place) is followed to its new id by the delete.
        let mut ended = Vec::with_capacity(over);
        let mut victims = Vec::with_capacity(over);
        for other in others.iter().take(over) {
            let h: Option<String> = other.try_get("handle").map_err(fail)?;
            if let Some(h) = h {
                if let Ok(parsed) = SessionHandle::parse(&h) {
                    ended.push(parsed);
                }
                victims.push(h);
            }
        }
        if !victims.is_empty() {
            sqlx::query(&format!(
                "DELETE FROM {t} WHERE owner = $1 AND handle = ANY($2) AND id <> $3"
            ))
            .bind(owner.as_str())
            .bind(&victims)
            .bind(&key)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        }
        tx.commit().await.map_err(fail)?;
        Ok(OwnerSet::Set { ended })
    }

    async fn sessions_of(&self, owner: &Owner) -> Result<Vec<OwnedSession>> {
        let fail = |e| failed(STORE, "sessions_of", e);
        let t = &self.inner.table.quoted;
        let rows = sqlx::query(&format!(
            "SELECT handle, created, ttl, expires, data::text AS data FROM {t}
             WHERE owner = $1 AND expires > {NOW} ORDER BY expires - ttl, handle"
        ))
        .bind(owner.as_str())
        .fetch_all(&self.inner.pool)
        .await
        .map_err(fail)?;
        let mut sessions = Vec::with_capacity(rows.len());
        for row in rows {
            let listed = common::owned_session(
                row.try_get("handle").map_err(fail)?,
                [
                    row.try_get("created").map_err(fail)?,
                    row.try_get("ttl").map_err(fail)?,
                    row.try_get("expires").map_err(fail)?,
                ],
                row.try_get("data").map_err(fail)?,
            );
            sessions.extend(listed);
        }
        Ok(sessions)
    }

    async fn revoke(&self, owner: &Owner, handle: &SessionHandle) -> Result<bool> {
        let t = &self.inner.table.quoted;
        let deleted = sqlx::query(&format!(
            "DELETE FROM {t} WHERE owner = $1 AND handle = $2 AND expires > {NOW}"
        ))
        .bind(owner.as_str())
        .bind(handle.to_string())
        .execute(&self.inner.pool)
        .await
        .map_err(|e| failed(STORE, "revoke", e))?
        .rows_affected();
        Ok(deleted > 0)
    }

    async fn revoke_all(&self, owner: &Owner, except: Option<&SessionHandle>) -> Result<u64> {
        let t = &self.inner.table.quoted;
        let deleted = sqlx::query(&format!(
            "DELETE FROM {t} WHERE owner = $1 AND expires > {NOW}
               AND ($2::text IS NULL OR handle IS DISTINCT FROM $2)"
        ))
        .bind(owner.as_str())
        .bind(except.map(ToString::to_string))
        .execute(&self.inner.pool)
        .await
        .map_err(|e| failed(STORE, "revoke_all", e))?
        .rows_affected();
        Ok(deleted)
    }
}
