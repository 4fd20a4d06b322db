//! The store's reads of more than one task: the listing, the user's
//! version, the changes feed.

use futures_util::{Stream, StreamExt};

use super::{StoreError, UserTasks, one_row, sql, task_at};
use crate::db::DbError;
use crate::models::list::ListQuery;
use crate::models::task;

/// A listing: the number of matching tasks before `limit`/`offset`, the
/// user's version it was read at, and the page itself as a stream (its
/// memory does not grow with its length).
pub struct Listing {
    pub total: u64,
    pub version: i64,
    pub tasks: std::pin::Pin<Box<dyn Stream<Item = Result<task::Model, DbError>> + Send>>,
}

impl UserTasks {
    pub async fn list(&self, query: &ListQuery) -> Result<Listing, StoreError> {
        let (total, version, first, rows) = match sql::list(self.dialect(), &self.owner, query) {
            Some(stmt) => {
                let stmt = self.sent(vec![stmt]).remove(0);
                let mut rows: crate::db::RowStream = self.db.list(self.caller(), stmt).await?;
                // The first row carries the total and the version.
                match rows.next().await.transpose()? {
                    Some(row) => (row.get::<i64>(8)?, row.get::<i64>(9)?, Some(row), rows),
                    None => {
                        let (total, version) = self.list_totals(query).await?;
                        (total, version, None, rows)
                    }
                }
            }
            None => {
                let (total, version) = self.list_totals(query).await?;
                let rows: crate::db::RowStream = Box::pin(futures_util::stream::empty());
                (total, version, None, rows)
            }
        };
        let tasks = futures_util::stream::iter(first.map(Ok))
            .chain(rows)
            .map(|row| row.and_then(|row| super::task(&row)));
        Ok(Listing {
            total: u64::try_from(total).unwrap_or(0),
            version,
            tasks: Box::pin(tasks),
        })
    }

    /// An empty page's total and version.
    async fn list_totals(&self, query: &ListQuery) -> Result<(i64, i64), StoreError> {
        let stmt = sql::list_totals(self.dialect(), &self.owner, query);
        let row = one_row(self.read(vec![stmt]).await?)
            .ok_or_else(|| DbError::bug("no row of totals"))?;
        Ok((row.get(0)?, row.get(1)?))
    }

    /// The user's version: advanced by every write of theirs.
    pub async fn version(&self) -> Result<i64, StoreError> {
        let stmt = sql::user_version(self.dialect(), &self.owner);
        let row = one_row(self.read(vec![stmt]).await?)
            .ok_or_else(|| DbError::bug("no row of the version"))?;
        Ok(row.get(0)?)
    }

    /// The user's changes after `since` (0: every live task), at most
    /// `limit`; `StoreError::CursorExpired` when that cannot be exact.
    pub async fn changes(&self, since: i64, limit: u16) -> Result<Changes, StoreError> {
        let kept_from = self.sync.tombstones_kept_from(chrono::Utc::now());
        let stmt = sql::changes(
            self.dialect(),
            &self.owner,
            since,
            kept_from,
            i64::from(limit) + 1,
        );
        let rows = self.read(vec![stmt]).await?.into_iter().flatten();
        let mut version = 0;
        let mut changes = Vec::new();
        for row in rows {
            version = row.get::<i64>(0)?;
            if since > version || row.get::<bool>(1)? {
                return Err(StoreError::CursorExpired);
            }
            let Some(gone) = row.get::<Option<bool>>(2)? else {
                continue;
            };
            let (id, change_version) = (row.get::<i64>(3)?, row.get::<i64>(10)?);
            changes.push(match gone {
                true => Change::Delete {
                    id,
                    version: change_version,
                },
                false => Change::Upsert(task_at(&row, 3)?),
            });
        }
        let has_more = changes.len() > usize::from(limit);
        changes.truncate(usize::from(limit));
        let cursor = match (has_more, changes.last()) {
            (true, Some(last)) => last.version(),
            _ => version.max(since),
        };
        Ok(Changes {
            changes,
            cursor,
            has_more,
        })
    }
}

/// The user's changes after a cursor (see [`UserTasks::changes`]).
#[derive(Clone)]
pub struct Changes {
    pub changes: Vec<Change>,
    pub cursor: i64,
    pub has_more: bool,
}

#[derive(Clone)]
pub enum Change {
    Upsert(task::Model),
    Delete { id: i64, version: i64 },
}

impl Change {
    pub fn version(&self) -> i64 {
        match self {
            Change::Upsert(task) => task.version,
            Change::Delete { version, .. } => *version,
        }
    }
}
