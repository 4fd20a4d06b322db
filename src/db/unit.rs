//! Where one unit of work's statements run: the pool itself (autocommit), a
//! SeaORM transaction, or a transaction behind a transaction-mode pooler.
//! The store writes its queries once, against [`Unit`].

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, Statement, StreamTrait,
};

use super::pooled::PooledUnit;

pub enum Unit {
    /// Statements autocommit on pooled connections (session mode).
    Pool(DatabaseConnection),
    /// An explicit transaction (SQLite's `BEGIN IMMEDIATE`, or PostgreSQL's `BEGIN`).
    Transaction(DatabaseTransaction),
    /// A transaction behind a transaction-mode pooler.
    Pooled(PooledUnit),
}

impl Unit {
    /// Commits the transaction, if the unit is one; its error is the
    /// write's: a write is acknowledged only once this succeeded.
    pub async fn commit(self) -> Result<(), DbErr> {
        match self {
            Unit::Pool(_) => Ok(()),
            Unit::Transaction(txn) => txn.commit().await,
            Unit::Pooled(unit) => unit.commit().await,
        }
    }

    /// Ends a transaction without keeping anything (a read-only path ends early).
    pub async fn rollback(self) -> Result<(), DbErr> {
        match self {
            Unit::Pool(_) => Ok(()),
            Unit::Transaction(txn) => txn.rollback().await,
            Unit::Pooled(unit) => unit.rollback().await,
        }
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Unit {
    fn get_database_backend(&self) -> DbBackend {
        match self {
            Unit::Pool(c) => ConnectionTrait::get_database_backend(c),
            Unit::Transaction(t) => ConnectionTrait::get_database_backend(t),
            Unit::Pooled(p) => ConnectionTrait::get_database_backend(p),
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self {
            Unit::Pool(c) => c.execute_raw(stmt).await,
            Unit::Transaction(t) => t.execute_raw(stmt).await,
            Unit::Pooled(p) => p.execute_raw(stmt).await,
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            Unit::Pool(c) => c.execute_unprepared(sql).await,
            Unit::Transaction(t) => t.execute_unprepared(sql).await,
            Unit::Pooled(p) => p.execute_unprepared(sql).await,
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Unit::Pool(c) => c.query_one_raw(stmt).await,
            Unit::Transaction(t) => t.query_one_raw(stmt).await,
            Unit::Pooled(p) => p.query_one_raw(stmt).await,
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Unit::Pool(c) => c.query_all_raw(stmt).await,
            Unit::Transaction(t) => t.query_all_raw(stmt).await,
            Unit::Pooled(p) => p.query_all_raw(stmt).await,
        }
    }

    fn support_returning(&self) -> bool {
        match self {
            Unit::Pool(c) => c.support_returning(),
            Unit::Transaction(t) => t.support_returning(),
            Unit::Pooled(p) => p.support_returning(),
        }
    }
}

impl StreamTrait for Unit {
    type Stream<'s>
        = Pin<Box<dyn Stream<Item = Result<QueryResult, DbErr>> + Send + 's>>
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
                Unit::Pool(c) => c.stream_raw(stmt).await?.boxed(),
                Unit::Transaction(t) => t.stream_raw(stmt).await?.boxed(),
                Unit::Pooled(p) => p.stream_raw(stmt).await?,
            })
        })
    }
}
