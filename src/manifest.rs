//! What a clean deploy was configured from, for the next run to start from.
//!
//! Configuring parses every file and renders every template, and loading
//! the state parses every node's named inputs; at thousands of files both
//! cost far more than looking at the deployed files does. After a deploy in
//! which every node finished, tack writes this compact manifest
//! (`.tack/state/<env>/inputs.json`), per component:
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
//! Besides: the tack build, the deployment root, the `--host` of the run,
//! the environment file's stat and a digest of everything in it but the
//! overrides, and the resolved provide/require wiring. `incremental` reads
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

use crate::atomic::write_atomically;
use crate::component::ComponentDef;
use crate::configure::{component_def, environment_def, wiring, wiring_signature, Wiring};
use crate::db::{Database, Deployment, FileStat};
use crate::deploy::HostReport;
use crate::environment::EnvironmentDef;
use crate::error::Result;
use crate::fingerprint::Fingerprint;
use crate::graph::{HostGraph, NodeSpec};
use crate::observe::{python_version, stat_matches};
use crate::process::Process;
use crate::state::{NodeRecord, Observed, State};

/// A file the configure phase read, by path relative to the root, with
/// its stat from just before (`None`: it was missing).
pub type Source = (String, Option<FileStat>);

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub build: String,
    pub root: PathBuf,
    pub host: Option<String>,
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
    pub components: Vec<PlacedRecord>,
}

