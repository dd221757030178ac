//! `memcached` processes on free loopback ports, killed by PID when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::free_port;

/// A memcached process on `127.0.0.1:<port>`, killed (by its PID) when
/// dropped, also while a failing test unwinds.
#[derive(Debug)]
pub struct Memcached {
    child: Option<Child>,
    port: u16,
    extra: Vec<String>,
}

impl Memcached {
    /// Starts memcached on a free port.
    pub fn start() -> Memcached {
        Memcached::start_with(&[])
    }

    /// Starts memcached on a free port with extra command-line arguments.
    pub fn start_with(extra: &[&str]) -> Memcached {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        // The port is free when we look, but another process may take it
        // before memcached binds it: then try another.
        for _ in 0..20 {
            let port = free_port();
            if let Some(server) = Memcached::spawn(port, &extra) {
                return server;
            }
        }
        panic!("could not start memcached on a free port after 20 attempts");
    }

    fn spawn(port: u16, extra: &[String]) -> Option<Memcached> {
        let child = Command::new("memcached")
            .args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0", "-m", "64", "-t", "2"])
            // memcached refuses to run as root without -u; for other users
            // the flag is ignored.
            .args(["-u", "root"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "could not run `memcached` ({e}); install it (scripts/lib/install.sh does) and put it on PATH"
                )
            });
        let mut server = Memcached {
            child: Some(child),
            port,
            extra: extra.to_vec(),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(child) = server.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                server.child = None;
                return None; // exited: most likely the port was taken
            }
            if server.answers() {
                return Some(server);
            }
            sleep(Duration::from_millis(5));
        }
        server.stop();
        None
    }

    /// Whether the server answers `mn`.
    pub fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        if stream.write_all(b"mn\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).is_ok() && &buf == b"MN\r\n"
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The PID of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process (by PID) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts memcached again on the same port (empty, as after any
    /// restart).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(server) = Memcached::spawn(self.port, &self.extra) {
                *self = server;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "could not restart memcached on port {}",
                self.port
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// Sends raw protocol text and reads until a line equal to one of
    /// `ends` (inclusive), returning everything read.
    pub fn raw(&self, request: &[u8], ends: &[&str]) -> Vec<u8> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut reader = BufReader::new(stream);
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = reader.read_until(b'\n', &mut line).expect("read");
            assert!(n > 0, "server closed the connection");
            out.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line);
            let trimmed = text.trim_end();
            if ends
                .iter()
                .any(|e| trimmed == *e || trimmed.starts_with(&format!("{e} ")))
            {
                // A VA header is followed by the value and its CRLF.
                if let Some(size) = trimmed.strip_prefix("VA ") {
                    let size: usize = size.split(' ').next().unwrap().parse().unwrap();
                    let mut value = vec![0u8; size + 2];
                    reader.read_exact(&mut value).unwrap();
                    out.extend_from_slice(&value);
                }
                return out;
            }
        }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let reply = self.raw(format!("mg {key} v\r\n").as_bytes(), &["VA", "EN"]);
        if reply.starts_with(b"EN") {
            return None;
        }
        let header_end = reply.iter().position(|b| *b == b'\n').unwrap() + 1;
        Some(reply[header_end..reply.len() - 2].to_vec())
    }

    /// The remaining TTL of `key` in seconds (`-1` for none), if present.
    pub fn ttl(&self, key: &str) -> Option<i64> {
        let reply = self.raw(format!("mg {key} t\r\n").as_bytes(), &["HD", "EN"]);
        let text = String::from_utf8(reply).unwrap();
        let flag = text
            .trim_end()
            .split(' ')
            .find_map(|t| t.strip_prefix('t'))?;
        Some(flag.parse().unwrap())
    }

    /// Every key the server holds (`lru_crawler metadump all`), decoded.
    pub fn keys(&self) -> Vec<String> {
        // The LRU crawler behind `metadump` runs on its own thread and now
        // and then answers with an empty dump for a moment after writes; ask
        // again for a while before believing an empty answer.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let dump = self.raw(b"lru_crawler metadump all\r\n", &["END"]);
            let keys: Vec<String> = String::from_utf8(dump)
                .unwrap()
                .lines()
                .filter_map(|l| l.strip_prefix("key="))
                .map(|l| percent_decode(l.split(' ').next().unwrap()))
                .collect();
            if !keys.is_empty() || std::time::Instant::now() >= deadline {
                return keys;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        self.stop();
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}
