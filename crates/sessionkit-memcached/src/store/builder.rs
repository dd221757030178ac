//! `MemcachedStoreBuilder`: the store's settings, checked once when it is built.

use std::sync::Arc;
use std::time::Duration;

use sessionkit_core::{Error, Result};

use super::{DEFAULT_ITEM_SIZE_LIMIT, DEFAULT_PREFIX, Inner, MemcachedStore};
use crate::client::proto::MAX_KEY_LEN;
use crate::client::{Client, ClientConfig};
use crate::ring::Ring;
use crate::servers::{Server, ServerList};

const HASHED_PART_LEN: usize = 64;
const RAW_PART_LEN: usize = sessionkit_core::SESSION_ID_LEN;
const MIN_ITEM_SIZE_LIMIT: usize = 4 * 1024;
const MAX_ITEM_SIZE_LIMIT: usize = 1024 * 1024 * 1024;
/// Configures a [`MemcachedStore`]; made by [`MemcachedStore::builder`].
#[derive(Debug, Clone)]
pub struct MemcachedStoreBuilder {
    servers: ServerList,
    prefix: String,
    hash_ids: bool,
    item_size_limit: usize,
    connect_timeout: Duration,
    request_timeout: Duration,
    max_connections: usize,
    cas_attempts: u32,
}

impl MemcachedStoreBuilder {
    /// The default settings, on `servers`.
    pub(super) fn new(servers: ServerList) -> Self {
        MemcachedStoreBuilder {
            servers,
            prefix: DEFAULT_PREFIX.to_owned(),
            hash_ids: true,
            item_size_limit: DEFAULT_ITEM_SIZE_LIMIT,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            max_connections: 16,
            cas_attempts: 64,
        }
    }

    /// The prefix of every key. Default [`DEFAULT_PREFIX`] (`sessionkit:`).
    ///
    /// Apps that share servers keep apart by prefix. The prefix is part of
    /// every key as written and is never stripped or matched on: ids are
    /// looked up by exact key only. It must be printable ASCII without
    /// spaces, and short enough that the longest
    /// key (`<prefix><64 hex digits>`, or 43 id characters with
    /// [`hash_ids(false)`](Self::hash_ids)) fits memcached's 250 bytes: at
    /// most 186 bytes with hashed ids.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Whether keys carry the SHA-256 of the session id (hex) instead of the
    /// id. Default `true`.
    ///
    /// # Security
    ///
    /// With hashing, a dump of the servers (`lru_crawler metadump`, a core
    /// file, a network capture of memcached traffic) holds no session id an
    /// attacker could replay as a cookie ([OWASP: session ID
    /// protection](https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html)).
    /// Turn it off only to share sessions with a system that looks them up by
    /// raw id.
    pub fn hash_ids(mut self, hash: bool) -> Self {
        self.hash_ids = hash;
        self
    }

    /// The servers' item size limit, memcached's `-I`. Default
    /// [`DEFAULT_ITEM_SIZE_LIMIT`] (1 MiB, memcached's default).
    ///
    /// A write whose item (value + key + [`ITEM_OVERHEAD`](super::ITEM_OVERHEAD)) would exceed it
    /// fails before anything is sent, with [`ErrorKind::Codec`](sessionkit_core::ErrorKind::Codec) and a message
    /// that starts with "value too large" and gives the sizes; so does a
    /// write the server refuses as too large (when this is set higher than
    /// the server's `-I`). Accepted range: 4 KiB to 1 GiB.
    pub fn item_size_limit(mut self, bytes: usize) -> Self {
        self.item_size_limit = bytes;
        self
    }

    /// How long opening a connection may take. Default 1 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one round trip may take, including the wait for a free
    /// connection. Default 1 s. On timeout the operation fails with
    /// [`ErrorKind::StoreUnavailable`](sessionkit_core::ErrorKind::StoreUnavailable) and the connection is closed.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Connections per server, at most. Default 16. Requests beyond it wait
    /// (within the request timeout) for a connection to come free.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// How many compare-and-swap cycles one operation tries before giving up
    /// with [`ErrorKind::StoreUnavailable`](sessionkit_core::ErrorKind::StoreUnavailable). Default 64. Retries wait a
    /// random, growing pause (up to 8 ms) so that contending writers spread
    /// out; the first retry does not wait.
    pub fn cas_attempts(mut self, attempts: u32) -> Self {
        self.cas_attempts = attempts;
        self
    }

