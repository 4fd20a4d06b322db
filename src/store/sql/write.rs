//! The writes: a create (with its key), an update or toggle, a delete, and
//! the service's purges.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Value;

use super::{TASK, portable, task_of};
use crate::db::{Dialect, Stmt};

/// A create: $1 user, $2 the task limit, $3 title, $4 description,
/// $5 completed, $6 now; with a key, $7 the key, $8 its fingerprint,
/// $9 the expiry of keys and (PostgreSQL) $10 the key's lock.
pub struct NewRow {
    pub user: String,
    pub max_tasks: i64,
    pub title: String,
    pub description: Option<String>,
    pub completed: bool,
    pub now: DateTime<Utc>,
}

/// An `Idempotency-Key` of a create.
pub struct Key<'a> {
    pub key: &'a str,
    pub fingerprint: &'a str,
    pub expiry: DateTime<Utc>,
    pub lock: i64,
}

impl NewRow {
    fn values(&self, key: Option<&Key>) -> Vec<Value> {
        let mut values: Vec<Value> = vec![
            self.user.clone().into(),
            self.max_tasks.into(),
            self.title.clone().into(),
            self.description.clone().into(),
            self.completed.into(),
            self.now.into(),
        ];
        if let Some(k) = key {
            values.extend([
                k.key.into(),
                k.fingerprint.into(),
                k.expiry.into(),
                k.lock.into(),
            ]);
        }
        values
    }
}

/// The rule of `MAX_TASKS_PER_USER`, written once: counts a create in the
/// user's list unless it is full, and advances the user's version, under
/// the list row's lock (a concurrent create of the same user waits, then
/// sees this one's count and version). A row (the new version), or
/// (SQLite) a change, only when the create may go ahead.
fn count_in(condition: &str) -> String {
    format!(
        "INSERT INTO task_lists (user_id, task_count, version) SELECT $1, 1, 1 WHERE {condition} \
         ON CONFLICT (user_id) DO UPDATE SET task_count = task_lists.task_count + 1, \
         version = task_lists.version + 1 WHERE task_lists.task_count < $2 RETURNING version"
    )
}

const NEW_TASK: &str =
    "INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at, version)";

/// The user's version as the statements before have left it (SQLite).
const USER_VERSION: &str = "(SELECT version FROM task_lists WHERE user_id = $1)";

/// A key's first response: its task (the body is rebuilt from the
/// request, whose fingerprint is the key's), replacing an expired one.
fn remember(task_id: &str, task_version: &str) -> String {
    format!(
        "INSERT INTO idempotency_keys (user_id, key, fingerprint, status, body, location, task_id, task_version, created_at) \
         SELECT $1, $7, $8, 201, NULL, '/api/tasks/' || {task_id}, {task_id}, {task_version}, $6 {{from}} \
         ON CONFLICT (user_id, key) DO UPDATE SET fingerprint = excluded.fingerprint, \
         status = excluded.status, body = NULL, location = excluded.location, \
         task_id = excluded.task_id, task_version = excluded.task_version, created_at = excluded.created_at"
    )
}

/// The caller's key unless expired, with whether its task still exists.
const PRIOR_KEY: &str = "SELECT k.fingerprint, k.status, k.body, k.location, k.task_id, \
     EXISTS (SELECT 1 FROM tasks t WHERE t.user_id = k.user_id AND t.id = k.task_id), k.created_at, \
     k.task_version \
     FROM idempotency_keys k WHERE k.user_id = $1 AND k.key = $7 AND k.created_at > $9";

/// No live key of the caller's: the create goes ahead.
const NO_PRIOR_KEY: &str = "NOT EXISTS (SELECT 1 FROM idempotency_keys \
     WHERE user_id = $1 AND key = $7 AND created_at > $9)";

