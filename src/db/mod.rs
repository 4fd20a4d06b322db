//! The database behind one small interface: [`Db::read`], [`Db::write`]
//! and [`Db::list`], over PostgreSQL ([`postgres`]) or SQLite ([`sqlite`]).
//!
//! That interface applies, in one place, what every request's database work
//! needs: a deadline (see [`Db::bounded`]), the SQLite writer's turn, the
//! rule that a write is acknowledged only once it has committed, and
//! readiness following the outcome of writes (a storage failure makes the
//! instance not ready until a write succeeds again; a probe retries every
//! second).

mod errors;
mod migrate;
mod postgres;
mod sql;
mod sqlite;
mod startup;
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};

pub use errors::{DbError, Failure};
pub use migrate::migrate;
pub use sql::{Column, Dialect, Row, Rows, Stmt, now};
pub use startup::{StartupError, reach_and_migrate, start};

use crate::config::DatabaseSettings;
use crate::readiness::Readiness;

/// A request waiting for a connection to a dead database answers 503 this soon.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Added to the longest legitimate wait (a connection, then a statement)
/// to make the deadline of [`Db::bounded`].
const DEADLINE_SLACK: Duration = Duration::from_secs(2);

/// How long `/health/ready` waits for the database before saying it does not answer.
const PING_TIMEOUT: Duration = Duration::from_millis(800);

/// How often a failing instance tries a write of its own.
const WRITE_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The database: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Db(Arc<Inner>);

struct Inner {
    engine: Engine,
    readiness: Arc<Readiness>,
    deadline: Option<Duration>,
    probing: AtomicBool,
    /// When a statement last came back without error, and when one last
    /// found the database unavailable (ms since `opened`).
    last_answer: AtomicU64,
    last_unavailable: AtomicU64,
    opened: Instant,
}

enum Engine {
    Postgres(postgres::Pg),
    Sqlite(sqlite::Lite),
}

/// An error that may be the database's: readiness follows those.
pub trait MaybeDbError {
    fn db_error(&self) -> Option<&DbError>;
}

impl MaybeDbError for DbError {
    fn db_error(&self) -> Option<&DbError> {
        Some(self)
    }
}

impl Db {
    /// A pool that connects on first use: the server listens before the
    /// database answers (see [`start`]).
    pub fn open(settings: &DatabaseSettings, readiness: Arc<Readiness>) -> Result<Db, DbError> {
        let postgres = !settings.url.starts_with("sqlite:");
        let engine = if postgres {
            Engine::Postgres(postgres::Pg::open(settings)?)
        } else {
            Engine::Sqlite(sqlite::Lite::open(settings, Arc::clone(&readiness))?)
        };
        Ok(Db(Arc::new(Inner {
            engine,
            readiness,
            deadline: postgres
                .then(|| ACQUIRE_TIMEOUT + settings.statement_timeout + DEADLINE_SLACK),
            probing: AtomicBool::new(false),
            last_answer: AtomicU64::new(0),
            last_unavailable: AtomicU64::new(0),
            opened: Instant::now(),
        })))
    }

    pub fn dialect(&self) -> Dialect {
        match self.0.engine {
            Engine::Postgres(_) => Dialect::Postgres,
            Engine::Sqlite(_) => Dialect::Sqlite,
        }
    }

    pub fn readiness(&self) -> &Readiness {
        &self.0.readiness
    }

    /// Reads: each statement's rows. Several statements see one snapshot
    /// (one transaction); on PostgreSQL they take one round trip.
    pub async fn read(&self, stmts: &[Stmt]) -> Result<Vec<Rows>, DbError> {
        self.bounded(async {
            match &self.0.engine {
                Engine::Postgres(pg) => {
                    let mut conn = pg.checkout().await?;
                    let transaction = stmts.len() > 1 || !pg.lone_statements_autocommit();
                    pg.pipeline(&mut conn, transaction, stmts, transaction)
                        .await
                }
                Engine::Sqlite(lite) => lite.read(stmts).await,
            }
        })
        .await
    }

