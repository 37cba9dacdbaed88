//! Looking at what is deployed: stat first, hash only when the stat moved.
//!
//! This is the only place planning reads the host: files by stat and hash,
//! steps by the outputs they produced and the facts they depend on,
//! services by their pid file and the process table, supervised programs
//! by asking their supervisord (once per run and supervisord). A file whose stat
//! (size, mtime, ctime, inode, mode) equals the one recorded after tack
//! last wrote it is trusted without being read, as git trusts its index;
//! ctime is included because no user tool can set it back.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use crate::db::FileStat;
use crate::fingerprint::Fingerprint;
use crate::graph::{Action, CommandSpec, ServiceSpec};
use crate::process::Process;
use crate::state::{NodeRecord, Observed};
use crate::supervisor_rpc::{ProgramInfo, RpcError, Supervisord};

/// How the target compares with what the node wants there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// As desired. For files, the stat and hash to record.
    Matches(Option<Observed>),
    Missing,
    /// Present but different; each string says how.
    Differs(Vec<String>),
    /// A service whose pid file names this live process, or a program
    /// its supervisord says is RUNNING as this process.
    Running(Process),
    /// A program supervisord knows and does not run; says how it is.
    NotRunning(String),
    /// A supervisord whose pid file names this live process, but which
    /// does not answer at its address; says why.
    Unanswering(Process, String),
    /// A program whose supervisord does not answer: the service node
    /// starts it and waits for its programs.
    Unobservable,
}

/// supervisord's answers to `getAllProcessInfo` (or why there is none),
/// asked once per address and run.
#[derive(Default)]
pub struct Supervisors(Mutex<BTreeMap<String, Result<Vec<ProgramInfo>, RpcError>>>);

impl Supervisors {
    pub fn programs(&self, url: &str) -> Result<Vec<ProgramInfo>, RpcError> {
        let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        known
            .entry(url.to_string())
            .or_insert_with(|| Supervisord::new(url).all_process_info())
            .clone()
    }

    /// How supervisord at `url` sees program `name`.
    pub fn program(&self, url: &str, name: &str) -> Observation {
        match self.programs(url) {
            Err(RpcError::Unreachable(_)) => Observation::Unobservable,
            Err(error) => Observation::Differs(vec![error.to_string()]),
            Ok(programs) => match programs.iter().find(|info| info.name == name) {
                None => Observation::NotRunning("not known to supervisord".into()),
                Some(info) => match (info.state.as_str(), info.process()) {
                    ("RUNNING", Some(process)) => Observation::Running(process),
                    _ => Observation::NotRunning(info.describe()),
                },
            },
        }
    }
}

/// Observes `action`'s target. `record` is what the last apply left, if
/// the node's output has not changed since: only then is its stat trusted.
/// `trusted` is the directory below which a target is read without
/// following links ([`crate::confined::trusted_base`]).
pub fn observe(
    action: &Action,
    record: Option<&NodeRecord>,
    supervisors: &Supervisors,
    trusted: Option<&Path>,
) -> Observation {
    let record_stat = record.and_then(|record| record.observed.as_ref());
    match action {
        Action::Command(spec) => observe_step(spec, record),
        Action::Buildout { run, bootstrap } => match (observe_step(run, record), bootstrap) {
            (Observation::Matches(_), Some(bootstrap)) => {
                observe_python(&bootstrap.python, &bootstrap.venv, record)
            }
            (observation, _) => observation,
        },
        Action::Service(spec) => observe_service(spec, supervisors),
        Action::Venv(bootstrap) => {
            let version =
                venv_python_version(&bootstrap.venv).or_else(|| python_version(&bootstrap.python));
            // A regular file only: a FIFO there must not hang the plan.
            let marker =
                crate::confined::read_regular_path(&bootstrap.marker_path(), Some(1 << 20), false)
                    .ok()
                    .flatten()
                    .and_then(|bytes| String::from_utf8(bytes).ok());
            match (version, marker) {
                (None, _) => {
                    Observation::Differs(vec![format!("`{}` cannot be run", bootstrap.python)])
                }
                (_, None) => Observation::Missing,
                (Some(version), Some(marker)) if marker == bootstrap.marker(&version) => {
                    Observation::Matches(None)
                }
                (Some(version), Some(_)) => Observation::Differs(vec![format!(
                    "built for other packages or another python than {} {version}",
                    bootstrap.python
                )]),
            }
        }
        Action::Program {
            supervisor, name, ..
        } => supervisors.program(supervisor, name),
        Action::File {
            target,
            content,
            mode,
        } => observe_file(target, content.digest(), *mode, record_stat, trusted),
        Action::Directory { target, mode } => match fs::symlink_metadata(target) {
            Err(_) => Observation::Missing,
            Ok(meta) if !meta.is_dir() => Observation::Differs(vec!["is not a directory".into()]),
            Ok(meta) if meta.mode() & 0o7777 != *mode => Observation::Differs(vec![format!(
                "mode is {:04o}, expected {mode:04o}",
                meta.mode() & 0o7777
            )]),
            Ok(_) => Observation::Matches(None),
        },
        Action::Symlink { target, points_to } => match fs::read_link(target) {
            Ok(found) if found == Path::new(points_to) => Observation::Matches(None),
            Ok(found) => Observation::Differs(vec![format!(
                "points to `{}`, expected `{points_to}`",
                found.display()
            )]),
            Err(error) if error.kind() == ErrorKind::NotFound => Observation::Missing,
            Err(_) => Observation::Differs(vec!["is not a symlink".into()]),
        },
    }
}

