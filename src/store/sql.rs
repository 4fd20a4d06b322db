//! The statements of the store. Writes are SQL both databases run as they
//! are (PostgreSQL's `$n` placeholders become SQLite's `?n`); the listing,
//! whose filters and order vary, is built with SeaORM.
//!
//! Every statement carries `user_id = $1`, the verified caller.

use sea_orm::sea_query::{BinOper, Expr, ExprTrait, Order, Query, SubQueryStatement, Value};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Select,
};

use crate::db::{Dialect, Stmt};
use crate::models::list::{CompletedFilter, ListQuery, SortField, SortOrder};
use crate::models::task::{Column, Entity as Tasks};

/// A task's columns, in the order `rows::task` reads them.
const TASK: &str = "id, user_id, title, description, completed, created_at, updated_at";

/// The rule of `MAX_TASKS_PER_USER`, written once: counts a create in the
/// user's list unless it is full ($2), under the list row's lock (a
/// concurrent create of the same user waits, then sees this one's count).
/// It returns a row only when the create may go ahead.
fn count_in(condition: &str) -> String {
    format!(
        "INSERT INTO task_lists (user_id, task_count) SELECT $1, 1 WHERE {condition} \
         ON CONFLICT (user_id) DO UPDATE SET task_count = task_lists.task_count + 1 \
         WHERE task_lists.task_count < $2 RETURNING user_id"
    )
}

/// The new task's values: $1 user, $3 title, $4 description, $5 completed, $6 now.
const NEW_TASK: &str =
    "INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at)";

/// The parameters of a create, in the order of the statements above.
pub struct NewRow {
    pub user: String,
    pub max_tasks: i64,
    pub title: String,
    pub description: Option<String>,
    pub completed: bool,
    pub now: chrono::DateTime<chrono::Utc>,
}

impl NewRow {
    fn values(&self) -> Vec<Value> {
        vec![
            self.user.clone().into(),
            self.max_tasks.into(),
            self.title.clone().into(),
            self.description.clone().into(),
            self.completed.into(),
            self.now.into(),
        ]
    }
}

/// A create in one statement (PostgreSQL): the count, then the insert of
/// the row it let through. `extra` adds a condition on the count and its
/// parameters ($7, ...).
pub fn create_in_one(new: &NewRow, extra: Option<(&str, Vec<Value>)>) -> Stmt {
    let (condition, more) = extra.unwrap_or(("true", Vec::new()));
    let sql = format!(
        "WITH counted AS ({}) {NEW_TASK} SELECT $1, $3, $4, $5, $6, $6 FROM counted RETURNING {TASK}",
        count_in(condition)
    );
    Dialect::Postgres.raw(&sql, new.values().into_iter().chain(more))
}

/// A create in two statements (SQLite, which has no `INSERT` in `WITH`):
/// the count, and the insert to run when the count returned a row.
pub fn create_in_two(new: &NewRow) -> [Stmt; 2] {
    [
        sqlite(&count_in("true"), new.values().into_iter().take(2)),
        sqlite(
            &format!("{NEW_TASK} VALUES ($1, $3, $4, $5, $6, $6) RETURNING {TASK}"),
            new.values(),
        ),
    ]
}

pub fn get(dialect: Dialect, user: &str, id: i64) -> Stmt {
    portable(
        dialect,
        &format!("SELECT {TASK} FROM tasks WHERE user_id = $1 AND id = $2"),
        [user.into(), id.into()],
    )
}

/// Sets `completed` ($4), or flips it when `None`: one statement, so
/// concurrent toggles never lose one.
pub fn set_completed(
    dialect: Dialect,
    user: &str,
    id: i64,
    completed: Option<bool>,
    now: chrono::DateTime<chrono::Utc>,
) -> Stmt {
    let (set, value) = match completed {
        Some(v) => ("$4", Some(v)),
        None => ("NOT completed", None),
    };
    let sql = format!(
        "UPDATE tasks SET completed = {set}, updated_at = $3 WHERE user_id = $1 AND id = $2 RETURNING {TASK}"
    );
    let values = [user.into(), id.into(), now.into()]
        .into_iter()
        .chain(value.map(Value::from));
    portable(dialect, &sql, values)
}

