//! The owner index in executable form: every store that implements
//! [`OwnerIndex`] runs these, through the session handle and the
//! [`Owners`] registry, as the memory store does.
//!
//! [`owner_index_tests!`](crate::owner_index_tests) writes one `#[test]`
//! per check; each check is also a public `async fn` taking the store.
//! Owners are unique per check (a random suffix), so the checks can share
//! one server and run at once.
//!
//! ```no_run
//! sessionkit_core::owner_index_tests!(memory, sessionkit_core::store::MemoryStore::new());
//! # fn main() {}
//! ```

use std::time::Duration;

use crate::owner::{Owner, OwnerIndex, Owners, SessionHandle, WhenFull};
use crate::store::SessionStore;
use crate::{ErrorKind, Outcome, SessionConfig, SessionFactory, SessionId};

/// A store the checks can run on.
pub trait OwnerStore: SessionStore + OwnerIndex + Clone {}
impl<S: SessionStore + OwnerIndex + Clone> OwnerStore for S {}

fn factory<S: OwnerStore>(store: &S, config: SessionConfig) -> (SessionFactory, Owners) {
    (
        SessionFactory::new(store.clone(), config),
        Owners::of(store.clone()),
    )
}

/// An owner of its own for one check.
fn unique(name: &str) -> String {
    format!("{name}-{}", SessionId::generate().short_hash())
}

fn owner(name: &str) -> Owner {
    Owner::new(name).unwrap()
}

/// A login of `owner` on `device`: a new session with the owner set; its id.
async fn login(factory: &SessionFactory, owner: &str, device: &str) -> SessionId {
    let session = factory.request(None);
    session.insert("user", &owner).unwrap();
    session.set_owner_on(owner, device).await.unwrap();
    assert!(session.finish(Outcome::Success).await.error.is_none());
    session.id().unwrap()
}

fn lifetime(secs: u64) -> SessionConfig {
    SessionConfig::builder()
        .lifetime(Duration::from_secs(secs))
        .build()
        .unwrap()
}

/// An owner's sessions are listed by handle, least recently used first, with device and times, never with an id; other owners' are not; a session knows its own handle.
pub async fn an_owners_sessions_are_listed_by_handle_with_device_and_times<S: OwnerStore>(
    store: &S,
) {
    let (ada_name, bob_name) = (unique("ada"), unique("bob"));
    let (factory, owners) = factory(store, SessionConfig::default());
    let laptop = login(&factory, &ada_name, "laptop").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let phone = login(&factory, &ada_name, "phone").await;
    login(&factory, &bob_name, "laptop").await;

    let listed = owners.list(&owner(&ada_name)).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        listed[0].device.as_deref(),
        Some("laptop"),
        "least recent first"
    );
    assert_eq!(listed[1].device.as_deref(), Some("phone"));
    for s in &listed {
        assert!(s.created <= s.last_seen && s.last_seen < s.expires, "{s:?}");
        let shown = format!("{s:?} {}", s.handle);
        for id in [laptop, phone] {
            assert!(!shown.contains(&id.expose()), "no id in what is listed");
        }
    }
    // The session knows its own handle: "this device".
    let on_phone = factory.request(phone);
    assert_eq!(on_phone.handle().await.unwrap(), Some(listed[1].handle));
    assert_eq!(
        on_phone.owner().await.unwrap().as_deref(),
        Some(ada_name.as_str())
    );
    assert_eq!(owners.count(&owner(&bob_name)).await.unwrap(), 1);
    assert_eq!(owners.count(&owner(&unique("carol"))).await.unwrap(), 0);
}

/// `regenerate` keeps a session in its owner's list under the same handle, and revoking that handle ends it under its new id.
pub async fn a_regenerated_session_stays_listed_under_its_handle<S: OwnerStore>(store: &S) {
    let ada_name = unique("ada");
    let (factory, owners) = factory(store, SessionConfig::default());
    let id = login(&factory, &ada_name, "laptop").await;
    let before = owners.list(&owner(&ada_name)).await.unwrap();
    let session = factory.request(id);
    session.regenerate().await.unwrap();
    assert_ne!(session.id(), Some(id));
    let after = owners.list(&owner(&ada_name)).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].handle, before[0].handle);
    // Revoking it by handle ends the session under its new id.
    assert!(
        owners
            .revoke(&owner(&ada_name), &after[0].handle)
            .await
            .unwrap()
    );
    let next = factory.request(session.id());
    assert!(!next.exists().await.unwrap());
}

