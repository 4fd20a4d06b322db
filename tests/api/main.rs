//! The HTTP integration suite, one test binary: a real server on a loopback
//! port, a real database (SQLite and PostgreSQL), real tokens, called as the
//! frontend would. `common` is the harness; each module is one concern.

#[macro_use]
mod common;

mod auth;
mod better_auth;
mod browser;
mod cli;
mod concurrency;
mod connections;
mod database_outage;
mod http_surface;
mod isolation;
mod jwks;
mod listing;
mod no_data_lost;
mod postgres_tls;
mod schemathesis;
mod shutdown;
mod tasks;
mod typescript_client;
