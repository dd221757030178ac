//! The connection a store talks through: one reconnecting server connection or a cluster.

use redis::aio::ConnectionManager;
use redis::{Cmd, RedisResult, ScriptInvocation, Value};

#[cfg(feature = "cluster")]
use redis::cluster_async::ClusterConnection;

/// A multiplexed connection; cheap to clone (clones share the socket).
#[derive(Clone)]
pub(crate) enum Connection {
    /// One Redis server, through redis-rs' `ConnectionManager`, which
    /// reconnects by itself after the connection breaks.
    Single(ConnectionManager),
    /// A Redis Cluster; redis-rs routes each command to the slot's primary
    /// and follows topology changes.
    #[cfg(feature = "cluster")]
    Cluster(ClusterConnection),
}

impl Connection {
    /// Runs a script: `EVALSHA`, or on `NOSCRIPT` (first use, or after the
    /// server restarted) `SCRIPT LOAD` and `EVALSHA` again.
    pub(crate) async fn invoke(&self, script: &ScriptInvocation<'_>) -> RedisResult<Value> {
        match self {
            Connection::Single(conn) => {
                let result = script.invoke_async(&mut conn.clone()).await;
                match result {
                    // A refused connection means the command never left this
                    // process: the manager failed to reconnect (the server was
                    // down) and has just started a new attempt. Waiting for
                    // that attempt once is safe and makes the first request
                    // after a restart succeed instead of failing.
                    Err(err) if err.is_connection_refusal() => {
                        script.invoke_async(&mut conn.clone()).await
                    }
                    other => other,
                }
            }
            #[cfg(feature = "cluster")]
            Connection::Cluster(conn) => script.invoke_async(&mut conn.clone()).await,
        }
    }

    /// Runs one plain command.
    pub(crate) async fn query(&self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Connection::Single(conn) => {
                let result = cmd.query_async(&mut conn.clone()).await;
                match result {
                    // See `invoke`.
                    Err(err) if err.is_connection_refusal() => {
                        cmd.query_async(&mut conn.clone()).await
                    }
                    other => other,
                }
            }
            #[cfg(feature = "cluster")]
            Connection::Cluster(conn) => cmd.query_async(&mut conn.clone()).await,
        }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        match self {
            Connection::Single(_) => false,
            #[cfg(feature = "cluster")]
            Connection::Cluster(_) => true,
        }
    }
}
