//! What both databases share: table names, keys at rest, the JSON form of entries and deltas, row checks, errors and the sweep.

use std::sync::Weak;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};
use sessionkit_core::record::{Delta, Entries, Meta, Record};
use sessionkit_core::{Error, SessionId};

/// The largest number of milliseconds a column holds: 2^53 − 1 (year
/// 285,000), so that `now + ttl` and `ttl * 1000` never overflow a 64-bit
/// integer in SQL. Larger values are capped here before they are written,
/// and the tables' `CHECK` constraints refuse them from anyone else.
pub(crate) const MAX_MS: i64 = (1 << 53) - 1;

/// The schema version this code writes and reads.
///
/// 2 added the columns `owner` and `handle` and their index (the owner
/// index: see `sessionkit_core::owner`); `migrate` adds them to a table of
/// version 1.
pub(crate) const SCHEMA_VERSION: i32 = 2;

/// Expired rows deleted per statement by the sweep.
pub(crate) const SWEEP_BATCH: i64 = 1000;

/// Milliseconds as a column value, capped at [`MAX_MS`].
pub(crate) fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX).min(MAX_MS)
}

/// A duration in milliseconds as a column value, capped at [`MAX_MS`].
pub(crate) fn duration_ms(d: Duration) -> i64 {
    ms(sessionkit_core::record::duration_ms(d))
}

/// The settings both builders share.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) table: String,
    pub(crate) hash_ids: bool,
    pub(crate) sweep_interval: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            table: "sessions".to_owned(),
            hash_ids: true,
            sweep_interval: Some(Duration::from_secs(300)),
        }
    }
}

impl Settings {
    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.sweep_interval.is_some_and(|d| d.is_zero()) {
            return Err(Error::invalid_config(
                "sweep_interval",
                "must be greater than zero (or None for no background sweep)",
            ));
        }
        Ok(())
    }
}

/// A validated table name, with the SQL that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Table {
    /// As the user gave it (for errors and the version table).
    pub(crate) name: String,
    /// Quoted, schema-qualified when given so: `"app"."sessions"`.
    pub(crate) quoted: String,
    /// The quoted name of the expiry index, in the table's schema.
    pub(crate) index: String,
    /// The quoted name of the owner index, in the table's schema.
    pub(crate) owner_index: String,
    /// The quoted name of the version table, in the table's schema.
    pub(crate) versions: String,
}

impl Table {
    /// Checks a table name: an identifier of letters, digits and `_` (not
    /// starting with a digit, at most 50 characters), optionally after a
    /// schema name of the same form and a `.` when `qualified` is allowed.
    /// Identifiers are quoted in every statement, so the name is used
    /// exactly as written (case included), and nothing in it can be SQL.
    pub(crate) fn parse(name: &str, qualified: bool) -> Result<Table, Error> {
        let accepted = if qualified {
            "a table name of letters, digits and `_`, not starting with a digit, at most 50 characters, optionally schema-qualified (`schema.table`)"
        } else {
            "a table name of letters, digits and `_`, not starting with a digit, at most 50 characters"
        };
        let parts: Vec<&str> = name.split('.').collect();
        let ident = |s: &str| {
            !s.is_empty()
                && s.len() <= 50
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !s.as_bytes()[0].is_ascii_digit()
        };
        let ok = match parts.as_slice() {
            [table] => ident(table),
            [schema, table] => qualified && ident(schema) && ident(table),
            _ => false,
        };
        if !ok {
            return Err(Error::invalid_config(
                "table",
                format!("got {name:?}; expected {accepted}"),
            ));
        }
        let (schema, table) = match parts.as_slice() {
            [schema, table] => (Some(*schema), *table),
            _ => (None, parts[0]),
        };
        let within = |object: &str| match schema {
            Some(schema) => format!("\"{schema}\".\"{object}\""),
            None => format!("\"{object}\""),
        };
        Ok(Table {
            name: name.to_owned(),
            quoted: within(table),
            // Postgres puts an index in its table's schema; the name
            // given must be unqualified.
            index: format!("\"{table}_expires\""),
            owner_index: format!("\"{table}_owner\""),
            versions: within("sessionkit_schema"),
        })
    }
}

/// The key a session is stored under: the SHA-256 of its id (32 bytes),
/// or, with hashing off, the id's 43-character text. The lengths differ,
/// so the two namings never name the same row.
pub(crate) fn key_of(id: &SessionId, hashed: bool) -> Vec<u8> {
    if hashed {
        id.hashed().to_vec()
    } else {
        id.expose().into_bytes()
    }
}

