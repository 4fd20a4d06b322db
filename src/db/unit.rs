//! Where one unit of work's statements run: a pool (each statement
//! autocommits) or a transaction of its own. The store writes its queries
//! once, with SeaORM's builders, against [`Unit`].

use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt;
use sea_orm::sqlx::{Postgres, Sqlite, SqlitePool, pool::PoolConnection};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, Statement, StreamTrait};

use super::leases::{Lease, Leases};
use super::pooled::{RowStream, Transaction, acquire_err, acquire_sqlite, query, query_err, run};

pub enum Unit {
    /// PostgreSQL (session mode): statements autocommit, prepared once per
    /// connection, each on a connection leased for it (see [`super::leases`]).
    Postgres(Arc<Leases>),
    /// SQLite: statements autocommit.
    Sqlite(SqlitePool),
    /// A PostgreSQL transaction (and every unit behind a transaction-mode pooler).
    PgTransaction(Transaction<Lease>),
    /// A SQLite transaction (`BEGIN IMMEDIATE`).
    SqliteTransaction(Transaction<PoolConnection<Sqlite>>),
}

impl Unit {
    /// Commits the transaction, if the unit is one; its error is the
    /// write's: a write is acknowledged only once this succeeded.
    pub async fn commit(self) -> Result<(), DbErr> {
        match self {
            Unit::Postgres(_) | Unit::Sqlite(_) => Ok(()),
            Unit::PgTransaction(t) => t.commit().await,
            Unit::SqliteTransaction(t) => t.commit().await,
        }
    }

    /// Ends a transaction without keeping anything (a path that wrote nothing).
    pub async fn rollback(self) -> Result<(), DbErr> {
        match self {
            Unit::Postgres(_) | Unit::Sqlite(_) => Ok(()),
            Unit::PgTransaction(t) => t.rollback().await,
            Unit::SqliteTransaction(t) => t.rollback().await,
        }
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Unit {
    fn get_database_backend(&self) -> DbBackend {
        match self {
            Unit::Postgres(_) | Unit::PgTransaction(_) => DbBackend::Postgres,
            Unit::Sqlite(_) | Unit::SqliteTransaction(_) => DbBackend::Sqlite,
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self {
            Unit::Postgres(leases) => leased!(leases, |c| run!(execute, Postgres, c, stmt, true)),
            Unit::Sqlite(pool) => run!(execute, Sqlite, pool, stmt, true),
            Unit::PgTransaction(t) => t.execute(&stmt).await,
            Unit::SqliteTransaction(t) => t.execute(&stmt).await,
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            Unit::Postgres(leases) => leased!(leases, |c| run!(unprepared, c, sql)),
            Unit::Sqlite(pool) => run!(unprepared, pool, sql),
            Unit::PgTransaction(t) => t.execute_unprepared(sql).await,
            Unit::SqliteTransaction(t) => t.execute_unprepared(sql).await,
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Unit::Postgres(leases) => leased!(leases, |c| run!(one, Postgres, c, stmt, true)),
            Unit::Sqlite(pool) => run!(one, Sqlite, pool, stmt, true),
            Unit::PgTransaction(t) => t.query_one(&stmt).await,
            Unit::SqliteTransaction(t) => t.query_one(&stmt).await,
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Unit::Postgres(leases) => leased!(leases, |c| run!(all, Postgres, c, stmt, true)),
            Unit::Sqlite(pool) => run!(all, Sqlite, pool, stmt, true),
            Unit::PgTransaction(t) => t.query_all(&stmt).await,
            Unit::SqliteTransaction(t) => t.query_all(&stmt).await,
        }
    }

    fn support_returning(&self) -> bool {
        true
    }
}

impl StreamTrait for Unit {
    type Stream<'s>
        = RowStream<'s>
    where
        Self: 's;

    fn get_database_backend(&self) -> DbBackend {
        ConnectionTrait::get_database_backend(self)
    }

    fn stream_raw<'s>(
        &'s self,
        stmt: Statement,
    ) -> Pin<Box<dyn Future<Output = Result<Self::Stream<'s>, DbErr>> + 's + Send>> {
        Box::pin(async move {
            Ok(match self {
                Unit::Postgres(leases) => leased_stream(Arc::clone(leases), stmt),
                Unit::Sqlite(pool) => sqlite_stream(pool.clone(), stmt),
                Unit::PgTransaction(t) => t.stream(stmt),
                Unit::SqliteTransaction(t) => t.stream(stmt),
            })
        })
    }
}

/// Rows of `stmt` on one connection of `pool`, as they arrive.
fn sqlite_stream(pool: SqlitePool, stmt: Statement) -> RowStream<'static> {
    Box::pin(async_stream::stream! {
        let mut conn = match acquire_sqlite(&pool).await {
            Ok(conn) => conn,
            Err(e) => {
                yield Err(e);
                return;
            }
        };
        let mut rows = query!(Sqlite, stmt, true).fetch(&mut *conn);
        while let Some(row) = rows.next().await {
            yield row.map(QueryResult::from).map_err(query_err);
        }
    })
}

/// One statement on a leased connection, kept for the next request only if
/// the statement's answer was read whole (`Ok`); after an error the
/// connection goes back to sqlx, whose ping finds out what state it is in.
macro_rules! leased {
    ($leases:expr, |$c:ident| $run:expr) => {{
        let mut lease = $leases.acquire().await.map_err(acquire_err)?;
        let result = {
            let $c = &mut *lease;
            $run
        };
        if result.is_ok() {
            lease.finished_cleanly();
        }
        result
    }};
}

use leased;

/// Rows of `stmt` on a leased connection, as they arrive; the connection is
/// kept for the next request only if the stream was read to its end.
fn leased_stream(leases: Arc<Leases>, stmt: Statement) -> RowStream<'static> {
    Box::pin(async_stream::stream! {
        let mut lease = match leases.acquire().await {
            Ok(lease) => lease,
            Err(e) => {
                yield Err(acquire_err(e));
                return;
            }
        };
        let mut failed = false;
        {
            let mut rows = query!(Postgres, stmt, true).fetch(&mut *lease);
            while let Some(row) = rows.next().await {
                failed |= row.is_err();
                yield row.map(QueryResult::from).map_err(query_err);
            }
        }
        if !failed {
            lease.finished_cleanly();
        }
    })
}
