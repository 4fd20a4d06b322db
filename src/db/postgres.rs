//! PostgreSQL: a deadpool of tokio-postgres clients, and one round trip per
//! batch of statements.
//!
//! tokio-postgres sends a request as soon as its future is first polled, so
//! futures polled together in order are pipelined: `BEGIN`, the statements
//! and `COMMIT` leave in one write and their answers come back in one round
//! trip (sqlx waits for each answer before it sends the next statement).
//! deadpool hands a client back to the pool without a round trip (sqlx pings
//! each returned connection).
//!
//! Directly (`DB_POOL_MODE=session`) statements are prepared once per
//! connection and cached. Behind a transaction-mode pooler nothing may
//! outlive a transaction: statements are unnamed (`query_typed`: parse,
//! bind and execute in one message) and every batch is a transaction that
//! sets its own `statement_timeout`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::{Stream, TryStreamExt};
use tokio_postgres::types::ToSql;

use super::sql::{PgParam, Row, Rows, Stmt, pg_params};
use super::tls;
use super::{ACQUIRE_TIMEOUT, DbError};
use crate::config::{DatabaseSettings, PoolMode};

/// Connections unused this long, or open this long, are closed (a proxy
/// may drop idle ones; an idle Neon compute can then suspend).
const MAX_IDLE: Duration = Duration::from_secs(300);
const MAX_AGE: Duration = Duration::from_secs(3600);

pub(super) struct Pg {
    pool: Pool,
    /// Behind a transaction-mode pooler.
    pooled: bool,
    /// What opens a transaction: `BEGIN`, and behind a pooler its settings.
    begin: String,
}

