//! What a clean deploy was configured from, for the next run to start from.
//!
//! Configuring parses every file and renders every template, and loading
//! the state parses every node's named inputs; at thousands of files both
//! cost far more than looking at the deployed files does. After a deploy in
//! which every node finished, tack writes this compact manifest
//! (`.tack/state/<env>/.manifest.json`), per component:
//!
//! - the files configuring it read (its `component.cfg`, its templates),
//!   each with the stat taken just before it was read;
//! - a digest of its `[component:NAME]` overrides in the environment file,
//!   and of what provide/require resolution reads of it (its signature);
//! - per host it is deployed on, each node with just what it takes to see
//!   that its target is still as recorded (a file's stat, a link's target,
//!   a step's outputs, a service's pid and start time), and a digest of its
//!   node ids and owned targets (its shape).
//!
//! Besides: the tack build, the deployment root, the `--host` of the run
//! and the machine's name (which hosts `local` picks can depend on it),
//! the environment file's stat and a digest of everything in it but the
//! overrides, the resolved provide/require wiring, and the stat of every
//! state file and state directory as the run left them (a state file lost
//! or edited by hand makes its component's nodes be decided again). `incremental` reads
//! it to find what a run must reconfigure; the rules that keep that sound
//! are written there.
//!
//! The manifest is written only when the state holds exactly the configured
//! nodes, every one finished with the configured key (unfinished or removed
//! nodes must be reported, which takes the full path), and a source entry
//! only while the file still has the stat it had when it was read: an edit
//! racing with the deploy never hides behind a fresh stat.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::atomic::write_private;
use crate::component::ComponentDef;
use crate::configure::{component_def, environment_def, wiring, wiring_signature, Wiring};
use crate::db::{Database, Db, Deployment, FileStat};
use crate::deploy::HostReport;
use crate::environment::EnvironmentDef;
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::graph::{Action, HostGraph, NodeSpec};
use crate::observe::{python_version, stat_and_mode_match, venv_python_version};
use crate::process::Process;
use crate::state::{NodeRecord, State, StateStore};

