//! The task entity (what is stored) and the API's request/response types
//! (what crosses the wire), kept apart so neither leaks into the other.

pub mod input;
pub mod list;
pub mod output;
pub mod task;