    /// Checks the settings and builds the store. Does not connect.
    ///
    /// Errors are [`ErrorKind::InvalidConfig`](sessionkit_core::ErrorKind::InvalidConfig) naming the setting.
    pub fn build(self) -> Result<MemcachedStore> {
        if !self.prefix.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid_config(
                "prefix",
                "must be printable ASCII without spaces or control characters",
            ));
        }
        let part = if self.hash_ids {
            HASHED_PART_LEN
        } else {
            RAW_PART_LEN
        };
        let longest = self.prefix.len() + part;
        if longest > MAX_KEY_LEN {
            return Err(Error::invalid_config(
                "prefix",
                format!(
                    "is {} bytes; keys would be {longest} bytes (prefix + {part}-character id part), over memcached's {MAX_KEY_LEN}; use at most {} bytes",
                    self.prefix.len(),
                    MAX_KEY_LEN - part
                ),
            ));
        }
        if !(MIN_ITEM_SIZE_LIMIT..=MAX_ITEM_SIZE_LIMIT).contains(&self.item_size_limit) {
            return Err(Error::invalid_config(
                "item_size_limit",
                format!(
                    "{} bytes is out of range; use {MIN_ITEM_SIZE_LIMIT} to {MAX_ITEM_SIZE_LIMIT} bytes, matching the servers' -I",
                    self.item_size_limit
                ),
            ));
        }
        for (setting, value) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::invalid_config(setting, "must be greater than zero"));
            }
        }
        if self.max_connections == 0 {
            return Err(Error::invalid_config(
                "max_connections",
                "must be at least 1",
            ));
        }
        if self.cas_attempts == 0 {
            return Err(Error::invalid_config("cas_attempts", "must be at least 1"));
        }
        let client = Client::new(
            self.servers.iter().map(Server::addr).collect(),
            ClientConfig {
                connect_timeout: self.connect_timeout,
                request_timeout: self.request_timeout,
                max_connections: self.max_connections,
                max_value: self.item_size_limit,
            },
        );
        Ok(MemcachedStore {
            inner: Arc::new(Inner {
                client,
                ring: Ring::new(self.servers.as_slice()),
                servers: self.servers,
                prefix: self.prefix,
                hash_ids: self.hash_ids,
                item_size_limit: self.item_size_limit,
                cas_attempts: self.cas_attempts,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use sessionkit_core::ErrorKind;

    use super::*;

    fn builder() -> MemcachedStoreBuilder {
        MemcachedStore::builder(ServerList::parse("127.0.0.1:1").unwrap())
    }

    #[test]
    fn prefix_must_leave_room_in_the_key() {
        let max = MAX_KEY_LEN - HASHED_PART_LEN;
        assert_eq!(max, 186);
        assert!(builder().prefix("p".repeat(max)).build().is_ok());
        let err = builder().prefix("p".repeat(max + 1)).build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert_eq!(err.setting(), Some("prefix"));
        assert!(err.to_string().contains("over memcached's 250"), "{err}");
        // Raw ids are shorter, so a longer prefix fits.
        assert!(
            builder()
                .hash_ids(false)
                .prefix("p".repeat(max + 21))
                .build()
                .is_ok()
        );
        assert!(
            builder()
                .hash_ids(false)
                .prefix("p".repeat(max + 22))
                .build()
                .is_err()
        );
        for bad in ["a b", "a\nb", "ü:", "tab\t"] {
            let err = builder().prefix(bad).build().unwrap_err();
            assert_eq!(err.setting(), Some("prefix"), "{bad:?}");
        }
        assert!(builder().prefix("").build().is_ok());
    }

    #[test]
    fn other_settings_are_checked() {
        let cases = [
            (builder().item_size_limit(100), "item_size_limit"),
            (builder().item_size_limit(usize::MAX), "item_size_limit"),
            (builder().connect_timeout(Duration::ZERO), "connect_timeout"),
            (builder().request_timeout(Duration::ZERO), "request_timeout"),
            (builder().max_connections(0), "max_connections"),
            (builder().cas_attempts(0), "cas_attempts"),
        ];
        for (b, setting) in cases {
            assert_eq!(b.build().unwrap_err().setting(), Some(setting));
        }
    }
}
