//! What a database error means for the caller: retry later (503), or a bug
//! (500). Each error is classified and described once, where it happens.

use sea_orm::sqlx;

/// A database error that is neither the request's fault nor a bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database cannot be reached, is shutting down or too slow now.
    Unavailable,
    /// The database answers but cannot store: disk full, read-only, I/O error.
    /// Readiness reports it until a write succeeds again.
    Storage,
}

/// A database error: its class, SQLSTATE (or SQLite code), and a
/// description fit for a log line (the database's message and hint, never
/// its `detail`, which may quote row values).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DbError {
    failure: Option<Failure>,
    code: Option<String>,
    message: String,
}

impl DbError {
    /// `None` for errors that are bugs (answered 500).
    pub fn failure(&self) -> Option<Failure> {
        self.failure
    }

    /// "Retry later" (503): unavailable, or storage failing.
    pub fn is_unavailable(&self) -> bool {
        self.failure.is_some()
    }

    /// The SQLSTATE (PostgreSQL) or result code (SQLite), when the database
    /// itself answered with an error.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        DbError {
            failure: Some(Failure::Unavailable),
            code: None,
            message: message.into(),
        }
    }

    pub(crate) fn bug(message: impl Into<String>) -> Self {
        DbError {
            failure: None,
            code: None,
            message: message.into(),
        }
    }

    /// Unique violation (PostgreSQL 23505, SQLite's SQLITE_CONSTRAINT_PRIMARYKEY/UNIQUE).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self.code(), Some("23505" | "1555" | "2067"))
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(err: tokio_postgres::Error) -> Self {
        if let Some(db) = err.as_db_error() {
            let code = db.code().code();
            let mut message = db.message().to_owned();
            if let Some(hint) = db.hint() {
                message.push_str(&format!(" (hint: {hint})"));
            }
            message.push_str(&format!(" [SQLSTATE {code}]"));
            return DbError {
                failure: classify_postgres(code),
                code: Some(code.to_owned()),
                message,
            };
        }
        // tokio-postgres names its other errors by kind; those of the
        // connection mean "unavailable", the others (a value that does not
        // convert, a column that does not exist) are bugs.
        let text = err.to_string();
        let connection = err.is_closed()
            || [
                "error communicating",
                "error performing TLS",
                "error connecting",
                "timeout",
                "unexpected message",
                "error parsing response",
                "authentication error",
            ]
            .iter()
            .any(|kind| text.starts_with(kind));
        let message = match std::error::Error::source(&err) {
            Some(source) => format!("{text}: {source}"),
            None => text,
        };
        DbError {
            failure: connection.then_some(Failure::Unavailable),
            code: None,
            message,
        }
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match err {
            PoolError::Backend(e) => e.into(),
            PoolError::Timeout(_) => {
                DbError::unavailable("no database connection free within the acquire timeout")
            }
            other => DbError::unavailable(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for DbError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned());
                let failure = code.as_deref().and_then(classify_sqlite);
                let message = match &code {
                    Some(code) => format!("{} [code {code}]", db.message()),
                    None => db.message().to_owned(),
                };
                DbError {
                    failure,
                    code,
                    message,
                }
            }
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => DbError::unavailable(err.to_string()),
            _ => DbError::bug(err.to_string()),
        }
    }
}

/// SQLite reports extended result codes; the primary code is the low byte.
fn sqlite_primary_code(code: &str) -> Option<i32> {
    code.parse::<i32>().ok().map(|c| c & 0xff)
}

fn classify_sqlite(code: &str) -> Option<Failure> {
    match sqlite_primary_code(code)? {
        // BUSY, LOCKED: another writer holds the file longer than the busy timeout.
        5 | 6 => Some(Failure::Unavailable),
        // READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB: the file cannot take writes.
        8 | 10 | 11 | 13 | 14 | 26 => Some(Failure::Storage),
        _ => None,
    }
}

fn classify_postgres(code: &str) -> Option<Failure> {
    match code {
        // disk_full, io_error, read_only_sql_transaction (a read-only replica
        // or default_transaction_read_only).
        "53100" | "58030" | "25006" => Some(Failure::Storage),
        // 08: connection exception, 57P0x: shutting down, 53: insufficient
        // resources (too many connections, out of memory), 57014: cancelled
        // by statement_timeout (the database is too slow right now).
        c if c.starts_with("08") || c.starts_with("57P") || c.starts_with("53") || c == "57014" => {
            Some(Failure::Unavailable)
        }
        _ => None,
    }
}

/// SQLite's BUSY/LOCKED, met when another process opens or migrates the
/// same new file at the same moment.
pub(crate) fn is_sqlite_busy(err: &sea_orm::DbErr) -> bool {
    let sqlx_err = match err {
        sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e))
        | sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e))
        | sea_orm::DbErr::Query(sea_orm::RuntimeErr::SqlxError(e)) => e,
        _ => return false,
    };
    matches!(&**sqlx_err, sqlx::Error::Database(db)
        if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
            && matches!(db.code().as_deref().and_then(sqlite_primary_code), Some(5 | 6)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_codes() {
        assert_eq!(classify_sqlite("13"), Some(Failure::Storage)); // FULL
        assert_eq!(classify_sqlite("778"), Some(Failure::Storage)); // IOERR_WRITE
        assert_eq!(classify_sqlite("1032"), Some(Failure::Storage)); // READONLY_DBMOVED
        assert_eq!(classify_sqlite("517"), Some(Failure::Unavailable)); // BUSY_SNAPSHOT
        assert_eq!(classify_sqlite("2067"), None); // CONSTRAINT_UNIQUE: a bug
        assert_eq!(classify_sqlite("x"), None);
    }

    #[test]
    fn postgres_codes() {
        assert_eq!(classify_postgres("53100"), Some(Failure::Storage));
        assert_eq!(classify_postgres("25006"), Some(Failure::Storage));
        assert_eq!(classify_postgres("57P01"), Some(Failure::Unavailable));
        assert_eq!(classify_postgres("08006"), Some(Failure::Unavailable));
        assert_eq!(classify_postgres("53300"), Some(Failure::Unavailable));
        assert_eq!(classify_postgres("23505"), None);
        assert_eq!(classify_postgres("57014"), Some(Failure::Unavailable)); // statement_timeout
        assert_eq!(classify_postgres("22021"), None); // bad encoding: a bug
    }
}
