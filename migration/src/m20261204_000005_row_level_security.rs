use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::request_role::USER_SETTING;

/// The tables with user data when this migration was written (later ones
/// get their policies in their own migrations).
const USER_TABLES: [&str; 3] = ["tasks", "task_lists", "idempotency_keys"];

/// PostgreSQL checks isolation itself: row-level security, enabled and
/// `FORCE`d (so it binds the tables' owner too, unless it bypasses RLS),
/// on every table that holds user data. A row is visible, and may be
/// written, only when its `user_id` is the request's user, set inside each
/// request's transaction (`set_config('todo.user_id', $1, true)`). With no
/// setting (or an empty one, what a setting reads once its transaction has
/// ended) no row is: fail closed.
///
/// One exception, for the hourly purge that runs for no user: expired
/// idempotency keys may be read and deleted outside a request. The retention is
/// `idempotency::RETENTION` (24 hours).
///
/// The role requests run as (`todo_request`) and its grants are not made
/// here but after every run of the migrations ([`crate::request_role`]):
/// an administrator may create the role later.
///
/// SQLite has no row-level security: nothing to do.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        let user = format!("nullif(current_setting('{USER_SETTING}', true), '')");
        for table in USER_TABLES {
            db.execute_unprepared(&format!(
                "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY; \
                 ALTER TABLE {table} FORCE ROW LEVEL SECURITY; \
                 CREATE POLICY rows_of_the_user ON {table} \
                 USING (user_id = {user}) WITH CHECK (user_id = {user})"
            ))
            .await?;
        }
        // A DELETE with a WHERE reads the rows too: SELECT policies apply.
        for command in ["SELECT", "DELETE"] {
            db.execute_unprepared(&format!(
                "CREATE POLICY expired_keys_outside_requests_{} ON idempotency_keys FOR {command} \
                 USING ({user} IS NULL AND created_at <= now() - interval '24 hours')",
                command.to_lowercase()
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared(
            "DROP POLICY IF EXISTS expired_keys_outside_requests_select ON idempotency_keys; \
             DROP POLICY IF EXISTS expired_keys_outside_requests_delete ON idempotency_keys",
        )
        .await?;
        for table in USER_TABLES {
            db.execute_unprepared(&format!(
                "DROP POLICY IF EXISTS rows_of_the_user ON {table}; \
                 ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY; \
                 ALTER TABLE {table} DISABLE ROW LEVEL SECURITY"
            ))
            .await?;
        }
        Ok(())
    }
}
