//! Versioned schema migrations, run at start-up (and by `todo-api migrate`).
//! A migration, once released, is never edited: changes go in a new one.

pub use sea_orm_migration::prelude::*;

mod request_role;
mod run;
pub use request_role::{REQUEST_ROLE, USER_SETTING, USER_TABLES};
pub use run::{describe, run};

mod m20260125_000001_create_tasks;
mod m20261129_000002_idempotency_keys_and_probe;
mod m20261130_000003_create_task_function;
mod m20261204_000004_task_lists;
mod m20261204_000005_row_level_security;
mod m20261205_000006_versions;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20260125_000001_create_tasks::Migration),
            Box::new(m20261129_000002_idempotency_keys_and_probe::Migration),
            Box::new(m20261130_000003_create_task_function::Migration),
            Box::new(m20261204_000004_task_lists::Migration),
            Box::new(m20261204_000005_row_level_security::Migration),
            Box::new(m20261205_000006_versions::Migration),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Versions apply in name order and are recorded by name: names must be
    /// unique and the list sorted, or a deployment could skip one.
    #[test]
    fn migrations_are_uniquely_named_and_in_order() {
        let names: Vec<String> = Migrator::migrations()
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        assert!(!names.is_empty());
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
        assert!(
            names.iter().all(|n| n.starts_with('m') && n.len() > 16),
            "{names:?}"
        );
    }

    /// The role's SQL names the role that requests take.
    #[test]
    fn the_request_role_is_the_one_ensured() {
        assert!(request_role::ENSURE.contains(&format!("CREATE ROLE {REQUEST_ROLE} NOLOGIN")));
        for table in USER_TABLES {
            assert!(
                request_role::ENSURE.contains(&format!("'{table}'")),
                "{table}"
            );
        }
    }
}
