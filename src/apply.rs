//! The side effects: making a node's target what it should be.
//!
//! **Architecture Invariant:** this is the only module that changes the
//! deployed world. Files and symlinks are replaced atomically (a temp name
//! in the same directory, then a rename); steps run through
//! [`crate::runner`]; services are started and signalled through pid files
//! and [`crate::process`]; supervised programs are started and restarted
//! through supervisord's XML-RPC interface ([`crate::supervisor_rpc`]). A
//! start, restart or reload returns when each program it affects is
//! RUNNING, or fails with the end of the program's log.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::confined::{self, Dir};
use crate::error::Error;
use crate::graph::{Action, Bootstrap, CommandSpec, NodeSpec, Reload, ServiceSpec};
use crate::observe::{observe_written, python_version};
use crate::plan::Decision;
use crate::process::Process;
use crate::runner::{self, shell_quote, Step};
use crate::state::{NodeRecord, Observed};
use crate::step_cache::{Lookup, Outputs, StepCache};
use crate::supervisor_rpc::{ProgramInfo, Supervisord};

/// What applying a node left behind, for its record.
#[derive(Debug, Default)]
pub struct Applied {
    pub observed: Option<Observed>,
    pub process: Option<Process>,
    pub produced: Vec<PathBuf>,
    pub facts: BTreeMap<String, String>,
    /// The outputs came from the cache; the step did not run.
    pub restored: bool,
    /// The tree digest of a cached step's outputs as it left them: a later
    /// restore replaces only exactly this.
    pub outputs_tree: Option<cache::Digest>,
    /// Why a step ran although the cache had its outputs.
    pub not_restored: Option<String>,
    /// Something went wrong that does not fail the node (storing in the
    /// cache).
    pub warning: Option<String>,
}

/// What applying a node may know of the last time it was applied.
#[derive(Clone, Copy, Debug, Default)]
pub struct Last<'a> {
    /// Its record, if it ever finished here.
    pub record: Option<&'a NodeRecord>,
    /// `--force`: rebuild from scratch what a step would otherwise keep
    /// (a venv whose marker matches).
    pub forced: bool,
}

/// Applies `node`'s action. `progress` is called now and then while a long
/// step runs, with the time it has taken so far.
pub fn apply(
    node: &NodeSpec,
    decision: &Decision,
    last: Last,
    steps: Option<&StepCache>,
    progress: &dyn Fn(Duration),
) -> Result<Applied, String> {
    let result = apply_action(node, decision, last, steps, progress);
    // A failed step may have printed a secret it was given.
    let result = result.map_err(|error| node.redact.apply(&error));
    match (&node.action, node.sensitive) {
        // A failing step's message quotes its command: not one that holds
        // a secret.
        (Action::Command(spec), true) => {
            result.map_err(|error| error.replace(&spec.run, "(sensitive command)"))
        }
        _ => result,
    }
}

