//! Several processes on one save path: locked increments, kills in the middle of writes, locks of dead processes, logins of one owner under a cap.
//!
//! The test binary plays the other processes itself: it re-runs its own
//! executable with `--exact child_process_entry` and an environment variable
//! that names the child's role. Children talk to the parent with lines that
//! start with `@@` on their standard output, and wait for `go` on their
//! standard input where the parent must start them together.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sessionkit_core::codec::{decode_record, decode_value, encode_value};
use sessionkit_core::owner::{Owner, Owners, WhenFull};
use sessionkit_core::record::{Delta, Entries, Meta, Record, now_ms};
use sessionkit_core::store::{Applied, Fence, Locked, SessionStore};
use sessionkit_core::{LockToken, Outcome, SessionConfig, SessionFactory, SessionId};
use sessionkit_file::FileStore;

const ROLE: &str = "SESSIONKIT_FILE_TEST_ROLE";
const DIR: &str = "SESSIONKIT_FILE_TEST_DIR";
const ID: &str = "SESSIONKIT_FILE_TEST_ID";
const HOW: &str = "SESSIONKIT_FILE_TEST_HOW";

/// Tasks per process and increments per task in the increment test:
/// 2 processes × 4 tasks × 50 = 400.
const TASKS: usize = 4;
const ITERATIONS: usize = 50;

const LOCK_TTL: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(60);

fn store(dir: &Path) -> FileStore {
    FileStore::builder()
        .path(dir)
        .sweep_interval(None)
        .build()
        .expect("a file store on the test directory")
}

fn say(message: &str) {
    let mut out = std::io::stdout().lock();
    // A line of its own, whatever libtest printed before it.
    writeln!(out, "\n@@{message}").unwrap();
    out.flush().unwrap();
}

/// The other processes' side of the tests; does nothing in a normal run.
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(DIR).expect("the parent names the directory"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = store(&dir);
        match role.as_str() {
            "increment" => {
                let id = SessionId::parse(&std::env::var(ID).unwrap()).unwrap();
                say("ready");
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).unwrap();
                assert_eq!(line.trim(), "go");
                let switches = increments(&store, id).await;
                say(&format!("switches {switches}"));
            }
            "hold-lock" => {
                let id = SessionId::parse(&std::env::var(ID).unwrap()).unwrap();
                let Locked::Acquired { .. } = store.lock(&id, LOCK_TTL).await.unwrap() else {
                    panic!("the child should find the lock free");
                };
                say("locked");
                if std::env::var(HOW).as_deref() == Ok("exit") {
                    // Dies holding the lock, without unlocking.
                    std::process::exit(0);
                }
                // Waits to be killed (or for the parent to go away).
                let mut line = String::new();
                let _ = std::io::stdin().read_line(&mut line);
            }
            "write-loop" => write_loop(&store).await,
            "owner-logins" => {
                let base = std::env::var(ID).unwrap();
                say("ready");
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).unwrap();
                assert_eq!(line.trim(), "go");
                let won = owner_logins(&store, &base).await;
                say(&format!("won {won:?}"));
            }
            other => panic!("unknown child role {other:?}"),
        }
    });
}