    /// A write: `work` runs in a transaction, which commits when it returns
    /// `Ok` (its answer waits for the commit) and rolls back otherwise.
    pub async fn write<T, E>(
        &self,
        work: impl AsyncFnOnce(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DbError> + MaybeDbError,
    {
        let result = self
            .bounded(async {
                let mut tx = self.begin().await?;
                match work(&mut tx).await {
                    Ok(value) => {
                        tx.commit().await?;
                        Ok(value)
                    }
                    Err(e) => {
                        tx.rollback().await;
                        Err(e)
                    }
                }
            })
            .await;
        self.observe_write(&result);
        result
    }

    async fn begin(&self) -> Result<Tx<'_>, DbError> {
        Ok(match &self.0.engine {
            Engine::Postgres(pg) => Tx(TxOn::Postgres {
                pg,
                conn: pg.checkout().await?,
            }),
            Engine::Sqlite(lite) => {
                let turn = lite.turn().await?;
                Tx(TxOn::Sqlite {
                    tx: Some(lite.begin_write().await?),
                    _turn: turn,
                })
            }
        })
    }

    /// The rows of `stmt` as they arrive, for a listing: its memory does not
    /// grow with its length. Each wait for the database is bounded (see
    /// [`Db::bounded`]), not the whole stream: a client may read slowly.
    pub async fn list(
        &self,
        stmt: Stmt,
    ) -> Result<impl Stream<Item = Result<Row, DbError>> + Send + use<>, DbError> {
        let rows: std::pin::Pin<Box<dyn Stream<Item = Result<Row, DbError>> + Send>> =
            match &self.0.engine {
                Engine::Postgres(pg) => {
                    let conn = self.bounded(pg.checkout()).await?;
                    Box::pin(self.bounded(pg.stream(conn, stmt)).await?)
                }
                Engine::Sqlite(lite) => Box::pin(lite.stream(stmt)),
            };
        let deadline = self.0.deadline;
        Ok(
            futures_util::stream::unfold(rows, move |mut rows| async move {
                let next = match deadline {
                    None => rows.next().await,
                    Some(deadline) => match tokio::time::timeout(deadline, rows.next()).await {
                        Ok(next) => next,
                        Err(_) => Some(Err(no_answer_within(deadline))),
                    },
                };
                next.map(|row| (row, rows))
            })
            .fuse(),
        )
    }

    /// Runs one request's database work under a deadline of the service's
    /// own, answered as "unavailable" (503) when it passes.
    ///
    /// Why: `statement_timeout` is enforced by the server, and the drivers
    /// have no read timeout. A PostgreSQL that hangs with its connections
    /// open (a suspended VM, an I/O stall, a network that drops packets)
    /// enforces nothing. The deadline is the longest legitimate wait: a
    /// connection, one statement (waiting for a lock, say) and some slack.
    /// A write cut short may still commit when the database resumes, as
    /// when a connection drops during COMMIT: the 503 tells the client to
    /// retry, and a retry with its `Idempotency-Key` is answered safely.
    /// SQLite runs in this process and waits at most its busy timeout.
    pub async fn bounded<T, E: From<DbError> + MaybeDbError>(
        &self,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        // Boxed: database futures are large, and each layer above would copy them.
        let work = Box::pin(work);
        let result = match self.0.deadline {
            None => work.await,
            Some(deadline) => match tokio::time::timeout(deadline, work).await {
                Ok(result) => result,
                Err(_) => Err(E::from(no_answer_within(deadline))),
            },
        };
        match &result {
            Ok(_) => self.answered(),
            Err(e)
                if e.db_error()
                    .is_some_and(|e| e.failure() == Some(Failure::Unavailable)) =>
            {
                let now = self.millis();
                self.0.last_unavailable.fetch_max(now, Ordering::Relaxed);
            }
            Err(_) => {}
        }
        result
    }

    /// The database just answered (see [`Db::ping`]).
    fn answered(&self) {
        let now = self.millis();
        self.0.last_answer.fetch_max(now, Ordering::Relaxed);
    }

    fn millis(&self) -> u64 {
        // At least 1: 0 means "never".
        (self.0.opened.elapsed().as_millis() as u64).max(1)
    }

    /// Readiness and logs follow the outcome of every write.
    fn observe_write<T, E: MaybeDbError>(&self, result: &Result<T, E>) {
        match result {
            Ok(_) => {
                if self.readiness().write_succeeded() {
                    tracing::info!("writes succeed again; ready");
                }
            }
            Err(e) => {
                if let Some(err) = e.db_error()
                    && err.failure() == Some(Failure::Storage)
                {
                    if self.readiness().write_failed(&err.to_string()) {
                        tracing::error!(error = %err, "the database cannot store writes; answering 503 and not ready until a write succeeds");
                    }
                    self.spawn_write_probe();
                }
            }
        }
    }

    /// While writes fail, a write of our own every second finds out when
    /// storage is back (a user's successful write ends it sooner).
    fn spawn_write_probe(&self) {
        if self.0.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let db = self.clone();
        tokio::spawn(async move {
            while db.readiness().writes_failing() {
                tokio::time::sleep(WRITE_PROBE_INTERVAL).await;
                if let Err(e) = db.probe_write().await {
                    tracing::debug!(error = %e, "probe write failed");
                }
            }
            db.0.probing.store(false, Ordering::Release);
        });
    }

    /// One committed write that touches no user data.
    pub(crate) async fn probe_write(&self) -> Result<(), DbError> {
        let stmt = self.dialect().raw(
            "INSERT INTO service_probe (id, probed_at) VALUES (1, CURRENT_TIMESTAMP) \
             ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
            [],
        );
        self.write(async |tx| tx.run_and_commit(std::slice::from_ref(&stmt)).await)
            .await
            .map(|_| ())
    }

    /// Does the database answer, within [`PING_TIMEOUT`]? A request's
    /// statement answered that recently says so already: a busy instance
    /// is not asked to queue a ping behind its requests (it would answer
    /// late, or 503, while the database is fine).
    pub async fn ping(&self) -> Result<(), DbError> {
        let last = self.0.last_answer.load(Ordering::Relaxed);
        let recent = self.millis().saturating_sub(last) < PING_TIMEOUT.as_millis() as u64;
        if last > 0 && recent && last > self.0.last_unavailable.load(Ordering::Relaxed) {
            return Ok(());
        }
        let ping = async {
            match &self.0.engine {
                Engine::Postgres(pg) => pg.ping().await,
                Engine::Sqlite(lite) => lite.ping().await,
            }
        };
        match tokio::time::timeout(PING_TIMEOUT, ping).await {
            Ok(Ok(())) => {
                self.answered();
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(no_answer_within(PING_TIMEOUT)),
        }
    }

    /// Open and idle connections of the pool (metrics).
    pub fn pool_status(&self) -> (usize, usize) {
        match &self.0.engine {
            Engine::Postgres(pg) => pg.status(),
            Engine::Sqlite(lite) => lite.status(),
        }
    }
}

/// A write's transaction: statements run in batches, each batch one round
/// trip on PostgreSQL (the first also carries `BEGIN`).
pub struct Tx<'a>(TxOn<'a>);

enum TxOn<'a> {
    Postgres {
        pg: &'a postgres::Pg,
        conn: postgres::Checkout,
    },
    Sqlite {
        /// `None` once committed.
        tx: Option<sqlx::Transaction<'static, sqlx::Sqlite>>,
        _turn: sqlite::Turn,
    },
}

