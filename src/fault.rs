//! Fault injection for tests: switches read from the environment in debug
//! builds only, so the release binary carries none of this.
//!
//! * `TACK_TEST_KILL_AFTER_NODES=N`: SIGKILL this process right after the
//!   N-th node finished and was journaled, to test that a deploy killed at
//!   any node boundary converges on the next run.
//! * `TACK_TEST_KILL_IN_WRITE=N`: SIGKILL in the middle of the N-th file
//!   write (the temp file written, not yet renamed into place).
//! * `TACK_TEST_DROP_INPUT=NAME`: leave inputs whose name starts with NAME
//!   out of every key: a deliberately broken key, to show that the
//!   differential test of incrementality catches a missed rerun (`after`
//!   drops a step's dependencies; files are rewritten whenever their
//!   output differs, whatever their key).
//! * `TACK_TEST_KILL_WHILE_WAITING=N`: SIGKILL when the N-th wait for
//!   supervised programs to be RUNNING begins (the start, restart or
//!   reload was asked for, the deploy has not seen it happen).
//! * `TACK_TEST_STOP_AFTER_LOOK=1`: SIGSTOP this process once an
//!   incremental run has looked at every file, before it configures, so a
//!   test can edit files in that window and SIGCONT it.

#[cfg(debug_assertions)]
mod enabled {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;

    fn number(name: &str) -> Option<usize> {
        std::env::var(name).ok()?.parse().ok()
    }

    fn kill_on(counter: &AtomicUsize, variable: &str) {
        let Some(limit) = number(variable) else {
            return;
        };
        if counter.fetch_add(1, Ordering::SeqCst) + 1 == limit {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        }
    }

    pub fn node_finished() {
        static FINISHED: AtomicUsize = AtomicUsize::new(0);
        kill_on(&FINISHED, "TACK_TEST_KILL_AFTER_NODES");
    }

    pub fn mid_write() {
        static WRITES: AtomicUsize = AtomicUsize::new(0);
        kill_on(&WRITES, "TACK_TEST_KILL_IN_WRITE");
    }

    pub fn waiting_for_programs() {
        static WAITS: AtomicUsize = AtomicUsize::new(0);
        kill_on(&WAITS, "TACK_TEST_KILL_WHILE_WAITING");
    }

    pub fn looked() {
        if number("TACK_TEST_STOP_AFTER_LOOK") == Some(1) {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
        }
    }

    pub fn dropped_input() -> Option<&'static str> {
        static DROPPED: OnceLock<Option<String>> = OnceLock::new();
        DROPPED
            .get_or_init(|| {
                std::env::var("TACK_TEST_DROP_INPUT")
                    .ok()
                    .filter(|name| !name.is_empty())
            })
            .as_deref()
    }
}

#[cfg(not(debug_assertions))]
mod enabled {
    pub fn node_finished() {}
    pub fn mid_write() {}
    pub fn looked() {}
    pub fn waiting_for_programs() {}
    pub fn dropped_input() -> Option<&'static str> {
        None
    }
}

pub use enabled::{dropped_input, looked, mid_write, node_finished, waiting_for_programs};