/// A file the configure phase read, by path relative to the root, with
/// its stat from just before (`None`: it was missing).
pub type Source = (String, Option<FileStat>);

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub build: String,
    pub root: PathBuf,
    pub host: Option<String>,
    pub hostname: String,
    pub environment: Source,
    /// Everything in the environment file but the overrides.
    pub settings: Fingerprint,
    pub wiring: Arc<Wiring>,
    /// Every component of the environment, by name.
    pub components: BTreeMap<String, ComponentRecord>,
    /// Every host this run deployed, its components in graph order.
    pub hosts: Vec<HostRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ComponentRecord {
    /// The files under `components/NAME/` configuring it read.
    pub sources: Vec<Source>,
    pub overrides: Fingerprint,
    pub signature: Fingerprint,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HostRecord {
    pub host: String,
    /// `.tack/state/ENV/HOST/`: a file added, removed or renamed there by
    /// anyone but tack changes its stat.
    pub state_dir: Option<FileStat>,
    pub components: Vec<PlacedRecord>,
}

/// A component on one host.
#[derive(Debug, Serialize, Deserialize)]
pub struct PlacedRecord {
    pub component: String,
    pub shape: Fingerprint,
    /// Its state file.
    pub state: Option<FileStat>,
    pub nodes: Vec<NodeCheck>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct NodeCheck {
    pub id: String,
    pub display: String,
    pub check: Check,
}

/// What to look at to know a node's target is as recorded. Paths inside
/// the deployment are kept relative to its root.
#[derive(Debug, Serialize, Deserialize)]
pub enum Check {
    /// The stat and mode recorded after the write.
    File(PathBuf, FileStat, u32),
    Directory(PathBuf, u32),
    /// The link's target, hashed: it may render a secret.
    Symlink(PathBuf, Fingerprint),
    /// Every output exists, and the python it was built with is current.
    Outputs(Vec<PathBuf>, Option<PythonCheck>),
    Service(PathBuf, Process),
    /// supervisord at this address runs this program as this process.
    Program(String, String, Process),
    /// Nothing to look at.
    Nothing,
    /// A record that cannot be checked cheaply: the full decision is taken.
    Never,
}

/// The python a step's venv was built with: its interpreter, the version
/// recorded, and the venv, whose `pyvenv.cfg` tells the version without
/// running python.
#[derive(Debug, Serialize, Deserialize)]
pub struct PythonCheck {
    pub python: String,
    pub version: String,
    pub venv: Option<PathBuf>,
}

/// Beside each host's state: a name no host can have (see
/// `environment::is_host_name`), so never `<host>.json`.
pub fn path(root: &Path, environment: &str) -> PathBuf {
    root.join(".tack/state")
        .join(environment)
        .join(".manifest.json")
}

/// This tack binary: a different build may configure differently.
pub fn build_id() -> String {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|exe| fs::metadata(exe).ok());
    let stamp = exe.map(|meta| format!("{}.{}.{}", meta.size(), meta.mtime(), meta.mtime_nsec()));
    format!(
        "{} {}",
        env!("CARGO_PKG_VERSION"),
        stamp.unwrap_or_default()
    )
}

/// The manifest of this deployment, if there is one this build wrote,
/// with the stat of its file (when it was written, by the clock that
/// stamps files).
pub fn read(root: &Path, environment: &str) -> Option<(Manifest, FileStat)> {
    let path = path(root, environment);
    let written = FileStat::of(&path)?;
    let bytes = crate::confined::read_regular_path(&path, None, false).ok()??;
    let manifest: Manifest = serde_json::from_slice(&bytes).ok()?;
    let ours = manifest.build == build_id() && manifest.root == root;
    ours.then_some((manifest, written))
}

/// Forgets the manifest, so the next run configures in full.
/// A deploy that cannot forget it must not start: were it to fail, the
/// manifest would vouch for what it left.
pub fn forget(root: &Path, environment: &str) -> Result<()> {
    crate::atomic::remove_if_present(&path(root, environment))
}

impl Manifest {
    /// The environment's name, from its file's path.
    pub fn environment_name(&self) -> String {
        let file = &self.environment.0;
        let name = file.strip_prefix("environments/").unwrap_or(file);
        name.strip_suffix(".cfg").unwrap_or(name).to_string()
    }

    pub fn write(&self, environment: &str) -> Result<()> {
        let path = path(&self.root, environment);
        let bytes = serde_json::to_vec(self)
            .map_err(|error| Error::io("serialize", &path, std::io::Error::other(error)))?;
        write_private(&path, &bytes)
    }
}

/// An instant of the clock that stamps files: seconds and nanoseconds.
pub type Stamp = (i64, i64);

/// Now, by the clock the kernel stamps files with (`CLOCK_REALTIME_COARSE`,
/// which moves in ticks of a few milliseconds).
pub fn clock() -> Stamp {
    use nix::time::{clock_gettime, ClockId};
    match clock_gettime(ClockId::CLOCK_REALTIME_COARSE) {
        Ok(now) => (now.tv_sec(), now.tv_nsec()),
        Err(_) => {
            let since = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            (since.as_secs() as i64, 0)
        }
    }
}

/// A stat no file has: a source recorded with it is looked at again.
const UNVOUCHED: FileStat = FileStat {
    size: u64::MAX,
    mtime: (0, 0),
    ctime: (0, 0),
    ino: 0,
};

/// Whether a file stamped `stat` was written in the tick of `clock` or
/// later. Such a file can be written again within that tick with the same
/// size, and its stat would not show it (git's "racily clean" entries).
/// A file system that keeps whole seconds (zero nanoseconds) ticks in
/// seconds.
fn racy(stat: &FileStat, clock: Stamp) -> bool {
    let newest = stat.mtime.max(stat.ctime);
    let whole_seconds = stat.mtime.1 == 0 && stat.ctime.1 == 0;
    if whole_seconds {
        newest.0 >= clock.0
    } else {
        newest >= clock
    }
}

/// The stats the manifest can vouch for, of the files configuring read
/// (each stat taken before its read, by the clock at `before` or later).
/// A file whose stat changed since it was read, or that was written in the
/// tick configuring began and cannot be checked now, is recorded as
/// [`UNVOUCHED`]: the next run configures its component again. A racy
/// file is checked by content once its tick has passed (waiting for a
/// tick of milliseconds; a file system of whole seconds is not waited
/// for).
pub fn vouched(root: &Path, db: &Database, before: Stamp) -> Vec<Source> {
    let looked: Vec<(String, Option<FileStat>, bool)> = db
        .sources()
        .into_par_iter()
        .map(|(path, stat)| {
            // A file missing when read is trusted while it stays missing.
            let same = FileStat::of(&root.join(&path)) == stat;
            (path, stat, same)
        })
        .collect();
    looked
        .into_iter()
        .map(|(path, stat, same)| match stat {
            Some(_) if !same => (path, Some(UNVOUCHED)),
            Some(recorded) if racy(&recorded, before) => {
                // A tick of milliseconds is worth waiting for, once.
                let deadline = std::time::Instant::now() + std::time::Duration::from_millis(20);
                while racy(&recorded, clock()) && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                let tick_passed = !racy(&recorded, clock());
                let configured = db.source(&path).contents(db).clone();
                let on_disk = crate::confined::read_regular_path(&root.join(&path), None, true)
                    .ok()
                    .flatten();
                let trusted = tick_passed
                    && configured.as_deref() == on_disk.as_deref()
                    && FileStat::of(&root.join(&path)) == Some(recorded);
                (path, Some(if trusted { recorded } else { UNVOUCHED }))
            }
            _ => (path, stat),
        })
        .collect()
}

/// Whether a file still has the stat the manifest recorded.
pub fn source_unchanged(root: &Path, (path, stat): &Source) -> bool {
    &FileStat::of(&root.join(path)) == stat
}

/// The component a source file belongs to: the files under
/// `components/NAME/` are read only while configuring NAME.
pub fn owner(source: &str) -> Option<&str> {
    let rest = source.strip_prefix("components/")?;
    let (name, _) = rest.split_once('/')?;
    crate::environment::is_name(name).then_some(name)
}

/// Groups `sources` by the component they belong to; `None` if one belongs
/// to none (then no component can be reconfigured on its own).
pub fn sources_by_component(
    sources: &[Source],
    environment_file: &str,
) -> Option<BTreeMap<String, Vec<Source>>> {
    let mut grouped: BTreeMap<String, Vec<Source>> = BTreeMap::new();
    let mut secrets = Vec::new();
    for source in sources {
        if source.0 == environment_file {
            continue;
        }
        // The environment's encrypted secrets may be read by any component
        // (`[component:NAME]` sections, `source = secret:NAME`): a change
        // to one reconfigures them all.
        if crate::secrets::is_encrypted(&source.0) {
            secrets.push(source.clone());
            continue;
        }
        grouped
            .entry(owner(&source.0)?.to_string())
            .or_default()
            .push(source.clone());
    }
    for sources in grouped.values_mut() {
        sources.extend(secrets.iter().cloned());
        sources.sort_by(|a, b| a.0.cmp(&b.0));
    }
    Some(grouped)
}

/// The record of a component as configured now.
pub fn component_record(
    env: &EnvironmentDef,
    def: &ComponentDef,
    sources: Vec<Source>,
) -> ComponentRecord {
    ComponentRecord {
        sources,
        overrides: overrides_digest(env, &def.name),
        signature: wiring_signature(def),
    }
}

pub fn overrides_digest(env: &EnvironmentDef, component: &str) -> Fingerprint {
    Fingerprint::of_hash(&env.overrides.get(component))
}

/// Node ids and the targets they own: if a reconfigured component's shape
/// is unchanged, no node appeared or vanished and no target changed hands.
pub fn shape<'a>(nodes: impl IntoIterator<Item = &'a NodeSpec>) -> Fingerprint {
    let shape: Vec<(&str, Option<&Path>)> = nodes
        .into_iter()
        .map(|node| {
            let owned = node.action.owns_target().then(|| node.action.target());
            (node.id.as_str(), owned.map(PathBuf::as_path))
        })
        .collect();
    Fingerprint::of_hash(&shape)
}

