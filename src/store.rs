//! The only way to reach tasks: a store scoped to one verified user.
//!
//! [`UserTasks`] is built from an [`Identity`] that came out of token
//! verification, and every statement it issues carries `user_id = owner`.
//! Handlers get no database handle of their own, so a query without the user
//! filter cannot be written in a handler, not just "is not".
//!
//! Writes are acknowledged only once committed (see [`crate::db`]): single
//! statements are read to their end, and a create (limit check, insert,
//! idempotency record) commits as one transaction.

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use futures_util::{Stream, StreamExt};
use sea_orm::sea_query::{
    BinOper, Expr, ExprTrait, Order, Query, QueryStatementBuilder, SubQueryStatement,
};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult,
    PaginatorTrait, QueryFilter, QueryOrder, QueryResult, QuerySelect, QueryTrait, Select,
    Statement,
};

use sea_orm::sqlx::{self, Row};

use crate::auth::Identity;
use crate::db::{Db, Unit};
use crate::idempotency::{self, InFlight, KeyedRequest, Prior, StoredResponse};
use crate::models::input::{NewTask, TaskChanges};
use crate::models::list::{CompletedFilter, ListQuery, SortField, SortOrder};
use crate::models::output::TaskOut;
use crate::models::task::{self, Column, Entity as Tasks};

/// Why a store operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error("the user already has {limit} tasks")]
    TaskLimitReached { limit: u64 },
    #[error("the idempotency key was used with another body")]
    IdempotencyMismatch,
    #[error("a request with this idempotency key is still running")]
    IdempotencyInProgress,
    #[error("the task created with this idempotency key was deleted since")]
    IdempotentTaskDeleted,
}

/// One user's tasks.
pub struct UserTasks {
    db: Db,
    owner: Arc<str>,
    max_tasks: u64,
    in_flight_keys: Arc<InFlight>,
}

/// A create's outcome.
pub enum Created {
    New(task::Model),
    /// An earlier request with the same `Idempotency-Key` and body: its response.
    Replayed(StoredResponse),
}

/// A listing: the number of matching tasks before `limit`/`offset`, and the
/// page itself as a stream (its memory does not grow with its length).
pub struct Listing {
    pub total: u64,
    pub tasks: std::pin::Pin<Box<dyn Stream<Item = Result<task::Model, DbErr>> + Send>>,
}

/// A row of the listing query: the task plus `COUNT(*) OVER ()`, so the page
/// and the total come back in one round trip.
struct CountedRow {
    task: task::Model,
    total_count: i64,
}

/// A task read by column position: `Tasks::find()` selects the entity's
/// columns in their declared order (id, user_id, title, description,
/// completed, created_at, updated_at). Looking each column up by name cost
/// more than decoding it.
struct TaskRow(task::Model);

/// `$body` with `$row` bound to the sqlx row under SeaORM's: PostgreSQL's or
/// SQLite's, the two backends this service is built with, so that one
/// generic decoder serves both.
macro_rules! with_sqlx_row {
    ($result:expr, |$row:ident| $body:expr) => {
        if let Some($row) = $result.try_as_pg_row() {
            $body
        } else if let Some($row) = $result.try_as_sqlite_row() {
            $body
        } else {
            Err(DbErr::Type(
                "a row from neither PostgreSQL nor SQLite".into(),
            ))
        }
    };
}

fn task_at(row: &QueryResult) -> Result<task::Model, DbErr> {
    with_sqlx_row!(row, |row| decoded_task(row))
}

/// A task from sqlx's row. The statements are ours and the column types
/// those of the migration, so sqlx's check of each value's type against the
/// Rust one (a fifth of decoding a listed row) is skipped; a value that is
/// not what the migration made still fails to decode.
fn decoded_task<R>(row: &R) -> Result<task::Model, DbErr>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
    for<'r> DateTime<Utc>: sqlx::Decode<'r, R::Database>,
{
    Ok(task::Model {
        id: decoded(row, 0)?,
        user_id: decoded(row, 1)?,
        title: decoded(row, 2)?,
        description: decoded(row, 3)?,
        completed: decoded(row, 4)?,
        created_at: decoded(row, 5)?,
        updated_at: decoded(row, 6)?,
    })
}

