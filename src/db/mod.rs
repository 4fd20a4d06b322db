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

use futures_util::{FutureExt, Stream, StreamExt, TryStreamExt};

pub use errors::{DbError, Failure};
pub use sql::{Column, Dialect, Row, Rows, Stmt};

use crate::config::DatabaseSettings;
use crate::readiness::Readiness;

/// A request waiting for a connection to a dead database answers 503 this soon.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// `/health/ready` waits this long for the database.
const PING_TIMEOUT: Duration = Duration::from_millis(800);

/// Whose work it is. On PostgreSQL a user's runs as the request role
/// (row-level security on) with the user set, so the database itself
/// refuses any other user's rows.
#[derive(Clone, Copy, Debug)]
pub enum Caller<'a> {
    /// A request of this (verified) user.
    User(&'a str),
    /// The service's own work, as the login role: the readiness probe, the
    /// purges; no user's rows (see `specs/database`).
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
        // The longest legitimate wait on PostgreSQL: a connection, a statement, slack.
        let deadline = ACQUIRE_TIMEOUT + settings.db_statement_timeout + Duration::from_secs(2);
        let (engine, deadline) = if settings.url().starts_with("sqlite:") {
            let lite = sqlite::Lite::open(settings, Arc::clone(&readiness))?;
            (Engine::Sqlite(lite), None)
        } else {
            let pg = postgres::Pg::open(settings)?;
            (Engine::Postgres(pg), Some(deadline))
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
        let work = self.run(caller, stmts, true);
        let result = self.bounded(self.0.deadline, work).await;
        let readiness = self.readiness();
        match &result {
            Ok(_) if readiness.write_succeeded() => tracing::info!("writes succeed again; ready"),
            Err(e)
                if e.failure() == Some(Failure::Storage)
                    && readiness.write_failed(&e.to_string()) =>
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
            Engine::Postgres(pg) => {
                let mut rows: Vec<Rows> = stmts.iter().map(|_| Vec::new()).collect();
                let mut answers = std::pin::pin!(pg.pipeline(caller, stmts.to_vec())?);
                while let Some((index, row)) = answers.try_next().await? {
                    rows[index].push(row);
                }
                Ok(rows)
            }
            Engine::Sqlite(lite) => lite.run(stmts, write).await,
        }
    }

    /// The rows of `stmt` as they arrive (a listing: memory does not grow
    /// with its length), once the first (or the end) has: the database
    /// answered. Each wait for a row is bounded, not the whole stream: a
    /// client may read slowly.
    pub async fn list(&self, caller: Caller<'_>, stmt: Stmt) -> Result<RowStream, DbError> {
        let rows: RowStream = match &self.0.engine {
            Engine::Postgres(pg) => Box::pin(pg.pipeline(caller, vec![stmt])?.map_ok(|(_, r)| r)),
            Engine::Sqlite(lite) => Box::pin(lite.stream(stmt)),
        };
        let deadline = self.0.deadline;
        let rows = futures_util::stream::unfold(rows, move |mut rows| async move {
            let next = within(deadline, rows.next().map(Option::transpose)).await;
            next.transpose().map(|row| (row, rows))
        });
        let mut rows = Box::pin(rows.fuse());
        let first = self.bounded(None, async { rows.next().await.transpose() });
        let first = first.await?;
        Ok(Box::pin(
            futures_util::stream::iter(first.map(Ok)).chain(rows),
        ))
    }

    /// Database work under a deadline of ours (see [`within`]), readiness
    /// following its outcome.
    async fn bounded<T>(
        &self,
        limit: Option<Duration>,
        work: impl Future<Output = Result<T, DbError>>,
    ) -> Result<T, DbError> {
        // Boxed: database futures are large, and each layer above would copy them.
        let result = within(limit, Box::pin(work)).await;
        match &result {
            Ok(_) => self.readiness().database_answered(),
            Err(e) if e.failure() == Some(Failure::Unavailable) => {
                self.readiness().database_unavailable()
            }
            Err(_) => {}
        }
        result
    }

    /// Does the database answer, within [`PING_TIMEOUT`]? A statement of
    /// a request answered that recently says so already.
    pub async fn ping(&self) -> Result<(), DbError> {
        if self.readiness().database_answered_within(PING_TIMEOUT) {
            return Ok(());
        }
        let select = [Stmt::new("SELECT 1", [])];
        let ping = self.run(Caller::Service, &select, false);
        self.bounded(Some(PING_TIMEOUT), ping).await.map(drop)
    }

    /// Open and idle connections of the pool (metrics).
    pub fn pool_status(&self) -> (usize, usize) {
        match &self.0.engine {
            Engine::Postgres(pg) => (pg.pool.status().size, pg.pool.status().available),
            Engine::Sqlite(lite) => (lite.pool.size() as usize, lite.pool.num_idle()),
        }
    }
}

/// `work`'s outcome, or "unavailable" (503) once `limit` has passed:
/// `statement_timeout` is the server's and the driver has no read timeout,
/// so a PostgreSQL that hangs with its connections open (a suspended VM, a
/// network dropping packets) enforces nothing. SQLite runs in this process,
/// waiting at most its busy timeout (no limit).
async fn within<T>(
    limit: Option<Duration>,
    work: impl Future<Output = Result<T, DbError>>,
) -> Result<T, DbError> {
    let Some(limit) = limit else {
        return work.await;
    };
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        let seconds = limit.as_secs_f64();
        Err(DbError::unavailable(format!(
            "no answer from the database within {seconds:.1} s"
        )))
    })
}
