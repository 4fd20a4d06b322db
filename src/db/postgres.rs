//! PostgreSQL: a deadpool of tokio-postgres clients. tokio-postgres sends a
//! request when its future is first polled, so `BEGIN`, the statements and
//! `COMMIT` polled together leave in one write: one round trip (sqlx waits
//! for each answer). deadpool takes a client back without one (sqlx pings).
//! Directly, statements are prepared once per connection; behind a
//! transaction-mode pooler nothing may outlive a transaction: statements
//! are unnamed (`query_typed`) and each batch sets its `statement_timeout`.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, WeakPool};
use futures_util::{Stream, TryStreamExt};
use tokio_postgres::types::{ToSql, Type};

use super::sql::{PgParam, Row, Rows, Stmt, pg_params};
use super::{ACQUIRE_TIMEOUT, DbError};
use crate::config::{DatabaseSettings, PoolMode};
use crate::tls;

pub(super) struct Pg {
    pool: Pool,
    /// Behind a transaction-mode pooler.
    pooled: bool,
    /// What opens a transaction (behind a pooler, with its settings).
    begin: String,
}

impl Pg {
    pub fn open(settings: &DatabaseSettings) -> Result<Pg, DbError> {
        let target = tls::target(settings.url()).map_err(DbError::bug)?;
        tracing::info!(protection = ?target.protection, "PostgreSQL connections");
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
        Ok(Pg {
            pool,
            pooled,
            begin,
        })
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

    /// Runs `stmts` in order in one round trip: alone, or several (and any
    /// behind a pooler, for its settings) in one transaction. None: a ping.
    pub async fn run(&self, stmts: &[Stmt]) -> Result<Vec<Rows>, DbError> {
        let transaction = stmts.len() > 1 || self.pooled;
        let params = stmts
            .iter()
            .map(|s| pg_params(&s.values))
            .collect::<Result<Vec<_>, _>>()?;
        let conn = self.checkout().await?;
        let client = conn.client()?;
        if stmts.is_empty() {
            client.simple_query("").await?;
            return Ok(conn.answered(Vec::new()));
        }
        // Prepared once per connection (directly); then cached.
        let prepared = match self.pooled {
            true => Vec::new(),
            false => {
                futures_util::future::try_join_all(stmts.iter().zip(&params).map(|(s, p)| {
                    let types = types(p);
                    async move { client.prepare_typed_cached(&s.sql, &types).await }
                }))
                .await?
            }
        };
        type Call<'a> =
            futures_util::future::BoxFuture<'a, Result<Option<Rows>, tokio_postgres::Error>>;
        let mut calls: Vec<Call<'_>> = Vec::with_capacity(stmts.len() + 2);
        if transaction {
            calls.push(Box::pin(async {
                client.batch_execute(&self.begin).await.map(|()| None)
            }));
        }
        for (i, (stmt, params)) in stmts.iter().zip(&params).enumerate() {
            let prepared = prepared.get(i);
            calls.push(Box::pin(async move {
                let rows = match prepared {
                    Some(statement) => client.query(statement, &refs(params)).await?,
                    None => client.query_typed(&stmt.sql, &typed(params)).await?,
                };
                Ok(Some(rows.into_iter().map(Row::Postgres).collect()))
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

    /// The rows of `stmt` as they arrive (behind a pooler in a transaction
    /// of its own, committed at the end).
    pub async fn stream(
        &self,
        stmt: Stmt,
    ) -> Result<impl Stream<Item = Result<Row, DbError>> + Send + use<>, DbError> {
        let params = pg_params(&stmt.values)?;
        let conn = self.checkout().await?;
        let client = conn.client()?;
        let rows = if self.pooled {
            let (begun, rows) = futures_util::join!(
                client.batch_execute(&self.begin),
                client.query_typed_raw(&stmt.sql, typed(&params))
            );
            begun.and(rows)?
        } else {
            let statement = client
                .prepare_typed_cached(&stmt.sql, &types(&params))
                .await?;
            client.query_raw(&statement, refs(&params)).await?
        };
        let pooled = self.pooled;
        Ok(async_stream::try_stream! {
            let mut rows = std::pin::pin!(rows);
            while let Some(row) = rows.try_next().await? {
                yield Row::Postgres(row);
            }
            if pooled {
                conn.client()?.batch_execute("COMMIT").await?;
            }
            conn.answered(());
        })
    }
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
