//! Owners: who a session belongs to, and the index a store keeps of an
//! owner's sessions, so that an application can list them ("your
//! devices"), revoke one or all of them, and cap how many an owner has.
//!
//! A session gets its owner with [`Session::set_owner`](crate::Session::set_owner),
//! usually at login, right after `regenerate`. The store records the owner,
//! a random [`SessionHandle`] and an optional device label with the session
//! (in reserved entries that plain keys, bags and flash messages never
//! meet) and in its index of that owner's sessions, in one atomic
//! operation that also enforces the [`OwnerCap`]. The [`Owners`] registry
//! then lists, counts and revokes an owner's sessions by handle.
//!
//! # Handles, not ids
//!
//! A session id is a bearer credential: whoever holds it is logged in. A
//! [`SessionHandle`] is 128 random bits drawn when the owner is set, kept
//! next to the session and in the index: it is not derived from the id, the
//! id cannot be derived from it, and it is no use as a cookie. It is safe to
//! show on an account page and to send back in a "sign out this device"
//! form. A regenerated session keeps its handle.
//!
//! # Which stores
//!
//! A store keeps an owner index by implementing [`OwnerIndex`]; the session
//! handle finds it through [`SessionStore::owner_index`]. The memory store,
//! `sessionkit-sql`'s SQLite and PostgreSQL stores, `sessionkit-file`'s
//! `FileStore` (across the processes sharing a save path) and
//! `sessionkit-redis` (one server and Cluster) do; each crate's docs say
//! what is atomic there. On a store without one,
//! [`Session::set_owner`](crate::Session::set_owner) fails with
//! [`ErrorKind::OwnersUnsupported`], and [`Owners::of`] does not compile:
//! the no-op store, and memcached, where no index can be reliable (see
//! `sessionkit-memcached`'s docs, "Owners").
//!
//! # Costs
//!
//! Setting the owner is one atomic store operation, and ordinary reads and
//! writes cost nothing more. Its round trips (a new session is created
//! first, as a flush would): one script on one Redis server; three scripts
//! on Redis Cluster, where the index has a slot of its own (two more, and
//! a read, when the cap ends a session); one `UPDATE` on PostgreSQL
//! without a cap, a transaction of six statements with one (`BEGIN`, the
//! owner's advisory lock, the count, the write, the delete of the ended
//! sessions, `COMMIT`); on SQLite a write transaction; on the file store
//! file operations under the owner's lock. Each crate's docs count its own. Listing, counting and revoking cost
//! in proportion to that owner's sessions; index entries of sessions that
//! ended are dropped whenever that owner's index is used, so they never
//! accumulate beyond what ended since.

use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, ErrorKind, Result};
use crate::events::Events;
use crate::id::SessionId;
use crate::store::{BoxFuture, SessionStore};

/// The reserved entries a session's owner lives in (see `session/keys.rs`).
pub(crate) const OWNER_KEY: &str = "\u{1}owner";
pub(crate) const HANDLE_KEY: &str = "\u{1}handle";
pub(crate) const DEVICE_KEY: &str = "\u{1}device";

/// Who a session belongs to: an application's user id, account name or
/// the like. 1 to 256 bytes, no control characters.
///
/// ```
/// use sessionkit_core::owner::Owner;
///
/// assert_eq!(Owner::new("user-42")?.as_str(), "user-42");
/// assert!(Owner::new("").is_err());
/// assert!(Owner::new("a\nb").is_err());
/// # Ok::<(), sessionkit_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(Box<str>);

impl Owner {
    /// The longest owner, in bytes.
    pub const MAX_LEN: usize = 256;

    /// Validates `owner`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidOwner`] for an empty or too long owner, or one
    /// with control characters (they could forge log lines); the error
    /// never repeats the owner.
    pub fn new(owner: impl Into<String>) -> Result<Owner> {
        let owner = owner.into();
        let why = if owner.is_empty() {
            Some("empty")
        } else if owner.len() > Owner::MAX_LEN {
            Some("longer than 256 bytes")
        } else if owner.chars().any(char::is_control) {
            Some("contains a control character")
        } else {
            None
        };
        match why {
            Some(why) => Err(Error::new(ErrorKind::InvalidOwner).with_detail(why)),
            None => Ok(Owner(owner.into_boxed_str())),
        }
    }

