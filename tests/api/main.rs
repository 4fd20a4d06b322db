//! The HTTP integration suite, one test binary: a real server on a loopback
//! port, a real database (SQLite and PostgreSQL), real tokens, called as the
//! frontend would. `common` is the harness; each module is one concern.

// Test code: a failed unwrap is a failed test, and `unsafe` is only for
// libc calls on processes the tests own (rlimits, signals, the user id).
#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code)]

#[macro_use]
mod common;

mod abandoned;
mod auth;
mod better_auth;
mod browser;
mod cli;
mod concurrency;
mod connections;
mod database_outage;
mod faults;
mod fuzz;
mod heavy_user;
mod http_surface;
mod idempotency;
mod isolation;
mod jwks;
mod limits;
mod listing;
mod live;
mod no_data_lost;
mod operations;
mod postgres_tls;
mod rolling_restart;
mod row_security;
mod schemathesis;
mod shutdown;
mod storage_faults;
mod sync;
mod tasks;
mod typescript_client;
