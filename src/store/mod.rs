//! The only way to reach tasks: a store scoped to one verified user.
//!
//! [`UserTasks`] is built from an [`Identity`] that came out of token
//! verification, and every statement it sends carries `user_id = owner`
//! (see [`sql`]). Handlers get no database handle of their own, so a query
//! without the user filter cannot be written in a handler.
//!
//! Each request's work is one list of statements in one transaction, one
//! round trip to PostgreSQL (see [`sql`]), a create with an
//! `Idempotency-Key` included.

mod reads;
mod sql;

pub use reads::{Change, Changes, Listing};
pub use sql::Expected;

use std::sync::Arc;

use crate::auth::Identity;
use crate::config::SyncSettings;
use crate::db::{Caller, Db, DbError, Dialect, Row, Rows, Stmt};
use crate::idempotency::{self, InFlight, KeyedRequest, StoredResponse};
use crate::models::input::{NewTask, TaskChanges};
use crate::models::output::TaskOut;
use crate::models::task;

/// Why a store operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the user already has {limit} tasks")]
    TaskLimitReached { limit: u64 },
    #[error("the idempotency key was used with another body")]
    IdempotencyMismatch,
    #[error("a request with this idempotency key is still running")]
    IdempotencyInProgress,
    #[error("the task created with this idempotency key was deleted since")]
    IdempotentTaskDeleted,
    /// `If-Match` named another version of the task: nothing changed.
    #[error("the task is not at the version the request expected")]
    Stale(Box<task::Model>),
    /// The feed cannot answer from this cursor exactly.
    #[error("the cursor is past what the feed can answer")]
    CursorExpired,
}

/// One user's tasks.
pub struct UserTasks {
    db: Db,
    owner: Arc<str>,
    max_tasks: u64,
    sync: SyncSettings,
    live: Arc<crate::live::Hub>,
    notify: bool,
    in_flight_keys: Arc<InFlight>,
    #[cfg(debug_assertions)]
    without_owner_filter: bool,
}

/// A create's outcome.
pub enum Created {
    New(task::Model),
    /// An earlier request with the same `Idempotency-Key` and body: its response.
    Replayed(StoredResponse),
}

/// What the authentication extractor hands the store besides the identity.
#[derive(Clone)]
pub struct StoreConfig {
    pub db: Db,
    pub max_tasks: u64,
    pub sync: SyncSettings,
    /// Live streams to wake after each write of theirs.
    pub live: Arc<crate::live::Hub>,
    /// PostgreSQL: each write also notifies the other instances.
    pub notify: bool,
    pub in_flight_keys: Arc<InFlight>,
    /// Tests only (`TEST_ONLY_WITHOUT_OWNER_FILTER`): see [`sql::without_owner_filter`].
    #[cfg(debug_assertions)]
    pub without_owner_filter: bool,
}

impl UserTasks {
    /// Only the authentication extractor calls this, with a verified identity.
    pub(crate) fn new(config: &StoreConfig, identity: &Identity) -> Self {
        UserTasks {
            db: config.db.clone(),
            owner: Arc::from(identity.user_id.as_str()),
            max_tasks: config.max_tasks,
            sync: config.sync.clone(),
            live: Arc::clone(&config.live),
            notify: config.notify,
            in_flight_keys: Arc::clone(&config.in_flight_keys),
            #[cfg(debug_assertions)]
            without_owner_filter: config.without_owner_filter,
        }
    }

