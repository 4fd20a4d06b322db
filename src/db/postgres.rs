//! PostgreSQL: a deadpool of tokio-postgres clients, one round trip per batch.
//!
//! tokio-postgres sends a request when its future is first polled, so
//! futures polled together in order are pipelined: `BEGIN`, the statements
//! and `COMMIT` leave in one write and are answered in one round trip (sqlx
//! waits for each answer before sending the next). deadpool takes a client
//! back without a round trip (sqlx pings each connection it gets back).
//!
//! Directly (`DB_POOL_MODE=session`), statements are prepared once per
//! connection. Behind a transaction-mode pooler nothing may outlive a
//! transaction: statements are unnamed (`query_typed`: parse, bind and
//! execute in one message), and every batch is a transaction that sets its
//! own `statement_timeout`.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, WeakPool};
use futures_util::{Stream, TryStreamExt};
use tokio_postgres::types::{ToSql, Type};

use super::sql::{PgParam, Row, Rows, Stmt, pg_params};
use super::{ACQUIRE_TIMEOUT, DbError, tls};
use crate::config::{DatabaseSettings, PoolMode};

pub struct Pg {
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

    pub async fn checkout(&self) -> Result<Checkout, DbError> {
        let conn = Some(self.pool.get().await?);
        Ok(Checkout {
            conn,
            in_transaction: false,
            answered: true,
        })
    }

    /// Open and idle connections.
    pub fn status(&self) -> (usize, usize) {
        let status = self.pool.status();
        (status.size, status.available)
    }

    /// Statements that see one snapshot: alone, or in one transaction.
    /// None at all: a ping.
    pub async fn read(&self, stmts: &[Stmt]) -> Result<Vec<Rows>, DbError> {
        let mut conn = self.checkout().await?;
        if stmts.is_empty() {
            conn.answered = false;
            conn.client()?.simple_query("").await?;
            conn.answered = true;
            return Ok(Vec::new());
        }
        let transaction = stmts.len() > 1 || self.pooled;
        self.pipeline(&mut conn, transaction, stmts, transaction)
            .await
    }

    /// A batch of a write's transaction. A lone statement that commits at
    /// once needs no transaction around it (directly; a pooler needs the
    /// transaction's settings).
    pub async fn batch(
        &self,
        conn: &mut Checkout,
        stmts: &[Stmt],
        commit: bool,
    ) -> Result<Vec<Rows>, DbError> {
        let open = conn.in_transaction;
        if commit && !open && stmts.len() == 1 && !self.pooled {
            return self.pipeline(conn, false, stmts, false).await;
        }
        self.pipeline(conn, !open, stmts, commit).await
    }

    /// Runs `stmts` in order in one round trip, after `BEGIN` and before
    /// `COMMIT` when asked. The first error is returned (PostgreSQL skips
    /// the rest of a failed transaction; its `COMMIT` rolls back).
    async fn pipeline(
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
        let mut calls: Vec<
            futures_util::future::BoxFuture<'_, Result<Option<Rows>, tokio_postgres::Error>>,
        > = Vec::new();
        if begin {
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
        if commit {
            calls.push(Box::pin(async {
                client.batch_execute("COMMIT").await.map(|()| None)
            }));
        }
        // `join_all` polls in order, and each future sends when first polled.
        let results = futures_util::future::join_all(calls).await;
        conn.answered = true;
        conn.in_transaction &= !commit;
        let mut rows = Vec::with_capacity(stmts.len());
        for result in results {
            if let Some(r) = result? {
                rows.push(r);
            }
        }
        Ok(rows)
    }

    /// Ends a transaction that did not commit, if one is open.
    pub async fn rollback(&self, conn: &mut Checkout) -> Result<(), DbError> {
        if conn.in_transaction {
            conn.answered = false;
            conn.client()?.batch_execute("ROLLBACK").await?;
            conn.answered = true;
            conn.in_transaction = false;
        }
        Ok(())
    }

    /// The rows of `stmt` as they arrive (behind a pooler in a transaction
    /// of its own, committed at the end).
    pub async fn stream(
        &self,
        stmt: Stmt,
    ) -> Result<impl Stream<Item = Result<Row, DbError>> + Send + use<>, DbError> {
        let mut conn = self.checkout().await?;
        let params = pg_params(&stmt.values)?;
        conn.answered = false;
        conn.in_transaction = self.pooled;
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
            conn.finished();
        })
    }
}

fn types(params: &[PgParam]) -> Vec<Type> {
    params.iter().map(|(_, t)| t.clone()).collect()
}

fn refs(params: &[PgParam]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|(p, _)| &**p as &(dyn ToSql + Sync))
        .collect()
}

fn typed(params: &[PgParam]) -> Vec<(&(dyn ToSql + Sync), Type)> {
    params
        .iter()
        .map(|(p, t)| (&**p as &(dyn ToSql + Sync), t.clone()))
        .collect()
}

/// A pooled connection. Dropped with an answer still to come, or inside a
/// transaction (its request was cancelled), it is closed rather than handed
/// to the next request: closing is what rolls the transaction back.
pub struct Checkout {
    conn: Option<Object>,
    in_transaction: bool,
    answered: bool,
}

impl Checkout {
    pub(super) fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    fn finished(&mut self) {
        (self.in_transaction, self.answered) = (false, true);
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

/// One connection as the pool would make it; the cause of a failure in
/// words an operator searches for. SQLite: the file opens.
pub async fn connect_once(url: &str) -> Result<(), String> {
    if url.starts_with("sqlite:") {
        return super::sqlite::open_once(url).await;
    }
    let target = tls::target(url)?;
    let err = match target.config.connect(target.tls).await {
        Ok((client, connection)) => {
            drop(client);
            let _ = connection.await; // ends once the client is gone: a clean goodbye
            return Ok(());
        }
        Err(err) => err,
    };
    let source = std::error::Error::source(&err);
    let refused = source
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
    let dns = source.is_some_and(|s| s.to_string().contains("lookup"));
    let text = err.to_string();
    let kind = match err.code().map(|c| c.code()) {
        Some("28P01" | "28000") => "authentication failed",
        Some("3D000") => "no such database",
        Some(c) if c.starts_with("57P") => "the database is starting up or shutting down",
        Some(_) => "the database refused the connection",
        None if refused => "connection refused",
        None if dns => "unknown host (DNS)",
        None if text.contains("TLS") => "TLS error",
        None if text.starts_with("authentication") => "authentication failed",
        None => "connection failed",
    };
    Err(format!("{kind}: {}", DbError::from(err)))
}
