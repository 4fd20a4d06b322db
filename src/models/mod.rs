//! The stored entities (`task`, `idempotency_key`) and the API's
//! request/response types (what crosses the wire), kept apart so neither
//! leaks into the other.

pub mod changes;
pub mod idempotency_key;
pub mod input;
pub mod invalid;
pub mod list;
pub mod output;
pub mod task;
