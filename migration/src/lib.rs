//! Versioned schema migrations, run at start-up (and by `todo-api migrate`).
//! A migration, once released, is never edited: changes go in a new one.

pub use sea_orm_migration::prelude::*;

mod m20260125_000001_create_tasks;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20260125_000001_create_tasks::Migration)]
    }
}
