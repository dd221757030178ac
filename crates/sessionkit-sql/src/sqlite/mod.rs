//! `SqliteStore`: sessions in a SQLite table, in WAL mode, shared safely by several processes.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sessionkit_core::record::{Delta, Meta, Record, Touch, now_ms};
use sessionkit_core::store::{
    Applied, AppliedAndRead, Countable, Created, ExpiredDeletion, Fence, IdChanged, Loaded, Locked,
    SessionStore,
};
use sessionkit_core::{Error, LockToken, Result, SessionId};
use sqlx::Row as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use crate::common::{
    self, MetaColumns, SCHEMA_VERSION, SWEEP_BATCH, Settings, Table, corrupt, failed,
};

mod owners;

const STORE: &str = "sqlite";

/// The columns a record is read from, in this order.
const RECORD: &str = "data, created, ttl, remembered, deadline, expires";

/// How much a commit waits for the disk; see [`SqliteStoreBuilder::synchronous`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous = NORMAL` (the default): in WAL mode a commit is written
    /// to the WAL but not flushed to the disk. An acknowledged write
    /// survives a crash of the application (the operating system still has
    /// it); a power loss or an OS crash can roll back the last commits, and
    /// never corrupts the database.
    #[default]
    Normal,
    /// `synchronous = FULL`: every commit is flushed to the disk (an
    /// `fsync` of the WAL) before it is acknowledged, so it survives a power
    /// loss too. Costs one `fsync` per write.
    Full,
}

/// A session store in a SQLite table. See the [crate docs](crate) for the
/// schema, the statements and the settings.
///
/// Cloning is cheap: clones share the pool and the statements.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    hash_ids: bool,
    table: Table,
    sql: Statements,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("table", &self.inner.table.name)
            .field("hash_ids", &self.inner.hash_ids)
            .finish_non_exhaustive()
    }
}

/// Builds a [`SqliteStore`]; see [`SqliteStore::builder`].
#[derive(Debug, Clone, Default)]
pub struct SqliteStoreBuilder {
    settings: Settings,
    durability: Durability,
    busy_timeout: Option<Duration>,
    max_connections: Option<u32>,
}

impl SqliteStoreBuilder {
    /// The table, `sessions` by default. Letters, digits and `_` only, used
    /// exactly as written (the statements quote it).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.settings.table = table.into();
        self
    }

    /// Whether the key column holds the SHA-256 of the id (default `true`)
    /// instead of the id itself.
    ///
    /// # Security
    ///
    /// With hashing, a copy of the database file yields no usable session
    /// id ([OWASP Session Management Cheat Sheet](https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html)).
    pub fn hash_ids(mut self, hash: bool) -> Self {
        self.settings.hash_ids = hash;
        self
    }

    /// How often a background task deletes expired rows (default 5
    /// minutes; `None` for never). Expired rows are never returned either
    /// way; the sweep only frees their space.
    pub fn sweep_interval(mut self, every: Option<Duration>) -> Self {
        self.settings.sweep_interval = every;
        self
    }

    /// What an acknowledged write survives, when [`connect`](Self::connect)
    /// opens the database (default [`Durability::Normal`]).
    pub fn synchronous(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// How long a statement waits for another connection or process that
    /// holds the write lock, when [`connect`](Self::connect) opens the
    /// database (default 5 s); then it fails with
    /// [`ErrorKind::StoreUnavailable`](sessionkit_core::ErrorKind::StoreUnavailable).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = Some(timeout);
        self
    }

    /// The pool size when [`connect`](Self::connect) makes the pool
    /// (default 8; always 1 for an in-memory database, which exists once
    /// per connection).
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// A store on the application's pool, whose connection settings apply
    /// (sqlx's defaults: rollback journal unless the file is in WAL mode
    /// already, `synchronous = FULL`, busy timeout 5 s).
    /// [`SqliteStore::migrate`] switches the file to WAL mode, which
    /// persists.
    pub fn build(self, pool: SqlitePool) -> Result<SqliteStore> {
        self.settings.check()?;
        let table = Table::parse(&self.settings.table, false)?;
        let inner = Arc::new(Inner {
            pool,
            hash_ids: self.settings.hash_ids,
            sql: Statements::new(&table),
            table,
        });
        if let (Some(every), Ok(rt)) = (
            self.settings.sweep_interval,
            tokio::runtime::Handle::try_current(),
        ) {
            rt.spawn(common::sweep_task(
                Arc::downgrade(&inner),
                every,
                |inner: Arc<Inner>| async move { inner.delete_expired().await },
            ));
        }
        Ok(SqliteStore { inner })
    }

    /// Opens (creating it if missing) the database at `url`
    /// (`sqlite://path/to/file.db`, `sqlite::memory:`) in WAL mode with the
    /// builder's durability and busy timeout, and a store on it.
    pub fn connect(self, url: &str) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| {
                Error::invalid_config(
                    "url",
                    "not a valid SQLite URL (sqlite://path or sqlite::memory:)",
                )
                .with_source(e)
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match self.durability {
                Durability::Normal => SqliteSynchronous::Normal,
                Durability::Full => SqliteSynchronous::Full,
            })
            .busy_timeout(self.busy_timeout.unwrap_or(Duration::from_secs(5)));
        let file = options.get_filename().to_string_lossy();
        let memory = file.is_empty()
            || file.contains(":memory:")
            || file.contains("sqlx-in-memory")
            || url.contains("mode=memory");
        let mut pool = SqlitePoolOptions::new()
            .max_connections(if memory {
                1
            } else {
                self.max_connections.unwrap_or(8)
            })
            .test_before_acquire(false);
        if memory {
            // The database lives as long as its one connection.
            pool = pool
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        self.build(pool.connect_lazy_with(options))
    }
}

