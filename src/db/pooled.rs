//! Units of work behind a transaction-mode pooler (PgBouncer, Neon's
//! `-pooler` hosts).
//!
//! Such a pooler lends a server connection for one transaction only, so:
//! every statement runs inside an explicit transaction (between two of
//! sqlx's syncs, the pooler could hand an unnamed statement's connection to
//! someone else); statements are unnamed (`persistent(false)`: PgBouncer
//! before 1.21 cannot route named ones, and their names would collide across
//! clients); and the only session setting, `statement_timeout`, is `SET LOCAL`.
//! SeaORM cannot issue unnamed statements, so this unit implements its
//! connection traits on sqlx directly; the store's queries stay the same.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use sea_orm::sqlx::{self, Postgres, pool::PoolConnection, postgres::PgRow};
use sea_orm::{
    ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr, Statement, StreamTrait,
    Values,
};
use sea_query_sqlx::SqlxValues;
use tokio::sync::Mutex;

/// One transaction on one pooled connection.
pub struct PooledUnit {
    conn: Mutex<PoolConnection<Postgres>>,
    open: bool,
}

fn exec_err(e: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(e.into()))
}

fn query_err(e: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(e.into()))
}

impl PooledUnit {
    /// `BEGIN` and `SET LOCAL statement_timeout` in one round trip.
    pub async fn begin(pool: &sqlx::PgPool, set_local_timeout: &str) -> Result<Self, DbErr> {
        let mut conn = pool
            .acquire()
            .await
            .map_err(|e| DbErr::Conn(RuntimeErr::SqlxError(e.into())))?;
        let begin = format!("BEGIN; {set_local_timeout}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(begin))
            .execute(&mut *conn)
            .await
            .map_err(exec_err)?;
        Ok(PooledUnit {
            conn: Mutex::new(conn),
            open: true,
        })
    }

    pub async fn commit(mut self) -> Result<(), DbErr> {
        self.end("COMMIT").await
    }

    pub async fn rollback(mut self) -> Result<(), DbErr> {
        self.end("ROLLBACK").await
    }

    async fn end(&mut self, how: &'static str) -> Result<(), DbErr> {
        let conn = self.conn.get_mut();
        sqlx::raw_sql(how)
            .execute(&mut **conn)
            .await
            .map_err(exec_err)?;
        self.open = false;
        Ok(())
    }
}

impl Drop for PooledUnit {
    fn drop(&mut self) {
        // Never hand a connection inside a transaction back to the pool:
        // closing it ends the transaction (rolled back) at the pooler.
        if self.open {
            self.conn.get_mut().close_on_drop();
        }
    }
}

fn unnamed(stmt: &Statement) -> sqlx::query::Query<'_, Postgres, SqlxValues> {
    let values = stmt.values.clone().unwrap_or(Values(Vec::new()));
    sqlx::query_with(sqlx::AssertSqlSafe(stmt.sql.as_str()), SqlxValues(values)).persistent(false)
}

#[async_trait::async_trait]
impl ConnectionTrait for PooledUnit {
    fn get_database_backend(&self) -> DbBackend {
        DbBackend::Postgres
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        let mut conn = self.conn.lock().await;
        unnamed(&stmt)
            .execute(&mut **conn)
            .await
            .map(ExecResult::from)
            .map_err(exec_err)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        let mut conn = self.conn.lock().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut **conn)
            .await
            .map(ExecResult::from)
            .map_err(exec_err)
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        let mut conn = self.conn.lock().await;
        unnamed(&stmt)
            .fetch_optional(&mut **conn)
            .await
            .map(|row| row.map(QueryResult::from))
            .map_err(query_err)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        let mut conn = self.conn.lock().await;
        unnamed(&stmt)
            .fetch_all(&mut **conn)
            .await
            .map(|rows| rows.into_iter().map(QueryResult::from).collect())
            .map_err(query_err)
    }

    fn support_returning(&self) -> bool {
        true
    }
}

impl StreamTrait for PooledUnit {
    type Stream<'a> = Pin<Box<dyn Stream<Item = Result<QueryResult, DbErr>> + Send + 'a>>;

    fn get_database_backend(&self) -> DbBackend {
        DbBackend::Postgres
    }

    fn stream_raw<'a>(
        &'a self,
        stmt: Statement,
    ) -> Pin<Box<dyn Future<Output = Result<Self::Stream<'a>, DbErr>> + 'a + Send>> {
        Box::pin(async move {
            let rows = async_stream::stream! {
                let mut conn = self.conn.lock().await;
                let mut rows = unnamed(&stmt).fetch(&mut **conn);
                while let Some(row) = rows.next().await {
                    yield row.map(|r: PgRow| QueryResult::from(r)).map_err(query_err);
                }
            };
            Ok(Box::pin(rows) as Self::Stream<'a>)
        })
    }
}
