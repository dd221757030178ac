//! Session ids and lock tokens: random, validated, never logged in the clear.
//!
//! A [`SessionId`] is 256 bits from a CSPRNG (ChaCha12 keyed from the
//! operating system's; see [`SessionId#security`]), written as 43 characters
//! of unpadded base64url. That is well above the 64 bits of
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
/// # Security
///
/// What generates ids, exactly: [`SessionId::generate`] takes 32 bytes from
/// a per-thread ChaCha12 generator (the `chacha20` crate, the core of
/// `rand`'s `ThreadRng`), a CSPRNG in the sense of the [OWASP Session
/// Management Cheat Sheet](https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html#session-id-entropy):
///
/// - its 256-bit key comes from the operating system's CSPRNG (`getrandom`:
///   the `getrandom(2)` system call on Linux) on the thread's first id, again
///   after every 64 KiB of output (about 1,800 ids), and whenever the process
///   id differs from the one that seeded it (after a `fork`);
/// - it runs in batches of 256 bytes; the first 32 bytes of each batch key
///   the next one and are never handed out (fast key erasure), so what is in
///   memory at any moment cannot recompute an id already issued, and the
///   bytes handed out are wiped from the batch;
/// - a forked child shares at most the unused rest of one batch (seven ids)
///   with its parent, and reseeds from the OS at its next batch.
///
/// [`LockToken`]s and the jitter of lock waits come from the same generator.
/// Before, the OS was asked for 512 bytes (16 ids) at a time, which cost
/// about 1.5 µs per call; now it is asked for a key every 1,800 ids or so,
/// plus a cheap `getpid` every seven. The ids stay 256 bits from a CSPRNG,
/// so guessing a live one remains impractical.
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
    /// Generates a fresh id: 32 bytes from the thread's ChaCha12 generator,
    /// keyed from the operating system's CSPRNG (see the [`# Security`
    /// section](SessionId#security)).
    ///
    /// # Panics
    ///
    /// Panics if the operating system cannot provide random bytes to seed the
    /// generator. There is no safe fallback for a session id: serving
    /// predictable ids would be worse than failing.
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
    /// A fresh random token: 16 bytes from the generator of session ids (see
    /// [`SessionId#security`]).
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

/// Random bytes from ChaCha12 keyed by the OS CSPRNG (see
/// [`SessionId#security`]), one generator per thread.
///
/// Every id and token is drawn here. What the generator does, and why:
///
/// - **Seeded from the OS.** A thread's generator takes its 256-bit key from
///   `getrandom` (the OS CSPRNG) when the thread first draws, and again
///   after every [`RESEED_BATCHES`] batches (64 KiB of output, as `rand`'s
///   `ThreadRng` does), so a state that leaked stops predicting ids at the
///   next reseed.
/// - **ChaCha12** from the `chacha20` crate (RustCrypto), the core `rand`'s
///   `ThreadRng` uses, with its SIMD backends (four blocks, 256 bytes, per
///   call).
/// - **Fast key erasure**: the first 32 bytes of every batch become the key
///   of the next batch and are never handed out, so the state in memory
///   cannot regenerate bytes already handed out (backtracking resistance,
///   which `ThreadRng` lacks); the bytes handed out are wiped from the
///   batch, as the OS blocks were before.
/// - **Fork**: no batch after a `fork` comes from the parent's key: each
///   refill compares the process id (`getpid`, one system call per batch of
///   seven ids) with the one that seeded the generator and reseeds from the
///   OS when they differ, so a child shares at most the rest of the current
///   batch (224 bytes, seven ids) with its parent — less than the 512-byte
///   OS blocks of before. Rust servers do not fork without `exec` (a Tokio
///   runtime does not survive a fork); this bounds the harm where one does.
/// - **Threads**: the generator is thread-local (no lock, no sharing); two
///   threads never share a key, since each seeds its own from the OS.
///
/// Cost (criterion, `id/generate`, one machine): 26–30 ns per id, against
/// 80 ns with 512-byte blocks from `getrandom` (the kernel's generator
/// spends about 1.5 µs on each block) and 420 ns with one call per id.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    if N > BATCH - KEY {
        // Not drawn by this crate (ids and tokens are 32 bytes or fewer);
        // kept correct all the same.
        getrandom::fill(&mut out).expect("the operating system CSPRNG failed");
        return out;
    }
    ID_RNG.with_borrow_mut(|rng| {
        if BATCH - rng.used < N {
            rng.refill();
        }
        let taken = &mut rng.batch[rng.used..rng.used + N];
        out.copy_from_slice(taken);
        taken.fill(0);
        rng.used += N;
    });
    out
}

