//! Session ids and lock tokens: random, validated, never logged in the clear.
//!
//! A [`SessionId`] is 256 bits from the operating system's CSPRNG, written as
//! 43 characters of unpadded base64url. That is well above the 64 bits of
//! entropy the [OWASP Session Management Cheat Sheet] asks for, so guessing a
//! live id is not a practical attack.
//!
//! Ids that arrive from clients are checked for exact length and alphabet by
//! [`SessionId::parse`] *before* anything else looks at them; a value that fails
//! the check never reaches a store.
//!
//! [OWASP Session Management Cheat Sheet]: https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html#session-id-entropy

use std::fmt;

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind};

/// Length in bytes of the random part of a [`SessionId`].
const ID_BYTES: usize = 32;

/// Length in characters of an encoded [`SessionId`].
pub const SESSION_ID_LEN: usize = 43;

/// A session id: 256 random bits, shown as 43 characters of base64url.
///
/// `Debug` and [`SessionId::short_hash`] never reveal the id itself, so an id
/// can be passed to `tracing` fields without leaking it into logs. Use
/// [`SessionId::expose`] where the real value is needed, which
/// is the cookie and the store.
///
/// # Examples
///
/// ```
/// use sessionkit_core::SessionId;
///
/// let id = SessionId::generate();
/// let text = id.expose();
/// assert_eq!(text.len(), 43);
/// assert_eq!(SessionId::parse(&text).unwrap(), id);
///
/// // Anything else is rejected before it can reach a store.
/// assert!(SessionId::parse("not-an-id").is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; ID_BYTES]);

impl SessionId {
    /// Generates a fresh id from the operating system's CSPRNG.
    ///
    /// # Panics
    ///
    /// Panics if the operating system cannot provide random bytes. There is no
    /// safe fallback for a session id: serving predictable ids would be worse
    /// than failing.
    pub fn generate() -> Self {
        SessionId(random_bytes())
    }

    /// Parses an id as sent by a client.
    ///
    /// Accepts exactly 43 characters of the base64url alphabet (`A-Z a-z 0-9 -
    /// _`) that decode canonically to 32 bytes. Everything else is an
    /// [`ErrorKind::InvalidId`] error; the message does not repeat the input.
    ///
    /// # Examples
    ///
    /// ```
    /// use sessionkit_core::{ErrorKind, SessionId};
    ///
    /// let err = SessionId::parse("short").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidId);
    /// ```
    pub fn parse(text: &str) -> Result<Self, Error> {
        Self::parse_bytes(text.as_bytes())
    }