/// A create. Its statements' rows: PostgreSQL, without a key the task (none
/// at the limit); with one, whether the key's lock was free (another
/// instance running the same key holds it), the earlier response of the
/// key, and the task. SQLite: the earlier response (with a key), the count,
/// the task, (with a key) its response remembered.
pub fn create(dialect: Dialect, new: &NewRow, key: Option<&Key>) -> Vec<Stmt> {
    let values = new.values(key);
    match dialect {
        Dialect::Postgres => {
            let condition = match key {
                None => "true".to_owned(),
                Some(_) => format!("pg_try_advisory_xact_lock($10) AND {NO_PRIOR_KEY}"),
            };
            let remember = match key {
                None => String::new(),
                Some(_) => format!(
                    ", remembered AS ({})",
                    remember("id", "version").replace("{from}", "FROM inserted")
                ),
            };
            let create = format!(
                "WITH counted AS ({}), inserted AS ({NEW_TASK} SELECT $1, $3, $4, $5, $6, $6, version FROM counted \
                 RETURNING {TASK}){remember} SELECT {TASK} FROM inserted",
                count_in(&condition)
            );
            let mut stmts = Vec::new();
            if key.is_some() {
                stmts.push(portable(
                    dialect,
                    "SELECT pg_try_advisory_xact_lock($10)",
                    &values,
                ));
                stmts.push(portable(dialect, PRIOR_KEY, &values));
            }
            stmts.push(portable(dialect, &create, &values));
            stmts
        }
        Dialect::Sqlite => {
            let condition = if key.is_some() { NO_PRIOR_KEY } else { "true" };
            let mut stmts = Vec::new();
            if key.is_some() {
                stmts.push(portable(dialect, PRIOR_KEY, &values));
            }
            stmts.push(portable(dialect, &count_in(condition), &values));
            let insert = format!(
                "{NEW_TASK} SELECT $1, $3, $4, $5, $6, $6, {USER_VERSION} WHERE changes() > 0 RETURNING {TASK}"
            );
            stmts.push(portable(dialect, &insert, &values));
            if key.is_some() {
                let remember = remember("last_insert_rowid()", USER_VERSION)
                    .replace("{from}", "WHERE changes() > 0");
                stmts.push(portable(dialect, &remember, &values));
            }
            stmts
        }
    }
}

/// The `If-Match` of a write: any version (none given, or `*`), or one of
/// these (the task versions its entity tags name).
pub enum Expected<'a> {
    Any,
    OneOf(&'a [i64]),
}

impl Expected<'_> {
    /// `$4`: NULL for any, else `,v1,v2,` (one parameter, both databases).
    fn value(&self) -> Value {
        match self {
            Expected::Any => Value::String(None),
            Expected::OneOf(versions) => {
                let listed: String = versions.iter().map(|v| format!("{v},")).collect();
                format!(",{listed}").into()
            }
        }
    }
}

/// The condition on a task's `version` that `$4` (an [`Expected`]) sets.
fn expected(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => "($4 IS NULL OR strpos($4, ',' || version || ',') > 0)",
        Dialect::Sqlite => "($4 IS NULL OR instr($4, ',' || version || ',') > 0)",
    }
}

/// Sets `completed` ($5), or flips it when `None`: one statement, so
/// concurrent toggles never lose one.
pub fn set_completed(
    dialect: Dialect,
    target: Target,
    completed: Option<bool>,
    expected: &Expected,
) -> Vec<Stmt> {
    let set = if completed.is_some() {
        "completed = $5"
    } else {
        "completed = NOT completed"
    };
    let mut values = target.values(expected);
    values.push(completed.into());
    rewrite(dialect, set, &values)
}

/// The task a write is for: $1 user, $2 id, $3 the write's time.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub user: &'a str,
    pub id: i64,
    pub now: DateTime<Utc>,
}

impl Target<'_> {
    fn values(&self, expected: &Expected) -> Vec<Value> {
        vec![
            self.user.into(),
            self.id.into(),
            self.now.into(),
            expected.value(),
        ]
    }
}

/// The fields of an update, as given (absent ones keep their value).
pub struct Changes {
    pub title: Option<String>,
    pub description: Option<Option<String>>,
    pub completed: Option<bool>,
}

/// An update: the given fields become $5, $6.. in order.
pub fn update(
    dialect: Dialect,
    target: Target,
    changes: Changes,
    expected: &Expected,
) -> Vec<Stmt> {
    let mut values = target.values(expected);
    let mut set = Vec::new();
    let mut assign = |column: &str, value: Value| {
        values.push(value);
        set.push(format!("{column} = ${}", values.len()));
    };
    if let Some(title) = changes.title {
        assign("title", title.into());
    }
    if let Some(description) = changes.description {
        assign("description", description.into());
    }
    if let Some(completed) = changes.completed {
        assign("completed", completed.into());
    }
    rewrite(dialect, &set.join(", "), &values)
}