    /// The owner as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Owners are often e-mail addresses: `Debug` shows their length only.
impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Owner(<{} bytes>)", self.0.len())
    }
}

/// A session's public name within its owner's sessions: 128 random bits,
/// shown as 32 lowercase hex digits. Safe to show and to send back; never
/// derived from the session id, and no use as one.
///
/// ```
/// use sessionkit_core::owner::SessionHandle;
///
/// let handle = SessionHandle::generate();
/// assert_eq!(handle.to_string().len(), 32);
/// assert_eq!(SessionHandle::parse(&handle.to_string())?, handle);
/// assert!(SessionHandle::parse("not a handle").is_err());
/// # Ok::<(), sessionkit_core::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionHandle([u8; 16]);

impl SessionHandle {
    /// A fresh handle from the operating system's CSPRNG.
    pub fn generate() -> SessionHandle {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system CSPRNG failed");
        SessionHandle(bytes)
    }

    /// Parses a handle as [`Display`](fmt::Display) shows it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidOwner`] when `text` is not 32 lowercase hex
    /// digits (it is never repeated in the error).
    pub fn parse(text: &str) -> Result<SessionHandle> {
        let bad = || Error::new(ErrorKind::InvalidOwner).with_detail("not a session handle");
        let digits = text.as_bytes();
        if digits.len() != 32 {
            return Err(bad());
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(bad()),
        };
        let mut bytes = [0u8; 16];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Ok(SessionHandle(bytes))
    }
}

impl fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionHandle({self})")
    }
}

/// What happens when an owner who already has [`OwnerCap::max`] sessions
/// gets another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhenFull {
    /// The owner's other sessions least recently used are ended, so that
    /// the new one fits (the login always succeeds).
    EndLeastRecent,
    /// The new session does not get the owner:
    /// [`Session::set_owner`](crate::Session::set_owner) fails with
    /// [`ErrorKind::OwnerFull`] (the login is refused).
    Refuse,
}

/// A cap on the sessions one owner has at once, enforced in the same store
/// operation that sets the owner: two simultaneous logins cannot both slip
/// under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerCap {
    /// The most sessions one owner has at once.
    pub max: NonZeroU32,
    /// What a session beyond `max` does.
    pub when_full: WhenFull,
}

/// One of an owner's sessions, as [`Owners::list`] shows it: never its id.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OwnedSession {
    /// Its handle, to show and to revoke it by.
    pub handle: SessionHandle,
    /// When the session was created.
    pub created: SystemTime,
    /// When it was last used, as precisely as the store knows: the last
    /// write, lock or touch (reads refresh it only when the touch is due).
    pub last_seen: SystemTime,
    /// When it expires unless used again.
    pub expires: SystemTime,
    /// The device label given to [`Session::set_owner_on`](crate::Session::set_owner_on),
    /// if any.
    pub device: Option<String>,
}

impl OwnedSession {
    /// One session of an owner, from the store's milliseconds since the
    /// Unix epoch (for store implementations).
    pub fn new(
        handle: SessionHandle,
        created_ms: u64,
        last_seen_ms: u64,
        expires_ms: u64,
        device: Option<String>,
    ) -> OwnedSession {
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        OwnedSession {
            handle,
            created: at(created_ms),
            last_seen: at(last_seen_ms),
            expires: at(expires_ms),
            device,
        }
    }
}

/// What [`OwnerIndex::set_owner`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OwnerSet {
    /// The owner is set; `ended` of the owner's other sessions were ended
    /// to make room ([`WhenFull::EndLeastRecent`]).
    Set {
        /// The handles of the sessions ended for the cap.
        ended: Vec<SessionHandle>,
    },
    /// The owner has as many sessions as the cap allows and the cap
    /// refuses more ([`WhenFull::Refuse`]); nothing was written.
    Full,
    /// The session is missing or expired; nothing was written.
    Gone,
}