/// Destroyed and expired sessions leave the list.
pub async fn ended_sessions_leave_the_list<S: OwnerStore>(store: &S) {
    let ada_name = unique("ada");
    let config = lifetime(1);
    let (factory, owners) = factory(store, config);
    let destroyed = login(&factory, &ada_name, "a").await;
    login(&factory, &ada_name, "b").await;
    factory.request(destroyed).destroy().await.unwrap();
    assert_eq!(
        owners.count(&owner(&ada_name)).await.unwrap(),
        1,
        "destroyed"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(owners.count(&owner(&ada_name)).await.unwrap(), 0, "expired");
}

/// `revoke` ends the owner's own session, once; a handle of another owner (or an unknown one) revokes nothing.
pub async fn revoke_ends_only_the_owners_own_session<S: OwnerStore>(store: &S) {
    let (ada_name, bob_name) = (unique("ada"), unique("bob"));
    let (factory, owners) = factory(store, SessionConfig::default());
    let ada_id = login(&factory, &ada_name, "laptop").await;
    login(&factory, &bob_name, "laptop").await;
    let bobs = owners.list(&owner(&bob_name)).await.unwrap();
    // A handle of bob's, sent by ada: nothing is revoked.
    assert!(
        !owners
            .revoke(&owner(&ada_name), &bobs[0].handle)
            .await
            .unwrap()
    );
    assert!(
        !owners
            .revoke(&owner(&ada_name), &SessionHandle::generate())
            .await
            .unwrap()
    );
    assert_eq!(owners.count(&owner(&bob_name)).await.unwrap(), 1);
    let adas = owners.list(&owner(&ada_name)).await.unwrap();
    assert!(
        owners
            .revoke(&owner(&ada_name), &adas[0].handle)
            .await
            .unwrap()
    );
    assert!(
        !owners
            .revoke(&owner(&ada_name), &adas[0].handle)
            .await
            .unwrap(),
        "once"
    );
    assert!(!factory.request(ada_id).exists().await.unwrap());
}

/// `revoke_all_except` keeps the current session; `revoke_all` ends it too.
pub async fn revoke_all_and_revoke_all_except_the_current_one<S: OwnerStore>(store: &S) {
    let ada_name = unique("ada");
    let (factory, owners) = factory(store, SessionConfig::default());
    let current = login(&factory, &ada_name, "laptop").await;
    for device in ["phone", "tablet"] {
        login(&factory, &ada_name, device).await;
    }
    let mine = factory.request(current).handle().await.unwrap().unwrap();
    assert_eq!(
        owners
            .revoke_all_except(&owner(&ada_name), &mine)
            .await
            .unwrap(),
        2
    );
    let left = owners.list(&owner(&ada_name)).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].handle, mine);
    assert!(factory.request(current).exists().await.unwrap());
    assert_eq!(owners.revoke_all(&owner(&ada_name)).await.unwrap(), 1);
    assert!(!factory.request(current).exists().await.unwrap());
}

/// Two simultaneous logins under a cap of one (ending the least recent) leave exactly one session, twenty times over.
pub async fn two_simultaneous_logins_under_a_cap_of_one_leave_exactly_one<S: OwnerStore>(
    store: &S,
) {
    let ada_name = unique("ada");
    let config = SessionConfig::builder()
        .max_sessions_per_owner(1, WhenFull::EndLeastRecent)
        .build()
        .unwrap();
    let (factory, owners) = factory(store, config);
    for _ in 0..20 {
        let (a, b) = tokio::join!(
            login(&factory, &ada_name, "a"),
            login(&factory, &ada_name, "b")
        );
        let mut alive = 0;
        for id in [a, b] {
            if factory.request(id).exists().await.unwrap() {
                alive += 1;
            }
        }
        assert_eq!(alive, 1, "exactly one login survives the cap");
        assert_eq!(owners.count(&owner(&ada_name)).await.unwrap(), 1);
    }
}

/// A login that clears the session first (`clear_all`, buffered) keeps the
/// owner it sets; a login on a cookie the request has not read keeps the
/// session's handle.
pub async fn a_login_after_a_buffered_clear_or_on_an_unread_cookie_stays_owned<S: OwnerStore>(
    store: &S,
) {
    let ada_name = unique("ada");
    let (factory, owners) = factory(store, SessionConfig::default());
    let id = login(&factory, &ada_name, "a").await;
    let handle = factory.request(Some(id)).handle().await.unwrap();
    // Again, without reading the session first: the same handle.
    let again = factory.request(Some(id));
    again.set_owner(&ada_name).await.unwrap();
    assert!(again.finish(Outcome::Success).await.error.is_none());
    assert_eq!(factory.request(Some(id)).handle().await.unwrap(), handle);
    // Cleared (buffered), then the owner set: the clear does not undo it.
    let cleared = factory.request(Some(id));
    cleared.clear_all().unwrap();
    cleared.insert("user", &ada_name).unwrap();
    cleared.set_owner(&ada_name).await.unwrap();
    assert!(cleared.finish(Outcome::Success).await.error.is_none());
    let next = factory.request(Some(id));
    assert_eq!(
        next.owner().await.unwrap().as_deref(),
        Some(ada_name.as_str())
    );
    assert_eq!(owners.count(&owner(&ada_name)).await.unwrap(), 1);
}

