//! Query parameters of `GET /api/tasks`.
//!
//! Parsed by hand from the raw query so each bad parameter yields its own
//! 422 entry named after it, values stay case-sensitive and a repeated
//! parameter is refused instead of silently picking one.

use std::collections::HashSet;

use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::invalid::{FieldError, Invalid};

pub const LIMIT_MAX: u64 = 1000;
pub const Q_MAX_CHARS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    All,
    Pending,
    Completed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortField {
    #[default]
    CreatedAt,
    UpdatedAt,
    Title,
    Id,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    Asc,
    #[default]
    Desc,
}

/// What a listing asks for, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Which tasks: `all` (default), `pending` or `completed`.
    #[param(inline)]
    pub status: Option<Status>,
    /// `true` or `false`: the same filter as `status`.
    pub completed: Option<bool>,
    /// Case-insensitive substring of title or description (at most 1000 characters).
    #[param(max_length = 1000, pattern = r"^[^\u0000]*$")]
    pub q: Option<String>,
    /// Sort key (default `created_at`); ties are broken by `id` in the same order.
    #[param(inline)]
    pub sort: Option<SortField>,
    /// `desc` (default) or `asc`.
    #[param(inline)]
    pub order: Option<SortOrder>,
    /// Page size, 1 to 1000 (default: everything).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// Rows to skip, 0 or more.
    #[param(minimum = 0)]
    pub offset: Option<u64>,
}

impl ListQuery {
    /// What the query asks, as text: equal for queries that ask the same
    /// (`status=pending` and `completed=false`, defaults given or not).
    pub fn canonical(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.completed_filter(),
            self.q.as_deref().filter(|q| !q.is_empty()),
            self.sort.unwrap_or_default(),
            self.order.unwrap_or_default(),
            self.limit,
            self.offset.filter(|&o| o > 0),
        )
    }

    /// The completion filter that `status` and `completed` ask for together
    /// (`None`: no filter). Both given and contradicting: nothing matches.
    pub fn completed_filter(&self) -> CompletedFilter {
        let from_status = match self.status.unwrap_or_default() {
            Status::All => None,
            Status::Pending => Some(false),
            Status::Completed => Some(true),
        };
        match (from_status, self.completed) {
            (Some(a), Some(b)) if a != b => CompletedFilter::Nothing,
            (Some(v), _) | (None, Some(v)) => CompletedFilter::Only(v),
            (None, None) => CompletedFilter::Any,
        }
    }

    pub fn parse(raw: Option<&str>) -> Result<Self, Invalid> {
        let mut query = ListQuery::default();
        let mut errors = Vec::new();
        let mut seen = HashSet::new();
        for (name, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            let known = matches!(
                &*name,
                "status" | "completed" | "q" | "sort" | "order" | "limit" | "offset"
            );
            if !known {
                continue; // unknown parameters are ignored, as FastAPI does
            }
            if !seen.insert(name.to_string()) {
                errors.push(FieldError::new(name.as_ref(), "must be given at most once"));
                continue;
            }
            if value.contains('\0') {
                errors.push(FieldError::new(
                    name.as_ref(),
                    "must not contain the NUL character",
                ));
                continue;
            }
            let bad = |msg: &str| FieldError::new(name.as_ref(), msg);
            let result: Result<(), FieldError> = match &*name {
                "status" => named(&value)
                    .map(|v| query.status = Some(v))
                    .ok_or_else(|| bad("must be one of: all, pending, completed")),
                "completed" => match &*value {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => None,
                }
                .map(|v| query.completed = Some(v))
                    .ok_or_else(|| bad("must be true or false")),
                "q" if value.chars().count() > Q_MAX_CHARS => Err(bad("must be at most 1000 characters")),
                "q" => {
                    query.q = Some(value.to_string()).filter(|q| !q.is_empty());
                    Ok(())
                }
                "sort" => named(&value)
                    .map(|v| query.sort = Some(v))
                    .ok_or_else(|| bad("must be one of: created_at, updated_at, title, id")),
                "order" => named(&value)
                    .map(|v| query.order = Some(v))
                    .ok_or_else(|| bad("must be asc or desc")),
                "limit" => whole_number(&value)
                    .filter(|n| (1..=LIMIT_MAX).contains(n))
                    .map(|v| query.limit = Some(v))
                    .ok_or_else(|| bad("must be a whole number from 1 to 1000")),
                _ /* offset */ => whole_number(&value)
                    .map(|v| query.offset = Some(v))
                    .ok_or_else(|| bad("must be a whole number, 0 or more")),
            };
            if let Err(e) = result {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(query)
        } else {
            Err(Invalid(errors))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletedFilter {
    Any,
    Only(bool),
    Nothing,
}

/// One of an enum's values by its exact serde name (`created_at`, `asc`, ...).
fn named<T: serde::de::DeserializeOwned>(value: &str) -> Option<T> {
    use serde::de::IntoDeserializer;
    let value: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
        value.into_deserializer();
    T::deserialize(value).ok()
}

/// Plain ASCII digits only (no sign, no spaces), within SQL's signed 64-bit range.
pub(crate) fn whole_number(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<u64>().ok().filter(|n| *n <= i64::MAX as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_fields(raw: &str) -> Vec<String> {
        match ListQuery::parse(Some(raw)) {
            Err(Invalid(e)) => e.into_iter().map(|e| e.field).collect(),
            other => panic!("{raw}: expected 422, got {other:?}"),
        }
    }

    #[test]
    fn empty_query_is_the_default_listing() {
        assert_eq!(ListQuery::parse(None).unwrap(), ListQuery::default());
        assert_eq!(ListQuery::parse(Some("q=")).unwrap().q, None);
        assert_eq!(
            ListQuery::parse(Some("unknown=1")).unwrap(),
            ListQuery::default()
        );
    }

    #[test]
    fn every_parameter_parses() {
        let q = ListQuery::parse(Some(
            "status=pending&q=Milk%20x&sort=title&order=asc&limit=10&offset=0",
        ))
        .unwrap();
        assert_eq!(q.status, Some(Status::Pending));
        assert_eq!(q.q.as_deref(), Some("Milk x"));
        assert_eq!(
            (q.sort, q.order, q.limit, q.offset),
            (
                Some(SortField::Title),
                Some(SortOrder::Asc),
                Some(10),
                Some(0)
            )
        );
    }

    #[test]
    fn bad_values_name_their_parameter() {
        for (raw, field) in [
            ("status=", "status"),
            ("status=Pending", "status"),
            ("completed=1", "completed"),
            ("sort=name", "sort"),
            ("order=DESC", "order"),
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=-1", "limit"),
            ("limit=+5", "limit"),
            ("offset=-1", "offset"),
            ("offset=1.5", "offset"),
            ("offset=99999999999999999999", "offset"),
            ("q=%00", "q"),
            ("status=all&status=all", "status"),
        ] {
            assert_eq!(bad_fields(raw), [field], "{raw}");
        }
        assert_eq!(bad_fields(&format!("q={}", "a".repeat(1001))), ["q"]);
        assert_eq!(bad_fields("limit=x&sort=y"), ["limit", "sort"]);
    }

    #[test]
    fn status_and_completed_combine() {
        let f = |raw| ListQuery::parse(Some(raw)).unwrap().completed_filter();
        assert_eq!(f("status=all"), CompletedFilter::Any);
        assert_eq!(f("completed=false"), CompletedFilter::Only(false));
        assert_eq!(
            f("status=completed&completed=true"),
            CompletedFilter::Only(true)
        );
        assert_eq!(f("status=pending&completed=true"), CompletedFilter::Nothing);
    }
}