fn apply_action(
    node: &NodeSpec,
    decision: &Decision,
    last: Last,
    steps: Option<&StepCache>,
    progress: &dyn Fn(Duration),
) -> Result<Applied, String> {
    // Below it, nothing in a work dir is reached through a link.
    let trusted = confined::trusted_base(node.confined_to.as_deref());
    match &node.action {
        Action::File {
            target,
            content,
            mode,
        } => {
            let bytes = content
                .bytes()
                .ok_or_else(|| format!("the content of `{}` did not arrive", target.display()))?;
            let (dir, name) = target_dir(node, target)?;
            dir.write_file(&name, bytes, *mode, false)
                .map_err(|e| e.to_string())?;
            let observed = observe_written(target, content.digest())
                .map_err(|e| Error::io("stat", target, e).to_string())?;
            Ok(Applied {
                observed: Some(observed),
                ..Applied::default()
            })
        }
        Action::Directory { target, mode } => {
            let (dir, name) = target_dir(node, target)?;
            dir.make_dir(&name, *mode).map_err(|e| e.to_string())?;
            Ok(Applied::default())
        }
        Action::Symlink { target, points_to } => {
            let (dir, name) = target_dir(node, target)?;
            dir.replace_symlink(&name, points_to)
                .map_err(|e| e.to_string())?;
            Ok(Applied::default())
        }
        Action::Command(spec) => {
            let mut applied = if spec.cacheable {
                cached(
                    node,
                    steps,
                    last,
                    &spec.cwd,
                    &spec.outputs,
                    BTreeMap::new(),
                    || run_step(spec, progress),
                )?
            } else {
                run_step(spec, progress)?
            };
            // What a step creates is checked for existence each run, not
            // what is inside it: the data in it is not tack's.
            applied.produced.extend(spec.creates.iter().cloned());
            applied.produced.sort();
            applied.produced.dedup();
            Ok(applied)
        }
        Action::Buildout { run, bootstrap } => {
            let mut facts = BTreeMap::new();
            let mut outputs = run.outputs.clone();
            let mut python = None;
            if let Some(bootstrap) = bootstrap {
                let version = host_python(bootstrap)?;
                facts.insert("python".to_string(), version.clone());
                outputs.push(bootstrap.venv.clone());
                python = Some((bootstrap, version));
            }
            cached(node, steps, last, &run.cwd, &outputs, facts, || {
                if let Some((bootstrap, version)) = &python {
                    bootstrap_venv(bootstrap, version, last.forced, trusted, progress)?;
                }
                if last.forced {
                    // Buildout reinstalls every part it has no record of.
                    let (dir, name) =
                        confined::parent_of(&run.cwd.join(".installed.cfg"), trusted, true)
                            .map_err(|e| e.to_string())?;
                    dir.remove_file(&name).map_err(|e| e.to_string())?;
                }
                run_step(run, progress)
            })
        }
        Action::Venv(bootstrap) => {
            let version = host_python(bootstrap)?;
            let facts = BTreeMap::from([("python".to_string(), version.clone())]);
            let cwd = bootstrap.venv.parent().unwrap_or(Path::new("/"));
            cached(
                node,
                steps,
                last,
                cwd,
                std::slice::from_ref(&bootstrap.venv),
                facts,
                || {
                    bootstrap_venv(bootstrap, &version, last.forced, trusted, progress)?;
                    Ok(Applied::default())
                },
            )
        }
        Action::Program {
            supervisor,
            name,
            timeout_secs,
            ..
        } => {
            let process = restart_program(
                &Supervisord::new(supervisor),
                name,
                decision.running,
                Duration::from_secs(*timeout_secs),
            )?;
            Ok(Applied {
                process: Some(process),
                ..Applied::default()
            })
        }
        Action::Service(spec) => {
            let supervisord = spec
                .supervises
                .as_ref()
                .map(|supervises| Supervisord::new(&supervises.url));
            // A supervisord restarts every program on SIGHUP, after the
            // signal was sent: until then the old processes answer.
            let replaced = match (&supervisord, &spec.reload, decision.running) {
                (Some(supervisord), Reload::Signal(_), Some(_)) => supervisord.running_pids(),
                _ => BTreeMap::new(),
            };
            let mut warning = None;
            let starting = std::time::Instant::now();
            let process = match decision.running {
                Some(process) => reload(spec, process, progress)?,
                None => {
                    warning = stop_orphans(spec, decision.predecessor)?;
                    start(spec)?
                }
            };
            let waiting =
                crate::timings::phase(&format!("start or reload {}", node.display), starting);
            if let (Some(supervisord), Some(supervises)) = (&supervisord, &spec.supervises) {
                supervisord.wait_until_running(
                    &supervises.programs,
                    Duration::from_secs(spec.timeout_secs),
                    &replaced,
                )?;
                crate::timings::phase(&format!("wait for RUNNING {}", node.display), waiting);
            }
            Ok(Applied {
                process: Some(process),
                warning,
                ..Applied::default()
            })
        }
    }
}

/// The directory a file, directory or symlink node writes in, opened
/// without following a link below the deployment's trusted base (see
/// [`crate::confined`]), created as needed, and the target's name in it.
fn target_dir(node: &NodeSpec, target: &Path) -> Result<(Dir, std::ffi::OsString), String> {
    let trusted = confined::trusted_base(node.confined_to.as_deref());
    confined::parent_of(target, trusted, true).map_err(|e| e.to_string())
}