/// A running child process and the `@@` lines it prints.
struct Kid {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Kid {
    fn spawn(role: &str, dir: &Path, env: &[(&str, String)]) -> Kid {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "--exact",
                "child_process_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, role)
            .env(DIR, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .expect("the test binary runs again as a child");
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(at) = line.find("@@") {
                    let _ = send.send(line[at + 2..].to_owned());
                }
            }
        });
        let stdin = child.stdin.take();
        Kid {
            child,
            stdin,
            lines,
        }
    }

    /// The next `@@` line, or a failure after [`WAIT`].
    fn expect(&mut self, prefix: &str) -> String {
        match self.lines.recv_timeout(WAIT) {
            Ok(line) if line.starts_with(prefix) => line[prefix.len()..].trim().to_owned(),
            Ok(line) => {
                let _ = self.child.kill();
                panic!("the child said {line:?}, expected {prefix:?}")
            }
            Err(_) => {
                let _ = self.child.kill();
                let status = self.child.wait();
                panic!("the child did not say {prefix:?} (exit: {status:?})")
            }
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Kills the child with SIGKILL and reaps it.
    fn kill(mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "a killed child cannot succeed");
    }

    fn wait_success(mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "the child failed: {status}");
                return;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the child did not finish within {WAIT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn counter_record() -> Record {
    Record {
        entries: [
            ("n", encode_value(&0u64).unwrap()),
            ("last", encode_value(&0u32).unwrap()),
        ]
        .into_iter()
        .collect::<Entries>(),
        meta: Meta::new(now_ms(), Duration::from_secs(3600), None),
    }
}

/// A short random pause before retrying a held lock: 1 to 4 ms.
async fn backoff() {
    let jitter = u64::from(LockToken::generate().as_bytes()[0] % 4);
    tokio::time::sleep(Duration::from_millis(1 + jitter)).await;
}

/// [`TASKS`] tasks × [`ITERATIONS`] locked increments of `n`; returns how
/// often a task found that another process made the last increment.
async fn increments(store: &FileStore, id: SessionId) -> u64 {
    let me = std::process::id();
    let handles: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut switches = 0;
                for _ in 0..ITERATIONS {
                    let started = Instant::now();
                    let (token, record) = loop {
                        match store.lock(&id, LOCK_TTL).await.unwrap() {
                            Locked::Acquired { token, record } => break (token, record),
                            Locked::Held => {
                                assert!(started.elapsed() < WAIT, "no lock within {WAIT:?}");
                                backoff().await;
                            }
                            Locked::Absent => panic!("the counter session vanished"),
                        }
                    };
                    let n: u64 = decode_value(record.entries.get("n").unwrap()).unwrap();
                    let last: u32 = decode_value(record.entries.get("last").unwrap()).unwrap();
                    if last != 0 && last != me {
                        switches += 1;
                    }
                    let mut delta = Delta::default();
                    delta.set("n", encode_value(&(n + 1)).unwrap());
                    delta.set("last", encode_value(&me).unwrap());
                    let fence = Fence {
                        token: &token,
                        release: true,
                    };
                    match store.apply(&id, &delta, Some(fence)).await.unwrap() {
                        Applied::Applied(_) => {}
                        other => panic!("the lock owner's commit answered {other:?}"),
                    }
                }
                switches
            })
        })
        .collect();
    let mut switches = 0;
    for handle in handles {
        switches += handle.await.unwrap();
    }
    switches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_lose_no_locked_increment() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let id = SessionId::generate();
    let _ = store.create(&id, &counter_record()).await.unwrap();

    let mut kid = Kid::spawn("increment", dir.path(), &[(ID, id.expose())]);
    kid.expect("ready");
    let started = Instant::now();
    kid.send("go");
    let mine = increments(&store, id).await;
    let theirs: u64 = tokio::task::spawn_blocking(move || {
        let theirs = kid.expect("switches").parse().unwrap();
        kid.wait_success();
        theirs
    })
    .await
    .unwrap();

    let record = store.load(&id, None).await.unwrap().unwrap().record;
    let n: u64 = decode_value(record.entries.get("n").unwrap()).unwrap();
    eprintln!(
        "2 processes × {TASKS} tasks × {ITERATIONS} locked increments: n = {n} in {:?}; \
         the parent saw the child's increment {mine} times, the child the parent's {theirs} times",
        started.elapsed()
    );
    assert_eq!(
        n,
        (2 * TASKS * ITERATIONS) as u64,
        "locked increments were lost"
    );
    assert!(
        mine > 0 && theirs > 0,
        "the two processes did not interleave ({mine}, {theirs}): the test proved nothing"
    );
    let Locked::Acquired { .. } = store.lock(&id, LOCK_TTL).await.unwrap() else {
        panic!("every increment released the lock");
    };
}

