//! Statements as the store writes them (sea-query, rendered for the database
//! in use) and rows as they come back from either database.

use sea_orm::sea_query::{
    PostgresQueryBuilder, QueryStatementBuilder, SqliteQueryBuilder, Value, Values,
};
use sea_orm::sqlx::{self, Row as _, Sqlite, sqlite::SqliteRow};
use tokio_postgres::types::{FromSql, ToSql, Type};

use super::DbError;

/// The SQL dialect of the database in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// One statement with its values, rendered for one database.
#[derive(Debug, Clone)]
pub struct Stmt {
    pub(super) sql: String,
    pub(super) values: Values,
}

impl Dialect {
    /// A sea-query statement in this dialect.
    pub fn render(self, query: &impl QueryStatementBuilder) -> Stmt {
        let (sql, values) = match self {
            Dialect::Postgres => query.build_any(&PostgresQueryBuilder),
            Dialect::Sqlite => query.build_any(&SqliteQueryBuilder),
        };
        Stmt { sql, values }
    }
}

impl Stmt {
    /// SQL written for the database in use, with `$1`.. (PostgreSQL) or
    /// `?` (SQLite) placeholders for `values`.
    pub fn new(sql: &str, values: impl IntoIterator<Item = Value>) -> Stmt {
        Stmt {
            sql: sql.to_owned(),
            values: Values(values.into_iter().collect()),
        }
    }

    /// Tests only: the statement with its SQL rewritten.
    #[cfg(debug_assertions)]
    pub fn with_sql(mut self, rewrite: impl FnOnce(&str) -> String) -> Stmt {
        self.sql = rewrite(&self.sql);
        self
    }
}

/// A row of either database.
pub enum Row {
    Postgres(tokio_postgres::Row),
    Sqlite(SqliteRow),
}

/// The rows of one statement.
pub type Rows = Vec<Row>;

/// A value both databases decode (the column types of our migrations).
pub trait Column:
    for<'a> FromSql<'a> + for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>
{
}

impl<T> Column for T where
    T: for<'a> FromSql<'a> + for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>
{
}

impl Row {
    /// The value of the column at `index`.
    pub fn get<T: Column>(&self, index: usize) -> Result<T, DbError> {
        let value = match self {
            Row::Postgres(row) => row.try_get(index).map_err(|e| e.to_string()),
            Row::Sqlite(row) => row.try_get(index).map_err(|e| e.to_string()),
        };
        value.map_err(|e| DbError::bug(format!("column {index}: {e}")))
    }
}

/// A parameter for tokio-postgres, with the type PostgreSQL is told it has
/// (so `$1` means the same whatever the statement's context would infer).
pub(super) type PgParam = (Box<dyn ToSql + Sync + Send>, Type);

/// The values of a statement as PostgreSQL parameters. Only the kinds of
/// values the store sends have a type here; another is a bug.
pub(super) fn pg_params(values: &Values) -> Result<Vec<PgParam>, DbError> {
    let param = |value: &Value| -> Result<PgParam, DbError> {
        Ok(match value {
            Value::Bool(v) => (Box::new(*v), Type::BOOL),
            Value::Int(v) => (Box::new(*v), Type::INT4),
            Value::BigInt(v) => (Box::new(*v), Type::INT8),
            Value::BigUnsigned(v) => (
                Box::new(v.map(|n| n.min(i64::MAX as u64) as i64)),
                Type::INT8,
            ),
            Value::String(v) => (Box::new(v.clone()), Type::TEXT),
            Value::ChronoDateTimeUtc(v) => (Box::new(*v), Type::TIMESTAMPTZ),
            other => return Err(DbError::bug(format!("no PostgreSQL type for {other:?}"))),
        })
    };
    values.0.iter().map(param).collect()
}
