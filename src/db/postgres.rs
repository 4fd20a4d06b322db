//! PostgreSQL: a deadpool of tokio-postgres clients. tokio-postgres sends a
//! request when its future is first polled, so `BEGIN`, the statements and
//! `COMMIT` polled together leave in one write: one round trip (sqlx waits
//! for each answer). deadpool takes a client back without one (sqlx pings).
//! Directly, statements are prepared once per connection; behind a
//! transaction-mode pooler nothing may outlive a transaction: statements
//! are unnamed (`query_typed`) and each batch sets its `statement_timeout`.
//!
//! A user's work runs in a transaction that first sets the user, `LOCAL`.
//! With row-level security on, a direct connection is the request role from
//! its start (the service's work leaves it); behind a pooler, each user
//! transaction takes it, `LOCAL`. See `specs/database`.

use std::{pin::Pin, time::Duration};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, WeakPool};
use futures_util::future::{BoxFuture, MaybeDone, maybe_done, try_join_all};
use futures_util::{Stream, StreamExt, TryFutureExt};
use tokio_postgres::types::{ToSql, Type};

use super::sql::{PgParam, Row, Stmt, pg_params};
use super::{ACQUIRE_TIMEOUT, Caller, DbError};
use crate::config::{DatabaseSettings, PoolMode, Switch};
use crate::tls;
use migration::REQUEST_ROLE;

/// Sets the request's user for the rest of its transaction.
const SET_USER: &str = "SELECT set_config('todo.user_id', $1, true)";

pub(super) struct Pg {
    pub pool: Pool,
    /// Behind a transaction-mode pooler.
    pooled: bool,
    /// What opens a user's transaction, and the service's.
    begin_for_user: String,
    begin_for_service: String,
}