/// The fields of an update, as given (absent ones keep their value).
pub struct Changes {
    pub title: Option<String>,
    pub description: Option<Option<String>>,
    pub completed: Option<bool>,
}

pub fn update(
    dialect: Dialect,
    user: &str,
    id: i64,
    changes: Changes,
    now: chrono::DateTime<chrono::Utc>,
) -> Stmt {
    let mut update = Tasks::update_many().col_expr(Column::UpdatedAt, Expr::value(now));
    if let Some(title) = changes.title {
        update = update.col_expr(Column::Title, Expr::value(title));
    }
    if let Some(description) = changes.description {
        update = update.col_expr(Column::Description, Expr::value(description));
    }
    if let Some(completed) = changes.completed {
        update = update.col_expr(Column::Completed, Expr::value(completed));
    }
    let mut update = update
        .filter(Column::UserId.eq(user))
        .filter(Column::Id.eq(id))
        .into_query();
    update.returning(Query::returning().columns([
        Column::Id,
        Column::UserId,
        Column::Title,
        Column::Description,
        Column::Completed,
        Column::CreatedAt,
        Column::UpdatedAt,
    ]));
    dialect.render(&update)
}

/// A delete and the count it takes off, in one statement (PostgreSQL).
pub fn delete_in_one(user: &str, id: i64) -> Stmt {
    Dialect::Postgres.raw(
        "WITH gone AS (DELETE FROM tasks WHERE user_id = $1 AND id = $2 RETURNING user_id) \
         UPDATE task_lists SET task_count = task_count - 1 FROM gone \
         WHERE task_lists.user_id = gone.user_id RETURNING task_lists.user_id",
        [user.into(), id.into()],
    )
}

/// A delete in two statements (SQLite): the delete, and the count to take
/// off when it deleted a row.
pub fn delete_in_two(user: &str, id: i64) -> [Stmt; 2] {
    [
        sqlite(
            "DELETE FROM tasks WHERE user_id = $1 AND id = $2 RETURNING id",
            [user.into(), id.into()],
        ),
        sqlite(
            "UPDATE task_lists SET task_count = task_count - 1 WHERE user_id = $1",
            [user.into()],
        ),
    ]
}

/// The caller's key, unless older than `expiry` ($3), and whether the task
/// it created still exists.
pub fn prior_key(
    dialect: Dialect,
    user: &str,
    key: &str,
    expiry: chrono::DateTime<chrono::Utc>,
) -> Stmt {
    portable(
        dialect,
        "SELECT k.fingerprint, k.status, k.body, k.location, k.task_id, \
         EXISTS (SELECT 1 FROM tasks t WHERE t.user_id = k.user_id AND t.id = k.task_id) \
         FROM idempotency_keys k WHERE k.user_id = $1 AND k.key = $2 AND k.created_at > $3",
        [user.into(), key.into(), expiry.into()],
    )
}

/// The first response to a key, replacing an expired row of the same key.
pub struct Remembered<'a> {
    pub user: &'a str,
    pub key: &'a str,
    pub fingerprint: &'a str,
    pub body: String,
    pub location: String,
    pub task_id: i64,
    pub now: chrono::DateTime<chrono::Utc>,
}

pub fn remember(dialect: Dialect, r: Remembered<'_>) -> Stmt {
    portable(
        dialect,
        "INSERT INTO idempotency_keys (user_id, key, fingerprint, status, body, location, task_id, created_at) \
         VALUES ($1, $2, $3, 201, $4, $5, $6, $7) \
         ON CONFLICT (user_id, key) DO UPDATE SET fingerprint = excluded.fingerprint, \
         status = excluded.status, body = excluded.body, location = excluded.location, \
         task_id = excluded.task_id, created_at = excluded.created_at",
        [
            r.user.into(),
            r.key.into(),
            r.fingerprint.into(),
            r.body.into(),
            r.location.into(),
            r.task_id.into(),
            r.now.into(),
        ],
    )
}

/// Keys past their retention period, every user's (the purge).
pub fn purge_keys(dialect: Dialect, expiry: chrono::DateTime<chrono::Utc>) -> Stmt {
    portable(
        dialect,
        "DELETE FROM idempotency_keys WHERE created_at <= $1 RETURNING 1",
        [expiry.into()],
    )
}