use sea_orm::sqlx;

impl Tx<'_> {
    /// Runs `stmts`; more may follow.
    pub async fn run(&mut self, stmts: &[Stmt]) -> Result<Vec<Rows>, DbError> {
        self.batch(stmts, false).await
    }

    /// Runs `stmts` and commits, in the same round trip on PostgreSQL.
    pub async fn run_and_commit(&mut self, stmts: &[Stmt]) -> Result<Vec<Rows>, DbError> {
        self.batch(stmts, true).await
    }

    async fn batch(&mut self, stmts: &[Stmt], commit: bool) -> Result<Vec<Rows>, DbError> {
        match &mut self.0 {
            TxOn::Postgres { pg, conn } => {
                // A transaction of one statement is the statement alone
                // (autocommit), unless a pooler needs the transaction's settings.
                let open = conn.in_transaction();
                if commit && !open && stmts.len() == 1 && pg.lone_statements_autocommit() {
                    return pg.pipeline(conn, false, stmts, false).await;
                }
                pg.pipeline(conn, !open, stmts, commit).await
            }
            TxOn::Sqlite { tx, .. } => {
                let conn = tx
                    .as_mut()
                    .ok_or_else(|| DbError::bug("a statement after the commit"))?;
                let mut results = Vec::with_capacity(stmts.len());
                for stmt in stmts {
                    results.push(sqlite::run(conn, stmt).await?);
                }
                if commit && let Some(tx) = tx.take() {
                    tx.commit().await?;
                }
                Ok(results)
            }
        }
    }

    async fn commit(&mut self) -> Result<(), DbError> {
        match &mut self.0 {
            TxOn::Postgres { pg, conn } if conn.in_transaction() => {
                pg.pipeline(conn, false, &[], true).await.map(|_| ())
            }
            TxOn::Postgres { .. } => Ok(()),
            TxOn::Sqlite { tx, .. } => match tx.take() {
                Some(tx) => Ok(tx.commit().await?),
                None => Ok(()),
            },
        }
    }

    /// Ends a transaction that will not commit. A failure leaves the
    /// connection to be closed (see `postgres::Checkout`).
    async fn rollback(&mut self) {
        match &mut self.0 {
            TxOn::Postgres { pg, conn } if conn.in_transaction() => {
                if let Err(e) = pg.rollback(conn).await {
                    tracing::debug!(error = %e, "rollback failed; the connection is closed");
                }
            }
            TxOn::Postgres { .. } => {}
            TxOn::Sqlite { tx, .. } => {
                if let Some(tx) = tx.take()
                    && let Err(e) = tx.rollback().await
                {
                    tracing::debug!(error = %e, "rollback failed");
                }
            }
        }
    }
}

/// What passing a deadline answers: unavailable (503).
fn no_answer_within(deadline: Duration) -> DbError {
    DbError::unavailable(format!(
        "no answer from the database within {:.1} s",
        deadline.as_secs_f64()
    ))
}
