//! The server list: `host:port[:weight],…`, as `SESSION_MEMCACHED_SERVERS` spells it.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use sessionkit_core::{Error, redact_credentials};

/// The setting that errors of [`ServerList::parse`] name.
const SETTING: &str = "SESSION_MEMCACHED_SERVERS";

/// The largest accepted weight. A server gets ring points in proportion to
/// its weight, so the bound also bounds the ring's size.
pub const MAX_WEIGHT: u32 = 100;

/// One memcached server: host, port and weight.
///
/// ```
/// use sessionkit_memcached::Server;
///
/// let server = Server::new("cache-1.internal", 11211, 2).unwrap();
/// assert_eq!(server.addr(), "cache-1.internal:11211");
/// assert_eq!(server.to_string(), "cache-1.internal:11211:2");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Server {
    host: String,
    port: u16,
    weight: u32,
}

impl Server {
    /// A server at `host:port` with `weight` (1 to [`MAX_WEIGHT`]). `host` is
    /// a host name, an IPv4 address or an IPv6 address (with or without
    /// brackets).
    pub fn new(host: impl Into<String>, port: u16, weight: u32) -> Result<Server, Error> {
        let host = host.into();
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(inner) => inner.to_owned(),
            None => host,
        };
        check_host(&host).map_err(|why| Error::invalid_config(SETTING, why))?;
        check_port(port).map_err(|why| Error::invalid_config(SETTING, why))?;
        check_weight(weight).map_err(|why| Error::invalid_config(SETTING, why))?;
        Ok(Server { host, port, weight })
    }

    /// The host, without brackets for IPv6.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The weight: the server's share of the keys is its weight divided by
    /// the sum of all weights.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// `host:port` (`[v6]:port` for IPv6), as used to connect and in errors.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Server {
    /// The entry in [`ServerList`] syntax: `host:port`, plus `:weight` when
    /// the weight is not 1.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr())?;
        if self.weight != 1 {
            write!(f, ":{}", self.weight)?;
        }
        Ok(())
    }
}

/// A non-empty list of distinct servers.
///
/// Parsed from `host:port[:weight],…`: entries separated by commas
/// (whitespace around them is ignored), the weight defaulting to 1, IPv6
/// hosts in brackets. Errors are [`ErrorKind::InvalidConfig`] naming
/// `SESSION_MEMCACHED_SERVERS`, the entry's position and text, and what is
/// wrong with it.
///
/// ```
/// use sessionkit_memcached::ServerList;
/// use sessionkit_core::ErrorKind;
///
/// let list: ServerList = "10.0.0.1:11211:2, 10.0.0.2:11211, [::1]:11212".parse().unwrap();
/// assert_eq!(list.len(), 3);
/// assert_eq!(list.iter().map(|s| s.weight()).collect::<Vec<_>>(), [2, 1, 1]);
/// assert_eq!(list.to_string(), "10.0.0.1:11211:2,10.0.0.2:11211,[::1]:11212");
///
/// let err = ServerList::parse("10.0.0.1:11211,10.0.0.2").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidConfig);
/// assert_eq!(err.setting(), Some("SESSION_MEMCACHED_SERVERS"));
/// assert!(err.to_string().contains("entry 2 (`10.0.0.2`)"), "{err}");
/// ```
///
/// [`ErrorKind::InvalidConfig`]: sessionkit_core::ErrorKind::InvalidConfig
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerList {
    servers: Vec<Server>,
}

impl ServerList {
    /// Parses `host:port[:weight],…`.
    pub fn parse(spec: &str) -> Result<ServerList, Error> {
        if spec.trim().is_empty() {
            return Err(Error::invalid_config(
                SETTING,
                "no servers given; expected host:port[:weight],… such as 127.0.0.1:11211",
            ));
        }
        let mut servers = Vec::new();
        for (i, entry) in spec.split(',').enumerate() {
            let entry = entry.trim();
            let server = parse_entry(entry).map_err(|why| {
                Error::invalid_config(
                    SETTING,
                    format!(
                        "entry {} (`{}`): {why}; expected host:port[:weight], such as 127.0.0.1:11211:2",
                        i + 1,
                        clip(entry)
                    ),
                )
            })?;
            if servers.iter().any(|s: &Server| s.addr() == server.addr()) {
                return Err(Error::invalid_config(
                    SETTING,
                    format!(
                        "entry {} (`{}`): server {} is listed twice",
                        i + 1,
                        clip(entry),
                        server.addr()
                    ),
                ));
            }
            servers.push(server);
        }
        Ok(ServerList { servers })
    }