    /// Parses an id from raw bytes, as [`SessionId::parse`] does for text.
    ///
    /// Cookie headers are not always valid UTF-8; this lets callers validate
    /// them without converting first.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() != SESSION_ID_LEN {
            return Err(Error::new(ErrorKind::InvalidId).with_detail(format!(
                "expected {SESSION_ID_LEN} characters, got {}",
                bytes.len()
            )));
        }
        match decode_id(bytes) {
            Ok(id) => Ok(SessionId(id)),
            Err(IdDecodeError::Alphabet) => Err(Error::new(ErrorKind::InvalidId)
                .with_detail("character outside the base64url alphabet")),
            Err(IdDecodeError::NotCanonical) => {
                Err(Error::new(ErrorKind::InvalidId).with_detail("not a canonical encoding"))
            }
        }
    }

    /// The id as it goes into a cookie: 43 characters of base64url.
    ///
    /// This is the secret bearer token of the session. Don't log it; log
    /// [`SessionId::short_hash`] instead.
    pub fn expose(&self) -> String {
        let mut text = [0u8; SESSION_ID_LEN];
        self.encode(&mut text).to_owned()
    }

    /// Appends [`SessionId::expose`]'s text to `out`, for a header being
    /// built in one buffer (no string of its own).
    ///
    /// ```
    /// use sessionkit_core::SessionId;
    ///
    /// let id = SessionId::generate();
    /// let mut header = String::from("session=");
    /// id.expose_into(&mut header);
    /// assert_eq!(header, format!("session={}", id.expose()));
    /// ```
    pub fn expose_into(&self, out: &mut String) {
        // Through a stack buffer: the crate's `encode_string` goes through
        // its streaming encoder, ten times the instructions for 43 bytes.
        let mut text = [0u8; SESSION_ID_LEN];
        out.push_str(self.encode(&mut text));
    }

    /// The 43 characters of the id, written into `text`.
    fn encode<'t>(&self, text: &'t mut [u8; SESSION_ID_LEN]) -> &'t str {
        encode_id(&self.0, text);
        std::str::from_utf8(text).expect("base64url is ASCII")
    }

    /// The 32 random bytes of the id.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// SHA-256 of the encoded id, for stores that keep ids hashed at rest.
    ///
    /// A dump of such a store holds no usable session id. The hash is taken
    /// over the 43-character text, so any implementation can recompute it.
    ///
    /// ```
    /// use sessionkit_core::SessionId;
    ///
    /// let id = SessionId::generate();
    /// assert_ne!(&id.hashed()[..], &id.as_bytes()[..]);
    /// assert_eq!(id.hashed(), id.hashed());
    /// ```
    pub fn hashed(&self) -> [u8; 32] {
        // The text on the stack: stores hash an id on every operation.
        let mut text = [0u8; SESSION_ID_LEN];
        Sha256::digest(self.encode(&mut text)).into()
    }

    /// [`SessionId::hashed`] as 64 lowercase hex digits.
    ///
    /// ```
    /// use sessionkit_core::SessionId;
    ///
    /// let id = SessionId::generate();
    /// assert_eq!(id.hashed_hex().len(), 64);
    /// assert!(id.hashed_hex().starts_with(&id.short_hash()));
    /// ```
    pub fn hashed_hex(&self) -> String {
        hex(&self.hashed())
    }

    /// The name a store gives the session at rest: [`SessionId::hashed_hex`]
    /// when it hashes ids (the default of every store that names sessions
    /// by text: a leaked listing holds no live id), the id's own text
    /// otherwise.
    ///
    /// ```
    /// use sessionkit_core::SessionId;
    ///
    /// let id = SessionId::generate();
    /// assert_eq!(id.at_rest(true), id.hashed_hex());
    /// assert_eq!(id.at_rest(false), id.expose());
    /// ```
    pub fn at_rest(&self, hashed: bool) -> String {
        if hashed {
            self.hashed_hex()
        } else {
            self.expose()
        }
    }

    /// A short, non-reversible tag for logs: the first 8 hex digits of
    /// [`SessionId::hashed`].
    ///
    /// Enough to correlate log lines of one session, useless to an attacker
    /// ([OWASP: logging session ids](https://cheatsheetseries.owasp.org/cheatsheets/Logging_Cheat_Sheet.html#data-to-exclude)).
    ///
    /// ```
    /// use sessionkit_core::SessionId;
    ///
    /// let id = SessionId::generate();
    /// assert_eq!(id.short_hash().len(), 8);
    /// assert!(!id.expose().contains(&id.short_hash()));
    /// ```
    pub fn short_hash(&self) -> String {
        hex(&self.hashed()[..4])
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.short_hash())
    }
}

/// The token that owns a session lock.
///
/// 128 random bits. A store grants a lock together with a fresh token and
/// applies fenced writes, renewals and releases only when the token presented
/// still owns the lock, so a holder whose lock expired can never release or
/// write over a lock that another request took since.
///
/// ```
/// use sessionkit_core::LockToken;
///
/// let a = LockToken::generate();
/// assert_ne!(a, LockToken::generate());
/// assert_eq!(LockToken::from_bytes(*a.as_bytes()), a);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LockToken([u8; 16]);

impl LockToken {
    /// A fresh random token from the operating system's CSPRNG.
    pub fn generate() -> Self {
        LockToken(random_bytes())
    }

    /// Rebuilds a token from the bytes a store kept.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        LockToken(bytes)
    }

    /// The 16 bytes of the token.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The token as 32 lowercase hex digits, for stores that keep text.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for LockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LockToken({:02x}{:02x}..)", self.0[0], self.0[1])
    }
}

/// The base64url alphabet (RFC 4648 §5): the character of each sextet.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The value of each base64url character, `0xff` for every other byte.
const BASE64URL: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

#[derive(Debug, PartialEq, Eq)]
enum IdDecodeError {
    Alphabet,
    NotCanonical,
}

