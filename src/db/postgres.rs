//! PostgreSQL: a deadpool of tokio-postgres clients. tokio-postgres sends a
//! request when its future is first polled, so `BEGIN`, the statements and
//! `COMMIT` polled together leave in one write: one round trip (sqlx waits
//! for each answer). deadpool takes a client back without one (sqlx pings).
//! Directly, statements are prepared once per connection; behind a
//! transaction-mode pooler nothing may outlive a transaction: statements
//! are unnamed (`query_typed`) and each batch sets its `statement_timeout`.
//!
//! A user's work runs in a transaction that first sets the user (and, with
//! row-level security on, takes the request role), both `LOCAL`: they end
//! with the transaction, so nothing carries over to the next one on the
//! connection, through a pooler too. See `specs/database`.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, WeakPool};
use std::pin::{Pin, pin};

use futures_util::future::{MaybeDone, maybe_done};
use futures_util::{Stream, StreamExt, TryStreamExt};
use tokio_postgres::types::{ToSql, Type};

use super::sql::{PgParam, Row, Rows, Stmt, pg_params};
use super::{ACQUIRE_TIMEOUT, Caller, DbError};
use crate::config::{DatabaseSettings, PoolMode, Switch};
use crate::tls;

/// Sets the request's user for the rest of its transaction.
const SET_USER: &str = "SELECT set_config('todo.user_id', $1, true)";

pub(super) struct Pg {
    pool: Pool,
    /// Behind a transaction-mode pooler.
    pooled: bool,
    /// What opens a transaction (behind a pooler, with its settings).
    begin: String,
    /// What opens a user's transaction: `begin`, and the request role.
    begin_for_user: String,
}