impl SqliteStore {
    /// A builder, for the table name, id hashing, the sweep and the
    /// connection settings.
    pub fn builder() -> SqliteStoreBuilder {
        SqliteStoreBuilder::default()
    }

    /// A store with the default settings on the application's pool.
    pub fn new(pool: SqlitePool) -> Result<SqliteStore> {
        SqliteStore::builder().build(pool)
    }

    /// A store with the default settings on a new pool for `url`.
    pub fn connect(url: &str) -> Result<SqliteStore> {
        SqliteStore::builder().connect(url)
    }

    /// The pool the store runs on.
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// Switches the file to WAL mode, creates the table, its index and the
    /// version table if missing, and records the schema version; safe to
    /// run at every start and from several processes at once (they take
    /// turns on the write lock). A table whose recorded version is newer
    /// than this code knows is an error; nothing is changed then.
    ///
    /// Processes that start together on a database file that does not
    /// exist yet can find it locked while the first one creates it and
    /// switches it to WAL: SQLite then answers "database is locked" at once,
    /// without waiting out the busy timeout (it would otherwise risk a
    /// deadlock). `migrate` tries again, with a growing pause, for up to
    /// [`MIGRATE_RETRY_FOR`](Self::MIGRATE_RETRY_FOR); any other error is
    /// returned at once.
    pub async fn migrate(&self) -> Result<()> {
        let give_up = std::time::Instant::now() + Self::MIGRATE_RETRY_FOR;
        let mut pause = Duration::from_millis(5);
        loop {
            match self.inner.migrate().await {
                Err(err) if is_locked(&err) && std::time::Instant::now() < give_up => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                done => return done,
            }
        }
    }

    /// How long [`migrate`](Self::migrate) keeps trying while the database
    /// is locked.
    pub const MIGRATE_RETRY_FOR: Duration = Duration::from_secs(10);

    /// The statements [`migrate`](Self::migrate) runs, for a DBA who
    /// creates the schema by hand.
    pub fn schema_sql(&self) -> String {
        schema_sql(&self.inner.table)
    }

    fn key(&self, id: &SessionId) -> Vec<u8> {
        common::key_of(id, self.inner.hash_ids)
    }
}

