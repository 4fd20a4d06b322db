//! Statements executed on sqlx directly, for SeaORM's query builders.
//!
//! SeaORM builds every statement; running them through its connection types
//! costs a request more than the database does (kilobyte futures copied
//! several times, a tracing span per statement), so the pools and the
//! transactions here implement SeaORM's connection traits on sqlx itself.
//!
//! Transactions are managed by hand (`BEGIN` ... `COMMIT`): a transaction
//! that does not end with a successful `COMMIT` or `ROLLBACK` closes its
//! connection instead of handing it back to the pool (SQLite rolls back by
//! itself when a `COMMIT` fails on a full disk, and such a connection must
//! not be reused with any idea of what it is in).
//!
//! Behind a transaction-mode pooler (PgBouncer, Neon's `-pooler` hosts) the
//! same transaction type runs with unnamed statements (`persistent(false)`:
//! PgBouncer before 1.21 cannot route named ones, and names would collide
//! across clients) and `SET LOCAL statement_timeout`; every statement is in
//! a transaction there, so the pooler keeps one server connection for it.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use std::sync::Arc;

use sea_orm::sqlx::{self, Postgres, Sqlite, SqlitePool, pool::PoolConnection};
use sea_orm::{DbErr, ExecResult, QueryResult, RuntimeErr, Statement};
use tokio::sync::Mutex;

use super::leases::{Lease, Leases};

pub(crate) fn exec_err(e: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(e.into()))
}

pub(crate) fn query_err(e: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(e.into()))
}

pub(crate) fn acquire_err(e: sqlx::Error) -> DbErr {
    DbErr::Conn(RuntimeErr::SqlxError(e.into()))
}

pub(super) type RowStream<'a> = Pin<Box<dyn Stream<Item = Result<QueryResult, DbErr>> + Send + 'a>>;

/// A statement with its values, named (prepared once per connection and
/// cached) unless `persistent` is false.
macro_rules! query {
    ($db:ty, $stmt:expr, $persistent:expr) => {{
        let values = $stmt
            .values
            .clone()
            .unwrap_or(::sea_orm::Values(Vec::new()));
        ::sea_orm::sqlx::query_with::<$db, _>(
            ::sea_orm::sqlx::AssertSqlSafe($stmt.sql.as_str()),
            ::sea_query_sqlx::SqlxValues(values),
        )
        .persistent($persistent)
    }};
}

/// Runs statements on `$executor` (a pool, or `&mut *connection`).
macro_rules! run {
    (execute, $db:ty, $executor:expr, $stmt:expr, $persistent:expr) => {
        $crate::db::pooled::query!($db, $stmt, $persistent)
            .execute($executor)
            .await
            .map(::sea_orm::ExecResult::from)
            .map_err($crate::db::pooled::exec_err)
    };
    (one, $db:ty, $executor:expr, $stmt:expr, $persistent:expr) => {
        $crate::db::pooled::query!($db, $stmt, $persistent)
            .fetch_optional($executor)
            .await
            .map(|row| row.map(::sea_orm::QueryResult::from))
            .map_err($crate::db::pooled::query_err)
    };
    (all, $db:ty, $executor:expr, $stmt:expr, $persistent:expr) => {
        $crate::db::pooled::query!($db, $stmt, $persistent)
            .fetch_all($executor)
            .await
            .map(|rows| rows.into_iter().map(::sea_orm::QueryResult::from).collect())
            .map_err($crate::db::pooled::query_err)
    };
    (unprepared, $executor:expr, $sql:expr) => {
        ::sea_orm::sqlx::raw_sql(::sea_orm::sqlx::AssertSqlSafe($sql.to_owned()))
            .execute($executor)
            .await
            .map(::sea_orm::ExecResult::from)
            .map_err($crate::db::pooled::exec_err)
    };
}

pub(crate) use {query, run};

/// A connection held for a transaction: a SQLite pool's, or a PostgreSQL
/// lease (see [`super::leases`]).
pub trait Held: Send {
    /// Closed when dropped, never reused.
    fn close_on_drop(&mut self);
    /// Nothing pending on it: it may serve the next unit of work as it is.
    fn finished_cleanly(&mut self);
}

impl Held for PoolConnection<Sqlite> {
    fn close_on_drop(&mut self) {
        PoolConnection::close_on_drop(self);
    }
    fn finished_cleanly(&mut self) {}
}

