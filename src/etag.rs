//! Entity tags (RFC 9110): a task's is its version, `"43"`; a listing's
//! is the user's version and a digest of the user and the query
//! (`"43-1f0c..."`). See `preconditions` for what requests ask of them.

use axum::http::HeaderValue;
use sha2::{Digest, Sha256};

use crate::models::list::ListQuery;

/// An entity tag as a header value.
pub fn tag(opaque: &str) -> HeaderValue {
    // Digits, letters and '-' only: always a valid header value.
    HeaderValue::try_from(format!("\"{opaque}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// The tag of a task at `version`.
pub fn task_tag(version: i64) -> HeaderValue {
    tag(&version.to_string())
}

/// The tag of `user`'s listing `query` at the user's `version`.
pub fn list_tag(version: i64, user: &str, query: &ListQuery) -> String {
    format!("{version}-{}", list_digest(user, query))
}

/// The digest of a listing tag: the user and the query.
pub fn list_digest(user: &str, query: &ListQuery) -> String {
    let mut hash = Sha256::new();
    hash.update(user.as_bytes());
    hash.update([0]);
    hash.update(query.canonical().as_bytes());
    hex::encode(&hash.finalize()[..8])
}