/// The placed records of `graph`'s components from the state it was left
/// in (saved in `store`); `None` unless every node finished with the
/// configured key and the state holds no other node.
pub fn placed_records(
    graph: &HostGraph,
    state: &State,
    store: &StateStore,
) -> Option<Vec<PlacedRecord>> {
    if state.len() != graph.nodes.len() {
        return None;
    }
    let mut placed: Vec<PlacedRecord> = Vec::new();
    for (component, nodes) in graph.by_component() {
        let mut checks = Vec::with_capacity(nodes.len());
        for node in nodes {
            let record = state
                .get(&node.id)
                .filter(|r| r.finished && r.key == node.key)?;
            checks.push(NodeCheck {
                id: node.id.clone(),
                display: node.display.clone(),
                check: check_for(store.root(), node, record),
            });
        }
        placed.push(PlacedRecord {
            component: component.to_string(),
            shape: shape(nodes),
            state: FileStat::of(&store.component_file(component)),
            nodes: checks,
        });
    }
    Some(placed)
}

/// The record of a host after a clean run of `graph` (all of the host, or
/// the part an incremental run deployed), from the state it left.
pub fn host_record(root: &Path, graph: &HostGraph, report: &HostReport) -> Option<HostRecord> {
    let store = StateStore::new(root, &graph.environment, &graph.host);
    let components = placed_records(graph, report.state.as_ref()?, &store)?;
    Some(HostRecord {
        host: graph.host.clone(),
        state_dir: FileStat::of(store.dir()),
        components,
    })
}

