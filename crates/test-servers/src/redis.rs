//! `redis-server` processes (single and a 3-master cluster) on free
//! loopback ports, and client commands counted with `MONITOR`.
//!
//! Each server runs under a [`Supervised`] watchdog, so a server shared
//! through [`shared`] goes away with the test binary.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::{Supervised, free_port, fresh_dir};

/// How long a server may take to answer `PING` after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The watchdog: starts `redis-server` with the remaining arguments, prints
/// its PID, waits for end of input on stdin, then kills the server and
/// removes the directory given first.
const WATCHDOG: &str = r#"
dir=$1; shift
redis-server "$@" >"$dir/redis.log" 2>&1 </dev/null &
pid=$!
echo "$pid"
while read -r _; do :; done
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$dir"
"#;

/// A `redis-server` on a free loopback port, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    extra: Vec<String>,
    process: Option<Supervised>,
}

impl RedisServer {
    /// Starts a standalone server, without persistence.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        RedisServer::start_on(free_port, extra)
    }

    /// A cluster node: cluster mode on, its config file in its own temp dir.
    /// The bus port (`port + 10000`) is free too.
    fn start_cluster_node() -> RedisServer {
        let cluster = ["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"];
        RedisServer::start_on(free_port_with_bus, &cluster)
    }

    /// Starts a server on a port from `port`, with `extra` arguments;
    /// retries on another port if the chosen one was taken meanwhile.
    fn start_on(port: fn() -> u16, extra: &[&str]) -> RedisServer {
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = port();
            match spawn(port, &extra) {
                Ok(process) => {
                    return RedisServer {
                        port,
                        extra,
                        process: Some(process),
                    };
                }
                Err(err) => last_error = err,
            }
        }
        panic!("could not start redis-server {extra:?}: {last_error}");
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The PID of the running `redis-server`.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Supervised::pid)
    }

    /// Kills the server (`SIGKILL`, like a crash) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop();
        }
    }

    /// Starts the server again on the same port (with an empty dataset).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match spawn(self.port, &self.extra) {
                Ok(process) => {
                    self.process = Some(process);
                    return;
                }
                // The port can linger for a moment after the kill.
                Err(err) if Instant::now() < deadline => {
                    let _ = err;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(err) => panic!("could not restart redis-server on {}: {err}", self.port),
            }
        }
    }

    /// Pauses the server (`SIGSTOP`): it keeps its connections but answers
    /// nothing, like a hung host. [`RedisServer::resume`] undoes it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Resumes a paused server (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        self.process
            .as_ref()
            .expect("the server is not running")
            .signal(signal);
    }

    /// Runs `redis-cli -p PORT ARGS...` and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }

    /// Starts watching the commands clients send (see [`Monitor`]).
    pub fn monitor(&self) -> Monitor {
        Monitor::start(self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `redis-server` on `port` under a watchdog, and waits until it
/// answers `PING`.
fn spawn(port: u16, extra: &[String]) -> Result<Supervised, String> {
    let dir = fresh_dir("redis");
    let port_arg = port.to_string();
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--port".as_ref(),
        port_arg.as_ref(),
        "--bind".as_ref(),
        "127.0.0.1".as_ref(),
        "--save".as_ref(),
        "".as_ref(),
        "--appendonly".as_ref(),
        "no".as_ref(),
        "--daemonize".as_ref(),
        "no".as_ref(),
        "--dir".as_ref(),
        dir.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let process = Supervised::spawn("sessionkit-redis-watchdog", WATCHDOG, &dir, args)?;
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if ping(port) {
            return Ok(process);
        }
        if !process.alive() {
            let log = process.read("redis.log");
            process.stop();
            return Err(format!("redis-server on port {port} exited:\n{log}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let log = process.read("redis.log");
    process.stop();
    Err(format!(
        "redis-server on port {port} did not answer PING within {START_TIMEOUT:?}:\n{log}"
    ))
}

/// A Redis Cluster of three masters (no replicas) on loopback.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-mode servers, joins them with `redis-cli
    /// --cluster create`, and waits until every node reports
    /// `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_cluster_node()).collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let output = Command::new("redis-cli")
            .args(&args)
            .output()
            .expect("could not run redis-cli");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &nodes {
            loop {
                let info = node.cli(&["CLUSTER", "INFO"]);
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not reach cluster_state:ok:\n{info}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Starts watching the commands clients send to every node.
    pub fn monitor(&self) -> ClusterMonitor {
        ClusterMonitor(self.nodes.iter().map(RedisServer::monitor).collect())
    }
}

/// One server shared by every test of a test binary. Tests share the
/// process, never a connection: each `#[tokio::test]` has its own runtime,
/// and a connection belongs to the runtime that opened it.
pub fn shared() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

/// One cluster shared by every test of a test binary.
pub fn shared_cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(RedisCluster::start)
}

/// A port that was free a moment ago whose cluster bus port
/// (`port + 10000`) is free too.
fn free_port_with_bus() -> u16 {
    for _ in 0..100 {
        let port = free_port();
        let Some(bus) = port.checked_add(10000) else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, bus)).is_ok() {
            return port;
        }
    }
    panic!("found no free port pair for a cluster node");
}

/// Whether a server answers `PING` on `port`.
fn ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("could not run redis-cli");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Counts the commands clients send to one server, from `MONITOR`.
///
/// Why not `INFO commandstats`: Redis counts the commands a Lua script runs
/// there too (an `EVALSHA` that runs `TYPE`, `HMGET` and `HSET` shows as
/// four), so it cannot tell round trips from script internals; neither can
/// `total_commands_processed`. `MONITOR` prints every command as it runs and
/// marks the ones a script runs with `[<db> lua]`; everything else came from
/// a client over the wire, one round trip each.
///
/// To count what an operation sends: [`Monitor::mark`] before it,
/// [`Monitor::since`] after it. Marks are `ECHO` commands that the monitor
/// must see before they return, so nothing is missed or counted twice. The
/// count covers every client of the server, so measure on a server that
/// nothing else uses meanwhile.
#[derive(Debug)]
pub struct Monitor {
    port: u16,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

/// A position in a [`Monitor`]'s log.
#[derive(Debug, Clone, Copy)]
pub struct Mark(usize);

impl Monitor {
    fn start(port: u16) -> Monitor {
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "MONITOR"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("could not run redis-cli MONITOR");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let monitor = Monitor { port, child, lines };
        // The first mark also proves the monitor is running.
        monitor.mark();
        monitor
    }

    /// Sends a marker command and waits until the monitor has seen it.
    ///
    /// Re-sends (with a new tag) when the monitor does not show it soon:
    /// right after `redis-cli MONITOR` starts, its `MONITOR` may not have
    /// reached the server yet.
    pub fn mark(&self) -> Mark {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let tag = format!(
                "sessionkit-mark-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .expect("connect to send a monitor mark");
            stream
                .write_all(format!("ECHO {tag}\r\n").as_bytes())
                .expect("send a monitor mark");
            let mut reply = [0u8; 1];
            stream.read_exact(&mut reply).expect("monitor mark reply");
            let quoted = format!("\"{tag}\"");
            let resend = Instant::now() + Duration::from_millis(200);
            while Instant::now() < resend {
                if let Some(i) = self
                    .lines
                    .lock()
                    .unwrap()
                    .iter()
                    .rposition(|l| l.contains(&quoted))
                {
                    return Mark(i);
                }
                thread::sleep(Duration::from_millis(1));
            }
            assert!(Instant::now() < deadline, "MONITOR shows none of the marks");
        }
    }

    /// The commands clients sent since `start` (not those run by scripts,
    /// not the marks), lowercase, in order.
    pub fn since(&self, start: Mark) -> Vec<String> {
        let end = self.mark();
        let lines = self.lines.lock().unwrap();
        lines[start.0 + 1..end.0]
            .iter()
            .filter_map(|line| client_command(line))
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command name of a `MONITOR` line, unless a script ran it. Lines look
/// like `1700000000.123456 [0 127.0.0.1:5000] "EVALSHA" "…" …`; script
/// commands have `[0 lua]`.
fn client_command(line: &str) -> Option<String> {
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    let source = &line[open + 1..close];
    if source.ends_with(" lua") {
        return None;
    }
    let rest = &line[close + 1..];
    let name = rest.split('"').nth(1)?;
    Some(name.to_ascii_lowercase())
}

/// [`Monitor`]s of every node of a cluster.
#[derive(Debug)]
pub struct ClusterMonitor(Vec<Monitor>);

impl ClusterMonitor {
    /// Marks every node.
    pub fn mark(&self) -> Vec<Mark> {
        self.0.iter().map(Monitor::mark).collect()
    }

    /// The commands clients sent to any node since `start`, with the index
    /// of the node.
    pub fn since(&self, start: &[Mark]) -> Vec<(usize, String)> {
        self.0
            .iter()
            .zip(start)
            .enumerate()
            .flat_map(|(i, (m, s))| m.since(*s).into_iter().map(move |c| (i, c)))
            .collect()
    }
}

/// Counts per command name.
pub fn tally<'a>(commands: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for c in commands {
        *out.entry(c.to_owned()).or_default() += 1;
    }
    out
}
