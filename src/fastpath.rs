//! The no-op fast path: when no input file changed, skip configuring.
//!
//! Configuring parses every file and renders every template, and loading
//! the state parses every node's named inputs; at thousands of files both
//! cost more than looking at the deployed files does. After a deploy in
//! which every node finished, tack writes a compact manifest
//! (`.tack/state/<env>/inputs.json`): the stat of every file the configure
//! phase read (or found missing), the tack build, the deployment root, and
//! per host each node with just what it takes to see that its target is
//! still as recorded (a file's stat, a link's target, a step's outputs, a
//! service's pid and start time).
//!
//! The next run stats those files first. If every stat is unchanged, the
//! configuration is the one recorded; if every node's target still looks
//! as recorded, there is nothing to do: no template is rendered and the
//! state is not even read. Anything else, however small, falls back to the
//! full path, which explains it. The fast path writes nothing.
//!
//! The manifest is written only when the state has no unfinished node and
//! no node that is no longer configured (those must be reported), and a
//! source entry only for a file whose content on disk at that moment is
//! the content that was configured: an edit racing with the deploy never
//! hides behind a fresh stat. A journal (a deploy running or killed)
//! disables the fast path.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomically;
use crate::db::FileStat;
use crate::deploy::{HostReport, NodeReport};
use crate::error::Result;
use crate::graph::HostGraph;
use crate::observe::{python_version, stat_matches};
use crate::process::Process;
use crate::report::{Reporter, Summary};
use crate::state::{NodeRecord, Observed, State, StateStore};

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    build: String,
    root: PathBuf,
    host: Option<String>,
    sources: Vec<(String, Option<FileStat>)>,
    hosts: Vec<HostChecks>,
}

#[derive(Debug, Serialize, Deserialize)]
struct HostChecks {
    host: String,
    nodes: Vec<NodeCheck>,
}

#[derive(Debug, Serialize, Deserialize)]
struct NodeCheck {
    id: String,
    display: String,
    check: Check,
}

/// What to look at to know a node's target is as recorded.
#[derive(Debug, Serialize, Deserialize)]
enum Check {
    /// The stat recorded after the write.
    File(PathBuf, Observed),
    Directory(PathBuf, u32),
    Symlink(PathBuf, String),
    /// Every output exists, and the python it was built with is current.
    Outputs(Vec<PathBuf>, Option<(String, String)>),
    Service(PathBuf, Process),
    /// Nothing to look at.
    Nothing,
    /// A record that cannot be checked cheaply: the full path decides.
    Never,
}

fn manifest_path(root: &Path, environment: &str) -> PathBuf {
    root.join(".tack/state")
        .join(environment)
        .join("inputs.json")
}

/// This tack binary: a different build may configure differently.
fn build_id() -> String {
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

/// Records what a clean full deploy configured from: `sources` are the
/// files the configure phase read with their stat from just before it read
/// them, `states` the state each host was left in.
pub fn remember(
    root: &Path,
    environment: &str,
    host: Option<&str>,
    sources: &[(String, Option<FileStat>)],
    graphs: &[Arc<HostGraph>],
    states: &[&State],
) -> Result<()> {
    let path = manifest_path(root, environment);
    // A file whose stat moved since it was read changed while we deployed:
    // no shortcut next time.
    let unchanged = sources
        .par_iter()
        .all(|(source, stat)| &FileStat::of(&root.join(source)) == stat);
    if !unchanged {
        forget(root, environment);
        return Ok(());
    }
    let mut hosts = Vec::new();
    for (graph, state) in graphs.iter().zip(states) {
        let configured = graph.nodes.len() == state.nodes.len();
        let mut nodes = Vec::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            let record = state.nodes.get(&node.id);
            let Some(record) = record.filter(|r| configured && r.finished && r.key == node.key)
            else {
                forget(root, environment);
                return Ok(());
            };
            nodes.push(NodeCheck {
                id: node.id.clone(),
                display: node.display.clone(),
                check: check_for(record),
            });
        }
        hosts.push(HostChecks {
            host: graph.host.clone(),
            nodes,
        });
    }
    let manifest = Manifest {
        build: build_id(),
        root: root.to_path_buf(),
        host: host.map(str::to_string),
        sources: sources.to_vec(),
        hosts,
    };
    let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    write_atomically(&path, &bytes, 0o600, false)
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

/// Forgets the manifest, so the next run configures in full.
pub fn forget(root: &Path, environment: &str) {
    let _ = fs::remove_file(manifest_path(root, environment));
}

/// The reports of a run with nothing to do, if that can be known without
/// configuring; `None` means: take the full path.
pub fn try_noop(
    root: &Path,
    environment: &str,
    host: Option<&str>,
    dry_run: bool,
    reporter: &dyn Fn(&str) -> Reporter,
) -> Option<Vec<HostReport>> {
    let started = Instant::now();
    let bytes = fs::read(manifest_path(root, environment)).ok()?;
    let manifest: Manifest = serde_json::from_slice(&bytes).ok()?;
    if manifest.build != build_id() || manifest.root != root || manifest.host.as_deref() != host {
        return None;
    }
    let sources_unchanged = manifest
        .sources
        .par_iter()
        .all(|(source, stat)| &FileStat::of(&root.join(source)) == stat);
    if !sources_unchanged {
        return None;
    }
    let pythons: Mutex<BTreeMap<String, Option<String>>> = Mutex::default();
    let mut reports = Vec::new();
    for checks in &manifest.hosts {
        if StateStore::new(root, environment, &checks.host).journal_exists() {
            return None;
        }
        if !checks
            .nodes
            .par_iter()
            .all(|node| unchanged(&node.check, &pythons))
        {
            return None;
        }
        let nodes: Vec<NodeReport> = checks
            .nodes
            .iter()
            .map(|node| NodeReport {
                id: node.id.clone(),
                display: node.display.clone(),
                outcome: "unchanged".into(),
                reasons: Vec::new(),
                seconds: None,
                error: None,
            })
            .collect();
        let summary = Summary {
            unchanged: nodes.len(),
            ..Summary::default()
        };
        let elapsed = started.elapsed();
        reporter(&checks.host).line(&summary.line(&checks.host, dry_run, elapsed));
        reports.push(HostReport {
            host: checks.host.clone(),
            dry_run,
            summary,
            seconds: elapsed.as_secs_f64(),
            nodes,
            state: None,
        });
    }
    Some(reports)
}

fn unchanged(check: &Check, pythons: &Mutex<BTreeMap<String, Option<String>>>) -> bool {
    match check {
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
                    let mut known = pythons.lock().unwrap_or_else(|e| e.into_inner());
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