/// A component on one host.
#[derive(Debug, Serialize, Deserialize)]
pub struct PlacedRecord {
    pub component: String,
    pub shape: Fingerprint,
    pub nodes: Vec<NodeCheck>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct NodeCheck {
    pub id: String,
    pub display: String,
    pub check: Check,
}

/// What to look at to know a node's target is as recorded.
#[derive(Debug, Serialize, Deserialize)]
pub enum Check {
    /// The stat recorded after the write.
    File(PathBuf, Observed),
    Directory(PathBuf, u32),
    Symlink(PathBuf, String),
    /// Every output exists, and the python it was built with is current.
    Outputs(Vec<PathBuf>, Option<(String, String)>),
    Service(PathBuf, Process),
    /// Nothing to look at.
    Nothing,
    /// A record that cannot be checked cheaply: the full decision is taken.
    Never,
}

pub fn path(root: &Path, environment: &str) -> PathBuf {
    root.join(".tack/state")
        .join(environment)
        .join("inputs.json")
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
    let bytes = fs::read(&path).ok()?;
    let manifest: Manifest = serde_json::from_slice(&bytes).ok()?;
    let ours = manifest.build == build_id() && manifest.root == root;
    ours.then_some((manifest, written))
}

/// Forgets the manifest, so the next run configures in full.
pub fn forget(root: &Path, environment: &str) {
    let _ = fs::remove_file(path(root, environment));
}

impl Manifest {
    pub fn write(&self, environment: &str) -> Result<()> {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        write_atomically(&path(&self.root, environment), &bytes, 0o600, false)
    }
}

/// The component a source file belongs to: the files under
/// `components/NAME/` are read only while configuring NAME.
pub fn owner(source: &str) -> Option<&str> {
    let rest = source.strip_prefix("components/")?;
    let (name, _) = rest.split_once('/')?;
    crate::environment::is_name(name).then_some(name)
}

/// Whether every file still has the stat it was read with.
pub fn unchanged_since_read(root: &Path, sources: &[Source]) -> bool {
    sources
        .par_iter()
        .all(|(source, stat)| &FileStat::of(&root.join(source)) == stat)
}

/// Groups `sources` by the component they belong to; `None` if one belongs
/// to none (then no component can be reconfigured on its own).
pub fn sources_by_component(
    sources: &[Source],
    environment_file: &str,
) -> Option<BTreeMap<String, Vec<Source>>> {
    let mut grouped: BTreeMap<String, Vec<Source>> = BTreeMap::new();
    for source in sources {
        if source.0 == environment_file {
            continue;
        }
        grouped
            .entry(owner(&source.0)?.to_string())
            .or_default()
            .push(source.clone());
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
/// in; `None` unless every node finished with the configured key and the
/// state holds no other node.
pub fn placed_records(graph: &HostGraph, state: &State) -> Option<Vec<PlacedRecord>> {
    if state.len() != graph.nodes.len() {
        return None;
    }
    let mut placed: Vec<PlacedRecord> = Vec::new();
    let mut start = 0;
    while start < graph.nodes.len() {
        let component = &graph.nodes[start].component;
        let end = graph.nodes[start..]
            .iter()
            .position(|node| &node.component != component)
            .map_or(graph.nodes.len(), |offset| start + offset);
        let nodes = &graph.nodes[start..end];
        let mut checks = Vec::with_capacity(nodes.len());
        for node in nodes {
            let record = state
                .get(&node.id)
                .filter(|r| r.finished && r.key == node.key)?;
            checks.push(NodeCheck {
                id: node.id.clone(),
                display: node.display.clone(),
                check: check_for(record),
            });
        }
        placed.push(PlacedRecord {
            component: component.clone(),
            shape: shape(nodes),
            nodes: checks,
        });
        start = end;
    }
    Some(placed)
}

/// The cheapest look that tells whether `record`'s target is unchanged.
fn check_for(record: &NodeRecord) -> Check {
    let input = |name: &str| record.inputs.get(name).map(|input| input.value.clone());
    let Some(target) = record.target.clone() else {
        return Check::Nothing;
    };
    let python = input("python").zip(record.facts.get("python").cloned());
    match input("kind").unwrap_or_default().as_str() {
        "file" => match record.observed {
            Some(observed) => Check::File(target, observed),
            None => Check::Never,
        },
        "directory" => {
            let mode = input("mode").and_then(|mode| u32::from_str_radix(&mode, 8).ok());
            Check::Directory(target, mode.unwrap_or(u32::MAX))
        }
        "symlink" => Check::Symlink(target, input("target").unwrap_or_default()),
        "command" | "buildout" => Check::Outputs(record.produced.clone(), python),
        "venv" => Check::Outputs(vec![target.join(".tack-bootstrap")], python),
        "service" => match record.process {
            Some(process) => Check::Service(target, process),
            None => Check::Never,
        },
        _ => Check::Nothing,
    }
}

/// Python versions asked once per run, by interpreter.
#[derive(Default)]
pub struct Pythons(Mutex<BTreeMap<String, Option<String>>>);

impl Check {
    /// Whether the target still looks as recorded.
    pub fn holds(&self, pythons: &Pythons) -> bool {
        match self {
            Check::File(path, observed) => fs::symlink_metadata(path)
                .is_ok_and(|meta| meta.is_file() && stat_matches(observed, &meta)),
            Check::Directory(path, mode) => fs::symlink_metadata(path)
                .is_ok_and(|meta| meta.is_dir() && meta.mode() & 0o7777 == *mode),
            Check::Symlink(path, points_to) => {
                fs::read_link(path).is_ok_and(|found| found.as_os_str() == points_to.as_str())
            }
            Check::Outputs(paths, python) => {
                paths.iter().all(|path| fs::symlink_metadata(path).is_ok())
                    && python.as_ref().is_none_or(|(python, version)| {
                        let mut known = pythons.0.lock().unwrap_or_else(|e| e.into_inner());
                        let now = known
                            .entry(python.clone())
                            .or_insert_with(|| python_version(python));
                        now.as_ref() == Some(version)
                    })
            }
            Check::Service(pidfile, process) => Process::from_pidfile(pidfile) == Some(*process),
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
    graphs: &[Arc<HostGraph>],
    reports: &[HostReport],
) -> Option<Manifest> {
    let root = deployment.root(db).clone();
    let env = environment_def(db, deployment).clone().ok()?;
    let wiring = wiring(db, deployment).clone().ok()?;
    let read = db.sources();
    if !unchanged_since_read(&root, &read) {
        return None;
    }
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
        let placed = placed_records(graph, report.state.as_ref()?)?;
        hosts.push(HostRecord {
            host: graph.host.clone(),
            components: placed,
        });
    }
    Some(Manifest {
        build: build_id(),
        root,
        host: host.map(str::to_string),
        environment,
        settings: env.settings_digest(),
        wiring,
        components,
        hosts,
    })
}