/// The longest device label kept, in bytes: a longer one (a user agent
/// is whatever the client sends) is cut at a character boundary.
pub const DEVICE_MAX_LEN: usize = 256;

/// A device label as it is kept: control characters dropped (it ends up
/// in pages and logs), cut to [`DEVICE_MAX_LEN`] bytes.
fn device_label(device: &str) -> String {
    let mut label = String::with_capacity(device.len().min(DEVICE_MAX_LEN));
    for c in device.chars().filter(|c| !c.is_control()) {
        if label.len() + c.len_utf8() > DEVICE_MAX_LEN {
            break;
        }
        label.push(c);
    }
    label
}

/// The change a store makes to a session's entries when it sets its owner
/// (for [`OwnerIndex`] implementations): the owner, the handle and the
/// device label in their reserved entries (no device: its entry removed;
/// the label without control characters and cut to [`DEVICE_MAX_LEN`]
/// bytes). Apply it to the stored entries in the same atomic step as the
/// index.
///
/// ```
/// use sessionkit_core::owner::{Owner, SessionHandle, device_in, owner_delta};
/// use sessionkit_core::record::Entries;
///
/// let mut entries = Entries::default();
/// entries.apply(&owner_delta(&Owner::new("ada")?, &SessionHandle::generate(), Some("laptop"))?);
/// assert_eq!(device_in(&entries).as_deref(), Some("laptop"));
/// # Ok::<(), sessionkit_core::Error>(())
/// ```
pub fn owner_delta(
    owner: &Owner,
    handle: &SessionHandle,
    device: Option<&str>,
) -> Result<crate::record::Delta> {
    use crate::codec::encode_value;
    let mut delta = crate::record::Delta::default();
    delta.set(OWNER_KEY, encode_value(&owner.as_str())?);
    delta.set(HANDLE_KEY, encode_value(&handle.to_string())?);
    match device {
        Some(device) => delta.set(DEVICE_KEY, encode_value(&device_label(device))?),
        None => delta.remove(DEVICE_KEY),
    }
    Ok(delta)
}

/// The device label a session's entries carry, if any (for
/// [`OwnerIndex::sessions_of`] implementations).
pub fn device_in(entries: &crate::record::Entries) -> Option<String> {
    crate::codec::decode_value(entries.get(DEVICE_KEY)?).ok()
}

/// A store that keeps an index of each owner's sessions. See the
/// [module docs](self).
///
/// The store records the owner, the handle and the device label with the
/// session itself (so that they move with it on `change_id` and end with
/// it) and in its index. Entries of sessions that ended (destroyed, expired,
/// evicted) must never be reported, and are to be dropped when that owner's
/// index is next used.
pub trait OwnerIndex: SessionStore {
    /// Sets the owner of the live session `id`, under `handle` and with
    /// `device`, and enforces `cap` on the owner's sessions, atomically.
    /// Setting it again (the same or another owner) replaces it.
    fn set_owner(
        &self,
        id: &SessionId,
        owner: &Owner,
        handle: &SessionHandle,
        device: Option<&str>,
        cap: Option<OwnerCap>,
    ) -> impl Future<Output = Result<OwnerSet>> + Send;

    /// The owner's live sessions, least recently used first.
    fn sessions_of(&self, owner: &Owner) -> impl Future<Output = Result<Vec<OwnedSession>>> + Send;