    /// The verified user whose tasks these are.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn dialect(&self) -> Dialect {
        self.db.dialect()
    }

    async fn read(&self, stmts: Vec<Stmt>) -> Result<Vec<Rows>, DbError> {
        self.db.read(self.caller(), &self.sent(stmts)).await
    }

    /// A write, then its user's live streams woken: by a `NOTIFY` committed
    /// with it (PostgreSQL), which every instance's listener hears, this
    /// one's too; directly where no listener hears it.
    async fn write(&self, mut stmts: Vec<Stmt>) -> Result<Vec<Rows>, DbError> {
        let channel = crate::live::channel(&self.owner);
        let notify = self.notify && self.dialect() == Dialect::Postgres;
        if notify {
            let sql = format!("SELECT pg_notify('{}', $1)", crate::live::CHANNEL);
            stmts.push(Stmt::new(&sql, [channel.clone().into()]));
        }
        // Read before the write commits: if the listener hears now, it hears
        // the commit's notification (or, losing its connection, wakes every
        // stream when it is back). Waking here as well would make each of the
        // user's streams read the feed twice per write: once now, once more
        // (for nothing) when the notification comes back.
        let heard = notify && self.live.hearing();
        let mut results = self.db.write(self.caller(), &self.sent(stmts)).await?;
        if notify {
            // The notification's own row is nobody's answer.
            results.pop();
        }
        if !heard {
            self.live.touch(&channel);
        }
        Ok(results)
    }

    /// The database knows whose work this is (row-level security).
    fn caller(&self) -> Caller<'_> {
        Caller::User(&self.owner)
    }

    /// The statements as sent.
    fn sent(&self, stmts: Vec<Stmt>) -> Vec<Stmt> {
        #[cfg(debug_assertions)]
        if self.without_owner_filter {
            return stmts.into_iter().map(sql::without_owner_filter).collect();
        }
        stmts
    }

    pub async fn get(&self, id: i64) -> Result<Option<task::Model>, StoreError> {
        let rows = self
            .read(vec![sql::get(self.dialect(), &self.owner, id)])
            .await?;
        Ok(one_row(rows).as_ref().map(task).transpose()?)
    }

    /// Creates a task unless the user is at the task limit. With an
    /// idempotency key, a repeat of an earlier create replays its response,
    /// and the key is remembered in the same transaction as the task.
    pub async fn create(
        &self,
        new: NewTask,
        keyed: Option<&KeyedRequest>,
    ) -> Result<Created, StoreError> {
        let new = sql::NewRow {
            user: self.owner.to_string(),
            max_tasks: i64::try_from(self.max_tasks).unwrap_or(i64::MAX),
            title: new.title.into_string(),
            description: new.description,
            completed: new.completed,
            now: sql::now(),
        };
        // A repeat while the first runs in this process is a conflict at
        // once (across instances, the key's advisory lock on PostgreSQL).
        let _claim = match keyed {
            Some(k) => Some(
                self.in_flight_keys
                    .claim(&self.owner, &k.key)
                    .ok_or(StoreError::IdempotencyInProgress)?,
            ),
            None => None,
        };
        let key = keyed.map(|k| sql::Key {
            key: k.key.as_str(),
            fingerprint: k.fingerprint.as_str(),
            expiry: idempotency::expiry(new.now),
            lock: idempotency::lock_key(&self.owner, &k.key),
        });
        let stmts = sql::create(self.dialect(), &new, key.as_ref());
        let mut results = self.write(stmts).await?.into_iter();
        if let Some(keyed) = keyed {
            if self.dialect() == Dialect::Postgres {
                let held = results.next().and_then(first).map(|row| row.get::<bool>(0));
                if !held.transpose()?.unwrap_or(false) {
                    return Err(StoreError::IdempotencyInProgress);
                }
            }
            if let Some(prior) = results.next().and_then(first) {
                return replay(&prior, keyed, &new);
            }
        }
        // SQLite: the count's rows, then the task's.
        if self.dialect() == Dialect::Sqlite {
            results.next();
        }
        match results.next().and_then(first) {
            Some(row) => Ok(Created::New(task(&row)?)),
            None => Err(StoreError::TaskLimitReached {
                limit: self.max_tasks,
            }),
        }
    }

    /// Applies the given fields, if the task is at an expected version.
    pub async fn update(
        &self,
        id: i64,
        changes: TaskChanges,
        expected: &sql::Expected<'_>,
    ) -> Result<Option<task::Model>, StoreError> {
        let changes = sql::Changes {
            title: changes.title.map(|t| t.into_string()),
            description: changes.description,
            completed: changes.completed,
        };
        let stmts = sql::update(self.dialect(), self.target(id), changes, expected);
        self.rewrite(stmts).await
    }

    /// Sets `completed`, or flips it when `None`, in one statement, so
    /// concurrent toggles never lose one.
    pub async fn set_completed(
        &self,
        id: i64,
        completed: Option<bool>,
        expected: &sql::Expected<'_>,
    ) -> Result<Option<task::Model>, StoreError> {
        let stmts = sql::set_completed(self.dialect(), self.target(id), completed, expected);
        self.rewrite(stmts).await
    }

    /// The task as it was when deleted (and taken off the user's count).
    pub async fn delete(
        &self,
        id: i64,
        expected: &sql::Expected<'_>,
    ) -> Result<Option<task::Model>, StoreError> {
        let stmts = sql::delete(self.dialect(), self.target(id), expected);
        self.rewrite(stmts).await
    }

    fn target(&self, id: i64) -> sql::Target<'_> {
        sql::Target {
            user: &self.owner,
            id,
            now: sql::now(),
        }
    }

    /// A write of one task: the task (`None`: the caller has no such task),
    /// or `StoreError::Stale` with the task as it is.
    async fn rewrite(&self, stmts: Vec<Stmt>) -> Result<Option<task::Model>, StoreError> {
        let row = self.write(stmts).await?.into_iter().flatten().next();
        let Some(row) = row else { return Ok(None) };
        let task = task_at(&row, 1)?;
        match row.get::<bool>(0)? {
            true => Ok(Some(task)),
            false => Err(StoreError::Stale(Box::new(task))),
        }
    }
}

