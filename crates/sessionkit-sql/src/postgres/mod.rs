//! `PgStore`: sessions in a PostgreSQL table, every operation one statement.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sessionkit_core::record::{Delta, Record, Touch};
use sessionkit_core::store::{
    Applied, AppliedAndRead, Countable, Created, ExpiredDeletion, Fence, IdChanged, Loaded, Locked,
    SessionStore,
};
use sessionkit_core::{Error, LockToken, Result, SessionId};
use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};

use crate::common::{
    self, MetaColumns, SCHEMA_VERSION, SWEEP_BATCH, Settings, Table, corrupt, failed,
};
use crate::wake::Wakeups;

mod owners;

const STORE: &str = "postgres";

/// The database clock in Unix milliseconds, read once per statement
/// (`now()` is the start of the statement's transaction): every app server
/// sharing the database agrees on expiry, whatever its own clock says.
const NOW: &str = "floor(extract(epoch FROM now()) * 1000)::bigint";

/// The columns a record is read from, in this order.
const RECORD: &str = "s.data::text AS data, s.created, s.ttl, s.remembered, s.deadline, s.expires";

/// A session store in a PostgreSQL table. See the [crate docs](crate) for
/// the schema and the statements.
///
/// Cloning is cheap: clones share the pool and the statements.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    hash_ids: bool,
    table: Table,
    sql: Statements,
    wake: Wakeups,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("table", &self.inner.table.name)
            .field("hash_ids", &self.inner.hash_ids)
            .finish_non_exhaustive()
    }
}

/// Builds a [`PgStore`]; see [`PgStore::builder`].
#[derive(Debug, Clone, Default)]
pub struct PgStoreBuilder {
    settings: Settings,
    max_connections: Option<u32>,
    acquire_timeout: Option<Duration>,
}

impl PgStoreBuilder {
    /// The table, `sessions` by default; may be schema-qualified
    /// (`app.sessions`). Letters, digits and `_` only, used exactly as
    /// written (the statements quote it).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.settings.table = table.into();
        self
    }

    /// Whether the key column holds the SHA-256 of the id (default `true`)
    /// instead of the id itself.
    ///
    /// # Security
    ///
    /// With hashing, a leaked dump or a read-only SQL injection elsewhere
    /// in the application yields no usable session id
    /// ([OWASP Session Management Cheat Sheet](https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html)).
    /// Turn it off only to look sessions up by id by hand.
    pub fn hash_ids(mut self, hash: bool) -> Self {
        self.settings.hash_ids = hash;
        self
    }

    /// How often a background task deletes expired rows (default 5
    /// minutes; `None` for never: call
    /// [`delete_expired`](ExpiredDeletion::delete_expired) yourself).
    /// Expired rows are never returned either way; the sweep only frees
    /// their space. The task runs on the Tokio runtime the store is built
    /// on and ends when the last clone of the store is dropped.
    pub fn sweep_interval(mut self, every: Option<Duration>) -> Self {
        self.settings.sweep_interval = every;
        self
    }

    /// The pool size when [`connect`](Self::connect) makes the pool
    /// (default 10).
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// How long an operation waits for a free connection when
    /// [`connect`](Self::connect) makes the pool (default 2 s); then it
    /// fails with [`ErrorKind::StoreUnavailable`](sessionkit_core::ErrorKind::StoreUnavailable)
    /// (a 503), instead of piling up requests behind an exhausted pool.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = Some(timeout);
        self
    }

    /// A store on the application's pool. The pool's own settings apply
    /// (sqlx's defaults ping the server on every acquire, and wait 30 s for a
    /// connection; [`connect`](Self::connect) turns the ping off and waits
    /// 2 s).
    ///
    /// Spawns the background sweep when called inside a Tokio runtime.
    pub fn build(self, pool: PgPool) -> Result<PgStore> {
        self.settings.check()?;
        let table = Table::parse(&self.settings.table, true)?;
        let inner = Arc::new(Inner {
            wake: Wakeups::new(pool.clone(), &table),
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
        Ok(PgStore { inner })
    }

    /// Makes a pool for `url` (`postgres://user:password@host:port/db`) and
    /// a store on it. Connects lazily: a server that is down makes the first
    /// operation fail, not this call.
    pub fn connect(self, url: &str) -> Result<PgStore> {
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections.unwrap_or(10))
            .acquire_timeout(self.acquire_timeout.unwrap_or(Duration::from_secs(2)))
            // One statement per operation is the point; a ping before each
            // would double it. A broken connection fails its statement and
            // is dropped by the pool.
            .test_before_acquire(false)
            .connect_lazy(url)
            .map_err(|e| {
                Error::invalid_config("url", "not a valid PostgreSQL URL").with_source(e)
            })?;
        self.build(pool)
    }
}

