//! Session events: what an observer is told, in order, never an id; and a
//! stuck observer never holds up a request.

use std::sync::mpsc;
use std::time::Duration;

use sessionkit_core::events::SessionEvent;
use sessionkit_core::owner::Owner;
use sessionkit_core::{Outcome, SessionFactory};

fn observed() -> (SessionFactory, mpsc::Receiver<SessionEvent>) {
    let (tx, rx) = mpsc::channel();
    let factory = SessionFactory::for_tests().with_observer(move |event: &SessionEvent| {
        let _ = tx.send(event.clone());
    });
    (factory, rx)
}

fn next(rx: &mpsc::Receiver<SessionEvent>) -> SessionEvent {
    rx.recv_timeout(Duration::from_secs(5))
        .expect("an event within 5 s")
}

#[tokio::test]
async fn the_observer_hears_a_sessions_life_in_order_and_never_its_id() {
    let (factory, rx) = observed();
    let session = factory.request(None);
    session.insert("user", &"ada").unwrap();
    session.set_owner_on("ada", "laptop").await.unwrap();
    let id = session.id().unwrap();
    assert!(session.finish(Outcome::Success).await.error.is_none());
    let login = factory.request(id);
    // Events name what the handle knows: read, the session's owner is known.
    assert_eq!(login.owner().await.unwrap().as_deref(), Some("ada"));
    login.regenerate().await.unwrap();
    let new_id = login.id().unwrap();
    assert!(login.finish(Outcome::Success).await.error.is_none());
    let other = factory.request(None);
    other.insert("user", &"ada").unwrap();
    other.set_owner_on("ada", "phone").await.unwrap();
    let other_handle = other.handle().await.unwrap().unwrap();
    let owners = factory.owners().unwrap();
    let ada = Owner::new("ada").unwrap();
    assert!(owners.revoke(&ada, &other_handle).await.unwrap());
    let bye = factory.request(new_id);
    assert_eq!(bye.owner().await.unwrap().as_deref(), Some("ada"));
    bye.destroy().await.unwrap();

    let events: Vec<_> = (0..7).map(|_| next(&rx)).collect();
    let handle = match &events[1] {
        SessionEvent::OwnerSet {
            handle,
            owner,
            ended,
        } => {
            assert_eq!(owner, &ada);
            assert!(ended.is_empty());
            *handle
        }
        other => panic!("expected OwnerSet, got {other:?}"),
    };
    assert_eq!(events[0], SessionEvent::Created);
    assert_eq!(
        events[2],
        SessionEvent::Regenerated {
            handle: Some(handle),
            owner: Some(ada.clone())
        }
    );
    assert_eq!(events[3], SessionEvent::Created);
    assert!(matches!(&events[4], SessionEvent::OwnerSet { handle, .. } if *handle == other_handle));
    assert_eq!(
        events[5],
        SessionEvent::Revoked {
            handle: other_handle,
            owner: ada.clone()
        }
    );
    assert_eq!(
        events[6],
        SessionEvent::Destroyed {
            handle: Some(handle),
            owner: Some(ada)
        }
    );
    let printed = format!("{events:?}");
    for id in [id, new_id] {
        assert!(!printed.contains(&id.expose()), "no id in events");
    }
    assert!(
        rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "nothing more"
    );
}

#[tokio::test]
async fn a_stuck_observer_never_holds_up_a_request_and_its_losses_are_counted() {
    let (release, stuck) = mpsc::channel::<()>();
    let factory = SessionFactory::for_tests().with_observer(move |_: &SessionEvent| {
        let _ = stuck.recv_timeout(Duration::from_secs(30));
    });
    let creates = async {
        for _ in 0..1100 {
            let session = factory.request(None);
            session.insert("k", &1).unwrap();
            assert!(session.finish(Outcome::Success).await.error.is_none());
        }
    };
    tokio::time::timeout(Duration::from_secs(20), creates)
        .await
        .expect("the requests went on while the observer was stuck");
    // One event in the observer's hands, 1,024 queued, the rest dropped.
    assert!(
        factory.dropped_events() >= 1100 - 1025,
        "{}",
        factory.dropped_events()
    );
    drop(release);
}
