//! What a database error means for the caller: retry later (503), or a bug
//! (500), classified and described where it happens.

use sea_orm::sqlx;

/// A database error that is neither the request's fault nor a bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database cannot be reached, is shutting down or too slow now.
    Unavailable,
    /// It answers but cannot store (disk full, read-only, I/O error): not
    /// ready until a write succeeds again.
    Storage,
}

/// A database error: its class, and words for a log line (the database's
/// message, hint and code; never its `detail`, which may quote row values).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DbError {
    failure: Option<Failure>,
    message: String,
}

impl DbError {
    /// `None` for errors that are bugs (answered 500).
    pub fn failure(&self) -> Option<Failure> {
        self.failure
    }

    fn new(failure: Option<Failure>, message: impl Into<String>) -> Self {
        let message = message.into();
        DbError { failure, message }
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        DbError::new(Some(Failure::Unavailable), message)
    }

    pub(crate) fn bug(message: impl Into<String>) -> Self {
        DbError::new(None, message)
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(err: tokio_postgres::Error) -> Self {
        if let Some(db) = err.as_db_error() {
            let code = db.code().code();
            let hint = db.hint().map_or(String::new(), |h| format!(" (hint: {h})"));
            let message = format!("{}{hint} [SQLSTATE {code}]", db.message());
            return DbError::new(classify_postgres(code), message);
        }
        // Its other errors are named by kind: the connection's mean
        // "unavailable", the rest (a value that does not convert) are bugs.
        let text = err.to_string();
        const CONNECTION: &str = "error communicating|error performing TLS|error connecting|\
            timeout|unexpected message|error parsing response|authentication error";
        let unavailable = err.is_closed() || CONNECTION.split('|').any(|k| text.starts_with(k));
        let failure = unavailable.then_some(Failure::Unavailable);
        match std::error::Error::source(&err) {
            Some(source) => DbError::new(failure, format!("{text}: {source}")),
            None => DbError::new(failure, text),
        }
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        match err {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => DbError::unavailable(format!("no database connection: {other}")),
        }
    }
}

impl From<sqlx::Error> for DbError {
    fn from(err: sqlx::Error) -> Self {
        let failure = match &err {
            // SQLite's extended result codes: the primary one is the low byte.
            sqlx::Error::Database(db) => db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .and_then(|c| classify_sqlite(c & 0xff)),
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => Some(Failure::Unavailable),
            _ => None,
        };
        let message = match &err {
            sqlx::Error::Database(db) => {
                format!("{} [code {}]", db.message(), db.code().unwrap_or_default())
            }
            other => other.to_string(),
        };
        DbError::new(failure, message)
    }
}

fn classify_sqlite(primary: i32) -> Option<Failure> {
    match primary {
        // BUSY, LOCKED: another process held the file past the busy timeout.
        5 | 6 => Some(Failure::Unavailable),
        // READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB.
        8 | 10 | 11 | 13 | 14 | 26 => Some(Failure::Storage),
        _ => None,
    }
}

fn classify_postgres(code: &str) -> Option<Failure> {
    match code {
        // disk_full, io_error, read_only_sql_transaction (a replica).
        "53100" | "58030" | "25006" => Some(Failure::Storage),
        // 08 connection, 57P shutting down, 53 resources, 57014 statement_timeout.
        c if c.starts_with("08") || c.starts_with("57P") || c.starts_with("53") || c == "57014" => {
            Some(Failure::Unavailable)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{Failure::*, *};

    #[test]
    fn codes_are_classified() {
        assert_eq!(classify_sqlite(13), Some(Storage)); // FULL
        assert_eq!(classify_sqlite(10), Some(Storage)); // IOERR
        assert_eq!(classify_sqlite(5), Some(Unavailable)); // BUSY
        assert_eq!(classify_sqlite(19), None); // CONSTRAINT: a bug
        assert_eq!(classify_postgres("53100"), Some(Storage));
        assert_eq!(classify_postgres("57P01"), Some(Unavailable));
        assert_eq!(classify_postgres("57014"), Some(Unavailable));
        assert_eq!(classify_postgres("23505"), None);
    }
}