    /// Ends the owner's session `handle`, if it is theirs and live; returns
    /// whether it did. A lock held on it does not protect it: its commit
    /// then fails as "session gone".
    fn revoke(
        &self,
        owner: &Owner,
        handle: &SessionHandle,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Ends every live session of the owner but `except` (if given);
    /// returns how many it ended.
    fn revoke_all(
        &self,
        owner: &Owner,
        except: Option<&SessionHandle>,
    ) -> impl Future<Output = Result<u64>> + Send;
}

/// The object-safe twin of [`OwnerIndex`], for `dyn` use; implemented for
/// every `OwnerIndex`.
pub trait DynOwnerIndex: Send + Sync + 'static {
    /// See [`OwnerIndex::set_owner`].
    fn set_owner<'a>(
        &'a self,
        id: &'a SessionId,
        owner: &'a Owner,
        handle: &'a SessionHandle,
        device: Option<&'a str>,
        cap: Option<OwnerCap>,
    ) -> BoxFuture<'a, Result<OwnerSet>>;
    /// See [`OwnerIndex::sessions_of`].
    fn sessions_of<'a>(&'a self, owner: &'a Owner) -> BoxFuture<'a, Result<Vec<OwnedSession>>>;
    /// See [`OwnerIndex::revoke`].
    fn revoke<'a>(
        &'a self,
        owner: &'a Owner,
        handle: &'a SessionHandle,
    ) -> BoxFuture<'a, Result<bool>>;
    /// See [`OwnerIndex::revoke_all`].
    fn revoke_all<'a>(
        &'a self,
        owner: &'a Owner,
        except: Option<&'a SessionHandle>,
    ) -> BoxFuture<'a, Result<u64>>;
}

impl<S: OwnerIndex> DynOwnerIndex for S {
    fn set_owner<'a>(
        &'a self,
        id: &'a SessionId,
        owner: &'a Owner,
        handle: &'a SessionHandle,
        device: Option<&'a str>,
        cap: Option<OwnerCap>,
    ) -> BoxFuture<'a, Result<OwnerSet>> {
        Box::pin(OwnerIndex::set_owner(self, id, owner, handle, device, cap))
    }
    fn sessions_of<'a>(&'a self, owner: &'a Owner) -> BoxFuture<'a, Result<Vec<OwnedSession>>> {
        Box::pin(OwnerIndex::sessions_of(self, owner))
    }
    fn revoke<'a>(
        &'a self,
        owner: &'a Owner,
        handle: &'a SessionHandle,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(OwnerIndex::revoke(self, owner, handle))
    }
    fn revoke_all<'a>(
        &'a self,
        owner: &'a Owner,
        except: Option<&'a SessionHandle>,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(OwnerIndex::revoke_all(self, owner, except))
    }
}

/// The registry of owners' sessions: list, count and revoke them, from an
/// account page or an admin tool. Cheap to clone.
///
/// Get one from the store itself ([`Owners::of`], checked at compile time)
/// or from the factory the session layer uses
/// ([`SessionFactory::owners`](crate::SessionFactory::owners)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> sessionkit_core::Result<()> {
/// use sessionkit_core::owner::{Owner, Owners};
/// use sessionkit_core::store::MemoryStore;
/// use sessionkit_core::{SessionConfig, SessionFactory};
///
/// let store = MemoryStore::new();
/// let factory = SessionFactory::new(store.clone(), SessionConfig::default());
/// let owners = Owners::of(store);
///
/// // Two logins of ada, on two devices.
/// for device in ["laptop", "phone"] {
///     let session = factory.session(None);
///     session.set_owner_on("ada", device).await?;
///     session.insert("user", &"ada")?;
/// }
/// let ada = Owner::new("ada")?;
/// let sessions = owners.list(&ada).await?;
/// assert_eq!(sessions.len(), 2);
/// assert!(owners.revoke(&ada, &sessions[0].handle).await?);
/// assert_eq!(owners.count(&ada).await?, 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Owners {
    index: Arc<dyn DynOwnerIndex>,
    store: &'static str,
    /// The observer of the factory it came from, if any.
    events: Events,
}

impl fmt::Debug for Owners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Owners")
            .field("store", &self.store)
            .finish()
    }
}

impl Owners {
    /// The registry of `store`'s owner index.
    pub fn of<S: OwnerIndex>(store: S) -> Owners {
        let store_name = store.name();
        Owners {
            index: Arc::new(store),
            store: store_name,
            events: Events::default(),
        }
    }

    /// The registry of an index a store handed out (see
    /// [`SessionStore::owner_index`]), telling `events` of revocations.
    pub(crate) fn from_dyn(
        index: Arc<dyn DynOwnerIndex>,
        store: &'static str,
        events: Events,
    ) -> Owners {
        Owners {
            index,
            store,
            events,
        }
    }

