//! The memory store's owner index: owner → handle → session id, under one
//! mutex that is taken before any shard lock, never after one.
//!
//! Only owner operations and `change_id` take it; reads, writes, locks,
//! destroys, the sweep and evictions do not, so they cost nothing more. An
//! entry whose session ended by one of those is stale: it is recognised
//! (the session is gone, or no longer carries that owner and handle) and
//! dropped whenever that owner's index is used, so stale entries never
//! outnumber what ended since. `change_id` moves an owned session's entry
//! to the new id under the index lock, so an owner operation never finds
//! the session at neither id.

use std::collections::HashMap;

use crate::codec::{decode_value, encode_value};
use crate::error::Result;
use crate::id::SessionId;
use crate::owner::{
    DEVICE_KEY, HANDLE_KEY, OWNER_KEY, OwnedSession, Owner, OwnerCap, OwnerIndex, OwnerSet,
    SessionHandle, WhenFull,
};
use crate::record::{Record, now_ms};
use crate::store::memory::{MemoryStore, Shared};

/// Every owner's sessions, by handle.
#[derive(Default)]
pub(super) struct Index {
    owners: HashMap<Owner, HashMap<SessionHandle, SessionId>>,
}

impl Index {
    /// After `change_id` moved `record` to `new`: its entry follows it.
    pub(super) fn moved(&mut self, record: &Record, new: SessionId) {
        if let Some((owner, handle)) = owner_of(record)
            && let Some(id) = self
                .owners
                .get_mut(&owner)
                .and_then(|sessions| sessions.get_mut(&handle))
        {
            *id = new;
        }
    }
}

/// The owner and handle a record carries, if it has an owner.
fn owner_of(record: &Record) -> Option<(Owner, SessionHandle)> {
    let text = |key| -> Option<String> { decode_value(record.entries.get(key)?).ok() };
    let owner = Owner::new(text(OWNER_KEY)?).ok()?;
    let handle = SessionHandle::parse(&text(HANDLE_KEY)?).ok()?;
    Some((owner, handle))
}

impl Shared {
    /// The session of an index entry as the owner's list shows it, if it is
    /// live and still carries that owner and handle; `None` marks the entry
    /// stale. Locks the session's shard (the index lock is held).
    fn owned(&self, owner: &Owner, handle: &SessionHandle, id: &SessionId) -> Option<OwnedSession> {
        let now = now_ms();
        let mut shard = self.shard(id);
        let record = shard.live(id, now)?;
        if owner_of(record).as_ref() != Some(&(owner.clone(), *handle)) {
            return None;
        }
        let device = record
            .entries
            .get(DEVICE_KEY)
            .and_then(|v| decode_value::<String>(v).ok());
        let meta = &record.meta;
        let last_seen = meta.expires().saturating_sub(meta.ttl_ms());
        Some(OwnedSession::new(
            *handle,
            meta.created(),
            last_seen,
            meta.expires(),
            device,
        ))
    }

    /// The owner's live sessions (least recently used first), with their
    /// ids; stale entries are dropped.
    fn live_sessions(&self, index: &mut Index, owner: &Owner) -> Vec<(OwnedSession, SessionId)> {
        let Some(entries) = index.owners.get_mut(owner) else {
            return Vec::new();
        };
        let mut live = Vec::with_capacity(entries.len());
        entries.retain(|handle, id| match self.owned(owner, handle, id) {
            Some(session) => {
                live.push((session, *id));
                true
            }
            None => false,
        });
        if entries.is_empty() {
            index.owners.remove(owner);
        }
        live.sort_by_key(|(s, _)| (s.last_seen, s.handle));
        live
    }

    /// Ends the session `id` (and its lock).
    fn end(&self, id: &SessionId) {
        self.shard(id).remove(id);
    }
}

impl OwnerIndex for MemoryStore {
    async fn set_owner(
        &self,
        id: &SessionId,
        owner: &Owner,
        handle: &SessionHandle,
        device: Option<&str>,
        cap: Option<OwnerCap>,
    ) -> Result<OwnerSet> {
        let shared = &self.shared;
        let mut index = shared.owners();
        let others: Vec<_> = shared
            .live_sessions(&mut index, owner)
            .into_iter()
            .filter(|(_, other)| other != id)
            .collect();
        let over = cap.map_or(0, |cap| {
            (others.len() + 1).saturating_sub(cap.max.get() as usize)
        });
        if over > 0 && cap.is_some_and(|c| c.when_full == WhenFull::Refuse) {
            return Ok(OwnerSet::Full);
        }
        // The session itself: its owner entries, replacing any earlier ones.
        let previous = {
            let now = now_ms();
            let mut shard = shared.shard(id);
            let Some(record) = shard.live(id, now) else {
                return Ok(OwnerSet::Gone);
            };
            let previous = owner_of(record);
            record
                .entries
                .insert(OWNER_KEY, encode_value(&owner.as_str())?);
            record
                .entries
                .insert(HANDLE_KEY, encode_value(&handle.to_string())?);
            match device {
                Some(device) => record.entries.insert(DEVICE_KEY, encode_value(&device)?),
                None => {
                    record.entries.remove(DEVICE_KEY);
                }
            }
            previous
        };
        if let Some((old_owner, old_handle)) = previous
            && let Some(entries) = index.owners.get_mut(&old_owner)
        {
            entries.remove(&old_handle);
            if entries.is_empty() {
                index.owners.remove(&old_owner);
            }
        }
        // The least recently used of the others make room.
        let mut ended = Vec::with_capacity(over);
        for (session, other) in others.into_iter().take(over) {
            shared.end(&other);
            ended.push(session.handle);
            if let Some(entries) = index.owners.get_mut(owner) {
                entries.remove(&session.handle);
            }
        }
        index
            .owners
            .entry(owner.clone())
            .or_default()
            .insert(*handle, *id);
        Ok(OwnerSet::Set { ended })
    }

    async fn sessions_of(&self, owner: &Owner) -> Result<Vec<OwnedSession>> {
        let mut index = self.shared.owners();
        let live = self.shared.live_sessions(&mut index, owner);
        Ok(live.into_iter().map(|(session, _)| session).collect())
    }

    async fn revoke(&self, owner: &Owner, handle: &SessionHandle) -> Result<bool> {
        let shared = &self.shared;
        let mut index = shared.owners();
        let Some(entries) = index.owners.get_mut(owner) else {
            return Ok(false);
        };
        let Some(id) = entries.remove(handle) else {
            return Ok(false);
        };
        if entries.is_empty() {
            index.owners.remove(owner);
        }
        // Only a live session that is still this owner's under this handle.
        let live = shared.owned(owner, handle, &id).is_some();
        if live {
            shared.end(&id);
        }
        Ok(live)
    }

    async fn revoke_all(&self, owner: &Owner, except: Option<&SessionHandle>) -> Result<u64> {
        let shared = &self.shared;
        let mut index = shared.owners();
        let mut ended = 0;
        for (session, id) in shared.live_sessions(&mut index, owner) {
            if Some(&session.handle) == except {
                continue;
            }
            shared.end(&id);
            ended += 1;
            if let Some(entries) = index.owners.get_mut(owner) {
                entries.remove(&session.handle);
            }
        }
        if index.owners.get(owner).is_some_and(HashMap::is_empty) {
            index.owners.remove(owner);
        }
        Ok(ended)
    }
}