/// Bytes in one batch: what one call of the ChaCha core gives (four 64-byte
/// blocks, computed in parallel by its SIMD backends).
const BATCH: usize = 256;

/// Bytes of each batch that key the next one (fast key erasure).
const KEY: usize = 32;

/// Batches between two seeds from the OS: 64 KiB of output, as `rand`'s
/// `ThreadRng`.
const RESEED_BATCHES: u32 = 64 * 1024 / BATCH as u32;

type ChaCha12Core = chacha20::ChaChaCore<chacha20::R12, chacha20::variants::Legacy>;

/// A thread's id generator; see [`random_bytes`].
struct IdRng {
    /// `None` until the thread's first draw.
    core: Option<ChaCha12Core>,
    batch: [u8; BATCH],
    /// Bytes of `batch` handed out (or taken as the next key); all wiped.
    used: usize,
    /// Batches since the last seed from the OS.
    batches: u32,
    /// The process that seeded `core`.
    pid: u32,
}

thread_local! {
    static ID_RNG: std::cell::RefCell<IdRng> = const {
        std::cell::RefCell::new(IdRng {
            core: None,
            batch: [0; BATCH],
            used: BATCH,
            batches: 0,
            pid: 0,
        })
    };
}

impl IdRng {
    /// A fresh batch: from a new OS seed when due (first use, 64 KiB drawn,
    /// or another process: a fork), its first 32 bytes taken as the next
    /// key.
    fn refill(&mut self) {
        self.refill_in(std::process::id());
    }

    /// [`IdRng::refill`] in the process `pid` (tests play a fork with it).
    fn refill_in(&mut self, pid: u32) {
        use chacha20::rand_core::SeedableRng as _;
        use chacha20::rand_core::block::Generator as _;

        let core = match &mut self.core {
            Some(core) if self.pid == pid && self.batches < RESEED_BATCHES => core,
            _ => {
                let mut seed = [0u8; KEY];
                getrandom::fill(&mut seed).expect("the operating system CSPRNG failed");
                self.batches = 0;
                self.pid = pid;
                self.core.insert(ChaCha12Core::from_seed(seed))
            }
        };
        let mut words = [0u32; BATCH / 4];
        core.generate(&mut words);
        for (bytes, word) in self.batch.chunks_exact_mut(4).zip(&mut words) {
            bytes.copy_from_slice(&word.to_le_bytes());
            *word = 0;
        }
        let mut key = [0u8; KEY];
        key.copy_from_slice(&self.batch[..KEY]);
        *core = ChaCha12Core::from_seed(key);
        self.batch[..KEY].fill(0);
        self.used = KEY;
        self.batches += 1;
    }
}