impl Held for Lease {
    fn close_on_drop(&mut self) {
        Lease::close_on_drop(self);
    }
    fn finished_cleanly(&mut self) {
        Lease::finished_cleanly(self);
    }
}

/// One transaction on one connection.
pub struct Transaction<C: Held> {
    conn: Mutex<C>,
    /// Named (cached) statements; false behind a transaction-mode pooler.
    pub(super) persistent: bool,
    open: bool,
    /// SQLite: the writer's turn (see `writers`), given back when the
    /// transaction is over (fields drop after `Drop::drop` has run).
    turn: Option<super::writers::Turn>,
}

/// The SQLite pool hands out its connections; PostgreSQL's come as leases.
pub(super) async fn acquire_sqlite(pool: &SqlitePool) -> Result<PoolConnection<Sqlite>, DbErr> {
    // Boxed: sqlx's acquire future is ~14 KiB (see `Leases::acquire`).
    Box::pin(pool.acquire()).await.map_err(acquire_err)
}

async fn acquire_postgres(leases: &Arc<Leases>) -> Result<Lease, DbErr> {
    leases.acquire().await.map_err(acquire_err)
}

macro_rules! transaction_impl {
    ($db:ty, $held:ty, $source:ty, $acquire:ident) => {
        impl Transaction<$held> {
            /// `begin` is the opening statement(s), sent in one round trip.
            pub async fn begin(
                source: &$source,
                begin: &str,
                persistent: bool,
            ) -> Result<Self, DbErr> {
                let conn = $acquire(source).await?;
                // The guard exists before `BEGIN` is sent. If this future is
                // dropped (the client went away) after the database ran it
                // but before its answer was read, or if it failed, the
                // connection is closed: back in the pool it would still be
                // inside a transaction, and on SQLite every later `BEGIN`
                // on it failed, while on PostgreSQL later statements on it
                // ran in a transaction no one commits (holding its locks).
                let mut txn = Transaction {
                    conn: Mutex::new(conn),
                    persistent,
                    open: true,
                    turn: None,
                };
                run!(unprepared, &mut **txn.conn.get_mut(), begin)?;
                Ok(txn)
            }

            /// Keeps `turn` until the transaction is over.
            pub fn holding(mut self, turn: Option<super::writers::Turn>) -> Self {
                self.turn = turn;
                self
            }

            /// Its error is the write's: a write is acknowledged only once this succeeded.
            pub async fn commit(mut self) -> Result<(), DbErr> {
                self.end("COMMIT").await
            }

            pub async fn rollback(mut self) -> Result<(), DbErr> {
                self.end("ROLLBACK").await
            }

            async fn end(&mut self, how: &str) -> Result<(), DbErr> {
                let conn = self.conn.get_mut();
                run!(unprepared, &mut **conn, how)?;
                self.open = false;
                conn.finished_cleanly();
                Ok(())
            }

            pub async fn execute(&self, stmt: &Statement) -> Result<ExecResult, DbErr> {
                let mut conn = self.conn.lock().await;
                run!(execute, $db, &mut **conn, stmt, self.persistent)
            }

            pub async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
                let mut conn = self.conn.lock().await;
                run!(unprepared, &mut **conn, sql)
            }

            pub async fn query_one(&self, stmt: &Statement) -> Result<Option<QueryResult>, DbErr> {
                let mut conn = self.conn.lock().await;
                run!(one, $db, &mut **conn, stmt, self.persistent)
            }

            pub async fn query_all(&self, stmt: &Statement) -> Result<Vec<QueryResult>, DbErr> {
                let mut conn = self.conn.lock().await;
                run!(all, $db, &mut **conn, stmt, self.persistent)
            }

            pub fn stream(&self, stmt: Statement) -> RowStream<'_> {
                Box::pin(async_stream::stream! {
                    let mut conn = self.conn.lock().await;
                    let mut rows = query!($db, stmt, self.persistent).fetch(&mut **conn);
                    while let Some(row) = rows.next().await {
                        yield row.map(QueryResult::from).map_err(query_err);
                    }
                })
            }
        }
    };
}

transaction_impl!(Postgres, Lease, Arc<Leases>, acquire_postgres);
transaction_impl!(Sqlite, PoolConnection<Sqlite>, SqlitePool, acquire_sqlite);

impl<C: Held> Drop for Transaction<C> {
    fn drop(&mut self) {
        // A connection inside a transaction (or after a COMMIT that failed)
        // never goes back to the pool: closing it ends the transaction.
        if self.open {
            self.conn.get_mut().close_on_drop();
        }
    }
}
