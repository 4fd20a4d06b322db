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
///
/// `idempotency_keys.body` may be NULL: a key's first response is rebuilt
/// from the repeat (the same body, by its fingerprint) and the key's task
/// and time, so a create and its key are one statement. Rows written by
/// earlier releases keep their bodies.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Keys {
    #[sea_orm(iden = "idempotency_keys")]
    Table,
    #[sea_orm(iden = "idempotency_keys_new")]
    New,
    UserId,
    Key,
    Fingerprint,
    Status,
    Body,
    Location,
    TaskId,
    CreatedAt,
}

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
            db.execute_unprepared("ALTER TABLE idempotency_keys ALTER COLUMN body DROP NOT NULL")
                .await?;
            return Ok(());
        }
        // SQLite alters no column: the table is made again, rows copied.
        let mut table = Table::create();
        table
            .table(Keys::New)
            .col(ColumnDef::new(Keys::UserId).text().not_null())
            .col(ColumnDef::new(Keys::Key).text().not_null())
            .col(ColumnDef::new(Keys::Fingerprint).text().not_null())
            .col(ColumnDef::new(Keys::Status).small_integer().not_null())
            .col(ColumnDef::new(Keys::Body).text().null())
            .col(ColumnDef::new(Keys::Location).text().null())
            .col(ColumnDef::new(Keys::TaskId).big_integer().null())
            .col(
                ColumnDef::new(Keys::CreatedAt)
                    .timestamp_with_time_zone()
                    .not_null(),
            )
            .primary_key(Index::create().col(Keys::UserId).col(Keys::Key));
        manager.create_table(table).await?;
        db.execute_unprepared(
            "INSERT INTO idempotency_keys_new (user_id, key, fingerprint, status, body, location, task_id, created_at) \
             SELECT user_id, key, fingerprint, status, body, location, task_id, created_at FROM idempotency_keys",
        )
        .await?;
        db.execute_unprepared("DROP TABLE idempotency_keys").await?;
        db.execute_unprepared("ALTER TABLE idempotency_keys_new RENAME TO idempotency_keys")
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_idempotency_keys_created_at")
                    .table(Keys::Table)
                    .col(Keys::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TaskLists::Table).if_exists().to_owned())
            .await
    }
}