impl PgStore {
    /// A builder, for the table name, id hashing and the sweep.
    pub fn builder() -> PgStoreBuilder {
        PgStoreBuilder::default()
    }

    /// A store with the default settings on the application's pool.
    pub fn new(pool: PgPool) -> Result<PgStore> {
        PgStore::builder().build(pool)
    }

    /// A store with the default settings on a new pool for `url`.
    pub fn connect(url: &str) -> Result<PgStore> {
        PgStore::builder().connect(url)
    }

    /// The pool the store runs on.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Creates the table, its index and the version table if missing, and
    /// records the schema version; safe to run at every start and from
    /// several processes at once (they take turns on an advisory lock).
    /// A table whose recorded version is newer than this code knows is an
    /// error; nothing is changed then.
    pub async fn migrate(&self) -> Result<()> {
        self.inner.migrate().await
    }

    /// The statements [`migrate`](Self::migrate) runs, for a DBA who
    /// creates the schema by hand.
    pub fn schema_sql(&self) -> String {
        schema_sql(&self.inner.table)
    }

    fn key(&self, id: &SessionId) -> Vec<u8> {
        common::key_of(id, self.inner.hash_ids)
    }
}

fn schema_sql(table: &Table) -> String {
    let t = &table.quoted;
    let max = common::MAX_MS;
    format!(
        "CREATE TABLE IF NOT EXISTS {versions} (
    table_name text PRIMARY KEY,
    version integer NOT NULL
);
CREATE TABLE IF NOT EXISTS {t} (
    id bytea PRIMARY KEY,
    data jsonb NOT NULL,
    created bigint NOT NULL CHECK (created BETWEEN 0 AND {max}),
    ttl bigint NOT NULL CHECK (ttl BETWEEN 0 AND {max}),
    remembered boolean NOT NULL,
    deadline bigint CHECK (deadline BETWEEN 1 AND {max}),
    expires bigint NOT NULL CHECK (expires BETWEEN 0 AND {max}),
    lock_token bytea,
    lock_expires bigint,
    owner text,
    handle text
);
ALTER TABLE {t} ADD COLUMN IF NOT EXISTS owner text, ADD COLUMN IF NOT EXISTS handle text;
CREATE INDEX IF NOT EXISTS {index} ON {t} (expires);
CREATE INDEX IF NOT EXISTS {owner_index} ON {t} (owner) WHERE owner IS NOT NULL;
",
        versions = table.versions,
        index = table.index,
        owner_index = table.owner_index,
    )
}

