//! The live status line: on a terminal, one line on stderr that says which
//! step runs and for how long, redrawn in place (indicatif) while it runs
//! and cleared when no step runs.
//!
//! It goes to stderr because stdout is the record of the deploy (the
//! batou-style lines, or the JSON report) and is what gets redirected:
//! `tack local dev > deploy.log` on a terminal still shows what runs, and
//! the log holds plain lines only. It is drawn only when stderr is a
//! terminal that understands cursor movement (not `TERM=dumb`): on a pipe
//! or into a file there is no `\r` and no escape code, and the plain
//! lines (a step's start line, `still running` now and then, its end
//! line) are all there is.
//!
//! Lines printed on stdout while the status line is drawn go through
//! [`StatusLine::suspend`], which takes the status line away, lets the
//! line be printed and draws it again below, so that the two never mix
//! on a terminal where stdout and stderr are the same.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How often the spinner turns and the elapsed time is redrawn.
const REDRAW_EVERY: Duration = Duration::from_millis(100);

/// One status line for one host's deploy; a no-op where it is not drawn.
pub struct StatusLine {
    live: Option<Live>,
}

struct Live {
    /// The steps running now, oldest first: the line names the oldest.
    running: Arc<Mutex<Vec<Running>>>,
    /// Drawn while a step runs; `None` when none does.
    bar: Mutex<Option<ProgressBar>>,
    next_id: AtomicU64,
}

struct Running {
    id: u64,
    what: String,
    since: Instant,
}

/// A step shown on the status line until this is dropped.
pub struct Shown<'a> {
    line: &'a StatusLine,
    id: u64,
}

impl StatusLine {
    /// Drawn on stderr if stderr is a terminal that is not `TERM=dumb`.
    pub fn on_stderr() -> StatusLine {
        let dumb = std::env::var_os("TERM").is_some_and(|term| term == "dumb");
        if std::io::stderr().is_terminal() && !dumb {
            StatusLine {
                live: Some(Live {
                    running: Arc::new(Mutex::new(Vec::new())),
                    bar: Mutex::new(None),
                    next_id: AtomicU64::new(0),
                }),
            }
        } else {
            StatusLine::hidden()
        }
    }

    /// Never drawn.
    pub fn hidden() -> StatusLine {
        StatusLine { live: None }
    }

    /// Shows `what` as running from now until the returned guard is
    /// dropped.
    pub fn show(&self, what: &str) -> Shown<'_> {
        let Some(live) = &self.live else {
            return Shown { line: self, id: 0 };
        };
        let id = live.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&live.running).push(Running {
            id,
            what: what.to_string(),
            since: Instant::now(),
        });
        let mut bar = lock(&live.bar);
        if bar.is_none() {
            *bar = Some(live.draw());
        }
        Shown { line: self, id }
    }

    /// Runs `print` with the status line taken away, then draws it again.
    pub fn suspend<R>(&self, print: impl FnOnce() -> R) -> R {
        match self.live.as_ref().map(|live| lock(&live.bar)) {
            Some(bar) => match bar.as_ref() {
                Some(bar) => bar.suspend(print),
                None => print(),
            },
            None => print(),
        }
    }
}

impl Live {
    fn draw(&self) -> ProgressBar {
        let running = Arc::clone(&self.running);
        let describe = move |_: &ProgressState, out: &mut dyn std::fmt::Write| {
            let _ = out.write_str(&describe(&lock(&running), Instant::now()));
        };
        let style = ProgressStyle::with_template("{spinner} {running}")
            .expect("a valid template")
            .with_key("running", describe);
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(style);
        bar.enable_steady_tick(REDRAW_EVERY);
        bar
    }
}

impl Drop for Shown<'_> {
    fn drop(&mut self) {
        let Some(live) = &self.line.live else {
            return;
        };
        let mut running = lock(&live.running);
        running.retain(|step| step.id != self.id);
        if running.is_empty() {
            if let Some(bar) = lock(&live.bar).take() {
                bar.finish_and_clear();
            }
        }
    }
}

/// `Running Supervisor > Buildout (12s)`, and how many more run beside it.
fn describe(running: &[Running], now: Instant) -> String {
    let Some(oldest) = running.first() else {
        return String::new();
    };
    let seconds = now.saturating_duration_since(oldest.since).as_secs();
    let mut text = format!("Running {} ({seconds}s)", oldest.what);
    if running.len() > 1 {
        let _ = write!(text, " and {} more", running.len() - 1);
    }
    text
}

/// A panic while the status line was locked leaves nothing half-done that
/// drawing it could trip on.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_step_is_named_with_its_time_and_the_others_counted() {
        let start = Instant::now();
        let running = vec![
            Running {
                id: 0,
                what: "Supervisor > Buildout".into(),
                since: start,
            },
            Running {
                id: 1,
                what: "Tick > Command(x)".into(),
                since: start + Duration::from_secs(3),
            },
        ];
        let now = start + Duration::from_secs(12);
        assert_eq!(
            describe(&running, now),
            "Running Supervisor > Buildout (12s) and 1 more"
        );
        assert_eq!(
            describe(&running[1..], now),
            "Running Tick > Command(x) (9s)"
        );
        assert_eq!(describe(&[], now), "");
    }

    #[test]
    fn a_hidden_line_prints_through_and_shows_nothing() {
        let line = StatusLine::hidden();
        let shown = line.show("Tick > Command(x)");
        assert_eq!(line.suspend(|| 42), 42);
        drop(shown);
    }
}