    /// A list of `servers`: at least one, no address twice.
    pub fn new(servers: Vec<Server>) -> Result<ServerList, Error> {
        if servers.is_empty() {
            return Err(Error::invalid_config(SETTING, "no servers given"));
        }
        for (i, s) in servers.iter().enumerate() {
            if servers[..i].iter().any(|t| t.addr() == s.addr()) {
                return Err(Error::invalid_config(
                    SETTING,
                    format!("server {} is listed twice", s.addr()),
                ));
            }
        }
        Ok(ServerList { servers })
    }

    /// The servers, in the order given.
    pub fn iter(&self) -> std::slice::Iter<'_, Server> {
        self.servers.iter()
    }

    /// The number of servers (at least one).
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Always `false`: a list has at least one server.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    pub(crate) fn as_slice(&self) -> &[Server] {
        &self.servers
    }
}

impl FromStr for ServerList {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServerList::parse(s)
    }
}

impl fmt::Display for ServerList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.servers.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a ServerList {
    type Item = &'a Server;
    type IntoIter = std::slice::Iter<'a, Server>;

    fn into_iter(self) -> Self::IntoIter {
        self.servers.iter()
    }
}

fn parse_entry(entry: &str) -> Result<Server, String> {
    if entry.is_empty() {
        return Err("empty entry".into());
    }
    if entry.contains('@') || entry.contains("://") {
        // Memcached's protocol has no authentication: a `user:password@`
        // or a URL here is a mistake, and likely holds a secret.
        return Err(
            "credentials and URLs are not supported (memcached has no authentication; the entry is shown with `***`)"
                .into(),
        );
    }
    let (host, rest) = if let Some(after) = entry.strip_prefix('[') {
        let end = after
            .find(']')
            .ok_or("`[` opens an IPv6 address that `]` does not close")?;
        let host = &after[..end];
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!("`{}` is not an IPv6 address", clip(host)));
        }
        let rest = after[end + 1..]
            .strip_prefix(':')
            .ok_or("the port is missing after the IPv6 address")?;
        (host, rest)
    } else {
        entry.split_once(':').ok_or("the port is missing")?
    };
    if rest.matches(':').count() > 1 {
        return Err("too many `:`; write IPv6 addresses in brackets, such as [::1]:11211".into());
    }
    let (port, weight) = match rest.split_once(':') {
        Some((port, weight)) => (port, Some(weight)),
        None => (rest, None),
    };
    check_host(host)?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port `{}` is not a number from 1 to 65535", clip(port)))?;
    check_port(port)?;
    let weight = match weight {
        None => 1,
        Some(w) => w.parse::<u32>().map_err(|_| {
            format!(
                "weight `{}` is not a whole number from 1 to {MAX_WEIGHT}",
                clip(w)
            )
        })?,
    };
    check_weight(weight)?;
    Ok(Server {
        host: host.to_owned(),
        port,
        weight,
    })
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if host.contains(':') {
        return match host.parse::<Ipv6Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("`{}` is not an IPv6 address", clip(host))),
        };
    }
    let ok = host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "host `{}` is not a host name or IP address",
            clip(host)
        ))
    }
}

fn check_port(port: u16) -> Result<(), String> {
    if port == 0 {
        Err("port 0 is not a port a server listens on".into())
    } else {
        Ok(())
    }
}

fn check_weight(weight: u32) -> Result<(), String> {
    if (1..=MAX_WEIGHT).contains(&weight) {
        Ok(())
    } else {
        Err(format!(
            "weight {weight} is out of range; it must be from 1 to {MAX_WEIGHT}"
        ))
    }
}