/// Every statement of the store, written once for its table.
struct Statements {
    load: String,
    load_touch: String,
    touch: String,
    create: String,
    apply: String,
    change_id: String,
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
        // The idle expiry refreshed at `c.now`, capped by the deadline
        // (LEAST ignores NULL: no deadline, no cap).
        let refreshed = "LEAST(c.now + s.ttl, s.deadline)";
        // A release wakes the waiters of other processes, if any (see
        // `wake`); `$7` is `apply`'s release flag.
        let notify_released = Wakeups::notify_sql(table, "w", "$7");
        let notify_unlocked = Wakeups::notify_sql(table, "u", "true");
        Statements {
            load: format!(
                "SELECT {RECORD} FROM {t} s WHERE s.id = $1 AND s.expires > {NOW}"
            ),
            // A plain read that also says, by the database's clock, whether
            // the touch is due and would move the expiry; only then does
            // `touch` run (a read is one statement, the rare due one two: a
            // read that carried the UPDATE every time cost the server about
            // a quarter more CPU per read, and reads are most requests).
            load_touch: format!(
                "SELECT {RECORD}, ($2 >= 1000 OR s.expires - c.now < (s.ttl * $2 + 999) / 1000)
                        AND {refreshed} <> s.expires AS due
                 FROM {t} s, (SELECT {NOW} AS now) c
                 WHERE s.id = $1 AND s.expires > c.now"
            ),
            // The touch: writes only when it is still due and moves the
            // expiry (another request may have touched the row meanwhile).
            touch: format!(
                "UPDATE {t} s SET expires = {refreshed} FROM (SELECT {NOW} AS now) c
                 WHERE s.id = $1 AND s.expires > c.now
                   AND ($2 >= 1000 OR s.expires - c.now < (s.ttl * $2 + 999) / 1000)
                   AND {refreshed} <> s.expires
                 RETURNING {RECORD}"
            ),
            // ON CONFLICT takes the row over only when it has expired: a
            // live session is never overwritten, and of racing creates the
            // first wins (the others wait for it on the unique index).
            create: format!(
                "INSERT INTO {t} AS s (id, data, created, ttl, remembered, deadline, expires)
                 VALUES ($1, $2::jsonb, $3, $4, $5, $6, $7)
                 ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, created = EXCLUDED.created,
                    ttl = EXCLUDED.ttl, remembered = EXCLUDED.remembered,
                    deadline = EXCLUDED.deadline, expires = EXCLUDED.expires,
                    lock_token = NULL, lock_expires = NULL, owner = NULL, handle = NULL
                 WHERE s.expires <= {NOW}
                 RETURNING 1"
            ),
            // $1 id, $2 clear, $3 removed keys, $4 object to merge, $5 new
            // ttl, $6 fence token, $7 release, $8 read the data back, $9
            // remembered (NULL: keep), $10 deadline cap (NULL: none; LEAST
            // ignores NULL, so it only ever brings the deadline forward).
            // The fence is part of the UPDATE's WHERE: a lost lock writes
            // nothing. Only when nothing was written does the second branch
            // look again, to tell a lost lock from a gone session.
            apply: format!(
                "WITH c AS (SELECT {NOW} AS now),
                 w AS (
                    UPDATE {t} s SET
                        data = (CASE WHEN $2 THEN '{{}}'::jsonb ELSE s.data END - $3::text[]) || $4::jsonb,
                        ttl = COALESCE($5::bigint, s.ttl),
                        remembered = COALESCE($9::boolean, s.remembered),
                        deadline = LEAST(s.deadline, $10::bigint),
                        expires = LEAST(c.now + COALESCE($5::bigint, s.ttl), s.deadline, $10::bigint),
                        lock_token = CASE WHEN $7 THEN NULL ELSE s.lock_token END,
                        lock_expires = CASE WHEN $7 THEN NULL ELSE s.lock_expires END,
                        owner = CASE WHEN $2 THEN NULL ELSE s.owner END,
                        handle = CASE WHEN $2 THEN NULL ELSE s.handle END
                    FROM c
                    WHERE s.id = $1 AND s.expires > c.now AND jsonb_typeof(s.data) = 'object'
                      AND ($6::bytea IS NULL OR (s.lock_token = $6 AND s.lock_expires > c.now))
                    RETURNING CASE WHEN $8 THEN s.data::text END AS data,
                        s.created, s.ttl, s.remembered, s.deadline, s.expires
                 ),
                 n AS ({notify_released})
                 SELECT 'applied' AS outcome, * FROM w WHERE (SELECT count(*) FROM n) >= 0
                 UNION ALL
                 SELECT CASE WHEN $6::bytea IS NOT NULL AND EXISTS (
                            SELECT 1 FROM {t} s, c WHERE s.id = $1 AND s.expires > c.now)
                        THEN 'lock_lost' ELSE 'gone' END,
                        NULL, NULL, NULL, NULL, NULL, NULL
                 WHERE NOT EXISTS (SELECT 1 FROM w)"
            ),
            // $1 old, $2 new, $3 fence token. The old row is locked (FOR
            // UPDATE: concurrent writes to it wait, and it is read as they
            // left it) and, when the fence holds and no live session has
            // the new id, its id is changed in place (an expired row under
            // the new id is deleted first). In place, not a new row and a
            // delete: a statement that waited on the old row (a `revoke_all`
            // of its owner, a cap's victim delete) follows the row to its
            // new id at READ COMMITTED, where a deleted row would be
            // skipped and a new one unseen by its snapshot, and the
            // rotated session would survive "sign out everywhere".
            change_id: format!(
                "WITH c AS (SELECT {NOW} AS now),
                 o AS (
                    SELECT s.* FROM {t} s, c WHERE s.id = $1 AND s.expires > c.now FOR UPDATE OF s
                 ),
                 ok AS (
                    SELECT o.id FROM o, c
                    WHERE ($3::bytea IS NULL OR (o.lock_token = $3 AND o.lock_expires > c.now))
                      AND NOT EXISTS (SELECT 1 FROM {t} n WHERE n.id = $2 AND n.expires > c.now)
                 ),
                 stale AS (
                    DELETE FROM {t} n USING c
                    WHERE n.id = $2 AND n.expires <= c.now AND EXISTS (SELECT 1 FROM ok)
                    RETURNING 1
                 ),
                 moved AS (
                    UPDATE {t} s SET id = $2, expires = LEAST(c.now + s.ttl, s.deadline),
                        lock_token = CASE WHEN $3::bytea IS NULL THEN NULL ELSE s.lock_token END,
                        lock_expires = CASE WHEN $3::bytea IS NULL THEN NULL ELSE s.lock_expires END
                    FROM ok, c
                    WHERE s.id = ok.id AND (SELECT count(*) FROM stale) >= 0
                    RETURNING s.created, s.ttl, s.remembered, s.deadline, s.expires
                 )
                 SELECT 'changed' AS outcome, * FROM moved
                 UNION ALL
                 SELECT CASE
                          WHEN NOT EXISTS (SELECT 1 FROM o) THEN 'gone'
                          WHEN $3::bytea IS NOT NULL AND NOT EXISTS (
                              SELECT 1 FROM o, c WHERE o.lock_token = $3 AND o.lock_expires > c.now)
                          THEN 'lock_lost'
                          ELSE 'id_taken' END,
                        NULL, NULL, NULL, NULL, NULL
                 WHERE NOT EXISTS (SELECT 1 FROM moved)"
            ),
            destroy: format!("DELETE FROM {t} WHERE id = $1"),
            // $1 id, $2 token, $3 ttl. Taking the lock refreshes the idle
            // expiry and reads the record, in the same statement.
            lock: format!(
                "WITH c AS (SELECT {NOW} AS now),
                 w AS (
                    UPDATE {t} s SET lock_token = $2, lock_expires = c.now + $3,
                        expires = {refreshed}
                    FROM c
                    WHERE s.id = $1 AND s.expires > c.now
                      AND (s.lock_token IS NULL OR s.lock_expires <= c.now)
                    RETURNING {RECORD}
                 )
                 SELECT 'acquired' AS outcome, * FROM w
                 UNION ALL
                 SELECT CASE WHEN EXISTS (SELECT 1 FROM {t} s, c WHERE s.id = $1 AND s.expires > c.now)
                        THEN 'held' ELSE 'absent' END,
                        NULL, NULL, NULL, NULL, NULL, NULL
                 WHERE NOT EXISTS (SELECT 1 FROM w)"
            ),
            renew: format!(
                "WITH c AS (SELECT {NOW} AS now)
                 UPDATE {t} s SET lock_expires = c.now + $3, expires = {refreshed} FROM c
                 WHERE s.id = $1 AND s.expires > c.now AND s.lock_token = $2 AND s.lock_expires > c.now"
            ),
            unlock: format!(
                "WITH u AS (
                    UPDATE {t} SET lock_token = NULL, lock_expires = NULL
                    WHERE id = $1 AND lock_token = $2 RETURNING 1
                 )
                 {notify_unlocked}"
            ),
            // One bounded range of the expiry index per statement; SKIP
            // LOCKED lets two sweepers (two app servers) share the work.
            sweep: format!(
                "DELETE FROM {t} WHERE id IN (
                    SELECT id FROM {t} WHERE expires <= {NOW} ORDER BY expires LIMIT $1
                    FOR UPDATE SKIP LOCKED)"
            ),
            count: format!("SELECT count(*) FROM {t} WHERE expires > {NOW}"),
        }
    }
}