/// A random `u64` from the id generator, for jitter.
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

    /// The batch a generator keyed with `seed` produces first.
    fn first_batch(seed: [u8; KEY]) -> [u8; BATCH] {
        use chacha20::rand_core::SeedableRng as _;
        use chacha20::rand_core::block::Generator as _;
        let mut words = [0u32; BATCH / 4];
        ChaCha12Core::from_seed(seed).generate(&mut words);
        let mut out = [0u8; BATCH];
        for (bytes, word) in out.chunks_exact_mut(4).zip(words) {
            bytes.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// A generator keyed with `seed` by the process `pid`, `batches` into
    /// its seed.
    fn keyed(seed: [u8; KEY], pid: u32, batches: u32) -> IdRng {
        use chacha20::rand_core::SeedableRng as _;
        IdRng {
            core: Some(ChaCha12Core::from_seed(seed)),
            batch: [0; BATCH],
            used: BATCH,
            batches,
            pid,
        }
    }

    #[test]
    fn each_batch_keys_the_next_and_never_hands_out_its_key() {
        let seed = [7u8; KEY];
        let mut rng = keyed(seed, 42, 0);
        rng.refill_in(42);
        let first = first_batch(seed);
        assert_eq!(
            rng.batch[KEY..],
            first[KEY..],
            "ChaCha12 of the key, after the next key"
        );
        assert_eq!(
            rng.batch[..KEY],
            [0; KEY],
            "the next key is wiped from the batch"
        );
        assert_eq!(rng.used, KEY);
        // The next batch is ChaCha12 keyed with the first 32 bytes of this
        // one: what remains in memory cannot recompute bytes handed out.
        let next_key: [u8; KEY] = first[..KEY].try_into().unwrap();
        rng.refill_in(42);
        assert_eq!(rng.batch[KEY..], first_batch(next_key)[KEY..]);
        assert_eq!(rng.batches, 2);
    }

    #[test]
    fn bytes_handed_out_are_wiped_from_the_batch() {
        let mut rng = keyed([1u8; KEY], 42, 0);
        rng.refill_in(42);
        ID_RNG.set(rng);
        let before = ID_RNG.with_borrow(|rng| rng.batch);
        let id: [u8; 32] = random_bytes();
        assert_eq!(id[..], before[KEY..2 * KEY]);
        ID_RNG.with_borrow(|rng| {
            assert_eq!(rng.batch[..2 * KEY], [0; 2 * KEY]);
            assert_eq!(rng.batch[2 * KEY..], before[2 * KEY..]);
        });
        // Leave the thread a generator seeded from the OS again.
        ID_RNG.set(keyed([0; KEY], 0, 0));
    }

    #[test]
    fn a_fork_reseeds_from_the_os_at_the_next_batch() {
        let seed = [9u8; KEY];
        // The same state in the same process: the same stream.
        let mut parent = keyed(seed, 42, 0);
        parent.refill_in(42);
        assert_eq!(parent.batch[KEY..], first_batch(seed)[KEY..]);
        // In another process (a forked child holds its parent's state): a
        // new key from the OS instead of the parent's stream.
        let mut child = keyed(seed, 42, 0);
        child.refill_in(43);
        assert_ne!(child.batch[KEY..], first_batch(seed)[KEY..]);
        assert_eq!((child.pid, child.batches), (43, 1));
    }

    #[test]
    fn the_generator_reseeds_from_the_os_after_64_kib() {
        let seed = [3u8; KEY];
        let mut due = keyed(seed, 42, RESEED_BATCHES - 1);
        due.refill_in(42);
        assert_eq!(due.batch[KEY..], first_batch(seed)[KEY..], "not due yet");
        let mut rng = keyed(seed, 42, RESEED_BATCHES);
        rng.refill_in(42);
        assert_ne!(
            rng.batch[KEY..],
            first_batch(seed)[KEY..],
            "due: a key from the OS"
        );
        assert_eq!(rng.batches, 1);
        assert_eq!(RESEED_BATCHES as usize * BATCH, 64 * 1024);
    }

    #[test]
    fn threads_draw_distinct_ids_from_generators_of_their_own() {
        let ids: Vec<Vec<SessionId>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..5_000).map(|_| SessionId::generate()).collect()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let all: std::collections::HashSet<SessionId> = ids.iter().flatten().copied().collect();
        assert_eq!(
            all.len(),
            4 * 5_000,
            "no id drawn twice, within or across threads"
        );
        // Crossing many reseeds and batches: every byte value shows up in
        // every position of an id, as uniform bytes would.
        for position in 0..32 {
            let seen: std::collections::HashSet<u8> =
                all.iter().map(|id| id.as_bytes()[position]).collect();
            assert_eq!(seen.len(), 256, "position {position}");
        }
    }

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
    fn random_batches_never_repeat_bytes_across_refills() {
        // 100 ids and tokens span several 256-byte batches.
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
