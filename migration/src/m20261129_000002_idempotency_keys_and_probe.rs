use sea_orm_migration::prelude::*;

/// `idempotency_keys`: the first response to a `POST /api/tasks` with an
/// `Idempotency-Key`, per user and key, replayed to repeats for 24 hours.
/// `service_probe`: one row a failing instance rewrites to learn when writes
/// can be stored again; it holds no user data.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
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
enum ServiceProbe {
    Table,
    Id,
    ProbedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(IdempotencyKeys::UserId).text().not_null())
                    .col(ColumnDef::new(IdempotencyKeys::Key).text().not_null())
                    .col(
                        ColumnDef::new(IdempotencyKeys::Fingerprint)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdempotencyKeys::Status)
                            .small_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(IdempotencyKeys::Body).text().not_null())
                    .col(ColumnDef::new(IdempotencyKeys::Location).text().null())
                    .col(ColumnDef::new(IdempotencyKeys::TaskId).big_integer().null())
                    .col(
                        ColumnDef::new(IdempotencyKeys::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(IdempotencyKeys::UserId)
                            .col(IdempotencyKeys::Key),
                    )
                    .to_owned(),
            )
            .await?;
        // The hourly purge deletes by age.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_idempotency_keys_created_at")
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ServiceProbe::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(ServiceProbe::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(ServiceProbe::ProbedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(ServiceProbe::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(IdempotencyKeys::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
