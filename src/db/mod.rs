//! The database: connection pool, units of work, migrations, start-up, and
//! what its errors mean.
//!
//! Every write is acknowledged only after its commit succeeded: single
//! statements are read to their end (a `RETURNING` read with a fetch-one would
//! leave SQLite's autocommit unfinished and its error unseen), multi-statement
//! writes commit explicitly, and a storage failure marks the instance not
//! ready until a write succeeds again (a probe retries every second).

mod errors;
mod leases;
mod migrate;
mod pool;
mod pooled;
mod startup;
mod unit;
mod writers;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, RuntimeErr};

pub use errors::{Failure, classify, describe, is_unavailable};
pub use migrate::migrate;
pub use startup::{StartupError, reach_and_migrate, start};
pub use unit::Unit;

use leases::{Lease, Leases};
use pooled::Transaction;
use sea_orm::sqlx::{Sqlite, pool::PoolConnection};
use writers::{Turn, Writers};

use crate::config::{DatabaseSettings, PoolMode};
use crate::readiness::Readiness;

/// How often a failing instance tries a write of its own.
const WRITE_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Added to the longest legitimate wait (a connection, then a statement) to
/// make the deadline of [`Db::bounded`]: slack for the few fast statements
/// of a unit on a loaded machine.
const DEADLINE_SLACK: Duration = Duration::from_secs(2);

/// The pool and what every unit of work needs to know about it.
#[derive(Clone)]
pub struct Db {
    conn: DatabaseConnection,
    shared: Arc<Shared>,
}

struct Shared {
    /// PostgreSQL's connections, kept between requests; `None` on SQLite.
    leases: Option<Arc<Leases>>,
    pool_mode: PoolMode,
    /// `BEGIN; SET LOCAL statement_timeout = ...` for transaction-mode units.
    begin_pooled: String,
    readiness: Arc<Readiness>,
    probing: AtomicBool,
    /// See [`Db::bounded`]; `None` on SQLite.
    deadline: Option<Duration>,
    /// SQLite: this process's writers, one at a time (see [`Db::write_turn`]).
    sqlite_writers: Option<Writers>,
}

impl Db {
    /// A pool that connects on first use: the server listens before the
    /// database answers (see [`start`]).
    pub async fn open(settings: &DatabaseSettings, readiness: Arc<Readiness>) -> Result<Db, DbErr> {
        let conn = pool::open(settings, Arc::clone(&readiness)).await?;
        let postgres = conn_is_postgres(settings);
        let leases = postgres.then(|| {
            Leases::new(
                conn.get_postgres_connection_pool().clone(),
                settings.max_connections,
                pool::ACQUIRE_TIMEOUT,
            )
        });
        Ok(Db {
            conn,
            shared: Arc::new(Shared {
                leases,
                deadline: postgres
                    .then(|| pool::ACQUIRE_TIMEOUT + settings.statement_timeout + DEADLINE_SLACK),
                pool_mode: if postgres {
                    settings.pool_mode
                } else {
                    PoolMode::Session
                },
                begin_pooled: format!(
                    "BEGIN; SET LOCAL statement_timeout = {}",
                    settings.statement_timeout.as_millis()
                ),
                readiness,
                probing: AtomicBool::new(false),
                sqlite_writers: (!postgres).then(|| Writers::new(pool::SQLITE_BUSY_TIMEOUT)),
            }),
        })
    }

    pub fn backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    fn leases(&self) -> Result<&Arc<Leases>, DbErr> {
        self.shared
            .leases
            .as_ref()
            .ok_or_else(|| DbErr::Custom("no PostgreSQL connections on a SQLite database".into()))
    }

    pub fn readiness(&self) -> &Readiness {
        &self.shared.readiness
    }

    /// Where one request's statements run: the pool itself (autocommit), or
    /// behind a transaction-mode pooler a transaction of its own (see
    /// [`pooled`]). End it with [`Unit::commit`].
    pub(crate) async fn unit(&self) -> Result<Unit, DbErr> {
        match (self.backend(), self.shared.pool_mode) {
            (DbBackend::Sqlite, _) => {
                Ok(Unit::Sqlite(self.conn.get_sqlite_connection_pool().clone()))
            }
            (_, PoolMode::Session) => Ok(Unit::Postgres(Arc::clone(self.leases()?))),
            (_, PoolMode::Transaction) => self.begin_postgres().await,
        }
    }

    /// A transaction for a write of several statements. On SQLite it takes the
    /// write lock at once (`BEGIN IMMEDIATE`): a deferred transaction that
    /// reads first and then writes fails at once under contention instead of
    /// waiting its turn.
    pub(crate) async fn begin_write(&self) -> Result<Unit, DbErr> {
        match self.backend() {
            DbBackend::Sqlite => {
                let turn = self.write_turn().await?;
                Ok(Unit::SqliteTransaction(
                    Box::pin(Transaction::<PoolConnection<Sqlite>>::begin(
                        self.conn.get_sqlite_connection_pool(),
                        "BEGIN IMMEDIATE",
                        true,
                    ))
                    .await?
                    .holding(turn),
                ))
            }
            _ => self.begin_postgres().await,
        }
    }

