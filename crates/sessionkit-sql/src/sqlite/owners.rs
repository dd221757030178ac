//! The SQLite store's owner index: the `owner` and `handle` columns of the
//! session's row (schema version 2), with a partial index on `owner`.
//!
//! One writer at a time is SQLite's rule: setting an owner runs in one
//! `BEGIN IMMEDIATE` transaction (the cap's count, the ended sessions and
//! the write see no other writer, so two logins cannot both slip under the
//! cap). Rows of ended sessions go with their sessions (destroy, sweep),
//! and expired ones are never counted nor listed.

use sessionkit_core::owner::{
    OwnedSession, Owner, OwnerCap, OwnerIndex, OwnerSet, SessionHandle, WhenFull, owner_delta,
};
use sessionkit_core::{Result, SessionId};
use sqlx::Row as _;

use super::{STORE, SqliteStore, now};
use crate::common::{self, corrupt, failed};

impl OwnerIndex for SqliteStore {
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
        let (key, now) = (self.key(id), now());
        let mut tx = self
            .inner
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(fail)?;
        let data: Option<String> = sqlx::query_scalar(&format!(
            "SELECT data FROM {t} WHERE id = ?1 AND expires > ?2"
        ))
        .bind(&key)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(fail)?;
        let Some(data) = data else {
            return Ok(OwnerSet::Gone);
        };
        let mut entries = match common::decode_entries(&data) {
            Ok(entries) => entries,
            Err(reason) => {
                corrupt(STORE, id, reason);
                return Ok(OwnerSet::Gone);
            }
        };
        // The owner's other live sessions, least recently used first.
        let others = sqlx::query(&format!(
            "SELECT id, handle FROM {t} WHERE owner = ?1 AND expires > ?2 AND id <> ?3
             ORDER BY expires - ttl, handle"
        ))
        .bind(owner.as_str())
        .bind(now)
        .bind(&key)
        .fetch_all(&mut *tx)
        .await
        .map_err(fail)?;
        let over = cap.map_or(0, |cap| {
            (others.len() + 1).saturating_sub(cap.max.get() as usize)
        });
        if over > 0 && cap.is_some_and(|c| c.when_full == WhenFull::Refuse) {
            return Ok(OwnerSet::Full);
        }
        let mut ended = Vec::with_capacity(over);
        for other in others.iter().take(over) {
            let other_id: Vec<u8> = other.try_get("id").map_err(fail)?;
            let other_handle: Option<String> = other.try_get("handle").map_err(fail)?;
            sqlx::query(&format!("DELETE FROM {t} WHERE id = ?1"))
                .bind(other_id)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            if let Some(h) = other_handle.and_then(|h| SessionHandle::parse(&h).ok()) {
                ended.push(h);
            }
        }
        entries.apply(&owner_delta(owner, handle, device)?);
        sqlx::query(&format!(
            "UPDATE {t} SET data = ?2, owner = ?3, handle = ?4 WHERE id = ?1"
        ))
        .bind(&key)
        .bind(common::entries_json(&entries)?)
        .bind(owner.as_str())
        .bind(handle.to_string())
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(OwnerSet::Set { ended })
    }

    async fn sessions_of(&self, owner: &Owner) -> Result<Vec<OwnedSession>> {
        let fail = |e| failed(STORE, "sessions_of", e);
        let t = &self.inner.table.quoted;
        let rows = sqlx::query(&format!(
            "SELECT handle, created, ttl, expires, data FROM {t}
             WHERE owner = ?1 AND expires > ?2 ORDER BY expires - ttl, handle"
        ))
        .bind(owner.as_str())
        .bind(now())
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
            "DELETE FROM {t} WHERE owner = ?1 AND handle = ?2 AND expires > ?3"
        ))
        .bind(owner.as_str())
        .bind(handle.to_string())
        .bind(now())
        .execute(&self.inner.pool)
        .await
        .map_err(|e| failed(STORE, "revoke", e))?
        .rows_affected();
        Ok(deleted > 0)
    }

    async fn revoke_all(&self, owner: &Owner, except: Option<&SessionHandle>) -> Result<u64> {
        let t = &self.inner.table.quoted;
        let deleted = sqlx::query(&format!(
            "DELETE FROM {t} WHERE owner = ?1 AND expires > ?2 AND (?3 IS NULL OR handle IS NOT ?3)"
        ))
        .bind(owner.as_str())
        .bind(now())
        .bind(except.map(ToString::to_string))
        .execute(&self.inner.pool)
        .await
        .map_err(|e| failed(STORE, "revoke_all", e))?
        .rows_affected();
        Ok(deleted)
    }
}
