//! One tack at a time per deployment directory.
//!
//! The lock is an `flock` on `.tack/lock`, so the kernel releases it when
//! its holder dies, however it dies: a lock file left by a killed tack is
//! simply taken over. The holder writes its pid and start time into the
//! file so that a waiting tack can say who it waits for. Dry runs read
//! only and take no lock.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// Held until dropped.
pub struct DeployLock {
    _flock: Flock<File>,
}

impl DeployLock {
    /// Takes the lock of the deployment at `root`, waiting up to `timeout`
    /// (forever if `None`) and telling `waiting` once who holds it.
    pub fn acquire(
        root: &Path,
        timeout: Option<Duration>,
        waiting: &dyn Fn(&str),
    ) -> Result<DeployLock> {
        DeployLock::acquire_for(root, timeout, waiting, None)
    }

    /// [`DeployLock::acquire`] for one run of many hosts over ssh, named
    /// `run`: a lock held by that same run (two host names for one
    /// machine, sharing a `remote_dir`) would be waited for forever, and is
    /// an error instead.
    pub fn acquire_for(
        root: &Path,
        timeout: Option<Duration>,
        waiting: &dyn Fn(&str),
        run: Option<&str>,
    ) -> Result<DeployLock> {
        let dir = root.join(".tack");
        crate::atomic::private_dir(&dir)?;
        let path = dir.join("lock");
        let started = Instant::now();
        let mut told = false;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            // A link planted as the lock file is not opened through.
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&path)
            .map_err(|error| Error::io("open", &path, error))?;
        if !file.metadata().is_ok_and(|meta| meta.is_file()) {
            return Err(Error::io(
                "open",
                &path,
                std::io::Error::other("it is not a regular file"),
            ));
        }
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(mut flock) => {
                    let since = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let holder = match run {
                        Some(run) => {
                            format!("pid {} since {since} run {run}\n", std::process::id())
                        }
                        None => format!("pid {} since {since}\n", std::process::id()),
                    };
                    let written = flock
                        .set_len(0)
                        .and_then(|()| flock.seek(SeekFrom::Start(0)))
                        .and_then(|_| flock.write_all(holder.as_bytes()));
                    written.map_err(|error| Error::io("write", &path, error))?;
                    return Ok(DeployLock { _flock: flock });
                }
                Err((unlocked, _)) => {
                    file = unlocked;
                    let holder = holder_of(&path);
                    if run.is_some_and(|run| holder.split_whitespace().any(|word| word == run)) {
                        return Err(Error::Usage(format!(
                            "`{}` is locked by this same deploy for another host: \
                             two hosts of the environment share this remote_dir",
                            root.display()
                        )));
                    }
                    if !told {
                        waiting(&describe(holder_of(&path).trim()));
                        told = true;
                    }
                    if timeout.is_some_and(|timeout| started.elapsed() >= timeout) {
                        return Err(Error::Usage(format!(
                            "another tack is deploying here ({}); gave up after {}s (--lock-timeout)",
                            describe(holder_of(&path).trim()),
                            timeout.unwrap_or_default().as_secs()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

fn holder_of(path: &Path) -> String {
    let bytes = crate::confined::read_regular_path(path, Some(4096), false);
    String::from_utf8_lossy(&bytes.ok().flatten().unwrap_or_default()).into_owned()
}

/// `pid 42 since 1700000000` -> `pid 42, since 12s ago`.
fn describe(holder: &str) -> String {
    let mut parts = holder.split_whitespace();
    let (Some("pid"), Some(pid), Some("since"), Some(since)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return "holder unknown".to_string();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ago = now.saturating_sub(since.parse().unwrap_or(now));
    format!("pid {pid}, since {ago}s ago")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_waits_and_times_out_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DeployLock::acquire(dir.path(), None, &|_| {}).unwrap();
        let told = std::sync::Mutex::new(String::new());
        let error = DeployLock::acquire(dir.path(), Some(Duration::from_millis(100)), &|who| {
            *told.lock().unwrap() = who.to_string();
        })
        .err()
        .unwrap();
        let me = format!("pid {}", std::process::id());
        assert!(told.lock().unwrap().starts_with(&me), "{told:?}");
        assert!(error.to_string().contains("--lock-timeout"), "{error}");
    }

    #[test]
    fn a_lock_file_left_by_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".tack")).unwrap();
        std::fs::write(dir.path().join(".tack/lock"), "pid 999999 since 1\n").unwrap();
        DeployLock::acquire(dir.path(), Some(Duration::ZERO), &|_| {}).unwrap();
    }
}
