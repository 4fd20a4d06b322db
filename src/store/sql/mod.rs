//! The statements of the store. Writes are SQL both databases run (with
//! PostgreSQL's `$n` placeholders as SQLite's `?n`); the listing, whose
//! filters and order vary, is built with SeaORM.
//!
//! Every statement carries `user_id = $1`, the verified caller. A write is
//! a list of statements run in order in one transaction, each deciding
//! from the database alone: on PostgreSQL one statement with `WITH`; on
//! SQLite (no `INSERT` in `WITH`) several, a later one asking `changes()`
//! (rows the one before it changed) and `last_insert_rowid()`.

mod read;
mod write;

pub use read::*;
pub use write::*;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Value;

use crate::db::{Dialect, Stmt};

/// A task's columns, in the order `task()` of the store reads them.
pub(super) const TASK: &str =
    "id, user_id, title, description, completed, created_at, updated_at, version";

/// [`TASK`] of the table (or CTE) `table`, where a name alone is ambiguous.
pub(super) fn task_of(table: &str) -> String {
    TASK.split(", ")
        .map(|column| format!("{table}.{column}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The instant rows store: microseconds, what PostgreSQL keeps, so the
/// instant a write returns is the one every later read returns.
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// Tests only: `stmt` without its conditions on `user_id` (each becomes
/// `'' <> $n`, true for any user, keeping its parameter), to show that
/// row-level security alone keeps users apart (PostgreSQL's forms).
#[cfg(debug_assertions)]
pub fn without_owner_filter(stmt: Stmt) -> Stmt {
    stmt.with_sql(|sql| {
        [
            "k.user_id = $",
            "tasks.user_id = $",
            "\"tasks\".\"user_id\" = $",
            "user_id = $",
        ]
        .iter()
        .fold(sql.to_owned(), |sql, condition| {
            sql.replace(condition, "'' <> $")
        })
    })
}

/// SQL with `$n` placeholders, for `dialect` (SQLite numbers them `?n`),
/// with the values up to the highest it names: SQLite refuses more values
/// than a statement has parameters.
pub(super) fn portable(dialect: Dialect, sql: &str, values: &[Value]) -> Stmt {
    let highest = sql
        .split('$')
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<usize>().ok()
        })
        .max()
        .unwrap_or(0);
    let values = values[..highest.min(values.len())].iter().cloned();
    match dialect {
        Dialect::Postgres => Stmt::new(sql, values),
        Dialect::Sqlite => Stmt::new(&sql.replace('$', "?"), values),
    }
}