fn observe_file(
    target: &Path,
    wanted: Fingerprint,
    mode: u32,
    recorded: Option<&Observed>,
    trusted: Option<&Path>,
) -> Observation {
    let meta = match fs::symlink_metadata(target) {
        Ok(meta) => meta,
        Err(_) => return Observation::Missing,
    };
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Observation::Differs(vec![format!("is {what}")]);
    }
    if let Some(recorded) = recorded {
        if recorded.hash == wanted && stat_matches(recorded, &meta) {
            return Observation::Matches(Some(*recorded));
        }
    }
    // Read through the directory opened without following links: the stat
    // above may have gone through a directory swapped for a symlink.
    let read = crate::confined::parent_of(target, trusted, false)
        .and_then(|(dir, name)| dir.read_regular(&name, None));
    let bytes = match read {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Observation::Missing,
        Err(error) => return Observation::Differs(vec![format!("cannot be read: {error}")]),
    };
    let observed = observed_from(&meta, Fingerprint::of_bytes(&bytes));
    let mut differences = Vec::new();
    if observed.hash != wanted {
        differences.push(format!(
            "content changed (expected blake3 {wanted}, found {})",
            observed.hash
        ));
    }
    if observed.mode != mode {
        differences.push(format!(
            "mode is {:04o}, expected {mode:04o}",
            observed.mode
        ));
    }
    if differences.is_empty() {
        Observation::Matches(Some(observed))
    } else {
        Observation::Differs(differences)
    }
}

/// A step is done when every declared output, everything it creates, and
/// everything it was seen to produce, still exists.
fn observe_step(spec: &CommandSpec, record: Option<&NodeRecord>) -> Observation {
    let produced = record
        .map(|record| record.produced.as_slice())
        .unwrap_or_default();
    let missing: Vec<String> = spec
        .outputs
        .iter()
        .chain(&spec.creates)
        .chain(produced)
        .filter(|path| fs::symlink_metadata(path).is_err())
        .map(|path| format!("`{}` is missing", path.display()))
        .collect();
    if missing.is_empty() {
        Observation::Matches(None)
    } else {
        Observation::Differs(missing)
    }
}

/// Buildout's venv is built with the host's python: a new python version
/// means a new build.
fn observe_python(python: &str, venv: &Path, record: Option<&NodeRecord>) -> Observation {
    let recorded = record.and_then(|record| record.facts.get("python"));
    let now = venv_python_version(venv).or_else(|| python_version(python));
    match (now, recorded) {
        (Some(now), Some(before)) if &now != before => Observation::Differs(vec![format!(
            "`{python}` is now version {now} (was {before})"
        )]),
        (None, _) => Observation::Differs(vec![format!("`{python}` cannot be run")]),
        _ => Observation::Matches(None),
    }
}

/// This machine's name, as `local` matches it against `[hosts]`.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_default()
}

/// The python version `venv` was made with, from its `pyvenv.cfg`, without
/// starting a process (a pyenv shim alone takes 50 ms): valid while the
/// interpreter it runs was not replaced after the venv was made. `None`
/// when that cannot be vouched for; then ask the interpreter itself.
pub fn venv_python_version(venv: &Path) -> Option<String> {
    let config = venv.join("pyvenv.cfg");
    let made = fs::metadata(&config).ok()?.modified().ok()?;
    let text = fs::read_to_string(&config).ok()?;
    let version = text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "version").then(|| value.trim().to_string())
    })?;
    // `bin/python` is a symlink to the interpreter the venv runs.
    let interpreter = fs::canonicalize(venv.join("bin/python")).ok()?;
    let replaced = fs::metadata(interpreter).ok()?.modified().ok()? > made;
    (!replaced && !version.is_empty()).then_some(version)
}