fn decoded<'r, R, T>(row: &'r R, index: usize) -> Result<T, DbErr>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    T: sqlx::Decode<'r, R::Database>,
{
    row.try_get_unchecked(index)
        .map_err(|e| DbErr::Type(format!("column {index}: {e}")))
}

impl FromQueryResult for TaskRow {
    fn from_query_result(row: &QueryResult, _: &str) -> Result<Self, DbErr> {
        task_at(row).map(TaskRow)
    }
}

impl FromQueryResult for CountedRow {
    fn from_query_result(row: &QueryResult, _: &str) -> Result<Self, DbErr> {
        with_sqlx_row!(row, |row| Ok(CountedRow {
            task: decoded_task(row)?,
            // The column after the task's (see `list`).
            total_count: decoded(row, 7)?,
        }))
    }
}

/// What the auth extractor hands the store besides the identity.
#[derive(Clone)]
pub struct StoreConfig {
    pub db: Db,
    pub max_tasks: u64,
    pub in_flight_keys: Arc<InFlight>,
}

impl UserTasks {
    /// Only the authentication extractor calls this, with a verified identity.
    pub(crate) fn new(config: &StoreConfig, identity: &Identity) -> Self {
        UserTasks {
            db: config.db.clone(),
            owner: Arc::from(identity.user_id.as_str()),
            max_tasks: config.max_tasks,
            in_flight_keys: Arc::clone(&config.in_flight_keys),
        }
    }

    /// Every read starts here: all of this user's tasks, nobody else's.
    fn owned(&self) -> Select<Tasks> {
        Tasks::find().filter(Column::UserId.eq(&*self.owner))
    }

    /// The filter every write carries.
    fn one_owned(&self, id: i64) -> Condition {
        Condition::all()
            .add(Column::Id.eq(id))
            .add(Column::UserId.eq(&*self.owner))
    }