impl Pg {
    pub fn open(settings: &DatabaseSettings) -> Result<Pg, DbError> {
        let target = tls::target(&settings.url).map_err(DbError::bug)?;
        tracing::info!(protection = ?target.protection, "PostgreSQL connections");
        let mut config = target.config;
        let pooled = settings.pool_mode == PoolMode::Transaction;
        let timeout_ms = settings.statement_timeout.as_millis();
        if !pooled {
            // A session setting: this connection is ours alone.
            config.options(format!("-c statement_timeout={timeout_ms}"));
        }
        config.connect_timeout(ACQUIRE_TIMEOUT);
        let manager = Manager::from_config(
            config,
            target.tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.max_connections as usize)
            .wait_timeout(Some(ACQUIRE_TIMEOUT))
            .create_timeout(Some(ACQUIRE_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| DbError::bug(e.to_string()))?;
        spawn_upkeep(pool.weak());
        Ok(Pg {
            pool,
            pooled,
            begin: if pooled {
                format!("BEGIN; SET LOCAL statement_timeout = {timeout_ms}")
            } else {
                "BEGIN".to_owned()
            },
        })
    }

    /// A connection for one unit of work.
    pub async fn checkout(&self) -> Result<Checkout, DbError> {
        Ok(Checkout {
            conn: Some(self.pool.get().await?),
            in_transaction: false,
            answered: true,
        })
    }

    /// Open and idle connections.
    pub fn status(&self) -> (usize, usize) {
        let status = self.pool.status();
        (status.size, status.available)
    }

    /// Runs `stmts` in order in one round trip; with `begin` after `BEGIN`,
    /// with `commit` followed by `COMMIT`. The first error is returned (after
    /// an error PostgreSQL skips the rest of the transaction, and its
    /// `COMMIT` rolls back).
    pub async fn pipeline(
        &self,
        conn: &mut Checkout,
        begin: bool,
        stmts: &[Stmt],
        commit: bool,
    ) -> Result<Vec<Rows>, DbError> {
        let params = stmts
            .iter()
            .map(|s| pg_params(&s.values))
            .collect::<Result<Vec<_>, _>>()?;
        conn.answered = false;
        conn.in_transaction |= begin;
        let client = conn.client()?;
        let prepared = if self.pooled {
            Vec::new()
        } else {
            // Cached after the first use of each statement on this connection.
            futures_util::future::try_join_all(stmts.iter().zip(&params).map(|(s, p)| {
                let types: Vec<_> = p.iter().map(|(_, t)| t.clone()).collect();
                async move { client.prepare_typed_cached(&s.sql, &types).await }
            }))
            .await?
        };
        type Call<'a> = Pin<
            Box<dyn Future<Output = Result<Option<Vec<tokio_postgres::Row>>, DbError>> + Send + 'a>,
        >;
        let mut calls: Vec<Call<'_>> = Vec::with_capacity(stmts.len() + 2);
        if begin {
            calls.push(Box::pin(async {
                client.batch_execute(&self.begin).await?;
                Ok(None)
            }));
        }
        for (i, (stmt, params)) in stmts.iter().zip(&params).enumerate() {
            let prepared = prepared.get(i);
            calls.push(Box::pin(async move {
                let rows = match prepared {
                    Some(statement) => client.query(statement, &refs(params)).await?,
                    None => client.query_typed(&stmt.sql, &typed(params)).await?,
                };
                Ok(Some(rows))
            }));
        }
        if commit {
            calls.push(Box::pin(async {
                client.batch_execute("COMMIT").await?;
                Ok(None)
            }));
        }
        // Each future sends its request when first polled, and `join_all`
        // polls them in order: one write, one round trip.
        let results = futures_util::future::join_all(calls).await;
        conn.answered = true;
        conn.in_transaction &= !commit;
        let mut rows = Vec::with_capacity(stmts.len());
        let mut first_error = None;
        for result in results {
            match result {
                Ok(Some(r)) => rows.push(r.into_iter().map(Row::Postgres).collect()),
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// Ends a transaction that did not commit.
    pub async fn rollback(&self, conn: &mut Checkout) -> Result<(), DbError> {
        conn.answered = false;
        conn.client()?.batch_execute("ROLLBACK").await?;
        conn.answered = true;
        conn.in_transaction = false;
        Ok(())
    }

    /// Behind a transaction-mode pooler every statement needs a transaction
    /// (for its settings); directly a lone statement runs on its own.
    pub fn lone_statements_autocommit(&self) -> bool {
        !self.pooled
    }

    /// The rows of `stmt` as they arrive (a listing). Behind a pooler the
    /// statement runs in a transaction of its own, committed at the end.
    pub async fn stream(
        &self,
        mut conn: Checkout,
        stmt: Stmt,
    ) -> Result<impl Stream<Item = Result<Row, DbError>> + Send + use<>, DbError> {
        let params = pg_params(&stmt.values)?;
        conn.answered = false;
        conn.in_transaction = self.pooled;
        let client = conn.client()?;
        let rows = if self.pooled {
            let (begun, rows) = futures_util::join!(
                client.batch_execute(&self.begin),
                client.query_typed_raw(&stmt.sql, typed(&params))
            );
            begun?;
            rows?
        } else {
            let types: Vec<_> = params.iter().map(|(_, t)| t.clone()).collect();
            let statement = client.prepare_typed_cached(&stmt.sql, &types).await?;
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
            conn.finished();
        })
    }

    /// Does the database answer?
    pub async fn ping(&self) -> Result<(), DbError> {
        let mut conn = self.checkout().await?;
        conn.answered = false;
        conn.client()?.simple_query("").await?;
        conn.answered = true;
        Ok(())
    }
}

fn refs(params: &[PgParam]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|(p, _)| &**p as &(dyn ToSql + Sync))
        .collect()
}

fn typed(params: &[PgParam]) -> Vec<(&(dyn ToSql + Sync), tokio_postgres::types::Type)> {
    params
        .iter()
        .map(|(p, t)| (&**p as &(dyn ToSql + Sync), t.clone()))
        .collect()
}

/// A pooled connection. One dropped while a statement's answer is still
/// to come, or inside a transaction (its request was cancelled), is closed
/// rather than handed to the next request: closing it is what rolls the
/// transaction back.
pub(super) struct Checkout {
    conn: Option<Object>,
    /// `BEGIN` sent, `COMMIT` or `ROLLBACK` not.
    in_transaction: bool,
    /// Every answer of what was sent has been read.
    answered: bool,
}

impl Checkout {
    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// Every answer read, no transaction open: fit for the next request.
    fn finished(&mut self) {
        self.in_transaction = false;
        self.answered = true;
    }

    fn client(&self) -> Result<&Object, DbError> {
        self.conn
            .as_ref()
            .ok_or_else(|| DbError::bug("a connection used after it was given back"))
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if (self.in_transaction || !self.answered)
            && let Some(conn) = self.conn.take()
        {
            drop(Object::take(conn));
        }
    }
}

/// Closes connections idle or open too long, every minute.
fn spawn_upkeep(pool: deadpool_postgres::WeakPool) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let Some(pool) = pool.upgrade() else {
                return;
            };
            pool.retain(|_, metrics| metrics.last_used() < MAX_IDLE && metrics.age() < MAX_AGE);
        }
    });
}
