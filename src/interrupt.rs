//! SIGINT, SIGTERM and SIGHUP: a deploy told to stop stops between
//! nodes, takes the steps it runs down with it and records them as
//! unfinished; it never dies with a step still running behind it.
//!
//! Steps run in process groups of their own (`runner`), so a Ctrl-C on
//! the terminal reaches tack and not the step. When tack simply died, its
//! step ran on, orphaned, and the next deploy started a second copy beside
//! it. So [`install`] has `signal-hook` catch the three signals and one
//! thread of ours read them from its self-pipe. Catching, not blocking:
//! a signal mask is inherited by every child (the standard library does
//! not clear it), so blocked signals would have left every step and every
//! daemon tack starts deaf to SIGTERM; a caught signal is reset to its
//! default in the child when it execs. (`signal-hook` holds the one
//! unsafe call, `sigaction`, that tack's own code may not make.)
//!
//! While nodes execute (an [`Executing`] guard is alive), a signal is
//! recorded and nothing more happens here: the executor starts no new
//! node, each running step forwards the signal to its process group and
//! kills the group after [`GRACE`] or at a second signal (`runner`), and
//! the deploy saves its state, which names those nodes unfinished, prints
//! its report (as every host deploying at the same time does) and ends in
//! [`Error::Interrupted`](crate::error::Error::Interrupted). At any
//! other time (configuring, waiting for the deploy lock, reading) nothing
//! runs that a kill would leave half done, and tack exits at once. Either
//! way the exit code is 128 plus the signal's number, as shells have it:
//! 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP.
//!
//! Daemons started by `[service]` are not steps: their start command has
//! returned by the time the service node finishes, nothing here signals
//! them, and they keep running.

use std::io::Write;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use nix::sys::signal::Signal;

/// How long a step may take to stop after the signal was forwarded to it
/// before its process group is killed.
pub const GRACE: Duration = Duration::from_secs(10);

/// The signals that stop tack.
const STOPPING: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The first signal received, as its number; 0 for none.
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// How many signals were received.
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// How many [`Executing`] guards are alive. The signal thread decides
/// under this lock, so a guard is either seen or not yet made.
static EXECUTING: Mutex<usize> = Mutex::new(0);

/// Catches the stopping signals and starts the thread that handles them;
/// returns once they are caught. Calling it again does nothing.
pub fn install() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let (caught, is_caught) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let numbers = STOPPING.map(|signal| signal as i32);
                let mut signals = match signal_hook::iterator::Signals::new(numbers) {
                    Ok(signals) => signals,
                    Err(error) => {
                        say(format_args!("warning: cannot catch SIGINT and SIGTERM ({error}); an interrupt kills tack and leaves running steps behind"));
                        let _ = caught.send(());
                        return;
                    }
                };
                let _ = caught.send(());
                for number in signals.forever() {
                    if let Ok(signal) = Signal::try_from(number) {
                        received(signal);
                    }
                }
            });
        match spawned {
            Ok(_) => {
                let _ = is_caught.recv();
            }
            // Nothing is caught then: a signal ends tack, as by default.
            Err(error) => eprintln!("warning: cannot start the thread that handles signals ({error}); an interrupt kills tack and leaves running steps behind"),
        }
    });
}

fn received(signal: Signal) {
    let executing = EXECUTING.lock().unwrap_or_else(|e| e.into_inner());
    let first = RECEIVED
        .compare_exchange(0, signal as i32, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    let count = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    let name = signal.as_str();
    if *executing == 0 {
        say(format_args!("interrupted by {name}"));
        std::process::exit(exit_code(signal));
    }
    if first {
        say(format_args!(
            "{name}: no new node starts; stopping the running steps (up to {}s; a second signal kills them at once)",
            GRACE.as_secs()
        ));
    } else if count == 2 {
        say(format_args!("{name} again: killing the running steps"));
    }
}

/// Writes a line to stderr, ignoring failure: after SIGHUP the terminal
/// may be gone, and `eprintln!` would panic this thread, leaving every
/// later signal blocked and unanswered.
fn say(line: std::fmt::Arguments) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The signal that interrupted this run, if one did.
pub fn signal() -> Option<Signal> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        number => Signal::try_from(number).ok(),
    }
}

/// Whether a second signal asked not to wait for steps to stop.
pub fn hurried() -> bool {
    COUNT.load(Ordering::SeqCst) >= 2
}

/// What a shell reports for a program ended by `signal`.
pub fn exit_code(signal: Signal) -> i32 {
    128 + signal as i32
}

/// While alive, a signal stops the deploy between nodes instead of ending
/// tack at once.
pub struct Executing {
    _private: (),
}

impl Executing {
    pub fn begin() -> Executing {
        *EXECUTING.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Executing { _private: () }
    }
}

impl Drop for Executing {
    fn drop(&mut self) {
        *EXECUTING.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_the_shells() {
        assert_eq!(exit_code(Signal::SIGINT), 130);
        assert_eq!(exit_code(Signal::SIGTERM), 143);
        assert_eq!(exit_code(Signal::SIGHUP), 129);
    }
}