/// Runs a step with declared outputs through the cache: restores them if
/// an entry for its cache key verifies and may replace what is on disk,
/// else runs it and stores what it produced. `facts` join the node key in
/// the cache key and the record.
fn cached(
    node: &NodeSpec,
    steps: Option<&StepCache>,
    last: Last,
    cwd: &Path,
    outputs: &[PathBuf],
    facts: BTreeMap<String, String>,
    run: impl FnOnce() -> Result<Applied, String>,
) -> Result<Applied, String> {
    let (Some(steps), Some(relative)) = (steps, Outputs::of(cwd, outputs)) else {
        let mut applied = run()?;
        applied.facts = facts;
        return Ok(applied);
    };
    let key = StepCache::key(node, &facts);
    let mut not_restored = None;
    match steps.lookup(&key, &relative) {
        Lookup::Hit(hit) => {
            let recorded = last.record.and_then(|record| record.outputs_tree.as_ref());
            match StepCache::may_replace(&relative, recorded) {
                Ok(()) => {
                    let trusted = confined::trusted_base(node.confined_to.as_deref());
                    if let Some(tree) = steps.restore(&hit, &relative, trusted)? {
                        return Ok(Applied {
                            produced: produced(outputs),
                            facts,
                            restored: true,
                            outputs_tree: Some(tree),
                            ..Applied::default()
                        });
                    }
                }
                Err(why) => not_restored = Some(why),
            }
        }
        Lookup::Unauthenticated => {
            not_restored = Some(format!(
                "the entry is not authenticated by `{}`; running the step instead",
                crate::step_cache::KEY_VARIABLE
            ))
        }
        Lookup::Miss => {}
    }
    let mut applied = run()?;
    applied.facts = facts;
    let capturing = std::time::Instant::now();
    (applied.outputs_tree, applied.warning) = steps.save(&key, &relative);
    crate::timings::phase(&format!("capture {}", node.display), capturing);
    applied.not_restored = not_restored;
    Ok(applied)
}

/// Runs a step and checks it produced its declared outputs.
fn run_step(spec: &CommandSpec, progress: &dyn Fn(Duration)) -> Result<Applied, String> {
    runner::run(
        &spec.run,
        &spec.cwd,
        &spec.env,
        Duration::from_secs(spec.timeout_secs),
        progress,
    )?;
    let missing: Vec<String> = spec
        .outputs
        .iter()
        .chain(&spec.creates)
        .filter(|path| fs::symlink_metadata(path).is_err())
        .map(|path| format!("`{}`", path.display()))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "`{}` finished but did not produce {}",
            spec.run,
            missing.join(", ")
        ));
    }
    Ok(Applied {
        produced: produced(&spec.outputs),
        ..Applied::default()
    })
}

/// The outputs and the entries directly inside each output directory:
/// deleting one of them (`bin/supervisord`) makes the step run again.
fn produced(outputs: &[PathBuf]) -> Vec<PathBuf> {
    let mut produced: Vec<PathBuf> = outputs
        .iter()
        .filter_map(|output| fs::read_dir(output).ok())
        .flat_map(|entries| entries.flatten().map(|entry| entry.path()))
        .chain(outputs.iter().cloned())
        .collect();
    produced.sort();
    produced
}

/// The version of the host's python a venv is built with.
fn host_python(bootstrap: &Bootstrap) -> Result<String, String> {
    python_version(&bootstrap.python)
        .ok_or_else(|| format!("cannot run `{} --version`", bootstrap.python))
}

/// Makes `bootstrap.venv` with the wanted packages, unless a marker in it
/// says it already has them for this python `version`.
///
/// The venv lies in a work dir someone else may write: below `trusted`
/// (see [`confined::trusted_base`]) it is reached without following a
/// link, its marker read as a regular file only, the old venv removed and
/// the marker written through the directories tack opened.
fn bootstrap_venv(
    bootstrap: &Bootstrap,
    version: &str,
    forced: bool,
    trusted: Option<&Path>,
    progress: &dyn Fn(Duration),
) -> Result<(), String> {
    let marker_path = bootstrap.marker_path();
    let marker = marker_path.file_name().unwrap_or_default();
    let wanted = bootstrap.marker(version);
    let (parent, venv_name) =
        confined::parent_of(&bootstrap.venv, trusted, true).map_err(|e| e.to_string())?;
    let venv_name = Path::new(&venv_name);
    let current = parent
        .descend(venv_name, None)
        .and_then(|venv| venv.read_regular(marker, Some(MARKER_CAP)))
        .ok()
        .flatten();
    if !forced && current.as_deref() == Some(wanted.as_bytes()) {
        return Ok(());
    }
    parent
        .remove_tree(venv_name.as_os_str())
        .map_err(|e| e.to_string())?;
    let venv = shell_quote(&bootstrap.venv.display().to_string());
    let packages: Vec<String> = bootstrap.packages.iter().map(|p| shell_quote(p)).collect();
    let script = format!(
        "{python} -m venv {venv} && {venv}/bin/python -m pip install --quiet --disable-pip-version-check 'pip=={pip}' && {venv}/bin/python -m pip install --quiet --disable-pip-version-check {packages}",
        python = shell_quote(&bootstrap.python),
        pip = crate::graph::BOOTSTRAP_PIP_VERSION,
        packages = packages.join(" "),
    );
    let cwd = bootstrap.venv.parent().unwrap_or(Path::new("."));
    runner::run(&script, cwd, &[], Duration::from_secs(1800), progress)?;
    parent
        .descend(venv_name, None)
        .and_then(|venv| venv.write_file(marker, wanted.as_bytes(), 0o644, false))
        .map_err(|e| e.to_string())
}

