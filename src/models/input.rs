//! Request bodies and their validation.
//!
//! Bodies are parsed to a JSON object first and each field is checked on its
//! own, so a 422 lists every bad field at once (serde would stop at the first)
//! and "absent" can be told apart from `null` (PUT keeps absent fields, clears
//! a null `description`).

use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::invalid::{FieldError, Invalid};

pub const TITLE_MAX_CHARS: usize = 200;

// Its schema `pattern` states the rule of `TaskTitle::parse` exactly. The
// white space set is spelled out (it is `is_strippable`) because `\s` means
// different things to JSON Schema (ECMA-262), Python and Rust.
/// A task title: 1 to 200 characters after trimming leading and trailing
/// white space (it is stored trimmed); no NUL character.
#[derive(Debug, Clone, PartialEq, Eq, ToSchema)]
#[schema(value_type = String)]
#[schema(
    example = "Buy milk",
    pattern = r"^[\t-\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\t-\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000](?:[^\u0000]{0,198}[^\t-\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000])?[\t-\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
)]
pub struct TaskTitle(String);

impl TaskTitle {
    /// The only way to make one: trimmed, 1 to 200 characters, no NUL.
    pub fn parse(raw: &str) -> Result<TaskTitle, String> {
        if raw.contains('\0') {
            return Err("must not contain the NUL character".into());
        }
        let t = raw.trim_matches(is_strippable);
        match t.chars().count() {
            0 => Err("must not be empty".into()),
            n if n > TITLE_MAX_CHARS => {
                Err(format!("must be at most {TITLE_MAX_CHARS} characters"))
            }
            _ => Ok(TaskTitle(t.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

pub const DESCRIPTION_MAX_CHARS: usize = 1000;

/// Body of `POST /api/tasks`. Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, ToSchema)]
pub struct NewTask {
    /// 1 to 200 characters after trimming white space; stored trimmed.
    pub title: TaskTitle,
    /// At most 1000 characters, or null.
    #[schema(
        required = false,
        example = "2 litres, semi-skimmed",
        max_length = 1000,
        nullable,
        pattern = r"^[^\u0000]*$"
    )]
    pub description: Option<String>,
    /// Defaults to false.
    // Stated in words, not as a schema `default`: with one, openapi-typescript
    // types the field as required, and `{ title }` alone no longer compiles.
    #[schema(required = false)]
    pub completed: bool,
}

/// Body of `PUT /api/tasks/{id}`: any of the three fields, at least one.
/// Absent fields keep their value; `"description": null` clears it.
#[derive(Debug, Clone, Default, PartialEq, ToSchema)]
#[schema(min_properties = 1)]
pub struct TaskChanges {
    /// May be absent; never null.
    #[schema(nullable = false)]
    pub title: Option<TaskTitle>,
    /// `null` clears it.
    #[schema(value_type = Option<String>, max_length = 1000, nullable, pattern = r"^[^\u0000]*$")]
    pub description: Option<Option<String>>,
    /// May be absent; never null.
    #[schema(nullable = false)]
    pub completed: Option<bool>,
}

/// Body of `PATCH /api/tasks/{id}/complete`. No body, or `{}`, toggles.
#[derive(Debug, Clone, Default, PartialEq, ToSchema)]
pub struct CompleteRequest {
    /// The state to set; omit the field (or the body) to toggle. Never null.
    #[schema(nullable = false)]
    pub completed: Option<bool>,
}

/// Collects per-field errors while fields are read from a JSON object.
struct Fields<'a> {
    body: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    fn new(body: &'a Map<String, Value>) -> Self {
        Fields {
            body,
            errors: Vec::new(),
        }
    }

    /// `None` when absent; records an error and yields `None` when invalid.
    fn read<T>(
        &mut self,
        name: &str,
        check: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Option<T> {
        let value = self.body.get(name)?;
        match check(value) {
            Ok(v) => Some(v),
            Err(message) => {
                self.errors.push(FieldError::new(name, message));
                None
            }
        }
    }

    fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Invalid> {
        if self.errors.is_empty() {
            Ok(value())
        } else {
            Err(Invalid(self.errors))
        }
    }
}

impl NewTask {
    pub fn from_json(body: &Map<String, Value>) -> Result<Self, Invalid> {
        let mut f = Fields::new(body);
        let title = f.read("title", title);
        if !body.contains_key("title") {
            f.errors.push(FieldError::new("title", "is required"));
        }
        let description = f.read("description", description).flatten();
        let completed = f.read("completed", completed).unwrap_or(false);
        match title {
            Some(title) => f.finish(|| NewTask {
                title,
                description,
                completed,
            }),
            // Missing or invalid: an error says which.
            None => Err(Invalid(f.errors)),
        }
    }
}

impl TaskChanges {
    pub fn from_json(body: &Map<String, Value>) -> Result<Self, Invalid> {
        let mut f = Fields::new(body);
        let changes = TaskChanges {
            title: f.read("title", title),
            description: f.read("description", description),
            completed: f.read("completed", completed),
        };
        if f.errors.is_empty() && changes == TaskChanges::default() {
            f.errors.push(FieldError::new(
                "body",
                "must contain at least one of title, description, completed",
            ));
        }
        f.finish(|| changes)
    }
}

impl CompleteRequest {
    /// `None` (no body) and `{}` both mean "toggle".
    pub fn from_json(body: Option<&Map<String, Value>>) -> Result<Self, Invalid> {
        let Some(body) = body else {
            return Ok(CompleteRequest::default());
        };
        let mut f = Fields::new(body);
        let completed = f.read("completed", completed);
        f.finish(|| CompleteRequest { completed })
    }
}

fn string<'v>(value: &'v Value, what: &str) -> Result<&'v str, String> {
    let s = value.as_str().ok_or_else(|| format!("must be {what}"))?;
    if s.contains('\0') {
        return Err("must not contain the NUL character".into());
    }
    Ok(s)
}

/// White space as Python's `str.strip()` (the FastAPI reference) sees it:
/// Unicode White_Space plus the separators U+001C..U+001F.
fn is_strippable(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn title(value: &Value) -> Result<TaskTitle, String> {
    TaskTitle::parse(value.as_str().ok_or("must be a string")?)
}

fn description(value: &Value) -> Result<Option<String>, String> {
    if value.is_null() {
        return Ok(None);
    }
    let d = string(value, "a string or null")?;
    if d.chars().count() > DESCRIPTION_MAX_CHARS {
        return Err(format!(
            "must be at most {DESCRIPTION_MAX_CHARS} characters"
        ));
    }
    Ok(Some(d.to_owned()))
}

fn completed(value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| "must be a boolean (true or false)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn fields(err: Invalid) -> Vec<(String, String)> {
        err.0.into_iter().map(|e| (e.field, e.message)).collect()
    }

    #[test]
    fn new_task_trims_title_and_defaults() {
        let t = NewTask::from_json(&obj(
            json!({"title": "  Buy milk \n", "user_id": "evil", "id": 5}),
        ))
        .unwrap();
        assert_eq!(
            t,
            NewTask {
                title: TaskTitle::parse("Buy milk").unwrap(),
                description: None,
                completed: false
            }
        );
    }

    #[test]
    fn new_task_reports_every_bad_field() {
        let e = NewTask::from_json(&obj(
            json!({"title": "   ", "description": 5, "completed": "true"}),
        ))
        .unwrap_err();
        let f = fields(e);
        assert_eq!(
            f.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["title", "description", "completed"]
        );
        assert_eq!(f[0].1, "must not be empty");
    }

    #[test]
    fn title_limits_count_code_points() {
        assert!(NewTask::from_json(&obj(json!({"title": "é".repeat(200)}))).is_ok());
        assert!(NewTask::from_json(&obj(json!({"title": "é".repeat(201)}))).is_err());
        assert!(
            NewTask::from_json(&obj(json!({"title": format!("  {}  ", "x".repeat(200))}))).is_ok()
        );
        assert!(
            NewTask::from_json(&obj(json!({"description": "d".repeat(1001), "title": "x"})))
                .is_err()
        );
        assert!(
            NewTask::from_json(&obj(
                json!({"description": "😀".repeat(1000), "title": "x"})
            ))
            .is_ok()
        );
    }

    #[test]
    fn missing_or_null_title_is_rejected() {
        assert_eq!(
            fields(NewTask::from_json(&obj(json!({}))).unwrap_err()),
            [("title".into(), "is required".into())]
        );
        assert_eq!(
            fields(NewTask::from_json(&obj(json!({"title": null}))).unwrap_err())[0].1,
            "must be a string"
        );
    }

    #[test]
    fn nul_is_rejected_everywhere() {
        let f = fields(
            NewTask::from_json(&obj(json!({"title": "a\u{0}b", "description": "\u{0}"})))
                .unwrap_err(),
        );
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn changes_distinguish_absent_from_null() {
        let c = TaskChanges::from_json(&obj(json!({"description": null}))).unwrap();
        assert_eq!(c.description, Some(None));
        let c = TaskChanges::from_json(&obj(json!({"completed": true}))).unwrap();
        assert_eq!(
            (c.title, c.description, c.completed),
            (None, None, Some(true))
        );
        assert_eq!(
            fields(TaskChanges::from_json(&obj(json!({"user_id": "x"}))).unwrap_err())[0].0,
            "body"
        );
    }

    #[test]
    fn complete_toggles_or_sets() {
        assert_eq!(CompleteRequest::from_json(None).unwrap().completed, None);
        assert_eq!(
            CompleteRequest::from_json(Some(&obj(json!({}))))
                .unwrap()
                .completed,
            None
        );
        assert_eq!(
            CompleteRequest::from_json(Some(&obj(json!({"completed": false}))))
                .unwrap()
                .completed,
            Some(false)
        );
        assert!(CompleteRequest::from_json(Some(&obj(json!({"completed": null})))).is_err());
        assert!(CompleteRequest::from_json(Some(&obj(json!({"completed": 1})))).is_err());
    }
}
