//! A real PostgreSQL server in a temporary data directory on a free loopback port, stopped when dropped or when the test process ends.
//!
//! Uses only `std` and Debian's `postgresql` binaries (see
//! `scripts/lib/install.sh`), found under `/usr/lib/postgresql/<version>/bin`
//! (the newest version), or on `PATH`.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, `initdb`
//! and `postgres` run as the `postgres` user (through `setpriv`, which execs
//! rather than forks), with the data directory owned by it.
//!
//! As in the Redis harness, the server runs under a small `sh` watchdog
//! whose stdin is a pipe from the test process: dropping the
//! [`PgServer`], or the test process ending in any way (even `SIGKILL`),
//! closes it; the watchdog then stops the server (fast shutdown, then
//! `SIGKILL` of whatever is left) and removes the directory. That is what
//! makes a server shared through a `static` safe. A test that owns its
//! server can also crash it and start it again on the same port
//! ([`PgServer::crash`], [`PgServer::restart`]).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::free_port;

/// How long a server may take to accept connections after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The watchdog: `$1` the directory, `$2` the bin directory, `$3` the run
/// prefix (empty, or `setpriv ...` to drop root), `$4` the port, `$5`
/// `synchronous_commit`. Starts `postgres` and prints its PID; then obeys
/// lines on its stdin: `crash` (`SIGQUIT`: PostgreSQL's immediate shutdown,
/// no checkpoint, WAL recovery at the next start, as after a crash of the
/// server process) and `start` (prints the new PID), each answered with a
/// line. At end of input it stops the server and removes the directory.
const WATCHDOG: &str = r#"
dir=$1; bin=$2; as=$3; port=$4; sync=$5
start() {
    $as "$bin/postgres" -D "$dir/data" -p "$port" -h 127.0.0.1 -k "$dir" \
        -c fsync=off -c synchronous_commit="$sync" -c full_page_writes=off \
        -c max_connections=300 -c shared_buffers=32MB \
        -c shared_preload_libraries=pg_stat_statements \
        >>"$dir/postgres.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid"
}
stop() {
    kill -"$1" "$pid" 2>/dev/null
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}
start
while read -r cmd; do
    case $cmd in
        crash) stop QUIT; echo stopped ;;
        start) start ;;
    esac
done
stop INT
rm -rf "$dir"
"#;

/// A PostgreSQL server on a free loopback port, stopped when dropped.
#[derive(Debug)]
pub struct PgServer {
    port: u16,
    watchdog: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pid: u32,
    dir: PathBuf,
}

impl PgServer {
    /// Initialises a data directory and starts a server on it, without
    /// fsync and with `synchronous_commit = off` (tests need no
    /// durability), with trust authentication for the `postgres` user on
    /// loopback.
    pub fn start() -> PgServer {
        PgServer::start_with(false)
    }

    /// A server whose acknowledged commits survive a crash of the server
    /// process (`synchronous_commit = on`: the commit's WAL is written
    /// before it is acknowledged; `fsync` stays off, which only matters if
    /// the machine crashes), for tests that crash it with
    /// [`crash`](Self::crash).
    pub fn start_durable() -> PgServer {
        PgServer::start_with(true)
    }

    fn start_with(durable: bool) -> PgServer {
        let bin = bin_dir();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sessionkit-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the server's temp dir");
        let drop_root = is_root();
        if drop_root {
            let status = Command::new("chown")
                .args(["postgres:postgres".as_ref(), dir.as_os_str()])
                .status()
                .expect("run chown");
            assert!(status.success(), "chown postgres {dir:?} failed");
        }
        let run_as: Vec<&str> = if drop_root {
            vec![
                "setpriv",
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
            ]
        } else {
            vec![]
        };
        let initdb = bin.join("initdb");
        let mut cmd = match run_as.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&initdb);
                c
            }
            None => Command::new(&initdb),
        };
        let output = cmd
            .args(["-D".as_ref(), dir.join("data").as_os_str()])
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("could not run {initdb:?}: {e}"));
        assert!(
            output.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );

        let port = free_port();
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sessionkit-pg-watchdog")
            .arg(&dir)
            .arg(&bin)
            .arg(run_as.join(" "))
            .arg(port.to_string())
            .arg(if durable { "on" } else { "off" })
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("could not run sh");
        let mut stdout = BufReader::new(watchdog.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read the server's pid");
        let pid: u32 = line.trim().parse().expect("the watchdog prints a pid");
        let server = PgServer {
            port,
            stdin: watchdog.stdin.take(),
            stdout,
            watchdog,
            pid,
            dir,
        };
        server.wait_ready();
        server
    }

    /// Crashes the server process (`SIGQUIT`, PostgreSQL's immediate
    /// shutdown) and waits until it is gone; the port stays reserved for
    /// [`restart`](Self::restart).
    pub fn crash(&mut self) {
        self.command("crash");
    }

    /// Starts the server again on the same data directory and port (after
    /// [`crash`](Self::crash): WAL recovery first) and waits until it
    /// accepts connections.
    pub fn restart(&mut self) {
        let line = self.command("start");
        self.pid = line.trim().parse().expect("the watchdog prints a pid");
        self.wait_ready();
    }

    fn command(&mut self, cmd: &str) -> String {
        let stdin = self.stdin.as_mut().expect("the watchdog's stdin");
        writeln!(stdin, "{cmd}").expect("tell the watchdog");
        stdin.flush().expect("tell the watchdog");
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("the watchdog answers");
        line
    }

    fn wait_ready(&self) {
        let (bin, port) = (bin_dir(), self.port);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres on port {port} did not accept connections within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.watchdog.wait();
        let _ = self.pid;
    }
}

/// One server shared by every test of a test binary; stopped when the
/// binary exits (its watchdog sees the pipe close).
pub fn shared() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(PgServer::start)
}

/// The newest `/usr/lib/postgresql/<version>/bin` (Debian keeps the server
/// binaries off `PATH`), else the directory of `initdb` on `PATH`.
fn bin_dir() -> PathBuf {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    if let Some((_, bin)) = newest {
        return bin;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
        .expect(
            "PostgreSQL's server binaries were not found (Debian: apt-get install postgresql; scripts/test.sh installs it)",
        )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
