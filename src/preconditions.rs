//! Conditional requests (RFC 9110, section 13): the entity tags of a task
//! and of a listing, and what `If-Match` and `If-None-Match` ask.
//!
//! A task's tag is its version, `"43"`: the user's version moves on every
//! write of the user, so no two states of a task share one. A listing's tag
//! is the user's version and a digest of the query and the user
//! (`"43-1f0c..."`): the same query of another user never matches it, even
//! at the same version (a browser's cache may hold both).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, header};

use crate::error::ApiError;
use crate::etag::list_digest;
use crate::models::list::ListQuery;
use crate::state::AppState;
use crate::store::Expected;

/// `If-Match` or `If-None-Match`, as sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Condition {
    /// `*`: any current representation.
    Any,
    /// A list of tags.
    Tags(Vec<EntityTag>),
}

#[derive(Debug, PartialEq, Eq)]
pub struct EntityTag {
    pub weak: bool,
    pub opaque: String,
}

impl Condition {
    /// The header `name`, all its lines together. A value that is not `*`
    /// or a list of entity tags names no tag (RFC 9110: then no tag matches,
    /// so `If-Match` fails and `If-None-Match` holds).
    pub fn from_headers(headers: &HeaderMap, name: HeaderName) -> Option<Self> {
        let mut values = headers.get_all(&name).iter().peekable();
        values.peek()?;
        let mut tags = Vec::new();
        let mut any = false;
        for value in values {
            match value.to_str().ok().and_then(parse) {
                Some(Parsed::Any) => any = true,
                Some(Parsed::Tags(more)) => tags.extend(more),
                None => return Some(Condition::Tags(Vec::new())),
            }
        }
        match (any, tags.is_empty()) {
            (true, true) => Some(Condition::Any),
            (false, _) => Some(Condition::Tags(tags)),
            // `*` mixed with tags: malformed.
            (true, false) => Some(Condition::Tags(Vec::new())),
        }
    }

    /// Weak comparison (`If-None-Match`): does any tag name `opaque`?
    pub fn matches_weakly(&self, opaque: &str) -> bool {
        match self {
            Condition::Any => true,
            Condition::Tags(tags) => tags.iter().any(|t| t.opaque == opaque),
        }
    }

    /// The versions of a task this `If-Match` accepts (strong comparison:
    /// weak tags and tags that are no task's match nothing).
    pub fn task_versions(&self) -> Option<Vec<i64>> {
        match self {
            Condition::Any => None,
            Condition::Tags(tags) => Some(
                tags.iter()
                    .filter(|t| !t.weak)
                    .filter_map(|t| version(&t.opaque))
                    .collect(),
            ),
        }
    }

    /// The user versions of listing tags of this user and query.
    pub fn list_versions(&self, user: &str, query: &ListQuery) -> Vec<i64> {
        let Condition::Tags(tags) = self else {
            return Vec::new();
        };
        let digest = list_digest(user, query);
        tags.iter()
            .filter_map(|t| t.opaque.split_once('-'))
            .filter(|(_, d)| *d == digest)
            .filter_map(|(v, _)| version(v))
            .collect()
    }
}

/// A version as a tag writes it: digits only, no sign, no leading zero.
fn version(text: &str) -> Option<i64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

enum Parsed {
    Any,
    Tags(Vec<EntityTag>),
}

/// `"*"` or `1#entity-tag` (empty list elements allowed, as RFC 9110's `#`).
fn parse(text: &str) -> Option<Parsed> {
    let text = text.trim_matches([' ', '\t']);
    if text == "*" {
        return Some(Parsed::Any);
    }
    let mut tags = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        let (weak, quoted) = match rest.strip_prefix("W/") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        let inner = quoted.strip_prefix('"')?;
        let end = inner.find('"')?;
        let opaque = &inner[..end];
        // etagc: %x21 / %x23-7E / obs-text.
        if !opaque
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
        {
            return None;
        }
        tags.push(EntityTag {
            weak,
            opaque: opaque.to_owned(),
        });
        rest = inner[end + 1..].trim_start_matches([' ', '\t']);
        if !(rest.is_empty() || rest.starts_with(',')) {
            return None;
        }
    }
    (!tags.is_empty()).then_some(Parsed::Tags(tags))
}

