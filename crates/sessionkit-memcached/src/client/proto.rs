//! The subset of memcached's meta text protocol the store speaks: `mg`, `ms`, `md`, `mn`.
//!
//! Commands are encoded into one buffer per batch (pipelining); replies are
//! parsed from any [`AsyncBufRead`], with hard bounds on line and value sizes,
//! so that a malformed, hostile or truncated reply is an error and never a
//! panic or an unbounded allocation.
//!
//! Reference: <https://github.com/memcached/memcached/wiki/MetaCommands> and
//! `protocol.txt` of memcached 1.6.

use std::fmt;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// The longest key memcached accepts.
pub(crate) const MAX_KEY_LEN: usize = 250;

/// The longest reply line accepted. The store never asks for flags that
/// echo keys or opaque tokens, so real header lines are a few dozen bytes;
/// `SERVER_ERROR` messages are short too.
const MAX_LINE: usize = 1024;

/// How a `ms` stores its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetMode {
    /// Store unconditionally (`MS`, the default).
    Set,
    /// Store only if the key is absent (`ME`, "add").
    Add,
}

/// One meta command.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cmd<'a> {
    /// `mg <key> v c`: the value and its CAS, or a miss.
    Get { key: &'a str },
    /// `ms <key> <len> T<exptime> [ME] [C<cas>] c`, then the value.
    Set {
        key: &'a str,
        value: &'a [u8],
        exptime: i64,
        mode: SetMode,
        cas: Option<u64>,
    },
    /// `md <key> [C<cas>]`.
    Delete { key: &'a str, cas: Option<u64> },
    /// `mn`: answers `MN`; used as a ping.
    Noop,
}

impl Cmd<'_> {
    /// Appends the command's wire form to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        // Writing into a Vec cannot fail.
        let _ = match *self {
            Cmd::Get { key } => write!(out, "mg {key} v c\r\n"),
            Cmd::Set {
                key,
                value,
                exptime,
                mode,
                cas,
            } => {
                let _ = write!(out, "ms {key} {} T{exptime}", value.len());
                if mode == SetMode::Add {
                    out.extend_from_slice(b" ME");
                }
                if let Some(cas) = cas {
                    let _ = write!(out, " C{cas}");
                }
                out.extend_from_slice(b" c\r\n");
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
                Ok(())
            }
            Cmd::Delete { key, cas } => match cas {
                Some(cas) => write!(out, "md {key} C{cas}\r\n"),
                None => write!(out, "md {key}\r\n"),
            },
            Cmd::Noop => write!(out, "mn\r\n"),
        };
    }

    fn name(&self) -> &'static str {
        match self {
            Cmd::Get { .. } => "mg",
            Cmd::Set { .. } => "ms",
            Cmd::Delete { .. } => "md",
            Cmd::Noop => "mn",
        }
    }

    /// Whether `reply` is one this command can get.
    fn accepts(&self, reply: &Reply) -> bool {
        match self {
            Cmd::Get { .. } => matches!(reply, Reply::Value { .. } | Reply::Miss),
            Cmd::Set { .. } => matches!(
                reply,
                Reply::Stored { .. } | Reply::NotStored | Reply::Exists | Reply::NotFound
            ),
            Cmd::Delete { .. } => matches!(
                reply,
                Reply::Stored { .. } | Reply::Exists | Reply::NotFound
            ),
            Cmd::Noop => matches!(reply, Reply::Noop),
        }
    }
}

/// Whether `key` is a key memcached's text protocol accepts: 1 to 250
/// bytes, printable ASCII without spaces.
pub(crate) fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `VA`: a hit, with the value and its CAS.
    Value { data: Vec<u8>, cas: u64 },
    /// `HD`: success (stored, deleted), with the CAS when the command asked.
    Stored { cas: Option<u64> },
    /// `EN`: a miss.
    Miss,
    /// `NS`: not stored (add on a present key).
    NotStored,
    /// `EX`: the CAS did not match.
    Exists,
    /// `NF`: not found (CAS or delete on a missing key).
    NotFound,
    /// `MN`.
    Noop,
}