/// A session value in the JSON object of a row: its text as a JSON string
/// when it is UTF-8 without NUL (which PostgreSQL's `jsonb` cannot hold),
/// else `["<base64>"]`. Values are JSON already (the codec's), so a DBA
/// reads them; and a string keeps them byte for byte, where a `jsonb`
/// value would be normalised (key order, spaces, `1.0`).
fn value_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => Value::String(text.to_owned()),
        _ => Value::Array(vec![Value::String(STANDARD.encode(bytes))]),
    }
}

fn value_bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::String(text) => Some(text.as_bytes().to_vec()),
        Value::Array(items) => match items.as_slice() {
            [Value::String(b64)] => STANDARD.decode(b64).ok(),
            _ => None,
        },
        _ => None,
    }
}

/// Refuses keys PostgreSQL's `jsonb` cannot hold (NUL); SQLite would take
/// them, but the two stores keep one rule.
fn check_key(key: &str) -> Result<(), Error> {
    if key.contains('\0') {
        return Err(Error::codec(
            "a session key contains a NUL character, which SQL stores cannot keep",
            None,
        ));
    }
    Ok(())
}

/// The entries of a record as the JSON object text of its row.
pub(crate) fn entries_json(entries: &Entries) -> Result<String, Error> {
    let mut map = Map::new();
    for (key, value) in entries.iter() {
        check_key(key)?;
        map.insert(key.to_owned(), value_json(value));
    }
    Ok(Value::Object(map).to_string())
}

/// One of an owner's sessions as both stores list it, from its row's
/// `handle`, `[created, ttl, expires]` and `data`: `None` for a row whose
/// handle does not parse (it is not listed, and cannot be revoked by it).
pub(crate) fn owned_session(
    handle: Option<String>,
    [created, ttl, expires]: [i64; 3],
    data: String,
) -> Option<sessionkit_core::owner::OwnedSession> {
    let handle = sessionkit_core::owner::SessionHandle::parse(&handle?).ok()?;
    let device = decode_entries(&data)
        .ok()
        .and_then(|entries| sessionkit_core::owner::device_in(&entries));
    let ms = |v: i64| u64::try_from(v).unwrap_or(0);
    Some(sessionkit_core::owner::OwnedSession::new(
        handle,
        ms(created),
        ms(expires.saturating_sub(ttl)),
        ms(expires),
        device,
    ))
}

/// The entries of a row's JSON object text; `Err` says why it is corrupt.
pub(crate) fn decode_entries(text: &str) -> Result<Entries, &'static str> {
    let value: Value = serde_json::from_str(text).map_err(|_| "data is not JSON")?;
    let Value::Object(map) = value else {
        return Err("data is not a JSON object");
    };
    let mut entries = Entries::default();
    for (key, value) in &map {
        let bytes = value_bytes(value).ok_or("a value is neither a string nor [base64]")?;
        entries.insert(key, bytes);
    }
    Ok(entries)
}

/// A delta as PostgreSQL applies it: the keys to remove and the object to
/// merge (`(data - removed) || set`).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn delta_removed_and_set(delta: &Delta) -> Result<(Vec<String>, String), Error> {
    let mut removed = Vec::new();
    let mut set = Map::new();
    for (key, change) in delta.changes() {
        check_key(key)?;
        match change {
            Some(value) => {
                set.insert(key.to_owned(), value_json(value));
            }
            None => removed.push(key.to_owned()),
        }
    }
    Ok((removed, Value::Object(set).to_string()))
}

/// A delta as SQLite applies it: an RFC 7396 merge patch for `json_patch`,
/// where `null` removes a key. Values are strings or arrays, never
/// objects, so the patch never recurses into a value.
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) fn delta_patch(delta: &Delta) -> Result<String, Error> {
    let mut patch = Map::new();
    for (key, change) in delta.changes() {
        check_key(key)?;
        patch.insert(key.to_owned(), change.map_or(Value::Null, value_json));
    }
    Ok(Value::Object(patch).to_string())
}

/// The columns of the metadata, as read from a row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MetaColumns {
    pub(crate) created: i64,
    pub(crate) ttl: i64,
    pub(crate) remembered: bool,
    pub(crate) deadline: Option<i64>,
    pub(crate) expires: i64,
}

impl MetaColumns {
    /// The columns of `meta`, capped at [`MAX_MS`].
    pub(crate) fn of(meta: &Meta) -> MetaColumns {
        MetaColumns {
            created: ms(meta.created()),
            ttl: ms(meta.ttl_ms()),
            remembered: meta.remembered(),
            deadline: meta.deadline().map(ms),
            expires: ms(meta.expires()),
        }
    }