/// A venv's marker names its python, path and packages: a few KiB at most.
const MARKER_CAP: u64 = 1 << 20;

/// (Re)starts program `name` and waits until it is RUNNING. `planned` is
/// the process it ran as when the deploy planned, if it ran.
fn restart_program(
    supervisord: &Supervisord,
    name: &str,
    planned: Option<Process>,
    timeout: Duration,
) -> Result<Process, String> {
    let programs = supervisord
        .all_process_info()
        .map_err(|error| error.to_string())?;
    let now = programs
        .iter()
        .find(|info| info.name == name)
        .and_then(ProgramInfo::process);
    // A reload earlier in this deploy (`supervisorctl update`, a HUP)
    // already restarted it after everything it depends on was deployed:
    // one restart per deploy is enough.
    let restarted_meanwhile = now.is_some() && now != planned;
    if !restarted_meanwhile {
        if now.is_some() {
            supervisord.stop(name).map_err(|error| error.to_string())?;
        }
        supervisord.start(name).map_err(|error| error.to_string())?;
    }
    let running = supervisord.wait_until_running(&[name.to_string()], timeout, &BTreeMap::new())?;
    running
        .get(name)
        .copied()
        .ok_or_else(|| format!("program `{name}` is not RUNNING"))
}

/// Before a service starts again after its last process died without
/// tack: stops what that process left running (a supervisord's programs),
/// so that exactly one instance of each runs afterwards. Says what it
/// stopped.
fn stop_orphans(spec: &ServiceSpec, recorded: Option<Process>) -> Result<Option<String>, String> {
    let in_pidfile = fs::read_to_string(&spec.pidfile)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok());
    let mut leaders: Vec<i32> = recorded
        .map(|p| p.pid)
        .into_iter()
        .chain(in_pidfile)
        .collect();
    leaders.dedup();
    // The pid file is in a work dir someone else may write: whatever dead
    // leader it names, only processes of this environment's work dir are
    // stopped.
    let work_dir = spec.cwd.parent().unwrap_or(&spec.cwd);
    let mut notes = Vec::new();
    for leader in leaders {
        let orphans: Vec<Process> = crate::process::orphans_of(leader)
            .into_iter()
            .filter(|orphan| orphan.belongs_to(work_dir))
            .collect();
        if orphans.is_empty() {
            continue;
        }
        let names: Vec<String> = orphans.iter().map(crate::process::describe).collect();
        crate::process::stop_all(&orphans).map_err(|why| {
            format!("cannot stop what pid {leader}, which died, left running: {why}")
        })?;
        notes.push(format!(
            "stopped what pid {leader}, which died, left running: {}",
            names.join(", ")
        ));
    }
    Ok((!notes.is_empty()).then(|| notes.join("; ")))
}

/// Starts a service and waits until its pid file names a live process.
fn start(spec: &ServiceSpec) -> Result<Process, String> {
    // A pid file naming a dead process, or one of another deployment (a
    // pid file copied with it), would be mistaken for the new one.
    let stale = Process::from_pidfile(&spec.pidfile).is_none_or(|p| !p.belongs_to(&spec.cwd));
    if spec.pidfile.exists() && stale {
        let _ = fs::remove_file(&spec.pidfile);
    }
    let mut step = Step::spawn(&spec.start, &spec.cwd, &[])?;
    let timeout = Duration::from_secs(spec.timeout_secs);
    let started = Instant::now();
    loop {
        if let Some(process) = Process::from_pidfile(&spec.pidfile) {
            return Ok(process);
        }
        if let Some(status) = step.poll()? {
            if !status.success() {
                return Err(step.failure(&format!("failed ({status})")));
            }
        }
        if started.elapsed() > timeout {
            return Err(step.failure(&format!(
                "started, but `{}` named no running process within {}s",
                spec.pidfile.display(),
                spec.timeout_secs
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reloads a running service, which keeps its pid.
fn reload(
    spec: &ServiceSpec,
    process: Process,
    progress: &dyn Fn(Duration),
) -> Result<Process, String> {
    match &spec.reload {
        Reload::Signal(name) => process.signal(name)?,
        Reload::Command(command) => runner::run(
            command,
            &spec.cwd,
            &[],
            Duration::from_secs(spec.timeout_secs),
            progress,
        )?,
    }
    if process.is_alive() {
        Ok(process)
    } else {
        Process::from_pidfile(&spec.pidfile).ok_or_else(|| {
            format!(
                "pid {} exited on reload and nothing took its place",
                process.pid
            )
        })
    }
}
