//! Where log lines go: stderr, in batches on the runtime's worker threads.
//!
//! A `write(2)` per request line was a fifth of the server's system calls
//! under load. A worker thread (from its first idle moment on) keeps its
//! lines and writes them together when it is about to go idle again (the
//! runtime's park hook), when it holds
//! [`FLUSH_AT`] bytes, and when it stops; so an idle server's log is never
//! behind, and a busy one writes about once per 60 request lines. Other
//! threads (start-up, shutdown, SQLite's) write each line at once. What a
//! crash can lose: the lines of the current busy stretch, at most
//! [`FLUSH_AT`] bytes per worker thread.

use std::cell::RefCell;
use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Bytes a worker thread keeps before writing them anyway.
pub const FLUSH_AT: usize = 16 * 1024;

/// A thread's unwritten lines; `None` on threads that write at once.
struct Pending(Option<Vec<u8>>);

impl Pending {
    fn write_out(&mut self) {
        if let Some(lines) = self.0.as_mut().filter(|lines| !lines.is_empty()) {
            // Nowhere to report a failed log write: stderr is the report.
            let _ = io::stderr().lock().write_all(lines);
            lines.clear();
        }
    }
}

// A thread's pending lines are written as it exits (and its thread-locals
// are dropped), worker threads included.
impl Drop for Pending {
    fn drop(&mut self) {
        self.write_out();
    }
}

thread_local! {
    static PENDING: RefCell<Pending> = const { RefCell::new(Pending(None)) };
}

/// The runtime's park hook, which only worker threads run: writes the
/// thread's pending lines, and batches its lines from now on.
pub fn worker_parks() {
    let _ = PENDING.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            p.write_out();
            p.0.get_or_insert_with(|| Vec::with_capacity(FLUSH_AT));
        }
    });
}

/// The subscriber's writer: one `write_all` per formatted line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter
    }
}

pub struct LineWriter;

impl Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let kept = PENDING
            .try_with(|p| {
                let Ok(mut p) = p.try_borrow_mut() else {
                    return false;
                };
                let Some(lines) = p.0.as_mut() else {
                    return false;
                };
                lines.extend_from_slice(bytes);
                if lines.len() >= FLUSH_AT {
                    p.write_out();
                }
                true
            })
            .unwrap_or(false);
        if !kept {
            io::stderr().lock().write_all(bytes)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
