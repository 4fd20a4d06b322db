//! PostgreSQL isolates users itself (`DB_ROW_LEVEL_SECURITY`): at start-up,
//! proof that requests really run under row-level security, or what is
//! missing and who can fix it. The tables' policies are a migration's
//! (`m20261204_000005`); the role requests take, and its grants, are made
//! after every run of the migrations where the migrating role may
//! (`migration::request_role`). See `specs/database/README.md`.

use migration::{REQUEST_ROLE, USER_TABLES};

use crate::config::{DatabaseSettings, PoolMode, Switch, redact_url};
use crate::db::{Caller, Db, DbError, Dialect, Stmt};
use crate::tls;

/// Start-up's checks as the login role are answered this soon, or fail.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Requests cannot run under row-level security: what is missing, and who
/// can fix it (start-up stops with this).
#[derive(Debug, thiserror::Error)]
#[error(
    "DB_ROW_LEVEL_SECURITY is on, but requests to {url} cannot run under row-level security: {problems}. \
     {remedy}. Or set DB_ROW_LEVEL_SECURITY=off, and the query layer alone isolates users"
)]
pub struct Unenforced {
    url: String,
    problems: String,
    remedy: String,
}

/// Checks that requests will run as the request role under row-level
/// security on every user table; with the setting off, says so once.
pub async fn check(settings: &DatabaseSettings, db: &Db) -> Result<(), Unenforced> {
    match (db.dialect(), settings.db_row_level_security) {
        (Dialect::Sqlite, _) => {
            tracing::info!(
                "SQLite: the query layer alone isolates users (row-level security is PostgreSQL's)"
            );
            Ok(())
        }
        (Dialect::Postgres, Switch::Off) => {
            tracing::warn!(
                "row-level security off (DB_ROW_LEVEL_SECURITY=off): requests do not take role {REQUEST_ROLE}; \
                 isolation rests on the query layer alone"
            );
            Ok(())
        }
        (Dialect::Postgres, Switch::On) => {
            let found = as_login(settings, catalogue).await;
            let (login, mut problems) = found.map_err(|e| failed(settings, e))?;
            if problems.is_empty() {
                match runs_as(db).await {
                    Ok(role) if role == REQUEST_ROLE => {}
                    Ok(role) => {
                        problems.push(format!("requests run as {role}, not {REQUEST_ROLE}"))
                    }
                    Err(e) => {
                        problems.push(format!("{login} may not take role {REQUEST_ROLE} ({e})"))
                    }
                }
            }
            if !problems.is_empty() {
                return Err(Unenforced {
                    url: redact_url(settings.url()),
                    remedy: remedy(&problems, &login),
                    problems: problems.join("; "),
                });
            }
            tracing::info!(
                role = REQUEST_ROLE,
                "row-level security on: each request runs as the request role, its user set"
            );
            Ok(())
        }
    }
}

/// `check` on a connection of the serving role as itself (directly, the
/// default role even if the login role's settings name another), outside
/// the pool, bounded: start-up must not hang on it. Its statements must be
/// unnamed (`query_typed`): behind a transaction-mode pooler, a named one's
/// parse and execution may reach different server connections.
pub(crate) async fn as_login<T>(
    settings: &DatabaseSettings,
    check: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, DbError>,
) -> Result<T, DbError> {
    let work = async {
        let mut target = tls::target(settings.url()).map_err(DbError::bug)?;
        if settings.pool_mode == PoolMode::Session {
            tls::add_options(&mut target.config, "-c role=none");
        }
        check(&target.connect().await?).await
    };
    let seconds = CHECK_TIMEOUT.as_secs();
    tokio::time::timeout(CHECK_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(DbError::unavailable(format!(
                "no answer from the database within {seconds} s"
            )))
        })
}

