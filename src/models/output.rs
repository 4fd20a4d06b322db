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

/// Fixed width (always six fractional digits, `Z`), so every endpoint prints
/// the same instant the same way.
fn rfc3339_micros<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 27];
    match format_rfc3339_micros(t, &mut buf) {
        Some(text) => s.serialize_str(text),
        None => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true)),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, written into `buf` (no allocation: a list
/// writes two per task); `None` for years outside 0..=9999, which chrono's
/// general formatting takes.
fn format_rfc3339_micros<'b>(t: &DateTime<Utc>, buf: &'b mut [u8; 27]) -> Option<&'b str> {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return None;
    }
    let micros = t.timestamp_subsec_micros().min(999_999);
    let fields: [(usize, u32, usize); 7] = [
        (0, year as u32, 4),
        (5, t.month(), 2),
        (8, t.day(), 2),
        (11, t.hour(), 2),
        (14, t.minute(), 2),
        (17, t.second().min(59), 2),
        (20, micros, 6),
    ];
    *buf = *b"0000-00-00T00:00:00.000000Z";
    for (at, mut value, width) in fields {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    std::str::from_utf8(buf).ok()
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
    fn timestamps_print_as_chrono_prints_them() {
        for t in [
            Utc.with_ymd_and_hms(2026, 1, 18, 10, 0, 0).unwrap(),
            Utc.timestamp_micros(1_795_000_000_123_456).unwrap(),
            Utc.timestamp_micros(0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.timestamp_micros(-1).unwrap(),
        ] {
            let mut buf = [0u8; 27];
            assert_eq!(
                format_rfc3339_micros(&t, &mut buf),
                Some(t.to_rfc3339_opts(SecondsFormat::Micros, true).as_str())
            );
        }
        let far = Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(format_rfc3339_micros(&far, &mut [0; 27]), None);
    }
}
