use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

/// `task_lists`: one row per user who has (had) tasks, holding how many
/// tasks the user has. A create counts and inserts in one statement under
/// this row's lock (`INSERT ... ON CONFLICT DO UPDATE ... WHERE task_count
/// < max`), on both databases, instead of counting the user's tasks; a
/// delete takes one off. Existing users get their rows from their tasks.
///
/// The PL/pgSQL function `create_task` of `m20261130_000003` (which took an
/// advisory lock, then counted) is dropped: the rule is now the statement's.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum TaskLists {
    Table,
    UserId,
    TaskCount,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TaskLists::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(TaskLists::UserId)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(TaskLists::TaskCount)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            "INSERT INTO task_lists (user_id, task_count) \
             SELECT user_id, COUNT(*) FROM tasks GROUP BY user_id",
        )
        .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared(
                "DROP FUNCTION IF EXISTS \
                 create_task(bigint, text, text, text, boolean, timestamptz, bigint)",
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TaskLists::Table).if_exists().to_owned())
            .await
    }
}
