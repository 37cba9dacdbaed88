//! Running shell steps: commands, buildout and its bootstrap, service
//! start and reload commands.
//!
//! Output goes to a temp file rather than a pipe (a chatty step cannot
//! block on a full pipe, and a daemon that keeps the descriptor open does
//! not hang us); on failure its tail is returned with the exit status.
//! Each step runs in its own process group so a timeout kills everything
//! it started. For the same reason a Ctrl-C on the terminal does not reach
//! it: when tack is interrupted (`interrupt`), a step being waited for
//! passes the signal on to its group, and kills the group if it has not
//! stopped after a grace period or at a second signal.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// How much of a failed step's output is shown.
const TAIL_LINES: usize = 30;
/// How often a long step reports that it is still running.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// A running shell step with its captured output.
pub struct Step {
    child: Child,
    output: std::fs::File,
    started: Instant,
    description: String,
}

impl Step {
    /// Starts `sh -c script` in `cwd` with `env` added.
    pub fn spawn(script: &str, cwd: &Path, env: &[(String, String)]) -> Result<Step, String> {
        std::fs::create_dir_all(cwd)
            .map_err(|e| format!("cannot create `{}`: {e}", cwd.display()))?;
        let output = tempfile::tempfile().map_err(|e| format!("cannot create a temp file: {e}"))?;
        let stderr = output.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(cwd)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(output.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(stderr))
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run `sh -c {script}`: {e}"))?;
        Ok(Step {
            child,
            output,
            started: Instant::now(),
            description: script.to_string(),
        })
    }

    /// The exit status if the step has finished.
    pub fn poll(&mut self) -> Result<Option<ExitStatus>, String> {
        self.child.try_wait().map_err(|e| e.to_string())
    }

    /// Waits up to `timeout`, calling `progress` with the elapsed time now
    /// and then. A non-zero exit or a timeout is an error carrying the
    /// output's tail; so is an interrupt of tack, whatever the step's exit
    /// status then: a step told to stop may have stopped halfway.
    pub fn wait(mut self, timeout: Duration, progress: &dyn Fn(Duration)) -> Result<(), String> {
        let mut reported = Duration::ZERO;
        let mut forwarded: Option<(Signal, Instant)> = None;
        loop {
            if let Some((signal, at)) = forwarded {
                if let Some(stopped) = self.interrupted(signal, at) {
                    return Err(stopped);
                }
            } else if let Some(status) = self.poll()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(self.failure(&format!("failed ({status})")))
                };
            } else if let Some(signal) = crate::interrupt::signal() {
                let _ = killpg(self.group(), signal);
                forwarded = Some((signal, Instant::now()));
                continue;
            }
            let elapsed = self.started.elapsed();
            if elapsed > timeout {
                self.kill();
                return Err(self.failure(&format!("timed out after {}s", timeout.as_secs())));
            }
            if elapsed - reported >= PROGRESS_EVERY {
                reported = elapsed;
                progress(elapsed);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// After `signal` was passed on to the step at `at`: the error to end
    /// with once its shell has exited (what is left of its group ignored
    /// the signal and is killed), or once the grace period is over or a
    /// second signal came (the whole group is killed); `None` while it
    /// may still stop by itself.
    fn interrupted(&mut self, signal: Signal, at: Instant) -> Option<String> {
        let name = signal.as_str();
        if self.shell_exited() {
            self.kill();
            return Some(self.failure(&format!("stopped by {name}")));
        }
        if at.elapsed() > crate::interrupt::GRACE || crate::interrupt::hurried() {
            self.kill();
            return Some(self.failure(&format!("did not stop on {name}; killed")));
        }
        None
    }

    /// Whether the shell has exited, leaving it unreaped: while it is a
    /// zombie, its pid and so its group id cannot be taken by another
    /// process, and the group can still be signalled safely.
    fn shell_exited(&self) -> bool {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(self.group()), flags) {
            Ok(WaitStatus::StillAlive) => false,
            Ok(_) => true,
            // Reaped already, or not our child: nothing left to wait for.
            Err(_) => true,
        }
    }

    /// Kills the step and everything in its process group.
    pub fn kill(&mut self) {
        let _ = killpg(self.group(), Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// The step's process group: the shell leads it. The shell is reaped
    /// only by `poll` or `kill`, so until then its pid, and with it the
    /// group id, cannot be reused by another process.
    fn group(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// `what`, the command, and the last lines of its output.
    pub fn failure(&mut self, what: &str) -> String {
        let mut text = String::new();
        let _ = self.output.seek(SeekFrom::Start(0));
        let _ = self.output.read_to_string(&mut text);
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
        let mut message = format!("`{}` {what}", self.description);
        if !tail.is_empty() {
            message.push_str("; last output:\n");
            for line in tail {
                message.push_str(&format!("      | {line}\n"));
            }
        }
        message.trim_end().to_string()
    }
}

/// Runs `script` to completion.
pub fn run(
    script: &str,
    cwd: &Path,
    env: &[(String, String)],
    timeout: Duration,
    progress: &dyn Fn(Duration),
) -> Result<(), String> {
    Step::spawn(script, cwd, env)?.wait(timeout, progress)
}

/// Quotes `text` for `sh`.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_shows_the_status_and_the_tail_of_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let error = run(
            "echo one; echo two >&2; exit 3",
            dir.path(),
            &[],
            Duration::from_secs(10),
            &|_| {},
        )
        .unwrap_err();
        assert!(error.contains("exit status: 3"), "{error}");
        assert!(
            error.contains("| one") && error.contains("| two"),
            "{error}"
        );
    }

    #[test]
    fn a_timeout_kills_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let error = run(
            "sleep 30",
            dir.path(),
            &[],
            Duration::from_millis(200),
            &|_| {},
        )
        .unwrap_err();
        assert!(error.contains("timed out"), "{error}");
    }

    #[test]
    fn env_and_cwd_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let env = [("GREETING".to_string(), "hi".to_string())];
        run(
            "echo $GREETING > out",
            dir.path(),
            &env,
            Duration::from_secs(10),
            &|_| {},
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out")).unwrap(),
            "hi\n"
        );
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