/// The caller's tasks that `query` filters in; `None` when nothing can match.
fn filtered(dialect: Dialect, user: &str, query: &ListQuery) -> Option<Select<Tasks>> {
    let mut select = Tasks::find().filter(Column::UserId.eq(user));
    match query.completed_filter() {
        CompletedFilter::Any => {}
        CompletedFilter::Only(done) => select = select.filter(Column::Completed.eq(done)),
        CompletedFilter::Nothing => return None,
    }
    if let Some(q) = &query.q {
        let matches = |col: Column| match dialect {
            // SQLite's LIKE and lower() fold ASCII only; its REGEXP (Rust's
            // regex, switched on in db/sqlite.rs) folds all of Unicode.
            Dialect::Sqlite => Expr::col(col).binary(
                BinOper::Custom("REGEXP"),
                format!("(?i){}", regex::escape(q)),
            ),
            // `ILIKE '%q%'` without its backtracking matcher (slow on a long
            // q over many tasks), and `%`, `_` need no escaping.
            Dialect::Postgres => Expr::cust_with_exprs(
                "strpos(lower($1), lower($2)) > 0",
                [Expr::col((Tasks, col)), Expr::val(q.as_str())],
            ),
        };
        select = select.filter(
            Condition::any()
                .add(matches(Column::Title))
                .add(matches(Column::Description)),
        );
    }
    Some(select)
}

/// The listing: the page, each row with the number of matching tasks
/// (`COUNT(*) OVER ()` on PostgreSQL; on SQLite, whose window sorts the
/// rows again, the count once as a scalar subquery).
pub fn list(dialect: Dialect, user: &str, query: &ListQuery) -> Option<Stmt> {
    let select = filtered(dialect, user, query)?;
    let order = match query.order.unwrap_or_default() {
        SortOrder::Asc => Order::Asc,
        SortOrder::Desc => Order::Desc,
    };
    let sort = query.sort.unwrap_or_default();
    let sort_column = match sort {
        SortField::CreatedAt => Column::CreatedAt,
        SortField::UpdatedAt => Column::UpdatedAt,
        SortField::Title => Column::Title,
        SortField::Id => Column::Id,
    };
    let total = match dialect {
        Dialect::Sqlite => Expr::SubQuery(None, Box::new(count(&select))),
        Dialect::Postgres => Expr::cust("COUNT(*) OVER ()"),
    };
    let mut page = select
        .column_as(total, "total_count")
        .order_by(sort_column, order.clone());
    if sort != SortField::Id {
        page = page.order_by(Column::Id, order);
    }
    // SQLite accepts OFFSET only after a LIMIT: "no limit" is the largest one.
    let limit = query.limit.or(query.offset.map(|_| i64::MAX as u64));
    let page = page.limit(limit).offset(query.offset);
    Some(dialect.render(&page.into_query()))
}

/// The number of the caller's tasks matching `query` (for a page past the
/// end, which carries no count of its own).
pub fn list_count(dialect: Dialect, user: &str, query: &ListQuery) -> Option<Stmt> {
    let select = filtered(dialect, user, query)?;
    Some(
        dialect.render(
            &select
                .select_only()
                .column_as(Expr::cust("COUNT(*)"), "n")
                .into_query(),
        ),
    )
}

fn count(select: &Select<Tasks>) -> SubQueryStatement {
    SubQueryStatement::SelectStatement(
        select
            .clone()
            .select_only()
            .column_as(Expr::cust("COUNT(*)"), "n")
            .into_query(),
    )
}

/// Portable SQL with `$n` placeholders, for `dialect`.
fn portable(dialect: Dialect, sql: &str, values: impl IntoIterator<Item = Value>) -> Stmt {
    match dialect {
        Dialect::Postgres => dialect.raw(sql, values),
        Dialect::Sqlite => sqlite(sql, values),
    }
}

/// SQLite numbers its parameters `?1`, `?2`, ... where PostgreSQL writes `$1`.
fn sqlite(sql: &str, values: impl IntoIterator<Item = Value>) -> Stmt {
    Dialect::Sqlite.raw(&sql.replace('$', "?"), values)
}