/// Sessions written in a loop, one task per session so that some write is
/// nearly always in flight, with big values so that writes take a while.
async fn write_loop(store: &FileStore) {
    let ids: Vec<SessionId> = (0..4).map(|_| SessionId::generate()).collect();
    for id in &ids {
        let _ = store.create(id, &counter_record()).await.unwrap();
    }
    let listed: Vec<String> = ids.iter().map(SessionId::expose).collect();
    say(&format!("ids {}", listed.join(" ")));
    let (first, mut started) = tokio::sync::mpsc::channel(ids.len());
    for (k, id) in ids.into_iter().enumerate() {
        let store = store.clone();
        let first = first.clone();
        tokio::spawn(async move {
            for i in 0u64.. {
                let size = 1 + (LockToken::generate().as_bytes()[0] as usize) * 1024;
                let mut delta = Delta::default();
                delta.set("blob", vec![b'x'; size]);
                delta.set("n", encode_value(&i).unwrap());
                if k % 2 == 0 {
                    let _ = store.apply(&id, &delta, None).await.unwrap();
                } else if let Locked::Acquired { token, .. } =
                    store.lock(&id, LOCK_TTL).await.unwrap()
                {
                    let fence = Fence {
                        token: &token,
                        release: i % 3 != 0,
                    };
                    let _ = store.apply(&id, &delta, Some(fence)).await.unwrap();
                }
                if i == 0 {
                    first.send(()).await.unwrap();
                }
            }
        });
    }
    for _ in 0..4 {
        started.recv().await.unwrap();
    }
    say("looping");
    std::future::pending::<()>().await;
}

fn session_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "session"))
        .collect()
}

