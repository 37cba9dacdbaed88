//! The no-op fast path: when no input file changed, skip configuring.
//!
//! Configuring parses every file and renders every template; at thousands
//! of files that costs more than looking at the deployed files does. After
//! a deploy in which every node finished, tack writes a manifest
//! (`.tack/state/<env>/inputs.json`): the stat of every file the configure
//! phase read (or found missing), the tack build, the deployment root, and
//! per host the node ids and keys the configuration produced.
//!
//! The next run stats those files first. If every stat is unchanged, the
//! configuration is the one recorded, so its nodes and keys are known
//! without computing them; if every node's record is finished, has that
//! key, and its target still looks as recorded (stat for files, pid and
//! start time for services, outputs for steps), there is nothing to do.
//! Anything else, however small, falls back to the full path, which
//! explains it. The fast path writes nothing.
//!
//! A manifest entry is written only for a file whose content on disk at
//! that moment is the content that was configured; an edit racing with
//! the deploy therefore never hides behind a fresh stat.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::atomic::write_atomically;
use crate::deploy::{HostReport, NodeReport};
use crate::error::Result;
use crate::fingerprint::Fingerprint;
use crate::graph::HostGraph;
use crate::observe::python_version;
use crate::process::Process;
use crate::report::{Reporter, Summary};
use crate::state::{NodeRecord, StateStore};

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    build: String,
    root: PathBuf,
    host: Option<String>,
    sources: Vec<(String, Option<Stat>)>,
    hosts: Vec<(String, Vec<(String, Fingerprint)>)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stat {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
}

impl Stat {
    fn of(path: &Path) -> Option<Stat> {
        let meta = fs::metadata(path).ok()?;
        Some(Stat {
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
        })
    }
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

/// Records what a successful full deploy configured from. `sources` are
/// the files the configure phase read, with the content it used.
pub fn remember(
    root: &Path,
    environment: &str,
    host: Option<&str>,
    sources: &[(String, Option<Arc<[u8]>>)],
    graphs: &[Arc<HostGraph>],
) -> Result<()> {
    let path = manifest_path(root, environment);
    let mut stats = Vec::with_capacity(sources.len());
    for (source, used) in sources {
        let full = root.join(source);
        let stat = Stat::of(&full);
        let now = fs::read(&full).ok();
        if now.as_deref() != used.as_deref() {
            // Changed while we deployed: no shortcut next time.
            let _ = fs::remove_file(&path);
            return Ok(());
        }
        stats.push((source.clone(), stat));
    }
    let manifest = Manifest {
        build: build_id(),
        root: root.to_path_buf(),
        host: host.map(str::to_string),
        sources: stats,
        hosts: graphs
            .iter()
            .map(|graph| {
                let nodes = graph.nodes.iter().map(|n| (n.id.clone(), n.key)).collect();
                (graph.host.clone(), nodes)
            })
            .collect(),
    };
    let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    write_atomically(&path, &bytes, 0o600, false)
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
    for (source, stat) in &manifest.sources {
        if &Stat::of(&root.join(source)) != stat {
            return None;
        }
    }
    let mut pythons: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut reports = Vec::new();
    for (host, nodes) in &manifest.hosts {
        let store = StateStore::new(root, environment, host);
        if store.journal_exists() {
            return None;
        }
        let (state, warnings) = store.load();
        if !warnings.is_empty() || state.nodes.len() != nodes.len() {
            return None;
        }
        let mut reported = Vec::with_capacity(nodes.len());
        for (id, key) in nodes {
            let record = state.nodes.get(id)?;
            if !record.finished || record.key != *key || !looks_as_recorded(record, &mut pythons) {
                return None;
            }
            reported.push(NodeReport {
                id: id.clone(),
                display: record.display.clone(),
                outcome: "unchanged".into(),
                reasons: Vec::new(),
                seconds: None,
                error: None,
            });
        }
        let summary = Summary {
            unchanged: reported.len(),
            ..Summary::default()
        };
        let elapsed = started.elapsed();
        reporter(host).line(&summary.line(host, dry_run, elapsed));
        reports.push(HostReport {
            host: host.clone(),
            dry_run,
            summary,
            seconds: elapsed.as_secs_f64(),
            nodes: reported,
        });
    }
    Some(reports)
}

/// The cheap check of one node's target against its record.
fn looks_as_recorded(record: &NodeRecord, pythons: &mut BTreeMap<String, Option<String>>) -> bool {
    let input = |name: &str| record.inputs.get(name).map(|input| input.value.as_str());
    let Some(target) = &record.target else {
        return false;
    };
    let python_unchanged = |pythons: &mut BTreeMap<String, Option<String>>| {
        let Some(python) = input("python") else {
            return true;
        };
        let version = pythons
            .entry(python.to_string())
            .or_insert_with(|| python_version(python))
            .clone();
        version.is_some() && version.as_ref() == record.facts.get("python")
    };
    match input("kind").unwrap_or_default() {
        "file" => record.observed.is_some_and(|observed| {
            fs::symlink_metadata(target).is_ok_and(|meta| {
                meta.is_file() && crate::observe::observed_from(&meta, observed.hash) == observed
            })
        }),
        "directory" => {
            let mode = input("mode").and_then(|mode| u32::from_str_radix(mode, 8).ok());
            fs::symlink_metadata(target)
                .is_ok_and(|meta| meta.is_dir() && Some(meta.mode() & 0o7777) == mode)
        }
        "symlink" => fs::read_link(target)
            .is_ok_and(|found| Some(found.to_string_lossy().as_ref()) == input("target")),
        "command" | "buildout" => {
            record
                .produced
                .iter()
                .all(|path| fs::symlink_metadata(path).is_ok())
                && python_unchanged(pythons)
        }
        "venv" => target.join(".tack-bootstrap").exists() && python_unchanged(pythons),
        "service" => record.process.is_some() && Process::from_pidfile(target) == record.process,
        "program" => true,
        _ => false,
    }
}
