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
        }
    }
}

impl TaskOut {
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
        };
        let json: serde_json::Value = serde_json::from_slice(&task.to_json()).unwrap();
        assert_eq!(json["created_at"], "2026-11-18T11:06:40.123456Z");
        assert_eq!(json["updated_at"], "2026-01-18T10:00:00.000000Z");
        assert_eq!(json["title"], "t \"quoted\"");
        assert!(json["description"].is_null());
    }
}
