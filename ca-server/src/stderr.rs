//! The server's diagnostics (`tracing` lines) reach stderr without a write
//! per line and without ever making a serving thread wait for stderr.
//!
//! A thread that logs formats its line as before and copies it into one
//! buffer; a thread of its own ("stderr") writes what has gathered there
//! in one write, [`EVERY`] after the first line of a batch, at once for a
//! warning or an error, and at once when [`HIGH`] bytes wait. With one
//! line per certificate issued, a write (and a wake-up of stderr's reader)
//! per line cost the request threads about a sixth of their time at 4,000
//! certificates a second.
//!
//! stderr's reader (journald, a pipe, a terminal) may stop reading. Then
//! the buffer holds at most [`CAP`] bytes; lines beyond it are dropped,
//! counted in `trellis_stderr_lines_dropped_total`, and their number is
//! written once stderr takes writes again. Nothing that serves waits: a
//! line is copied under a lock that the writing thread never holds while
//! it writes.
//!
//! [`Diagnostics`] is the handle `main` keeps: dropping it writes out what
//! is buffered and stops the thread, so the lines of a command that ends
//! are all written before it exits. A process killed outright loses at
//! most the last [`EVERY`] of info lines.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// How long info lines gather before they are written.
pub const EVERY: Duration = Duration::from_millis(20);
/// Bytes waiting that are written at once.
pub const HIGH: usize = 64 * 1024;
/// Bytes the buffer holds at most; a line that does not fit is dropped.
pub const CAP: usize = 1024 * 1024;

struct State {
    buf: Vec<u8>,
    /// A warning or an error is waiting.
    urgent: bool,
    /// Lines dropped since the last write.
    dropped: u64,
    closing: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copy one line in (or count it as dropped), waking the writing thread
    /// only when it has something new to do: the first line after a write
    /// (it is idle), a warning or error, or the buffer reaching [`HIGH`].
    fn push(&self, line: &[u8], urgent: bool) {
        let mut state = self.lock();
        if state.buf.len() + line.len() > CAP {
            state.dropped += 1;
            return;
        }
        let was_empty = state.buf.is_empty();
        let below_high = state.buf.len() < HIGH;
        state.buf.extend_from_slice(line);
        let wake =
            was_empty || (urgent && !state.urgent) || (below_high && state.buf.len() >= HIGH);
        state.urgent |= urgent;
        drop(state);
        if wake {
            self.wake.notify_one();
        }
    }
}

/// The running writer; dropping it writes out what is buffered.
pub struct Diagnostics {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Diagnostics {
    /// Start writing to `out`, info lines at most `every` after they came.
    pub fn start<W: Write + Send + 'static>(
        out: W,
        every: Duration,
    ) -> std::io::Result<Diagnostics> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: Vec::with_capacity(HIGH),
                urgent: false,
                dropped: 0,
                closing: false,
            }),
            wake: Condvar::new(),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("stderr".into())
                .spawn(move || write_out(&shared, out, every))?
        };
        Ok(Diagnostics {
            shared,
            thread: Some(thread),
        })
    }

    /// What `tracing_subscriber::fmt().with_writer` takes.
    pub fn lines(&self) -> Lines {
        Lines {
            shared: self.shared.clone(),
        }
    }

    #[cfg(test)]
    fn buffered(&self) -> (usize, u64) {
        let state = self.shared.lock();
        (state.buf.len(), state.dropped)
    }
}