/// Decodes the 43 characters of an id into its 32 bytes.
///
/// The same result as `URL_SAFE_NO_PAD.decode_slice` (a test holds them
/// equal), in a third of its instructions: this runs for every request
/// that carries a cookie, and a fixed length with a table needs none of the
/// general decoder's bookkeeping. 43 characters carry 258 bits; the last
/// two must be zero, so every id has exactly one spelling.
fn decode_id(text: &[u8]) -> Result<[u8; ID_BYTES], IdDecodeError> {
    let mut out = [0u8; ID_BYTES];
    let mut sextets = [0u8; SESSION_ID_LEN + 1];
    let mut invalid = 0u8;
    for (s, c) in sextets.iter_mut().zip(text) {
        *s = BASE64URL[usize::from(*c)];
        invalid |= *s;
    }
    // Every valid sextet is below 64; 0xff marks a byte outside the alphabet.
    if text.len() != SESSION_ID_LEN || invalid & 0xc0 != 0 {
        return Err(IdDecodeError::Alphabet);
    }
    // Ten groups of four characters give 30 bytes; the last three
    // characters (the padding slot is zero) give two more.
    for (chunk, bytes) in sextets.chunks_exact(4).zip(out.chunks_mut(3)) {
        let n = u32::from(chunk[0]) << 18
            | u32::from(chunk[1]) << 12
            | u32::from(chunk[2]) << 6
            | u32::from(chunk[3]);
        let n = n.to_be_bytes();
        let take = bytes.len();
        bytes.copy_from_slice(&n[1..1 + take]);
    }
    if sextets[SESSION_ID_LEN - 1] & 0b11 != 0 {
        return Err(IdDecodeError::NotCanonical);
    }
    Ok(out)
}

/// Encodes the 32 bytes of an id as its 43 characters: the inverse of
/// [`decode_id`], and like it equal to the base64 crate's result (a test
/// holds them equal) in a fraction of its instructions. Every new session's
/// cookie, and every hashed store key, encodes an id.
fn encode_id(bytes: &[u8; ID_BYTES], text: &mut [u8; SESSION_ID_LEN]) {
    let sextet = |n: u32, shift: u32| ALPHABET[(n >> shift & 0x3f) as usize];
    // Ten groups of three bytes give 40 characters; the last two bytes
    // (16 bits, padded with two zero bits) give three more.
    for (group, chars) in bytes.chunks(3).zip(text.chunks_mut(4)) {
        let n = match *group {
            [a, b, c] => u32::from(a) << 16 | u32::from(b) << 8 | u32::from(c),
            [a, b] => u32::from(a) << 16 | u32::from(b) << 8,
            _ => unreachable!("32 bytes are ten groups of three and one of two"),
        };
        for (i, c) in chars.iter_mut().enumerate() {
            *c = sextet(n, 18 - 6 * i as u32);
        }
    }
}

/// Random bytes from the OS CSPRNG, drawn in blocks.
///
/// Every id and token is made of bytes the operating system's CSPRNG gave;
/// they are fetched 512 at a time per thread, so a new session costs a copy
/// instead of a system call (420 ns before). Bytes handed out are wiped from
/// the block. A process that `fork`s without `exec` after issuing ids would
/// share the rest of a block with its child; Rust servers do not do that (a
/// Tokio runtime does not survive a fork).
fn random_bytes<const N: usize>() -> [u8; N] {
    const BLOCK: usize = 512;
    struct Block {
        bytes: [u8; BLOCK],
        used: usize,
    }
    thread_local! {
        static BLOCK_RNG: std::cell::RefCell<Block> = const {
            std::cell::RefCell::new(Block { bytes: [0; BLOCK], used: BLOCK })
        };
    }
    let mut out = [0u8; N];
    if N > BLOCK {
        getrandom::fill(&mut out).expect("the operating system CSPRNG failed");
        return out;
    }
    BLOCK_RNG.with_borrow_mut(|block| {
        if BLOCK - block.used < N {
            getrandom::fill(&mut block.bytes).expect("the operating system CSPRNG failed");
            block.used = 0;
        }
        let taken = &mut block.bytes[block.used..block.used + N];
        out.copy_from_slice(taken);
        taken.fill(0);
        block.used += N;
    });
    out
}