/// Whether a store error comes from SQLite's "database is locked" or "table
/// is locked" (`SQLITE_BUSY`, `SQLITE_LOCKED` and their extended codes).
fn is_locked(err: &Error) -> bool {
    let Some(sqlx::Error::Database(db)) =
        std::error::Error::source(err).and_then(|s| s.downcast_ref::<sqlx::Error>())
    else {
        return false;
    };
    db.code()
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

fn schema_sql(table: &Table) -> String {
    let t = &table.quoted;
    let max = common::MAX_MS;
    // STRICT: SQLite checks the column types like any other database, so
    // a row of the wrong types cannot be written (SQLite 3.37+).
    format!(
        "CREATE TABLE IF NOT EXISTS {versions} (
    table_name TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS {t} (
    id BLOB PRIMARY KEY,
    data TEXT NOT NULL,
    created INTEGER NOT NULL CHECK (created BETWEEN 0 AND {max}),
    ttl INTEGER NOT NULL CHECK (ttl BETWEEN 0 AND {max}),
    remembered INTEGER NOT NULL CHECK (remembered IN (0, 1)),
    deadline INTEGER CHECK (deadline BETWEEN 1 AND {max}),
    expires INTEGER NOT NULL CHECK (expires BETWEEN 0 AND {max}),
    lock_token BLOB,
    lock_expires INTEGER,
    owner TEXT,
    handle TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS {index} ON {t} (expires);
CREATE INDEX IF NOT EXISTS {owner_index} ON {t} (owner) WHERE owner IS NOT NULL;
",
        versions = table.versions,
        index = table.index,
        owner_index = table.owner_index,
    )
}

/// Every statement of the store, written once for its table. `?2` is the
/// clock in Unix milliseconds wherever it appears: processes sharing a
/// SQLite file share one machine, hence one clock.
struct Statements {
    load: String,
    touch: String,
    create: String,
    apply: String,
    live: String,
    take_old: String,
    put_new: String,
    destroy: String,
    lock: String,
    renew: String,
    unlock: String,
    sweep: String,
    count: String,
}

impl Statements {
    fn new(table: &Table) -> Statements {
        let t = &table.quoted;
        // Meta::cap_deadline on the stored deadline: only ever earlier
        // (SQLite's min() is NULL when an argument is).
        let deadline = "CASE WHEN ?10 IS NULL THEN deadline \
             WHEN deadline IS NULL OR ?10 < deadline THEN ?10 ELSE deadline END";
        let refreshed = "min(?2 + ttl, coalesce(deadline, ?2 + ttl))";
        Statements {
            load: format!("SELECT {RECORD} FROM {t} WHERE id = ?1 AND expires > ?2"),
            // Compare-and-set on the expiry read by the load: a touch that
            // lost a race with a write leaves the write's expiry alone.
            touch: format!(
                "UPDATE {t} SET expires = ?3 WHERE id = ?1 AND expires = ?4 AND expires > ?2"
            ),
            create: format!(
                "INSERT INTO {t} (id, data, created, ttl, remembered, deadline, expires)
                 VALUES (?1, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (id) DO UPDATE SET data = excluded.data, created = excluded.created,
                    ttl = excluded.ttl, remembered = excluded.remembered,
                    deadline = excluded.deadline, expires = excluded.expires,
                    lock_token = NULL, lock_expires = NULL, owner = NULL, handle = NULL
                 WHERE {t}.expires <= ?2
                 RETURNING 1"
            ),
            // ?3 clear, ?4 merge patch, ?5 new ttl, ?6 fence token, ?7
            // release, ?8 read back, ?9 remembered (NULL: keep), ?10
            // deadline cap (NULL: none). The fence is in the WHERE.
            apply: format!(
                "UPDATE {t} SET
                    data = json_patch(CASE WHEN ?3 THEN '{{}}' ELSE data END, ?4),
                    ttl = coalesce(?5, ttl),
                    remembered = coalesce(?9, remembered),
                    deadline = {deadline},
                    expires = min(?2 + coalesce(?5, ttl), coalesce({deadline}, ?2 + coalesce(?5, ttl))),
                    lock_token = CASE WHEN ?7 THEN NULL ELSE lock_token END,
                    lock_expires = CASE WHEN ?7 THEN NULL ELSE lock_expires END,
                    owner = CASE WHEN ?3 THEN NULL ELSE owner END,
                    handle = CASE WHEN ?3 THEN NULL ELSE handle END
                 WHERE id = ?1 AND expires > ?2 AND json_valid(data)
                   AND (?6 IS NULL OR (lock_token = ?6 AND lock_expires > ?2))
                 RETURNING CASE WHEN ?8 THEN data END AS data, created, ttl, remembered, deadline, expires"
            ),
            live: format!("SELECT 1 FROM {t} WHERE id = ?1 AND expires > ?2"),
            take_old: format!(
                "DELETE FROM {t} WHERE id = ?1 AND expires > ?2
                 RETURNING data, created, ttl, remembered, deadline, expires, lock_token, lock_expires,
                    owner, handle"
            ),
            put_new: format!(
                "INSERT INTO {t} (id, data, created, ttl, remembered, deadline, expires, lock_token, lock_expires,
                                  owner, handle)
                 VALUES (?1, ?3, ?4, ?5, ?6, ?7, min(?2 + ?5, coalesce(?7, ?2 + ?5)), ?8, ?9, ?10, ?11)
                 ON CONFLICT (id) DO UPDATE SET data = excluded.data, created = excluded.created,
                    ttl = excluded.ttl, remembered = excluded.remembered,
                    deadline = excluded.deadline, expires = excluded.expires,
                    lock_token = excluded.lock_token, lock_expires = excluded.lock_expires,
                    owner = excluded.owner, handle = excluded.handle
                 WHERE {t}.expires <= ?2
                 RETURNING created, ttl, remembered, deadline, expires"
            ),
            destroy: format!("DELETE FROM {t} WHERE id = ?1"),
            lock: format!(
                "UPDATE {t} SET lock_token = ?3, lock_expires = ?2 + ?4, expires = {refreshed}
                 WHERE id = ?1 AND expires > ?2 AND (lock_token IS NULL OR lock_expires <= ?2)
                 RETURNING {RECORD}"
            ),
            renew: format!(
                "UPDATE {t} SET lock_expires = ?2 + ?4, expires = {refreshed}
                 WHERE id = ?1 AND expires > ?2 AND lock_token = ?3 AND lock_expires > ?2"
            ),
            unlock: format!(
                "UPDATE {t} SET lock_token = NULL, lock_expires = NULL WHERE id = ?1 AND lock_token = ?2"
            ),
            sweep: format!(
                "DELETE FROM {t} WHERE rowid IN (
                    SELECT rowid FROM {t} WHERE expires <= ?1 ORDER BY expires LIMIT ?2)"
            ),
            count: format!("SELECT count(*) FROM {t} WHERE expires > ?1"),
        }
    }
}

fn now() -> i64 {
    common::ms(now_ms())
}

fn meta_columns(row: &SqliteRow) -> std::result::Result<MetaColumns, sqlx::Error> {
    Ok(MetaColumns {
        created: row.try_get("created")?,
        ttl: row.try_get("ttl")?,
        remembered: row.try_get("remembered")?,
        deadline: row.try_get("deadline")?,
        expires: row.try_get("expires")?,
    })
}

fn meta_of_row(id: &SessionId, row: &SqliteRow) -> Option<Meta> {
    match meta_columns(row)
        .map_err(|e| e.to_string())
        .and_then(|m| m.meta().map_err(str::to_owned))
    {
        Ok(meta) => Some(meta),
        Err(reason) => {
            corrupt(STORE, id, &reason);
            None
        }
    }
}

fn record_of_row(id: &SessionId, row: &SqliteRow) -> Option<Record> {
    let read = || -> std::result::Result<Record, String> {
        let data: String = row.try_get("data").map_err(|e| e.to_string())?;
        let meta = meta_columns(row).map_err(|e| e.to_string())?;
        common::record_of(&data, meta).map_err(str::to_owned)
    };
    match read() {
        Ok(record) => Some(record),
        Err(reason) => {
            corrupt(STORE, id, &reason);
            None
        }
    }
}

impl Inner {
    async fn migrate(&self) -> Result<()> {
        let fail = |e| failed(STORE, "migrate", e);
        // WAL persists in the file: every later connection, of any
        // process, uses it. Outside the transaction (SQLite refuses to
        // change the journal mode inside one).
        // (An in-memory database answers `memory` and stays so.)
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&self.pool)
            .await
            .map_err(fail)?;
        // The usual case first, without DDL or the write lock: the table is
        // there at this version.
        let current: std::result::Result<Option<i64>, _> = sqlx::query_scalar(&format!(
            "SELECT version FROM {} WHERE table_name = ?1",
            self.table.versions
        ))
        .bind(&self.table.name)
        .fetch_optional(&self.pool)
        .await;
        match current {
            Ok(Some(v)) if v == i64::from(SCHEMA_VERSION) => return Ok(()),
            Ok(Some(v)) if v > i64::from(SCHEMA_VERSION) => {
                return Err(common::newer_schema(
                    STORE,
                    &self.table.name,
                    i32::try_from(v).unwrap_or(i32::MAX),
                ));
            }
            // Missing, older or unreadable: the DDL path, which looks again
            // under the write lock.
            _ => {}
        }
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(fail)?;
        sqlx::raw_sql(&format!(
            "CREATE TABLE IF NOT EXISTS {} (table_name TEXT PRIMARY KEY, version INTEGER NOT NULL) STRICT",
            self.table.versions
        ))
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
        let found: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT version FROM {} WHERE table_name = ?1",
            self.table.versions
        ))
        .bind(&self.table.name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(fail)?;
        match found {
            Some(v) if v > i64::from(SCHEMA_VERSION) => {
                return Err(common::newer_schema(
                    STORE,
                    &self.table.name,
                    i32::try_from(v).unwrap_or(i32::MAX),
                ));
            }
            Some(v) if v == i64::from(SCHEMA_VERSION) => return tx.commit().await.map_err(fail),
            Some(1) => {
                // Version 2 added the owner columns (their index comes
                // with the schema below).
                sqlx::raw_sql(&format!(
                    "ALTER TABLE {t} ADD COLUMN owner TEXT; ALTER TABLE {t} ADD COLUMN handle TEXT;",
                    t = self.table.quoted
                ))
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            }
            _ => {}
        }
        sqlx::raw_sql(&schema_sql(&self.table))
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        sqlx::query(&format!(
            "INSERT INTO {} (table_name, version) VALUES (?1, ?2)
             ON CONFLICT (table_name) DO UPDATE SET version = excluded.version",
            self.table.versions
        ))
        .bind(&self.table.name)
        .bind(SCHEMA_VERSION)
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)
    }

    async fn delete_expired(&self) -> Result<u64> {
        let mut deleted = 0;
        loop {
            let batch = sqlx::query(&self.sql.sweep)
                .bind(now())
                .bind(SWEEP_BATCH)
                .execute(&self.pool)
                .await
                .map_err(|e| failed(STORE, "delete_expired", e))?
                .rows_affected();
            deleted += batch;
            if batch < SWEEP_BATCH as u64 {
                return Ok(deleted);
            }
        }
    }

    async fn is_live(&self, key: &[u8], now: i64, operation: &'static str) -> Result<bool> {
        let row = sqlx::query(&self.sql.live)
            .bind(key)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| failed(STORE, operation, e))?;
        Ok(row.is_some())
    }
}

