//! The database behind three calls: [`Db::read`], [`Db::write`] and
//! [`Db::list`], over PostgreSQL ([`postgres`]) or SQLite ([`sqlite`]).
//!
//! A request's work is a list of statements run in order in one
//! transaction, one round trip on PostgreSQL. Here, in one place, it gets a
//! deadline ([`Db::bounded`]), the SQLite writer's turn, the rule that a
//! write is answered only once committed, and readiness following it.

mod errors;
mod postgres;
mod sql;
mod sqlite;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};

pub use errors::{DbError, Failure};
pub use sql::{Column, Dialect, Row, Rows, Stmt};

use crate::config::DatabaseSettings;
use crate::readiness::Readiness;

/// A request waiting for a connection to a dead database answers 503 this soon.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// `/health/ready` waits this long for the database.
const PING_TIMEOUT: Duration = Duration::from_millis(800);

/// Whose work it is. A user's runs, on PostgreSQL, in a transaction that
/// sets the user and (row-level security on) takes the request role, so
/// the database itself refuses any other user's rows.
#[derive(Clone, Copy, Debug)]
pub enum Caller<'a> {
    /// A request of this (verified) user.
    User(&'a str),
    /// The service's own work: start-up checks, the readiness probe, the
    /// purge of expired keys; no user's rows (see `specs/database`).
    Service,
}

/// The database: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Db(Arc<Inner>);

struct Inner {
    engine: Engine,
    readiness: Arc<Readiness>,
    deadline: Option<Duration>,
}

enum Engine {
    Postgres(postgres::Pg),
    Sqlite(sqlite::Lite),
}

pub type RowStream = Pin<Box<dyn Stream<Item = Result<Row, DbError>> + Send>>;

impl Db {
    /// A pool that connects on first use: the server listens before the
    /// database answers.
    pub fn open(settings: &DatabaseSettings, readiness: Arc<Readiness>) -> Result<Db, DbError> {
        let (engine, deadline) = if settings.url().starts_with("sqlite:") {
            let lite = sqlite::Lite::open(settings, Arc::clone(&readiness))?;
            (Engine::Sqlite(lite), None)
        } else {
            // The longest legitimate wait: a connection, a statement, slack.
            let statement = settings.db_statement_timeout;
            let deadline = ACQUIRE_TIMEOUT + statement + Duration::from_secs(2);
            (
                Engine::Postgres(postgres::Pg::open(settings)?),
                Some(deadline),
            )
        };
        Ok(Db(Arc::new(Inner {
            engine,
            readiness,
            deadline,
        })))
    }

    pub fn dialect(&self) -> Dialect {
        match self.0.engine {
            Engine::Postgres(_) => Dialect::Postgres,
            Engine::Sqlite(_) => Dialect::Sqlite,
        }
    }

    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.0.readiness
    }

    /// Each statement's rows, all from one snapshot.
    pub async fn read(&self, caller: Caller<'_>, stmts: &[Stmt]) -> Result<Vec<Rows>, DbError> {
        self.bounded(self.0.deadline, self.run(caller, stmts, false))
            .await
    }

    /// A write: `stmts` in one transaction, and each one's rows once it has
    /// committed. A statement's condition may only be the database's state,
    /// or what the statements before it did (they run in order). Readiness
    /// follows the outcome (while writes fail for want of storage, a probe
    /// retries: see `upkeep`).
    pub async fn write(&self, caller: Caller<'_>, stmts: &[Stmt]) -> Result<Vec<Rows>, DbError> {
        let result = self
            .bounded(self.0.deadline, self.run(caller, stmts, true))
            .await;
        match &result {
            Ok(_) if self.readiness().write_succeeded() => {
                tracing::info!("writes succeed again; ready")
            }
            Err(e)
                if e.failure() == Some(Failure::Storage)
                    && self.readiness().write_failed(&e.to_string()) =>
            {
                tracing::error!(error = %e, "the database cannot store writes; answering 503 and not ready until a write succeeds");
            }
            _ => {}
        }
        result
    }

    async fn run(
        &self,
        caller: Caller<'_>,
        stmts: &[Stmt],
        write: bool,
    ) -> Result<Vec<Rows>, DbError> {
        match &self.0.engine {
            Engine::Postgres(pg) => pg.run(caller, stmts).await,
            Engine::Sqlite(lite) if write => lite.write(stmts).await,
            Engine::Sqlite(lite) => lite.read(stmts).await,
        }
    }

    /// The rows of `stmt` as they arrive (a listing: memory does not grow
    /// with its length). Each wait for a row is bounded, not the whole
    /// stream: a client may read slowly.
    pub async fn list(&self, caller: Caller<'_>, stmt: Stmt) -> Result<RowStream, DbError> {
        let rows: RowStream = match &self.0.engine {
            Engine::Postgres(pg) => Box::pin(
                self.bounded(self.0.deadline, pg.stream(caller, stmt))
                    .await?,
            ),
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

    /// Runs database work under a deadline of our own, past which it is
    /// "unavailable" (503). `statement_timeout` is the server's and the
    /// drivers have no read timeout: a PostgreSQL that hangs with its
    /// connections open (a suspended VM, a network dropping packets)
    /// enforces nothing. SQLite runs in this process, waiting at most its
    /// busy timeout.
    async fn bounded<T>(
        &self,
        limit: Option<Duration>,
        work: impl Future<Output = Result<T, DbError>>,
    ) -> Result<T, DbError> {
        // Boxed: database futures are large, and each layer above would copy them.
        let work = Box::pin(work);
        let result = match limit {
            None => work.await,
            Some(limit) => tokio::time::timeout(limit, work)
                .await
                .unwrap_or_else(|_| Err(no_answer_within(limit))),
        };
        match &result {
            Ok(_) => self.readiness().database_answered(),
            Err(e) if e.failure() == Some(Failure::Unavailable) => {
                self.readiness().database_unavailable()
            }
            Err(_) => {}
        }
        result
    }

    /// One committed write that touches no user data.
    pub async fn probe_write(&self) -> Result<(), DbError> {
        let stmt = self.dialect().raw(
            "INSERT INTO service_probe (id, probed_at) VALUES (1, CURRENT_TIMESTAMP) \
             ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
            [],
        );
        self.write(Caller::Service, &[stmt]).await.map(|_| ())
    }

    /// Does the database answer, within [`PING_TIMEOUT`]? A statement of
    /// a request answered that recently says so already.
    pub async fn ping(&self) -> Result<(), DbError> {
        if self.readiness().database_answered_within(PING_TIMEOUT) {
            return Ok(());
        }
        self.bounded(Some(PING_TIMEOUT), self.run(Caller::Service, &[], false))
            .await
            .map(drop)
    }

    /// Open and idle connections of the pool (metrics).
    pub fn pool_status(&self) -> (usize, usize) {
        match &self.0.engine {
            Engine::Postgres(pg) => pg.status(),
            Engine::Sqlite(lite) => lite.status(),
        }
    }
}

fn no_answer_within(limit: Duration) -> DbError {
    let seconds = limit.as_secs_f64();
    DbError::unavailable(format!("no answer from the database within {seconds:.1} s"))
}