/// A random `u64` from the OS CSPRNG, for jitter.
/// 32 bytes as 43 characters of unpadded base64url (the form of an id).
pub(crate) fn base64url_32(bytes: [u8; 32]) -> String {
    SessionId(bytes).expose()
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

pub(crate) fn random_u64() -> u64 {
    u64::from_le_bytes(random_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    /// The table decoder agrees with the base64 crate on every input of
    /// the id's length: valid ids, bytes outside the alphabet anywhere,
    /// padding, and non-zero trailing bits.
    #[test]
    fn the_id_encoder_agrees_with_the_base64_crate() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for round in 0..20_000u32 {
            let mut bytes = [0u8; ID_BYTES];
            for b in bytes.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            // Every byte value at both ends, where the groups' edges are.
            bytes[0] = round as u8;
            bytes[ID_BYTES - 1] = (round >> 8) as u8;
            let mut ours = [0u8; SESSION_ID_LEN];
            encode_id(&bytes, &mut ours);
            assert_eq!(&ours[..], URL_SAFE_NO_PAD.encode(bytes).as_bytes());
            assert_eq!(decode_id(&ours), Ok(bytes));
        }
    }

    #[test]
    fn the_id_decoder_agrees_with_the_base64_crate() {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let strangers = b"=+/ .\x00\xff\x80\"";
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20_000 {
            let mut text = [0u8; SESSION_ID_LEN];
            for c in text.iter_mut() {
                *c = alphabet[(next() % 64) as usize];
            }
            match round % 4 {
                0 => {} // trailing bits random: canonical one time in four
                1 => text[SESSION_ID_LEN - 1] = alphabet[(next() % 16) as usize * 4],
                _ => text[(next() % 43) as usize] = strangers[(next() % 9) as usize],
            }
            let mut expected = [0u8; ID_BYTES];
            let theirs = URL_SAFE_NO_PAD
                .decode_slice(text, &mut expected)
                .ok()
                .map(|_| expected);
            let ours = decode_id(&text);
            let shown = String::from_utf8_lossy(&text);
            assert_eq!(ours.as_ref().ok(), theirs.as_ref(), "{shown:?}");
            if let Err(why) = ours {
                // The crate calls a final `=` a padding error; both refuse it.
                let outside = text.iter().any(|c| !alphabet.contains(c));
                let expected = if outside {
                    IdDecodeError::Alphabet
                } else {
                    IdDecodeError::NotCanonical
                };
                assert_eq!(why, expected, "{shown:?}");
            }
        }
    }

    #[test]
    fn random_blocks_never_repeat_bytes_across_refills() {
        // 100 ids and tokens span several 512-byte blocks.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            assert!(seen.insert(SessionId::generate().as_bytes().to_vec()));
            assert!(seen.insert(LockToken::generate().0.to_vec()));
        }
        let token = LockToken::from_bytes([0xab; 16]);
        assert_eq!(token.to_hex(), "ab".repeat(16));
    }

    #[test]
    fn generated_ids_round_trip_and_differ() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert_eq!(SessionId::parse(&a.expose()).unwrap(), a);
    }

    #[test]
    fn every_wrong_length_is_rejected() {
        let good = SessionId::generate().expose();
        for len in 0..100 {
            if len == SESSION_ID_LEN {
                continue;
            }
            let candidate: String = good.chars().cycle().take(len).collect();
            let err = SessionId::parse(&candidate).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidId, "length {len}");
        }
    }

    #[test]
    fn characters_outside_the_alphabet_are_rejected() {
        let good = SessionId::generate().expose();
        for bad in ['+', '/', '=', ' ', ';', '\n', 'é', '\0', '.'] {
            let mut s: String = good.chars().take(SESSION_ID_LEN - 1).collect();
            s.insert(3, bad);
            // Keep the byte length right for single-byte characters so the
            // alphabet check, not the length check, is what rejects it.
            let err = SessionId::parse(&s).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidId, "{bad:?}");
        }
    }

    #[test]
    fn non_canonical_trailing_bits_are_rejected() {
        let id = SessionId::generate().expose();
        let mut bytes = id.into_bytes();
        // The last character carries 2 spare bits; 'B' sets one of them when
        // the real value ends in 'A', and vice versa flips data bits.
        let last = bytes[SESSION_ID_LEN - 1];
        let idx = URL_SAFE_ALPHABET.iter().position(|c| *c == last).unwrap();
        bytes[SESSION_ID_LEN - 1] = URL_SAFE_ALPHABET[idx ^ 1];
        assert!(SessionId::parse_bytes(&bytes).is_err());
    }

    const URL_SAFE_ALPHABET: &[u8] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    #[test]
    fn debug_does_not_reveal_the_id() {
        let id = SessionId::generate();
        let dbg = format!("{id:?}");
        assert!(!dbg.contains(&id.expose()));
        assert!(dbg.contains(&id.short_hash()));
    }

    #[test]
    fn hex_is_lowercase_and_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0xab, 0xff, 0x0f]), "00abff0f");
    }

    #[test]
    fn hashed_is_sha256_of_the_text() {
        let id = SessionId::generate();
        let expected: [u8; 32] = Sha256::digest(id.expose().as_bytes()).into();
        assert_eq!(id.hashed(), expected);
    }
}
