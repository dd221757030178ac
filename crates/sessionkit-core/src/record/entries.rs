//! `Entries`: a session's key/value table, packed into one shared buffer.
//!
//! Why packed: a session is read far more often than it is written, and the
//! memory store hands a copy of it to every request. With every key and value
//! in one reference-counted buffer, that copy is a reference count, not one
//! allocation per entry, and an idle session costs one allocation the size of
//! its data instead of three small ones per entry. Writes rebuild the buffer
//! (sessions are small; a delta is merged in one pass).
//!
//! Layout, all integers `u32` little-endian:
//!
//! ```text
//! count | offset of entry 0 | … | offset of entry count-1 | entry 0 | entry 1 | …
//! entry = key length | key bytes | value length | value bytes
//! ```
//!
//! Entries are sorted by key and keys are unique, so equal tables have equal
//! buffers and a key is found by binary search over the offsets.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

use super::Delta;

/// The entries of a session: keys mapped to encoded values, kept sorted.
///
/// Cloning is cheap (a reference count): all entries live in one shared,
/// immutable buffer, which writes replace. Keys and values are limited to
/// 4 GiB each.
///
/// ```
/// use sessionkit_core::record::Entries;
///
/// let mut entries = Entries::default();
/// entries.insert("b", b"2".to_vec());
/// entries.insert("a", b"1".to_vec());
/// assert_eq!(entries.keys().collect::<Vec<_>>(), ["a", "b"]);
/// assert_eq!(entries.get("a"), Some(&b"1"[..]));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Entries {
    /// `None` when empty: an empty session allocates nothing.
    packed: Option<Arc<[u8]>>,
}

const WORD: usize = 4;

fn word(buf: &[u8], at: usize) -> usize {
    let bytes: [u8; WORD] = buf[at..at + WORD].try_into().expect("four bytes");
    u32::from_le_bytes(bytes) as usize
}

fn push_word(buf: &mut Vec<u8>, n: usize) {
    let n = u32::try_from(n).expect("session keys and values are limited to 4 GiB each");
    buf.extend_from_slice(&n.to_le_bytes());
}

/// Writes a packed table from entries already sorted by key, without
/// duplicates.
struct Packer {
    buf: Vec<u8>,
    count: usize,
    capacity: usize,
}