fn temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp-")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_while_writing_leaves_no_torn_session() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let mut all = Vec::new();
    let mut leftovers = 0;
    let rounds = 10;
    for round in 0..rounds {
        let mut kid = Kid::spawn("write-loop", dir.path(), &[]);
        let ids: Vec<SessionId> = kid
            .expect("ids")
            .split(' ')
            .map(|s| SessionId::parse(s).unwrap())
            .collect();
        kid.expect("looping");
        // Kill it at a different moment each round.
        std::thread::sleep(Duration::from_millis(5 + 11 * round));
        kid.kill();
        all.extend(ids);

        for path in session_files(dir.path()) {
            let bytes = std::fs::read(&path).unwrap();
            if let Err(err) = decode_record(&bytes) {
                panic!(
                    "round {round}: a session file is torn ({err}): {} bytes",
                    bytes.len()
                );
            }
        }
        leftovers += temp_files(dir.path());
        for id in &all {
            let loaded = store.load(id, None).await.unwrap();
            let record = loaded
                .unwrap_or_else(|| panic!("round {round}: a session vanished"))
                .record;
            let _: u64 = decode_value(record.entries.get("n").unwrap()).unwrap();
            // The child may have died holding this session's lock: it is
            // free at once all the same.
            match store.lock(id, LOCK_TTL).await.unwrap() {
                Locked::Acquired { token, .. } => store.unlock(id, &token).await.unwrap(),
                other => panic!("round {round}: the dead child's lock is not free: {other:?}"),
            }
        }
        let report = store.gc().await.unwrap();
        assert_eq!(temp_files(dir.path()), 0, "gc removes what the crash left");
        assert_eq!(report.deleted, 0, "no live session is swept");
    }
    assert_eq!(session_files(dir.path()).len(), all.len());
    eprintln!(
        "{rounds} children killed with SIGKILL while writing: {} session files, all whole; \
         {leftovers} temporary files of interrupted writes left behind and swept",
        all.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_by_a_dead_process_is_free_at_once() {
    for how in ["sigkill", "exit"] {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let id = SessionId::generate();
        let _ = store.create(&id, &counter_record()).await.unwrap();

        let mut kid = Kid::spawn(
            "hold-lock",
            dir.path(),
            &[(ID, id.expose()), (HOW, how.into())],
        );
        kid.expect("locked");
        if how == "sigkill" {
            // While the holder lives, the lock is its own.
            assert_eq!(store.lock(&id, LOCK_TTL).await.unwrap(), Locked::Held);
            let stranger = LockToken::generate();
            let fence = Fence {
                token: &stranger,
                release: true,
            };
            assert_eq!(
                store
                    .apply(&id, &Delta::default(), Some(fence))
                    .await
                    .unwrap(),
                Applied::LockLost
            );
            kid.kill();
        } else {
            kid.wait_success();
        }
        let started = Instant::now();
        let Locked::Acquired { record, .. } = store.lock(&id, LOCK_TTL).await.unwrap() else {
            panic!("{how}: the lock of a dead process must be free at once");
        };
        let elapsed = started.elapsed();
        eprintln!("{how}: the dead holder's lock (ttl {LOCK_TTL:?}) was taken in {elapsed:?}");
        assert!(elapsed < Duration::from_secs(2));
        assert_eq!(record, counter_record_like(&record));
    }
}

/// The counter record's entries with `record`'s own metadata.
fn counter_record_like(record: &Record) -> Record {
    Record {
        entries: counter_record().entries,
        meta: record.meta,
    }
}

/// Owners per round of [`owner_logins`], and contenders per process.
const OWNERS: usize = 15;
const CONTENDERS: usize = 2;

/// One login of `owner` with `config`: whether `set_owner` let it in.
async fn owner_login(factory: &SessionFactory, owner: &str) -> bool {
    let session = factory.request(None);
    session.insert("user", &owner).unwrap();
    let set = session.set_owner(owner).await;
    match set {
        Ok(()) => {
            assert!(session.finish(Outcome::Success).await.error.is_none());
            true
        }
        Err(err) => {
            assert_eq!(err.kind(), sessionkit_core::ErrorKind::OwnerFull, "{err}");
            false
        }
    }
}

/// [`CONTENDERS`] tasks each try to log in every owner `<base>-<i>` under a
/// refusing cap of one, in the same order, then `<base>-end` ten times
/// under a cap of one that ends the least recent; returns the `i`s this
/// process won.
async fn owner_logins(store: &FileStore, base: &str) -> Vec<usize> {
    let tasks: Vec<_> = (0..CONTENDERS)
        .map(|_| {
            let store = store.clone();
            let base = base.to_owned();
            tokio::spawn(async move {
                let refuse = SessionConfig::builder()
                    .max_sessions_per_owner(1, WhenFull::Refuse)
                    .build()
                    .unwrap();
                let factory = SessionFactory::new(store.clone(), refuse);
                let mut won = Vec::new();
                for i in 0..OWNERS {
                    if owner_login(&factory, &format!("{base}-{i}")).await {
                        won.push(i);
                    }
                }
                let end = SessionConfig::builder()
                    .max_sessions_per_owner(1, WhenFull::EndLeastRecent)
                    .build()
                    .unwrap();
                let factory = SessionFactory::new(store, end);
                for _ in 0..10 {
                    assert!(owner_login(&factory, &format!("{base}-end")).await);
                }
                won
            })
        })
        .collect();
    let mut won = Vec::new();
    for task in tasks {
        won.extend(task.await.unwrap());
    }
    won.sort_unstable();
    won
}

/// The live sessions in `dir` that carry `owner` and a handle, read from
/// the session files themselves (not from the index). (A refused login
/// leaves a session that the core created with the owner entry but no
/// handle: it is not the owner's.)
fn carrying(dir: &Path, owner: &str) -> usize {
    let owner_value = encode_value(&owner).unwrap();
    session_files(dir)
        .iter()
        .filter_map(|path| std::fs::read(path).ok())
        .filter_map(|bytes| decode_record(&bytes).ok())
        .filter(|record| !record.meta.is_expired(now_ms()))
        .filter(|record| record.entries.get("\u{1}owner") == Some(owner_value.as_slice()))
        .filter(|record| record.entries.get("\u{1}handle").is_some())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_logging_in_the_same_owners_never_pass_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let base = format!("ada-{}", SessionId::generate().short_hash());
    let mut kid = Kid::spawn("owner-logins", dir.path(), &[(ID, base.clone())]);
    kid.expect("ready");
    kid.send("go");
    let mine = owner_logins(&store, &base).await;
    let theirs = kid.expect("won ");
    kid.wait_success();
    let theirs: Vec<usize> = theirs
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    // Each owner was won exactly once, by one task of one process.
    let mut all = [mine.clone(), theirs.clone()].concat();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..OWNERS).collect::<Vec<_>>(),
        "this process won {mine:?}, the other {theirs:?}"
    );
    let owners = Owners::of(store.clone());
    for i in 0..OWNERS {
        let owner = format!("{base}-{i}");
        assert_eq!(carrying(dir.path(), &owner), 1, "{owner}");
        assert_eq!(owners.count(&Owner::new(owner).unwrap()).await.unwrap(), 1);
    }
    let end = format!("{base}-end");
    assert_eq!(
        carrying(dir.path(), &end),
        1,
        "one session left under the cap"
    );
    assert_eq!(owners.count(&Owner::new(end).unwrap()).await.unwrap(), 1);
}
