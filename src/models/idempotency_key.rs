//! The `idempotency_keys` table, as created by `migration/`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// SHA-256 (hex) of the request body as parsed JSON.
    pub fingerprint: String,
    /// The first response: status, JSON body, `Location`.
    pub status: i16,
    /// `None`: rebuilt from the repeat (see the store).
    pub body: Option<String>,
    pub location: Option<String>,
    /// The task the first request created.
    pub task_id: Option<i64>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
