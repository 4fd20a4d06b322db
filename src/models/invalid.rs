//! What is wrong with a request's input: each bad field, query parameter
//! or header, with why (a 422 lists them all).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// The body field, query parameter or header at fault.
    #[schema(example = "title")]
    pub field: String,
    #[schema(example = "must not be empty")]
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Input that fails validation: every bad field at once.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("validation failed")]
pub struct Invalid(pub Vec<FieldError>);

impl Invalid {
    pub fn field(field: &str, message: &str) -> Self {
        Invalid(vec![FieldError::new(field, message)])
    }
}
