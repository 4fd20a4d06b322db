use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

/// PostgreSQL: `create_task(...)`, a create in one statement, so one round
/// trip instead of three (`BEGIN` with the user's lock, the insert,
/// `COMMIT`). The cap on a user's tasks needs the count to see every create
/// committed before the user's lock was granted; a single `INSERT` takes its
/// snapshot before it could wait for the lock, but each statement of a
/// volatile PL/pgSQL function takes a new one, so the function can take the
/// lock and then count and insert. It runs with the caller's privileges
/// (`SECURITY INVOKER`), in autocommit: the lock is released at its end.
/// SQLite has no functions and needs none (one writer at a time).
#[derive(DeriveMigrationName)]
pub struct Migration;

const CREATE: &str = r#"
CREATE OR REPLACE FUNCTION create_task(
    p_lock bigint,
    p_user_id text,
    p_title text,
    p_description text,
    p_completed boolean,
    p_now timestamptz,
    p_max bigint
) RETURNS SETOF tasks
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $body$
DECLARE
    created tasks;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock);
    -- A new statement, a new snapshot: it counts every create committed
    -- before the lock was granted.
    INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at)
    SELECT p_user_id, p_title, p_description, p_completed, p_now, p_now
    WHERE (SELECT count(id) FROM tasks WHERE user_id = p_user_id) < p_max
    RETURNING * INTO created;
    IF FOUND THEN
        RETURN NEXT created;
    END IF;
    RETURN;
END
$body$
"#;

const DROP: &str =
    "DROP FUNCTION IF EXISTS create_task(bigint, text, text, text, boolean, timestamptz, bigint)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager.get_connection().execute_unprepared(CREATE).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager.get_connection().execute_unprepared(DROP).await?;
        Ok(())
    }
}