impl Pg {
    pub fn open(settings: &DatabaseSettings) -> Result<Pg, DbError> {
        let target = tls::target(settings.url()).map_err(DbError::bug)?;
        match target.describe() {
            (text, true) => tracing::warn!("PostgreSQL connections: {text}"),
            (text, false) => tracing::info!("PostgreSQL connections: {text}"),
        }
        let mut config = target.config;
        let pooled = settings.pool_mode == PoolMode::Transaction;
        let timeout_ms = settings.db_statement_timeout.as_millis();
        if !pooled {
            config.options(format!("-c statement_timeout={timeout_ms}"));
        }
        config.connect_timeout(ACQUIRE_TIMEOUT);
        let recycling_method = RecyclingMethod::Fast;
        let manager = Manager::from_config(config, target.tls, ManagerConfig { recycling_method });
        let pool = Pool::builder(manager)
            .max_size(settings.max_connections as usize)
            .wait_timeout(Some(ACQUIRE_TIMEOUT))
            .create_timeout(Some(ACQUIRE_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| DbError::bug(e.to_string()))?;
        spawn_upkeep(pool.weak());
        let begin = match pooled {
            true => format!("BEGIN; SET LOCAL statement_timeout = {timeout_ms}"),
            false => "BEGIN".to_owned(),
        };
        let begin_for_user = match settings.db_row_level_security {
            Switch::On => format!("{begin}; SET LOCAL ROLE {}", migration::REQUEST_ROLE),
            Switch::Off => begin.clone(),
        };
        Ok(Pg {
            pool,
            pooled,
            begin,
            begin_for_user,
        })
    }

    /// What opens the caller's transaction, and the statement that sets its user.
    fn opening(&self, caller: Caller<'_>) -> (&str, Option<Stmt>) {
        match caller {
            Caller::User(user) => (
                &self.begin_for_user,
                Some(Stmt::new(SET_USER, [user.into()])),
            ),
            Caller::Service => (&self.begin, None),
        }
    }

    /// A connection, marked as waiting for answers (see [`Checkout`]).
    async fn checkout(&self) -> Result<Checkout, DbError> {
        Ok(Checkout(Some(self.pool.get().await?)))
    }

    /// Open and idle connections.
    pub fn status(&self) -> (usize, usize) {
        let status = self.pool.status();
        (status.size, status.available)
    }

    /// Runs `stmts` in order in one round trip: alone, or several (and a
    /// user's, and any behind a pooler) in one transaction. None: a ping.
    pub async fn run(&self, caller: Caller<'_>, stmts: &[Stmt]) -> Result<Vec<Rows>, DbError> {
        let (begin, set_user) = self.opening(caller);
        let work: Vec<&Stmt> = set_user.iter().chain(stmts).collect();
        let transaction = work.len() > 1 || set_user.is_some() || self.pooled;
        let params = work
            .iter()
            .map(|s| pg_params(&s.values))
            .collect::<Result<Vec<_>, _>>()?;
        let conn = self.checkout().await?;
        let client = conn.client()?;
        if work.is_empty() {
            client.simple_query("").await?;
            return Ok(conn.answered(Vec::new()));
        }
        // Prepared once per connection (directly); then cached.
        let prepared = match self.pooled {
            true => Vec::new(),
            false => {
                futures_util::future::try_join_all(work.iter().zip(&params).map(|(s, p)| {
                    let types = types(p);
                    async move { client.prepare_typed_cached(&s.sql, &types).await }
                }))
                .await?
            }
        };
        type Call<'a> =
            futures_util::future::BoxFuture<'a, Result<Option<Rows>, tokio_postgres::Error>>;
        let mut calls: Vec<Call<'_>> = Vec::with_capacity(work.len() + 2);
        if transaction {
            calls.push(Box::pin(async move {
                client.batch_execute(begin).await.map(|()| None)
            }));
        }
        for (i, (stmt, params)) in work.iter().zip(&params).enumerate() {
            let prepared = prepared.get(i);
            let answered = i > 0 || set_user.is_none();
            calls.push(Box::pin(async move {
                let rows = match prepared {
                    Some(statement) => client.query(statement, &refs(params)).await?,
                    None => client.query_typed(&stmt.sql, &typed(params)).await?,
                };
                Ok(answered.then(|| rows.into_iter().map(Row::Postgres).collect()))
            }));
        }
        if transaction {
            // After an error PostgreSQL skips the rest; this COMMIT then rolls back.
            calls.push(Box::pin(async {
                client.batch_execute("COMMIT").await.map(|()| None)
            }));
        }
        // `join_all` polls in order, and each future sends when first polled.
        let results = futures_util::future::join_all(calls).await;
        let results = conn.answered(results);
        let mut rows = Vec::with_capacity(stmts.len());
        for result in results {
            rows.extend(result?);
        }
        Ok(rows)
    }

    /// The rows of `stmt` as they arrive (a user's, or any behind a
    /// pooler, in a transaction of its own). Everything, the `COMMIT` too,
    /// is sent in one write; the rows are read as the caller takes them.
    /// Returns once the first row (or the end) has arrived: the database
    /// answered.
    pub async fn stream(
        &self,
        caller: Caller<'_>,
        stmt: Stmt,
    ) -> Result<impl Stream<Item = Result<Row, DbError>> + Send + use<>, DbError> {
        let (begin, set_user) = self.opening(caller);
        let begin = (set_user.is_some() || self.pooled).then(|| begin.to_owned());
        let set_user = match set_user {
            Some(s) => {
                let params = pg_params(&s.values)?;
                Some((s, params))
            }
            None => None,
        };
        let params = pg_params(&stmt.values)?;
        let (conn, pooled) = (self.checkout().await?, self.pooled);
        let rows = async_stream::try_stream! {
            {
                let client = conn.client()?;
                // Prepared once per connection (directly); then cached.
                let (statement, setter) = match pooled {
                    true => (None, None),
                    false => {
                        let setter = match &set_user {
                            Some((s, p)) => Some(client.prepare_typed_cached(&s.sql, &types(p)).await?),
                            None => None,
                        };
                        let statement = client.prepare_typed_cached(&stmt.sql, &types(&params)).await?;
                        (Some(statement), setter)
                    }
                };
                let mut begun = pin!(maybe_done(async {
                    match &begin {
                        Some(begin) => client.batch_execute(begin).await,
                        None => Ok(()),
                    }
                }));
                let mut user_set = pin!(maybe_done(async {
                    match (&set_user, &setter) {
                        (Some((_, p)), Some(prepared)) => client.query(prepared, &refs(p)).await.map(drop),
                        (Some((s, p)), None) => client.query_typed(&s.sql, &typed(p)).await.map(drop),
                        (None, _) => Ok(()),
                    }
                }));
                let mut rows = pin!(maybe_done(async {
                    match &statement {
                        Some(prepared) => client.query_raw(prepared, refs(&params)).await,
                        None => client.query_typed_raw(&stmt.sql, typed(&params)).await,
                    }
                }));
                let mut commit = pin!(maybe_done(async {
                    match &begin {
                        Some(_) => client.batch_execute("COMMIT").await,
                        None => Ok(()),
                    }
                }));
                // Each sends its request when first polled: in order, one write.
                let _ = futures_util::poll!(begun.as_mut());
                let _ = futures_util::poll!(user_set.as_mut());
                let _ = futures_util::poll!(rows.as_mut());
                let _ = futures_util::poll!(commit.as_mut());
                answer(begun).await??;
                answer(user_set).await??;
                let rows = answer(rows).await??;
                let mut rows = pin!(rows);
                while let Some(row) = rows.try_next().await? {
                    yield Row::Postgres(row);
                }
                // After an error PostgreSQL skipped the rest: this rolled back.
                answer(commit).await??;
            }
            conn.answered(());
        };
        let mut rows = Box::pin(rows);
        let first = rows.next().await.transpose()?;
        Ok(futures_util::stream::iter(first.map(Ok)).chain(rows))
    }
}

/// The answer of a request already sent (its future polled once).
async fn answer<F: Future>(mut sent: Pin<&mut MaybeDone<F>>) -> Result<F::Output, DbError> {
    sent.as_mut().await;
    sent.take_output()
        .ok_or_else(|| DbError::bug("an answer taken twice"))
}

fn types(params: &[PgParam]) -> Vec<Type> {
    params.iter().map(|(_, t)| t.clone()).collect()
}

fn refs(params: &[PgParam]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|(p, _)| &**p as _).collect()
}

fn typed(params: &[PgParam]) -> Vec<(&(dyn ToSql + Sync), Type)> {
    refs(params).into_iter().zip(types(params)).collect()
}

/// A pooled connection waiting for the answers to what was sent on it.
/// Dropped so (its request was cancelled), it is closed rather than handed
/// to the next request: closing is what rolls back a transaction left open.
struct Checkout(Option<Object>);

impl Checkout {
    fn client(&self) -> Result<&Object, DbError> {
        self.0
            .as_ref()
            .ok_or_else(|| DbError::bug("a connection used after it was given back"))
    }

    /// Every answer read: the connection goes back to the pool.
    fn answered<T>(mut self, value: T) -> T {
        drop(self.0.take());
        value
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(Object::take(conn));
        }
    }
}

/// Every minute, closes connections idle 5 minutes (a proxy may have
/// dropped them; an idle Neon compute may suspend) or open an hour.
fn spawn_upkeep(pool: WeakPool) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let Some(pool) = pool.upgrade() else { return };
            let (idle, age) = (Duration::from_secs(300), Duration::from_secs(3600));
            pool.retain(|_, m| m.last_used() < idle && m.age() < age);
        }
    });
}
