//! Processes known by pid files: is it running, and is it the same one?
//!
//! A pid alone is not an identity: pids are reused. A process is recorded
//! as its pid plus its start time (field 22 of `/proc/PID/stat`, clock
//! ticks since boot), and a recorded process counts as running only if
//! both still match. Signals go through `nix`; nothing shells out to
//! `kill`.
//!
//! A daemon killed uncleanly (SIGKILL) leaves its children running. They
//! are found by the session or process group the dead daemon led: the
//! kernel does not give a pid to a new process while a session or group
//! with that id has members, so whatever is still in it is the dead
//! daemon's.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Process {
    pub pid: i32,
    pub start_time: u64,
}

impl Process {
    /// The live process with this pid, unless it is a zombie.
    pub fn find(pid: i32) -> Option<Process> {
        if pid <= 0 {
            return None;
        }
        match kill(Pid::from_raw(pid), None) {
            Ok(()) | Err(Errno::EPERM) => {}
            Err(_) => return None,
        }
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may contain spaces and parentheses; the fields
        // after the last `)` are fixed: state is the first, start time the
        // twentieth.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            return None;
        }
        let start_time = fields.get(19)?.parse().ok()?;
        Some(Process { pid, start_time })
    }

    /// The live process a pid file names.
    pub fn from_pidfile(pidfile: &Path) -> Option<Process> {
        let text = fs::read_to_string(pidfile).ok()?;
        Process::find(text.trim().parse().ok()?)
    }

    /// Whether this process looks like one of the deployment whose work
    /// dir is `dir`: its working directory is inside it, or its command
    /// line names it. A pid file copied with a deployment (`cp -a`) names
    /// the original's daemon, which must never be signalled or adopted by
    /// the copy; a process tack cannot look at does not count as its own.
    pub fn belongs_to(&self, dir: &Path) -> bool {
        let cwd = fs::read_link(format!("/proc/{}/cwd", self.pid));
        if cwd.is_ok_and(|cwd| cwd.starts_with(dir)) {
            return true;
        }
        let Ok(cmdline) = fs::read(format!("/proc/{}/cmdline", self.pid)) else {
            return false;
        };
        let dir = dir.as_os_str().as_encoded_bytes();
        !dir.is_empty() && cmdline.windows(dir.len()).any(|window| window == dir)
    }

    /// Whether this exact process (pid and start time) still runs.
    pub fn is_alive(&self) -> bool {
        Process::find(self.pid) == Some(*self)
    }

    /// Sends `signal`, named without `SIG` (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) -> Result<(), String> {
        let signal: Signal = format!("SIG{name}")
            .parse()
            .map_err(|_| format!("unknown signal `{name}`"))?;
        kill(Pid::from_raw(self.pid), signal)
            .map_err(|errno| format!("cannot send SIG{name} to pid {}: {errno}", self.pid))
    }
}

/// How long orphans get to stop after SIGTERM before SIGKILL.
const ORPHAN_GRACE: Duration = Duration::from_secs(10);

/// The processes still in the session or process group that `leader`
/// led, if no process has that pid any more.
pub fn orphans_of(leader: i32) -> Vec<Process> {
    // A zombie leader is as dead as a reaped one, and still holds its pid.
    if leader <= 1 || Process::find(leader).is_some() {
        return Vec::new();
    }
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut orphans: Vec<Process> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the command name: state, ppid, process group, session.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            let led = |index: usize| fields.get(index).and_then(|f| f.parse::<i32>().ok());
            led(2) == Some(leader) || led(3) == Some(leader)
        })
        .filter_map(Process::find)
        .collect();
    orphans.sort_by_key(|process| process.pid);
    orphans
}

/// Stops `processes` with SIGTERM, and with SIGKILL those still running
/// after a grace period; says which did not go away.
pub fn stop_all(processes: &[Process]) -> Result<(), String> {
    for process in processes {
        let _ = kill(Pid::from_raw(process.pid), Signal::SIGTERM);
    }
    let began = Instant::now();
    while processes.iter().any(Process::is_alive) && began.elapsed() < ORPHAN_GRACE {
        std::thread::sleep(Duration::from_millis(20));
    }
    for process in processes.iter().filter(|p| p.is_alive()) {
        let _ = kill(Pid::from_raw(process.pid), Signal::SIGKILL);
    }
    let began = Instant::now();
    while processes.iter().any(Process::is_alive) && began.elapsed() < ORPHAN_GRACE {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<String> = processes
        .iter()
        .filter(|p| p.is_alive())
        .map(|p| p.pid.to_string())
        .collect();
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("pids {} survived SIGKILL", left.join(", ")))
    }
}

/// `1234 (tick.sh)`: a pid and its command name, for messages.
pub fn describe(process: &Process) -> String {
    match fs::read_to_string(format!("/proc/{}/comm", process.pid)) {
        Ok(name) => format!("{} ({})", process.pid, name.trim()),
        Err(_) => process.pid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_found_and_a_changed_start_time_is_not_the_same() {
        let me = Process::find(std::process::id() as i32).expect("this process runs");
        assert!(me.is_alive());
        let impostor = Process {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!impostor.is_alive(), "a reused pid must not be trusted");
    }

    #[test]
    fn a_process_belongs_to_the_directory_it_runs_in_or_names() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .current_dir(dir.path())
            .spawn()
            .unwrap();
        let process = Process::find(child.id() as i32).unwrap();
        assert!(process.belongs_to(dir.path()));
        assert!(!process.belongs_to(other.path()));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_pidfile_naming_a_dead_process_is_not_running() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("x.pid");
        fs::write(&pidfile, format!("{pid}\n")).unwrap();
        assert_eq!(Process::from_pidfile(&pidfile), None);
    }
}