    /// The owner's live sessions, least recently used first.
    pub async fn list(&self, owner: &Owner) -> Result<Vec<OwnedSession>> {
        self.index
            .sessions_of(owner)
            .await
            .map_err(|e| e.with_operation("sessions_of"))
    }

    /// How many live sessions the owner has.
    pub async fn count(&self, owner: &Owner) -> Result<usize> {
        Ok(self.list(owner).await?.len())
    }

    /// Ends the owner's session `handle`; `false` when it is not one of
    /// theirs (or ended already): a handle of another owner revokes
    /// nothing.
    pub async fn revoke(&self, owner: &Owner, handle: &SessionHandle) -> Result<bool> {
        let revoked = self.index.revoke(owner, handle).await;
        let revoked = revoked.map_err(|e| e.with_operation("revoke"))?;
        if revoked {
            tracing::info!(%handle, "session revoked");
            self.events.emit(|| crate::events::SessionEvent::Revoked {
                handle: *handle,
                owner: owner.clone(),
            });
        }
        Ok(revoked)
    }

    /// Ends every session of the owner ("sign out everywhere", after a
    /// password change); returns how many.
    pub async fn revoke_all(&self, owner: &Owner) -> Result<u64> {
        self.revoke_all_but(owner, None).await
    }

    /// Ends every session of the owner but `current` ("sign out everywhere
    /// else"); returns how many.
    pub async fn revoke_all_except(&self, owner: &Owner, current: &SessionHandle) -> Result<u64> {
        self.revoke_all_but(owner, Some(current)).await
    }

    async fn revoke_all_but(&self, owner: &Owner, except: Option<&SessionHandle>) -> Result<u64> {
        let ended = self.index.revoke_all(owner, except).await;
        let ended = ended.map_err(|e| e.with_operation("revoke_all"))?;
        tracing::info!(sessions = ended, "sessions of an owner revoked");
        if ended > 0 {
            self.events
                .emit(|| crate::events::SessionEvent::RevokedAll {
                    owner: owner.clone(),
                    count: ended,
                });
        }
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_bounded_and_printable() {
        assert!(Owner::new("x".repeat(256)).is_ok());
        let err = Owner::new("x".repeat(257)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidOwner);
        assert!(Owner::new("tab\there").is_err());
        assert!(Owner::new("ünïcödé@example.org").is_ok());
        let secret = Owner::new("ada@example.org").unwrap();
        assert!(!format!("{secret:?}").contains("ada"));
    }

    #[test]
    fn device_labels_are_cut_to_their_bound_without_control_characters() {
        let label_of = |device: &str| {
            let mut entries = crate::record::Entries::default();
            let delta = owner_delta(
                &Owner::new("ada").unwrap(),
                &SessionHandle::generate(),
                Some(device),
            );
            entries.apply(&delta.unwrap());
            device_in(&entries).unwrap()
        };
        assert_eq!(label_of("Firefox on Linux"), "Firefox on Linux");
        assert_eq!(label_of("forged\r\nline\u{7}"), "forgedline");
        let long = label_of(&"é".repeat(1000));
        assert_eq!(long, "é".repeat(DEVICE_MAX_LEN / 2));
        let odd = label_of(&format!("x{}", "é".repeat(1000)));
        assert_eq!(odd.len(), DEVICE_MAX_LEN - 1, "cut at a character boundary");
    }

    #[test]
    fn handles_round_trip_and_only_in_lowercase_hex() {
        for _ in 0..100 {
            let h = SessionHandle::generate();
            assert_eq!(SessionHandle::parse(&h.to_string()).unwrap(), h);
        }
        assert_ne!(SessionHandle::generate(), SessionHandle::generate());
        let h = SessionHandle::generate().to_string();
        assert!(
            SessionHandle::parse(&h.to_uppercase()).is_err()
                || !h.chars().any(|c| c.is_ascii_alphabetic())
        );
        for bad in [
            "",
            "0",
            &"0".repeat(31),
            &"0".repeat(33),
            &"g".repeat(32),
            &"é".repeat(16),
        ] {
            assert_eq!(
                SessionHandle::parse(bad).unwrap_err().kind(),
                ErrorKind::InvalidOwner,
                "{bad}"
            );
        }
    }
}