/// Why a reply could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The stream ended before the reply did.
    Closed,
    /// The socket failed.
    Io(std::io::Error),
    /// The bytes are not a valid reply to the command.
    Protocol(String),
    /// The server answered `SERVER_ERROR` (or `ERROR` / `CLIENT_ERROR`).
    Server(String),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Closed => f.write_str("connection closed by the server"),
            ReadError::Io(e) => write!(f, "read failed: {e}"),
            ReadError::Protocol(m) => write!(f, "malformed reply: {m}"),
            ReadError::Server(m) => write!(f, "server error: {m}"),
        }
    }
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ReadError::Closed
        } else {
            ReadError::Io(e)
        }
    }
}

fn protocol(cmd: &Cmd<'_>, what: impl fmt::Display) -> ReadError {
    ReadError::Protocol(format!("{} reply: {what}", cmd.name()))
}

/// Reads the reply to `cmd`; a `VA` value may be at most `max_value` bytes.
pub(crate) async fn read_reply<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    cmd: &Cmd<'_>,
    max_value: usize,
    line: &mut Vec<u8>,
) -> Result<Reply, ReadError> {
    read_line(reader, line).await?;
    let text = std::str::from_utf8(line).map_err(|_| protocol(cmd, "header is not UTF-8"))?;
    let mut tokens = text.split(' ');
    let code = tokens.next().unwrap_or("");
    let reply = match code {
        "VA" => {
            let size = tokens
                .next()
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or_else(|| protocol(cmd, "VA without a valid size"))?;
            if size > max_value {
                return Err(protocol(
                    cmd,
                    format_args!("value of {size} bytes exceeds the limit of {max_value}"),
                ));
            }
            let flags = Flags::parse(tokens).map_err(|m| protocol(cmd, m))?;
            let cas = flags
                .cas
                .ok_or_else(|| protocol(cmd, "VA without the requested CAS"))?;
            let mut data = vec![0u8; size];
            reader.read_exact(&mut data).await?;
            let mut end = [0u8; 2];
            reader.read_exact(&mut end).await?;
            if &end != b"\r\n" {
                return Err(protocol(cmd, "value not terminated by CRLF"));
            }
            Reply::Value { data, cas }
        }
        "HD" => Reply::Stored {
            cas: Flags::parse(tokens).map_err(|m| protocol(cmd, m))?.cas,
        },
        "EN" | "NS" | "EX" | "NF" | "MN" => {
            Flags::parse(tokens).map_err(|m| protocol(cmd, m))?;
            match code {
                "EN" => Reply::Miss,
                "NS" => Reply::NotStored,
                "EX" => Reply::Exists,
                "NF" => Reply::NotFound,
                _ => Reply::Noop,
            }
        }
        "SERVER_ERROR" | "CLIENT_ERROR" | "ERROR" => {
            return Err(ReadError::Server(text.to_owned()));
        }
        _ => {
            return Err(protocol(
                cmd,
                format_args!("unknown reply `{}`", clip(text)),
            ));
        }
    };
    if !cmd.accepts(&reply) {
        return Err(protocol(cmd, format_args!("unexpected `{}`", clip(text))));
    }
    Ok(reply)
}

fn clip(text: &str) -> &str {
    match text.char_indices().nth(40) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Reads one CRLF-terminated line into `line` (without the CRLF), refusing
/// lines longer than [`MAX_LINE`].
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> Result<(), ReadError> {
    line.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Err(ReadError::Closed);
        }
        let (chunk, found) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        if line.len() + chunk.len() > MAX_LINE {
            return Err(ReadError::Protocol(format!(
                "reply line longer than {MAX_LINE} bytes"
            )));
        }
        line.extend_from_slice(chunk);
        let used = chunk.len();
        reader.consume(used);
        if found {
            break;
        }
    }
    if line.len() < 2 || line[line.len() - 2] != b'\r' {
        return Err(ReadError::Protocol(
            "reply line not terminated by CRLF".into(),
        ));
    }
    line.truncate(line.len() - 2);
    Ok(())
}