/// A refusing cap fails the login beyond it with `OwnerFull` (403) and keeps the others; setting the owner again on a session that has it is no new session.
pub async fn a_refusing_cap_fails_the_new_login_and_keeps_the_others<S: OwnerStore>(store: &S) {
    let ada_name = unique("ada");
    let config = SessionConfig::builder()
        .max_sessions_per_owner(2, WhenFull::Refuse)
        .build()
        .unwrap();
    let (factory, owners) = factory(store, config);
    let first = login(&factory, &ada_name, "a").await;
    login(&factory, &ada_name, "b").await;
    let third = factory.request(None);
    third.insert("user", &ada_name).unwrap();
    let err = third.set_owner(&ada_name).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OwnerFull);
    assert_eq!(err.status_code(), 403);
    assert_eq!(owners.count(&owner(&ada_name)).await.unwrap(), 2);
    // The refused session is nobody's: not in this request, and not in the
    // next (the session the login created stays, with what the request
    // wrote before the login: set the owner first, see `set_owner`).
    assert_eq!(third.owner().await.unwrap(), None);
    let refused = third.id().expect("the refused login's session was stored");
    third.finish(Outcome::ClientError).await;
    let next = factory.request(Some(refused));
    assert_eq!(
        next.owner().await.unwrap(),
        None,
        "a refused login left its owner behind"
    );
    assert_eq!(
        next.get::<String>("user").await.unwrap(),
        Some(ada_name.clone())
    );
    // Setting the owner again on one of the two is no new session: allowed,
    // and it keeps its handle.
    let again = factory.request(first);
    let handle = again.handle().await.unwrap();
    again.set_owner_on(&ada_name, "a, renamed").await.unwrap();
    assert_eq!(again.handle().await.unwrap(), handle);
    let listed = owners.list(&owner(&ada_name)).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .any(|s| s.device.as_deref() == Some("a, renamed"))
    );
}

/// A revoked session whose request holds its lock: the commit fails as
/// "session gone" and writes nothing.
pub async fn revoking_a_locked_session_fails_its_commit_and_writes_nothing<S: OwnerStore>(
    store: &S,
) {
    let ada_name = unique("ada");
    let (factory, owners) = factory(store, SessionConfig::default());
    let id = login(&factory, &ada_name, "laptop").await;
    let request = factory.request(id);
    request.lock().await.unwrap();
    request.insert("late", &1).unwrap();
    assert_eq!(owners.revoke_all(&owner(&ada_name)).await.unwrap(), 1);
    let err = request.commit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionGone);
    assert!(
        store.load(&id, None).await.unwrap().is_none(),
        "nothing written back"
    );
}

/// An owner with ten live and a thousand expired sessions (and other owners' sessions around) lists ten, and again after the cleanup.
pub async fn an_owner_with_ten_live_and_a_thousand_expired_sessions_lists_ten<S: OwnerStore>(
    store: &S,
) {
    let (ada_name, bob_name) = (unique("ada"), unique("bob"));
    let config = lifetime(1);
    let (factory, owners) = factory(store, config);
    for i in 0..1000 {
        login(&factory, &ada_name, &format!("old {i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let long = lifetime(60);
    let factory = SessionFactory::new(store.clone(), long);
    for i in 0..10 {
        login(&factory, &ada_name, &format!("new {i}")).await;
    }
    for i in 0..100 {
        login(&factory, &format!("{bob_name} {i}"), "x").await;
    }
    assert_eq!(owners.count(&owner(&ada_name)).await.unwrap(), 10);
    assert_eq!(
        owners.count(&owner(&ada_name)).await.unwrap(),
        10,
        "the same after the cleanup"
    );
    assert_eq!(
        owners
            .count(&owner(&format!("{bob_name} 7")))
            .await
            .unwrap(),
        1
    );
}

/// Writes one `#[tokio::test]` per check of [`crate::testkit::owners`] in a
/// module, for a store that implements
/// [`OwnerIndex`](crate::owner::OwnerIndex):
/// `owner_index_tests!(module_name, store_expression)`. The store
/// expression is evaluated in each test's runtime and may `.await`.
#[macro_export]
macro_rules! owner_index_tests {
    ($module:ident, $store:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::owner_index_tests!(@tests $store;
                an_owners_sessions_are_listed_by_handle_with_device_and_times,
                a_regenerated_session_stays_listed_under_its_handle,
                ended_sessions_leave_the_list,
                revoke_ends_only_the_owners_own_session,
                revoke_all_and_revoke_all_except_the_current_one,
                two_simultaneous_logins_under_a_cap_of_one_leave_exactly_one,
                a_refusing_cap_fails_the_new_login_and_keeps_the_others,
                a_login_after_a_buffered_clear_or_on_an_unread_cookie_stays_owned,
                revoking_a_locked_session_fails_its_commit_and_writes_nothing,
                an_owner_with_ten_live_and_a_thousand_expired_sessions_lists_ten,
            );
        }
    };
    (@tests $store:expr; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let store = $store;
                $crate::testkit::owners::$test(&store).await;
            }
        )*
    };
}

