//! The owner index of `FileStore`: the core's checks, two store instances (as two processes would have) on one save path, and torn or corrupt index files.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use sessionkit_core::owner::{Owner, Owners, WhenFull};
use sessionkit_core::{Outcome, SessionConfig, SessionFactory, SessionId};
use sessionkit_file::FileStore;

mod support;
use support::Alternating;

/// One save path shared by the core's checks (their owners are unique per
/// check), kept for the life of the test binary.
fn shared_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
        .path()
}

fn store_on(dir: &Path) -> FileStore {
    FileStore::builder()
        .path(dir)
        .sweep_interval(None)
        .build()
        .expect("a file store on the test directory")
}

sessionkit_core::owner_index_tests!(owners, store_on(shared_dir()));

// The same checks with every call sent to one of two instances on one save
// path in turn, as two processes would share it.
sessionkit_core::owner_index_tests!(
    owners_across_instances,
    Alternating::new(store_on(shared_dir()), store_on(shared_dir()))
);

fn unique(name: &str) -> String {
    format!("{name}-{}", SessionId::generate().short_hash())
}

async fn login(factory: &SessionFactory, owner: &str, device: &str) -> SessionId {
    let session = factory.request(None);
    session.insert("user", &owner).unwrap();
    session.set_owner_on(owner, device).await.unwrap();
    assert!(session.finish(Outcome::Success).await.error.is_none());
    session.id().unwrap()
}

fn capped(max: u32) -> SessionConfig {
    SessionConfig::builder()
        .max_sessions_per_owner(max, WhenFull::EndLeastRecent)
        .build()
        .unwrap()
}

/// The index files in the save path.
fn index_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(listing) = std::fs::read_dir(dir.join(".owners")) else {
        return Vec::new();
    };
    listing
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "owner"))
        .collect()
}

/// Two store instances on one save path, each logging the same owner in at
/// once under a cap of one: exactly one session survives, twenty times
/// over; the owner lock is a `flock`, so this holds across processes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_logging_in_one_owner_at_once_under_a_cap_of_one_leave_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (store_on(dir.path()), store_on(dir.path()));
    let ada = unique("ada");
    let f1 = SessionFactory::new(one.clone(), capped(1));
    let f2 = SessionFactory::new(two.clone(), capped(1));
    let owners = Owners::of(two.clone());
    for round in 0..20 {
        let (a, b) = tokio::join!(login(&f1, &ada, "one"), login(&f2, &ada, "two"));
        let alive = [(&f2, a), (&f1, b)];
        let mut survivors = 0;
        for (factory, id) in alive {
            if factory.request(id).exists().await.unwrap() {
                survivors += 1;
            }
        }
        assert_eq!(survivors, 1, "round {round}: exactly one login survives");
        assert_eq!(owners.count(&Owner::new(&ada).unwrap()).await.unwrap(), 1);
    }
    // One index file, named by neither the owner nor anything it holds.
    let files = index_files(dir.path());
    assert_eq!(files.len(), 1);
    let file_name = files[0].file_name().unwrap().to_str().unwrap().to_owned();
    // (Not `contains("ada")`: hex digits can spell that.)
    let hash = file_name.strip_suffix(".owner").unwrap();
    assert!(!file_name.contains(&ada), "{file_name}");
    assert_eq!(hash.len(), 64);
    assert!(
        hash.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
}