/// At most 64 characters of operator input, for messages.
/// `text` as an error shows it: credentials redacted, cut at 64 characters,
/// control characters replaced.
fn clip(text: &str) -> String {
    let text = redact_credentials(text);
    let mut out: String = text.chars().take(64).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessionkit_core::ErrorKind;

    fn ok(spec: &str) -> Vec<(String, u16, u32)> {
        ServerList::parse(spec)
            .unwrap_or_else(|e| panic!("{spec}: {e}"))
            .iter()
            .map(|s| (s.host().to_owned(), s.port(), s.weight()))
            .collect()
    }

    fn err(spec: &str) -> String {
        let e = ServerList::parse(spec).expect_err(spec);
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert_eq!(e.setting(), Some("SESSION_MEMCACHED_SERVERS"));
        e.to_string()
    }

    #[test]
    fn credentials_in_an_entry_are_refused_and_never_echoed() {
        for spec in [
            "user:hunter2@cache.internal:11211",
            "cache-a:11211,admin:hunter2@cache-b:11211:2",
            "memcached://user:hunter2@cache.internal:11211",
        ] {
            let text = err(spec);
            assert!(!text.contains("hunter2"), "{spec}: {text}");
            assert!(text.contains("credentials"), "{spec}: {text}");
        }
    }

    #[test]
    fn accepts_the_documented_syntax() {
        assert_eq!(ok("127.0.0.1:11211"), [("127.0.0.1".into(), 11211, 1)]);
        assert_eq!(
            ok(" a.example:1:3 , b-2_x.example:65535 "),
            [
                ("a.example".into(), 1, 3),
                ("b-2_x.example".into(), 65535, 1)
            ]
        );
        assert_eq!(
            ok("[::1]:11211:5,[fe80::1]:2"),
            [("::1".into(), 11211, 5), ("fe80::1".into(), 2, 1)]
        );
        assert_eq!(ok("localhost:11211:100")[0].2, 100);
    }

    #[test]
    fn display_round_trips() {
        let spec = "a:1:2,b:3,[::1]:4:7";
        let list = ServerList::parse(spec).unwrap();
        assert_eq!(list.to_string(), spec);
        assert_eq!(ServerList::parse(&list.to_string()).unwrap(), list);
    }

    #[test]
    fn errors_name_the_entry_and_the_problem() {
        let cases = [
            ("", "no servers"),
            ("   ", "no servers"),
            ("a:1,", "entry 2 (``): empty entry"),
            ("a:1,,b:2", "entry 2 (``): empty entry"),
            ("localhost", "entry 1 (`localhost`): the port is missing"),
            ("a:1,b:x", "entry 2 (`b:x`): port `x` is not a number"),
            ("a:0", "port 0"),
            ("a:70000", "port `70000`"),
            ("a:-1", "port `-1`"),
            ("a:1:0", "weight 0 is out of range"),
            ("a:1:101", "weight 101 is out of range"),
            ("a:1:x", "weight `x`"),
            ("a:1:2:3", "too many `:`"),
            ("::1:11211", "write IPv6 addresses in brackets"),
            ("[::1:11211", "does not close"),
            ("[::1]", "port is missing after the IPv6"),
            ("[nope]:1", "`nope` is not an IPv6 address"),
            (":11211", "the host is empty"),
            ("bad host:1", "host `bad host`"),
            ("a/b:1", "host `a/b`"),
            ("a:1,a:1:2", "entry 2 (`a:1:2`): server a:1 is listed twice"),
        ];
        for (spec, expected) in cases {
            let text = err(spec);
            assert!(text.contains(expected), "{spec:?}: {text}");
            assert!(text.contains("SESSION_MEMCACHED_SERVERS"), "{text}");
        }
    }

    #[test]
    fn messages_clip_and_sanitize_the_input() {
        let long = format!("{}:1", "h".repeat(500));
        let text = err(&long);
        assert!(text.len() < 400, "{text}");
        let text = err("a\nb:1");
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn server_new_validates() {
        assert!(Server::new("a", 1, 1).is_ok());
        assert_eq!(Server::new("[::1]", 1, 1).unwrap().addr(), "[::1]:1");
        assert_eq!(Server::new("::1", 1, 1).unwrap().addr(), "[::1]:1");
        assert!(Server::new("", 1, 1).is_err());
        assert!(Server::new("a", 0, 1).is_err());
        assert!(Server::new("a", 1, 0).is_err());
        assert!(ServerList::new(vec![]).is_err());
        let a = Server::new("a", 1, 1).unwrap();
        let a2 = Server::new("a", 1, 2).unwrap();
        assert!(ServerList::new(vec![a, a2]).is_err());
    }
}