/// The serving role, and what the catalogue says is missing.
async fn catalogue(client: &tokio_postgres::Client) -> Result<(String, Vec<String>), DbError> {
    let tables = USER_TABLES.map(|t| format!("('{t}')")).join(", ");
    let sql = format!(
        "WITH r AS (SELECT oid, rolsuper OR rolbypassrls AS bypasses FROM pg_roles WHERE rolname = '{REQUEST_ROLE}'), \
         t AS (SELECT t.name, c.oid, c.relrowsecurity AND c.relforcerowsecurity \
                 AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid) AS enforced \
               FROM (VALUES {tables}) AS t(name) LEFT JOIN pg_class c ON c.oid = to_regclass(t.name)) \
         SELECT current_user::text, problem FROM ( \
           SELECT 'role {REQUEST_ROLE} does not exist' AS problem WHERE NOT EXISTS (SELECT 1 FROM r) \
           UNION ALL SELECT 'role {REQUEST_ROLE} bypasses row-level security (superuser or BYPASSRLS)' FROM r WHERE bypasses \
           UNION ALL SELECT format('table %s has no row-level security enabled, forced and with a policy', name) \
             FROM t WHERE NOT coalesce(enforced, false) \
           UNION ALL SELECT format('role {REQUEST_ROLE} lacks %s on table %s', p, t.name) \
             FROM r, t, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS p \
             WHERE t.oid IS NOT NULL AND NOT has_table_privilege(r.oid, t.oid, p) \
           UNION ALL SELECT format('role {REQUEST_ROLE} lacks USAGE on schema %s', current_schema()) \
             FROM r WHERE NOT has_schema_privilege(r.oid, current_schema(), 'USAGE') \
           UNION ALL SELECT format('role {REQUEST_ROLE} lacks USAGE on sequence %s', s) \
             FROM r, pg_get_serial_sequence('tasks', 'id') AS s \
             WHERE s IS NOT NULL AND NOT has_sequence_privilege(r.oid, s, 'USAGE') \
         ) AS p RIGHT JOIN (SELECT) AS one ON true"
    );
    let rows = client.query_typed(&sql, &[]).await?;
    let login = rows
        .first()
        .map(|r| r.try_get::<_, String>(0))
        .transpose()?;
    let problems = rows
        .iter()
        .map(|r| r.try_get::<_, Option<String>>(1))
        .filter_map(Result::transpose)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((login.unwrap_or_default(), problems))
}

/// The role a request's statements run as: a request's own transaction.
async fn runs_as(db: &Db) -> Result<String, DbError> {
    let stmt = Stmt::new("SELECT current_user::text", []);
    let rows = db.read(Caller::User(""), &[stmt]).await?;
    let row = rows
        .into_iter()
        .next()
        .and_then(|rows| rows.into_iter().next());
    row.ok_or_else(|| DbError::bug("no row from SELECT current_user"))?
        .get(0)
}

/// Who can fix the first problem, and how.
fn remedy(problems: &[String], login: &str) -> String {
    let grant = format!("GRANT {REQUEST_ROLE} TO \"{login}\"");
    match problems.first().map(String::as_str).unwrap_or_default() {
        p if p.contains("does not exist") => format!(
            "A role with CREATEROLE (Neon's default role has it) can run \
             `CREATE ROLE {REQUEST_ROLE} NOLOGIN; {grant}`; the next start-up grants it what requests need"
        ),
        p if p.contains("may not take") => {
            format!("A role with CREATEROLE, or ADMIN on {REQUEST_ROLE}, can run `{grant}`")
        }
        _ => String::from(
            "Start-up makes these as the tables' owner (the role of MIGRATION_DATABASE_URL if set): \
             run it once as the owner, or have the owner grant them",
        ),
    }
}

fn failed(settings: &DatabaseSettings, err: DbError) -> Unenforced {
    Unenforced {
        url: redact_url(settings.url()),
        problems: format!("the check itself failed: {err}"),
        remedy: String::from("Check the database's logs"),
    }
}