    /// The metadata; `Err` says why the row is corrupt.
    pub(crate) fn meta(self) -> Result<Meta, &'static str> {
        let range = 0..=MAX_MS;
        if !range.contains(&self.created)
            || !range.contains(&self.ttl)
            || !range.contains(&self.expires)
            || self.deadline.is_some_and(|d| !(1..=MAX_MS).contains(&d))
        {
            return Err("a time column is out of range");
        }
        Ok(Meta::from_parts(
            self.created as u64,
            self.ttl as u64,
            self.deadline.map(|d| d as u64),
            self.expires as u64,
        )
        .with_remembered(self.remembered))
    }
}

/// A record from a row's columns; `Err` says why the row is corrupt.
pub(crate) fn record_of(data: &str, meta: MetaColumns) -> Result<Record, &'static str> {
    Ok(Record {
        entries: decode_entries(data)?,
        meta: meta.meta()?,
    })
}

/// Logs a row that cannot be read; the caller treats it as absent.
pub(crate) fn corrupt(store: &'static str, id: &SessionId, reason: &str) {
    tracing::warn!(
        store,
        session = %id.short_hash(),
        reason,
        "a stored session is corrupt; it is treated as absent"
    );
}

/// A database failure as the store error.
pub(crate) fn failed(store: &'static str, operation: &'static str, err: sqlx::Error) -> Error {
    Error::store_unavailable(store, operation, err)
}

/// The error of a table whose schema is newer than this code.
pub(crate) fn newer_schema(store: &'static str, table: &str, found: i32) -> Error {
    Error::new(sessionkit_core::ErrorKind::StoreUnavailable)
        .with_store(store)
        .with_operation("migrate")
        .with_detail(format!(
            "table {table} has schema version {found}, newer than version {SCHEMA_VERSION} that this sessionkit-sql knows; upgrade sessionkit-sql (or use another table)"
        ))
}

/// Runs `sweep` every `every` while the store it was spawned for lives.
pub(crate) async fn sweep_task<T, F, Fut>(store: Weak<T>, every: Duration, sweep: F)
where
    F: Fn(std::sync::Arc<T>) -> Fut,
    Fut: std::future::Future<Output = Result<u64, Error>>,
{
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(store) = store.upgrade() else {
            return;
        };
        match sweep(store).await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "swept expired sessions"),
            Err(err) => tracing::warn!(error = %err, "the sweep of expired sessions failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked_and_quoted() {
        let t = Table::parse("sessions", false).unwrap();
        assert_eq!(t.quoted, "\"sessions\"");
        assert_eq!(t.index, "\"sessions_expires\"");
        let t = Table::parse("app.Sessions_2", true).unwrap();
        assert_eq!(t.quoted, "\"app\".\"Sessions_2\"");
        assert_eq!(t.versions, "\"app\".\"sessionkit_schema\"");
        for bad in ["", "1abc", "a-b", "a.b", "x\"; drop table y", "a b", "a..b"] {
            let err = Table::parse(bad, false).unwrap_err();
            assert_eq!(err.setting(), Some("table"), "{bad:?}");
        }
        assert!(Table::parse("a.b.c", true).is_err());
        assert!(Table::parse(&"x".repeat(51), true).is_err());
    }

    #[test]
    fn values_round_trip_byte_for_byte() {
        let every: Vec<u8> = (0..=255u8).collect();
        let entries: Entries = [
            ("json", b"{\"a\": 1.0}".to_vec()),
            ("nul", b"a\0b".to_vec()),
            ("binary", every),
            ("empty", Vec::new()),
            ("ключ 🔑", "grüße".as_bytes().to_vec()),
        ]
        .into_iter()
        .collect();
        let text = entries_json(&entries).unwrap();
        assert_eq!(decode_entries(&text).unwrap(), entries);
    }

    #[test]
    fn corrupt_data_is_reported() {
        assert!(decode_entries("not json").is_err());
        assert!(decode_entries("[1]").is_err());
        assert!(decode_entries("{\"k\": 1}").is_err());
        assert!(decode_entries("{\"k\": [\"%%%\"]}").is_err());
        assert!(decode_entries("{\"k\": [\"YQ==\", \"x\"]}").is_err());
        let bad = MetaColumns {
            created: -1,
            ttl: 0,
            remembered: false,
            deadline: None,
            expires: 0,
        };
        assert!(bad.meta().is_err());
    }

    #[test]
    fn deltas_become_removals_and_patches() {
        let mut delta = Delta::default();
        delta.set("a", b"1".to_vec());
        delta.remove("b");
        let (removed, set) = delta_removed_and_set(&delta).unwrap();
        assert_eq!(removed, ["b"]);
        assert_eq!(set, r#"{"a":"1"}"#);
        assert_eq!(delta_patch(&delta).unwrap(), r#"{"a":"1","b":null}"#);
        let mut nul = Delta::default();
        nul.set("a\0", Vec::new());
        assert!(delta_patch(&nul).is_err());
    }
}