/// What a write that wrote nothing means: with a fence on a live session,
/// the lock was lost; otherwise the session is gone (or corrupt).
enum Refused {
    Gone,
    LockLost,
}

impl SqliteStore {
    /// Runs the apply statement; `Err(refused)` when it wrote nothing.
    async fn apply_row(
        &self,
        id: &SessionId,
        delta: &Delta,
        token: Option<&LockToken>,
        release: bool,
        read: bool,
        operation: &'static str,
    ) -> Result<std::result::Result<SqliteRow, Refused>> {
        let patch = common::delta_patch(delta)?;
        let key = self.key(id);
        let now = now();
        let row = sqlx::query(&self.inner.sql.apply)
            .bind(&key)
            .bind(now)
            .bind(delta.clears())
            .bind(patch)
            .bind(delta.ttl_ms().map(common::ms))
            .bind(token.map(|t| t.as_bytes().to_vec()))
            .bind(release)
            .bind(read)
            .bind(delta.remembered())
            .bind(delta.deadline_cap().map(common::ms))
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| failed(STORE, operation, e))?;
        match row {
            Some(row) => Ok(Ok(row)),
            // Only a refused write reads again, to tell why.
            None if token.is_some() && self.inner.is_live(&key, now, operation).await? => {
                Ok(Err(Refused::LockLost))
            }
            None => Ok(Err(Refused::Gone)),
        }
    }
}