impl Pg {
    pub fn open(settings: &DatabaseSettings) -> Result<Pg, DbError> {
        let target = tls::target(settings.url()).map_err(DbError::bug)?;
        target.report();
        let mut config = target.config;
        let pooled = settings.pool_mode == PoolMode::Transaction;
        let rls = settings.db_row_level_security == Switch::On;
        let timeout_ms = settings.db_statement_timeout.as_millis();
        // Directly, settings last the session (startup options, after the
        // URL's own), the request role among them (the service's work leaves
        // it); behind a pooler, each transaction makes its own, `LOCAL`.
        if !pooled {
            let role = if rls { REQUEST_ROLE } else { "none" };
            let options = format!("-c statement_timeout={timeout_ms} -c role={role}");
            tls::add_options(&mut config, &options);
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
        let (begin_for_user, begin_for_service) = match (pooled, rls) {
            (true, true) => (format!("{begin}; SET LOCAL ROLE {REQUEST_ROLE}"), begin),
            (false, true) => (begin, "BEGIN; SET LOCAL ROLE NONE".to_owned()),
            (_, false) => (begin.clone(), begin),
        };
        Ok(Pg {
            pool,
            pooled,
            begin_for_user,
            begin_for_service,
        })
    }

    /// Sends `stmts` in one write, in one transaction if there are several
    /// (a user's: after the statement that sets the user) or it sets
    /// something; yields each statement's rows, with its index, as they
    /// arrive. A failed statement's error comes after every answer is read.
    pub fn pipeline(
        &self,
        caller: Caller<'_>,
        stmts: Vec<Stmt>,
    ) -> Result<impl Stream<Item = Result<(usize, Row), DbError>> + Send + use<>, DbError> {
        let (begin, set_user) = match caller {
            Caller::User(user) => (
                &self.begin_for_user,
                Some(Stmt::new(SET_USER, [user.into()])),
            ),
            Caller::Service => (&self.begin_for_service, None),
        };
        let own = usize::from(set_user.is_some());
        let work: Vec<Stmt> = set_user.into_iter().chain(stmts).collect();
        let begin = (work.len() > 1 || begin != "BEGIN").then(|| begin.to_owned());
        let params = work
            .iter()
            .map(|s| pg_params(&s.values))
            .collect::<Result<Vec<_>, _>>()?;
        let (pool, pooled) = (self.pool.clone(), self.pooled);
        Ok(async_stream::try_stream! {
            let mut conn = Checkout(Some(pool.get().await?));
            let mut failed = None;
            if let Some(client) = &conn.0 {
                // Prepared once per connection (directly); then cached.
                let prepared = match pooled {
                    true => Vec::new(),
                    false => try_join_all(work.iter().zip(&params).map(|(s, p)| {
                        let types = types(p);
                        async move { client.prepare_typed_cached(&s.sql, &types).await }
                    }))
                    .await?,
                };
                // Each with the index of the caller's statement it is, if it is one.
                let mut sent: Vec<(Option<usize>, Sent<'_>)> = Vec::new();
                let batch = |sql| -> Sent<'_> {
                    Box::pin(maybe_done(Box::pin(client.batch_execute(sql).map_ok(|()| None))))
                };
                if let Some(begin) = &begin {
                    sent.push((None, batch(begin)));
                }
                for (i, (stmt, params)) in work.iter().zip(&params).enumerate() {
                    let call: Call<'_> = match prepared.get(i) {
                        Some(s) => Box::pin(client.query_raw(s, refs(params)).map_ok(Some)),
                        None => Box::pin(client.query_typed_raw(&stmt.sql, typed(params)).map_ok(Some)),
                    };
                    sent.push((i.checked_sub(own), Box::pin(maybe_done(call))));
                }
                // Each sends its request when first polled: in order, one write.
                for (_, call) in &mut sent {
                    let _ = futures_util::poll!(call.as_mut());
                }
                if begin.is_some() {
                    // An error makes COMMIT roll back; a call refused unsent (done at once) needs ROLLBACK.
                    let refused = sent.iter_mut().any(|(_, c)| matches!(c.as_mut().output_mut(), Some(Err(_))));
                    let mut end = batch(if refused { "ROLLBACK" } else { "COMMIT" });
                    let _ = futures_util::poll!(end.as_mut());
                    sent.push((None, end));
                }
                for (index, mut call) in sent {
                    call.as_mut().await;
                    let answer = call.as_mut().take_output().ok_or_else(|| DbError::bug("an answer taken twice"))?;
                    let mut rows = match answer {
                        Ok(Some(rows)) => Box::pin(rows),
                        Ok(None) => continue,
                        Err(e) => { failed.get_or_insert(e); continue; }
                    };
                    // A broken stream answers every poll with its error: stop at the first.
                    while let Some(row) = rows.next().await {
                        match (row, index, &failed) {
                            (Ok(row), Some(index), None) => yield (index, Row::Postgres(row)),
                            (Ok(_), _, _) => {}
                            (Err(e), _, _) => { failed.get_or_insert(e); break; }
                        }
                    }
                }
            }
            drop(conn.0.take());
            failed.map_or(Ok(()), Err)?;
        })
    }
}

/// A request to a connection: its rows, or none (`BEGIN`, `COMMIT`).
type Call<'a> = BoxFuture<'a, Result<Option<tokio_postgres::RowStream>, tokio_postgres::Error>>;
/// A request sent (polled once), its answer kept until it is read.
type Sent<'a> = Pin<Box<MaybeDone<Call<'a>>>>;

fn types(params: &[PgParam]) -> Vec<Type> {
    params.iter().map(|(_, t)| t.clone()).collect()
}

fn refs(params: &[PgParam]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|(p, _)| &**p as _).collect()
}

fn typed(params: &[PgParam]) -> Vec<(&(dyn ToSql + Sync), Type)> {
    refs(params).into_iter().zip(types(params)).collect()
}

/// A pooled connection waiting for answers. Dropped so (its request was
/// cancelled), it is closed, which rolls back a transaction left open;
/// once every answer is read, its `Option` is emptied: back to the pool.
struct Checkout(Option<Object>);

impl Drop for Checkout {
    fn drop(&mut self) {
        self.0.take().map(Object::take);
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
