//! Response bodies.

use std::borrow::Cow;

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
    /// The task's JSON, exactly as its `Serialize` derive writes it (same
    /// keys, order, escaping: a test compares), without serde's byte-by-byte
    /// escaping of strings that need none. Every response carrying tasks
    /// uses it; lists write tens of thousands.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut number = itoa::Buffer::new();
        out.extend_from_slice(b"{\"id\":");
        out.extend_from_slice(number.format(self.id).as_bytes());
        out.extend_from_slice(b",\"user_id\":");
        write_json_str(out, &self.user_id);
        out.extend_from_slice(b",\"title\":");
        write_json_str(out, &self.title);
        out.extend_from_slice(b",\"description\":");
        match &self.description {
            Some(d) => write_json_str(out, d),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(if self.completed {
            b",\"completed\":true"
        } else {
            b",\"completed\":false"
        });
        for (key, at) in [
            (&b",\"created_at\":"[..], &self.created_at),
            (&b",\"updated_at\":"[..], &self.updated_at),
        ] {
            out.extend_from_slice(key);
            let mut buf = [0u8; 27];
            // Digits and `+-:.TZ` only (any year): nothing to escape.
            out.push(b'"');
            out.extend_from_slice(rfc3339_micros_text(at, &mut buf).as_bytes());
            out.push(b'"');
        }
        out.push(b'}');
    }

    /// The task as a JSON response body.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write_json(&mut out);
        out
    }
}

/// A JSON string: copied as it is when nothing in it needs escaping (the
/// usual case), else escaped by serde_json.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    if !needs_escaping(s.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        // Writing to a Vec cannot fail; keep the output valid JSON regardless.
        out.extend_from_slice(b"null");
    }
}

/// Whether any byte is a control character, `"` or `\\`. Sixteen bytes at a
/// time without an early exit inside a block, so the compiler turns each
/// block into a few vector instructions (a byte-at-a-time loop cost about
/// ten instructions per byte of every title and description listed).
fn needs_escaping(bytes: &[u8]) -> bool {
    let special = |b: &u8| *b < 0x20 || *b == b'"' || *b == b'\\';
    let mut blocks = bytes.chunks_exact(16);
    for block in &mut blocks {
        if block.iter().fold(false, |found, b| found | special(b)) {
            return true;
        }
    }
    blocks.remainder().iter().any(special)
}

/// Fixed width (always six fractional digits, `Z`), so every endpoint prints
/// the same instant the same way.
fn rfc3339_micros<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 27];
    s.serialize_str(&rfc3339_micros_text(t, &mut buf))
}

/// The text of [`rfc3339_micros`]: written into `buf` without allocating
/// for years 0..=9999, by chrono's general formatting otherwise.
fn rfc3339_micros_text<'b>(t: &DateTime<Utc>, buf: &'b mut [u8; 27]) -> Cow<'b, str> {
    match format_rfc3339_micros(t, buf) {
        Some(text) => Cow::Borrowed(text),
        None => Cow::Owned(t.to_rfc3339_opts(SecondsFormat::Micros, true)),
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
    fn write_json_is_what_serde_writes() {
        let t = Utc.timestamp_micros(1_795_000_000_123_456).unwrap();
        for (title, description) in [
            ("Buy milk", None),
            (
                "quote \" backslash \\ tab \t nul-free \u{1} é 😀 </script>",
                Some("line\nbreak"),
            ),
            ("", Some("")),
        ] {
            let task = TaskOut {
                id: 9_007_199_254_740_993,
                user_id: "Kx3b9 \"u\"".into(),
                title: title.into(),
                description: description.map(str::to_owned),
                completed: title.is_empty(),
                created_at: t,
                // Years outside 0..=9999 take chrono's formatting.
                updated_at: if title.is_empty() {
                    Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap()
                } else {
                    Utc.timestamp_micros(0).unwrap()
                },
            };
            assert_eq!(
                String::from_utf8(task.to_json()).unwrap(),
                serde_json::to_string(&task).unwrap()
            );
        }
    }

    #[test]
    fn escaping_is_found_at_every_position() {
        for len in 0..40 {
            let clean = "a".repeat(len);
            assert!(!needs_escaping(clean.as_bytes()));
            for at in 0..len {
                for special in [b'"', b'\\', b'\n', 0x1f] {
                    let mut bytes = clean.clone().into_bytes();
                    bytes[at] = special;
                    assert!(needs_escaping(&bytes), "{len} {at} {special}");
                }
            }
        }
        assert!(!needs_escaping("é 😀 \u{7f} </script>".as_bytes()));
    }

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