    pub async fn list(&self, query: &ListQuery) -> Result<Listing, StoreError> {
        let mut select = self.owned();
        match query.completed_filter() {
            CompletedFilter::Any => {}
            CompletedFilter::Only(done) => select = select.filter(Column::Completed.eq(done)),
            CompletedFilter::Nothing => {
                return Ok(Listing {
                    total: 0,
                    tasks: Box::pin(futures_util::stream::empty()),
                });
            }
        }
        if let Some(q) = &query.q {
            let backend = self.db.backend();
            let matches = |col: Column| match backend {
                // SQLite's LIKE and lower() fold ASCII only; its REGEXP (Rust's
                // regex, registered in db/pool.rs) folds all of Unicode.
                DbBackend::Sqlite => Expr::col(col).binary(
                    BinOper::Custom("REGEXP"),
                    format!("(?i){}", regex::escape(q)),
                ),
                // `strpos(lower(..), lower(..))` is what `ILIKE '%q%'` does
                // (PostgreSQL lowers both sides), without the backtracking
                // matcher: a 1,000-character q over 20,000 tasks costs 40 ms
                // instead of 250 ms, and `%`, `_` need no escaping.
                _ => Expr::cust_with_exprs(
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
        let total_count = match self.db.backend() {
            // SQLite materialises a window's rows in a temporary B-tree and
            // sorts them again; its count of the same rows, once, as a scalar
            // subquery, reads only the index: a page of 1,000 costs 1.1 ms
            // instead of 2.8. (PostgreSQL's window is cheap, and the bench's
            // pgbench script mirrors it.)
            DbBackend::Sqlite => Expr::SubQuery(
                None,
                Box::new(SubQueryStatement::SelectStatement(
                    select
                        .clone()
                        .select_only()
                        .column_as(Expr::cust("COUNT(*)"), "n")
                        .into_query(),
                )),
            ),
            _ => Expr::cust("COUNT(*) OVER ()"),
        };
        let counted = select
            .clone()
            .column_as(total_count, "total_count")
            .order_by(sort_column, order.clone());
        let counted = if sort == SortField::Id {
            counted
        } else {
            counted.order_by(Column::Id, order)
        };
        // SQLite accepts OFFSET only after a LIMIT: "no limit" is the largest one.
        let limit = query.limit.or(query.offset.map(|_| i64::MAX as u64));
        let counted = counted.limit(limit).offset(query.offset);

        let db = self.db.clone();
        // Each wait for the database is bounded (`Db::bounded`), not the
        // whole stream: a client may read a long listing slowly.
        let mut rows = Box::pin(async_stream::try_stream! {
            let unit = db.bounded(db.unit()).await?;
            {
                let mut rows = db
                    .bounded(counted.into_model::<CountedRow>().stream(&unit))
                    .await?;
                // Each wait for a row is bounded (see `Db::bounded`), not the
                // whole stream: a client may read a long listing slowly.
                while let Some(row) = db.next_within_deadline(&mut rows).await? {
                    yield row?;
                }
            }
            db.bounded(unit.commit()).await?;
        });
        // The first row carries the total; an empty page past the end does not.
        let first: Option<CountedRow> = rows.next().await.transpose()?;
        let total = match &first {
            Some(row) => u64::try_from(row.total_count).unwrap_or(0),
            None if query.offset.unwrap_or(0) > 0 => {
                self.db
                    .bounded(async {
                        let unit = self.db.unit().await?;
                        let total = select.count(&unit).await?;
                        unit.commit().await?;
                        Ok::<_, DbErr>(total)
                    })
                    .await?
            }
            None => 0,
        };
        let tasks = futures_util::stream::iter(first.map(Ok))
            .chain(rows)
            .map(|row: Result<CountedRow, DbErr>| row.map(|r| r.task));
        Ok(Listing {
            total,
            tasks: Box::pin(tasks),
        })
    }

    pub async fn get(&self, id: i64) -> Result<Option<task::Model>, StoreError> {
        self.db
            .bounded(async {
                let unit = self.db.unit().await?;
                let task = self
                    .owned()
                    .filter(Column::Id.eq(id))
                    .into_model::<TaskRow>()
                    .one(&unit)
                    .await?;
                unit.commit().await?;
                Ok(task.map(|TaskRow(task)| task))
            })
            .await
    }

    /// Creates a task unless the user is at the task limit. With an
    /// idempotency key, a repeat of an earlier create replays its response,
    /// and the response is stored in the same transaction as the task.
    pub async fn create(
        &self,
        new: NewTask,
        keyed: Option<&KeyedRequest>,
    ) -> Result<Created, StoreError> {
        let _claim = match keyed {
            Some(k) => Some(
                self.in_flight_keys
                    .claim(&self.owner, &k.key)
                    .ok_or(StoreError::IdempotencyInProgress)?,
            ),
            None => None,
        };
        if keyed.is_none() && self.db.backend() == DbBackend::Postgres {
            return self
                .write(async |unit| self.create_in_one_statement(unit, new).await)
                .await;
        }
        // Bounded (see `Db::bounded`): the claim on the key is held until then.
        let result = self
            .db
            .bounded(self.create_in_transaction(new, keyed))
            .await;
        self.observe_write(&result);
        result
    }

    /// PostgreSQL, no idempotency key: one statement, one round trip. The
    /// function `create_task` (migration `m20261130_000003`) takes the
    /// user's lock, then counts and inserts (see `create_steps` for the
    /// same in three).
    async fn create_in_one_statement(
        &self,
        unit: &Unit,
        new: NewTask,
    ) -> Result<Created, StoreError> {
        let statement = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT * FROM create_task($1, $2, $3, $4, $5, $6, $7)",
            [
                user_lock(&self.owner).into(),
                self.owner.to_string().into(),
                new.title.into_string().into(),
                new.description.into(),
                new.completed.into(),
                now().into(),
                i64::try_from(self.max_tasks).unwrap_or(i64::MAX).into(),
            ],
        );
        // Read to the end: the function returns one row, or none at the limit.
        match unit.query_all_raw(statement).await?.into_iter().next() {
            Some(row) => Ok(Created::New(task_at(&row)?)),
            None => Err(StoreError::TaskLimitReached {
                limit: self.max_tasks,
            }),
        }
    }

    async fn create_in_transaction(
        &self,
        new: NewTask,
        keyed: Option<&KeyedRequest>,
    ) -> Result<Created, StoreError> {
        // Creates of one user must not interleave (the limit is counted
        // inside the insert): on PostgreSQL a per-user lock, taken after the
        // key's (SQLite's `BEGIN IMMEDIATE` already serialises writers).
        let txn = self.db.begin_write().await?;
        match self.create_steps(&txn, new, keyed).await {
            Ok(created @ Created::New(_)) => {
                txn.commit().await?;
                Ok(created)
            }
            // A replay or a refusal wrote nothing: end the transaction now
            // rather than when the connection is next used.
            other => {
                if let Err(e) = txn.rollback().await {
                    tracing::debug!(error = %e, "rollback after a create that wrote nothing");
                }
                other
            }
        }
    }

    /// The statements of a create, in `txn`; the caller commits. On
    /// PostgreSQL only keyed creates come here (the others take
    /// `create_in_one_statement`); SQLite: `BEGIN IMMEDIATE`, the insert,
    /// `COMMIT`.
    async fn create_steps(
        &self,
        txn: &Unit,
        new: NewTask,
        keyed: Option<&KeyedRequest>,
    ) -> Result<Created, StoreError> {
        let now = now();
        let postgres = self.db.backend() == DbBackend::Postgres;
        if let Some(keyed) = keyed {
            // Another instance running the same key holds this lock.
            if postgres
                && !try_lock_xact(txn, idempotency::lock_key(&self.owner, &keyed.key)).await?
            {
                return Err(StoreError::IdempotencyInProgress);
            }
            if postgres {
                lock_xact(txn, user_lock(&self.owner)).await?;
            }
            match idempotency::prior(txn, &self.owner, keyed, now).await? {
                Prior::None => {}
                Prior::Replay(response) => {
                    // A 201 for a task that no longer exists would send the
                    // client to a 404; it is not created again either.
                    if let Some(id) = response.task_id
                        && self.owned().filter(Column::Id.eq(id)).count(txn).await? == 0
                    {
                        return Err(StoreError::IdempotentTaskDeleted);
                    }
                    return Ok(Created::Replayed(response));
                }
                Prior::Mismatch => return Err(StoreError::IdempotencyMismatch),
            }
        }
        // INSERT ... SELECT ... WHERE (the user's count) < limit: under the
        // lock, the count sees every committed create; no row means the limit.
        let count = Query::select()
            .expr(Expr::col(Column::Id).count())
            .from(Tasks)
            .and_where(Column::UserId.eq(&*self.owner))
            .to_owned();
        let values = Query::select()
            .exprs([
                Expr::val(self.owner.to_string()),
                Expr::val(new.title.into_string()),
                Expr::val(new.description),
                Expr::val(new.completed),
                Expr::val(now),
                Expr::val(now),
            ])
            .and_where(
                Expr::SubQuery(None, Box::new(count.into_sub_query_statement()))
                    .lt(i64::try_from(self.max_tasks).unwrap_or(i64::MAX)),
            )
            .to_owned();
        let insert = Query::insert()
            .into_table(Tasks)
            .columns([
                Column::UserId,
                Column::Title,
                Column::Description,
                Column::Completed,
                Column::CreatedAt,
                Column::UpdatedAt,
            ])
            .select_from(values)
            .map_err(|e| DbErr::Custom(e.to_string()))?
            .returning_all()
            .to_owned();
        // Read to the end (`query_all`): a statement left unfinished would
        // leave SQLite's error unseen.
        let Some(row) = txn.query_all(&insert).await?.into_iter().next() else {
            return Err(StoreError::TaskLimitReached {
                limit: self.max_tasks,
            });
        };
        let task = task_at(&row)?;
        if let Some(keyed) = keyed {
            let response = StoredResponse {
                status: 201,
                body: String::from_utf8(TaskOut::from(task.clone()).to_json())
                    .map_err(|e| DbErr::Custom(e.to_string()))?,
                location: Some(location(task.id)),
                task_id: Some(task.id),
            };
            idempotency::remember(txn, &self.owner, keyed, &response, now).await?;
        }
        Ok(Created::New(task))
    }

    /// Applies the given fields in one `UPDATE ... RETURNING`.
    pub async fn update(
        &self,
        id: i64,
        changes: TaskChanges,
    ) -> Result<Option<task::Model>, StoreError> {
        let mut update = Tasks::update_many().col_expr(Column::UpdatedAt, Expr::value(now()));
        if let Some(title) = changes.title {
            update = update.col_expr(Column::Title, Expr::value(title.into_string()));
        }
        if let Some(description) = changes.description {
            update = update.col_expr(Column::Description, Expr::value(description));
        }
        if let Some(completed) = changes.completed {
            update = update.col_expr(Column::Completed, Expr::value(completed));
        }
        let update = update.filter(self.one_owned(id));
        self.write(async |unit| Ok(update.exec_with_returning(unit).await?.into_iter().next()))
            .await
    }

    /// Sets `completed`, or flips it when `None`. A single statement
    /// (`SET completed = NOT completed`), so concurrent toggles never lose one.
    pub async fn set_completed(
        &self,
        id: i64,
        completed: Option<bool>,
    ) -> Result<Option<task::Model>, StoreError> {
        let value = match completed {
            Some(v) => Expr::value(v),
            None => Expr::col(Column::Completed).not(),
        };
        let update = Tasks::update_many()
            .col_expr(Column::Completed, value)
            .col_expr(Column::UpdatedAt, Expr::value(now()))
            .filter(self.one_owned(id));
        self.write(async |unit| Ok(update.exec_with_returning(unit).await?.into_iter().next()))
            .await
    }

    /// True when a task was deleted.
    pub async fn delete(&self, id: i64) -> Result<bool, StoreError> {
        let delete = Tasks::delete_many().filter(self.one_owned(id));
        self.write(async |unit| Ok(delete.exec(unit).await?.rows_affected > 0))
            .await
    }

    /// Runs a one-statement write in a unit of work, commits it, and lets
    /// readiness follow the outcome.
    async fn write<T>(
        &self,
        statement: impl AsyncFnOnce(&Unit) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = self
            .db
            .bounded(async {
                let _turn = self.db.write_turn().await?;
                let unit = self.db.unit().await?;
                let value = statement(&unit).await?;
                unit.commit().await?;
                Ok(value)
            })
            .await;
        self.observe_write(&result);
        result
    }

    fn observe_write<T>(&self, result: &Result<T, StoreError>) {
        self.db.observe_write(result, |e| match e {
            StoreError::Db(err) => Some(err),
            _ => None,
        });
    }
}

/// The key of a user's PostgreSQL advisory lock, which that user's creates
/// take in turn (the same on every instance).
pub fn user_lock(owner: &str) -> i64 {
    idempotency::stable_hash(&[b"tasks", owner.as_bytes()])
}

/// Waits for the transaction-level advisory lock `key` (released at commit
/// or rollback, so it holds through a transaction-mode pooler).
async fn lock_xact(txn: &impl ConnectionTrait, key: i64) -> Result<(), DbErr> {
    txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({key})"))
        .await
        .map(|_| ())
}

/// Takes the transaction-level advisory lock `key` if it is free.
async fn try_lock_xact(txn: &impl ConnectionTrait, key: i64) -> Result<bool, DbErr> {
    let row = txn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT pg_try_advisory_xact_lock({key}) AS held"),
        ))
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<bool>("", "held")?,
        None => false,
    })
}

/// `/api/tasks/{id}`, the `Location` of a created task.
pub fn location(id: i64) -> String {
    format!("/api/tasks/{id}")
}

/// Microsecond precision: what PostgreSQL stores, so the instant a write
/// returns is exactly the one every later read returns.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