    /// On SQLite, this writer's turn among the process's writers (see
    /// [`writers`]): hold it until the write has committed. `None` on
    /// PostgreSQL, whose writers do not wait for each other unless they
    /// touch the same rows or lock.
    pub(crate) async fn write_turn(&self) -> Result<Option<Turn>, DbErr> {
        match &self.shared.sqlite_writers {
            Some(writers) => writers.turn().await.map(Some),
            None => Ok(None),
        }
    }

    /// `BEGIN`; behind a transaction-mode pooler with `SET LOCAL
    /// statement_timeout` in the same round trip, and unnamed statements
    /// (see [`pooled`]).
    async fn begin_postgres(&self) -> Result<Unit, DbErr> {
        let pooled = self.shared.pool_mode == PoolMode::Transaction;
        let begin = if pooled {
            self.shared.begin_pooled.as_str()
        } else {
            "BEGIN"
        };
        Ok(Unit::PgTransaction(
            Box::pin(Transaction::<Lease>::begin(self.leases()?, begin, !pooled)).await?,
        ))
    }

    /// Runs one request's database work (a unit, a transaction, or the wait
    /// for the next row of a listing) under a deadline of the service's own,
    /// answered as "unavailable" (503) when it passes.
    ///
    /// Why: `statement_timeout` is enforced by the server, and sqlx has no
    /// read timeout. A PostgreSQL that hangs with its connections open (a
    /// suspended VM or container, an I/O stall, a network that drops packets
    /// without closing the connection) enforces nothing, and each request
    /// holding a connection waited for as long as the hang, up to
    /// `HTTP_REQUEST_TIMEOUT` (tests/api/faults.rs: 15 s under a 15 s hang).
    /// The deadline is the longest legitimate wait: a connection
    /// (`ACQUIRE_TIMEOUT`), one statement (`statement_timeout`, e.g. one
    /// waiting for a lock) and some slack. A write cut short may still
    /// commit when the database resumes, as when a connection drops during
    /// COMMIT: the 503 tells the client to retry, and a retry with its
    /// `Idempotency-Key` gets 409 while that transaction still holds the key,
    /// then the stored response.
    ///
    /// SQLite runs in this process, waits for locks at most its busy
    /// timeout, and is not bounded here.
    pub(crate) fn bounded<T, E: From<DbErr>>(
        &self,
        work: impl Future<Output = Result<T, E>>,
    ) -> impl Future<Output = Result<T, E>> {
        // Database futures are large (SeaORM's and sqlx's states, kilobytes);
        // boxed at once, every layer above moves a pointer instead of copying
        // them (copies were half the instructions of a request).
        let work = Box::pin(work);
        let deadline = self.shared.deadline;
        async move {
            let Some(deadline) = deadline else {
                return work.await;
            };
            match tokio::time::timeout(deadline, work).await {
                Ok(result) => result,
                Err(_) => Err(E::from(no_answer_within(deadline))),
            }
        }
    }

    /// The next item of a stream of rows, under the same deadline as
    /// [`Db::bounded`] (but without its allocation: a listing waits once per row).
    pub(crate) async fn next_within_deadline<S, T>(&self, rows: &mut S) -> Result<Option<T>, DbErr>
    where
        S: futures_util::Stream<Item = T> + Unpin,
    {
        use futures_util::StreamExt;
        match self.shared.deadline {
            None => Ok(rows.next().await),
            Some(deadline) => tokio::time::timeout(deadline, rows.next())
                .await
                .map_err(|_| no_answer_within(deadline)),
        }
    }

    /// Readiness and logs follow the outcome of every write.
    pub(crate) fn observe_write<T, E>(
        &self,
        result: &Result<T, E>,
        db_err: impl Fn(&E) -> Option<&DbErr>,
    ) {
        match result {
            Ok(_) => {
                if self.readiness().write_succeeded() {
                    tracing::info!("writes succeed again; ready");
                }
            }
            Err(e) => {
                if let Some(err) = db_err(e)
                    && classify(err) == Some(Failure::Storage)
                {
                    self.storage_failed(err);
                }
            }
        }
    }

    fn storage_failed(&self, err: &DbErr) {
        // `describe`: without sqlx's " at line N" (see there).
        let cause = describe(err);
        if self.readiness().write_failed(&cause) {
            tracing::error!(error = %cause, "the database cannot store writes; answering 503 and not ready until a write succeeds");
        }
        self.spawn_write_probe();
    }

