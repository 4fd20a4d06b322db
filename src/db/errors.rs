//! What a database error means for the caller: retry later (503), or a bug
//! (500). Each error is classified and described where it happens.

use sea_orm::sqlx;

/// A database error that is neither the request's fault nor a bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database cannot be reached, is shutting down or too slow now.
    Unavailable,
    /// It answers but cannot store: disk full, read-only, I/O error.
    /// Readiness reports it until a write succeeds again.
    Storage,
}

/// A database error: its class, its SQLSTATE (or SQLite code) and words for
/// a log line (the database's message and hint, never its `detail`, which
/// may quote row values).
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

    /// "Retry later" (503).
    pub fn is_unavailable(&self) -> bool {
        self.failure.is_some()
    }

    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        let message = message.into();
        DbError {
            failure: Some(Failure::Unavailable),
            code: None,
            message,
        }
    }

    pub(crate) fn bug(message: impl Into<String>) -> Self {
        DbError {
            failure: None,
            code: None,
            message: message.into(),
        }
    }

    fn answered(code: String, message: &str, hint: Option<&str>, failure: Option<Failure>) -> Self {
        let hint = hint.map(|h| format!(" (hint: {h})")).unwrap_or_default();
        let message = format!("{message}{hint} [code {code}]");
        DbError {
            failure,
            code: Some(code),
            message,
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(err: tokio_postgres::Error) -> Self {
        if let Some(db) = err.as_db_error() {
            let code = db.code().code();
            return DbError::answered(
                code.to_owned(),
                db.message(),
                db.hint(),
                classify_postgres(code),
            );
        }
        // Its other errors are named by kind: the connection's mean
        // "unavailable"; the rest (a value that does not convert) are bugs.
        let text = err.to_string();
        const CONNECTION: [&str; 7] = [
            "error communicating",
            "error performing TLS",
            "error connecting",
            "timeout",
            "unexpected message",
            "error parsing response",
            "authentication error",
        ];
        let unavailable = err.is_closed() || CONNECTION.iter().any(|kind| text.starts_with(kind));
        let message = match std::error::Error::source(&err) {
            Some(source) => format!("{text}: {source}"),
            None => text,
        };
        DbError {
            failure: unavailable.then_some(Failure::Unavailable),
            code: None,
            message,
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
        match &err {
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                let failure = classify_sqlite(&code);
                DbError::answered(code, db.message(), None, failure)
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

/// SQLite's extended result codes: the primary code is the low byte.
pub(super) fn sqlite_primary_code(code: &str) -> Option<i32> {
    code.parse::<i32>().ok().map(|c| c & 0xff)
}

fn classify_sqlite(code: &str) -> Option<Failure> {
    match sqlite_primary_code(code)? {
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
    use super::*;

    #[test]
    fn codes_are_classified() {
        for (code, sqlite) in [
            ("13", Some(Failure::Storage)),
            ("778", Some(Failure::Storage)),
            ("517", Some(Failure::Unavailable)),
            ("2067", None),
        ] {
            assert_eq!(classify_sqlite(code), sqlite, "{code}");
        }
        for (code, pg) in [
            ("53100", Some(Failure::Storage)),
            ("25006", Some(Failure::Storage)),
            ("57P01", Some(Failure::Unavailable)),
            ("08006", Some(Failure::Unavailable)),
            ("57014", Some(Failure::Unavailable)),
            ("23505", None),
            ("22021", None),
        ] {
            assert_eq!(classify_postgres(code), pg, "{code}");
        }
    }
}