/// Logins, regenerates, lists and revocations of one owner racing across
/// two instances never deadlock (one lock order: owner lock, then session
/// stripes), and every regenerated session stays listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_operations_and_regenerates_racing_across_instances_do_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let stores = [store_on(dir.path()), store_on(dir.path())];
    let ada = unique("ada");
    let mut tasks = Vec::new();
    for task in 0..6 {
        let store = stores[task % 2].clone();
        let ada = ada.clone();
        tasks.push(tokio::spawn(async move {
            let factory = SessionFactory::new(store.clone(), capped(3));
            let owners = Owners::of(store);
            let owner = Owner::new(&ada).unwrap();
            for round in 0..15 {
                let id = login(&factory, &ada, &format!("{task}/{round}")).await;
                let session = factory.request(id);
                // It may have been ended for the cap (or revoked) meanwhile.
                let _ = session.regenerate().await;
                let _ = session.finish(Outcome::Success).await;
                let listed = owners.list(&owner).await.unwrap();
                assert!(listed.len() <= 3, "{} over the cap", listed.len());
                if round % 5 == 4 {
                    owners.revoke_all(&owner).await.unwrap();
                }
            }
        }));
    }
    let all = async {
        for task in tasks {
            task.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("no deadlock");
    // Whatever is left: one regenerate more each, and all still listed.
    let factory = SessionFactory::new(stores[0].clone(), SessionConfig::default());
    let owners = Owners::of(stores[1].clone());
    let owner = Owner::new(&ada).unwrap();
    let before = owners.list(&owner).await.unwrap();
    let id = login(&factory, &ada, "last").await;
    let session = factory.request(id);
    session.regenerate().await.unwrap();
    assert!(session.finish(Outcome::Success).await.error.is_none());
    let after = owners.list(&owner).await.unwrap();
    assert_eq!(after.len(), before.len() + 1);
}

/// A torn or corrupt index file neither panics nor fails: it is logged,
/// rebuilt from the sessions in the save path, and written back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_or_corrupt_index_file_is_rebuilt_from_the_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_on(dir.path());
    let factory = SessionFactory::new(store.clone(), SessionConfig::default());
    let owners = Owners::of(store.clone());
    let ada = unique("ada");
    let owner = Owner::new(&ada).unwrap();
    let mut ids = Vec::new();
    for device in ["a", "b", "c"] {
        ids.push(login(&factory, &ada, device).await);
    }
    // Another owner, whose index is left alone.
    login(&factory, &unique("bob"), "x").await;
    let files = index_files(dir.path());
    assert_eq!(files.len(), 2);
    let path = files
        .iter()
        .find(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.lines().count() == 4
        })
        .expect("ada's index: a header and three entries")
        .clone();
    let whole = std::fs::read(&path).unwrap();
    // No session id in it (only hashed file names and handles).
    let text = String::from_utf8(whole.clone()).unwrap();
    for id in &ids {
        assert!(!text.contains(&id.expose()));
    }

    let torn = whole[..whole.len() - 20].to_vec();
    let garbage = b"\xff\xfe not an index at all".to_vec();
    let no_header = b"1234 5678\n".to_vec();
    let empty = Vec::new();
    for (what, bytes) in [
        ("torn", torn),
        ("garbage", garbage),
        ("no header", no_header),
        ("empty", empty),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let listed = owners.list(&owner).await.unwrap();
        assert_eq!(listed.len(), 3, "{what}: rebuilt");
        assert_eq!(
            std::fs::read(&path).unwrap().len(),
            whole.len(),
            "{what}: written back whole"
        );
    }
    // A symbolic link in its place is no index either.
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
    assert_eq!(owners.count(&owner).await.unwrap(), 3);
    assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());

    // The rebuilt index works: revoke one, then all.
    let listed = owners.list(&owner).await.unwrap();
    assert!(owners.revoke(&owner, &listed[0].handle).await.unwrap());
    assert_eq!(owners.revoke_all(&owner).await.unwrap(), 2);
    assert_eq!(owners.count(&owner).await.unwrap(), 0);
    assert!(
        !path.exists(),
        "an owner with no sessions has no index file"
    );
}

/// An index entry of a session that was destroyed, given to another owner
/// or regenerated is dropped at the next use of that owner's index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entries_are_dropped_when_the_index_is_next_used() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_on(dir.path());
    let factory = SessionFactory::new(store.clone(), SessionConfig::default());
    let owners = Owners::of(store.clone());
    let (ada, bob) = (unique("ada"), unique("bob"));
    let owner = Owner::new(&ada).unwrap();
    let destroyed = login(&factory, &ada, "a").await;
    let moved = login(&factory, &ada, "b").await;
    let regenerated = login(&factory, &ada, "c").await;
    factory.request(destroyed).destroy().await.unwrap();
    let to_bob = factory.request(moved);
    to_bob.set_owner(&bob).await.unwrap();
    assert!(to_bob.finish(Outcome::Success).await.error.is_none());
    let session = factory.request(regenerated);
    session.regenerate().await.unwrap();
    assert!(session.finish(Outcome::Success).await.error.is_none());

    assert_eq!(owners.count(&owner).await.unwrap(), 1);
    let entries: Vec<usize> = index_files(dir.path())
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count() - 1)
        .collect();
    assert_eq!(
        entries.iter().sum::<usize>(),
        2,
        "one entry each for ada and bob"
    );
}

/// What owners cost on the file store (issue 15; rows for BENCHMARKS.md,
/// not a timed test): `testkit::owners::costs`, as every store with an
/// index runs it, on durable writes. Run side by side with the others, in
/// release: `bench/owner-costs.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run on demand"]
async fn owner_costs() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_on(dir.path());
    for (what, us) in sessionkit_core::testkit::owners::costs(&store, 200).await {
        println!("owner cost\tfile\t{what}\t{us}");
    }
}