thread_local! {
    /// The buffer tables are packed in before they are copied into their
    /// `Arc<[u8]>`, kept per thread: `Arc::from(Vec)` copies anyway, so
    /// packing into a fresh `Vec` cost every new session and every write an
    /// allocation and a free for nothing.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The largest scratch buffer a thread keeps: a huge session's table is
/// packed in a buffer of its own, freed after.
const SCRATCH_KEPT: usize = 4096;

impl Packer {
    /// A packer for at most `capacity` entries of `data` bytes in all.
    fn new(capacity: usize, data: usize) -> Self {
        let mut buf = SCRATCH.take();
        buf.reserve(WORD * (1 + 3 * capacity) + data);
        buf.resize(WORD * (1 + capacity), 0);
        Packer {
            buf,
            count: 0,
            capacity,
        }
    }

    fn push(&mut self, key: &str, value: &[u8]) {
        debug_assert!(self.count < self.capacity);
        let offset = u32::try_from(self.buf.len()).expect("session tables are limited to 4 GiB");
        let slot = WORD * (1 + self.count);
        self.buf[slot..slot + WORD].copy_from_slice(&offset.to_le_bytes());
        push_word(&mut self.buf, key.len());
        self.buf.extend_from_slice(key.as_bytes());
        push_word(&mut self.buf, value.len());
        self.buf.extend_from_slice(value);
        self.count += 1;
    }

    fn finish(mut self) -> Entries {
        if self.count == 0 {
            self.recycle();
            return Entries::default();
        }
        if self.count < self.capacity {
            // Fewer entries than planned (removals): close the gap in the
            // offset table.
            let unused = WORD * (self.capacity - self.count);
            let table_end = WORD * (1 + self.count);
            self.buf.drain(table_end..table_end + unused);
            for i in 0..self.count {
                let slot = WORD * (1 + i);
                let offset = word(&self.buf, slot) - unused;
                self.buf[slot..slot + WORD].copy_from_slice(&(offset as u32).to_le_bytes());
            }
        }
        self.buf[..WORD].copy_from_slice(&(self.count as u32).to_le_bytes());
        let packed = Arc::from(&self.buf[..]);
        self.recycle();
        Entries {
            packed: Some(packed),
        }
    }

    /// Hands the buffer back to the thread, wiped (values are often
    /// secrets) and empty, unless it grew past [`SCRATCH_KEPT`].
    fn recycle(mut self) {
        if self.buf.capacity() <= SCRATCH_KEPT {
            self.buf.fill(0);
            self.buf.clear();
            SCRATCH.set(self.buf);
        }
    }
}

impl Entries {
    fn buf(&self) -> &[u8] {
        self.packed.as_deref().unwrap_or(&[])
    }

    /// The key (as bytes) and value of entry `i`.
    fn raw_entry(&self, i: usize) -> (&[u8], &[u8]) {
        let buf = self.buf();
        let at = word(buf, WORD * (1 + i));
        let key_end = at + WORD + word(buf, at);
        let value_at = key_end + WORD;
        (
            &buf[at + WORD..key_end],
            &buf[value_at..value_at + word(buf, key_end)],
        )
    }

    /// The key and value of entry `i`.
    fn entry(&self, i: usize) -> (&str, &[u8]) {
        let (key, value) = self.raw_entry(i);
        // Keys come from `&str`s and the buffer is never changed in place.
        (std::str::from_utf8(key).expect("keys are UTF-8"), value)
    }

    /// Binary search by key. Compares bytes: for UTF-8, byte order is the
    /// order of `str`, and lookups skip re-validating the stored keys.
    fn position(&self, key: &str) -> Result<usize, usize> {
        let key = key.as_bytes();
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            match self.raw_entry(mid).0.cmp(key) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(low)
    }

    /// The encoded value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.position(key).ok().map(|i| self.raw_entry(i).1)
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: &str, value: impl Into<Box<[u8]>>) {
        let value = value.into();
        self.merge(false, std::iter::once((key, Some(&value[..]))));
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove(&mut self, key: &str) -> bool {
        let present = self.contains(key);
        if present {
            self.merge(false, std::iter::once((key, None)));
        }
        present
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.packed = None;
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        match &self.packed {
            Some(buf) => word(buf, 0),
            None => 0,
        }
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.packed.is_none()
    }

    /// Keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(k, _)| k)
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        (0..self.len()).map(|i| self.entry(i))
    }

    /// Frees spare capacity. The table is always packed to its exact size, so
    /// this does nothing; kept for stores written against earlier versions.
    pub fn shrink_to_fit(&mut self) {}

    /// Applies a delta: first `clear` if set, then every change in order.
    pub fn apply(&mut self, delta: &Delta) {
        self.merge(delta.clears(), delta.changes());
    }

    /// Rebuilds the table from the current entries (none if `clear`) and
    /// `changes`, sorted by key without duplicates (`None` removes), in one
    /// merging pass.
    fn merge<'a>(
        &mut self,
        clear: bool,
        changes: impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + Clone,
    ) {
        let current = if clear {
            Entries::default()
        } else {
            self.clone()
        };
        let added = changes.clone().filter(|(_, v)| v.is_some()).count();
        let data = current.buf().len()
            + changes
                .clone()
                .map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len))
                .sum::<usize>();
        let mut packer = Packer::new(current.len() + added, data);
        let mut old = current.iter().peekable();
        let mut new = changes.peekable();
        loop {
            let take_old = match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((ok, _)), Some((nk, _))) => ok < nk,
            };
            if take_old {
                let (k, v) = old.next().expect("peeked");
                packer.push(k, v);
                continue;
            }
            let (k, change) = new.next().expect("peeked");
            // A change replaces the current entry of the same key, if any.
            if old.peek().is_some_and(|(ok, _)| *ok == k) {
                old.next();
            }
            if let Some(v) = change {
                packer.push(k, v);
            }
        }
        *self = packer.finish();
    }
}

/// Key names and value sizes only: values are often secrets (tokens, personal
/// data), and `Debug` output ends up in logs (`#[tracing::instrument]`).
impl fmt::Debug for Entries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, v)| (k, ValueSize(v.len()))))
            .finish()
    }
}

/// How a value shows in `Debug` output: its size, never its bytes.
pub(crate) struct ValueSize(pub(crate) usize);

impl fmt::Debug for ValueSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

