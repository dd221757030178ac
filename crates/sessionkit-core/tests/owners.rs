//! Owners of sessions on the memory store, through the session handle and
//! the `Owners` registry: listing, regenerate, ending, revoking, the cap.

use std::time::Duration;

use sessionkit_core::owner::{Owner, Owners, SessionHandle, WhenFull};
use sessionkit_core::store::{MemoryStore, NoopStore};
use sessionkit_core::{ErrorKind, Outcome, SessionConfig, SessionFactory, SessionId};

fn setup(config: SessionConfig) -> (SessionFactory, Owners, MemoryStore) {
    let store = MemoryStore::builder().sweep_interval(None).build();
    let factory = SessionFactory::new(store.clone(), config);
    let owners = factory
        .owners()
        .expect("the memory store keeps an owner index");
    (factory, owners, store)
}

fn ada() -> Owner {
    Owner::new("ada").unwrap()
}

/// A login of `owner` on `device`: a new session with the owner set; its id.
async fn login(factory: &SessionFactory, owner: &str, device: &str) -> SessionId {
    let session = factory.request(None);
    session.insert("user", &owner).unwrap();
    session.set_owner_on(owner, device).await.unwrap();
    assert!(session.finish(Outcome::Success).await.error.is_none());
    session.id().unwrap()
}

#[tokio::test]
async fn an_owners_sessions_are_listed_by_handle_with_device_and_times() {
    let (factory, owners, _) = setup(SessionConfig::default());
    let laptop = login(&factory, "ada", "laptop").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let phone = login(&factory, "ada", "phone").await;
    login(&factory, "bob", "laptop").await;

    let listed = owners.list(&ada()).await.unwrap();
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
    assert_eq!(on_phone.owner().await.unwrap().as_deref(), Some("ada"));
    assert_eq!(owners.count(&Owner::new("bob").unwrap()).await.unwrap(), 1);
    assert_eq!(
        owners.count(&Owner::new("carol").unwrap()).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn a_regenerated_session_stays_listed_under_its_handle() {
    let (factory, owners, _) = setup(SessionConfig::default());
    let id = login(&factory, "ada", "laptop").await;
    let before = owners.list(&ada()).await.unwrap();
    let session = factory.request(id);
    session.regenerate().await.unwrap();
    assert_ne!(session.id(), Some(id));
    let after = owners.list(&ada()).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].handle, before[0].handle);
    // Revoking it by handle ends the session under its new id.
    assert!(owners.revoke(&ada(), &after[0].handle).await.unwrap());
    let next = factory.request(session.id());
    assert!(!next.exists().await.unwrap());
}

#[tokio::test]
async fn ended_sessions_leave_the_list() {
    let config = SessionConfig::builder()
        .lifetime(Duration::from_secs(1))
        .build()
        .unwrap();
    let (factory, owners, _) = setup(config);
    let destroyed = login(&factory, "ada", "a").await;
    login(&factory, "ada", "b").await;
    factory.request(destroyed).destroy().await.unwrap();
    assert_eq!(owners.count(&ada()).await.unwrap(), 1, "destroyed");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(owners.count(&ada()).await.unwrap(), 0, "expired");
}

#[tokio::test]
async fn revoke_ends_only_the_owners_own_session() {
    let (factory, owners, _) = setup(SessionConfig::default());
    let ada_id = login(&factory, "ada", "laptop").await;
    login(&factory, "bob", "laptop").await;
    let bobs = owners.list(&Owner::new("bob").unwrap()).await.unwrap();
    // A handle of bob's, sent by ada: nothing is revoked.
    assert!(!owners.revoke(&ada(), &bobs[0].handle).await.unwrap());
    assert!(
        !owners
            .revoke(&ada(), &SessionHandle::generate())
            .await
            .unwrap()
    );
    assert_eq!(owners.count(&Owner::new("bob").unwrap()).await.unwrap(), 1);
    let adas = owners.list(&ada()).await.unwrap();
    assert!(owners.revoke(&ada(), &adas[0].handle).await.unwrap());
    assert!(
        !owners.revoke(&ada(), &adas[0].handle).await.unwrap(),
        "once"
    );
    assert!(!factory.request(ada_id).exists().await.unwrap());
}