/// The version `python --version` reports, such as `3.11.7`.
pub fn python_version(python: &str) -> Option<String> {
    let output = std::process::Command::new(python)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    text.split_whitespace().nth(1).map(str::to_string)
}

fn observe_service(spec: &ServiceSpec, supervisors: &Supervisors) -> Observation {
    let Some(process) = Process::from_pidfile(&spec.pidfile) else {
        return Observation::Missing;
    };
    // A supervisord that runs but cannot be asked cannot vouch for its
    // programs.
    if let Some(supervises) = &spec.supervises {
        if let Err(RpcError::Unreachable(why)) = supervisors.programs(&supervises.url) {
            return Observation::Unanswering(process, why);
        }
    }
    Observation::Running(process)
}

/// Whether `meta` is the stat recorded in `trusted` (the content hash aside).
pub fn stat_matches(trusted: &Observed, meta: &fs::Metadata) -> bool {
    stat_and_mode_match(&trusted.file_stat(), trusted.mode, meta)
}

/// Whether `meta` has exactly this stat and permission bits.
pub fn stat_and_mode_match(stat: &FileStat, mode: u32, meta: &fs::Metadata) -> bool {
    FileStat::from_meta(meta) == *stat && meta.mode() & 0o7777 == mode
}

pub fn observed_from(meta: &fs::Metadata, hash: Fingerprint) -> Observed {
    Observed {
        size: meta.size(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        ctime: (meta.ctime(), meta.ctime_nsec()),
        ino: meta.ino(),
        mode: meta.mode() & 0o7777,
        hash,
    }
}

/// Stats `path` after tack wrote `content` there.
pub fn observe_written(path: &Path, content: Fingerprint) -> std::io::Result<Observed> {
    let meta = fs::symlink_metadata(path)?;
    Ok(observed_from(&meta, content))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(target: &Path, content: &str) -> Action {
        Action::File {
            target: target.to_path_buf(),
            content: crate::graph::Content::new(content.as_bytes()),
            mode: 0o644,
        }
    }

    #[test]
    fn a_venv_tells_its_python_version_until_its_interpreter_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let interpreter = dir.path().join("python3.11");
        fs::write(&interpreter, "").unwrap();
        let venv = dir.path().join("venv");
        fs::create_dir_all(venv.join("bin")).unwrap();
        std::os::unix::fs::symlink(&interpreter, venv.join("bin/python")).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        fs::File::options()
            .write(true)
            .open(&interpreter)
            .unwrap()
            .set_modified(old)
            .unwrap();
        fs::write(venv.join("pyvenv.cfg"), "home = /x\nversion = 3.11.7\n").unwrap();
        assert_eq!(venv_python_version(&venv).as_deref(), Some("3.11.7"));

        // Replaced in place (an upgrade): only the interpreter can tell.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        fs::File::options()
            .write(true)
            .open(&interpreter)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(venv_python_version(&venv), None);
    }

    #[test]
    fn trusted_stat_skips_reading_and_a_changed_file_is_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        crate::atomic::write_atomically(&path, b"one\n", 0o644, false).unwrap();
        let trusted = observe_written(&path, Fingerprint::of_bytes(b"one\n")).unwrap();
        let record = NodeRecord {
            display: String::new(),
            target: None,
            key: Fingerprint::default(),
            output: Fingerprint::default(),
            inputs: Default::default(),
            observed: Some(trusted),
            process: None,
            produced: Vec::new(),
            facts: Default::default(),
            outputs_tree: None,
            finished: true,
        };
        assert_eq!(
            observe(
                &file(&path, "one\n"),
                Some(&record),
                &Supervisors::default(),
                None
            ),
            Observation::Matches(Some(trusted))
        );

        fs::write(&path, "two\n").unwrap();
        let Observation::Differs(why) = observe(
            &file(&path, "one\n"),
            Some(&record),
            &Supervisors::default(),
            None,
        ) else {
            panic!("a hand edit must be seen");
        };
        assert!(why[0].starts_with("content changed"), "{why:?}");
    }
}