impl SessionStore for SqliteStore {
    fn name(&self) -> &'static str {
        STORE
    }

    fn owner_index(self: Arc<Self>) -> Option<Arc<dyn sessionkit_core::owner::DynOwnerIndex>> {
        Some(self)
    }

    async fn load(&self, id: &SessionId, touch: Option<Touch>) -> Result<Option<Loaded>> {
        let key = self.key(id);
        let now_ms = now_ms();
        let row = sqlx::query(&self.inner.sql.load)
            .bind(&key)
            .bind(common::ms(now_ms))
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| failed(STORE, "load", e))?;
        let Some(mut record) = row.and_then(|row| record_of_row(id, &row)) else {
            return Ok(None);
        };
        // A plain SELECT first: in SQLite even an UPDATE that matches no row
        // takes the database's write lock, so reads that are not due (most)
        // never write. A due touch is a second, conditional statement.
        let before = record.meta.expires();
        let touched = match touch {
            Some(touch) if record.meta.touch_if_due(now_ms, touch) => {
                let done = sqlx::query(&self.inner.sql.touch)
                    .bind(&key)
                    .bind(common::ms(now_ms))
                    .bind(common::ms(record.meta.expires()))
                    .bind(common::ms(before))
                    .execute(&self.inner.pool)
                    .await
                    .map_err(|e| failed(STORE, "load", e))?;
                if done.rows_affected() == 0 {
                    // A write moved the expiry meanwhile (or destroyed the
                    // session): report the record as read.
                    record.meta = Meta::from_parts(
                        record.meta.created(),
                        record.meta.ttl_ms(),
                        record.meta.deadline(),
                        before,
                    )
                    .with_remembered(record.meta.remembered());
                    false
                } else {
                    true
                }
            }
            _ => false,
        };
        Ok(Some(Loaded { record, touched }))
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<Created> {
        let data = common::entries_json(&record.entries)?;
        let m = MetaColumns::of(&record.meta);
        let row = sqlx::query(&self.inner.sql.create)
            .bind(self.key(id))
            .bind(now())
            .bind(data)
            .bind(m.created)
            .bind(m.ttl)
            .bind(m.remembered)
            .bind(m.deadline)
            .bind(m.expires)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| failed(STORE, "create", e))?;
        Ok(if row.is_some() {
            Created::Created
        } else {
            Created::IdTaken
        })
    }

    async fn apply(
        &self,
        id: &SessionId,
        delta: &Delta,
        fence: Option<Fence<'_>>,
    ) -> Result<Applied> {
        let (token, release) = fence.map_or((None, false), |f| (Some(f.token), f.release));
        Ok(
            match self
                .apply_row(id, delta, token, release, false, "apply")
                .await?
            {
                Ok(row) => meta_of_row(id, &row).map_or(Applied::Gone, Applied::Applied),
                Err(Refused::LockLost) => Applied::LockLost,
                Err(Refused::Gone) => Applied::Gone,
            },
        )
    }

    async fn apply_and_read(
        &self,
        id: &SessionId,
        delta: &Delta,
        token: &LockToken,
    ) -> Result<AppliedAndRead> {
        Ok(
            match self
                .apply_row(id, delta, Some(token), false, true, "apply_and_read")
                .await?
            {
                Ok(row) => match record_of_row(id, &row) {
                    Some(record) => AppliedAndRead::Applied(record),
                    None => meta_of_row(id, &row)
                        .map_or(AppliedAndRead::Gone, AppliedAndRead::AppliedUnread),
                },
                Err(Refused::LockLost) => AppliedAndRead::LockLost,
                Err(Refused::Gone) => AppliedAndRead::Gone,
            },
        )
    }

    async fn change_id(
        &self,
        old: &SessionId,
        new: &SessionId,
        fence: Option<&LockToken>,
    ) -> Result<IdChanged> {
        let fail = |e| failed(STORE, "change_id", e);
        let now = now();
        // BEGIN IMMEDIATE takes the write lock first, so the steps below
        // see no other writer, and never fail to upgrade a read lock.
        let mut tx = self
            .inner
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(fail)?;
        let Some(row) = sqlx::query(&self.inner.sql.take_old)
            .bind(self.key(old))
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(fail)?
        else {
            return Ok(IdChanged::Gone);
        };
        let lock_token: Option<Vec<u8>> = row.try_get("lock_token").map_err(fail)?;
        let lock_expires: Option<i64> = row.try_get("lock_expires").map_err(fail)?;
        if let Some(token) = fence {
            let owned = lock_token.as_deref() == Some(&token.as_bytes()[..])
                && lock_expires.is_some_and(|e| e > now);
            if !owned {
                return Ok(IdChanged::LockLost);
            }
        }
        let data: String = row.try_get("data").map_err(fail)?;
        let owner: Option<String> = row.try_get("owner").map_err(fail)?;
        let handle: Option<String> = row.try_get("handle").map_err(fail)?;
        let m = match meta_columns(&row).map_err(fail)?.meta() {
            Ok(meta) => MetaColumns::of(&meta),
            Err(reason) => {
                corrupt(STORE, old, reason);
                return Ok(IdChanged::Gone);
            }
        };
        let moved = sqlx::query(&self.inner.sql.put_new)
            .bind(self.key(new))
            .bind(now)
            .bind(data)
            .bind(m.created)
            .bind(m.ttl)
            .bind(m.remembered)
            .bind(m.deadline)
            .bind(fence.and(lock_token))
            .bind(fence.and(lock_expires))
            .bind(owner)
            .bind(handle)
            .fetch_optional(&mut *tx)
            .await
            .map_err(fail)?;
        let Some(moved) = moved else {
            return Ok(IdChanged::IdTaken);
        };
        let meta = meta_of_row(new, &moved);
        tx.commit().await.map_err(fail)?;
        Ok(meta.map_or(IdChanged::Gone, IdChanged::Changed))
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        sqlx::query(&self.inner.sql.destroy)
            .bind(self.key(id))
            .execute(&self.inner.pool)
            .await
            .map_err(|e| failed(STORE, "destroy", e))?;
        Ok(())
    }

    async fn lock(&self, id: &SessionId, ttl: Duration) -> Result<Locked> {
        let token = LockToken::generate();
        let key = self.key(id);
        let now = now();
        let row = sqlx::query(&self.inner.sql.lock)
            .bind(&key)
            .bind(now)
            .bind(token.as_bytes().to_vec())
            .bind(common::duration_ms(ttl))
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| failed(STORE, "lock", e))?;
        Ok(match row {
            Some(row) => match record_of_row(id, &row) {
                Some(record) => Locked::Acquired { token, record },
                None => {
                    let _ = SessionStore::unlock(self, id, &token).await;
                    Locked::Absent
                }
            },
            None if self.inner.is_live(&key, now, "lock").await? => Locked::Held,
            None => Locked::Absent,
        })
    }

    async fn renew_lock(&self, id: &SessionId, token: &LockToken, ttl: Duration) -> Result<bool> {
        let done = sqlx::query(&self.inner.sql.renew)
            .bind(self.key(id))
            .bind(now())
            .bind(token.as_bytes().to_vec())
            .bind(common::duration_ms(ttl))
            .execute(&self.inner.pool)
            .await
            .map_err(|e| failed(STORE, "renew_lock", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn unlock(&self, id: &SessionId, token: &LockToken) -> Result<()> {
        sqlx::query(&self.inner.sql.unlock)
            .bind(self.key(id))
            .bind(token.as_bytes().to_vec())
            .execute(&self.inner.pool)
            .await
            .map_err(|e| failed(STORE, "unlock", e))?;
        Ok(())
    }
}

impl ExpiredDeletion for SqliteStore {
    async fn delete_expired(&self) -> Result<u64> {
        self.inner.delete_expired().await
    }
}

impl Countable for SqliteStore {
    async fn count(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(&self.inner.sql.count)
            .bind(now())
            .fetch_one(&self.inner.pool)
            .await
            .map_err(|e| failed(STORE, "count", e))?;
        Ok(n.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crate docs show a DBA the exact schema `migrate` creates.
    #[test]
    fn the_docs_show_the_schema() {
        let docs: Vec<&str> = include_str!("../lib.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! ").or((l == "//!").then_some("")))
            .collect();
        let docs = docs.join("\n");
        let sql = schema_sql(&Table::parse("sessions", false).unwrap());
        assert!(
            docs.contains(sql.trim_end()),
            "the crate docs must show:\n{sql}"
        );
    }
}
