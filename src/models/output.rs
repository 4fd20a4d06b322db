//! Response bodies.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use utoipa::ToSchema;

use super::task;

/// A task, as every endpoint returns it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskOut {
    #[schema(example = 17, minimum = 1)]
    pub id: i64,
    /// The owner's Better Auth user id.
    #[schema(example = "Kx3b9Qe2mZ")]
    pub user_id: String,
    #[schema(example = "Buy milk", min_length = 1, max_length = 200)]
    pub title: String,
    /// Always present; `null` when the task has none.
    #[schema(example = json!(null), max_length = 1000, required = true)]
    pub description: Option<String>,
    pub completed: bool,
    /// RFC 3339, UTC, microseconds.
    #[serde(serialize_with = "rfc3339_micros")]
    #[schema(value_type = String, format = DateTime, example = "2026-01-18T10:00:00.123456Z")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_micros")]
    #[schema(value_type = String, format = DateTime, example = "2026-01-18T10:00:00.123456Z")]
    pub updated_at: DateTime<Utc>,
    /// The user's version at this task's last write: moves on every write
    /// of it, and is its `ETag`.
    #[schema(example = 43, minimum = 1)]
    pub version: i64,
}

impl From<task::Model> for TaskOut {
    fn from(m: task::Model) -> Self {
        TaskOut {
            id: m.id,
            user_id: m.user_id,
            title: m.title,
            description: m.description,
            completed: m.completed,
            created_at: m.created_at,
            updated_at: m.updated_at,
            version: m.version,
        }
    }
}

impl TaskOut {
    /// The task of the document's examples.
    pub fn example() -> TaskOut {
        use chrono::TimeZone;
        let at = Utc
            .timestamp_micros(1_768_730_400_123_456)
            .single()
            .unwrap_or_default();
        TaskOut {
            id: 17,
            user_id: "Kx3b9Qe2mZ".into(),
            title: "Buy milk".into(),
            description: None,
            completed: false,
            created_at: at,
            updated_at: at,
            version: 43,
        }
    }

    /// The task as a JSON response body.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings, numbers and booleans into memory cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Fixed width (always six fractional digits, `Z`), so every endpoint prints
/// the same instant the same way.
fn rfc3339_micros<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

/// One entry of the changes feed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ChangeOut {
    /// The task was created or changed: its latest state.
    Upsert {
        #[schema(example = 43)]
        version: i64,
        task: TaskOut,
    },
    /// The task was deleted.
    Delete {
        #[schema(example = 44)]
        version: i64,
        #[schema(example = 18)]
        id: i64,
    },
}

/// A page of the changes feed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangesOut {
    /// Ascending by version; each task at most once.
    pub changes: Vec<ChangeOut>,
    /// Where to ask next (`since`); opaque.
    #[schema(example = "44")]
    pub cursor: String,
    /// More changes wait: ask again at once with `cursor`.
    pub has_more: bool,
}

/// Body of a successful `DELETE`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedOut {
    #[schema(example = 17)]
    pub id: i64,
    #[schema(example = true)]
    pub deleted: bool,
}

/// Body of the health routes.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthOut {
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_have_six_fractional_digits_and_z() {
        let task = TaskOut {
            id: 1,
            user_id: "u".into(),
            title: "t \"quoted\"".into(),
            description: None,
            completed: false,
            created_at: Utc.timestamp_micros(1_795_000_000_123_456).unwrap(),
            updated_at: Utc.with_ymd_and_hms(2026, 1, 18, 10, 0, 0).unwrap(),
            version: 3,
        };
        let json: serde_json::Value = serde_json::from_slice(&task.to_json()).unwrap();
        assert_eq!(json["created_at"], "2026-11-18T11:06:40.123456Z");
        assert_eq!(json["updated_at"], "2026-01-18T10:00:00.000000Z");
        assert_eq!(json["title"], "t \"quoted\"");
        assert!(json["description"].is_null());
    }
}