    /// While writes fail, a write of our own every second finds out when
    /// storage is back (a user's successful write ends it sooner).
    fn spawn_write_probe(&self) {
        if self.shared.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let db = self.clone();
        tokio::spawn(async move {
            loop {
                while db.readiness().writes_failing() {
                    tokio::time::sleep(WRITE_PROBE_INTERVAL).await;
                    match db.probe_write().await {
                        Ok(()) => {
                            if db.readiness().write_succeeded() {
                                tracing::info!("a probe write succeeded; ready again");
                            }
                        }
                        Err(e) => tracing::debug!(error = %describe(&e), "probe write failed"),
                    }
                }
                db.shared.probing.store(false, Ordering::Release);
                // A failure may have arrived between the last check and the store.
                if !db.readiness().writes_failing()
                    || db.shared.probing.swap(true, Ordering::AcqRel)
                {
                    return;
                }
            }
        });
    }

    /// One committed write that touches no user data.
    pub(crate) async fn probe_write(&self) -> Result<(), DbErr> {
        let _turn = self.write_turn().await?;
        let unit = self.unit().await?;
        unit.execute_unprepared(
            "INSERT INTO service_probe (id, probed_at) VALUES (1, CURRENT_TIMESTAMP) \
             ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
        )
        .await?;
        unit.commit().await
    }

    /// The privileges the serving role lacks on the tables requests use,
    /// on PostgreSQL: `(role, schema, missing)`, `missing` as
    /// "tasks (SELECT, DELETE), ..."; `None` when it has them all (and
    /// always on SQLite). See `startup::check_privileges`.
    pub(crate) async fn missing_privileges(
        &self,
    ) -> Result<Option<(String, String, String)>, DbErr> {
        if self.backend() != DbBackend::Postgres {
            return Ok(None);
        }
        // Each table with what requests do to it: an upsert (the probe,
        // idempotency keys) needs SELECT as well; creates call `create_task`.
        // Unqualified names resolve through the search path, as the
        // service's own queries do.
        const SQL: &str = "\
            SELECT current_user::text AS role, current_schema()::text AS schema, \
                   string_agg(m.item, ', ' ORDER BY m.item) AS missing \
            FROM ( \
                SELECT t.name || ' (' || p.missing || ')' AS item \
                FROM (VALUES ('tasks', 'SELECT,INSERT,UPDATE,DELETE'), \
                             ('idempotency_keys', 'SELECT,INSERT,UPDATE,DELETE'), \
                             ('service_probe', 'SELECT,INSERT,UPDATE')) AS t(name, privileges) \
                CROSS JOIN LATERAL ( \
                    SELECT string_agg(q.privilege, ', ' ORDER BY q.n) AS missing \
                    FROM unnest(string_to_array(t.privileges, ',')) WITH ORDINALITY AS q(privilege, n) \
                    WHERE NOT has_table_privilege(t.name, q.privilege)) AS p \
                WHERE p.missing IS NOT NULL \
                UNION ALL \
                SELECT 'function create_task (EXECUTE)' \
                WHERE NOT has_function_privilege( \
                    'create_task(bigint, text, text, text, boolean, timestamptz, bigint)', 'EXECUTE') \
            ) AS m";
        let unit = self.unit().await?;
        let row = unit
            .query_one_raw(sea_orm::Statement::from_string(DbBackend::Postgres, SQL))
            .await;
        unit.rollback().await?;
        let Some(row) = row? else {
            return Ok(None);
        };
        let missing: Option<String> = row.try_get("", "missing")?;
        Ok(match missing {
            Some(missing) => Some((
                row.try_get("", "role")?,
                row.try_get("", "schema")?,
                missing,
            )),
            None => None,
        })
    }

    /// Does the database answer (in bounded time: see [`Db::bounded`])?
    pub async fn ping(&self) -> Result<(), DbErr> {
        match &self.shared.leases {
            // In turn with requests: sqlx's pool may have lent out every
            // connection (kept between requests, see `leases`).
            Some(leases) => {
                self.bounded(async {
                    let mut lease = leases.acquire().await.map_err(pooled::acquire_err)?;
                    sea_orm::sqlx::Connection::ping(&mut *lease)
                        .await
                        .map_err(pooled::acquire_err)?;
                    lease.finished_cleanly();
                    Ok(())
                })
                .await
            }
            None => self.bounded(self.conn.ping()).await,
        }
    }

    /// Open and idle connections of the pool (metrics).
    pub fn pool_size(&self) -> (u32, usize) {
        match self.backend() {
            DbBackend::Postgres => {
                let pool = self.conn.get_postgres_connection_pool();
                // Kept leases are idle too, though sqlx counts them in use.
                let kept = self.shared.leases.as_ref().map_or(0, |l| l.kept());
                (pool.size(), pool.num_idle() + kept)
            }
            _ => {
                let pool = self.conn.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
        }
    }
}

/// What passing [`Db::bounded`]'s deadline answers: unavailable (503).
fn no_answer_within(deadline: Duration) -> DbErr {
    DbErr::Conn(RuntimeErr::Internal(format!(
        "no answer from the database within {:.1} s",
        deadline.as_secs_f64()
    )))
}

fn conn_is_postgres(settings: &DatabaseSettings) -> bool {
    !settings.url.starts_with("sqlite:")
}
