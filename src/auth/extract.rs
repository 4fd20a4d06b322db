//! The authenticated user as an axum extractor (FastAPI's `Depends(get_current_user)`).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{Identity, TokenRejection};
use crate::error::{ApiError, AuthFailure};
use crate::http::RequestContext;
use crate::state::AppState;

/// The verified caller. Put it (or [`crate::store::UserTasks`], which uses it)
/// first in a handler's arguments: extractors run in order, so
/// authentication answers before the path or the body is looked at.
pub struct AuthUser(pub Identity);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts)?;
        let identity = state
            .verifier()
            .verify(token)
            .await
            .map_err(ApiError::invalid_token)?;
        // For the request log line and metrics.
        if let Some(context) = parts.extensions.get::<Arc<RequestContext>>() {
            context.set_user(&identity.user_id);
        }
        Ok(AuthUser(identity))
    }
}

/// The token of the one `Authorization: Bearer <token>` header.
fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let mut values = parts.headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(match parts.headers.contains_key(AUTHORIZATION) {
            true => ApiError::invalid_token(TokenRejection::DuplicateHeader),
            false => ApiError::Unauthorized(AuthFailure::Missing),
        });
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::invalid_token(TokenRejection::MalformedHeader))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized(AuthFailure::Missing));
    }
    match token.trim() {
        "" => Err(ApiError::Unauthorized(AuthFailure::Missing)),
        token => Ok(token),
    }
}