/// What a write (PUT, PATCH `/complete`, DELETE) expects of the task's
/// version, from `If-Match`: an extractor, so a handler states it by
/// taking one. Without `If-Match`, any version, unless `REQUIRE_IF_MATCH`
/// makes that a 428.
pub struct WriteCondition(Option<Vec<i64>>);

impl WriteCondition {
    pub fn expected(&self) -> Expected<'_> {
        match &self.0 {
            None => Expected::Any,
            Some(versions) => Expected::OneOf(versions),
        }
    }
}

impl FromRequestParts<AppState> for WriteCondition {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Condition::from_headers(&parts.headers, header::IF_MATCH) {
            Some(condition) => Ok(WriteCondition(condition.task_versions())),
            None if state.require_if_match() => Err(ApiError::PreconditionRequired),
            None => Ok(WriteCondition(None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etag::list_tag;

    fn tags(text: &str) -> Option<Vec<(bool, String)>> {
        match parse(text)? {
            Parsed::Any => Some(vec![(false, "*".into())]),
            Parsed::Tags(t) => Some(t.into_iter().map(|t| (t.weak, t.opaque)).collect()),
        }
    }

    #[test]
    fn entity_tag_lists_parse_as_rfc_9110_writes_them() {
        assert_eq!(tags("*"), Some(vec![(false, "*".into())]));
        assert_eq!(tags("\"43\""), Some(vec![(false, "43".into())]));
        assert_eq!(
            tags(" W/\"1\" ,, \"2\",\"\" "),
            Some(vec![
                (true, "1".into()),
                (false, "2".into()),
                (false, "".into())
            ])
        );
        assert_eq!(tags("\"a,b\""), Some(vec![(false, "a,b".into())]));
        for bad in [
            "",
            "43",
            "\"43",
            "w/\"1\"",
            "\"1\" \"2\"",
            "\"a b\"",
            "*, \"1\"",
            ",",
        ] {
            assert!(tags(bad).is_none(), "{bad:?}");
        }
    }

    /// RFC 9110's grammar, as a regular expression: what it matches parses.
    #[test]
    fn values_of_the_grammar_parse() {
        let documented =
            regex::Regex::new(r#"^(\*|(W/)?"[!#-~]*"( *, *(W/)?"[!#-~]*")*)$"#).unwrap();
        for value in ["*", "\"\"", "\"43\"", "W/\"1\" , \"x-y\"", "\"!#~\",W/\"\""] {
            assert!(documented.is_match(value), "{value}");
            assert!(parse(value).is_some(), "{value}");
        }
    }

    #[test]
    fn versions_are_canonical_decimals() {
        assert_eq!(version("43"), Some(43));
        assert_eq!(version("0"), Some(0));
        for bad in ["043", "+4", "-4", "4.0", "", "99999999999999999999"] {
            assert_eq!(version(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn strong_comparison_ignores_weak_tags() {
        let condition = Condition::Tags(vec![
            EntityTag {
                weak: true,
                opaque: "4".into(),
            },
            EntityTag {
                weak: false,
                opaque: "5".into(),
            },
            EntityTag {
                weak: false,
                opaque: "x".into(),
            },
        ]);
        assert_eq!(condition.task_versions(), Some(vec![5]));
        assert!(condition.matches_weakly("4"));
        assert_eq!(Condition::Any.task_versions(), None);
    }

    #[test]
    fn listing_tags_differ_by_user_and_query() {
        let all = ListQuery::default();
        let pending = ListQuery::parse(Some("status=pending")).unwrap();
        assert_ne!(list_tag(3, "a", &all), list_tag(3, "b", &all));
        assert_ne!(list_tag(3, "a", &all), list_tag(3, "a", &pending));
        let sent = Condition::Tags(vec![EntityTag {
            weak: false,
            opaque: list_tag(3, "a", &all),
        }]);
        assert_eq!(sent.list_versions("a", &all), vec![3]);
        assert!(sent.list_versions("b", &all).is_empty());
    }
}
