//! What a database error means for the caller: retry later (503), or a bug (500).

use sea_orm::sqlx;
use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr};

/// A database error that is not the request's fault nor a bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database cannot be reached or is shutting down.
    Unavailable,
    /// The database answers but cannot store: disk full, read-only, I/O error.
    /// Readiness reports it until a write succeeds again.
    Storage,
}

/// `None` for errors that are bugs (answered 500).
pub fn classify(err: &DbErr) -> Option<Failure> {
    match err {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout | ConnAcquireErr::ConnectionClosed) => {
            Some(Failure::Unavailable)
        }
        DbErr::Conn(_) => Some(Failure::Unavailable),
        _ => sqlx_error(err).and_then(classify_sqlx),
    }
}

/// True when the error means "retry later" (answered 503).
pub fn is_unavailable(err: &DbErr) -> bool {
    classify(err).is_some()
}

/// The sqlx error under a SeaORM connection, execution or query error.
pub(crate) fn sqlx_error(err: &DbErr) -> Option<&sqlx::Error> {
    match err {
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => Some(e),
        _ => None,
    }
}

fn classify_sqlx(err: &sqlx::Error) -> Option<Failure> {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => Some(Failure::Unavailable),
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or_default();
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                classify_sqlite(code)
            } else {
                classify_postgres(code)
            }
        }
        _ => None,
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
        // disk_full, io_error, read_only_sql_transaction (a read-only replica or
        // default_transaction_read_only).
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

/// A database error in words for a log line or an operator: when the
/// database itself answered with an error, its message, its hint (PostgreSQL)
/// and its code; anything else as it displays itself.
///
/// Why not `Display`: sqlx 0.9 writes a PostgreSQL error as its message
/// followed by " at line N", N being the line of PostgreSQL's own C source
/// that raised it (the protocol's `L` field): "permission denied for schema
/// public at line 3655" reads as a line of our SQL or of a migration, and
/// tells whoever runs the service nothing. SeaORM puts "Execution Error:
/// error returned from database: " in front. The `detail` field is left out:
/// it may quote row values (user data) into the log.
pub fn describe(err: &DbErr) -> String {
    match sqlx_error(err) {
        Some(sqlx_err @ sqlx::Error::Database(_)) => describe_sqlx(sqlx_err),
        _ => err.to_string(),
    }
}

/// [`describe`] for a bare sqlx error (a direct connection attempt).
pub fn describe_sqlx(err: &sqlx::Error) -> String {
    let sqlx::Error::Database(db) = err else {
        return err.to_string();
    };
    let mut text = db.message().to_owned();
    let postgres = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>();
    if let Some(hint) = postgres.and_then(|pg| pg.hint()) {
        text.push_str(" (hint: ");
        text.push_str(hint);
        text.push(')');
    }
    if let Some(code) = db.code() {
        let kind = if postgres.is_some() {
            "SQLSTATE"
        } else {
            "code"
        };
        text.push_str(&format!(" [{kind} {code}]"));
    }
    text
}

/// SQLite's BUSY/LOCKED (any extended code), met when another process opens
/// or migrates the same new file.
pub(crate) fn is_sqlite_busy(err: &DbErr) -> bool {
    matches!(sqlx_error(err), Some(sqlx::Error::Database(db))
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