/// The metadata columns of a row, by name.
fn meta_columns(row: &PgRow) -> std::result::Result<MetaColumns, sqlx::Error> {
    Ok(MetaColumns {
        created: row.try_get("created")?,
        ttl: row.try_get("ttl")?,
        remembered: row.try_get("remembered")?,
        deadline: row.try_get("deadline")?,
        expires: row.try_get("expires")?,
    })
}

/// A record from a row with the [`RECORD`] columns; logs and answers
/// `None` for a corrupt one.
fn record_of_row(id: &SessionId, row: &PgRow) -> Option<Record> {
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

fn outcome(row: &PgRow, operation: &'static str) -> Result<String> {
    row.try_get("outcome")
        .map_err(|e| failed(STORE, operation, e))
}

impl Inner {
    async fn migrate(&self) -> Result<()> {
        let fail = |e| failed(STORE, "migrate", e);
        // The usual case first, without DDL: the table is there at this
        // version (an application role without CREATE rights gets this far).
        let current: std::result::Result<Option<i32>, _> = sqlx::query_scalar(&format!(
            "SELECT version FROM {} WHERE table_name = $1",
            self.table.versions
        ))
        .bind(&self.table.name)
        .fetch_optional(&self.pool)
        .await;
        match current {
            Ok(Some(v)) if v == SCHEMA_VERSION => return Ok(()),
            Ok(Some(v)) if v > SCHEMA_VERSION => {
                return Err(common::newer_schema(STORE, &self.table.name, v));
            }
            // Missing, older or unreadable: the DDL path, which looks again
            // under the lock.
            _ => {}
        }
        let mut tx = self.pool.begin().await.map_err(fail)?;
        // `CREATE ... IF NOT EXISTS` of what exists is a NOTICE, which sqlx
        // logs at INFO: not news at every start.
        sqlx::query("SET LOCAL client_min_messages = warning")
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        // Concurrent migrations take turns: CREATE ... IF NOT EXISTS alone
        // can still fail on a race in the catalog. The lock is per version
        // table, not per session table: apps with tables of their own in
        // one schema all create that one version table.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('sessionkit:' || $1))")
            .bind(&self.table.versions)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        sqlx::raw_sql(&format!(
            "CREATE TABLE IF NOT EXISTS {} (table_name text PRIMARY KEY, version integer NOT NULL)",
            self.table.versions
        ))
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
        let found: Option<i32> = sqlx::query_scalar(&format!(
            "SELECT version FROM {} WHERE table_name = $1",
            self.table.versions
        ))
        .bind(&self.table.name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(fail)?;
        match found {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(common::newer_schema(STORE, &self.table.name, v));
            }
            Some(v) if v == SCHEMA_VERSION => return tx.commit().await.map_err(fail),
            _ => {}
        }
        sqlx::raw_sql(&schema_sql(&self.table))
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        sqlx::query(&format!(
            "INSERT INTO {} (table_name, version) VALUES ($1, $2)
             ON CONFLICT (table_name) DO UPDATE SET version = EXCLUDED.version",
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
}

impl PgStore {
    async fn apply_inner(
        &self,
        id: &SessionId,
        delta: &Delta,
        token: Option<&LockToken>,
        release: bool,
        read: bool,
        operation: &'static str,
    ) -> Result<(String, Option<PgRow>)> {
        let (removed, set) = common::delta_removed_and_set(delta)?;
        let row = sqlx::query(&self.inner.sql.apply)
            .bind(self.key(id))
            .bind(delta.clears())
            .bind(removed)
            .bind(set)
            .bind(delta.ttl_ms().map(common::ms))
            .bind(token.map(|t| t.as_bytes().to_vec()))
            .bind(release)
            .bind(read)
            .bind(delta.remembered())
            .bind(delta.deadline_cap().map(common::ms))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(|e| failed(STORE, operation, e))?;
        let outcome = outcome(&row, operation)?;
        Ok((outcome, Some(row)))
    }
}

impl SessionStore for PgStore {
    fn name(&self) -> &'static str {
        STORE
    }

    fn owner_index(self: Arc<Self>) -> Option<Arc<dyn sessionkit_core::owner::DynOwnerIndex>> {
        Some(self)
    }

    async fn load(&self, id: &SessionId, touch: Option<Touch>) -> Result<Option<Loaded>> {
        let key = self.key(id);
        let Some(touch) = touch else {
            let row = sqlx::query(&self.inner.sql.load)
                .bind(&key)
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(|e| failed(STORE, "load", e))?;
            let record = row.and_then(|row| record_of_row(id, &row));
            return Ok(record.map(|record| Loaded {
                record,
                touched: false,
            }));
        };
        let permille = i32::from(touch.permille());
        let row = sqlx::query(&self.inner.sql.load_touch)
            .bind(&key)
            .bind(permille)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| failed(STORE, "load", e))?;
        let Some(row) = row else { return Ok(None) };
        let due: bool = row.try_get("due").map_err(|e| failed(STORE, "load", e))?;
        let Some(record) = record_of_row(id, &row) else {
            return Ok(None);
        };
        if !due {
            return Ok(Some(Loaded {
                record,
                touched: false,
            }));
        }
        let touched = sqlx::query(&self.inner.sql.touch)
            .bind(&key)
            .bind(permille)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| failed(STORE, "load", e))?;
        Ok(Some(
            match touched.and_then(|row| record_of_row(id, &row)) {
                Some(record) => Loaded {
                    record,
                    touched: true,
                },
                // Touched by another request meanwhile, or just expired: the
                // session as this read found it.
                None => Loaded {
                    record,
                    touched: false,
                },
            },
        ))
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<Created> {
        let data = common::entries_json(&record.entries)?;
        let m = MetaColumns::of(&record.meta);
        let row = sqlx::query(&self.inner.sql.create)
            .bind(self.key(id))
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
        let (outcome, row) = self
            .apply_inner(id, delta, token, release, false, "apply")
            .await?;
        Ok(match outcome.as_str() {
            "applied" => {
                let row = row.expect("a row");
                match meta_columns(&row)
                    .map_err(|e| failed(STORE, "apply", e))?
                    .meta()
                {
                    Ok(meta) => Applied::Applied(meta),
                    Err(reason) => {
                        corrupt(STORE, id, reason);
                        Applied::Gone
                    }
                }
            }
            "lock_lost" => Applied::LockLost,
            _ => Applied::Gone,
        })
    }

    async fn apply_and_read(
        &self,
        id: &SessionId,
        delta: &Delta,
        token: &LockToken,
    ) -> Result<AppliedAndRead> {
        let (outcome, row) = self
            .apply_inner(id, delta, Some(token), false, true, "apply_and_read")
            .await?;
        Ok(match outcome.as_str() {
            "applied" => {
                let row = row.expect("a row");
                match record_of_row(id, &row) {
                    Some(record) => AppliedAndRead::Applied(record),
                    // Written, but unreadable: the caller releases the
                    // lock instead of handing it on.
                    None => match meta_columns(&row)
                        .map_err(|e| failed(STORE, "apply_and_read", e))?
                        .meta()
                    {
                        Ok(meta) => AppliedAndRead::AppliedUnread(meta),
                        Err(_) => AppliedAndRead::Gone,
                    },
                }
            }
            "lock_lost" => AppliedAndRead::LockLost,
            _ => AppliedAndRead::Gone,
        })
    }

    async fn change_id(
        &self,
        old: &SessionId,
        new: &SessionId,
        fence: Option<&LockToken>,
    ) -> Result<IdChanged> {
        let row = sqlx::query(&self.inner.sql.change_id)
            .bind(self.key(old))
            .bind(self.key(new))
            .bind(fence.map(|t| t.as_bytes().to_vec()))
            .fetch_one(&self.inner.pool)
            .await;
        let row = match row {
            // A session created under the new id while this statement ran
            // (it saw the id free): nothing was changed.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Ok(IdChanged::IdTaken);
            }
            other => other.map_err(|e| failed(STORE, "change_id", e))?,
        };
        Ok(match outcome(&row, "change_id")?.as_str() {
            "changed" => match meta_columns(&row)
                .map_err(|e| failed(STORE, "change_id", e))?
                .meta()
            {
                Ok(meta) => IdChanged::Changed(meta),
                Err(reason) => {
                    corrupt(STORE, new, reason);
                    IdChanged::Gone
                }
            },
            "lock_lost" => IdChanged::LockLost,
            "id_taken" => IdChanged::IdTaken,
            _ => IdChanged::Gone,
        })
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
        let row = sqlx::query(&self.inner.sql.lock)
            .bind(self.key(id))
            .bind(token.as_bytes().to_vec())
            .bind(common::duration_ms(ttl))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(|e| failed(STORE, "lock", e))?;
        Ok(match outcome(&row, "lock")?.as_str() {
            "acquired" => match record_of_row(id, &row) {
                Some(record) => Locked::Acquired { token, record },
                None => {
                    // A corrupt session is absent: leave no lock on it.
                    let _ = SessionStore::unlock(self, id, &token).await;
                    Locked::Absent
                }
            },
            "held" => Locked::Held,
            _ => Locked::Absent,
        })
    }

    async fn renew_lock(&self, id: &SessionId, token: &LockToken, ttl: Duration) -> Result<bool> {
        let done = sqlx::query(&self.inner.sql.renew)
            .bind(self.key(id))
            .bind(token.as_bytes().to_vec())
            .bind(common::duration_ms(ttl))
            .execute(&self.inner.pool)
            .await
            .map_err(|e| failed(STORE, "renew_lock", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn wait_for_unlock(&self, id: &SessionId, pause: Duration) {
        self.inner.wake.wait(&self.key(id), pause).await
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

impl ExpiredDeletion for PgStore {
    async fn delete_expired(&self) -> Result<u64> {
        self.inner.delete_expired().await
    }
}

impl Countable for PgStore {
    async fn count(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(&self.inner.sql.count)
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
        let sql = schema_sql(&Table::parse("sessions", true).unwrap());
        assert!(
            docs.contains(sql.trim_end()),
            "the crate docs must show:\n{sql}"
        );
    }
}
