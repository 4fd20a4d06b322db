//! SQLite: this process's writers take turns, first come first served,
//! before they ask SQLite for its write lock.
//!
//! SQLite has one writer at a time. The others wait in its busy handler,
//! which sleeps in growing steps (up to 100 ms) and wakes them in no order:
//! with ten of this process's writers at once (the bench's mix on SQLite) a
//! write's p99 was 110–170 ms, mostly sleeping while the lock was already
//! free. Queued here, a writer starts as soon as the one before it is done;
//! SQLite's busy handler is left to writers of other processes.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnAcquireErr, DbErr};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A writer's turn, held until dropped.
pub type Turn = OwnedSemaphorePermit;

pub struct Writers {
    turns: Arc<Semaphore>,
    max_wait: Duration,
}

impl Writers {
    /// `max_wait`: as long as SQLite's own busy timeout, so a write still
    /// gives up after the same wait when another process holds the lock.
    pub fn new(max_wait: Duration) -> Writers {
        Writers {
            // Tokio's semaphore is fair: turns go in the order asked.
            turns: Arc::new(Semaphore::new(1)),
            max_wait,
        }
    }

    /// The caller's turn; past `max_wait`, the "unavailable" error (503)
    /// that SQLite's busy timeout ends with.
    pub async fn turn(&self) -> Result<Turn, DbErr> {
        match tokio::time::timeout(self.max_wait, Arc::clone(&self.turns).acquire_owned()).await {
            Ok(Ok(turn)) => Ok(turn),
            Ok(Err(_)) | Err(_) => Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test]
    async fn turns_go_in_the_order_asked() {
        let writers = Arc::new(Writers::new(Duration::from_secs(5)));
        let first = writers.turn().await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for i in 0..4 {
            let (writers, order) = (Arc::clone(&writers), Arc::clone(&order));
            waiting.push(tokio::spawn(async move {
                let _turn = writers.turn().await.unwrap();
                order.lock().unwrap().push(i);
            }));
            // One thread: the task runs until it waits for its turn.
            tokio::task::yield_now().await;
        }
        assert!(
            order.lock().unwrap().is_empty(),
            "no turn while one is held"
        );
        drop(first);
        for task in waiting {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn a_turn_not_given_in_time_is_unavailable() {
        let writers = Writers::new(Duration::from_millis(20));
        let held = writers.turn().await.unwrap();
        let err = writers.turn().await.unwrap_err();
        assert!(crate::db::is_unavailable(&err), "{err}");
        drop(held);
        assert!(writers.turn().await.is_ok(), "free again once given back");
    }
}
