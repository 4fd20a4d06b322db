use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::request_role::USER_SETTING;

/// Versions and tombstones, for conditional requests and the changes feed.
///
/// - `task_lists.version`: the user's version, advanced by one by every
///   write of the user, in the write's own statement.
/// - `tasks.version`: the user's version at the task's last write; indexed
///   with `user_id` for the feed.
/// - `task_tombstones`: a deleted task's id at the version of its delete,
///   kept for the feed (purged after `TOMBSTONE_RETENTION_DAYS`, except the
///   newest expired one of each user, which tells the feed which cursors it
///   can no longer answer).
/// - `idempotency_keys.task_version`: the version of the task a keyed create
///   made, so a replay rebuilds the first response exactly.
///
/// Existing tasks get versions 1..n per user in the order of their last
/// write; a user's version is their number of tasks. On PostgreSQL the
/// tables' row-level security is forced (binding their owner, which runs
/// this): it is lifted for the rewrite of existing rows and forced again,
/// all in the migration's transaction. Tombstones get the same policy as
/// tasks, and expired ones may be read and deleted outside requests (the
/// purge) once at least a day old, the shortest retention allowed.
#[derive(DeriveMigrationName)]
pub struct Migration;

/// The tables whose existing rows this migration rewrites.
const REWRITTEN: [&str; 3] = ["tasks", "task_lists", "idempotency_keys"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let postgres = manager.get_database_backend() == DbBackend::Postgres;
        if postgres {
            for table in REWRITTEN {
                db.execute_unprepared(&format!("ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY"))
                    .await?;
            }
        }
        for sql in [
            "ALTER TABLE task_lists ADD COLUMN version BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE tasks ADD COLUMN version BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE idempotency_keys ADD COLUMN task_version BIGINT",
            "UPDATE tasks SET version = n.v FROM (SELECT id, row_number() OVER \
             (PARTITION BY user_id ORDER BY updated_at, id) AS v FROM tasks) AS n \
             WHERE tasks.id = n.id",
            "INSERT INTO task_lists (user_id, task_count, version) \
             SELECT user_id, COUNT(*), COUNT(*) FROM tasks WHERE true GROUP BY user_id \
             ON CONFLICT (user_id) DO UPDATE SET task_count = excluded.task_count, version = excluded.version",
            "UPDATE idempotency_keys SET task_version = t.version FROM tasks AS t \
             WHERE t.id = idempotency_keys.task_id AND t.user_id = idempotency_keys.user_id",
            "CREATE INDEX ix_tasks_user_id_version ON tasks (user_id, version)",
        ] {
            db.execute_unprepared(sql).await?;
        }
        let deleted_at = if postgres {
            "TIMESTAMPTZ"
        } else {
            "timestamp_with_timezone_text"
        };
        db.execute_unprepared(&format!(
            "CREATE TABLE task_tombstones (user_id TEXT NOT NULL, version BIGINT NOT NULL, \
             task_id BIGINT NOT NULL, deleted_at {deleted_at} NOT NULL, PRIMARY KEY (user_id, version))"
        ))
        .await?;
        db.execute_unprepared(
            "CREATE INDEX ix_task_tombstones_deleted_at ON task_tombstones (deleted_at)",
        )
        .await?;
        if !postgres {
            return Ok(());
        }
        for table in REWRITTEN {
            db.execute_unprepared(&format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY"))
                .await?;
        }
        let user = format!("nullif(current_setting('{USER_SETTING}', true), '')");
        db.execute_unprepared(&format!(
            "ALTER TABLE task_tombstones ENABLE ROW LEVEL SECURITY; \
             ALTER TABLE task_tombstones FORCE ROW LEVEL SECURITY; \
             CREATE POLICY rows_of_the_user ON task_tombstones \
             USING (user_id = {user}) WITH CHECK (user_id = {user})"
        ))
        .await?;
        for command in ["SELECT", "DELETE"] {
            db.execute_unprepared(&format!(
                "CREATE POLICY expired_tombstones_outside_requests_{} ON task_tombstones FOR {command} \
                 USING ({user} IS NULL AND deleted_at <= now() - interval '1 day')",
                command.to_lowercase()
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for sql in [
            "DROP TABLE IF EXISTS task_tombstones",
            "DROP INDEX IF EXISTS ix_tasks_user_id_version",
            "ALTER TABLE idempotency_keys DROP COLUMN task_version",
            "ALTER TABLE tasks DROP COLUMN version",
            "ALTER TABLE task_lists DROP COLUMN version",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