/// The cheapest look that tells whether `node`'s target is as `record`
/// says it was left: what `observe` and `plan` would find unchanged.
fn check_for(root: &Path, node: &NodeSpec, record: &NodeRecord) -> Check {
    let short = |path: &Path| path.strip_prefix(root).unwrap_or(path).to_path_buf();
    let python = |venv: Option<&PathBuf>| {
        let version = record.facts.get("python")?.clone();
        let python = record.inputs.get("python")?.value.clone();
        Some(PythonCheck {
            python,
            version,
            venv: venv.map(|venv| short(venv)),
        })
    };
    match &node.action {
        Action::File { target, .. } => match record.observed {
            Some(seen) => Check::File(short(target), seen.file_stat(), seen.mode),
            None => Check::Never,
        },
        Action::Directory { target, mode } => Check::Directory(short(target), *mode),
        Action::Symlink { target, points_to } => {
            Check::Symlink(short(target), Fingerprint::of_bytes(points_to.as_bytes()))
        }
        Action::Command(_) => {
            let produced = record.produced.iter().map(|p| short(p)).collect();
            Check::Outputs(produced, python(None))
        }
        Action::Buildout { bootstrap, .. } => {
            let produced = record.produced.iter().map(|p| short(p)).collect();
            let venv = bootstrap.as_ref().map(|bootstrap| &bootstrap.venv);
            Check::Outputs(produced, python(venv))
        }
        Action::Venv(bootstrap) => Check::Outputs(
            vec![short(&bootstrap.venv.join(".tack-bootstrap"))],
            python(Some(&bootstrap.venv)),
        ),
        Action::Service(_) => match record.process {
            Some(process) => Check::Service(short(node.action.target()), process),
            None => Check::Never,
        },
        Action::Program {
            supervisor, name, ..
        } => match record.process {
            Some(process) => Check::Program(supervisor.clone(), name.clone(), process),
            None => Check::Never,
        },
    }
}

