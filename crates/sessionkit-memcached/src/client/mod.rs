//! A small async memcached client: meta commands, pipelined batches, a pool per server.
//!
//! # Why not a crate from crates.io
//!
//! The store needs, together: the meta protocol (`mg`/`ms`/`md` with CAS and
//! TTL flags), pipelines of several commands (`mg` of two ids in one
//! write), several servers with a pool of
//! connections each, timeouts on connect and on every request, reconnection
//! after a server restart, and a count of round trips. When this crate was
//! written, `memcache` (aisk/rust-memcache) was synchronous; `memcache-async`
//! spoke only the classic commands on one connection; `async-memcached`
//! (0.9) had meta commands but pipelined only batches of one command type on
//! one connection, without pooling or timeouts. The subset needed here is
//! small (four commands), so it is implemented here and tested against
//! hostile input (see `proto`).
//!
//! # Behaviour
//!
//! - A [`Client::exec`] call is one round trip: every command of the batch
//!   goes out in one write and the replies are read in order.
//! - An error says whether the request may have reached the server
//!   ([`ClientError::sent`]): not when it failed while waiting for a free
//!   connection or while connecting.
//! - Each server has up to `max_connections` connections. A call takes an
//!   idle one (after checking that the server has not closed it, which is
//!   what happens when memcached restarts) or opens a new one within the
//!   connect timeout.
//! - The whole call (waiting for a free connection, connecting, the
//!   exchange) runs under the request timeout; connecting also under the
//!   connect timeout. A connection that saw
//!   any error, a timeout, or whose call was cancelled (its future dropped)
//!   is closed, never reused: its reply stream may be out of step.

use std::fmt;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

pub(crate) mod proto;

pub(crate) use proto::{Cmd, Reply, SetMode};
use proto::{ReadError, read_reply};

/// Settings of the client.
#[derive(Debug, Clone)]
pub(crate) struct ClientConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_connections: usize,
    /// The largest value a reply may carry.
    pub(crate) max_value: usize,
}

/// Counters of what the client sent.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) round_trips: AtomicU64,
    pub(crate) commands: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) cas_conflicts: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }
}

/// A client for a fixed list of servers, addressed by index.
#[derive(Debug)]
pub(crate) struct Client {
    pools: Box<[Pool]>,
    config: ClientConfig,
    pub(crate) counters: Counters,
}

struct Pool {
    addr: String,
    idle: Mutex<Vec<Conn>>,
    slots: Semaphore,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    /// Whether an idle connection can be used: the server has not closed it
    /// and nothing unread is pending on it.
    ///
    /// Peeks at the socket with a real (non-blocking) system call: tokio's
    /// `try_read` answers from readiness the reactor may not have updated
    /// yet, and would pass a connection whose server died a moment ago.
    fn is_usable(&self) -> bool {
        if !self.stream.buffer().is_empty() {
            return false;
        }
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(self.stream.get_ref()).peek(&mut probe) {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            // Ok(0) is the server's close (a restart); Ok(n) is unread data.
            Ok(_) => false,
        }
    }
}

/// What went wrong talking to one server.
#[derive(Debug)]
pub(crate) struct ClientError {
    pub(crate) addr: String,
    pub(crate) kind: ClientErrorKind,
    /// Whether any byte of the request may have been written: `false` only
    /// for failures before the exchange began (waiting for a free
    /// connection, connecting), after which the server surely did nothing.
    pub(crate) sent: bool,
}

#[derive(Debug)]
pub(crate) enum ClientErrorKind {
    Connect(io::Error),
    ConnectTimeout(Duration),
    Timeout(Duration),
    Write(io::Error),
    Read(ReadError),
}

impl ClientError {
    /// Whether the server refused a value as too large for its item size.
    pub(crate) fn is_too_large(&self) -> bool {
        matches!(&self.kind, ClientErrorKind::Read(ReadError::Server(m)) if m.contains("too large"))
    }

    /// Whether the request surely changed nothing, for a batch of one
    /// command: it never left (see [`ClientError::sent`]), or the server
    /// answered it with an error (`SERVER_ERROR`, `CLIENT_ERROR`: the
    /// command was refused, not executed).
    pub(crate) fn surely_not_applied(&self) -> bool {
        !self.sent || matches!(&self.kind, ClientErrorKind::Read(ReadError::Server(_)))
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server {}: ", self.addr)?;
        match &self.kind {
            ClientErrorKind::Connect(e) => write!(f, "could not connect: {e}"),
            ClientErrorKind::ConnectTimeout(d) => write!(f, "could not connect within {d:?}"),
            ClientErrorKind::Timeout(d) => write!(f, "no reply within {d:?}"),
            ClientErrorKind::Write(e) => write!(f, "write failed: {e}"),
            ClientErrorKind::Read(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ClientErrorKind::Connect(e) | ClientErrorKind::Write(e) => Some(e),
            ClientErrorKind::Read(ReadError::Io(e)) => Some(e),
            _ => None,
        }
    }
}

impl Client {
    /// A client for `addrs` (`host:port` each); connects lazily.
    pub(crate) fn new(addrs: Vec<String>, config: ClientConfig) -> Client {
        let pools = addrs
            .into_iter()
            .map(|addr| Pool {
                addr,
                idle: Mutex::new(Vec::new()),
                slots: Semaphore::new(config.max_connections.max(1)),
            })
            .collect();
        Client {
            pools,
            config,
            counters: Counters::default(),
        }
    }

