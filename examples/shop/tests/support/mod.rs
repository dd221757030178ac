//! Real `memcached`, `redis-server` and PostgreSQL processes on free loopback
//! ports, stopped when dropped; the shop binary and its client helpers.

#![allow(dead_code)]

/// The PostgreSQL harness of `sessionkit-sql`'s tests, not a copy: one
/// server per test binary, stopped when the binary ends.
#[path = "../../../../crates/sessionkit-sql/tests/support/mod.rs"]
pub(crate) mod pg;
pub(crate) mod shop;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process; killed (and reaped) on drop, also when a test panics.
pub(crate) struct Daemon {
    child: Child,
    pub(crate) port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port} within 10 s (is it installed? scripts/test.sh installs it)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `memcached` on a free port.
pub(crate) fn memcached() -> Daemon {
    let port = free_port();
    let child = Command::new("memcached")
        .args([
            "-l",
            "127.0.0.1",
            "-U",
            "0",
            "-m",
            "64",
            "-t",
            "2",
            "-u",
            "root",
        ])
        .args(["-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start memcached (scripts/test.sh installs it)");
    let daemon = Daemon { child, port };
    wait_until_listening(port, "memcached");
    daemon
}

/// Starts `redis-server` on a free port, without persistence.
pub(crate) fn redis() -> Daemon {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server (scripts/test.sh installs it)");
    let daemon = Daemon { child, port };
    wait_until_listening(port, "redis-server");
    daemon
}
