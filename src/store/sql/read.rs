//! The reads: one task, the listing (built with SeaORM: its filters and
//! order vary), the user's version, the changes feed.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, BinOper, Expr, ExprTrait, Order, Query, SubQueryStatement};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Select,
};

use super::{TASK, portable};
use crate::db::{Dialect, Stmt};
use crate::models::list::{CompletedFilter, ListQuery, SortField, SortOrder};
use crate::models::task::{Column, Entity as Tasks};

pub fn get(dialect: Dialect, user: &str, id: i64) -> Stmt {
    let sql = format!("SELECT {TASK} FROM tasks WHERE user_id = $1 AND id = $2");
    portable(dialect, &sql, &[user.into(), id.into()])
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

/// The listing: the page, each row with the number of matching tasks (the
/// user's `task_count` when nothing is filtered; else `COUNT(*) OVER ()` on
/// PostgreSQL and, on SQLite, whose window sorts the rows again, the count
/// once as a scalar subquery) and the user's version (from the same
/// snapshot: the list's `ETag`).
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
    let unfiltered = query.completed_filter() == CompletedFilter::Any && query.q.is_none();
    let total = match dialect {
        // The user's count, kept by every create and delete: the page alone
        // is read (an index range of `limit` rows), not every task.
        _ if unfiltered => of_task_list(user, "task_count"),
        Dialect::Sqlite => Expr::SubQuery(None, Box::new(count(&select))),
        Dialect::Postgres => Expr::cust("COUNT(*) OVER ()"),
    };
    let mut page = select
        .column_as(total, "total_count")
        .column_as(version_of(user), "list_version")
        .order_by(sort_column, order.clone());
    if sort != SortField::Id {
        page = page.order_by(Column::Id, order);
    }
    // SQLite accepts OFFSET only after a LIMIT: "no limit" is the largest one.
    let limit = query.limit.or(query.offset.map(|_| i64::MAX as u64));
    let page = page.limit(limit).offset(query.offset);
    Some(dialect.render(&page.into_query()))
}

/// For an empty page, which carries neither: the number of the caller's
/// tasks matching `query` (0 when nothing can) and the user's version.
pub fn list_totals(dialect: Dialect, user: &str, query: &ListQuery) -> Stmt {
    let count = match filtered(dialect, user, query) {
        Some(select) => Expr::SubQuery(None, Box::new(count(&select))),
        None => Expr::val(0i64),
    };
    let totals = Query::select()
        .expr(count)
        .expr(version_of(user))
        .to_owned();
    dialect.render(&totals)
}

/// The user's version: 0 before their first write.
fn version_of(user: &str) -> Expr {
    of_task_list(user, "version")
}

/// A column of the user's `task_lists` row (0 before their first write).
fn of_task_list(user: &str, column: &'static str) -> Expr {
    let value = Query::select()
        .expr(Expr::cust(format!("COALESCE(MAX({column}), 0)")))
        .from(Alias::new("task_lists"))
        .and_where(Expr::col(Alias::new("user_id")).eq(user))
        .to_owned();
    Expr::SubQuery(None, Box::new(SubQueryStatement::SelectStatement(value)))
}

/// The user's version alone (a conditional listing's check).
pub fn user_version(dialect: Dialect, user: &str) -> Stmt {
    dialect.render(&Query::select().expr(version_of(user)).to_owned())
}

/// The changes feed: $1 user, $2 since, $3 the oldest time a tombstone is
/// kept, $4 the page's length + 1. One row of the user's version and
/// whether `since` is past what the kept tombstones answer, with each
/// change after `since` (ascending by version; NULLs when there is none):
/// `gone`, then [`TASK`] (a tombstone: its id and version, the rest NULL).
/// `since` 0 is the snapshot: live tasks only.
pub fn changes(
    dialect: Dialect,
    user: &str,
    since: i64,
    kept_from: DateTime<Utc>,
    limit: i64,
) -> Stmt {
    let sql = "SELECT h.version, h.expired, c.gone, c.id, c.user_id, c.title, c.description, \
         c.completed, c.created_at, c.updated_at, c.version FROM \
         (SELECT COALESCE((SELECT version FROM task_lists WHERE user_id = $1), 0) AS version, \
           EXISTS (SELECT 1 FROM task_tombstones WHERE user_id = $1 AND version > $2 AND $2 > 0 \
             AND deleted_at < $3) AS expired) AS h \
         LEFT JOIN (SELECT * FROM ( \
           SELECT false AS gone, id, user_id, title, description, completed, created_at, updated_at, version \
             FROM tasks WHERE user_id = $1 AND version > $2 \
           UNION ALL \
           SELECT true, task_id, user_id, NULL, NULL, NULL, NULL, NULL, version \
             FROM task_tombstones WHERE user_id = $1 AND version > $2 AND $2 > 0 \
         ) AS u ORDER BY version LIMIT $4) AS c ON true \
         ORDER BY c.version";
    let values = [user.into(), since.into(), kept_from.into(), limit.into()];
    portable(dialect, sql, &values)
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