    /// The address of server `server`.
    pub(crate) fn addr(&self, server: usize) -> &str {
        &self.pools[server].addr
    }

    /// Sends `cmds` to server `server` in one write and reads their replies,
    /// in order: one round trip.
    pub(crate) async fn exec(
        &self,
        server: usize,
        cmds: &[Cmd<'_>],
    ) -> Result<Vec<Reply>, ClientError> {
        let result = self.exec_inner(server, cmds).await;
        if result.is_err() {
            Counters::bump(&self.counters.failures, 1);
        }
        result
    }

    async fn exec_inner(&self, server: usize, cmds: &[Cmd<'_>]) -> Result<Vec<Reply>, ClientError> {
        let pool = &self.pools[server];
        let timeout = self.config.request_timeout;
        // Before the exchange nothing can have reached the server.
        let unsent = |kind| ClientError {
            addr: pool.addr.clone(),
            kind,
            sent: false,
        };
        let err = |kind| ClientError {
            addr: pool.addr.clone(),
            kind,
            sent: true,
        };
        let mut request = Vec::with_capacity(
            cmds.iter()
                .map(|c| match c {
                    Cmd::Set { value, .. } => value.len() + 64,
                    _ => 64,
                })
                .sum(),
        );
        for cmd in cmds {
            cmd.encode(&mut request);
        }

        // One deadline for the whole call: waiting for a free connection,
        // connecting (also bounded by the connect timeout) and the exchange.
        let deadline = tokio::time::Instant::now() + timeout;
        let _slot = tokio::time::timeout_at(deadline, pool.slots.acquire())
            .await
            .map_err(|_| unsent(ClientErrorKind::Timeout(timeout)))?
            .expect("the pool semaphore is never closed");
        let idle = take_idle(pool);
        let mut conn = match idle {
            Some(conn) => conn,
            None => tokio::time::timeout_at(deadline, self.connect(pool))
                .await
                .map_err(|_| unsent(ClientErrorKind::Timeout(timeout)))??,
        };

        Counters::bump(&self.counters.round_trips, 1);
        Counters::bump(&self.counters.commands, cmds.len() as u64);
        let max_value = self.config.max_value;
        let exchange = async {
            conn.stream
                .get_mut()
                .write_all(&request)
                .await
                .map_err(|e| err(ClientErrorKind::Write(e)))?;
            let mut replies = Vec::with_capacity(cmds.len());
            let mut line = Vec::new();
            for cmd in cmds {
                let reply = read_reply(&mut conn.stream, cmd, max_value, &mut line)
                    .await
                    .map_err(|e| err(ClientErrorKind::Read(e)))?;
                replies.push(reply);
            }
            Ok(replies)
        };
        let replies = tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| err(ClientErrorKind::Timeout(timeout)))??;
        // Only a connection whose exchange completed goes back to the pool.
        lock_idle(pool).push(conn);
        Ok(replies)
    }

    async fn connect(&self, pool: &Pool) -> Result<Conn, ClientError> {
        let timeout = self.config.connect_timeout;
        Counters::bump(&self.counters.connects, 1);
        let stream = tokio::time::timeout(timeout, TcpStream::connect(pool.addr.as_str()))
            .await
            .map_err(|_| ClientError {
                addr: pool.addr.clone(),
                kind: ClientErrorKind::ConnectTimeout(timeout),
                sent: false,
            })?
            .map_err(|e| ClientError {
                addr: pool.addr.clone(),
                kind: ClientErrorKind::Connect(e),
                sent: false,
            })?;
        // Requests are small and latency-bound; don't let Nagle hold them.
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream: BufReader::with_capacity(16 * 1024, stream),
        })
    }
}

fn lock_idle(pool: &Pool) -> std::sync::MutexGuard<'_, Vec<Conn>> {
    // The list is only pushed to and popped from; a panic cannot leave it
    // inconsistent, so a poisoned lock is still good.
    pool.idle.lock().unwrap_or_else(|p| p.into_inner())
}

fn take_idle(pool: &Pool) -> Option<Conn> {
    let mut idle = lock_idle(pool);
    while let Some(conn) = idle.pop() {
        if conn.is_usable() {
            return Some(conn);
        }
    }
    None
}