impl<K: AsRef<str>, V: Into<Box<[u8]>>> FromIterator<(K, V)> for Entries {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut pairs: Vec<(K, Box<[u8]>)> = iter.into_iter().map(|(k, v)| (k, v.into())).collect();
        // Stable, so that of two equal keys the later one is kept below.
        pairs.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        let mut unique: Vec<(&str, &[u8])> = Vec::with_capacity(pairs.len());
        for (k, v) in &pairs {
            match unique.last_mut() {
                Some(last) if last.0 == k.as_ref() => last.1 = v,
                _ => unique.push((k.as_ref(), v)),
            }
        }
        let data = unique.iter().map(|(k, v)| k.len() + v.len()).sum();
        let mut packer = Packer::new(unique.len(), data);
        for (k, v) in unique {
            packer.push(k, v);
        }
        packer.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_packed_in_a_buffer_the_thread_keeps_small() {
        SCRATCH.take();
        let entries: Entries = [("token", b"secret".to_vec())].into_iter().collect();
        assert_eq!(entries.get("token"), Some(&b"secret"[..]));
        let kept = SCRATCH.take();
        assert!(
            kept.is_empty() && kept.capacity() > 0,
            "the packing buffer goes back to the thread, emptied"
        );
        SCRATCH.set(kept);
        // The next table is packed in it, and is right.
        let mut next = entries.clone();
        let mut delta = Delta::default();
        delta.set("n", b"1".to_vec());
        next.apply(&delta);
        assert_eq!(next.get("n"), Some(&b"1"[..]));
        assert_eq!(next.get("token"), Some(&b"secret"[..]));
        assert_eq!(entries.len(), 1, "the first table is its own copy");
        // A huge table's buffer is not kept.
        let huge: Entries = [("big", vec![7u8; 3 * SCRATCH_KEPT])].into_iter().collect();
        assert_eq!(huge.get("big").map(<[u8]>::len), Some(3 * SCRATCH_KEPT));
        assert!(SCRATCH.take().capacity() <= SCRATCH_KEPT);
    }

    fn table(pairs: &[(&str, &str)]) -> Entries {
        pairs
            .iter()
            .map(|(k, v)| (*k, v.as_bytes().to_vec()))
            .collect()
    }

    fn pairs(entries: &Entries) -> Vec<(String, String)> {
        entries
            .iter()
            .map(|(k, v)| (k.to_owned(), String::from_utf8(v.to_vec()).unwrap()))
            .collect()
    }

    #[test]
    fn keeps_keys_sorted_and_unique_the_last_value_winning() {
        let entries = table(&[("b", "1"), ("a", "2"), ("b", "3"), ("", "e")]);
        assert_eq!(
            pairs(&entries),
            [("", "e"), ("a", "2"), ("b", "3")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(entries.len(), 3);
        assert_eq!(entries.get("b"), Some(&b"3"[..]));
        assert_eq!(entries.get("c"), None);
        assert!(entries.contains(""));
    }

    #[test]
    fn insert_and_remove_match_a_sorted_map() {
        use std::collections::BTreeMap;
        let mut entries = Entries::default();
        let mut model = BTreeMap::new();
        // A fixed pseudo-random walk over a small key space.
        let mut x = 7u32;
        for step in 0..500 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let key = format!("k{}", (x >> 8) % 23);
            if (x >> 4).is_multiple_of(3) {
                assert_eq!(entries.remove(&key), model.remove(&key).is_some());
            } else {
                let value = format!("v{step}").into_bytes();
                entries.insert(&key, value.clone());
                model.insert(key, value);
            }
            assert_eq!(entries.len(), model.len());
            assert!(
                entries
                    .iter()
                    .eq(model.iter().map(|(k, v)| (k.as_str(), &v[..])))
            );
        }
        entries.clear();
        assert!(entries.is_empty());
    }

    #[test]
    fn apply_merges_a_delta_in_one_pass() {
        let mut entries = table(&[("a", "1"), ("c", "3"), ("e", "5")]);
        let mut delta = Delta::default();
        delta.set("b", b"2".to_vec());
        delta.remove("c");
        delta.set("e", b"five".to_vec());
        delta.set("f", b"6".to_vec());
        delta.remove("zz");
        entries.apply(&delta);
        assert_eq!(
            pairs(&entries),
            [("a", "1"), ("b", "2"), ("e", "five"), ("f", "6")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn clones_share_the_buffer_and_writes_do_not_leak_into_clones() {
        let mut entries = table(&[("a", "1")]);
        let snapshot = entries.clone();
        assert!(Arc::ptr_eq(
            entries.packed.as_ref().unwrap(),
            snapshot.packed.as_ref().unwrap()
        ));
        entries.insert("a", b"2".to_vec());
        assert_eq!(snapshot.get("a"), Some(&b"1"[..]));
        assert_eq!(entries.get("a"), Some(&b"2"[..]));
    }

    #[test]
    fn equal_tables_compare_equal_however_built() {
        let mut built = Entries::default();
        built.insert("b", b"2".to_vec());
        built.insert("a", b"1".to_vec());
        built.insert("c", b"3".to_vec());
        built.remove("c");
        assert_eq!(built, table(&[("a", "1"), ("b", "2")]));
        let mut emptied = table(&[("a", "1")]);
        emptied.remove("a");
        assert_eq!(emptied, Entries::default());
    }

    #[test]
    fn empty_values_and_keys_round_trip() {
        let entries = table(&[("", ""), ("k", "")]);
        assert_eq!(entries.get(""), Some(&b""[..]));
        assert_eq!(entries.get("k"), Some(&b""[..]));
        assert_eq!(format!("{entries:?}"), r#"{"": <0 bytes>, "k": <0 bytes>}"#);
    }
}