/// What owners cost on `store`, for a store's benchmark rows (not a test):
/// median wall time in µs through the session handle and the registry of
/// a login without an owner, with a new owner, with an owner who has 10 to
/// 20 sessions, the same under a cap (that never ends one, so the count is
/// all it adds), and of listing and revoking all sessions of an owner with
/// 10 and with 1,000. `rounds` logins per login row; lists and
/// revocations over 21 owners of 10 sessions and 3 of 1,000. Every store runs the same sequence, so rows compare across
/// stores measured in one run.
pub async fn costs<S: OwnerStore>(store: &S, rounds: usize) -> Vec<(&'static str, u128)> {
    use std::time::Instant;

    fn median(mut v: Vec<u128>) -> u128 {
        v.sort_unstable();
        v[v.len() / 2]
    }
    async fn timed_login(factory: &SessionFactory, owner: Option<&str>) -> u128 {
        let started = Instant::now();
        let session = factory.request(None);
        session.insert("user", &"x").unwrap();
        if let Some(owner) = owner {
            session.set_owner(owner).await.unwrap();
        }
        assert!(session.finish(Outcome::Success).await.error.is_none());
        started.elapsed().as_micros()
    }
    let (plain, owners) = factory(store, SessionConfig::default());
    let capped = SessionFactory::new(
        store.clone(),
        SessionConfig::builder()
            .max_sessions_per_owner(1_000_000, WhenFull::EndLeastRecent)
            .build()
            .unwrap(),
    );
    let mut rows = Vec::new();
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        times.push(timed_login(&plain, None).await);
    }
    rows.push(("login, no owner", median(std::mem::take(&mut times))));
    for _ in 0..rounds {
        times.push(timed_login(&plain, Some(&unique("new"))).await);
    }
    rows.push((
        "login with an owner (first session)",
        median(std::mem::take(&mut times)),
    ));
    // Owners with 10 sessions each; the measured logins add up to 10 more.
    for (factory, row) in [
        (&plain, "login with an owner of 10-20 sessions"),
        (&capped, "the same under a cap"),
    ] {
        let busy: Vec<String> = (0..rounds.div_ceil(10)).map(|_| unique("busy")).collect();
        for who in &busy {
            for _ in 0..10 {
                timed_login(&plain, Some(who)).await;
            }
        }
        for i in 0..rounds {
            times.push(timed_login(factory, Some(&busy[i % busy.len()])).await);
        }
        rows.push((row, median(std::mem::take(&mut times))));
    }
    // Lists and revocations: the median over several owners of n sessions
    // (21 of 10, 3 of 1,000), each listed 7 times, then revoked.
    for (n, of, list_row, revoke_row) in [
        (10, 21, "list, 10 sessions", "revoke_all, 10 sessions"),
        (
            1000,
            3,
            "list, 1,000 sessions",
            "revoke_all, 1,000 sessions",
        ),
    ] {
        let many: Vec<Owner> = (0..of).map(|_| owner(&unique("many"))).collect();
        for who in &many {
            for _ in 0..n {
                timed_login(&plain, Some(who.as_str())).await;
            }
        }
        let mut revokes = Vec::with_capacity(of);
        for who in &many {
            for _ in 0..7 {
                let started = Instant::now();
                assert_eq!(owners.list(who).await.unwrap().len(), n);
                times.push(started.elapsed().as_micros());
            }
            let started = Instant::now();
            assert_eq!(owners.revoke_all(who).await.unwrap(), n as u64);
            revokes.push(started.elapsed().as_micros());
        }
        rows.push((list_row, median(std::mem::take(&mut times))));
        rows.push((revoke_row, median(revokes)));
    }
    rows
}
