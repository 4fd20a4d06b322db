//! Query parameters of `GET /api/tasks/changes`.

use std::collections::HashSet;

use serde::Deserialize;
use utoipa::IntoParams;

use super::invalid::{FieldError, Invalid};
use super::list::whole_number;

pub const FEED_LIMIT_MAX: u16 = 1000;
pub const FEED_LIMIT_DEFAULT: u16 = 500;

/// A cursor (a version) as text: 1 to 18 digits. No version has more, and
/// every such number fits in a signed 64-bit integer, so what the OpenAPI
/// pattern admits is exactly what parses.
pub fn cursor(text: &str) -> Option<i64> {
    if text.len() > 18 {
        return None;
    }
    whole_number(text).and_then(|n| i64::try_from(n).ok())
}

/// Where the feed starts, and how much of it one answer holds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// A `cursor` of an earlier answer (or an `ETag`'s version); absent or
    /// `0`: every live task (the snapshot).
    #[param(value_type = Option<String>, pattern = r"^[0-9]{1,18}$", example = "43")]
    pub since: i64,
    /// Changes per answer, 1 to 1000 (default 500).
    #[param(value_type = Option<u16>, minimum = 1, maximum = 1000)]
    pub limit: u16,
}

impl FeedQuery {
    /// Each bad parameter named; unknown ones ignored (as the listing).
    pub fn parse(raw: Option<&str>) -> Result<Self, Invalid> {
        let mut query = FeedQuery {
            since: 0,
            limit: FEED_LIMIT_DEFAULT,
        };
        let mut errors = Vec::new();
        let mut seen = HashSet::new();
        for (name, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            if !matches!(&*name, "since" | "limit") {
                continue;
            }
            if !seen.insert(name.to_string()) {
                errors.push(FieldError::new(name.as_ref(), "must be given at most once"));
                continue;
            }
            match &*name {
                "since" => match cursor(&value) {
                    Some(since) => query.since = since,
                    None => errors.push(FieldError::new(
                        "since",
                        "must be a cursor this API returned (a whole number, 0 or more)",
                    )),
                },
                _ => match whole_number(&value)
                    .filter(|n| (1..=u64::from(FEED_LIMIT_MAX)).contains(n))
                {
                    Some(limit) => query.limit = limit as u16,
                    None => errors.push(FieldError::new(
                        "limit",
                        "must be a whole number from 1 to 1000",
                    )),
                },
            }
        }
        if errors.is_empty() {
            Ok(query)
        } else {
            Err(Invalid(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_values() {
        assert_eq!(
            FeedQuery::parse(None).unwrap(),
            FeedQuery {
                since: 0,
                limit: 500
            }
        );
        assert_eq!(
            FeedQuery::parse(Some("since=43&limit=1&other=x")).unwrap(),
            FeedQuery {
                since: 43,
                limit: 1
            }
        );
    }

    #[test]
    fn bad_values_name_their_parameter() {
        for (raw, field) in [
            ("since=", "since"),
            ("since=-1", "since"),
            ("since=abc", "since"),
            ("since=1.5", "since"),
            ("since=%00", "since"),
            ("since=99999999999999999999", "since"),
            ("since=1234567890123456789", "since"),
            ("since=1&since=2", "since"),
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=", "limit"),
        ] {
            match FeedQuery::parse(Some(raw)) {
                Err(Invalid(e)) => assert_eq!(e[0].field, field, "{raw}"),
                other => panic!("{raw}: {other:?}"),
            }
        }
    }
}