/// The replay of an earlier create with the same key, unless the body
/// differs or the task it created is gone. Its body is the one stored (by
/// an earlier release), or rebuilt: this request is the first one (same
/// fingerprint), the rest is the key's.
fn replay(prior: &Row, keyed: &KeyedRequest, new: &sql::NewRow) -> Result<Created, StoreError> {
    if prior.get::<String>(0)? != keyed.fingerprint.as_str() {
        return Err(StoreError::IdempotencyMismatch);
    }
    let task_id: Option<i64> = prior.get(4)?;
    if task_id.is_some() && !prior.get::<bool>(5)? {
        // A 201 for a task that no longer exists would send the client to a
        // 404; it is not created again either.
        return Err(StoreError::IdempotentTaskDeleted);
    }
    let body = match (prior.get::<Option<String>>(2)?, task_id) {
        (Some(body), _) => body,
        (None, Some(id)) => {
            let created_at = prior.get(6)?;
            let version = prior.get::<Option<i64>>(7)?.unwrap_or_default();
            let first = TaskOut {
                id,
                user_id: new.user.clone(),
                title: new.title.clone(),
                description: new.description.clone(),
                completed: new.completed,
                created_at,
                updated_at: created_at,
                version,
            };
            String::from_utf8(first.to_json()).map_err(|e| DbError::bug(e.to_string()))?
        }
        (None, None) => return Err(DbError::bug("a key without its response").into()),
    };
    Ok(Created::Replayed(StoredResponse {
        status: u16::try_from(prior.get::<i16>(1)?).unwrap_or(201),
        task_version: prior.get(7)?,
        body,
        location: prior.get(3)?,
        task_id,
    }))
}

/// The first row of the first statement's rows.
fn one_row(results: Vec<Rows>) -> Option<Row> {
    results.into_iter().next().and_then(first)
}

fn first(rows: Rows) -> Option<Row> {
    rows.into_iter().next()
}

/// A task row: the columns of `sql::TASK`, in order.
fn task(row: &Row) -> Result<task::Model, DbError> {
    task_at(row, 0)
}

/// The columns of `sql::TASK`, from column `at` on.
fn task_at(row: &Row, at: usize) -> Result<task::Model, DbError> {
    Ok(task::Model {
        id: row.get(at)?,
        user_id: row.get(at + 1)?,
        title: row.get(at + 2)?,
        description: row.get(at + 3)?,
        completed: row.get(at + 4)?,
        created_at: row.get(at + 5)?,
        updated_at: row.get(at + 6)?,
        version: row.get(at + 7)?,
    })
}

/// `/api/tasks/{id}`, the `Location` of a created task.
pub fn location(id: i64) -> String {
    format!("/api/tasks/{id}")
}

/// Deletes idempotency keys past their retention period; how many. Work of
/// the service, for no user: on PostgreSQL, row-level security lets it
/// read and delete expired keys only (`expired_keys_outside_requests_*`).
/// One committed write that touches no user data (start-up and the
/// readiness probe while writes fail).
pub async fn probe_write(db: &Db) -> Result<(), DbError> {
    let stmt = Stmt::new(
        "INSERT INTO service_probe (id, probed_at) VALUES (1, CURRENT_TIMESTAMP) \
         ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
        [],
    );
    db.write(Caller::Service, &[stmt]).await.map(drop)
}

pub async fn purge_expired_keys(db: &Db) -> Result<usize, DbError> {
    let stmt = sql::purge_keys(db.dialect(), idempotency::expiry(sql::now()));
    let results = db.write(Caller::Service, &[stmt]).await?;
    Ok(results.into_iter().map(|rows| rows.len()).sum())
}

/// Deletes tombstones deleted before `kept_from`, but each user's newest
/// one (see `sql::purge_tombstones`); how many. Row-level security lets
/// the service do this outside requests for tombstones a day old or more.
pub async fn purge_tombstones(
    db: &Db,
    kept_from: chrono::DateTime<chrono::Utc>,
) -> Result<usize, DbError> {
    let stmt = sql::purge_tombstones(db.dialect(), kept_from);
    let results = db.write(Caller::Service, &[stmt]).await?;
    Ok(results.into_iter().map(|rows| rows.len()).sum())
}