/// What the checks of one run ask once: python versions by interpreter,
/// supervisord's programs by address.
#[derive(Default)]
pub struct Pythons {
    versions: Mutex<BTreeMap<String, Option<String>>>,
    supervisors: crate::observe::Supervisors,
}

impl Check {
    /// Whether the target (below `root` if relative) still looks as
    /// recorded.
    pub fn holds(&self, root: &Path, pythons: &Pythons) -> bool {
        match self {
            Check::File(path, stat, mode) => fs::symlink_metadata(root.join(path))
                .is_ok_and(|meta| meta.is_file() && stat_and_mode_match(stat, *mode, &meta)),
            Check::Directory(path, mode) => fs::symlink_metadata(root.join(path))
                .is_ok_and(|meta| meta.is_dir() && meta.mode() & 0o7777 == *mode),
            Check::Symlink(path, points_to) => fs::read_link(root.join(path)).is_ok_and(|found| {
                Fingerprint::of_bytes(found.as_os_str().as_encoded_bytes()) == *points_to
            }),
            Check::Outputs(paths, python) => {
                paths
                    .iter()
                    .all(|path| fs::symlink_metadata(root.join(path)).is_ok())
                    && python.as_ref().is_none_or(|check| {
                        // The venv's own record first: no process.
                        let venv = check.venv.as_ref().map(|venv| root.join(venv));
                        if let Some(now) = venv.and_then(|venv| venv_python_version(&venv)) {
                            return now == check.version;
                        }
                        let mut known = pythons.versions.lock().unwrap_or_else(|e| e.into_inner());
                        let now = known
                            .entry(check.python.clone())
                            .or_insert_with(|| python_version(&check.python));
                        now.as_ref() == Some(&check.version)
                    })
            }
            Check::Service(pidfile, process) => {
                Process::from_pidfile(&root.join(pidfile)) == Some(*process)
            }
            Check::Program(url, name, process) => {
                pythons.supervisors.program(url, name)
                    == crate::observe::Observation::Running(*process)
            }
            Check::Nothing => true,
            Check::Never => false,
        }
    }
}

/// The manifest after a clean full run, or `None` if one of the files it
/// read belongs to no component.
pub fn of_full_run(
    db: &Database,
    deployment: Deployment,
    host: Option<&str>,
    before: Stamp,
    graphs: &[Arc<HostGraph>],
    reports: &[HostReport],
) -> Option<Manifest> {
    let root = deployment.root(db).clone();
    let env = environment_def(db, deployment).clone().ok()?;
    let wiring = wiring(db, deployment).clone().ok()?;
    let read = vouched(&root, db, before);
    let environment = read.iter().find(|(path, _)| path == &env.file)?.clone();
    let mut by_component = sources_by_component(&read, &env.file)?;
    let mut components = BTreeMap::new();
    for placement in &wiring.placements {
        if components.contains_key(&placement.component) {
            continue;
        }
        let def = component_def(db, deployment, placement.component.clone())
            .as_ref()
            .ok()?;
        let sources = by_component
            .remove(&placement.component)
            .unwrap_or_default();
        let record = component_record(&env, def, sources);
        components.insert(placement.component.clone(), record);
    }
    let mut hosts = Vec::new();
    for (graph, report) in graphs.iter().zip(reports) {
        hosts.push(host_record(&root, graph, report)?);
    }
    Some(Manifest {
        build: build_id(),
        root,
        host: host.map(str::to_string),
        hostname: crate::observe::hostname(),
        environment,
        settings: env.settings_digest(),
        wiring,
        components,
        hosts,
    })
}