/// A write of one task's fields (`set`, may be empty): when the task is
/// the caller's and its version is expected, the user's version advances
/// and becomes the task's. Rows: `(true, task as written)`; `(false,
/// task as it is)` when the version was not the expected one; none when
/// the caller has no such task.
///
/// PostgreSQL, one statement: the task's row is locked first, then the
/// user's list row (the order of every write: no deadlock), and the
/// expected version is compared with the task's latest (the lock waits
/// for a concurrent write of it to end). SQLite has one writer at a time.
fn rewrite(dialect: Dialect, set: &str, values: &[Value]) -> Vec<Stmt> {
    let set = if set.is_empty() {
        String::new()
    } else {
        format!("{set}, ")
    };
    let expected = expected(dialect);
    match dialect {
        Dialect::Postgres => {
            let written = task_of("tasks");
            let sql = format!(
                "WITH target AS (SELECT {TASK} FROM tasks WHERE user_id = $1 AND id = $2 FOR UPDATE), \
                 bumped AS (UPDATE task_lists SET version = version + 1 WHERE user_id = $1 \
                   AND EXISTS (SELECT 1 FROM target WHERE {expected}) RETURNING version), \
                 written AS (UPDATE tasks SET {set}updated_at = $3, version = bumped.version FROM bumped \
                   WHERE tasks.user_id = $1 AND tasks.id = $2 RETURNING {written}) \
                 SELECT true, {TASK} FROM written \
                 UNION ALL SELECT false, {TASK} FROM target WHERE NOT EXISTS (SELECT 1 FROM written)"
            );
            vec![portable(dialect, &sql, values)]
        }
        Dialect::Sqlite => vec![
            portable(
                dialect,
                &format!(
                    "UPDATE task_lists SET version = version + 1 WHERE user_id = $1 \
                     AND EXISTS (SELECT 1 FROM tasks WHERE user_id = $1 AND id = $2 AND {expected})"
                ),
                values,
            ),
            portable(
                dialect,
                &format!(
                    "UPDATE tasks SET {set}updated_at = $3, version = {USER_VERSION} \
                     WHERE user_id = $1 AND id = $2 AND changes() > 0 RETURNING true, {TASK}"
                ),
                values,
            ),
            current(dialect, values),
        ],
    }
}

/// SQLite: the task as it is, when the statement before changed nothing.
fn current(dialect: Dialect, values: &[Value]) -> Stmt {
    let sql =
        format!("SELECT false, {TASK} FROM tasks WHERE user_id = $1 AND id = $2 AND changes() = 0");
    portable(dialect, &sql, values)
}

/// A delete: when the task is the caller's and its version is expected,
/// it goes, the user's count goes down, the user's version advances and a
/// tombstone keeps the task's id at that version (the changes feed). Rows
/// as [`rewrite`]'s: `(true, task as it was)`, `(false, task)`, or none.
pub fn delete(dialect: Dialect, target: Target, expected: &Expected) -> Vec<Stmt> {
    let values = target.values(expected);
    let matches = self::expected(dialect);
    match dialect {
        Dialect::Postgres => {
            let sql = format!(
                "WITH target AS (SELECT {TASK} FROM tasks WHERE user_id = $1 AND id = $2 FOR UPDATE), \
                 bumped AS (UPDATE task_lists SET version = version + 1, task_count = task_count - 1 \
                   WHERE user_id = $1 AND EXISTS (SELECT 1 FROM target WHERE {matches}) RETURNING version), \
                 gone AS (DELETE FROM tasks USING bumped WHERE tasks.user_id = $1 AND tasks.id = $2 \
                   RETURNING tasks.id, bumped.version), \
                 buried AS (INSERT INTO task_tombstones (user_id, version, task_id, deleted_at) \
                   SELECT $1, version, id, $3 FROM gone) \
                 SELECT EXISTS (SELECT 1 FROM gone), {TASK} FROM target"
            );
            vec![portable(dialect, &sql, &values)]
        }
        Dialect::Sqlite => vec![
            portable(
                dialect,
                &format!(
                    "UPDATE task_lists SET version = version + 1, task_count = task_count - 1 \
                     WHERE user_id = $1 AND EXISTS (SELECT 1 FROM tasks WHERE user_id = $1 AND id = $2 AND {matches})"
                ),
                &values,
            ),
            portable(
                dialect,
                "INSERT INTO task_tombstones (user_id, version, task_id, deleted_at) \
                 SELECT $1, version, $2, $3 FROM task_lists WHERE user_id = $1 AND changes() > 0",
                &values,
            ),
            portable(
                dialect,
                &format!(
                    "DELETE FROM tasks WHERE user_id = $1 AND id = $2 AND changes() > 0 RETURNING true, {TASK}"
                ),
                &values,
            ),
            current(dialect, &values),
        ],
    }
}

/// Keys past their retention period, every user's (the purge).
pub fn purge_keys(dialect: Dialect, expiry: DateTime<Utc>) -> Stmt {
    let sql = "DELETE FROM idempotency_keys WHERE created_at <= $1 RETURNING 1";
    portable(dialect, sql, &[expiry.into()])
}

/// Tombstones deleted before `kept_from`, every user's (the purge), except
/// each user's newest such one: it stays to tell the feed that cursors
/// before it can no longer be answered.
pub fn purge_tombstones(dialect: Dialect, kept_from: DateTime<Utc>) -> Stmt {
    let sql = "DELETE FROM task_tombstones WHERE deleted_at < $1 AND EXISTS \
         (SELECT 1 FROM task_tombstones AS newer WHERE newer.user_id = task_tombstones.user_id \
          AND newer.version > task_tombstones.version AND newer.deleted_at < $1) RETURNING 1";
    portable(dialect, sql, &[kept_from.into()])
}
