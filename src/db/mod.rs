//! The database behind one small interface, [`Db::read`], [`Db::write`] and
//! [`Db::list`], over PostgreSQL ([`postgres`]) or SQLite ([`sqlite`]).
//!
//! It applies, in one place, what every request's database work needs: a
//! deadline ([`Db::bounded`]), the SQLite writer's turn, the rule that a
//! write is acknowledged only once committed, and readiness following the
//! outcome (a storage failure: not ready until a write succeeds again).

mod errors;
mod migrate;
mod postgres;
mod sql;
mod sqlite;
mod tls;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{Stream, StreamExt};

pub use errors::{DbError, Failure};
pub use migrate::{describe_migration_error, migrate};
pub use postgres::connect_once;
pub use sql::{Column, Dialect, Row, Rows, Stmt, now};

use crate::config::DatabaseSettings;
use crate::readiness::Readiness;

/// A request waiting for a connection to a dead database answers 503 this soon.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// `/health/ready` waits this long for the database.
const PING_TIMEOUT: Duration = Duration::from_millis(800);

/// The database: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Db(Arc<Inner>);

struct Inner {
    engine: Engine,
    readiness: Arc<Readiness>,
    deadline: Option<Duration>,
    probing: AtomicBool,
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

type RowStream = Pin<Box<dyn Stream<Item = Result<Row, DbError>> + Send>>;

impl Db {
    /// A pool that connects on first use: the server listens before the
    /// database answers.
    pub fn open(settings: &DatabaseSettings, readiness: Arc<Readiness>) -> Result<Db, DbError> {
        let (engine, deadline) = if settings.url().starts_with("sqlite:") {
            let lite = sqlite::Lite::open(settings, Arc::clone(&readiness))?;
            (Engine::Sqlite(lite), None)
        } else {
            // The longest legitimate wait: a connection, a statement, slack.
            let deadline = ACQUIRE_TIMEOUT + settings.db_statement_timeout + Duration::from_secs(2);
            (
                Engine::Postgres(postgres::Pg::open(settings)?),
                Some(deadline),
            )
        };
        let probing = AtomicBool::new(false);
        Ok(Db(Arc::new(Inner {
            engine,
            readiness,
            deadline,
            probing,
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

    /// Each statement's rows; several statements see one snapshot (one
    /// transaction, one round trip on PostgreSQL).
    pub async fn read(&self, stmts: &[Stmt]) -> Result<Vec<Rows>, DbError> {
        self.bounded(async {
            match &self.0.engine {
                Engine::Postgres(pg) => pg.read(stmts).await,
                Engine::Sqlite(lite) => lite.read(stmts).await,
            }
        })
        .await
    }

    /// A write: `work` runs in a transaction, which commits when it returns
    /// `Ok` (the answer waits for the commit) and rolls back otherwise.
    pub async fn write<T, E>(
        &self,
        work: impl AsyncFnOnce(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DbError> + MaybeDbError,
    {
        let result = self
            .bounded(async {
                let mut tx = match &self.0.engine {
                    Engine::Postgres(pg) => Tx::Postgres(pg, pg.checkout().await?),
                    Engine::Sqlite(lite) => Tx::Sqlite(lite.begin_write().await?),
                };
                match work(&mut tx).await {
                    Ok(value) => tx.commit().await.map(|()| value).map_err(E::from),
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

    /// The rows of `stmt` as they arrive (a listing: memory does not grow
    /// with its length). Each wait for a row is bounded, not the whole
    /// stream: a client may read slowly.
    pub async fn list(&self, stmt: Stmt) -> Result<RowStream, DbError> {
        let rows: RowStream = match &self.0.engine {
            Engine::Postgres(pg) => Box::pin(self.bounded(pg.stream(stmt)).await?),
            Engine::Sqlite(lite) => Box::pin(lite.stream(stmt)),
        };
        let deadline = self.0.deadline;
        let rows = futures_util::stream::unfold(rows, move |mut rows| async move {
            let next = match deadline {
                None => rows.next().await,
                Some(limit) => tokio::time::timeout(limit, rows.next())
                    .await
                    .unwrap_or_else(|_| Some(Err(no_answer_within(limit)))),
            };
            next.map(|row| (row, rows))
        });
        Ok(Box::pin(rows.fuse()))
    }

    /// Runs one request's database work under a deadline of our own, past
    /// which it is "unavailable" (503). `statement_timeout` is the server's
    /// and the drivers have no read timeout: a PostgreSQL that hangs with
    /// its connections open (a suspended VM, a network dropping packets)
    /// enforces nothing. SQLite runs in this process and waits at most its
    /// busy timeout.
    pub async fn bounded<T, E>(&self, work: impl Future<Output = Result<T, E>>) -> Result<T, E>
    where
        E: From<DbError> + MaybeDbError,
    {
        // Boxed: database futures are large, and each layer above would copy them.
        let work = Box::pin(work);
        let result = match self.0.deadline {
            None => work.await,
            Some(limit) => tokio::time::timeout(limit, work)
                .await
                .unwrap_or_else(|_| Err(E::from(no_answer_within(limit)))),
        };
        match &result {
            Ok(_) => self.readiness().database_answered(),
            Err(e) if e.db_error().and_then(DbError::failure) == Some(Failure::Unavailable) => {
                self.readiness().database_unavailable();
            }
            Err(_) => {}
        }
        result
    }

    fn observe_write<T, E: MaybeDbError>(&self, result: &Result<T, E>) {
        let storage_failed = match result {
            Ok(_) if self.readiness().write_succeeded() => {
                tracing::info!("writes succeed again; ready");
                return;
            }
            Ok(_) => return,
            Err(e) => e
                .db_error()
                .filter(|e| e.failure() == Some(Failure::Storage)),
        };
        let Some(err) = storage_failed else { return };
        if self.readiness().write_failed(&err.to_string()) {
            tracing::error!(error = %err, "the database cannot store writes; answering 503 and not ready until a write succeeds");
        }
        // While writes fail, a write of our own every second finds out when
        // storage is back (a user's successful write ends it sooner).
        if !self.0.probing.swap(true, Ordering::AcqRel) {
            let db = self.clone();
            tokio::spawn(async move {
                while db.readiness().writes_failing() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if let Err(e) = db.probe_write().await {
                        tracing::debug!(error = %e, "probe write failed");
                    }
                }
                db.0.probing.store(false, Ordering::Release);
            });
        }
    }

    /// One committed write that touches no user data.
    pub async fn probe_write(&self) -> Result<(), DbError> {
        let stmt = self.dialect().raw(
            "INSERT INTO service_probe (id, probed_at) VALUES (1, CURRENT_TIMESTAMP) \
             ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
            [],
        );
        self.write(async |tx| tx.run_and_commit(std::slice::from_ref(&stmt)).await)
            .await
            .map(|_| ())
    }

    /// Does the database answer, within [`PING_TIMEOUT`]?
    pub async fn ping(&self) -> Result<(), DbError> {
        if self.readiness().database_answered_within(PING_TIMEOUT) {
            return Ok(());
        }
        let ping = async {
            match &self.0.engine {
                Engine::Postgres(pg) => pg.read(&[]).await.map(|_| ()),
                Engine::Sqlite(lite) => lite.read(&[]).await.map(|_| ()),
            }
        };
        let result = tokio::time::timeout(PING_TIMEOUT, ping)
            .await
            .unwrap_or_else(|_| Err(no_answer_within(PING_TIMEOUT)));
        if result.is_ok() {
            self.readiness().database_answered();
        }
        result
    }

    /// Open and idle connections of the pool (metrics).
    pub fn pool_status(&self) -> (usize, usize) {
        match &self.0.engine {
            Engine::Postgres(pg) => pg.status(),
            Engine::Sqlite(lite) => lite.status(),
        }
    }
}

/// A write's transaction: statements run in batches, each one round trip
/// on PostgreSQL (the first also carries `BEGIN`, the last `COMMIT`).
pub enum Tx<'a> {
    #[doc(hidden)]
    Postgres(&'a postgres::Pg, postgres::Checkout),
    #[doc(hidden)]
    Sqlite(sqlite::Write),
}

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
        match self {
            Tx::Postgres(pg, conn) => pg.batch(conn, stmts, commit).await,
            Tx::Sqlite(write) => write.batch(stmts, commit).await,
        }
    }

    async fn commit(&mut self) -> Result<(), DbError> {
        match self {
            Tx::Postgres(pg, conn) if conn.in_transaction() => pg.batch(conn, &[], true).await,
            Tx::Postgres(..) => Ok(vec![]),
            Tx::Sqlite(write) => write.batch(&[], true).await,
        }
        .map(|_| ())
    }

    /// Ends a transaction that will not commit (a connection whose rollback
    /// fails is closed, which rolls back too).
    async fn rollback(&mut self) {
        let result = match self {
            Tx::Postgres(pg, conn) => pg.rollback(conn).await,
            Tx::Sqlite(write) => write.rollback().await,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "rollback failed");
        }
    }
}

fn no_answer_within(limit: Duration) -> DbError {
    DbError::unavailable(format!(
        "no answer from the database within {:.1} s",
        limit.as_secs_f64()
    ))
}
