//! The only way to reach tasks: a store scoped to one verified user.
//!
//! [`UserTasks`] is built from an [`Identity`] that came out of token
//! verification, and every statement it issues carries `user_id = owner`.
//! Handlers get no database handle of their own, so a query without the user
//! filter cannot be written in a handler, not just "is not".

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::{BinOper, Expr, ExprTrait, Order};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, DatabaseConnection, DbBackend,
    DbErr, EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    Select,
};

use crate::auth::Identity;
use crate::models::input::{NewTask, TaskChanges};
use crate::models::list::{CompletedFilter, ListQuery, SortField, SortOrder};
use crate::models::task::{self, Column, Entity as Tasks};

/// One user's tasks.
pub struct UserTasks {
    db: DatabaseConnection,
    owner: String,
}

/// A listing page and the number of matching tasks before `limit`/`offset`.
pub struct Page {
    pub tasks: Vec<task::Model>,
    pub total: u64,
}

/// A row of the listing query: the task plus `COUNT(*) OVER ()`, so the page
/// and the total come back in one round trip.
#[derive(FromQueryResult)]
struct CountedRow {
    #[sea_orm(nested)]
    task: task::Model,
    total_count: i64,
}

impl UserTasks {
    /// Only the authentication extractor calls this, with a verified identity.
    pub(crate) fn new(db: DatabaseConnection, identity: &Identity) -> Self {
        UserTasks {
            db,
            owner: identity.user_id.clone(),
        }
    }

    /// Every read starts here: all of this user's tasks, nobody else's.
    fn owned(&self) -> Select<Tasks> {
        Tasks::find().filter(Column::UserId.eq(self.owner.as_str()))
    }

    /// The filter every write carries.
    fn one_owned(&self, id: i64) -> Condition {
        Condition::all()
            .add(Column::Id.eq(id))
            .add(Column::UserId.eq(self.owner.as_str()))
    }

    pub async fn list(&self, query: &ListQuery) -> Result<Page, DbErr> {
        let mut select = self.owned();
        match query.completed_filter() {
            CompletedFilter::Any => {}
            CompletedFilter::Only(done) => select = select.filter(Column::Completed.eq(done)),
            CompletedFilter::Nothing => {
                return Ok(Page {
                    tasks: Vec::new(),
                    total: 0,
                });
            }
        }
        if let Some(q) = &query.q {
            let matches = |col: Column| match self.db.get_database_backend() {
                // SQLite's LIKE and lower() fold ASCII only; its REGEXP (Rust's
                // regex, registered in db.rs) folds all of Unicode.
                DbBackend::Sqlite => Expr::col(col).binary(
                    BinOper::Custom("REGEXP"),
                    format!("(?i){}", regex::escape(q)),
                ),
                _ => {
                    Expr::col(col).binary(BinOper::Custom("ILIKE"), format!("%{}%", escape_like(q)))
                }
            };
            select = select.filter(
                Condition::any()
                    .add(matches(Column::Title))
                    .add(matches(Column::Description)),
            );
        }
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
        let counted = select
            .clone()
            .column_as(Expr::cust("COUNT(*) OVER ()"), "total_count")
            .order_by(sort_column, order.clone());
        let counted = if sort == SortField::Id {
            counted
        } else {
            counted.order_by(Column::Id, order)
        };
        // SQLite accepts OFFSET only after a LIMIT: "no limit" is the largest one.
        let limit = query.limit.or(query.offset.map(|_| i64::MAX as u64));
        let rows = counted
            .limit(limit)
            .offset(query.offset)
            .into_model::<CountedRow>()
            .all(&self.db)
            .await?;

        let total = match rows.first() {
            Some(row) => u64::try_from(row.total_count).unwrap_or(0),
            // An empty page past the end carries no count: ask for it.
            None if query.offset.unwrap_or(0) > 0 => select.count(&self.db).await?,
            None => 0,
        };
        Ok(Page {
            tasks: rows.into_iter().map(|r| r.task).collect(),
            total,
        })
    }

    pub async fn get(&self, id: i64) -> Result<Option<task::Model>, DbErr> {
        self.owned().filter(Column::Id.eq(id)).one(&self.db).await
    }

    pub async fn create(&self, new: NewTask) -> Result<task::Model, DbErr> {
        let now = now();
        task::ActiveModel {
            user_id: Set(self.owner.clone()),
            title: Set(new.title),
            description: Set(new.description),
            completed: Set(new.completed),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        }
        .insert(&self.db)
        .await
    }

    /// Applies the given fields in one `UPDATE ... RETURNING`.
    pub async fn update(
        &self,
        id: i64,
        changes: TaskChanges,
    ) -> Result<Option<task::Model>, DbErr> {
        let mut update = Tasks::update_many().col_expr(Column::UpdatedAt, Expr::value(now()));
        if let Some(title) = changes.title {
            update = update.col_expr(Column::Title, Expr::value(title));
        }
        if let Some(description) = changes.description {
            update = update.col_expr(Column::Description, Expr::value(description));
        }
        if let Some(completed) = changes.completed {
            update = update.col_expr(Column::Completed, Expr::value(completed));
        }
        let rows = update
            .filter(self.one_owned(id))
            .exec_with_returning(&self.db)
            .await?;
        Ok(rows.into_iter().next())
    }

    /// Sets `completed`, or flips it when `None`. A single statement
    /// (`SET completed = NOT completed`), so concurrent toggles never lose one.
    pub async fn set_completed(
        &self,
        id: i64,
        completed: Option<bool>,
    ) -> Result<Option<task::Model>, DbErr> {
        let value = match completed {
            Some(v) => Expr::value(v),
            None => Expr::col(Column::Completed).not(),
        };
        let rows = Tasks::update_many()
            .col_expr(Column::Completed, value)
            .col_expr(Column::UpdatedAt, Expr::value(now()))
            .filter(self.one_owned(id))
            .exec_with_returning(&self.db)
            .await?;
        Ok(rows.into_iter().next())
    }

    /// True when a task was deleted.
    pub async fn delete(&self, id: i64) -> Result<bool, DbErr> {
        let result = Tasks::delete_many()
            .filter(self.one_owned(id))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected > 0)
    }
}

/// Microsecond precision: what PostgreSQL stores, so the instant a write
/// returns is exactly the one every later read returns.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Makes `%`, `_` and `\` in user input match literally in PostgreSQL's
/// `ILIKE`, whose escape character is the backslash.
fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