/// The return flags the store looks at.
#[derive(Debug, Default)]
struct Flags {
    cas: Option<u64>,
}

impl Flags {
    fn parse<'a>(tokens: impl Iterator<Item = &'a str>) -> Result<Flags, String> {
        let mut flags = Flags::default();
        for token in tokens {
            let mut chars = token.chars();
            match chars.next() {
                Some('c') => {
                    let cas = chars
                        .as_str()
                        .parse::<u64>()
                        .map_err(|_| format!("bad CAS flag `{}`", clip(token)))?;
                    flags.cas = Some(cas);
                }
                Some(c) if c.is_ascii_alphabetic() => {}
                _ => return Err(format!("bad flag `{}`", clip(token))),
            }
        }
        Ok(flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(cmd: Cmd<'_>) -> String {
        let mut out = Vec::new();
        cmd.encode(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn commands_encode_as_meta_text() {
        assert_eq!(encode(Cmd::Get { key: "k" }), "mg k v c\r\n");
        assert_eq!(
            encode(Cmd::Set {
                key: "k",
                value: b"abc",
                exptime: 5,
                mode: SetMode::Add,
                cas: None
            }),
            "ms k 3 T5 ME c\r\nabc\r\n"
        );
        assert_eq!(
            encode(Cmd::Set {
                key: "k",
                value: b"",
                exptime: 1_900_000_000,
                mode: SetMode::Set,
                cas: Some(42)
            }),
            "ms k 0 T1900000000 C42 c\r\n\r\n"
        );
        assert_eq!(
            encode(Cmd::Delete {
                key: "k",
                cas: Some(7)
            }),
            "md k C7\r\n"
        );
        assert_eq!(
            encode(Cmd::Delete {
                key: "k",
                cas: None
            }),
            "md k\r\n"
        );
        assert_eq!(encode(Cmd::Noop), "mn\r\n");
    }

    #[test]
    fn key_rules() {
        assert!(valid_key("sessionkit:abc"));
        assert!(valid_key(&"k".repeat(250)));
        assert!(!valid_key(&"k".repeat(251)));
        assert!(!valid_key(""));
        assert!(!valid_key("a b"));
        assert!(!valid_key("a\r\nmd x"));
        assert!(!valid_key("ü"));
    }

    async fn parse(cmd: Cmd<'_>, bytes: &[u8]) -> Result<Reply, ReadError> {
        let mut reader = tokio::io::BufReader::new(bytes);
        read_reply(&mut reader, &cmd, 1024, &mut Vec::new()).await
    }

    const GET: Cmd<'static> = Cmd::Get { key: "k" };
    const SET: Cmd<'static> = Cmd::Set {
        key: "k",
        value: b"",
        exptime: 1,
        mode: SetMode::Set,
        cas: None,
    };
    const DEL: Cmd<'static> = Cmd::Delete {
        key: "k",
        cas: None,
    };

    #[tokio::test]
    async fn replies_parse() {
        assert_eq!(
            parse(GET, b"VA 3 c9 t10\r\nabc\r\n").await.unwrap(),
            Reply::Value {
                data: b"abc".to_vec(),
                cas: 9
            }
        );
        assert_eq!(
            parse(GET, b"VA 0 c1\r\n\r\n").await.unwrap(),
            Reply::Value {
                data: vec![],
                cas: 1
            }
        );
        assert_eq!(parse(GET, b"EN\r\n").await.unwrap(), Reply::Miss);
        assert_eq!(
            parse(SET, b"HD c12\r\n").await.unwrap(),
            Reply::Stored { cas: Some(12) }
        );
        assert_eq!(parse(SET, b"NS c0\r\n").await.unwrap(), Reply::NotStored);
        assert_eq!(parse(SET, b"EX\r\n").await.unwrap(), Reply::Exists);
        assert_eq!(parse(SET, b"NF\r\n").await.unwrap(), Reply::NotFound);
        assert_eq!(
            parse(DEL, b"HD\r\n").await.unwrap(),
            Reply::Stored { cas: None }
        );
        assert_eq!(parse(Cmd::Noop, b"MN\r\n").await.unwrap(), Reply::Noop);
    }

    #[tokio::test]
    async fn server_errors_are_reported() {
        let err = parse(SET, b"SERVER_ERROR object too large for cache\r\n")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ReadError::Server(m) if m.contains("too large")),
            "{err}"
        );
        assert!(matches!(
            parse(GET, b"ERROR\r\n").await,
            Err(ReadError::Server(_))
        ));
        assert!(matches!(
            parse(GET, b"CLIENT_ERROR bad command line format\r\n").await,
            Err(ReadError::Server(_))
        ));
    }

    #[tokio::test]
    async fn malformed_replies_are_errors() {
        let cases: &[(Cmd<'_>, &[u8])] = &[
            (GET, b"VA x c1\r\nabc\r\n"),
            (GET, b"VA 3\r\nabc\r\n"),
            (GET, b"VA 3 c1\r\nabcd\r\n"),
            (GET, b"VA 3 cX\r\nabc\r\n"),
            (GET, b"VA 99999999999999999999 c1\r\n"),
            (GET, b"VA 2000 c1\r\n"),
            (GET, b"VA -1 c1\r\n"),
            (GET, b"HD\r\n"),
            (GET, b"NS\r\n"),
            (SET, b"EN\r\n"),
            (SET, b"VA 1 c1\r\nx\r\n"),
            (DEL, b"NS\r\n"),
            (Cmd::Noop, b"HD\r\n"),
            (GET, b"XX\r\n"),
            (GET, b"EN\n"),
            (GET, b"\r\n"),
            (GET, b"EN 5\r\n"),
            (GET, b"\xff\xfe\r\n"),
        ];
        for (cmd, bytes) in cases {
            let result = parse(*cmd, bytes).await;
            assert!(
                matches!(result, Err(ReadError::Protocol(_))),
                "{:?} -> {result:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[tokio::test]
    async fn overlong_lines_are_refused() {
        let mut bytes = b"EN ".to_vec();
        bytes.extend(std::iter::repeat_n(b'x', 5000));
        bytes.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse(GET, &bytes).await,
            Err(ReadError::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn every_truncation_is_an_error() {
        let full: &[u8] = b"VA 5 c77 t3\r\nhello\r\n";
        for len in 0..full.len() {
            let result = parse(GET, &full[..len]).await;
            assert!(
                matches!(result, Err(ReadError::Closed | ReadError::Protocol(_))),
                "len {len}: {result:?}"
            );
        }
        assert!(parse(GET, full).await.is_ok());
    }

    #[tokio::test]
    async fn garbage_never_panics() {
        // A small deterministic generator: every run checks the same inputs.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"VAHDENSXFMNc0123456789 \r\n-tk\xff";
        for _ in 0..5000 {
            let len = (next() % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            for cmd in [GET, SET, DEL, Cmd::Noop] {
                let _ = parse(cmd, &bytes).await;
            }
        }
    }

    #[tokio::test]
    async fn pipelined_replies_read_in_order() {
        let bytes: &[u8] = b"HD c5\r\nVA 2 c5\r\nhi\r\nEN\r\n";
        let mut reader = tokio::io::BufReader::new(bytes);
        let mut line = Vec::new();
        let set = Cmd::Set {
            key: "l",
            value: b"x",
            exptime: 2,
            mode: SetMode::Add,
            cas: None,
        };
        assert_eq!(
            read_reply(&mut reader, &set, 64, &mut line).await.unwrap(),
            Reply::Stored { cas: Some(5) }
        );
        assert!(matches!(
            read_reply(&mut reader, &GET, 64, &mut line).await.unwrap(),
            Reply::Value { cas: 5, .. }
        ));
        assert_eq!(
            read_reply(&mut reader, &GET, 64, &mut line).await.unwrap(),
            Reply::Miss
        );
    }
}