#[tokio::test]
async fn revoke_all_and_revoke_all_except_the_current_one() {
    let (factory, owners, _) = setup(SessionConfig::default());
    let current = login(&factory, "ada", "laptop").await;
    for device in ["phone", "tablet"] {
        login(&factory, "ada", device).await;
    }
    let mine = factory.request(current).handle().await.unwrap().unwrap();
    assert_eq!(owners.revoke_all_except(&ada(), &mine).await.unwrap(), 2);
    let left = owners.list(&ada()).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].handle, mine);
    assert!(factory.request(current).exists().await.unwrap());
    assert_eq!(owners.revoke_all(&ada()).await.unwrap(), 1);
    assert!(!factory.request(current).exists().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_simultaneous_logins_under_a_cap_of_one_leave_exactly_one() {
    let config = SessionConfig::builder()
        .max_sessions_per_owner(1, WhenFull::EndLeastRecent)
        .build()
        .unwrap();
    let (factory, owners, _) = setup(config);
    for _ in 0..20 {
        let (a, b) = tokio::join!(login(&factory, "ada", "a"), login(&factory, "ada", "b"));
        let mut alive = 0;
        for id in [a, b] {
            if factory.request(id).exists().await.unwrap() {
                alive += 1;
            }
        }
        assert_eq!(alive, 1, "exactly one login survives the cap");
        assert_eq!(owners.count(&ada()).await.unwrap(), 1);
    }
}

#[tokio::test]
async fn a_refusing_cap_fails_the_new_login_and_keeps_the_others() {
    let config = SessionConfig::builder()
        .max_sessions_per_owner(2, WhenFull::Refuse)
        .build()
        .unwrap();
    let (factory, owners, _) = setup(config);
    let first = login(&factory, "ada", "a").await;
    login(&factory, "ada", "b").await;
    let third = factory.request(None);
    third.insert("user", &"ada").unwrap();
    let err = third.set_owner("ada").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OwnerFull);
    assert_eq!(err.status_code(), 403);
    assert_eq!(owners.count(&ada()).await.unwrap(), 2);
    // Setting the owner again on one of the two is no new session: allowed,
    // and it keeps its handle.
    let again = factory.request(first);
    let handle = again.handle().await.unwrap();
    again.set_owner_on("ada", "a, renamed").await.unwrap();
    assert_eq!(again.handle().await.unwrap(), handle);
    let listed = owners.list(&ada()).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .any(|s| s.device.as_deref() == Some("a, renamed"))
    );
}

/// A revoked session whose request holds its lock: the commit fails as
/// "session gone" and writes nothing.
#[tokio::test]
async fn revoking_a_locked_session_fails_its_commit_and_writes_nothing() {
    let (factory, owners, store) = setup(SessionConfig::default());
    let id = login(&factory, "ada", "laptop").await;
    let request = factory.request(id);
    request.lock().await.unwrap();
    request.insert("late", &1).unwrap();
    assert_eq!(owners.revoke_all(&ada()).await.unwrap(), 1);
    let err = request.commit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionGone);
    use sessionkit_core::store::SessionStore;
    assert!(
        store.load(&id, None).await.unwrap().is_none(),
        "nothing written back"
    );
}

#[tokio::test]
async fn an_owner_with_ten_live_and_a_thousand_expired_sessions_lists_ten() {
    let config = SessionConfig::builder()
        .lifetime(Duration::from_secs(1))
        .build()
        .unwrap();
    let (factory, owners, store) = setup(config);
    for i in 0..1000 {
        login(&factory, "ada", &format!("old {i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let long = SessionConfig::builder()
        .lifetime(Duration::from_secs(60))
        .build()
        .unwrap();
    let factory = SessionFactory::new(store.clone(), long);
    for i in 0..10 {
        login(&factory, "ada", &format!("new {i}")).await;
    }
    for i in 0..100 {
        login(&factory, &format!("user {i}"), "x").await;
    }
    assert_eq!(owners.count(&ada()).await.unwrap(), 10);
    assert_eq!(
        owners.count(&ada()).await.unwrap(),
        10,
        "the same after the cleanup"
    );
    assert_eq!(
        owners.count(&Owner::new("user 7").unwrap()).await.unwrap(),
        1
    );
}

#[tokio::test]
async fn bad_owners_and_stores_without_an_index_get_clear_errors() {
    let (factory, _, _) = setup(SessionConfig::default());
    let session = factory.request(None);
    for bad in ["", "line\nbreak", &"x".repeat(300)] {
        let err = session.set_owner(bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidOwner, "{bad:?}");
        if !bad.is_empty() {
            assert!(!err.to_string().contains(bad), "the owner is not repeated");
        }
    }
    let noop = SessionFactory::new(NoopStore, SessionConfig::default());
    assert!(noop.owners().is_none());
    let err = noop.request(None).set_owner("ada").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OwnersUnsupported);
    assert!(err.to_string().contains("noop"), "{err}");
}
