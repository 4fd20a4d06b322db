//! The statements of the store. Writes are SQL both databases run (with
//! PostgreSQL's `$n` placeholders as SQLite's `?n`); the listing, whose
//! filters and order vary, is built with SeaORM.
//!
//! Every statement carries `user_id = $1`, the verified caller. A write is
//! a list of statements run in order in one transaction, each deciding
//! from the database alone: on PostgreSQL one statement with `WITH`; on
//! SQLite (no `INSERT` in `WITH`) several, a later one asking `changes()`
//! (rows the one before it changed) and `last_insert_rowid()`.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{BinOper, Expr, ExprTrait, Order, Query, SubQueryStatement, Value};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Select,
};

use crate::db::{Dialect, Stmt};
use crate::models::list::{CompletedFilter, ListQuery, SortField, SortOrder};
use crate::models::task::{Column, Entity as Tasks};

/// A task's columns, in the order `task()` of the store reads them.
const TASK: &str = "id, user_id, title, description, completed, created_at, updated_at";

/// The instant rows store: microseconds, what PostgreSQL keeps, so the
/// instant a write returns is the one every later read returns.
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

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
/// user's list unless it is full, under the list row's lock (a concurrent
/// create of the same user waits, then sees this one's count). A row, or
/// (SQLite) a change, only when the create may go ahead.
fn count_in(condition: &str) -> String {
    format!(
        "INSERT INTO task_lists (user_id, task_count) SELECT $1, 1 WHERE {condition} \
         ON CONFLICT (user_id) DO UPDATE SET task_count = task_lists.task_count + 1 \
         WHERE task_lists.task_count < $2 RETURNING user_id"
    )
}

const NEW_TASK: &str =
    "INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at)";

/// A key's first response: its task (the body is rebuilt from the
/// request, whose fingerprint is the key's), replacing an expired one.
fn remember(task_id: &str) -> String {
    format!(
        "INSERT INTO idempotency_keys (user_id, key, fingerprint, status, body, location, task_id, created_at) \
         SELECT $1, $7, $8, 201, NULL, '/api/tasks/' || {task_id}, {task_id}, $6 {{from}} \
         ON CONFLICT (user_id, key) DO UPDATE SET fingerprint = excluded.fingerprint, \
         status = excluded.status, body = NULL, location = excluded.location, \
         task_id = excluded.task_id, created_at = excluded.created_at"
    )
}

/// The caller's key unless expired, with whether its task still exists.
const PRIOR_KEY: &str = "SELECT k.fingerprint, k.status, k.body, k.location, k.task_id, \
     EXISTS (SELECT 1 FROM tasks t WHERE t.user_id = k.user_id AND t.id = k.task_id), k.created_at \
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
                    remember("id").replace("{from}", "FROM inserted")
                ),
            };
            let create = format!(
                "WITH counted AS ({}), inserted AS ({NEW_TASK} SELECT $1, $3, $4, $5, $6, $6 FROM counted \
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
                "{NEW_TASK} SELECT $1, $3, $4, $5, $6, $6 WHERE changes() > 0 RETURNING {TASK}"
            );
            stmts.push(portable(dialect, &insert, &values));
            if key.is_some() {
                let remember =
                    remember("last_insert_rowid()").replace("{from}", "WHERE changes() > 0");
                stmts.push(portable(dialect, &remember, &values));
            }
            stmts
        }
    }
}

pub fn get(dialect: Dialect, user: &str, id: i64) -> Stmt {
    let sql = format!("SELECT {TASK} FROM tasks WHERE user_id = $1 AND id = $2");
    portable(dialect, &sql, &[user.into(), id.into()])
}

/// Sets `completed` ($4), or flips it when `None`: one statement, so
/// concurrent toggles never lose one.
pub fn set_completed(
    dialect: Dialect,
    user: &str,
    id: i64,
    completed: Option<bool>,
    now: DateTime<Utc>,
) -> Stmt {
    let set = if completed.is_some() {
        "$4"
    } else {
        "NOT completed"
    };
    let sql = format!(
        "UPDATE tasks SET completed = {set}, updated_at = $3 WHERE user_id = $1 AND id = $2 RETURNING {TASK}"
    );
    let values = [user.into(), id.into(), now.into(), completed.into()];
    portable(dialect, &sql, &values)
}

/// The fields of an update, as given (absent ones keep their value).
pub struct Changes {
    pub title: Option<String>,
    pub description: Option<Option<String>>,
    pub completed: Option<bool>,
}

pub fn update(dialect: Dialect, user: &str, id: i64, changes: Changes, now: DateTime<Utc>) -> Stmt {
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

/// A delete, and the count it takes off: a row when a task was deleted.
pub fn delete(dialect: Dialect, user: &str, id: i64) -> Vec<Stmt> {
    let values = [user.into(), id.into()];
    match dialect {
        Dialect::Postgres => vec![portable(
            dialect,
            "WITH gone AS (DELETE FROM tasks WHERE user_id = $1 AND id = $2 RETURNING user_id) \
             UPDATE task_lists SET task_count = task_count - 1 FROM gone \
             WHERE task_lists.user_id = gone.user_id RETURNING task_lists.user_id",
            &values,
        )],
        Dialect::Sqlite => vec![
            portable(
                dialect,
                "DELETE FROM tasks WHERE user_id = $1 AND id = $2 RETURNING id",
                &values,
            ),
            portable(
                dialect,
                "UPDATE task_lists SET task_count = task_count - changes() WHERE user_id = $1",
                &values,
            ),
        ],
    }
}

/// Keys past their retention period, every user's (the purge).
pub fn purge_keys(dialect: Dialect, expiry: DateTime<Utc>) -> Stmt {
    let sql = "DELETE FROM idempotency_keys WHERE created_at <= $1 RETURNING 1";
    portable(dialect, sql, &[expiry.into()])
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

/// Tests only: `stmt` without its conditions on `user_id` (each becomes
/// `'' <> $n`, true for any user, keeping its parameter), to show that
/// row-level security alone keeps users apart (PostgreSQL's forms).
#[cfg(debug_assertions)]
pub fn without_owner_filter(stmt: Stmt) -> Stmt {
    stmt.with_sql(|sql| {
        ["k.user_id = $", "\"tasks\".\"user_id\" = $", "user_id = $"]
            .iter()
            .fold(sql.to_owned(), |sql, condition| {
                sql.replace(condition, "'' <> $")
            })
    })
}

/// SQL with `$n` placeholders, for `dialect` (SQLite numbers them `?n`),
/// with the values up to the highest it names: SQLite refuses more values
/// than a statement has parameters.
fn portable(dialect: Dialect, sql: &str, values: &[Value]) -> Stmt {
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
        Dialect::Postgres => dialect.raw(sql, values),
        Dialect::Sqlite => dialect.raw(&sql.replace('$', "?"), values),
    }
}