impl Drop for Diagnostics {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writing thread: wait for a first line, let more gather, write them
/// all, until closed and empty.
fn write_out<W: Write>(shared: &Shared, mut out: W, every: Duration) {
    let mut spare = Vec::with_capacity(HIGH);
    loop {
        let mut state = shared.lock();
        while state.buf.is_empty() && state.dropped == 0 && !state.closing {
            state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        let deadline = Instant::now() + every;
        while !(state.urgent || state.closing || state.buf.len() >= HIGH) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = shared
                .wake
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        std::mem::swap(&mut state.buf, &mut spare);
        state.urgent = false;
        let dropped = std::mem::take(&mut state.dropped);
        let closing = state.closing && state.buf.is_empty();
        drop(state);
        // A reader that went away gets nothing more; the lines are dropped
        // as if it were full, so nothing waits on it.
        let _ = out.write_all(&spare);
        if dropped > 0 {
            crate::metrics::metrics()
                .stderr_lines_dropped
                .inc_by(dropped);
            let _ = writeln!(
                out,
                "{dropped} diagnostic line(s) dropped: stderr was not read for a while \
                 (at most {CAP} bytes of lines wait for it)"
            );
        }
        let _ = out.flush();
        spare.clear();
        spare.shrink_to(HIGH);
        if closing {
            return;
        }
    }
}

/// Hands `tracing` a [`Line`] per event.
#[derive(Clone)]
pub struct Lines {
    shared: Arc<Shared>,
}

/// One event's line: `tracing_subscriber` writes a formatted event with one
/// `write_all`, and each `write` is kept whole or dropped whole.
pub struct Line<'a> {
    shared: &'a Shared,
    urgent: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.shared.push(bytes, self.urgent);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            shared: &self.shared,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line<'a> {
        Line {
            shared: &self.shared,
            // `Level` orders by verbosity: WARN and ERROR are the least.
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the writing thread wrote.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn line(lines: &Lines, urgent: bool, text: &str) {
        let mut w = Line {
            shared: &lines.shared,
            urgent,
        };
        w.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_handle_is_dropped() {
        let sink = Sink::default();
        // Info lines would wait an hour: only the drop writes them.
        let diagnostics = Diagnostics::start(sink.clone(), Duration::from_secs(3600)).unwrap();
        let lines = diagnostics.lines();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        for i in 0..1000 {
            line(&lines, false, &format!("line {i}\n"));
        }
        drop(diagnostics);
        assert_eq!(sink.text(), expected);
    }

    #[test]
    fn a_warning_is_written_at_once_with_what_waited_before_it() {
        let sink = Sink::default();
        let diagnostics = Diagnostics::start(sink.clone(), Duration::from_secs(3600)).unwrap();
        let lines = diagnostics.lines();
        line(&lines, false, "info\n");
        line(&lines, true, "warning\n");
        // Bounded wait for the writing thread; with info lines held for an
        // hour, only the warning's urgency can write them now.
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.text() != "info\nwarning\n" {
            assert!(Instant::now() < deadline, "got {:?}", sink.text());
            std::thread::yield_now();
        }
        drop(diagnostics);
    }

    /// stderr's reader stops reading: the writing thread is stuck in a
    /// write until released.
    struct Stuck {
        release: std::sync::mpsc::Receiver<()>,
        sink: Sink,
        first: bool,
    }

    impl Write for Stuck {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.first {
                self.first = false;
                let _ = self.release.recv();
            }
            self.sink.write(bytes)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_reader_that_stops_reading_costs_at_most_the_cap_and_never_a_wait() {
        let (release, released) = std::sync::mpsc::channel();
        let sink = Sink::default();
        let diagnostics = Diagnostics::start(
            Stuck {
                release: released,
                sink: sink.clone(),
                first: true,
            },
            Duration::from_millis(1),
        )
        .unwrap();
        let lines = diagnostics.lines();
        // The first line is taken by the writing thread, which then hangs
        // in its write.
        line(&lines, true, "first\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        while diagnostics.buffered().0 != 0 {
            assert!(Instant::now() < deadline, "the first line was not taken");
            std::thread::yield_now();
        }
        // Four times the cap, from this thread, while nothing is read: each
        // line is copied or dropped, never waited on.
        let text = format!("{}\n", "x".repeat(99));
        let total = 4 * CAP / text.len();
        for _ in 0..total {
            line(&lines, false, &text);
            assert!(diagnostics.buffered().0 <= CAP);
        }
        let (held, dropped) = diagnostics.buffered();
        assert_eq!(held, CAP / text.len() * text.len());
        assert_eq!(dropped as usize, total - CAP / text.len());
        release.send(()).unwrap();
        drop(diagnostics);
        let out = sink.text();
        assert!(out.starts_with("first\n"));
        assert_eq!(out.matches(&text).count(), CAP / text.len());
        assert!(
            out.ends_with(&format!(
                "{dropped} diagnostic line(s) dropped: stderr was not read for a while \
                 (at most {CAP} bytes of lines wait for it)\n"
            )),
            "{}",
            &out[out.len() - 200..]
        );
    }
}
